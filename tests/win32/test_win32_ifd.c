/*
 * test_win32_ifd.c - the IFD-handler half of the Windows core: the simulated
 * reader DLL (libscardio_sim.dll) opened through scio_open_ifd, in the same
 * process (and through the same core) as the Windows device paths of
 * test_win32.c, which calls run_ifd_tests() and adds the counts to its
 * "N passed, M failed" line.
 *
 * Covers: load errors (missing DLL, directory, not a DLL, a DLL without
 * IFDH symbols), then the contract on the sim:
 * GET_STATE, IS_PRESENT pending then completing on insertion (vendor control
 * 0x42000000 + 3500), DEVICE_BUSY for a second tracking request, POWER,
 * SET_PROTOCOL, TRANSMIT echo (synchronous and overlapped), cancellation,
 * the queue's event handle, shutdown, and close with a pending operation;
 * then one queue shared by both backends, whose event is signalled exactly
 * while completions wait (what WaitForMultipleObjects callers rely on).
 */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scio.h"
#include "sim_protocol.h"

void run_ifd_tests(const char *sim_dll, const wchar_t *win32_path, int *passed,
                   int *failed);

#include "check.h"

static int contains(const char *hay, const char *needle)
{
    return hay && needle && strstr(hay, needle) != NULL;
}

static int signalled(void *h)
{
    return h && WaitForSingleObject((HANDLE)h, 0) == WAIT_OBJECT_0;
}

/* Whether `n` completion records wait in `q`, within 3 s.  scio_op_wait
 * returns once the operation is done, which the core marks just before it
 * queues the record (so a harvest never meets a record of an operation not
 * yet done): right after the wait the record may still be on its way. */
static int queued(scio_queue *q, size_t n)
{
    for (int i = 0; i < 3000 && scio_queue_pending(q) < n; i++)
        Sleep(1);
    return scio_queue_pending(q) >= n;
}

/* Copy a + b into out (cap bytes); 0 if it does not fit. */
static int join(char *out, size_t cap, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 1 > cap)
        return 0;
    memcpy(out, a, la);
    memcpy(out + la, b, lb + 1);
    return 1;
}

static uint32_t state_of(scio_device *d)
{
    uint8_t out[4];
    size_t n = 0;
    scio_status st = scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, out, sizeof out, &n);
    return st == SCIO_SUCCESS && n == 4 ? get32(out) : 0xFFFFFFFFu;
}

static scio_status control(scio_device *d, uint32_t n, const void *in, size_t in_len)
{
    size_t got = 0;
    return scio_ioctl(d, SCIO_VENDOR_CTL_PCSC(n), in, in_len, NULL, 0, &got);
}

/* ECHO 80 EE 00 00 03 AA BB CC 03 under T=1: AA BB CC 90 00. */
static size_t echo_apdu(uint8_t *in)
{
    static const uint8_t apdu[] = { 0x80, 0xEE, 0x00, 0x00, 0x03, 0xAA, 0xBB, 0xCC, 0x03 };
    put32(in, SCIO_PROTOCOL_T1);
    put32(in + 4, SCIO_IO_REQUEST_SIZE);
    memcpy(in + SCIO_IO_REQUEST_SIZE, apdu, sizeof apdu);
    return SCIO_IO_REQUEST_SIZE + sizeof apdu;
}

static int echo_ok(const uint8_t *out, size_t n)
{
    static const uint8_t want[] = { 0xAA, 0xBB, 0xCC, 0x90, 0x00 };
    return n == SCIO_IO_REQUEST_SIZE + sizeof want && get32(out) == SCIO_PROTOCOL_T1 &&
           get32(out + 4) == SCIO_IO_REQUEST_SIZE &&
           memcmp(out + SCIO_IO_REQUEST_SIZE, want, sizeof want) == 0;
}

/* Pop every waiting completion; returns how many, and the status of the
 * one with cookie `user` in *st (left alone if absent). */
