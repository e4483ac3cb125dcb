"""The physical floor: the same IFDH entry points called from a C loop.

A small C program (source below) is compiled with gcc into a temporary
directory the first time it is needed.  It dlopen()s the driver (exporting
``log_msg`` / ``log_xxd`` itself, as pcscd does, so drivers like vpcd load),
opens one channel and then serves commands read line by line from stdin,
answering one JSON object per line on stdout, so that the benchmark can
interleave batches of C calls with batches of Python calls:

    ctl <n> [hex]         IFDHControl(0x42000000 + n)           -> {"rc": ..}
    power                 IFDHPowerICC(UP) + SetProtocolParameters(T=1)
    run <op> <count>      time <count> calls of <op>            -> {"ns": total}
    quit

Ops: ``presence`` (IFDHICCPresence), ``state`` (IFDHICCPresence plus the
simulated reader's card-event IFDHGetCapabilities: exactly the driver calls
scardio's GET_STATE makes on the sim with a card in), ``tx5`` / ``tx261`` / ``tx4k``
(IFDHTransmitToICC, T=1), ``connect`` (PowerICC UP + SetProtocolParameters
+ PowerICC DOWN).  Times come from clock_gettime(CLOCK_MONOTONIC) around the
whole batch.
"""

from __future__ import annotations

import json
import subprocess

from apdus import APDUS
import ccompile
from ccompile import CProgram
from harness import LineReader, quit_process

C_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef unsigned long DWORD;
typedef long RC;
typedef struct { DWORD Protocol; DWORD Length; } IOHDR;

/* What pcscd exports to its drivers. */
void log_msg(const int priority, const char *fmt, ...) { (void)priority; (void)fmt; }
void log_xxd(const int priority, const char *msg, const unsigned char *b, const int n)
{ (void)priority; (void)msg; (void)b; (void)n; }

static RC (*create_by_name)(DWORD, char *);
static RC (*close_channel)(DWORD);
static RC (*get_caps)(DWORD, DWORD, DWORD *, unsigned char *);
static RC (*set_proto)(DWORD, DWORD, unsigned char, unsigned char, unsigned char, unsigned char);
static RC (*power)(DWORD, DWORD, unsigned char *, DWORD *);
static RC (*transmit)(DWORD, IOHDR, unsigned char *, DWORD, unsigned char *, DWORD *, IOHDR *);
static RC (*presence)(DWORD);
static RC (*control)(DWORD, DWORD, unsigned char *, DWORD, unsigned char *, DWORD, DWORD *);

static DWORD lun;
static unsigned char rx[65538 + 16];
static unsigned char tx[3][70000];
static DWORD txlen[3];

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int unhex(const char *s, unsigned char *out, size_t cap)
{
    size_t n = 0;
    while (s[0] && s[1] && n < cap) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1) break;
        out[n++] = (unsigned char)v;
        s += 2;
    }
    return (int)n;
}

static RC do_op(int op)
{
    unsigned char atr[64];
    DWORD len;
    RC rc;
    IOHDR pci = {1, sizeof(IOHDR)}, rpci = {1, sizeof(IOHDR)};
    switch (op) {
    case 0:
        return presence(lun);
    case 1:
        rc = presence(lun);
        len = sizeof atr;
        get_caps(lun, 0x0007A002, &len, atr); /* SCIO_IFD_TAG_CARD_EVENTS: swap check */
        return rc;
    case 2: case 3: case 4:
        len = 65538;
        return transmit(lun, pci, tx[op - 2], txlen[op - 2], rx, &len, &rpci);
    case 5:
        len = sizeof atr;
        rc = power(lun, 500, atr, &len);
        if (rc) return rc;
        if (set_proto) set_proto(lun, 2, 1, atr[2], 0, 0);
        len = sizeof atr;
        return power(lun, 501, atr, &len);
    }
    return -1;
}

