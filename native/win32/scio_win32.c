/*
 * scio_win32.c - the Windows backend: reader drivers' device objects opened
 * with CreateFileW and FILE_FLAG_OVERLAPPED, behind the core's backend table
 * (core/backend.h).  The core owns the devices, operations and queues; this
 * file owns the handles and the I/O completion port.
 *
 *   - submit issues an overlapped DeviceIoControl whose OVERLAPPED lives in
 *     the operation's backend data; the kernel posts the completion to the
 *     process's one completion port (NTSTATUS in OVERLAPPED.Internal, byte
 *     count in InternalHigh), and the port's thread hands it to the core
 *     (scio_op_complete), which posts it into the device's queue.  The
 *     queue's event is then the waitable (the port is shared by every device
 *     and cannot be waited on for one queue).
 *   - the synchronous ioctl uses an OVERLAPPED whose hEvent has its
 *     low-order bit set: the kernel then signals the event but posts nothing
 *     to the port.
 *
 * A synchronous failure of an overlapped DeviceIoControl (an NTSTATUS error
 * returned before the request pended) posts no packet: submit completes such
 * an operation itself.  The port thread only accepts packets for operations
 * it knows to be in flight, so a stray packet is dropped, never completed
 * twice.
 *
 * Closing (the core's shutdown): CancelIoEx on the handle, wait for every
 * request to come back, then CloseHandle in release.  Wine 8 sends no
 * IRP_MJ_CLEANUP and CloseHandle cancels nothing, and on Windows the
 * OVERLAPPED memory must outlive the request anyway.
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

#include "core/backend.h"

#define PORT_KEY_IO ((ULONG_PTR)0x5C10u)

#define EVENT_POOL 4

#ifndef STATUS_BUFFER_OVERFLOW_VALUE
#define STATUS_BUFFER_OVERFLOW_VALUE 0x80000005u
#endif

/* NT_ERROR: severity bits 11. */
#define SCIO_IS_ERROR(s) (((uint32_t)(s) >> 30) == 3u)

/* A device: its handle and a few events for synchronous calls. */
typedef struct w32_dev {
    HANDLE h;
    scio_mutex lock;          /* the event pool */
    HANDLE events[EVENT_POOL];
    size_t n_events;
} w32_dev;

/* The backend data of a submitted operation. */
typedef struct w32_op {
    OVERLAPPED ov;            /* the packet's OVERLAPPED*: CONTAINING_RECORD */
    scio_op *op;
    size_t out_cap;
    struct w32_op *next, *prev;   /* the port's requests in flight */
} w32_op;

/* The completion port: one per process, started at the first open and kept
 * for the life of the process (its thread holds no device). */
static struct {
    scio_mutex lock;          /* guards everything here */
    HANDLE iocp;
    w32_op *flight;
} port = { SCIO_MUTEX_INITIALIZER, NULL, NULL };

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

static long status_to_win32(scio_status st)
{
    load_ntdll();
    if (st == SCIO_SUCCESS)
        return 0;
    if (p_status_to_dos)
        return (long)p_status_to_dos((LONG)st);
    return (long)ERROR_GEN_FAILURE;
}

static scio_status map_error(unsigned long err)
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
    return map_error(err);
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

/* ---- the completion port -------------------------------------------------- */

static void flight_push_locked(w32_op *w)
{
    w->prev = NULL;
    w->next = port.flight;
    if (port.flight)
        port.flight->prev = w;
    port.flight = w;
}

/* Take w off the flight list if it is on it (port locked): 1 if it was.
 * Compares pointers only: a stray packet's OVERLAPPED is never read. */
static int flight_take_locked(const OVERLAPPED *ov)
{
    w32_op *w;
    for (w = port.flight; w; w = w->next) {
        if (&w->ov != ov)
            continue;
        if (w->prev)
            w->prev->next = w->next;
        else
            port.flight = w->next;
        if (w->next)
            w->next->prev = w->prev;
        w->next = w->prev = NULL;
        return 1;
    }
    return 0;
}

