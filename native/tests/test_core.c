/*
 * test_core.c - the C core tested alone (no Python): devices, synchronous and
 * overlapped IOCTLs, completion queues, cancellation, shutdown, open errors,
 * against the simulated reader driver; and the checks of scardio's IFD
 * extensions (ifd_ext.h) against a scripted driver (ext_driver.c).  Run
 * under valgrind by native/tests/run.sh; prints "N passed, N failed".
 *
 * usage: test_core <path of libscardio_sim.so> <path of ext_driver.so>
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include "scio.h"
#include "ifd_ext.h"
#include "sim/sim_protocol.h"

static int passed, failed;
static const char *sim_lib;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) {                                                          \
            passed++;                                                        \
        } else {                                                             \
            failed++;                                                        \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);  \
        }                                                                    \
    } while (0)

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static scio_device *open_sim(unsigned long lun)
{
    scio_device *d = NULL;
    char err[256];
    scio_status st = scio_open_ifd(sim_lib, "sim", lun, NULL, NULL, &d, err, sizeof err);
    if (st != SCIO_SUCCESS)
        fprintf(stderr, "open: %s\n", err);
    return d;
}

static uint32_t get_state(scio_device *d)
{
    uint8_t out[4];
    size_t n = 0;
    if (scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, out, sizeof out, &n) != SCIO_SUCCESS || n != 4)
        return 0xFFFFFFFFu;
    return get32(out);
}

static scio_status control(scio_device *d, int n, const void *in, size_t len)
{
    size_t out_len;
    return scio_ioctl(d, SCIO_VENDOR_CTL_PCSC(n), in, len, NULL, 0, &out_len);
}

static void test_sync_sequence(void)
{
    scio_device *d = open_sim(1);
    uint8_t in[16], out[300];
    size_t n = 0;
    CHECK(d != NULL);
    if (!d)
        return;
    CHECK(get_state(d) == SCIO_STATE_ABSENT);
    put32(in, SCIO_COLD_RESET);
    CHECK(scio_ioctl(d, SCIO_IOCTL_POWER, in, 4, out, 33, &n) == SCIO_NO_MEDIA);
    CHECK(control(d, SIM_CTL_INSERT, NULL, 0) == SCIO_SUCCESS);
    CHECK(get_state(d) == SCIO_STATE_SWALLOWED);
    CHECK(scio_ioctl(d, SCIO_IOCTL_POWER, in, 4, out, 33, &n) == SCIO_SUCCESS);
    CHECK(n == SIM_ATR_T1_LEN && out[0] == 0x3B);
    CHECK(get_state(d) == SCIO_STATE_NEGOTIABLE);
    put32(in, SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1);
    CHECK(scio_ioctl(d, SCIO_IOCTL_SET_PROTOCOL, in, 4, out, 4, &n) == SCIO_SUCCESS);
    CHECK(n == 4 && get32(out) == SCIO_PROTOCOL_T1);
    CHECK(get_state(d) == SCIO_STATE_SPECIFIC);
    /* ECHO 16 bytes */
    put32(in, SCIO_PROTOCOL_T1);
    put32(in + 4, 8);
    memcpy(in + 8, "\x80\xEE\x00\x00\x10", 5);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, in, 13, out, sizeof out, &n) == SCIO_SUCCESS);
    CHECK(n == 8 + 16 + 2 && out[n - 2] == 0x90 && out[n - 1] == 0x00);
    /* too small: the response is not written, the reader stays usable */
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, in, 13, out, 8 + 4, &n) == SCIO_BUFFER_TOO_SMALL);
    CHECK(n == 0);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, in, 13, out, sizeof out, &n) == SCIO_SUCCESS);
    /* unknown IOCTL, oversized input, NULL output with capacity */
    CHECK(scio_ioctl(d, SCIO_CTL_CODE(99), NULL, 0, out, 4, &n) == SCIO_INVALID_DEVICE_REQUEST);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, in, SCIO_MAX_INPUT + 1, out, 4, &n) ==
          SCIO_INVALID_BUFFER_SIZE);
    CHECK(scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, NULL, 4, &n) == SCIO_INVALID_PARAMETER);
    /* driver fault carries the driver's code */
    {
        uint8_t f[12];
        put32(f, SIM_EP_TRANSMIT);
        put32(f + 4, SIM_FAULT_RETURN);
        put32(f + 8, 612);
        CHECK(control(d, SIM_CTL_FAULT, f, 12) == SCIO_SUCCESS);
        CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, in, 13, out, sizeof out, &n) ==
              SCIO_IO_DEVICE_ERROR);
        CHECK(scio_device_driver_code(d) == 612);
    }
    CHECK(scio_status_name(SCIO_NO_MEDIA) != NULL &&
          strcmp(scio_status_name(SCIO_NO_MEDIA), "NO_MEDIA") == 0);
    CHECK(scio_status_name(0x12345678u) == NULL);
    scio_close(d);
}

