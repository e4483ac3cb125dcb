/*
 * ext_driver.c - a scripted IFD handler for the C tests of scardio's IFD
 * extensions (native/ifd/ifd_ext.h).  The test program sets what the
 * driver answers through the ext_* functions (it dlopens the same library
 * the core loads): the extension values, the card-event counts and card
 * presence, and a hold that makes IFDHICCPresence block (with the reader
 * lock held by the backend) until a control or ext_release() lets it go.
 * The card-event generation, when offered, is whatever the test last set:
 * it does not follow the counts by itself, so a test can show what reads
 * it (and what does not); the count and generation reads are counted.
 *
 * One reader; no card model (power-up gives a fixed ATR, transmit fails).
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "ifd_abi.h"
#include "ifd_ext.h"

#define EXPORT __attribute__((visibility("default")))

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int offer_events;
static uint32_t ev_ins, ev_rem;
static int present;
static int offer_unlocked;
static uint32_t unlocked[2];
static IFD_DWORD unlocked_len = 8;
static int offer_generation;
static uint32_t generation;
static unsigned count_reads, generation_reads; /* since ext_reads() */
static int hold;        /* IFDHICCPresence blocks while set */
static int held;        /* a presence call is blocked */

static void put_u32(IFD_UCHAR *p, uint32_t v)
{
    p[0] = (IFD_UCHAR)v; p[1] = (IFD_UCHAR)(v >> 8);
    p[2] = (IFD_UCHAR)(v >> 16); p[3] = (IFD_UCHAR)(v >> 24);
}

/* ---- test side ----------------------------------------------------------- */

EXPORT void ext_offer(int events, int unlocked_range, uint32_t first, uint32_t last,
                      unsigned long range_len);
EXPORT void ext_offer(int events, int unlocked_range, uint32_t first, uint32_t last,
                      unsigned long range_len)
{
    pthread_mutex_lock(&m);
    offer_events = events;
    offer_unlocked = unlocked_range;
    unlocked[0] = first;
    unlocked[1] = last;
    unlocked_len = (IFD_DWORD)range_len;
    pthread_mutex_unlock(&m);
}

EXPORT void ext_set_card(uint32_t insertions, uint32_t removals, int is_present);
EXPORT void ext_set_card(uint32_t insertions, uint32_t removals, int is_present)
{
    pthread_mutex_lock(&m);
    ev_ins = insertions;
    ev_rem = removals;
    present = is_present;
    pthread_mutex_unlock(&m);
}

EXPORT void ext_offer_generation(int on);
EXPORT void ext_offer_generation(int on)
{
    pthread_mutex_lock(&m);
    offer_generation = on;
    pthread_mutex_unlock(&m);
}

EXPORT void ext_set_generation(uint32_t g);
EXPORT void ext_set_generation(uint32_t g)
{
    pthread_mutex_lock(&m);
    generation = g;
    pthread_mutex_unlock(&m);
}

/* The count and generation reads since the last call (answered or not). */
EXPORT void ext_reads(unsigned *counts, unsigned *generations);
EXPORT void ext_reads(unsigned *counts, unsigned *generations)
{
    pthread_mutex_lock(&m);
    *counts = count_reads;
    *generations = generation_reads;
    count_reads = generation_reads = 0;
    pthread_mutex_unlock(&m);
}

EXPORT void ext_hold(void);
EXPORT void ext_hold(void)
{
    pthread_mutex_lock(&m);
    hold = 1;
    pthread_mutex_unlock(&m);
}

EXPORT void ext_release(void);
EXPORT void ext_release(void)
{
    pthread_mutex_lock(&m);
    hold = 0;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&m);
}

EXPORT int ext_held(void);
EXPORT int ext_held(void)
{
    int h;
    pthread_mutex_lock(&m);
    h = held;
    pthread_mutex_unlock(&m);
    return h;
}

/* ---- driver side --------------------------------------------------------- */

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
    IFD_RESPONSECODE rv = IFD_ERROR_TAG;
    IFD_UCHAR v[8];
    (void)Lun;
    pthread_mutex_lock(&m);
    if (Tag == IFD_TAG_THREAD_SAFE) {
        v[0] = 1;
        rv = give(Length, Value, v, 1);
    } else if (Tag == SCIO_IFD_TAG_CARD_EVENTS) {
        count_reads++;
        if (offer_events) {
            put_u32(v, ev_ins);
            put_u32(v + 4, ev_rem);
            rv = give(Length, Value, v, 8);
        }
    } else if (Tag == SCIO_IFD_TAG_CARD_EVENT_GENERATION) {
        generation_reads++;
        if (offer_events && offer_generation) {
            put_u32(v, generation);
            rv = give(Length, Value, v, 4);
        }
    } else if (Tag == SCIO_IFD_TAG_UNLOCKED_CONTROLS && offer_unlocked) {
        put_u32(v, unlocked[0]);
        put_u32(v + 4, unlocked[1]);
        rv = give(Length, Value, v, unlocked_len < 8 ? unlocked_len : 8);
    }
    pthread_mutex_unlock(&m);
    return rv;
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
    return IFD_SUCCESS;
}

EXPORT IFD_RESPONSECODE IFDHPowerICC(IFD_DWORD Lun, IFD_DWORD Action,
                                     IFD_UCHAR *Atr, IFD_DWORD *AtrLength)
{
    static const IFD_UCHAR atr[] = { 0x3B, 0x00 };
    (void)Lun;
    if (Action == IFD_POWER_DOWN) {
        *AtrLength = 0;
        return IFD_SUCCESS;
    }
    return give(AtrLength, Atr, atr, sizeof atr);
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
    int p;
    (void)Lun;
    pthread_mutex_lock(&m);
    held = hold;
    while (hold)
        pthread_cond_wait(&cv, &m);
    held = 0;
    p = present;
    pthread_mutex_unlock(&m);
    return p ? IFD_ICC_PRESENT : IFD_ICC_NOT_PRESENT;
}

/* Every control releases a held presence call. */
EXPORT IFD_RESPONSECODE IFDHControl(IFD_DWORD Lun, IFD_DWORD dwControlCode,
                                    IFD_UCHAR *TxBuffer, IFD_DWORD TxLength,
                                    IFD_UCHAR *RxBuffer, IFD_DWORD RxLength,
                                    IFD_DWORD *pdwBytesReturned)
{
    (void)Lun; (void)dwControlCode; (void)TxBuffer; (void)TxLength; (void)RxBuffer;
    (void)RxLength;
    ext_release();
    *pdwBytesReturned = 0;
    return IFD_SUCCESS;
}
