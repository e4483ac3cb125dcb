/*
 * pcsc_backend.c - a reader held by the PC/SC resource manager (pcscd,
 * SCardSvr, macOS's daemon), driven through the IOCTL contract of scio.h.
 *
 * The client library is loaded at run time (pcsc_abi.h declares its API):
 * libpcsclite.so.1, the PCSC framework, winscard.dll.  Each device has two
 * contexts: one for every request but tracking, used under the device's
 * lock, and one of its own for IS_PRESENT / IS_ABSENT, whose blocking
 * SCardGetStatusChange is cancelled with SCardCancel (a call on a context
 * holds it until it returns).
 *
 * The resource manager powers cards itself, so some steps of the spec's
 * sequence become its job (docs/architecture.md, "PC/SC"):
 *   - no card handle and a card in: the card reads SWALLOWED (in, not
 *     powered for us); POWER(COLD_RESET) then connects, and the resource
 *     manager powers the card and negotiates the protocol (SPECIFIC);
 *   - with a handle, COLD_RESET / WARM_RESET are SCardReconnect with
 *     SCARD_UNPOWER_CARD / SCARD_RESET_CARD, POWER_DOWN is SCardDisconnect
 *     with SCARD_UNPOWER_CARD (the handle goes: the card reads SWALLOWED);
 *   - SET_PROTOCOL confirms the negotiated protocol, or reconnects asking
 *     for the wanted one (with a reset, as a new PPS needs one);
 *   - GET_ATTRIBUTE, SET_ATTRIBUTE and vendor controls use the card handle,
 *     or a direct connection (SCARD_SHARE_DIRECT) made for the call when
 *     there is none, so that they work without a card and hold nothing.
 * Closing the device disconnects with SCARD_LEAVE_CARD: what happens to
 * the card then is the resource manager's call (it powers idle cards down).
 */
#ifndef _WIN32
#define _GNU_SOURCE
#include <dlfcn.h>
#else
#include <windows.h>
#endif
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "pcsc_abi.h"

/* pcsc-lite (Linux) waits for the daemon's answer on the context's own Unix
 * socket with no timeout.  Shutting that socket down ends the wait (the call
 * returns SCARD_F_COMM_ERROR): so a call can be bounded in its caller's
 * thread by a watchdog, with no hand-off to the core's I/O lane (backend.h,
 * can_bound).  Elsewhere the lane bounds the calls. */
#if defined(__linux__)
#define PCSC_BOUNDED 1
#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#else
#define PCSC_BOUNDED 0
#endif

/* A blocked tracking wait wakes this often even if no card event and no
 * cancel came (a cancel that lands just before the wait starts is lost by
 * pcsc-lite: wake_tracking repeats it, this only bounds the worst case). */
#define PCSC_TRACK_SLICE_MS 1000u
/* A tracking wait with a deadline (a slice of one in its caller's thread)
 * ends by pcsc-lite's own timeout; the library then still waits, with no
 * timeout, for the daemon's answer to its unregistering: the watchdog
 * shuts the context's socket down this long after the deadline. */
#define PCSC_TRACK_GRACE_US 100000
/* The most readers one tracking set's SCardGetStatusChange takes: older
 * pcsc-lite refuses as many as its reader table holds (16) in one call. */
#define PCSC_SET_MAX 15u
/* Reader names are short (pcsc-lite: 128 bytes); refuse absurd ones. */
#define PCSC_MAX_READER_NAME 1024u

#if defined(_WIN32)
#define PCSC_LIBRARY "winscard.dll"
#define PCSC_A(name) name "A"
#elif defined(__APPLE__)
#define PCSC_LIBRARY "/System/Library/Frameworks/PCSC.framework/PCSC"
#define PCSC_A(name) name
#else
#define PCSC_LIBRARY "libpcsclite.so.1"
#define PCSC_A(name) name
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PCSC_PRINTF(fmt_arg, first_arg) __attribute__((format(printf, fmt_arg, first_arg)))
#else
#define PCSC_PRINTF(fmt_arg, first_arg)
#endif

_Static_assert(SCIO_MAX_INPUT <= UINT32_MAX && SCIO_MAX_OUTPUT <= UINT32_MAX,
               "IOCTL buffer sizes fit a 32-bit DWORD");

/* ---- the client library (loaded once, kept for the process) ------------ */

typedef struct pcsc_api {
    pcsc_establish_fn establish;
    pcsc_release_fn release;
    pcsc_list_readers_fn list_readers;
    pcsc_connect_fn connect;
    pcsc_reconnect_fn reconnect;
    pcsc_disconnect_fn disconnect;
    pcsc_status_fn status;
    pcsc_get_status_change_fn get_status_change;
    pcsc_control_fn control;
    pcsc_transmit_fn transmit;
    pcsc_cancel_fn cancel;
    pcsc_get_attrib_fn get_attrib;   /* optional */
    pcsc_set_attrib_fn set_attrib;   /* optional */
    pcsc_begin_transaction_fn begin_transaction; /* optional: then NOT_SUPPORTED */
    pcsc_end_transaction_fn end_transaction;     /* optional, with begin */
} pcsc_api;

static scio_mutex api_lock = SCIO_MUTEX_INITIALIZER;
static pcsc_api api;
static int api_state;            /* 0 not tried, 1 loaded, -1 failed */
static scio_status api_failure;
static char api_error[384];

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...) PCSC_PRINTF(3, 4);
static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!errbuf || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

#ifdef _WIN32
/* FARPROC to a function-pointer field without a cast between incompatible
 * function types. */
#define RESOLVE(field, name)                                        \
    do {                                                            \
        FARPROC p_ = GetProcAddress(lib, name);                     \
        memcpy(&api.field, &p_, sizeof api.field);                  \
    } while (0)
#else
#define RESOLVE(field, name) (*(void **)(&api.field) = dlsym(lib, name))
#endif

/* Load the client library once (api_lock held). */
static scio_status load_api_locked(void)
{
    const char *missing = NULL;
    const char *path = PCSC_LIBRARY;
#ifdef _WIN32
    /* From System32 only: never a winscard.dll planted beside the program. */
    HMODULE lib = LoadLibraryExA(path, NULL, LOAD_LIBRARY_SEARCH_SYSTEM32);
    if (!lib) {
        set_err(api_error, sizeof api_error,
                "the PC/SC client library %s could not be loaded (Win32 error %lu)",
                path, (unsigned long)GetLastError());
        return SCIO_DLL_NOT_FOUND;
    }
#else
    void *lib;
    const char *env = getenv("SCARDIO_PCSC_LIBRARY");
    if (env && *env)
        path = env;
    dlerror();
    lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        set_err(api_error, sizeof api_error,
                "the PC/SC client library %s could not be loaded: %s (is pcsc-lite "
                "installed?)", path, why ? why : "unknown error");
        return SCIO_DLL_NOT_FOUND;
    }
#endif
    RESOLVE(establish, "SCardEstablishContext");
    RESOLVE(release, "SCardReleaseContext");
    RESOLVE(list_readers, PCSC_A("SCardListReaders"));
    RESOLVE(connect, PCSC_A("SCardConnect"));
    RESOLVE(reconnect, "SCardReconnect");
    RESOLVE(disconnect, "SCardDisconnect");
    RESOLVE(status, PCSC_A("SCardStatus"));
    RESOLVE(get_status_change, PCSC_A("SCardGetStatusChange"));
#ifdef __APPLE__
    /* The framework's SCardControl is the old form without a control
     * code; the form with one is exported as SCardControl132. */
    RESOLVE(control, "SCardControl132");
#else
    RESOLVE(control, "SCardControl");
#endif
    RESOLVE(transmit, "SCardTransmit");
    RESOLVE(cancel, "SCardCancel");
    RESOLVE(get_attrib, "SCardGetAttrib");
    RESOLVE(set_attrib, "SCardSetAttrib");
    RESOLVE(begin_transaction, "SCardBeginTransaction");
    RESOLVE(end_transaction, "SCardEndTransaction");
    if (!api.establish) missing = "SCardEstablishContext";
    else if (!api.release) missing = "SCardReleaseContext";
    else if (!api.list_readers) missing = "SCardListReaders";
    else if (!api.connect) missing = "SCardConnect";
    else if (!api.reconnect) missing = "SCardReconnect";
    else if (!api.disconnect) missing = "SCardDisconnect";
    else if (!api.status) missing = "SCardStatus";
    else if (!api.get_status_change) missing = "SCardGetStatusChange";
    else if (!api.control) missing = "SCardControl";
    else if (!api.transmit) missing = "SCardTransmit";
    else if (!api.cancel) missing = "SCardCancel";
    if (missing) {
        set_err(api_error, sizeof api_error,
                "the PC/SC client library %s does not export %s", path, missing);
#ifdef _WIN32
        FreeLibrary(lib);
#else
        dlclose(lib);
#endif
        memset(&api, 0, sizeof api);
        return SCIO_ENTRYPOINT_NOT_FOUND;
    }
    return SCIO_SUCCESS; /* never unloaded: abandoned calls may still be in it */
}

static scio_status load_api(char *errbuf, size_t errlen)
{
    scio_status st;
    scio_mutex_lock(&api_lock);
    if (api_state == 0) {
        api_failure = load_api_locked();
        api_state = api_failure == SCIO_SUCCESS ? 1 : -1;
    }
    st = api_state == 1 ? SCIO_SUCCESS : api_failure;
    if (st != SCIO_SUCCESS)
        set_err(errbuf, errlen, "%s", api_error);
    scio_mutex_unlock(&api_lock);
    return st;
}

/* ---- return codes -------------------------------------------------------- */

static uint32_t rc32(PCSC_LONG rc) { return (uint32_t)rc; }

static const char *code_name(uint32_t rc)
{
    switch (rc) {
    case PCSC_S_SUCCESS: return "SCARD_S_SUCCESS";
    case PCSC_F_INTERNAL_ERROR: return "SCARD_F_INTERNAL_ERROR";
    case PCSC_E_CANCELLED: return "SCARD_E_CANCELLED";
    case PCSC_E_INVALID_HANDLE: return "SCARD_E_INVALID_HANDLE";
    case PCSC_E_INVALID_PARAMETER: return "SCARD_E_INVALID_PARAMETER";
    case PCSC_E_NO_MEMORY: return "SCARD_E_NO_MEMORY";
    case PCSC_E_INSUFFICIENT_BUFFER: return "SCARD_E_INSUFFICIENT_BUFFER";
    case PCSC_E_UNKNOWN_READER: return "SCARD_E_UNKNOWN_READER";
    case PCSC_E_TIMEOUT: return "SCARD_E_TIMEOUT";
    case PCSC_E_SHARING_VIOLATION: return "SCARD_E_SHARING_VIOLATION";
    case PCSC_E_NO_SMARTCARD: return "SCARD_E_NO_SMARTCARD";
    case PCSC_E_PROTO_MISMATCH: return "SCARD_E_PROTO_MISMATCH";
    case PCSC_E_NOT_READY: return "SCARD_E_NOT_READY";
    case PCSC_E_INVALID_VALUE: return "SCARD_E_INVALID_VALUE";
    case PCSC_F_COMM_ERROR: return "SCARD_F_COMM_ERROR";
    case PCSC_E_READER_UNAVAILABLE: return "SCARD_E_READER_UNAVAILABLE";
    case PCSC_E_NO_SERVICE: return "SCARD_E_NO_SERVICE";
    case PCSC_E_SERVICE_STOPPED: return "SCARD_E_SERVICE_STOPPED";
    case PCSC_E_NO_READERS_AVAILABLE: return "SCARD_E_NO_READERS_AVAILABLE";
    case PCSC_W_REMOVED_CARD: return "SCARD_W_REMOVED_CARD";
    case PCSC_W_RESET_CARD: return "SCARD_W_RESET_CARD";
    case PCSC_E_NOT_TRANSACTED: return "SCARD_E_NOT_TRANSACTED";
    case PCSC_W_UNRESPONSIVE_CARD: return "SCARD_W_UNRESPONSIVE_CARD";
    default: return "SCARD error";
    }
}

