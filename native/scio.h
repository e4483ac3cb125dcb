/*
 * scio.h - the scardio C core: one API over every reader backend.
 *
 * A device is a smart-card reader opened through a backend, chosen once at
 * open: an IFD-handler driver (scio_open_ifd, every platform), a Windows
 * device path (scio_open_win32 / scio_open_path, DeviceIoControl), or a
 * reader held by the PC/SC resource manager (scio_open_pcsc).  Every
 * request is an IOCTL of the Windows smart-card reader contract
 * (IOCTL_SMARTCARD_*: CTL_CODE(FILE_DEVICE_SMARTCARD, n, METHOD_BUFFERED,
 * FILE_ANY_ACCESS), codes below) with Windows buffer layout (32-bit
 * little-endian DWORDs) on every platform.
 *
 * Requests run synchronously (scio_ioctl) or overlapped (scio_submit).  An
 * overlapped request completes into the completion queue the device was opened
 * with; the queue can be waited on with a timeout and polled through a file
 * descriptor (POSIX) or an event handle (Windows) from an event loop.
 *
 * Thread safety: every function may be called from any thread.  A device must
 * not be used after scio_close() returns; an operation must not be used after
 * scio_op_release() returns.
 */
#ifndef SCIO_H
#define SCIO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status space: NTSTATUS values, shared by every backend ------------ */
typedef uint32_t scio_status;

#define SCIO_SUCCESS                  0x00000000u
#define SCIO_PENDING                  0x00000103u
#define SCIO_UNSUCCESSFUL             0xC0000001u
#define SCIO_NOT_IMPLEMENTED          0xC0000002u
#define SCIO_INVALID_PARAMETER        0xC000000Du
#define SCIO_NO_SUCH_DEVICE           0xC000000Eu
#define SCIO_INVALID_DEVICE_REQUEST   0xC0000010u /* unknown IOCTL code */
#define SCIO_UNRECOGNIZED_MEDIA       0xC0000014u
#define SCIO_NO_MEMORY                0xC0000017u
#define SCIO_BUFFER_TOO_SMALL         0xC0000023u
#define SCIO_OBJECT_NAME_NOT_FOUND    0xC0000034u
#define SCIO_SHARING_VIOLATION        0xC0000043u
#define SCIO_INVALID_IMAGE_FORMAT     0xC000007Bu /* not a driver library */
#define SCIO_INSUFFICIENT_RESOURCES   0xC000009Au
#define SCIO_DEVICE_NOT_CONNECTED     0xC000009Du
#define SCIO_DEVICE_BUSY              0x80000011u /* a warning, as on Windows */
#define SCIO_IO_TIMEOUT               0xC00000B5u
#define SCIO_NOT_SUPPORTED            0xC00000BBu
#define SCIO_CANCELLED                0xC0000120u
#define SCIO_DLL_NOT_FOUND            0xC0000135u
#define SCIO_ENTRYPOINT_NOT_FOUND     0xC0000139u /* library lacks IFDH symbols */
#define SCIO_NO_MEDIA                 0xC0000178u /* no card */
#define SCIO_INVALID_DEVICE_STATE     0xC0000184u
#define SCIO_POSSIBLE_DEADLOCK        0xC0000194u /* a driver call re-entered its reader */
#define SCIO_IO_DEVICE_ERROR          0xC0000185u /* driver failed the call */
#define SCIO_INVALID_BUFFER_SIZE      0xC0000206u /* input larger than allowed */
#define SCIO_DEVICE_DATA_ERROR        0xC000009Cu /* driver returned bad data */
/* scardio's own (customer bit set): the PC/SC resource manager is not
 * running, or stopped (SCARD_E_NO_SERVICE / SCARD_E_SERVICE_STOPPED). */
#define SCIO_NO_SERVICE               0xE0000001u

/* Short, stable name of a status ("NO_MEDIA"), or NULL if unknown. */
const char *scio_status_name(scio_status status);

