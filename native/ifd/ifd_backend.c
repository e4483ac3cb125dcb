/*
 * ifd_backend.c - drive a pcsc-lite IFD-handler driver through the IOCTL
 * contract of scio.h.
 *
 * The driver knows nothing of smart-card states, so this backend keeps them
 * the way a smclib driver would: no card ABSENT; a card that is in but not
 * powered SWALLOWED; powered NEGOTIABLE; SPECIFIC once a protocol is set or
 * the ATR demands one (TA2).  Every driver call is made under the reader's
 * lock, as pcscd does -- one lock per driver library instead when the driver
 * does not declare itself thread safe (TAG_IFD_THREAD_SAFE; vpcd does not)
 * -- except the driver's polling function (made to block concurrently) and
 * the vendor controls the driver declares it serves unlocked (ifd_ext.h).
 *
 * Card tracking (IS_PRESENT / IS_ABSENT): a driver's polling function
 * blocks per reader, so each waiting reader has a thread in it (as in
 * pcscd), idle until an event or the stop function.  Drivers without one
 * are asked for presence every poll interval by one thread per driver
 * library for all of its readers, which skips a reader whose own calls
 * just found out (a transmit that worked proves the card is in) so that
 * presence checks do not queue in front of I/O.  A driver that counts card
 * events is asked for its counts instead, without the call lock, and for
 * presence only when they moved; one that also offers the counts'
 * generation is asked for it once per interval for all of its readers, and
 * for their counts only when it moved.
 *
 * Drivers may offer scardio's extensions (ifd_ext.h): exact card-event
 * counts, their library-wide generation and a range of unlocked vendor
 * controls.  Each is asked once at open and checked for sanity; without
 * them the backend relies on the standard calls alone.
 *
 * Buffers crossing the IOCTL boundary use 32-bit little-endian DWORDs; the
 * driver's own DWORD (unsigned long on Linux) is converted here.
 *
 * Windows: driver DLLs are loaded with LoadLibraryEx (see the "Windows"
 * section below); the IFD ABI's DWORD is then a 32-bit unsigned long.
 */
#ifndef _WIN32
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>
#else
#include <windows.h>
#endif
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atr_info.h"
#include "core/backend.h"
#include "ifd_abi.h"
#include "ifd_ext.h"
#include "ifd_internal.h"
#include "ifd_quirks.h"

/* ---- driver libraries (shared by every reader opened on them) ---------- */

typedef struct ifd_lib {
    char *path;
    void *handle;
    int refs;
    int version; /* 3: IFDHCreateChannelByName, 2: IFDHCreateChannel */
    ifdh_create_channel_by_name_fn create_by_name;
    ifdh_create_channel_fn create;
    ifdh_close_channel_fn close_channel;
    ifdh_get_capabilities_fn get_caps;
    ifdh_set_capabilities_fn set_caps;
    ifdh_set_protocol_parameters_fn set_protocol; /* optional */
    ifdh_power_icc_fn power;
    ifdh_transmit_to_icc_fn transmit;
    ifdh_icc_presence_fn presence;
    ifdh_control_fn control; /* v3 signature; NULL for v2 drivers */
    /* Serialises calls into a driver that does not declare itself thread
     * safe (TAG_IFD_THREAD_SAFE), across all its readers, as pcscd does. */
    scio_mutex call_lock;
    /* Serves the tracking requests of its readers that have no polling
     * function (made at the first such open, guarded by libs_lock). */
    struct ifd_poller *poller;
    struct ifd_lib *next;
} ifd_lib;

/* An open channel, to refuse a second open of the same reader.  The list
 * survives fork(): a claim counts only in the process that made it, so a
 * child can open again what the parent holds. */
typedef struct ifd_open {
    ifd_lib *lib;
    IFD_DWORD lun;
    unsigned long pid;
    struct ifd_open *next;
} ifd_open;

static unsigned long current_pid(void)
{
#ifdef _WIN32
    return 0; /* no fork() */
#else
    return (unsigned long)getpid();
#endif
}

struct ifd_poller;
static void poller_drop(struct ifd_poller *p);
struct ifd_dev;
static void poller_unquiet(struct ifd_dev *s);

static scio_mutex libs_lock = SCIO_MUTEX_INITIALIZER;
static ifd_lib *libs;
static ifd_open *opens;

typedef struct ifd_dev {
    /* What a locked look of the library's poller touches comes first, in as
     * few cache lines as can be: the poller looks at every tracked reader
     * each poll interval, and with many readers each look would otherwise
     * miss the cache several times (more than the look itself costs).  A
     * look that reads the card-event counts alone touches none of this
     * (its poller entry has what it needs). */
    scio_mutex drv_lock;     /* one lock per reader around driver calls */
    ifd_lib *lib;
    scio_mutex *lock;        /* &drv_lock, or the library's call_lock */
    IFD_DWORD lun;
    /* An overlapped tracking request served by the library's poller: its
     * entry in the poller's table (poller->lock; tw_deferred is the poller
     * thread's own). */
    scio_op *tw_op;
    size_t tw_slot;
    int tw_deferred;
    /* reader state, guarded by drv_lock */
    uint32_t state;
    uint32_t protocol;
    size_t atr_len;
    /* tracking */
    int has_events;          /* the driver counts card events (SCIO_IFD_TAG_CARD_EVENTS) */
    int has_generation;      /* and offers their generation (set at open only) */
    int events_stale;        /* a read failed: bases may lag, resync first */
    int counts_fresh;        /* the last presence check read the counts */
    uint32_t open_ins, open_rem; /* the counts at open */
    uint32_t last_ins, last_rem; /* the counts last read */
    uint32_t base_ins, base_rem; /* events already reported to trackers */
    uint32_t known_ins;      /* insertions when the current card was seen */
    /* What the reader's calls learned (drv_lock held): when one last found
     * out whether a card is in, and the arrivals and departures they saw
     * (the events of a driver that does not count them), of which
     * seen_base_* were reported to trackers. */
    int learned;             /* the current call found out */
    int64_t look_ms;         /* 0: never */
    uint32_t seen_ins, seen_rem;
    uint32_t seen_base_ins, seen_base_rem;
    ifdh_polling_fn poll;
    unsigned poll_interval_ms;
    /* the rest */
    struct ifd_poller *poller;
    int channel_open;
    /* vendor controls served without the lock (SCIO_IFD_TAG_UNLOCKED_CONTROLS),
     * set at open */
    int has_unlocked;
    uint32_t unlocked_first, unlocked_last;
    uint8_t atr[SCIO_MAX_ATR];
    scio_atr_info atr_info;
    uint32_t last_error;
    uint8_t *rx;             /* full-size response buffer, made on demand */
    scio_ifd_quirks quirks;  /* this driver's workarounds (ifd_quirks.h) */
    ifdh_stop_polling_fn stop;
    scio_mutex wait_lock;
    scio_cond wait_cv;
    int wake;
    int tracking_on;         /* wait_lock: tracked, no request cancelled since */
    int in_poll;             /* wait_lock: a thread is in the polling function */
    int restopping;          /* wait_lock: restop_main runs */
} ifd_dev;

/* Tracking with a polling function: the timeout of each wait in it.  The
 * stop function ends a wait; the timeout (pcscd's, 10 minutes) only bounds
 * how long a stop the driver missed can hold a request. */
#define IFD_POLL_TIMEOUT_MS (10 * 60 * 1000)
/* A stop can miss a poll that was just starting: after a wake-up the stop
 * is repeated this often while the poll has not returned, for so long. */
#define IFD_RESTOP_MS 50
#define IFD_RESTOP_FOR_MS 5000

#if defined(__GNUC__) || defined(__clang__)
#define IFD_PRINTF(fmt_arg, first_arg) __attribute__((format(printf, fmt_arg, first_arg)))
#else
#define IFD_PRINTF(fmt_arg, first_arg)
#endif

/* Every length handed to a driver is bounded by the core's limits, so the
 * conversions to the driver's DWORD below lose nothing, even where it is
 * 32 bits (macOS, Windows). */
_Static_assert(SCIO_MAX_INPUT <= UINT32_MAX && SCIO_MAX_OUTPUT <= UINT32_MAX,
               "IOCTL buffer sizes fit a 32-bit DWORD");

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...) IFD_PRINTF(3, 4);
static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!errbuf || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

/* ---- Windows: loading driver DLLs ---------------------------------------- */
#ifdef _WIN32
#define strdup _strdup

/* Paths arrive in UTF-8 (as Python passes them); NULL if not valid UTF-8,
 * and the ANSI functions take the path as it is. */
static wchar_t *widen(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    wchar_t *w;
    if (n <= 0)
        return NULL;
    w = malloc((size_t)n * sizeof *w);
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n) != n) {
        free(w);
        w = NULL;
    }
    return w;
}

static void win_error_text(DWORD err, char *buf, size_t cap)
{
    DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                             NULL, err, 0, buf, cap > 0xFFFF ? 0xFFFF : (DWORD)cap,
                             NULL);
    if (n == 0 || n >= cap) {
        snprintf(buf, cap, "Win32 error %lu", (unsigned long)err);
        return;
    }
    while (n > 0 && (buf[n - 1] == '\r' || buf[n - 1] == '\n' ||
                     buf[n - 1] == ' ' || buf[n - 1] == '.'))
        buf[--n] = 0;
}

/* The stat() checks of POSIX: missing -> DLL_NOT_FOUND, not a file ->
 * INVALID_IMAGE_FORMAT. */
static scio_status win_check_file(const char *path, char *errbuf, size_t errlen)
{
    wchar_t *w = widen(path);
    DWORD attr = w ? GetFileAttributesW(w) : GetFileAttributesA(path);
    DWORD err = GetLastError();
    char why[256];
    free(w);
    if (attr == INVALID_FILE_ATTRIBUTES) {
        win_error_text(err, why, sizeof why);
        set_err(errbuf, errlen, "driver library %s: %s", path, why);
        return SCIO_DLL_NOT_FOUND;
    }
    if (attr & FILE_ATTRIBUTE_DIRECTORY) {
        set_err(errbuf, errlen, "driver library %s is not a regular file", path);
        return SCIO_INVALID_IMAGE_FORMAT;
    }
    return SCIO_SUCCESS;
}

