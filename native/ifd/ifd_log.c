/*
 * ifd_log.c - the logging functions IFD-handler drivers import from pcscd.
 *
 * Drivers are linked against symbols that pcscd exports (log_msg, log_xxd);
 * defining them here, and making this module's symbols global before a driver
 * is loaded (scio_ifd_export_log_symbols), lets real drivers load in any
 * process.  Messages go to the callback set with scio_set_log.
 *
 * Windows has no such trick, and needs none: a DLL's imports name the module
 * that provides them at link time, and there is no global symbol namespace
 * to join, so a Windows driver DLL cannot pick up log_msg from its host by
 * name.  Nothing is exported there; the functions still serve the core.
 */
#ifndef _WIN32
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <dlfcn.h>
#endif

#include "scio.h"
#include "core/sync.h"
#include "ifd_internal.h"

#ifdef _WIN32
#define SCIO_EXPORT
#else
#define SCIO_EXPORT __attribute__((visibility("default")))
#endif

static scio_mutex log_lock = SCIO_MUTEX_INITIALIZER;
static scio_log_fn log_fn;
static void *log_ctx;
static int log_stderr = -1;

void scio_set_log(scio_log_fn fn, void *ctx)
{
    scio_mutex_lock(&log_lock);
    log_fn = fn;
    log_ctx = ctx;
    scio_mutex_unlock(&log_lock);
}

static void emit(int priority, const char *msg)
{
    scio_log_fn fn;
    void *ctx;
    scio_mutex_lock(&log_lock);
    if (log_stderr < 0) {
        const char *e = getenv("SCARDIO_DRIVER_LOG");
        log_stderr = e && *e && strcmp(e, "0") != 0;
    }
    fn = log_fn;
    ctx = log_ctx;
    if (log_stderr)
        fprintf(stderr, "scardio driver[%d]: %s\n", priority, msg);
    scio_mutex_unlock(&log_lock);
    if (fn)
        fn(priority, msg, ctx);
}

SCIO_EXPORT void log_msg(const int priority, const char *fmt, ...);
SCIO_EXPORT void log_msg(const int priority, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    if (!fmt)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    emit(priority, buf);
}

void scio_ifd_log(int priority, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    emit(priority, buf);
}

SCIO_EXPORT void log_xxd(const int priority, const char *msg,
                         const unsigned char *buffer, const int size);
SCIO_EXPORT void log_xxd(const int priority, const char *msg,
                         const unsigned char *buffer, const int size)
{
    char buf[512];
    size_t pos = 0;
    int n = snprintf(buf, sizeof buf, "%s", msg ? msg : "");
    pos = n > 0 ? (size_t)n : 0;
    for (int i = 0; buffer && i < size && pos + 4 < sizeof buf; i++) {
        n = snprintf(buf + pos, sizeof buf - pos, "%02X ", buffer[i]);
        if (n <= 0)
            break;
        pos += (size_t)n;
    }
    emit(priority, buf);
}

#ifdef _WIN32
void scio_ifd_export_log_symbols(void)
{
    /* Nothing to do on Windows: see the top of this file. */
}
#else
void scio_ifd_export_log_symbols(void)
{
    static int done;
    Dl_info info;
    scio_mutex_lock(&log_lock);
    if (!done && dladdr((void *)log_msg, &info) && info.dli_fname) {
        /* Promote the object that defines log_msg (the Python extension or
         * the test program) to the global namespace; the handle is kept
         * for the life of the process on purpose. */
        void *h = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
        (void)h;
        done = 1;
    }
    scio_mutex_unlock(&log_lock);
}
#endif
