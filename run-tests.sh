#!/usr/bin/env bash
# Relais test runner: the ONE command that installs everything and runs the whole suite.
#
#   ./run-tests.sh [pytest args...]
#
# Works from a fresh clone on Debian 12 / Python >= 3.11 (as root or not):
#   1. picks a Python >= 3.11 and creates .venv (installs python3-venv via apt when root and needed)
#   2. pip install --require-hashes -r requirements/test.txt (the lock, scripts/lock.sh), then
#      pip install --no-deps -e . into .venv (skipped while .venv/.relais-installed is newer
#      than pyproject.toml and the lock)
#   3. makes sure PostgreSQL answers on $TEST_POSTGRES_URL (starts / installs a local
#      Debian cluster when possible), otherwise fails: PostgreSQL tests must not be skipped
#   4. ruff check .  then  lint-imports (the layers of bot/, pyproject.toml)  then
#      python -m pytest "$@"
#   5. pip-audit of the lock: reports known vulnerabilities, never changes the exit code
#      (RELAIS_PIP_AUDIT=0 skips it; at most ~60 s per vulnerability service)
# It never reads or sources a .env file.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT="$(pwd -P)"
VENV="$ROOT/.venv"
STAMP="$VENV/.relais-installed"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

INSTALL_SPEC=".[test]"
LOG_PREFIX=run-tests
# shellcheck source=scripts/venv.sh
. "$ROOT/scripts/venv.sh"

# --------------------------------------------------------------------------- 2. PostgreSQL
export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"

# Exit codes: 0 answers, 1 unreachable, 3 reachable but authentication refused, 4 other error.
pg_probe() {
    "$PY" - "$TEST_POSTGRES_URL" <<'PYEOF'
import asyncio, sys
import asyncpg

url = sys.argv[1]
for prefix in ("postgresql+asyncpg://", "postgres+asyncpg://"):
    if url.startswith(prefix):
        url = "postgresql://" + url[len(prefix):]

async def main():
    conn = await asyncpg.connect(url, timeout=3)
    try:
        return await conn.fetchval("select 1")
    finally:
        await conn.close()

try:
    asyncio.run(asyncio.wait_for(main(), 3))
except asyncpg.InvalidAuthorizationSpecificationError as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr); sys.exit(3)
except asyncpg.PostgresError as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr); sys.exit(4)
except (OSError, asyncio.TimeoutError) as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr); sys.exit(1)
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr); sys.exit(4)
PYEOF
}

PG_ERR=""
pg_check() { # sets PG_RC and PG_ERR
    local out
    if out="$(pg_probe 2>&1)"; then PG_RC=0; PG_ERR=""; else PG_RC=$?; PG_ERR="${out##*$'\n'}"; fi
}

pg_wait() { # wait up to 30 s for the server to answer
    local deadline=$((SECONDS + 30))
    while :; do
        pg_check
        [ "$PG_RC" = 1 ] || return 0          # answers (or answers with an error: stop waiting)
        [ "$SECONDS" -lt "$deadline" ] || return 0
        sleep 1
    done
}