/* Load the very file that was checked: by its full path (a bare name would
 * go through the DLL search order), with its own directory searched first
 * for its dependencies, and without "cannot load" message boxes. */
static void *win_load(const char *path, char *errbuf, size_t errlen)
{
    const DWORD flags = LOAD_WITH_ALTERED_SEARCH_PATH;
    wchar_t *w = widen(path);
    HMODULE h = NULL;
    DWORD err = ERROR_NOT_ENOUGH_MEMORY, old_mode = 0, n;
    char why[256];

    SetThreadErrorMode(SEM_FAILCRITICALERRORS | SEM_NOOPENFILEERRORBOX, &old_mode);
    if (w) {
        n = GetFullPathNameW(w, 0, NULL, NULL);
        wchar_t *full = n ? malloc((size_t)n * sizeof *full) : NULL;
        if (full && GetFullPathNameW(w, n, full, NULL) < n)
            h = LoadLibraryExW(full, NULL, flags);
        err = GetLastError();
        free(full);
        free(w);
    } else {
        n = GetFullPathNameA(path, 0, NULL, NULL);
        char *full = n ? malloc(n) : NULL;
        if (full && GetFullPathNameA(path, n, full, NULL) < n)
            h = LoadLibraryExA(full, NULL, flags);
        err = GetLastError();
        free(full);
    }
    SetThreadErrorMode(old_mode, NULL);
    if (!h) {
        win_error_text(err, why, sizeof why);
        set_err(errbuf, errlen, "%s is not a loadable driver library: %s (Win32 error %lu)",
                path, why, (unsigned long)err);
    }
    return (void *)h;
}

static void lib_close(void *handle)
{
    FreeLibrary((HMODULE)handle);
}
#else
#define lib_close dlclose
#endif

static void lib_unref(ifd_lib *lib)
{
    ifd_lib **pp;
    scio_mutex_lock(&libs_lock);
    if (--lib->refs > 0) {
        scio_mutex_unlock(&libs_lock);
        return;
    }
    for (pp = &libs; *pp; pp = &(*pp)->next) {
        if (*pp == lib) {
            *pp = lib->next;
            break;
        }
    }
    scio_mutex_unlock(&libs_lock);
    poller_drop(lib->poller);
    lib_close(lib->handle);
    scio_mutex_destroy(&lib->call_lock);
    free(lib->path);
    free(lib);
}

#ifdef _WIN32
/* FARPROC to the field's function-pointer type without a cast between
 * incompatible function types. */
#define RESOLVE(field, name)                                        \
    do {                                                            \
        FARPROC p_ = GetProcAddress((HMODULE)lib->handle, name);    \
        memcpy(&lib->field, &p_, sizeof lib->field);                \
    } while (0)
#else
#define RESOLVE(field, name)                                        \
    (*(void **)(&lib->field) = dlsym(lib->handle, name))
#endif

static scio_status lib_load(const char *path, ifd_lib **out,
                            char *errbuf, size_t errlen)
{
#ifdef _WIN32
    scio_status st;
#else
    struct stat sb;
#endif
    ifd_lib *lib;
    const char *missing = NULL;

#ifdef _WIN32
    if ((st = win_check_file(path, errbuf, errlen)) != SCIO_SUCCESS)
        return st;
#else
    if (stat(path, &sb) != 0) {
        set_err(errbuf, errlen, "driver library %s: %s", path, strerror(errno));
        return SCIO_DLL_NOT_FOUND;
    }
    if (!S_ISREG(sb.st_mode)) {
        set_err(errbuf, errlen, "driver library %s is not a regular file", path);
        return SCIO_INVALID_IMAGE_FORMAT;
    }
#endif
    scio_ifd_export_log_symbols();
    lib = calloc(1, sizeof *lib);
    if (!lib || !(lib->path = strdup(path))) {
        free(lib);
        return SCIO_NO_MEMORY;
    }
#ifdef _WIN32
    lib->handle = win_load(path, errbuf, errlen);
    if (!lib->handle) {
        free(lib->path);
        free(lib);
        return SCIO_INVALID_IMAGE_FORMAT;
    }
#else
    dlerror();
    lib->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib->handle) {
        const char *why = dlerror();
        set_err(errbuf, errlen, "%s is not a loadable driver library: %s",
                path, why ? why : "unknown error");
        free(lib->path);
        free(lib);
        return SCIO_INVALID_IMAGE_FORMAT;
    }
#endif
    RESOLVE(create_by_name, "IFDHCreateChannelByName");
    RESOLVE(create, "IFDHCreateChannel");
    RESOLVE(close_channel, "IFDHCloseChannel");
    RESOLVE(get_caps, "IFDHGetCapabilities");
    RESOLVE(set_caps, "IFDHSetCapabilities");
    RESOLVE(set_protocol, "IFDHSetProtocolParameters");
    RESOLVE(power, "IFDHPowerICC");
    RESOLVE(transmit, "IFDHTransmitToICC");
    RESOLVE(presence, "IFDHICCPresence");
    RESOLVE(control, "IFDHControl");
    lib->version = lib->create_by_name ? 3 : 2;
    if (lib->version == 2)
        lib->control = NULL; /* v2 IFDHControl has no control code */
    if (!lib->create_by_name && !lib->create)
        missing = "IFDHCreateChannelByName or IFDHCreateChannel";
    else if (!lib->close_channel)
        missing = "IFDHCloseChannel";
    else if (!lib->get_caps)
        missing = "IFDHGetCapabilities";
    else if (!lib->set_caps)
        missing = "IFDHSetCapabilities";
    else if (!lib->power)
        missing = "IFDHPowerICC";
    else if (!lib->transmit)
        missing = "IFDHTransmitToICC";
    else if (!lib->presence)
        missing = "IFDHICCPresence";
    if (missing) {
        set_err(errbuf, errlen, "%s is not an IFD handler: it does not export %s",
                path, missing);
        lib_close(lib->handle);
        free(lib->path);
        free(lib);
        return SCIO_ENTRYPOINT_NOT_FOUND;
    }
    lib->refs = 1;
    scio_mutex_lock(&libs_lock);
    /* One entry per loaded file, whatever path named it (dir/lib.so,
     * dir/./lib.so, a symlink): the loader hands back the same handle for
     * the same file, so keying by handle gives one call lock and one set of
     * open readers per driver.  This also keeps one entry when another
     * thread loaded it meanwhile. */
    for (ifd_lib *other = libs; other; other = other->next) {
        if (other->handle == lib->handle) {
            other->refs++;
            scio_mutex_unlock(&libs_lock);
            lib_close(lib->handle); /* drops this load's reference only */
            free(lib->path);
            free(lib);
            *out = other;
            return SCIO_SUCCESS;
        }
    }
    scio_mutex_init(&lib->call_lock);
    lib->next = libs;
    libs = lib;
    scio_mutex_unlock(&libs_lock);
    *out = lib;
    return SCIO_SUCCESS;
}

static int claim_reader(ifd_lib *lib, IFD_DWORD lun)
{
    ifd_open *o;
    unsigned long pid = current_pid();
    scio_mutex_lock(&libs_lock);
    for (o = opens; o; o = o->next) {
        if (o->lib == lib && o->lun == lun && o->pid == pid) {
            scio_mutex_unlock(&libs_lock);
            return -1;
        }
    }
    o = calloc(1, sizeof *o);
    if (o) {
        o->lib = lib;
        o->lun = lun;
        o->pid = pid;
        o->next = opens;
        opens = o;
    }
    scio_mutex_unlock(&libs_lock);
    return o ? 0 : -2;
}

static void unclaim_reader(ifd_lib *lib, IFD_DWORD lun)
{
    unsigned long pid = current_pid();
    scio_mutex_lock(&libs_lock);
    for (ifd_open **pp = &opens; *pp; pp = &(*pp)->next) {
        if ((*pp)->lib == lib && (*pp)->lun == lun && (*pp)->pid == pid) {
            ifd_open *o = *pp;
            *pp = o->next;
            free(o);
            break;
        }
    }
    scio_mutex_unlock(&libs_lock);
}

/* ---- call locks, and re-entry from inside a driver call ------------------ */

/* A driver call may call back into the host (log_msg, whose callback may use
 * any reader).  A call on a reader whose call lock this thread already holds
 * would wait for itself for good: each thread keeps the chain of call locks
 * it holds (on its stack) and such a call fails with
 * SCIO_POSSIBLE_DEADLOCK instead. */
#if defined(_MSC_VER) && !defined(__clang__)
#define IFD_THREAD_LOCAL __declspec(thread)
#else
#define IFD_THREAD_LOCAL _Thread_local
#endif

typedef struct held_lock {
    scio_mutex *lock;
    struct held_lock *up;
} held_lock;

static IFD_THREAD_LOCAL held_lock *held_locks;

static int holds_lock(const scio_mutex *lock)
{
    for (const held_lock *h = held_locks; h; h = h->up)
        if (h->lock == lock)
            return 1;
    return 0;
}

static void call_lock(scio_mutex *lock, held_lock *h)
{
    scio_mutex_lock(lock);
    h->lock = lock;
    h->up = held_locks;
    held_locks = h;
}

static void call_unlock(held_lock *h)
{
    held_locks = h->up;
    scio_mutex_unlock(h->lock);
}

/* ---- status mapping ----------------------------------------------------- */

/* IFD_ERROR_INSUFFICIENT_BUFFER is the caller's problem only when the driver
 * wrote into the caller's buffer (map_rc_out); from any other call (whose
 * buffers are the backend's own, as large as the contract allows) a larger
 * buffer cannot help: it is a driver failure. */
static scio_status map_rc(IFD_RESPONSECODE rc)
{
    switch (rc) {
    case IFD_SUCCESS: return SCIO_SUCCESS;
    case IFD_ICC_NOT_PRESENT: return SCIO_NO_MEDIA;
    case IFD_RESPONSE_TIMEOUT: return SCIO_IO_TIMEOUT;
    case IFD_NO_SUCH_DEVICE: return SCIO_DEVICE_NOT_CONNECTED;
    case IFD_ERROR_TAG:
    case IFD_ERROR_NOT_SUPPORTED:
    case IFD_NOT_SUPPORTED:
    case IFD_PROTOCOL_NOT_SUPPORTED:
    case IFD_ERROR_VALUE_READ_ONLY: return SCIO_NOT_SUPPORTED;
    default: return SCIO_IO_DEVICE_ERROR;
    }
}

