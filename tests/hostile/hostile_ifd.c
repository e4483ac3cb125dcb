/*
 * hostile_ifd.c - an IFD handler that misbehaves on purpose, for scardio's
 * reliability tests (tests/hostile_driver.py builds it with gcc, once per
 * source version).  Its misbehaviour is chosen at run time, per reader, by the
 * device name given to IFDHCreateChannelByName: a comma-separated list of
 * the modes below ("" = none: a well-behaved reader with a card in).
 *
 * The card: present unless no-card; power-up gives ATR 3B 00 (T=0 only, so
 * the backend's SET_PROTOCOL picks T=0); TRANSMIT with class byte 0x80
 * echoes the whole APDU back (a way to fill the backend's buffers with
 * known bytes); any other APDU answers 90 00.  Not thread safe (it does not
 * answer TAG_IFD_THREAD_SAFE), like most drivers.
 *
 * Modes:
 *   busy-poll    offers a polling function (and its stop function) that
 *                returns IFD_RESPONSE_TIMEOUT at once, without an event.
 *   short-write  TRANSMIT of a non-echo APDU and IFDHControl write 90 00
 *                but report the whole capacity they were given as written.
 *   log-reenter  every TRANSMIT calls the host's log_msg (pcscd's logging
 *                entry, looked up at run time) before it answers.
 *   exclusive    every entry point notes that it is inside the driver and
 *                stays there 5 ms; a call that finds another call of this
 *                library already inside (for any reader: the driver is not
 *                thread safe) fails with IFD_COMMUNICATION_ERROR and is
 *                counted.  IFDHControl code 0x42000000 + 1 answers the count
 *                of such concurrent entries as a u32 (little endian), for
 *                every mode.
 *   backwards    answers scardio's card-event-count extension (ifd_ext.h)
 *                with counts that go back by one on every read (the card
 *                never moves: any event reported is made up).
 *   no-card      the reader is empty: IFDHICCPresence answers
 *                IFD_ICC_NOT_PRESENT, power-up and TRANSMIT fail with it.
 *   slow-stop    offers a polling function that waits until its stop
 *                function is called (or its timeout passes), and a stop
 *                function that wakes it, then sleeps SLOW_STOP_MS (from the
 *                environment; default 1500) before it returns.  Instead of
 *                busy-poll's, when both are given.  IFDHControl code
 *                0x42000000 + 2 answers, as a u32 for every mode, how often
 *                a stop call and IFDHCloseChannel of its reader overlapped
 *                (the channel closed while the stop function ran, or the
 *                stop function called for a reader that is not open).
 *
 * Any LUN may be opened any number of times (as a driver that does not
 * check would): refusing a second open of a reader is the host's job.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ifd_abi.h"
#include "ifd_ext.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_LUNS 64
#define CTL_CONCURRENT_ENTRIES 0x42000001u
#define CTL_STOP_CLOSE_OVERLAPS 0x42000002u

enum { BUSY_POLL = 1, SHORT_WRITE = 2, LOG_REENTER = 4, EXCLUSIVE = 8, BACKWARDS = 16,
       NO_CARD = 32, SLOW_STOP = 64 };

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t poll_cv = PTHREAD_COND_INITIALIZER;
static struct {
    IFD_DWORD lun;
    unsigned modes;
    uint32_t events;
    int stop_asked;              /* slow-stop: the poll is to return */
    int in_stop;                 /* slow-stop: stop calls running */
} luns[MAX_LUNS];
static int n_luns;
static int inside;               /* calls inside the driver right now */
static uint32_t concurrent;      /* calls that found another one inside */
static uint32_t stop_close_overlaps;

static const IFD_UCHAR atr[] = {0x3B, 0x00};

/* The table index of `lun` (m held); -1 when it is not open. */
static int find_locked(IFD_DWORD lun)
{
    for (int i = n_luns - 1; i >= 0; i--)
        if (luns[i].lun == lun)
            return i;
    return -1;
}

static unsigned modes_of(IFD_DWORD lun)
{
    unsigned modes = 0;
    int i;
    pthread_mutex_lock(&m);
    if ((i = find_locked(lun)) >= 0)
        modes = luns[i].modes;
    pthread_mutex_unlock(&m);
    return modes;
}

