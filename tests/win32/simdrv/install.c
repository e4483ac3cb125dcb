/*
 * install.c - installs / removes the simulated reader as a root-enumerated
 * PnP device (the way Windows' devcon and Wine's own driver tests do):
 *
 *   simdrv_install install <path to simdrv.inf>
 *   simdrv_install remove
 *
 * install: a device information element ROOT\SCARDIO_SIM\0000 with the
 * hardware ID root\scardio_simrdr, DIF_REGISTERDEVICE, then
 * UpdateDriverForPlugAndPlayDevices with the .inf, which installs the service
 * and starts the device.  remove: DIF_REMOVE on every ROOT\SCARDIO_SIM\*.
 */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <setupapi.h>
#include <newdev.h>

#include <stdio.h>
#include <string.h>

static const char hardware_id[] = "root\\scardio_simrdr";
static const char instance_id[] = "ROOT\\SCARDIO_SIM\\0000";
static const char instance_prefix[] = "ROOT\\SCARDIO_SIM\\";
/* Setup class SmartCardReader {50DD5230-BA8A-11D1-BF5D-0000F805F530}. */
static const GUID reader_class = {
    0x50DD5230, 0xBA8A, 0x11D1,
    { 0xBF, 0x5D, 0x00, 0x00, 0xF8, 0x05, 0xF5, 0x30 }
};

static int do_install(const char *inf)
{
    SP_DEVINFO_DATA dev;
    char full[MAX_PATH];
    char ids[64];
    size_t n = strlen(hardware_id);
    BOOL reboot = FALSE;
    HDEVINFO set;
    DWORD len;

    len = GetFullPathNameA(inf, sizeof(full), full, NULL);
    if (len == 0 || len >= sizeof(full)) {
        fprintf(stderr, "install: bad inf path %s\n", inf);
        return 1;
    }
    /* REG_MULTI_SZ: the ID, its NUL, the list's NUL. */
    if (n + 2 > sizeof(ids))
        return 1;
    memset(ids, 0, sizeof(ids));
    memcpy(ids, hardware_id, n);

    set = SetupDiCreateDeviceInfoList(NULL, NULL);
    if (set == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "install: SetupDiCreateDeviceInfoList: %lu\n", GetLastError());
        return 1;
    }
    memset(&dev, 0, sizeof(dev));
    dev.cbSize = sizeof(dev);
    if (!SetupDiCreateDeviceInfoA(set, instance_id, &reader_class, NULL, NULL, 0, &dev)) {
        fprintf(stderr, "install: SetupDiCreateDeviceInfo: %lu\n", GetLastError());
        SetupDiDestroyDeviceInfoList(set);
        return 1;
    }
    if (!SetupDiSetDeviceRegistryPropertyA(set, &dev, SPDRP_HARDWAREID,
                                           (const BYTE *)ids, (DWORD)(n + 2))) {
        fprintf(stderr, "install: set hardware ID: %lu\n", GetLastError());
        SetupDiDestroyDeviceInfoList(set);
        return 1;
    }
    if (!SetupDiCallClassInstaller(DIF_REGISTERDEVICE, set, &dev)) {
        fprintf(stderr, "install: DIF_REGISTERDEVICE: %lu\n", GetLastError());
        SetupDiDestroyDeviceInfoList(set);
        return 1;
    }
    SetupDiDestroyDeviceInfoList(set);
    if (!UpdateDriverForPlugAndPlayDevicesA(NULL, hardware_id, full,
                                            INSTALLFLAG_FORCE, &reboot)) {
        fprintf(stderr, "install: UpdateDriverForPlugAndPlayDevices: %lu\n",
                GetLastError());
        return 1;
    }
    printf("installed %s (%s)%s\n", instance_id, hardware_id,
           reboot ? ", reboot requested" : "");
    return 0;
}

static int do_remove(void)
{
    SP_DEVINFO_DATA dev;
    HDEVINFO set;
    DWORD i;
    int removed = 0, failed = 0;

    set = SetupDiGetClassDevsA(NULL, "ROOT", NULL, DIGCF_ALLCLASSES);
    if (set == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "remove: SetupDiGetClassDevs: %lu\n", GetLastError());
        return 1;
    }
    for (i = 0; i < 100000; i++) {
        char id[256];
        memset(&dev, 0, sizeof(dev));
        dev.cbSize = sizeof(dev);
        if (!SetupDiEnumDeviceInfo(set, i, &dev))
            break;
        if (!SetupDiGetDeviceInstanceIdA(set, &dev, id, sizeof(id), NULL))
            continue;
        if (_strnicmp(id, instance_prefix, sizeof(instance_prefix) - 1) != 0)
            continue;
        if (SetupDiCallClassInstaller(DIF_REMOVE, set, &dev))
            removed++;
        else {
            fprintf(stderr, "remove: DIF_REMOVE %s: %lu\n", id, GetLastError());
            failed++;
        }
    }
    SetupDiDestroyDeviceInfoList(set);
    printf("removed %d device(s)\n", removed);
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "install") == 0)
        return do_install(argv[2]);
    if (argc == 2 && strcmp(argv[1], "remove") == 0)
        return do_remove();
    fprintf(stderr, "usage: simdrv_install install <inf> | remove\n");
    return 2;
}
