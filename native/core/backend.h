/*
 * backend.h - what a backend provides to the core, and what the core offers
 * a backend.
 *
 * The core (native/core) owns devices, operations and completion queues for
 * every backend; a backend owns one driver channel per device.  A backend's
 * open function (scio_open_ifd, scio_open_win32, ...) opens the channel and
 * hands it to scio_device_create with its table: the backend is chosen once,
 * at open, and every later call on the device goes through the table.
 *
 * Overlapped requests run one of two ways:
 *   - submit == NULL: the core serves them from its own worker threads (two
 *     lanes per device, see device.c) through the blocking `ioctl`, except
 *     tracking requests a backend takes itself (submit_tracking);
 *   - submit != NULL: the backend issues them natively (Windows: overlapped
 *     DeviceIoControl) and reports each one's end through scio_op_complete,
 *     from any thread (Windows: its I/O completion port thread).
 * Either way the completion lands in the device's core queue, whose waitable
 * (scio_queue_fd / scio_queue_handle) is the core's: a queue may serve
 * devices of several backends.
 *
 * Locking: the core calls `ioctl`, `submit`, `wake_tracking` and `release`
 * with no core lock held, and `cancel` and `can_bound_tracking` with the
 * device lock held (they must not block or call back into the core).
 */
#ifndef SCIO_BACKEND_H
#define SCIO_BACKEND_H

#include "scio.h"
#include "sync.h"

/* One device's tracking request in a tracking set's wait (backend.h:
 * track_set_wait).  The core fills the inputs; `scratch` is the backend's,
 * zeroed when the request joins the set and kept between waits (the
 * request's own state: what it has seen so far). */
typedef struct scio_track_entry {
    scio_device *dev;
    uint32_t code;          /* SCIO_IOCTL_IS_PRESENT or SCIO_IOCTL_IS_ABSENT */
    /* out */
    int done;
    scio_status status;
    long driver_code;
    uint64_t scratch[4];
} scio_track_entry;

typedef struct scio_backend {
    const char *name;
    /* Bytes of backend memory the core reserves in every overlapped
     * operation for `submit` (scio_op_backend_data); 0 without submit. */
    size_t op_data_size;
    /* Run one IOCTL to completion, blocking.  `op` is the operation being
     * served (synchronous calls get an internal one), so backends can poll
     * scio_op_cancelled(op).  The input has been validated against
     * SCIO_MAX_INPUT, the output capacity clamped to SCIO_MAX_OUTPUT. */
    scio_status (*ioctl)(scio_device *d, scio_op *op, uint32_t code,
                         const uint8_t *in, size_t in_len,
                         uint8_t *out, size_t out_cap, size_t *out_len,
                         long *driver_code);
    /* Optional: start an overlapped IOCTL natively.  The buffers belong to
     * the operation and stay valid until scio_op_complete(op, ...), which
     * the backend calls exactly once per submitted operation -- possibly
     * before submit returns (a request that fails at once).  The core does
     * not apply its one-tracking-request rule to such backends: their
     * driver does (smclib answers DEVICE_BUSY). */
    void (*submit)(scio_device *d, scio_op *op, uint32_t code,
                   const uint8_t *in, size_t in_len,
                   uint8_t *out, size_t out_cap);
    /* Required with submit: ask the driver to cancel `op` (still submitted),
     * or with op == NULL every request on the device, synchronous ones
     * included (shutdown).  Returns at once; the cancelled requests end
     * through scio_op_complete / ioctl as usual. */
    void (*cancel)(scio_device *d, scio_op *op);
    /* Optional, for a backend without submit: take an overlapped tracking
     * request (IS_PRESENT / IS_ABSENT) itself instead of a lane thread, so
     * that one thread of its own can serve the requests of many devices.
     * As with submit, the backend ends it through scio_op_complete exactly
     * once (possibly before returning) and must provide `cancel`; the core
     * still applies its one-tracking-request rule.  The buffers are empty
     * (tracking requests carry no data). */
    void (*submit_tracking)(scio_device *d, scio_op *op, uint32_t code);
    /* Optional: wake a tracking request blocked in `ioctl` (may be called
     * repeatedly, from any thread). */
    void (*wake_tracking)(scio_device *d);
    /* Optional, for a backend without submit that can bound its own calls
     * (both or neither).  An awaited operation with a deadline (a bounded
     * synchronous call: scio_submit_awaited_until, an awaited loop) then
     * runs in its submitter's thread instead of handing off to the I/O
     * lane thread, when the lane is idle and empty and no synchronous call
     * is in the driver, and can_bound(d) says the device's calls can be
     * bounded right now (else, as without these, on the lane).  The
     * backend's `ioctl` reads the deadline with scio_op_deadline_us (a
     * loop's synchronous steps carry the loop's) and must make the call
     * end by then on its own, with SCIO_IO_TIMEOUT: the caller has no
     * other thread to give it back.  abort_call(d) asks the call the
     * device is making in the driver right now, if any, to end at once
     * (SCIO_CANCELLED): the core calls it, with the device lock held, to
     * cancel an inline operation (close); it must not block or call into
     * the core. */
    int (*can_bound)(scio_device *d);
    void (*abort_call)(scio_device *d);
    /* Optional, with wake_tracking, for a backend without submit: can the
     * device's tracking wait (IS_PRESENT / IS_ABSENT) right now end by an
     * operation's deadline on its own (SCIO_IO_TIMEOUT), whatever the
     * driver does?  Then scio_track_slice runs it in its caller's thread
     * (else it answers SCIO_NOT_SUPPORTED and the caller uses the tracking
     * lane).  The backend's `ioctl` reads the deadline as for can_bound,
     * keeps the card events it saw from one slice to the next (a slice
     * ended by its deadline must not lose the event count it started
     * from), and a wake_tracking ends the slice at once, without blocking
     * its caller (close, cancel).  Called with the device lock held: it
     * must not block or call into the core. */
    int (*can_bound_tracking)(scio_device *d);
    /* Optional (all three or none): wait for the tracking requests of
     * many devices of this backend at once, in the caller's thread (a
     * tracking set, scio.h / track_set.c).  track_set_open makes the
     * backend's waiter state (PC/SC: a context of its own) into *state;
     * track_set_wait blocks in one driver call over the n entries (each a
     * device of this backend with one tracking request, see
     * scio_track_entry) for at most timeout_ms (< 0: no limit; the backend
     * may return sooner), and marks each entry that completed (done = 1,
     * status, driver_code): SCIO_SUCCESS when the call returned (possibly
     * with none done: the caller waits again), SCIO_IO_TIMEOUT, or
     * SCIO_CANCELLED when track_set_interrupt ended it.  A failure of the
     * call itself is every entry's (done, with its status).
     * track_set_interrupt (any thread; it must not block) ends a running
     * call; the core repeats it while the call is running, so it may drop
     * one that arrives too early.  track_set_close frees the state (no
     * call running).  The core counts the wait as a call in the driver of
     * every entry's device, so their channels stay until it returns.
     * track_set_max: the most entries one call takes (0: no limit). */
    scio_status (*track_set_open)(void **state);
    scio_status (*track_set_wait)(void *state, struct scio_track_entry **e, size_t n,
                                  int timeout_ms);
    void (*track_set_interrupt)(void *state);
    void (*track_set_close)(void *state);
    size_t track_set_max;
    /* Release the driver channel: called once, when no call is in the
     * driver (no ioctl running, no submitted operation outstanding). */
    void (*release)(scio_device *d);
    /* Free the backend state: called when the last reference goes. */
    void (*destroy)(scio_device *d);
} scio_backend;

