/*
 * test_ext_card.c - the simulated reader's external-card seam
 * (native/sim/ext_card.h): a card answered by a C function here, inserted
 * through the library's exported scardio_sim_insert_external.
 *
 * Build (from the repository root):
 *   gcc -O1 -g -Wall -Wextra -Werror -std=c11 -pthread -Inative -Inative/sim \
 *       -Inative/ifd native/tests/test_ext_card.c -o test_ext_card -ldl
 * Run:
 *   ./test_ext_card path/to/libscardio_sim.so
 * Prints "N passed, N failed"; exits non-zero on any failure.
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ifd_abi.h"
#include "sim_protocol.h"
#include "ext_card.h"
#include "check.h"

typedef IFD_RESPONSECODE (*insert_fn)(IFD_DWORD, sim_ext_call_fn, sim_ext_release_fn, void *,
                                      const uint8_t *, size_t);

static ifdh_create_channel_by_name_fn p_create;
static ifdh_close_channel_fn p_close;
static ifdh_set_protocol_parameters_fn p_setproto;
static ifdh_power_icc_fn p_power;
static ifdh_transmit_to_icc_fn p_transmit;
static ifdh_icc_presence_fn p_presence;
static ifdh_control_fn p_control;
static insert_fn p_insert;

static int load(void *h)
{
    LOAD(h, p_create, "IFDHCreateChannelByName");
    LOAD(h, p_close, "IFDHCloseChannel");
    LOAD(h, p_setproto, "IFDHSetProtocolParameters");
    LOAD(h, p_power, "IFDHPowerICC");
    LOAD(h, p_transmit, "IFDHTransmitToICC");
    LOAD(h, p_presence, "IFDHICCPresence");
    LOAD(h, p_control, "IFDHControl");
    LOAD(h, p_insert, "scardio_sim_insert_external");
    return 0;
}

#define CTL(n) ((IFD_DWORD)(0x42000000UL + (n)))

static const uint8_t ATR_T1[] = SIM_ATR_T1;
static const uint8_t ATR_T0[] = SIM_ATR_T0;

/* ---- a scripted card ------------------------------------------------------ */

enum { MAX_OPS = 64 };

typedef struct test_card {
    IFD_DWORD lun;
    int ops[MAX_OPS];          /* the operations seen, in order */
    int n_ops;
    int apdus;
    int releases;
    long power_rc;             /* result of power operations */
    /* The next APDU answer: `answer` (answer_len bytes), or the code. */
    uint8_t answer[SIM_EXT_MAX_RESPONSE + 8];
    size_t answer_len;
    long answer_rc;            /* < 0: returned instead */
    long answer_claim;         /* > 0: returned instead of answer_len */
    int remove_self;           /* REMOVE its own LUN from inside the call */
    int counters_rc;           /* IFDHControl COUNTERS from inside the call */
    int releases_seen_inside;
    pthread_mutex_t lock;      /* for the threaded test */
} test_card;

