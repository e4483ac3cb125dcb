/*
 * scio_win32.c - the Windows backend of the scardio C core (scio.h).
 *
 * A device is a reader driver's device object opened with CreateFileW and
 * FILE_FLAG_OVERLAPPED.  Every handle is associated with the I/O completion
 * port of its queue:
 *
 *   - scio_submit issues an overlapped DeviceIoControl whose OVERLAPPED is the
 *     first member of the operation; the kernel posts the completion to the
 *     port (NTSTATUS in OVERLAPPED.Internal, byte count in InternalHigh).
 *   - one completion thread per queue blocks in GetQueuedCompletionStatus,
 *     finishes the operation and appends it to the queue's FIFO; the queue's
 *     manual-reset event is set while the FIFO is not empty, so an event loop
 *     can wait on it (the port itself cannot be waited on, and the event of an
 *     OVERLAPPED is set before the packet is posted, so no consumer can keep
 *     such an event exact without a reader of the port).
 *   - scio_ioctl uses an OVERLAPPED whose hEvent has its low-order bit set:
 *     the kernel then signals the event but posts nothing to the port.
 *
 * A synchronous failure of an overlapped DeviceIoControl (an NTSTATUS error
 * returned before the request pended) posts no packet: scio_submit finishes
 * such an operation itself.  The completion thread only accepts packets for
 * operations it knows to be in flight, so a stray packet is dropped.
 *
 * Closing: CancelIoEx on the handle, then wait for every completion, then
 * CloseHandle.  Wine 8 sends no IRP_MJ_CLEANUP and CloseHandle cancels
 * nothing, and on Windows the OVERLAPPED memory must outlive the request
 * anyway.
 *
 * Locking: one lock per queue guards the queue, its operations and the
 * devices that complete into it.
 *
 * The public names are defined with the scio_w32_ prefix (core/scio_impl.h):
 * native/win32/dispatch.c routes each call here or to the generic layer
 * (IFD-handler DLLs) by the tag that starts every device, op and queue.
 */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <process.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCIO_IMPL_WIN32
#include "core/scio_impl.h" /* before scio.h: the scio_w32_ names */
#include "scio.h"
#include "scio_win32_internal.h"

#define QKEY_IO    ((ULONG_PTR)0x5C10u)
#define QKEY_QUIT  ((ULONG_PTR)0x5C11u)

#define EVENT_POOL 4
#define CLOSE_POLL_MS 50u

#ifndef STATUS_BUFFER_OVERFLOW_VALUE
#define STATUS_BUFFER_OVERFLOW_VALUE 0x80000005u
#endif

/* NT_ERROR: severity bits 11. */
#define SCIO_IS_ERROR(s) (((uint32_t)(s) >> 30) == 3u)

struct scio_op {
    SCIO_KIND_FIELD           /* first: the dispatcher's tag */
    OVERLAPPED ov;            /* the packet's OVERLAPPED*: CONTAINING_RECORD */
    scio_queue *q;
    scio_device *dev;         /* NULL once the device is closed */
    struct scio_op *dnext, *dprev;   /* device's live operations */
    struct scio_op *fnext, *fprev;   /* queue's operations in flight */
    struct scio_op *qnext;           /* queue FIFO of completions */
    uint64_t id;
    uint64_t user;
    uint8_t *in;
    size_t in_len;
    uint8_t *out;
    size_t out_cap;
    size_t out_len;
    scio_status status;
    long driver_code;
    int inflight;
    int done;
    int queued;
    int released;
    int dropped;              /* device closed while in flight: not queued */
};

struct scio_device {
    SCIO_KIND_FIELD           /* first: the dispatcher's tag */
    HANDLE h;
    scio_queue *q;
    scio_op *ops;             /* live operations (not yet freed) */
    size_t inflight;          /* of which the kernel still holds */
    size_t sync_active;       /* scio_ioctl calls in progress */
    int closing;
    int shut;                 /* 1 shutting down, 2 shut down */
    int handle_closed;
    long driver_code;
    HANDLE events[EVENT_POOL];
    size_t n_events;
};

struct scio_queue {
    SCIO_KIND_FIELD           /* first: the dispatcher's tag */
    CRITICAL_SECTION lock;
    CONDITION_VARIABLE cv;
    HANDLE iocp;
    HANDLE event;
    HANDLE thread;
    DWORD thread_id;
    scio_op *head, *tail;     /* FIFO */
    size_t count;
    scio_op *flight;          /* operations in flight */
    unsigned wakes;
    long refs;
    int user_ref;
    int dying;                /* last reference dropped on the thread */
};

