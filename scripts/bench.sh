#!/usr/bin/env bash
# scripts/bench.sh [RUNS] [SCENARIO...] - runs contrib/rcload scenarios against a fresh
# rowcast on 127.0.0.1 (a new SQLite file per run) and prints each run's JSON line and
# the median of the headline numbers. Server flags: ROWCAST_BENCH_FLAGS (default
# "--rate-limit 0": benchmarks measure the server, not the limiter).
#
# PostgreSQL: ROWCAST_BENCH_PG=postgres://USER@HOST:PORT (a server, e.g. from
# scripts/pg-test.sh start DIR) runs every run on a new database there instead of a
# SQLite file. ROWCAST_BENCH_NODES=N (2 or more) starts nodes 2..N on the same database
# at port+1..port+N-1 (for rcload's --sub-url http://127.0.0.1:PORT+1). With
# ROWCAST_BENCH_SPREAD=1 (rest, chat) one rcload runs against every node at once, each
# with RCLOAD_ARGS, and the run's line is their sum: msgs_per_s added up, the worst p99.
#
# rcload options for every run: RCLOAD_ARGS, e.g. RCLOAD_ARGS="--notif-subs 100"
# scripts/bench.sh 5 fanout (the medians then include the unread events and their latency).
# realtime-js's protocol instead of phoenix.js's: RCLOAD_ARGS="--realtime" (public
# channel) or RCLOAD_ARGS="--realtime=private" (the room's channel) scripts/bench.sh 5 fanout.
#
# fanout: after each rowcast run, the same rcload settings run once more with --floor
# (rcload's own minimal reference server, no rowcast), in the same series; the script
# prints that run's line, the ratio rowcast/floor of deliveries/s and of delivery p99,
# and the floor's medians beside rowcast's. ROWCAST_BENCH_FLOOR=0 skips it; so do
# RCLOAD_ARGS the floor does not take (--sub-url, --notif-subs, --realtime, --publisher rest).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(rest chat fanout join idle)
port=${ROWCAST_BENCH_PORT:-4790}
flags=${ROWCAST_BENCH_FLAGS:---rate-limit 0}
pg=${ROWCAST_BENCH_PG:-}
floor=${ROWCAST_BENCH_FLOOR:-1}
nodes=${ROWCAST_BENCH_NODES:-1}
spread=${ROWCAST_BENCH_SPREAD:-0}
dir=$(mktemp -d /tmp/rowcast-bench.XXXXXX)
pid=""; others=""; db=""
cleanup() {
  kill $pid $others 2>/dev/null || true
  wait $pid $others 2>/dev/null || true
  [ -z "$db" ] || psql -q -X "$pg/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
make -j"$(nproc)" rowcast contrib/rcload >/dev/null
if [ "$nodes" -gt 1 ] && [ -z "$pg" ]; then
  echo "ROWCAST_BENCH_NODES=$nodes needs ROWCAST_BENCH_PG (nodes share one PostgreSQL)" >&2
  exit 2
fi

# The medians of the headline numbers of the JSON lines on stdin, labelled $1.
medians() {
  python3 -c '
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
print("%s median of %d runs: %s" % (sys.argv[1], len(rows), json.dumps(out)))
' "$1"
}

# The ratio rowcast/floor of deliveries/s and of delivery p99 between two JSON lines.
ratio() {
  python3 -c '
import json, sys
def get(line, path):
    try:
        v = json.loads(line)
    except ValueError:
        return None
    if path in v: # a medians line: flat keys
        v = v[path]
        return v if isinstance(v, (int, float)) else None
    for k in path.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v if isinstance(v, (int, float)) else None
def r(a, b):
    return "%.2f" % (a / b) if a is not None and b else "n/a"
rc, fl = sys.argv[1], sys.argv[2]
print("deliveries/s %s, delivery p99 %s" % (
    r(get(rc, "deliveries_per_s"), get(fl, "deliveries_per_s")),
    r(get(rc, "delivery_latency.p99_ms"), get(fl, "delivery_latency.p99_ms"))))
' "$1" "$2"
}

for sc in "${scenarios[@]}"; do
  results=()
  floors=()
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
    for k in $(seq 2 "$nodes"); do
      # shellcheck disable=SC2086
      ./rowcast serve --db "$url" --listen "127.0.0.1:$((port + k - 1))" --api-key bench \
        --jwt-secret bench-secret --log-level warn $flags 2>"$dir/server$k.log" &
      others="$others $!"
    done
    for _ in $(seq 1 100); do
      up=1
      for k in $(seq 1 "$nodes"); do
        curl -sf "127.0.0.1:$((port + k - 1))/healthz" >/dev/null || up=0
      done
      [ "$up" = 0 ] || break
      sleep 0.1
    done
    if [ "$spread" = 1 ] && [ "$nodes" -gt 1 ]; then
      loads=""
      for k in $(seq 1 "$nodes"); do
        # shellcheck disable=SC2086
        timeout 180 contrib/rcload "$sc" --url "http://127.0.0.1:$((port + k - 1))" \
          --api-key bench ${RCLOAD_ARGS:-} >"$dir/spread$k.out" 2>/dev/null &
        loads="$loads $!"
      done
      # shellcheck disable=SC2086
      wait $loads || true
      for k in $(seq 1 "$nodes"); do tail -n 1 "$dir/spread$k.out" >"$dir/spread$k"; done
      rm -f "$dir"/spread*.out
      line=$(cat "$dir"/spread* | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip().startswith("{")]
out = {"scenario": "spread", "nodes": len(rows),
       "msgs_per_s": sum(r.get("msgs_per_s", 0) for r in rows),
       "missing": sum(r.get("missing", 0) or 0 for r in rows),
       "ok": len(rows) > 0 and all(r.get("ok") for r in rows)}
for lat in ("latency", "ack_latency", "delivery_latency"):
    p99 = [r[lat]["p99_ms"] for r in rows if isinstance(r.get(lat), dict)]
    if p99:
        out[lat] = {"p99_ms": max(p99)}
print(json.dumps(out))')
      rm -f "$dir"/spread*
    else
      # shellcheck disable=SC2086
      line=$(timeout 180 contrib/rcload "$sc" --url "http://127.0.0.1:$port" --api-key bench \
        --server-pid "$pid" ${RCLOAD_ARGS:-} 2>/dev/null | tail -n 1)
    fi
    kill $pid $others 2>/dev/null || true
    wait $pid $others 2>/dev/null || true
    pid=""; others=""
    if [ -n "$db" ]; then
      psql -q -X "$pg/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null
      db=""
    fi
    echo "$sc run $i: $line"
    results+=("$line")
    if [ "$sc" = fanout ] && [ "$floor" != 0 ]; then
      # shellcheck disable=SC2086
      fline=$(timeout 180 contrib/rcload fanout --floor ${RCLOAD_ARGS:-} 2>/dev/null |
        tail -n 1) || true
      if [ "${fline:0:1}" = "{" ]; then
        echo "$sc run $i floor: $fline"
        echo "$sc run $i rowcast/floor: $(ratio "$line" "$fline")"
        floors+=("$fline")
      fi
    fi
  done
  mline=$(printf '%s\n' "${results[@]}" | medians "$sc")
  echo "$mline"
  if [ ${#floors[@]} -gt 0 ]; then
    fmline=$(printf '%s\n' "${floors[@]}" | medians "$sc floor")
    echo "$fmline"
    echo "$sc medians rowcast/floor: $(ratio "${mline#*runs: }" "${fmline#*runs: }")"
  fi
done