/* Enter / leave an entry point; 0 when another call was inside (exclusive). */
static int enter(IFD_DWORD lun)
{
    int clash;
    if (!(modes_of(lun) & EXCLUSIVE))
        return 1;
    pthread_mutex_lock(&m);
    clash = inside++ > 0;
    if (clash)
        concurrent++;
    pthread_mutex_unlock(&m);
    if (!clash) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return !clash;
}

static void leave(IFD_DWORD lun)
{
    if (!(modes_of(lun) & EXCLUSIVE))
        return;
    pthread_mutex_lock(&m);
    inside--;
    pthread_mutex_unlock(&m);
}

static void put_u32(IFD_UCHAR *p, uint32_t v)
{
    p[0] = (IFD_UCHAR)v; p[1] = (IFD_UCHAR)(v >> 8);
    p[2] = (IFD_UCHAR)(v >> 16); p[3] = (IFD_UCHAR)(v >> 24);
}

static unsigned parse_modes(const char *name)
{
    static const struct { const char *word; unsigned bit; } words[] = {
        {"busy-poll", BUSY_POLL}, {"short-write", SHORT_WRITE},
        {"log-reenter", LOG_REENTER}, {"exclusive", EXCLUSIVE}, {"backwards", BACKWARDS},
        {"no-card", NO_CARD}, {"slow-stop", SLOW_STOP},
    };
    unsigned modes = 0;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        const char *p = name;
        size_t n = strlen(words[i].word);
        while ((p = strstr(p, words[i].word)) != NULL) {
            if ((p == name || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
                modes |= words[i].bit;
            p += n;
        }
    }
    return modes;
}

EXPORT IFD_RESPONSECODE IFDHCreateChannelByName(IFD_DWORD lun, char *name)
{
    IFD_RESPONSECODE rc = IFD_SUCCESS;
    pthread_mutex_lock(&m);
    if (n_luns == MAX_LUNS) {
        rc = IFD_COMMUNICATION_ERROR;
    } else {
        luns[n_luns].lun = lun;
        luns[n_luns].modes = parse_modes(name ? name : "");
        luns[n_luns].events = 1000;
        luns[n_luns].stop_asked = 0;
        luns[n_luns].in_stop = 0;
        n_luns++;
    }
    pthread_mutex_unlock(&m);
    return rc;
}

EXPORT IFD_RESPONSECODE IFDHCloseChannel(IFD_DWORD lun)
{
    int ok = enter(lun);
    leave(lun);
    pthread_mutex_lock(&m);
    for (int i = 0; i < n_luns; i++) {
        if (luns[i].lun == lun) {
            if (luns[i].in_stop)
                stop_close_overlaps++;
            luns[i] = luns[--n_luns];
            break;
        }
    }
    pthread_cond_broadcast(&poll_cv);
    pthread_mutex_unlock(&m);
    return ok ? IFD_SUCCESS : IFD_COMMUNICATION_ERROR;
}

static IFD_RESPONSECODE poll_now(IFD_DWORD lun, int timeout_ms)
{
    (void)lun;
    (void)timeout_ms;
    return IFD_RESPONSE_TIMEOUT;
}

static IFD_RESPONSECODE stop_poll(IFD_DWORD lun)
{
    (void)lun;
    return IFD_SUCCESS;
}

/* slow-stop: wait for the stop function, the timeout, or the channel to close. */
static IFD_RESPONSECODE poll_until_stopped(IFD_DWORD lun, int timeout_ms)
{
    struct timespec until;
    int i;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&m);
    while ((i = find_locked(lun)) >= 0 && !luns[i].stop_asked &&
           pthread_cond_timedwait(&poll_cv, &m, &until) == 0) {
    }
    if (i >= 0)
        luns[i].stop_asked = 0;
    pthread_mutex_unlock(&m);
    return IFD_SUCCESS;
}

