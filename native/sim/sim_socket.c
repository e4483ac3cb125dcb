/*
 * sim_socket.c - the simulated reader's link to a card server (sim_socket.h).
 *
 * One watcher thread per socket reader owns the connection's life: connect,
 * HELLO, insert the card (sim_ext_insert), wait for the server to hang up
 * (or a call to find the link broken, or the reader to drop the card),
 * remove the card, close, wait `retry` ms, again.  The card's calls
 * (ext_call, from the reader's callers, no reader lock held) use the
 * connection under `io`; each waits at most `timeout` ms for its reply.  A
 * call that finds the link unusable (end of stream, timeout, bad frame)
 * shuts the socket down, which wakes the watcher; the watcher alone closes
 * the descriptor, after the reader has released the card, so no call ever
 * uses a closed or reused descriptor.
 *
 * Frames: u32 type, u32 length (little-endian), payload; every length is
 * checked against the bounds before anything is written.
 */
#ifndef _WIN32
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE 1   /* MSG_NOSIGNAL, struct msghdr on glibc */
#ifdef __APPLE__
#define _DARWIN_C_SOURCE 1
#endif
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sim_socket.h"
#include "ext_card.h"

/* pcscd's reader.conf takes '?', ',' and '=' only in a quoted DEVICENAME,
 * and passes the quotes on: a name may come as "socket:PATH?options". */
static const char *unquoted(const char *name)
{
    return name != NULL && name[0] == '"' ? name + 1 : name;
}

int sim_socket_is_name(const char *name)
{
    name = unquoted(name);
    return name != NULL && strncmp(name, SIM_SOCKET_PREFIX, sizeof(SIM_SOCKET_PREFIX) - 1) == 0;
}

#ifdef _WIN32

/* No Unix-socket card servers on Windows (yet): the reader fails to open. */
IFD_RESPONSECODE sim_socket_start(IFD_DWORD lun, const char *name)
{
    (void)lun;
    (void)name;
    return IFD_COMMUNICATION_ERROR;
}

void sim_socket_stop(IFD_DWORD lun)
{
    (void)lun;
}

#else

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0      /* macOS: SO_NOSIGPIPE on the socket instead */
#endif

/* Protocol (docs/virtual-cards.md, src/scardio/card_protocol.py). */
#define WIRE_VERSION      1u
#define WIRE_HEADER       8u
#define WIRE_MAX_PAYLOAD  65544u    /* SIM_EXT_MAX_COMMAND */
#define WIRE_REPLY        0x80u
#define WIRE_HELLO        1u
#define WIRE_POWER_UP     2u
#define WIRE_RESET        3u
#define WIRE_POWER_DOWN   4u
#define WIRE_APDU         5u
#define WIRE_MALFORMED    0xFEu
#define WIRE_ERROR        0xFFu
#define WIRE_MAX_ATR      33u

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_RETRY_MS   200
#ifndef DEFAULT_SPIN_US
#define DEFAULT_SPIN_US    50
#endif

_Static_assert(WIRE_MAX_PAYLOAD == SIM_EXT_MAX_COMMAND, "the largest frame is a command");
_Static_assert(SIM_EXT_MAX_RESPONSE <= WIRE_MAX_PAYLOAD, "a response fits a frame");

struct watcher {
    struct watcher *next;          /* g_watchers (g_lock) */
    IFD_DWORD lun;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int timeout_ms;
    int retry_ms;
    int spin_us;
    pthread_t thread;
    int wake[2];                   /* pipe: stop, broken link, card released */

    pthread_mutex_t lock;          /* stop, card_in; with cond */
    pthread_cond_t cond;
    int stop;
    int card_in;                   /* inserted and not yet released */

    pthread_mutex_t io;            /* fd use by calls, broken */
    int fd;                        /* -1 between connections */
    int broken;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct watcher *g_watchers;

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFF);
    p[1] = (uint8_t)((v >> 8) & 0xFF);
    p[2] = (uint8_t)((v >> 16) & 0xFF);
    p[3] = (uint8_t)((v >> 24) & 0xFF);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
           | (uint32_t)p[3] << 24;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake(struct watcher *w)
{
    char c = 1;
    ssize_t n = write(w->wake[1], &c, 1);
    (void)n;   /* a full pipe is already a pending wake-up */
}

