#!/usr/bin/env bash
# contrib/cluster.sh start|stop - a local rowcast cluster for trying it: a throwaway
# PostgreSQL (scripts/pg-test.sh), three rowcast nodes on 127.0.0.1:4001-4003 and nginx
# on 127.0.0.1:4000 in front of them (contrib/nginx.conf). Needs the built ./rowcast;
# installs nginx and PostgreSQL from Debian's packages when missing. State lives in
# ${ROWCAST_CLUSTER_DIR:-/tmp/rowcast-cluster}.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${ROWCAST_CLUSTER_DIR:-/tmp/rowcast-cluster}
port=${ROWCAST_CLUSTER_PORT:-4000}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

case "${1:-}" in
start)
  command -v nginx >/dev/null || { $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light >/dev/null; }
  mkdir -p "$dir"
  url=$(scripts/pg-test.sh start "$dir/pg")
  echo "$url" > "$dir/pg.url"
  ./rowcast migrate --db "$url" >/dev/null
  for i in 1 2 3; do
    ./rowcast serve --db "$url" --listen "127.0.0.1:$((port + i))" \
      --api-key "${ROWCAST_API_KEY:-rowcast-dev-api-key}" --log-file "$dir/node$i.log" &
    echo $! > "$dir/node$i.pid"
  done
  sed -e "s|__DIR__|$dir|g" -e "s|__PORT__|$port|g" -e "s|__PORT1__|$((port + 1))|g" \
      -e "s|__PORT2__|$((port + 2))|g" -e "s|__PORT3__|$((port + 3))|g" \
      contrib/nginx.conf > "$dir/nginx.conf"
  nginx -c "$dir/nginx.conf" -p "$dir"
  echo "cluster up: http://127.0.0.1:$port (nodes on $((port + 1))-$((port + 3)), database $url)"
  echo "logs in $dir/node*.log; stop with: contrib/cluster.sh stop"
  ;;
stop)
  [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  for i in 1 2 3; do
    [ -f "$dir/node$i.pid" ] && kill "$(cat "$dir/node$i.pid")" 2>/dev/null || true
  done
  sleep 1
  scripts/pg-test.sh stop "$dir/pg" || true
  rm -rf "$dir"
  ;;
*)
  echo "usage: contrib/cluster.sh start|stop" >&2
  exit 2
  ;;
esac
