#!/usr/bin/env bash
# Build the C core's tests and the simulated reader with gcc, and run them
# under valgrind (memcheck: no errors, no leaks).  Usage: run.sh [--no-valgrind]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
native=$(cd "$here/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
CFLAGS="-O1 -g -Wall -Wextra -Werror -std=c11 -pthread"

gcc $CFLAGS -fPIC -shared -fvisibility=hidden -I"$native" -I"$native/sim" -I"$native/ifd" \
    "$native/sim/sim_ifd.c" "$native/sim/card.c" -o "$out/libscardio_sim.so"
# -rdynamic: the test program exports log_msg / log_xxd to drivers, as the
# Python extension does.
gcc $CFLAGS -rdynamic -I"$native" -I"$native/ifd" \
    "$here/test_core.c" "$native"/core/*.c "$native"/ifd/*.c -ldl -o "$out/test_core"
gcc $CFLAGS -I"$native" -I"$native/sim" -I"$native/ifd" \
    "$here/test_sim.c" -ldl -o "$out/test_sim"

run() {
    if [ "${1:-}" = "--no-valgrind" ] || ! command -v valgrind >/dev/null; then
        shift || true
        "$@"
    else
        shift
        valgrind -q --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
            "$@"
    fi
}
mode=${1:-valgrind}
echo "== test_core"
run "$mode" "$out/test_core" "$out/libscardio_sim.so"
echo "== test_sim"
run "$mode" "$out/test_sim" "$out/libscardio_sim.so"

# The core is threaded (lanes, completions, cancellation, shutdown): the
# same test under ThreadSanitizer, failing on any data race it reports.
if [ "${SCARDIO_SKIP_TSAN:-0}" != 1 ] && echo 'int main(void){return 0;}' |
        gcc -fsanitize=thread -xc - -o "$out/tsan-probe" 2>/dev/null; then
    echo "== test_core (ThreadSanitizer)"
    gcc $CFLAGS -fsanitize=thread -fPIC -shared -fvisibility=hidden -I"$native" \
        -I"$native/sim" -I"$native/ifd" "$native/sim/sim_ifd.c" "$native/sim/card.c" \
        -o "$out/libscardio_sim_tsan.so"
    gcc $CFLAGS -fsanitize=thread -rdynamic -I"$native" -I"$native/ifd" \
        "$here/test_core.c" "$native"/core/*.c "$native"/ifd/*.c -ldl \
        -o "$out/test_core_tsan"
    TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$out/test_core_tsan" \
        "$out/libscardio_sim_tsan.so"
fi
