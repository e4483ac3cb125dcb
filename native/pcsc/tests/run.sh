#!/usr/bin/env bash
# Build the PC/SC backend's C tests with gcc (against fake_pcsc.c, a scripted
# client library) and run them under valgrind (memcheck: no errors, no
# leaks), then under ThreadSanitizer.
#
# usage: run.sh [--no-valgrind] [--macos-paths]
#   --no-valgrind  run the programs directly (and skip ThreadSanitizer)
#   --macos-paths  compile as if for macOS (-D__APPLE__ -U__linux__): the
#                  framework's 32-bit types, packed structures, SCardControl132
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
native=$(cd "$here/../.." && pwd)
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
CFLAGS=(-O1 -g -Wall -Wextra -Werror -std=c11 -pthread ${platform[@]+"${platform[@]}"})

build() { # suffix, extra flags...
    local sfx=$1
    shift
    gcc "${CFLAGS[@]}" "$@" -fPIC -shared -fvisibility=hidden -I"$native/pcsc" \
        "$here/fake_pcsc.c" -o "$out/fake_pcsc$sfx.so"
    gcc "${CFLAGS[@]}" "$@" -I"$native" "$here/test_pcsc.c" "$native"/core/*.c \
        "$native/pcsc/pcsc_backend.c" -ldl -o "$out/test_pcsc$sfx"
}

run() {
    if [ "$use_valgrind" = 1 ]; then
        valgrind -q --fair-sched=yes --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
            "$@"
    else
        "$@"
    fi
}

build ""
echo "== test_pcsc missing"
run "$out/test_pcsc" missing
echo "== test_pcsc no-entry"
run "$out/test_pcsc" no-entry libm.so.6   # a library without the SCard* API
echo "== test_pcsc main"
run "$out/test_pcsc" main "$out/fake_pcsc.so"
if [ "$use_valgrind" = 1 ] && [ ${#platform[@]} -eq 0 ]; then
    build "_tsan" -fsanitize=thread
    echo "== test_pcsc main (ThreadSanitizer)"
    TSAN_OPTIONS=halt_on_error=1 "$out/test_pcsc_tsan" main "$out/fake_pcsc_tsan.so"
fi
