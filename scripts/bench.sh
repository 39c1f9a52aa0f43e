#!/usr/bin/env bash
# scripts/bench.sh [RUNS] [SCENARIO...] - runs contrib/rcload scenarios against a fresh
# rowcast on 127.0.0.1 (a new SQLite file per run) and prints each run's JSON line and
# the median of the headline numbers. Server flags: ROWCAST_BENCH_FLAGS (default
# "--rate-limit 0": benchmarks measure the server, not the limiter).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(rest chat fanout join idle)
port=${ROWCAST_BENCH_PORT:-4790}
flags=${ROWCAST_BENCH_FLAGS:---rate-limit 0}
dir=$(mktemp -d /tmp/rowcast-bench.XXXXXX)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
make -j"$(nproc)" rowcast contrib/rcload >/dev/null

for sc in "${scenarios[@]}"; do
  results=()
  for i in $(seq 1 "$runs"); do
    rm -f "$dir"/rowcast.db*
    # shellcheck disable=SC2086
    ./rowcast serve --db "sqlite:$dir/rowcast.db" --listen "127.0.0.1:$port" --api-key bench \
      --jwt-secret bench-secret --log-level warn $flags 2>"$dir/server.log" &
    pid=$!
    for _ in $(seq 1 50); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    # shellcheck disable=SC2086
    line=$(timeout 180 contrib/rcload "$sc" --url "http://127.0.0.1:$port" --api-key bench \
      --server-pid "$pid" ${RCLOAD_ARGS:-} 2>/dev/null | tail -n 1)
    kill "$pid"; wait "$pid" 2>/dev/null || true
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
        "join_latency.p99_ms", "missing", "server_cpu_pct", "client_cpu_pct"]
out = {k: med(k) for k in keys if med(k) is not None}
print("'"$sc"' median of %d runs: %s" % (len(rows), json.dumps(out)))
'
done