static volatile LONG64 g_next_op_id;

/* ---- ntdll helpers (optional) ----------------------------------------- */

typedef ULONG (WINAPI *rtl_status_to_dos_fn)(LONG);
typedef LONG (WINAPI *rtl_last_status_fn)(void);

static rtl_status_to_dos_fn p_status_to_dos;
static rtl_last_status_fn p_last_status;
static volatile LONG g_ntdll_done;

static void load_ntdll(void)
{
    HMODULE nt;
    if (InterlockedCompareExchange(&g_ntdll_done, 1, 0) != 0)
        return;
    nt = GetModuleHandleW(L"ntdll.dll");
    if (nt) {
        /* Through void (*)(void): the one function-pointer type every
         * compiler accepts converting to and from. */
        p_status_to_dos = (rtl_status_to_dos_fn)(void (*)(void))
            GetProcAddress(nt, "RtlNtStatusToDosErrorNoTeb");
        if (!p_status_to_dos)
            p_status_to_dos = (rtl_status_to_dos_fn)(void (*)(void))
                GetProcAddress(nt, "RtlNtStatusToDosError");
        p_last_status = (rtl_last_status_fn)(void (*)(void))
            GetProcAddress(nt, "RtlGetLastNtStatus");
    }
}

long scio_win32_status_to_win32(scio_status st)
{
    load_ntdll();
    if (st == SCIO_SUCCESS)
        return 0;
    if (p_status_to_dos)
        return (long)p_status_to_dos((LONG)st);
    return (long)ERROR_GEN_FAILURE;
}

scio_status scio_win32_map_error(unsigned long err)
{
    switch (err) {
    case ERROR_SUCCESS: return SCIO_SUCCESS;
    case ERROR_IO_PENDING: return SCIO_PENDING;
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_NAME:
    case ERROR_BAD_PATHNAME: return SCIO_OBJECT_NAME_NOT_FOUND;
    case ERROR_SHARING_VIOLATION:
    case ERROR_ACCESS_DENIED: return SCIO_SHARING_VIOLATION;
    case ERROR_OPERATION_ABORTED: return SCIO_CANCELLED;
    case ERROR_NOT_READY:
    case ERROR_NO_MEDIA_IN_DRIVE: return SCIO_NO_MEDIA;
    case ERROR_BUSY: return SCIO_DEVICE_BUSY;
    case ERROR_INVALID_FUNCTION: return SCIO_INVALID_DEVICE_REQUEST;
    case ERROR_INSUFFICIENT_BUFFER: return SCIO_BUFFER_TOO_SMALL;
    case ERROR_SEM_TIMEOUT:
    case ERROR_TIMEOUT: return SCIO_IO_TIMEOUT;
    case ERROR_NOT_SUPPORTED: return SCIO_NOT_SUPPORTED;
    case ERROR_BAD_COMMAND: return SCIO_INVALID_DEVICE_STATE;
    case ERROR_DEVICE_NOT_CONNECTED:
    case ERROR_DEV_NOT_EXIST: return SCIO_DEVICE_NOT_CONNECTED;
    case ERROR_UNRECOGNIZED_MEDIA: return SCIO_UNRECOGNIZED_MEDIA;
    case ERROR_INVALID_PARAMETER: return SCIO_INVALID_PARAMETER;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY: return SCIO_NO_MEMORY;
    case ERROR_NO_SYSTEM_RESOURCES: return SCIO_INSUFFICIENT_RESOURCES;
    case ERROR_IO_DEVICE: return SCIO_IO_DEVICE_ERROR;
    case ERROR_CRC: return SCIO_DEVICE_DATA_ERROR;
    case ERROR_INVALID_USER_BUFFER: return SCIO_INVALID_BUFFER_SIZE;
    case ERROR_CALL_NOT_IMPLEMENTED: return SCIO_NOT_IMPLEMENTED;
    case ERROR_BAD_UNIT:
    case ERROR_INVALID_HANDLE: return SCIO_NO_SUCH_DEVICE;
    case ERROR_MORE_DATA: return STATUS_BUFFER_OVERFLOW_VALUE;
    default: return SCIO_UNSUCCESSFUL;
    }
}

/* A driver's NTSTATUS in the scio status space: the same values (the
 * status space is NTSTATUS, STATUS_DEVICE_BUSY's warning 0x80000011
 * included). */
