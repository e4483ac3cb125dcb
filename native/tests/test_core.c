/*
 * test_core.c - the C core tested alone (no Python): devices, synchronous and
 * overlapped IOCTLs, completion queues, cancellation, shutdown, open errors,
 * against the simulated reader driver; the core's side of a backend with
 * native overlapped I/O (the Windows backend's shape), through a fake one;
 * and the checks of scardio's IFD extensions (ifd_ext.h) against a scripted
 * driver (ext_driver.c).  Run under valgrind and ThreadSanitizer by
 * native/tests/run.sh; prints "N passed, N failed".
 *
 * usage: test_core <path of libscardio_sim.so> <path of ext_driver.so>
 */
#define _POSIX_C_SOURCE 200809L
#ifdef __linux__
#define _GNU_SOURCE /* sched_setaffinity */
#endif
#include <dlfcn.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <dirent.h>
#include <sched.h>
#include <unistd.h>
#endif

#include "scio.h"
#include "core/backend.h"
#include "core/core_internal.h"
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

/* "sim", or "sim?nopoll": a reader without a polling function, whose
 * tracking requests the library's poller serves. */
static const char *sim_name = "sim";

static scio_device *open_sim(unsigned long lun)
{
    scio_device *d = NULL;
    char err[256];
    scio_status st = scio_open_ifd(sim_lib, sim_name, lun, NULL, NULL, &d, err, sizeof err);
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
    /* A backend that cannot bound its tracking wait (an IFD handler's
     * polls) runs no slice in the caller: the tracking lane's, as before. */
    {
        unsigned wait = 0;
        CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 1000, &wait) == SCIO_NOT_SUPPORTED);
        CHECK(scio_track_slice(d, SCIO_IOCTL_TRANSMIT, 1000, &wait) == SCIO_INVALID_PARAMETER);
        CHECK(wait == 0);
        scio_shutdown(d);
        CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 1000, &wait) ==
              SCIO_DEVICE_NOT_CONNECTED);
    }
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

    /* releasing a running tracking request wakes the driver on a core
     * thread (never in the releasing caller); the lane frees soon */
    CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 10, &op) == SCIO_SUCCESS);
    sleep_ms(30);
    scio_op_release(op);
    {
        scio_status st = SCIO_DEVICE_BUSY;
        for (int tries = 0; tries < 200 && st == SCIO_DEVICE_BUSY; tries++) {
            CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 11, &op) == SCIO_SUCCESS);
            CHECK(scio_op_wait(op, 2000) == 1);
            st = scio_op_status(op);
            scio_op_release(op);
            if (st == SCIO_DEVICE_BUSY)
                sleep_ms(10);
        }
        CHECK(st == SCIO_SUCCESS);
    }
    while (scio_queue_pop(q, 0, &c) == 1) {
    }

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

#ifdef __linux__
enum { MAX_TASKS = 64 };

/* The thread ids of this process (at most MAX_TASKS); their count. */
static int list_tasks(long *tids)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    if (!dir)
        return 0;
    while ((e = readdir(dir)) != NULL && n < MAX_TASKS) {
        if (e->d_name[0] != '.')
            tids[n++] = strtol(e->d_name, NULL, 10);
    }
    closedir(dir);
    return n;
}