static void test_overlapped_and_queue(void)
{
    scio_device *d = open_sim(2);
    scio_queue *q;
    scio_op *op = NULL, *busy = NULL;
    scio_completion c;
    struct pollfd pfd;
    const uint8_t *o;
    size_t n;
    CHECK(d != NULL);
    if (!d)
        return;
    q = scio_device_queue(d);
    pfd.fd = scio_queue_fd(q);
    pfd.events = POLLIN;
    CHECK(pfd.fd >= 0);
    CHECK(poll(&pfd, 1, 0) == 0);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 42, &op) == SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 30) == 0);
    CHECK(scio_op_status(op) == SCIO_PENDING);
    /* a second tracking request completes with DEVICE_BUSY */
    CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 43, &busy) == SCIO_SUCCESS);
    CHECK(scio_op_wait(busy, 1000) == 1 && scio_op_status(busy) == SCIO_DEVICE_BUSY);
    CHECK(scio_queue_pop(q, 1000, &c) == 1 && c.user == 43 && c.status == SCIO_DEVICE_BUSY);
    scio_op_release(busy);
    CHECK(control(d, SIM_CTL_INSERT, NULL, 0) == SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    CHECK(poll(&pfd, 1, 1000) == 1);
    CHECK(scio_queue_pending(q) == 1);
    CHECK(scio_queue_pop(q, 0, &c) == 1 && c.user == 42 && c.op_id == scio_op_id(op));
    CHECK(poll(&pfd, 1, 0) == 0);
    scio_op_release(op);

    /* output of an overlapped GET_STATE */
    CHECK(scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 7, &op) == SCIO_SUCCESS);
    CHECK(scio_op_wait(op, -1) == 1);
    o = scio_op_output(op, &n);
    CHECK(o != NULL && n == 4 && get32(o) == SCIO_STATE_SWALLOWED);
    scio_op_release(op); /* its unread completion is forgotten */
    CHECK(scio_queue_pending(q) == 0);

    /* cancel a pending wait */
    CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 8, &op) == SCIO_SUCCESS);
    sleep_ms(20);
    scio_op_cancel(op);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_CANCELLED);
    scio_op_release(op);

    /* releasing a pending op cancels it and frees it on completion */
    CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 9, &op) == SCIO_SUCCESS);
    scio_op_release(op);
    sleep_ms(20);

    /* wake */
    scio_queue_wake(q);
    CHECK(scio_queue_pop(q, 1000, &c) == -1);
    CHECK(scio_queue_pop(q, 10, &c) == 0);
    scio_close(d);
}

