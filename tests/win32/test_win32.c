/*
 * test_win32.c - contract tests of the scio Windows backend against the
 * simulated reader driver (tests/win32/simdrv), run under Wine by
 * run-wine.sh (or on a test-signing Windows with the driver installed).
 *
 *   test_win32.exe [--legacy \\.\ScardioSim0] [--timing N] [--wait-discovery S]
 *
 * Runs the contract once on the legacy device opened by name and once on the
 * PnP device found through the smart-card reader interface GUID, then the
 * multi-device close test and a timing of synchronous vs overlapped
 * GET_STATE.  Then the IFD-handler half of the same build
 * (test_win32_ifd.c) drives the simulated reader DLL through scio_open_ifd,
 * by default libscardio_sim.dll next to this program (--sim PATH).
 * Prints "N passed, M failed" (both parts); exits 1 on any failure.
 */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "scio.h"
#include "scio_win32_discover.h"
#include "sim_protocol.h"

void run_ifd_tests(const char *sim_dll, const wchar_t *win32_path, int *passed,
                   int *failed);

#include "check.h"

static double now_us(void)
{
    static LARGE_INTEGER freq;
    LARGE_INTEGER t;
    if (!freq.QuadPart)
        QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&t);
    return (double)t.QuadPart * 1e6 / (double)freq.QuadPart;
}

static scio_status get_state(scio_device *d, uint32_t *state)
{
    uint8_t b[4];
    size_t n = 0;
    scio_status st = scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, b, 4, &n);
    *state = (st == SCIO_SUCCESS && n == 4) ? get32(b) : 0xFFFFFFFFu;
    return st;
}

static scio_status ioctl_u32(scio_device *d, uint32_t code, uint32_t arg,
                             uint8_t *out, size_t cap, size_t *n)
{
    uint8_t in[4];
    put32(in, arg);
    return scio_ioctl(d, code, in, 4, out, cap, n);
}

static scio_status sim_insert(scio_device *d, const uint8_t *in, size_t len)
{
    size_t n;
    return scio_ioctl(d, SCIO_VENDOR_CTL_WIN(SIM_CTL_INSERT), in, len, NULL, 0, &n);
}

static scio_status sim_remove(scio_device *d)
{
    size_t n;
    return scio_ioctl(d, SCIO_VENDOR_CTL_WIN(SIM_CTL_REMOVE), NULL, 0, NULL, 0, &n);
}

static int wait_signalled(void *h, DWORD ms)
{
    return WaitForSingleObject((HANDLE)h, ms) == WAIT_OBJECT_0;
}

/* Transmit one APDU; returns status, fills resp (without the 8-byte header)
 * and checks the header. */
static scio_status transmit(scio_device *d, uint32_t proto, const uint8_t *apdu,
                            size_t alen, uint8_t *resp, size_t rcap, size_t *rlen)
{
    uint8_t *in = (uint8_t *)malloc(8 + alen);
    uint8_t *out = (uint8_t *)malloc(8 + rcap);
    size_t n = 0;
    scio_status st;
    *rlen = 0;
    if (!in || !out) {
        free(in);
        free(out);
        return SCIO_NO_MEMORY;
    }
    put32(in, proto);
    put32(in + 4, 8);
    memcpy(in + 8, apdu, alen);
    st = scio_ioctl(d, SCIO_IOCTL_TRANSMIT, in, 8 + alen, out, 8 + rcap, &n);
    if (st == SCIO_SUCCESS) {
        CHECK(n >= 8, "transmit output %u < 8", (unsigned)n);
        if (n >= 8) {
            CHECK(get32(out) == proto, "transmit header protocol %lu",
                  (unsigned long)get32(out));
            CHECK(get32(out + 4) == 8, "transmit header length");
            if (n - 8 <= rcap) {
                memcpy(resp, out + 8, n - 8);
                *rlen = n - 8;
            }
        }
    }
    free(in);
    free(out);
    return st;
}

static int running_on_wine(void)
{
    HMODULE nt = GetModuleHandleW(L"ntdll.dll");
    return nt && GetProcAddress(nt, "wine_get_version") != NULL;
}