/* The core's status for a resource-manager result. */
static scio_status map_rc(uint32_t rc)
{
    switch (rc) {
    case PCSC_S_SUCCESS: return SCIO_SUCCESS;
    case PCSC_E_CANCELLED:
    case PCSC_E_SYSTEM_CANCELLED: return SCIO_CANCELLED;
    case PCSC_E_TIMEOUT: return SCIO_IO_TIMEOUT;
    case PCSC_E_SHARING_VIOLATION: return SCIO_SHARING_VIOLATION;
    case PCSC_E_NO_SMARTCARD:
    case PCSC_W_REMOVED_CARD: return SCIO_NO_MEDIA;
    case PCSC_W_UNSUPPORTED_CARD:
    case PCSC_W_UNRESPONSIVE_CARD:
    case PCSC_E_INVALID_ATR: return SCIO_UNRECOGNIZED_MEDIA;
    case PCSC_W_UNPOWERED_CARD:
    case PCSC_W_RESET_CARD:
    case PCSC_E_NOT_READY:
    case PCSC_E_NOT_TRANSACTED: return SCIO_INVALID_DEVICE_STATE;
    case PCSC_E_PROTO_MISMATCH:
    case PCSC_E_READER_UNSUPPORTED:
    case PCSC_E_CARD_UNSUPPORTED:
    case PCSC_E_UNSUPPORTED_FEATURE_WIN: return SCIO_NOT_SUPPORTED;
#ifndef _WIN32
    case PCSC_E_UNEXPECTED: return SCIO_NOT_SUPPORTED; /* pcsc-lite: UNSUPPORTED_FEATURE */
#endif
    case PCSC_E_INSUFFICIENT_BUFFER:
    case PCSC_E_PCI_TOO_SMALL: return SCIO_BUFFER_TOO_SMALL;
    case PCSC_E_INVALID_PARAMETER:
    case PCSC_E_INVALID_VALUE: return SCIO_INVALID_PARAMETER;
    case PCSC_E_NO_MEMORY: return SCIO_NO_MEMORY;
    case PCSC_E_SERVER_TOO_BUSY: return SCIO_DEVICE_BUSY;
    case PCSC_E_UNKNOWN_READER:
    case PCSC_E_READER_UNAVAILABLE:
    case PCSC_E_NO_READERS_AVAILABLE:
    case PCSC_E_INVALID_HANDLE: return SCIO_DEVICE_NOT_CONNECTED;
#ifndef _WIN32
    /* pcsc-lite's only communication is with the daemon: it went away. */
    case PCSC_F_COMM_ERROR:
#endif
    case PCSC_E_NO_SERVICE:
    case PCSC_E_SERVICE_STOPPED:
    case PCSC_P_SHUTDOWN: return SCIO_NO_SERVICE;
    default: return SCIO_IO_DEVICE_ERROR;
    }
}

/* A resource-manager code as the device's driver code: its 32-bit value
 * (negative where long has 32 bits, as on Windows). */
static long drv_code(uint32_t rc)
{
#if LONG_MAX > 0x7FFFFFFFL
    return (long)rc;
#else
    return (long)(int32_t)rc;
#endif
}

static scio_status fail_rc(uint32_t rc, long *drv)
{
    *drv = drv_code(rc);
    return map_rc(rc);
}

/* Protocols between the contract's masks and the library's. */
static PCSC_DWORD to_pcsc_protocols(uint32_t mask)
{
    PCSC_DWORD p = 0;
    if (mask & SCIO_PROTOCOL_T0) p |= PCSC_PROTOCOL_T0;
    if (mask & SCIO_PROTOCOL_T1) p |= PCSC_PROTOCOL_T1;
    if (mask & SCIO_PROTOCOL_RAW) p |= PCSC_PROTOCOL_RAW;
    return p;
}

static uint32_t from_pcsc_protocol(PCSC_DWORD p)
{
    if (p & PCSC_PROTOCOL_T1) return SCIO_PROTOCOL_T1;
    if (p & PCSC_PROTOCOL_T0) return SCIO_PROTOCOL_T0;
    if (p & PCSC_PROTOCOL_RAW) return SCIO_PROTOCOL_RAW;
    return 0;
}

/* SCardStatus's reader state as the contract's GET_STATE value. */
static uint32_t contract_state(PCSC_DWORD st)
{
#ifdef _WIN32
    return st <= SCIO_STATE_SPECIFIC ? (uint32_t)st : SCIO_STATE_UNKNOWN;
#else
    /* Several flags may be set at once: the most advanced one counts. */
    if (st & PCSC_BIT_SPECIFIC) return SCIO_STATE_SPECIFIC;
    if (st & PCSC_BIT_NEGOTIABLE) return SCIO_STATE_NEGOTIABLE;
    if (st & PCSC_BIT_POWERED) return SCIO_STATE_POWERED;
    if (st & PCSC_BIT_SWALLOWED) return SCIO_STATE_SWALLOWED;
    if (st & PCSC_BIT_PRESENT) return SCIO_STATE_PRESENT;
    if (st & PCSC_BIT_ABSENT) return SCIO_STATE_ABSENT;
    return SCIO_STATE_UNKNOWN;
#endif
}

/* ---- bounding calls in the caller's thread (pcsc-lite) ------------------- */

/* The main context of a device, as the watchdog knows it. */
typedef struct pcsc_bound {
    int fd;                    /* the context's socket; -1: not known (the lane bounds) */
    uint64_t ino;              /* its inode, checked before a shutdown: fds get reused */
    int broken;                /* shut down: re-establish before the next call */
    /* guarded by wd_lock */
    int armed;
    int64_t deadline;          /* of the call in flight (scio_now_us) */
    int fired;                 /* WD_TIMED_OUT / WD_ABORTED: its socket was shut down */
    struct pcsc_bound *next;   /* in wd_armed */
} pcsc_bound;

#if PCSC_BOUNDED

enum { WD_NONE, WD_TIMED_OUT, WD_ABORTED };
/* An idle watchdog ends after this long (a busy one sleeps to deadlines). */
#define WD_IDLE_US 10000000
/* More sockets to pcscd than this in the process: not told apart. */
#define PCSC_MAX_SOCKETS 256

typedef struct fd_ino {
    int fd;
    uint64_t ino;
} fd_ino;

/* The daemon's socket as pcsc-lite's client names it. */
static const char *pcscd_socket_path(void)
{
    const char *e = getenv("PCSCLITE_CSOCK_NAME");
    return e && *e ? e : "/run/pcscd/pcscd.comm";
}

/* The process's Unix stream sockets connected to the daemon's socket: how
 * many (the first `cap` in out), or -1 if they cannot be listed. */
static int pcscd_sockets(fd_ino *out, int cap)
{
    const char *path = pcscd_socket_path();
    size_t path_len = strlen(path);
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0, dir_fd;
    if (!dir)
        return -1;
    dir_fd = dirfd(dir);
    while ((e = readdir(dir)) != NULL) {
        struct sockaddr_un sa;
        socklen_t sa_len = sizeof sa, type_len;
        char *end, link[64];
        long v = strtol(e->d_name, &end, 10);
        unsigned long long ino;
        int fd, type = 0;
        ssize_t link_len;
        size_t got;
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || *end || v > INT_MAX || v == dir_fd)
            continue;
        fd = (int)v;
        /* The link names a socket and its inode ("socket:[123]") without
         * touching the descriptor, which another thread may be closing. */
        link_len = readlinkat(dir_fd, e->d_name, link, sizeof link - 1);
        if (link_len <= 0)
            continue;
        link[link_len] = 0;
        if (strncmp(link, "socket:[", 8) != 0)
            continue;
        ino = strtoull(link + 8, &end, 10);
        if (*end != ']')
            continue;
        type_len = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || type != SOCK_STREAM)
            continue;
        memset(&sa, 0, sizeof sa);
        if (getpeername(fd, (struct sockaddr *)&sa, &sa_len) != 0 || sa.sun_family != AF_UNIX)
            continue;
        got = sa_len > offsetof(struct sockaddr_un, sun_path)
                  ? (size_t)sa_len - offsetof(struct sockaddr_un, sun_path) : 0;
        if (got > sizeof sa.sun_path)
            got = sizeof sa.sun_path;
        if (strnlen(sa.sun_path, got) != path_len || memcmp(sa.sun_path, path, path_len) != 0)
            continue;
        if (n < cap) {
            out[n].fd = fd;
            out[n].ino = (uint64_t)ino;
        }
        n++;
    }
    closedir(dir);
    return n;
}

/* A device's main context is established under this lock (as every other
 * context of this backend: establish), so that the one new socket to the
 * daemon after it is ours; a context another PC/SC client of the process
 * makes meanwhile makes two, and then ours is not told apart (bound.fd -1). */
static scio_mutex ident_lock = SCIO_MUTEX_INITIALIZER;

static void find_context_socket(pcsc_bound *b, const fd_ino *before, int nb)
{
    fd_ino after[PCSC_MAX_SOCKETS];
    int na = pcscd_sockets(after, PCSC_MAX_SOCKETS), found = 0;
    fd_ino mine = { -1, 0 };
    __atomic_store_n(&b->fd, -1, __ATOMIC_RELAXED);
    if (nb < 0 || nb > PCSC_MAX_SOCKETS || na < 0 || na > PCSC_MAX_SOCKETS)
        return;
    for (int i = 0; i < na; i++) {
        int old = 0;
        for (int j = 0; j < nb && !old; j++)
            old = before[j].fd == after[i].fd && before[j].ino == after[i].ino;
        if (!old) {
            mine = after[i];
            found++;
        }
    }
    if (found == 1) {
        __atomic_store_n(&b->fd, mine.fd, __ATOMIC_RELAXED);
        b->ino = mine.ino;
    }
}

/* ---- the watchdog: one thread per process, sleeping until the earliest
 * deadline of a call in flight.  Arming a call that ends after the planned
 * wake-up takes the lock and compares: no system call, nobody woken. */

static scio_mutex wd_lock = SCIO_MUTEX_INITIALIZER;
static scio_cond wd_cv;
static int wd_cv_ready, wd_up;
static unsigned long wd_generation;
static pcsc_bound *wd_armed;
static int64_t wd_plan;        /* when the watchdog next looks (while wd_up) */

/* Shut the call's socket down (wd_lock held): it ends with a communication
 * error.  Only while the call is armed, so the fd is still the context's
 * (it is closed only by SCardReleaseContext, under the device lock the call
 * holds) -- and only if it still has the inode it had. */
static void wd_fire(pcsc_bound *b, int why)
{
    struct stat st;
    if (!b->armed || b->fired)
        return;
    b->fired = why;
    if (fstat(b->fd, &st) == 0 && (uint64_t)st.st_ino == b->ino)
        shutdown(b->fd, SHUT_RDWR);
}

