#!/usr/bin/env bash
# run-e2e.sh - end-to-end tests: the built rowcast binary driven by node (the phoenix npm
# client, raw WebSockets, fetch). Run by `make check` through automake's tap-driver.sh
# with ROWCAST_BIN (absolute path of the binary) and TOP_SRCDIR set; prints TAP on stdout.
#
# By hand:  ROWCAST_BIN=$PWD/rowcast tests/e2e/run-e2e.sh [03-room.test.mjs ...]
#
# The suite runs twice: once on SQLite, then once on PostgreSQL (test names prefixed
# "[pg] "; 11-browser runs in the SQLite pass only, 13-cluster in the PostgreSQL pass
# only). The PostgreSQL pass uses ROWCAST_E2E_PG_URL when set, else starts a throwaway
# server with scripts/pg-test.sh start (stopped at the end, whatever happens). If
# PostgreSQL cannot be started the run fails; it is never skipped silently.
# Env:      ROWCAST_E2E_TIMEOUT  deadline of each pass in seconds (default 600)
#           ROWCAST_E2E_KEEP=1   keep the servers' temporary directories (and databases)
#           ROWCAST_E2E_PG_URL   postgres://…/DB of a running server for the PostgreSQL pass
#           ROWCAST_E2E_PG_DIR   that server's pg-test.sh directory (DIR/data), for the
#                                cluster test's PostgreSQL restart (found by psql if unset)
#           ROWCAST_E2E_PASSES   "sqlite pg" (default), "sqlite" or "pg"
set -u
set -o pipefail

src=$(cd "$(dirname "$0")" && pwd)
: "${TOP_SRCDIR:=$(cd "$src/../.." && pwd)}"
: "${ROWCAST_BIN:=$TOP_SRCDIR/rowcast}"
export TOP_SRCDIR ROWCAST_BIN

if ! command -v node >/dev/null 2>&1; then
  echo "1..0 # SKIP node is not installed"
  exit 0
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "1..0 # SKIP node >= 20 is required (found $(node --version))"
  exit 0
fi
if [ ! -x "$ROWCAST_BIN" ]; then
  echo "Bail out! rowcast binary not found or not executable: $ROWCAST_BIN"
  exit 1
