#!/bin/sh
# A throwaway PostgreSQL for tests, from Debian's packages.
#
#   scripts/pg-test.sh start DIR   initdb in DIR, start on a free port on 127.0.0.1 (and a
#                                  unix socket in DIR), create database "rowcast", print
#                                  its URL (postgres://postgres@127.0.0.1:PORT/rowcast)
#   scripts/pg-test.sh stop DIR    stop that server and remove DIR
#
# Works as root (initdb refuses root: the server runs as the `postgres` user, who must be
# able to reach DIR; /tmp/... is fine) or as an ordinary user. Installs the `postgresql`
# package when no server binaries are found (root or sudo). Every step is bounded in
# time. Only the URL goes to stdout; progress and errors go to stderr.
# PG_BIN=/usr/lib/postgresql/NN/bin picks a server version (default: the newest installed).
set -eu

usage() {
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 2
}

say() { printf 'pg-test: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$2

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# Finds the server binaries: $PG_BIN, else the newest /usr/lib/postgresql/*/bin.
find_bin() {
    if [ -n "${PG_BIN:-}" ]; then
        [ -x "$PG_BIN/initdb" ] && { echo "$PG_BIN"; return 0; }
        return 1
    fi
    best=""
    best_v=0
    for d in /usr/lib/postgresql/*/bin; do
        v=${d#/usr/lib/postgresql/}
        v=${v%/bin}
        case $v in '' | *[!0-9]*) continue ;; esac
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ "$v" -gt "$best_v" ]; then
            best=$d
            best_v=$v
        fi
    done
    [ -n "$best" ] && echo "$best"
}

# Runs a command as the server's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Installs the server from Debian's packages if it is missing.
ensure_server() {
    if [ -n "${PG_BIN:-}" ] && ! bin=$(find_bin); then
        die "PG_BIN=$PG_BIN has no initdb"
    fi
    if ! bin=$(find_bin); then
        say "PostgreSQL server binaries not found: installing the Debian package postgresql"
        if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then
            die "not root and no sudo: install it with apt-get install postgresql"
        fi
        timeout 120 $SUDO apt-get update -qq >&2 || say "apt-get update failed; trying the install anyway"
        DEBIAN_FRONTEND=noninteractive timeout 600 $SUDO apt-get install -y -qq \
            --no-install-recommends postgresql >&2 || die "apt-get install postgresql failed"
        bin=$(find_bin) || die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        say "creating the system user postgres"
        useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/sh postgres ||
            die "cannot create the postgres user"
    fi
}

# Prints a TCP port on 127.0.0.1 that nothing listens on right now (the start is retried
# with another one if someone takes it in between).
pick_port() {
    i=0
    while [ $i -lt 50 ]; do
        # $$ and the retry count spread the choice when several tests start at once.
        p=$(( ( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') + $$ + i ) % 30000 + 20000 ))
        if command -v ss >/dev/null 2>&1; then
            ss -Htln "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
        else
            echo "$p"
            return 0
        fi
        i=$((i + 1))
    done
    return 1
}

start() {
    ensure_server
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ -e "$dir/data" ] && die "$dir/data already exists (stop it first)"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
        chmod 700 "$dir"
        runuser -u postgres -- test -w "$dir" ||
            die "user postgres cannot write $dir (pick a directory it can reach, e.g. under /tmp)"
    fi
    say "initdb ($bin) in $dir/data"
    # Trust on loopback and the socket in $dir only: a throwaway test server.
    as_owner timeout 120 "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
        --locale=C >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        die "initdb failed"
    }
    tries=0
    while :; do
        port=$(pick_port) || die "no free port found"
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" \
            start >"$dir/pg_ctl.log" 2>&1; then
            break
        fi
        tries=$((tries + 1))
        if [ $tries -ge 5 ] || ! grep -qi "could not bind\|address already in use" "$dir/server.log"; then
            cat "$dir/pg_ctl.log" "$dir/server.log" >&2 || true
            as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
            die "the server did not start"
        fi
        say "port $port taken, trying another"
    done
    echo "$port" >"$dir/port"
    echo "$bin" >"$dir/bin"
    PGCONNECT_TIMEOUT=10 timeout 60 "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres rowcast ||
        die "createdb rowcast failed"
    url="postgres://postgres@127.0.0.1:$port/rowcast"
    echo "$url" >"$dir/url"
    say "running on port $port"
    echo "$url"
}

stop() {
    [ -d "$dir" ] || die "$dir does not exist"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/data/postmaster.pid" ]; then
        bin=$(cat "$dir/bin" 2>/dev/null || find_bin) || die "no PostgreSQL binaries"
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >&2 ||
            as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >&2 ||
            say "could not stop the server in $dir"
    fi
    rm -rf "$dir"
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) usage ;;
esac
