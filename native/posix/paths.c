/* paths.c - scio_list_paths / scio_open_path outside Windows (see scio.h):
 * readers are reached through their IFD-handler driver here, so there are
 * no platform device paths to list or open. */
#include <stdio.h>

#include "scio.h"

int scio_list_paths(char *buf, size_t cap, size_t *needed)
{
    if (needed)
        *needed = 1;
    if (!buf || cap < 1)
        return -1;
    buf[0] = 0;
    return 0;
}

scio_status scio_open_path(const char *path, scio_queue *q, scio_device **out,
                           char *errbuf, size_t errlen)
{
    (void)q;
    *out = NULL;
    if (errbuf && errlen)
        snprintf(errbuf, errlen,
                 "%s: reader device paths are a Windows feature; open readers "
                 "through their IFD-handler driver here (Device.open_ifd)",
                 path ? path : "(null)");
    return SCIO_NOT_SUPPORTED;
}
