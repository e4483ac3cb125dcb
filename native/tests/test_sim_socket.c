/*
 * test_sim_socket.c - a simulated reader named "socket:PATH" against a card
 * server played by a thread here (native/sim/sim_socket.h): presence while
 * the server is up, answers, a hung server (timeout), a server that closes
 * mid-APDU, an oversized frame, a restart, closing with and without a
 * server.  Run under valgrind and ThreadSanitizer by run.sh.
 *
 * Build (from the repository root):
 *   gcc -O1 -g -Wall -Wextra -Werror -std=c11 -pthread -Inative -Inative/sim \
 *       -Inative/ifd native/tests/test_sim_socket.c -o test_sim_socket -ldl
 * Run:
 *   ./test_sim_socket path/to/libscardio_sim.so
 * Prints "N passed, N failed"; exits non-zero on any failure.
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ifd_abi.h"
#include "check.h"

static ifdh_create_channel_by_name_fn p_create;
static ifdh_close_channel_fn p_close;
static ifdh_power_icc_fn p_power;
static ifdh_transmit_to_icc_fn p_transmit;
static ifdh_icc_presence_fn p_presence;

/* ---- the server thread ---------------------------------------------------- */

enum mode { MODE_ECHO, MODE_HANG, MODE_DROP, MODE_OVERSIZE, MODE_SILENT };

static const uint8_t ATR[] = { 0x3B, 0xF8, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x45,
                               0x73, 0x63, 0x61, 0x72, 0x64, 0x69, 0x6F, 0x31, 0xB0 };

struct server {
    char path[108];
    int listen_fd;
    int stop_pipe[2];
    pthread_mutex_t lock;
    enum mode mode;
    pthread_t thread;
};

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
           | (uint32_t)p[3] << 24;
}

/* Wait for fd or the stop pipe; 1 when fd is readable. */
static int readable(struct server *s, int fd)
{
    struct pollfd p[2];
    p[0].fd = fd;
    p[0].events = POLLIN;
    p[1].fd = s->stop_pipe[0];
    p[1].events = POLLIN;
    p[0].revents = p[1].revents = 0;
    if (poll(p, 2, -1) < 0)
        return 0;
    return !(p[1].revents & POLLIN) && (p[0].revents & (POLLIN | POLLHUP));
}

static int read_exact(struct server *s, int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k;
        if (!readable(s, fd))
            return -1;
        k = read(fd, buf + got, n - got);
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    return 0;
}

static int send_frame(int fd, uint32_t type, const uint8_t *p, uint32_t len)
{
    uint8_t buf[8 + 64];
    if (len > 64)
        return -1;
    put_u32(buf, type);
    put_u32(buf + 4, len);
    if (len != 0)
        memcpy(buf + 8, p, len);
    return write(fd, buf, 8 + len) == (ssize_t)(8 + len) ? 0 : -1;
}

static enum mode mode_of(struct server *s)
{
    enum mode m;
    pthread_mutex_lock(&s->lock);
    m = s->mode;
    pthread_mutex_unlock(&s->lock);
    return m;
}