static unsigned __stdcall port_thread(void *arg)
{
    HANDLE iocp = (HANDLE)arg;
    for (;;) {
        DWORD n = 0;
        ULONG_PTR key = 0;
        OVERLAPPED *ov = NULL;
        BOOL ok = GetQueuedCompletionStatus(iocp, &n, &key, &ov, INFINITE);
        w32_op *w;
        int mine;
        (void)n;
        if (!ov) {
            if (!ok && GetLastError() != WAIT_TIMEOUT)
                break; /* the port is gone: nothing more will arrive */
            continue;
        }
        if (key != PORT_KEY_IO)
            continue;
        scio_mutex_lock(&port.lock);
        mine = flight_take_locked(ov);
        scio_mutex_unlock(&port.lock);
        if (!mine)
            continue;
        w = CONTAINING_RECORD(ov, w32_op, ov);
        {
            scio_status st = from_nt((uint32_t)w->ov.Internal);
            size_t len = (size_t)w->ov.InternalHigh;
            long dc = st ? status_to_win32(st) : 0;
            if (SCIO_IS_ERROR(st))
                len = 0;
            if (len > w->out_cap)
                len = w->out_cap; /* never trust a returned length */
            scio_op_complete(w->op, st, len, dc);
        }
    }
    return 0;
}

/* Start the port and its thread once; 0 on success. */
static int port_start(void)
{
    int rc = 0;
    scio_mutex_lock(&port.lock);
    if (!port.iocp) {
        HANDLE iocp = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
        uintptr_t th = iocp ? _beginthreadex(NULL, 0, port_thread, iocp, 0, NULL) : 0;
        if (th) {
            CloseHandle((HANDLE)th); /* detached: it lives as long as the process */
            port.iocp = iocp;
        } else {
            if (iocp)
                CloseHandle(iocp);
            rc = -1;
        }
    }
    scio_mutex_unlock(&port.lock);
    return rc;
}

/* ---- the backend table ------------------------------------------------------ */

static HANDLE event_get(w32_dev *s)
{
    HANDLE ev = NULL;
    scio_mutex_lock(&s->lock);
    if (s->n_events > 0)
        ev = s->events[--s->n_events];
    scio_mutex_unlock(&s->lock);
    if (!ev)
        ev = CreateEventW(NULL, TRUE, FALSE, NULL);
    return ev;
}

static void event_put(w32_dev *s, HANDLE ev)
{
    scio_mutex_lock(&s->lock);
    if (s->n_events < EVENT_POOL) {
        s->events[s->n_events++] = ev;
        ev = NULL;
    }
    scio_mutex_unlock(&s->lock);
    if (ev)
        CloseHandle(ev);
}

