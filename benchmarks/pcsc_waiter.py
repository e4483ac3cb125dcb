"""pcscd's own card-event latency: a C client blocked in SCardGetStatusChange.

A small C program (source below), compiled with gcc into a temporary
directory the first time it is needed, loads the PC/SC client library at
run time (no header needed: pcsc-lite's Linux ABI is declared here), opens
one context and serves commands read line by line from stdin:

    arm insert|remove   its waiter thread (one, made at start-up) blocks in
                        SCardGetStatusChange until the reader has a card
                        (insert) or none (remove); answers {"ready": 1} once
                        the thread waits, then {"t1": ns} when the call
                        that saw the wanted state returned (t1 is
                        clock_gettime(CLOCK_MONOTONIC) taken right there,
                        comparable with Python's time.monotonic_ns())
    quit

Started with a third argument "handoff", the waiter thread does not take
t1 itself: it hands the result to a second long-lived thread blocked on a
condition variable, which takes t1 once woken.  That is the shape of an
overlapped request (one thread waits in the driver, another is told of the
completion), in C, with nothing else in the way: the floor of any API in
which the thread that learns of an event is not the one that waited for
it.

Nothing but the client library runs between pcscd's wake-up and t1, so the
figure is what the resource manager gives any client: the floor a binding
can reach, with no interpreter in the way.  Linux (pcsc-lite) only.
"""

from __future__ import annotations

import json
import subprocess
from typing import Optional

import ccompile
from ccompile import CProgram
from harness import LineReader, quit_process

C_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* pcsc-lite on Linux: DWORD and LONG are unsigned long / long. */
typedef unsigned long DWORD;
typedef long LONG;
typedef long CONTEXT;
typedef struct {
    const char *reader;
    void *user;
    DWORD current, event, atr_len;
    unsigned char atr[33];
} STATE;

#define STATE_UNAWARE 0x0u
#define STATE_CHANGED 0x2u
#define STATE_EMPTY 0x10u
#define STATE_PRESENT 0x20u
#define WAIT_MS 10000u

