#!/bin/sh
# fuzz.sh - builds and runs the libFuzzer targets in tests/fuzz/.
#
#   scripts/fuzz.sh build                  builds librowcast.a with clang and
#                                          -fsanitize=fuzzer-no-link,address,undefined in a
#                                          build directory of its own, then the targets
#   scripts/fuzz.sh run SECONDS [TARGET…]  builds, then runs each target (default: all)
#                                          for SECONDS on its committed corpus and .dict;
#                                          new inputs go to a scratch directory, never to
#                                          the committed corpus. Exits 1 on any crash, leak
#                                          or timeout, naming the reproducer.
#   scripts/fuzz.sh merge [TARGET…]        minimizes the committed corpus of each target,
#                                          adding what the last runs found (greedy set cover
#                                          of -set_cover_merge=1; FUZZ_MERGE=merge for -merge=1)
#   scripts/fuzz.sh repro TARGET FILE…     runs a target on the given inputs once
#
# Environment: FUZZ_BUILD (build directory; default ./fuzz-build in the source tree),
# CC (default clang), FUZZ_JOBS (parallel targets for `run`, default 1), FUZZ_ARGS
# (extra libFuzzer flags), FUZZ_SYNC=0 (keep the build's copy of the sources as it is,
# see configure_lib). The build needs clang and libclang-rt-XX-dev
# (Debian: apt-get install clang libclang-rt-14-dev).
set -eu

TARGETS="fuzz_codec fuzz_jwt fuzz_longpoll fuzz_frames"

srcdir=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD:-$srcdir/fuzz-build}
CC=${CC:-clang}
SAN='-fsanitize=address,undefined -fno-sanitize-recover=undefined'
CFLAGS_LIB="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link $SAN"
CFLAGS_FUZZ="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer $SAN"

die() {
    echo "fuzz.sh: $*" >&2
    exit 2
}

usage() {
    sed -n '/^set -eu/q; 2,$s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

# Configures a tree of our own: a VPATH build when the source tree is clean, otherwise
# (an in-tree `./configure` was run there, which automake refuses to mix with VPATH) a
# copy of the sources, configured in place.
configure_lib() {
    if [ -f "$build/lib/Makefile" ]; then
        if [ -f "$build/lib/.copy" ] && [ "${FUZZ_SYNC:-1}" != 0 ]; then
            sync_copy
        fi
        return
    fi
    mkdir -p "$build/lib"
    if [ -f "$srcdir/config.status" ]; then
        touch "$build/lib/.copy"
        sync_copy
        top=$build/lib
    else
        [ -x "$srcdir/configure" ] || die "run autoreconf -fi in $srcdir first"
        top=$srcdir
    fi
    (cd "$build/lib" && "$top/configure" CC="$CC" CFLAGS="$CFLAGS_LIB" --disable-werror \
        >configure.out 2>&1) || {
        tail -20 "$build/lib/configure.out" >&2
        die "configure failed (see $build/lib/configure.out)"
    }
}

# Refreshes the copy of the sources (timestamps kept, so make rebuilds what changed).
sync_copy() {
    (cd "$srcdir" && tar -cf - \
        --exclude=./.git --exclude=node_modules --exclude=./autom4te.cache \
        --exclude=./config.status --exclude=./config.log --exclude=./Makefile \
        --exclude=./rc_autoconf.h --exclude=./stamp-h1 --exclude=./rowcast \
        --exclude='./fuzz-*' --exclude='*.o' --exclude='*.a' --exclude=.deps \
        --exclude=.dirstamp --exclude='*.db' --exclude='*.db-*' --exclude='*.log' \
        --exclude='*.trs' --exclude='./tests/unit/test_*[!c]' --exclude=./contrib/rcload \
        --exclude=./tests/fuzz/corpus .) | (cd "$build/lib" && tar -xf -)
}

build() {
    command -v "$CC" >/dev/null 2>&1 || die "$CC not found (apt-get install clang libclang-rt-14-dev)"
    configure_lib
    echo "fuzz.sh: building librowcast.a in $build/lib" >&2
    make -C "$build/lib" -s -j"${FUZZ_MAKE_JOBS:-2}" librowcast.a >/dev/null
    libs="$(pkg-config --libs libmicrohttpd jansson sqlite3 libpq libcrypto) -lwslay -lpthread -lm"
    cflags="$(pkg-config --cflags libmicrohttpd jansson sqlite3 libpq libcrypto)"
    for t in $TARGETS; do
        src=$srcdir/tests/fuzz/$t.c
        bin=$build/$t
        if [ ! -x "$bin" ] || [ -n "$(find "$src" "$build/lib/librowcast.a" -newer "$bin")" ]; then
            echo "fuzz.sh: building $t" >&2
            # shellcheck disable=SC2086
            $CC -std=gnu11 $CFLAGS_FUZZ -Wall -Wextra -Wno-unused-parameter \
                -I"$build/lib" -I"$srcdir/src" $cflags \
                -o "$bin" "$src" "$build/lib/librowcast.a" $libs
        fi
    done
}

# Picks targets from the arguments (all when none); checks the names.
select_targets() {
    if [ $# -eq 0 ]; then
        echo "$TARGETS"
        return
    fi
    for t in "$@"; do
        case " $TARGETS " in
        *" $t "*) ;;
        *) die "unknown target $t (one of: $TARGETS)" ;;
        esac
    done
    echo "$*"
}