/* How often thread `tid` went to sleep and was woken (-1: unknown). */
static long task_sleeps(long tid)
{
    char path[64], line[128];
    long v = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/self/task/%ld/status", tid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

static long sum_sleeps(const long *tids, int n)
{
    long sum = 0;
    for (int i = 0; i < n; i++) {
        long v = task_sleeps(tids[i]);
        sum += v > 0 ? v : 0;
    }
    return sum;
}

/* A synchronous call must not wake the device's idle lane threads: once
 * both lanes have run, many GET_STATEs leave them asleep, and they still
 * take new work at once afterwards. */
static void test_sync_calls_leave_lanes_asleep(void)
{
    enum { CALLS = 2000 };
    long before[MAX_TASKS], after[MAX_TASKS], lanes[MAX_TASKS];
    int nb, na, nl = 0, wrong = 0;
    long s0, s1;
    scio_device *d = open_sim(7);
    scio_op *op = NULL, *track = NULL;
    CHECK(d != NULL);
    if (!d)
        return;
    CHECK(control(d, SIM_CTL_INSERT, NULL, 0) == SCIO_SUCCESS);
    nb = list_tasks(before);
    CHECK(scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 1, &op) == SCIO_SUCCESS);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 2, &track) == SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    CHECK(scio_op_wait(track, 2000) == 1 && scio_op_status(track) == SCIO_SUCCESS);
    scio_op_release(op);
    scio_op_release(track);
    na = list_tasks(after);
    for (int i = 0; i < na; i++) {
        int old = 0;
        for (int j = 0; j < nb; j++)
            old |= after[i] == before[j];
        if (!old)
            lanes[nl++] = after[i];
    }
    CHECK(nl >= 2); /* the I/O and the tracking lane */
    sleep_ms(50);   /* both back asleep, waiting for work */
    s0 = sum_sleeps(lanes, nl);
    for (int i = 0; i < CALLS; i++)
        wrong += get_state(d) != SCIO_STATE_SWALLOWED;
    s1 = sum_sleeps(lanes, nl);
    CHECK(wrong == 0);
    if (s1 - s0 >= CALLS / 20)
        fprintf(stderr, "lanes woke %ld times in %d synchronous calls\n", s1 - s0, CALLS);
    CHECK(s0 > 0 && s1 - s0 < CALLS / 20);
    /* the lanes still wake for new work */
    CHECK(scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 3, &op) == SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    scio_op_release(op);
    scio_close(d);
}
#endif

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
        CHECK(scio_open_ifd(sim_lib, sim_name, 0x100 + (unsigned long)i, q, NULL, &d[i], err,
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

/* Readers without a polling function, more than one batch of the poller's:
 * cards arriving in every reader between two looks complete every request
 * (entries that complete make room for later ones, which must still be
 * looked at), and the removals after them too. */
static void test_poller_many_events_at_once(void)
{
    enum { N = 80 };
    scio_ifd_options opts = { 200, 0 }; /* every insertion lands between two looks */
    scio_queue *q = scio_queue_new();
    scio_device *d[N];
    scio_op *op[N];
    scio_completion c;
    char err[256];
    int seen[N];
    int i, got, round;
    CHECK(q != NULL);
    for (i = 0; i < N; i++) {
        d[i] = NULL;
        CHECK(scio_open_ifd(sim_lib, "sim?nopoll", 0x300 + (unsigned long)i, q, &opts, &d[i],
                            err, sizeof err) == SCIO_SUCCESS);
    }
    for (round = 0; round < 2; round++) {
        uint32_t code = round == 0 ? SCIO_IOCTL_IS_PRESENT : SCIO_IOCTL_IS_ABSENT;
        for (i = 0; i < N; i++)
            CHECK(scio_submit(d[i], code, NULL, 0, 0, (uint64_t)i, &op[i]) == SCIO_SUCCESS);
        sleep_ms(50); /* every first look done: the requests wait */
        for (i = 0; i < N; i++)
            CHECK(!scio_op_done(op[i]));
        for (i = 0; i < N; i++)
            CHECK(control(d[i], round == 0 ? SIM_CTL_INSERT : SIM_CTL_REMOVE, NULL, 0) ==
                  SCIO_SUCCESS);
        memset(seen, 0, sizeof seen);
        got = 0;
        while (got < N && scio_queue_pop(q, 2000, &c) == 1) {
            CHECK(c.user < N && c.status == SCIO_SUCCESS);
            if (c.user < N)
                seen[c.user]++;
            got++;
        }
        CHECK(got == N);
        for (i = 0; i < N; i++)
            CHECK(seen[i] == 1);
        for (i = 0; i < N; i++)
            scio_op_release(op[i]);
    }
    scio_queue_free(q);
    for (i = 0; i < N; i++)
        scio_close(d[i]);
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

static int fd_readable(int fd)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
}

/* A post queues under the queue's lock (the descriptor readable at once)
 * and wakes a blocked pop only after it (scio_queue_notify, no lock held). */
static void *pop_blocked(void *arg)
{
    static scio_completion c;
    return scio_queue_pop(arg, 5000, &c) == 1 ? &c : NULL;
}

static void test_queue_post_outside_lock(void)
{
    scio_queue *q = scio_queue_new();
    scio_completion c, *got = NULL;
    pthread_t th;
    int how;
    CHECK(q != NULL);
    if (!q)
        return;
    how = scio_queue_enqueue(q, 1, 11, SCIO_SUCCESS);
    CHECK(how == SCIO_QUEUE_SIGNAL);
    CHECK(fd_readable(scio_queue_fd(q))); /* before the wake-up */
    CHECK(scio_queue_pop(q, 0, &c) == 1 && c.op_id == 1 && c.user == 11);
    CHECK(!fd_readable(scio_queue_fd(q)));
    scio_queue_notify(q, how); /* late: wakes nobody, queues nothing */
    CHECK(scio_queue_pop(q, 0, &c) == 0);
    /* a pop blocked in another thread gets the record */
    CHECK(pthread_create(&th, NULL, pop_blocked, q) == 0);
    sleep_ms(20);
    scio_queue_notify(q, scio_queue_enqueue(q, 2, 12, SCIO_DEVICE_BUSY));
    pthread_join(th, (void **)&got);
    CHECK(got != NULL && got->op_id == 2 && got->user == 12 && got->status == SCIO_DEVICE_BUSY);
    CHECK(!fd_readable(scio_queue_fd(q)));
    scio_queue_free(q);
}

#define RACE_POSTS 20000

static void *race_poster(void *arg)
{
    scio_queue *q = arg;
    for (uint64_t i = 1; i <= RACE_POSTS; i++)
        scio_queue_post(q, i, i, SCIO_SUCCESS);
    return NULL;
}

/* Posts racing with a harvester that polls the descriptor (an event loop),
 * then with one blocked in scio_queue_pop: every record arrives once, in
 * order, and the descriptor ends unreadable. */
static void test_queue_post_race(void)
{
    scio_queue *q = scio_queue_new();
    pthread_t th;
    uint64_t next = 1;
    scio_completion c;
    CHECK(q != NULL);
    if (!q)
        return;
    CHECK(pthread_create(&th, NULL, race_poster, q) == 0);
    while (next <= RACE_POSTS) {
        struct pollfd pfd = {scio_queue_fd(q), POLLIN, 0};
        if (poll(&pfd, 1, 2000) != 1)
            break; /* a lost wake-up: checked below */
        while (scio_queue_pop(q, 0, &c) == 1) {
            if (c.op_id != next)
                break;
            next++;
        }
        if (c.op_id != next - 1)
            break;
    }
    pthread_join(th, NULL);
    CHECK(next == RACE_POSTS + 1);
    CHECK(scio_queue_pop(q, 0, &c) == 0);
    CHECK(!fd_readable(scio_queue_fd(q)));
    next = 1;
    CHECK(pthread_create(&th, NULL, race_poster, q) == 0);
    while (next <= RACE_POSTS && scio_queue_pop(q, 2000, &c) == 1 && c.op_id == next)
        next++;
    pthread_join(th, NULL);
    CHECK(next == RACE_POSTS + 1);
    CHECK(!fd_readable(scio_queue_fd(q)));
    scio_queue_free(q);
}

/* scio_submit_to: the completion goes to the queue given, not the
 * device's; cancelled and closed ones too, and a released one's record is
 * forgotten there. */
static void test_submit_to_queue(void)
{
    scio_device *d = open_sim(2);
    scio_queue *q = scio_queue_new(), *dq;
    scio_op *op = NULL, *busy = NULL;
    scio_completion c;
    CHECK(d != NULL && q != NULL);
    if (!d || !q) {
        if (d)
            scio_close(d);
        scio_queue_free(q);
        return;
    }
    dq = scio_device_queue(d);
    CHECK(scio_submit_to(d, NULL, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 1, &op) ==
          SCIO_INVALID_PARAMETER && op == NULL);
    CHECK(scio_submit_to(d, q, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 5, &op) == SCIO_SUCCESS);
    CHECK(scio_submit_to(d, q, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 6, &busy) == SCIO_SUCCESS);
    CHECK(scio_queue_pop(q, 2000, &c) == 1 && c.user == 6 && c.status == SCIO_DEVICE_BUSY);
    scio_op_release(busy);
    CHECK(control(d, SIM_CTL_INSERT, NULL, 0) == SCIO_SUCCESS);
    CHECK(scio_queue_pop(q, 2000, &c) == 1 && c.user == 5 && c.status == SCIO_SUCCESS &&
          c.op_id == scio_op_id(op));
    CHECK(scio_queue_pending(dq) == 0);
    scio_op_release(op);
    /* completed, then released before it was popped: forgotten */
    CHECK(scio_submit_to(d, q, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 7, &op) == SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 2000) == 1);
    scio_op_release(op);
    CHECK(scio_queue_pending(q) == 0);
    /* pending at close: cancelled into the queue given, which outlives it */
    CHECK(scio_submit_to(d, q, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 8, &op) == SCIO_SUCCESS);
    scio_queue_free(q); /* the operation keeps it */
    scio_close(d);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_CANCELLED);
    CHECK(scio_queue_pop(q, 0, &c) == 1 && c.user == 8 && c.status == SCIO_CANCELLED);
    scio_op_release(op); /* the last reference to the queue */
}

/* ---- scardio's IFD extensions, on the scripted driver -------------------- */

static const char *ext_lib;
static void (*ext_offer)(int, int, uint32_t, uint32_t, unsigned long);
static void (*ext_set_card)(uint32_t, uint32_t, int);
static void (*ext_hold)(void);
static void (*ext_release)(void);
static int (*ext_held)(void);
static void (*ext_offer_generation)(int);
static void (*ext_set_generation)(uint32_t);
static void (*ext_reads)(unsigned *, unsigned *);

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

/* The card-event generation (ifd_ext.h), on a reader without a polling
 * function (open_ext: 5 ms poll interval).  While it stands still, the
 * poller reads it alone once per tick and no count; counts that move under
 * a still generation go unseen (the driver's side of the contract), and the
 * move of the generation makes them seen; an arrival and a departure
 * between two looks are both reported; a reader whose driver does not offer
 * it (here: at its open) has its counts read every tick, and so has every
 * reader of a poller that tracks such a reader too. */
