#!/usr/bin/env bash
# Build the C core's tests, the driver quirks' and the simulated reader with
# gcc, and run them under valgrind (memcheck: no errors, no leaks), then the
# core's, the simulated reader's (with its external cards' and its socket
# cards') again under ThreadSanitizer.
#
# usage: run.sh [--no-valgrind] [--macos-paths]
#   --no-valgrind  run the programs directly
#   --macos-paths  compile as if for macOS (-D__APPLE__ -U__linux__): the
#                  pipe instead of eventfd, realtime condition variables,
#                  the 32-bit DWORD / RESPONSECODE of Apple's IFD ABI
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
native=$(cd "$here/.." && pwd)
use_valgrind=1
platform=()
for arg in "$@"; do
    case $arg in
    --no-valgrind) use_valgrind=0 ;;
    --macos-paths) platform=(-D__APPLE__ -U__linux__) ;;
    *) echo "usage: $0 [--no-valgrind] [--macos-paths]" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || use_valgrind=0
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# (the ${a[@]+...} form: an empty array under set -u in bash < 4.4)
CFLAGS=(-O1 -g -Wall -Wextra -Werror -std=c11 -pthread ${platform[@]+"${platform[@]}"})

build() { # suffix, extra flags...
    local sfx=$1
    shift
    gcc "${CFLAGS[@]}" "$@" -fPIC -shared -fvisibility=hidden -I"$native" \
        -I"$native/sim" -I"$native/ifd" "$native/sim/sim_ifd.c" "$native/sim/card.c" "$native/sim/ext_card.c" "$native/sim/sim_socket.c" \
        -o "$out/libscardio_sim$sfx.so"
    gcc "${CFLAGS[@]}" "$@" -fPIC -shared -fvisibility=hidden -I"$native/ifd" \
        "$here/ext_driver.c" -o "$out/ext_driver$sfx.so"
    # -rdynamic: the test program exports log_msg / log_xxd to drivers, as
    # the Python extension does.
    gcc "${CFLAGS[@]}" "$@" -rdynamic -I"$native" -I"$native/ifd" \
        "$here/test_core.c" "$native"/core/*.c "$native"/ifd/*.c "$native"/posix/*.c -ldl \
        -o "$out/test_core$sfx"
}

run() {
    if [ "$use_valgrind" = 1 ]; then
        valgrind -q --fair-sched=yes --error-exitcode=99 --leak-check=full --child-silent-after-fork=yes \
            --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
            "$@"
    else
        "$@"
    fi
}

build ""
gcc "${CFLAGS[@]}" -I"$native" -I"$native/sim" -I"$native/ifd" \
    "$here/test_sim.c" -ldl -o "$out/test_sim"
echo "== test_core"
run "$out/test_core" "$out/libscardio_sim.so" "$out/ext_driver.so"
echo "== test_sim"
run "$out/test_sim" "$out/libscardio_sim.so"
gcc "${CFLAGS[@]}" -I"$native" -I"$native/sim" -I"$native/ifd" \
    "$here/test_ext_card.c" -ldl -o "$out/test_ext_card"
echo "== test_ext_card"
run "$out/test_ext_card" "$out/libscardio_sim.so"
gcc "${CFLAGS[@]}" -I"$native" -I"$native/sim" -I"$native/ifd" \
    "$here/test_sim_socket.c" -ldl -o "$out/test_sim_socket"
echo "== test_sim_socket"
run "$out/test_sim_socket" "$out/libscardio_sim.so"
# -rdynamic: the program exports the symbols the vpcd entry looks for.
gcc "${CFLAGS[@]}" -rdynamic -I"$native" -I"$native/ifd" "$here/test_quirks.c" \
    "$native"/core/*.c "$native"/ifd/*.c "$native"/posix/*.c -ldl -o "$out/test_quirks"
echo "== test_quirks"
run "$out/test_quirks" "$out"

# The core is threaded (lanes, completions, cancellation, shutdown): the
# same test under ThreadSanitizer, failing on any data race it reports.
if [ "${SCARDIO_SKIP_TSAN:-0}" != 1 ] && echo 'int main(void){return 0;}' |
        gcc -fsanitize=thread -xc - -o "$out/tsan-probe" 2>/dev/null; then
    echo "== test_core (ThreadSanitizer)"
    build _tsan -fsanitize=thread
    TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$out/test_core_tsan" \
        "$out/libscardio_sim_tsan.so" "$out/ext_driver_tsan.so"
    # The simulated reader: its lock-free presence and count reads racing
    # card events, closes and the reuse of their slots.
    echo "== test_sim (ThreadSanitizer)"
    gcc "${CFLAGS[@]}" -fsanitize=thread -I"$native" -I"$native/sim" -I"$native/ifd" \
        "$here/test_sim.c" -ldl -o "$out/test_sim_tsan"
    TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$out/test_sim_tsan" \
        "$out/libscardio_sim_tsan.so"
    # External cards: calls made with no reader lock held, racing swaps.
    echo "== test_ext_card (ThreadSanitizer)"
    gcc "${CFLAGS[@]}" -fsanitize=thread -I"$native" -I"$native/sim" -I"$native/ifd" \
        "$here/test_ext_card.c" -ldl -o "$out/test_ext_card_tsan"
    TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$out/test_ext_card_tsan" \
        "$out/libscardio_sim_tsan.so"
    # Socket cards: the link's thread, the reader's callers and the server.
    echo "== test_sim_socket (ThreadSanitizer)"
    gcc "${CFLAGS[@]}" -fsanitize=thread -I"$native" -I"$native/sim" -I"$native/ifd" \
        "$here/test_sim_socket.c" -ldl -o "$out/test_sim_socket_tsan"
    TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$out/test_sim_socket_tsan" \
        "$out/libscardio_sim_tsan.so"
fi
