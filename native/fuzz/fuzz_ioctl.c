/*
 * fuzz_ioctl.c - libFuzzer target: the scardio C core + IFD backend driving
 * the simulated reader, fed IOCTLs built from the fuzz input.
 *
 * Input: a sequence of records
 *     u8 selector | [u32 code if selector selects "raw"] | u16 in_len | in |
 *     u16 out_cap (0xFFFF: SCIO_MAX_OUTPUT)
 * The selector picks a standard IOCTL, a simulated-reader vendor control
 * (insert, remove, fault injection, ... so driver faults are fuzzed too), or
 * a raw 32-bit code.  Faults that would stall the harness are filtered:
 * BLOCK faults and latency.  IS_PRESENT / IS_ABSENT are submitted overlapped
 * and cancelled if they do not complete at once (they may pend forever).
 * Each input starts from a known state: faults disarmed, no card.
 *
 * Checks beyond the sanitizers: a successful call never reports more output
 * than the capacity given, a failed one reports none, every status has a
 * name, and the reader still answers GET_STATE afterwards.
 *
 * Build: native/fuzz/run.sh (clang -fsanitize=fuzzer,address,undefined).
 * The simulated driver's path comes from SCARDIO_SIM_LIB.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scio.h"
#include "sim/sim_protocol.h"

static scio_device *dev;
static uint8_t outbuf[SCIO_MAX_OUTPUT];

static void die(const char *what)
{
    fprintf(stderr, "fuzz_ioctl: %s\n", what);
    abort();
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static scio_status ctl(uint32_t n, const void *in, size_t in_len)
{
    size_t got;
    return scio_ioctl(dev, SCIO_VENDOR_CTL_PCSC(n), in, in_len, outbuf, 0, &got);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    const char *lib = getenv("SCARDIO_SIM_LIB");
    scio_ifd_options opts = { 0, 200 };
    (void)argc; (void)argv;
    if (!lib)
        die("set SCARDIO_SIM_LIB to the simulated reader driver");
    if (scio_open_ifd(lib, "sim", 0x4242, NULL, &opts, &dev, err, sizeof err) != SCIO_SUCCESS)
        die(err);
    return 0;
}

static const uint32_t standard[] = {
    SCIO_IOCTL_POWER, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_IOCTL_SET_ATTRIBUTE,
    SCIO_IOCTL_CONFISCATE, SCIO_IOCTL_TRANSMIT, SCIO_IOCTL_EJECT, SCIO_IOCTL_SWALLOW,
    SCIO_IOCTL_IS_PRESENT, SCIO_IOCTL_IS_ABSENT, SCIO_IOCTL_SET_PROTOCOL,
    SCIO_IOCTL_GET_STATE, SCIO_IOCTL_GET_LAST_ERROR,
};
#define N_STANDARD (sizeof standard / sizeof standard[0])

/* Vendor controls of the simulated reader, SIM_CTL_INSERT .. RESET_COUNTERS. */
#define N_VENDOR 8

static int allowed(uint32_t code, const uint8_t *in, size_t in_len)
{
    if (code == SCIO_VENDOR_CTL_PCSC(SIM_CTL_SET_LATENCY) ||
        code == SCIO_VENDOR_CTL_WIN(SIM_CTL_SET_LATENCY))
        return 0; /* slow, not wrong */
    if ((code == SCIO_VENDOR_CTL_PCSC(SIM_CTL_FAULT) ||
         code == SCIO_VENDOR_CTL_WIN(SIM_CTL_FAULT)) && in_len >= 12) {
        if (get32(in + 4) == SIM_FAULT_BLOCK)
            return 0; /* would stall until STOP */
    }
    return 1;
}

static void one(uint32_t code, const uint8_t *in, size_t in_len, size_t out_cap)
{
    size_t got = 12345;
    scio_status st;
    if (code == SCIO_IOCTL_IS_PRESENT || code == SCIO_IOCTL_IS_ABSENT) {
        scio_op *op = NULL;
        st = scio_submit(dev, code, in, in_len, out_cap, 7, &op);
        if (st == SCIO_SUCCESS) {
            if (!scio_op_wait(op, 0))
                scio_op_cancel(op);
            if (!scio_op_wait(op, 5000))
                die("a cancelled tracking request did not complete");
            scio_op_output(op, &got);
            if (got > out_cap)
                die("overlapped output larger than its capacity");
            scio_op_release(op);
        }
        {   /* drain the completion queue */
            scio_completion c;
            while (scio_queue_pop(scio_device_queue(dev), 0, &c) == 1) {
            }
        }
        return;
    }
    st = scio_ioctl(dev, code, in, in_len, out_cap ? outbuf : NULL, out_cap, &got);
    if (scio_status_name(st) == NULL)
        die("status without a name");
    if (st == SCIO_SUCCESS && got > out_cap)
        die("output larger than the capacity");
    if (st != SCIO_SUCCESS && got != 0)
        die("a failed call reported output");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t state[4];
    size_t got;
    int steps = 0;

    /* a known start: faults disarmed, no card, core state refreshed */
    ctl(SIM_CTL_STOP, NULL, 0);
    ctl(SIM_CTL_REMOVE, NULL, 0);
    scio_ioctl(dev, SCIO_IOCTL_GET_STATE, NULL, 0, state, 4, &got);

    while (size >= 3 && steps++ < 64) {
        uint8_t sel = data[0];
        uint32_t code;
        size_t in_len, out_cap;
        const uint8_t *in;
        data++; size--;
        if (sel < 0x80) {
            code = standard[sel % N_STANDARD];
        } else if (sel < 0xF0) {
            uint32_t n = SIM_CTL_INSERT + (uint32_t)((sel >> 1) % N_VENDOR);
            code = sel & 1 ? SCIO_VENDOR_CTL_PCSC(n) : SCIO_VENDOR_CTL_WIN(n);
        } else {
            if (size < 4)
                break;
            code = get32(data);
            data += 4; size -= 4;
        }
        if (size < 2)
            break;
        in_len = (size_t)data[0] | (size_t)data[1] << 8;
        data += 2; size -= 2;
        if (in_len > size)
            in_len = size;
        in = data;
        data += in_len; size -= in_len;
        if (size >= 2) {
            out_cap = (size_t)data[0] | (size_t)data[1] << 8;
            if (out_cap == 0xFFFF)
                out_cap = SCIO_MAX_OUTPUT;
            data += 2; size -= 2;
        } else {
            out_cap = 300;
        }
        if (!allowed(code, in, in_len))
            continue;
        {
            /* exact-size heap copy so ASan sees any over-read */
            uint8_t *copy = malloc(in_len ? in_len : 1);
            if (!copy)
                return 0;
            memcpy(copy, in, in_len);
            one(code, in_len ? copy : NULL, in_len, out_cap);
            free(copy);
        }
    }
    /* the reader still answers */
    ctl(SIM_CTL_STOP, NULL, 0);
    if (scio_ioctl(dev, SCIO_IOCTL_GET_STATE, NULL, 0, state, 4, &got) != SCIO_SUCCESS ||
        got != 4 || get32(state) > SCIO_STATE_SPECIFIC)
        die("GET_STATE failed after the input");
    return 0;
}