static int contains(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

/* Open, retrying while the driver has not yet seen the previous close. */
static scio_status open_retry(const wchar_t *path, scio_queue *q,
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

/* ---- the contract ------------------------------------------------------- */

static void run_contract(const wchar_t *path, const char *label, uint32_t unit)
{
    static const uint8_t atr_t1[] = SIM_ATR_T1;
    static const uint8_t atr_t0[] = SIM_ATR_T0;
    char err[1024];
    scio_queue *q;
    scio_device *d = NULL, *d2 = NULL;
    scio_status st;
    scio_op *op, *op2;
    scio_completion c;
    uint8_t out[300];
    uint8_t big[8 + 600];
    size_t n;
    uint32_t state;
    double t0;
    int r;

    chk_label = label;
    printf("== contract on %s\n", label);
    q = scio_queue_new();
    CHECK(q != NULL, "scio_queue_new");
    if (!q)
        return;
    CHECK(scio_queue_fd(q) == -1, "queue fd on Windows");
    CHECK(scio_queue_handle(q) != NULL, "queue handle");

    st = open_retry(path, q, &d, err, sizeof(err));
    CHECK_ST(st, SCIO_SUCCESS);
    if (st != SCIO_SUCCESS) {
        printf("   open failed: %s\n", err);
        scio_queue_free(q);
        return;
    }
    CHECK(scio_device_queue(d) == q, "device queue");

    /* Exclusive reader: a second open is a sharing violation that names
     * the Smart Card service and how to stop it.  Wine 8 does not wait for
     * the driver's IRP_MJ_CREATE (the open succeeds whatever the driver
     * says), so there only the message test in main() covers this. */
    st = scio_open_win32(path, q, &d2, err, sizeof(err));
    if (running_on_wine()) {
        if (st == SCIO_SUCCESS)
            scio_close(d2);
    } else {
        CHECK_ST(st, SCIO_SHARING_VIOLATION);
        CHECK(d2 == NULL, "no device on failure");
        CHECK(contains(err, "SCardSvr") && contains(err, "net stop SCardSvr"),
              "sharing message: %s", err);
    }

    /* No card. */
    CHECK_ST(sim_remove(d), SCIO_SUCCESS);
    CHECK_ST(get_state(d, &state), SCIO_SUCCESS);
    CHECK(state == SCIO_STATE_ABSENT, "state %lu, expected ABSENT", (unsigned long)state);
    st = scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, out, 2, &n);
    CHECK_ST(st, SCIO_BUFFER_TOO_SMALL);
    CHECK(n == 0, "no bytes on failure");
    CHECK(scio_device_driver_code(d) == ERROR_INSUFFICIENT_BUFFER,
          "driver code %ld", scio_device_driver_code(d));

    /* Attributes. */
    st = ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_VENDOR_NAME, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_SUCCESS);
    CHECK(n == strlen(SIM_VENDOR_NAME) && memcmp(out, SIM_VENDOR_NAME, n) == 0,
          "vendor name (%u bytes)", (unsigned)n);
    st = ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_VENDOR_IFD_TYPE, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_SUCCESS);
    CHECK(n == strlen(SIM_IFD_TYPE) && memcmp(out, SIM_IFD_TYPE, n) == 0, "ifd type");
    st = ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_DEVICE_UNIT, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_SUCCESS);
    CHECK(n == 4 && get32(out) == unit, "device unit %lu, expected %lu",
          (unsigned long)(n == 4 ? get32(out) : 0xFFFFFFFFu), (unsigned long)unit);
    st = ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_CHARACTERISTICS, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_SUCCESS);
    CHECK(n == 4 && get32(out) == 0, "characteristics");
    st = ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_CURRENT_PROTOCOL_TYPE, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_SUCCESS);
    CHECK(n == 4 && get32(out) == 0, "no protocol yet");
    st = ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_ATR_STRING, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_NO_MEDIA);
    st = ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_VENDOR_NAME, out, 3, &n);
    CHECK_ST(st, SCIO_BUFFER_TOO_SMALL);
    st = ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, 0x00012345u, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_NOT_SUPPORTED);
    st = scio_ioctl(d, SCIO_IOCTL_GET_ATTRIBUTE, NULL, 0, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_INVALID_PARAMETER);

    st = ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_NO_MEDIA);
    CHECK(scio_device_driver_code(d) == ERROR_NO_MEDIA_IN_DRIVE, "NO_MEDIA is ERROR_NO_MEDIA_IN_DRIVE (%ld)",
          scio_device_driver_code(d));

    /* Already true: completes at once. */
    st = scio_ioctl(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, NULL, 0, &n);
    CHECK_ST(st, SCIO_SUCCESS);

    /* IS_PRESENT pends until an insertion. */
    CHECK(!wait_signalled(scio_queue_handle(q), 0), "queue event clear at start");
    st = scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 101, &op);
    CHECK_ST(st, SCIO_SUCCESS);
    if (st == SCIO_SUCCESS) {
        CHECK(scio_op_wait(op, 150) == 0, "IS_PRESENT pends");
        CHECK_ST(scio_op_status(op), SCIO_PENDING);
        CHECK(scio_op_output(op, &n) == NULL && n == 0, "no output while pending");
        CHECK(scio_queue_pending(q) == 0, "nothing queued");
        /* A synchronous call meanwhile completes normally (no packet of
         * it reaches the completion port). */
        CHECK_ST(get_state(d, &state), SCIO_SUCCESS);
        CHECK(state == SCIO_STATE_ABSENT, "state while waiting");
        CHECK_ST(sim_insert(d, NULL, 0), SCIO_SUCCESS);
        CHECK(scio_op_wait(op, 5000) == 1, "IS_PRESENT completes on insertion");
        CHECK_ST(scio_op_status(op), SCIO_SUCCESS);
        CHECK(scio_op_done(op) == 1, "done");
        CHECK(scio_op_driver_code(op) == 0, "no driver code on success");
        CHECK(wait_signalled(scio_queue_handle(q), 0), "queue event set while a completion waits");
        CHECK(scio_queue_pending(q) == 1, "one completion waiting");
        r = scio_queue_pop(q, 1000, &c);
        CHECK(r == 1, "pop %d", r);
        CHECK(c.op_id == scio_op_id(op) && c.user == 101 && c.status == SCIO_SUCCESS,
              "completion %llu/%llu %s", (unsigned long long)c.op_id,
              (unsigned long long)c.user, sname(c.status));
        CHECK(!wait_signalled(scio_queue_handle(q), 0), "queue event clear once popped");
        scio_op_release(op);
    }

    CHECK_ST(get_state(d, &state), SCIO_SUCCESS);
    CHECK(state == SCIO_STATE_SWALLOWED, "state %lu, expected SWALLOWED", (unsigned long)state);
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, NULL, 0, &n), SCIO_SUCCESS);
    st = ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_ATR_STRING, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_INVALID_DEVICE_STATE);

    /* POWER */
    st = ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 4, &n);
    CHECK_ST(st, SCIO_BUFFER_TOO_SMALL);
    st = ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, SCIO_MAX_ATR, &n);
    CHECK_ST(st, SCIO_SUCCESS);
    CHECK(n == sizeof(atr_t1) && memcmp(out, atr_t1, n) == 0, "cold reset ATR (%u bytes)", (unsigned)n);
    CHECK_ST(get_state(d, &state), SCIO_SUCCESS);
    CHECK(state == SCIO_STATE_NEGOTIABLE, "state %lu, expected NEGOTIABLE", (unsigned long)state);
    st = ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_ATR_STRING, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_SUCCESS);
    CHECK(n == sizeof(atr_t1) && memcmp(out, atr_t1, n) == 0, "ATR attribute");
    st = ioctl_u32(d, SCIO_IOCTL_POWER, 7, out, SCIO_MAX_ATR, &n);
    CHECK_ST(st, SCIO_INVALID_PARAMETER);

    /* TRANSMIT before SET_PROTOCOL */
    {
        static const uint8_t echo[] = { 0x80, 0xEE, 0x00, 0x00, 0x03, 1, 2, 3, 0x03 };
        st = transmit(d, SCIO_PROTOCOL_T1, echo, sizeof(echo), out, sizeof(out), &n);
        CHECK_ST(st, SCIO_INVALID_DEVICE_STATE);
    }

    /* SET_PROTOCOL */
    st = ioctl_u32(d, SCIO_IOCTL_SET_PROTOCOL, SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1, out, 2, &n);
    CHECK_ST(st, SCIO_BUFFER_TOO_SMALL);
    st = ioctl_u32(d, SCIO_IOCTL_SET_PROTOCOL, SCIO_PROTOCOL_T0, out, 4, &n);
    CHECK_ST(st, SCIO_NOT_SUPPORTED);
    st = ioctl_u32(d, SCIO_IOCTL_SET_PROTOCOL, SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1, out, 4, &n);
    CHECK_ST(st, SCIO_SUCCESS);
    CHECK(n == 4 && get32(out) == SCIO_PROTOCOL_T1, "T=1 chosen");
    CHECK_ST(get_state(d, &state), SCIO_SUCCESS);
    CHECK(state == SCIO_STATE_SPECIFIC, "state %lu, expected SPECIFIC", (unsigned long)state);
    st = ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_CURRENT_PROTOCOL_TYPE, out, sizeof(out), &n);
    CHECK(st == SCIO_SUCCESS && n == 4 && get32(out) == SCIO_PROTOCOL_T1, "current protocol T=1");

    /* TRANSMIT: short, extended, too small, wrong protocol, overlapped. */
    {
        static const uint8_t echo[] = { 0x80, 0xEE, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0x05 };
        static const uint8_t sel_mf[] = { 0x00, 0xA4, 0x00, 0x00, 0x02, 0x3F, 0x00 };
        static const uint8_t expect[] = { 1, 2, 3, 4, 5, 0x90, 0x00 };
        uint8_t apdu[7 + 300 + 2];
        size_t i;
        int okx = 1;

        st = transmit(d, SCIO_PROTOCOL_T1, echo, sizeof(echo), out, sizeof(out), &n);
        CHECK_ST(st, SCIO_SUCCESS);
        CHECK(n == sizeof(expect) && memcmp(out, expect, n) == 0, "echo response (%u bytes)", (unsigned)n);
        st = transmit(d, SCIO_PROTOCOL_T1, sel_mf, sizeof(sel_mf), out, sizeof(out), &n);
        CHECK_ST(st, SCIO_SUCCESS);
        CHECK(n >= 2 && out[n - 2] == 0x90 && out[n - 1] == 0x00, "SELECT MF answers 9000");

        /* extended: 300 bytes in, 300 bytes back */
        apdu[0] = 0x80; apdu[1] = 0xEE; apdu[2] = 0; apdu[3] = 0;
        apdu[4] = 0; apdu[5] = 0x01; apdu[6] = 0x2C;
        for (i = 0; i < 300; i++)
            apdu[7 + i] = (uint8_t)(i * 7);
        apdu[307] = 0x01; apdu[308] = 0x2C;
        {
            uint8_t *resp = (uint8_t *)malloc(400);
            if (resp) {
                st = transmit(d, SCIO_PROTOCOL_T1, apdu, sizeof(apdu), resp, 400, &n);
                CHECK_ST(st, SCIO_SUCCESS);
                if (n != 302)
                    okx = 0;
                for (i = 0; okx && i < 300; i++)
                    if (resp[i] != (uint8_t)(i * 7))
                        okx = 0;
                CHECK(okx && resp[300] == 0x90 && resp[301] == 0x00,
                      "extended echo (%u bytes)", (unsigned)n);
                st = transmit(d, SCIO_PROTOCOL_T1, apdu, sizeof(apdu), resp, 100, &n);
                CHECK_ST(st, SCIO_BUFFER_TOO_SMALL);
                free(resp);
            }
        }
        st = transmit(d, SCIO_PROTOCOL_T0, echo, sizeof(echo), out, sizeof(out), &n);
        CHECK_ST(st, SCIO_INVALID_DEVICE_STATE);

        /* overlapped TRANSMIT: the operation owns the output */
        put32(big, SCIO_PROTOCOL_T1);
        put32(big + 4, 8);
        memcpy(big + 8, echo, sizeof(echo));
        st = scio_submit(d, SCIO_IOCTL_TRANSMIT, big, 8 + sizeof(echo), 64, 202, &op);
        CHECK_ST(st, SCIO_SUCCESS);
        if (st == SCIO_SUCCESS) {
            const uint8_t *o;
            r = scio_queue_pop(q, 5000, &c);
            CHECK(r == 1 && c.user == 202 && c.status == SCIO_SUCCESS, "overlapped transmit completion");
            o = scio_op_output(op, &n);
            CHECK(o != NULL && n == 8 + sizeof(expect) && memcmp(o + 8, expect, sizeof(expect)) == 0,
                  "overlapped transmit output (%u bytes)", (unsigned)n);
            scio_op_release(op);
        }
        /* overlapped, output buffer too small */
        st = scio_submit(d, SCIO_IOCTL_TRANSMIT, big, 8 + sizeof(echo), 10, 203, &op);
        CHECK_ST(st, SCIO_SUCCESS);
        if (st == SCIO_SUCCESS) {
            r = scio_queue_pop(q, 5000, &c);
            CHECK(r == 1 && c.user == 203, "completion of a too-small transmit");
            CHECK_ST(c.status, SCIO_BUFFER_TOO_SMALL);
            scio_op_output(op, &n);
            CHECK(n == 0, "no output on failure");
            CHECK(scio_op_driver_code(op) == ERROR_INSUFFICIENT_BUFFER, "op driver code %ld",
                  scio_op_driver_code(op));
            scio_op_release(op);
            CHECK(scio_queue_pop(q, 200, &c) == 0, "exactly one completion for a synchronous failure");
        }
    }

    /* POWER warm and down */
    st = ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_WARM_RESET, out, SCIO_MAX_ATR, &n);
    CHECK_ST(st, SCIO_SUCCESS);
    CHECK(n == sizeof(atr_t1) && memcmp(out, atr_t1, n) == 0, "warm reset ATR");
    CHECK_ST(get_state(d, &state), SCIO_SUCCESS);
    CHECK(state == SCIO_STATE_NEGOTIABLE, "state after warm reset %lu", (unsigned long)state);
    st = ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_POWER_DOWN, NULL, 0, &n);
    CHECK_ST(st, SCIO_SUCCESS);
    CHECK_ST(get_state(d, &state), SCIO_SUCCESS);
    CHECK(state == SCIO_STATE_SWALLOWED, "state after power down %lu", (unsigned long)state);

    /* Unknown and unsupported IOCTLs */
    st = scio_ioctl(d, SCIO_CTL_CODE(99), NULL, 0, out, sizeof(out), &n);
    CHECK_ST(st, SCIO_INVALID_DEVICE_REQUEST);
    CHECK(scio_device_driver_code(d) == ERROR_INVALID_FUNCTION, "driver code %ld",
          scio_device_driver_code(d));
    st = scio_ioctl(d, SCIO_IOCTL_EJECT, NULL, 0, NULL, 0, &n);
    CHECK_ST(st, SCIO_NOT_SUPPORTED);
    st = scio_submit(d, SCIO_CTL_CODE(98), NULL, 0, 16, 301, &op);
    CHECK_ST(st, SCIO_SUCCESS);
    if (st == SCIO_SUCCESS) {
        r = scio_queue_pop(q, 5000, &c);
        CHECK(r == 1 && c.user == 301, "unknown IOCTL completion");
        CHECK_ST(c.status, SCIO_INVALID_DEVICE_REQUEST);
        scio_op_release(op);
        CHECK(scio_queue_pop(q, 200, &c) == 0, "no duplicate completion");
    }

    /* Second tracking request: DEVICE_BUSY; removal completes the first. */
    st = scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 401, &op);
    CHECK_ST(st, SCIO_SUCCESS);
    st = scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 402, &op2);
    CHECK_ST(st, SCIO_SUCCESS);
    if (op && op2) {
        CHECK(scio_op_wait(op2, 5000) == 1, "second tracking request completes");
        CHECK_ST(scio_op_status(op2), SCIO_DEVICE_BUSY);
        CHECK(scio_op_done(op) == 0, "first still pending");
        r = scio_queue_pop(q, 1000, &c);
        CHECK(r == 1 && c.user == 402 && c.status == SCIO_DEVICE_BUSY, "busy completion");
        scio_op_release(op2);
        st = scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 403, &op2);
        if (st == SCIO_SUCCESS) {
            r = scio_queue_pop(q, 5000, &c);
            CHECK(r == 1 && c.user == 403, "IS_PRESENT with a card: at once (or busy)");
            CHECK(c.status == SCIO_SUCCESS, "IS_PRESENT with a card present: %s", sname(c.status));
        }
        t0 = now_us();
        CHECK_ST(sim_remove(d), SCIO_SUCCESS);
        CHECK(scio_op_wait(op, 5000) == 1, "IS_ABSENT completes on removal");
        CHECK_ST(scio_op_status(op), SCIO_SUCCESS);
        r = scio_queue_pop(q, 1000, &c);
        CHECK(r == 1 && c.user == 401 && c.status == SCIO_SUCCESS, "removal completion");
        printf("   removal seen after %.0f us\n", now_us() - t0);
    }
    scio_op_release(op);
    scio_op_release(op2);

    /* Cancel a pending wait. */
    st = scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 501, &op);
    CHECK_ST(st, SCIO_SUCCESS);
    if (st == SCIO_SUCCESS) {
        CHECK(scio_op_wait(op, 100) == 0, "pending");
        scio_op_cancel(op);
        CHECK(scio_op_wait(op, 5000) == 1, "cancel completes");
        CHECK_ST(scio_op_status(op), SCIO_CANCELLED);
        CHECK(scio_op_driver_code(op) == ERROR_OPERATION_ABORTED, "cancelled is ERROR_OPERATION_ABORTED (%ld)",
              scio_op_driver_code(op));
        r = scio_queue_pop(q, 1000, &c);
        CHECK(r == 1 && c.user == 501 && c.status == SCIO_CANCELLED, "cancel completion");
        scio_op_cancel(op);      /* after completion: no effect */
        scio_op_release(op);
    }
    st = scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 502, &op);
    CHECK_ST(st, SCIO_SUCCESS);
    if (st == SCIO_SUCCESS) {
        CHECK(scio_op_wait(op, 100) == 0, "pending");
        scio_cancel_all(d);
        r = scio_queue_pop(q, 5000, &c);
        CHECK(r == 1 && c.user == 502 && c.status == SCIO_CANCELLED, "cancel_all completion %s",
              sname(c.status));
        scio_op_release(op);
    }
    /* Releasing a pending operation cancels it; nothing is queued. */
    st = scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 503, &op);
    CHECK_ST(st, SCIO_SUCCESS);
    if (st == SCIO_SUCCESS) {
        scio_op_release(op);
        CHECK(scio_queue_pop(q, 400, &c) == 0, "released op queues nothing");
        st = scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 504, &op);
        CHECK_ST(st, SCIO_SUCCESS);
        if (st == SCIO_SUCCESS) {
            CHECK(scio_op_wait(op, 150) == 0, "driver took a new wait: the released one was cancelled");
            scio_op_cancel(op);
            r = scio_queue_pop(q, 5000, &c);
            CHECK(r == 1 && c.user == 504 && c.status == SCIO_CANCELLED, "cancel completion 504");
            scio_op_release(op);
        }
    }

    /* Queue: wake, timeouts. */
    scio_queue_wake(q);
    t0 = now_us();
    CHECK(scio_queue_pop(q, 5000, &c) == -1, "woken pop returns -1");
    CHECK(now_us() - t0 < 1000000.0, "at once");
    CHECK(scio_queue_pop(q, 0, &c) == 0, "wake consumed; poll is empty");
    t0 = now_us();
    CHECK(scio_queue_pop(q, 100, &c) == 0, "timeout");
    CHECK(now_us() - t0 >= 80000.0, "timeout waited (%.0f us)", now_us() - t0);

    /* Argument checks. */
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 4, out, 4, &n), SCIO_INVALID_PARAMETER);
    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, NULL, 4, &n), SCIO_INVALID_PARAMETER);
    CHECK_ST(scio_submit(d, SCIO_IOCTL_TRANSMIT, big, SCIO_MAX_INPUT + 1, 8, 0, &op),
             SCIO_INVALID_BUFFER_SIZE);

    /* A T=0 card: GET RESPONSE flow; custom ATR; bad insert. */
    {
        static const uint8_t byte_t0 = SIM_CARD_T0;
        static const uint8_t echo[] = { 0x80, 0xEE, 0x00, 0x00, 0x02, 9, 8, 0x02 };
        static const uint8_t getresp[] = { 0x00, 0xC0, 0x00, 0x00, 0x02 };
        static const uint8_t custom[] = { 0x3B, 0x00 };
        uint8_t toolong[SCIO_MAX_ATR + 1];

        CHECK_ST(sim_insert(d, &byte_t0, 1), SCIO_SUCCESS);
        st = ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, SCIO_MAX_ATR, &n);
        CHECK(st == SCIO_SUCCESS && n == sizeof(atr_t0) && memcmp(out, atr_t0, n) == 0, "T=0 ATR");
        st = ioctl_u32(d, SCIO_IOCTL_SET_PROTOCOL, SCIO_PROTOCOL_T1, out, 4, &n);
        CHECK_ST(st, SCIO_NOT_SUPPORTED);
        st = ioctl_u32(d, SCIO_IOCTL_SET_PROTOCOL, SCIO_PROTOCOL_OPTIMAL, out, 4, &n);
        CHECK(st == SCIO_SUCCESS && n == 4 && get32(out) == SCIO_PROTOCOL_T0, "T=0 chosen");
        st = transmit(d, SCIO_PROTOCOL_T0, echo, sizeof(echo), out, sizeof(out), &n);
        CHECK(st == SCIO_SUCCESS && n == 2 && out[0] == 0x61 && out[1] == 0x02, "T=0 echo: 61 02");
        st = transmit(d, SCIO_PROTOCOL_T0, getresp, sizeof(getresp), out, sizeof(out), &n);
        CHECK(st == SCIO_SUCCESS && n == 4 && out[0] == 9 && out[1] == 8 && out[2] == 0x90,
              "GET RESPONSE");
        CHECK_ST(sim_insert(d, custom, sizeof(custom)), SCIO_SUCCESS);
        st = ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, SCIO_MAX_ATR, &n);
        CHECK(st == SCIO_SUCCESS && n == 2 && out[0] == 0x3B && out[1] == 0x00, "custom ATR");
        memset(toolong, 0x3B, sizeof(toolong));
        CHECK_ST(sim_insert(d, toolong, sizeof(toolong)), SCIO_INVALID_PARAMETER);
    }

    /* Close with a pending wait: prompt, and the wait is cancelled. */
    CHECK_ST(sim_remove(d), SCIO_SUCCESS);
    st = scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 601, &op);
    CHECK_ST(st, SCIO_SUCCESS);
    if (st == SCIO_SUCCESS) {
        CHECK(scio_op_wait(op, 100) == 0, "pending before close");
        t0 = now_us();
        scio_close(d);
        d = NULL;
        printf("   close with a pending wait took %.0f us\n", now_us() - t0);
        CHECK(now_us() - t0 < 1500000.0, "close returned promptly");
        CHECK_ST(scio_op_status(op), SCIO_CANCELLED);
        r = scio_queue_pop(q, 1000, &c);
        CHECK(r == 1 && c.user == 601 && c.status == SCIO_CANCELLED, "close cancels the wait");
        scio_op_release(op);
    }
    if (d)
        scio_close(d);

    /* The close reached the driver: the exclusive reader opens again. */
    st = open_retry(path, q, &d, err, sizeof(err));
    CHECK_ST(st, SCIO_SUCCESS);
    if (st == SCIO_SUCCESS) {
        CHECK_ST(get_state(d, &state), SCIO_SUCCESS);
        CHECK(state == SCIO_STATE_ABSENT, "state after reopen");
        scio_close(d);
    }
    scio_queue_free(q);
}

