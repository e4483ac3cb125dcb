/*
 * fake_pcsc.c - a stand-in PC/SC client library for test_pcsc.c: the SCard*
 * entry points of pcsc_abi.h over one scripted reader, so that the backend's
 * translations (codes, states, control codes, errors, cancellation) can be
 * checked without a resource manager.  Loaded by the backend through
 * SCARDIO_PCSC_LIBRARY; the test steers it through fake_* functions.
 *
 * Like pcsc-lite, a cancel that arrives while no SCardGetStatusChange is
 * waiting is dropped, and a wait becomes cancellable only a moment after it
 * starts (fake_set_cancel_delay_ms), so the backend's repeated cancel is
 * exercised.
 *
 * Like pcsc-lite, each context can have its own Unix socket to "the daemon"
 * (fake_context_sockets: connected to PCSCLITE_CSOCK_NAME, where the test
 * listens; 2 makes the context's socket ambiguous), and SCardConnect can be
 * made to wait on it for an answer that never comes (fake_hang_connect):
 * it returns SCARD_F_COMM_ERROR once the socket is shut down, as pcsc-lite.
 * SCardGetStatusChange likewise ends with SCARD_F_COMM_ERROR when its
 * context's socket is shut down, and fake_hang_gsc makes it wait on the
 * socket for an answer that never comes (a daemon that stopped).
 *
 * Transactions: SCardBeginTransaction waits while "another client" holds
 * one (fake_hold_other), and pcsc-lite's refusal to end a transaction on a
 * handle that saw a reset can be scripted (fake_fail_next(EP_END, ...)).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pcsc_abi.h"

#define EXPORT __attribute__((visibility("default")))
#define READER "Fake Reader 0"
#define PNP_READER "\\\\?PnP?\\Notification"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int present, powered, events, cancel_pending, cancellable, waiting;
static unsigned cancel_delay_ms;
static unsigned char atr[] = {0x3B, 0x80, 0x80, 0x01, 0x01};
static PCSC_DWORD fail_code[16];   /* per entry point: next call returns it */
static PCSC_DWORD last_share, last_control, last_disposition, last_pci_protocol;
static PCSC_DWORD claim_rx = 0;    /* transmit claims this many bytes when set */
static int calls[16], connected_handles;
static PCSC_LONG no_service;
static PCSC_DWORD cur_proto;   /* negotiated by the last (re)connect */
static int atr_attribute = 1;  /* SCardGetAttrib answers ATR_STRING */
static int pnp_readers = 2, pnp_missing; /* the PnP pseudo reader's count; none */
static int other_holds, in_transaction, begins, ends;
static int gone; /* the reader has left the resource manager's list */

enum { EP_ESTABLISH, EP_CONNECT, EP_RECONNECT, EP_DISCONNECT, EP_STATUS, EP_GSC,
       EP_CONTROL, EP_TRANSMIT, EP_GET_ATTRIB, EP_CANCEL, EP_LIST, EP_BEGIN, EP_END };

EXPORT void fake_set_present(int p)
{
    pthread_mutex_lock(&lock);
    if (p != present) {
        present = p;
        powered = 0;
        events++;
        pthread_cond_broadcast(&cv);
    }
    pthread_mutex_unlock(&lock);
}
/* pcscd writes a reader's new level before it bumps the event count: a
 * look in between sees the new level with the old count.  fake_tear(p)
 * makes that state, fake_count_event() ends it. */
EXPORT void fake_tear(int p)
{
    pthread_mutex_lock(&lock);
    present = p;
    powered = 0;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&lock);
}
EXPORT void fake_count_event(void)
{
    pthread_mutex_lock(&lock);
    events++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&lock);
}
EXPORT void fake_set_atr_attribute(int on) { atr_attribute = on; }
EXPORT void fake_fail_next(int ep, unsigned long code) { fail_code[ep] = (PCSC_DWORD)code; }
EXPORT void fake_set_no_service(int on) { no_service = on; }
/* A reader comes or goes (as pcsc-lite: a wait sees a change of the count
 * from when it began); or the library has no PnP pseudo reader. */