# host / port of the URL (port defaults to 5432)
read -r PG_HOST PG_PORT < <("$PY" - "$TEST_POSTGRES_URL" <<'PYEOF'
import sys
from urllib.parse import urlsplit, parse_qs
u = urlsplit(sys.argv[1])
try:
    port = u.port or 5432
except ValueError:
    port = 5432
host = u.hostname or parse_qs(u.query).get("host", [""])[0] or "-"
print(host, port)
PYEOF
)
case "$PG_HOST" in
    -|localhost|127.0.0.1|::1|/*) PG_LOCAL=1 ;;
    *) PG_LOCAL=0 ;;
esac

# "<version> <cluster>" of the local Debian cluster listening on $PG_PORT, if any
find_cluster() {
    have pg_lsclusters || return 0
    pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }'
}
have_any_cluster() {
    have pg_lsclusters && [ -n "$(pg_lsclusters -h 2>/dev/null)" ]
}

# trust auth for local TCP connections (user postgres), then reload
ensure_trust() {
    local ver="$1" name="$2" hba="/etc/postgresql/$1/$2/pg_hba.conf" changed=0
    [ -f "$hba" ] && [ -w "$hba" ] || return 0
    if ! grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        sed -i '1i host all all 127.0.0.1/32 trust' "$hba"; changed=1
    fi
    if ! grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+::1/128[[:space:]]+trust' "$hba"; then
        sed -i '1i host all all ::1/128 trust' "$hba"; changed=1
    fi
    if [ "$changed" = 1 ]; then
        log "pg_hba.conf of cluster $ver/$name: trust for 127.0.0.1/32 and ::1/128 (inserted at top)"
        pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload >&2 || true
    fi
}

start_cluster() {
    local ver="$1" name="$2"
    ensure_trust "$ver" "$name"
    log "starting PostgreSQL cluster $ver/$name (port $PG_PORT)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 \
        || log "pg_ctlcluster $ver $name start failed (already running, or not permitted as $(id -un))"
}

pg_check
if [ "$PG_RC" != 0 ] && [ "$PG_LOCAL" = 1 ]; then
    cluster="$(find_cluster)"
    if [ "$PG_RC" = 1 ]; then
        if [ -z "$cluster" ] && ! have_any_cluster && [ "$PG_PORT" = 5432 ] && is_root && have apt-get; then
            # Fresh machine: the Debian package creates cluster "main" on port 5432.
            if ! have pg_ctlcluster || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
                apt_install postgresql || log "apt-get install postgresql failed"
            fi
            if have pg_createcluster && ! have_any_cluster; then
                ver="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)"
                [ -n "$ver" ] && { log "pg_createcluster $ver main"; pg_createcluster "$ver" main >&2 || true; }
            fi
            cluster="$(find_cluster)"
        fi
        if [ -n "$cluster" ]; then
            start_cluster $cluster
            pg_wait
        fi
    fi
    if [ "$PG_RC" = 3 ] && [ -n "$cluster" ]; then
        # Server answers but refuses us: make local TCP auth trust and retry.
        ensure_trust $cluster
        pg_wait
    fi
fi

if [ "$PG_RC" != 0 ]; then
    hint="start PostgreSQL there or set TEST_POSTGRES_URL"
    if [ "$PG_LOCAL" = 1 ] && [ "$PG_RC" = 1 ] && [ -z "$(find_cluster)" ]; then
        hint="no local PostgreSQL cluster is configured for port $PG_PORT (and one is only installed automatically for port 5432 when running as root with apt-get); $hint"
    fi
    die "PostgreSQL is not answering at $TEST_POSTGRES_URL (${PG_ERR:-no details}); $hint. Tests must not skip PostgreSQL."
fi
log "PostgreSQL answers at $TEST_POSTGRES_URL"

# --------------------------------------------------------------------------- 3. lint + tests
log "ruff check ."
"$PY" -m ruff check . || die "ruff check failed (fix the lint errors above)"
log "lint-imports (the layers of bot/)"
"$VENV/bin/lint-imports" --no-cache >/tmp/relais-lint-imports.$$ 2>&1 || {
    cat /tmp/relais-lint-imports.$$ >&2; rm -f /tmp/relais-lint-imports.$$
    die "lint-imports failed: an import points up a layer (see ARCHITECTURE.md, README \"How it is built\")"
}
sed -n '/^Contracts:/p' /tmp/relais-lint-imports.$$ >&2; rm -f /tmp/relais-lint-imports.$$

log "python -m pytest $*"
set +e
"$PY" -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
    die "pytest collected no tests (exit code 5): the test suite is missing or the selection matched nothing."
fi

# --------------------------------------------------------------------------- 4. pip-audit
# Known vulnerabilities in the locked versions, from PyPI's JSON API, else OSV. A report only:
# it never changes the exit code. No database answering (offline, or a mirror without the
# per-version JSON API) is said plainly.
audit_report() { # $1 = pip-audit JSON output; exit 0 when audited, else not reachable
    "$PY" - "$1" "${LOCK_FILE#"$ROOT/"}" <<'PYEOF'
import json, sys
out, lock = sys.argv[1:3]
try:
    with open(out, encoding="utf-8") as f:
        deps = json.load(f)["dependencies"]
except (OSError, ValueError, KeyError, TypeError):
    sys.exit(2)
audited = [d for d in deps if not d.get("skip_reason")]
if not audited:
    sys.exit(2)  # every package "not found": the database did not answer for any of them
skipped = len(deps) - len(audited)
found = [(d, v) for d in audited for v in d.get("vulns", [])]
note = f" ({skipped} could not be audited)" if skipped else ""
if not found:
    print(f"pip-audit: no known vulnerabilities in the {len(audited)} packages of {lock}{note}")
    sys.exit(0)
for d, v in found:
    fix = ", ".join(v.get("fix_versions") or []) or "none yet"
    aliases = ", ".join(v.get("aliases") or [])
    print(f"  {d['name']} {d['version']}: {v['id']}" + (f" ({aliases})" if aliases else "")
          + f"; fixed in: {fix}")
names = sorted({d["name"] for d, _ in found})
print(f"pip-audit: {len(found)} known vulnerabilities in {len(names)} packages of {lock}{note}"
      f" (reported only, the suite does not fail on them); raise the pin with"
      f" scripts/lock.sh --upgrade-package {names[0]}")
PYEOF
}

if [ "${RELAIS_PIP_AUDIT:-1}" != 0 ]; then
    audit_dir="$(mktemp -d)"
    audited=0
    for service in pypi osv; do
        log "pip-audit -s $service -r ${LOCK_FILE#"$ROOT/"}"
        timeout 60 "$PY" -m pip_audit -s "$service" --progress-spinner off --timeout 15 \
            --disable-pip --require-hashes -r "$LOCK_FILE" -f json -o "$audit_dir/$service.json" \
            >/dev/null 2>&1 || true
        if audit_report "$audit_dir/$service.json" >&2; then
            audited=1; break
        fi
    done
    [ "$audited" = 1 ] || log "pip-audit: vulnerability database not reachable, not checked"
    rm -rf "$audit_dir"
fi
exit "$rc"