int main(int argc, char **argv)
{
    char line[200000];
    void *h;
    if (argc < 7) {
        fprintf(stderr, "usage: cfloor LIB DEVICE LUN TX5 TX261 TX4K\n");
        return 2;
    }
    h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) { printf("{\"error\": \"dlopen\"}\n"); fflush(stdout); return 1; }
    *(void **)&create_by_name = dlsym(h, "IFDHCreateChannelByName");
    *(void **)&close_channel = dlsym(h, "IFDHCloseChannel");
    *(void **)&get_caps = dlsym(h, "IFDHGetCapabilities");
    *(void **)&set_proto = dlsym(h, "IFDHSetProtocolParameters");
    *(void **)&power = dlsym(h, "IFDHPowerICC");
    *(void **)&transmit = dlsym(h, "IFDHTransmitToICC");
    *(void **)&presence = dlsym(h, "IFDHICCPresence");
    *(void **)&control = dlsym(h, "IFDHControl");
    lun = strtoul(argv[3], NULL, 0);
    for (int i = 0; i < 3; i++)
        txlen[i] = (DWORD)unhex(argv[4 + i], tx[i], sizeof tx[i]);
    if (create_by_name(lun, argv[2]) != 0) {
        printf("{\"error\": \"create channel\"}\n"); fflush(stdout); return 1;
    }
    printf("{\"ready\": true}\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32] = "", arg[32] = "";
        long count = 0;
        sscanf(line, "%31s %31s %ld", cmd, arg, &count);
        if (!strcmp(cmd, "quit")) {
            break;
        } else if (!strcmp(cmd, "ctl")) {
            unsigned char in[64], out[256];
            DWORD ret = 0;
            char hex[130] = "";
            sscanf(line, "%*s %*s %129s", hex);
            int n = unhex(hex, in, sizeof in);
            RC rc = control(lun, 0x42000000UL + strtoul(arg, NULL, 0), in, (DWORD)n,
                            out, sizeof out, &ret);
            printf("{\"rc\": %ld}\n", rc);
        } else if (!strcmp(cmd, "power")) {
            unsigned char atr[64];
            DWORD len = sizeof atr;
            RC rc = power(lun, 500, atr, &len);
            if (!rc && set_proto) rc = set_proto(lun, 2, 1, atr[2], 0, 0);
            printf("{\"rc\": %ld}\n", rc);
        } else if (!strcmp(cmd, "run")) {
            static const char *names[] = {"presence", "state", "tx5", "tx261", "tx4k", "connect"};
            int op = -1;
            for (int i = 0; i < 6; i++)
                if (!strcmp(arg, names[i])) op = i;
            if (op < 0) { printf("{\"error\": \"unknown op\"}\n"); fflush(stdout); continue; }
            RC rc = 0;
            int64_t t0 = now_ns();
            for (long i = 0; i < count; i++) {
                RC r = do_op(op);
                if (r != 0 && r != 615 && r != 616) rc = r; /* ICC_(NOT_)PRESENT are answers */
            }
            int64_t t1 = now_ns();
            printf("{\"ns\": %lld, \"rc\": %ld}\n", (long long)(t1 - t0), rc);
        } else {
            printf("{\"error\": \"unknown command\"}\n");
        }
        fflush(stdout);
    }
    close_channel(lun);
    return 0;
}
"""

_program = CProgram("cfloor", C_SOURCE, ["-std=gnu11", "-rdynamic"], ["-ldl"])


def have_gcc() -> bool:
    return ccompile.have_gcc()


def build() -> str:
    """Compile the C floor program once per process; return its path."""
    return _program.path()


def cleanup() -> None:
    _program.cleanup()


class CFloor:
    """One driver channel driven from the compiled C loop (a subprocess)."""

    def __init__(self, library: str, device_name: str, lun: int, timeout: float = 30.0):
        exe = build()
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [exe, library, device_name, str(lun),
             APDUS["tx5"].hex(), APDUS["tx261"].hex(), APDUS["tx4k"].hex()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.reader = LineReader(self.proc)
        first = self._read()
        if not first.get("ready"):
            self.close()
            raise RuntimeError(f"C floor program failed to start: {first}")

    def _read(self) -> dict:
        return json.loads(self.reader.readline(self.timeout))

    def command(self, text: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"C floor: {text!r}: {reply['error']}")
        return reply

    def ctl(self, n: int, data: bytes = b"") -> int:
        return self.command(f"ctl {n} {data.hex()}")["rc"]

    def power(self) -> int:
        return self.command("power")["rc"]

    def run(self, op: str, count: int) -> int:
        reply = self.command(f"run {op} {count}")
        if reply.get("rc"):
            raise RuntimeError(f"C floor {op}: driver returned {reply['rc']}")
        return reply["ns"]

    def close(self) -> None:
        quit_process(self.proc, timeout=5)