static scio_status map_rc_out(IFD_RESPONSECODE rc)
{
    return rc == IFD_ERROR_INSUFFICIENT_BUFFER ? SCIO_BUFFER_TOO_SMALL : map_rc(rc);
}

/* ---- state helpers (drv_lock held) -------------------------------------- */

static void forget_card(ifd_dev *s)
{
    s->atr_len = 0;
    s->protocol = 0;
}

static void card_gone(ifd_dev *s)
{
    if (s->state > SCIO_STATE_ABSENT)
        s->seen_rem++;
    forget_card(s);
    s->state = SCIO_STATE_ABSENT;
    s->learned = 1;
}

static int read_events(ifd_dev *s, uint32_t *ins, uint32_t *rem);

/* A card swapped between two looks (removed and reinserted) is a new,
 * unpowered card: drivers that count events let us notice (drv_lock held). */
static void check_swap(ifd_dev *s)
{
    uint32_t ins, rem;
    if (!s->has_events || !read_events(s, &ins, &rem))
        return;
    s->counts_fresh = 1;
    if (ins == s->known_ins)
        return;
    s->known_ins = ins;
    if (s->state > SCIO_STATE_SWALLOWED) {
        forget_card(s);
        s->state = SCIO_STATE_SWALLOWED;
    }
}

/* Ask the driver whether a card is in and update the state.  Returns the
 * status for the caller and sets *present. */
static scio_status refresh_presence(ifd_dev *s, int *present, long *drv)
{
    IFD_RESPONSECODE rc = s->lib->presence(s->lun);
    s->counts_fresh = 0;
    if (rc == IFD_ICC_PRESENT || rc == IFD_SUCCESS) {
        *present = 1;
        if (s->state == SCIO_STATE_ABSENT)
            s->seen_ins++;
        if (s->state == SCIO_STATE_ABSENT || s->state == SCIO_STATE_UNKNOWN) {
            s->state = SCIO_STATE_SWALLOWED; /* a new card, not powered */
            scio_ifd_quirks_card_arrived(&s->quirks);
        }
        s->learned = 1;
        check_swap(s);
        return SCIO_SUCCESS;
    }
    if (rc == IFD_ICC_NOT_PRESENT) {
        *present = 0;
        card_gone(s);
        return SCIO_SUCCESS;
    }
    *present = 0;
    *drv = rc;
    return map_rc(rc);
}

/* The state only tracks card arrival when somebody asks; requests that
 * depend on a card first look again if the last answer was "no card". */
static void refresh_if_absent(ifd_dev *s)
{
    int present;
    long drv = 0;
    if (s->state <= SCIO_STATE_ABSENT)
        refresh_presence(s, &present, &drv);
}

/* Handle a driver result that says the card went away. */
static scio_status after_call(ifd_dev *s, IFD_RESPONSECODE rc, long *drv)
{
    if (rc == IFD_SUCCESS)
        return SCIO_SUCCESS;
    *drv = rc;
    if (rc == IFD_ICC_NOT_PRESENT)
        card_gone(s);
    return map_rc(rc);
}

static void note_atr(ifd_dev *s, const uint8_t *atr, size_t len)
{
    memcpy(s->atr, atr, len);
    s->atr_len = len;
    s->learned = 1; /* a card answered */
    scio_atr_info_parse(atr, len, &s->atr_info);
    if (s->atr_info.specific && s->atr_info.specific_protocol) {
        s->state = SCIO_STATE_SPECIFIC;
        s->protocol = s->atr_info.specific_protocol;
    } else {
        s->state = SCIO_STATE_NEGOTIABLE;
        s->protocol = 0;
    }
}

/* ---- the IOCTLs --------------------------------------------------------- */

/* A length the driver claimed, as the driver code reported with the failure
 * (saturated: a 32-bit DWORD does not fit a 32-bit long on Windows). */
static long length_code(IFD_DWORD len)
{
#if IFD_DWORD_MAX > LONG_MAX
    if (len > (unsigned long)LONG_MAX)
        return LONG_MAX;
#endif
    return (long)len;
}

static scio_status need_out(size_t out_cap, size_t n)
{
    return out_cap < n ? SCIO_BUFFER_TOO_SMALL : SCIO_SUCCESS;
}

static scio_status do_get_state(ifd_dev *s, uint8_t *out, size_t out_cap,
                                size_t *out_len, long *drv)
{
    int present;
    scio_status st;
    if ((st = need_out(out_cap, 4)) != SCIO_SUCCESS)
        return st;
    if ((st = refresh_presence(s, &present, drv)) != SCIO_SUCCESS)
        return st;
    scio_put_u32(out, s->state);
    *out_len = 4;
    return SCIO_SUCCESS;
}

static scio_status power_up(ifd_dev *s, IFD_DWORD action, uint8_t *out,
                            size_t out_cap, size_t *out_len, long *drv)
{
    /* Slack past the declared capacity: a driver that writes one byte too
     * many must not corrupt memory; its claimed length is checked below. */
    uint8_t atr[64] = {0};
    IFD_DWORD len = SCIO_MAX_ATR;
    IFD_RESPONSECODE rc = s->lib->power(s->lun, action, atr, &len);
    scio_status st = after_call(s, rc, drv);
    if (st != SCIO_SUCCESS) {
        if (st != SCIO_NO_MEDIA)
            s->state = SCIO_STATE_SWALLOWED; /* unknown power: not usable */
        forget_card(s);
        return st;
    }
    if (len == 0 || len > SCIO_MAX_ATR) {
        /* Power the card down again: an ATR we cannot trust is no card. */
        IFD_DWORD zero = 0;
        uint8_t dummy[SCIO_MAX_ATR];
        s->lib->power(s->lun, IFD_POWER_DOWN, dummy, &zero);
        forget_card(s);
        s->state = SCIO_STATE_SWALLOWED;
        *drv = length_code(len);
        return len == 0 ? SCIO_UNRECOGNIZED_MEDIA : SCIO_DEVICE_DATA_ERROR;
    }
    note_atr(s, atr, len);
    if (out_cap < len)
        return SCIO_BUFFER_TOO_SMALL; /* the card stays powered */
    memcpy(out, atr, len);
    *out_len = len;
    return SCIO_SUCCESS;
}

static scio_status do_power(ifd_dev *s, const uint8_t *in, size_t in_len,
                            uint8_t *out, size_t out_cap, size_t *out_len, long *drv)
{
    int present;
    scio_status st;
    uint32_t what;
    if (in_len < 4)
        return SCIO_INVALID_PARAMETER;
    what = scio_get_u32(in);
    if (what > SCIO_WARM_RESET)
        return SCIO_INVALID_PARAMETER;
    if ((st = refresh_presence(s, &present, drv)) != SCIO_SUCCESS)
        return st;
    if (!present)
        return SCIO_NO_MEDIA;
    if (what == SCIO_POWER_DOWN) {
        uint8_t dummy[SCIO_MAX_ATR];
        IFD_DWORD len = sizeof dummy;
        IFD_RESPONSECODE rc = s->lib->power(s->lun, IFD_POWER_DOWN, dummy, &len);
        st = after_call(s, rc, drv);
        if (st == SCIO_SUCCESS) {
            forget_card(s);
            s->state = SCIO_STATE_SWALLOWED;
        }
        return st;
    }
    if (what == SCIO_COLD_RESET) {
        if (s->state >= SCIO_STATE_POWERED) {
            uint8_t dummy[SCIO_MAX_ATR];
            IFD_DWORD len = sizeof dummy;
            IFD_RESPONSECODE rc = s->lib->power(s->lun, IFD_POWER_DOWN, dummy, &len);
            if ((st = after_call(s, rc, drv)) != SCIO_SUCCESS)
                return st;
            forget_card(s);
            s->state = SCIO_STATE_SWALLOWED;
        }
        return power_up(s, IFD_POWER_UP, out, out_cap, out_len, drv);
    }
    return power_up(s, IFD_RESET, out, out_cap, out_len, drv);
}

static uint32_t choose_protocol(const scio_atr_info *ai, uint32_t mask)
{
    uint32_t usable = ai->offered & (SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1);
    if (mask == SCIO_PROTOCOL_OPTIMAL)
        mask = SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1;
    if (mask & SCIO_PROTOCOL_DEFAULT) {
        if (ai->first & usable)
            return ai->first;
        mask |= SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1;
    }
    usable &= mask;
    if (usable & SCIO_PROTOCOL_T1)
        return SCIO_PROTOCOL_T1; /* T=1: block chaining, no GET RESPONSE dance */
    if (usable & SCIO_PROTOCOL_T0)
        return SCIO_PROTOCOL_T0;
    return 0;
}

static scio_status do_set_protocol(ifd_dev *s, const uint8_t *in, size_t in_len,
                                   uint8_t *out, size_t out_cap, size_t *out_len,
                                   long *drv)
{
    uint32_t mask, proto;
    scio_status st;
    if (in_len < 4)
        return SCIO_INVALID_PARAMETER;
    if ((st = need_out(out_cap, 4)) != SCIO_SUCCESS)
        return st;
    mask = scio_get_u32(in);
    refresh_if_absent(s);
    if (s->state == SCIO_STATE_ABSENT || s->state == SCIO_STATE_UNKNOWN)
        return SCIO_NO_MEDIA;
    if (s->state != SCIO_STATE_NEGOTIABLE && s->state != SCIO_STATE_SPECIFIC)
        return SCIO_INVALID_DEVICE_STATE;
    if (s->state == SCIO_STATE_SPECIFIC) {
        /* Already set (by an earlier SET_PROTOCOL or by TA2): confirm it. */
        if (!(mask == SCIO_PROTOCOL_OPTIMAL || (mask & SCIO_PROTOCOL_DEFAULT) ||
              (mask & s->protocol)))
            return SCIO_NOT_SUPPORTED;
        scio_put_u32(out, s->protocol);
        *out_len = 4;
        return SCIO_SUCCESS;
    }
    proto = choose_protocol(&s->atr_info, mask);
    if (!proto)
        return SCIO_NOT_SUPPORTED;
    if (s->lib->set_protocol) {
        IFD_UCHAR flags = s->atr_info.has_ta1 ? IFD_NEGOTIATE_PTS1 : 0;
        IFD_RESPONSECODE rc = s->lib->set_protocol(s->lun, proto, flags,
                                                   s->atr_info.ta1, 0, 0);
        /* A driver without PPS support still runs the card's default
         * protocol. */
        if ((rc == IFD_NOT_SUPPORTED || rc == IFD_ERROR_NOT_SUPPORTED) &&
            proto == s->atr_info.first)
            rc = IFD_SUCCESS;
        if ((st = after_call(s, rc, drv)) != SCIO_SUCCESS)
            return st;
    }
    s->protocol = proto;
    s->state = SCIO_STATE_SPECIFIC;
    if (s->lib->set_protocol)
        s->learned = 1; /* the card took part */
    scio_put_u32(out, proto);
    *out_len = 4;
    return SCIO_SUCCESS;
}