static void test_close_with_pending(void)
{
    scio_device *d = open_sim(3);
    scio_op *ops[20];
    int i, cancelled = 0;
    CHECK(d != NULL);
    if (!d)
        return;
    CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 0, &ops[0]) == SCIO_SUCCESS);
    for (i = 1; i < 20; i++)
        CHECK(scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, (uint64_t)i, &ops[i]) == SCIO_SUCCESS);
    scio_shutdown(d);
    for (i = 0; i < 20; i++) {
        CHECK(scio_op_done(ops[i]));
        cancelled += scio_op_status(ops[i]) == SCIO_CANCELLED;
    }
    CHECK(scio_op_status(ops[0]) == SCIO_CANCELLED);
    CHECK(cancelled >= 1);
    {
        uint8_t out[4];
        size_t n;
        scio_op *late = NULL;
        CHECK(scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, out, 4, &n) == SCIO_DEVICE_NOT_CONNECTED);
        CHECK(scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 0, &late) == SCIO_DEVICE_NOT_CONNECTED);
        CHECK(late == NULL);
    }
    scio_shutdown(d); /* idempotent */
    scio_close(d);
    for (i = 0; i < 20; i++)
        scio_op_release(ops[i]); /* ops outlive their device */
}

static void test_shared_queue_and_many_devices(void)
{
    enum { N = 64 };
    scio_queue *q = scio_queue_new();
    scio_device *d[N];
    scio_op *op[N];
    scio_completion c;
    char err[256];
    int i, got = 0;
    CHECK(q != NULL);
    for (i = 0; i < N; i++) {
        d[i] = NULL;
        CHECK(scio_open_ifd(sim_lib, "sim", 0x100 + (unsigned long)i, q, NULL, &d[i], err,
                            sizeof err) == SCIO_SUCCESS);
        CHECK(scio_submit(d[i], SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, (uint64_t)i, &op[i]) ==
              SCIO_SUCCESS);
    }
    for (i = 0; i < N; i += 2)
        CHECK(control(d[i], SIM_CTL_INSERT, NULL, 0) == SCIO_SUCCESS);
    while (got < N / 2 && scio_queue_pop(q, 2000, &c) == 1) {
        CHECK(c.user % 2 == 0 && c.status == SCIO_SUCCESS);
        got++;
    }
    CHECK(got == N / 2);
    scio_queue_free(q); /* devices keep it alive */
    for (i = 0; i < N; i++) {
        scio_op_release(op[i]);
        scio_close(d[i]);
    }
}

static void test_open_errors(void)
{
    scio_device *d = NULL;
    char err[256];
    CHECK(scio_open_ifd("/nonexistent/driver.so", "x", 0, NULL, NULL, &d, err, sizeof err) ==
          SCIO_DLL_NOT_FOUND);
    CHECK(d == NULL && strstr(err, "/nonexistent/driver.so") != NULL);
    CHECK(scio_open_ifd("/", "x", 0, NULL, NULL, &d, err, sizeof err) == SCIO_INVALID_IMAGE_FORMAT);
    CHECK(scio_open_ifd("", "x", 0, NULL, NULL, &d, err, sizeof err) == SCIO_INVALID_PARAMETER);
    d = open_sim(4);
    CHECK(d != NULL);
    {
        scio_device *d2 = NULL;
        CHECK(scio_open_ifd(sim_lib, "sim", 4, NULL, NULL, &d2, err, sizeof err) ==
              SCIO_SHARING_VIOLATION);
        CHECK(d2 == NULL);
    }
    scio_close(d);
    d = open_sim(4); /* free again after close */
    CHECK(d != NULL);
    scio_close(d);
}

/* A LUN wider than the driver's DWORD is refused, not truncated to another
 * reader (macOS: 32-bit DWORD, 64-bit unsigned long); where the DWORD is
 * unsigned long every LUN reaches the driver whole. */
