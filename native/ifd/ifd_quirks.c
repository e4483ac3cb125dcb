/*
 * ifd_quirks.c - the driver quirks table and its workarounds (see
 * ifd_quirks.h: which drivers, why, and how their sockets are told apart
 * from the application's).
 */
#ifndef _WIN32
#define _GNU_SOURCE
#include <dlfcn.h>
#else
#include <windows.h>
#endif
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifdef __linux__
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#endif

#include "ifd_internal.h"
#include "ifd_quirks.h"

#define PCSC_LOG_DEBUG 0

/* ---- the table ------------------------------------------------------------ */

typedef struct quirk_entry {
    const char *driver;
    const char *file_prefix;   /* the library's file name starts with this */
    const char *symbols[2];    /* or it exports all of these (NULL: unused) */
    unsigned flags;
    /* The local TCP port of the driver's sockets for this channel, or -1. */
    int (*tcp_port)(int by_name, const char *device_name, unsigned long lun);
} quirk_entry;

/* vpcd's port: IFDHCreateChannelByName("/dev/null:PORT") or (no port)
 * 0x8C7B; IFDHCreateChannel(lun, PORT); then plus the slot (LUN & 0xFFFF),
 * cut to 16 bits as the driver does.  A host name before the colon is
 * client mode: no listening socket. */
#define VPCD_DEFAULT_PORT 0x8C7B
#define VPCD_OPEN_PORT "/dev/null"

static int vpcd_tcp_port(int by_name, const char *device_name, unsigned long lun)
{
    const char *name = device_name ? device_name : "";
    unsigned long port = VPCD_DEFAULT_PORT;
    if (by_name) {
        const char *colon = strchr(name, ':');
        if (colon) {
            char *end;
            size_t host_len = (size_t)(colon - name);
            if (host_len != strlen(VPCD_OPEN_PORT) ||
                strncmp(name, VPCD_OPEN_PORT, host_len) != 0)
                return -1; /* client mode */
            errno = 0;
            port = strtoul(colon + 1, &end, 0);
            if (errno)
                return -1;
        }
    } else {
        port = strtoul(name, NULL, 0); /* as the backend passes the channel */
    }
    port = (port + (lun & 0xFFFFul)) & 0xFFFFul;
    return port ? (int)port : -1; /* 0: any port, not recognisable */
}

static const quirk_entry quirk_table[] = {
    {"vpcd", "libifdvpcd", {"vicc_init", "vicc_transmit"}, SCIO_IFD_QUIRK_TCP_NODELAY,
     vpcd_tcp_port},
};

/* ---- matching --------------------------------------------------------------- */

static const char *file_name(const char *path)
{
    const char *p = path, *s;
    for (s = path; *s; s++)
        if (*s == '/' || *s == '\\')
            p = s + 1;
    return p;
}

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int exports(void *handle, const char *symbol)
{
    if (!handle)
        return 0;
#ifdef _WIN32
    return GetProcAddress((HMODULE)handle, symbol) != NULL;
#else
    return dlsym(handle, symbol) != NULL;
#endif
}

static int matches(const quirk_entry *e, const char *library, void *handle)
{
    size_t i;
    int all = 1;
    if (has_prefix(file_name(library), e->file_prefix))
        return 1;
#ifndef _WIN32
    {
        /* a symlink with another name (realpath allocates; NULL: no file) */
        char *real = realpath(library, NULL);
        int named = real && has_prefix(file_name(real), e->file_prefix);
        free(real);
        if (named)
            return 1;
    }
#endif
    for (i = 0; i < sizeof e->symbols / sizeof e->symbols[0]; i++)
        if (e->symbols[i] && !exports(handle, e->symbols[i]))
            all = 0;
    return all && e->symbols[0] != NULL;
}

void scio_ifd_quirks_find(scio_ifd_quirks *q, const char *library, void *handle,
                          int by_name, const char *device_name, unsigned long lun)
{
    size_t i;
    memset(q, 0, sizeof *q);
    q->tcp_port = -1;
    if (!library)
        return;
    for (i = 0; i < sizeof quirk_table / sizeof quirk_table[0]; i++) {
        const quirk_entry *e = &quirk_table[i];
        if (!matches(e, library, handle))
            continue;
        q->driver = e->driver;
        q->flags = e->flags;
        if (e->flags & SCIO_IFD_QUIRK_TCP_NODELAY) {
            q->tcp_port = e->tcp_port(by_name, device_name, lun);
            if (q->tcp_port < 0)
                q->flags &= ~SCIO_IFD_QUIRK_TCP_NODELAY;
        }
        return;
    }
}

/* ---- TCP_NODELAY on the driver's sockets --------------------------------------- */

#ifdef __linux__
/* A TCP/IPv4 socket whose local port is `port` (ifd_quirks.h: the driver's). */
static int is_driver_socket(int fd, int port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int v = 0;
    socklen_t vlen = sizeof v;
    memset(&sa, 0, sizeof sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0 || len < sizeof sa ||
        sa.sin_family != AF_INET || ntohs(sa.sin_port) != port)
        return 0;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vlen) != 0 || vlen != sizeof v ||
        v != SOCK_STREAM)
        return 0;
    vlen = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &vlen) != 0 || vlen != sizeof v ||
        v != IPPROTO_TCP)
        return 0;
    return 1;
}

static void set_tcp_nodelay(const scio_ifd_quirks *q, const char *when)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *e;
    int self, set = 0, failed = 0, err = 0;
    if (!dir) {
        scio_ifd_log(SCIO_IFD_LOG_ERROR,
                     "driver quirk %s: cannot list /proc/self/fd (errno %d): TCP_NODELAY "
                     "not set on port %d", q->driver, errno, q->tcp_port);
        return;
    }
    self = dirfd(dir);
    while ((e = readdir(dir)) != NULL) {
        char *end;
        long fd;
        int one = 1;
        errno = 0;
        fd = strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end || errno || fd < 0 || fd > INT_MAX || fd == self)
            continue;
        if (!is_driver_socket((int)fd, q->tcp_port))
            continue;
        if (setsockopt((int)fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0) {
            set++;
        } else {
            failed++;
            err = errno;
        }
    }
    closedir(dir);
    if (failed)
        scio_ifd_log(SCIO_IFD_LOG_ERROR,
                     "driver quirk %s (%s): TCP_NODELAY failed on %d socket(s) of port %d "
                     "(errno %d)", q->driver, when, failed, q->tcp_port, err);
    scio_ifd_log(PCSC_LOG_DEBUG, "driver quirk %s (%s): TCP_NODELAY set on %d socket(s) "
                 "of port %d", q->driver, when, set, q->tcp_port);
}
#endif

void scio_ifd_quirks_channel_opened(const scio_ifd_quirks *q)
{
#ifdef __linux__
    if (q->flags & SCIO_IFD_QUIRK_TCP_NODELAY)
        set_tcp_nodelay(q, "channel opened");
#else
    (void)q;
#endif
}

void scio_ifd_quirks_card_arrived(const scio_ifd_quirks *q)
{
#ifdef __linux__
    if (q->flags & SCIO_IFD_QUIRK_TCP_NODELAY)
        set_tcp_nodelay(q, "card arrived");
#else
    (void)q;
#endif
}
