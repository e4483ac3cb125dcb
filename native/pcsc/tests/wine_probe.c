/*
 * wine_probe.c - the PC/SC backend's Windows loading path, run under Wine
 * (tests/test_pcsc_wine.py): winscard.dll loads from System32 and every
 * entry point the backend needs (the A names) resolves.  Wine's winscard.dll
 * is a stub whose SCardEstablishContext fails, so nothing past that can run
 * here; the probe prints what listing and opening answered.
 */
#include <stdio.h>

#include "scio.h"

int main(void)
{
    char buf[256], err[256];
    size_t needed = 0;
    scio_device *d = NULL;
    scio_status st = scio_pcsc_list_readers(buf, sizeof buf, &needed, err, sizeof err);
    printf("list 0x%08X %s\n", (unsigned)st, err);
    st = scio_open_pcsc("Some Reader 0", NULL, NULL, &d, err, sizeof err);
    printf("open 0x%08X %s\n", (unsigned)st, err);
    if (d)
        scio_close(d);
    return 0;
}