static void test_wide_lun(void)
{
    scio_device *d = NULL, *low = NULL;
    char err[256];
    unsigned long wide;
    scio_status st;
    if (sizeof(unsigned long) <= 4)
        return; /* no LUN can be wider than a 32-bit DWORD */
    wide = (unsigned long)((uint64_t)1 << 40 | 5u);
    low = open_sim(5); /* the reader the truncated LUN would name */
    CHECK(low != NULL);
    st = scio_open_ifd(sim_lib, "sim", wide, NULL, NULL, &d, err, sizeof err);
#ifdef __APPLE__
    CHECK(st == SCIO_INVALID_PARAMETER);
    CHECK(d == NULL && strstr(err, "0x10000000005") != NULL);
#else
    CHECK(st == SCIO_SUCCESS && d != NULL);
#endif
    scio_close(d);
    scio_close(low);
}

/* The queue's descriptor: an eventfd on Linux, a pipe elsewhere (macOS). */
static void test_queue_descriptor(void)
{
    scio_queue *q = scio_queue_new();
    struct stat sb;
    CHECK(q != NULL);
    if (!q)
        return;
    CHECK(fstat(scio_queue_fd(q), &sb) == 0);
#ifdef __linux__
    CHECK(!S_ISFIFO(sb.st_mode));
#else
    CHECK(S_ISFIFO(sb.st_mode));
#endif
    scio_queue_free(q);
}

/* ---- scardio's IFD extensions, on the scripted driver -------------------- */

static const char *ext_lib;
static void (*ext_offer)(int, int, uint32_t, uint32_t, unsigned long);
static void (*ext_set_card)(uint32_t, uint32_t, int);
static void (*ext_hold)(void);
static void (*ext_release)(void);
static int (*ext_held)(void);

/* The log channel (scio_set_log): messages counted by what they mention. */
static pthread_mutex_t log_m = PTHREAD_MUTEX_INITIALIZER;
static int log_events, log_range;
static char log_last[512];

static void log_cb(int priority, const char *msg, void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&log_m);
    if (priority == 2 && strstr(msg, "card-event counts"))
        log_events++;
    if (priority == 2 && strstr(msg, "unlocked control range"))
        log_range++;
    snprintf(log_last, sizeof log_last, "%s", msg);
    pthread_mutex_unlock(&log_m);
}

static void log_counts(int *events, int *range)
{
    pthread_mutex_lock(&log_m);
    *events = log_events;
    *range = log_range;
    log_events = log_range = 0;
    pthread_mutex_unlock(&log_m);
}

static scio_device *open_ext(unsigned long lun)
{
    scio_device *d = NULL;
    char err[256];
    scio_ifd_options opts = { 5, 0 };
    scio_status st = scio_open_ifd(ext_lib, "ext", lun, NULL, &opts, &d, err, sizeof err);
    if (st != SCIO_SUCCESS)
        fprintf(stderr, "open: %s\n", err);
    return d;
}

/* Submit a tracking request and wait up to ms for it: its status, or
 * SCIO_PENDING (*op_out keeps it then, for the caller to finish). */
static scio_status track(scio_device *d, uint32_t code, int ms, scio_op **op_out)
{
    scio_op *op = NULL;
    scio_status st = scio_submit(d, code, NULL, 0, 0, 0, &op);
    *op_out = NULL;
    if (st != SCIO_SUCCESS)
        return st;
    if (!scio_op_wait(op, ms)) {
        *op_out = op;
        return SCIO_PENDING;
    }
    st = scio_op_status(op);
    scio_op_release(op);
    return st;
}

static void finish(scio_op *op)
{
    if (op) {
        scio_op_cancel(op);
        scio_op_wait(op, -1);
        scio_op_release(op);
    }
}

