#!/usr/bin/env bash
# run-e2e.sh - end-to-end tests: the built rowcast binary driven by node (the phoenix npm
# client, raw WebSockets, fetch). Run by `make check` through automake's tap-driver.sh
# with ROWCAST_BIN (absolute path of the binary) and TOP_SRCDIR set; prints TAP on stdout.
#
# By hand:  ROWCAST_BIN=$PWD/rowcast tests/e2e/run-e2e.sh [03-room.test.mjs ...]
# Env:      ROWCAST_E2E_TIMEOUT  whole-suite deadline in seconds (default 600)
#           ROWCAST_E2E_KEEP=1   keep the servers' temporary directories
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
   [ ! -d "$work/node_modules/playwright-core" ]; then
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

# node's TAP numbers top-level tests per file in some cases (a file that fails to load
# reports "not ok <file index>") and prints its plan from its own count; automake's
# tap-driver rejects numbers out of sequence. Renumber the top-level results and print
# the plan at the end, from what was actually reported.
cd "$work" || exit 1
timeout -k 10 "${ROWCAST_E2E_TIMEOUT:-600}" node "${opts[@]}" "${files[@]}" |
  LC_ALL=C awk '
    /^(not )?ok [0-9]+([^0-9]|$)/ {
      n++
      prefix = ($1 == "not") ? "not ok " : "ok "
      sub(/^(not )?ok [0-9]+/, prefix n)
      print; fflush(); next
    }
    /^1\.\.[0-9]+/ { next }
    { print; fflush() }
    END { print "1.." n }
  '
status=$?
if [ $status -eq 124 ] || [ $status -eq 137 ]; then
  echo "# the e2e suite hit its ${ROWCAST_E2E_TIMEOUT:-600} s deadline and was killed" >&2
fi
exit $status