/* Two readers on one queue, a wait pending on each: closing one cancels only
 * its own; closing the other cancels the rest. */
static void run_two_devices(const wchar_t *a, const wchar_t *b)
{
    char err[512];
    scio_queue *q = scio_queue_new();
    scio_device *da = NULL, *db = NULL;
    scio_op *oa = NULL, *ob = NULL;
    scio_completion c;
    double t0;
    int r;

    chk_label = "two devices";
    printf("== two devices, one queue\n");
    CHECK(q != NULL, "queue");
    if (!q)
        return;
    CHECK_ST(open_retry(a, q, &da, err, sizeof(err)), SCIO_SUCCESS);
    CHECK_ST(open_retry(b, q, &db, err, sizeof(err)), SCIO_SUCCESS);
    if (!da || !db)
        goto out;
    CHECK_ST(sim_remove(da), SCIO_SUCCESS);
    CHECK_ST(sim_remove(db), SCIO_SUCCESS);
    CHECK_ST(scio_submit(da, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 1, &oa), SCIO_SUCCESS);
    CHECK_ST(scio_submit(db, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 2, &ob), SCIO_SUCCESS);
    if (!oa || !ob)
        goto out;
    CHECK(scio_op_wait(oa, 100) == 0 && scio_op_wait(ob, 0) == 0, "both pending");
    t0 = now_us();
    scio_close(da);
    da = NULL;
    CHECK(now_us() - t0 < 1500000.0, "close A promptly (%.0f us)", now_us() - t0);
    CHECK_ST(scio_op_status(oa), SCIO_CANCELLED);
    CHECK_ST(scio_op_status(ob), SCIO_PENDING);
    r = scio_queue_pop(q, 1000, &c);
    CHECK(r == 1 && c.user == 1 && c.status == SCIO_CANCELLED, "A's wait cancelled");
    /* The queue is freed by its owner while B still uses it: B keeps it. */
    scio_queue_free(q);
    CHECK_ST(sim_insert(db, NULL, 0), SCIO_SUCCESS);
    CHECK(scio_op_wait(ob, 5000) == 1, "B's wait completes on insertion");
    CHECK_ST(scio_op_status(ob), SCIO_SUCCESS);
    r = scio_queue_pop(scio_device_queue(db), 1000, &c);
    CHECK(r == 1 && c.user == 2, "B's completion");
    scio_op_release(ob);
    ob = NULL;
    /* pending wait again, then close B */
    CHECK_ST(scio_submit(db, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 3, &ob), SCIO_SUCCESS);
    t0 = now_us();
    scio_close(db);
    db = NULL;
    CHECK(now_us() - t0 < 1500000.0, "close B promptly");
    if (ob) {
        CHECK_ST(scio_op_status(ob), SCIO_CANCELLED);
        scio_op_release(ob);   /* last reference: frees the queue */
    }
    scio_op_release(oa);
    return;
out:
    if (da) scio_close(da);
    if (db) scio_close(db);
    scio_queue_free(q);
}