static void drain_wake(struct watcher *w)
{
    char b[64];
    while (read(w->wake[0], b, sizeof b) > 0) {
    }
}

/* Diagnostics go to the host's standard error (pcscd's log in the
 * foreground), once per state change, never per APDU. */
static void note(const struct watcher *w, const char *what)
{
    fprintf(stderr, "scardio sim: socket:%s: %s\n", w->path, what);
}

/* ---- device name --------------------------------------------------------- */

/* An option "key=N" after '?': *out when present and within [lo, hi];
 * 0 ok / absent, -1 malformed. */
static int option_int(const char *name, const char *key, int lo, int hi, int *out)
{
    const char *p = strchr(name, '?');
    size_t n = strlen(key);
    while (p != NULL) {
        p++;
        if (strncmp(p, key, n) == 0 && p[n] == '=') {
            char *end;
            long v;
            errno = 0;
            v = strtol(p + n + 1, &end, 10);
            if (errno != 0 || end == p + n + 1 || (*end != 0 && *end != ',') || v < lo
                || v > hi)
                return -1;
            *out = (int)v;
        }
        p = strchr(p, ',');
    }
    return 0;
}

/* ---- frame I/O (the socket is blocking, with SO_RCVTIMEO / SO_SNDTIMEO) --- */

/* Send one frame; 0, or -1 (the link is unusable). */
static int send_frame(int fd, uint32_t type, const uint8_t *payload, size_t len,
                      int64_t deadline)
{
    uint8_t hdr[WIRE_HEADER];
    struct iovec iov[2];
    struct msghdr msg;
    size_t sent = 0, total = WIRE_HEADER + len;

    if (len > WIRE_MAX_PAYLOAD)
        return -1;
    put_u32(hdr, type);
    put_u32(hdr + 4, (uint32_t)len);
    while (sent < total) {
        ssize_t n;
        memset(&msg, 0, sizeof msg);
        if (sent < WIRE_HEADER) {
            iov[0].iov_base = hdr + sent;
            iov[0].iov_len = WIRE_HEADER - sent;
            iov[1].iov_base = (void *)payload;
            iov[1].iov_len = len;
            msg.msg_iovlen = len != 0 ? 2 : 1;
        } else {
            iov[0].iov_base = (void *)(payload + (sent - WIRE_HEADER));
            iov[0].iov_len = total - sent;
            msg.msg_iovlen = 1;
        }
        msg.msg_iov = iov;
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR && now_ms() < deadline)
                continue;
            return -1;   /* EPIPE, ECONNRESET, EAGAIN (send timeout), ... */
        }
        sent += (size_t)n;
    }
    return 0;
}

/* Receive exactly `len` bytes; 0, 1 end of stream, -1 error or timeout
 * (*timed_out set). */
static int recv_all(int fd, uint8_t *buf, size_t len, int64_t deadline, int *timed_out)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, buf + got, len - got, 0);
        if (n == 0)
            return 1;
        if (n < 0) {
            if (errno == EINTR && now_ms() < deadline)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                *timed_out = 1;
            return -1;
        }
        got += (size_t)n;
        if (got < len && now_ms() >= deadline) {
            *timed_out = 1;
            return -1;
        }
    }
    return 0;
}

/* Outcome of one exchange. */
#define XCHG_OK        0
#define XCHG_GONE      1   /* end of stream / reset: the server went away */
#define XCHG_TIMEOUT   2
#define XCHG_BAD       3   /* a frame breaking the protocol */
#define XCHG_ERROR     4   /* an ERROR reply: the card failed */
#define XCHG_MALFORMED 5   /* a MALFORMED reply */

/*
 * Send a request, receive its reply: a payload of at most `cap` bytes goes
 * to `out` (*len = its length).  ERROR / MALFORMED payloads (texts) are read
 * into `out` when they fit, else skipped.  Anything but XCHG_OK, XCHG_ERROR
 * and XCHG_MALFORMED leaves the stream out of step: the caller drops the link.
 */