static SCIO_THREAD_FN wd_main(void *arg)
{
    int64_t idle_since = 0;
    (void)arg;
    scio_mutex_lock(&wd_lock);
    for (;;) {
        int64_t now = scio_now_us(), next = INT64_MAX;
        int any = 0;
        for (pcsc_bound *b = wd_armed; b; b = b->next) {
            if (b->fired)
                continue;
            if (b->deadline <= now) {
                wd_fire(b, WD_TIMED_OUT);
                continue;
            }
            if (b->deadline < next)
                next = b->deadline;
            any = 1;
        }
        if (any) {
            idle_since = 0;
        } else {
            if (idle_since == 0)
                idle_since = now;
            else if (now - idle_since >= WD_IDLE_US)
                break;
            next = idle_since + WD_IDLE_US;
        }
        wd_plan = next;
        scio_cond_wait_until(&wd_cv, &wd_lock, (next + 999) / 1000);
    }
    wd_up = 0;
    scio_mutex_unlock(&wd_lock);
    SCIO_THREAD_RETURN;
}

/* Arm the device's call in flight with its deadline; -1 if the watchdog
 * cannot run (then the call is not bounded here). */
static int wd_arm(pcsc_bound *b, int64_t deadline)
{
    int wake = 0;
    scio_mutex_lock(&wd_lock);
    if (wd_generation != scio_fork_generation) {
        /* A fork's child: the parent's watchdog is not running here. */
        wd_generation = scio_fork_generation;
        wd_up = 0;
        wd_armed = NULL;
    }
    if (!wd_cv_ready) {
        scio_cond_init(&wd_cv);
        wd_cv_ready = 1;
    }
    if (!wd_up) {
        if (scio_thread_start_detached(wd_main, NULL) != 0) {
            scio_mutex_unlock(&wd_lock);
            return -1;
        }
        wd_up = 1;
        wd_plan = INT64_MAX; /* it looks at once */
    }
    b->armed = 1;
    b->fired = WD_NONE;
    b->deadline = deadline;
    b->next = wd_armed;
    wd_armed = b;
    if (deadline < wd_plan) {
        wd_plan = deadline;
        wake = 1;
    }
    if (wake)
        scio_cond_signal(&wd_cv);
    scio_mutex_unlock(&wd_lock);
    return 0;
}

/* The call is out of the library: never touch its socket again.  Returns
 * why it was shut down (WD_NONE: it was not). */
static int wd_disarm(pcsc_bound *b)
{
    int fired;
    scio_mutex_lock(&wd_lock);
    for (pcsc_bound **p = &wd_armed; *p; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            break;
        }
    }
    b->next = NULL;
    b->armed = 0;
    fired = b->fired;
    scio_mutex_unlock(&wd_lock);
    return fired;
}

/* End the call armed on b now, if there is one: 1 if there was. */
static int wd_abort(pcsc_bound *b)
{
    int armed;
    scio_mutex_lock(&wd_lock);
    armed = b->armed;
    wd_fire(b, WD_ABORTED);
    scio_mutex_unlock(&wd_lock);
    return armed;
}

#endif /* PCSC_BOUNDED */

/* ---- devices ------------------------------------------------------------- */

enum { TXN_NONE, TXN_OPEN, TXN_LOST }; /* LOST: it ended with the card handle */

typedef struct pcsc_dev {
    char *reader;
    PCSC_DWORD share;          /* for the next SCardConnect (SET_SHARE_MODE) */
    PCSC_DWORD default_share;  /* the mode the device was opened with */
    PCSC_CONTEXT ctx;          /* every call but tracking, under `lock` */
    PCSC_CONTEXT track_ctx;    /* IS_PRESENT / IS_ABSENT only (track_lock: set, read
                                  by others; the tracker reads it without) */
    int has_ctx, has_track_ctx;
    pcsc_bound bound;          /* ctx's socket, for bounding calls on it */
    pcsc_bound track_bound;    /* track_ctx's, for bounding a tracking wait */
    scio_mutex lock;
    /* guarded by lock */
    int connected;
    PCSC_HANDLE card;
    PCSC_DWORD handle_share;   /* the mode `card` is connected in */
    int transaction;           /* TXN_*: SCardBeginTransaction on `card` */
    int reset_by_other;        /* the handle saw SCARD_W_RESET_CARD */
    uint32_t protocol;         /* the contract's protocol in force, 0 if none */
    uint8_t atr[SCIO_MAX_ATR];
    size_t atr_len;
    uint32_t last_error;
    int no_atr_attribute;      /* SCardGetAttrib(ATR_STRING) unsupported here */
    /* tracking, guarded by track_lock */
    scio_mutex track_lock;
    scio_cond track_cv;
    int wake;                  /* interrupt the wait: look at cancellation */
    int in_call;               /* the tracker is inside SCardGetStatusChange */
    int have_seen;
    PCSC_DWORD seen;           /* the event state the last request ended on */
} pcsc_dev;

static void forget_card(pcsc_dev *s)
{
    if (s->transaction == TXN_OPEN)
        s->transaction = TXN_LOST; /* a handle's transaction ends with it */
    s->connected = 0;
    s->reset_by_other = 0;
    s->protocol = 0;
    s->atr_len = 0;
}

static void drop_handle(pcsc_dev *s)
{
    if (s->connected)
        api.disconnect(s->card, PCSC_LEAVE_CARD);
    forget_card(s);
}

/* Is a card in?  *present, from a non-blocking SCardGetStatusChange. */
static scio_status look(pcsc_dev *s, PCSC_CONTEXT ctx, int *present, PCSC_DWORD *event,
                        long *drv)
{
    PCSC_READERSTATE rs;
    uint32_t rc;
    memset(&rs, 0, sizeof rs);
    rs.szReader = s->reader;
    rs.dwCurrentState = PCSC_STATE_UNAWARE;
    rc = rc32(api.get_status_change(ctx, 0, &rs, 1));
    if (rc != PCSC_S_SUCCESS)
        return fail_rc(rc, drv);
    if (rs.dwEventState & PCSC_STATE_UNKNOWN) {
        *drv = drv_code(PCSC_E_UNKNOWN_READER);
        return SCIO_DEVICE_NOT_CONNECTED; /* the reader went away */
    }
    *present = (rs.dwEventState & PCSC_STATE_PRESENT) != 0;
    if (event)
        *event = rs.dwEventState & ~(PCSC_DWORD)PCSC_STATE_CHANGED;
    return SCIO_SUCCESS;
}

/* Read the handle's ATR and protocol (lock held).  A removed card drops
 * the handle; a card reset by another client marks it. */
static scio_status read_status(pcsc_dev *s, PCSC_DWORD *state, long *drv)
{
    /* Windows' ATR buffer is 36 bytes: room for what any platform writes. */
    unsigned char atr[40];
    PCSC_DWORD atr_len = PCSC_ATR_BUFFER, name_len = 0, proto = 0;
    uint32_t rc;
    *state = 0;
    rc = rc32(api.status(s->card, NULL, &name_len, state, &proto, atr, &atr_len));
    if (rc == PCSC_W_RESET_CARD) {
        s->reset_by_other = 1;
        s->protocol = 0;
        return fail_rc(rc, drv);
    }
    if (rc != PCSC_S_SUCCESS) {
        if (rc == PCSC_W_REMOVED_CARD || rc == PCSC_E_NO_SMARTCARD)
            drop_handle(s);
        return fail_rc(rc, drv);
    }
    if (atr_len > SCIO_MAX_ATR) {
        *drv = (long)atr_len;
        return SCIO_DEVICE_DATA_ERROR;
    }
    memcpy(s->atr, atr, atr_len);
    s->atr_len = atr_len;
    s->protocol = from_pcsc_protocol(proto);
    return SCIO_SUCCESS;
}

/* pcsc-lite's SCardStatus costs two round trips to the daemon (it fetches
 * every reader's state before it asks about the handle); SCardGetAttrib
 * costs one, and pcscd checks the same before it answers: the reader
 * works, and the handle has seen no reset and no removal (an event stays
 * pending on the handle until a reconnect, so a failure here leaves it for
 * SCardStatus to report).  Windows' SCardStatus is a single call. */
#if defined(_WIN32) || defined(__APPLE__)
#define PCSC_LOOK_BY_ATTRIBUTE 0
#else
#define PCSC_LOOK_BY_ATTRIBUTE 1
#endif

/* Refresh the ATR of a handle with a protocol in force through
 * SCardGetAttrib (lock held): 1 if it answered, 0 if SCardStatus must. */
static int look_by_attribute(pcsc_dev *s)
{
    unsigned char atr[64];
    PCSC_DWORD len = sizeof atr;
    uint32_t rc;
    if (!PCSC_LOOK_BY_ATTRIBUTE || !api.get_attrib || s->no_atr_attribute ||
        !s->connected || !s->protocol || s->reset_by_other)
        return 0;
    rc = rc32(api.get_attrib(s->card, SCIO_ATTR_ATR_STRING, atr, &len));
    if (rc != PCSC_S_SUCCESS) {
        if (map_rc(rc) == SCIO_NOT_SUPPORTED || rc == PCSC_E_NOT_TRANSACTED)
            s->no_atr_attribute = 1; /* the driver does not answer it: never again */
        return 0;
    }
    if (len == 0 || len > SCIO_MAX_ATR)
        return 0;
    memcpy(s->atr, atr, len);
    s->atr_len = len;
    return 1;
}

/* The ATR and protocol of the handle after a (re)connect negotiated
 * `active` (lock held). */
static scio_status read_after_connect(pcsc_dev *s, PCSC_DWORD active, long *drv)
{
    PCSC_DWORD state;
    s->reset_by_other = 0;
    s->protocol = from_pcsc_protocol(active);
    if (look_by_attribute(s))
        return SCIO_SUCCESS;
    return read_status(s, &state, drv);
}

/* Connect (lock held, no handle yet): the resource manager powers the card
 * and negotiates a protocol. */
static scio_status connect_card(pcsc_dev *s, long *drv)
{
    PCSC_DWORD active = 0;
    uint32_t rc = rc32(api.connect(s->ctx, s->reader, s->share,
                                   PCSC_PROTOCOL_T0 | PCSC_PROTOCOL_T1, &s->card, &active));
    if (rc != PCSC_S_SUCCESS)
        return fail_rc(rc, drv);
    s->connected = 1;
    s->handle_share = s->share;
    return read_after_connect(s, active, drv);
}

static scio_status reconnect_card(pcsc_dev *s, PCSC_DWORD protocols, PCSC_DWORD init, long *drv)
{
    PCSC_DWORD active = 0;
    uint32_t rc = rc32(api.reconnect(s->card, s->share, protocols, init, &active));
    if (rc != PCSC_S_SUCCESS) {
        if (rc == PCSC_W_REMOVED_CARD || rc == PCSC_E_NO_SMARTCARD)
            drop_handle(s);
        return fail_rc(rc, drv);
    }
    return read_after_connect(s, active, drv);
}

/* The handle a reader-level call uses: ours, or a direct connection made
 * for it (*transient: disconnect it afterwards). */
static scio_status call_handle(pcsc_dev *s, PCSC_HANDLE *h, int *transient, long *drv)
{
    PCSC_DWORD active = 0;
    uint32_t rc;
    *transient = 0;
    if (s->connected) {
        *h = s->card;
        return SCIO_SUCCESS;
    }
    rc = rc32(api.connect(s->ctx, s->reader, PCSC_SHARE_DIRECT, 0, h, &active));
    if (rc != PCSC_S_SUCCESS)
        return fail_rc(rc, drv);
    *transient = 1;
    return SCIO_SUCCESS;
}

static void end_call_handle(PCSC_HANDLE h, int transient)
{
    if (transient)
        api.disconnect(h, PCSC_LEAVE_CARD);
}

static scio_status need_out(size_t out_cap, size_t n)
{
    return out_cap < n ? SCIO_BUFFER_TOO_SMALL : SCIO_SUCCESS;
}