static scio_status w32_ioctl(scio_device *d, scio_op *op, uint32_t code,
                             const uint8_t *in, size_t in_len,
                             uint8_t *out, size_t out_cap, size_t *out_len,
                             long *driver_code)
{
    w32_dev *s = (w32_dev *)scio_device_state(d);
    OVERLAPPED ov;
    HANDLE ev;
    scio_status st;
    size_t n = 0;
    long dcode = 0;
    BOOL ok;

    (void)op;
    if (scio_is_extension_ioctl(code)) { /* scardio's own: never the driver's */
        *driver_code = 0;
        return scio_direct_extension_ioctl(code, in, in_len, out, out_cap, out_len);
    }
    ev = event_get(s);
    if (!ev)
        return SCIO_INSUFFICIENT_RESOURCES;
    memset(&ov, 0, sizeof(ov));
    /* Low-order bit set: signal the event, post nothing to the port. */
    ov.hEvent = (HANDLE)((ULONG_PTR)ev | 1u);
    ok = DeviceIoControl(s->h, code, (LPVOID)in, (DWORD)in_len, out,
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
    event_put(s, ev);
    if (st != SCIO_SUCCESS && dcode == 0)
        dcode = status_to_win32((scio_status)(uint32_t)ov.Internal);
    if (SCIO_IS_ERROR(st))
        n = 0;
    if (n > out_cap)
        n = out_cap;                   /* never trust a returned length */
    *out_len = n;
    *driver_code = dcode;
    return st;
}

static void w32_submit(scio_device *d, scio_op *op, uint32_t code,
                       const uint8_t *in, size_t in_len,
                       uint8_t *out, size_t out_cap)
{
    w32_dev *s = (w32_dev *)scio_device_state(d);
    w32_op *w = (w32_op *)scio_op_backend_data(op);
    BOOL ok;

    if (scio_is_extension_ioctl(code)) { /* answered here: never the driver's */
        size_t n = 0;
        scio_status st = scio_direct_extension_ioctl(code, in, in_len, out, out_cap, &n);
        scio_op_complete(op, st, n, 0);
        return;
    }
    w->op = op;
    w->out_cap = out_cap;
    scio_mutex_lock(&port.lock);
    flight_push_locked(w);
    scio_mutex_unlock(&port.lock);

    ok = DeviceIoControl(s->h, code, in_len ? (LPVOID)in : NULL, (DWORD)in_len,
                         out_cap ? out : NULL, (DWORD)out_cap, NULL, &w->ov);
    if (!ok) {
        DWORD err = GetLastError();
        uint32_t nt = last_nt_status(err);
        /* A warning (STATUS_DEVICE_BUSY, STATUS_BUFFER_OVERFLOW) is not a
         * failure to the I/O manager: its packet is posted like a success.
         * An error returned before pending posts nothing. */
        int packet = err == ERROR_IO_PENDING || err == ERROR_MORE_DATA ||
                     (nt != 0 && !SCIO_IS_ERROR(nt));
        if (!packet) {
            int mine;
            scio_mutex_lock(&port.lock);
            mine = flight_take_locked(&w->ov);
            scio_mutex_unlock(&port.lock);
            if (mine)
                scio_op_complete(op, nt ? from_nt(nt) : map_error(err), 0, (long)err);
            return;
        }
    }
    /* A cancel that came before the request reached the driver found
     * nothing to cancel: repeat it now.  (w is ours until the packet.) */
    if (scio_op_cancelled(op))
        CancelIoEx(s->h, &w->ov);
}

static void w32_cancel(scio_device *d, scio_op *op)
{
    w32_dev *s = (w32_dev *)scio_device_state(d);
    CancelIoEx(s->h, op ? &((w32_op *)scio_op_backend_data(op))->ov : NULL);
}

static void w32_release(scio_device *d)
{
    w32_dev *s = (w32_dev *)scio_device_state(d);
    CloseHandle(s->h);
}

static void w32_destroy(scio_device *d)
{
    w32_dev *s = (w32_dev *)scio_device_state(d);
    size_t i;
    for (i = 0; i < s->n_events; i++)
        CloseHandle(s->events[i]);
    scio_mutex_destroy(&s->lock);
    free(s);
}

static const scio_backend w32_backend = {
    .name = "win32",
    .op_data_size = sizeof(w32_op),
    .ioctl = w32_ioctl,
    .submit = w32_submit,
    .cancel = w32_cancel,
    .release = w32_release,
    .destroy = w32_destroy,
};

/* ---- open ------------------------------------------------------------------- */

static const char sharing_hint[] =
    "the reader is in use by another program. Smart-card reader drivers are "
    "usually exclusive, and the Smart Card service (SCardSvr) keeps every "
    "reader open while it runs: stop it from an administrator prompt with "
    "'net stop SCardSvr' (or 'sc stop SCardSvr'), and close other programs "
    "that use the reader";

scio_status scio_open_win32(const wchar_t *path, scio_queue *q,
                            scio_device **out, char *errbuf, size_t errlen)
{
    w32_dev *s;
    HANDLE h;
    char upath[512];
    char msg[1024];
    scio_status st;

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
        st = status_from_last_error(err);
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

    if (port_start() != 0 ||
        CreateIoCompletionPort(h, port.iocp, PORT_KEY_IO, 0) == NULL) {
        DWORD err = GetLastError();
        CloseHandle(h);
        snprintf(msg, sizeof(msg),
                 "cannot attach %s to the completion port (Win32 error %lu)",
                 upath, (unsigned long)err);
        set_err(errbuf, errlen, msg);
        return SCIO_INSUFFICIENT_RESOURCES;
    }
    s = (w32_dev *)calloc(1, sizeof(*s));
    if (!s) {
        CloseHandle(h);
        set_err(errbuf, errlen, "out of memory");
        return SCIO_NO_MEMORY;
    }
    s->h = h;
    scio_mutex_init(&s->lock);
    st = scio_device_create(&w32_backend, s, q, 0, out);
    if (st != SCIO_SUCCESS) {
        scio_mutex_destroy(&s->lock);
        free(s);
        CloseHandle(h);
        set_err(errbuf, errlen, "cannot create the device (out of memory or of a completion queue)");
        return st;
    }
    set_err(errbuf, errlen, "");
    return SCIO_SUCCESS;
}