/* Private queue (q == NULL). */
static void run_private_queue(const wchar_t *path)
{
    char err[512];
    scio_device *d = NULL;
    scio_op *op = NULL;
    scio_completion c;
    scio_queue *q;

    chk_label = "private queue";
    printf("== private queue\n");
    CHECK_ST(open_retry(path, NULL, &d, err, sizeof(err)), SCIO_SUCCESS);
    if (!d)
        return;
    q = scio_device_queue(d);
    CHECK(q != NULL, "private queue exists");
    scio_queue_free(q);   /* not the caller's: no effect */
    CHECK_ST(scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, 9, &op), SCIO_SUCCESS);
    CHECK(scio_queue_pop(q, 5000, &c) == 1 && c.user == 9 && c.status == SCIO_SUCCESS,
          "private queue completion");
    scio_op_release(op);
    scio_close(d);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_timing(const wchar_t *path, int iters)
{
    char err[512];
    scio_queue *q = scio_queue_new();
    scio_device *d = NULL;
    double *ts, *to, ms, mo;
    int i, bad = 0;

    chk_label = "timing";
    if (!q)
        return;
    if (open_retry(path, q, &d, err, sizeof(err)) != SCIO_SUCCESS) {
        CHECK(0, "open for timing: %s", err);
        scio_queue_free(q);
        return;
    }
    ts = (double *)malloc(sizeof(double) * (size_t)iters);
    to = (double *)malloc(sizeof(double) * (size_t)iters);
    if (!ts || !to) {
        free(ts);
        free(to);
        scio_close(d);
        scio_queue_free(q);
        return;
    }
    /* interleaved, so both see the same machine load */
    for (i = 0; i < iters; i++) {
        uint8_t b[4];
        size_t n;
        scio_op *op;
        scio_completion c;
        double t = now_us();
        if (scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, b, 4, &n) != SCIO_SUCCESS)
            bad++;
        ts[i] = now_us() - t;
        t = now_us();
        if (scio_submit(d, SCIO_IOCTL_GET_STATE, NULL, 0, 4, (uint64_t)i, &op) != SCIO_SUCCESS) {
            bad++;
            to[i] = 0;
            continue;
        }
        if (scio_queue_pop(q, 5000, &c) != 1 || c.status != SCIO_SUCCESS)
            bad++;
        scio_op_release(op);
        to[i] = now_us() - t;
    }
    CHECK(bad == 0, "%d failed calls in timing", bad);
    qsort(ts, (size_t)iters, sizeof(double), cmp_double);
    qsort(to, (size_t)iters, sizeof(double), cmp_double);
    ms = ts[iters / 2];
    mo = to[iters / 2];
    printf("timing: GET_STATE median of %d: synchronous %.1f us, overlapped "
           "(submit + pop) %.1f us, ratio overlapped/sync %.2f\n",
           iters, ms, mo, ms > 0 ? mo / ms : 0.0);
    free(ts);
    free(to);
    scio_close(d);
    scio_queue_free(q);
}