static void test_ext_events_backwards(void)
{
    scio_device *d;
    scio_op *op;
    int ev, rg;
    ext_offer(1, 0, 0, 0, 8);
    ext_set_card(0, 0, 0);
    d = open_ext(0x10);
    CHECK(d != NULL);
    if (!d)
        return;
    ext_set_card(1, 0, 1);
    CHECK(track(d, SCIO_IOCTL_IS_PRESENT, 2000, &op) == SCIO_SUCCESS);
    ext_set_card(1, 1, 0);
    CHECK(track(d, SCIO_IOCTL_IS_ABSENT, 2000, &op) == SCIO_SUCCESS);
    /* The insertion count goes back: no arrival may be made of it. */
    ext_set_card(0, 1, 0);
    CHECK(track(d, SCIO_IOCTL_IS_PRESENT, 150, &op) == SCIO_PENDING);
    log_counts(&ev, &rg);
    CHECK(ev == 1 && rg == 0);
    /* Tracked by presence alone from now on: a real arrival completes it,
     * and the bad counts are not read (nor logged) again. */
    ext_set_card(0, 0, 1);
    CHECK(op != NULL && scio_op_wait(op, 2000) && scio_op_status(op) == SCIO_SUCCESS);
    if (op)
        scio_op_release(op);
    CHECK(get_state(d) == SCIO_STATE_SWALLOWED);
    ext_set_card(0, 0, 0);
    CHECK(track(d, SCIO_IOCTL_IS_ABSENT, 2000, &op) == SCIO_SUCCESS);
    log_counts(&ev, &rg);
    CHECK(ev == 0);
    scio_close(d);
}

static void test_ext_events_drift(void)
{
    scio_device *d;
    scio_op *op;
    int ev, rg;
    ext_offer(1, 0, 0, 0, 8);
    ext_set_card(7, 7, 0);
    d = open_ext(0x11);
    CHECK(d != NULL);
    if (!d)
        return;
    /* Five insertions and no removal, with no card: impossible for a slot. */
    ext_set_card(12, 7, 0);
    CHECK(track(d, SCIO_IOCTL_IS_PRESENT, 150, &op) == SCIO_PENDING);
    finish(op);
    log_counts(&ev, &rg);
    CHECK(ev == 1);
    scio_close(d);

    /* Counts that wrap modulo 2^32 are fine, and each event is reported. */
    ext_set_card(0xFFFFFFFFu, 0xFFFFFFFFu, 0);
    d = open_ext(0x12);
    CHECK(d != NULL);
    if (!d)
        return;
    ext_set_card(0, 0, 0); /* one arrival and one departure, card gone again */
    CHECK(track(d, SCIO_IOCTL_IS_PRESENT, 2000, &op) == SCIO_SUCCESS);
    CHECK(track(d, SCIO_IOCTL_IS_ABSENT, 2000, &op) == SCIO_SUCCESS);
    CHECK(track(d, SCIO_IOCTL_IS_PRESENT, 100, &op) == SCIO_PENDING);
    finish(op);
    log_counts(&ev, &rg);
    CHECK(ev == 0);
    scio_close(d);
}

struct ctl_call {
    scio_device *d;
    uint32_t code;
    scio_status st;
    int done;
    pthread_mutex_t m;
};

static void *ctl_thread(void *arg)
{
    struct ctl_call *c = arg;
    size_t n = 0;
    scio_status st = scio_ioctl(c->d, c->code, NULL, 0, NULL, 0, &n);
    pthread_mutex_lock(&c->m);
    c->st = st;
    c->done = 1;
    pthread_mutex_unlock(&c->m);
    return NULL;
}

static int ctl_done(struct ctl_call *c)
{
    int done;
    pthread_mutex_lock(&c->m);
    done = c->done;
    pthread_mutex_unlock(&c->m);
    return done;
}

/* Whether vendor control `code` gets to the driver while another call is
 * blocked in it with the reader lock held. */
static int control_bypasses_lock(scio_device *d, uint32_t code)
{
    scio_op *blocked = NULL;
    struct ctl_call c = { d, code, 0, 0, PTHREAD_MUTEX_INITIALIZER };
    pthread_t t;
    int i, bypassed;
    ext_hold();
    if (scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 0, &blocked) != SCIO_SUCCESS)
        return -1;
    for (i = 0; i < 200 && !ext_held(); i++)
        sleep_ms(5);
    CHECK(ext_held());
    pthread_create(&t, NULL, ctl_thread, &c);
    for (i = 0; i < 40 && !ctl_done(&c); i++)
        sleep_ms(5);
    bypassed = ctl_done(&c);
    ext_release(); /* the locked case: let the blocked call go */
    pthread_join(t, NULL);
    CHECK(c.st == SCIO_SUCCESS);
    CHECK(scio_op_wait(blocked, 2000) && scio_op_status(blocked) == SCIO_SUCCESS);
    scio_op_release(blocked);
    return bypassed;
}

