#!/usr/bin/env bash
# scripts/bench.sh [RUNS] [SCENARIO...] - runs contrib/rcload scenarios against a fresh
# rowcast on 127.0.0.1 (a new SQLite file per run) and prints each run's JSON line and
# the median of the headline numbers. Server flags: ROWCAST_BENCH_FLAGS (default
# "--rate-limit 0": benchmarks measure the server, not the limiter).
#
# PostgreSQL: ROWCAST_BENCH_PG=postgres://USER@HOST:PORT (a server, e.g. from
# scripts/pg-test.sh start DIR) runs every run on a new database there instead of a
# SQLite file. ROWCAST_BENCH_NODES=2 starts a second node on the same database at
# port+1 (for rcload's --sub-url http://127.0.0.1:PORT+1).
#
# rcload options for every run: RCLOAD_ARGS, e.g. RCLOAD_ARGS="--notif-subs 100"
# scripts/bench.sh 5 fanout (the medians then include the unread events and their latency).
# realtime-js's protocol instead of phoenix.js's: RCLOAD_ARGS="--realtime" (public
# channel) or RCLOAD_ARGS="--realtime=private" (the room's channel) scripts/bench.sh 5 fanout.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(rest chat fanout join idle)
port=${ROWCAST_BENCH_PORT:-4790}
flags=${ROWCAST_BENCH_FLAGS:---rate-limit 0}
pg=${ROWCAST_BENCH_PG:-}
nodes=${ROWCAST_BENCH_NODES:-1}
dir=$(mktemp -d /tmp/rowcast-bench.XXXXXX)
pid=""; pid2=""; db=""
cleanup() {
  kill $pid $pid2 2>/dev/null || true
  wait $pid $pid2 2>/dev/null || true
  [ -z "$db" ] || psql -q -X "$pg/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
make -j"$(nproc)" rowcast contrib/rcload >/dev/null
if [ "$nodes" = 2 ] && [ -z "$pg" ]; then
  echo "ROWCAST_BENCH_NODES=2 needs ROWCAST_BENCH_PG (nodes share one PostgreSQL)" >&2
  exit 2
fi

for sc in "${scenarios[@]}"; do
  results=()
  for i in $(seq 1 "$runs"); do
    rm -f "$dir"/rowcast.db*
    url="sqlite:$dir/rowcast.db"
    if [ -n "$pg" ]; then
      db=rowcast_bench_$$_$i
      psql -q -X "$pg/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
      url="$pg/$db"
      ./rowcast migrate --db "$url" >/dev/null # before the nodes start, not by both at once
    fi
    # shellcheck disable=SC2086
    ./rowcast serve --db "$url" --listen "127.0.0.1:$port" --api-key bench \
      --jwt-secret bench-secret --log-level warn $flags 2>"$dir/server.log" &
    pid=$!
    if [ "$nodes" = 2 ]; then
      # shellcheck disable=SC2086
      ./rowcast serve --db "$url" --listen "127.0.0.1:$((port + 1))" --api-key bench \
        --jwt-secret bench-secret --log-level warn $flags 2>"$dir/server2.log" &
      pid2=$!
    fi
    for _ in $(seq 1 100); do
      curl -sf "127.0.0.1:$port/healthz" >/dev/null &&
        { [ "$nodes" != 2 ] || curl -sf "127.0.0.1:$((port + 1))/healthz" >/dev/null; } && break
      sleep 0.1
    done
    # shellcheck disable=SC2086
    line=$(timeout 180 contrib/rcload "$sc" --url "http://127.0.0.1:$port" --api-key bench \
      --server-pid "$pid" ${RCLOAD_ARGS:-} 2>/dev/null | tail -n 1)
    kill $pid $pid2 2>/dev/null || true
    wait $pid $pid2 2>/dev/null || true
    pid=""; pid2=""
    if [ -n "$db" ]; then
      psql -q -X "$pg/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null
      db=""
    fi
    echo "$sc run $i: $line"
    results+=("$line")
  done
  printf '%s\n' "${results[@]}" | python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin if l.strip().startswith("{")]
def med(path):
    vals = []
    for r in rows:
        v = r
        for k in path.split("."):
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(v)
    return statistics.median(vals) if vals else None
keys = ["msgs_per_s", "deliveries_per_s", "joins_per_s", "rss_per_conn_bytes",
        "latency.p50_ms", "latency.p99_ms", "ack_latency.p50_ms", "ack_latency.p99_ms",
        "delivery_latency.p50_ms", "delivery_latency.p99_ms", "join_latency.p50_ms",
        "join_latency.p99_ms", "missing", "server_cpu_pct", "client_cpu_pct",
        "unread_expected", "unread_received", "unread_missing", "unread_latency.p50_ms",
        "unread_latency.p99_ms"]
out = {k: med(k) for k in keys if med(k) is not None}
print("'"$sc"' median of %d runs: %s" % (len(rows), json.dumps(out)))
'
done