static void test_ext_generation(void)
{
    scio_device *d, *d2;
    scio_op *op = NULL, *op2 = NULL;
    unsigned counts, gens;
    ext_offer(1, 0, 0, 0, 8);
    ext_offer_generation(1);
    ext_set_generation(0xFFFFFFFEu); /* it wraps below: only moving counts */
    ext_set_card(0, 0, 0);
    d = open_ext(0x13);
    CHECK(d != NULL);
    if (!d)
        return;
    CHECK(track(d, SCIO_IOCTL_IS_PRESENT, 60, &op) == SCIO_PENDING);
    ext_reads(&counts, &gens);
    sleep_ms(200); /* ~40 ticks */
    ext_reads(&counts, &gens);
    CHECK(counts == 0);
    CHECK(gens >= 5 && gens <= 45);

    /* The counts move, the generation does not: nothing is read or seen. */
    ext_set_card(1, 0, 1);
    CHECK(!scio_op_wait(op, 100));
    ext_reads(&counts, &gens);
    CHECK(counts == 0);
    ext_set_generation(0xFFFFFFFFu);
    CHECK(scio_op_wait(op, 2000) && scio_op_status(op) == SCIO_SUCCESS);
    scio_op_release(op);
    CHECK(get_state(d) == SCIO_STATE_SWALLOWED);

    /* Settled again on the card being in; then out and back in, with one
     * bump, between two looks: a departure and an arrival. */
    CHECK(track(d, SCIO_IOCTL_IS_ABSENT, 60, &op) == SCIO_PENDING);
    ext_set_card(2, 1, 1);
    ext_set_generation(0); /* (wrapped) */
    CHECK(op != NULL && scio_op_wait(op, 2000) && scio_op_status(op) == SCIO_SUCCESS);
    if (op)
        scio_op_release(op);
    CHECK(track(d, SCIO_IOCTL_IS_PRESENT, 2000, &op) == SCIO_SUCCESS);
    CHECK(track(d, SCIO_IOCTL_IS_ABSENT, 60, &op) == SCIO_PENDING);
    sleep_ms(50);
    ext_reads(&counts, &gens);
    sleep_ms(100);
    ext_reads(&counts, &gens);
    CHECK(counts == 0 && gens > 0); /* settled on the card in */

    /* A second reader opened while the driver does not offer the
     * generation: the poller reads every tracked reader's counts per tick,
     * and no generation. */
    ext_offer_generation(0);
    d2 = open_ext(0x14);
    CHECK(d2 != NULL);
    if (d2) {
        CHECK(track(d2, SCIO_IOCTL_IS_ABSENT, 60, &op2) == SCIO_PENDING);
        sleep_ms(20);
        ext_reads(&counts, &gens);
        sleep_ms(100);
        ext_reads(&counts, &gens);
        CHECK(counts >= 2 * 5 && gens == 0);
        /* the first reader's events are seen from its counts alone */
        ext_set_card(2, 2, 0);
        CHECK(op != NULL && scio_op_wait(op, 2000) && scio_op_status(op) == SCIO_SUCCESS);
        if (op)
            scio_op_release(op);
        op = NULL;
        finish(op2);
        scio_close(d2);
    }
    finish(op);
    ext_offer_generation(0);
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
    *(void **)&ext_offer_generation = dlsym(h, "ext_offer_generation");
    *(void **)&ext_set_generation = dlsym(h, "ext_set_generation");
    *(void **)&ext_reads = dlsym(h, "ext_reads");
    return ext_offer && ext_set_card && ext_hold && ext_release && ext_held &&
           ext_offer_generation && ext_set_generation && ext_reads;
}

/* scio_queue_free drops the creator's reference once: a second call, or a
 * call on a device's private queue, must leave the queue to its users. */
static void test_queue_free_once(void)
{
    scio_device *d = open_sim(6);
    scio_queue *q = scio_queue_new(), *pq;
    scio_op *op = NULL;
    scio_completion c;
    char err[256];
    CHECK(d != NULL && q != NULL);
    if (!d || !q)
        return;
    pq = scio_device_queue(d);
    scio_queue_free(pq); /* not the caller's: no effect */
    CHECK(scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 61, &op) == SCIO_SUCCESS);
    CHECK(scio_queue_pop(pq, 2000, &c) == 1 && c.user == 61);
    scio_op_release(op);
    scio_close(d);

    d = NULL;
    CHECK(scio_open_ifd(sim_lib, "sim", 6, q, NULL, &d, err, sizeof err) == SCIO_SUCCESS);
    scio_queue_free(q);
    scio_queue_free(q); /* once only: the device still holds it */
    if (d) {
        CHECK(scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 62, &op) == SCIO_SUCCESS);
        CHECK(scio_queue_pop(q, 2000, &c) == 1 && c.user == 62);
        scio_op_release(op);
        scio_close(d);
    }
}

/* ---- a backend with native submit --------------------------------------- */

/* A fake driver with its own completion thread, the way the Windows backend
 * has its completion port's: submitted requests wait in a list until the
 * test finishes them or asks to cancel them, and the thread hands them back
 * through scio_op_complete.  FAKE_FAIL_AT_ONCE fails inside submit. */
#define FAKE_FAIL_AT_ONCE SCIO_CTL_CODE(77)
#define FAKE_BLOCK SCIO_CTL_CODE(78) /* the blocking ioctl waits for `unblock` */
#define FAKE_ABORTED 995L /* the driver code of a cancelled request */

typedef struct fake_op {
    scio_op *op;
    uint32_t code;
    uint8_t *out;
    size_t out_cap;
    int cancel_asked, finish;
    struct fake_op *next;
} fake_op;

typedef struct fake_dev {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    pthread_t thread;
    fake_op *pending;
    int ignore_cancel;        /* a hung driver */
    int blocked, unblock;     /* FAKE_BLOCK: calls inside; let them go */
    int quit;
    int submits, cancels, cancel_everything, releases, release_busy, destroys, ioctls;
    int bad_data;             /* backend data not zeroed / aligned */
} fake_dev;

static int fake_get(fake_dev *f, const int *field)
{
    int v;
    pthread_mutex_lock(&f->lock);
    v = *field;
    pthread_mutex_unlock(&f->lock);
    return v;
}

static void *fake_thread(void *arg)
{
    fake_dev *f = arg;
    pthread_mutex_lock(&f->lock);
    for (;;) {
        fake_op **pp, *o = NULL;
        for (pp = &f->pending; *pp; pp = &(*pp)->next) {
            if ((*pp)->finish || ((*pp)->cancel_asked && !f->ignore_cancel)) {
                o = *pp;
                *pp = o->next;
                break;
            }
        }
        if (!o) {
            if (f->quit)
                break;
            pthread_cond_wait(&f->cv, &f->lock);
            continue;
        }
        pthread_mutex_unlock(&f->lock);
        if (o->finish) {
            size_t len = o->out_cap >= 4 ? 4 : 0;
            if (len)
                put32(o->out, o->code);
            scio_op_complete(o->op, SCIO_SUCCESS, len, 0);
        } else {
            scio_op_complete(o->op, SCIO_CANCELLED, 0, FAKE_ABORTED);
        }
        pthread_mutex_lock(&f->lock);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

static scio_status fake_ioctl(scio_device *d, scio_op *op, uint32_t code,
                              const uint8_t *in, size_t in_len, uint8_t *out,
                              size_t out_cap, size_t *out_len, long *drv)
{
    fake_dev *f = scio_device_state(d);
    (void)op; (void)in; (void)in_len; (void)drv;
    pthread_mutex_lock(&f->lock);
    f->ioctls++;
    if (code == FAKE_BLOCK) {
        f->blocked++;
        pthread_cond_broadcast(&f->cv);
        while (!f->unblock)
            pthread_cond_wait(&f->cv, &f->lock);
        f->blocked--;
    }
    pthread_mutex_unlock(&f->lock);
    if (out_cap < 4)
        return SCIO_BUFFER_TOO_SMALL;
    put32(out, code);
    *out_len = 4;
    return SCIO_SUCCESS;
}

static void fake_submit(scio_device *d, scio_op *op, uint32_t code,
                        const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap)
{
    fake_dev *f = scio_device_state(d);
    fake_op *o = scio_op_backend_data(op);
    (void)in; (void)in_len;
    pthread_mutex_lock(&f->lock);
    f->submits++;
    if (((uintptr_t)o & 15u) != 0 || o->op || o->next || o->finish)
        f->bad_data++;
    o->op = op;
    o->code = code;
    o->out = out;
    o->out_cap = out_cap;
    if (code != FAKE_FAIL_AT_ONCE) {
        o->next = f->pending;
        f->pending = o;
    }
    pthread_mutex_unlock(&f->lock);
    if (code == FAKE_FAIL_AT_ONCE)
        scio_op_complete(op, SCIO_NOT_SUPPORTED, 0, 77);
}

/* Called with the device lock held: only records and signals. */
static void fake_cancel(scio_device *d, scio_op *op)
{
    fake_dev *f = scio_device_state(d);
    pthread_mutex_lock(&f->lock);
    if (op) {
        ((fake_op *)scio_op_backend_data(op))->cancel_asked = 1;
        f->cancels++;
    } else {
        for (fake_op *o = f->pending; o; o = o->next)
            o->cancel_asked = 1;
        f->cancel_everything++;
    }
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->lock);
}

static void fake_release(scio_device *d)
{
    fake_dev *f = scio_device_state(d);
    pthread_mutex_lock(&f->lock);
    f->releases++;
    f->release_busy += f->pending != NULL;
    pthread_mutex_unlock(&f->lock);
}

static void fake_destroy(scio_device *d)
{
    fake_dev *f = scio_device_state(d);
    pthread_mutex_lock(&f->lock);
    f->destroys++;
    pthread_mutex_unlock(&f->lock);
}

static const scio_backend fake_backend = {
    .name = "fake",
    .op_data_size = sizeof(fake_op),
    .ioctl = fake_ioctl,
    .submit = fake_submit,
    .cancel = fake_cancel,
    .release = fake_release,
    .destroy = fake_destroy,
};

static void fake_start(fake_dev *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cv, NULL);
    pthread_create(&f->thread, NULL, fake_thread, f);
}