static scio_status do_transmit(ifd_dev *s, const uint8_t *in, size_t in_len,
                               uint8_t *out, size_t out_cap, size_t *out_len,
                               long *drv)
{
    uint32_t proto, pci_len;
    size_t apdu_len, cap;
    IFD_SCARD_IO_HEADER send_pci, recv_pci;
    IFD_DWORD rx_len;
    IFD_RESPONSECODE rc;
    scio_status st;
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
    if ((st = need_out(out_cap, SCIO_IO_REQUEST_SIZE + 2)) != SCIO_SUCCESS)
        return st;
    refresh_if_absent(s);
    if (s->state == SCIO_STATE_ABSENT || s->state == SCIO_STATE_UNKNOWN)
        return SCIO_NO_MEDIA;
    if (s->state != SCIO_STATE_SPECIFIC || proto != s->protocol)
        return SCIO_INVALID_DEVICE_STATE;
    cap = out_cap - SCIO_IO_REQUEST_SIZE;
    if (cap > SCIO_MAX_RESPONSE)
        cap = SCIO_MAX_RESPONSE;
    /* Drivers fail in their own ways when the response does not fit (vpcd
     * reports a communication error): give them room for any response and
     * report BUFFER_TOO_SMALL ourselves. */
    rx = out + SCIO_IO_REQUEST_SIZE;
    if (cap < SCIO_MAX_RESPONSE) {
        if (!s->rx && !(s->rx = malloc(SCIO_MAX_RESPONSE)))
            return SCIO_NO_MEMORY;
        rx = s->rx;
    }
    /* A driver may claim more than it wrote: only the first cap bytes can
     * reach the caller, and they hold nothing but what it writes now (not
     * an earlier response left in s->rx or in a reused heap block). */
    memset(rx, 0, cap);
    send_pci.Protocol = proto == SCIO_PROTOCOL_T1 ? 1 : 0;
    send_pci.Length = sizeof send_pci;
    recv_pci = send_pci;
    rx_len = rx == s->rx ? SCIO_MAX_RESPONSE : (IFD_DWORD)cap;
    rc = s->lib->transmit(s->lun, send_pci, (IFD_UCHAR *)(uintptr_t)(in + pci_len),
                          (IFD_DWORD)apdu_len, rx, &rx_len, &recv_pci);
    if ((st = after_call(s, rc, drv)) != SCIO_SUCCESS) {
        check_swap(s);
        /* The card this transmit was for is gone, even if another is in. */
        return s->state == SCIO_STATE_SPECIFIC ? st : SCIO_NO_MEDIA;
    }
    if (rx_len > (rx == s->rx ? SCIO_MAX_RESPONSE : cap)) {
        *drv = length_code(rx_len);
        return SCIO_DEVICE_DATA_ERROR; /* claims more than it could write */
    }
    if (rx_len > cap)
        return SCIO_BUFFER_TOO_SMALL;
    if (rx != out + SCIO_IO_REQUEST_SIZE)
        memcpy(out + SCIO_IO_REQUEST_SIZE, rx, rx_len);
    s->learned = 1; /* the card answered */
    scio_put_u32(out, proto);
    scio_put_u32(out + 4, SCIO_IO_REQUEST_SIZE);
    *out_len = SCIO_IO_REQUEST_SIZE + rx_len;
    return SCIO_SUCCESS;
}

static scio_status put_dword_attr(uint32_t v, uint8_t *out, size_t out_cap,
                                  size_t *out_len)
{
    if (out_cap < 4)
        return SCIO_BUFFER_TOO_SMALL;
    scio_put_u32(out, v);
    *out_len = 4;
    return SCIO_SUCCESS;
}

static scio_status do_get_attribute(ifd_dev *s, const uint8_t *in, size_t in_len,
                                    uint8_t *out, size_t out_cap, size_t *out_len,
                                    long *drv)
{
    uint32_t tag;
    IFD_DWORD len;
    IFD_RESPONSECODE rc;
    if (in_len < 4)
        return SCIO_INVALID_PARAMETER;
    tag = scio_get_u32(in);
    switch (tag) {
    case SCIO_ATTR_ATR_STRING:
        refresh_if_absent(s);
        if (s->state < SCIO_STATE_NEGOTIABLE || !s->atr_len)
            return s->state <= SCIO_STATE_ABSENT ? SCIO_NO_MEDIA
                                                 : SCIO_INVALID_DEVICE_STATE;
        if (out_cap < s->atr_len)
            return SCIO_BUFFER_TOO_SMALL;
        memcpy(out, s->atr, s->atr_len);
        *out_len = s->atr_len;
        return SCIO_SUCCESS;
    case SCIO_ATTR_CURRENT_PROTOCOL_TYPE:
        return put_dword_attr(s->state == SCIO_STATE_SPECIFIC ? s->protocol : 0,
                              out, out_cap, out_len);
    default:
        break;
    }
    if (out_cap == 0)
        return SCIO_BUFFER_TOO_SMALL;
    len = (IFD_DWORD)out_cap;
    memset(out, 0, out_cap); /* what the driver does not write reads as zero */
    rc = s->lib->get_caps(s->lun, tag, &len, out);
    if (rc == IFD_SUCCESS) {
        if (len > out_cap) {
            *drv = length_code(len);
            return SCIO_DEVICE_DATA_ERROR;
        }
        *out_len = len;
        return SCIO_SUCCESS;
    }
    if (rc == IFD_ERROR_TAG || rc == IFD_ERROR_NOT_SUPPORTED || rc == IFD_NOT_SUPPORTED) {
        /* What smclib would answer for a reader that does not say. */
        if (tag == SCIO_ATTR_DEVICE_UNIT)
            return put_dword_attr((uint32_t)(s->lun & 0xFFFF), out, out_cap, out_len);
        if (tag == SCIO_ATTR_CHARACTERISTICS)
            return put_dword_attr(0, out, out_cap, out_len);
    }
    if (rc == IFD_ERROR_INSUFFICIENT_BUFFER) {
        *drv = rc;
        return SCIO_BUFFER_TOO_SMALL; /* it was given the caller's buffer */
    }
    return after_call(s, rc, drv);
}

static scio_status do_set_attribute(ifd_dev *s, const uint8_t *in, size_t in_len,
                                    long *drv)
{
    uint8_t *copy;
    IFD_RESPONSECODE rc;
    if (in_len < 4)
        return SCIO_INVALID_PARAMETER;
    /* The driver takes a non-const pointer: give it a copy. */
    copy = malloc(in_len - 4 + 1);
    if (!copy)
        return SCIO_NO_MEMORY;
    memcpy(copy, in + 4, in_len - 4);
    rc = s->lib->set_caps(s->lun, scio_get_u32(in), (IFD_DWORD)(in_len - 4), copy);
    free(copy);
    return after_call(s, rc, drv);
}

static int vendor_function(uint32_t code, uint32_t *pcsc_code)
{
    if ((code & 0xFF000000u) == 0x42000000u) {
        *pcsc_code = code;
        return 1;
    }
    if ((code & 0xFFFF0003u) == 0x00310000u && ((code >> 2) & 0xFFFu) >= 2048u) {
        *pcsc_code = SCIO_VENDOR_CTL_PCSC((code >> 2) & 0xFFFu);
        return 1;
    }
    return 0;
}

static scio_status do_control(ifd_dev *s, uint32_t pcsc_code, const uint8_t *in,
                              size_t in_len, uint8_t *out, size_t out_cap,
                              size_t *out_len, long *drv)
{
    uint8_t *copy;
    IFD_DWORD returned = 0;
    IFD_RESPONSECODE rc;
    if (!s->lib->control)
        return SCIO_NOT_SUPPORTED;
    copy = malloc(in_len + 1);
    if (!copy)
        return SCIO_NO_MEMORY;
    if (in_len)
        memcpy(copy, in, in_len);
    if (out_cap)
        memset(out, 0, out_cap); /* what the driver does not write reads as zero */
    rc = s->lib->control(s->lun, pcsc_code, copy, (IFD_DWORD)in_len,
                         out, (IFD_DWORD)out_cap, &returned);
    free(copy);
    if (rc != IFD_SUCCESS) {
        *drv = rc;
        return map_rc_out(rc);
    }
    if (returned > out_cap) {
        *drv = length_code(returned);
        return SCIO_DEVICE_DATA_ERROR;
    }
    *out_len = returned;
    return SCIO_SUCCESS;
}

/* ---- tracking (IS_PRESENT / IS_ABSENT) ---------------------------------- */

/* Counts a one-slot reader can reach from (open_ins, open_rem): arrivals
 * and departures alternate, so they never drift apart by more than one.
 * Differences are modulo 2^32, as the counts are. */
static const char *implausible_events(const ifd_dev *s, uint32_t ins, uint32_t rem)
{
    int64_t drift;
    if ((uint32_t)(ins - s->last_ins) > 0x7FFFFFFFu ||
        (uint32_t)(rem - s->last_rem) > 0x7FFFFFFFu)
        return "went back";
    drift = (int64_t)(uint32_t)(ins - s->open_ins) - (int64_t)(uint32_t)(rem - s->open_rem);
    if (drift < -1 || drift > 1)
        return "drifted apart by more than one";
    return NULL;
}

/* Card events counted by the driver (SCIO_IFD_TAG_CARD_EVENTS): 1 and the
 * counts, or 0.  Implausible counts are a driver bug: logged once, and the
 * reader is tracked by presence alone from then on (drv_lock held). */