/* Create the core's device around backend state.  Takes a reference on q
 * (or creates a private queue when q is NULL).  On failure nothing is
 * released: the caller still owns `state`. */
scio_status scio_device_create(const scio_backend *be, void *state,
                               scio_queue *q, unsigned close_timeout_ms,
                               scio_device **out);
void *scio_device_state(scio_device *d);

/* The scio_now_us() by which this operation's caller wants it done, 0
 * for none (see can_bound). */
int64_t scio_op_deadline_us(const scio_op *op);

/* Has cancellation of this operation been requested? */
int scio_op_cancelled(scio_op *op);

/* The op_data_size bytes reserved for the backend in a submitted operation
 * (zeroed at submit, aligned for any type). */
void *scio_op_backend_data(scio_op *op);

/* A submitted operation has left the driver with this result: the core
 * records it, posts the completion and drops the driver's references.  Call
 * exactly once per submit, with no core lock held, from any thread. */
void scio_op_complete(scio_op *op, scio_status status, size_t out_len,
                      long driver_code);

/* Little-endian DWORD helpers for the Windows buffer layout. */
static inline uint32_t scio_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline void scio_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Is `code` one of scardio's extension IOCTLs (scio.h, SCIO_EXT_CTL_CODE)? */
static inline int scio_is_extension_ioctl(uint32_t code)
{
    return code == SCIO_IOCTL_SET_SHARE_MODE || code == SCIO_IOCTL_BEGIN_TRANSACTION ||
           code == SCIO_IOCTL_END_TRANSACTION || code == SCIO_IOCTL_RELEASE_CARD;
}

/* The answer of a backend that owns its reader (a direct one) to an
 * extension IOCTL: every connection is exclusive, no other client exists
 * to keep out of a transaction, and the card's power is the caller's (so
 * RELEASE_CARD releases nothing: 0).  The input is checked as the
 * resource manager's backend checks it. */
static inline scio_status scio_direct_extension_ioctl(uint32_t code, const uint8_t *in,
                                                      size_t in_len, uint8_t *out,
                                                      size_t out_cap, size_t *out_len)
{
    *out_len = 0;
    if (code == SCIO_IOCTL_RELEASE_CARD) {
        if (out_cap < 4)
            return SCIO_BUFFER_TOO_SMALL;
        scio_put_u32(out, 0);
        *out_len = 4;
        return SCIO_SUCCESS;
    }
    if (code != SCIO_IOCTL_SET_SHARE_MODE)
        return SCIO_SUCCESS;
    if (in_len < 4 || scio_get_u32(in) > SCIO_SHARE_SHARED)
        return SCIO_INVALID_PARAMETER;
    if (out_cap < 4)
        return SCIO_BUFFER_TOO_SMALL;
    scio_put_u32(out, SCIO_SHARE_EXCLUSIVE);
    *out_len = 4;
    return SCIO_SUCCESS;
}

#endif /* SCIO_BACKEND_H */
