# Declarations of the C core API (native/scio.h) for the binding.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stddef cimport wchar_t

cdef extern from "scio.h" nogil:
    # ---- status space
    ctypedef uint32_t scio_status
    const scio_status SCIO_SUCCESS
    const scio_status SCIO_PENDING
    const scio_status SCIO_UNSUCCESSFUL
    const scio_status SCIO_NOT_IMPLEMENTED
    const scio_status SCIO_INVALID_PARAMETER
    const scio_status SCIO_NO_SUCH_DEVICE
    const scio_status SCIO_INVALID_DEVICE_REQUEST
    const scio_status SCIO_UNRECOGNIZED_MEDIA
    const scio_status SCIO_NO_MEMORY
    const scio_status SCIO_BUFFER_TOO_SMALL
    const scio_status SCIO_OBJECT_NAME_NOT_FOUND
    const scio_status SCIO_SHARING_VIOLATION
    const scio_status SCIO_INVALID_IMAGE_FORMAT
    const scio_status SCIO_INSUFFICIENT_RESOURCES
    const scio_status SCIO_DEVICE_NOT_CONNECTED
    const scio_status SCIO_DEVICE_BUSY
    const scio_status SCIO_IO_TIMEOUT
    const scio_status SCIO_NOT_SUPPORTED
    const scio_status SCIO_CANCELLED
    const scio_status SCIO_DLL_NOT_FOUND
    const scio_status SCIO_ENTRYPOINT_NOT_FOUND
    const scio_status SCIO_NO_MEDIA
    const scio_status SCIO_INVALID_DEVICE_STATE
    const scio_status SCIO_POSSIBLE_DEADLOCK
    const scio_status SCIO_IO_DEVICE_ERROR
    const scio_status SCIO_INVALID_BUFFER_SIZE
    const scio_status SCIO_DEVICE_DATA_ERROR
    const scio_status SCIO_NO_SERVICE

    const char *scio_status_name(scio_status status)

    # ---- the IOCTL contract
    uint32_t SCIO_CTL_CODE(uint32_t n)
    const uint32_t SCIO_IOCTL_POWER
    const uint32_t SCIO_IOCTL_GET_ATTRIBUTE
    const uint32_t SCIO_IOCTL_SET_ATTRIBUTE
    const uint32_t SCIO_IOCTL_CONFISCATE
    const uint32_t SCIO_IOCTL_TRANSMIT
    const uint32_t SCIO_IOCTL_EJECT
    const uint32_t SCIO_IOCTL_SWALLOW
    const uint32_t SCIO_IOCTL_IS_PRESENT
    const uint32_t SCIO_IOCTL_IS_ABSENT
    const uint32_t SCIO_IOCTL_SET_PROTOCOL
    const uint32_t SCIO_IOCTL_GET_STATE
    const uint32_t SCIO_IOCTL_GET_LAST_ERROR
    uint32_t SCIO_EXT_CTL_CODE(uint32_t n)
    const uint32_t SCIO_IOCTL_SET_SHARE_MODE
    const uint32_t SCIO_IOCTL_BEGIN_TRANSACTION
    const uint32_t SCIO_IOCTL_END_TRANSACTION
    const uint32_t SCIO_IOCTL_RELEASE_CARD
    const uint32_t SCIO_SHARE_DEFAULT
    const uint32_t SCIO_SHARE_EXCLUSIVE
    const uint32_t SCIO_SHARE_SHARED
    uint32_t SCIO_VENDOR_CTL_WIN(uint32_t n)
    uint32_t SCIO_VENDOR_CTL_PCSC(uint32_t n)

    const uint32_t SCIO_STATE_UNKNOWN
    const uint32_t SCIO_STATE_ABSENT
    const uint32_t SCIO_STATE_PRESENT
    const uint32_t SCIO_STATE_SWALLOWED
    const uint32_t SCIO_STATE_POWERED
    const uint32_t SCIO_STATE_NEGOTIABLE
    const uint32_t SCIO_STATE_SPECIFIC

    const uint32_t SCIO_POWER_DOWN
    const uint32_t SCIO_COLD_RESET
    const uint32_t SCIO_WARM_RESET

    const uint32_t SCIO_PROTOCOL_OPTIMAL
    const uint32_t SCIO_PROTOCOL_T0
    const uint32_t SCIO_PROTOCOL_T1
    const uint32_t SCIO_PROTOCOL_RAW
    const uint32_t SCIO_PROTOCOL_DEFAULT

    const uint32_t SCIO_ATTR_VENDOR_NAME
    const uint32_t SCIO_ATTR_VENDOR_IFD_TYPE
    const uint32_t SCIO_ATTR_VENDOR_IFD_VERSION
    const uint32_t SCIO_ATTR_VENDOR_IFD_SERIAL_NO
    const uint32_t SCIO_ATTR_CHANNEL_ID
    const uint32_t SCIO_ATTR_CHARACTERISTICS
    const uint32_t SCIO_ATTR_CURRENT_PROTOCOL_TYPE
    const uint32_t SCIO_ATTR_ATR_STRING
    const uint32_t SCIO_ATTR_DEVICE_UNIT

    # Limits (small enough for an int).
    enum:
        SCIO_IO_REQUEST_SIZE
        SCIO_MAX_ATR
        SCIO_MAX_APDU
        SCIO_MAX_RESPONSE
        SCIO_MAX_INPUT
        SCIO_MAX_OUTPUT

    # ---- completion queues
    ctypedef struct scio_queue:
        pass
    ctypedef struct scio_completion:
        uint64_t op_id
        uint64_t user
        scio_status status

    scio_queue *scio_queue_new()
    int scio_queue_fd(const scio_queue *q)
    void *scio_queue_handle(const scio_queue *q)
    int scio_queue_pop(scio_queue *q, int timeout_ms, scio_completion *out)
    void scio_queue_wake(scio_queue *q)
    size_t scio_queue_pending(scio_queue *q)
    void scio_queue_free(scio_queue *q)

    # ---- devices
    ctypedef struct scio_device:
        pass
    ctypedef struct scio_ifd_options:
        unsigned poll_interval_ms
        unsigned close_timeout_ms
    enum:
        SCIO_DEFAULT_POLL_MS
        SCIO_DEFAULT_CLOSE_MS

    scio_status scio_open_ifd(const char *library, const char *device_name,
                              unsigned long lun, scio_queue *q,
                              const scio_ifd_options *opts, scio_device **out,
                              char *errbuf, size_t errlen)
    # Declared by scio.h on Windows only: never reference it elsewhere.
    scio_status scio_open_win32(const wchar_t *path, scio_queue *q,
                                scio_device **out, char *errbuf, size_t errlen)
    int scio_list_paths(char *buf, size_t cap, size_t *needed)
    scio_status scio_open_path(const char *path, scio_queue *q, scio_device **out,
                               char *errbuf, size_t errlen)
    ctypedef struct scio_pcsc_options:
        unsigned share_mode
        unsigned close_timeout_ms
    const unsigned SCIO_PCSC_SHARE_SHARED
    const unsigned SCIO_PCSC_SHARE_EXCLUSIVE
    scio_status scio_pcsc_list_readers(char *buf, size_t cap, size_t *needed,
                                       char *errbuf, size_t errlen)
    scio_status scio_open_pcsc(const char *reader, scio_queue *q,
                               const scio_pcsc_options *opts, scio_device **out,
                               char *errbuf, size_t errlen)
    ctypedef struct scio_pcsc_watch:
        pass
    const unsigned SCIO_PCSC_WATCH_INFINITE
    scio_status scio_pcsc_watch_open(scio_pcsc_watch **out, char *errbuf, size_t errlen)
    scio_status scio_pcsc_watch_wait(scio_pcsc_watch *w, unsigned timeout_ms, unsigned known,
                                     unsigned *count, long *driver_code)
    void scio_pcsc_watch_wake(scio_pcsc_watch *w)
    void scio_pcsc_watch_close(scio_pcsc_watch *w)
    scio_queue *scio_device_queue(scio_device *d)
    scio_status scio_ioctl(scio_device *d, uint32_t code,
                           const void *inp, size_t in_len,
                           void *out, size_t out_cap, size_t *out_len)
    scio_status scio_track_slice(scio_device *d, uint32_t code, int64_t timeout_us,
                                 unsigned *wait)
    long scio_device_driver_code(scio_device *d)
    void scio_shutdown(scio_device *d)
    void scio_close(scio_device *d)

    # ---- overlapped operations
    ctypedef struct scio_op:
        pass
    scio_status scio_submit(scio_device *d, uint32_t code,
                            const void *inp, size_t in_len, size_t out_cap,
                            uint64_t user, scio_op **op_out)
    scio_status scio_submit_to(scio_device *d, scio_queue *q, uint32_t code,
                               const void *inp, size_t in_len, size_t out_cap,
                               uint64_t user, scio_op **op_out)
    scio_status scio_submit_awaited(scio_device *d, uint32_t code,
                                    const void *inp, size_t in_len, size_t out_cap,
                                    scio_op **op_out)
    scio_status scio_submit_awaited_for(scio_device *d, uint32_t code,
                                        const void *inp, size_t in_len, size_t out_cap,
                                        int64_t timeout_us, scio_op **op_out)
    int scio_op_await(scio_op *op, int timeout_ms)
    int scio_lane_apart(scio_device *d)
    uint64_t scio_op_id(const scio_op *op)
    int scio_op_done(scio_op *op)
    int scio_op_wait(scio_op *op, int timeout_ms)
    scio_status scio_op_status(scio_op *op)
    const uint8_t *scio_op_output(scio_op *op, size_t *len)
    long scio_op_driver_code(scio_op *op)
    void scio_op_cancel(scio_op *op)
    void scio_op_release(scio_op *op)
    void scio_cancel_all(scio_device *d)

    # ---- tracking many devices from one thread
    ctypedef struct scio_track_set:
        pass
    scio_status scio_track_set_new(scio_device *d, scio_track_set **out)
    int scio_track_set_accepts(scio_track_set *s, scio_device *d)
    size_t scio_track_set_capacity(const scio_track_set *s)
    scio_status scio_track_set_submit(scio_track_set *s, scio_device *d, uint32_t code,
                                      uint64_t user, scio_op **op_out)
    int scio_track_set_wait(scio_track_set *s, int timeout_ms, scio_completion *out,
                            size_t cap)
    void scio_track_set_wake(scio_track_set *s)
    size_t scio_track_set_pending(scio_track_set *s)
    void scio_track_set_free(scio_track_set *s)

    # ---- calls on the I/O lane
    ctypedef scio_status (*scio_call_fn)(scio_op *op, void *ctx, int run) noexcept
    scio_status scio_submit_call(scio_device *d, scio_call_fn fn, void *ctx,
                                 uint64_t user, scio_op **op_out)

    # ---- the connect and power-down loops
    enum:
        SCIO_LOOP_RECORDS
        SCIO_LOOP_TRAIL
    const unsigned SCIO_TRAIL_ATR
    const unsigned SCIO_TRAIL_ATR_PROTOCOL
    const unsigned SCIO_TRAIL_SWALLOW
    const unsigned SCIO_TRAIL_COLD_RESET
    const unsigned SCIO_TRAIL_WARM_RESET
    const unsigned SCIO_TRAIL_SET_PROTOCOL
    const unsigned SCIO_TRAIL_POWER_DOWN
    const unsigned SCIO_LOOP_CONNECT
    const unsigned SCIO_LOOP_POWER_DOWN
    ctypedef struct scio_loop_step:
        uint32_t code
        uint32_t in_len
        uint32_t in_ "in"
        scio_status status
        long driver_code
        uint32_t out_len
        uint8_t out[SCIO_MAX_ATR]
    ctypedef struct scio_loop:
        uint32_t kind
        uint32_t protocols
        unsigned max_steps
        int64_t timeout_us
        int complete
        unsigned n
        scio_loop_step step[SCIO_LOOP_RECORDS]
        unsigned atr_len
        unsigned trail_len
        uint8_t atr[SCIO_MAX_ATR]
        uint8_t trail[SCIO_LOOP_TRAIL]
        int current
        int64_t deadline
    void scio_loop_run(scio_device *d, scio_loop *c, scio_op *op)
    scio_status scio_submit_loop(scio_device *d, const scio_loop *inp,
                                 int awaited, uint64_t user, scio_op **op_out)
    uint32_t scio_loop_ioctl(scio_op *op)

    # ---- fork
    unsigned long scio_fork_generation
    int scio_watch_forks()

    # ---- driver log
    ctypedef void (*scio_log_fn)(int priority, const char *message, void *ctx) noexcept
    void scio_set_log(scio_log_fn fn, void *ctx)