static int drain(scio_queue *q, uint64_t user, scio_status *st)
{
    scio_completion c;
    int n = 0;
    while (scio_queue_pop(q, 0, &c) == 1) {
        n++;
        if (c.user == user && st)
            *st = c.status;
    }
    return n;
}

static void load_errors(const char *dir)
{
    char err[512], path[MAX_PATH + 64], sysdir[MAX_PATH];
    scio_device *d = NULL;
    scio_status st;
    UINT n;

    chk_label = "ifd load errors";
    st = scio_open_ifd(NULL, "x", 0, NULL, NULL, &d, err, sizeof err);
    CHECK_ST(st, SCIO_INVALID_PARAMETER);
    CHECK(d == NULL, "no device");

    if (join(path, sizeof path, dir, "no-such-driver.dll")) {
        st = scio_open_ifd(path, "x", 0, NULL, NULL, &d, err, sizeof err);
        CHECK_ST(st, SCIO_DLL_NOT_FOUND);
        CHECK(d == NULL && contains(err, "no-such-driver.dll"), "message names the file: %s", err);
    }

    /* A directory is not a driver. */
    st = scio_open_ifd(dir, "x", 0, NULL, NULL, &d, err, sizeof err);
    CHECK_ST(st, SCIO_INVALID_IMAGE_FORMAT);
    CHECK(d == NULL && contains(err, "not a regular file"), "directory: %s", err);

    /* A file that is not a DLL. */
    {
        char tmp[MAX_PATH], file[MAX_PATH + 64];
        DWORD k = GetTempPathA(MAX_PATH, tmp);
        FILE *f;
        if (k > 0 && k < MAX_PATH &&
            snprintf(file, sizeof file, "%sscardio-not-a-dll-%lu.dll", tmp,
                     (unsigned long)GetCurrentProcessId()) < (int)sizeof file &&
            (f = fopen(file, "wb")) != NULL) {
            fputs("this is not a portable executable\n", f);
            fclose(f);
            st = scio_open_ifd(file, "x", 0, NULL, NULL, &d, err, sizeof err);
            CHECK_ST(st, SCIO_INVALID_IMAGE_FORMAT);
            CHECK(d == NULL && contains(err, "not a loadable driver library"),
                  "not a DLL: %s", err);
            DeleteFileA(file);
        } else {
            CHECK(0, "cannot write a temporary file");
        }
    }

    /* A real DLL without IFDH symbols: kernel32. */
    n = GetSystemDirectoryA(sysdir, MAX_PATH);
    if (n > 0 && n < MAX_PATH && join(path, sizeof path, sysdir, "\\kernel32.dll")) {
        st = scio_open_ifd(path, "x", 0, NULL, NULL, &d, err, sizeof err);
        CHECK_ST(st, SCIO_ENTRYPOINT_NOT_FOUND);
        CHECK(d == NULL && contains(err, "not an IFD handler") &&
              contains(err, "IFDHCreateChannel"), "no IFDH symbols: %s", err);
    } else {
        CHECK(0, "GetSystemDirectory");
    }
}

