/*
 * dispatch.c - the public scio.h names on Windows, where one build holds two
 * implementations (see native/core/scio_impl.h):
 *
 *   scio_w32_*  Windows device paths (scio_win32.c: DeviceIoControl + IOCP)
 *   scio_gen_*  the generic device layer (native/core) with the IFD-handler
 *               backend (native/ifd): driver DLLs such as the simulated reader
 *
 * Every scio_device, scio_op and scio_queue starts with an int tag naming its
 * implementation; each call goes to the implementation of its object.  A
 * queue belongs to one implementation: scio_queue_new makes one for device
 * paths (as before), scio_queue_new_ifd one for IFD-handler devices, and a
 * device opened with the other kind's queue is refused.  NULL devices,
 * operations and queues get the harmless answer of the Windows backend.
 *
 * Not compiled on POSIX, where the generic layer provides the names itself.
 */
#define SCIO_IMPL_DISPATCH
#include "core/scio_impl.h"
#include "scio.h"

#include <string.h>

#ifndef SCIO_DISPATCH
#error "dispatch.c is for Windows builds only"
#endif

/* The prototypes of one implementation, prefix p. */
#define SCIO_DECLARE_IMPL(p)                                                   \
    scio_queue *p##queue_new(void);                                            \
    int p##queue_fd(const scio_queue *q);                                      \
    void *p##queue_handle(const scio_queue *q);                                \
    int p##queue_pop(scio_queue *q, int timeout_ms, scio_completion *out);     \
    void p##queue_wake(scio_queue *q);                                         \
    size_t p##queue_pending(scio_queue *q);                                    \
    void p##queue_free(scio_queue *q);                                         \
    scio_queue *p##device_queue(scio_device *d);                               \
    scio_status p##ioctl(scio_device *d, uint32_t code, const void *in,        \
                         size_t in_len, void *out, size_t out_cap,             \
                         size_t *out_len);                                     \
    long p##device_driver_code(scio_device *d);                                \
    void p##shutdown(scio_device *d);                                          \
    void p##close(scio_device *d);                                             \
    scio_status p##submit(scio_device *d, uint32_t code, const void *in,       \
                          size_t in_len, size_t out_cap, uint64_t user,        \
                          scio_op **op_out);                                   \
    uint64_t p##op_id(const scio_op *op);                                      \
    int p##op_done(scio_op *op);                                               \
    int p##op_wait(scio_op *op, int timeout_ms);                               \
    scio_status p##op_status(scio_op *op);                                     \
    const uint8_t *p##op_output(scio_op *op, size_t *len);                     \
    long p##op_driver_code(scio_op *op);                                       \
    void p##op_cancel(scio_op *op);                                            \
    void p##op_release(scio_op *op);                                           \
    void p##cancel_all(scio_device *d);

SCIO_DECLARE_IMPL(scio_gen_)
SCIO_DECLARE_IMPL(scio_w32_)

scio_status scio_gen_open_ifd(const char *library, const char *device_name,
                              unsigned long lun, scio_queue *q,
                              const scio_ifd_options *opts, scio_device **out,
                              char *errbuf, size_t errlen);
scio_status scio_w32_open_win32(const wchar_t *path, scio_queue *q,
                                scio_device **out, char *errbuf, size_t errlen);

/* The tag: the first member of every object of both implementations (C11
 * 6.7.2.1: a pointer to a structure points to its first member). */
static int kind_of(const void *obj)
{
    return *(const int *)obj;
}

#define IS_GEN(obj) ((obj) != NULL && kind_of(obj) == SCIO_KIND_GENERIC)
#define IS_W32(obj) ((obj) != NULL && kind_of(obj) == SCIO_KIND_WIN32)

static void set_err(char *errbuf, size_t errlen, const char *msg)
{
    size_t n;
    if (!errbuf || !errlen)
        return;
    n = strlen(msg);
    if (n >= errlen)
        n = errlen - 1;
    memcpy(errbuf, msg, n);
    errbuf[n] = '\0';
}

/* ---- queues ---------------------------------------------------------------- */

scio_queue *scio_queue_new(void) { return scio_w32_queue_new(); }
scio_queue *scio_queue_new_ifd(void) { return scio_gen_queue_new(); }

int scio_queue_fd(const scio_queue *q)
{
    return IS_GEN(q) ? scio_gen_queue_fd(q) : -1;
}

void *scio_queue_handle(const scio_queue *q)
{
    if (IS_GEN(q))
        return scio_gen_queue_handle(q);
    return IS_W32(q) ? scio_w32_queue_handle(q) : NULL;
}

int scio_queue_pop(scio_queue *q, int timeout_ms, scio_completion *out)
{
    if (IS_GEN(q))
        return scio_gen_queue_pop(q, timeout_ms, out);
    return IS_W32(q) ? scio_w32_queue_pop(q, timeout_ms, out) : 0;
}

void scio_queue_wake(scio_queue *q)
{
    if (IS_GEN(q))
        scio_gen_queue_wake(q);
    else if (IS_W32(q))
        scio_w32_queue_wake(q);
}

size_t scio_queue_pending(scio_queue *q)
{
    if (IS_GEN(q))
        return scio_gen_queue_pending(q);
    return IS_W32(q) ? scio_w32_queue_pending(q) : 0;
}