static int exchange(int fd, int timeout_ms, int spin_us, uint32_t type, const uint8_t *in, size_t in_len,
                    uint8_t *out, size_t cap, size_t *len)
{
    uint8_t hdr[WIRE_HEADER];
    int64_t deadline = now_ms() + timeout_ms;
    int timed_out = 0, rc = 0;
    uint32_t rtype, rlen;
    size_t got_hdr, got = 0;
    struct iovec iov[2];
    struct msghdr msg;
    ssize_t n;

    *len = 0;
    if (send_frame(fd, type, in, in_len, deadline) != 0)
        return XCHG_GONE;
    /* Header and payload in one receive when the reply is all there (the
     * usual case); the rest, if any, below. */
    memset(&msg, 0, sizeof msg);
    iov[0].iov_base = hdr;
    iov[0].iov_len = WIRE_HEADER;
    iov[1].iov_base = out;
    iov[1].iov_len = cap;
    msg.msg_iov = iov;
    msg.msg_iovlen = cap != 0 ? 2 : 1;
    n = -1;
    if (spin_us > 0) {
        /* The reply usually comes within microseconds: ask without
         * sleeping for a while, yielding the CPU (to the server when it
         * shares it), before a blocking receive and its wake-up. */
        int64_t end = now_us() + spin_us;
        do {
            n = recvmsg(fd, &msg, MSG_DONTWAIT);
            if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                break;
            sched_yield();
        } while (now_us() < end);
    }
    if (n < 0 && (spin_us <= 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        do {
            n = recvmsg(fd, &msg, 0);
        } while (n < 0 && errno == EINTR && now_ms() < deadline);
    }
    if (n == 0)
        return XCHG_GONE;
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? XCHG_TIMEOUT : XCHG_GONE;
    got_hdr = (size_t)n < WIRE_HEADER ? (size_t)n : WIRE_HEADER;
    got = (size_t)n - got_hdr;          /* payload bytes already in `out` */
    if (got_hdr < WIRE_HEADER) {
        rc = recv_all(fd, hdr + got_hdr, WIRE_HEADER - got_hdr, deadline, &timed_out);
        if (rc != 0)
            return rc > 0 ? XCHG_GONE : timed_out ? XCHG_TIMEOUT : XCHG_GONE;
    }
    rtype = get_u32(hdr);
    rlen = get_u32(hdr + 4);
    if (rlen > WIRE_MAX_PAYLOAD || got > rlen)
        return XCHG_BAD;   /* too long, or more than one frame for one request */
    if (rtype == WIRE_ERROR || rtype == WIRE_MALFORMED) {
        /* A text: kept in `out` when it fits, skipped otherwise. */
        uint8_t skip[512];
        size_t left;
        if (rlen <= cap) {
            rc = recv_all(fd, out + got, rlen - got, deadline, &timed_out);
            *len = rlen;
            left = 0;
        } else {
            left = rlen - got;
        }
        while (rc == 0 && left != 0) {
            size_t k = left < sizeof skip ? left : sizeof skip;
            rc = recv_all(fd, skip, k, deadline, &timed_out);
            left -= k;
        }
        if (rc != 0)
            return rc > 0 ? XCHG_GONE : timed_out ? XCHG_TIMEOUT : XCHG_GONE;
        return rtype == WIRE_ERROR ? XCHG_ERROR : XCHG_MALFORMED;
    }
    if (rtype != (type | WIRE_REPLY) || rlen > cap)
        return XCHG_BAD;
    if (got < rlen) {
        rc = recv_all(fd, out + got, rlen - got, deadline, &timed_out);
        if (rc != 0)
            return rc > 0 ? XCHG_GONE : timed_out ? XCHG_TIMEOUT : XCHG_GONE;
    }
    *len = rlen;
    return XCHG_OK;
}

/* ---- the card (called by the reader, no reader lock held) ---------------- */

static void mark_broken_locked(struct watcher *w)
{
    if (!w->broken && w->fd >= 0) {
        w->broken = 1;
        shutdown(w->fd, SHUT_RDWR);   /* the watcher closes it */
    }
    wake(w);
}

static long ext_call(void *ctx, int op, const uint8_t *in, size_t in_len, uint8_t *out,
                     size_t out_cap)
{
    struct watcher *w = ctx;
    uint8_t scratch[256], warm;
    uint32_t type;
    const uint8_t *payload = NULL;
    size_t payload_len = 0, len = 0;
    int x;

    switch (op) {
    case SIM_EXT_OP_POWER_UP:   type = WIRE_POWER_UP; break;
    case SIM_EXT_OP_POWER_DOWN: type = WIRE_POWER_DOWN; break;
    case SIM_EXT_OP_RESET_WARM:
    case SIM_EXT_OP_RESET_COLD:
        type = WIRE_RESET;
        warm = op == SIM_EXT_OP_RESET_WARM ? 1 : 0;
        payload = &warm;
        payload_len = 1;
        break;
    case SIM_EXT_OP_APDU:
        if ((in == NULL && in_len != 0) || in_len > SIM_EXT_MAX_COMMAND)
            return SIM_EXT_E_FAILED;
        type = WIRE_APDU;
        payload = in;
        payload_len = in_len;
        break;
    default:
        return SIM_EXT_E_FAILED;
    }

    pthread_mutex_lock(&w->io);
    if (w->fd < 0 || w->broken) {
        pthread_mutex_unlock(&w->io);
        return SIM_EXT_E_GONE;
    }
    if (op == SIM_EXT_OP_APDU && out != NULL) {
        x = exchange(w->fd, w->timeout_ms, w->spin_us, type, payload, payload_len, out,
                     out_cap < SIM_EXT_MAX_RESPONSE ? out_cap : SIM_EXT_MAX_RESPONSE, &len);
    } else {
        /* Power replies are empty; the scratch only holds an ERROR text. */
        x = exchange(w->fd, w->timeout_ms, w->spin_us, type, payload, payload_len, scratch,
                     op == SIM_EXT_OP_APDU ? 0 : sizeof scratch, &len);
        if (x == XCHG_OK && len != 0)
            x = XCHG_BAD;
    }
    if (x != XCHG_OK && x != XCHG_ERROR && x != XCHG_MALFORMED)
        mark_broken_locked(w);
    pthread_mutex_unlock(&w->io);

    switch (x) {
    case XCHG_OK:
        return (long)len;
    case XCHG_GONE:
        note(w, "the server closed the connection during a request");
        return SIM_EXT_E_GONE;
    case XCHG_TIMEOUT:
        note(w, "no reply in time: disconnected");
        return SIM_EXT_E_TIMEOUT;
    case XCHG_BAD:
        note(w, "a reply breaks the protocol: disconnected");
        return SIM_EXT_E_FAILED;
    case XCHG_MALFORMED:
        return SIM_EXT_E_MALFORMED;
    default:
        return SIM_EXT_E_FAILED;
    }
}

static void ext_release(void *ctx)
{
    struct watcher *w = ctx;
    pthread_mutex_lock(&w->lock);
    w->card_in = 0;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    wake(w);
}

/* ---- the watcher thread -------------------------------------------------- */

static int stopping(struct watcher *w)
{
    int s;
    pthread_mutex_lock(&w->lock);
    s = w->stop;
    pthread_mutex_unlock(&w->lock);
    return s;
}

/* Sleep up to ms, woken early by the pipe; 1 when asked to stop. */
static int pause_ms(struct watcher *w, int ms)
{
    struct pollfd p;
    p.fd = w->wake[0];
    p.events = POLLIN;
    p.revents = 0;
    if (!stopping(w) && poll(&p, 1, ms) > 0)
        drain_wake(w);
    return stopping(w);
}

static int set_timeouts(int fd, int ms)
{
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0
           || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ? -1 : 0;
}

static void forget_fd(struct watcher *w, int fd)
{
    pthread_mutex_lock(&w->io);
    w->fd = -1;
    pthread_mutex_unlock(&w->io);
    close(fd);
}

/* Connect and greet; the descriptor, or -1.  *atr gets the card's ATR. */
static int connect_server(struct watcher *w, uint8_t *atr, size_t *atr_len, int *told)
{
    struct sockaddr_un addr;
    uint8_t hello[8], reply[8 + WIRE_MAX_ATR + 1];
    size_t len = 0;
    int fd, x;

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    /* Published, so that a stop shuts it down rather than waiting for a
     * server that accepted but does not answer. */
    pthread_mutex_lock(&w->io);
    w->fd = fd;
    w->broken = 1;   /* no card yet: calls see none */
    pthread_mutex_unlock(&w->io);
    if (stopping(w)) {
        forget_fd(w, fd);
        return -1;
    }
#ifdef SO_NOSIGPIPE
    {
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
    }
#endif
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, w->path, strlen(w->path) + 1);   /* length checked at start */
    if (set_timeouts(fd, w->timeout_ms) != 0
        || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        forget_fd(w, fd);
        return -1;
    }
    put_u32(hello, WIRE_VERSION);
    put_u32(hello + 4, WIRE_MAX_PAYLOAD);
    x = exchange(fd, w->timeout_ms, 0, WIRE_HELLO, hello, sizeof hello, reply,
                 sizeof reply - 1, &len);
    if (x == XCHG_OK && len >= 8 + 2 && len <= 8 + WIRE_MAX_ATR
        && get_u32(reply) == WIRE_VERSION && get_u32(reply + 4) >= SIM_EXT_MAX_RESPONSE) {
        *atr_len = len - 8;
        memcpy(atr, reply + 8, *atr_len);
        return fd;
    }
    if (!*told) {
        if (x == XCHG_ERROR && len != 0) {
            reply[len] = 0;   /* room kept: len <= sizeof reply - 1 */
            fprintf(stderr, "scardio sim: socket:%s: the server refused: %s\n", w->path,
                    (const char *)reply);
        } else {
            note(w, x == XCHG_TIMEOUT ? "the server does not answer HELLO in time"
                                      : "the server's HELLO reply is not protocol version 1");
        }
        *told = 1;
    }
    forget_fd(w, fd);
    return -1;
}