/* ---- the IOCTL contract: IOCTL_SMARTCARD_* codes ------------------------ */
#define SCIO_CTL_CODE(n) (0x00310000u | ((uint32_t)(n) << 2))
#define SCIO_IOCTL_POWER           SCIO_CTL_CODE(1)
#define SCIO_IOCTL_GET_ATTRIBUTE   SCIO_CTL_CODE(2)
#define SCIO_IOCTL_SET_ATTRIBUTE   SCIO_CTL_CODE(3)
#define SCIO_IOCTL_CONFISCATE      SCIO_CTL_CODE(4)
#define SCIO_IOCTL_TRANSMIT        SCIO_CTL_CODE(5)
#define SCIO_IOCTL_EJECT           SCIO_CTL_CODE(6)
#define SCIO_IOCTL_SWALLOW         SCIO_CTL_CODE(7)
#define SCIO_IOCTL_IS_PRESENT      SCIO_CTL_CODE(10)
#define SCIO_IOCTL_IS_ABSENT       SCIO_CTL_CODE(11)
#define SCIO_IOCTL_SET_PROTOCOL    SCIO_CTL_CODE(12)
#define SCIO_IOCTL_GET_STATE       SCIO_CTL_CODE(14)
#define SCIO_IOCTL_GET_LAST_ERROR  SCIO_CTL_CODE(15)

/* scardio's extensions of the contract: IOCTLs no Windows driver defines,
 * numbered in a customer device type (0x8031) so that no driver ever sees
 * one -- every backend answers them itself.
 *   SET_SHARE_MODE     in: u32 SCIO_SHARE_*; out: u32 the mode now in force
 *                      (EXCLUSIVE or SHARED).  How the next card connection
 *                      is shared with other clients; a connection held in
 *                      another mode is switched at once, the card untouched.
 *   BEGIN_TRANSACTION  no data.  Keep every other client off the connected
 *                      card until END_TRANSACTION (or the connection ends);
 *                      waits while another client holds a transaction.
 *   END_TRANSACTION    no data.  INVALID_DEVICE_STATE without a transaction.
 *   RELEASE_CARD       out: u32.  The card was left (a LEAVE whose power-down
 *                      delay ran out): 1 when the backend let go of it and
 *                      its power is now the resource manager's business
 *                      (through PC/SC: SCardDisconnect(SCARD_LEAVE_CARD),
 *                      which leaves every other client's card alone); 0 when
 *                      the caller owns the card's power and powers it down
 *                      itself (a direct backend: nothing is released).
 * Through PC/SC these are the share mode of SCardConnect / SCardReconnect
 * and SCardBeginTransaction / SCardEndTransaction.  A direct backend owns
 * its reader, so every connection is exclusive (SET_SHARE_MODE answers
 * EXCLUSIVE whatever is asked) and there is no other client to keep out
 * (the transaction IOCTLs succeed at once); exclusion between the threads
 * of one process is the caller's business. */
#define SCIO_EXT_CTL_CODE(n) (0x80310000u | ((uint32_t)(n) << 2))
#define SCIO_IOCTL_SET_SHARE_MODE     SCIO_EXT_CTL_CODE(1)
#define SCIO_IOCTL_BEGIN_TRANSACTION  SCIO_EXT_CTL_CODE(2)
#define SCIO_IOCTL_END_TRANSACTION    SCIO_EXT_CTL_CODE(3)
#define SCIO_IOCTL_RELEASE_CARD       SCIO_EXT_CTL_CODE(4)

/* SET_SHARE_MODE values: DEFAULT is the mode the device was opened with. */
#define SCIO_SHARE_DEFAULT    0u
#define SCIO_SHARE_EXCLUSIVE  1u
#define SCIO_SHARE_SHARED     2u

/* Vendor control codes: Windows style (function 2048..4095) and pcsc-lite
 * style (0x42000000 + n).  Both reach the driver's vendor control entry. */
#define SCIO_VENDOR_CTL_WIN(n)   SCIO_CTL_CODE(n)
#define SCIO_VENDOR_CTL_PCSC(n)  (0x42000000u + (uint32_t)(n))

/* Card states reported by GET_STATE. */
#define SCIO_STATE_UNKNOWN     0u
#define SCIO_STATE_ABSENT      1u
#define SCIO_STATE_PRESENT     2u
#define SCIO_STATE_SWALLOWED   3u
#define SCIO_STATE_POWERED     4u
#define SCIO_STATE_NEGOTIABLE  5u
#define SCIO_STATE_SPECIFIC    6u

/* POWER input. */
#define SCIO_POWER_DOWN   0u
#define SCIO_COLD_RESET   1u
#define SCIO_WARM_RESET   2u

