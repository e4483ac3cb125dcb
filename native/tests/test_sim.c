/*
 * test_sim.c - drives the simulated reader library through its IFDH entry
 * points, the way pcscd and the scardio core do.
 *
 * Build (from the repository root):
 *   gcc -O1 -g -Wall -Wextra -Werror -std=c11 -pthread -Inative -Inative/sim \
 *       -Inative/ifd native/tests/test_sim.c -o test_sim -ldl
 * Run:
 *   ./test_sim path/to/libscardio_sim.so     (or set SCARDIO_SIM_LIB)
 * Prints "N passed, N failed"; exits non-zero on any failure.
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ifd_abi.h"
#include "ifd_ext.h"
#include "sim_protocol.h"
#include "card.h"
#include "check.h"

/* ---- the library ------------------------------------------------------- */

static ifdh_create_channel_by_name_fn p_create_by_name;
static ifdh_create_channel_fn p_create;
static ifdh_close_channel_fn p_close;
static ifdh_get_capabilities_fn p_getcap;
static ifdh_set_capabilities_fn p_setcap;
static ifdh_set_protocol_parameters_fn p_setproto;
static ifdh_power_icc_fn p_power;
static ifdh_transmit_to_icc_fn p_transmit;
static ifdh_icc_presence_fn p_presence;
static ifdh_control_fn p_control;

static int load(void *h)
{
    LOAD(h, p_create_by_name, "IFDHCreateChannelByName");
    LOAD(h, p_create, "IFDHCreateChannel");
    LOAD(h, p_close, "IFDHCloseChannel");
    LOAD(h, p_getcap, "IFDHGetCapabilities");
    LOAD(h, p_setcap, "IFDHSetCapabilities");
    LOAD(h, p_setproto, "IFDHSetProtocolParameters");
    LOAD(h, p_power, "IFDHPowerICC");
    LOAD(h, p_transmit, "IFDHTransmitToICC");
    LOAD(h, p_presence, "IFDHICCPresence");
    LOAD(h, p_control, "IFDHControl");
    return 0;
}

/* ---- helpers ------------------------------------------------------------- */

#define CTL(n) ((IFD_DWORD)(0x42000000UL + (n)))

static const uint8_t ATR_T1[] = SIM_ATR_T1;
static const uint8_t ATR_T0[] = SIM_ATR_T0;
static const uint8_t AID[] = SIM_AID;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static void le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static IFD_RESPONSECODE ctl(IFD_DWORD lun, uint32_t n, const void *in, size_t in_len)
{
    IFD_DWORD ret = 99;
    uint8_t dummy[4];
    /* Cast away const: the ABI takes non-const buffers. */
    IFD_UCHAR *tx = (IFD_UCHAR *)(uintptr_t)in;
    return p_control(lun, CTL(n), in_len ? tx : NULL, in_len, dummy, 0, &ret);
}

static IFD_RESPONSECODE ctl_u32(IFD_DWORD lun, uint32_t n, uint32_t v)
{
    uint8_t b[4];
    le32(b, v);
    return ctl(lun, n, b, 4);
}

static IFD_RESPONSECODE insert_kind(IFD_DWORD lun, uint8_t kind)
{
    return ctl(lun, SIM_CTL_INSERT, &kind, 1);
}

static IFD_RESPONSECODE arm(IFD_DWORD lun, uint32_t ep, uint32_t kind, uint32_t value)
{
    uint8_t b[12];
    le32(b, ep);
    le32(b + 4, kind);
    le32(b + 8, value);
    return ctl(lun, SIM_CTL_FAULT, b, 12);
}

static int counters(IFD_DWORD lun, uint32_t *out)
{
    uint8_t b[4 * SIM_COUNTER_COUNT];
    IFD_DWORD ret = 0;
    size_t i;
    if (p_control(lun, CTL(SIM_CTL_COUNTERS), NULL, 0, b, sizeof(b), &ret) != IFD_SUCCESS
        || ret != sizeof(b))
        return -1;
    for (i = 0; i < SIM_COUNTER_COUNT; i++)
        out[i] = rd32(b + 4 * i);
    return 0;
}

/* One counter; note that reading counts a Control call. */
static uint32_t counter(IFD_DWORD lun, int idx)
{
    uint32_t v[SIM_COUNTER_COUNT];
    if (counters(lun, v) != 0)
        return 0xDEADBEEFu;
    return v[idx];
}

static IFD_RESPONSECODE power(IFD_DWORD lun, IFD_DWORD action, uint8_t *atr, IFD_DWORD *len)
{
    return p_power(lun, action, atr, len);
}

static IFD_RESPONSECODE power_up(IFD_DWORD lun)
{
    uint8_t atr[SIM_CARD_MAX_ATR];
    IFD_DWORD len = sizeof(atr);
    return p_power(lun, IFD_POWER_UP, atr, &len);
}

/* Response of the last xmit. */
static uint8_t g_resp[65544 + 16];
static IFD_DWORD g_resp_len;

static IFD_RESPONSECODE xmit_cap(IFD_DWORD lun, IFD_DWORD t, const uint8_t *apdu,
                                 size_t len, IFD_DWORD cap)
{
    IFD_SCARD_IO_HEADER send, recv;
    send.Protocol = t;
    send.Length = sizeof(send);
    recv.Protocol = 99;
    recv.Length = sizeof(recv);
    g_resp_len = cap;
    return p_transmit(lun, send, (IFD_UCHAR *)(uintptr_t)apdu, len, g_resp,
                      &g_resp_len, &recv);
}

static IFD_RESPONSECODE xmit(IFD_DWORD lun, IFD_DWORD t, const uint8_t *apdu, size_t len)
{
    return xmit_cap(lun, t, apdu, len, 65544);
}

static unsigned sw(void)
{
    if (g_resp_len < 2)
        return 0xFFFFFFFFu;
    return (unsigned)g_resp[g_resp_len - 2] << 8 | g_resp[g_resp_len - 1];
}

/* Send an APDU given as bytes; returns the SW (0 on a transport error). */
#define APDU(lun, t, ...) apdu_sw(lun, t, (const uint8_t[]){ __VA_ARGS__ }, \
                                  sizeof((const uint8_t[]){ __VA_ARGS__ }))

static unsigned apdu_sw(IFD_DWORD lun, IFD_DWORD t, const uint8_t *a, size_t len)
{
    IFD_RESPONSECODE rv = xmit(lun, t, a, len);
    if (rv != IFD_SUCCESS) {
        fprintf(stderr, "  transmit returned %ld\n", (long)rv);
        return 0;
    }
    return sw();
}

static IFD_RESPONSECODE getcap(IFD_DWORD lun, IFD_DWORD tag, uint8_t *buf, IFD_DWORD *len)
{
    return p_getcap(lun, tag, len, buf);
}

static ifdh_polling_fn get_poll_fn(IFD_DWORD lun)
{
    ifdh_polling_fn fn = NULL;
    uint8_t b[sizeof(void *) + 8];
    IFD_DWORD len = sizeof(b);
    if (getcap(lun, IFD_TAG_POLLING_THREAD_WITH_TIMEOUT, b, &len) != IFD_SUCCESS
        || len != sizeof(fn))
        return NULL;
    memcpy(&fn, b, sizeof(fn));
    return fn;
}

static ifdh_stop_polling_fn get_stop_fn(IFD_DWORD lun)
{
    ifdh_stop_polling_fn fn = NULL;
    uint8_t b[sizeof(void *) + 8];
    IFD_DWORD len = sizeof(b);
    if (getcap(lun, IFD_TAG_STOP_POLLING_THREAD, b, &len) != IFD_SUCCESS
        || len != sizeof(fn))
        return NULL;
    memcpy(&fn, b, sizeof(fn));
    return fn;
}

/* ---- tests: channels ----------------------------------------------------- */

static void test_channels(void)
{
    IFD_DWORD lun = 0x10000, len;
    uint8_t b[64];
    IFD_SCARD_IO_HEADER pci = { 1, 8 };
    IFD_DWORD rl = sizeof(b), ret;

    CHECK_EQ(p_create_by_name(lun, "usb:1234/5678:whatever"), IFD_SUCCESS);
    CHECK_EQ(p_create_by_name(lun, "again"), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(p_create(lun, 0x3F8), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(p_create_by_name(lun + 1, NULL), IFD_SUCCESS);   /* same reader, slot 1 */
    CHECK_EQ(p_create(lun + 2, 0), IFD_SUCCESS);
    CHECK_EQ(counter(lun, SIM_COUNTER_CALLS + SIM_EP_CREATE_CHANNEL), 1);
    CHECK_EQ(counter(lun, SIM_COUNTER_PRESENT), 0);           /* the card starts absent */
    CHECK_EQ(p_close(lun + 2), IFD_SUCCESS);
    CHECK_EQ(p_close(lun + 2), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(p_close(lun + 1), IFD_SUCCESS);

    /* Every entry point on an unknown LUN. */
    len = sizeof(b);
    CHECK_EQ(p_getcap(0x777, IFD_TAG_SLOTS_NUMBER, &len, b), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(p_setcap(0x777, IFD_TAG_SLOTS_NUMBER, 1, b), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(p_setproto(0x777, 2, 0, 0, 0, 0), IFD_NO_SUCH_DEVICE);
    len = sizeof(b);
    CHECK_EQ(p_power(0x777, IFD_POWER_UP, b, &len), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(p_transmit(0x777, pci, b, 4, b, &rl, NULL), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(p_presence(0x777), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(p_control(0x777, CTL(SIM_CTL_REMOVE), NULL, 0, b, sizeof(b), &ret), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(p_close(0x777), IFD_NO_SUCH_DEVICE);
    /* Keyed by the full value: a closed neighbour, and on LP64 the same low
     * 32 bits with a high bit set, are other LUNs. */
    CHECK_EQ(p_presence(lun + 1), IFD_NO_SUCH_DEVICE);
    if (sizeof(IFD_DWORD) > 4)
        CHECK_EQ(p_presence((IFD_DWORD)((uint64_t)lun | (uint64_t)1 << 40)), IFD_NO_SUCH_DEVICE);

    CHECK_EQ(p_close(lun), IFD_SUCCESS);
    /* A closed LUN can be opened again, fresh. */
    CHECK_EQ(p_create_by_name(lun, "x"), IFD_SUCCESS);
    CHECK_EQ(counter(lun, SIM_COUNTER_CALLS + SIM_EP_CONTROL), 1);
    CHECK_EQ(p_close(lun), IFD_SUCCESS);
}

/* ---- tests: capabilities ------------------------------------------------- */

static void test_capabilities(void)
{
    IFD_DWORD lun = 0x20000, len;
    uint8_t b[64];
    ifdh_polling_fn poll;

    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);

    len = sizeof(b);
    CHECK_EQ(getcap(lun, IFD_TAG_SLOTS_NUMBER, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 1);
    CHECK_EQ(b[0], 1);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, 0x0FAF, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 1);
    CHECK(b[0] >= 1);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, IFD_TAG_THREAD_SAFE, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 1);
    CHECK_EQ(b[0], 1);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, IFD_TAG_SLOT_THREAD_SAFE, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 1);
    CHECK_EQ(b[0], 0);

    len = sizeof(b);
    CHECK_EQ(getcap(lun, 0x00010100, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, strlen(SIM_VENDOR_NAME));
    CHECK(memcmp(b, SIM_VENDOR_NAME, strlen(SIM_VENDOR_NAME)) == 0);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, 0x00010101, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, strlen(SIM_IFD_TYPE));
    CHECK(memcmp(b, SIM_IFD_TYPE, strlen(SIM_IFD_TYPE)) == 0);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, 0x00010102, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 4);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, 0x7FFF0001, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 4);
    CHECK_EQ(rd32(b), lun);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, 0x00060150, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 4);
    CHECK_EQ(rd32(b), 0);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, 0x00080201, b, &len), IFD_SUCCESS);
    CHECK_EQ(rd32(b), 0);

    /* Too small: the needed length comes back, nothing is written. */
    memset(b, 0xA5, sizeof(b));
    len = 3;
    CHECK_EQ(getcap(lun, 0x00010101, b, &len), IFD_ERROR_INSUFFICIENT_BUFFER);
    CHECK_EQ(len, strlen(SIM_IFD_TYPE));
    CHECK_EQ(b[0], 0xA5);
    len = 0;
    CHECK_EQ(getcap(lun, IFD_TAG_SLOTS_NUMBER, b, &len), IFD_ERROR_INSUFFICIENT_BUFFER);
    len = sizeof(void *) - 1;
    CHECK_EQ(getcap(lun, IFD_TAG_POLLING_THREAD_WITH_TIMEOUT, b, &len),
             IFD_ERROR_INSUFFICIENT_BUFFER);
    len = 10;
    CHECK_EQ(p_getcap(lun, IFD_TAG_SLOTS_NUMBER, &len, NULL), IFD_ERROR_INSUFFICIENT_BUFFER);

    /* Unknown tags, and the polling tags pcscd does not get from us. */
    len = sizeof(b);
    CHECK_EQ(getcap(lun, 0x12345, b, &len), IFD_ERROR_TAG);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, IFD_TAG_POLLING_THREAD, b, &len), IFD_ERROR_TAG);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, IFD_TAG_POLLING_THREAD_KILLABLE, b, &len), IFD_ERROR_TAG);

    poll = get_poll_fn(lun);
    CHECK(poll != NULL);
    CHECK(get_stop_fn(lun) != NULL);

    /* ATR: empty while unpowered, the ATR once powered (both tags). */
    len = sizeof(b);
    CHECK_EQ(getcap(lun, IFD_TAG_ATR, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 0);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(power_up(lun), IFD_SUCCESS);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, IFD_TAG_ATR, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, sizeof(ATR_T1));
    CHECK(memcmp(b, ATR_T1, sizeof(ATR_T1)) == 0);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, 0x00090303, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, sizeof(ATR_T1));
    len = 17;
    CHECK_EQ(getcap(lun, IFD_TAG_ATR, b, &len), IFD_ERROR_INSUFFICIENT_BUFFER);

    /* scardio's extensions (ifd_ext.h): card-event counts since the
     * channel opened (one insertion so far), and the unlocked controls. */
    len = 7;
    CHECK_EQ(getcap(lun, SCIO_IFD_TAG_CARD_EVENTS, b, &len), IFD_ERROR_INSUFFICIENT_BUFFER);
    CHECK_EQ(len, 8);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, SCIO_IFD_TAG_CARD_EVENTS, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 8);
    CHECK_EQ(rd32(b), 1);
    CHECK_EQ(rd32(b + 4), 0);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, SCIO_IFD_TAG_UNLOCKED_CONTROLS, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 8);
    CHECK_EQ(rd32(b), 0x42000000u + SIM_CTL_FIRST);
    CHECK_EQ(rd32(b + 4), 0x42000000u + SIM_CTL_LAST);
    CHECK_EQ(SIM_CTL_FIRST, SIM_CTL_INSERT);
    CHECK_EQ(SIM_CTL_LAST, SIM_CTL_RESET_COUNTERS);
    len = sizeof(b);
    CHECK_EQ(getcap(lun, 0x0007A001, b, &len), IFD_ERROR_TAG); /* no other vendor tag */

    /* SetCapabilities: nothing is writable. */
    b[0] = 1;
    CHECK_EQ(p_setcap(lun, IFD_TAG_SLOTS_NUMBER, 1, b), IFD_ERROR_VALUE_READ_ONLY);
    CHECK_EQ(p_setcap(lun, 0x00010100, 1, b), IFD_ERROR_VALUE_READ_ONLY);
    CHECK_EQ(p_setcap(lun, SCIO_IFD_TAG_CARD_EVENTS, 8, b), IFD_ERROR_VALUE_READ_ONLY);
    CHECK_EQ(p_setcap(lun, SCIO_IFD_TAG_UNLOCKED_CONTROLS, 8, b), IFD_ERROR_VALUE_READ_ONLY);
    CHECK_EQ(p_setcap(lun, 0x4242, 1, b), IFD_ERROR_TAG);

    CHECK_EQ(p_close(lun), IFD_SUCCESS);
}