static scio_status from_nt(uint32_t st)
{
    return (scio_status)st;
}

/* The thread's last NTSTATUS if it is the one behind Win32 error `err`,
 * else 0. */
static uint32_t last_nt_status(DWORD err)
{
    load_ntdll();
    if (p_last_status && p_status_to_dos) {
        LONG st = p_last_status();
        if (st != 0 && p_status_to_dos(st) == err)
            return (uint32_t)st;
    }
    return 0;
}

/* The status of the Win32 error just reported by the calling thread: the
 * thread's last NTSTATUS when it is the one that produced this error (exact),
 * else the table above. */
static scio_status status_from_last_error(DWORD err)
{
    uint32_t st = last_nt_status(err);
    if (st != 0)
        return from_nt(st);
    return scio_win32_map_error(err);
}

/* ---- small helpers ------------------------------------------------------ */

static void set_err(char *errbuf, size_t errlen, const char *msg)
{
    size_t n;
    if (!errbuf || errlen == 0)
        return;
    n = strlen(msg);
    if (n >= errlen)
        n = errlen - 1;
    memcpy(errbuf, msg, n);
    errbuf[n] = '\0';
}

static void path_to_utf8(const wchar_t *path, char *buf, size_t cap)
{
    int n;
    if (cap == 0)
        return;
    buf[0] = '\0';
    if (cap > (size_t)INT_MAX)
        cap = (size_t)INT_MAX;
    n = WideCharToMultiByte(CP_UTF8, 0, path, -1, buf, (int)cap, NULL, NULL);
    if (n <= 0) {
        /* Too long for buf: keep a truncated copy of what fits. */
        size_t i;
        for (i = 0; i + 1 < cap && path[i]; i++)
            buf[i] = (path[i] < 0x80) ? (char)path[i] : '?';
        buf[i] = '\0';
    }
}

static DWORD remaining_ms(ULONGLONG deadline)
{
    ULONGLONG now = GetTickCount64();
    if (now >= deadline)
        return 0;
    if (deadline - now > 0x7FFFFFFFull)
        return 0x7FFFFFFFu;
    return (DWORD)(deadline - now);
}

/* ---- queues ------------------------------------------------------------- */

static void queue_destroy(scio_queue *q)
{
    scio_op *op = q->head;
    while (op) {
        scio_op *next = op->qnext;
        free(op);
        op = next;
    }
    if (q->iocp)
        CloseHandle(q->iocp);
    if (q->event)
        CloseHandle(q->event);
    DeleteCriticalSection(&q->lock);
    free(q);
}

/* Called with q->lock held; returns 1 if the queue must be destroyed by
 * the caller after unlocking (it was the last reference). */
static int queue_unref_locked(scio_queue *q)
{
    if (q->refs <= 0)
        return 0;
    q->refs--;
    return q->refs == 0;
}

static void queue_finish(scio_queue *q)
{
    /* The last reference is gone.  The completion thread must stop. */
    if (GetCurrentThreadId() == q->thread_id) {
        q->dying = 1;  /* the thread destroys the queue when it returns */
        return;
    }
    PostQueuedCompletionStatus(q->iocp, 0, QKEY_QUIT, NULL);
    WaitForSingleObject(q->thread, INFINITE);
    CloseHandle(q->thread);
    queue_destroy(q);
}

static void flight_unlink(scio_queue *q, scio_op *op)
{
    if (op->fprev)
        op->fprev->fnext = op->fnext;
    else if (q->flight == op)
        q->flight = op->fnext;
    if (op->fnext)
        op->fnext->fprev = op->fprev;
    op->fnext = op->fprev = NULL;
}

static void device_unlink(scio_op *op)
{
    scio_device *d = op->dev;
    if (!d)
        return;
    if (op->dprev)
        op->dprev->dnext = op->dnext;
    else if (d->ops == op)
        d->ops = op->dnext;
    if (op->dnext)
        op->dnext->dprev = op->dprev;
    op->dnext = op->dprev = NULL;
    op->dev = NULL;
}

/* Free an operation (lock held).  Returns 1 if the queue lost its last
 * reference. */
static int op_free_locked(scio_op *op)
{
    scio_queue *q = op->q;
    device_unlink(op);
    free(op);
    return queue_unref_locked(q);
}

/* Record the final status of an operation that the kernel no longer holds
 * and hand it to the FIFO (or free it when released).  Lock held.  Returns
 * 1 if the queue lost its last reference. */