static scio_status put_u32(uint32_t v, uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (out_cap < 4)
        return SCIO_BUFFER_TOO_SMALL;
    scio_put_u32(out, v);
    *out_len = 4;
    return SCIO_SUCCESS;
}

/* The state as the contract names it (lock held). */
static scio_status current_state(pcsc_dev *s, uint32_t *out, long *drv)
{
    int present = 0;
    scio_status st;
    if (s->connected) {
        PCSC_DWORD state;
        if (look_by_attribute(s)) {
            *out = SCIO_STATE_SPECIFIC; /* as below: a protocol in force */
            return SCIO_SUCCESS;
        }
        st = read_status(s, &state, drv);
        if (st == SCIO_SUCCESS) {
            /* Connected with a protocol: the resource manager negotiated it. */
            *out = s->protocol ? SCIO_STATE_SPECIFIC : contract_state(state);
            return SCIO_SUCCESS;
        }
        if (s->reset_by_other) {
            *out = SCIO_STATE_POWERED; /* powered, our protocol state lost */
            return SCIO_SUCCESS;
        }
        if (s->connected)
            return st;
        /* The card went: look at the reader again. */
    }
    if ((st = look(s, s->ctx, &present, NULL, drv)) != SCIO_SUCCESS)
        return st;
    *out = present ? SCIO_STATE_SWALLOWED : SCIO_STATE_ABSENT;
    return SCIO_SUCCESS;
}

static scio_status do_get_state(pcsc_dev *s, uint8_t *out, size_t out_cap, size_t *out_len,
                                long *drv)
{
    uint32_t state;
    scio_status st;
    if ((st = need_out(out_cap, 4)) != SCIO_SUCCESS)
        return st;
    if ((st = current_state(s, &state, drv)) != SCIO_SUCCESS)
        return st;
    return put_u32(state, out, out_cap, out_len);
}

static scio_status card_in(pcsc_dev *s, long *drv)
{
    int present = 0;
    scio_status st = look(s, s->ctx, &present, NULL, drv);
    if (st != SCIO_SUCCESS)
        return st;
    return present ? SCIO_SUCCESS : SCIO_NO_MEDIA;
}

static scio_status do_power(pcsc_dev *s, const uint8_t *in, size_t in_len, uint8_t *out,
                            size_t out_cap, size_t *out_len, long *drv)
{
    uint32_t what, rc;
    scio_status st;
    if (in_len < 4)
        return SCIO_INVALID_PARAMETER;
    what = scio_get_u32(in);
    if (what > SCIO_WARM_RESET)
        return SCIO_INVALID_PARAMETER;
    if (what == SCIO_POWER_DOWN) {
        if (!s->connected)
            return card_in(s, drv); /* not powered for us: nothing to do */
        rc = rc32(api.disconnect(s->card, PCSC_UNPOWER_CARD));
        forget_card(s);
        if (rc == PCSC_W_REMOVED_CARD || rc == PCSC_E_NO_SMARTCARD)
            return fail_rc(PCSC_W_REMOVED_CARD, drv);
        return rc == PCSC_S_SUCCESS ? SCIO_SUCCESS : fail_rc(rc, drv);
    }
    if (!s->connected) {
        /* The resource manager powers the card when we connect. */
        if ((st = connect_card(s, drv)) != SCIO_SUCCESS)
            return st;
        if (what == SCIO_WARM_RESET)
            st = reconnect_card(s, PCSC_PROTOCOL_T0 | PCSC_PROTOCOL_T1, PCSC_RESET_CARD, drv);
    } else {
        st = reconnect_card(s, PCSC_PROTOCOL_T0 | PCSC_PROTOCOL_T1,
                            what == SCIO_COLD_RESET ? PCSC_UNPOWER_CARD : PCSC_RESET_CARD, drv);
    }
    if (st != SCIO_SUCCESS)
        return st;
    if (!s->atr_len)
        return SCIO_UNRECOGNIZED_MEDIA;
    if (out_cap < s->atr_len)
        return SCIO_BUFFER_TOO_SMALL; /* the card stays powered */
    memcpy(out, s->atr, s->atr_len);
    *out_len = s->atr_len;
    return SCIO_SUCCESS;
}

static scio_status no_handle_status(pcsc_dev *s, long *drv)
{
    scio_status st = card_in(s, drv);
    return st == SCIO_SUCCESS ? SCIO_INVALID_DEVICE_STATE : st;
}

static scio_status do_set_protocol(pcsc_dev *s, const uint8_t *in, size_t in_len,
                                   uint8_t *out, size_t out_cap, size_t *out_len, long *drv)
{
    uint32_t mask;
    PCSC_DWORD wanted;
    scio_status st;
    if (in_len < 4)
        return SCIO_INVALID_PARAMETER;
    if ((st = need_out(out_cap, 4)) != SCIO_SUCCESS)
        return st;
    mask = scio_get_u32(in);
    if (!s->connected)
        return no_handle_status(s, drv);
    if (s->reset_by_other || !s->protocol)
        return SCIO_INVALID_DEVICE_STATE;
    if (mask == SCIO_PROTOCOL_OPTIMAL || (mask & SCIO_PROTOCOL_DEFAULT) || (mask & s->protocol))
        return put_u32(s->protocol, out, out_cap, out_len);
    wanted = to_pcsc_protocols(mask);
    if (!wanted)
        return SCIO_NOT_SUPPORTED;
    /* Another protocol needs a new PPS exchange, so a reset. */
    if ((st = reconnect_card(s, wanted, PCSC_RESET_CARD, drv)) != SCIO_SUCCESS)
        return st;
    if (!(mask & s->protocol))
        return SCIO_NOT_SUPPORTED;
    return put_u32(s->protocol, out, out_cap, out_len);
}

static scio_status do_transmit(pcsc_dev *s, const uint8_t *in, size_t in_len, uint8_t *out,
                               size_t out_cap, size_t *out_len, long *drv)
{
    uint32_t proto, pci_len, rc;
    size_t apdu_len, cap;
    PCSC_IO_REQUEST pci;
    PCSC_DWORD rx_len;
    uint8_t *rx;

    if (in_len < SCIO_IO_REQUEST_SIZE)
        return SCIO_INVALID_PARAMETER;
    proto = scio_get_u32(in);
    pci_len = scio_get_u32(in + 4);
    if (pci_len < SCIO_IO_REQUEST_SIZE || pci_len > in_len)
        return SCIO_INVALID_PARAMETER;
    apdu_len = in_len - pci_len;
    if (apdu_len > SCIO_MAX_APDU)
        return SCIO_INVALID_BUFFER_SIZE;
    if (apdu_len < (proto == SCIO_PROTOCOL_T0 ? 4u : 1u))
        return SCIO_INVALID_PARAMETER;
    if (out_cap < SCIO_IO_REQUEST_SIZE + 2)
        return SCIO_BUFFER_TOO_SMALL;
    if (!s->connected)
        return no_handle_status(s, drv);
    if (s->reset_by_other || !s->protocol || proto != s->protocol)
        return SCIO_INVALID_DEVICE_STATE;
    cap = out_cap - SCIO_IO_REQUEST_SIZE;
    if (cap > SCIO_MAX_RESPONSE)
        cap = SCIO_MAX_RESPONSE;
    /* The caller's buffer itself: a response that does not fit is
     * SCARD_E_INSUFFICIENT_BUFFER, which is BUFFER_TOO_SMALL. */
    rx = out + SCIO_IO_REQUEST_SIZE;
    rx_len = (PCSC_DWORD)cap;
    pci.dwProtocol = to_pcsc_protocols(proto);
    pci.cbPciLength = sizeof pci;
    rc = rc32(api.transmit(s->card, &pci, in + pci_len, (PCSC_DWORD)apdu_len, NULL, rx,
                           &rx_len));
    if (rc != PCSC_S_SUCCESS) {
        if (rc == PCSC_W_REMOVED_CARD || rc == PCSC_E_NO_SMARTCARD)
            drop_handle(s);
        else if (rc == PCSC_W_RESET_CARD)
            s->reset_by_other = 1;
        return fail_rc(rc, drv);
    }
    if (rx_len > cap) {
        *drv = (long)(rx_len > 0x7FFFFFFF ? 0x7FFFFFFF : rx_len);
        return SCIO_DEVICE_DATA_ERROR; /* claims more than it could write */
    }
    scio_put_u32(out, proto);
    scio_put_u32(out + 4, SCIO_IO_REQUEST_SIZE);
    *out_len = SCIO_IO_REQUEST_SIZE + rx_len;
    return SCIO_SUCCESS;
}

static scio_status do_get_attribute(pcsc_dev *s, const uint8_t *in, size_t in_len,
                                    uint8_t *out, size_t out_cap, size_t *out_len, long *drv)
{
    uint32_t tag, rc;
    PCSC_DWORD len;
    PCSC_HANDLE h;
    int transient;
    scio_status st;
    if (in_len < 4)
        return SCIO_INVALID_PARAMETER;
    tag = scio_get_u32(in);
    if (tag == SCIO_ATTR_ATR_STRING) {
        if (!s->connected || !s->atr_len)
            return no_handle_status(s, drv);
        if (out_cap < s->atr_len)
            return SCIO_BUFFER_TOO_SMALL;
        memcpy(out, s->atr, s->atr_len);
        *out_len = s->atr_len;
        return SCIO_SUCCESS;
    }
    if (tag == SCIO_ATTR_CURRENT_PROTOCOL_TYPE)
        return put_u32(s->connected ? s->protocol : 0, out, out_cap, out_len);
    if (!api.get_attrib)
        return SCIO_NOT_SUPPORTED;
    if (out_cap == 0)
        return SCIO_BUFFER_TOO_SMALL;
    if ((st = call_handle(s, &h, &transient, drv)) != SCIO_SUCCESS)
        return st;
    len = (PCSC_DWORD)out_cap;
    memset(out, 0, out_cap);
    rc = rc32(api.get_attrib(h, tag, out, &len));
    end_call_handle(h, transient);
    if (rc == PCSC_S_SUCCESS) {
        if (len > out_cap) {
            *drv = (long)(len > 0x7FFFFFFF ? 0x7FFFFFFF : len);
            return SCIO_DEVICE_DATA_ERROR;
        }
        *out_len = len;
        return SCIO_SUCCESS;
    }
    st = fail_rc(rc, drv);
    if (st == SCIO_NOT_SUPPORTED && tag == SCIO_ATTR_CHARACTERISTICS)
        return put_u32(0, out, out_cap, out_len); /* what smclib answers */
    return st;
}

static scio_status do_set_attribute(pcsc_dev *s, const uint8_t *in, size_t in_len, long *drv)
{
    PCSC_HANDLE h;
    int transient;
    uint32_t rc;
    scio_status st;
    if (in_len < 4)
        return SCIO_INVALID_PARAMETER;
    if (!api.set_attrib)
        return SCIO_NOT_SUPPORTED;
    if ((st = call_handle(s, &h, &transient, drv)) != SCIO_SUCCESS)
        return st;
    rc = rc32(api.set_attrib(h, scio_get_u32(in), in + 4, (PCSC_DWORD)(in_len - 4)));
    end_call_handle(h, transient);
    return rc == PCSC_S_SUCCESS ? SCIO_SUCCESS : fail_rc(rc, drv);
}

/* A vendor IOCTL in either convention, as the platform's control code:
 * pcsc-lite and macOS 0x42000000 + n, Windows SCARD_CTL_CODE(n). */