static void fake_stop(fake_dev *f)
{
    pthread_mutex_lock(&f->lock);
    f->quit = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->lock);
}

static void fake_finish(fake_dev *f, scio_op *op)
{
    pthread_mutex_lock(&f->lock);
    ((fake_op *)scio_op_backend_data(op))->finish = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->lock);
}

/* Wait (bounded) until the fake driver holds no request. */
static int fake_drained(fake_dev *f)
{
    for (int i = 0; i < 200; i++) {
        int empty;
        pthread_mutex_lock(&f->lock);
        empty = f->pending == NULL;
        pthread_mutex_unlock(&f->lock);
        if (empty)
            return 1;
        sleep_ms(10);
    }
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_native_backend(void)
{
    fake_dev f;
    scio_device *d = NULL;
    scio_queue *q;
    scio_op *op = NULL, *t1 = NULL, *t2 = NULL, *a = NULL, *b = NULL;
    scio_completion c;
    struct pollfd pfd;
    uint8_t out[8];
    const uint8_t *o;
    size_t n = 0;

    fake_start(&f);
    /* A close timeout far above the default: under valgrind on a loaded
     * machine the fake driver thread answering shutdown's cancel can take
     * longer than 2 s, and this test checks that shutdown waits for it
     * (the hung-driver test below checks that close gives up). */
    CHECK(scio_device_create(&fake_backend, &f, NULL, 30000, &d) == SCIO_SUCCESS);
    if (!d) {
        fake_stop(&f);
        return;
    }
    q = scio_device_queue(d);
    pfd.fd = scio_queue_fd(q);
    pfd.events = POLLIN;

    /* Synchronous calls use the blocking ioctl. */
    CHECK(scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, out, 4, &n) == SCIO_SUCCESS);
    CHECK(n == 4 && get32(out) == SCIO_IOCTL_GET_STATE && fake_get(&f, &f.ioctls) == 1);

    /* Submitted natively; completed from the driver's thread into the queue. */
    CHECK(scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 1, &op) == SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 20) == 0 && scio_op_status(op) == SCIO_PENDING);
    CHECK(poll(&pfd, 1, 0) == 0);
    /* Two tracking requests both reach the driver: the rule is its own. */
    CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 2, &t1) == SCIO_SUCCESS);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 3, &t2) == SCIO_SUCCESS);
    CHECK(scio_op_wait(t2, 20) == 0 && fake_get(&f, &f.submits) == 3);
    CHECK(fake_get(&f, &f.ioctls) == 1 && fake_get(&f, &f.bad_data) == 0);
    fake_finish(&f, op);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    o = scio_op_output(op, &n);
    CHECK(o != NULL && n == 4 && get32(o) == SCIO_IOCTL_GET_STATE);
    CHECK(poll(&pfd, 1, 1000) == 1);
    CHECK(scio_queue_pop(q, 0, &c) == 1 && c.user == 1 && c.status == SCIO_SUCCESS);
    CHECK(poll(&pfd, 1, 0) == 0);
    scio_op_release(op);

    /* Cancel goes to the backend; the driver answers CANCELLED. */
    scio_op_cancel(t1);
    CHECK(scio_op_wait(t1, 2000) == 1 && scio_op_status(t1) == SCIO_CANCELLED);
    CHECK(scio_op_driver_code(t1) == FAKE_ABORTED && fake_get(&f, &f.cancels) == 1);
    CHECK(scio_queue_pop(q, 1000, &c) == 1 && c.user == 2 && c.status == SCIO_CANCELLED);
    scio_op_cancel(t1); /* done: not passed on */
    CHECK(fake_get(&f, &f.cancels) == 1);
    scio_op_release(t1);

    /* Releasing a pending one cancels it; nothing is queued. */
    scio_op_release(t2);
    CHECK(fake_drained(&f) && fake_get(&f, &f.cancels) == 2);
    CHECK(scio_queue_pop(q, 50, &c) == 0);

    /* A request failing inside submit completes exactly once. */
    CHECK(scio_submit(d, FAKE_FAIL_AT_ONCE, NULL, 0, 0, 4, &op) == SCIO_SUCCESS);
    CHECK(op && scio_op_done(op) && scio_op_status(op) == SCIO_NOT_SUPPORTED);
    CHECK(scio_op_driver_code(op) == 77 && scio_device_driver_code(d) == 77);
    CHECK(scio_queue_pop(q, 0, &c) == 1 && c.user == 4 && c.status == SCIO_NOT_SUPPORTED);
    CHECK(scio_queue_pop(q, 50, &c) == 0);
    scio_op_release(op);

    /* cancel_all cancels each submitted request, not the whole device. */
    CHECK(scio_submit(d, SCIO_IOCTL_TRANSMIT, "x", 1, 8, 5, &a) == SCIO_SUCCESS);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 6, &b) == SCIO_SUCCESS);
    scio_cancel_all(d);
    CHECK(scio_op_wait(a, 2000) == 1 && scio_op_status(a) == SCIO_CANCELLED);
    CHECK(scio_op_wait(b, 2000) == 1 && scio_op_status(b) == SCIO_CANCELLED);
    CHECK(fake_get(&f, &f.cancels) == 4 && fake_get(&f, &f.cancel_everything) == 0);
    CHECK(scio_queue_pop(q, 0, &c) == 1 && scio_queue_pop(q, 0, &c) == 1);
    scio_op_release(a);
    scio_op_release(b);

    /* Shutdown cancels everything on the device and releases the channel
     * once every request is back. */
    CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 7, &op) == SCIO_SUCCESS);
    scio_shutdown(d);
    CHECK(scio_op_done(op) && scio_op_status(op) == SCIO_CANCELLED);
    CHECK(fake_get(&f, &f.cancel_everything) >= 1);
    CHECK(fake_get(&f, &f.releases) == 1 && fake_get(&f, &f.release_busy) == 0);
    CHECK(scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, out, 4, &n) == SCIO_DEVICE_NOT_CONNECTED);
    a = NULL;
    CHECK(scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 8, &a) == SCIO_DEVICE_NOT_CONNECTED);
    CHECK(a == NULL && fake_get(&f, &f.destroys) == 0);
    scio_close(d);
    /* The last reference may be the driver thread's, dropped just after. */
    for (int i = 0; i < 200 && fake_get(&f, &f.destroys) == 0; i++)
        sleep_ms(10);
    CHECK(fake_get(&f, &f.destroys) == 1 && fake_get(&f, &f.releases) == 1);
    scio_op_release(op);
    fake_stop(&f);
}

/* A driver that never answers a cancel: close gives up after its timeout and
 * completes the request as CANCELLED; the late result is dropped and the
 * channel released when the request finally comes back. */
/* Shutdown returns with every request the driver gave back done: the
 * returning thread leaves the driver only after completing it.  (A window
 * of a few instructions: many rounds, the driver thread answering the
 * cancel while shutdown waits.) */
static void test_shutdown_returns_every_request_done(void)
{
    int late = 0, rounds = 0;
    for (int i = 0; i < 1000; i++) {
        fake_dev f;
        scio_device *d = NULL;
        scio_op *op = NULL;
        fake_start(&f);
        if (scio_device_create(&fake_backend, &f, NULL, 30000, &d) != SCIO_SUCCESS || !d) {
            fake_stop(&f);
            CHECK(0);
            return;
        }
        if (scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 1, &op) == SCIO_SUCCESS && op) {
            scio_shutdown(d);
            late += !scio_op_done(op);
            rounds++;
            scio_op_release(op);
        }
        scio_close(d);
        for (int j = 0; j < 200 && fake_get(&f, &f.destroys) == 0; j++)
            sleep_ms(1);
        fake_stop(&f);
    }
    CHECK(rounds == 1000 && late == 0);
}