static IFD_RESPONSECODE slow_stop(IFD_DWORD lun)
{
    const char *env = getenv("SLOW_STOP_MS");
    long ms = env ? atol(env) : 1500;
    struct timespec pause = { ms / 1000, (ms % 1000) * 1000000L };
    int i;
    pthread_mutex_lock(&m);
    if ((i = find_locked(lun)) < 0) {
        stop_close_overlaps++;   /* called for a reader that is closed */
    } else {
        luns[i].stop_asked = 1;
        luns[i].in_stop++;
    }
    pthread_cond_broadcast(&poll_cv);
    pthread_mutex_unlock(&m);
    if (i < 0)
        return IFD_SUCCESS;
    nanosleep(&pause, NULL);
    pthread_mutex_lock(&m);
    if ((i = find_locked(lun)) >= 0)
        luns[i].in_stop--;
    pthread_mutex_unlock(&m);
    return IFD_SUCCESS;
}

static IFD_RESPONSECODE get_caps(IFD_DWORD lun, IFD_DWORD tag, IFD_DWORD *len, IFD_UCHAR *v)
{
    unsigned modes = modes_of(lun);
    if ((tag == IFD_TAG_POLLING_THREAD_WITH_TIMEOUT || tag == IFD_TAG_STOP_POLLING_THREAD) &&
        (modes & (BUSY_POLL | SLOW_STOP))) {
        IFD_RESPONSECODE (*fn)(IFD_DWORD, int) =
            (modes & SLOW_STOP) ? poll_until_stopped : poll_now;
        IFD_RESPONSECODE (*stop)(IFD_DWORD) = (modes & SLOW_STOP) ? slow_stop : stop_poll;
        if (*len < sizeof(void *))
            return IFD_ERROR_INSUFFICIENT_BUFFER;
        if (tag == IFD_TAG_POLLING_THREAD_WITH_TIMEOUT)
            memcpy(v, &fn, sizeof fn);
        else
            memcpy(v, &stop, sizeof stop);
        *len = sizeof(void *);
        return IFD_SUCCESS;
    }
    if (tag == SCIO_IFD_TAG_CARD_EVENTS && (modes & BACKWARDS)) {
        uint32_t n;
        if (*len < 8)
            return IFD_ERROR_INSUFFICIENT_BUFFER;
        pthread_mutex_lock(&m);
        n = 0;
        for (int i = 0; i < n_luns; i++)
            if (luns[i].lun == lun)
                n = luns[i].events--;
        pthread_mutex_unlock(&m);
        put_u32(v, n);
        put_u32(v + 4, n);
        *len = 8;
        return IFD_SUCCESS;
    }
    return IFD_ERROR_TAG;
}

EXPORT IFD_RESPONSECODE IFDHGetCapabilities(IFD_DWORD lun, IFD_DWORD tag, IFD_DWORD *len,
                                            IFD_UCHAR *v)
{
    IFD_RESPONSECODE rc = enter(lun) ? get_caps(lun, tag, len, v) : IFD_COMMUNICATION_ERROR;
    leave(lun);
    return rc;
}

EXPORT IFD_RESPONSECODE IFDHSetCapabilities(IFD_DWORD lun, IFD_DWORD tag, IFD_DWORD len,
                                            IFD_UCHAR *v)
{
    (void)tag; (void)len; (void)v;
    IFD_RESPONSECODE rc = enter(lun) ? IFD_ERROR_TAG : IFD_COMMUNICATION_ERROR;
    leave(lun);
    return rc;
}

EXPORT IFD_RESPONSECODE IFDHSetProtocolParameters(IFD_DWORD lun, IFD_DWORD protocol,
                                                  IFD_UCHAR flags, IFD_UCHAR pts1,
                                                  IFD_UCHAR pts2, IFD_UCHAR pts3)
{
    (void)protocol; (void)flags; (void)pts1; (void)pts2; (void)pts3;
    IFD_RESPONSECODE rc = enter(lun) ? IFD_SUCCESS : IFD_COMMUNICATION_ERROR;
    leave(lun);
    return rc;
}

