# Declarations of the C core API (native/scio.h) for the binding.
from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "scio.h" nogil:
    ctypedef uint32_t scio_status
    ctypedef struct scio_queue:
        pass
    ctypedef struct scio_device:
        pass
    ctypedef struct scio_op:
        pass
    ctypedef struct scio_completion:
        uint64_t op_id
        uint64_t user
        scio_status status
    ctypedef struct scio_ifd_options:
        unsigned poll_interval_ms
        unsigned close_timeout_ms
    ctypedef void (*scio_log_fn)(int priority, const char *message, void *ctx) noexcept

    enum:
        SCIO_SUCCESS
        SCIO_PENDING
        SCIO_NO_SUCH_DEVICE
        SCIO_MAX_INPUT
        SCIO_MAX_OUTPUT
        SCIO_MAX_ATR
        SCIO_MAX_APDU
        SCIO_MAX_RESPONSE
        SCIO_DEFAULT_POLL_MS
        SCIO_DEFAULT_CLOSE_MS

    const char *scio_status_name(scio_status status)

    scio_queue *scio_queue_new()
    int scio_queue_fd(const scio_queue *q)
    int scio_queue_pop(scio_queue *q, int timeout_ms, scio_completion *out)
    void scio_queue_wake(scio_queue *q)
    size_t scio_queue_pending(scio_queue *q)
    void scio_queue_free(scio_queue *q)

    scio_status scio_open_ifd(const char *library, const char *device_name,
                              unsigned long lun, scio_queue *q,
                              const scio_ifd_options *opts, scio_device **out,
                              char *errbuf, size_t errlen)
    int scio_list_paths(char *buf, size_t cap, size_t *needed)
    scio_status scio_open_path(const char *path, scio_queue *q, scio_device **out,
                               char *errbuf, size_t errlen)
    scio_queue *scio_device_queue(scio_device *d)
    scio_status scio_ioctl(scio_device *d, uint32_t code,
                           const void *inp, size_t in_len,
                           void *out, size_t out_cap, size_t *out_len)
    long scio_device_driver_code(scio_device *d)
    void scio_shutdown(scio_device *d)
    void scio_close(scio_device *d)

    scio_status scio_submit(scio_device *d, uint32_t code,
                            const void *inp, size_t in_len, size_t out_cap,
                            uint64_t user, scio_op **op_out)
    uint64_t scio_op_id(const scio_op *op)
    int scio_op_done(scio_op *op)
    int scio_op_wait(scio_op *op, int timeout_ms)
    scio_status scio_op_status(scio_op *op)
    const uint8_t *scio_op_output(scio_op *op, size_t *len)
    long scio_op_driver_code(scio_op *op)
    void scio_op_cancel(scio_op *op)
    void scio_op_release(scio_op *op)
    void scio_cancel_all(scio_device *d)

    void scio_set_log(scio_log_fn fn, void *ctx)