static void test_ext_unlocked_controls(void)
{
    static const struct {
        uint32_t first, last;
        unsigned long len;
        int valid;
    } cases[] = {
        { 0x42000000u + 10, 0x42000000u + 20, 8, 1 },
        { 0x42000000u + 15, 0x42000000u + 15, 8, 1 },  /* one code */
        { 0x42000000u + 20, 0x42000000u + 10, 8, 0 },  /* backwards */
        { 0x00310000u, 0x42000000u + 20, 8, 0 },       /* the standard IOCTLs */
        { 0x42000000u + 10, 0x43000000u, 8, 0 },       /* past the vendor space */
        { 0x42000000u + 10, 0x42000000u + 20, 4, 0 },  /* wrong length */
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        scio_device *d;
        int ev, rg;
        ext_offer(0, 1, cases[i].first, cases[i].last, cases[i].len);
        ext_set_card(0, 0, 0);
        d = open_ext(0x20 + i);
        CHECK(d != NULL);
        if (!d)
            continue;
        log_counts(&ev, &rg);
        if (cases[i].valid) {
            CHECK(rg == 0);
            CHECK(control_bypasses_lock(d, SCIO_VENDOR_CTL_PCSC(15)) == 1);
            /* A code outside the range takes the lock. */
            CHECK(control_bypasses_lock(d, SCIO_VENDOR_CTL_PCSC(21)) == 0);
        } else {
            if (rg != 1)
                fprintf(stderr, "case %zu: %d range messages (last: %s)\n", i, rg, log_last);
            CHECK(rg == 1);
            CHECK(control_bypasses_lock(d, SCIO_VENDOR_CTL_PCSC(15)) == 0);
        }
        scio_close(d);
    }
    /* A Windows-style code maps into the range too (n = 2048 + 5). */
    {
        scio_device *d;
        ext_offer(0, 1, 0x42000000u + 2048, 0x42000000u + 2060, 8);
        d = open_ext(0x30);
        CHECK(d != NULL);
        if (d) {
            CHECK(control_bypasses_lock(d, SCIO_VENDOR_CTL_WIN(2053)) == 1);
            CHECK(control_bypasses_lock(d, SCIO_VENDOR_CTL_WIN(2061)) == 0);
            scio_close(d);
        }
    }
}

static int load_ext(void)
{
    /* The same library the core loads: dlopen returns the same object. */
    void *h = dlopen(ext_lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen %s: %s\n", ext_lib, dlerror());
        return 0;
    }
    *(void **)&ext_offer = dlsym(h, "ext_offer");
    *(void **)&ext_set_card = dlsym(h, "ext_set_card");
    *(void **)&ext_hold = dlsym(h, "ext_hold");
    *(void **)&ext_release = dlsym(h, "ext_release");
    *(void **)&ext_held = dlsym(h, "ext_held");
    return ext_offer && ext_set_card && ext_hold && ext_release && ext_held;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s <libscardio_sim.so> <ext_driver.so>\n", argv[0]);
        return 2;
    }
    sim_lib = argv[1];
    ext_lib = argv[2];
    test_sync_sequence();
    test_overlapped_and_queue();
    test_close_with_pending();
    test_shared_queue_and_many_devices();
    test_open_errors();
    test_wide_lun();
    test_queue_descriptor();
    CHECK(load_ext());
    if (ext_offer) {
        scio_set_log(log_cb, NULL);
        test_ext_events_backwards();
        test_ext_events_drift();
        test_ext_unlocked_controls();
        scio_set_log(NULL, NULL);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