static int read_events(ifd_dev *s, uint32_t *ins, uint32_t *rem)
{
    uint8_t v[8 + 8]; /* slack: a driver writing past the length it was given */
    IFD_DWORD len = 8;
    const char *why;
    if (!s->has_events ||
        s->lib->get_caps(s->lun, SCIO_IFD_TAG_CARD_EVENTS, &len, v) != IFD_SUCCESS || len != 8)
        return 0;
    *ins = scio_get_u32(v);
    *rem = scio_get_u32(v + 4);
    if ((why = implausible_events(s, *ins, *rem)) != NULL) {
        scio_ifd_log(SCIO_IFD_LOG_ERROR,
                     "driver %s LUN 0x%lx: card-event counts %s (insertions %lu -> %lu, "
                     "removals %lu -> %lu; at open %lu, %lu): a driver error; tracking "
                     "this reader by card presence only",
                     s->lib->path, (unsigned long)s->lun, why,
                     (unsigned long)s->last_ins, (unsigned long)*ins,
                     (unsigned long)s->last_rem, (unsigned long)*rem,
                     (unsigned long)s->open_ins, (unsigned long)s->open_rem);
        s->has_events = 0;
        poller_unquiet(s);
        return 0;
    }
    if (*ins != s->last_ins || *rem != s->last_rem)
        poller_unquiet(s); /* an event: the tracker's next look must see it */
    s->last_ins = *ins;
    s->last_rem = *rem;
    return 1;
}

/* With event counts, each completion consumes one event, so a card that
 * leaves and comes back between two waits is still reported as one
 * departure and one arrival, in order.  Without them the arrivals and
 * departures the reader's own calls saw stand in (a transmit that found the
 * card gone is a departure even if a card is back by the next look), as
 * long as someone tracks the reader (drv_lock held). */
static int consume_event(ifd_dev *s, int want_present)
{
    uint32_t ins, rem;
    if (s->has_events) {
        /* The driver's counts include everything the calls saw. */
        s->seen_base_ins = s->seen_ins;
        s->seen_base_rem = s->seen_rem;
        if (s->counts_fresh) {
            /* read right after the presence answer of this same look */
            ins = s->last_ins;
            rem = s->last_rem;
        } else if (!read_events(s, &ins, &rem)) {
            /* A level completion may now report an event we cannot count. */
            s->events_stale = s->has_events;
            return 0;
        }
        if (s->events_stale) {
            /* Count everything so far as reported: after a failed read a
             * missed event is possible, an invented one must not be. */
            s->base_ins = ins;
            s->base_rem = rem;
            s->events_stale = 0;
            return 0;
        }
        if (want_present && ins != s->base_ins) {
            s->base_ins++;
            return 1;
        }
        if (!want_present && rem != s->base_rem) {
            s->base_rem++;
            return 1;
        }
        return 0;
    }
    if (want_present && s->seen_ins != s->seen_base_ins) {
        s->seen_base_ins++;
        return 1;
    }
    if (!want_present && s->seen_rem != s->seen_base_rem) {
        s->seen_base_rem++;
        return 1;
    }
    return 0;
}

/* Is an event known that no tracker was told of yet (drv_lock held)? */
static int events_pending(const ifd_dev *s)
{
    if (s->has_events)
        return s->events_stale || s->last_ins != s->base_ins || s->last_rem != s->base_rem;
    return s->seen_ins != s->seen_base_ins || s->seen_rem != s->seen_base_rem;
}

/* The first request after tracking stopped (a cancelled request) does not
 * report what the calls saw while nobody tracked the reader (drv_lock
 * held; driver counts keep their own rules, ifd_ext.h). */
static void track_begin(ifd_dev *s)
{
    int restart;
    scio_mutex_lock(&s->wait_lock);
    restart = !s->tracking_on;
    s->tracking_on = 1;
    scio_mutex_unlock(&s->wait_lock);
    if (restart) {
        s->seen_base_ins = s->seen_ins;
        s->seen_base_rem = s->seen_rem;
    }
}

static void track_stopped(ifd_dev *s)
{
    scio_mutex_lock(&s->wait_lock);
    s->tracking_on = 0;
    scio_mutex_unlock(&s->wait_lock);
}

/* One look for a tracking request (drv_lock held): 1 once it is done (an
 * event, or the card already as wanted), else 0; *st reports a driver
 * error.  Without a polling function, what another call of the reader
 * found out within the poll interval stands in for asking the driver (a
 * transmit that just worked proves the card is in), so that presence checks
 * do not queue in front of I/O; an event those calls saw is never put off. */
static int track_look(ifd_dev *s, int want_present, int first, int64_t now_ms,
                      scio_status *st, long *drv, int *asked)
{
    int present;
    if (first)
        track_begin(s);
    *st = SCIO_SUCCESS;
    *asked = 0;
    if (!s->poll && s->look_ms != 0 && !events_pending(s) &&
        now_ms - s->look_ms < (int64_t)s->poll_interval_ms)
        return (s->state > SCIO_STATE_ABSENT) == want_present;
    *asked = 1;
    *st = refresh_presence(s, &present, drv);
    if (*st != SCIO_SUCCESS) {
        /* The card may have moved while the driver failed: the next count
         * read resynchronises rather than reporting what it missed. */
        s->events_stale = s->has_events;
        return 0;
    }
    return consume_event(s, want_present) || present == want_present;
}

/* Between two polls that found no event, at least poll_interval_ms pass: a
 * polling function that returns at once (ignoring its timeout) costs what
 * presence polling costs, not a core.  The wait ends early on a wake. */
static void pace_poll(ifd_dev *s, int64_t last_poll_ms)
{
    int64_t due = last_poll_ms + (int64_t)s->poll_interval_ms;
    scio_mutex_lock(&s->wait_lock);
    while (!s->wake && scio_now_ms() < due)
        scio_cond_wait_until(&s->wait_cv, &s->wait_lock, due);
    s->wake = 0;
    scio_mutex_unlock(&s->wait_lock);
}

/* A tracking request in the calling thread: a synchronous one, or an
 * overlapped one on the core's tracking lane (readers with a polling
 * function, which blocks per reader). */
static scio_status do_track(ifd_dev *s, scio_op *op, int want_present, long *drv)
{
    int64_t last_poll_ms = -1; /* -1: no poll yet in this request */
    int first = 1;
    for (;;) {
        int done, asked;
        scio_status st;
        held_lock h;
        if (scio_op_cancelled(op))
            break;
        call_lock(s->lock, &h);
        done = track_look(s, want_present, first, s->poll ? 0 : scio_now_ms(), &st, drv,
                          &asked);
        call_unlock(&h);
        first = 0;
        if (st != SCIO_SUCCESS)
            return st;
        if (done)
            return SCIO_SUCCESS;
        if (scio_op_cancelled(op))
            break;
        if (s->poll) {
            /* Blocks until a card event or the stop function: no wake-up
             * of its own while nothing happens. */
            IFD_RESPONSECODE rc;
            if (last_poll_ms >= 0)
                pace_poll(s, last_poll_ms);
            if (scio_op_cancelled(op))
                break;
            last_poll_ms = scio_now_ms();
            scio_mutex_lock(&s->wait_lock);
            s->in_poll = 1;
            scio_mutex_unlock(&s->wait_lock);
            rc = s->poll(s->lun, IFD_POLL_TIMEOUT_MS);
            scio_mutex_lock(&s->wait_lock);
            s->in_poll = 0;
            scio_cond_broadcast(&s->wait_cv);
            while (s->restopping) /* it must be done with s before we return */
                scio_cond_wait(&s->wait_cv, &s->wait_lock);
            scio_mutex_unlock(&s->wait_lock);
            if (rc == IFD_NO_SUCH_DEVICE) {
                *drv = rc;
                return SCIO_DEVICE_NOT_CONNECTED;
            }
        } else {
            scio_mutex_lock(&s->wait_lock);
            if (!s->wake)
                scio_cond_wait_until(&s->wait_cv, &s->wait_lock,
                                     scio_now_ms() + s->poll_interval_ms);
            s->wake = 0;
            scio_mutex_unlock(&s->wait_lock);
        }
    }
    track_stopped(s);
    return SCIO_CANCELLED;
}

/* Repeats the stop function while the poll it was meant for has not
 * returned (bounded); the polling thread waits for it before it goes on. */
static SCIO_THREAD_FN restop_main(void *arg)
{
    ifd_dev *s = arg;
    int64_t until = scio_now_ms() + IFD_RESTOP_FOR_MS;
    scio_mutex_lock(&s->wait_lock);
    while (s->in_poll && scio_now_ms() < until) {
        scio_cond_wait_until(&s->wait_cv, &s->wait_lock, scio_now_ms() + IFD_RESTOP_MS);
        if (!s->in_poll)
            break;
        scio_mutex_unlock(&s->wait_lock);
        s->stop(s->lun);
        scio_mutex_lock(&s->wait_lock);
    }
    s->restopping = 0;
    scio_cond_broadcast(&s->wait_cv);
    scio_mutex_unlock(&s->wait_lock);
    SCIO_THREAD_RETURN;
}

static void ifd_wake_tracking(scio_device *d)
{
    ifd_dev *s = scio_device_state(d);
    int restop;
    scio_mutex_lock(&s->wait_lock);
    s->wake = 1;
    scio_cond_broadcast(&s->wait_cv);
    restop = s->stop && s->in_poll && !s->restopping;
    if (restop)
        s->restopping = 1;
    scio_mutex_unlock(&s->wait_lock);
    if (s->stop)
        s->stop(s->lun);
    if (restop && scio_thread_start_detached(restop_main, s) != 0) {
        scio_mutex_lock(&s->wait_lock);
        s->restopping = 0;
        scio_cond_broadcast(&s->wait_cv);
        scio_mutex_unlock(&s->wait_lock);
    }
}

