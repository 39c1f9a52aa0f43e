#!/usr/bin/env bash
# rowcast's two entry points on a fresh Debian 12 machine (root, or a user with sudo):
#   scripts/run.sh serve   install what is missing, build, start the server on SQLite
#   scripts/run.sh test    install what is missing, build, run every test
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(build-essential autoconf automake libtool pkg-config
  libmicrohttpd-dev libwslay-dev libjansson-dev libsqlite3-dev libpq-dev libssl-dev
  libcmocka-dev sqlite3 curl)

say() { printf '==> %s\n' "$*" >&2; }

install_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    missing+=(nodejs npm)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

build() {
  if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
    say "autoreconf"
    autoreconf -fi >/dev/null
  fi
  if [ ! -f Makefile ] || [ configure -nt Makefile ]; then
    say "configure"
    ./configure -q "$@"
  fi
  say "make"
  make -j"$(nproc)" >/dev/null
}

# npm_ci DIR: installs DIR's locked npm dependencies when missing or stale.
npm_ci() {
  if [ -f "$1/package-lock.json" ] && { [ ! -d "$1/node_modules" ] || [ "$1/package-lock.json" -nt "$1/node_modules" ]; }; then
    say "npm ci ($1)"
    (cd "$1" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$1/node_modules"
  fi
}

pass=0; fail=0
# count_results [DIR]: adds automake's per-test results under DIR/tests to pass/fail.
count_results() {
  local d=${1:-.}
  for trs in $(find "$d/tests" -name '*.trs' 2>/dev/null); do
    p=$(grep -c '^:test-result: PASS' "$trs" || true)
    f=$(grep -c -E '^:test-result: (FAIL|ERROR|XPASS)' "$trs" || true)
    pass=$((pass + p)); fail=$((fail + f))
  done
}

show_failures() {
  for log in $(find tests "${SAN_DIR:-/nonexistent}/tests" -name '*.log' ! -name 'test-suite.log' 2>/dev/null); do
    if grep -q -E '^(not ok|# (FAIL|ERROR))' "$log" 2>/dev/null; then
      echo "----- $log" >&2; tail -n 60 "$log" >&2
    fi
  done
}

# The whole suite again on an ASan + UBSan (+ LeakSanitizer) build, in a copy of the
# tracked tree; any sanitizer report fails the run.
sanitizer_run() {
  SAN_DIR=$(mktemp -d /tmp/rowcast-asan.XXXXXX)
  local reports="$SAN_DIR/reports"
  mkdir -p "$reports"
  say "sanitizer build in $SAN_DIR"
  git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$SAN_DIR"
  for d in tests/e2e contrib; do
    [ -d "$d/node_modules" ] && ln -s "$TOP/$d/node_modules" "$SAN_DIR/$d/node_modules"
  done
  (cd "$SAN_DIR" && autoreconf -fi >/dev/null && ./configure -q --enable-sanitizers >/dev/null) || return 1
  make -C "$SAN_DIR" -j"$(nproc)" >/dev/null || return 1
  say "make check (sanitizers)"
  local st=0
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$reports/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" \
  LSAN_OPTIONS="log_path=$reports/lsan" \
    make -C "$SAN_DIR" -j"$(nproc)" check || st=$?
  count_results "$SAN_DIR"
  if ls "$reports"/* >/dev/null 2>&1; then
    echo "sanitizer reports:" >&2
    for r in "$reports"/*; do echo "----- $r" >&2; head -n 60 "$r" >&2; done
    fail=$((fail + 1))
    st=1
  fi
  return $st
}

case "${1:-}" in
serve)
  install_packages
  build
  npm_ci contrib   # phoenix.js for the demo page
  cat >&2 <<'MSG'
==> rowcast is starting on http://127.0.0.1:4000 (SQLite file ./rowcast.db).
    Open http://127.0.0.1:4000/ in a browser for the demo chat (sign in with any name).
    Development defaults are in use: API key "rowcast-dev-api-key", a development JWT secret.
    In another terminal:
      curl -s -X POST localhost:4000/api/rooms -H 'Authorization: Bearer rowcast-dev-api-key' -d '{"id":"lobby","name":"Lobby"}'
      curl -s -X PUT localhost:4000/api/rooms/lobby/members/alice -H 'Authorization: Bearer rowcast-dev-api-key' -d '{"role":"member"}'
      curl -s -X POST localhost:4000/api/tokens -H 'Authorization: Bearer rowcast-dev-api-key' -d '{"user_id":"alice"}'
    then connect a phoenix.js Socket to ws://127.0.0.1:4000/socket with params {token}
    and join "room:lobby". README.md has the whole tour. Ctrl-C stops the server.
MSG
  exec ./rowcast serve "${@:2}"
  ;;
test)
  APT_PACKAGES+=(chromium postgresql clang libclang-rt-14-dev)  # browser, PG pass, fuzzing
  install_packages
  build
  npm_ci contrib
  npm_ci tests/e2e
  say "make check"
  status=0
  make -j"$(nproc)" check || status=$?
  count_results
  if [ "$status" = 0 ] && [ "${ROWCAST_SKIP_SANITIZERS:-}" != 1 ]; then
    sanitizer_run || status=$?
  fi
  # A short, bounded fuzzing run of every target on its committed corpus.
  if [ "$status" = 0 ] && [ "${ROWCAST_SKIP_FUZZ:-}" != 1 ]; then
    say "fuzzing: each target for ${ROWCAST_FUZZ_SECONDS:-60} s"
    if FUZZ_BUILD="$(mktemp -d /tmp/rowcast-fuzz.XXXXXX)" sh scripts/fuzz.sh run "${ROWCAST_FUZZ_SECONDS:-60}"; then
      pass=$((pass + 1))
    else
      status=1; fail=$((fail + 1))
    fi
  fi
  if [ "$status" != 0 ]; then
    show_failures
    [ "$fail" -gt 0 ] || fail=1
  fi
  echo "$pass passed, $fail failed"
  exit "$status"
  ;;
*)
  echo "usage: scripts/run.sh serve [rowcast options] | scripts/run.sh test" >&2
  exit 2
  ;;
esac