static void contract(const char *sim_dll)
{
    char err[512];
    uint8_t in[64], out[300];
    size_t n = 0, olen = 0;
    scio_device *d = NULL, *d2 = NULL;
    scio_queue *q;
    scio_op *op = NULL, *op2 = NULL;
    scio_status st, popped;
    const uint8_t *o;
    void *h;

    chk_label = "ifd contract";
    q = scio_queue_new();
    CHECK(q != NULL, "queue");
    if (!q)
        return;
    h = scio_queue_handle(q);
    CHECK(h != NULL, "the IFD queue has an event handle");
    CHECK(scio_queue_fd(q) == -1, "no descriptor on Windows");
    CHECK(!signalled(h), "event clear at start");

    st = scio_open_ifd(sim_dll, "sim:16", 16, q, NULL, &d, err, sizeof err);
    CHECK_ST(st, SCIO_SUCCESS);
    if (st != SCIO_SUCCESS) {
        printf("  open: %s\n", err);
        scio_queue_free(q);
        return;
    }
    CHECK(scio_device_queue(d) == q, "device queue");
    st = scio_open_ifd(sim_dll, "sim:16", 16, q, NULL, &d2, err, sizeof err);
    CHECK_ST(st, SCIO_SHARING_VIOLATION);
    CHECK(d2 == NULL && contains(err, "already open"), "second open: %s", err);

    /* No card. */
    CHECK(state_of(d) == SCIO_STATE_ABSENT, "GET_STATE absent: %lu",
          (unsigned long)state_of(d));
    put32(in, SCIO_COLD_RESET);
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_POWER, in, 4, out, sizeof out, &n), SCIO_NO_MEDIA);
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, in, echo_apdu(in), out, sizeof out, &n),
             SCIO_NO_MEDIA);
    CHECK_ST(scio_ioctl(d, SCIO_CTL_CODE(99), NULL, 0, out, 4, &n),
             SCIO_INVALID_DEVICE_REQUEST);
    put32(in, SCIO_ATTR_VENDOR_NAME);
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_GET_ATTRIBUTE, in, 4, out, sizeof out, &n), SCIO_SUCCESS);
    CHECK(n == strlen(SIM_VENDOR_NAME) && memcmp(out, SIM_VENDOR_NAME, n) == 0,
          "vendor name");
    /* A driver claiming the largest 32-bit DWORD as a length: refused, and
     * the claim reported without wrapping into a negative 32-bit long. */
    put32(in, SIM_EP_GET_CAPABILITIES);
    put32(in + 4, SIM_FAULT_OVERLONG_LENGTH);
    put32(in + 8, 0xFFFFFFFFu);
    CHECK_ST(control(d, SIM_CTL_FAULT, in, 12), SCIO_SUCCESS);
    put32(in, SCIO_ATTR_VENDOR_NAME);
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_GET_ATTRIBUTE, in, 4, out, sizeof out, &n),
             SCIO_DEVICE_DATA_ERROR);
    CHECK(scio_device_driver_code(d) == LONG_MAX, "claimed length as driver code: %ld",
          scio_device_driver_code(d));

    /* IS_PRESENT pends, a second tracking request is busy, insertion
     * completes the first. */
    CHECK_ST(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 7, &op), SCIO_SUCCESS);
    CHECK(op != NULL && scio_op_id(op) != 0, "op");
    CHECK(!scio_op_wait(op, 100), "IS_PRESENT pends without a card");
    CHECK_ST(scio_op_status(op), SCIO_PENDING);
    CHECK_ST(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 8, &op2), SCIO_SUCCESS);
    CHECK(op2 && scio_op_wait(op2, 2000), "second tracking request completes");
    CHECK_ST(scio_op_status(op2), SCIO_DEVICE_BUSY);
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, NULL, 0, &n), SCIO_DEVICE_BUSY);
    scio_op_release(op2);
    op2 = NULL;
    CHECK(!scio_op_done(op), "still pending");
    CHECK_ST(control(d, SIM_CTL_INSERT, NULL, 0), SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 3000), "IS_PRESENT completes on insertion");
    CHECK_ST(scio_op_status(op), SCIO_SUCCESS);
    CHECK(queued(q, 1), "completion queued");
    CHECK(signalled(h), "event set while a completion waits");
    popped = SCIO_PENDING;
    CHECK(drain(q, 7, &popped) >= 1, "popped");
    CHECK_ST(popped, SCIO_SUCCESS);
    CHECK(!signalled(h), "event clear once popped");
    scio_op_release(op);
    op = NULL;

    /* Connect: POWER, SET_PROTOCOL, TRANSMIT. */
    CHECK(state_of(d) == SCIO_STATE_SWALLOWED, "GET_STATE swallowed: %lu",
          (unsigned long)state_of(d));
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, NULL, 0, &n), SCIO_SUCCESS);
    put32(in, SCIO_COLD_RESET);
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_POWER, in, 4, out, sizeof out, &n), SCIO_SUCCESS);
    CHECK(n == SIM_ATR_T1_LEN && out[0] == 0x3B, "ATR of %lu bytes", (unsigned long)n);
    CHECK(state_of(d) >= SCIO_STATE_NEGOTIABLE, "powered");
    put32(in, SCIO_PROTOCOL_T1);
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_SET_PROTOCOL, in, 4, out, sizeof out, &n), SCIO_SUCCESS);
    CHECK(n == 4 && get32(out) == SCIO_PROTOCOL_T1, "T=1 chosen");
    CHECK(state_of(d) == SCIO_STATE_SPECIFIC, "specific");
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, in, echo_apdu(in), out, sizeof out, &n),
             SCIO_SUCCESS);
    CHECK(echo_ok(out, n), "echo response (%lu bytes)", (unsigned long)n);
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, in, echo_apdu(in), out, 8 + 2, &n),
             SCIO_BUFFER_TOO_SMALL);
    CHECK_ST(scio_submit(d, SCIO_IOCTL_TRANSMIT, in, echo_apdu(in), sizeof out, 9, &op),
             SCIO_SUCCESS);
    CHECK(op && scio_op_wait(op, 3000), "overlapped transmit completes");
    CHECK_ST(scio_op_status(op), SCIO_SUCCESS);
    o = scio_op_output(op, &olen);
    CHECK(o && echo_ok(o, olen), "overlapped echo (%lu bytes)", (unsigned long)olen);
    popped = SCIO_PENDING;
    CHECK(drain(q, 9, &popped) == 1, "one completion");
    CHECK_ST(popped, SCIO_SUCCESS);
    scio_op_release(op);
    op = NULL;

    /* Cancel a pending IS_ABSENT. */
    CHECK_ST(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 10, &op), SCIO_SUCCESS);
    CHECK(!scio_op_wait(op, 100), "IS_ABSENT pends with a card");
    scio_op_cancel(op);
    CHECK(scio_op_wait(op, 3000), "cancel completes it");
    CHECK_ST(scio_op_status(op), SCIO_CANCELLED);
    popped = SCIO_PENDING;
    CHECK(drain(q, 10, &popped) == 1, "cancelled completion queued");
    CHECK_ST(popped, SCIO_CANCELLED);
    scio_op_release(op);
    op = NULL;

    /* Removal completes IS_ABSENT. */
    CHECK_ST(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 11, &op), SCIO_SUCCESS);
    CHECK(!scio_op_wait(op, 50), "IS_ABSENT pends");
    CHECK_ST(control(d, SIM_CTL_REMOVE, NULL, 0), SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 3000), "IS_ABSENT completes on removal");
    CHECK_ST(scio_op_status(op), SCIO_SUCCESS);
    CHECK(state_of(d) == SCIO_STATE_ABSENT, "absent again");
    scio_op_release(op);
    op = NULL;
    drain(q, 0, NULL);

    /* scio_queue_wake */
    scio_queue_wake(q);
    CHECK(signalled(h), "event set by a wake");
    {
        scio_completion c;
        CHECK(scio_queue_pop(q, 1000, &c) == -1, "wake pops -1");
        CHECK(scio_queue_pop(q, 0, &c) == 0, "then empty");
    }
    CHECK(!signalled(h), "event clear after the wake");

    /* Close with a pending operation: it completes as cancelled. */
    CHECK_ST(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 12, &op), SCIO_SUCCESS);
    CHECK(!scio_op_wait(op, 50), "IS_PRESENT pends");
    scio_close(d);
    d = NULL;
    CHECK(scio_op_done(op), "closed: the pending op is done");
    CHECK_ST(scio_op_status(op), SCIO_CANCELLED);
    popped = SCIO_PENDING;
    CHECK(drain(q, 12, &popped) == 1, "its completion is queued");
    CHECK_ST(popped, SCIO_CANCELLED);
    scio_op_release(op);
    op = NULL;

    /* The LUN is free again; shutdown keeps the device allocated. */
    st = scio_open_ifd(sim_dll, "sim:16", 16, NULL, NULL, &d, err, sizeof err);
    CHECK_ST(st, SCIO_SUCCESS);
    if (st == SCIO_SUCCESS) {
        scio_queue *pq = scio_device_queue(d);
        CHECK(pq != NULL && pq != q && scio_queue_handle(pq) != NULL, "private queue");
        CHECK_ST(control(d, SIM_CTL_INSERT, NULL, 0), SCIO_SUCCESS);
        CHECK_ST(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 13, &op), SCIO_SUCCESS);
        scio_shutdown(d);
        CHECK(op && scio_op_done(op), "shutdown completes pending ops");
        CHECK_ST(scio_op_status(op), SCIO_CANCELLED);
        CHECK_ST(scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, out, 4, &n),
                 SCIO_DEVICE_NOT_CONNECTED);
        CHECK_ST(scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 14, &op2),
                 SCIO_DEVICE_NOT_CONNECTED);
        CHECK(op2 == NULL, "no op after shutdown");
        scio_shutdown(d); /* idempotent */
        scio_op_release(op);
        op = NULL;
        scio_close(d);
        d = NULL;
    }
    scio_queue_free(q);
}