static int op_complete_locked(scio_op *op, scio_status st, size_t len,
                              long driver_code)
{
    scio_queue *q = op->q;
    if (len > op->out_cap)
        len = op->out_cap;             /* never trust a returned length */
    if (SCIO_IS_ERROR(st))
        len = 0;
    op->status = st;
    op->out_len = len;
    op->driver_code = driver_code;
    op->inflight = 0;
    flight_unlink(q, op);
    if (op->dev && op->dev->inflight > 0)
        op->dev->inflight--;
    op->done = 1;
    WakeAllConditionVariable(&q->cv);
    if (op->released)
        return op_free_locked(op);
    if (op->dropped)
        return 0;
    op->queued = 1;
    op->qnext = NULL;
    if (q->tail)
        q->tail->qnext = op;
    else
        q->head = op;
    q->tail = op;
    if (q->count++ == 0)
        SetEvent(q->event);
    return 0;
}

static int op_in_flight(scio_queue *q, const scio_op *op)
{
    const scio_op *p;
    for (p = q->flight; p; p = p->fnext)
        if (p == op)
            return 1;
    return 0;
}

static unsigned __stdcall completion_thread(void *arg)
{
    scio_queue *q = (scio_queue *)arg;
    for (;;) {
        DWORD n = 0;
        ULONG_PTR key = 0;
        OVERLAPPED *ov = NULL;
        BOOL ok = GetQueuedCompletionStatus(q->iocp, &n, &key, &ov, INFINITE);
        int dying;
        if (!ov) {
            if (!ok && GetLastError() != WAIT_TIMEOUT) {
                /* The port is gone: nothing more will arrive. */
                break;
            }
            if (key == QKEY_QUIT)
                break;
            continue;
        }
        if (key != QKEY_IO)
            continue;
        EnterCriticalSection(&q->lock);
        if (op_in_flight(q, CONTAINING_RECORD(ov, scio_op, ov))) {
            scio_op *op = CONTAINING_RECORD(ov, scio_op, ov);
            scio_status st = from_nt((uint32_t)op->ov.Internal);
            size_t len = (size_t)op->ov.InternalHigh;
            (void)n;
            long dc = st ? scio_win32_status_to_win32(
                               (scio_status)(uint32_t)op->ov.Internal) : 0;
            if (op_complete_locked(op, st, len, dc))
                q->dying = 1;
        }
        dying = q->dying;
        LeaveCriticalSection(&q->lock);
        if (dying) {
            CloseHandle(q->thread);
            queue_destroy(q);
            return 0;
        }
    }
    return 0;
}

scio_queue *scio_queue_new(void)
{
    scio_queue *q = (scio_queue *)calloc(1, sizeof(*q));
    uintptr_t th;
    unsigned tid = 0;
    if (!q)
        return NULL;
    SCIO_SET_KIND(q, SCIO_KIND_WIN32);
    InitializeCriticalSection(&q->lock);
    InitializeConditionVariable(&q->cv);
    q->iocp = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
    q->event = CreateEventW(NULL, TRUE, FALSE, NULL);
    q->refs = 1;
    q->user_ref = 1;
    if (!q->iocp || !q->event) {
        queue_destroy(q);
        return NULL;
    }
    th = _beginthreadex(NULL, 0, completion_thread, q, 0, &tid);
    if (th == 0) {
        queue_destroy(q);
        return NULL;
    }
    q->thread = (HANDLE)th;
    q->thread_id = tid;
    return q;
}

int scio_queue_fd(const scio_queue *q)
{
    (void)q;
    return -1;
}

void *scio_queue_handle(const scio_queue *q)
{
    return q ? (void *)q->event : NULL;
}

int scio_queue_pop(scio_queue *q, int timeout_ms, scio_completion *out)
{
    ULONGLONG deadline = 0;
    int result = 0, last = 0;
    if (!q)
        return 0;
    if (timeout_ms > 0)
        deadline = GetTickCount64() + (ULONGLONG)timeout_ms;
    EnterCriticalSection(&q->lock);
    for (;;) {
        DWORD wait;
        if (q->wakes > 0) {
            q->wakes--;
            result = -1;
            break;
        }
        if (q->head) {
            scio_op *op = q->head;
            q->head = op->qnext;
            if (!q->head)
                q->tail = NULL;
            op->qnext = NULL;
            op->queued = 0;
            if (--q->count == 0)
                ResetEvent(q->event);
            if (out) {
                out->op_id = op->id;
                out->user = op->user;
                out->status = op->status;
            }
            if (op->released)
                last = op_free_locked(op);
            result = 1;
            break;
        }
        if (timeout_ms == 0)
            break;
        wait = timeout_ms < 0 ? INFINITE : remaining_ms(deadline);
        if (timeout_ms > 0 && wait == 0)
            break;
        SleepConditionVariableCS(&q->cv, &q->lock, wait);
    }
    LeaveCriticalSection(&q->lock);
    if (last)
        queue_finish(q);
    return result;
}