EXPORT void fake_pnp_change(int delta)
{
    pthread_mutex_lock(&lock);
    pnp_readers += delta;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&lock);
}
EXPORT void fake_pnp_missing(int on) { pnp_missing = on; }
/* The reader goes away (or comes back): a wait on it sees UNKNOWN. */
EXPORT void fake_set_gone(int on)
{
    pthread_mutex_lock(&lock);
    gone = on;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&lock);
}
EXPORT void fake_set_cancel_delay_ms(unsigned ms) { cancel_delay_ms = ms; }
EXPORT void fake_set_claim_rx(unsigned long n) { claim_rx = (PCSC_DWORD)n; }
EXPORT unsigned long fake_last(int what)
{
    switch (what) {
    case 0: return last_share;
    case 1: return last_control;
    case 2: return last_disposition;
    case 3: return last_pci_protocol;
    case 5: return (unsigned long)in_transaction;
    case 6: return (unsigned long)begins;
    case 7: return (unsigned long)ends;
    default: return (unsigned long)connected_handles;
    }
}
/* Counted atomically: a test may read a count while a call is running. */
EXPORT int fake_calls(int ep) { return __atomic_load_n(&calls[ep], __ATOMIC_SEQ_CST); }
EXPORT void fake_hold_other(int on)
{
    pthread_mutex_lock(&lock);
    other_holds = on;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&lock);
}
EXPORT int fake_waiting(void)
{
    int w;
    pthread_mutex_lock(&lock);
    w = waiting;
    pthread_mutex_unlock(&lock);
    return w;
}

/* Sockets per context (0: none); contexts 100.. keep theirs here. */
#define SOCKET_CONTEXTS 64
static int context_sockets, hang_connect, hang_gsc;
static int ctx_fd[SOCKET_CONTEXTS][2];
static int ctx_has_fd[SOCKET_CONTEXTS];
EXPORT void fake_context_sockets(int n) { context_sockets = n; }
EXPORT void fake_hang_connect(int on) { __atomic_store_n(&hang_connect, on, __ATOMIC_SEQ_CST); }
EXPORT void fake_hang_gsc(int on) { __atomic_store_n(&hang_gsc, on, __ATOMIC_SEQ_CST); }
/* "The daemon" hangs up on every context (ends a hung SCardConnect). */
EXPORT void fake_drop_sockets(void)
{
    for (int i = 0; i < SOCKET_CONTEXTS; i++)
        if (__atomic_load_n(&ctx_has_fd[i], __ATOMIC_SEQ_CST))
            for (int k = 0; k < 2; k++)
                if (ctx_fd[i][k] >= 0)
                    shutdown(ctx_fd[i][k], SHUT_RDWR);
}

static int dial(void)
{
    const char *path = getenv("PCSCLITE_CSOCK_NAME");
    struct sockaddr_un sa;
    int fd;
    if (!path || strlen(path) >= sizeof sa.sun_path)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static PCSC_LONG take_failure(int ep)
{
    PCSC_DWORD rc = fail_code[ep];
    __atomic_fetch_add(&calls[ep], 1, __ATOMIC_SEQ_CST);
    fail_code[ep] = 0;
    return (PCSC_LONG)rc;
}

EXPORT PCSC_LONG SCardEstablishContext(PCSC_DWORD scope, const void *r1, const void *r2,
                                       PCSC_CONTEXT *ctx)
{
    static PCSC_CONTEXT next = 100;
    PCSC_LONG rc;
    int i;
    (void)scope; (void)r1; (void)r2;
    if (no_service)
        return (PCSC_LONG)PCSC_E_NO_SERVICE;
    pthread_mutex_lock(&lock);
    *ctx = next++;
    pthread_mutex_unlock(&lock);
    rc = take_failure(EP_ESTABLISH);
    i = (int)(*ctx - 100);
    if (rc == 0 && context_sockets > 0 && i >= 0 && i < SOCKET_CONTEXTS) {
        ctx_fd[i][0] = dial();
        ctx_fd[i][1] = context_sockets > 1 ? dial() : -1;
        ctx_has_fd[i] = 1;
    }
    return rc;
}

/* The context's socket, or -1. */
static int fd_of(PCSC_CONTEXT ctx)
{
    int i = (int)(ctx - 100);
    return i >= 0 && i < SOCKET_CONTEXTS && ctx_has_fd[i] ? ctx_fd[i][0] : -1;
}

/* Has the context's socket been shut down (pcsc-lite's poll on it ends)? */
static int socket_ended(PCSC_CONTEXT ctx)
{
    struct pollfd p;
    p.fd = fd_of(ctx);
    p.events = POLLIN;
    p.revents = 0;
    return p.fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) != 0;
}

EXPORT PCSC_LONG SCardReleaseContext(PCSC_CONTEXT ctx)
{
    int i = (int)(ctx - 100);
    if (i >= 0 && i < SOCKET_CONTEXTS && ctx_has_fd[i]) {
        for (int k = 0; k < 2; k++)
            if (ctx_fd[i][k] >= 0)
                close(ctx_fd[i][k]);
        ctx_has_fd[i] = 0;
    }
    return 0;
}