/* ---- tests: the card-event generation (ifd_ext.h) ------------------------ */

static int read_gen(IFD_DWORD lun, uint32_t *g)
{
    uint8_t b[8];
    IFD_DWORD len = sizeof(b);
    if (getcap(lun, SCIO_IFD_TAG_CARD_EVENT_GENERATION, b, &len) != IFD_SUCCESS || len != 4)
        return 0;
    *g = rd32(b);
    return 1;
}

static uint32_t count_sum(IFD_DWORD lun)
{
    uint8_t b[8];
    IFD_DWORD len = sizeof(b);
    if (getcap(lun, SCIO_IFD_TAG_CARD_EVENTS, b, &len) != IFD_SUCCESS || len != 8)
        return 0xFFFFFFFFu;
    return rd32(b) + rd32(b + 4);
}

/* One counter for the library, read through any LUN that offers it; moved
 * by every change of any LUN's counts, and by nothing else. */
static void test_event_generation(void)
{
    IFD_DWORD a = 0x20000, c = 0x20001, nogen = 0x20002, noev = 0x20003, len;
    uint32_t g0 = 0, g = 0, g2 = 0;
    uint8_t b[8];
    CHECK_EQ(p_create_by_name(a, "sim:a?nopoll"), IFD_SUCCESS);
    CHECK_EQ(p_create_by_name(c, "sim:c"), IFD_SUCCESS);
    CHECK_EQ(p_create_by_name(nogen, "sim:n?nopoll,nogeneration"), IFD_SUCCESS);
    CHECK_EQ(p_create_by_name(noev, "sim:e?noevents"), IFD_SUCCESS);
    CHECK(read_gen(a, &g0));
    CHECK(read_gen(c, &g) && g == g0);
    len = 3;
    CHECK_EQ(getcap(a, SCIO_IFD_TAG_CARD_EVENT_GENERATION, b, &len),
             IFD_ERROR_INSUFFICIENT_BUFFER);
    CHECK_EQ(len, 4);
    len = sizeof(b);
    CHECK_EQ(getcap(nogen, SCIO_IFD_TAG_CARD_EVENT_GENERATION, b, &len), IFD_ERROR_TAG);
    len = sizeof(b);
    CHECK_EQ(getcap(noev, SCIO_IFD_TAG_CARD_EVENT_GENERATION, b, &len), IFD_ERROR_TAG);
    CHECK(count_sum(nogen) == 0); /* its counts are there */
    CHECK_EQ(p_setcap(a, SCIO_IFD_TAG_CARD_EVENT_GENERATION, 4, b), IFD_ERROR_VALUE_READ_ONLY);

    /* Calls that change no count leave it; each change of a count moves it. */
    CHECK_EQ(power_up(a), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(ctl(a, SIM_CTL_REMOVE, NULL, 0), IFD_SUCCESS); /* no card: no event */
    CHECK(read_gen(a, &g) && g == g0);
    CHECK_EQ(insert_kind(c, SIM_CARD_T1), IFD_SUCCESS);
    CHECK(read_gen(a, &g) && g == g0 + 1);
    CHECK_EQ(power_up(c), IFD_SUCCESS);
    CHECK(read_gen(a, &g2) && g2 == g);
    CHECK_EQ(insert_kind(c, SIM_CARD_T0), IFD_SUCCESS); /* a swap: both counts */
    CHECK(read_gen(c, &g2) && g2 != g);
    CHECK_EQ(ctl(c, SIM_CTL_REMOVE, NULL, 0), IFD_SUCCESS);
    CHECK(read_gen(a, &g) && g != g2);
    /* a LUN without the generation still moves it for the others */
    CHECK_EQ(insert_kind(nogen, SIM_CARD_T1), IFD_SUCCESS);
    CHECK(read_gen(a, &g2) && g2 != g);
    /* read while the GET_CAPABILITIES path is slow (latency): the same */
    CHECK_EQ(ctl_u32(a, SIM_CTL_SET_LATENCY, 100), IFD_SUCCESS);
    CHECK(read_gen(a, &g) && g == g2);
    CHECK_EQ(ctl_u32(a, SIM_CTL_SET_LATENCY, 0), IFD_SUCCESS);

    CHECK_EQ(p_close(a), IFD_SUCCESS);
    len = sizeof(b);
    CHECK_EQ(getcap(a, SCIO_IFD_TAG_CARD_EVENT_GENERATION, b, &len), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(p_close(c), IFD_SUCCESS);
    CHECK_EQ(p_close(nogen), IFD_SUCCESS);
    CHECK_EQ(p_close(noev), IFD_SUCCESS);
}

/* The ordering a host relies on, with cards coming and going on another
 * thread: counts read after a generation read are at least as new as that
 * generation says (here one LUN makes every change, one count each). */
struct gen_race {
    IFD_DWORD lun;
    int rounds;
};

static void *gen_toggler(void *arg)
{
    struct gen_race *r = arg;
    int i;
    for (i = 0; i < r->rounds; i++)
        (void)ctl(r->lun, i % 2 == 0 ? SIM_CTL_INSERT : SIM_CTL_REMOVE, NULL, 0);
    return NULL;
}

static void test_event_generation_race(void)
{
    struct gen_race r = { 0x20010, 2000 };
    IFD_DWORD via = 0x20011;
    uint32_t g0 = 0, sum0, g = 0, sum;
    int bad = 0, reads = 0;
    pthread_t th;
    CHECK_EQ(p_create_by_name(r.lun, "sim:t?nopoll"), IFD_SUCCESS);
    CHECK_EQ(p_create_by_name(via, "sim:v?nopoll"), IFD_SUCCESS);
    CHECK(read_gen(via, &g0));
    sum0 = count_sum(r.lun);
    CHECK_EQ(pthread_create(&th, NULL, gen_toggler, &r), 0);
    for (;;) {
        int ok = read_gen(via, &g);
        sum = count_sum(r.lun);
        reads++;
        if (!ok || sum == 0xFFFFFFFFu || sum - sum0 < g - g0)
            bad++;
        if (sum - sum0 >= (uint32_t)r.rounds)
            break;
    }
    pthread_join(th, NULL);
    CHECK(read_gen(via, &g) && g - g0 == (uint32_t)r.rounds);
    CHECK_EQ(bad, 0);
    CHECK(reads > 0);
    CHECK_EQ(p_close(r.lun), IFD_SUCCESS);
    CHECK_EQ(p_close(via), IFD_SUCCESS);
}

/* ---- tests: power, protocol, presence, transmit -------------------------- */

static void test_power_protocol(void)
{
    IFD_DWORD lun = 0x30000, len;
    uint8_t atr[64];
    uint32_t c[SIM_COUNTER_COUNT];
    static const uint8_t sel_mf[] = { 0x00, 0xA4, 0x00, 0x00, 0x02, 0x3F, 0x00 };

    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    len = sizeof(atr);
    CHECK_EQ(power(lun, IFD_POWER_UP, atr, &len), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(len, 0);
    len = sizeof(atr);
    CHECK_EQ(power(lun, IFD_RESET, atr, &len), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(p_setproto(lun, 2, 0, 0, 0, 0), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(xmit(lun, 1, sel_mf, sizeof(sel_mf)), IFD_ICC_NOT_PRESENT);

    CHECK_EQ(ctl(lun, SIM_CTL_INSERT, NULL, 0), IFD_SUCCESS);     /* default T=1 */
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
    CHECK_EQ(p_setproto(lun, 2, 0, 0, 0, 0), IFD_COMMUNICATION_ERROR);  /* unpowered */
    CHECK_EQ(xmit(lun, 1, sel_mf, sizeof(sel_mf)), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(counter(lun, SIM_COUNTER_POWERED), 0);

    /* Buffer too small: error, needed length back, card stays unpowered. */
    memset(atr, 0xA5, sizeof(atr));
    len = 10;
    CHECK_EQ(power(lun, IFD_POWER_UP, atr, &len), IFD_ERROR_INSUFFICIENT_BUFFER);
    CHECK_EQ(len, sizeof(ATR_T1));
    CHECK_EQ(atr[0], 0xA5);
    CHECK_EQ(counter(lun, SIM_COUNTER_POWERED), 0);

    len = SIM_CARD_MAX_ATR;
    CHECK_EQ(power(lun, IFD_POWER_UP, atr, &len), IFD_SUCCESS);
    CHECK_EQ(len, sizeof(ATR_T1));
    CHECK(memcmp(atr, ATR_T1, sizeof(ATR_T1)) == 0);
    CHECK_EQ(atr[sizeof(ATR_T1)], 0xA5);
    len = sizeof(ATR_T1);                           /* exact fit */
    CHECK_EQ(power(lun, IFD_RESET, atr, &len), IFD_SUCCESS);
    CHECK_EQ(len, sizeof(ATR_T1));
    len = sizeof(atr);
    CHECK_EQ(power(lun, 499, atr, &len), IFD_ERROR_NOT_SUPPORTED);

    CHECK_EQ(counters(lun, c), 0);
    CHECK_EQ(c[SIM_COUNTER_POWER_UPS], 1);
    CHECK_EQ(c[SIM_COUNTER_RESETS], 1);
    CHECK_EQ(c[SIM_COUNTER_POWERED], 1);
    CHECK_EQ(c[SIM_COUNTER_PRESENT], 1);
    CHECK_EQ(c[SIM_COUNTER_PROTOCOL], 0);

    /* Protocols: a T=1 card offers T=1 only. */
    CHECK_EQ(p_setproto(lun, 1, 0, 0, 0, 0), IFD_PROTOCOL_NOT_SUPPORTED);
    CHECK_EQ(p_setproto(lun, 3, 0, 0, 0, 0), IFD_PROTOCOL_NOT_SUPPORTED);
    CHECK_EQ(p_setproto(lun, 4, 0, 0, 0, 0), IFD_PROTOCOL_NOT_SUPPORTED);
    CHECK_EQ(p_setproto(lun, 2, IFD_NEGOTIATE_PTS1, 0x13, 0, 0), IFD_SUCCESS);
    CHECK_EQ(counter(lun, SIM_COUNTER_PROTOCOL), 2);
    len = sizeof(atr);
    CHECK_EQ(getcap(lun, 0x00080201, atr, &len), IFD_SUCCESS);
    CHECK_EQ(rd32(atr), 2);

    /* Transmit: SendPci.Protocol is the T number, RecvPci optional. */
    CHECK_EQ(xmit(lun, 0, sel_mf, sizeof(sel_mf)), IFD_PROTOCOL_NOT_SUPPORTED);
    CHECK_EQ(xmit(lun, 2, sel_mf, sizeof(sel_mf)), IFD_PROTOCOL_NOT_SUPPORTED);
    CHECK_EQ(xmit(lun, 1, sel_mf, sizeof(sel_mf)), IFD_SUCCESS);
    CHECK_EQ(sw(), 0x9000);
    {
        IFD_SCARD_IO_HEADER s = { 1, 8 }, r = { 77, 8 };
        IFD_DWORD rl = 2;
        uint8_t out[8];
        memset(out, 0xA5, sizeof(out));
        CHECK_EQ(p_transmit(lun, s, (IFD_UCHAR *)(uintptr_t)sel_mf, sizeof(sel_mf), out, &rl, NULL),
                 IFD_SUCCESS);
        CHECK_EQ(rl, 2);
        CHECK_EQ(out[0], 0x90);
        CHECK_EQ(out[2], 0xA5);
        rl = sizeof(out);
        CHECK_EQ(p_transmit(lun, s, (IFD_UCHAR *)(uintptr_t)sel_mf, sizeof(sel_mf), out, &rl, &r),
                 IFD_SUCCESS);
        CHECK_EQ(r.Protocol, 1);
        /* Too small: nothing written, needed length back. */
        rl = 1;
        memset(out, 0xA5, sizeof(out));
        CHECK_EQ(p_transmit(lun, s, (IFD_UCHAR *)(uintptr_t)sel_mf, sizeof(sel_mf), out, &rl, &r),
                 IFD_ERROR_INSUFFICIENT_BUFFER);
        CHECK_EQ(rl, 2);
        CHECK_EQ(out[0], 0xA5);
        rl = 8;
        CHECK_EQ(p_transmit(lun, s, NULL, 4, out, &rl, &r), IFD_COMMUNICATION_ERROR);
        CHECK_EQ(p_transmit(lun, s, out, 4, out, NULL, &r), IFD_COMMUNICATION_ERROR);
    }

    /* Power-up clears the protocol; Transmit then uses the ATR's first. */
    CHECK_EQ(power_up(lun), IFD_SUCCESS);
    CHECK_EQ(counter(lun, SIM_COUNTER_PROTOCOL), 0);
    CHECK_EQ(xmit(lun, 1, sel_mf, sizeof(sel_mf)), IFD_SUCCESS);
    CHECK_EQ(counter(lun, SIM_COUNTER_PROTOCOL), 2);

    /* Power down. */
    len = sizeof(atr);
    CHECK_EQ(power(lun, IFD_POWER_DOWN, atr, &len), IFD_SUCCESS);
    CHECK_EQ(len, 0);
    CHECK_EQ(counters(lun, c), 0);
    CHECK_EQ(c[SIM_COUNTER_POWER_DOWNS], 1);
    CHECK_EQ(c[SIM_COUNTER_POWERED], 0);
    CHECK_EQ(c[SIM_COUNTER_PROTOCOL], 0);
    CHECK_EQ(xmit(lun, 1, sel_mf, sizeof(sel_mf)), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(p_power(lun, IFD_POWER_DOWN, NULL, NULL), IFD_COMMUNICATION_ERROR);

    /* T=0 card: T=0 only. */
    CHECK_EQ(insert_kind(lun, SIM_CARD_T0), IFD_SUCCESS);
    len = sizeof(atr);
    CHECK_EQ(power(lun, IFD_POWER_UP, atr, &len), IFD_SUCCESS);
    CHECK_EQ(len, sizeof(ATR_T0));
    CHECK(memcmp(atr, ATR_T0, sizeof(ATR_T0)) == 0);
    CHECK_EQ(p_setproto(lun, 2, 0, 0, 0, 0), IFD_PROTOCOL_NOT_SUPPORTED);
    CHECK_EQ(xmit(lun, 1, sel_mf, sizeof(sel_mf)), IFD_PROTOCOL_NOT_SUPPORTED);
    CHECK_EQ(xmit(lun, 0, sel_mf, sizeof(sel_mf)), IFD_SUCCESS);   /* implicit T=0 */
    CHECK_EQ(counter(lun, SIM_COUNTER_PROTOCOL), 1);
    CHECK_EQ(p_setproto(lun, 1, 0, 0, 0, 0), IFD_SUCCESS);

    /* Explicit ATR offering T=0 (TD1) and T=1 (TD2). */
    {
        static const uint8_t both[] = { 0x3B, 0x80, 0x80, 0x01, 0x01 };
        CHECK_EQ(ctl(lun, SIM_CTL_INSERT, both, sizeof(both)), IFD_SUCCESS);
        len = sizeof(atr);
        CHECK_EQ(power(lun, IFD_POWER_UP, atr, &len), IFD_SUCCESS);
        CHECK_EQ(len, sizeof(both));
        CHECK(memcmp(atr, both, sizeof(both)) == 0);
        CHECK_EQ(p_setproto(lun, 1, 0, 0, 0, 0), IFD_SUCCESS);
        CHECK_EQ(p_setproto(lun, 2, 0, 0, 0, 0), IFD_SUCCESS);
        CHECK_EQ(power_up(lun), IFD_SUCCESS);
        CHECK_EQ(xmit(lun, 0, sel_mf, sizeof(sel_mf)), IFD_SUCCESS);  /* TD1: T=0 */
    }
    /* A truncated ATR claiming a TD1 it lacks: parsed within its length. */
    {
        static const uint8_t trunc[] = { 0x3B, 0xF0 };
        CHECK_EQ(ctl(lun, SIM_CTL_INSERT, trunc, sizeof(trunc)), IFD_SUCCESS);
        CHECK_EQ(power_up(lun), IFD_SUCCESS);
        CHECK_EQ(p_setproto(lun, 2, 0, 0, 0, 0), IFD_PROTOCOL_NOT_SUPPORTED);
    }

    /* Removal while powered. */
    CHECK_EQ(ctl(lun, SIM_CTL_REMOVE, NULL, 0), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(counters(lun, c), 0);
    CHECK_EQ(c[SIM_COUNTER_POWERED], 0);
    CHECK_EQ(c[SIM_COUNTER_PRESENT], 0);
    CHECK_EQ(ctl(lun, SIM_CTL_REMOVE, NULL, 0), IFD_SUCCESS);     /* idempotent */
    CHECK_EQ(counter(lun, SIM_COUNTER_REMOVALS), c[SIM_COUNTER_REMOVALS]);

    CHECK_EQ(p_close(lun), IFD_SUCCESS);
}

/* ---- tests: card model --------------------------------------------------- */

static unsigned select_aid(IFD_DWORD lun, IFD_DWORD t)
{
    uint8_t a[5 + SIM_AID_LEN];
    a[0] = 0x00; a[1] = 0xA4; a[2] = 0x04; a[3] = 0x00; a[4] = SIM_AID_LEN;
    memcpy(a + 5, AID, SIM_AID_LEN);
    return apdu_sw(lun, t, a, sizeof(a));
}

static void test_card_t1(void)
{
    IFD_DWORD lun = 0x40000;
    uint8_t first_challenge[8];
    static uint8_t big[4 + 3 + 65535 + 2];
    size_t i;
    int ok;

    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(power_up(lun), IFD_SUCCESS);
    CHECK_EQ(p_setproto(lun, 2, 0, 0, 0, 0), IFD_SUCCESS);

    /* GET CHALLENGE first: deterministic from a fresh card. */
    CHECK_EQ(APDU(lun, 1, 0x00, 0x84, 0x00, 0x00, 0x08), 0x9000);
    CHECK_EQ(g_resp_len, 10);
    memcpy(first_challenge, g_resp, 8);
    CHECK_EQ(APDU(lun, 1, 0x00, 0x84, 0x00, 0x00, 0x08), 0x9000);
    CHECK(memcmp(first_challenge, g_resp, 8) != 0);
    CHECK_EQ(APDU(lun, 1, 0x00, 0x84, 0x00, 0x01, 0x08), 0x6A86);
    CHECK_EQ(APDU(lun, 1, 0x00, 0x84, 0x00, 0x00), 0x6700);
    CHECK_EQ(APDU(lun, 1, 0x00, 0x84, 0x00, 0x00, 0x00), 0x9000);
    CHECK_EQ(g_resp_len, 258);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);   /* fresh card */
    CHECK_EQ(power_up(lun), IFD_SUCCESS);
    /* A response that does not fit changes nothing on the card. */
    {
        static const uint8_t gc[] = { 0x00, 0x84, 0x00, 0x00, 0x08 };
        CHECK_EQ(xmit_cap(lun, 1, gc, sizeof(gc), 9), IFD_ERROR_INSUFFICIENT_BUFFER);
        CHECK_EQ(g_resp_len, 10);
    }
    CHECK_EQ(APDU(lun, 1, 0x00, 0x84, 0x00, 0x00, 0x08), 0x9000);
    CHECK(memcmp(first_challenge, g_resp, 8) == 0);

    /* Header and class checks. */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00), 0x6700);
    CHECK_EQ(xmit(lun, 1, NULL, 0), IFD_SUCCESS);
    CHECK_EQ(sw(), 0x6700);
    CHECK_EQ(APDU(lun, 1, 0xFF, 0xA4, 0x00, 0x00), 0x6E00);
    CHECK_EQ(APDU(lun, 1, 0x20, 0xA4, 0x00, 0x00), 0x6E00);
    CHECK_EQ(APDU(lun, 1, 0xA0, 0xA4, 0x00, 0x00), 0x6E00);
    CHECK_EQ(APDU(lun, 1, 0xC0, 0xEE, 0x00, 0x00), 0x6E00);
    CHECK_EQ(APDU(lun, 1, 0x01, 0xA4, 0x00, 0x00), 0x6881);
    CHECK_EQ(APDU(lun, 1, 0x40, 0xA4, 0x00, 0x00), 0x6881);
    CHECK_EQ(APDU(lun, 1, 0x04, 0xA4, 0x00, 0x00), 0x6882);
    CHECK_EQ(APDU(lun, 1, 0x10, 0xA4, 0x00, 0x00), 0x6884);
    CHECK_EQ(APDU(lun, 1, 0x81, 0xEE, 0x00, 0x00), 0x6881);
    CHECK_EQ(APDU(lun, 1, 0x00, 0x12, 0x00, 0x00), 0x6D00);
    CHECK_EQ(APDU(lun, 1, 0x80, 0x12, 0x00, 0x00), 0x6D00);
    CHECK_EQ(APDU(lun, 1, 0x80, 0xA4, 0x00, 0x00), 0x6D00);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xEE, 0x00, 0x00), 0x6D00);

    /* Malformed lengths. */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x03, 0x3F, 0x00), 0x6700);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x01, 0x3F, 0x00, 0x00, 0x00), 0x6700);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x00, 0x00), 0x6700);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x00, 0x00), 0x6700);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3F), 0x6700); /* Nc 0 */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x00, 0x00, 0x02, 0x3F), 0x6700);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x00, 0x00, 0x02, 0x3F, 0x00, 0x00), 0x6700);

    /* SELECT. */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x10), 0x6986);   /* no EF yet */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x02, 0x3F, 0x00), 0x9000);
    CHECK_EQ(g_resp_len, 2);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00), 0x9000);          /* empty: MF */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x01, 0x01), 0x6A82);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x02, 0x12, 0x34), 0x6A82);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x02, 0x00, 0x02, 0x2F, 0x01), 0x6A86);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x01, 0x02, 0x2F, 0x01), 0x6A86);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x01, 0x2F), 0x6700);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x04, 0x02, 0x2F, 0x01, 0x00), 0x9000); /* case 4 */
    CHECK_EQ(g_resp_len, 2);

    /* READ BINARY on EF 2F01. */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x10), 0x9000);
    CHECK_EQ(g_resp_len, 18);
    for (ok = 1, i = 0; i < 16; i++)
        ok &= g_resp[i] == i;
    CHECK(ok);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x01, 0x05, 0x02), 0x9000);
    CHECK_EQ(g_resp[0], 0x05);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x00), 0x9000);   /* Le 00 = 256 */
    CHECK_EQ(g_resp_len, 258);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x0F, 0xFA, 0x10), 0x6282);   /* 6 left */
    CHECK_EQ(g_resp_len, 8);
    CHECK_EQ(g_resp[0], 0xFA);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x10, 0x00, 0x01), 0x6B00);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x7F, 0xFF, 0x01), 0x6B00);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x81, 0x00, 0x01), 0x6A86);   /* SFI */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00), 0x6700);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x01, 0xAA, 0x01), 0x6700);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x00, 0x10, 0x00), 0x9000); /* 2E */
    CHECK_EQ(g_resp_len, 4098);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x00), 0x6282); /* 65536 */
    CHECK_EQ(g_resp_len, 4098);

    /* UPDATE BINARY. */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xD6, 0x00, 0x0A, 0x03, 0xDE, 0xAD, 0xBE), 0x9000);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x09, 0x05), 0x9000);
    CHECK_EQ(g_resp[0], 0x09);
    CHECK_EQ(g_resp[1], 0xDE);
    CHECK_EQ(g_resp[3], 0xBE);
    CHECK_EQ(g_resp[4], 0x0D);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xD6, 0x0F, 0xFF, 0x02, 0x01, 0x02), 0x6A84);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xD6, 0x10, 0x00, 0x01, 0x01), 0x6B00);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xD6, 0x00, 0x00), 0x6700);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xD6, 0x80, 0x00, 0x01, 0x01), 0x6A86);
    /* Extended UPDATE of the whole file, read back. */
    big[0] = 0x00; big[1] = 0xD6; big[2] = 0; big[3] = 0; big[4] = 0;
    big[5] = (uint8_t)(SIM_EF_SIZE >> 8); big[6] = (uint8_t)SIM_EF_SIZE;
    for (i = 0; i < SIM_EF_SIZE; i++)
        big[7 + i] = (uint8_t)(0xFF - (i & 0xFF));
    CHECK_EQ(apdu_sw(lun, 1, big, 7 + SIM_EF_SIZE), 0x9000);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x00, 0x10, 0x00), 0x9000);
    CHECK(memcmp(g_resp, big + 7, SIM_EF_SIZE) == 0);

    /* The application. */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x04, 0x00, 0x03, 0xF0, 0x73, 0x63), 0x6A82);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x04, 0x00), 0x6700);
    CHECK_EQ(select_aid(lun, 1), 0x9000);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x01), 0x6986);   /* DF, no EF */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x02, 0x2F, 0x01), 0x6A82);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x02, 0x01, 0x01), 0x9000);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x04), 0x9000);
    CHECK_EQ(g_resp[3], 0x03);                       /* untouched by the update */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x02, 0x12, 0x34), 0x6A82);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x01), 0x9000);   /* selection kept */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x02, 0x3F, 0x00), 0x9000);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xA4, 0x00, 0x00, 0x02, 0x2F, 0x01), 0x9000);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x01), 0x9000);
    CHECK_EQ(g_resp[0], 0xFF);                       /* EF 2F01 kept its update */
    /* Reset forgets the selection. */
    CHECK_EQ(power_up(lun), IFD_SUCCESS);
    CHECK_EQ(APDU(lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x01), 0x6986);

    /* ECHO. */
    CHECK_EQ(APDU(lun, 1, 0x80, 0xEE, 0x00, 0x00), 0x9000);
    CHECK_EQ(g_resp_len, 2);
    CHECK_EQ(APDU(lun, 1, 0x80, 0xEE, 0x12, 0x34, 0x05), 0x9000);
    CHECK_EQ(g_resp_len, 7);
    CHECK(memcmp(g_resp, "\x00\x01\x02\x03\x04", 5) == 0);
    CHECK_EQ(APDU(lun, 1, 0x80, 0xEE, 0x00, 0x00, 0x00), 0x9000);
    CHECK_EQ(g_resp_len, 258);
    CHECK_EQ(g_resp[255], 0xFF);
    CHECK_EQ(APDU(lun, 1, 0x80, 0xEE, 0x00, 0x00, 0x02, 0xAA, 0xBB), 0x9000);  /* case 3 */
    CHECK_EQ(g_resp_len, 2);
    CHECK_EQ(APDU(lun, 1, 0x80, 0xEE, 0x00, 0x00, 0x03, 1, 2, 3, 0x07), 0x9000);
    CHECK_EQ(g_resp_len, 9);
    CHECK(memcmp(g_resp, "\x01\x02\x03\x01\x02\x03\x01", 7) == 0);
    CHECK_EQ(APDU(lun, 1, 0x80, 0xEE, 0x00, 0x00, 0x00, 0xFF, 0xFF), 0x9000);  /* 2E */
    CHECK_EQ(g_resp_len, 65537);
    CHECK_EQ(g_resp[65534], 0xFE);
    CHECK_EQ(APDU(lun, 1, 0x80, 0xEE, 0x00, 0x00, 0x00, 0x00, 0x00), 0x9000);  /* 65536 */
    CHECK_EQ(g_resp_len, 65537);
    CHECK_EQ(APDU(lun, 1, 0x80, 0xEE, 0x00, 0x00, 0x00, 0x00, 0x02, 0x5A, 0xA5, 0x00, 0x00), 0x9000);
    CHECK_EQ(g_resp_len, 65537);
    CHECK_EQ(g_resp[65533], 0xA5);
    CHECK_EQ(g_resp[65534], 0x5A);
    /* Case 4E with 65535 bytes of data echoed back in full. */
    big[0] = 0x80; big[1] = 0xEE; big[2] = 0; big[3] = 0; big[4] = 0;
    big[5] = 0xFF; big[6] = 0xFF;
    for (i = 0; i < 65535; i++)
        big[7 + i] = (uint8_t)(i * 7 + 3);
    big[7 + 65535] = 0x00;
    big[8 + 65535] = 0x00;
    CHECK_EQ(apdu_sw(lun, 1, big, sizeof(big)), 0x9000);
    CHECK_EQ(g_resp_len, 65537);
    CHECK(memcmp(g_resp, big + 7, 65535) == 0);
    /* Exactly fitting and one short. */
    CHECK_EQ(xmit_cap(lun, 1, big, sizeof(big), 65537), IFD_SUCCESS);
    CHECK_EQ(g_resp_len, 65537);
    g_resp[0] = 0x11;
    CHECK_EQ(xmit_cap(lun, 1, big, sizeof(big), 65536), IFD_ERROR_INSUFFICIENT_BUFFER);
    CHECK_EQ(g_resp_len, 65537);
    CHECK_EQ(g_resp[0], 0x11);
    /* Case 3E. */
    CHECK_EQ(apdu_sw(lun, 1, big, sizeof(big) - 2), 0x9000);
    CHECK_EQ(g_resp_len, 2);

    /* GET RESPONSE has nothing to give on T=1. */
    CHECK_EQ(APDU(lun, 1, 0x00, 0xC0, 0x00, 0x00, 0x10), 0x6985);

    CHECK_EQ(p_close(lun), IFD_SUCCESS);
}