/* Protocol masks (SET_PROTOCOL input / output, SCARD_IO_REQUEST.proto). */
#define SCIO_PROTOCOL_OPTIMAL  0x00000000u
#define SCIO_PROTOCOL_T0       0x00000001u
#define SCIO_PROTOCOL_T1       0x00000002u
#define SCIO_PROTOCOL_RAW      0x00010000u
#define SCIO_PROTOCOL_DEFAULT  0x80000000u

/* Attributes: SCARD_ATTR_VALUE(class, tag) = class << 16 | tag. */
#define SCIO_ATTR_VENDOR_NAME            0x00010100u
#define SCIO_ATTR_VENDOR_IFD_TYPE        0x00010101u
#define SCIO_ATTR_VENDOR_IFD_VERSION     0x00010102u
#define SCIO_ATTR_VENDOR_IFD_SERIAL_NO   0x00010103u
#define SCIO_ATTR_CHANNEL_ID             0x00020110u
#define SCIO_ATTR_CHARACTERISTICS        0x00060150u
#define SCIO_ATTR_CURRENT_PROTOCOL_TYPE  0x00080201u
#define SCIO_ATTR_ATR_STRING             0x00090303u
#define SCIO_ATTR_DEVICE_UNIT            0x7FFF0001u

/* Limits.  A TRANSMIT input is SCARD_IO_REQUEST (8) + an APDU of at most
 * 4 + 3 + 65535 + 3 bytes; its output is SCARD_IO_REQUEST + 65536 + 2.  An
 * input larger than SCIO_MAX_INPUT is refused with SCIO_INVALID_BUFFER_SIZE,
 * an output capacity larger than SCIO_MAX_OUTPUT is clamped to it. */
#define SCIO_IO_REQUEST_SIZE  8u
#define SCIO_MAX_ATR          33u
#define SCIO_MAX_APDU         (4u + 3u + 65535u + 3u)
#define SCIO_MAX_RESPONSE     (65536u + 2u)
#define SCIO_MAX_INPUT        (SCIO_IO_REQUEST_SIZE + SCIO_MAX_APDU)
#define SCIO_MAX_OUTPUT       (SCIO_IO_REQUEST_SIZE + SCIO_MAX_RESPONSE)

/* ---- completion queues ------------------------------------------------- */
typedef struct scio_queue scio_queue;

/* What scio_queue_pop hands back: a copy, so no pointer outlives the lock. */
typedef struct scio_completion {
    uint64_t op_id;      /* scio_op_id() of the completed operation */
    uint64_t user;       /* the cookie given to scio_submit */
    scio_status status;
} scio_completion;

/* A new queue, or NULL (out of memory / descriptors).  One queue may serve
 * any number of devices, of any backend. */
scio_queue *scio_queue_new(void);
/* The queue's waitable, in two forms (one of them exists per platform): it
 * is readable / signalled exactly while completions (or wakes, see
 * scio_queue_wake) wait to be popped, and stays valid while the queue
 * lives; never read, reset or close it yourself.
 * POSIX: a descriptor for poll/select (an eventfd on Linux, the read end of
 * a pipe elsewhere); -1 on Windows. */
int scio_queue_fd(const scio_queue *q);
/* Windows: a manual-reset event HANDLE, for WaitForSingleObject /
 * WaitForMultipleObjects (the I/O completion port behind it serves every
 * device of the process and is no waitable object); NULL elsewhere. */
void *scio_queue_handle(const scio_queue *q);
/* Take the oldest completion.  timeout_ms < 0 waits forever, 0 polls.
 * Returns 1 and fills *out, or 0 on timeout, or -1 once the queue has been
 * woken by scio_queue_wake (the wake is consumed). */
int scio_queue_pop(scio_queue *q, int timeout_ms, scio_completion *out);
/* Make one blocked (or the next) scio_queue_pop return -1. */
void scio_queue_wake(scio_queue *q);
/* Number of completions waiting. */
size_t scio_queue_pending(scio_queue *q);
/* Drops the creator's reference (once; a device's private queue has none):
 * devices and operations that still use the queue keep it alive. */
void scio_queue_free(scio_queue *q);

/* ---- devices ----------------------------------------------------------- */
typedef struct scio_device scio_device;