static void test_native_backend_hung(void)
{
    fake_dev f;
    scio_queue *q = scio_queue_new();
    scio_device *d = NULL;
    scio_op *op = NULL;
    scio_completion c;
    int64_t t0, took;

    fake_start(&f);
    pthread_mutex_lock(&f.lock);
    f.ignore_cancel = 1;
    pthread_mutex_unlock(&f.lock);
    CHECK(q && scio_device_create(&fake_backend, &f, q, 100, &d) == SCIO_SUCCESS);
    if (!d) {
        fake_stop(&f);
        scio_queue_free(q);
        return;
    }
    CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 9, &op) == SCIO_SUCCESS);
    t0 = mono_ms();
    scio_close(d);
    took = mono_ms() - t0;
    CHECK(took >= 90 && took < 1500);
    CHECK(scio_op_done(op) && scio_op_status(op) == SCIO_CANCELLED);
    CHECK(scio_queue_pop(q, 0, &c) == 1 && c.user == 9 && c.status == SCIO_CANCELLED);
    CHECK(fake_get(&f, &f.releases) == 0 && fake_get(&f, &f.destroys) == 0);
    fake_finish(&f, op); /* the driver finally answers */
    CHECK(fake_drained(&f));
    for (int i = 0; i < 200 && fake_get(&f, &f.destroys) == 0; i++)
        sleep_ms(10);
    CHECK(fake_get(&f, &f.releases) == 1 && fake_get(&f, &f.destroys) == 1);
    CHECK(scio_op_status(op) == SCIO_CANCELLED);
    CHECK(scio_queue_pop(q, 50, &c) == 0); /* the late result is not queued */
    scio_op_release(op);
    scio_queue_free(q);
    fake_stop(&f);
}

typedef struct {
    scio_device *d;
    scio_status st;
    int done;
    int64_t at;
    pthread_mutex_t lock;
} call_thread;

static void *blocking_call_main(void *arg)
{
    call_thread *c = arg;
    uint8_t out[4];
    size_t n = 0;
    c->st = scio_ioctl(c->d, FAKE_BLOCK, NULL, 0, out, sizeof out, &n);
    return NULL;
}