static void test_card_t0(void)
{
    IFD_DWORD lun = 0x50000;
    size_t i;
    int ok;

    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T0), IFD_SUCCESS);
    CHECK_EQ(power_up(lun), IFD_SUCCESS);
    CHECK_EQ(p_setproto(lun, 1, 0, 0, 0, 0), IFD_SUCCESS);

    /* Case 4: 61xx then GET RESPONSE. */
    CHECK_EQ(APDU(lun, 0, 0x80, 0xEE, 0x00, 0x00, 0x03, 1, 2, 3, 0x07), 0x6107);
    CHECK_EQ(g_resp_len, 2);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x07), 0x9000);
    CHECK_EQ(g_resp_len, 9);
    CHECK(memcmp(g_resp, "\x01\x02\x03\x01\x02\x03\x01", 7) == 0);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x07), 0x6985);   /* consumed */

    /* 256 bytes pending, read in two parts; Le too long gives 6Cxx. */
    CHECK_EQ(APDU(lun, 0, 0x80, 0xEE, 0x00, 0x00, 0x01, 0x42, 0x00), 0x6100);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x10), 0x61F0);
    CHECK_EQ(g_resp_len, 18);
    CHECK_EQ(g_resp[0], 0x42);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x01, 0xF0), 0x6A86);   /* keeps pending */
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x00), 0x6700);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x00), 0x6CF0);   /* 256 > 240 */
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x00, 0xF1), 0x6CF0);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x00, 0xF0), 0x9000);
    CHECK_EQ(g_resp_len, 0xF2);
    for (ok = 1, i = 0; i < 0xF0; i++)
        ok &= g_resp[i] == 0x42;
    CHECK(ok);

    /* Any other command drops the pending data. */
    CHECK_EQ(APDU(lun, 0, 0x80, 0xEE, 0x00, 0x00, 0x01, 0x42, 0x05), 0x6105);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xA4, 0x00, 0x00, 0x02, 0x3F, 0x00), 0x9000);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x05), 0x6985);
    CHECK_EQ(APDU(lun, 0, 0x80, 0xEE, 0x00, 0x00, 0x01, 0x42, 0x05), 0x6105);
    CHECK_EQ(APDU(lun, 0, 0x00, 0x12, 0x00, 0x00), 0x6D00);         /* even a failing one */
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x05), 0x6985);
    /* ... but not a command whose response did not fit. */
    CHECK_EQ(APDU(lun, 0, 0x80, 0xEE, 0x00, 0x00, 0x01, 0x42, 0x05), 0x6105);
    {
        static const uint8_t gc[] = { 0x00, 0x84, 0x00, 0x00, 0x08 };
        CHECK_EQ(xmit_cap(lun, 0, gc, sizeof(gc), 4), IFD_ERROR_INSUFFICIENT_BUFFER);
    }
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x05), 0x9000);
    /* A power cycle drops it too. */
    CHECK_EQ(APDU(lun, 0, 0x80, 0xEE, 0x00, 0x00, 0x01, 0x42, 0x05), 0x6105);
    CHECK_EQ(power_up(lun), IFD_SUCCESS);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x05), 0x6985);

    /* Case 2: exact Le or 6Cxx; case 2 ECHO / GET CHALLENGE answer directly. */
    CHECK_EQ(APDU(lun, 0, 0x00, 0xA4, 0x00, 0x00, 0x02, 0x2F, 0x01), 0x9000);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xB0, 0x0F, 0xFA, 0x10), 0x6C06);
    CHECK_EQ(g_resp_len, 2);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xB0, 0x0F, 0xFA, 0x00), 0x6C06);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xB0, 0x0F, 0xFA, 0x06), 0x9000);
    CHECK_EQ(g_resp_len, 8);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xB0, 0x00, 0x00, 0x00), 0x9000);
    CHECK_EQ(g_resp_len, 258);
    CHECK_EQ(APDU(lun, 0, 0x80, 0xEE, 0x00, 0x00, 0x09), 0x9000);
    CHECK_EQ(g_resp_len, 11);
    CHECK_EQ(APDU(lun, 0, 0x00, 0x84, 0x00, 0x00, 0x04), 0x9000);
    CHECK_EQ(g_resp_len, 6);
    /* Case 4 without response data: plain 9000. */
    CHECK_EQ(APDU(lun, 0, 0x00, 0xD6, 0x00, 0x00, 0x01, 0x55, 0x00), 0x9000);
    CHECK_EQ(APDU(lun, 0, 0x80, 0xEE, 0x00, 0x00, 0x01, 0x42), 0x9000);  /* case 3 */
    CHECK_EQ(g_resp_len, 2);

    /* Extended APDUs are T=1 only. */
    CHECK_EQ(APDU(lun, 0, 0x80, 0xEE, 0x00, 0x00, 0x00, 0x00, 0x10), 0x6700);
    CHECK_EQ(APDU(lun, 0, 0x00, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x10), 0x6700);

    CHECK_EQ(p_close(lun), IFD_SUCCESS);
}