static long card_call(void *ctx, int op, const uint8_t *in, size_t in_len,
                      uint8_t *out, size_t out_cap)
{
    test_card *c = ctx;
    int steer, remove_self;
    long rc;

    (void)in;
    (void)in_len;
    pthread_mutex_lock(&c->lock);
    if (c->n_ops < MAX_OPS)
        c->ops[c->n_ops++] = op;
    if (op != SIM_EXT_OP_APDU) {
        rc = c->power_rc;
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    c->apdus++;
    c->releases_seen_inside = c->releases;
    steer = c->counters_rc != 0 || c->remove_self;
    remove_self = c->remove_self;
    pthread_mutex_unlock(&c->lock);
    if (steer) {
        /* Would deadlock if the reader's lock were held around this call. */
        uint8_t cnt[4 * SIM_COUNTER_COUNT];
        IFD_DWORD got = 0;
        int r = (int)p_control(c->lun, CTL(SIM_CTL_COUNTERS), NULL, 0, cnt, sizeof cnt, &got);
        if (remove_self)
            (void)p_control(c->lun, CTL(SIM_CTL_REMOVE), NULL, 0, NULL, 0, &got);
        pthread_mutex_lock(&c->lock);
        c->counters_rc = r;
        pthread_mutex_unlock(&c->lock);
    }
    pthread_mutex_lock(&c->lock);
    if (c->answer_rc < 0)
        rc = c->answer_rc;
    else if (c->answer_claim > 0)
        rc = c->answer_claim;
    else if (c->answer_len > out_cap)
        rc = SIM_EXT_E_MALFORMED;
    else {
        memcpy(out, c->answer, c->answer_len);
        rc = (long)c->answer_len;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static void card_release(void *ctx)
{
    test_card *c = ctx;
    pthread_mutex_lock(&c->lock);
    c->releases++;
    pthread_mutex_unlock(&c->lock);
}

static void card_init(test_card *c, IFD_DWORD lun)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    c->lun = lun;
}

static void card_answer(test_card *c, const char *hex)
{
    size_t n = 0;
    unsigned v;
    while (hex[0] && hex[1] && sscanf(hex, "%2x", &v) == 1) {
        c->answer[n++] = (uint8_t)v;
        hex += 2;
        while (*hex == ' ')
            hex++;
    }
    c->answer_len = n;
    c->answer_rc = 0;
    c->answer_claim = 0;
}

static IFD_RESPONSECODE insert(test_card *c, const uint8_t *atr, size_t atr_len)
{
    return p_insert(c->lun, card_call, card_release, c, atr, atr_len);
}

static IFD_RESPONSECODE power(IFD_DWORD lun, IFD_DWORD action)
{
    uint8_t atr[64];
    IFD_DWORD n = sizeof atr;
    return p_power(lun, action, atr, &n);
}

/* TRANSMIT under protocol t; the response in rx / *rx_len. */
static IFD_RESPONSECODE xmit(IFD_DWORD lun, int t, const uint8_t *cmd, size_t len,
                             uint8_t *rx, IFD_DWORD *rx_len)
{
    IFD_SCARD_IO_HEADER pci = { (IFD_DWORD)t, 8 }, recv = { 0, 8 };
    *rx_len = 300;
    return p_transmit(lun, pci, (IFD_UCHAR *)(uintptr_t)cmd, (IFD_DWORD)len, rx, rx_len, &recv);
}

#define X(lun, t, ...) do { \
        static const uint8_t cmd_[] = { __VA_ARGS__ }; \
        rv = xmit(lun, t, cmd_, sizeof cmd_, rx, &rx_len); \
    } while (0)

static int sw_is(const uint8_t *rx, IFD_DWORD n, uint8_t sw1, uint8_t sw2)
{
    return n >= 2 && rx[n - 2] == sw1 && rx[n - 1] == sw2;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_t1_pass_through(void)
{
    test_card c;
    uint8_t rx[300];
    IFD_DWORD rx_len;
    IFD_RESPONSECODE rv;

    card_init(&c, 0x10);
    CHECK_EQ(p_create(c.lun, "sim:x"), IFD_SUCCESS);
    CHECK_EQ(insert(&c, ATR_T1, sizeof ATR_T1), IFD_SUCCESS);
    CHECK_EQ(p_presence(c.lun), IFD_ICC_PRESENT);
    CHECK_EQ(power(c.lun, IFD_POWER_UP), IFD_SUCCESS);
    card_answer(&c, "01 02 03 90 00");
    X(c.lun, 1, 0x00, 0xB0, 0x00, 0x00, 0x02);   /* Le 2, 3 bytes back: T=1 keeps them */
    CHECK_EQ(rv, IFD_SUCCESS);
    CHECK_EQ(rx_len, 5);
    CHECK(memcmp(rx, c.answer, 5) == 0);
    CHECK_EQ(c.apdus, 1);
    /* Too small a buffer: the length needed, nothing written. */
    {
        IFD_SCARD_IO_HEADER pci = { 1, 8 };
        static const uint8_t cmd[] = { 0x00, 0x10, 0x00, 0x00 };
        uint8_t small[3] = { 0xAA, 0xAA, 0xAA };
        IFD_DWORD n = sizeof small;
        rv = p_transmit(c.lun, pci, (IFD_UCHAR *)(uintptr_t)cmd, 4, small, &n, NULL);
        CHECK_EQ(rv, IFD_ERROR_INSUFFICIENT_BUFFER);
        CHECK_EQ(n, 5);
        CHECK(small[0] == 0xAA);
    }
    /* "00 after the header, then one byte": no lengths to read past the
     * command (a heap copy of its exact size, for valgrind). */
    {
        static const uint8_t odd[] = { 0x00, 0xB0, 0x00, 0x00, 0x00, 0x01 };
        uint8_t *cmd = malloc(sizeof odd);
        CHECK(cmd != NULL);
        if (cmd != NULL) {
            memcpy(cmd, odd, sizeof odd);
            card_answer(&c, "67 00");
            rv = xmit(c.lun, 1, cmd, sizeof odd, rx, &rx_len);
            CHECK_EQ(rv, IFD_SUCCESS);
            CHECK(sw_is(rx, rx_len, 0x67, 0x00));
            free(cmd);
        }
    }
    CHECK_EQ(p_close(c.lun), IFD_SUCCESS);
    CHECK_EQ(c.releases, 1);
}

static void test_t0_framing(void)
{
    test_card c;
    uint8_t rx[300];
    IFD_DWORD rx_len;
    IFD_RESPONSECODE rv;
    int before;

    card_init(&c, 0x11);
    CHECK_EQ(p_create(c.lun, "sim:x"), IFD_SUCCESS);
    CHECK_EQ(insert(&c, ATR_T0, sizeof ATR_T0), IFD_SUCCESS);
    CHECK_EQ(power(c.lun, IFD_POWER_UP), IFD_SUCCESS);

    /* Case 4 answered with data: 61xx, the data waits for GET RESPONSE. */
    card_answer(&c, "0A 0B 0C 0D 0E 62 83");
    X(c.lun, 0, 0x80, 0x10, 0x00, 0x00, 0x01, 0x55, 0x00);
    CHECK_EQ(rv, IFD_SUCCESS);
    CHECK_EQ(rx_len, 2);
    CHECK(sw_is(rx, rx_len, 0x61, 0x05));
    before = c.apdus;
    X(c.lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x08);   /* Le too long: 6C05, kept */
    CHECK(sw_is(rx, rx_len, 0x6C, 0x05));
    CHECK_EQ(rx_len, 2);
    X(c.lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x02);   /* two bytes, 61 03 */
    CHECK_EQ(rx_len, 4);
    CHECK(rx[0] == 0x0A && rx[1] == 0x0B && sw_is(rx, rx_len, 0x61, 0x03));
    X(c.lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x03);   /* the rest, with the card's SW */
    CHECK_EQ(rx_len, 5);
    CHECK(rx[0] == 0x0C && rx[2] == 0x0E && sw_is(rx, rx_len, 0x62, 0x83));
    CHECK_EQ(c.apdus, before);                   /* the card saw none of them */
    /* Nothing pending: GET RESPONSE goes to the card. */
    card_answer(&c, "69 85");
    X(c.lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x02);
    CHECK(sw_is(rx, rx_len, 0x69, 0x85));
    CHECK_EQ(c.apdus, before + 1);

    /* Case 2 with fewer bytes than Le: 6Cxx; exactly Le: as is. */
    card_answer(&c, "01 02 03 90 00");
    X(c.lun, 0, 0x00, 0xB0, 0x00, 0x00, 0x10);
    CHECK_EQ(rx_len, 2);
    CHECK(sw_is(rx, rx_len, 0x6C, 0x03));
    X(c.lun, 0, 0x00, 0xB0, 0x00, 0x00, 0x03);
    CHECK_EQ(rx_len, 5);
    CHECK(sw_is(rx, rx_len, 0x90, 0x00));
    /* More than Le: Le bytes and 61xx for the rest. */
    X(c.lun, 0, 0x00, 0xB0, 0x00, 0x00, 0x01);
    CHECK_EQ(rx_len, 3);
    CHECK(rx[0] == 0x01 && sw_is(rx, rx_len, 0x61, 0x02));
    /* Another command drops the pending data. */
    card_answer(&c, "90 00");
    X(c.lun, 0, 0x00, 0xA4, 0x00, 0x00);
    before = c.apdus;
    card_answer(&c, "69 85");
    X(c.lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x02);
    CHECK(sw_is(rx, rx_len, 0x69, 0x85));
    CHECK_EQ(c.apdus, before + 1);
    /* Extended APDUs: 6700 from the reader, the card is not called. */
    before = c.apdus;
    X(c.lun, 0, 0x00, 0xB0, 0x00, 0x00, 0x00, 0x01, 0x00);
    CHECK(sw_is(rx, rx_len, 0x67, 0x00));
    CHECK_EQ(c.apdus, before);
    /* A reset drops pending data. */
    card_answer(&c, "0A 0B 90 00");
    X(c.lun, 0, 0x80, 0x10, 0x00, 0x00, 0x01, 0x55);
    CHECK(sw_is(rx, rx_len, 0x61, 0x02));
    CHECK_EQ(power(c.lun, IFD_RESET), IFD_SUCCESS);
    before = c.apdus;
    card_answer(&c, "69 85");
    X(c.lun, 0, 0x00, 0xC0, 0x00, 0x00, 0x02);
    CHECK(sw_is(rx, rx_len, 0x69, 0x85));
    CHECK_EQ(c.apdus, before + 1);
    /* The T=0 card refuses T=1. */
    X(c.lun, 1, 0x00, 0xC0, 0x00, 0x00, 0x02);
    CHECK_EQ(rv, IFD_PROTOCOL_NOT_SUPPORTED);
    CHECK_EQ(p_close(c.lun), IFD_SUCCESS);
    CHECK_EQ(c.releases, 1);
}

static void test_malformed_and_failures(void)
{
    test_card c;
    uint8_t rx[300];
    IFD_DWORD rx_len;
    IFD_RESPONSECODE rv;

    card_init(&c, 0x12);
    CHECK_EQ(p_create(c.lun, "sim:x"), IFD_SUCCESS);
    CHECK_EQ(insert(&c, ATR_T1, sizeof ATR_T1), IFD_SUCCESS);
    CHECK_EQ(power(c.lun, IFD_POWER_UP), IFD_SUCCESS);
    /* Fewer than 2 bytes: an empty response. */
    card_answer(&c, "90");
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00);
    CHECK_EQ(rv, IFD_SUCCESS);
    CHECK_EQ(rx_len, 0);
    /* 257 data bytes to a short APDU. */
    memset(c.answer, 0x11, 259);
    c.answer_len = 259;
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00, 0x00);
    CHECK_EQ(rv, IFD_SUCCESS);
    CHECK_EQ(rx_len, 0);
    /* ... which an extended one may have. */
    {
        static const uint8_t cmd[] = { 0x00, 0x10, 0x00, 0x00, 0x00, 0x01, 0x03 };
        uint8_t big[400];
        IFD_SCARD_IO_HEADER pci = { 1, 8 };
        IFD_DWORD n = sizeof big;
        rv = p_transmit(c.lun, pci, (IFD_UCHAR *)(uintptr_t)cmd, sizeof cmd, big, &n, NULL);
        CHECK_EQ(rv, IFD_SUCCESS);
        CHECK_EQ(n, 259);
    }
    /* A card claiming more than its buffer. */
    c.answer_claim = (long)SIM_EXT_MAX_RESPONSE + 1;
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00);
    CHECK_EQ(rv, IFD_SUCCESS);
    CHECK_EQ(rx_len, 0);
    c.answer_claim = 0;
    c.answer_rc = SIM_EXT_E_MALFORMED;
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00);
    CHECK_EQ(rv, IFD_SUCCESS);
    CHECK_EQ(rx_len, 0);
    c.answer_rc = SIM_EXT_E_FAILED;
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00);
    CHECK_EQ(rv, IFD_COMMUNICATION_ERROR);
    c.answer_rc = SIM_EXT_E_TIMEOUT;
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00);
    CHECK_EQ(rv, IFD_RESPONSE_TIMEOUT);
    /* Still usable. */
    card_answer(&c, "90 00");
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00);
    CHECK_EQ(rv, IFD_SUCCESS);
    CHECK(sw_is(rx, rx_len, 0x90, 0x00));
    /* Gone: removed, released. */
    c.answer_rc = SIM_EXT_E_GONE;
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00);
    CHECK_EQ(rv, IFD_ICC_NOT_PRESENT);
    CHECK_EQ(p_presence(c.lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(c.releases, 1);
    CHECK_EQ(p_close(c.lun), IFD_SUCCESS);
    CHECK_EQ(c.releases, 1);
}

static void test_no_lock_held(void)
{
    test_card c;
    uint8_t rx[300];
    IFD_DWORD rx_len;
    IFD_RESPONSECODE rv;

    card_init(&c, 0x13);
    CHECK_EQ(p_create(c.lun, "sim:x"), IFD_SUCCESS);
    CHECK_EQ(insert(&c, ATR_T1, sizeof ATR_T1), IFD_SUCCESS);
    CHECK_EQ(power(c.lun, IFD_POWER_UP), IFD_SUCCESS);
    card_answer(&c, "90 00");
    c.counters_rc = -1;
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00);
    CHECK_EQ(rv, IFD_SUCCESS);
    CHECK_EQ(c.counters_rc, IFD_SUCCESS);
    /* The card removes itself: the call's answer is lost with it, and the
     * release waits for the call to end. */
    c.remove_self = 1;
    c.counters_rc = -1;
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00);
    CHECK_EQ(rv, IFD_ICC_NOT_PRESENT);  /* removed during the call: answer lost */
    CHECK_EQ(c.releases_seen_inside, 0);
    CHECK_EQ(c.releases, 1);
    CHECK_EQ(p_presence(c.lun), IFD_ICC_NOT_PRESENT);
    CHECK_EQ(p_close(c.lun), IFD_SUCCESS);
    CHECK_EQ(c.releases, 1);
}

