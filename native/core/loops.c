/* loops.c - the spec's connect and power-down loops as synchronous IOCTLs
 * (scio.h, "the connect and power-down loops").  Each takes only the
 * ordinary path and stops at anything else: what an unusual answer means
 * is decided once, by the caller's sequence replaying the records, not
 * here a second time. */
#include <string.h>

#include "core_internal.h"

#define USABLE_PROTOCOLS (SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1 | SCIO_PROTOCOL_RAW)
#define STATE_COUNT 7u /* UNKNOWN .. SPECIFIC; a larger value reads as UNKNOWN */

static void trail_byte(scio_loop *c, uint8_t b)
{
    if (c->trail_len < sizeof c->trail)
        c->trail[c->trail_len++] = b;
}

static void trail_dword(scio_loop *c, uint8_t b, uint32_t v)
{
    if (c->trail_len + 5u > sizeof c->trail)
        return;
    c->trail[c->trail_len++] = b;
    scio_put_u32(c->trail + c->trail_len, v);
    c->trail_len += 4u;
}

/* One IOCTL with an optional DWORD input, recorded; returns the record, or
 * NULL when it failed, the record is full, or `op` was cancelled (the loop
 * stops: incomplete). */
static scio_loop_step *step(scio_device *d, scio_loop *c, scio_op *op,
                               uint32_t code, int has_in, uint32_t in, size_t out_cap)
{
    scio_loop_step *s;
    uint8_t in_buf[4];
    size_t n = 0;
    if (c->n >= SCIO_LOOP_RECORDS || (op && scio_op_cancelled(op)) ||
        (c->deadline && scio_now_us() > c->deadline))
        return NULL;
    s = &c->step[c->n++];
    memset(s, 0, sizeof *s);
    s->code = code;
    s->in_len = has_in ? 4u : 0u;
    s->in = in;
    scio_put_u32(in_buf, in);
    if (out_cap > sizeof s->out)
        out_cap = sizeof s->out;
    scio_store_release(&c->current, (int)code);
    s->status = scio_ioctl(d, code, has_in ? in_buf : NULL, s->in_len, s->out, out_cap, &n);
    if (s->status != SCIO_SUCCESS) {
        s->driver_code = scio_device_driver_code(d);
        return NULL;
    }
    s->out_len = n <= out_cap ? (uint32_t)n : 0u; /* scio_ioctl bounds it; never trust it twice */
    return s;
}

/* GET_ATTRIBUTE(ATR_STRING): kept as the ATR unless empty (then the
 * caller's sequence decides: the reset's ATR, or no ATR at all). */
static int read_atr(scio_device *d, scio_loop *c, scio_op *op)
{
    scio_loop_step *s = step(d, c, op, SCIO_IOCTL_GET_ATTRIBUTE, 1,
                                SCIO_ATTR_ATR_STRING, SCIO_MAX_ATR);
    if (!s || s->out_len == 0)
        return 0;
    memcpy(c->atr, s->out, s->out_len); /* out_len <= SCIO_MAX_ATR = sizeof c->atr */
    c->atr_len = s->out_len;
    return 1;
}

static uint32_t dword_out(const scio_loop_step *s) { return scio_get_u32(s->out); }