static LONG (*establish)(DWORD, const void *, const void *, CONTEXT *);
static LONG (*status_change)(CONTEXT, DWORD, STATE *, DWORD);
static CONTEXT ctx;
static const char *reader;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t arm_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t arm_cv = PTHREAD_COND_INITIALIZER;
static int armed_calls;      /* blocking calls the waiter has started */
static int handoff;          /* hand each result to the receiver thread */
static pthread_mutex_t hop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hop_cv = PTHREAD_COND_INITIALIZER;
static int hop_pending;      /* under hop_lock: a result for the receiver */

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void say(const char *fmt, long long v)
{
    pthread_mutex_lock(&out_lock);
    printf(fmt, v);
    putchar('\n');
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

/* One long-lived waiter thread, armed by main: a thread made per event
 * would start each wait with the scheduler's penalty for new threads. */
static DWORD want;           /* under arm_lock: 0 idle, else the state awaited */

static void wait_for(DWORD wanted)
{
    STATE rs;
    LONG rc;
    memset(&rs, 0, sizeof rs);
    rs.reader = reader;
    rs.current = STATE_UNAWARE;
    rc = status_change(ctx, 0, &rs, 1);
    if (rc != 0 || (rs.event & wanted)) {
        say("{\"error\": \"not armed: rc %lld or already there\"}", (long long)rc);
        return;
    }
    for (;;) {
        long long t1;
        rs.current = rs.event & ~(DWORD)STATE_CHANGED;
        pthread_mutex_lock(&arm_lock);
        armed_calls++;
        pthread_cond_broadcast(&arm_cv);
        pthread_mutex_unlock(&arm_lock);
        rc = status_change(ctx, WAIT_MS, &rs, 1);
        t1 = now_ns();
        if (rc != 0) {
            say("{\"error\": \"SCardGetStatusChange: rc %lld\"}", (long long)rc);
            return;
        }
        if (rs.event & wanted) {
            if (handoff) {
                pthread_mutex_lock(&hop_lock);
                hop_pending = 1;
                pthread_cond_signal(&hop_cv);
                pthread_mutex_unlock(&hop_lock);
            } else {
                say("{\"t1\": %lld}", t1);
            }
            return;
        }
    }
}

static void *waiter(void *arg)
{
    (void)arg;
    for (;;) {
        DWORD w;
        pthread_mutex_lock(&arm_lock);
        while (!want)
            pthread_cond_wait(&arm_cv, &arm_lock);
        w = want;
        pthread_mutex_unlock(&arm_lock);
        wait_for(w);
        pthread_mutex_lock(&arm_lock);
        want = 0;
        armed_calls++; /* also wakes an arm that waited for a failed one */
        pthread_cond_broadcast(&arm_cv);
        pthread_mutex_unlock(&arm_lock);
    }
    return NULL;
}

/* The thread told of the result (handoff mode): t1 is when it runs. */
static void *receiver(void *arg)
{
    (void)arg;
    for (;;) {
        long long t1;
        pthread_mutex_lock(&hop_lock);
        while (!hop_pending)
            pthread_cond_wait(&hop_cv, &hop_lock);
        hop_pending = 0;
        pthread_mutex_unlock(&hop_lock);
        t1 = now_ns();
        say("{\"t1\": %lld}", t1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    char line[64];
    void *lib;
    pthread_t th;
    if (argc != 3 && !(argc == 4 && !strcmp(argv[3], "handoff"))) {
        fprintf(stderr, "usage: pcsc_waiter LIBRARY READER [handoff]\n");
        return 2;
    }
    reader = argv[2];
    handoff = argc == 4;
    lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        printf("{\"error\": \"dlopen failed\"}\n");
        return 1;
    }
    *(void **)&establish = dlsym(lib, "SCardEstablishContext");
    *(void **)&status_change = dlsym(lib, "SCardGetStatusChange");
    if (!establish || !status_change || establish(2 /* SYSTEM */, NULL, NULL, &ctx) != 0) {
        printf("{\"error\": \"no PC/SC context\"}\n");
        return 1;
    }
    if (pthread_create(&th, NULL, waiter, NULL) != 0
            || (handoff && pthread_create(&th, NULL, receiver, NULL) != 0)) {
        printf("{\"error\": \"pthread_create failed\"}\n");
        return 1;
    }
    say("{\"ready\": %lld}", 1);
    while (fgets(line, sizeof line, stdin)) {
        int before;
        if (!strncmp(line, "quit", 4))
            break;
        if (strncmp(line, "arm ", 4)) {
            say("{\"error\": \"unknown command\", \"n\": %lld}", 0);
            continue;
        }
        pthread_mutex_lock(&arm_lock);
        if (want) {
            pthread_mutex_unlock(&arm_lock);
            say("{\"error\": \"already armed\", \"n\": %lld}", 0);
            continue;
        }
        before = armed_calls;
        want = !strncmp(line + 4, "insert", 6) ? STATE_PRESENT : STATE_EMPTY;
        pthread_cond_broadcast(&arm_cv);
        /* Answer once the thread is about to block, plus a moment to reach
         * pcscd (its waiter is registered by the call's first round trip). */
        while (armed_calls == before)
            pthread_cond_wait(&arm_cv, &arm_lock);
        pthread_mutex_unlock(&arm_lock);
        usleep(1000);
        say("{\"ready\": %lld}", 1);
    }
    return 0;
}
"""

LIBRARY = "libpcsclite.so.1"

_program = CProgram("pcsc_waiter", C_SOURCE, ["-std=gnu11", "-pthread"], ["-ldl"])


def unavailable_reason() -> Optional[str]:
    if not ccompile.have_gcc():
        return "gcc is needed to build the C PC/SC waiter"
    return None


def build() -> str:
    """Compile the waiter once per process; return its path."""
    return _program.path()


def cleanup() -> None:
    _program.cleanup()


class CWaiter:
    """The compiled waiter as a subprocess, on reader `reader`: an armed
    path of events.run_together."""

    name = "pcscd SCardGetStatusChange (C client)"
    HANDOFF_NAME = "pcscd SCardGetStatusChange, the result handed to another thread (C client)"

    def __init__(self, reader: str, timeout: float = 30.0, handoff: bool = False):
        self.timeout = timeout
        if handoff:
            self.name = self.HANDOFF_NAME
        self.proc = subprocess.Popen([build(), LIBRARY, reader] + (["handoff"] if handoff else []),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.reader = LineReader(self.proc)
        if not self._read().get("ready"):
            self.close()
            raise RuntimeError("the C PC/SC waiter did not start")

    def _read(self, timeout: Optional[float] = None) -> dict:
        msg = json.loads(self.reader.readline(timeout or self.timeout))
        if "error" in msg:
            raise RuntimeError(f"C PC/SC waiter: {msg['error']}")
        return msg

    def arm(self, kind: str, timeout: float = 10.0) -> None:
        """Block a thread in SCardGetStatusChange until the card is in
        (kind "insert") or out ("remove"); returns once it waits in pcscd."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"arm {kind}\n".encode())
        self.proc.stdin.flush()
        self._read(timeout)

    def seen(self, timeout: float = 10.0) -> int:
        """t1 (CLOCK_MONOTONIC ns) of the event the armed wait saw."""
        return int(self._read(timeout + 5)["t1"])

    def disarm(self) -> None:
        pass

    def close(self) -> None:
        quit_process(self.proc, timeout=10)