static void test_power_hooks(void)
{
    test_card c, d;
    uint8_t rx[300];
    IFD_DWORD rx_len;
    IFD_RESPONSECODE rv;
    static const int want[] = { SIM_EXT_OP_POWER_UP, SIM_EXT_OP_RESET_WARM,
                                SIM_EXT_OP_RESET_COLD, SIM_EXT_OP_APDU,
                                SIM_EXT_OP_POWER_DOWN, SIM_EXT_OP_POWER_UP };
    int i;

    card_init(&c, 0x14);
    CHECK_EQ(p_create(c.lun, "sim:x"), IFD_SUCCESS);
    CHECK_EQ(insert(&c, ATR_T1, sizeof ATR_T1), IFD_SUCCESS);
    CHECK_EQ(power(c.lun, IFD_POWER_DOWN), IFD_SUCCESS);  /* unpowered: no call */
    CHECK_EQ(power(c.lun, IFD_POWER_UP), IFD_SUCCESS);
    CHECK_EQ(power(c.lun, IFD_RESET), IFD_SUCCESS);
    CHECK_EQ(power(c.lun, IFD_POWER_UP), IFD_SUCCESS);    /* powered: cold reset */
    CHECK_EQ(p_setproto(c.lun, 2, 0, 0, 0, 0), IFD_SUCCESS);
    card_answer(&c, "90 00");
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00);
    CHECK_EQ(power(c.lun, IFD_POWER_DOWN), IFD_SUCCESS);
    CHECK_EQ(power(c.lun, IFD_RESET), IFD_SUCCESS);       /* unpowered: power-up */
    CHECK_EQ(c.n_ops, (int)(sizeof want / sizeof want[0]));
    for (i = 0; i < c.n_ops && i < (int)(sizeof want / sizeof want[0]); i++)
        CHECK_EQ(c.ops[i], want[i]);
    /* A failing power-up hook: the card stays unpowered. */
    CHECK_EQ(power(c.lun, IFD_POWER_DOWN), IFD_SUCCESS);
    c.power_rc = SIM_EXT_E_FAILED;
    CHECK_EQ(power(c.lun, IFD_POWER_UP), IFD_COMMUNICATION_ERROR);
    X(c.lun, 1, 0x00, 0x10, 0x00, 0x00);
    CHECK_EQ(rv, IFD_COMMUNICATION_ERROR);                /* unpowered */
    c.power_rc = 0;
    CHECK_EQ(power(c.lun, IFD_POWER_UP), IFD_SUCCESS);
    /* A swap releases the old card; removal the new one. */
    card_init(&d, c.lun);
    CHECK_EQ(insert(&d, ATR_T0, sizeof ATR_T0), IFD_SUCCESS);
    CHECK_EQ(c.releases, 1);
    CHECK_EQ(d.releases, 0);
    CHECK_EQ(p_control(c.lun, CTL(SIM_CTL_REMOVE), NULL, 0, NULL, 0, NULL), IFD_SUCCESS);
    CHECK_EQ(d.releases, 1);
    CHECK_EQ(p_close(c.lun), IFD_SUCCESS);
    CHECK_EQ(c.releases, 1);
    CHECK_EQ(d.releases, 1);
}