static void *watch(void *arg)
{
    struct watcher *w = arg;
    int told = 0, was_up = 0;

    while (!stopping(w)) {
        uint8_t atr[WIRE_MAX_ATR];
        size_t atr_len = 0;
        sim_ext_card card;
        struct pollfd p[2];
        int fd = connect_server(w, atr, &atr_len, &told);

        if (fd < 0) {
            if (was_up) {
                note(w, "server gone; waiting for it");
                was_up = 0;
            }
            if (pause_ms(w, w->retry_ms))
                break;
            continue;
        }
        pthread_mutex_lock(&w->io);
        w->fd = fd;
        w->broken = 0;
        pthread_mutex_unlock(&w->io);
        pthread_mutex_lock(&w->lock);
        w->card_in = 1;
        pthread_mutex_unlock(&w->lock);
        card.call = ext_call;
        card.release = ext_release;
        card.ctx = w;
        if (sim_ext_insert(w->lun, &card, atr, atr_len) == IFD_SUCCESS) {
            if (!was_up)
                note(w, "server connected: card inserted");
            was_up = 1;
            told = 0;
            /* Wait for: the server hanging up, a call breaking the link, the
             * reader dropping the card, or stop. */
            for (;;) {
                int quit, in;
                p[0].fd = fd;
                p[0].events = 0;      /* hang-up and errors only: never the replies */
                p[1].fd = w->wake[0];
                p[1].events = POLLIN;
                p[0].revents = p[1].revents = 0;
                if (poll(p, 2, -1) < 0 && errno != EINTR)
                    break;
                if (p[1].revents & POLLIN)
                    drain_wake(w);
                pthread_mutex_lock(&w->lock);
                quit = w->stop;
                in = w->card_in;
                pthread_mutex_unlock(&w->lock);
                if (quit || !in || (p[0].revents & (POLLHUP | POLLERR | POLLNVAL)))
                    break;
                pthread_mutex_lock(&w->io);
                quit = w->broken;
                pthread_mutex_unlock(&w->io);
                if (quit)
                    break;
            }
            /* Calls in progress end now (shutdown); the card leaves. */
            pthread_mutex_lock(&w->io);
            mark_broken_locked(w);
            pthread_mutex_unlock(&w->io);
            (void)sim_ext_remove(w->lun);
        }
        /* Released exactly once (also after a failed insertion), after the
         * last call returned: then nobody uses the descriptor. */
        pthread_mutex_lock(&w->lock);
        while (w->card_in)
            pthread_cond_wait(&w->cond, &w->lock);
        pthread_mutex_unlock(&w->lock);
        pthread_mutex_lock(&w->io);
        w->fd = -1;
        pthread_mutex_unlock(&w->io);
        close(fd);
        drain_wake(w);
        if (stopping(w))
            break;
        note(w, "disconnected: card removed");
        was_up = 0;
        if (pause_ms(w, w->retry_ms))
            break;
    }
    return NULL;
}