/* Both kinds in one process: a Windows-path device and an IFD device, each
 * with its queue, used alternately through the same public names; then
 * scio_shutdown on the Windows-path device. */
static void mixed(const char *sim_dll, const wchar_t *win32_path)
{
    char err[512];
    uint8_t out[8];
    size_t n = 0;
    scio_device *di = NULL, *dw = NULL;
    scio_op *op = NULL, *opw = NULL;
    scio_status st;

    chk_label = "ifd mixed";
    st = scio_open_ifd(sim_dll, "sim:32", 32, NULL, NULL, &di, err, sizeof err);
    CHECK_ST(st, SCIO_SUCCESS);
    if (st != SCIO_SUCCESS)
        return;
    CHECK_ST(scio_submit(di, SCIO_IOCTL_GET_STATE, NULL, 0, sizeof out, 1, &op), SCIO_SUCCESS);
    CHECK(op && scio_op_wait(op, 3000), "overlapped GET_STATE");
    CHECK_ST(scio_op_status(op), SCIO_SUCCESS);
    CHECK(scio_op_driver_code(op) == 0, "no driver code on success");
    scio_op_release(op);
    CHECK_ST(scio_ioctl(di, SCIO_IOCTL_TRANSMIT, NULL, 0, out, sizeof out, &n),
             SCIO_INVALID_PARAMETER);
    (void)scio_device_driver_code(di);
    scio_cancel_all(di);

    st = win32_path ? scio_open_win32(win32_path, NULL, &dw, err, sizeof err)
                    : SCIO_NO_SUCH_DEVICE;
    CHECK_ST(st, SCIO_SUCCESS);
    if (st == SCIO_SUCCESS) {
        uint32_t s = state_of(dw), ds = state_of(di);
        /* Wait for the change that is not due: it pends. */
        uint32_t code = s <= SCIO_STATE_ABSENT ? SCIO_IOCTL_IS_PRESENT : SCIO_IOCTL_IS_ABSENT;
        CHECK(s <= SCIO_STATE_SPECIFIC && ds == SCIO_STATE_ABSENT, "both answer GET_STATE");
        CHECK(scio_device_queue(dw) != scio_device_queue(di), "one queue each");
        CHECK(scio_queue_handle(scio_device_queue(dw)) != NULL, "Windows queue event");
        CHECK_ST(scio_submit(dw, code, NULL, 0, 0, 2, &opw), SCIO_SUCCESS);
        CHECK(opw && !scio_op_wait(opw, 50), "Windows-path tracking request pends");
        scio_shutdown(dw);
        CHECK(opw && scio_op_wait(opw, 0), "shutdown completed it");
        CHECK_ST(scio_op_status(opw), SCIO_CANCELLED);
        CHECK_ST(scio_ioctl(dw, SCIO_IOCTL_GET_STATE, NULL, 0, out, 4, &n),
                 SCIO_DEVICE_NOT_CONNECTED);
        op = NULL;
        CHECK_ST(scio_submit(dw, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 3, &op),
                 SCIO_DEVICE_NOT_CONNECTED);
        CHECK(op == NULL, "no op after shutdown");
        scio_shutdown(dw); /* idempotent */
        scio_cancel_all(dw);
        CHECK(state_of(di) == SCIO_STATE_ABSENT, "the IFD device is unaffected");
        scio_op_release(opw);
        scio_close(dw);
    }
    scio_close(di);
}

