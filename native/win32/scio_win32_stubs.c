/*
 * scio_win32_stubs.c - the parts of scio.h that the Windows build does not
 * implement yet: the IFD-handler backend (owned by the IFD backend; drop this
 * file from the build once that backend is compiled for Windows) and the
 * driver log, which only Windows IFD-handler DLLs would feed.
 */
#include <stdio.h>
#include <string.h>

#include "scio.h"

static scio_log_fn g_log_fn;
static void *g_log_ctx;

scio_status scio_open_ifd(const char *library, const char *device_name,
                          unsigned long lun, scio_queue *q,
                          const scio_ifd_options *opts, scio_device **out,
                          char *errbuf, size_t errlen)
{
    static const char msg[] =
        "IFD-handler drivers are not supported on Windows yet: open the "
        "reader's device path (scio_open_win32) instead";
    (void)library;
    (void)device_name;
    (void)lun;
    (void)q;
    (void)opts;
    if (out)
        *out = NULL;
    if (errbuf && errlen) {
        size_t n = sizeof(msg) - 1;
        if (n >= errlen)
            n = errlen - 1;
        memcpy(errbuf, msg, n);
        errbuf[n] = '\0';
    }
    return SCIO_NOT_SUPPORTED;
}

void scio_set_log(scio_log_fn fn, void *ctx)
{
    /* Stored for the IFD backend; nothing on Windows logs through it yet. */
    g_log_fn = fn;
    g_log_ctx = ctx;
    (void)g_log_fn;
    (void)g_log_ctx;
}
