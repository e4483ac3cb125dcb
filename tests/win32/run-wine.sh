#!/usr/bin/env bash
# run-wine.sh - build the scardio Windows backend with mingw-w64 and run its
# contract tests under Wine against the simulated reader driver, installed
# both as a legacy kernel service and as a root-enumerated PnP device.  The
# same build holds the IFD-handler backend beside it, both behind the core's
# backend table: the simulated reader, built as a DLL, is driven through
# scio_open_ifd by the same test program (test_win32_ifd.c).
#
# Everything happens in a fresh temporary WINEPREFIX that is removed at the
# end; only this prefix's wineserver is stopped.  Exit status: 0 all passed,
# 77 wine or mingw-w64 missing (skip), anything else a failure.
#
# Environment: KEEP_WORK=1 keeps the work directory; TIMING_ITERS (default
# 300) sets the timing sample size.
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
start=$(date +%s)

say() { printf '[run-wine] %s\n' "$*"; }

# ---- tools --------------------------------------------------------------
CC="${MINGW_CC:-x86_64-w64-mingw32-gcc}"
WINE64=""
for c in "${WINE64_BIN:-}" /usr/lib/wine/wine64 "$(command -v wine64 2>/dev/null)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then WINE64="$c"; break; fi
done
WINESERVER=""
for c in "${WINESERVER_BIN:-}" /usr/lib/wine/wineserver64 "$(command -v wineserver64 2>/dev/null)" \
         "$(command -v wineserver 2>/dev/null)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then WINESERVER="$c"; break; fi
done
if ! command -v "$CC" >/dev/null 2>&1 || [ -z "$WINE64" ] || [ -z "$WINESERVER" ]; then
    echo "run-wine.sh: skipped: needs $CC, wine64 and wineserver" \
         "(apt-get install --no-install-recommends wine64 wine gcc-mingw-w64-x86-64 mingw-w64-x86-64-dev)" >&2
    exit 77
fi
winh="$(echo '#include <windows.h>' | "$CC" -xc -M - 2>/dev/null | tr ' \\' '\n\n' | grep '/windows\.h$' | head -n1)"
DDK="$(dirname "$winh")/ddk"
if [ ! -f "$DDK/ntddk.h" ]; then
    echo "run-wine.sh: skipped: mingw-w64 DDK headers not found (mingw-w64-x86-64-dev)" >&2
    exit 77
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/scardio-wine.XXXXXX")"
export WINEPREFIX="$work/prefix"
export WINEDEBUG=-all WINEARCH=win64 WINEDLLOVERRIDES="mscoree,mshtml=;winedbg.exe=d"
unset DISPLAY WAYLAND_DISPLAY
prefix_made=0