static void serve_one(struct server *s, int fd)
{
    uint8_t hdr[8], data[300];
    for (;;) {
        uint32_t type, len;
        if (read_exact(s, fd, hdr, 8) != 0)
            return;
        type = get_u32(hdr);
        len = get_u32(hdr + 4);
        if (len > sizeof data || read_exact(s, fd, data, len) != 0)
            return;
        if (type == 1 && mode_of(s) == MODE_SILENT) {
            (void)readable(s, s->stop_pipe[0]);   /* never greets; until stopped */
            return;
        } else if (type == 1) {
            uint8_t r[8 + sizeof ATR];
            put_u32(r, 1);
            put_u32(r + 4, 65544);
            memcpy(r + 8, ATR, sizeof ATR);
            if (send_frame(fd, 0x81, r, sizeof r) != 0)
                return;
        } else if (type != 5) {
            if (send_frame(fd, type | 0x80, NULL, 0) != 0)
                return;
        } else {
            switch (mode_of(s)) {
            case MODE_HANG:
                (void)readable(s, s->stop_pipe[0]);   /* until stopped */
                return;
            case MODE_DROP:
                return;
            case MODE_OVERSIZE: {
                uint8_t big[8];
                put_u32(big, 0x85);
                put_u32(big + 4, 0x7FFFFFFFu);
                if (write(fd, big, sizeof big) != (ssize_t)sizeof big)
                    return;
                (void)readable(s, fd);   /* until the reader closes */
                return;
            }
            default: {
                /* echo the data of a case-3/4 command, then 90 00 */
                uint8_t r[260];
                uint32_t n = len > 5 ? len - 5 : 0;
                if (n > 255)
                    n = 255;
                memcpy(r, data + 5, n);
                r[n] = 0x90;
                r[n + 1] = 0x00;
                if (n + 2 > 64 || send_frame(fd, 0x85, r, n + 2) != 0)
                    return;
            }
            }
        }
    }
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    while (readable(s, s->listen_fd)) {
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        serve_one(s, fd);
        close(fd);
    }
    return NULL;
}

static int server_start(struct server *s, enum mode m)
{
    struct sockaddr_un a;
    s->mode = m;
    if (pipe(s->stop_pipe) != 0)
        return -1;
    pthread_mutex_init(&s->lock, NULL);
    unlink(s->path);
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, s->path, strlen(s->path) + 1);
    if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&a, sizeof a) != 0
        || listen(s->listen_fd, 4) != 0)
        return -1;
    return pthread_create(&s->thread, NULL, server_main, s) == 0 ? 0 : -1;
}

static void server_stop(struct server *s)
{
    if (write(s->stop_pipe[1], "x", 1) != 1)
        perror("write");
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    pthread_mutex_destroy(&s->lock);
    unlink(s->path);
}

/* ---- the tests -------------------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* Wait up to 5 s for the reader's presence to become `want`. */
static int wait_presence(IFD_DWORD lun, IFD_RESPONSECODE want)
{
    int i;
    for (i = 0; i < 500; i++) {
        if (p_presence(lun) == want)
            return 1;
        sleep_ms(10);
    }
    return 0;
}

static IFD_RESPONSECODE echo(IFD_DWORD lun, IFD_DWORD *rlen, uint8_t *resp)
{
    static const uint8_t cmd[] = { 0x80, 0xEE, 0x00, 0x00, 0x04, 0xCA, 0xFE, 0xBA, 0xBE };
    IFD_SCARD_IO_HEADER pci;
    pci.Protocol = 1;
    pci.Length = sizeof pci;
    *rlen = 258;
    return p_transmit(lun, pci, (IFD_UCHAR *)cmd, sizeof cmd, resp, rlen, NULL);
}

static void power_up(IFD_DWORD lun)
{
    uint8_t atr[33];
    IFD_DWORD n = sizeof atr;
    CHECK_EQ(p_power(lun, IFD_POWER_UP, atr, &n), IFD_SUCCESS);
    CHECK_EQ(n, sizeof ATR);
    CHECK(memcmp(atr, ATR, sizeof ATR) == 0);
}