static const char *source_name(int s)
{
    return s == SCIO_WIN32_SOURCE_CFGMGR ? "CM_Get_Device_Interface_List"
         : s == SCIO_WIN32_SOURCE_SETUPAPI ? "SetupAPI" : "none";
}

/* Find the PnP reader through the interface GUID. */
static wchar_t *discover(int wait_s)
{
    static const GUID reader_guid = {
        0x50DD5230, 0xBA8A, 0x11D1,
        { 0xBF, 0x5D, 0x00, 0x00, 0xF8, 0x05, 0xF5, 0x30 }
    };
    wchar_t *buf = NULL, *found = NULL, *p;
    size_t needed = 0, needed2 = 0;
    int count = 0, src = 0, tries;

    chk_label = "discovery";
    printf("== discovery\n");
    for (tries = 0; tries <= wait_s * 10; tries++) {
        count = scio_win32_list_interfaces(&reader_guid, NULL, 0, &needed, &src);
        if (count == SCIO_WIN32_LIST_TOO_SMALL)
            break;
        Sleep(100);
    }
    CHECK(count == SCIO_WIN32_LIST_TOO_SMALL && needed > 2, "a reader interface is listed (%d)", count);
    if (count != SCIO_WIN32_LIST_TOO_SMALL)
        return NULL;
    buf = (wchar_t *)calloc(needed + 16, sizeof(wchar_t));
    if (!buf)
        return NULL;
    buf[needed - 2] = L'#';
    count = scio_win32_list_interfaces(&reader_guid, buf, needed - 1, &needed2, &src);
    CHECK(count == SCIO_WIN32_LIST_TOO_SMALL && buf[needed - 2] == L'#',
          "one wchar short: too small, nothing written");
    count = scio_win32_list_readers(buf, needed + 16, &needed2);
    CHECK(count >= 1, "list readers: %d", count);
    CHECK(needed2 == needed, "same size twice");
    scio_win32_list_interfaces(&reader_guid, buf, needed + 16, &needed2, &src);
    printf("   %d reader interface(s) via %s\n", count, source_name(src));
    for (p = buf; count > 0 && *p; p += wcslen(p) + 1) {
        wchar_t low[1024];
        size_t i, len = wcslen(p);
        printf("   %ls\n", p);
        if (len >= sizeof(low) / sizeof(low[0]))
            continue;
        for (i = 0; i <= len; i++)
            low[i] = (p[i] >= L'A' && p[i] <= L'Z') ? (wchar_t)(p[i] + 32) : p[i];
        if (wcsstr(low, L"{50dd5230-ba8a-11d1-bf5d-0000f805f530}") &&
            wcsstr(low, L"scardio_sim") && !found) {
            found = (wchar_t *)calloc(len + 1, sizeof(wchar_t));
            if (found)
                memcpy(found, p, (len + 1) * sizeof(wchar_t));
        }
    }
    CHECK(found != NULL, "the simulated PnP reader is among them");
    free(buf);

    /* The platform-neutral UTF-8 calls the Python binding uses. */
    {
        size_t need = 0;
        char *list;
        int n = scio_list_paths(NULL, 0, &need);
        CHECK(n == -1 && need > 2, "scio_list_paths sizes its answer (%d, %u)", n,
              (unsigned)need);
        list = (char *)calloc(need + 1, 1);
        if (list) {
            scio_device *d = NULL;
            char err[256];
            const char *hit = NULL;
            n = scio_list_paths(list, need, &need);
            CHECK(n >= 1, "scio_list_paths: %d path(s)", n);
            for (const char *q = list; n > 0 && *q; q += strlen(q) + 1)
                if (!hit && (strstr(q, "scardio_sim") || strstr(q, "SCARDIO_SIM")))
                    hit = q;
            CHECK(hit != NULL, "the simulated PnP reader is listed in UTF-8");
            if (hit) {
                scio_status st = scio_open_path(hit, NULL, &d, err, sizeof err);
                CHECK_ST(st, SCIO_SUCCESS);
                if (d) {
                    uint8_t out[4];
                    size_t got = 0;
                    CHECK_ST(scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, out, 4, &got),
                             SCIO_SUCCESS);
                    scio_close(d);
                }
            }
            CHECK_ST(scio_open_path("", NULL, &d, err, sizeof err), SCIO_INVALID_PARAMETER);
            free(list);
        }
    }
    return found;
}