static int vendor_code(uint32_t code, PCSC_DWORD *out)
{
    int pcsc_style = (code & 0xFF000000u) == 0x42000000u;
    int win_style = (code & 0xFFFF0003u) == 0x00310000u && ((code >> 2) & 0xFFFu) >= 2048u;
    if (!pcsc_style && !win_style)
        return 0;
#ifdef _WIN32
    if (pcsc_style) {
        uint32_t n = code - 0x42000000u;
        if (n < 2048u || n > 4095u)
            return 0; /* no Windows control code has this function number */
        code = SCIO_VENDOR_CTL_WIN(n);
    }
#else
    if (win_style)
        code = SCIO_VENDOR_CTL_PCSC((code >> 2) & 0xFFFu);
#endif
    *out = code;
    return 1;
}

static scio_status do_control(pcsc_dev *s, PCSC_DWORD code, const uint8_t *in, size_t in_len,
                              uint8_t *out, size_t out_cap, size_t *out_len, long *drv)
{
    PCSC_HANDLE h;
    PCSC_DWORD returned = 0;
    uint8_t none[1];
    int transient;
    uint32_t rc;
    scio_status st;
    if ((st = call_handle(s, &h, &transient, drv)) != SCIO_SUCCESS)
        return st;
    if (out_cap)
        memset(out, 0, out_cap);
    rc = rc32(api.control(h, code, in_len ? (const void *)in : (const void *)none,
                          (PCSC_DWORD)in_len, out_cap ? (void *)out : (void *)none,
                          (PCSC_DWORD)out_cap, &returned));
    end_call_handle(h, transient);
    if (rc != PCSC_S_SUCCESS)
        return fail_rc(rc, drv);
    if (returned > out_cap) {
        *drv = (long)(returned > 0x7FFFFFFF ? 0x7FFFFFFF : returned);
        return SCIO_DEVICE_DATA_ERROR;
    }
    *out_len = returned;
    return SCIO_SUCCESS;
}

/* ---- sharing and transactions (scardio's extension IOCTLs) --------------- */

/* A card-level failure of a call on the handle: a removed card takes the
 * handle with it, a reset by another client marks it. */
static void note_card_rc(pcsc_dev *s, uint32_t rc)
{
    if (rc == PCSC_W_REMOVED_CARD || rc == PCSC_E_NO_SMARTCARD)
        drop_handle(s);
    else if (rc == PCSC_W_RESET_CARD)
        s->reset_by_other = 1;
}

/* SET_SHARE_MODE: the mode of the next connection.  A handle held in
 * another mode (kept after a LEAVE disconnect) is let go with
 * SCARD_LEAVE_CARD, so the card stays powered and the next POWER connects
 * anew in the new mode: pcsc-lite's SCardReconnect from exclusive to shared
 * keeps the reader locked against other clients' SCardConnect. */
static scio_status do_set_share_mode(pcsc_dev *s, const uint8_t *in, size_t in_len,
                                     uint8_t *out, size_t out_cap, size_t *out_len)
{
    PCSC_DWORD mode;
    uint32_t want;
    if (in_len < 4)
        return SCIO_INVALID_PARAMETER;
    want = scio_get_u32(in);
    if (want == SCIO_SHARE_DEFAULT)
        mode = s->default_share;
    else if (want == SCIO_SHARE_EXCLUSIVE)
        mode = PCSC_SHARE_EXCLUSIVE;
    else if (want == SCIO_SHARE_SHARED)
        mode = PCSC_SHARE_SHARED;
    else
        return SCIO_INVALID_PARAMETER;
    if (out_cap < 4)
        return SCIO_BUFFER_TOO_SMALL;
    if (s->connected && mode != s->handle_share) {
        if (s->transaction == TXN_OPEN)
            return SCIO_INVALID_DEVICE_STATE; /* not inside a transaction */
        drop_handle(s);
    }
    s->share = mode;
    return put_u32(mode == PCSC_SHARE_EXCLUSIVE ? SCIO_SHARE_EXCLUSIVE : SCIO_SHARE_SHARED,
                   out, out_cap, out_len);
}

/* BEGIN_TRANSACTION: SCardBeginTransaction on the card handle, which waits
 * while another client holds a transaction (the device lock held: this
 * device's other calls wait too). */
static scio_status do_begin_transaction(pcsc_dev *s, scio_op *op, long *drv)
{
    uint32_t rc;
    if (!api.begin_transaction || !api.end_transaction)
        return SCIO_NOT_SUPPORTED;
    if (!s->connected)
        return no_handle_status(s, drv);
    if (s->transaction == TXN_OPEN || s->reset_by_other)
        return SCIO_INVALID_DEVICE_STATE;
    rc = rc32(api.begin_transaction(s->card));
    if (rc != PCSC_S_SUCCESS) {
        note_card_rc(s, rc);
        return fail_rc(rc, drv);
    }
    if (scio_op_cancelled(op)) { /* nobody waits for it any more: give it back */
        api.end_transaction(s->card, PCSC_LEAVE_CARD);
        return SCIO_CANCELLED;
    }
    s->transaction = TXN_OPEN;
    return SCIO_SUCCESS;
}

/* END_TRANSACTION.  A transaction whose handle went (card removed,
 * POWER_DOWN) has ended already.  One the library will not end (the card
 * was reset or removed since: pcsc-lite then keeps the lock) ends by
 * dropping the handle, and the card's error is reported. */
static scio_status do_end_transaction(pcsc_dev *s, long *drv)
{
    uint32_t rc;
    if (s->transaction == TXN_LOST) {
        s->transaction = TXN_NONE;
        return SCIO_SUCCESS;
    }
    if (s->transaction != TXN_OPEN || !s->connected)
        return SCIO_INVALID_DEVICE_STATE;
    rc = rc32(api.end_transaction(s->card, PCSC_LEAVE_CARD));
    s->transaction = TXN_NONE;
    if (rc == PCSC_S_SUCCESS)
        return SCIO_SUCCESS;
    drop_handle(s);
    return fail_rc(rc, drv);
}

/* ---- tracking (IS_PRESENT / IS_ABSENT) ------------------------------------ */

/* One SCardGetStatusChange on the tracking context, unless a wake-up came
 * first (then PCSC_E_CANCELLED without a call). */
static uint32_t track_wait(pcsc_dev *s, PCSC_DWORD timeout, PCSC_READERSTATE *rs)
{
    uint32_t rc;
    scio_mutex_lock(&s->track_lock);
    if (s->wake) {
        s->wake = 0;
        scio_mutex_unlock(&s->track_lock);
        return PCSC_E_CANCELLED;
    }
    s->in_call = 1;
    scio_mutex_unlock(&s->track_lock);
    rc = rc32(api.get_status_change(s->track_ctx, timeout, rs, 1));
    scio_mutex_lock(&s->track_lock);
    s->in_call = 0;
    scio_cond_broadcast(&s->track_cv);
    scio_mutex_unlock(&s->track_lock);
    return rc;
}

/* Card events between two event states (their high 16 bits count them). */
static unsigned events_between(PCSC_DWORD from, PCSC_DWORD to)
{
    return (unsigned)(((to >> 16) - (from >> 16)) & 0xFFFFu);
}

/* One look `ev` (CHANGED cleared, the reader known) for a request wanting a
 * card (want_present) or none, counting events from *prev when *have_prev
 * (see do_track): 1 if it completes the request, then recorded as the
 * device's `seen`; else 0, the look becoming the count's start if there
 * was none (a look of ours may be torn too). */
static int track_look(pcsc_dev *s, PCSC_DWORD ev, int want_present, PCSC_DWORD *prev,
                      int *have_prev)
{
    int present = (ev & PCSC_STATE_PRESENT) != 0;
    int went_and_back = *have_prev &&
        events_between(*prev, ev) >= (((*prev & PCSC_STATE_PRESENT) != 0) == present ? 2u
                                                                                    : 3u);
    if (present == want_present || went_and_back) {
        scio_mutex_lock(&s->track_lock);
        s->seen = ev;
        s->have_seen = 1;
        scio_mutex_unlock(&s->track_lock);
        return 1;
    }
    if (!*have_prev) {
        *prev = ev;
        *have_prev = 1;
    }
    return 0;
}

#if PCSC_BOUNDED
static scio_status establish_bound(PCSC_CONTEXT *ctx, pcsc_bound *b, const char *what,
                                   char *errbuf, size_t errlen);

/* Let go of a tracking context whose socket was shut down (the tracker's
 * thread, outside any call on it). */
static void break_track_context(pcsc_dev *s)
{
    scio_mutex_lock(&s->track_lock);
    if (s->has_track_ctx)
        api.release(s->track_ctx); /* frees the socket at once */
    s->has_track_ctx = 0;
    scio_mutex_unlock(&s->track_lock);
    __atomic_store_n(&s->track_bound.fd, -1, __ATOMIC_RELAXED);
    scio_store_release(&s->track_bound.broken, 1);
}

/* A new tracking context (not bounded: can_bound_tracking sends the waits
 * of a broken device to the core's tracking lane, whose waiter is bounded). */
static scio_status renew_track_context(pcsc_dev *s, long *drv)
{
    char why[160];
    PCSC_CONTEXT ctx;
    scio_status st = establish_bound(&ctx, &s->track_bound, s->reader, why, sizeof why);
    if (st != SCIO_SUCCESS) {
        scio_store_release(&s->track_bound.broken, 1);
        *drv = drv_code(PCSC_E_NO_SERVICE);
        return st;
    }
    scio_mutex_lock(&s->track_lock);
    s->track_ctx = ctx;
    s->has_track_ctx = 1;
    scio_mutex_unlock(&s->track_lock);
    return SCIO_SUCCESS;
}
#endif

/* Complete on the level (a card is in / none is) or on an event of the
 * wanted kind since the last request ended: the high 16 bits of the event
 * state count card events, so a card that left and came back between two
 * requests still completes IS_ABSENT (and the next IS_PRESENT).
 *
 * Away from the wanted level, such an event means the card went there and
 * back since `prev`: two events from a state at this level, three from one
 * at the wanted level.  Fewer do not count: pcscd writes a reader's new
 * level before it bumps the count, so one look can see the new level with
 * the old count, and the next look the count alone (a removal seen that
 * way, then its count, would otherwise read as an arrival and a removal).
 *
 * With a deadline (scio_op_deadline_us: a slice of a wait in its caller's
 * thread, scio_track_slice) the request ends then with SCIO_IO_TIMEOUT,
 * and the state it counted from becomes the device's `seen`: the next
 * slice counts from the same place, so an event between two slices is not
 * lost (a slice is one stretch of the same wait).  On pcsc-lite the
 * watchdog bounds such a wait too: the library's own timeout does not
 * cover its waits for the daemon's answers. */