/* Open a Windows path, retrying while the driver has not yet seen an
 * earlier close of the same (exclusive) reader. */
static scio_status open_win32_retry(const wchar_t *path, scio_queue *q,
                                    scio_device **d, char *err, size_t errlen)
{
    scio_status st = SCIO_UNSUCCESSFUL;
    int i;
    for (i = 0; i < 40; i++) {
        st = scio_open_win32(path, q, d, err, errlen);
        if (st != SCIO_SHARING_VIOLATION)
            break;
        Sleep(50);
    }
    return st;
}

/* A tracking request on the Windows-path device that pends, and the vendor
 * control (SCIO_VENDOR_CTL_WIN) that completes it. */
static void pending_tracking(scio_device *d, uint32_t *code, uint32_t *ctl)
{
    uint32_t s = state_of(d);
    *code = s <= SCIO_STATE_ABSENT ? SCIO_IOCTL_IS_PRESENT : SCIO_IOCTL_IS_ABSENT;
    *ctl = s <= SCIO_STATE_ABSENT ? SIM_CTL_INSERT : SIM_CTL_REMOVE;
}

/* One queue for both backends.  Its event is signalled exactly while
 * completions wait: not while requests are only pending, still while one
 * of two completions waits, not once the last is popped or its operation
 * released; and WaitForMultipleObjects on it beside another event wakes
 * for the completion (the Monitor's and aio's waiting pattern). */
