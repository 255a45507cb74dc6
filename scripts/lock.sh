#!/usr/bin/env bash
# Regenerate the dependency lock files, with hashes, from pyproject.toml:
#
#   scripts/lock.sh                      # keep current pins, add/remove what pyproject.toml changed
#   scripts/lock.sh --upgrade            # newest versions pyproject.toml allows
#   scripts/lock.sh --upgrade-package aiohttp   # (-P) move one package only
#
#   requirements/test.txt  runtime + test extra + build backend (./run-tests.sh)
#   requirements/app.txt   runtime + build backend (./relais, the Docker image); the same
#                          versions as test.txt (compiled with test.txt as constraint)
#
# Uses pip-tools (pip-compile --generate-hashes) from its own tool venv
# (~/.cache/relais-lock-venv, or $LOCK_TOOLS_VENV), so .venv is not touched. The lock is for
# CPython 3.11 on Linux x86_64 (markers are evaluated for the interpreter running
# pip-compile): run it there. Packages come from your pip configuration's index
# (pip config list); no index URL is written into the files. Commit both files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd -P)"
log() { printf '[lock] %s\n' "$*" >&2; }
die() { printf '[lock] ERROR: %s\n' "$*" >&2; exit 1; }

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    for cand in python3.11 python3; do
        if command -v "$cand" >/dev/null 2>&1 \
            && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            PYTHON="$(command -v "$cand")"; break
        fi
    done
fi
[ -n "$PYTHON" ] || die "no Python 3.11 found (the lock targets CPython 3.11); set PYTHON=/path/to/python3.11"
platform="$("$PYTHON" -c 'import platform, sys; print(sys.implementation.name, "%d.%d" % sys.version_info[:2], platform.system(), platform.machine())')"
[ "$platform" = "cpython 3.11 Linux x86_64" ] \
    || die "the lock targets cpython 3.11 Linux x86_64, this interpreter is: $platform"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
TOOLS="${LOCK_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/relais-lock-venv}"
if [ ! -x "$TOOLS/bin/pip-compile" ]; then
    log "creating tool venv $TOOLS with pip-tools"
    rm -rf "$TOOLS"
    "$PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install -q "pip-tools>=7.4,<8"
fi

export CUSTOM_COMPILE_COMMAND="scripts/lock.sh"
common=(
    --quiet --generate-hashes --allow-unsafe --strip-extras --all-build-deps
    --no-emit-index-url --no-emit-trusted-host --no-emit-find-links
)
mkdir -p requirements
log "pip-compile requirements/test.txt (runtime + test + build)"
"$TOOLS/bin/pip-compile" "${common[@]}" --extra test -o requirements/test.txt "$@" pyproject.toml
log "pip-compile requirements/app.txt (runtime + build, same versions as test.txt)"
"$TOOLS/bin/pip-compile" "${common[@]}" -c requirements/test.txt -o requirements/app.txt "$@" pyproject.toml
log "done: $(grep -c '==' requirements/app.txt) pins in requirements/app.txt, $(grep -c '==' requirements/test.txt) in requirements/test.txt"