/* ---- tests: controls ----------------------------------------------------- */

/* A swap (INSERT over a card) as a driver-agnostic host sees it, which
 * asks presence when the polling function returns: a removal, then the new
 * card, each announced by the polling function returning at once. */
static void test_swap_seen_by_presence(void)
{
    IFD_DWORD lun = 0x61000;
    ifdh_polling_fn poll;
    uint8_t atr[64];
    IFD_DWORD len;

    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);
    poll = get_poll_fn(lun);
    CHECK(poll != NULL);
    if (poll == NULL) {
        p_close(lun);
        return;
    }
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(poll(lun, 1000), IFD_SUCCESS);            /* the insertion */
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
    CHECK_EQ(poll(lun, 0), IFD_RESPONSE_TIMEOUT);      /* nothing new */
    CHECK_EQ(power_up(lun), IFD_SUCCESS);

    CHECK_EQ(insert_kind(lun, SIM_CARD_T0), IFD_SUCCESS); /* the swap */
    CHECK_EQ(poll(lun, 1000), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);    /* the old card left */
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);    /* (pcscd asks twice) */
    CHECK_EQ(poll(lun, 1000), IFD_SUCCESS);            /* look again at once */
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);        /* the new one is in */
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
    CHECK_EQ(poll(lun, 0), IFD_RESPONSE_TIMEOUT);
    len = sizeof(atr);
    CHECK_EQ(power(lun, IFD_POWER_UP, atr, &len), IFD_SUCCESS);
    CHECK_EQ(len, sizeof(ATR_T0));                     /* it is the new card */
    /* One "absent", then the poll: the poll ends the absence at once. */
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(poll(lun, 1000), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(poll(lun, 1000), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
    CHECK_EQ(poll(lun, 0), IFD_RESPONSE_TIMEOUT);

    /* A removal after a swap nobody looked at: absent, and stays so. */
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(ctl(lun, SIM_CTL_REMOVE, NULL, 0), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    /* Then a card inserted into the empty reader is simply present. */
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
    CHECK_EQ(p_close(lun), IFD_SUCCESS);
}

/* ---- tests: the lock-free presence and count reads ------------------------ */

/* The card-event counts as one u64 (insertions | removals << 32), or
 * 0xFFFF... with the IFD code in *rv on failure. */
static uint64_t events_of(IFD_DWORD lun, IFD_RESPONSECODE *rv)
{
    uint8_t b[8 + 8];
    IFD_DWORD len = 8;
    *rv = getcap(lun, SCIO_IFD_TAG_CARD_EVENTS, b, &len);
    if (*rv != IFD_SUCCESS || len != 8)
        return UINT64_MAX;
    return (uint64_t)rd32(b) | (uint64_t)rd32(b + 4) << 32;
}

/* Presence and count reads answer from what the reader published (no
 * lock) while nothing is armed: they must answer and count exactly as the
 * locked calls do, and step aside for faults, latency and closed LUNs. */
static void test_hot_paths(void)
{
    IFD_DWORD lun = 0x62000, other = 0x62001;
    IFD_RESPONSECODE rv;
    double t0;
    int i, ok;

    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);
    CHECK_EQ(ctl(lun, SIM_CTL_RESET_COUNTERS, NULL, 0), IFD_SUCCESS);
    for (i = 0, ok = 1; i < 100; i++)
        if (p_presence(lun) != IFD_ICC_NOT_PRESENT)
            ok = 0;
    for (i = 0; i < 50; i++)
        if (events_of(lun, &rv) != 0)
            ok = 0;
    CHECK(ok);
    CHECK_EQ(counter(lun, SIM_COUNTER_CALLS + SIM_EP_ICC_PRESENCE), 100);
    CHECK_EQ(counter(lun, SIM_COUNTER_CALLS + SIM_EP_GET_CAPABILITIES), 50);
    CHECK_EQ(ctl(lun, SIM_CTL_RESET_COUNTERS, NULL, 0), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(counter(lun, SIM_COUNTER_CALLS + SIM_EP_ICC_PRESENCE), 1);
    CHECK_EQ(counter(lun, SIM_COUNTER_CALLS + SIM_EP_GET_CAPABILITIES), 0);

    /* They follow every change made under the lock. */
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
    CHECK_EQ(events_of(lun, &rv), 1);
    CHECK_EQ(ctl(lun, SIM_CTL_REMOVE, NULL, 0), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(events_of(lun, &rv), 1 | 1ull << 32);

    /* An armed fault is taken by the next call, then they answer again. */
    CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_RETURN, 600), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), 600);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(arm(lun, SIM_EP_GET_CAPABILITIES, SIM_FAULT_RETURN, 601), IFD_SUCCESS);
    CHECK_EQ(events_of(lun, &rv), UINT64_MAX);
    CHECK_EQ(rv, 601);
    CHECK_EQ(events_of(lun, &rv), 1 | 1ull << 32);
    CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_REMOVE_CARD, 0), IFD_SUCCESS);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);    /* removed by the fault */
    CHECK_EQ(events_of(lun, &rv), 2 | 2ull << 32);
    /* A buffer too small for the counts goes the locked way, and says so. */
    {
        uint8_t b[8];
        IFD_DWORD len = 7;
        CHECK_EQ(getcap(lun, SCIO_IFD_TAG_CARD_EVENTS, b, &len), IFD_ERROR_INSUFFICIENT_BUFFER);
        CHECK_EQ(len, 8);
    }
    /* Latency: slept by every later call, these included. */
    CHECK_EQ(ctl_u32(lun, SIM_CTL_SET_LATENCY, 20000), IFD_SUCCESS);
    t0 = now_s();
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(events_of(lun, &rv), 2 | 2ull << 32);
    CHECK(now_s() - t0 >= 0.039);
    CHECK_EQ(ctl_u32(lun, SIM_CTL_SET_LATENCY, 0), IFD_SUCCESS);

    /* Closed: no answer for it, though its slot serves another LUN. */
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(p_close(lun), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(events_of(lun, &rv), UINT64_MAX);
    CHECK_EQ(rv, IFD_NO_SUCH_DEVICE);
    CHECK_EQ(p_create_by_name(other, "sim"), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(p_presence(other), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(events_of(other, &rv), 0);
    CHECK_EQ(counter(other, SIM_COUNTER_CALLS + SIM_EP_ICC_PRESENCE), 1);
    /* Reopened: a fresh reader, counts from zero. */
    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(events_of(lun, &rv), 0);
    CHECK_EQ(p_close(lun), IFD_SUCCESS);
    CHECK_EQ(p_close(other), IFD_SUCCESS);

    /* Without counts (option noevents): the tag is unknown, as before. */
    CHECK_EQ(p_create_by_name(lun, "sim?noevents"), IFD_SUCCESS);
    CHECK_EQ(events_of(lun, &rv), UINT64_MAX);
    CHECK_EQ(rv, IFD_ERROR_TAG);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(p_close(lun), IFD_SUCCESS);
}

/* More lock-free calls than a slot counts before it hands them to the
 * reader's counters: none is lost. */
static void test_hot_counts_do_not_wrap(void)
{
    IFD_DWORD lun = 0x62002;
    const uint32_t n = (1u << 21) + 7; /* past what a slot counts before it folds */
    uint32_t i;
    int ok = 1;

    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);
    CHECK_EQ(ctl(lun, SIM_CTL_RESET_COUNTERS, NULL, 0), IFD_SUCCESS);
    for (i = 0; i < n; i++)
        if (p_presence(lun) != IFD_ICC_NOT_PRESENT)
            ok = 0;
    CHECK(ok);
    CHECK_EQ(counter(lun, SIM_COUNTER_CALLS + SIM_EP_ICC_PRESENCE), n);
    CHECK_EQ(counter(lun, SIM_COUNTER_CALLS + SIM_EP_GET_CAPABILITIES), 0);
    CHECK_EQ(p_close(lun), IFD_SUCCESS);
}

/* Lock-free calls racing card events, closes and slot reuse: every answer
 * is one the LUN asked about could give, counts never go back nor drift
 * apart, and the calls on LUNs left open are all counted. */
#define HOT_STABLE 8
#define HOT_CALLERS 4
#define HOT_ROUNDS 60

static volatile int g_hot_stop;

struct hot_caller {
    unsigned seed;
    uint32_t presence[HOT_STABLE], reads[HOT_STABLE];
    int failures;
};

static IFD_DWORD hot_stable(int i) { return (IFD_DWORD)0x63000 + (IFD_DWORD)i; }
/* Churned LUN values are never reused: value k holds at most k % 4 + 1
 * insertions in its life. */
static IFD_DWORD hot_churn(unsigned k) { return (IFD_DWORD)0x640000 + (IFD_DWORD)k; }

static void *hot_caller_main(void *arg)
{
    struct hot_caller *c = arg;
    uint64_t last[HOT_STABLE] = {0};
    while (!__atomic_load_n(&g_hot_stop, __ATOMIC_ACQUIRE)) {
        int i = (int)(rand_r(&c->seed) % HOT_STABLE);
        IFD_RESPONSECODE rv, pr = p_presence(hot_stable(i));
        uint64_t ev = events_of(hot_stable(i), &rv);
        uint32_t ins, rem;
        unsigned k = rand_r(&c->seed) % 64;
        if (pr != IFD_ICC_PRESENT && pr != IFD_ICC_NOT_PRESENT)
            c->failures++;
        c->presence[i]++;
        c->reads[i]++;
        ins = (uint32_t)ev;
        rem = (uint32_t)(ev >> 32);
        if (rv != IFD_SUCCESS || ins < (uint32_t)last[i] || rem < (uint32_t)(last[i] >> 32)
            || ins - rem > 1)
            c->failures++;
        last[i] = ev;
        /* a churned LUN: open or closed, but never another's counts */
        pr = p_presence(hot_churn(k));
        ev = events_of(hot_churn(k), &rv);
        if (pr != IFD_ICC_PRESENT && pr != IFD_ICC_NOT_PRESENT && pr != IFD_NO_SUCH_DEVICE)
            c->failures++;
        if (rv == IFD_SUCCESS ? ((uint32_t)ev > k % 4 + 1 || (uint32_t)(ev >> 32) > k % 4 + 1)
                              : rv != IFD_NO_SUCH_DEVICE)
            c->failures++;
    }
    return NULL;
}

static void test_hot_paths_race(void)
{
    pthread_t th[HOT_CALLERS];
    struct hot_caller c[HOT_CALLERS];
    unsigned k, round;
    int i, j, ok = 1;

    for (i = 0; i < HOT_STABLE; i++) {
        CHECK_EQ(p_create_by_name(hot_stable(i), "sim"), IFD_SUCCESS);
        CHECK_EQ(ctl(hot_stable(i), SIM_CTL_RESET_COUNTERS, NULL, 0), IFD_SUCCESS);
    }
    g_hot_stop = 0;
    memset(c, 0, sizeof c);
    for (i = 0; i < HOT_CALLERS; i++) {
        c[i].seed = (unsigned)i + 1;
        CHECK_EQ(pthread_create(&th[i], NULL, hot_caller_main, &c[i]), 0);
    }
    /* The churn: 64 LUN values at a time, each opened, given its cards and
     * closed, its slot then going to the next value. */
    for (round = 0; round < HOT_ROUNDS; round++) {
        for (k = 0; k < 64; k++) {
            IFD_DWORD v = hot_churn(round * 64 + k);
            unsigned cards = (round * 64 + k) % 4 + 1, n;
            (void)v;
            if (round > 0)
                p_close(hot_churn((round - 1) * 64 + k));
            if (p_create_by_name(hot_churn(round * 64 + k), "sim") != IFD_SUCCESS)
                ok = 0;
            for (n = 0; n < cards; n++) {
                insert_kind(hot_churn(round * 64 + k), SIM_CARD_T1);
                ctl(hot_churn(round * 64 + k), SIM_CTL_REMOVE, NULL, 0);
            }
        }
        i = (int)(round % HOT_STABLE);
        if (round % 2 == 0)
            insert_kind(hot_stable(i), SIM_CARD_T1);
        else
            ctl(hot_stable(i), SIM_CTL_REMOVE, NULL, 0);
    }
    __atomic_store_n(&g_hot_stop, 1, __ATOMIC_RELEASE);
    for (i = 0; i < HOT_CALLERS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(c[i].failures, 0);
    }
    CHECK(ok);
    for (k = 0; k < 64; k++)
        p_close(hot_churn((HOT_ROUNDS - 1) * 64 + k));
    for (i = 0; i < HOT_STABLE; i++) {
        uint32_t presence = 0, reads = 0;
        for (j = 0; j < HOT_CALLERS; j++) {
            presence += c[j].presence[i];
            reads += c[j].reads[i];
        }
        CHECK_EQ(counter(hot_stable(i), SIM_COUNTER_CALLS + SIM_EP_ICC_PRESENCE), presence);
        CHECK_EQ(counter(hot_stable(i), SIM_COUNTER_CALLS + SIM_EP_GET_CAPABILITIES), reads);
        CHECK_EQ(p_close(hot_stable(i)), IFD_SUCCESS);
    }
}

static void test_controls(void)
{
    IFD_DWORD lun = 0x60000, ret, len;
    uint8_t b[128], atr[64];
    uint32_t c[SIM_COUNTER_COUNT];
    double t0, dt;

    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);

    /* INSERT input forms. */
    CHECK_EQ(insert_kind(lun, 7), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    memset(b, 0x3B, sizeof(b));
    CHECK_EQ(ctl(lun, SIM_CTL_INSERT, b, 34), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(p_control(lun, CTL(SIM_CTL_INSERT), NULL, 3, b, sizeof(b), &ret),
             IFD_COMMUNICATION_ERROR);
    {
        uint8_t a33[33];
        size_t i;
        a33[0] = 0x3B;
        a33[1] = 0x0F;                       /* 15 historical bytes ... */
        for (i = 2; i < 33; i++)
            a33[i] = (uint8_t)i;             /* ... and extra: any bytes go */
        CHECK_EQ(ctl(lun, SIM_CTL_INSERT, a33, 33), IFD_SUCCESS);
        len = sizeof(atr);
        CHECK_EQ(power(lun, IFD_POWER_UP, atr, &len), IFD_SUCCESS);
        CHECK_EQ(len, 33);
        CHECK(memcmp(atr, a33, 33) == 0);
        CHECK_EQ(ctl(lun, SIM_CTL_INSERT, a33, 2), IFD_SUCCESS);
        len = sizeof(atr);
        CHECK_EQ(power(lun, IFD_POWER_UP, atr, &len), IFD_SUCCESS);
        CHECK_EQ(len, 2);
    }
    /* Inserting over a card swaps it: one removal, one insertion. */
    CHECK_EQ(ctl(lun, SIM_CTL_RESET_COUNTERS, NULL, 0), IFD_SUCCESS);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(counters(lun, c), 0);
    CHECK_EQ(c[SIM_COUNTER_REMOVALS], 1);
    CHECK_EQ(c[SIM_COUNTER_INSERTIONS], 1);
    CHECK_EQ(c[SIM_COUNTER_POWERED], 0);
    CHECK_EQ(c[SIM_COUNTER_PRESENT], 1);
    /* A host that only asks presence sees the swap: absent twice, then the
     * new card (test_swap_seen_by_presence has the polling side). */
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);

    /* Input lengths of the other controls. */
    CHECK_EQ(ctl(lun, SIM_CTL_REMOVE, b, 1), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(ctl(lun, SIM_CTL_SET_LATENCY, b, 3), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(ctl(lun, SIM_CTL_FAULT, b, 8), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(arm(lun, SIM_EP_COUNT, SIM_FAULT_RETURN, 0), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(arm(lun, SIM_EP_TRANSMIT, 6, 0), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(ctl(lun, SIM_CTL_STOP, b, 1), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(ctl(lun, SIM_CTL_COUNTERS, b, 1), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(ctl(lun, SIM_CTL_RESET_COUNTERS, b, 4), IFD_COMMUNICATION_ERROR);

    /* Unknown codes, including a Windows-style one the core did not map. */
    CHECK_EQ(ctl(lun, 3499, NULL, 0), IFD_ERROR_NOT_SUPPORTED);
    CHECK_EQ(ctl(lun, 3506, NULL, 0), IFD_ERROR_NOT_SUPPORTED); /* not assigned */
    CHECK_EQ(ctl(lun, 3508, NULL, 0), IFD_ERROR_NOT_SUPPORTED);
    CHECK_EQ(ctl(lun, 1, NULL, 0), IFD_ERROR_NOT_SUPPORTED);
    CHECK_EQ(p_control(lun, 0x00313520, NULL, 0, b, sizeof(b), &ret), IFD_ERROR_NOT_SUPPORTED);
    CHECK_EQ(p_control(lun, 0x41FFFFFF, NULL, 0, b, sizeof(b), &ret), IFD_ERROR_NOT_SUPPORTED);
    CHECK_EQ(ret, 0);

    /* COUNTERS buffer sizes; bytes_returned may be NULL. */
    ret = 5;
    CHECK_EQ(p_control(lun, CTL(SIM_CTL_COUNTERS), NULL, 0, b, 4 * SIM_COUNTER_COUNT - 1, &ret),
             IFD_ERROR_INSUFFICIENT_BUFFER);
    CHECK_EQ(ret, 4 * SIM_COUNTER_COUNT);
    CHECK_EQ(p_control(lun, CTL(SIM_CTL_COUNTERS), NULL, 0, NULL, 100, &ret),
             IFD_ERROR_INSUFFICIENT_BUFFER);
    CHECK_EQ(p_control(lun, CTL(SIM_CTL_COUNTERS), NULL, 0, b, sizeof(b), NULL), IFD_SUCCESS);
    CHECK_EQ(p_control(lun, CTL(SIM_CTL_COUNTERS), NULL, 0, b, sizeof(b), &ret), IFD_SUCCESS);
    CHECK_EQ(ret, 4 * SIM_COUNTER_COUNT);

    /* Call counters, every entry point, after a reset. */
    {
        ifdh_polling_fn poll = get_poll_fn(lun);
        IFD_SCARD_IO_HEADER s = { 1, 8 };
        static const uint8_t sel[] = { 0x00, 0xA4, 0x00, 0x00 };
        IFD_DWORD rl;

        CHECK_EQ(ctl(lun, SIM_CTL_RESET_COUNTERS, NULL, 0), IFD_SUCCESS);
        len = sizeof(atr);
        CHECK_EQ(getcap(lun, IFD_TAG_SLOTS_NUMBER, atr, &len), IFD_SUCCESS);
        CHECK_EQ(getcap(lun, IFD_TAG_SLOTS_NUMBER, atr, &len), IFD_SUCCESS);
        CHECK_EQ(p_setcap(lun, 1, 0, NULL), IFD_ERROR_TAG);
        CHECK_EQ(power_up(lun), IFD_SUCCESS);
        len = sizeof(atr);
        CHECK_EQ(power(lun, IFD_RESET, atr, &len), IFD_SUCCESS);
        CHECK_EQ(p_setproto(lun, 2, 0, 0, 0, 0), IFD_SUCCESS);
        rl = sizeof(b);
        CHECK_EQ(p_transmit(lun, s, (IFD_UCHAR *)(uintptr_t)sel, 4, b, &rl, NULL), IFD_SUCCESS);
        rl = sizeof(b);
        CHECK_EQ(p_transmit(lun, s, (IFD_UCHAR *)(uintptr_t)sel, 4, b, &rl, NULL), IFD_SUCCESS);
        rl = sizeof(b);
        CHECK_EQ(p_transmit(lun, s, (IFD_UCHAR *)(uintptr_t)sel, 4, b, &rl, NULL), IFD_SUCCESS);
        CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
        CHECK(poll != NULL);
        if (poll != NULL)
            CHECK_EQ(poll(lun, 0), IFD_SUCCESS);      /* the insertion above */
        len = sizeof(atr);
        CHECK_EQ(power(lun, IFD_POWER_DOWN, atr, &len), IFD_SUCCESS);
        CHECK_EQ(counters(lun, c), 0);
        CHECK_EQ(c[SIM_COUNTER_CALLS + SIM_EP_CREATE_CHANNEL], 0);
        CHECK_EQ(c[SIM_COUNTER_CALLS + SIM_EP_CLOSE_CHANNEL], 0);
        CHECK_EQ(c[SIM_COUNTER_CALLS + SIM_EP_GET_CAPABILITIES], 2);
        CHECK_EQ(c[SIM_COUNTER_CALLS + SIM_EP_SET_CAPABILITIES], 1);
        CHECK_EQ(c[SIM_COUNTER_CALLS + SIM_EP_SET_PROTOCOL], 1);
        CHECK_EQ(c[SIM_COUNTER_CALLS + SIM_EP_POWER_ICC], 3);
        CHECK_EQ(c[SIM_COUNTER_CALLS + SIM_EP_TRANSMIT], 3);
        CHECK_EQ(c[SIM_COUNTER_CALLS + SIM_EP_ICC_PRESENCE], 1);
        CHECK_EQ(c[SIM_COUNTER_CALLS + SIM_EP_CONTROL], 1);           /* this read */
        CHECK_EQ(c[SIM_COUNTER_CALLS + SIM_EP_POLLING], 1);
        CHECK_EQ(c[SIM_COUNTER_POWER_UPS], 1);
        CHECK_EQ(c[SIM_COUNTER_RESETS], 1);
        CHECK_EQ(c[SIM_COUNTER_POWER_DOWNS], 1);
        CHECK_EQ(c[SIM_COUNTER_POWERED], 0);
        CHECK_EQ(c[SIM_COUNTER_PRESENT], 1);
        CHECK_EQ(c[SIM_COUNTER_INSERTIONS], 0);
        CHECK_EQ(c[SIM_COUNTER_REMOVALS], 0);
        CHECK_EQ(c[SIM_COUNTER_PROTOCOL], 0);
        CHECK_EQ(c[SIM_COUNTER_LATENCY_US], 0);
    }

    /* Latency: every call but Control and the polling function. */
    CHECK_EQ(ctl_u32(lun, SIM_CTL_SET_LATENCY, 30000), IFD_SUCCESS);
    CHECK_EQ(counter(lun, SIM_COUNTER_LATENCY_US), 30000);
    t0 = now_s();
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
    dt = now_s() - t0;
    CHECK(dt >= 0.029);
    t0 = now_s();
    CHECK_EQ(power_up(lun), IFD_SUCCESS);
    dt = now_s() - t0;
    CHECK(dt >= 0.029);
    t0 = now_s();
    CHECK_EQ(ctl(lun, SIM_CTL_REMOVE, NULL, 0), IFD_SUCCESS);
    CHECK_EQ(ctl(lun, SIM_CTL_INSERT, NULL, 0), IFD_SUCCESS);
    dt = now_s() - t0;
    CHECK(dt < 0.029);
    CHECK_EQ(ctl_u32(lun, SIM_CTL_SET_LATENCY, 0), IFD_SUCCESS);
    t0 = now_s();
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
    dt = now_s() - t0;
    CHECK(dt < 0.029);

    CHECK_EQ(p_close(lun), IFD_SUCCESS);
}

/* ---- tests: faults ------------------------------------------------------- */

/* Calls entry point ep once in a plain way; returns its result. */
static IFD_RESPONSECODE call_ep(IFD_DWORD lun, int ep)
{
    uint8_t b[300];
    IFD_DWORD len = sizeof(b), ret;
    IFD_SCARD_IO_HEADER s = { 1, 8 };
    static const uint8_t sel[] = { 0x00, 0xA4, 0x00, 0x00 };
    ifdh_polling_fn poll;

    switch (ep) {
    case SIM_EP_CLOSE_CHANNEL: return p_close(lun);
    case SIM_EP_GET_CAPABILITIES: return p_getcap(lun, IFD_TAG_SLOTS_NUMBER, &len, b);
    case SIM_EP_SET_CAPABILITIES: return p_setcap(lun, 0x4242, 1, b);
    case SIM_EP_SET_PROTOCOL: return p_setproto(lun, 2, 0, 0, 0, 0);
    case SIM_EP_POWER_ICC: return p_power(lun, IFD_POWER_UP, b, &len);
    case SIM_EP_TRANSMIT:
        return p_transmit(lun, s, (IFD_UCHAR *)(uintptr_t)sel, 4, b, &len, NULL);
    case SIM_EP_ICC_PRESENCE: return p_presence(lun);
    case SIM_EP_CONTROL:
        return p_control(lun, CTL(SIM_CTL_SET_LATENCY), (IFD_UCHAR *)"\0\0\0\0", 4,
                         b, 0, &ret);
    case SIM_EP_POLLING:
        poll = get_poll_fn(lun);
        return poll != NULL ? poll(lun, 0) : -1;
    default: return -1;
    }
}

struct blocked_call {
    IFD_DWORD lun;
    int ep;
    IFD_RESPONSECODE rv;
    volatile int done;
    pthread_mutex_t m;
};

static void *blocked_thread(void *arg)
{
    struct blocked_call *bc = arg;
    IFD_RESPONSECODE rv = call_ep(bc->lun, bc->ep);
    pthread_mutex_lock(&bc->m);
    bc->rv = rv;
    bc->done = 1;
    pthread_mutex_unlock(&bc->m);
    return NULL;
}

static int bc_done(struct blocked_call *bc)
{
    int d;
    pthread_mutex_lock(&bc->m);
    d = bc->done;
    pthread_mutex_unlock(&bc->m);
    return d;
}

/* Start a call that will block; check it is blocked after a while. */
static int start_blocked(struct blocked_call *bc, pthread_t *th, IFD_DWORD lun, int ep)
{
    bc->lun = lun;
    bc->ep = ep;
    bc->rv = -1;
    bc->done = 0;
    pthread_mutex_init(&bc->m, NULL);
    if (pthread_create(th, NULL, blocked_thread, bc) != 0)
        return -1;
    sleep_ms(100);
    return 0;
}

static void finish_blocked(struct blocked_call *bc, pthread_t th)
{
    pthread_join(th, NULL);
    pthread_mutex_destroy(&bc->m);
}

static void test_faults(void)
{
    IFD_DWORD lun = 0x70000, len, ret;
    uint8_t b[128];
    int ep;
    uint32_t c[SIM_COUNTER_COUNT];

    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(power_up(lun), IFD_SUCCESS);

    /* RETURN on every entry point, once. */
    for (ep = SIM_EP_CLOSE_CHANNEL; ep < SIM_EP_COUNT; ep++) {
        CHECK_EQ(arm(lun, (uint32_t)ep, SIM_FAULT_RETURN, IFD_RESPONSE_TIMEOUT), IFD_SUCCESS);
        CHECK_EQ(call_ep(lun, ep), IFD_RESPONSE_TIMEOUT);
        if (ep != SIM_EP_CLOSE_CHANNEL) {
            IFD_RESPONSECODE rv = call_ep(lun, ep);
            CHECK(rv != IFD_RESPONSE_TIMEOUT);
        }
    }
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);          /* still open */
    /* The value is a signed 32-bit code, the same for any RESPONSECODE width. */
    CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_RETURN, 0xFFFFFFFFu), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), -1);
    CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_RETURN, 0x80000000u), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), INT32_MIN);
    CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_RETURN, 0x7FFFFFFFu), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), INT32_MAX);
    /* A CREATE_CHANNEL fault can be armed but never fires (already open). */
    CHECK_EQ(arm(lun, SIM_EP_CREATE_CHANNEL, SIM_FAULT_RETURN, 0), IFD_SUCCESS);
    /* NONE disarms; STOP disarms all and is itself immune. */
    CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_RETURN, 600), IFD_SUCCESS);
    CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_NONE, 0), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
    CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_RETURN, 600), IFD_SUCCESS);
    CHECK_EQ(arm(lun, SIM_EP_CONTROL, SIM_FAULT_RETURN, 600), IFD_SUCCESS);
    CHECK_EQ(ctl(lun, SIM_CTL_STOP, NULL, 0), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
    CHECK_EQ(ctl(lun, SIM_CTL_REMOVE, NULL, 0), IFD_SUCCESS);   /* not swallowed */
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(power_up(lun), IFD_SUCCESS);

    /* REMOVE_CARD: the card goes during the call. */
    CHECK_EQ(arm(lun, SIM_EP_TRANSMIT, SIM_FAULT_REMOVE_CARD, 0), IFD_SUCCESS);
    CHECK_EQ(call_ep(lun, SIM_EP_TRANSMIT), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(counters(lun, c), 0);
    CHECK_EQ(c[SIM_COUNTER_PRESENT], 0);
    CHECK_EQ(c[SIM_COUNTER_POWERED], 0);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_REMOVE_CARD, 0), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(arm(lun, SIM_EP_POWER_ICC, SIM_FAULT_REMOVE_CARD, 0), IFD_SUCCESS);
    CHECK_EQ(call_ep(lun, SIM_EP_POWER_ICC), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(power_up(lun), IFD_SUCCESS);

    /* OVERLONG_LENGTH: reported = capacity + value; nothing written beyond. */
    {
        static const uint8_t echo[] = { 0x80, 0xEE, 0x00, 0x00, 0x04 };
        IFD_SCARD_IO_HEADER s = { 1, 8 };
        IFD_DWORD rl = 16;
        memset(b, 0xA5, sizeof(b));
        CHECK_EQ(arm(lun, SIM_EP_TRANSMIT, SIM_FAULT_OVERLONG_LENGTH, 100), IFD_SUCCESS);
        CHECK_EQ(p_transmit(lun, s, (IFD_UCHAR *)(uintptr_t)echo, sizeof(echo), b, &rl, NULL),
                 IFD_SUCCESS);
        CHECK_EQ(rl, 116);
        CHECK_EQ(b[16], 0xA5);
        CHECK_EQ(b[4], 0x90);

        memset(b, 0xA5, sizeof(b));
        len = 33;
        CHECK_EQ(arm(lun, SIM_EP_POWER_ICC, SIM_FAULT_OVERLONG_LENGTH, 7), IFD_SUCCESS);
        CHECK_EQ(p_power(lun, IFD_POWER_UP, b, &len), IFD_SUCCESS);
        CHECK_EQ(len, 40);
        CHECK_EQ(b[33], 0xA5);
        CHECK(memcmp(b, ATR_T1, sizeof(ATR_T1)) == 0);

        memset(b, 0xA5, sizeof(b));
        len = 2;
        CHECK_EQ(arm(lun, SIM_EP_GET_CAPABILITIES, SIM_FAULT_OVERLONG_LENGTH, 1), IFD_SUCCESS);
        CHECK_EQ(p_getcap(lun, IFD_TAG_SLOTS_NUMBER, &len, b), IFD_SUCCESS);
        CHECK_EQ(len, 3);
        CHECK_EQ(b[1], 0xA5);

        memset(b, 0xA5, sizeof(b));
        CHECK_EQ(arm(lun, SIM_EP_CONTROL, SIM_FAULT_OVERLONG_LENGTH, 1000), IFD_SUCCESS);
        CHECK_EQ(p_control(lun, CTL(SIM_CTL_COUNTERS), NULL, 0, b, 4 * SIM_COUNTER_COUNT, &ret),
                 IFD_SUCCESS);
        CHECK_EQ(ret, 4 * SIM_COUNTER_COUNT + 1000);
        CHECK_EQ(b[4 * SIM_COUNTER_COUNT], 0xA5);
        /* The largest value still claims more than the capacity, whatever
         * the DWORD's width (32 bits: saturated, not wrapped). */
        memset(b, 0xA5, sizeof(b));
        len = 2;
        CHECK_EQ(arm(lun, SIM_EP_GET_CAPABILITIES, SIM_FAULT_OVERLONG_LENGTH, 0xFFFFFFFFu),
                 IFD_SUCCESS);
        CHECK_EQ(p_getcap(lun, IFD_TAG_SLOTS_NUMBER, &len, b), IFD_SUCCESS);
        CHECK(len > 2);
        CHECK_EQ(len, sizeof(IFD_DWORD) > 4 ? (uint64_t)2 + 0xFFFFFFFFu : 0xFFFFFFFFu);
        CHECK_EQ(b[1], 0xA5);
        /* Fault kinds that do not apply to an entry point are consumed. */
        CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_OVERLONG_LENGTH, 1), IFD_SUCCESS);
        CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);
    }

    /* LONG_ATR: report value bytes, write at most the capacity. */
    memset(b, 0xA5, sizeof(b));
    len = 33;
    CHECK_EQ(arm(lun, SIM_EP_POWER_ICC, SIM_FAULT_LONG_ATR, 40), IFD_SUCCESS);
    CHECK_EQ(p_power(lun, IFD_POWER_UP, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 40);
    CHECK(memcmp(b, ATR_T1, sizeof(ATR_T1)) == 0);
    CHECK_EQ(b[32], 0);
    CHECK_EQ(b[33], 0xA5);
    memset(b, 0xA5, sizeof(b));
    len = 64;
    CHECK_EQ(arm(lun, SIM_EP_POWER_ICC, SIM_FAULT_LONG_ATR, 40), IFD_SUCCESS);
    CHECK_EQ(p_power(lun, IFD_RESET, b, &len), IFD_SUCCESS);
    CHECK_EQ(len, 40);
    CHECK_EQ(b[39], 0);
    CHECK_EQ(b[40], 0xA5);
    len = 33;
    CHECK_EQ(p_power(lun, IFD_POWER_UP, b, &len), IFD_SUCCESS);   /* one-shot */
    CHECK_EQ(len, sizeof(ATR_T1));

    /* BLOCK: the call waits until STOP; controls work meanwhile. */
    {
        struct blocked_call bc;
        pthread_t th;
        CHECK_EQ(arm(lun, SIM_EP_TRANSMIT, SIM_FAULT_BLOCK, 0), IFD_SUCCESS);
        CHECK_EQ(start_blocked(&bc, &th, lun, SIM_EP_TRANSMIT), 0);
        CHECK(!bc_done(&bc));
        CHECK_EQ(counters(lun, c), 0);                       /* callable */
        CHECK_EQ(c[SIM_COUNTER_CALLS + SIM_EP_TRANSMIT] >= 1, 1);
        CHECK_EQ(p_presence(lun), IFD_ICC_PRESENT);          /* so are others */
        CHECK(!bc_done(&bc));
        CHECK_EQ(ctl(lun, SIM_CTL_STOP, NULL, 0), IFD_SUCCESS);
        finish_blocked(&bc, th);
        CHECK_EQ(bc.rv, IFD_SUCCESS);                        /* then runs normally */

        /* With a value: that code after the release. */
        CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_BLOCK, IFD_COMMUNICATION_ERROR),
                 IFD_SUCCESS);
        CHECK_EQ(start_blocked(&bc, &th, lun, SIM_EP_ICC_PRESENCE), 0);
        CHECK(!bc_done(&bc));
        CHECK_EQ(ctl(lun, SIM_CTL_STOP, NULL, 0), IFD_SUCCESS);
        finish_blocked(&bc, th);
        CHECK_EQ(bc.rv, IFD_COMMUNICATION_ERROR);

        /* Blocked Control, released by another Control. */
        CHECK_EQ(arm(lun, SIM_EP_CONTROL, SIM_FAULT_BLOCK, 0), IFD_SUCCESS);
        CHECK_EQ(start_blocked(&bc, &th, lun, SIM_EP_CONTROL), 0);
        CHECK(!bc_done(&bc));
        CHECK_EQ(ctl(lun, SIM_CTL_STOP, NULL, 0), IFD_SUCCESS);
        finish_blocked(&bc, th);
        CHECK_EQ(bc.rv, IFD_SUCCESS);

        /* Blocked polling function, released by STOP. */
        CHECK_EQ(arm(lun, SIM_EP_POLLING, SIM_FAULT_BLOCK, 0), IFD_SUCCESS);
        CHECK_EQ(start_blocked(&bc, &th, lun, SIM_EP_POLLING), 0);
        CHECK(!bc_done(&bc));
        CHECK_EQ(ctl(lun, SIM_CTL_STOP, NULL, 0), IFD_SUCCESS);
        finish_blocked(&bc, th);
        CHECK(bc.rv == IFD_SUCCESS || bc.rv == IFD_RESPONSE_TIMEOUT);

        /* A LUN closed under a blocked call: the call fails, nothing leaks. */
        CHECK_EQ(arm(lun, SIM_EP_POWER_ICC, SIM_FAULT_BLOCK, 0), IFD_SUCCESS);
        CHECK_EQ(start_blocked(&bc, &th, lun, SIM_EP_POWER_ICC), 0);
        CHECK(!bc_done(&bc));
        CHECK_EQ(p_close(lun), IFD_SUCCESS);
        finish_blocked(&bc, th);
        CHECK_EQ(bc.rv, IFD_NO_SUCH_DEVICE);
        CHECK_EQ(p_presence(lun), IFD_NO_SUCH_DEVICE);
    }

    /* CLOSE_CHANNEL: RETURN keeps the LUN open. */
    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);
    CHECK_EQ(arm(lun, SIM_EP_CLOSE_CHANNEL, SIM_FAULT_RETURN, IFD_COMMUNICATION_ERROR),
             IFD_SUCCESS);
    CHECK_EQ(p_close(lun), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(p_close(lun), IFD_SUCCESS);
}

