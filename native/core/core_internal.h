/*
 * core_internal.h - what the generic device layer shares with backends.
 *
 * The generic layer owns devices, operations and completion queues; a backend
 * supplies the blocking work (one synchronous IOCTL) and a way to wake a
 * tracking request (IS_PRESENT / IS_ABSENT) that blocks inside the driver.
 */
#ifndef SCIO_CORE_INTERNAL_H
#define SCIO_CORE_INTERNAL_H

#include "scio_impl.h" /* before scio.h: renames on Windows */
#include "scio.h"
#include "sync.h"

typedef struct scio_backend {
    const char *name;
    /* Run one IOCTL to completion.  `op` is the overlapped operation being
     * served (NULL never happens: synchronous calls are served through an
     * internal operation too), so backends can poll scio_op_cancelled(op).
     * The input has been validated against SCIO_MAX_INPUT, the output
     * capacity clamped to SCIO_MAX_OUTPUT. */
    scio_status (*ioctl)(scio_device *d, scio_op *op, uint32_t code,
                         const uint8_t *in, size_t in_len,
                         uint8_t *out, size_t out_cap, size_t *out_len,
                         long *driver_code);
    /* Wake a tracking request blocked in the driver (may be called
     * repeatedly, from any thread). */
    void (*wake_tracking)(scio_device *d);
    /* Release the driver channel: called once, when no call is in the driver. */
    void (*release)(scio_device *d);
    /* Free the backend state: called when the last reference goes. */
    void (*destroy)(scio_device *d);
} scio_backend;

/* Create the generic part of a device around backend state.  Takes a
 * reference on q (or creates a private queue when q is NULL). */
scio_status scio_device_create(const scio_backend *be, void *state,
                               scio_queue *q, unsigned close_timeout_ms,
                               scio_device **out);
void *scio_device_state(scio_device *d);

/* For backends: has cancellation of this operation been requested? */
int scio_op_cancelled(scio_op *op);

/* Queue internals used by the device layer. */
void scio_queue_ref(scio_queue *q);
void scio_queue_unref(scio_queue *q);
void scio_queue_post(scio_queue *q, uint64_t op_id, uint64_t user, scio_status st);
/* Drop a completion that has not been popped yet (released operation). */
void scio_queue_forget(scio_queue *q, uint64_t op_id);

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

#endif /* SCIO_CORE_INTERNAL_H */