static void shared_queue(const char *sim_dll, const wchar_t *win32_path)
{
    char err[512];
    scio_queue *q = scio_queue_new();
    scio_device *di = NULL, *dw = NULL;
    scio_op *oi = NULL, *ow = NULL;
    scio_completion c;
    HANDLE h, other, both[2];
    uint32_t code, ctl;
    int r, seen = 0;
    size_t n;
    DWORD w;

    chk_label = "shared queue";
    CHECK(q != NULL, "queue");
    if (!q)
        return;
    h = (HANDLE)scio_queue_handle(q);
    CHECK(h != NULL && !signalled(h), "an event, clear at start");
    CHECK_ST(scio_open_ifd(sim_dll, "sim:48", 48, q, NULL, &di, err, sizeof err),
             SCIO_SUCCESS);
    CHECK_ST(win32_path ? open_win32_retry(win32_path, q, &dw, err, sizeof err)
                        : SCIO_NO_SUCH_DEVICE, SCIO_SUCCESS);
    if (!di || !dw)
        goto out;
    CHECK(scio_device_queue(di) == q && scio_device_queue(dw) == q,
          "both devices complete into the shared queue");

    /* Two completions, popped one at a time. */
    CHECK_ST(scio_submit(di, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 1, &oi), SCIO_SUCCESS);
    CHECK_ST(scio_submit(dw, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 2, &ow), SCIO_SUCCESS);
    CHECK(oi && ow && scio_op_wait(oi, 3000) && scio_op_wait(ow, 3000), "both complete");
    CHECK(queued(q, 2) && signalled(h) && scio_queue_pending(q) == 2,
          "signalled: two completions wait");
    r = scio_queue_pop(q, 0, &c);
    CHECK(r == 1, "first pop");
    seen |= r == 1 ? (int)c.user : 0;
    CHECK(signalled(h), "still signalled: one completion waits");
    r = scio_queue_pop(q, 0, &c);
    CHECK(r == 1, "second pop");
    seen |= r == 1 ? (int)c.user : 0;
    CHECK(seen == 3, "one completion from each backend (%d)", seen);
    CHECK(!signalled(h), "clear once the queue is empty");
    scio_op_release(oi);
    scio_op_release(ow);
    oi = ow = NULL;

    /* A completion whose operation is released unpopped is dropped. */
    CHECK_ST(scio_submit(dw, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 3, &ow), SCIO_SUCCESS);
    CHECK(ow && scio_op_wait(ow, 3000) && queued(q, 1) && signalled(h),
          "signalled by the completion");
    scio_op_release(ow);
    ow = NULL;
    CHECK(!signalled(h) && scio_queue_pending(q) == 0, "clear: the released op's record went");

    /* Pending requests leave it clear; each completion signals it, seen by
     * WaitForMultipleObjects beside an unrelated event. */
    other = CreateEventW(NULL, TRUE, FALSE, NULL);
    CHECK(other != NULL, "another event");
    both[0] = other;
    both[1] = h;
    CHECK_ST(control(di, SIM_CTL_REMOVE, NULL, 0), SCIO_SUCCESS);
    CHECK_ST(scio_submit(di, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 4, &oi), SCIO_SUCCESS);
    pending_tracking(dw, &code, &ctl);
    CHECK_ST(scio_submit(dw, code, NULL, 0, 0, 5, &ow), SCIO_SUCCESS);
    CHECK(oi && ow && !scio_op_wait(oi, 100) && !scio_op_done(ow), "both pend");
    CHECK(!signalled(h), "clear while requests are only pending");
    CHECK_ST(control(di, SIM_CTL_INSERT, NULL, 0), SCIO_SUCCESS);
    w = other ? WaitForMultipleObjects(2, both, FALSE, 3000) : WAIT_FAILED;
    CHECK(w == WAIT_OBJECT_0 + 1, "WaitForMultipleObjects wakes for the IFD completion (%lu)",
          (unsigned long)w);
    r = scio_queue_pop(q, 0, &c);
    CHECK(r == 1 && c.user == 4 && c.status == SCIO_SUCCESS, "the IFD arrival");
    CHECK(!signalled(h), "clear again while the other request pends");
    CHECK_ST(scio_ioctl(dw, SCIO_VENDOR_CTL_WIN(ctl), NULL, 0, NULL, 0, &n), SCIO_SUCCESS);
    w = other ? WaitForMultipleObjects(2, both, FALSE, 5000) : WAIT_FAILED;
    CHECK(w == WAIT_OBJECT_0 + 1, "and for the Windows-path completion (%lu)", (unsigned long)w);
    r = scio_queue_pop(q, 0, &c);
    CHECK(r == 1 && c.user == 5 && c.status == SCIO_SUCCESS, "the Windows-path change");
    CHECK(!signalled(h), "clear once both are popped");
    if (other)
        CloseHandle(other);
out:
    scio_op_release(oi);
    scio_op_release(ow);
    if (di)
        scio_close(di);
    if (dw)
        scio_close(dw);
    scio_queue_free(q);
}

void run_ifd_tests(const char *sim_dll, const wchar_t *win32_path, int *passed,
                   int *failed)
{
    char dir[MAX_PATH + 2];
    const char *slash = strrchr(sim_dll, '\\');
    size_t len = slash ? (size_t)(slash - sim_dll) + 1 : 0; /* with the '\\' */

    chk_pass = chk_fail = 0;
    if (len + 1 > sizeof dir) {
        CHECK(0, "path too long: %s", sim_dll);
    } else {
        if (len) {
            memcpy(dir, sim_dll, len);
            dir[len] = '\0';
        } else {
            memcpy(dir, ".\\", 3);
        }
        load_errors(dir);
        contract(sim_dll);
        mixed(sim_dll, win32_path);
        shared_queue(sim_dll, win32_path);
    }
    *passed = chk_pass;
    *failed = chk_fail;
}