static scio_status do_track(pcsc_dev *s, scio_op *op, int want_present, long *drv)
{
    PCSC_READERSTATE rs;
    PCSC_DWORD prev = 0;
    int have_prev, first = 1, armed = 0;
    int64_t deadline = scio_op_deadline_us(op);
    scio_status st;

#if PCSC_BOUNDED
    if (scio_load_acquire(&s->track_bound.broken) &&
        (st = renew_track_context(s, drv)) != SCIO_SUCCESS)
        return st;
    if (deadline > 0 && __atomic_load_n(&s->track_bound.fd, __ATOMIC_RELAXED) >= 0 &&
        wd_arm(&s->track_bound, deadline + PCSC_TRACK_GRACE_US) == 0)
        armed = 1;
#endif
    scio_mutex_lock(&s->track_lock);
    have_prev = s->have_seen;
    if (have_prev)
        prev = s->seen;
    scio_mutex_unlock(&s->track_lock);

    memset(&rs, 0, sizeof rs);
    rs.szReader = s->reader;
    rs.dwCurrentState = PCSC_STATE_UNAWARE;
    for (;;) {
        uint32_t rc;
        PCSC_DWORD ev, wait_ms = first ? 0 : PCSC_TRACK_SLICE_MS;
        if (scio_op_cancelled(op)) {
            st = SCIO_CANCELLED;
            break;
        }
        if (deadline > 0 && !first) {
            int64_t left = deadline - scio_now_us();
            if (left <= 0) {
                st = SCIO_IO_TIMEOUT;
                *drv = drv_code(PCSC_E_TIMEOUT);
                break;
            }
            if (left < (int64_t)wait_ms * 1000)
                wait_ms = (PCSC_DWORD)((left + 999) / 1000);
        }
        rs.dwEventState = 0;
        rc = track_wait(s, wait_ms, &rs);
        if (rc == PCSC_E_TIMEOUT || rc == PCSC_E_CANCELLED) {
            first = rc == PCSC_E_CANCELLED && first;
            continue; /* the loop head looks at cancellation and the deadline */
        }
        if (rc != PCSC_S_SUCCESS) {
            st = fail_rc(rc, drv);
            break;
        }
        first = 0;
        ev = rs.dwEventState & ~(PCSC_DWORD)PCSC_STATE_CHANGED;
        if (ev & PCSC_STATE_UNKNOWN) {
            *drv = drv_code(PCSC_E_UNKNOWN_READER);
            st = SCIO_DEVICE_NOT_CONNECTED;
            break;
        }
        if (track_look(s, ev, want_present, &prev, &have_prev)) {
            st = SCIO_SUCCESS;
            break;
        }
        rs.dwCurrentState = ev;
    }
#if PCSC_BOUNDED
    if (armed) {
        int fired = wd_disarm(&s->track_bound);
        if (fired != WD_NONE) {
            /* Its socket was shut down (the daemon did not answer by the
             * deadline, or a wake-up): the context is gone, the next
             * request makes another.  An event seen meanwhile stands. */
            break_track_context(s);
            if (st != SCIO_SUCCESS) {
                /* a wake-up's end reads as on the lane: no driver code */
                st = fired == WD_TIMED_OUT ? SCIO_IO_TIMEOUT : SCIO_CANCELLED;
                *drv = fired == WD_TIMED_OUT ? drv_code(PCSC_E_TIMEOUT) : 0;
            }
        }
    }
#endif
    (void)armed;
    if (st == SCIO_IO_TIMEOUT && have_prev) {
        scio_mutex_lock(&s->track_lock);
        s->seen = prev;
        s->have_seen = 1;
        scio_mutex_unlock(&s->track_lock);
    }
    return st;
}

static void pcsc_wake_tracking(scio_device *d)
{
    pcsc_dev *s = scio_device_state(d);
    PCSC_CONTEXT ctx;
    int in_call, has_ctx;
    scio_mutex_lock(&s->track_lock);
    s->wake = 1;
    in_call = s->in_call;
    ctx = s->track_ctx;
    has_ctx = s->has_track_ctx;
    scio_mutex_unlock(&s->track_lock);
#if PCSC_BOUNDED
    /* A wait bounded by the watchdog ends at once by its socket: no
     * SCardCancel, which a daemon that does not answer would hang. */
    if (in_call && wd_abort(&s->track_bound))
        return;
#endif
    /* pcsc-lite drops a cancel that arrives before the wait has reached the
     * daemon: repeat it (briefly) until the tracker is out of the call. */
    for (int i = 0; in_call && has_ctx && i < 50; i++) {
        api.cancel(ctx);
        scio_mutex_lock(&s->track_lock);
        if (s->in_call)
            scio_cond_wait_until(&s->track_cv, &s->track_lock, scio_now_ms() + 2);
        in_call = s->in_call;
        scio_mutex_unlock(&s->track_lock);
    }
}

/* ---- tracking many readers in one wait (a tracking set) ------------------ */

/* One SCardGetStatusChange over the readers of every request in the set, on
 * a context of the set's own (pcscd wakes it on any of them).  Each request
 * decides as do_track does, from the state its reader had when the
 * device's last request ended (`seen`), so a card that left and came back
 * between two requests, or between two waits, still completes it, and a
 * torn look (the new level with the old count) completes nothing. */
static scio_status establish(PCSC_CONTEXT *ctx, const char *what, char *errbuf,
                            size_t errlen);

typedef struct pcsc_set {
    PCSC_CONTEXT ctx;
    int has_ctx;
    PCSC_READERSTATE *rs;
    size_t cap;
} pcsc_set;

/* A request's state between waits (scio_track_entry.scratch). */
typedef struct pcsc_set_req {
    PCSC_DWORD cur;            /* the state the next wait starts from */
    PCSC_DWORD prev;           /* counted from here (do_track's prev) */
    int have_prev, started;
} pcsc_set_req;

_Static_assert(sizeof(pcsc_set_req) <= sizeof(((scio_track_entry *)0)->scratch),
               "a request's state fits the entry's scratch");

static scio_status pcsc_set_open(void **state)
{
    char why[160];
    scio_status st;
    pcsc_set *w = calloc(1, sizeof *w);
    if (!w)
        return SCIO_NO_MEMORY;
    if ((st = establish(&w->ctx, "a tracking set", why, sizeof why)) != SCIO_SUCCESS) {
        free(w);
        return st;
    }
    w->has_ctx = 1;
    *state = w;
    return SCIO_SUCCESS;
}

static void pcsc_set_close(void *state)
{
    pcsc_set *w = state;
    if (w->has_ctx)
        api.release(w->ctx);
    free(w->rs);
    free(w);
}

static void pcsc_set_interrupt(void *state)
{
    pcsc_set *w = state;
    if (w->has_ctx)
        api.cancel(w->ctx);
}

/* The request's first wait starts from `seen` when its reader was last
 * seen away from the wanted level (a card that moved since makes the call
 * return at once), else from UNAWARE (an immediate look, as do_track's). */
static void set_req_start(pcsc_dev *s, pcsc_set_req *r, int want_present)
{
    scio_mutex_lock(&s->track_lock);
    r->have_prev = s->have_seen;
    r->prev = s->seen;
    scio_mutex_unlock(&s->track_lock);
    r->cur = r->have_prev && ((r->prev & PCSC_STATE_PRESENT) != 0) != want_present
                 ? r->prev : PCSC_STATE_UNAWARE;
    r->started = 1;
}

static scio_status pcsc_set_wait(void *state, scio_track_entry **e, size_t n, int timeout_ms)
{
    pcsc_set *w = state;
    PCSC_DWORD timeout;
    uint32_t rc;
    if (n > w->cap) {
        PCSC_READERSTATE *rs = realloc(w->rs, n * sizeof *rs);
        if (!rs)
            return SCIO_NO_MEMORY; /* nothing done: the caller waits again */
        w->rs = rs;
        w->cap = n;
    }
    if (!w->has_ctx) {
        /* The resource manager came back after a failure: a new context. */
        char why[160];
        if (establish(&w->ctx, "a tracking set", why, sizeof why) != SCIO_SUCCESS) {
            for (size_t i = 0; i < n; i++) {
                e[i]->done = 1;
                e[i]->status = SCIO_NO_SERVICE;
                e[i]->driver_code = drv_code(PCSC_E_NO_SERVICE);
            }
            return SCIO_SUCCESS;
        }
        w->has_ctx = 1;
    }
    memset(w->rs, 0, n * sizeof *w->rs);
    for (size_t i = 0; i < n; i++) {
        pcsc_dev *s = scio_device_state(e[i]->dev);
        pcsc_set_req *r = (pcsc_set_req *)(void *)e[i]->scratch;
        if (!r->started)
            set_req_start(s, r, e[i]->code == SCIO_IOCTL_IS_PRESENT);
        w->rs[i].szReader = s->reader;
        w->rs[i].dwCurrentState = r->cur;
    }
    timeout = timeout_ms < 0 || (unsigned)timeout_ms > PCSC_TRACK_SLICE_MS
                  ? PCSC_TRACK_SLICE_MS : (PCSC_DWORD)timeout_ms;
    rc = rc32(api.get_status_change(w->ctx, timeout, w->rs, (PCSC_DWORD)n));
    if (rc == PCSC_E_TIMEOUT)
        return SCIO_IO_TIMEOUT;
    if (rc == PCSC_E_CANCELLED)
        return SCIO_CANCELLED;
    if (rc != PCSC_S_SUCCESS) {
        /* The wait's failure is every request's, as each one's own would be. */
        for (size_t i = 0; i < n; i++) {
            e[i]->done = 1;
            e[i]->status = fail_rc(rc, &e[i]->driver_code);
        }
        if (rc == PCSC_E_INVALID_HANDLE || rc == PCSC_E_NO_SERVICE ||
            rc == PCSC_E_SERVICE_STOPPED || rc == PCSC_F_COMM_ERROR) {
            api.release(w->ctx);
            w->has_ctx = 0;
        }
        return SCIO_SUCCESS;
    }
    for (size_t i = 0; i < n; i++) {
        pcsc_dev *s = scio_device_state(e[i]->dev);
        pcsc_set_req *r = (pcsc_set_req *)(void *)e[i]->scratch;
        int want_present = e[i]->code == SCIO_IOCTL_IS_PRESENT;
        PCSC_DWORD ev;
        if (!(w->rs[i].dwEventState & PCSC_STATE_CHANGED))
            continue; /* this reader is as the request last saw it */
        ev = w->rs[i].dwEventState & ~(PCSC_DWORD)PCSC_STATE_CHANGED;
        if (ev & PCSC_STATE_UNKNOWN) {
            e[i]->done = 1;
            e[i]->status = SCIO_DEVICE_NOT_CONNECTED; /* the reader went away */
            e[i]->driver_code = drv_code(PCSC_E_UNKNOWN_READER);
            continue;
        }
        if (track_look(s, ev, want_present, &r->prev, &r->have_prev)) {
            e[i]->done = 1;
            e[i]->status = SCIO_SUCCESS;
            continue;
        }
        r->cur = ev;
    }
    return SCIO_SUCCESS;
}

/* A call the resource manager failed: if the reader itself has gone
 * (unplugged: pcsc-lite then answers a card handle's calls with
 * SCARD_E_INVALID_VALUE or SCARD_E_INVALID_HANDLE), say so (lock held). */
static scio_status unless_vanished(pcsc_dev *s, scio_status st, long *drv)
{
    int present = 0;
    long look_drv = 0;
    if (st == SCIO_DEVICE_NOT_CONNECTED || st == SCIO_NO_SERVICE || !s->has_ctx)
        return st;
    if (look(s, s->ctx, &present, NULL, &look_drv) != SCIO_DEVICE_NOT_CONNECTED)
        return st;
    drop_handle(s); /* the handle went with the reader */
    *drv = look_drv;
    return SCIO_DEVICE_NOT_CONNECTED;
}

/* ---- a context whose call was cut short ------------------------------------ */

#if PCSC_BOUNDED
static scio_status establish_main(pcsc_dev *s, const char *what, char *errbuf,
                                  size_t errlen);

/* Let go of a main context whose socket was shut down (lock held): the
 * daemon drops its card handles when it sees the socket close. */
static void break_context(pcsc_dev *s)
{
    forget_card(s);
    if (s->has_ctx)
        api.release(s->ctx); /* frees the socket at once: it cannot reach the daemon */
    s->has_ctx = 0;
    __atomic_store_n(&s->bound.fd, -1, __ATOMIC_RELAXED);
    scio_store_release(&s->bound.broken, 1);
}