static void test_insert_errors(void)
{
    test_card c;

    card_init(&c, 0x15);
    /* No such LUN, bad ATRs: refused, and released all the same. */
    CHECK_EQ(insert(&c, ATR_T1, sizeof ATR_T1), IFD_NO_SUCH_DEVICE);
    CHECK_EQ(c.releases, 1);
    CHECK_EQ(p_create(c.lun, "sim:x"), IFD_SUCCESS);
    CHECK_EQ(insert(&c, ATR_T1, 1), IFD_COMMUNICATION_ERROR);
    CHECK_EQ(c.releases, 2);
    {
        uint8_t long_atr[34] = { 0x3B };
        CHECK_EQ(insert(&c, long_atr, sizeof long_atr), IFD_COMMUNICATION_ERROR);
        CHECK_EQ(c.releases, 3);
    }
    CHECK_EQ(p_insert(c.lun, NULL, card_release, &c, ATR_T1, sizeof ATR_T1),
             IFD_COMMUNICATION_ERROR);
    CHECK_EQ(c.releases, 4);
    CHECK_EQ(p_presence(c.lun), IFD_ICC_NOT_PRESENT);
    /* Inserting the built-in card over an external one releases it. */
    CHECK_EQ(insert(&c, ATR_T1, sizeof ATR_T1), IFD_SUCCESS);
    CHECK_EQ(p_control(c.lun, CTL(SIM_CTL_INSERT), NULL, 0, NULL, 0, NULL), IFD_SUCCESS);
    CHECK_EQ(c.releases, 5);
    CHECK_EQ(p_close(c.lun), IFD_SUCCESS);
    CHECK_EQ(c.releases, 5);
}