void scio_queue_wake(scio_queue *q)
{
    if (!q)
        return;
    EnterCriticalSection(&q->lock);
    q->wakes++;
    WakeAllConditionVariable(&q->cv);
    LeaveCriticalSection(&q->lock);
}

size_t scio_queue_pending(scio_queue *q)
{
    size_t n;
    if (!q)
        return 0;
    EnterCriticalSection(&q->lock);
    n = q->count;
    LeaveCriticalSection(&q->lock);
    return n;
}

void scio_queue_free(scio_queue *q)
{
    int last = 0;
    if (!q)
        return;
    EnterCriticalSection(&q->lock);
    if (q->user_ref) {           /* only the creator's reference, once */
        q->user_ref = 0;
        last = queue_unref_locked(q);
    }
    LeaveCriticalSection(&q->lock);
    if (last)
        queue_finish(q);
}

/* ---- devices ------------------------------------------------------------ */

static const char sharing_hint[] =
    "the reader is in use by another program. Smart-card reader drivers are "
    "usually exclusive, and the Smart Card service (SCardSvr) keeps every "
    "reader open while it runs: stop it from an administrator prompt with "
    "'net stop SCardSvr' (or 'sc stop SCardSvr'), and close other programs "
    "that use the reader";

scio_status scio_open_win32(const wchar_t *path, scio_queue *q,
                            scio_device **out, char *errbuf, size_t errlen)
{
    scio_device *d;
    HANDLE h;
    char upath[512];
    char msg[1024];
    int private_queue = 0;

    if (out)
        *out = NULL;
    if (!path || !out || !path[0]) {
        set_err(errbuf, errlen, "invalid argument: no device path");
        return SCIO_INVALID_PARAMETER;
    }
    path_to_utf8(path, upath, sizeof(upath));

    h = CreateFileW(path, GENERIC_READ | GENERIC_WRITE,
                    FILE_SHARE_READ | FILE_SHARE_WRITE, NULL, OPEN_EXISTING,
                    FILE_FLAG_OVERLAPPED, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        DWORD err = GetLastError();
        scio_status st = status_from_last_error(err);
        if (err == ERROR_SHARING_VIOLATION || err == ERROR_ACCESS_DENIED ||
            st == SCIO_SHARING_VIOLATION) {
            snprintf(msg, sizeof(msg), "cannot open %s: %s (Win32 error %lu)",
                     upath, sharing_hint, (unsigned long)err);
            st = SCIO_SHARING_VIOLATION;
        } else if (st == SCIO_OBJECT_NAME_NOT_FOUND) {
            snprintf(msg, sizeof(msg),
                     "cannot open %s: no such device (Win32 error %lu)",
                     upath, (unsigned long)err);
        } else {
            snprintf(msg, sizeof(msg),
                     "cannot open %s: CreateFile failed (Win32 error %lu, %s)",
                     upath, (unsigned long)err,
                     scio_status_name(st) ? scio_status_name(st) : "?");
        }
        set_err(errbuf, errlen, msg);
        return st;
    }

    d = (scio_device *)calloc(1, sizeof(*d));
    if (!d) {
        CloseHandle(h);
        set_err(errbuf, errlen, "out of memory");
        return SCIO_NO_MEMORY;
    }
    if (!q) {
        q = scio_queue_new();
        if (!q) {
            free(d);
            CloseHandle(h);
            set_err(errbuf, errlen, "cannot create a completion queue");
            return SCIO_INSUFFICIENT_RESOURCES;
        }
        private_queue = 1;
    }
    if (CreateIoCompletionPort(h, q->iocp, QKEY_IO, 0) == NULL) {
        DWORD err = GetLastError();
        CloseHandle(h);
        free(d);
        if (private_queue)
            scio_queue_free(q);
        snprintf(msg, sizeof(msg),
                 "cannot attach %s to the completion port (Win32 error %lu)",
                 upath, (unsigned long)err);
        set_err(errbuf, errlen, msg);
        return SCIO_INSUFFICIENT_RESOURCES;
    }
    SCIO_SET_KIND(d, SCIO_KIND_WIN32);
    d->h = h;
    d->q = q;
    EnterCriticalSection(&q->lock);
    if (private_queue) {
        q->user_ref = 0;          /* the device's reference is the only one */
    } else {
        q->refs++;
    }
    LeaveCriticalSection(&q->lock);
    *out = d;
    set_err(errbuf, errlen, "");
    return SCIO_SUCCESS;
}