int main(int argc, char **argv)
{
    const char *legacy_a = "\\\\.\\ScardioSim0";
    wchar_t legacy[260];
    wchar_t *pnp;
    int timing_iters = 300, wait_s = 20, i, ifd_pass = 0, ifd_fail = 0;
    const char *sim_arg = NULL;
    char sim_dll[MAX_PATH + 32];
    char err[512];
    scio_device *d = NULL;
    scio_status st;

    setvbuf(stdout, NULL, _IONBF, 0);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--legacy") == 0 && i + 1 < argc)
            legacy_a = argv[++i];
        else if (strcmp(argv[i], "--timing") == 0 && i + 1 < argc)
            timing_iters = atoi(argv[++i]);
        else if (strcmp(argv[i], "--wait-discovery") == 0 && i + 1 < argc)
            wait_s = atoi(argv[++i]);
        else if (strcmp(argv[i], "--sim") == 0 && i + 1 < argc)
            sim_arg = argv[++i];
    }
    if (sim_arg) {
        if (strlen(sim_arg) >= sizeof(sim_dll)) {
            printf("--sim path too long\n");
            return 2;
        }
        memcpy(sim_dll, sim_arg, strlen(sim_arg) + 1);
    } else {
        /* libscardio_sim.dll in this program's directory */
        static const char name[] = "libscardio_sim.dll";
        DWORD n = GetModuleFileNameA(NULL, sim_dll, MAX_PATH);
        char *slash = n > 0 && n < MAX_PATH ? strrchr(sim_dll, '\\') : NULL;
        size_t keep = slash ? (size_t)(slash - sim_dll) + 1 : 0;
        if (keep + sizeof(name) > sizeof(sim_dll)) {
            printf("program path too long\n");
            return 2;
        }
        memcpy(sim_dll + keep, name, sizeof(name));
    }
    if (timing_iters < 1)
        timing_iters = 1;
    if (!MultiByteToWideChar(CP_UTF8, 0, legacy_a, -1, legacy, 260)) {
        printf("bad --legacy path\n");
        return 2;
    }

    chk_label = "basics";
    st = scio_open_ifd("x.so", "dev", 0, NULL, NULL, &d, err, sizeof(err));
    CHECK_ST(st, SCIO_DLL_NOT_FOUND);
    CHECK(d == NULL && contains(err, "x.so"), "IFD open explains: %s", err);
    st = scio_open_win32(L"\\\\.\\ScardioNoSuchReader", NULL, &d, err, sizeof(err));
    CHECK_ST(st, SCIO_OBJECT_NAME_NOT_FOUND);
    CHECK(d == NULL && contains(err, "ScardioNoSuchReader"), "message names the path: %s", err);
    CHECK(scio_status_name(SCIO_CANCELLED) != NULL, "status names");

    /* A sharing violation names the Smart Card service and how to stop it
     * (made here with a file held open without sharing). */
    {
        wchar_t tmp[MAX_PATH], file[MAX_PATH + 32];
        HANDLE h;
        DWORD n = GetTempPathW(MAX_PATH, tmp);
        if (n > 0 && n < MAX_PATH) {
            swprintf(file, sizeof(file) / sizeof(file[0]), L"%lsscardio-lock-%lu.bin", tmp,
                     (unsigned long)GetCurrentProcessId());
            h = CreateFileW(file, GENERIC_READ | GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                            FILE_FLAG_DELETE_ON_CLOSE, NULL);
            CHECK(h != INVALID_HANDLE_VALUE, "lock file");
            if (h != INVALID_HANDLE_VALUE) {
                st = scio_open_win32(file, NULL, &d, err, sizeof(err));
                CHECK_ST(st, SCIO_SHARING_VIOLATION);
                CHECK(d == NULL, "no device on failure");
                CHECK(contains(err, "SCardSvr") && contains(err, "net stop SCardSvr") &&
                      contains(err, "sc stop SCardSvr") && contains(err, "administrator"),
                      "sharing message: %s", err);
                if (d)
                    scio_close(d);
                d = NULL;
                CloseHandle(h);
            }
        }
    }

    run_contract(legacy, "legacy \\\\.\\ScardioSim0", 0);
    pnp = discover(wait_s);
    if (pnp) {
        run_contract(pnp, "PnP interface", 1);
        run_two_devices(legacy, pnp);
    }
    run_private_queue(legacy);
    run_timing(legacy, timing_iters);
    free(pnp);

    run_ifd_tests(sim_dll, legacy, &ifd_pass, &ifd_fail);
    printf("IFD-handler DLL (%s): %d passed, %d failed\n", sim_dll, ifd_pass, ifd_fail);
    chk_pass += ifd_pass;
    chk_fail += ifd_fail;

    printf("%d passed, %d failed\n", chk_pass, chk_fail);
    return chk_fail ? 1 : 0;
}