cleanup() {
    if [ "$prefix_made" = 1 ]; then
        # Only this prefix's server (and the programs it hosts).
        timeout 20 "$WINESERVER" -k >/dev/null 2>&1
        timeout 20 "$WINESERVER" -w >/dev/null 2>&1
    fi
    if [ "${KEEP_WORK:-0}" = 1 ]; then say "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { say "FAILED: $*"; say "total $(( $(date +%s) - start )) s"; exit 1; }

# wine CMD... : run with a deadline, output to the log
wine_run() {
    local log="$work/wine.log"
    echo "+ wine $*" >>"$log"
    timeout 120 "$WINE64" "$@" >>"$log" 2>&1
}

# ---- build ----------------------------------------------------------------
say "building with $CC"
build="$work/build"
mkdir -p "$build"
STRICT=(-Wall -Wextra -Werror -std=c11 -pedantic)
INC=(-I"$root/native" -I"$root/native/win32" -I"$root/native/sim" -I"$root/native/ifd")
cbuild() { "$CC" "$@" >>"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "build: $*"; }; }

# The core and both backends: Windows device paths and IFD handlers.
objs=()
for src in "$root"/native/win32/*.c "$root"/native/core/*.c "$root"/native/ifd/*.c; do
    o="$build/$(basename "${src%.c}").o"
    cbuild "${STRICT[@]}" -O2 "${INC[@]}" -c "$src" -o "$o"
    objs+=("$o")
done
cbuild "${STRICT[@]}" -O2 "${INC[@]}" "$here/test_win32.c" "$here/test_win32_ifd.c" \
    "${objs[@]}" -o "$build/test_win32.exe" -lsetupapi -lcfgmgr32
# The simulated reader as an IFD-handler DLL (exports only the IFDH* functions).
cbuild "${STRICT[@]}" -O2 "${INC[@]}" -shared "$root/native/sim/sim_ifd.c" \
    "$root/native/sim/card.c" "$root/native/sim/ext_card.c" "$root/native/sim/sim_socket.c" -o "$build/libscardio_sim.dll"
cbuild "${STRICT[@]}" -O2 "$here/simdrv/install.c" -o "$build/simdrv_install.exe" -lsetupapi -lnewdev
# The driver: DDK headers, no CRT, native subsystem, entry DriverEntry.
cbuild -O2 -Wall -Wextra -Werror -fno-stack-protector -mno-red-zone -isystem "$DDK" \
    -I"$root/native/sim" -shared -nostdlib -nostartfiles \
    -Wl,--subsystem,native -Wl,--entry,DriverEntry \
    "$here/simdrv/simdrv.c" "$root/native/sim/card.c" -o "$build/scardio_simdrv.sys" \
    -lntoskrnl -lhal -lgcc

# ---- prefix ------------------------------------------------------------------
say "creating the prefix"
prefix_made=1
wine_run wineboot -u || fail "wineboot"
timeout 60 "$WINESERVER" -w || fail "wineserver -w"
# Persistent server: otherwise the driver host quits soon after the last program.
"$WINESERVER" -p || fail "wineserver -p"

drivers="$WINEPREFIX/drive_c/windows/system32/drivers"
mkdir -p "$drivers"
cp "$build/scardio_simdrv.sys" "$drivers/scardio_simleg.sys"

# Wine's own sc.exe occasionally fails on a busy machine before any of our
# code runs (seen once in five runs): retry the service steps.
retry() {
    local n=1
    until "$@"; do
        [ "$n" -ge 3 ] && return 1
        say "retrying ($n): $*"
        n=$((n + 1))
        sleep 1
    done
}

say "installing the legacy kernel service"
retry wine_run sc create scardio_simleg type= kernel start= demand \
    binPath= 'C:\windows\system32\drivers\scardio_simleg.sys' || fail "sc create"
wine_run reg add 'HKLM\System\CurrentControlSet\Services\scardio_simleg' \
    /v LegacyDevice /t REG_DWORD /d 1 /f || fail "reg add"
retry wine_run sc start scardio_simleg || fail "sc start"

say "installing the PnP device"
pnp="$work/pnp"
mkdir -p "$pnp"
cp "$build/scardio_simdrv.sys" "$pnp/scardio_simpnp.sys"
cp "$here/simdrv/simdrv.inf" "$pnp/simdrv.inf"
cp "$build/simdrv_install.exe" "$pnp/"
(cd "$pnp" && wine_run ./simdrv_install.exe install simdrv.inf) || fail "PnP install"

# ---- tests -------------------------------------------------------------------
say "running the tests"
cp "$build/test_win32.exe" "$build/libscardio_sim.dll" "$work/"
(cd "$work" && timeout 150 "$WINE64" ./test_win32.exe --timing "${TIMING_ITERS:-300}" \
    >"$work/test.raw" 2>>"$work/wine.log")
rc=$?
tr -d '\r' <"$work/test.raw" >"$work/test.out"
cat "$work/test.out"

# ---- teardown ------------------------------------------------------------------
(cd "$pnp" && wine_run ./simdrv_install.exe remove) || say "note: PnP removal failed"
wine_run sc stop scardio_simleg || say "note: sc stop failed"
wine_run sc delete scardio_simleg || say "note: sc delete failed"

elapsed=$(( $(date +%s) - start ))
if [ $rc -ne 0 ]; then
    say "wine log (tail):"
    tail -n 40 "$work/wine.log"
    fail "test_win32.exe exited with $rc"
fi
grep -Eq '^[0-9]+ passed, 0 failed$' "$work/test.out" || fail "no pass line"
say "ok, total ${elapsed} s"
exit 0