scio_queue *scio_device_queue(scio_device *d)
{
    return d ? d->q : NULL;
}

long scio_device_driver_code(scio_device *d)
{
    long c;
    if (!d)
        return 0;
    EnterCriticalSection(&d->q->lock);
    c = d->driver_code;
    LeaveCriticalSection(&d->q->lock);
    return c;
}

static HANDLE event_get(scio_device *d)
{
    HANDLE ev = NULL;
    EnterCriticalSection(&d->q->lock);
    if (d->n_events > 0)
        ev = d->events[--d->n_events];
    LeaveCriticalSection(&d->q->lock);
    if (!ev)
        ev = CreateEventW(NULL, TRUE, FALSE, NULL);
    return ev;
}

static void event_put(scio_device *d, HANDLE ev)
{
    EnterCriticalSection(&d->q->lock);
    if (d->n_events < EVENT_POOL) {
        d->events[d->n_events++] = ev;
        ev = NULL;
    }
    LeaveCriticalSection(&d->q->lock);
    if (ev)
        CloseHandle(ev);
}

scio_status scio_ioctl(scio_device *d, uint32_t code,
                       const void *in, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len)
{
    OVERLAPPED ov;
    HANDLE ev;
    scio_status st;
    size_t n = 0;
    long dcode = 0;
    BOOL ok;

    if (out_len)
        *out_len = 0;
    if (!d || (!in && in_len) || (!out && out_cap))
        return SCIO_INVALID_PARAMETER;
    if (in_len > SCIO_MAX_INPUT)
        return SCIO_INVALID_BUFFER_SIZE;
    if (out_cap > SCIO_MAX_OUTPUT)
        out_cap = SCIO_MAX_OUTPUT;

    EnterCriticalSection(&d->q->lock);
    if (d->closing) {
        LeaveCriticalSection(&d->q->lock);
        return SCIO_DEVICE_NOT_CONNECTED;
    }
    d->sync_active++;
    LeaveCriticalSection(&d->q->lock);

    ev = event_get(d);
    if (!ev) {
        st = SCIO_INSUFFICIENT_RESOURCES;
        goto done;
    }
    memset(&ov, 0, sizeof(ov));
    /* Low-order bit set: signal the event, post nothing to the port. */
    ov.hEvent = (HANDLE)((ULONG_PTR)ev | 1u);
    ok = DeviceIoControl(d->h, code, (LPVOID)in, (DWORD)in_len, out,
                         (DWORD)out_cap, NULL, &ov);
    if (ok) {
        st = from_nt((uint32_t)ov.Internal);
        n = (size_t)ov.InternalHigh;
    } else {
        DWORD err = GetLastError();
        if (err == ERROR_IO_PENDING) {
            WaitForSingleObject(ev, INFINITE);
            st = from_nt((uint32_t)ov.Internal);
            n = (size_t)ov.InternalHigh;
        } else if (err == ERROR_MORE_DATA) {
            st = STATUS_BUFFER_OVERFLOW_VALUE;
            n = (size_t)ov.InternalHigh;
            dcode = (long)err;
        } else {
            st = status_from_last_error(err);
            n = 0;
            dcode = (long)err;
        }
    }
    event_put(d, ev);
    if (st != SCIO_SUCCESS && dcode == 0)
        dcode = scio_win32_status_to_win32((scio_status)(uint32_t)ov.Internal);
    if (SCIO_IS_ERROR(st))
        n = 0;
    if (n > out_cap)
        n = out_cap;                   /* never trust a returned length */
    if (out_len)
        *out_len = n;

done:
    EnterCriticalSection(&d->q->lock);
    if (st != SCIO_SUCCESS)
        d->driver_code = dcode;
    d->sync_active--;
    WakeAllConditionVariable(&d->q->cv);
    LeaveCriticalSection(&d->q->lock);
    return st;
}