/* A new main context (lock held; not bounded: can_bound sends the calls of
 * a broken device to the core's lane, which bounds its caller's wait). */
static scio_status renew_context(pcsc_dev *s, long *drv)
{
    char why[160];
    scio_status st = establish_main(s, s->reader, why, sizeof why);
    if (st != SCIO_SUCCESS) {
        scio_store_release(&s->bound.broken, 1);
        *drv = drv_code(PCSC_E_NO_SERVICE);
        return st;
    }
    s->has_ctx = 1;
    return SCIO_SUCCESS;
}
#endif

#if PCSC_BOUNDED
static int pcsc_can_bound_tracking(scio_device *d)
{
    pcsc_dev *s = scio_device_state(d);
    /* Changed only by the one tracking request at a time (do_track). */
    return !scio_load_acquire(&s->track_bound.broken) &&
           __atomic_load_n(&s->track_bound.fd, __ATOMIC_RELAXED) >= 0;
}

static int pcsc_can_bound(scio_device *d)
{
    pcsc_dev *s = scio_device_state(d);
    /* Read without the lock: changed only by calls, under it, and a stale
     * answer only picks the lane or this thread for one call. */
    return !scio_load_acquire(&s->bound.broken) &&
           __atomic_load_n(&s->bound.fd, __ATOMIC_RELAXED) >= 0;
}

static void pcsc_abort_call(scio_device *d)
{
    (void)wd_abort(&((pcsc_dev *)scio_device_state(d))->bound);
}
#endif

/* ---- dispatch ------------------------------------------------------------- */

static scio_status pcsc_ioctl(scio_device *d, scio_op *op, uint32_t code,
                              const uint8_t *in, size_t in_len,
                              uint8_t *out, size_t out_cap, size_t *out_len, long *drv)
{
    pcsc_dev *s = scio_device_state(d);
    PCSC_DWORD vcode;
    scio_status st;
    int armed = 0, fired = 0;
    int64_t deadline = 0;

    *out_len = 0;
    if (code == SCIO_IOCTL_IS_PRESENT || code == SCIO_IOCTL_IS_ABSENT)
        return do_track(s, op, code == SCIO_IOCTL_IS_PRESENT, drv);

    scio_mutex_lock(&s->lock);
#if PCSC_BOUNDED
    if (scio_load_acquire(&s->bound.broken) && (st = renew_context(s, drv)) != SCIO_SUCCESS) {
        s->last_error = st;
        scio_mutex_unlock(&s->lock);
        return st;
    }
    deadline = scio_op_deadline_us(op);
    if (deadline > 0 && s->bound.fd >= 0 && wd_arm(&s->bound, deadline) == 0)
        armed = 1;
#endif
    switch (code) {
    case SCIO_IOCTL_GET_STATE:
        st = do_get_state(s, out, out_cap, out_len, drv);
        break;
    case SCIO_IOCTL_POWER:
        st = do_power(s, in, in_len, out, out_cap, out_len, drv);
        break;
    case SCIO_IOCTL_SET_PROTOCOL:
        st = do_set_protocol(s, in, in_len, out, out_cap, out_len, drv);
        break;
    case SCIO_IOCTL_TRANSMIT:
        st = do_transmit(s, in, in_len, out, out_cap, out_len, drv);
        break;
    case SCIO_IOCTL_GET_ATTRIBUTE:
        st = do_get_attribute(s, in, in_len, out, out_cap, out_len, drv);
        break;
    case SCIO_IOCTL_SET_ATTRIBUTE:
        st = do_set_attribute(s, in, in_len, drv);
        break;
    case SCIO_IOCTL_SWALLOW:
        /* The resource manager's readers have no mechanism to drive. */
        st = s->connected ? SCIO_SUCCESS : card_in(s, drv);
        break;
    case SCIO_IOCTL_EJECT:
    case SCIO_IOCTL_CONFISCATE:
        st = SCIO_NOT_SUPPORTED;
        break;
    case SCIO_IOCTL_GET_LAST_ERROR:
        st = put_u32(s->last_error, out, out_cap, out_len);
        break;
    case SCIO_IOCTL_SET_SHARE_MODE:
        st = do_set_share_mode(s, in, in_len, out, out_cap, out_len);
        break;
    case SCIO_IOCTL_BEGIN_TRANSACTION:
        st = do_begin_transaction(s, op, drv);
        break;
    case SCIO_IOCTL_END_TRANSACTION:
        st = do_end_transaction(s, drv);
        break;
    case SCIO_IOCTL_RELEASE_CARD:
        /* The resource manager powers cards: let go of ours as LEAVE (an
         * UNPOWER would reset every other client's card with it). */
        if ((st = need_out(out_cap, 4)) == SCIO_SUCCESS) {
            drop_handle(s);
            st = put_u32(1, out, out_cap, out_len);
        }
        break;
    default:
        st = vendor_code(code, &vcode)
                 ? do_control(s, vcode, in, in_len, out, out_cap, out_len, drv)
                 : SCIO_INVALID_DEVICE_REQUEST;
        break;
    }
#if PCSC_BOUNDED
    if (armed && (fired = wd_disarm(&s->bound)) != WD_NONE) {
        /* Its socket was shut down: whatever the call answered, the
         * context is gone; the next call makes another. */
        break_context(s);
        st = fired == WD_TIMED_OUT ? SCIO_IO_TIMEOUT : SCIO_CANCELLED;
        *drv = drv_code(fired == WD_TIMED_OUT ? PCSC_E_TIMEOUT : PCSC_E_CANCELLED);
        *out_len = 0;
    }
#endif
    (void)armed;
    (void)deadline;
    if (st != SCIO_SUCCESS && *drv != 0 && !fired)
        st = unless_vanished(s, st, drv);
    if (st != SCIO_SUCCESS && code != SCIO_IOCTL_GET_LAST_ERROR)
        s->last_error = st;
    scio_mutex_unlock(&s->lock);
    return st;
}

static void pcsc_release(scio_device *d)
{
    pcsc_dev *s = scio_device_state(d);
    scio_mutex_lock(&s->lock);
    drop_handle(s);
    if (s->has_ctx)
        api.release(s->ctx);
    s->has_ctx = 0;
    scio_mutex_unlock(&s->lock);
    scio_mutex_lock(&s->track_lock);
    if (s->has_track_ctx)
        api.release(s->track_ctx);
    s->has_track_ctx = 0;
    scio_mutex_unlock(&s->track_lock);
}

static void dev_free(pcsc_dev *s)
{
    free(s->reader);
    scio_cond_destroy(&s->track_cv);
    scio_mutex_destroy(&s->track_lock);
    scio_mutex_destroy(&s->lock);
    free(s);
}

static void pcsc_destroy(scio_device *d)
{
    dev_free(scio_device_state(d));
}

/* Blocking library calls: overlapped requests run on the core's lanes. */
static const scio_backend pcsc_backend = {
    .name = "pcsc",
    .ioctl = pcsc_ioctl,
    .wake_tracking = pcsc_wake_tracking,
    .track_set_open = pcsc_set_open,
    .track_set_wait = pcsc_set_wait,
    .track_set_interrupt = pcsc_set_interrupt,
    .track_set_close = pcsc_set_close,
    .track_set_max = PCSC_SET_MAX,
#if PCSC_BOUNDED
    .can_bound = pcsc_can_bound,
    .abort_call = pcsc_abort_call,
    .can_bound_tracking = pcsc_can_bound_tracking,
#endif
    .release = pcsc_release,
    .destroy = pcsc_destroy,
};

/* ---- open and list -------------------------------------------------------- */

static scio_status establish_unlocked(PCSC_CONTEXT *ctx, const char *what, char *errbuf,
                                      size_t errlen)
{
    uint32_t rc = rc32(api.establish(PCSC_SCOPE_SYSTEM, NULL, NULL, ctx));
    scio_status st;
    if (rc == PCSC_S_SUCCESS)
        return SCIO_SUCCESS;
    st = map_rc(rc);
    if (st == SCIO_NO_SERVICE)
        set_err(errbuf, errlen, "%s: the PC/SC resource manager is not running "
                "(SCardEstablishContext: %s, 0x%08lX)", what, code_name(rc),
                (unsigned long)rc);
    else
        set_err(errbuf, errlen, "%s: SCardEstablishContext failed: %s (0x%08lX)", what,
                code_name(rc), (unsigned long)rc);
    return st == SCIO_SUCCESS ? SCIO_UNSUCCESSFUL : st;
}

/* Every context this backend makes is established under ident_lock, so
 * that its own contexts never make a device's socket ambiguous (another
 * PC/SC client in the process still can). */
static scio_status establish(PCSC_CONTEXT *ctx, const char *what, char *errbuf, size_t errlen)
{
#if PCSC_BOUNDED
    scio_status st;
    scio_mutex_lock(&ident_lock);
    st = establish_unlocked(ctx, what, errbuf, errlen);
    scio_mutex_unlock(&ident_lock);
    return st;
#else
    return establish_unlocked(ctx, what, errbuf, errlen);
#endif
}

#if PCSC_BOUNDED
/* Establish a context and find its socket (else b->fd stays -1). */
static scio_status establish_bound(PCSC_CONTEXT *ctx, pcsc_bound *b, const char *what,
                                   char *errbuf, size_t errlen)
{
    scio_status st;
    fd_ino before[PCSC_MAX_SOCKETS];
    int nb;
    __atomic_store_n(&b->fd, -1, __ATOMIC_RELAXED);
    scio_store_release(&b->broken, 0);
    scio_mutex_lock(&ident_lock);
    nb = pcscd_sockets(before, PCSC_MAX_SOCKETS);
    st = establish_unlocked(ctx, what, errbuf, errlen);
    if (st == SCIO_SUCCESS)
        find_context_socket(b, before, nb);
    scio_mutex_unlock(&ident_lock);
    return st;
}
#endif

/* Establish a device's main context, and find its socket where calls can
 * be bounded in their caller's thread (else bound.fd stays -1). */
static scio_status establish_main(pcsc_dev *s, const char *what, char *errbuf, size_t errlen)
{
#if PCSC_BOUNDED
    return establish_bound(&s->ctx, &s->bound, what, errbuf, errlen);
#else
    return establish_unlocked(&s->ctx, what, errbuf, errlen);
#endif
}

/* The tracking context likewise (its waits are bounded the same way). */
static scio_status establish_track(pcsc_dev *s, const char *what, char *errbuf,
                                   size_t errlen)
{
#if PCSC_BOUNDED
    return establish_bound(&s->track_ctx, &s->track_bound, what, errbuf, errlen);
#else
    return establish_unlocked(&s->track_ctx, what, errbuf, errlen);
#endif
}

