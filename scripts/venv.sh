# Shared by ./relais and ./run-tests.sh (sourced, not run): make sure .venv exists with a
# Python >= 3.11 and the project installed in it. Expects ROOT, VENV, STAMP, INSTALL_SPEC.
# Dependencies come only from the hashed lock (requirements/test.txt when INSTALL_SPEC has the
# test extra, else requirements/app.txt; LOCK_FILE overrides), installed with --require-hashes;
# then the project itself with --no-deps --no-build-isolation (its build backend is in the lock).
# On Debian, where the system Python refuses pip installs (PEP 668) and `python3 -m venv`
# needs the python3-venv package, it installs that package when run as root.

log() { printf '[%s] %s\n' "${LOG_PREFIX:-relais}" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${LOG_PREFIX:-relais}" "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }
have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=0
apt_install() {
    is_root && have apt-get || return 1
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        apt-get update -qq || return 1
        apt_updated=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null >&2
}

py_ok() { # usable interpreter with version >= 3.11?
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

# --------------------------------------------------------------------------- 1. Python/venv
PYTHON=""
for cand in python3.11 python3; do
    if have "$cand" && py_ok "$cand"; then PYTHON="$(command -v "$cand")"; break; fi
done
[ -n "$PYTHON" ] || die "no Python >= 3.11 found (tried python3.11, python3); install Python 3.11."

venv_ok() {
    [ -x "$VENV/bin/python" ] && py_ok "$VENV/bin/python" \
        && "$VENV/bin/python" -m pip --version >/dev/null 2>&1
}

if ! venv_ok; then
    [ -e "$VENV" ] && { log "removing unusable $VENV"; rm -rf "$VENV"; }
    log "creating $VENV with $PYTHON ($("$PYTHON" -V 2>&1))"
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        if is_root && have apt-get; then
            log "'$PYTHON -m venv' failed; installing python3-venv"
            pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
            apt_install python3-venv "python${pyver}-venv" || apt_install python3-venv \
                || die "could not install python3-venv with apt-get"
            "$PYTHON" -m venv "$VENV" || { rm -rf "$VENV"; die "'$PYTHON -m venv' still fails"; }
        else
            die "'$PYTHON -m venv' failed; install the python3-venv package (apt-get install python3-venv) and retry."
        fi
    fi
    venv_ok || die "$VENV was created but has no working pip"
fi

PY="$VENV/bin/python"
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"   # console script `relais`, ruff, ... for tests that spawn them
unset PYTHONHOME

if [ -z "${LOCK_FILE:-}" ]; then
    case "$INSTALL_SPEC" in
        *"[test]"*) LOCK_FILE="$ROOT/requirements/test.txt" ;;
        *) LOCK_FILE="$ROOT/requirements/app.txt" ;;
    esac
fi
[ -f "$LOCK_FILE" ] || die "lock file $LOCK_FILE is missing (scripts/lock.sh regenerates it)"

# Reinstall when pyproject.toml or the lock file is newer than the stamp.
if [ -f "$STAMP" ] && [ "$STAMP" -nt "$ROOT/pyproject.toml" ] && [ "$STAMP" -nt "$LOCK_FILE" ]; then
    # Nothing on stderr when nothing went wrong for ./relais (QUIET_WHEN_CURRENT=1).
    [ "${QUIET_WHEN_CURRENT:-0}" = 1 ] || log "dependencies up to date (rm $STAMP to force a reinstall)"
else
    log "pip install --require-hashes -r ${LOCK_FILE#"$ROOT/"} (quiet, first run only)"
    "$PY" -m pip install -q --require-hashes -r "$LOCK_FILE" \
        || die "pip install --require-hashes -r $LOCK_FILE failed (a hash mismatch means a download differs from the locked file)"
    log "pip install --no-deps --no-build-isolation -e ."
    "$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" \
        || die "pip install --no-deps -e . failed"
    touch "$STAMP"
fi