/* ---- threads: transmits racing swaps and closes ---------------------------- */

enum { THREAD_ROUNDS = 300, THREAD_CARDS = 8 };

static volatile int g_stop;

static void *transmitter(void *arg)
{
    IFD_DWORD lun = *(IFD_DWORD *)arg;
    uint8_t rx[300];
    IFD_DWORD rx_len;
    static const uint8_t cmd[] = { 0x00, 0x10, 0x00, 0x00 };
    while (!__atomic_load_n(&g_stop, __ATOMIC_ACQUIRE)) {
        (void)power(lun, IFD_POWER_UP);
        (void)xmit(lun, 1, cmd, sizeof cmd, rx, &rx_len);
        (void)power(lun, IFD_POWER_DOWN);
        sched_yield();  /* valgrind runs one thread at a time: let the swapper in */
    }
    return NULL;
}

static void test_threads(void)
{
    test_card cards[THREAD_CARDS];
    pthread_t th[2];
    IFD_DWORD lun = 0x16;
    int i, total = 0, inserted = 0;

    for (i = 0; i < THREAD_CARDS; i++) {
        card_init(&cards[i], lun);
        card_answer(&cards[i], "90 00");
    }
    CHECK_EQ(p_create(lun, "sim:x"), IFD_SUCCESS);
    g_stop = 0;
    for (i = 0; i < 2; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, transmitter, &lun), 0);
    for (i = 0; i < THREAD_ROUNDS; i++) {
        test_card *c = &cards[i % THREAD_CARDS];
        if (insert(c, ATR_T1, sizeof ATR_T1) == IFD_SUCCESS)
            inserted++;
        if (i % 3 == 0)
            (void)p_control(lun, CTL(SIM_CTL_REMOVE), NULL, 0, NULL, 0, NULL);
    }
    __atomic_store_n(&g_stop, 1, __ATOMIC_RELEASE);
    for (i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(p_close(lun), IFD_SUCCESS);
    for (i = 0; i < THREAD_CARDS; i++) {
        pthread_mutex_lock(&cards[i].lock);
        total += cards[i].releases;
        pthread_mutex_unlock(&cards[i].lock);
    }
    CHECK_EQ(inserted, THREAD_ROUNDS);
    CHECK_EQ(total, THREAD_ROUNDS);   /* every card released exactly once */
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : getenv("SCARDIO_SIM_LIB");
    void *h;

    if (path == NULL)
        path = "libscardio_sim.so";
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
        printf("0 passed, 1 failed\n");
        return 1;
    }
    if (load(h) == 0) {
        CHECK(dlsym(h, "sim_ext_insert") == NULL);   /* internals stay hidden */
        CHECK(dlsym(h, "sim_ext_frame") == NULL);
        test_t1_pass_through();
        test_t0_framing();
        test_malformed_and_failures();
        test_no_lock_held();
        test_power_hooks();
        test_insert_errors();
        test_threads();
    }
    dlclose(h);
    return check_report();
}