/* ---- start / stop -------------------------------------------------------- */

IFD_RESPONSECODE sim_socket_start(IFD_DWORD lun, const char *name)
{
    struct watcher *w;
    const char *path, *end;
    size_t n;
    int timeout_ms = DEFAULT_TIMEOUT_MS, retry_ms = DEFAULT_RETRY_MS;
    int spin_us = DEFAULT_SPIN_US;

    int quoted = name != NULL && name[0] == '"';
    char opts[256];

    if (name == NULL || !sim_socket_is_name(name))
        return IFD_COMMUNICATION_ERROR;
    path = strchr(name, ':') + 1;   /* after the prefix, quoted or not */
    n = strlen(path);
    if (quoted) {
        if (n == 0 || path[n - 1] != '"')
            return IFD_COMMUNICATION_ERROR;
        n--;   /* the closing quote */
    }
    end = memchr(path, '?', n);
    /* The options, without the closing quote, NUL-terminated for option_int. */
    if (end != NULL) {
        size_t k = n - (size_t)(end - path);
        if (k >= sizeof opts)
            return IFD_COMMUNICATION_ERROR;
        memcpy(opts, end, k);
        opts[k] = 0;
        n = (size_t)(end - path);
    } else {
        opts[0] = 0;
    }
    if (n == 0 || option_int(opts, "timeout", 1, 600000, &timeout_ms) != 0
        || option_int(opts, "retry", 10, 60000, &retry_ms) != 0
        || option_int(opts, "spin", 0, 1000, &spin_us) != 0)
        return IFD_COMMUNICATION_ERROR;
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return IFD_COMMUNICATION_ERROR;
    if (n >= sizeof(w->path)) {
        free(w);
        return IFD_COMMUNICATION_ERROR;
    }
    memcpy(w->path, path, n);
    w->path[n] = 0;
    w->lun = lun;
    w->timeout_ms = timeout_ms;
    w->retry_ms = retry_ms;
    w->spin_us = spin_us;
    w->fd = -1;
    if (pipe(w->wake) != 0) {
        free(w);
        return IFD_COMMUNICATION_ERROR;
    }
    (void)fcntl(w->wake[0], F_SETFL, O_NONBLOCK);
    (void)fcntl(w->wake[1], F_SETFL, O_NONBLOCK);
    (void)fcntl(w->wake[0], F_SETFD, FD_CLOEXEC);
    (void)fcntl(w->wake[1], F_SETFD, FD_CLOEXEC);
    if (pthread_mutex_init(&w->lock, NULL) != 0)
        goto fail_pipe;
    if (pthread_mutex_init(&w->io, NULL) != 0)
        goto fail_lock;
    if (pthread_cond_init(&w->cond, NULL) != 0)
        goto fail_io;
    pthread_mutex_lock(&g_lock);
    if (pthread_create(&w->thread, NULL, watch, w) != 0) {
        pthread_mutex_unlock(&g_lock);
        goto fail_cond;
    }
    w->next = g_watchers;
    g_watchers = w;
    pthread_mutex_unlock(&g_lock);
    return IFD_SUCCESS;

fail_cond:
    pthread_cond_destroy(&w->cond);
fail_io:
    pthread_mutex_destroy(&w->io);
fail_lock:
    pthread_mutex_destroy(&w->lock);
fail_pipe:
    close(w->wake[0]);
    close(w->wake[1]);
    free(w);
    return IFD_COMMUNICATION_ERROR;
}

void sim_socket_stop(IFD_DWORD lun)
{
    struct watcher **pp, *w = NULL;

    pthread_mutex_lock(&g_lock);
    for (pp = &g_watchers; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->lun == lun) {
            w = *pp;
            *pp = w->next;
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_mutex_unlock(&w->lock);
    pthread_mutex_lock(&w->io);
    if (w->fd >= 0)
        shutdown(w->fd, SHUT_RDWR);   /* ends a HELLO or a call in progress */
    pthread_mutex_unlock(&w->io);
    wake(w);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->io);
    pthread_mutex_destroy(&w->lock);
    close(w->wake[0]);
    close(w->wake[1]);
    free(w);
}

#endif /* _WIN32 */