/* Options for scio_open_ifd. */
typedef struct scio_ifd_options {
    /* IFDHICCPresence poll interval for drivers without a polling
     * function, in ms; 0 selects the default (SCIO_DEFAULT_POLL_MS). */
    unsigned poll_interval_ms;
    /* How long scio_close waits for requests stuck inside the driver,
     * in ms; 0 selects the default (SCIO_DEFAULT_CLOSE_MS). */
    unsigned close_timeout_ms;
} scio_ifd_options;

#define SCIO_DEFAULT_POLL_MS   10u
#define SCIO_DEFAULT_CLOSE_MS  2000u

/* Open an IFD-handler driver: library path, device name (as in a reader.conf
 * DEVICENAME), LUN.  q receives this device's overlapped completions (NULL:
 * a private queue, see scio_device_queue).  opts may be NULL.  On failure
 * returns a status and writes a human-readable reason into errbuf;
 * SCIO_NO_SUCH_DEVICE means the driver loaded but could not open the
 * channel (the reader is absent, or held by another process). */
scio_status scio_open_ifd(const char *library, const char *device_name,
                          unsigned long lun, scio_queue *q,
                          const scio_ifd_options *opts, scio_device **out,
                          char *errbuf, size_t errlen);

#ifdef _WIN32
/* Open a Windows device path (\\?\... or \\.\...) with FILE_FLAG_OVERLAPPED.
 * q (NULL: a private queue) may be shared with any other device. */
scio_status scio_open_win32(const wchar_t *path, scio_queue *q,
                            scio_device **out, char *errbuf, size_t errlen);
#endif

/* Platform reader devices, by path (UTF-8).  On Windows these are the device
 * interface paths of GUID_DEVINTERFACE_SMARTCARD_READER, opened with
 * scio_open_win32; elsewhere readers are reached through IFD handlers only,
 * so scio_list_paths finds none and scio_open_path is SCIO_NOT_SUPPORTED.
 * scio_list_paths writes the paths NUL-terminated, the list ending with an
 * empty string; cap and *needed count bytes including every NUL.  Returns the
 * number of paths, -1 when buf is too small (nothing useful written), -2 on
 * failure.  q may be NULL for a private queue. */
int scio_list_paths(char *buf, size_t cap, size_t *needed);
scio_status scio_open_path(const char *path, scio_queue *q, scio_device **out,
                           char *errbuf, size_t errlen);

/* ---- PC/SC: readers the smart-card resource manager holds --------------
 * The client library (libpcsclite.so.1, the PCSC framework, winscard.dll) is
 * loaded at the first call and kept; SCARDIO_PCSC_LIBRARY in the environment
 * names another file (POSIX).  Reader names are UTF-8 (the ANSI API on
 * Windows).  Failures: SCIO_DLL_NOT_FOUND (no client library),
 * SCIO_NO_SERVICE (no resource manager), SCIO_OBJECT_NAME_NOT_FOUND (no such
 * reader), each with a reason in errbuf. */
typedef struct scio_pcsc_options {
    /* How card connections are shared with other clients unless
     * SET_SHARE_MODE asks otherwise (SCIO_SHARE_DEFAULT comes back to it):
     * SCIO_PCSC_SHARE_SHARED (0, the default) or SCIO_PCSC_SHARE_EXCLUSIVE. */
    unsigned share_mode;
    /* As scio_ifd_options.close_timeout_ms. */
    unsigned close_timeout_ms;
} scio_pcsc_options;

#define SCIO_PCSC_SHARE_SHARED     0u
#define SCIO_PCSC_SHARE_EXCLUSIVE  1u

/* The resource manager's readers, NUL-terminated, the list ending with an
 * empty string; cap and *needed count bytes including every NUL.
 * SCIO_BUFFER_TOO_SMALL when cap < *needed (nothing useful written). */
scio_status scio_pcsc_list_readers(char *buf, size_t cap, size_t *needed,
                                   char *errbuf, size_t errlen);
/* Open a reader by its resource-manager name.  opts may be NULL. */
scio_status scio_open_pcsc(const char *reader, scio_queue *q,
                           const scio_pcsc_options *opts, scio_device **out,
                           char *errbuf, size_t errlen);