scio_status scio_pcsc_list_readers(char *buf, size_t cap, size_t *needed,
                                   char *errbuf, size_t errlen)
{
    PCSC_CONTEXT ctx;
    PCSC_DWORD len = 0;
    char *names = NULL;
    scio_status st;
    uint32_t rc = PCSC_S_SUCCESS;

    if (errbuf && errlen)
        errbuf[0] = 0;
    if (needed)
        *needed = 1;
    if (!buf && cap)
        return SCIO_INVALID_PARAMETER;
    if ((st = load_api(errbuf, errlen)) != SCIO_SUCCESS)
        return st;
    if ((st = establish(&ctx, "listing readers", errbuf, errlen)) != SCIO_SUCCESS)
        return st;
    /* Ask for the size, then fetch; a reader can appear in between. */
    for (int attempt = 0; attempt < 4; attempt++) {
        len = 0;
        rc = rc32(api.list_readers(ctx, NULL, NULL, &len));
        if (rc != PCSC_S_SUCCESS)
            break;
        free(names);
        if (len == 0 || len > 1u << 20 || !(names = malloc((size_t)len + 2))) {
            names = NULL;
            rc = len == 0 ? PCSC_E_NO_READERS_AVAILABLE : PCSC_E_NO_MEMORY;
            break;
        }
        rc = rc32(api.list_readers(ctx, NULL, names, &len));
        if (rc != PCSC_E_INSUFFICIENT_BUFFER)
            break;
    }
    api.release(ctx);
    if (rc == PCSC_E_NO_READERS_AVAILABLE) {
        len = 0;
    } else if (rc != PCSC_S_SUCCESS) {
        free(names);
        st = map_rc(rc);
        set_err(errbuf, errlen, "SCardListReaders failed: %s (0x%08lX)", code_name(rc),
                (unsigned long)rc);
        return st == SCIO_SUCCESS ? SCIO_UNSUCCESSFUL : st;
    }
    /* A multi-string: each name NUL-terminated, then an empty one. */
    {
        size_t used = 0, total;
        if (names && len) {
            names[len] = 0;
            names[len + 1] = 0;
            while (used < len && names[used])
                used += strlen(names + used) + 1;
        }
        total = used + 1;
        if (needed)
            *needed = total;
        if (cap < total) {
            free(names);
            return SCIO_BUFFER_TOO_SMALL;
        }
        if (used)
            memcpy(buf, names, used);
        buf[used] = 0;
    }
    free(names);
    return SCIO_SUCCESS;
}

scio_status scio_open_pcsc(const char *reader, scio_queue *q, const scio_pcsc_options *opts,
                           scio_device **out, char *errbuf, size_t errlen)
{
    pcsc_dev *s;
    scio_status st;
    size_t n;
    int present = 0;
    long drv = 0;

    *out = NULL;
    if (errbuf && errlen)
        errbuf[0] = 0;
    if (!reader || !*reader) {
        set_err(errbuf, errlen, "no reader name given");
        return SCIO_INVALID_PARAMETER;
    }
    if ((n = strlen(reader)) >= PCSC_MAX_READER_NAME) {
        set_err(errbuf, errlen, "reader name of %lu bytes is too long", (unsigned long)n);
        return SCIO_INVALID_PARAMETER;
    }
    if (opts && opts->share_mode != SCIO_PCSC_SHARE_SHARED &&
        opts->share_mode != SCIO_PCSC_SHARE_EXCLUSIVE) {
        set_err(errbuf, errlen, "share mode %u is neither shared (%u) nor exclusive (%u)",
                opts->share_mode, SCIO_PCSC_SHARE_SHARED, SCIO_PCSC_SHARE_EXCLUSIVE);
        return SCIO_INVALID_PARAMETER;
    }
    if ((st = load_api(errbuf, errlen)) != SCIO_SUCCESS)
        return st;
    s = calloc(1, sizeof *s);
    if (!s || !(s->reader = malloc(n + 1))) {
        free(s);
        return SCIO_NO_MEMORY;
    }
    memcpy(s->reader, reader, n + 1);
    s->share = opts && opts->share_mode == SCIO_PCSC_SHARE_EXCLUSIVE ? PCSC_SHARE_EXCLUSIVE
                                                                     : PCSC_SHARE_SHARED;
    s->default_share = s->share;
    scio_mutex_init(&s->lock);
    scio_mutex_init(&s->track_lock);
    scio_cond_init(&s->track_cv);
    if ((st = establish_main(s, reader, errbuf, errlen)) != SCIO_SUCCESS)
        goto fail;
    s->has_ctx = 1;
    if ((st = establish_track(s, reader, errbuf, errlen)) != SCIO_SUCCESS)
        goto fail;
    s->has_track_ctx = 1;
    st = look(s, s->ctx, &present, NULL, &drv);
    if (st != SCIO_SUCCESS) {
        uint32_t rc = (uint32_t)drv;
        if (st == SCIO_DEVICE_NOT_CONNECTED) {
            set_err(errbuf, errlen, "the PC/SC resource manager knows no reader named "
                    "\"%s\"", reader);
            st = SCIO_OBJECT_NAME_NOT_FOUND;
        } else {
            set_err(errbuf, errlen, "reader \"%s\": SCardGetStatusChange failed: %s "
                    "(0x%08lX)", reader, code_name(rc), (unsigned long)rc);
        }
        goto fail;
    }
    st = scio_device_create(&pcsc_backend, s, q, opts ? opts->close_timeout_ms : 0, out);
    if (st != SCIO_SUCCESS) {
        set_err(errbuf, errlen, "out of memory");
        goto fail;
    }
    return SCIO_SUCCESS;

fail:
    if (s->has_track_ctx)
        api.release(s->track_ctx);
    if (s->has_ctx)
        api.release(s->ctx);
    dev_free(s);
    return st;
}

/* ---- the reader-list watch (\\?PnP?\Notification) ------------------------ */

/* pcsc-lite, Windows and macOS all name the pseudo reader whose event state
 * changes when a reader appears or goes away; the high 16 bits of its state
 * count the readers (pcsc-lite reports a change against the count when the
 * call began, Windows against the count in dwCurrentState). */
#define PCSC_PNP_READER "\\\\?PnP?\\Notification"
/* How long scio_pcsc_watch_close waits for a blocked wait to leave. */
#define PCSC_WATCH_CLOSE_MS 2000u

struct scio_pcsc_watch {
    PCSC_CONTEXT ctx;          /* of its own: a cancel must hit only this wait */
    scio_mutex lock;
    scio_cond cv;
    /* guarded by lock */
    int wake;                  /* end the current or the next wait */
    int in_call;               /* a waiter is inside SCardGetStatusChange */
    int users;                 /* waits running */
    int closing, abandoned;
};

static void watch_free(scio_pcsc_watch *w)
{
    api.release(w->ctx);
    scio_cond_destroy(&w->cv);
    scio_mutex_destroy(&w->lock);
    free(w);
}

scio_status scio_pcsc_watch_open(scio_pcsc_watch **out, char *errbuf, size_t errlen)
{
    scio_pcsc_watch *w;
    scio_status st;
    if (errbuf && errlen)
        errbuf[0] = 0;
    if (!out)
        return SCIO_INVALID_PARAMETER;
    *out = NULL;
    if ((st = load_api(errbuf, errlen)) != SCIO_SUCCESS)
        return st;
    if (!(w = calloc(1, sizeof *w)))
        return SCIO_NO_MEMORY;
    if ((st = establish(&w->ctx, "watching the reader list", errbuf, errlen)) != SCIO_SUCCESS) {
        free(w);
        return st;
    }
    scio_mutex_init(&w->lock);
    scio_cond_init(&w->cv);
    *out = w;
    return SCIO_SUCCESS;
}

/* Leave a wait (lock held); the last one out of an abandoned watch frees it. */
static int watch_leave_locked(scio_pcsc_watch *w)
{
    w->in_call = 0;
    w->users--;
    scio_cond_broadcast(&w->cv);
    return w->abandoned && w->users == 0;
}

scio_status scio_pcsc_watch_wait(scio_pcsc_watch *w, unsigned timeout_ms, unsigned known,
                                 unsigned *count, long *drv)
{
    int64_t deadline;
    scio_status st = SCIO_IO_TIMEOUT;
    int free_it;
    *drv = 0;
    if (count)
        *count = known;
    scio_mutex_lock(&w->lock);
    if (w->closing) {
        scio_mutex_unlock(&w->lock);
        return SCIO_CANCELLED;
    }
    w->users++;
    scio_mutex_unlock(&w->lock);
    deadline = scio_now_ms() + (int64_t)timeout_ms;
    for (;;) {
        PCSC_READERSTATE rs;
        int64_t now = scio_now_ms();
        PCSC_DWORD slice;
        uint32_t rc;
        scio_mutex_lock(&w->lock);
        if (w->wake || w->closing) {
            w->wake = 0;
            st = SCIO_CANCELLED;
            break; /* lock held */
        }
        if (timeout_ms != SCIO_PCSC_WATCH_INFINITE && now >= deadline) {
            st = SCIO_IO_TIMEOUT;
            break;
        }
        w->in_call = 1;
        scio_mutex_unlock(&w->lock);
        /* Sliced: a cancel that lands before the call reaches the daemon is
         * dropped by pcsc-lite, and the wake flag is looked at between. */
        slice = PCSC_TRACK_SLICE_MS;
        if (timeout_ms != SCIO_PCSC_WATCH_INFINITE && deadline - now < (int64_t)slice)
            slice = (PCSC_DWORD)(deadline - now);
        memset(&rs, 0, sizeof rs);
        rs.szReader = PCSC_PNP_READER;
        rs.dwCurrentState = (PCSC_DWORD)(known & 0xFFFFu) << 16;
        rc = rc32(api.get_status_change(w->ctx, slice, &rs, 1));
        scio_mutex_lock(&w->lock);
        w->in_call = 0;
        scio_cond_broadcast(&w->cv);
        scio_mutex_unlock(&w->lock);
        if (rc == PCSC_E_TIMEOUT || rc == PCSC_E_CANCELLED)
            continue;
        if (rc != PCSC_S_SUCCESS) {
            st = fail_rc(rc, drv);
            scio_mutex_lock(&w->lock);
            break;
        }
        if (rs.dwEventState & PCSC_STATE_UNKNOWN) {
            /* No PnP pseudo reader here: the caller has to poll. */
            *drv = drv_code(PCSC_E_UNKNOWN_READER);
            st = SCIO_NOT_SUPPORTED;
            scio_mutex_lock(&w->lock);
            break;
        }
        if (count)
            *count = (unsigned)((rs.dwEventState >> 16) & 0xFFFFu);
        st = SCIO_SUCCESS;
        scio_mutex_lock(&w->lock);
        break;
    }
    free_it = watch_leave_locked(w);
    scio_mutex_unlock(&w->lock);
    if (free_it)
        watch_free(w);
    return st;
}

void scio_pcsc_watch_wake(scio_pcsc_watch *w)
{
    int in_call;
    scio_mutex_lock(&w->lock);
    w->wake = 1;
    in_call = w->in_call;
    scio_mutex_unlock(&w->lock);
    /* As pcsc_wake_tracking: repeat the cancel until the waiter is out. */
    for (int i = 0; in_call && i < 50; i++) {
        api.cancel(w->ctx);
        scio_mutex_lock(&w->lock);
        if (w->in_call)
            scio_cond_wait_until(&w->cv, &w->lock, scio_now_ms() + 2);
        in_call = w->in_call;
        scio_mutex_unlock(&w->lock);
    }
}

void scio_pcsc_watch_close(scio_pcsc_watch *w)
{
    int64_t deadline = scio_now_ms() + PCSC_WATCH_CLOSE_MS;
    int busy;
    if (!w)
        return;
    scio_mutex_lock(&w->lock);
    w->closing = 1;
    scio_mutex_unlock(&w->lock);
    scio_pcsc_watch_wake(w);
    scio_mutex_lock(&w->lock);
    while (w->users > 0 && scio_now_ms() < deadline) {
        if (w->in_call)
            api.cancel(w->ctx);
        scio_cond_wait_until(&w->cv, &w->lock, scio_now_ms() + 10);
    }
    busy = w->users > 0;
    if (busy)
        w->abandoned = 1; /* a wait stuck in the library: it frees the watch */
    scio_mutex_unlock(&w->lock);
    if (!busy)
        watch_free(w);
}