# Runs one target for $secs; returns non-zero on a finding.
run_one() {
    t=$1
    corpus=$srcdir/tests/fuzz/corpus/$t
    scratch=$build/new/$t
    art=$build/artifacts/$t
    mkdir -p "$scratch" "$art"
    log=$build/$t.log
    echo "fuzz.sh: $t for ${secs}s (log $log)" >&2
    rc=0
    # The first directory receives new inputs: the scratch one, not the committed corpus.
    # shellcheck disable=SC2086
    "$build/$t" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -dict="$srcdir/tests/fuzz/$t.dict" \
        -artifact_prefix="$art/" ${FUZZ_ARGS:-} "$scratch" "$corpus" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([^ ]*\).*/cov \1, ft \2, corpus \3/p')
    if [ "$rc" -ne 0 ]; then
        repro=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        echo "fuzz.sh: $t FAILED (exit $rc); reproducer: ${repro:-none written}" >&2
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|fuzz_[a-z]+: )' "$log" | head -5 >&2 || true
        echo "fuzz.sh: rerun with: $build/$t ${repro:-FILE}" >&2
        return 1
    fi
    echo "fuzz.sh: $t ok: ${execs:-?} runs in ${secs}s, ${cov:-no stats}, peak RSS ${rss:-?} MB" >&2
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift

case $cmd in
build)
    build
    ;;
run)
    [ $# -ge 1 ] || usage
    secs=$1
    shift
    case $secs in '' | *[!0-9]*) die "SECONDS must be a number" ;; esac
    targets=$(select_targets "$@")
    build
    failed=0
    jobs=${FUZZ_JOBS:-1}
    if [ "$jobs" -le 1 ]; then
        for t in $targets; do
            run_one "$t" || failed=1
        done
    else
        pids=""
        n=0
        for t in $targets; do
            run_one "$t" &
            pids="$pids $!"
            n=$((n + 1))
            if [ "$n" -ge "$jobs" ]; then
                for p in $pids; do wait "$p" || failed=1; done
                pids=""
                n=0
            fi
        done
        for p in $pids; do wait "$p" || failed=1; done
    fi
    exit $failed
    ;;
merge)
    targets=$(select_targets "$@")
    build
    for t in $targets; do
        corpus=$srcdir/tests/fuzz/corpus/$t
        tmp=$build/merge/$t
        rm -rf "$tmp"
        mkdir -p "$tmp" "$corpus" "$build/new/$t"
        "$build/$t" -"${FUZZ_MERGE:-set_cover_merge}"=1 -max_len=65536 -timeout=25 \
            "$tmp" "$corpus" "$build/new/$t" \
            >"$build/$t.merge.log" 2>&1 || die "merge of $t failed (see $build/$t.merge.log)"
        rm -f "$corpus"/*
        cp "$tmp"/* "$corpus"/ 2>/dev/null || true
        echo "fuzz.sh: $t corpus: $(find "$corpus" -type f | wc -l) files, $(cat "$corpus"/* | wc -c) bytes" >&2
    done
    ;;
repro)
    [ $# -ge 2 ] || usage
    t=$(select_targets "$1")
    shift
    build
    "$build/$t" -runs=1 "$@"
    ;;
*)
    usage
    ;;
esac