/* The reader-list watch: blocks until a reader appears or goes away, through
 * the resource manager's "\\?PnP?\Notification" pseudo reader, on a context
 * of its own.  scio_pcsc_watch_wait returns SCIO_SUCCESS when the list has
 * changed (list the readers to see how; *count: the reader count reported
 * with the change where the resource manager reports one, else 0), SCIO_IO_TIMEOUT after timeout_ms (SCIO_PCSC_WATCH_INFINITE:
 * none), SCIO_CANCELLED once scio_pcsc_watch_wake was called (from any
 * thread; it also ends the next wait if none is running), SCIO_NOT_SUPPORTED
 * when the resource manager has no such pseudo reader, or the resource
 * manager's error (SCIO_NO_SERVICE: it stopped).  `known` is the number of
 * readers the caller last listed: a resource manager that compares against
 * it reports a change made between two waits (pcsc-lite 1.9 compares
 * against the count when the wait began, so such a change shows at the next
 * one).  scio_pcsc_watch_close wakes
 * a running wait and waits for it (bounded: a wait stuck in the library is
 * left to free the watch when it returns). */
typedef struct scio_pcsc_watch scio_pcsc_watch;
#define SCIO_PCSC_WATCH_INFINITE 0xFFFFFFFFu
scio_status scio_pcsc_watch_open(scio_pcsc_watch **out, char *errbuf, size_t errlen);
scio_status scio_pcsc_watch_wait(scio_pcsc_watch *w, unsigned timeout_ms, unsigned known,
                                 unsigned *count, long *driver_code);
void scio_pcsc_watch_wake(scio_pcsc_watch *w);
void scio_pcsc_watch_close(scio_pcsc_watch *w);

/* The queue this device completes into. */
scio_queue *scio_device_queue(scio_device *d);

/* Synchronous IOCTL.  out may be NULL when out_cap is 0.  *out_len gets the
 * bytes written (0 on failure).  Blocks: call without any interpreter lock. */
scio_status scio_ioctl(scio_device *d, uint32_t code,
                       const void *in, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len);

/* One slice of a tracking wait (IS_PRESENT / IS_ABSENT) run in the calling
 * thread, with no thread hand-off, on a backend that can bound its tracking
 * wait (backend.h, can_bound_tracking).  Blocks until the request completes
 * (SCIO_SUCCESS), or until timeout_us microseconds (> 0) have passed
 * (SCIO_IO_TIMEOUT: call again to wait on; the backend carries what it
 * has seen from slice to slice, so no card event falls between two), or it
 * is cancelled.  *wait names the wait across its slices: 0 before the
 * first, which sets it; a scio_cancel_all or scio_shutdown after it began
 * ends every later slice with SCIO_CANCELLED, even one started after them.
 * SCIO_NOT_SUPPORTED: the backend cannot bound the wait now (submit the
 * request instead: the tracking lane); SCIO_DEVICE_BUSY: another tracking
 * request is pending (one per device).  Call without any interpreter lock. */
scio_status scio_track_slice(scio_device *d, uint32_t code, int64_t timeout_us,
                             unsigned *wait);

/* Driver code of the last failed call on this device (the IFD_* code or the
 * Win32 error), 0 if the failure was the core's own. */
long scio_device_driver_code(scio_device *d);

/* Cancel every pending request, wait (bounded by close_timeout_ms) for them
 * and for synchronous calls in progress to finish, and release the driver
 * channel.  The device stays allocated: every later call fails at once with
 * SCIO_DEVICE_NOT_CONNECTED.  Requests still stuck inside the driver after
 * the timeout are abandoned: the driver library stays loaded until they
 * return, and their completion is dropped.  Idempotent. */
void scio_shutdown(scio_device *d);

/* scio_shutdown, then drop the caller's reference: the device must not be
 * used again. */
void scio_close(scio_device *d);

/* ---- overlapped operations --------------------------------------------- */
typedef struct scio_op scio_op;

/* Submit an overlapped IOCTL.  The core copies the input and owns the output
 * buffer (out_cap bytes).  On success *op_out is a new operation; it
 * completes into the device's queue with cookie `user`.  Fails synchronously
 * (no operation created) only for bad arguments or when the device is
 * closing; every other failure is reported as a completion. */
scio_status scio_submit(scio_device *d, uint32_t code,
                        const void *in, size_t in_len, size_t out_cap,
                        uint64_t user, scio_op **op_out);