/* ---- the library's poller: overlapped tracking without a polling function
 *
 * A driver without a polling function is asked for presence every poll
 * interval.  Rather than a thread per reader, one thread per driver library
 * asks for all of its readers with a request pending (the calls of a driver
 * that is not thread safe go one at a time anyway): it wakes once per
 * interval, on a tick shared by every reader, and looks at each.  The
 * requests sit in one array, so that finding the readers due walks
 * contiguous memory rather than chasing a pointer into every reader.
 *
 * A driver that counts card events (ifd_ext.h) is asked for presence only
 * when its counts moved: once a look has asked presence, read the counts
 * after it and left the request waiting with every event reported, the
 * request's entry keeps those counts ("quiet"), and the following looks
 * read the counts alone, without the call lock, from what the entry holds
 * (no pointer into the reader): while they stand still the card has not
 * moved and the look is done.  Any count read under the call lock that
 * finds them moved (poller_unquiet) makes the next look a full one.
 *
 * A driver that also offers the card-event generation (ifd_ext.h: one
 * number for the library, bumped on every count change of any reader) is
 * asked for it once per tick, before any look.  A pass in which every
 * waiting request was quiet, every count read found the counts standing,
 * and nothing stirred the table (a request came or was cancelled, a call
 * saw counts move) "settles" the poller at the generation it began with:
 * while the generation reads the same and nothing stirs, the following
 * ticks make that one read and no look at all.  When it moves, the next
 * pass reads every quiet request's counts, due or not, and may settle
 * again at the new value. */

/* 32 bytes (with a 64-bit DWORD), two to a cache line: the reader itself
 * is in devs[], at the same index, for looks that need it. */
typedef struct poller_entry {
    IFD_DWORD lun;           /* the reader's, for looks that read the counts alone */
    uint64_t quiet;          /* the counts (insertions | removals << 32) */
    int64_t due;             /* the next look, ms; 0: at once */
    uint32_t interval_ms;    /* the reader's poll interval */
    unsigned char want_present, first, cancel;
    unsigned char quiet_state; /* QUIET_* */
} poller_entry;

#define QUIET_ON    1  /* quiet holds: a look may read the counts alone */
#define QUIET_DIRTY 2  /* unquieted since the batch noted the entry */

typedef struct ifd_poller {
    scio_mutex lock;
    scio_cond cv;
    ifdh_get_capabilities_fn get_caps; /* the library's */
    poller_entry *items;     /* readers with a request waiting */
    ifd_dev **devs;          /* and the readers */
    size_t count, cap;
    int thread_up, quit;
    int dirty;               /* a request came or was cancelled: look again */
    /* The card-event generation (ifd_ext.h): */
    size_t no_generation;    /* entries whose reader does not offer it */
    unsigned stir;           /* bumped by anything a settled poller must see */
    int settled;             /* the table stood still at settled_gen ... */
    unsigned settled_stir;   /* ... and p->stir was this */
    uint32_t settled_gen;
    unsigned settled_interval_ms; /* the shortest interval of the entries */
} ifd_poller;

static ifd_poller *poller_get(ifd_lib *lib)
{
    ifd_poller *p;
    scio_mutex_lock(&libs_lock);
    p = lib->poller;
    if (!p && (p = calloc(1, sizeof *p)) != NULL) {
        scio_mutex_init(&p->lock);
        scio_cond_init(&p->cv);
        p->get_caps = lib->get_caps;
        lib->poller = p;
    }
    scio_mutex_unlock(&libs_lock);
    return p;
}

static void poller_free(ifd_poller *p)
{
    free(p->items);
    free(p->devs);
    scio_cond_destroy(&p->cv);
    scio_mutex_destroy(&p->lock);
    free(p);
}

/* The library is going (no reader is left): a running thread frees the
 * poller on its way out. */
static void poller_drop(struct ifd_poller *p)
{
    int up;
    if (!p)
        return;
    scio_mutex_lock(&p->lock);
    p->quit = 1;
    up = p->thread_up;
    scio_cond_broadcast(&p->cv);
    scio_mutex_unlock(&p->lock);
    if (!up)
        poller_free(p);
}

/* The counts moved (or can no longer be trusted), seen by a call with the
 * reader's call lock held: the pending request's next look asks presence.
 * (The poller lock is only ever held briefly, never across a driver call.) */
static void poller_unquiet(ifd_dev *s)
{
    ifd_poller *p = s->poller;
    if (!p)
        return;
    scio_mutex_lock(&p->lock);
    if (s->tw_op) {
        p->items[s->tw_slot].quiet_state = QUIET_DIRTY;
        p->stir++;
    }
    scio_mutex_unlock(&p->lock);
}

static int64_t next_tick(int64_t now_ms, unsigned interval_ms)
{
    return (now_ms / interval_ms + 1) * interval_ms;
}

static int call_trylock(scio_mutex *lock, held_lock *h)
{
    if (!scio_mutex_trylock(lock))
        return 0;
    h->lock = lock;
    h->up = held_locks;
    held_locks = h;
    return 1;
}

/* The poller takes its lock once per batch of readers, not per reader:
 * it notes which readers are due with the lock held, looks at them with
 * it released, and then settles their requests with it held again. */
#define POLLER_BATCH 32

typedef struct poller_item {
    IFD_DWORD lun;
    uint64_t quiet;                  /* in: the entry's; out: the look's */
    int counts_only;                 /* a look that reads the counts alone */
    int cancel;                      /* as the request stood when noted */
    /* the rest for full looks only */
    ifd_dev *s;
    int want_present, first;         /* as the request stood when noted */
    int quiet_on;                    /* out: the look's, or -1: keep the entry's */
    int r;                           /* poller_look's answer */
    scio_status st;
    long drv;
} poller_item;

static uint64_t counts_word(uint32_t ins, uint32_t rem)
{
    return (uint64_t)ins | (uint64_t)rem << 32;
}

/* Do the card-event counts still stand where the request was left quiet?
 * Then the card has not moved either (ifd_ext.h): one driver call, made
 * without the call lock (the extension allows it), so that the look
 * neither waits for nor holds up the reader's I/O. */
static int counts_unmoved(ifdh_get_capabilities_fn get_caps, const poller_item *it)
{
    uint8_t v[8 + 8]; /* slack: a driver writing past the length it was given */
    IFD_DWORD len = 8;
    return get_caps(it->lun, SCIO_IFD_TAG_CARD_EVENTS, &len, v) == IFD_SUCCESS &&
           len == 8 && counts_word(scio_get_u32(v), scio_get_u32(v + 4)) == it->quiet;
}

/* The library's card-event generation (ifd_ext.h), read through `lun`: 1
 * and *gen, or 0 (not offered, or a read that failed).  Made without any
 * lock, as the extension allows. */
static int read_generation(ifdh_get_capabilities_fn get_caps, IFD_DWORD lun, uint32_t *gen)
{
    uint8_t v[4 + 8]; /* slack: a driver writing past the length it was given */
    IFD_DWORD len = 4;
    if (get_caps(lun, SCIO_IFD_TAG_CARD_EVENT_GENERATION, &len, v) != IFD_SUCCESS || len != 4)
        return 0;
    *gen = scio_get_u32(v);
    return 1;
}

/* The poller's full look at one reader: 1 done, 0 not yet, -1 put off
 * because a call holds the lock (its outcome is news too).  A lock the
 * whole library shares (a driver that is not thread safe) is waited for
 * after two tries, so that another reader's I/O cannot starve this one's
 * tracking.  Leaves in it->quiet_on / it->quiet whether the next look may
 * read the counts alone. */
static int poller_look(poller_item *it, int64_t now_ms)
{
    ifd_dev *s = it->s;
    held_lock h;
    int done, asked;
    it->st = SCIO_SUCCESS;
    it->quiet_on = -1;
    if (!call_trylock(s->lock, &h)) {
        if (s->lock != &s->lib->call_lock || s->tw_deferred < 2) {
            s->tw_deferred++;
            return -1;
        }
        call_lock(s->lock, &h);
    }
    s->tw_deferred = 0;
    done = track_look(s, it->want_present, it->first, now_ms, &it->st, &it->drv, &asked);
    if (asked) { /* (else what the reader's calls found stood in: quiet stays) */
        it->quiet_on = !done && it->st == SCIO_SUCCESS && s->has_events &&
                       !s->events_stale && !events_pending(s);
        it->quiet = counts_word(s->last_ins, s->last_rem);
    }
    call_unlock(&h);
    return done;
}

/* Take entry i out of the table (poller lock held): the last entry moves
 * into its place. */
static void poller_unlink(ifd_poller *p, size_t i)
{
    ifd_dev *s = p->devs[i];
    size_t last = --p->count;
    if (!s->has_generation)
        p->no_generation--;
    if (i != last) {
        p->items[i] = p->items[last];
        p->devs[i] = p->devs[last];
        p->devs[i]->tw_slot = i;
    }
    s->tw_op = NULL;
}

/* The next reader's hot fields are fetched while the driver answers for
 * this one (a hint; nothing where the compiler has no such builtin). */
#if defined(__GNUC__) || defined(__clang__)
#define POLLER_PREFETCH(p) __builtin_prefetch(p)
#else
#define POLLER_PREFETCH(p) ((void)(p))
#endif

static void prefetch_reader(const ifd_dev *s)
{
    const char *c = (const char *)s;
    POLLER_PREFETCH(c);
    POLLER_PREFETCH(c + 64);
    POLLER_PREFETCH(c + 128);
    POLLER_PREFETCH(c + 192);
}

/* Settle the request in entry i after its look (poller lock held): 1 if it
 * completed (the entry is gone and the lock was dropped meanwhile), else 0
 * and its next look is due at *due. */
static int poller_settle(ifd_poller *p, size_t i, const poller_item *it, int64_t due)
{
    poller_entry *e = &p->items[i];
    ifd_dev *s;
    scio_op *op;
    scio_status st = it->st;
    int done = 0;
    if (!it->cancel) {
        if (it->r >= 0)
            e->first = 0;
        done = it->r > 0 || st != SCIO_SUCCESS;
    }
    if (!done && e->cancel) {
        st = SCIO_CANCELLED;
        done = 1;
    }
    if (!done) {
        e->due = due;
        /* Not if a call saw the counts move since the look was noted. */
        if (it->quiet_on >= 0 && !(e->quiet_state & QUIET_DIRTY)) {
            e->quiet_state = it->quiet_on ? QUIET_ON : 0;
            e->quiet = it->quiet;
        }
        return 0;
    }
    s = p->devs[i];
    op = s->tw_op;
    poller_unlink(p, i);
    scio_mutex_unlock(&p->lock);
    if (st == SCIO_CANCELLED)
        track_stopped(s);
    scio_op_complete(op, st, 0, it->drv); /* s may be gone after this */
    scio_mutex_lock(&p->lock);
    return 1;
}

