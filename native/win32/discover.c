/*
 * discover.c - list smart-card reader device interfaces on Windows.
 *
 * CM_Get_Device_Interface_ListW is the documented, cheap way; SetupAPI's
 * SetupDiGetClassDevsW / SetupDiEnumDeviceInterfaces /
 * SetupDiGetDeviceInterfaceDetailW is the fallback for systems where the
 * configuration manager fails or returns nothing (Wine 8.0 has stubs there).
 */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <cfgmgr32.h>
#include <setupapi.h>

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "scio_win32_discover.h"

#ifdef _MSC_VER
#pragma comment(lib, "cfgmgr32.lib")
#pragma comment(lib, "setupapi.lib")
#endif

/* {50DD5230-BA8A-11D1-BF5D-0000F805F530} */
static const GUID reader_guid = {
    0x50DD5230, 0xBA8A, 0x11D1,
    { 0xBF, 0x5D, 0x00, 0x00, 0xF8, 0x05, 0xF5, 0x30 }
};

/* A growing multi-string. */
typedef struct wlist {
    wchar_t *p;
    size_t len;   /* wchar_t used, without the final NUL */
    size_t cap;
    int count;
    int failed;
} wlist;

static void wlist_add(wlist *l, const wchar_t *s, size_t n)
{
    size_t want;
    if (l->failed || n == 0)
        return;
    /* room for the string, its NUL and the list's final NUL */
    if (n > ((size_t)-1) / sizeof(wchar_t) - l->len - 2) {
        l->failed = 1;
        return;
    }
    want = l->len + n + 2;
    if (want > l->cap) {
        size_t ncap = l->cap ? l->cap : 256;
        wchar_t *np;
        while (ncap < want)
            ncap *= 2;
        np = (wchar_t *)realloc(l->p, ncap * sizeof(wchar_t));
        if (!np) {
            l->failed = 1;
            return;
        }
        l->p = np;
        l->cap = ncap;
    }
    memcpy(l->p + l->len, s, n * sizeof(wchar_t));
    l->len += n;
    l->p[l->len++] = L'\0';
    l->count++;
}

static void from_cfgmgr(const GUID *guid, wlist *l)
{
    int tries;
    for (tries = 0; tries < 4; tries++) {
        ULONG size = 0, i;
        wchar_t *buf;
        CONFIGRET cr = CM_Get_Device_Interface_List_SizeW(
            &size, (LPGUID)guid, NULL, CM_GET_DEVICE_INTERFACE_LIST_PRESENT);
        if (cr != CR_SUCCESS || size <= 1)
            return;
        buf = (wchar_t *)calloc((size_t)size, sizeof(wchar_t));
        if (!buf)
            return;
        cr = CM_Get_Device_Interface_ListW((LPGUID)guid, NULL, buf, size,
                                           CM_GET_DEVICE_INTERFACE_LIST_PRESENT);
        if (cr == CR_BUFFER_SMALL) {     /* a device arrived meanwhile */
            free(buf);
            continue;
        }
        if (cr == CR_SUCCESS) {
            /* Walk within size, whatever the terminators say. */
            i = 0;
            while (i < size && buf[i] != L'\0') {
                ULONG start = i;
                while (i < size && buf[i] != L'\0')
                    i++;
                wlist_add(l, buf + start, (size_t)(i - start));
                i++;
            }
        }
        free(buf);
        return;
    }
}

static void from_setupapi(const GUID *guid, wlist *l)
{
    HDEVINFO set;
    DWORD index;
    set = SetupDiGetClassDevsW(guid, NULL, NULL,
                               DIGCF_PRESENT | DIGCF_DEVICEINTERFACE);
    if (set == INVALID_HANDLE_VALUE)
        return;
    for (index = 0; index < 4096; index++) {
        SP_DEVICE_INTERFACE_DATA ifd;
        SP_DEVICE_INTERFACE_DETAIL_DATA_W *detail;
        DWORD req = 0;
        size_t off = offsetof(SP_DEVICE_INTERFACE_DETAIL_DATA_W, DevicePath);
        size_t maxch, n;

        memset(&ifd, 0, sizeof(ifd));
        ifd.cbSize = sizeof(ifd);
        if (!SetupDiEnumDeviceInterfaces(set, NULL, guid, index, &ifd))
            break;                       /* ERROR_NO_MORE_ITEMS */
        if (!SetupDiGetDeviceInterfaceDetailW(set, &ifd, NULL, 0, &req, NULL)
            && GetLastError() != ERROR_INSUFFICIENT_BUFFER)
            continue;
        if (req < sizeof(SP_DEVICE_INTERFACE_DETAIL_DATA_W))
            req = sizeof(SP_DEVICE_INTERFACE_DETAIL_DATA_W);
        if (req > 65536)
            continue;
        detail = (SP_DEVICE_INTERFACE_DETAIL_DATA_W *)calloc(1, req);
        if (!detail) {
            l->failed = 1;
            break;
        }
        detail->cbSize = sizeof(SP_DEVICE_INTERFACE_DETAIL_DATA_W);
        if (SetupDiGetDeviceInterfaceDetailW(set, &ifd, detail, req, NULL,
                                             NULL)) {
            maxch = (req - off) / sizeof(wchar_t);
            for (n = 0; n < maxch && detail->DevicePath[n] != L'\0'; n++)
                ;
            wlist_add(l, detail->DevicePath, n);
        }
        free(detail);
    }
    SetupDiDestroyDeviceInfoList(set);
}

int scio_win32_list_interfaces(const GUID *guid, wchar_t *buf, size_t cap,
                               size_t *needed, int *source)
{
    wlist l;
    size_t need;
    int src = SCIO_WIN32_SOURCE_NONE, count;

    if (needed)
        *needed = 0;
    if (source)
        *source = SCIO_WIN32_SOURCE_NONE;
    if (!guid || (!buf && cap))
        return SCIO_WIN32_LIST_FAILED;
    memset(&l, 0, sizeof(l));
    from_cfgmgr(guid, &l);
    if (!l.failed && l.count > 0) {
        src = SCIO_WIN32_SOURCE_CFGMGR;
    } else {
        free(l.p);
        memset(&l, 0, sizeof(l));
        from_setupapi(guid, &l);
        if (l.count > 0)
            src = SCIO_WIN32_SOURCE_SETUPAPI;
    }
    if (l.failed) {
        free(l.p);
        return SCIO_WIN32_LIST_FAILED;
    }
    need = l.len + 1;
    if (needed)
        *needed = need;
    if (source)
        *source = src;
    if (cap < need) {
        free(l.p);
        return SCIO_WIN32_LIST_TOO_SMALL;
    }
    if (l.len)
        memcpy(buf, l.p, l.len * sizeof(wchar_t));
    buf[l.len] = L'\0';
    count = l.count;
    free(l.p);
    return count;
}

int scio_win32_list_readers(wchar_t *buf, size_t cap, size_t *needed)
{
    return scio_win32_list_interfaces(&reader_guid, buf, cap, needed, NULL);
}