/* scio_submit, the completion going to `q` (a queue of scio_queue_new;
 * the operation keeps it alive) instead of the device's queue: one thread
 * can then wait for the operations of many devices on one queue's
 * scio_queue_pop, woken directly by the thread that completes them. */
scio_status scio_submit_to(scio_device *d, scio_queue *q, uint32_t code,
                           const void *in, size_t in_len, size_t out_cap,
                           uint64_t user, scio_op **op_out);

/* scio_submit for a caller that waits for the operation itself, at once
 * (scio_op_await), bounding a synchronous call by its own timeout: the
 * call runs on the device's I/O lane, in order with the overlapped IOCTLs
 * submitted before it, and completes into no queue.  The two threads spin
 * briefly for each other instead of sleeping (bounded; never with one
 * processor), so a sequence of such calls costs a fraction of a thread
 * wake-up per call. */
scio_status scio_submit_awaited(scio_device *d, uint32_t code,
                                const void *in, size_t in_len, size_t out_cap,
                                scio_op **op_out);
/* scio_submit_awaited whose caller gives up after timeout_us microseconds
 * (0: no limit): a backend that bounds its own calls may then run it in
 * the calling thread, done before this returns (backend.h, can_bound). */
scio_status scio_submit_awaited_for(scio_device *d, uint32_t code,
                                    const void *in, size_t in_len, size_t out_cap,
                                    int64_t timeout_us, scio_op **op_out);
/* scio_op_wait for an operation of scio_submit_awaited (spinning briefly
 * first); for any other operation the same as scio_op_wait. */
int scio_op_await(scio_op *op, int timeout_ms);

/* 1 when awaited calls from this thread can spin (see above) and the I/O
 * lane thread was last seen on another processor, or not yet seen: then a
 * sequence of awaited calls costs least.  0 when the two share a processor
 * (or spinning is off): each hand-off is then two context switches, and a
 * whole sequence is better handed over as one call (scio_submit_call). */
int scio_lane_apart(scio_device *d);

uint64_t scio_op_id(const scio_op *op);
/* 1 once completed. */
int scio_op_done(scio_op *op);
/* Wait for completion: 1 completed, 0 timeout (timeout_ms < 0: forever). */
int scio_op_wait(scio_op *op, int timeout_ms);
/* SCIO_PENDING until completed, then the final status. */
scio_status scio_op_status(scio_op *op);
/* Output of a completed operation (NULL / 0 before). */
const uint8_t *scio_op_output(scio_op *op, size_t *len);
/* Driver code that accompanied a failure, 0 otherwise. */
long scio_op_driver_code(scio_op *op);
/* Request cancellation.  Returns at once; the operation completes with
 * SCIO_CANCELLED unless it had already finished. */
void scio_op_cancel(scio_op *op);
/* Drop the caller's reference.  A pending operation is cancelled and freed
 * when it completes; its completion is not queued.  Never blocks on the
 * driver: waking a tracking request (the driver's stop function) runs on a
 * core thread, so this is safe from a deallocator holding a language lock. */
void scio_op_release(scio_op *op);

/* Cancel every pending operation of the device (returns at once). */
void scio_cancel_all(scio_device *d);

/* ---- tracking many devices from one thread -------------------------------
 * A tracking set lets one thread wait for the tracking requests (IS_PRESENT /
 * IS_ABSENT) of many devices at once, in a single call of their backend
 * (PC/SC: one SCardGetStatusChange over all their readers), and have each
 * completion handed straight back to it: no lane thread, no queue, no thread
 * hop between the driver's answer and the waiter.  Only devices of a backend
 * that offers it (backend.h: track_set_*) can join, and all of one set's
 * devices share its backend.
 *
 * scio_track_set_submit makes a tracking request held by the set: it holds
 * the device's one tracking slot as any tracking request does (a second one
 * completes with DEVICE_BUSY) but runs only inside scio_track_set_wait.  It
 * completes into no queue: scio_track_set_wait reports it, and scio_op_wait
 * and the other scio_op_* calls work on it as on any operation.  Cancelling
 * it (scio_op_cancel, scio_op_release, closing its device) ends it with
 * SCIO_CANCELLED at once when no wait is using it, and wakes the wait that
 * is.  One thread at a time may wait on a set; submit, wake and the op_*
 * calls may come from any. */