fi
case $ROWCAST_BIN in
  /*) ;;
  *) ROWCAST_BIN=$(cd "$(dirname "$ROWCAST_BIN")" && pwd)/$(basename "$ROWCAST_BIN") ;;
esac

# A read-only source tree (make distcheck) cannot hold node_modules: work on a copy.
work=$src
if [ ! -w "$src" ]; then
  work=$PWD/e2e-work
  rm -rf "$work"
  mkdir -p "$work"
  cp -R "$src"/. "$work"/
  chmod -R u+w "$work"
fi

if [ ! -d "$work/node_modules/phoenix" ] || [ ! -d "$work/node_modules/ws" ] ||
   [ ! -d "$work/node_modules/playwright-core" ] || [ ! -d "$work/node_modules/@supabase/realtime-js" ]; then
  echo "# installing e2e dependencies (npm ci) in $work" >&2
  if ! (cd "$work" && npm ci --no-audit --no-fund) >&2; then
    echo "Bail out! npm ci failed in $work (is the npm registry reachable?)"
    exit 1
  fi
fi

files=()
if [ $# -gt 0 ]; then
  for f in "$@"; do
    case $f in
      /*) files+=("$f") ;;
      *) files+=("$work/$(basename "$f")") ;;
    esac
  done
else
  while IFS= read -r f; do files+=("$f"); done < <(
    cd "$work" && ls -1 ./*.test.mjs ./*.test.js 2>/dev/null | sed "s|^\./|$work/|" | sort
  )
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "Bail out! no test files found in $work"
  exit 1
fi

opts=(--test --test-reporter=tap --test-concurrency=1)
# --test-force-exit (node >= 20.14): a handle left open cannot keep a file running.
if node --test-force-exit -e 0 >/dev/null 2>&1; then opts+=(--test-force-exit); fi

passes=${ROWCAST_E2E_PASSES:-sqlite pg}

# ---- PostgreSQL for the second pass ----------------------------------------------------
pg_dir=""
pg_error=""
cleanup() {
  if [ -n "$pg_dir" ]; then
    "$TOP_SRCDIR/scripts/pg-test.sh" stop "$pg_dir" >/dev/null 2>&1 ||
      echo "# could not stop the PostgreSQL in $pg_dir" >&2
    pg_dir=""
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

case " $passes " in
*" pg "*)
  if [ -z "${ROWCAST_E2E_PG_URL:-}" ]; then
    # /tmp: pg-test.sh hands the directory to the postgres user when we are root.
    pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/rowcast-e2e-pg.XXXXXX")
    chmod 755 "$pg_dir"
    echo "# starting PostgreSQL for the PostgreSQL pass (scripts/pg-test.sh start $pg_dir)" >&2
    pg_err=$pg_dir.err
    if pg_out=$(timeout -k 10 900 "$TOP_SRCDIR/scripts/pg-test.sh" start "$pg_dir" 2>"$pg_err"); then
      ROWCAST_E2E_PG_URL=$(printf '%s\n' "$pg_out" | tail -n 1)
      ROWCAST_E2E_PG_DIR=$pg_dir
      export ROWCAST_E2E_PG_DIR
    else
      pg_error="scripts/pg-test.sh start $pg_dir failed (exit $?): $(tail -n 20 "$pg_err" 2>/dev/null | tr '\n' ' ')"
      "$TOP_SRCDIR/scripts/pg-test.sh" stop "$pg_dir" >/dev/null 2>&1 || rm -rf "$pg_dir"
      pg_dir=""
    fi
    rm -f "$pg_err"
    case ${ROWCAST_E2E_PG_URL:-} in
      postgres://* | postgresql://*) ;;
      *) [ -n "$pg_error" ] || pg_error="scripts/pg-test.sh start printed no postgres:// URL (got: ${ROWCAST_E2E_PG_URL:-nothing})" ;;
    esac
  fi
  if [ -z "$pg_error" ] && ! command -v psql >/dev/null 2>&1; then
    pg_error="psql (the PostgreSQL client) is not installed: apt-get install postgresql-client"
  fi
  if [ -z "$pg_error" ] &&
    ! perr=$(PGCONNECT_TIMEOUT=10 timeout 30 psql -X -q -At -d "$ROWCAST_E2E_PG_URL" -c 'SELECT 1' 2>&1); then
    pg_error="cannot connect to $ROWCAST_E2E_PG_URL: $perr"
  fi
  ;;
esac

# ---- the passes --------------------------------------------------------------------------
# run_pass NAME: runs the files on one database; TAP on stdout; exit status of node.
run_pass() {
  local pass=$1 f
  local -a pfiles=()
  for f in "${files[@]}"; do
    # The browser test drives the demo page: it adds nothing on PostgreSQL and is slow.
    if [ "$pass" = pg ] && [ "$explicit" = 0 ] && [ "$(basename "$f")" = 11-browser.test.mjs ]; then continue; fi
    # The cluster test needs PostgreSQL: it belongs to the PostgreSQL pass only.
    if [ "$pass" = sqlite ] && [ "$explicit" = 0 ] && [ "$(basename "$f")" = 13-cluster.test.mjs ]; then continue; fi
    pfiles+=("$f")
  done
  [ ${#pfiles[@]} -gt 0 ] || return 0
  echo "# ---- $pass pass: ${#pfiles[@]} files ----"
  if [ "$pass" = pg ]; then
    ROWCAST_E2E_PG_URL=$ROWCAST_E2E_PG_URL timeout -k 10 "${ROWCAST_E2E_TIMEOUT:-600}" node "${opts[@]}" "${pfiles[@]}"
  else
    env -u ROWCAST_E2E_PG_URL timeout -k 10 "${ROWCAST_E2E_TIMEOUT:-600}" node "${opts[@]}" "${pfiles[@]}"
  fi
  local st=$?
  if [ $st -eq 124 ] || [ $st -eq 137 ]; then
    echo "# the $pass pass hit its ${ROWCAST_E2E_TIMEOUT:-600} s deadline and was killed" >&2
  fi
  return $st
}
explicit=0
[ $# -gt 0 ] && explicit=1

# node's TAP numbers top-level tests per file in some cases (a file that fails to load
# reports "not ok <file index>") and prints its plan from its own count; automake's
# tap-driver rejects numbers out of sequence. Renumber the top-level results of both
# passes, prefix the PostgreSQL pass's names with "[pg] " (node's own lines, e.g. a file
# that fails to load, included) and print one plan at the end.
cd "$work" || exit 1
status=0
{
  for pass in $passes; do
    case $pass in
      sqlite) run_pass sqlite || echo "RC_E2E_STATUS sqlite $?" ;;
      pg)
        if [ -n "$pg_error" ]; then
          echo "RC_E2E_PGFAIL $pg_error"
          echo "RC_E2E_STATUS pg 1"
        else
          run_pass pg || echo "RC_E2E_STATUS pg $?"
        fi
        ;;
      *) echo "RC_E2E_PGFAIL unknown pass '$pass' in ROWCAST_E2E_PASSES"; echo "RC_E2E_STATUS $pass 2" ;;
    esac
  done
} | LC_ALL=C awk '
    /^# ---- pg pass/ { pg = 1 }
    /^# ---- sqlite pass/ { pg = 0 }
    /^RC_E2E_STATUS / { bad = bad " " $2 "=" $3; next }
    /^RC_E2E_PGFAIL / {
      n++
      sub(/^RC_E2E_PGFAIL /, "")
      print "not ok " n " - [pg] PostgreSQL pass: PostgreSQL could not be started"
      print "# " $0
      fflush(); next
    }
    /^(not )?ok [0-9]+([^0-9]|$)/ {
      n++
      prefix = ($1 == "not") ? "not ok " : "ok "
      sub(/^(not )?ok [0-9]+/, prefix n)
      if (pg && index($0, " - [pg] ") == 0) sub(/ - /, " - [pg] ")
      print; fflush(); next
    }
    /^1\.\.[0-9]+/ { next }
    { print; fflush() }
    END {
      print "1.." n
      if (bad != "") { print "# failed passes (node exit status):" bad; exit 1 }
    }
  '
status=$?
exit $status