/* The loop until the card is negotiable; 1 if it settled on ordinary answers. */
static int settle(scio_device *d, scio_loop *c, scio_op *op)
{
    int mismatch_reset = 0;
    for (unsigned i = 0; i < c->max_steps; i++) {
        scio_loop_step *s;
        uint32_t state;
        s = step(d, c, op, SCIO_IOCTL_GET_STATE, 0, 0, 4);
        if (!s || s->out_len != 4)
            return 0;
        state = dword_out(s);
        if (state >= STATE_COUNT)
            state = SCIO_STATE_UNKNOWN;
        trail_byte(c, (uint8_t)state);
        switch (state) {
        case SCIO_STATE_SPECIFIC: {
            uint32_t current, wanted = c->protocols & USABLE_PROTOCOLS;
            if (!read_atr(d, c, op))
                return 0;
            s = step(d, c, op, SCIO_IOCTL_GET_ATTRIBUTE, 1, SCIO_ATTR_CURRENT_PROTOCOL_TYPE, 4);
            if (!s || s->out_len != 4)
                return 0;
            current = dword_out(s);
            trail_dword(c, SCIO_TRAIL_ATR_PROTOCOL, current);
            if (current && wanted && !(current & wanted) && !mismatch_reset) {
                /* Left in a protocol we cannot use: a warm reset, once. */
                mismatch_reset = 1;
                if (!step(d, c, op, SCIO_IOCTL_POWER, 1, SCIO_WARM_RESET, SCIO_MAX_ATR))
                    return 0;
                trail_byte(c, SCIO_TRAIL_WARM_RESET);
                continue;
            }
            return 1;
        }
        case SCIO_STATE_NEGOTIABLE:
            if (!read_atr(d, c, op))
                return 0;
            trail_byte(c, SCIO_TRAIL_ATR);
            return 1;
        case SCIO_STATE_PRESENT:
            if (!step(d, c, op, SCIO_IOCTL_SWALLOW, 0, 0, 0))
                return 0;
            trail_byte(c, SCIO_TRAIL_SWALLOW);
            break;
        case SCIO_STATE_SWALLOWED:
            if (!step(d, c, op, SCIO_IOCTL_POWER, 1, SCIO_COLD_RESET, SCIO_MAX_ATR))
                return 0;
            trail_byte(c, SCIO_TRAIL_COLD_RESET);
            break;
        case SCIO_STATE_POWERED:
            if (!step(d, c, op, SCIO_IOCTL_POWER, 1, SCIO_WARM_RESET, SCIO_MAX_ATR))
                return 0;
            trail_byte(c, SCIO_TRAIL_WARM_RESET);
            break;
        default: /* no card: the caller's sequence says so */
            return 0;
        }
    }
    return 0; /* did not settle in max_steps: the caller's sequence says so */
}

static void begin(scio_loop *c, const scio_op *op)
{
    c->complete = 0;
    c->n = c->atr_len = c->trail_len = 0;
    if (!op) /* submitted: the deadline runs from the submission */
        c->deadline = c->timeout_us > 0 ? scio_now_us() + c->timeout_us : 0;
}

static void connect_run(scio_device *d, scio_loop *c, scio_op *op)
{
    scio_loop_step *s;
    if (!settle(d, c, op))
        return;
    s = step(d, c, op, SCIO_IOCTL_SET_PROTOCOL, 1, c->protocols, 4);
    if (!s || s->out_len != 4)
        return;
    trail_dword(c, SCIO_TRAIL_SET_PROTOCOL, dword_out(s));
    c->complete = 1;
}

static void power_down_run(scio_device *d, scio_loop *c, scio_op *op)
{
    for (unsigned i = 0; i < c->max_steps; i++) {
        scio_loop_step *s = step(d, c, op, SCIO_IOCTL_GET_STATE, 0, 0, 4);
        uint32_t state;
        if (!s || s->out_len != 4)
            return;
        state = dword_out(s);
        if (state >= STATE_COUNT)
            state = SCIO_STATE_UNKNOWN;
        trail_byte(c, (uint8_t)state);
        if (state != SCIO_STATE_SPECIFIC && state != SCIO_STATE_NEGOTIABLE &&
            state != SCIO_STATE_POWERED) {
            c->complete = 1; /* not powered (or no card): nothing to do */
            return;
        }
        if (!step(d, c, op, SCIO_IOCTL_POWER, 1, SCIO_POWER_DOWN, 0))
            return;
        trail_byte(c, SCIO_TRAIL_POWER_DOWN);
    }
    c->complete = 1; /* as the sequence: the steps ran out, what it did stands */
}

void scio_loop_run(scio_device *d, scio_loop *c, scio_op *op)
{
    begin(c, op);
    if (c->kind == SCIO_LOOP_CONNECT)
        connect_run(d, c, op);
    else if (c->kind == SCIO_LOOP_POWER_DOWN)
        power_down_run(d, c, op);
}