typedef struct scio_track_set scio_track_set;
/* A set for devices of `d`'s backend: SCIO_NOT_SUPPORTED when it has no
 * such wait, else its failure (PC/SC: establishing a context of its own). */
scio_status scio_track_set_new(scio_device *d, scio_track_set **out);
/* 1 when `d` can join the set (a device of its backend). */
int scio_track_set_accepts(scio_track_set *s, scio_device *d);
/* The most requests the set holds at once (the backend's one call takes no
 * more); 0: no limit. */
size_t scio_track_set_capacity(const scio_track_set *s);
/* A held IS_PRESENT / IS_ABSENT on `d` (cookie `user`, reported back by the
 * wait).  Fails (no operation) for another code, a device the set does not
 * accept (SCIO_NOT_SUPPORTED), a full set (SCIO_INSUFFICIENT_RESOURCES), or
 * a closing device. */
scio_status scio_track_set_submit(scio_track_set *s, scio_device *d, uint32_t code,
                                  uint64_t user, scio_op **op_out);
/* Wait up to timeout_ms (< 0: no limit) until one of the set's requests
 * completes, then write up to `cap` completions (oldest first: the ones a
 * cancel ended, then those the wait saw) and return how many; 0 on
 * timeout, -1 once woken by scio_track_set_wake (the wake is consumed).
 * With nothing to wait for it sleeps until one of those (or a submit). */
int scio_track_set_wait(scio_track_set *s, int timeout_ms, scio_completion *out, size_t cap);
/* Make the running (or the next) scio_track_set_wait return (any thread;
 * may block briefly until the wait has left the backend). */
void scio_track_set_wake(scio_track_set *s);
/* Requests still held by the set (not yet reported). */
size_t scio_track_set_pending(scio_track_set *s);
/* Cancel every request the set holds and drop the caller's reference; no
 * wait may be running.  In a forked child (see scio_fork_generation) the
 * parent's set is left alone. */
void scio_track_set_free(scio_track_set *s);

/* ---- calls on the I/O lane ----------------------------------------------
 * A function run as one operation on the device's I/O lane thread, in order
 * with the overlapped IOCTLs submitted before it: a sequence of synchronous
 * calls (scio_ioctl) that its waiter can stop waiting for at a deadline, at
 * the cost of one thread hop for the whole sequence.  Called exactly once
 * per operation: with run = 1 on the lane (its return value is the
 * operation's status), or with run = 0 if the operation was cancelled or the
 * device closed before it started (then it must only release ctx; from the
 * thread that completes the operation).  Cancelling a running call only
 * marks it; once scio_shutdown has begun, its scio_ioctl calls fail at once
 * with SCIO_DEVICE_NOT_CONNECTED.  The operation completes into no queue:
 * wait on it (scio_op_wait).  Fails (fn never called) only without fn or
 * when the device is closing. */
typedef scio_status (*scio_call_fn)(scio_op *op, void *ctx, int run);
scio_status scio_submit_call(scio_device *d, scio_call_fn fn, void *ctx,
                             uint64_t user, scio_op **op_out);

/* ---- the connect and power-down loops ----------------------------------
 * Two loops of the spec as synchronous IOCTLs.  The connect loop: GET_STATE
 * until the card is negotiable (SWALLOW, cold or warm reset as the state
 * asks), the ATR (in SPECIFIC also the protocol in force, with one warm
 * reset when it is none of those asked), then SET_PROTOCOL.  The
 * power-down loop: GET_STATE, and POWER(POWER_DOWN) while it says powered.
 * Each follows the ordinary answers only, recording every IOCTL it makes;
 * at anything else (a failed IOCTL, an answer of another length, no card,
 * an empty ATR, max_steps GET_STATEs without settling, the timeout, a full
 * record) it stops with `complete` 0, and the caller replays the record
 * through its own sequence, which decides what that means (the error, its
 * message, the fallbacks).  So one definition of every outcome stays in
 * the caller's sequence, and an ordinary loop runs without it. */
#define SCIO_LOOP_RECORDS 32u
#define SCIO_LOOP_TRAIL   (SCIO_LOOP_RECORDS * 5u)
/* `trail` bytes: a GET_STATE's state (0..6); then one of these, the two
 * that carry a protocol followed by it as a little-endian DWORD. */