EXPORT PCSC_LONG SCardListReaders(PCSC_CONTEXT ctx, const char *groups, char *readers,
                                  PCSC_DWORD *len)
{
    static const char names[] = READER "\0Fake Reader 1\0";
    PCSC_LONG rc = take_failure(EP_LIST);
    (void)ctx; (void)groups;
    if (rc)
        return rc;
    if (readers && *len < sizeof names) {
        *len = sizeof names;
        return (PCSC_LONG)PCSC_E_INSUFFICIENT_BUFFER;
    }
    if (readers)
        memcpy(readers, names, sizeof names);
    *len = sizeof names;
    return 0;
}

EXPORT PCSC_LONG SCardConnect(PCSC_CONTEXT ctx, const char *reader, PCSC_DWORD share,
                              PCSC_DWORD protocols, PCSC_HANDLE *card, PCSC_DWORD *active)
{
    PCSC_LONG rc = take_failure(EP_CONNECT);
    last_share = share;
    if (rc)
        return rc;
    if (__atomic_load_n(&hang_connect, __ATOMIC_SEQ_CST) && fd_of(ctx) >= 0) {
        /* pcsc-lite's wait for the daemon's answer: until the socket ends */
        char b;
        while (read(fd_of(ctx), &b, 1) > 0) {
        }
        return (PCSC_LONG)PCSC_F_COMM_ERROR;
    }
    if (strcmp(reader, READER) != 0)
        return (PCSC_LONG)PCSC_E_UNKNOWN_READER;
    if (share != PCSC_SHARE_DIRECT) {
        if (!present)
            return (PCSC_LONG)PCSC_E_NO_SMARTCARD;
        powered = 1;
        *active = (protocols & PCSC_PROTOCOL_T1) ? PCSC_PROTOCOL_T1 : PCSC_PROTOCOL_T0;
        cur_proto = *active;
    } else {
        *active = 0;
    }
    *card = 7;
    connected_handles++;
    return 0;
}

EXPORT PCSC_LONG SCardReconnect(PCSC_HANDLE card, PCSC_DWORD share, PCSC_DWORD protocols,
                                PCSC_DWORD init, PCSC_DWORD *active)
{
    PCSC_LONG rc = take_failure(EP_RECONNECT);
    (void)card;
    last_share = share;
    last_disposition = init;
    if (rc)
        return rc;
    if (!present)
        return (PCSC_LONG)PCSC_W_REMOVED_CARD;
    if (!(protocols & (PCSC_PROTOCOL_T0 | PCSC_PROTOCOL_T1)))
        return (PCSC_LONG)PCSC_E_PROTO_MISMATCH;
    *active = (protocols & PCSC_PROTOCOL_T1) ? PCSC_PROTOCOL_T1 : PCSC_PROTOCOL_T0;
    cur_proto = *active;
    return 0;
}

EXPORT PCSC_LONG SCardDisconnect(PCSC_HANDLE card, PCSC_DWORD disposition)
{
    (void)card;
    __atomic_fetch_add(&calls[EP_DISCONNECT], 1, __ATOMIC_SEQ_CST);
    last_disposition = disposition;
    connected_handles--;
    pthread_mutex_lock(&lock);
    in_transaction = 0; /* a handle's transaction ends with it */
    pthread_mutex_unlock(&lock);
    if (disposition == PCSC_UNPOWER_CARD)
        powered = 0;
    return 0;
}

EXPORT PCSC_LONG SCardStatus(PCSC_HANDLE card, char *name, PCSC_DWORD *name_len,
                             PCSC_DWORD *state, PCSC_DWORD *protocol, unsigned char *out,
                             PCSC_DWORD *atr_len)
{
    PCSC_LONG rc = take_failure(EP_STATUS);
    (void)card; (void)name;
    if (rc)
        return rc;
    if (!present)
        return (PCSC_LONG)PCSC_W_REMOVED_CARD;
    *name_len = sizeof READER;
    *state = PCSC_BIT_PRESENT | PCSC_BIT_POWERED | PCSC_BIT_NEGOTIABLE;
    *protocol = cur_proto;
    if (*atr_len < sizeof atr)
        return (PCSC_LONG)PCSC_E_INSUFFICIENT_BUFFER;
    memcpy(out, atr, sizeof atr);
    *atr_len = sizeof atr;
    return 0;
}

static PCSC_DWORD event_state(void)
{
    return (PCSC_DWORD)((PCSC_DWORD)(events & 0xFFFF) << 16) |
           (present ? PCSC_STATE_PRESENT : PCSC_STATE_EMPTY);
}

