#!/usr/bin/env bash
# Build the libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined)
# and run each for a while.  Usage: run.sh [seconds per target, default 20]
# [target ...]   (targets: ioctl atr card ext).  Exit status 0 when no target
# found a crash, leak, sanitizer report or hang; the reproducer is left in
# $SCARDIO_FUZZ_OUT (default: a temporary directory, printed).
# The seed corpus in corpus/<target> is copied, never written to.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
native=$(cd "$here/.." && pwd)
secs=${1:-20}
shift || true
targets=${*:-"ioctl atr card ext"}
CC=${CC:-clang}
if ! command -v "$CC" >/dev/null; then
    echo "run.sh: $CC not found (apt-get install clang)" >&2
    exit 77
fi
out=${SCARDIO_FUZZ_OUT:-$(mktemp -d)}
mkdir -p "$out"
echo "fuzz: building in $out"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-O1 -g -std=c11 -pthread -D_GNU_SOURCE -I$native -I$native/ifd -I$native/sim"

# The simulated driver, instrumented too (loaded with dlopen by the core).
"$CC" $CFLAGS $SAN -fsanitize=fuzzer-no-link -fPIC -shared -fvisibility=hidden \
    "$native/sim/sim_ifd.c" "$native/sim/card.c" "$native/sim/ext_card.c" "$native/sim/sim_socket.c" -o "$out/libscardio_sim.so"
"$CC" $CFLAGS $SAN -fsanitize=fuzzer -rdynamic "$here/fuzz_ioctl.c" \
    "$native"/core/*.c "$native"/ifd/*.c "$native"/posix/*.c -ldl -o "$out/fuzz_ioctl"
"$CC" $CFLAGS $SAN -fsanitize=fuzzer "$here/fuzz_atr.c" "$native/ifd/atr_info.c" \
    -o "$out/fuzz_atr"
"$CC" $CFLAGS $SAN -fsanitize=fuzzer "$here/fuzz_card.c" "$native/sim/card.c" \
    -o "$out/fuzz_card"
"$CC" $CFLAGS $SAN -fsanitize=fuzzer "$here/fuzz_ext.c" "$native/sim/ext_card.c" \
    -o "$out/fuzz_ext"

export SCARDIO_SIM_LIB="$out/libscardio_sim.so"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in $targets; do
    work="$out/corpus-$t"
    mkdir -p "$work"
    cp "$here/corpus/$t"/* "$work/" 2>/dev/null || true
    echo "== fuzz_$t: ${secs}s"
    # -timeout: any single input taking > 10 s is reported as a hang
    if ! "$out/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            -max_len=4096 -print_final_stats=1 -artifact_prefix="$out/crash-$t-" \
            "$work" > "$out/fuzz_$t.log" 2>&1; then
        status=1
        echo "!! fuzz_$t FAILED; log $out/fuzz_$t.log:" >&2
        tail -n 60 "$out/fuzz_$t.log" >&2
    else
        grep -E "stat::number_of_executed_units|cov:|stat::peak_rss_mb" "$out/fuzz_$t.log" \
            | tail -n 3 || true
    fi
done
[ -n "${SCARDIO_FUZZ_OUT:-}" ] || { [ $status -ne 0 ] || rm -rf "$out"; }
exit $status
