/* paths.c - scio_list_paths / scio_open_path on Windows (see scio.h): the
 * device interface paths of smart-card readers, in UTF-8, opened with
 * scio_open_win32.  native/posix/paths.c is the counterpart elsewhere. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scio.h"
#include "scio_win32_discover.h"

int scio_list_paths(char *buf, size_t cap, size_t *needed)
{
    size_t wneed = 0, used = 0;
    wchar_t *w = NULL;
    int n, count = 0;

    if (needed)
        *needed = 1;
    /* Ask for the size, then fetch; a device can appear in between. */
    for (int attempt = 0; attempt < 4; attempt++) {
        n = scio_win32_list_readers(w, w ? wneed : 0, &wneed);
        if (n >= 0 && w)
            break;
        free(w);
        w = NULL;
        if (n == SCIO_WIN32_LIST_FAILED)
            return -2;
        if (!(w = malloc((wneed + 1) * sizeof *w)))
            return -2;
    }
    if (!w || n < 0) {
        free(w);
        return -2;
    }
    for (const wchar_t *p = w; *p; p += wcslen(p) + 1) {
        int len = WideCharToMultiByte(CP_UTF8, 0, p, -1, NULL, 0, NULL, NULL);
        if (len <= 0)
            continue;
        if (buf && used + (size_t)len < cap)
            WideCharToMultiByte(CP_UTF8, 0, p, -1, buf + used, len, NULL, NULL);
        used += (size_t)len;
        count++;
    }
    free(w);
    if (needed)
        *needed = used + 1;
    if (!buf || used + 1 > cap)
        return -1;
    buf[used] = 0;
    return count;
}

scio_status scio_open_path(const char *path, scio_queue *q, scio_device **out,
                           char *errbuf, size_t errlen)
{
    int n;
    wchar_t *w;
    scio_status st;
    *out = NULL;
    if (!path || !*path ||
        (n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0)) <= 0) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "not a valid UTF-8 device path");
        return SCIO_INVALID_PARAMETER;
    }
    if (!(w = malloc((size_t)n * sizeof *w)))
        return SCIO_NO_MEMORY;
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, w, n);
    st = scio_open_win32(w, q, out, errbuf, errlen);
    free(w);
    return st;
}