int main(int argc, char **argv)
{
    void *h;
    struct server s;
    char name[200];
    uint8_t resp[300];
    IFD_DWORD rlen;
    IFD_DWORD lun = 0x10000;
    time_t t0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s libscardio_sim.so\n", argv[0]);
        return 2;
    }
    h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "%s\n", dlerror());
        return 2;
    }
    LOAD(h, p_create, "IFDHCreateChannelByName");
    LOAD(h, p_close, "IFDHCloseChannel");
    LOAD(h, p_power, "IFDHPowerICC");
    LOAD(h, p_transmit, "IFDHTransmitToICC");
    LOAD(h, p_presence, "IFDHICCPresence");

    memset(&s, 0, sizeof s);
    snprintf(s.path, sizeof s.path, "/tmp/scardio-test-sock-%ld", (long)getpid());
    snprintf(name, sizeof name, "\"socket:%s?timeout=200,retry=10\"", s.path);

    /* Bad names: rejected at creation, nothing left open. */
    CHECK_EQ(p_create(lun + 1, "socket:"), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(p_create(lun + 1, "socket:/x?timeout=0"), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(p_create(lun + 1, "\"socket:/x"), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(p_presence(lun + 1), IFD_NO_SUCH_DEVICE);

    /* No server: no card, and closing is prompt. */
    CHECK_EQ(p_create(lun, name), IFD_SUCCESS);
    sleep_ms(50);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);

    /* The server comes: the card is inserted and answers. */
    CHECK_EQ(server_start(&s, MODE_ECHO), 0);
    CHECK(wait_presence(lun, IFD_ICC_PRESENT));
    power_up(lun);
    CHECK_EQ(echo(lun, &rlen, resp), IFD_SUCCESS);
    CHECK_EQ(rlen, 6);
    CHECK(memcmp(resp, "\xCA\xFE\xBA\xBE\x90\x00", 6) == 0);

    /* A hung server: the call ends within the timeout, the card leaves. */
    pthread_mutex_lock(&s.lock);
    s.mode = MODE_HANG;
    pthread_mutex_unlock(&s.lock);
    t0 = time(NULL);
    CHECK(echo(lun, &rlen, resp) != IFD_SUCCESS);
    CHECK(time(NULL) - t0 <= 2);
    server_stop(&s);
    CHECK(wait_presence(lun, IFD_ICC_NOT_PRESENT));

    /* A server that closes mid-APDU: the card is gone. */
    CHECK_EQ(server_start(&s, MODE_DROP), 0);
    CHECK(wait_presence(lun, IFD_ICC_PRESENT));
    power_up(lun);
    CHECK_EQ(echo(lun, &rlen, resp), IFD_ICC_NOT_PRESENT);
    CHECK(wait_presence(lun, IFD_ICC_PRESENT));   /* it reconnects at once */
    server_stop(&s);
    CHECK(wait_presence(lun, IFD_ICC_NOT_PRESENT));

    /* An oversized frame: a communication error, nothing read. */
    CHECK_EQ(server_start(&s, MODE_OVERSIZE), 0);
    CHECK(wait_presence(lun, IFD_ICC_PRESENT));
    power_up(lun);
    CHECK_EQ(echo(lun, &rlen, resp), IFD_COMMUNICATION_ERROR);
    server_stop(&s);   /* (the reader had reconnected to it meanwhile) */
    CHECK(wait_presence(lun, IFD_ICC_NOT_PRESENT));

    /* Back to a good server: the reader recovers. */
    CHECK_EQ(server_start(&s, MODE_ECHO), 0);
    CHECK(wait_presence(lun, IFD_ICC_PRESENT));
    power_up(lun);
    CHECK_EQ(echo(lun, &rlen, resp), IFD_SUCCESS);

    /* Closing with the server up, then without a reader. */
    CHECK_EQ(p_close(lun), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(p_create(lun, name), IFD_SUCCESS);
    CHECK(wait_presence(lun, IFD_ICC_PRESENT));
    server_stop(&s);
    CHECK(wait_presence(lun, IFD_ICC_NOT_PRESENT));
    CHECK_EQ(p_close(lun), IFD_SUCCESS);

    /* A server that accepts but never greets: closing does not wait for
     * the HELLO timeout (5 s by default). */
    CHECK_EQ(server_start(&s, MODE_SILENT), 0);
    snprintf(name, sizeof name, "socket:%s", s.path);
    CHECK_EQ(p_create(lun, name), IFD_SUCCESS);
    sleep_ms(100);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        CHECK_EQ(p_close(lun), IFD_SUCCESS);
        clock_gettime(CLOCK_MONOTONIC, &b);
        CHECK((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 < 1000);
    }
    server_stop(&s);

    dlclose(h);
    return check_report();
}
