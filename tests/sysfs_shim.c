/*
 * sysfs_shim.c - LD_PRELOADed into a pcscd that runs in a private mount
 * namespace whose /sys is a tmpfs the tests fill with USB devices
 * (tests/usb_hotplug.py): libudev accepts a device directory only on sysfs,
 * so statfs answers "sysfs" for tmpfs.  Test-only; nothing else changes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/magic.h>
#include <sys/vfs.h>

#define SHIM(name, arg_t, buf_t)                                              \
    int name(arg_t a, buf_t *b)                                               \
    {                                                                         \
        static int (*real)(arg_t, buf_t *);                                   \
        int r;                                                                \
        if (!real)                                                            \
            *(void **)&real = dlsym(RTLD_NEXT, #name);                        \
        if (!real)                                                            \
            return -1;                                                        \
        r = real(a, b);                                                       \
        if (r == 0 && b->f_type == TMPFS_MAGIC)                               \
            b->f_type = SYSFS_MAGIC;                                          \
        return r;                                                             \
    }

SHIM(statfs, const char *, struct statfs)
SHIM(fstatfs, int, struct statfs)
SHIM(statfs64, const char *, struct statfs64)
SHIM(fstatfs64, int, struct statfs64)