EXPORT IFD_RESPONSECODE IFDHPowerICC(IFD_DWORD lun, IFD_DWORD action, IFD_UCHAR *out,
                                     IFD_DWORD *len)
{
    IFD_RESPONSECODE rc = IFD_COMMUNICATION_ERROR;
    if (enter(lun)) {
        rc = IFD_SUCCESS;
        if (modes_of(lun) & NO_CARD) {
            *len = 0;
            rc = action == IFD_POWER_DOWN ? IFD_SUCCESS : IFD_ICC_NOT_PRESENT;
        } else if (action == IFD_POWER_DOWN) {
            *len = 0;
        } else if (*len < sizeof atr) {
            rc = IFD_ERROR_INSUFFICIENT_BUFFER;
        } else {
            memcpy(out, atr, sizeof atr);
            *len = sizeof atr;
        }
    }
    leave(lun);
    return rc;
}

static void log_from_inside(void)
{
    void (*log_msg)(int, const char *, ...);
    void *sym = dlsym(RTLD_DEFAULT, "log_msg");
    memcpy(&log_msg, &sym, sizeof log_msg);
    if (log_msg)
        log_msg(2, "hostile driver: logging from inside TRANSMIT");
}

EXPORT IFD_RESPONSECODE IFDHTransmitToICC(IFD_DWORD lun, IFD_SCARD_IO_HEADER send_pci,
                                          IFD_UCHAR *tx, IFD_DWORD tx_len, IFD_UCHAR *rx,
                                          IFD_DWORD *rx_len, IFD_SCARD_IO_HEADER *recv_pci)
{
    unsigned modes = modes_of(lun);
    IFD_RESPONSECODE rc = IFD_COMMUNICATION_ERROR;
    (void)send_pci; (void)recv_pci;
    if (enter(lun)) {
        if (modes & LOG_REENTER)
            log_from_inside();
        rc = IFD_SUCCESS;
        if (modes & NO_CARD) {
            *rx_len = 0;
            rc = IFD_ICC_NOT_PRESENT;
        } else if (tx_len > 0 && tx[0] == 0x80) {
            if (*rx_len < tx_len) {
                rc = IFD_ERROR_INSUFFICIENT_BUFFER;
            } else {
                memcpy(rx, tx, tx_len);
                *rx_len = tx_len;
            }
        } else if (*rx_len < 2) {
            rc = IFD_ERROR_INSUFFICIENT_BUFFER;
        } else {
            rx[0] = 0x90;
            rx[1] = 0x00;
            if (!(modes & SHORT_WRITE))
                *rx_len = 2;
        }
    }
    leave(lun);
    return rc;
}

EXPORT IFD_RESPONSECODE IFDHICCPresence(IFD_DWORD lun)
{
    IFD_RESPONSECODE rc = IFD_COMMUNICATION_ERROR;
    if (enter(lun)) {
        rc = (modes_of(lun) & NO_CARD) ? IFD_ICC_NOT_PRESENT : IFD_ICC_PRESENT;
    }
    leave(lun);
    return rc;
}

EXPORT IFD_RESPONSECODE IFDHControl(IFD_DWORD lun, IFD_DWORD code, IFD_UCHAR *in,
                                    IFD_DWORD in_len, IFD_UCHAR *out, IFD_DWORD out_cap,
                                    IFD_DWORD *returned)
{
    IFD_RESPONSECODE rc = IFD_COMMUNICATION_ERROR;
    (void)in; (void)in_len;
    if (code == CTL_CONCURRENT_ENTRIES || code == CTL_STOP_CLOSE_OVERLAPS) {
        /* Outside the entry bookkeeping: the count must be readable. */
        if (out_cap < 4)
            return IFD_ERROR_INSUFFICIENT_BUFFER;
        pthread_mutex_lock(&m);
        put_u32(out, code == CTL_CONCURRENT_ENTRIES ? concurrent : stop_close_overlaps);
        pthread_mutex_unlock(&m);
        *returned = 4;
        return IFD_SUCCESS;
    }
    if (enter(lun)) {
        if (out_cap < 2) {
            rc = IFD_ERROR_INSUFFICIENT_BUFFER;
        } else {
            out[0] = 0x90;
            out[1] = 0x00;
            *returned = (modes_of(lun) & SHORT_WRITE) ? out_cap : 2;
            rc = IFD_SUCCESS;
        }
    }
    leave(lun);
    return rc;
}