static SCIO_THREAD_FN poller_main(void *arg)
{
    ifd_poller *p = arg;
    poller_item batch[POLLER_BATCH];
    size_t slot[POLLER_BATCH];
    scio_mutex_lock(&p->lock);
    while (!p->quit || p->count) {
        int64_t now = scio_now_ms(), wake_at = INT64_MAX;
        size_t i = 0;
        int moved = 0;
        unsigned quick_batches = 0;
        /* The generation: read before any look of the pass (so that every
         * count read of the pass comes after it), with the lock dropped;
         * the entry read through stays (only this thread removes). */
        int gen_pass = 0, settling, skipped = 0;
        uint32_t gen = 0;
        unsigned stir = p->stir, min_interval = UINT_MAX;
        p->dirty = 0;
        if (p->count && !p->no_generation) {
            IFD_DWORD lun = p->items[0].lun;
            scio_mutex_unlock(&p->lock);
            gen_pass = read_generation(p->get_caps, lun, &gen);
            scio_mutex_lock(&p->lock);
            if (gen_pass && p->settled && p->settled_gen == gen && p->settled_stir == p->stir &&
                !p->no_generation) {
                /* Nothing moved: no look this tick. */
                wake_at = next_tick(now, p->settled_interval_ms);
                skipped = 1;
            }
        }
        settling = gen_pass && !skipped;
        if (skipped)
            i = p->count; /* no walk */
        while (i < p->count) {
            int n = 0, k, full;
            unsigned interval = 0;
            int64_t due = 0;
            /* Only this thread removes entries (and moves them), others
             * append or set a cancel or quiet flag: the slots noted stay
             * the readers noted while the lock is dropped for the looks. */
            for (; i < p->count && n < POLLER_BATCH; i++) {
                poller_entry *e = &p->items[i];
                poller_item *it = &batch[n];
                /* (a pass on a generation looks at every quiet request) */
                if (!e->cancel && e->due > now &&
                    !(gen_pass && (e->quiet_state & QUIET_ON) && !e->first)) {
                    if (e->due < wake_at)
                        wake_at = e->due;
                    settling = 0;
                    continue;
                }
                it->lun = e->lun;
                it->quiet = e->quiet;
                it->cancel = e->cancel;
                it->counts_only = (e->quiet_state & QUIET_ON) && !e->first && !e->cancel;
                e->quiet_state &= (unsigned char)~QUIET_DIRTY;
                if (!it->counts_only) {
                    it->s = p->devs[i];
                    it->want_present = e->want_present;
                    it->first = e->first;
                    if (!it->cancel) /* the look touches the reader: fetch it meanwhile */
                        prefetch_reader(it->s);
                }
                slot[n] = i;
                n++;
            }
            if (n == 0)
                break;
            scio_mutex_unlock(&p->lock);
            for (k = 0, full = 0; k < n; k++) {
                poller_item *it = &batch[k];
                if (it->counts_only) {
                    /* moved: a full look, at once, in another pass */
                    it->r = counts_unmoved(p->get_caps, it) ? 0 : -2;
                    continue;
                }
                it->r = 0;
                it->st = SCIO_SUCCESS;
                it->drv = 0;
                it->quiet_on = -1;
                if (!it->cancel) {
                    it->r = poller_look(it, now);
                    full = 1;
                }
            }
            /* Looks that read the counts alone take no time worth a clock
             * read each batch (an early next look would do no harm). */
            if (full || ++quick_batches % 8 == 0)
                now = scio_now_ms();
            scio_mutex_lock(&p->lock);
            /* Highest slot first: a completed entry's place is taken by the
             * last one, never by one of this batch still to settle. */
            for (k = n - 1; k >= 0; k--) {
                poller_entry *e = &p->items[slot[k]];
                poller_item *it = &batch[k];
                if (e->interval_ms != interval) { /* one driver's readers share it, as a rule */
                    interval = e->interval_ms;
                    due = next_tick(now, interval);
                    if (interval < min_interval)
                        min_interval = interval;
                }
                if (it->counts_only && !e->cancel) {
                    if (it->r == 0 && !(e->quiet_state & QUIET_DIRTY)) {
                        e->due = due;
                        if (due < wake_at)
                            wake_at = due;
                    } else {
                        e->quiet_state = 0; /* the counts moved: look at it fully */
                        e->due = 0;
                        moved = 1;
                    }
                    continue;
                }
                if (it->counts_only) { /* cancelled meanwhile */
                    it->r = 0;
                    it->st = SCIO_SUCCESS;
                    it->drv = 0;
                    it->quiet_on = -1;
                }
                if (poller_settle(p, slot[k], it, due))
                    moved = 1;
                else {
                    if (due < wake_at)
                        wake_at = due;
                    if (p->items[slot[k]].quiet_state != QUIET_ON)
                        settling = 0; /* its next look is a full one */
                }
            }
        }
        if (!skipped) {
            /* Only a pass that looked at every entry after reading the
             * generation, found nothing, left every request quiet and was
             * not stirred meanwhile settles; any other unsettles. */
            p->settled = settling && !moved && stir == p->stir && min_interval != UINT_MAX;
            p->settled_gen = gen;
            p->settled_stir = stir;
            p->settled_interval_ms = min_interval;
        }
        /* An entry moved into a slot already passed is looked at now. */
        if (moved || p->dirty || (p->quit && !p->count))
            continue;
        if (wake_at == INT64_MAX)
            scio_cond_wait(&p->cv, &p->lock);
        else
            scio_cond_wait_until(&p->cv, &p->lock, wake_at);
    }
    scio_mutex_unlock(&p->lock);
    poller_free(p);
    SCIO_THREAD_RETURN;
}

static void ifd_submit_tracking(scio_device *d, scio_op *op, uint32_t code)
{
    ifd_dev *s = scio_device_state(d);
    ifd_poller *p = s->poller;
    int failed = 0;
    scio_mutex_lock(&p->lock);
    if (!p->thread_up) {
        if (scio_thread_start_detached(poller_main, p) == 0)
            p->thread_up = 1;
        else
            failed = 1;
    }
    if (!failed && p->count == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        poller_entry *items = cap <= SIZE_MAX / sizeof *items
                              ? realloc(p->items, cap * sizeof *items) : NULL;
        ifd_dev **devs = NULL;
        if (items) {
            p->items = items;
            devs = cap <= SIZE_MAX / sizeof *devs ? realloc(p->devs, cap * sizeof *devs)
                                                  : NULL;
        }
        if (devs) {
            p->devs = devs;
            p->cap = cap;
        } else {
            failed = 1; /* (items, if grown, is just larger than needed) */
        }
    }
    if (!failed) {
        poller_entry *e = &p->items[p->count];
        memset(e, 0, sizeof *e);
        p->devs[p->count] = s;
        e->lun = s->lun;
        e->due = 0; /* the first look at once */
        e->interval_ms = s->poll_interval_ms;
        e->want_present = code == SCIO_IOCTL_IS_PRESENT;
        e->first = 1;
        s->tw_op = op;
        s->tw_slot = p->count++;
        s->tw_deferred = 0;
        if (!s->has_generation)
            p->no_generation++;
        p->stir++;
        p->dirty = 1;
        scio_cond_broadcast(&p->cv);
    }
    scio_mutex_unlock(&p->lock);
    if (failed)
        scio_op_complete(op, SCIO_INSUFFICIENT_RESOURCES, 0, 0);
}

/* With the device lock held: must not block (the poller lock is only ever
 * held briefly, never across a driver call). */
static void ifd_cancel(scio_device *d, scio_op *op)
{
    ifd_dev *s = scio_device_state(d);
    ifd_poller *p = s->poller;
    scio_mutex_lock(&p->lock);
    if (s->tw_op && (!op || s->tw_op == op)) {
        p->items[s->tw_slot].cancel = 1;
        p->stir++;
        p->dirty = 1;
        scio_cond_broadcast(&p->cv);
    }
    scio_mutex_unlock(&p->lock);
}

/* ---- dispatch ----------------------------------------------------------- */

static scio_status ifd_ioctl(scio_device *d, scio_op *op, uint32_t code,
                             const uint8_t *in, size_t in_len,
                             uint8_t *out, size_t out_cap, size_t *out_len,
                             long *drv)
{
    ifd_dev *s = scio_device_state(d);
    scio_status st;
    uint32_t pcsc_code;

    held_lock h;

    *out_len = 0;
    if (vendor_function(code, &pcsc_code) && s->has_unlocked &&
        pcsc_code >= s->unlocked_first && pcsc_code <= s->unlocked_last) {
        /* The driver serves these concurrently with its other calls (so
         * they get through while a call holds the reader lock). */
        return do_control(s, pcsc_code, in, in_len, out, out_cap, out_len, drv);
    }
    if (scio_is_extension_ioctl(code)) /* no driver call: the channel is ours alone */
        return scio_direct_extension_ioctl(code, in, in_len, out, out_cap, out_len);
    if (holds_lock(s->lock))
        return SCIO_POSSIBLE_DEADLOCK; /* called from inside a call of this reader */
    if (code == SCIO_IOCTL_IS_PRESENT || code == SCIO_IOCTL_IS_ABSENT)
        return do_track(s, op, code == SCIO_IOCTL_IS_PRESENT, drv);

    call_lock(s->lock, &h);
    s->learned = 0;
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
        /* Readers driven through IFD handlers have no mechanism: a card
         * that is in counts as swallowed. */
        refresh_if_absent(s);
        st = s->state <= SCIO_STATE_ABSENT ? SCIO_NO_MEDIA : SCIO_SUCCESS;
        break;
    case SCIO_IOCTL_EJECT:
    case SCIO_IOCTL_CONFISCATE:
        st = SCIO_NOT_SUPPORTED;
        break;
    case SCIO_IOCTL_GET_LAST_ERROR:
        st = put_dword_attr(s->last_error, out, out_cap, out_len);
        break;
    default:
        if (vendor_function(code, &pcsc_code))
            st = do_control(s, pcsc_code, in, in_len, out, out_cap, out_len, drv);
        else
            st = SCIO_INVALID_DEVICE_REQUEST;
        break;
    }
    if (st != SCIO_SUCCESS && code != SCIO_IOCTL_GET_LAST_ERROR)
        s->last_error = st;
    if (s->learned)
        s->look_ms = scio_now_ms(); /* a tracker need not ask again so soon */
    call_unlock(&h);
    return st;
}