static struct timespec in_ms(unsigned ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

EXPORT PCSC_LONG SCardGetStatusChange(PCSC_CONTEXT ctx, PCSC_DWORD timeout,
                                      PCSC_READERSTATE *states, PCSC_DWORD count)
{
    PCSC_LONG rc = take_failure(EP_GSC);
    struct timespec end = in_ms(timeout == PCSC_INFINITE ? 3600000u : (unsigned)timeout);
    struct timespec armed = in_ms(cancel_delay_ms);
    int pnp, pnp_start;
    if (rc)
        return rc;
    if (count < 1 || count > 16)
        return (PCSC_LONG)PCSC_E_INVALID_PARAMETER;
    if (__atomic_load_n(&hang_gsc, __ATOMIC_SEQ_CST) && fd_of(ctx) >= 0) {
        /* pcsc-lite's wait for the daemon's answer: until the socket ends */
        char b;
        while (read(fd_of(ctx), &b, 1) > 0) {
        }
        return (PCSC_LONG)PCSC_F_COMM_ERROR;
    }
    /* The PnP pseudo reader alone; any other state array names readers,
     * of which this library knows one (several entries may name it). */
    pnp = count == 1 && !pnp_missing && strcmp(states[0].szReader, PNP_READER) == 0;
    if (!pnp) {
        int unknown = 0;
        for (PCSC_DWORD i = 0; i < count; i++) {
            states[i].dwEventState = 0;
            if (strcmp(states[i].szReader, READER) != 0 &&
                !(states[i].dwCurrentState & PCSC_STATE_UNKNOWN)) {
                states[i].dwEventState = PCSC_STATE_UNKNOWN | PCSC_STATE_CHANGED;
                unknown = 1;
            }
        }
        if (unknown)
            return 0;
    }
    pthread_mutex_lock(&lock);
    waiting++;
    cancel_pending = 0;
    pnp_start = pnp_readers;
    for (;;) {
        PCSC_DWORD now = event_state();
        struct timespec t;
        if (pnp) {
            if (pnp_readers != pnp_start) {
                states[0].dwEventState = PCSC_STATE_CHANGED; /* no count, as pcsc-lite */
                rc = 0;
                break;
            }
        } else {
            int changed = 0;
            for (PCSC_DWORD i = 0; i < count; i++) {
                if (strcmp(states[i].szReader, READER) != 0)
                    continue; /* unknown, and known to be */
                if (gone) {
                    states[i].dwEventState = PCSC_STATE_UNKNOWN |
                        (states[i].dwCurrentState & PCSC_STATE_UNKNOWN ? 0 : PCSC_STATE_CHANGED);
                    changed |= !(states[i].dwCurrentState & PCSC_STATE_UNKNOWN);
                } else if (states[i].dwCurrentState == PCSC_STATE_UNAWARE ||
                           now != states[i].dwCurrentState) {
                    states[i].dwEventState = now | PCSC_STATE_CHANGED;
                    changed = 1;
                } else {
                    states[i].dwEventState = now;
                }
            }
            if (changed) {
                rc = 0;
                break;
            }
        }
        if (timeout == 0) {
            rc = (PCSC_LONG)PCSC_E_TIMEOUT;
            break;
        }
        if (cancel_pending) {
            cancel_pending = 0;
            rc = (PCSC_LONG)PCSC_E_CANCELLED;
            break;
        }
        if (socket_ended(ctx)) {
            rc = (PCSC_LONG)PCSC_F_COMM_ERROR;
            break;
        }
        clock_gettime(CLOCK_REALTIME, &t);
        if (!cancellable && (t.tv_sec > armed.tv_sec ||
                             (t.tv_sec == armed.tv_sec && t.tv_nsec >= armed.tv_nsec)))
            cancellable = 1;
        if (t.tv_sec > end.tv_sec || (t.tv_sec == end.tv_sec && t.tv_nsec >= end.tv_nsec)) {
            rc = (PCSC_LONG)PCSC_E_TIMEOUT;
            break;
        }
        {
            struct timespec step = in_ms(1);
            pthread_cond_timedwait(&cv, &lock, &step);
        }
    }
    cancellable = 0;
    waiting--;
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT PCSC_LONG SCardCancel(PCSC_CONTEXT ctx)
{
    (void)ctx;
    pthread_mutex_lock(&lock);
    __atomic_fetch_add(&calls[EP_CANCEL], 1, __ATOMIC_SEQ_CST);
    if (cancellable) /* pcsc-lite drops a cancel outside a cancellable wait */
        cancel_pending = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&lock);
    return 0;
}

static PCSC_LONG control(PCSC_HANDLE card, PCSC_DWORD code, const void *in, PCSC_DWORD in_len,
                         void *out, PCSC_DWORD out_cap, PCSC_DWORD *returned)
{
    PCSC_LONG rc = take_failure(EP_CONTROL);
    (void)card;
    last_control = code;
    if (rc)
        return rc;
    if (out_cap < in_len)
        return (PCSC_LONG)PCSC_E_INSUFFICIENT_BUFFER;
    memcpy(out, in, in_len); /* echo */
    *returned = in_len;
    return 0;
}

#ifdef __APPLE__
EXPORT PCSC_LONG SCardControl132(PCSC_HANDLE card, PCSC_DWORD code, const void *in,
                                 PCSC_DWORD in_len, void *out, PCSC_DWORD out_cap,
                                 PCSC_DWORD *returned)
#else
EXPORT PCSC_LONG SCardControl(PCSC_HANDLE card, PCSC_DWORD code, const void *in,
                              PCSC_DWORD in_len, void *out, PCSC_DWORD out_cap,
                              PCSC_DWORD *returned)
#endif
{
    return control(card, code, in, in_len, out, out_cap, returned);
}

EXPORT PCSC_LONG SCardTransmit(PCSC_HANDLE card, const PCSC_IO_REQUEST *send,
                               const unsigned char *tx, PCSC_DWORD tx_len,
                               PCSC_IO_REQUEST *recv, unsigned char *rx, PCSC_DWORD *rx_len)
{
    PCSC_LONG rc = take_failure(EP_TRANSMIT);
    (void)card; (void)recv;
    last_pci_protocol = send->dwProtocol;
    if (rc)
        return rc;
    if (!present)
        return (PCSC_LONG)PCSC_W_REMOVED_CARD;
    if (*rx_len < tx_len + 2)
        return (PCSC_LONG)PCSC_E_INSUFFICIENT_BUFFER;
    memcpy(rx, tx, tx_len); /* echo, then 9000 */
    rx[tx_len] = 0x90;
    rx[tx_len + 1] = 0x00;
    *rx_len = claim_rx ? claim_rx : tx_len + 2;
    return 0;
}

EXPORT PCSC_LONG SCardGetAttrib(PCSC_HANDLE card, PCSC_DWORD attr, unsigned char *out,
                                PCSC_DWORD *len)
{
    PCSC_LONG rc = take_failure(EP_GET_ATTRIB);
    (void)card;
    if (rc)
        return rc;
    if (attr == 0x00090303u && atr_attribute) { /* ATR_STRING, checked as pcscd does */
        if (!present)
            return (PCSC_LONG)PCSC_W_REMOVED_CARD;
        if (*len < sizeof atr)
            return (PCSC_LONG)PCSC_E_INSUFFICIENT_BUFFER;
        memcpy(out, atr, sizeof atr);
        *len = sizeof atr;
        return 0;
    }
    if (attr != 0x00010100u) /* VENDOR_NAME */
        return (PCSC_LONG)PCSC_E_UNEXPECTED; /* pcsc-lite's UNSUPPORTED_FEATURE */
    if (*len < 4)
        return (PCSC_LONG)PCSC_E_INSUFFICIENT_BUFFER;
    memcpy(out, "fake", 4);
    *len = 4;
    return 0;
}

EXPORT PCSC_LONG SCardSetAttrib(PCSC_HANDLE card, PCSC_DWORD attr, const unsigned char *in,
                                PCSC_DWORD len)
{
    (void)card; (void)attr; (void)in; (void)len;
    return 0;
}

EXPORT PCSC_LONG SCardBeginTransaction(PCSC_HANDLE card)
{
    PCSC_LONG rc;
    struct timespec end = in_ms(5000); /* a test that forgets to release fails, not hangs */
    (void)card;
    pthread_mutex_lock(&lock);
    rc = take_failure(EP_BEGIN);
    while (!rc && other_holds &&
           pthread_cond_timedwait(&cv, &lock, &end) == 0)
        ;
    if (!rc && other_holds)
        rc = (PCSC_LONG)PCSC_E_TIMEOUT;
    if (!rc && !present)
        rc = (PCSC_LONG)PCSC_W_REMOVED_CARD;
    if (!rc) {
        in_transaction = 1;
        begins++;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT PCSC_LONG SCardEndTransaction(PCSC_HANDLE card, PCSC_DWORD disposition)
{
    PCSC_LONG rc;
    (void)card;
    pthread_mutex_lock(&lock);
    last_disposition = disposition;
    rc = take_failure(EP_END);
    if (!rc && !in_transaction)
        rc = (PCSC_LONG)PCSC_E_NOT_TRANSACTED;
    if (!rc) {
        in_transaction = 0;
        ends++;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}