/* ---- tests: polling function --------------------------------------------- */

struct poll_arg {
    ifdh_polling_fn poll;
    IFD_DWORD lun;
    int timeout_ms;
    IFD_RESPONSECODE rv;
    double elapsed;
};

static void *poll_thread(void *arg)
{
    struct poll_arg *pa = arg;
    double t0 = now_s();
    pa->rv = pa->poll(pa->lun, pa->timeout_ms);
    pa->elapsed = now_s() - t0;
    return NULL;
}

static void test_polling(void)
{
    IFD_DWORD lun = 0x80000;
    ifdh_polling_fn poll;
    ifdh_stop_polling_fn stop;
    struct poll_arg pa;
    pthread_t th;
    double t0, dt;

    CHECK_EQ(p_create_by_name(lun, "sim"), IFD_SUCCESS);
    poll = get_poll_fn(lun);
    stop = get_stop_fn(lun);
    CHECK(poll != NULL && stop != NULL);
    if (poll == NULL || stop == NULL)
        return;

    CHECK_EQ(poll(0x999, 10), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(stop(0x999), IFD_NO_SUCH_DEVICE);

    /* No event: timeout. */
    t0 = now_s();
    CHECK_EQ(poll(lun, 50), IFD_RESPONSE_TIMEOUT);
    dt = now_s() - t0;
    CHECK(dt >= 0.045);
    CHECK_EQ(poll(lun, 0), IFD_RESPONSE_TIMEOUT);

    /* An event between two polls is not lost. */
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    t0 = now_s();
    CHECK_EQ(poll(lun, 5000), IFD_SUCCESS);
    CHECK(now_s() - t0 < 1.0);
    CHECK_EQ(poll(lun, 20), IFD_RESPONSE_TIMEOUT);
    /* Two events before a poll: one return covers both. */
    CHECK_EQ(ctl(lun, SIM_CTL_REMOVE, NULL, 0), IFD_SUCCESS);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T1), IFD_SUCCESS);
    CHECK_EQ(poll(lun, 5000), IFD_SUCCESS);
    CHECK_EQ(poll(lun, 20), IFD_RESPONSE_TIMEOUT);

    /* Wake-up by a removal from another thread. */
    pa.poll = poll;
    pa.lun = lun;
    pa.timeout_ms = 10000;
    pa.rv = -1;
    CHECK_EQ(pthread_create(&th, NULL, poll_thread, &pa), 0);
    sleep_ms(100);
    CHECK_EQ(ctl(lun, SIM_CTL_REMOVE, NULL, 0), IFD_SUCCESS);
    pthread_join(th, NULL);
    CHECK_EQ(pa.rv, IFD_SUCCESS);
    CHECK(pa.elapsed >= 0.09 && pa.elapsed < 5.0);

    /* Wake-up by an insertion, infinite timeout. */
    pa.timeout_ms = -1;
    pa.rv = -1;
    CHECK_EQ(pthread_create(&th, NULL, poll_thread, &pa), 0);
    sleep_ms(100);
    CHECK_EQ(insert_kind(lun, SIM_CARD_T0), IFD_SUCCESS);
    pthread_join(th, NULL);
    CHECK_EQ(pa.rv, IFD_SUCCESS);
    CHECK(pa.elapsed < 5.0);

    /* A REMOVE_CARD fault in another entry point is an event too. */
    CHECK_EQ(arm(lun, SIM_EP_ICC_PRESENCE, SIM_FAULT_REMOVE_CARD, 0), IFD_SUCCESS);
    CHECK_EQ(p_presence(lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(poll(lun, 5000), IFD_SUCCESS);

    /* Stop releases a blocked poll. */
    pa.timeout_ms = 10000;
    pa.rv = -1;
    CHECK_EQ(pthread_create(&th, NULL, poll_thread, &pa), 0);
    sleep_ms(100);
    CHECK_EQ(stop(lun), IFD_SUCCESS);
    pthread_join(th, NULL);
    CHECK_EQ(pa.rv, IFD_SUCCESS);
    CHECK(pa.elapsed < 5.0);
    CHECK_EQ(poll(lun, 20), IFD_RESPONSE_TIMEOUT);       /* consumed */

    /* Stop with no poll waiting: sticky for the next poll only. */
    CHECK_EQ(stop(lun), IFD_SUCCESS);
    t0 = now_s();
    CHECK_EQ(poll(lun, 5000), IFD_SUCCESS);
    CHECK(now_s() - t0 < 1.0);
    CHECK_EQ(poll(lun, 20), IFD_RESPONSE_TIMEOUT);

    /* Closing releases a blocked poll. */
    pa.timeout_ms = -1;
    pa.rv = -1;
    CHECK_EQ(pthread_create(&th, NULL, poll_thread, &pa), 0);
    sleep_ms(100);
    CHECK_EQ(p_close(lun), IFD_SUCCESS);
    pthread_join(th, NULL);
    CHECK_EQ(pa.rv, IFD_NO_SUCH_DEVICE);
}

/* ---- tests: many LUNs ----------------------------------------------------- */

#define MANY 1024

struct many_arg {
    int first, step;
    int failures;
};

static IFD_DWORD many_lun(int i)
{
    /* pcscd style (reader << 16 | slot); odd readers use slot 1. */
    return (IFD_DWORD)i << 16 | (IFD_DWORD)(i & 1);
}

/* Each LUN's card has ATR 3B 82 01 hi lo TCK (TD1 = T=1, historical bytes
 * = the LUN number): checks that every call reaches its own reader. */
static void *many_thread(void *arg)
{
    struct many_arg *ma = arg;
    uint8_t atr[40], resp[64];
    static const uint8_t echo[] = { 0x80, 0xEE, 0x00, 0x00, 0x04 };
    int i, round;

    for (round = 0; round < 3; round++) {
        for (i = ma->first; i < MANY; i += ma->step) {
            IFD_DWORD lun = many_lun(i);
            IFD_DWORD len = sizeof(atr), rl = sizeof(resp);
            IFD_SCARD_IO_HEADER s = { 1, 8 };
            if (p_power(lun, IFD_POWER_UP, atr, &len) != IFD_SUCCESS || len != 6
                || atr[3] != (uint8_t)(i >> 8) || atr[4] != (uint8_t)i)
                ma->failures++;
            if (p_setproto(lun, 2, 0, 0, 0, 0) != IFD_SUCCESS)
                ma->failures++;
            if (p_transmit(lun, s, (IFD_UCHAR *)(uintptr_t)echo, sizeof(echo), resp, &rl, NULL)
                    != IFD_SUCCESS || rl != 6 || resp[3] != 3 || resp[4] != 0x90)
                ma->failures++;
        }
    }
    return NULL;
}

static void test_many(void)
{
    int i, ok = 1, created = 0;
    pthread_t th[8];
    struct many_arg ma[8];

    for (i = 0; i < MANY; i++) {
        uint8_t atr[6] = { 0x3B, 0x82, 0x01, (uint8_t)(i >> 8), (uint8_t)i, 0 };
        size_t k;
        for (k = 1; k < 5; k++)
            atr[5] ^= atr[k];                 /* TCK */
        if (p_create_by_name(many_lun(i), "sim") != IFD_SUCCESS)
            ok = 0;
        else
            created++;
        if (ctl(many_lun(i), SIM_CTL_INSERT, atr, sizeof(atr)) != IFD_SUCCESS)
            ok = 0;
    }
    CHECK(ok);
    CHECK_EQ(created, MANY);
    for (i = 0, ok = 1; i < MANY; i++)
        if (p_presence(many_lun(i)) != IFD_ICC_PRESENT)
            ok = 0;
    CHECK(ok);
    /* Slot 0 of an odd reader was never opened. */
    CHECK_EQ(p_presence(many_lun(1) & ~(IFD_DWORD)1), IFD_NO_SUCH_DEVICE);
    for (i = 0; i < 8; i++) {
        ma[i].first = i;
        ma[i].step = 8;
        ma[i].failures = 0;
        CHECK_EQ(pthread_create(&th[i], NULL, many_thread, &ma[i]), 0);
    }
    for (i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(ma[i].failures, 0);
    }
    for (i = 0, ok = 1; i < MANY; i++)
        if (p_close(many_lun(i)) != IFD_SUCCESS)
            ok = 0;
    CHECK(ok);
    CHECK_EQ(p_presence(0), IFD_NO_SUCH_DEVICE);
}

/* The table holds SIM_MAX_LUNS (4096): one more fails cleanly. */
static void test_lun_limit(void)
{
    int i, created = 0;
    IFD_RESPONSECODE rv = IFD_SUCCESS;

    for (i = 0; i < 5000; i++) {
        rv = p_create_by_name((IFD_DWORD)0x1000000 + (IFD_DWORD)i, NULL);
        if (rv != IFD_SUCCESS)
            break;
        created++;
    }
    CHECK(created >= MANY);
    CHECK_EQ(rv, IFD_COMMUNICATION_ERROR);
    for (i = 0; i < created; i++)
        p_close((IFD_DWORD)0x1000000 + (IFD_DWORD)i);
    CHECK_EQ(p_create_by_name(0x1000000, NULL), IFD_SUCCESS);
    CHECK_EQ(p_close(0x1000000), IFD_SUCCESS);
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : getenv("SCARDIO_SIM_LIB");
    void *h;

    if (path == NULL)
        path = "libscardio_sim.so";
    /* RTLD_NOW: fails here if the library needed log_msg or the like. */
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
        printf("0 passed, 1 failed\n");
        return 1;
    }
    if (load(h) == 0) {
        /* Internals stay hidden. */
        CHECK(dlsym(h, "sim_card_process") == NULL);
        CHECK(dlsym(h, "sim_card_init") == NULL);
        test_channels();
        test_capabilities();
        test_power_protocol();
        test_card_t1();
        test_card_t0();
        test_controls();
        test_swap_seen_by_presence();
        test_hot_paths();
        test_hot_counts_do_not_wrap();
        test_hot_paths_race();
        test_event_generation();
        test_event_generation_race();
        test_faults();
        test_polling();
        test_many();
        test_lun_limit();
    }
    dlclose(h);
    return check_report();
}
