/*
 * slow_stop_driver.c - an IFD handler whose polling stop function blocks,
 * for the test that no driver call runs with the GIL held (a deallocator
 * that cancels a pending card-tracking request calls it).
 *
 * One reader, never a card: IS_PRESENT waits in the polling function until
 * stopped.  The stop function wakes the poll, then sleeps SLOW_STOP_MS
 * (from the environment; default 1500) before it returns.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ifd_abi.h"

#define EXPORT __attribute__((visibility("default")))

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stopped;

static IFD_RESPONSECODE poll_fn(IFD_DWORD lun, int timeout_ms)
{
    struct timespec until;
    (void)lun;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&m);
    while (!stopped && pthread_cond_timedwait(&cv, &m, &until) == 0) {
    }
    stopped = 0;
    pthread_mutex_unlock(&m);
    return IFD_SUCCESS;
}

static IFD_RESPONSECODE stop_fn(IFD_DWORD lun)
{
    const char *env = getenv("SLOW_STOP_MS");
    long ms = env ? atol(env) : 1500;
    struct timespec pause = { ms / 1000, (ms % 1000) * 1000000L };
    (void)lun;
    pthread_mutex_lock(&m);
    stopped = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&m);
    nanosleep(&pause, NULL);
    return IFD_SUCCESS;
}

static IFD_RESPONSECODE give(IFD_DWORD *len, IFD_UCHAR *value, const void *src, IFD_DWORD n)
{
    if (*len < n) {
        *len = n;
        return IFD_ERROR_INSUFFICIENT_BUFFER;
    }
    memcpy(value, src, n);
    *len = n;
    return IFD_SUCCESS;
}

EXPORT IFD_RESPONSECODE IFDHCreateChannelByName(IFD_DWORD Lun, char *DeviceName)
{
    (void)Lun;
    (void)DeviceName;
    return IFD_SUCCESS;
}

EXPORT IFD_RESPONSECODE IFDHCreateChannel(IFD_DWORD Lun, IFD_DWORD Channel)
{
    (void)Lun;
    (void)Channel;
    return IFD_SUCCESS;
}

EXPORT IFD_RESPONSECODE IFDHCloseChannel(IFD_DWORD Lun)
{
    (void)Lun;
    return IFD_SUCCESS;
}

EXPORT IFD_RESPONSECODE IFDHGetCapabilities(IFD_DWORD Lun, IFD_DWORD Tag,
                                            IFD_DWORD *Length, IFD_UCHAR *Value)
{
    ifdh_polling_fn poll = poll_fn;
    ifdh_stop_polling_fn stop = stop_fn;
    (void)Lun;
    if (Tag == IFD_TAG_POLLING_THREAD_WITH_TIMEOUT)
        return give(Length, Value, &poll, sizeof poll);
    if (Tag == IFD_TAG_STOP_POLLING_THREAD)
        return give(Length, Value, &stop, sizeof stop);
    return IFD_ERROR_TAG;
}

EXPORT IFD_RESPONSECODE IFDHSetCapabilities(IFD_DWORD Lun, IFD_DWORD Tag,
                                            IFD_DWORD Length, IFD_UCHAR *Value)
{
    (void)Lun; (void)Tag; (void)Length; (void)Value;
    return IFD_ERROR_TAG;
}

EXPORT IFD_RESPONSECODE IFDHSetProtocolParameters(IFD_DWORD Lun, IFD_DWORD Protocol,
                                                  IFD_UCHAR Flags, IFD_UCHAR PTS1,
                                                  IFD_UCHAR PTS2, IFD_UCHAR PTS3)
{
    (void)Lun; (void)Protocol; (void)Flags; (void)PTS1; (void)PTS2; (void)PTS3;
    return IFD_COMMUNICATION_ERROR;
}

EXPORT IFD_RESPONSECODE IFDHPowerICC(IFD_DWORD Lun, IFD_DWORD Action,
                                     IFD_UCHAR *Atr, IFD_DWORD *AtrLength)
{
    (void)Lun; (void)Action; (void)Atr;
    *AtrLength = 0;
    return IFD_COMMUNICATION_ERROR;
}

EXPORT IFD_RESPONSECODE IFDHTransmitToICC(IFD_DWORD Lun, IFD_SCARD_IO_HEADER SendPci,
                                          IFD_UCHAR *TxBuffer, IFD_DWORD TxLength,
                                          IFD_UCHAR *RxBuffer, IFD_DWORD *RxLength,
                                          IFD_SCARD_IO_HEADER *RecvPci)
{
    (void)Lun; (void)SendPci; (void)TxBuffer; (void)TxLength; (void)RxBuffer;
    (void)RecvPci;
    *RxLength = 0;
    return IFD_COMMUNICATION_ERROR;
}

EXPORT IFD_RESPONSECODE IFDHICCPresence(IFD_DWORD Lun)
{
    (void)Lun;
    return IFD_ICC_NOT_PRESENT;
}

EXPORT IFD_RESPONSECODE IFDHControl(IFD_DWORD Lun, IFD_DWORD ControlCode,
                                    IFD_UCHAR *TxBuffer, IFD_DWORD TxLength,
                                    IFD_UCHAR *RxBuffer, IFD_DWORD RxLength,
                                    IFD_DWORD *BytesReturned)
{
    (void)Lun; (void)ControlCode; (void)TxBuffer; (void)TxLength; (void)RxBuffer;
    (void)RxLength;
    *BytesReturned = 0;
    return IFD_ERROR_NOT_SUPPORTED;
}