static void *shutdown_main(void *arg)
{
    call_thread *c = arg;
    scio_shutdown(c->d);
    pthread_mutex_lock(&c->lock);
    c->done = 1;
    c->at = mono_ms();
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* Close waits for a synchronous call inside the driver (its in-driver count
 * wake-up is only sent to a waiting shutdown) and releases the channel as
 * soon as the call leaves, long before the close timeout. */
static void test_shutdown_waits_for_sync_call(void)
{
    fake_dev f;
    scio_device *d = NULL;
    call_thread call, shut;
    pthread_t ct, stt;
    int64_t freed;
    int done;

    fake_start(&f);
    CHECK(scio_device_create(&fake_backend, &f, NULL, 10000, &d) == SCIO_SUCCESS);
    if (!d) {
        fake_stop(&f);
        return;
    }
    memset(&call, 0, sizeof call);
    memset(&shut, 0, sizeof shut);
    call.d = shut.d = d;
    pthread_mutex_init(&shut.lock, NULL);
    pthread_create(&ct, NULL, blocking_call_main, &call);
    for (int i = 0; i < 500 && fake_get(&f, &f.blocked) == 0; i++)
        sleep_ms(2);
    CHECK(fake_get(&f, &f.blocked) == 1);
    pthread_create(&stt, NULL, shutdown_main, &shut);
    sleep_ms(60);
    pthread_mutex_lock(&shut.lock);
    done = shut.done;
    pthread_mutex_unlock(&shut.lock);
    CHECK(!done && fake_get(&f, &f.releases) == 0);
    pthread_mutex_lock(&f.lock);
    f.unblock = 1;
    pthread_cond_broadcast(&f.cv);
    pthread_mutex_unlock(&f.lock);
    freed = mono_ms();
    pthread_join(ct, NULL);
    pthread_join(stt, NULL);
    CHECK(call.st == SCIO_SUCCESS);
    CHECK(shut.done && shut.at - freed < 3000);
    CHECK(fake_get(&f, &f.releases) == 1 && fake_get(&f, &f.release_busy) == 0);
    scio_close(d);
    /* The last reference may be the release thread's, dropped just after. */
    for (int i = 0; i < 200 && fake_get(&f, &f.destroys) == 0; i++)
        sleep_ms(10);
    CHECK(fake_get(&f, &f.destroys) == 1);
    pthread_mutex_destroy(&shut.lock);
    fake_stop(&f);
}

/* scio_submit_call: one function on the I/O lane, called exactly once. */
typedef struct call_ctx {
    scio_device *d;
    int runs, releases;
    uint32_t state;
    int block_ms;
} call_ctx;

static scio_status call_fn(scio_op *op, void *ctx, int run)
{
    call_ctx *c = ctx;
    (void)op;
    if (!run) {
        c->releases++;
        return SCIO_SUCCESS;
    }
    c->runs++;
    if (c->block_ms)
        sleep_ms(c->block_ms);
    c->state = get_state(c->d);
    return c->state == SCIO_STATE_SWALLOWED ? SCIO_SUCCESS : SCIO_UNSUCCESSFUL;
}

static void test_calls_on_the_lane(void)
{
    scio_device *d = open_sim(7);
    scio_op *a = NULL, *b = NULL, *c = NULL;
    call_ctx ca = {0}, cb = {0}, cc = {0};
    CHECK(d != NULL);
    if (!d)
        return;
    ca.d = cb.d = cc.d = d;
    CHECK(control(d, SIM_CTL_INSERT, NULL, 0) == SCIO_SUCCESS);
    CHECK(scio_submit_call(d, NULL, &ca, 0, &a) == SCIO_INVALID_PARAMETER && a == NULL);
    /* runs on the lane, makes synchronous calls, its status is the op's */
    CHECK(scio_submit_call(d, call_fn, &ca, 0, &a) == SCIO_SUCCESS);
    CHECK(scio_op_wait(a, 5000) == 1 && scio_op_status(a) == SCIO_SUCCESS);
    CHECK(ca.runs == 1 && ca.releases == 0 && ca.state == SCIO_STATE_SWALLOWED);
    scio_op_release(a);
    /* one that has not started when cancelled is called with run = 0 */
    cb.block_ms = 200;
    CHECK(scio_submit_call(d, call_fn, &cb, 0, &b) == SCIO_SUCCESS);
    CHECK(scio_submit_call(d, call_fn, &cc, 0, &c) == SCIO_SUCCESS);
    CHECK(scio_op_wait(c, 10) == 0);
    scio_op_cancel(c);
    CHECK(scio_op_wait(c, 5000) == 1 && scio_op_status(c) == SCIO_CANCELLED);
    CHECK(cc.runs == 0 && cc.releases == 1);
    CHECK(scio_op_wait(b, 5000) == 1 && cb.runs == 1 && cb.releases == 0);
    scio_op_release(b);
    scio_op_release(c);
    /* nothing for the queue: its waiter waits on the op */
    CHECK(scio_queue_pending(scio_device_queue(d)) == 0);
    scio_shutdown(d);
    CHECK(scio_submit_call(d, call_fn, &ca, 0, &a) == SCIO_DEVICE_NOT_CONNECTED && a == NULL);
    CHECK(ca.runs == 1 && ca.releases == 0);
    scio_close(d);
}

/* scio_submit_awaited: an IOCTL on the I/O lane, waited for by its caller
 * (scio_op_await), queued nowhere; a caller that gives up releases it. */
static void test_awaited_calls(void)
{
    scio_device *d = open_sim(8);
    scio_op *op = NULL, *blocker = NULL;
    call_ctx cb = {0};
    const uint8_t *out;
    size_t n = 0;
    int ok = 1;
    CHECK(d != NULL);
    if (!d)
        return;
    CHECK(control(d, SIM_CTL_INSERT, NULL, 0) == SCIO_SUCCESS);
    CHECK(scio_submit_awaited(d, SCIO_IOCTL_GET_STATE, NULL, SCIO_MAX_INPUT + 1, 4, &op)
          == SCIO_INVALID_BUFFER_SIZE && op == NULL);
    /* a burst, as a sequence makes them: each waiter and the lane spin for
     * each other when they run apart */
    for (int i = 0; i < 200; i++) {
        CHECK(scio_submit_awaited(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, &op) == SCIO_SUCCESS);
        ok &= scio_op_await(op, 5000) == 1 && scio_op_status(op) == SCIO_SUCCESS;
        out = scio_op_output(op, &n);
        ok &= out != NULL && n == 4 && get32(out) == SCIO_STATE_SWALLOWED;
        scio_op_release(op);
    }
    CHECK(ok);
    CHECK(scio_queue_pending(scio_device_queue(d)) == 0);
    /* an error is the op's status, with the driver's code */
    CHECK(scio_submit_awaited(d, SCIO_IOCTL_TRANSMIT, "x", 1, 16, &op) == SCIO_SUCCESS);
    CHECK(scio_op_await(op, 5000) == 1 && scio_op_status(op) != SCIO_SUCCESS);
    scio_op_release(op);
    /* behind a call that blocks the lane, the waiter gives up at its
     * timeout; released while queued, the op is cancelled and freed */
    cb.d = d;
    cb.block_ms = 200;
    CHECK(scio_submit_call(d, call_fn, &cb, 0, &blocker) == SCIO_SUCCESS);
    CHECK(scio_submit_awaited(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, &op) == SCIO_SUCCESS);
    CHECK(scio_op_await(op, 20) == 0 && scio_op_status(op) == SCIO_PENDING);
    scio_op_release(op);
    CHECK(scio_op_wait(blocker, 5000) == 1 && cb.runs == 1);
    scio_op_release(blocker);
    /* the lane works on after that */
    CHECK(scio_submit_awaited(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, &op) == SCIO_SUCCESS);
    CHECK(scio_op_await(op, 5000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    scio_op_release(op);
    CHECK(scio_queue_pending(scio_device_queue(d)) == 0);
#ifdef __linux__
    {
        /* a thread that may use one processor never spins: the lane is
         * never "apart" from it (the mask is re-read within 0.1 s) */
        cpu_set_t saved, one;
        if (sched_getaffinity(0, sizeof saved, &saved) == 0) {
            int cpu = 0;
            while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &saved))
                cpu++;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            CHECK(sched_setaffinity(0, sizeof one, &one) == 0);
            sleep_ms(150);
            CHECK(scio_lane_apart(d) == 0);
            CHECK(scio_submit_awaited(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, &op) == SCIO_SUCCESS);
            CHECK(scio_op_await(op, 5000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
            scio_op_release(op);
            CHECK(sched_setaffinity(0, sizeof saved, &saved) == 0);
        }
    }
#endif
    scio_shutdown(d);
    CHECK(scio_submit_awaited(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, &op)
          == SCIO_DEVICE_NOT_CONNECTED && op == NULL);
    scio_close(d);
}

/* The loops (scio_loop_run, scio_submit_loop): the connect loop's ordinary
 * path to its end with its trail; a stop, recorded, at the first IOCTL
 * that fails, at no card, at max_steps and at its timeout; on the lane
 * awaited and into the queue; cancelled behind a blocking call. */
static void arm_fault(scio_device *d, uint32_t ep, uint32_t kind, uint32_t value)
{
    uint8_t f[12];
    put32(f, ep);
    put32(f + 4, kind);
    put32(f + 8, value);
    CHECK(control(d, SIM_CTL_FAULT, f, 12) == SCIO_SUCCESS);
}

static void test_connect_loop(void)
{
    scio_device *d = open_sim(9);
    scio_loop c, in;
    const scio_loop *r;
    scio_op *op = NULL, *blocker = NULL;
    scio_completion done;
    call_ctx cb = {0};
    const uint8_t *out;
    uint8_t lat[4];
    size_t n = 0;
    CHECK(d != NULL);
    if (!d)
        return;
    memset(&c, 0, sizeof c);
    c.kind = 7; /* no such loop: it stops at once */
    c.max_steps = 8;
    scio_loop_run(d, &c, NULL);
    CHECK(!c.complete && c.n == 0);
    c.kind = SCIO_LOOP_CONNECT;
    c.protocols = SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1;
    in = c;
    /* no card: one GET_STATE, recorded, and a stop */
    scio_loop_run(d, &c, NULL);
    CHECK(!c.complete && c.n == 1 && c.step[0].code == SCIO_IOCTL_GET_STATE &&
          c.step[0].status == SCIO_SUCCESS && c.step[0].in_len == 0 && c.step[0].out_len == 4 &&
          get32(c.step[0].out) == SCIO_STATE_ABSENT && c.trail_len == 1);
    CHECK(control(d, SIM_CTL_INSERT, NULL, 0) == SCIO_SUCCESS);
    /* a card just in: SWALLOWED, cold reset, NEGOTIABLE, the ATR, T=1 */
    scio_loop_run(d, &c, NULL);
    CHECK(c.complete && c.n == 5 && c.atr_len > 2 && c.atr[0] == 0x3B && c.trail_len == 9);
    CHECK(c.trail[0] == SCIO_STATE_SWALLOWED && c.trail[1] == SCIO_TRAIL_COLD_RESET &&
          c.trail[2] == SCIO_STATE_NEGOTIABLE && c.trail[3] == SCIO_TRAIL_ATR &&
          c.trail[4] == SCIO_TRAIL_SET_PROTOCOL && get32(c.trail + 5) == SCIO_PROTOCOL_T1);
    CHECK(c.step[4].code == SCIO_IOCTL_SET_PROTOCOL && c.step[4].in_len == 4 &&
          c.step[4].in == (SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1));
    /* connected again: SPECIFIC, the ATR and the protocol in force */
    scio_loop_run(d, &c, NULL);
    CHECK(c.complete && c.n == 4 && c.trail_len == 11 && c.trail[0] == SCIO_STATE_SPECIFIC &&
          c.trail[1] == SCIO_TRAIL_ATR_PROTOCOL && get32(c.trail + 2) == SCIO_PROTOCOL_T1);
    /* left in T=1, asked for T=0 alone: one warm reset, then SET_PROTOCOL
     * fails (the card has no T=0) and the loop stops there, recorded */
    c.protocols = SCIO_PROTOCOL_T0;
    scio_loop_run(d, &c, NULL);
    CHECK(!c.complete && c.n >= 5 && c.trail[1] == SCIO_TRAIL_ATR_PROTOCOL &&
          c.trail[6] == SCIO_TRAIL_WARM_RESET);
    CHECK(c.step[c.n - 1].code == SCIO_IOCTL_SET_PROTOCOL &&
          c.step[c.n - 1].status != SCIO_SUCCESS);
    c.protocols = in.protocols;
    /* a driver error: recorded with its code, nothing after it */
    arm_fault(d, SIM_EP_SET_PROTOCOL, SIM_FAULT_RETURN, 612);
    CHECK(control(d, SIM_CTL_REMOVE, NULL, 0) == SCIO_SUCCESS);
    CHECK(control(d, SIM_CTL_INSERT, NULL, 0) == SCIO_SUCCESS);
    scio_loop_run(d, &c, NULL);
    CHECK(!c.complete && c.n == 5 && c.step[4].status != SCIO_SUCCESS &&
          c.step[4].driver_code == 612 && c.step[4].out_len == 0);
    /* max_steps 0: nothing at all */
    c.max_steps = 0;
    scio_loop_run(d, &c, NULL);
    CHECK(!c.complete && c.n == 0 && c.trail_len == 0);
    c.max_steps = 8;
    /* on the lane, awaited: its output is the whole loop */
    CHECK(scio_submit_loop(d, NULL, 1, 0, &op) == SCIO_INVALID_PARAMETER && op == NULL);
    CHECK(scio_submit_loop(d, &in, 1, 0, &op) == SCIO_SUCCESS);
    CHECK(scio_op_await(op, 5000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    out = scio_op_output(op, &n);
    r = (const scio_loop *)(const void *)out;
    CHECK(out != NULL && n == sizeof c && r->complete && r->trail[0] == SCIO_STATE_NEGOTIABLE);
    CHECK(scio_loop_ioctl(op) == SCIO_IOCTL_SET_PROTOCOL);
    scio_op_release(op);
    CHECK(scio_queue_pending(scio_device_queue(d)) == 0);
    /* not awaited: its completion goes to the queue with its cookie */
    CHECK(scio_submit_loop(d, &in, 0, 77, &op) == SCIO_SUCCESS);
    CHECK(scio_queue_pop(scio_device_queue(d), 5000, &done) == 1 && done.user == 77 &&
          done.op_id == scio_op_id(op) && done.status == SCIO_SUCCESS);
    scio_op_release(op);
    /* its timeout stops it before the next IOCTL: 60 ms per driver call,
     * 30 ms allowed, so one GET_STATE and no more */
    put32(lat, 60000);
    CHECK(control(d, SIM_CTL_SET_LATENCY, lat, 4) == SCIO_SUCCESS);
    in.timeout_us = 30000;
    CHECK(scio_submit_loop(d, &in, 1, 0, &op) == SCIO_SUCCESS);
    CHECK(scio_op_await(op, 5000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    out = scio_op_output(op, &n);
    r = (const scio_loop *)(const void *)out;
    CHECK(out != NULL && n == sizeof c && !r->complete && r->n == 1);
    scio_op_release(op);
    in.timeout_us = 0;
    put32(lat, 0);
    CHECK(control(d, SIM_CTL_SET_LATENCY, lat, 4) == SCIO_SUCCESS);
    /* behind a call that blocks the lane: its waiter gives up, and
     * released while queued it is cancelled without a single IOCTL */
    cb.d = d;
    cb.block_ms = 200;
    CHECK(scio_submit_call(d, call_fn, &cb, 0, &blocker) == SCIO_SUCCESS);
    CHECK(scio_submit_loop(d, &in, 1, 0, &op) == SCIO_SUCCESS);
    CHECK(scio_op_await(op, 20) == 0 && scio_loop_ioctl(op) == 0);
    scio_op_release(op);
    CHECK(scio_op_wait(blocker, 5000) == 1 && cb.runs == 1);
    scio_op_release(blocker);
    scio_loop_run(d, &c, NULL); /* and the reader works on */
    CHECK(c.complete);
    /* RELEASE_CARD on a direct backend: the card's power is the caller's */
    {
        uint8_t rel[4] = { 9, 9, 9, 9 };
        CHECK(scio_ioctl(d, SCIO_IOCTL_RELEASE_CARD, NULL, 0, rel, 3, &n) ==
              SCIO_BUFFER_TOO_SMALL);
        CHECK(scio_ioctl(d, SCIO_IOCTL_RELEASE_CARD, NULL, 0, rel, 4, &n) == SCIO_SUCCESS &&
              n == 4 && get32(rel) == 0);
        CHECK(get_state(d) == SCIO_STATE_SPECIFIC); /* nothing let go of */
    }
    /* the power-down loop: SPECIFIC, POWER_DOWN, then SWALLOWED */
    c.kind = SCIO_LOOP_POWER_DOWN;
    c.max_steps = 4;
    scio_loop_run(d, &c, NULL);
    CHECK(c.complete && c.n == 3 && c.trail_len == 3 && c.trail[0] == SCIO_STATE_SPECIFIC &&
          c.trail[1] == SCIO_TRAIL_POWER_DOWN && c.trail[2] == SCIO_STATE_SWALLOWED);
    CHECK(c.step[1].code == SCIO_IOCTL_POWER && c.step[1].in == SCIO_POWER_DOWN);
    scio_loop_run(d, &c, NULL); /* not powered: one GET_STATE */
    CHECK(c.complete && c.n == 1 && c.trail[0] == SCIO_STATE_SWALLOWED);
    c.kind = SCIO_LOOP_CONNECT;
    c.max_steps = 8;
    scio_loop_run(d, &c, NULL);
    CHECK(c.complete);
    arm_fault(d, SIM_EP_POWER_ICC, SIM_FAULT_RETURN, 612); /* a failed POWER_DOWN: a stop */
    c.kind = SCIO_LOOP_POWER_DOWN;
    scio_loop_run(d, &c, NULL);
    CHECK(!c.complete && c.n == 2 && c.step[1].status != SCIO_SUCCESS);
    scio_shutdown(d);
    CHECK(scio_submit_loop(d, &in, 1, 0, &op) == SCIO_DEVICE_NOT_CONNECTED && op == NULL);
    scio_loop_run(d, &c, NULL);
    CHECK(!c.complete && c.n == 1 && c.step[0].status == SCIO_DEVICE_NOT_CONNECTED);
    scio_close(d);
}

/* ---- tracking sets over a scripted backend ------------------------------
 * set_wait completes the entries whose device's `level` is what their
 * request waits for (1: a card), else blocks until set_level, an
 * interrupt or its timeout. */
typedef struct set_dev {
    int level;
} set_dev;

static pthread_mutex_t set_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t set_cv = PTHREAD_COND_INITIALIZER;
static int set_interrupts, set_interrupted, set_in_wait, set_opens, set_closes;

static scio_status set_ioctl(scio_device *d, scio_op *op, uint32_t code, const uint8_t *in,
                             size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len,
                             long *drv)
{
    (void)d; (void)op; (void)code; (void)in; (void)in_len; (void)out; (void)out_cap;
    (void)drv;
    *out_len = 0;
    return SCIO_NOT_SUPPORTED;
}

static scio_status set_open(void **state)
{
    pthread_mutex_lock(&set_lock);
    set_opens++;
    pthread_mutex_unlock(&set_lock);
    *state = &set_opens;
    return SCIO_SUCCESS;
}

static void set_close(void *state)
{
    (void)state;
    pthread_mutex_lock(&set_lock);
    set_closes++;
    pthread_mutex_unlock(&set_lock);
}

static void set_interrupt(void *state)
{
    (void)state;
    pthread_mutex_lock(&set_lock);
    set_interrupts++;
    set_interrupted = 1;
    pthread_cond_broadcast(&set_cv);
    pthread_mutex_unlock(&set_lock);
}

static scio_status set_wait_fn(void *state, scio_track_entry **e, size_t n, int timeout_ms)
{
    struct timespec end;
    scio_status st = SCIO_IO_TIMEOUT;
    (void)state;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += (timeout_ms < 0 ? 3600 : timeout_ms) / 1000;
    end.tv_nsec += (long)((timeout_ms < 0 ? 0 : timeout_ms) % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&set_lock);
    set_in_wait = 1;
    pthread_cond_broadcast(&set_cv);
    for (;;) {
        int any = 0;
        for (size_t i = 0; i < n; i++) {
            set_dev *sd = scio_device_state(e[i]->dev);
            if (sd->level == (e[i]->code == SCIO_IOCTL_IS_PRESENT)) {
                e[i]->done = 1;
                e[i]->status = SCIO_SUCCESS;
                any = 1;
            }
        }
        if (any) {
            st = SCIO_SUCCESS;
            break;
        }
        if (set_interrupted) {
            set_interrupted = 0;
            st = SCIO_CANCELLED;
            break;
        }
        if (pthread_cond_timedwait(&set_cv, &set_lock, &end) != 0)
            break;
    }
    set_in_wait = 0;
    pthread_mutex_unlock(&set_lock);
    return st;
}

static void set_level(scio_device *d, int level)
{
    pthread_mutex_lock(&set_lock);
    ((set_dev *)scio_device_state(d))->level = level;
    pthread_cond_broadcast(&set_cv);
    pthread_mutex_unlock(&set_lock);
}

static void set_nothing(scio_device *d) { (void)d; }

static const scio_backend set_backend = {
    .name = "set",
    .ioctl = set_ioctl,
    .track_set_open = set_open,
    .track_set_wait = set_wait_fn,
    .track_set_interrupt = set_interrupt,
    .track_set_close = set_close,
    .track_set_max = 3,
    .release = set_nothing,
    .destroy = set_nothing,
};

typedef struct set_submit_arg {
    scio_track_set *set;
    scio_device *d;
    scio_op *op;
    scio_status st;
} set_submit_arg;

static void *submit_later(void *arg)
{
    set_submit_arg *a = arg;
    sleep_ms(50);
    a->st = scio_track_set_submit(a->set, a->d, SCIO_IOCTL_IS_PRESENT, 42, &a->op);
    return NULL;
}

static void *wake_core_later(void *arg)
{
    sleep_ms(50);
    scio_track_set_wake(arg);
    return NULL;
}

static void test_track_set_core(void)
{
    set_dev sd[4] = {{0}, {0}, {0}, {0}};
    scio_device *d[4];
    scio_track_set *s = (scio_track_set *)&sd[0];
    scio_op *op[4], *extra;
    scio_completion c[4];
    set_submit_arg arg;
    pthread_t t;
    scio_device *sim = open_sim(9);
    int64_t t0;

    /* A backend without the wait: no set. */
    CHECK(sim != NULL);
    if (sim) {
        CHECK(scio_track_set_new(sim, &s) == SCIO_NOT_SUPPORTED && s == NULL);
    }
    CHECK(scio_track_set_new(NULL, &s) == SCIO_INVALID_PARAMETER);
    for (int i = 0; i < 4; i++)
        CHECK(scio_device_create(&set_backend, &sd[i], NULL, 500, &d[i]) == SCIO_SUCCESS);
    CHECK(scio_track_set_new(d[0], &s) == SCIO_SUCCESS && set_opens == 1);
    CHECK(scio_track_set_capacity(s) == 3);
    CHECK(!scio_track_set_accepts(s, sim) && scio_track_set_accepts(s, d[3]));
    if (sim) {
        CHECK(scio_track_set_submit(s, sim, SCIO_IOCTL_IS_PRESENT, 0, &extra) ==
              SCIO_NOT_SUPPORTED && extra == NULL);
        scio_close(sim);
    }
    /* Nothing held: the wait sleeps until a submit from another thread,
     * then waits for that request too. */
    arg.set = s;
    arg.d = d[0];
    pthread_create(&t, NULL, submit_later, &arg);
    t0 = mono_ms();
    CHECK(scio_track_set_wait(s, 300, c, 4) == 0); /* woken by the submit, no card */
    pthread_join(t, NULL);
    CHECK(arg.st == SCIO_SUCCESS && mono_ms() - t0 >= 40);
    op[0] = arg.op;
    for (int i = 1; i < 3; i++)
        CHECK(scio_track_set_submit(s, d[i], SCIO_IOCTL_IS_PRESENT, (uint64_t)i, &op[i]) ==
              SCIO_SUCCESS);
    /* Its capacity is the backend's. */
    CHECK(scio_track_set_submit(s, d[3], SCIO_IOCTL_IS_PRESENT, 3, &extra) ==
          SCIO_INSUFFICIENT_RESOURCES && extra == NULL);
    CHECK(scio_track_set_pending(s) == 3);
    /* Completions come back in submission order, at most `cap` a wait. */
    set_level(d[2], 1);
    set_level(d[0], 1);
    CHECK(scio_track_set_wait(s, 1000, c, 1) == 1 && c[0].user == 42);
    CHECK(scio_track_set_wait(s, 1000, c, 4) == 1 && c[0].user == 2 &&
          c[0].status == SCIO_SUCCESS);
    /* A wake with no wait running ends the next one at once. */
    scio_track_set_wake(s);
    CHECK(scio_track_set_wait(s, 1000, c, 4) == -1);
    /* wake() from another thread ends a running wait (the interrupt). */
    pthread_create(&t, NULL, wake_core_later, s);
    t0 = mono_ms();
    CHECK(scio_track_set_wait(s, 2000, c, 4) == -1 && mono_ms() - t0 < 1000);
    pthread_join(t, NULL);
    CHECK(set_interrupts > 0);
    /* A device closed while its request is parked: done, reported next. */
    scio_close(d[1]);
    CHECK(scio_op_done(op[1]) && scio_op_status(op[1]) == SCIO_CANCELLED);
    CHECK(scio_track_set_wait(s, 1000, c, 4) == 1 && c[0].user == 1 &&
          c[0].status == SCIO_CANCELLED);
    CHECK(scio_track_set_pending(s) == 0);
    for (int i = 0; i < 3; i++)
        scio_op_release(op[i]);
    /* Freed with a request held: it is cancelled, the state closed. */
    CHECK(scio_track_set_submit(s, d[3], SCIO_IOCTL_IS_PRESENT, 3, &extra) == SCIO_SUCCESS);
    scio_track_set_free(s);
    CHECK(scio_op_done(extra) && scio_op_status(extra) == SCIO_CANCELLED && set_closes == 1);
    scio_op_release(extra);
    /* The slot is free again: a new set's request on the same device. */
    CHECK(scio_track_set_new(d[3], &s) == SCIO_SUCCESS);
    CHECK(scio_track_set_submit(s, d[3], SCIO_IOCTL_IS_PRESENT, 5, &extra) == SCIO_SUCCESS);
    CHECK(scio_op_status(extra) == SCIO_PENDING);
    scio_track_set_free(s);
    scio_op_release(extra);
    for (int i = 0; i < 4; i++)
        if (i != 1)
            scio_close(d[i]);
}

/* The fork generation: once a device exists, the child of a plain fork()
 * (no language runtime's hooks) sees it one higher, the parent unchanged,
 * and the parent's device keeps working. */
static void test_fork_generation(void)
{
    scio_device *d = open_sim(8);
    unsigned long gen = scio_fork_generation;
    pid_t pid;
    int status = -1, fds[2];
    char seen = 0;
    CHECK(d != NULL);
    if (!d)
        return;
    CHECK(scio_watch_forks() == 0); /* idempotent: one handler, one bump */
    CHECK(pipe(fds) == 0);
    pid = fork();
    if (pid == 0) {
        /* Answer through the pipe: under a memory checker the child's exit
         * status is the checker's (the child exits holding what the
         * parent's threads were still freeing). */
        char ok = scio_fork_generation == gen + 1 ? 'y' : 'n';
        _exit(write(fds[1], &ok, 1) == 1 ? 0 : 1);
    }
    close(fds[1]);
    CHECK(pid > 0);
    if (pid > 0) {
        CHECK(read(fds[0], &seen, 1) == 1 && seen == 'y');
        CHECK(waitpid(pid, &status, 0) == pid);
    }
    close(fds[0]);
    CHECK(scio_fork_generation == gen);
    CHECK(get_state(d) != 0xFFFFFFFFu);
    scio_close(d);
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
#ifdef __linux__
    test_sync_calls_leave_lanes_asleep();
#endif
    test_shared_queue_and_many_devices();
    sim_name = "sim?nopoll";
    test_sync_sequence();
    test_overlapped_and_queue();
    test_close_with_pending();
    test_shared_queue_and_many_devices();
    sim_name = "sim";
    test_poller_many_events_at_once();
    test_open_errors();
    test_wide_lun();
    test_queue_descriptor();
    test_queue_post_outside_lock();
    test_queue_post_race();
    test_submit_to_queue();
    test_queue_free_once();
    test_native_backend();
    test_native_backend_hung();
    test_shutdown_returns_every_request_done();
    test_shutdown_waits_for_sync_call();
    test_calls_on_the_lane();
    test_awaited_calls();
    test_connect_loop();
    test_track_set_core();
    test_fork_generation();
    CHECK(load_ext());
    if (ext_offer) {
        scio_set_log(log_cb, NULL);
        test_ext_events_backwards();
        test_ext_events_drift();
        test_ext_generation();
        test_ext_unlocked_controls();
        scio_set_log(NULL, NULL);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