#define SCIO_TRAIL_ATR          0x10u /* the ATR read, NEGOTIABLE */
#define SCIO_TRAIL_ATR_PROTOCOL 0x11u /* the ATR and the protocol in force (+4) */
#define SCIO_TRAIL_SWALLOW      0x12u
#define SCIO_TRAIL_COLD_RESET   0x13u
#define SCIO_TRAIL_WARM_RESET   0x14u
#define SCIO_TRAIL_SET_PROTOCOL 0x15u /* SET_PROTOCOL's answer (+4) */
#define SCIO_TRAIL_POWER_DOWN   0x16u
/* scio_loop.kind */
#define SCIO_LOOP_CONNECT       0u
#define SCIO_LOOP_POWER_DOWN    1u

typedef struct scio_loop_step {
    uint32_t code;          /* the IOCTL */
    uint32_t in_len;        /* 0 or 4: its DWORD input */
    uint32_t in;
    scio_status status;
    long driver_code;
    uint32_t out_len;
    uint8_t out[SCIO_MAX_ATR];
} scio_loop_step;

typedef struct scio_loop {
    /* in */
    uint32_t kind;          /* SCIO_LOOP_*; another: it stops at once */
    uint32_t protocols;     /* the connect loop's SET_PROTOCOL input */
    unsigned max_steps;     /* GET_STATEs before it stops unsettled */
    int64_t timeout_us;     /* from the run's start or the submission, to
                               stop before the next IOCTL; 0: none */
    /* out */
    int complete;           /* 1: done along ordinary answers only */
    unsigned n;             /* steps recorded */
    scio_loop_step step[SCIO_LOOP_RECORDS];
    unsigned atr_len, trail_len;
    uint8_t atr[SCIO_MAX_ATR]; /* the connect loop's ATR */
    uint8_t trail[SCIO_LOOP_TRAIL];
    volatile int current;   /* the IOCTL in progress (read while it runs) */
    int64_t deadline;       /* the core's own */
} scio_loop;

/* Run the loop `c->kind` on `d` in the calling thread; `op` (NULL: none)
 * is an operation whose cancellation stops it before its next IOCTL. */
void scio_loop_run(scio_device *d, scio_loop *c, scio_op *op);
/* Run it as one operation on the device's I/O lane, in order with the
 * overlapped IOCTLs submitted before it: the bounded form (its waiter can
 * stop waiting; a cancelled loop stops before its next IOCTL).  `in` gives
 * kind, protocols, max_steps and timeout_us; when the operation completes
 * with SCIO_SUCCESS its output is the whole scio_loop.  awaited: its
 * submitter waits with scio_op_await and no completion is queued; else
 * the completion goes to the device's queue with `user`, as scio_submit's. */
scio_status scio_submit_loop(scio_device *d, const scio_loop *in,
                             int awaited, uint64_t user, scio_op **op_out);
/* The IOCTL a submitted loop is in (or last made), 0 before its first
 * (or for another operation): what a waiter that gives up names. */
uint32_t scio_loop_ioctl(scio_op *op);

/* ---- fork -------------------------------------------------------------- */
/* The fork generation: 0 in the process that loaded the core, one more in
 * the child of every fork() once scio_watch_forks() has run (a
 * pthread_atfork child handler; scio_device_create runs it too).  A device
 * or operation made in an earlier generation belongs to the parent: its
 * lane threads are not in the child, so the child must neither use, close
 * nor release it (leak it).  Read it directly (no call, no system call): it
 * changes only in a child, before fork() returns there.  A child made by a
 * raw system call that runs no fork handlers (clone(2), glibc's _Fork) is
 * not seen.  Always 0 where there is no fork() (Windows). */
extern unsigned long scio_fork_generation;
/* Install the handler (once; idempotent): 0, or -1 if pthread_atfork failed. */
int scio_watch_forks(void);

/* ---- driver log -------------------------------------------------------- */
/* Messages drivers send through log_msg / log_xxd go to this callback (or are
 * dropped when it is NULL; SCARDIO_DRIVER_LOG=1 in the environment prints
 * them to stderr instead). */
typedef void (*scio_log_fn)(int priority, const char *message, void *ctx);
void scio_set_log(scio_log_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* SCIO_H */