void scio_cancel_all(scio_device *d)
{
    scio_op *op;
    if (!d)
        return;
    EnterCriticalSection(&d->q->lock);
    for (op = d->ops; op; op = op->dnext)
        if (op->inflight)
            CancelIoEx(d->h, &op->ov);
    LeaveCriticalSection(&d->q->lock);
}

/* Cancel every request and wait for it (bounded), detach the operations,
 * close the handle unless a synchronous call is stuck in the driver.  Queue
 * lock held.  A second caller waits for the first. */
static void shutdown_locked(scio_device *d)
{
    scio_queue *q = d->q;
    ULONGLONG deadline;
    scio_op *op;

    if (d->shut) {
        while (d->shut != 2)
            SleepConditionVariableCS(&q->cv, &q->lock, INFINITE);
        return;
    }
    d->shut = 1;
    d->closing = 1;
    deadline = GetTickCount64() + SCIO_DEFAULT_CLOSE_MS;
    while (d->inflight > 0 || d->sync_active > 0) {
        DWORD wait = remaining_ms(deadline);
        if (wait == 0)
            break;
        /* Every round: a request issued by a racing scio_submit after the
         * previous cancel is cancelled too. */
        CancelIoEx(d->h, NULL);
        SleepConditionVariableCS(&q->cv, &q->lock,
                                 wait < CLOSE_POLL_MS ? wait : CLOSE_POLL_MS);
    }
    /* Detach every operation still alive: completed ones live on until
     * released; abandoned ones are freed when (if) the kernel completes
     * them, without queuing. */
    while ((op = d->ops) != NULL) {
        if (op->inflight)
            op->dropped = 1;
        device_unlink(op);
    }
    /* A scio_ioctl stuck in the driver still uses the handle. */
    if (d->sync_active == 0) {
        CloseHandle(d->h);
        d->handle_closed = 1;
    }
    d->shut = 2;
    WakeAllConditionVariable(&q->cv);
}

void scio_shutdown(scio_device *d)
{
    if (!d)
        return;
    EnterCriticalSection(&d->q->lock);
    shutdown_locked(d);
    LeaveCriticalSection(&d->q->lock);
}

void scio_close(scio_device *d)
{
    scio_queue *q;
    int last, stuck;
    size_t i;

    if (!d)
        return;
    q = d->q;
    EnterCriticalSection(&q->lock);
    shutdown_locked(d);
    stuck = d->sync_active > 0;
    if (!stuck && !d->handle_closed) {
        CloseHandle(d->h);     /* the stuck call of shutdown time returned */
        d->handle_closed = 1;
    }
    for (i = 0; i < d->n_events; i++)
        CloseHandle(d->events[i]);
    d->n_events = 0;
    last = queue_unref_locked(q);
    LeaveCriticalSection(&q->lock);
    /* A scio_ioctl stuck in the driver still uses d: leak it then. */
    if (!stuck)
        free(d);
    if (last)
        queue_finish(q);
}

/* ---- overlapped operations ---------------------------------------------- */