static void ifd_release(scio_device *d)
{
    ifd_dev *s = scio_device_state(d);
    held_lock h;
    call_lock(s->lock, &h);
    if (s->channel_open) {
        if (s->state >= SCIO_STATE_POWERED) {
            uint8_t dummy[SCIO_MAX_ATR];
            IFD_DWORD len = sizeof dummy;
            s->lib->power(s->lun, IFD_POWER_DOWN, dummy, &len);
        }
        s->lib->close_channel(s->lun);
        s->channel_open = 0;
        unclaim_reader(s->lib, s->lun);
    }
    call_unlock(&h);
}

static void ifd_destroy(scio_device *d)
{
    ifd_dev *s = scio_device_state(d);
    lib_unref(s->lib);
    free(s->rx);
    scio_cond_destroy(&s->wait_cv);
    scio_mutex_destroy(&s->wait_lock);
    scio_mutex_destroy(&s->drv_lock);
    free(s);
}

/* Blocking driver calls: overlapped requests run on the core's lanes. */
static const scio_backend ifd_backend = {
    .name = "ifd",
    .ioctl = ifd_ioctl,
    .wake_tracking = ifd_wake_tracking,
    .release = ifd_release,
    .destroy = ifd_destroy,
};

/* Readers without a polling function: overlapped tracking requests go to
 * the library's poller instead of a lane thread each. */
static const scio_backend ifd_backend_library_polled = {
    .name = "ifd",
    .ioctl = ifd_ioctl,
    .submit_tracking = ifd_submit_tracking,
    .cancel = ifd_cancel,
    .wake_tracking = ifd_wake_tracking,
    .release = ifd_release,
    .destroy = ifd_destroy,
};

/* ---- open --------------------------------------------------------------- */

/* Function pointers travel through GetCapabilities as raw bytes: copied
 * into *fn (a function pointer of fn_size bytes), left alone if not given. */
static void get_fn_capability(ifd_dev *s, IFD_DWORD tag, void *fn, size_t fn_size)
{
    uint8_t buf[sizeof(void (*)(void)) + 8];
    IFD_DWORD len = (IFD_DWORD)fn_size;
    if (fn_size > sizeof(void (*)(void)))
        return;
    if (s->lib->get_caps(s->lun, tag, &len, buf) == IFD_SUCCESS && len == fn_size)
        memcpy(fn, buf, fn_size);
}

/* An 8-byte extension value (ifd_ext.h): 1 and its two u32s, or 0 when the
 * driver does not offer it; a value of another length is logged, not used. */
static int get_ext_pair(ifd_dev *s, IFD_DWORD tag, const char *what,
                        uint32_t *a, uint32_t *b)
{
    uint8_t v[8 + 8]; /* slack: a driver writing past the length it was given */
    IFD_DWORD len = 8;
    if (s->lib->get_caps(s->lun, tag, &len, v) != IFD_SUCCESS)
        return 0;
    if (len != 8) {
        scio_ifd_log(SCIO_IFD_LOG_ERROR,
                     "driver %s LUN 0x%lx: %s (tag 0x%08lX) has %lu bytes, not 8: ignored",
                     s->lib->path, (unsigned long)s->lun, what, (unsigned long)tag,
                     (unsigned long)len);
        return 0;
    }
    *a = scio_get_u32(v);
    *b = scio_get_u32(v + 4);
    return 1;
}

/* Read scardio's extensions once, at open (call lock held). */
static void read_extensions(ifd_dev *s)
{
    uint32_t first, last, ins, rem, gen;
    if (get_ext_pair(s, SCIO_IFD_TAG_UNLOCKED_CONTROLS, "the unlocked control range",
                     &first, &last)) {
        if (first > last || first < SCIO_IFD_VENDOR_CTL_FIRST ||
            last > SCIO_IFD_VENDOR_CTL_LAST) {
            scio_ifd_log(SCIO_IFD_LOG_ERROR,
                         "driver %s LUN 0x%lx: unlocked control range 0x%08lX..0x%08lX is "
                         "not a range within the vendor controls 0x%08lX..0x%08lX: ignored, "
                         "every control takes the reader lock",
                         s->lib->path, (unsigned long)s->lun, (unsigned long)first,
                         (unsigned long)last, (unsigned long)SCIO_IFD_VENDOR_CTL_FIRST,
                         (unsigned long)SCIO_IFD_VENDOR_CTL_LAST);
        } else {
            s->has_unlocked = 1;
            s->unlocked_first = first;
            s->unlocked_last = last;
        }
    }
    if (get_ext_pair(s, SCIO_IFD_TAG_CARD_EVENTS, "the card-event counts", &ins, &rem)) {
        s->has_events = 1;
        s->open_ins = s->last_ins = s->base_ins = s->known_ins = ins;
        s->open_rem = s->last_rem = s->base_rem = rem;
        s->has_generation = read_generation(s->lib->get_caps, s->lun, &gen);
    }
}

scio_status scio_open_ifd(const char *library, const char *device_name,
                          unsigned long lun, scio_queue *q,
                          const scio_ifd_options *opts, scio_device **out,
                          char *errbuf, size_t errlen)
{
    ifd_dev *s;
    ifd_lib *lib;
    scio_status st;
    IFD_RESPONSECODE rc;
    int claim;
    int present;
    long drv = 0;
    held_lock h;

    *out = NULL;
    if (errbuf && errlen)
        errbuf[0] = 0;
    if (!library || !*library) {
        set_err(errbuf, errlen, "no driver library given");
        return SCIO_INVALID_PARAMETER;
    }
#if IFD_DWORD_MAX < ULONG_MAX
    /* The driver's DWORD is narrower than unsigned long (macOS). */
    if (lun > IFD_DWORD_MAX) {
        set_err(errbuf, errlen, "LUN 0x%lx does not fit the driver's 32-bit DWORD", lun);
        return SCIO_INVALID_PARAMETER;
    }
#endif
    if ((st = lib_load(library, &lib, errbuf, errlen)) != SCIO_SUCCESS)
        return st;
    claim = claim_reader(lib, (IFD_DWORD)lun);
    if (claim != 0) {
        set_err(errbuf, errlen, claim == -1
                ? "reader %s LUN 0x%lx is already open in this process"
                : "out of memory opening %s LUN 0x%lx", library, lun);
        lib_unref(lib);
        return claim == -1 ? SCIO_SHARING_VIOLATION : SCIO_NO_MEMORY;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        unclaim_reader(lib, (IFD_DWORD)lun);
        lib_unref(lib);
        return SCIO_NO_MEMORY;
    }
    s->lib = lib;
    s->lun = (IFD_DWORD)lun;
    s->state = SCIO_STATE_UNKNOWN;
    s->poll_interval_ms = opts && opts->poll_interval_ms ? opts->poll_interval_ms
                                                          : SCIO_DEFAULT_POLL_MS;
    scio_mutex_init(&s->drv_lock);
    scio_mutex_init(&s->wait_lock);
    scio_cond_init(&s->wait_cv);

    /* Until the driver says it is thread safe, calls go one at a time
     * across all of its readers. */
    s->lock = &lib->call_lock;
    scio_ifd_quirks_find(&s->quirks, library, lib->handle, lib->version == 3, device_name, lun);
    call_lock(s->lock, &h);
    if (lib->version == 3) {
        /* The driver may keep or modify the name: give it its own copy. */
        char *name = strdup(device_name ? device_name : "");
        rc = name ? lib->create_by_name(s->lun, name) : IFD_COMMUNICATION_ERROR;
        free(name);
    } else {
        unsigned long channel = device_name ? strtoul(device_name, NULL, 0) : 0;
        rc = lib->create(s->lun, (IFD_DWORD)channel);
    }
    if (rc != IFD_SUCCESS) {
        call_unlock(&h);
        /* Why (often: another process holds the reader) is for the caller
         * to find out; SCIO_NO_SUCH_DEVICE marks this failure alone. */
        set_err(errbuf, errlen,
                "driver %s could not open channel \"%s\" (LUN 0x%lx): IFD code %ld",
                library, device_name ? device_name : "", lun, (long)rc);
        st = SCIO_NO_SUCH_DEVICE;
        goto fail;
    }
    s->channel_open = 1;
    scio_ifd_quirks_channel_opened(&s->quirks);
    read_extensions(s);
    get_fn_capability(s, IFD_TAG_POLLING_THREAD_WITH_TIMEOUT, &s->poll, sizeof s->poll);
    if (s->poll)
        get_fn_capability(s, IFD_TAG_STOP_POLLING_THREAD, &s->stop, sizeof s->stop);
    if (s->poll && !s->stop)
        s->poll = NULL; /* without a stop function a wait could not be cancelled promptly */
    st = refresh_presence(s, &present, &drv);
    (void)st; /* a reader that cannot tell yet stays UNKNOWN */
    {
        IFD_UCHAR safe = 0;
        IFD_DWORD len = 1;
        if (lib->get_caps(s->lun, IFD_TAG_THREAD_SAFE, &len, &safe) == IFD_SUCCESS &&
            len == 1 && safe == 1)
            s->lock = &s->drv_lock; /* readers may be called concurrently */
    }
    call_unlock(&h);

    if (!s->poll)
        s->poller = poller_get(lib); /* NULL (no memory): a lane thread tracks */
    st = scio_device_create(s->poller ? &ifd_backend_library_polled : &ifd_backend, s, q,
                            opts ? opts->close_timeout_ms : 0, out);
    if (st != SCIO_SUCCESS) {
        set_err(errbuf, errlen, "out of memory");
        call_lock(s->lock, &h);
        lib->close_channel(s->lun);
        call_unlock(&h);
        goto fail;
    }
    return SCIO_SUCCESS;

fail:
    unclaim_reader(lib, s->lun);
    scio_cond_destroy(&s->wait_cv);
    scio_mutex_destroy(&s->wait_lock);
    scio_mutex_destroy(&s->drv_lock);
    free(s);
    lib_unref(lib);
    return st;
}