void scio_queue_free(scio_queue *q)
{
    if (IS_GEN(q))
        scio_gen_queue_free(q);
    else if (IS_W32(q))
        scio_w32_queue_free(q);
}

/* ---- opening ------------------------------------------------------------------ */

scio_status scio_open_ifd(const char *library, const char *device_name,
                          unsigned long lun, scio_queue *q,
                          const scio_ifd_options *opts, scio_device **out,
                          char *errbuf, size_t errlen)
{
    if (q && !IS_GEN(q)) {
        if (out)
            *out = NULL;
        set_err(errbuf, errlen,
                "this completion queue serves Windows device paths: open "
                "IFD-handler drivers with a queue from scio_queue_new_ifd() "
                "(or NULL for a private queue)");
        return SCIO_INVALID_PARAMETER;
    }
    return scio_gen_open_ifd(library, device_name, lun, q, opts, out, errbuf, errlen);
}

scio_status scio_open_win32(const wchar_t *path, scio_queue *q,
                            scio_device **out, char *errbuf, size_t errlen)
{
    if (q && !IS_W32(q)) {
        if (out)
            *out = NULL;
        set_err(errbuf, errlen,
                "this completion queue serves IFD-handler drivers: open "
                "Windows device paths with a queue from scio_queue_new() "
                "(or NULL for a private queue)");
        return SCIO_INVALID_PARAMETER;
    }
    return scio_w32_open_win32(path, q, out, errbuf, errlen);
}

/* ---- devices ------------------------------------------------------------------ */

scio_queue *scio_device_queue(scio_device *d)
{
    if (IS_GEN(d))
        return scio_gen_device_queue(d);
    return IS_W32(d) ? scio_w32_device_queue(d) : NULL;
}

scio_status scio_ioctl(scio_device *d, uint32_t code,
                       const void *in, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len)
{
    if (IS_GEN(d))
        return scio_gen_ioctl(d, code, in, in_len, out, out_cap, out_len);
    if (IS_W32(d))
        return scio_w32_ioctl(d, code, in, in_len, out, out_cap, out_len);
    if (out_len)
        *out_len = 0;
    return SCIO_INVALID_PARAMETER;
}

long scio_device_driver_code(scio_device *d)
{
    if (IS_GEN(d))
        return scio_gen_device_driver_code(d);
    return IS_W32(d) ? scio_w32_device_driver_code(d) : 0;
}

void scio_shutdown(scio_device *d)
{
    if (IS_GEN(d))
        scio_gen_shutdown(d);
    else if (IS_W32(d))
        scio_w32_shutdown(d);
}

void scio_close(scio_device *d)
{
    if (IS_GEN(d))
        scio_gen_close(d);
    else if (IS_W32(d))
        scio_w32_close(d);
}

void scio_cancel_all(scio_device *d)
{
    if (IS_GEN(d))
        scio_gen_cancel_all(d);
    else if (IS_W32(d))
        scio_w32_cancel_all(d);
}

/* ---- operations --------------------------------------------------------------- */

scio_status scio_submit(scio_device *d, uint32_t code,
                        const void *in, size_t in_len, size_t out_cap,
                        uint64_t user, scio_op **op_out)
{
    if (IS_GEN(d))
        return scio_gen_submit(d, code, in, in_len, out_cap, user, op_out);
    if (IS_W32(d))
        return scio_w32_submit(d, code, in, in_len, out_cap, user, op_out);
    if (op_out)
        *op_out = NULL;
    return SCIO_INVALID_PARAMETER;
}

uint64_t scio_op_id(const scio_op *op)
{
    if (IS_GEN(op))
        return scio_gen_op_id(op);
    return IS_W32(op) ? scio_w32_op_id(op) : 0;
}

int scio_op_done(scio_op *op)
{
    if (IS_GEN(op))
        return scio_gen_op_done(op);
    return IS_W32(op) ? scio_w32_op_done(op) : 0;
}

int scio_op_wait(scio_op *op, int timeout_ms)
{
    if (IS_GEN(op))
        return scio_gen_op_wait(op, timeout_ms);
    return IS_W32(op) ? scio_w32_op_wait(op, timeout_ms) : 0;
}

scio_status scio_op_status(scio_op *op)
{
    if (IS_GEN(op))
        return scio_gen_op_status(op);
    return IS_W32(op) ? scio_w32_op_status(op) : SCIO_INVALID_PARAMETER;
}

const uint8_t *scio_op_output(scio_op *op, size_t *len)
{
    if (IS_GEN(op))
        return scio_gen_op_output(op, len);
    if (IS_W32(op))
        return scio_w32_op_output(op, len);
    if (len)
        *len = 0;
    return NULL;
}

long scio_op_driver_code(scio_op *op)
{
    if (IS_GEN(op))
        return scio_gen_op_driver_code(op);
    return IS_W32(op) ? scio_w32_op_driver_code(op) : 0;
}

void scio_op_cancel(scio_op *op)
{
    if (IS_GEN(op))
        scio_gen_op_cancel(op);
    else if (IS_W32(op))
        scio_w32_op_cancel(op);
}

void scio_op_release(scio_op *op)
{
    if (IS_GEN(op))
        scio_gen_op_release(op);
    else if (IS_W32(op))
        scio_w32_op_release(op);
}