scio_status scio_submit(scio_device *d, uint32_t code,
                        const void *in, size_t in_len, size_t out_cap,
                        uint64_t user, scio_op **op_out)
{
    scio_op *op;
    scio_queue *q;
    size_t size;
    BOOL ok;

    if (op_out)
        *op_out = NULL;
    if (!d || !op_out || (!in && in_len))
        return SCIO_INVALID_PARAMETER;
    if (in_len > SCIO_MAX_INPUT)
        return SCIO_INVALID_BUFFER_SIZE;
    if (out_cap > SCIO_MAX_OUTPUT)
        out_cap = SCIO_MAX_OUTPUT;
    size = sizeof(*op) + in_len + out_cap;   /* bounded: no overflow */
    op = (scio_op *)calloc(1, size);
    if (!op)
        return SCIO_NO_MEMORY;
    op->in = (uint8_t *)(op + 1);
    op->in_len = in_len;
    if (in_len)
        memcpy(op->in, in, in_len);
    op->out = op->in + in_len;
    op->out_cap = out_cap;
    op->user = user;
    op->status = SCIO_PENDING;
    op->id = (uint64_t)InterlockedIncrement64(&g_next_op_id);
    SCIO_SET_KIND(op, SCIO_KIND_WIN32);
    q = d->q;
    op->q = q;

    EnterCriticalSection(&q->lock);
    if (d->closing) {
        LeaveCriticalSection(&q->lock);
        free(op);
        return SCIO_DEVICE_NOT_CONNECTED;
    }
    op->dev = d;
    op->dnext = d->ops;
    if (d->ops)
        d->ops->dprev = op;
    d->ops = op;
    op->fnext = q->flight;
    if (q->flight)
        q->flight->fprev = op;
    q->flight = op;
    op->inflight = 1;
    d->inflight++;
    q->refs++;
    LeaveCriticalSection(&q->lock);

    ok = DeviceIoControl(d->h, code, in_len ? op->in : NULL, (DWORD)in_len,
                         out_cap ? op->out : NULL, (DWORD)out_cap, NULL,
                         &op->ov);
    if (!ok) {
        DWORD err = GetLastError();
        uint32_t nt = last_nt_status(err);
        /* A warning (STATUS_DEVICE_BUSY, STATUS_BUFFER_OVERFLOW) is not a
         * failure to the I/O manager: its packet is posted like a success.
         * An error returned before pending posts nothing. */
        int packet = err == ERROR_IO_PENDING || err == ERROR_MORE_DATA ||
                     (nt != 0 && !SCIO_IS_ERROR(nt));
        if (!packet) {
            scio_status st = nt ? from_nt(nt) : scio_win32_map_error(err);
            EnterCriticalSection(&q->lock);
            if (op->inflight) {
                op_complete_locked(op, st, 0, (long)err);
                if (op->dev)
                    op->dev->driver_code = (long)err;
            }
            LeaveCriticalSection(&q->lock);
        }
    }
    *op_out = op;
    return SCIO_SUCCESS;
}

uint64_t scio_op_id(const scio_op *op)
{
    return op ? op->id : 0;
}

int scio_op_done(scio_op *op)
{
    int done;
    if (!op)
        return 0;
    EnterCriticalSection(&op->q->lock);
    done = op->done;
    LeaveCriticalSection(&op->q->lock);
    return done;
}

int scio_op_wait(scio_op *op, int timeout_ms)
{
    ULONGLONG deadline = 0;
    int done;
    if (!op)
        return 0;
    if (timeout_ms > 0)
        deadline = GetTickCount64() + (ULONGLONG)timeout_ms;
    EnterCriticalSection(&op->q->lock);
    while (!op->done && timeout_ms != 0) {
        DWORD wait = timeout_ms < 0 ? INFINITE : remaining_ms(deadline);
        if (timeout_ms > 0 && wait == 0)
            break;
        SleepConditionVariableCS(&op->q->cv, &op->q->lock, wait);
    }
    done = op->done;
    LeaveCriticalSection(&op->q->lock);
    return done;
}

scio_status scio_op_status(scio_op *op)
{
    scio_status st;
    if (!op)
        return SCIO_INVALID_PARAMETER;
    EnterCriticalSection(&op->q->lock);
    st = op->done ? op->status : SCIO_PENDING;
    LeaveCriticalSection(&op->q->lock);
    return st;
}

const uint8_t *scio_op_output(scio_op *op, size_t *len)
{
    const uint8_t *p = NULL;
    size_t n = 0;
    if (op) {
        EnterCriticalSection(&op->q->lock);
        if (op->done) {
            p = op->out;
            n = op->out_len;
        }
        LeaveCriticalSection(&op->q->lock);
    }
    if (len)
        *len = n;
    return p;
}

long scio_op_driver_code(scio_op *op)
{
    long c;
    if (!op)
        return 0;
    EnterCriticalSection(&op->q->lock);
    c = (op->done && op->status != SCIO_SUCCESS) ? op->driver_code : 0;
    LeaveCriticalSection(&op->q->lock);
    return c;
}

void scio_op_cancel(scio_op *op)
{
    if (!op)
        return;
    EnterCriticalSection(&op->q->lock);
    if (op->inflight && op->dev)
        CancelIoEx(op->dev->h, &op->ov);
    LeaveCriticalSection(&op->q->lock);
}

void scio_op_release(scio_op *op)
{
    scio_queue *q;
    int last = 0;
    if (!op)
        return;
    q = op->q;
    EnterCriticalSection(&q->lock);
    if (!op->released) {
        op->released = 1;
        if (op->inflight) {
            /* Freed by the completion thread, not queued. */
            if (op->dev)
                CancelIoEx(op->dev->h, &op->ov);
        } else if (!op->queued) {
            last = op_free_locked(op);
        }
        /* else: freed when popped. */
    }
    LeaveCriticalSection(&q->lock);
    if (last)
        queue_finish(q);
}
