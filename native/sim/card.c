/*
 * card.c - the simulated card (see card.h and README.md in this directory).
 *
 * Pure C11: no threads, no allocation, no OS calls, so the same file builds
 * into the IFD-handler library and into the Windows WDM driver.
 *
 * A command either fits in the caller's buffer and is executed, or it does
 * not fit and nothing happens at all (no file update, no random bytes
 * consumed, no pending data dropped): the caller may retry with a larger
 * buffer and get the same answer.
 */
#include <string.h>

#include "card.h"

/* Largest data field of one response: extended Ne = 65536 is capped so that
 * data + SW1 SW2 stays within 65535 + 2 bytes. */
#define MAX_RESP_DATA 65535u

/* Selected EF (card.selected). */
enum { SEL_NONE = 0, SEL_EF_MF = 1, SEL_EF_APP = 2 };

/* Status words. */
#define SW_OK                 0x9000u
#define SW_EOF_WARNING        0x6282u /* end of file before Ne bytes */
#define SW_WRONG_LENGTH       0x6700u
#define SW_CHANNEL_UNSUPP     0x6881u
#define SW_SM_UNSUPP          0x6882u
#define SW_CHAINING_UNSUPP    0x6884u
#define SW_COND_NOT_SATISFIED 0x6985u
#define SW_NO_EF_SELECTED     0x6986u
#define SW_FILE_NOT_FOUND     0x6A82u
#define SW_NOT_ENOUGH_SPACE   0x6A84u
#define SW_WRONG_P1P2         0x6A86u
#define SW_WRONG_OFFSET       0x6B00u
#define SW_INS_UNSUPP         0x6D00u
#define SW_CLA_UNSUPP         0x6E00u

/* One parsed command APDU. */
typedef struct {
    uint8_t cla, ins, p1, p2;
    const uint8_t *data;
    size_t nc;       /* command data length */
    size_t ne;       /* expected response length (0 when Le absent) */
    int has_le;
    int extended;
} apdu_t;

static const uint8_t default_atr[] = SIM_ATR_T1;
static const uint8_t sim_aid[] = SIM_AID;

/* First transmission protocol offered by an ATR: TD1's T, or T=0 when there
 * is no TD1 (ISO 7816-3).  Only 0 or 1 is returned: the card speaks those. */
static int atr_first_protocol(const uint8_t *atr, size_t len)
{
    size_t i = 2;
    uint8_t y;

    if (len < 2)
        return 0;
    y = (uint8_t)(atr[1] >> 4);
    if (y & 1) i++;
    if (y & 2) i++;
    if (y & 4) i++;
    if (!(y & 8) || i >= len)
        return 0;
    return (atr[i] & 0x0F) == 1 ? 1 : 0;
}

void sim_card_init(sim_card *c, const uint8_t *atr, size_t atr_len)
{
    size_t i;

    memset(c, 0, sizeof(*c));
    if (atr == NULL || atr_len == 0) {
        atr = default_atr;
        atr_len = sizeof(default_atr);
    }
    if (atr_len > SIM_CARD_MAX_ATR)
        atr_len = SIM_CARD_MAX_ATR;
    memcpy(c->atr, atr, atr_len);
    c->atr_len = atr_len;
    for (i = 0; i < SIM_EF_SIZE; i++) {
        c->ef_mf[i] = (uint8_t)(i & 0xFF);
        c->ef_app[i] = (uint8_t)(i & 0xFF);
    }
    /* Fixed non-zero seed: runs are reproducible (xorshift32 needs != 0). */
    c->rng = 0x5CA2D10u;
    sim_card_reset(c);
}

void sim_card_reset(sim_card *c)
{
    c->selected = SEL_NONE;
    c->app_selected = 0;     /* after reset the MF is the current DF */
    c->pending_len = 0;
    c->protocol = atr_first_protocol(c->atr, c->atr_len);
}

void sim_card_set_protocol(sim_card *c, int t)
{
    c->protocol = (t == 1) ? 1 : 0;
    /* GET RESPONSE data belongs to the T=0 exchange that produced it. */
    c->pending_len = 0;
}

/* ---- helpers ------------------------------------------------------------ */

/* Write SW after n data bytes already in resp; the caller checked the fit. */
static size_t put_sw(uint8_t *resp, size_t n, unsigned sw)
{
    resp[n] = (uint8_t)(sw >> 8);
    resp[n + 1] = (uint8_t)(sw & 0xFF);
    return n + 2;
}

/* A response made of a status word only. */
static size_t sw_only(uint8_t *resp, size_t cap, unsigned sw)
{
    if (cap < 2)
        return 2;
    return put_sw(resp, 0, sw);
}

/* ISO 7816-3 12.1.3 decoding of the body after the 4-byte header.
 * Returns 0 on success, -1 when the lengths are inconsistent. */
static int parse_apdu(const uint8_t *a, size_t len, apdu_t *out)
{
    size_t body;

    memset(out, 0, sizeof(*out));
    if (len < 4)
        return -1;
    out->cla = a[0];
    out->ins = a[1];
    out->p1 = a[2];
    out->p2 = a[3];
    body = len - 4;
    if (body == 0)                      /* case 1 */
        return 0;
    if (body == 1) {                    /* case 2S */
        out->has_le = 1;
        out->ne = a[4] ? a[4] : 256;
        return 0;
    }
    if (a[4] != 0) {                    /* case 3S / 4S */
        size_t nc = a[4];
        out->data = a + 5;
        out->nc = nc;
        if (body == 1 + nc)
            return 0;
        if (body == 2 + nc) {
            out->has_le = 1;
            out->ne = a[5 + nc] ? a[5 + nc] : 256;
            return 0;
        }
        return -1;
    }
    /* a[4] == 0 and body >= 2: extended. */
    out->extended = 1;
    if (body == 3) {                    /* case 2E */
        size_t le = ((size_t)a[5] << 8) | a[6];
        out->has_le = 1;
        out->ne = le ? le : 65536;
        return 0;
    }
    if (body < 3)
        return -1;
    {
        size_t nc = ((size_t)a[5] << 8) | a[6];
        if (nc == 0)
            return -1;
        out->data = a + 7;
        out->nc = nc;
        if (body == 3 + nc)             /* case 3E */
            return 0;
        if (body == 5 + nc) {           /* case 4E */
            size_t le = ((size_t)a[7 + nc] << 8) | a[8 + nc];
            out->has_le = 1;
            out->ne = le ? le : 65536;
            return 0;
        }
    }
    return -1;
}

/* Class byte: 0 = interindustry, 1 = proprietary (0x80 family), or an SW
 * to reply with (>= 0x6000). */
static unsigned check_cla(uint8_t cla, int *proprietary)
{
    unsigned channel, sm, chaining;

    if (cla == 0xFF)
        return SW_CLA_UNSUPP;                 /* invalid per ISO 7816-4 */
    if ((cla & 0xE0) == 0x00 || (cla & 0xE0) == 0x80) {
        /* First interindustry layout (0x00-0x1F), reused by the 0x80-0x9F
         * proprietary family: b5 chaining, b4-b3 SM, b2-b1 channel. */
        *proprietary = (cla & 0x80) != 0;
        chaining = cla & 0x10;
        sm = (cla >> 2) & 0x03;
        channel = cla & 0x03;
    } else if ((cla & 0xC0) == 0x40) {
        /* Further interindustry (0x40-0x7F): channels 4-19, b6 SM. */
        *proprietary = 0;
        chaining = cla & 0x10;
        sm = (cla >> 5) & 0x01;
        channel = 4;
    } else {
        return SW_CLA_UNSUPP;                 /* 0x20-0x3F RFU, 0xA0-0xFE */
    }
    if (channel != 0)
        return SW_CHANNEL_UNSUPP;
    if (sm != 0)
        return SW_SM_UNSUPP;
    if (chaining != 0)
        return SW_CHAINING_UNSUPP;
    return 0;
}

static uint8_t *selected_ef(sim_card *c)
{
    if (c->selected == SEL_EF_MF)
        return c->ef_mf;
    if (c->selected == SEL_EF_APP)
        return c->ef_app;
    return NULL;
}

/* Response length of a command that produces n data bytes, capped. */
static size_t capped(size_t ne)
{
    return ne > MAX_RESP_DATA ? MAX_RESP_DATA : ne;
}

/* ---- commands ----------------------------------------------------------- */

static size_t cmd_select(sim_card *c, const apdu_t *a, uint8_t *resp, size_t cap)
{
    /* P2: b4-b3 response type (FCI/FCP/FMD/none, all answered with no data),
     * b2-b1 occurrence: only "first or only"; other bits RFU. */
    if ((a->p2 & ~0x0Cu) != 0)
        return sw_only(resp, cap, SW_WRONG_P1P2);
    if (a->p1 == 0x00) {
        unsigned fid;
        if (a->nc == 0) {                       /* empty data: the MF */
            fid = 0x3F00;
        } else if (a->nc == 2) {
            fid = ((unsigned)a->data[0] << 8) | a->data[1];
        } else {
            return sw_only(resp, cap, SW_WRONG_LENGTH);
        }
        if (cap < 2)
            return 2;
        if (fid == 0x3F00) {
            c->app_selected = 0;
            c->selected = SEL_NONE;
        } else if (fid == 0x2F01 && !c->app_selected) {
            c->selected = SEL_EF_MF;
        } else if (fid == 0x0101 && c->app_selected) {
            c->selected = SEL_EF_APP;
        } else {
            return put_sw(resp, 0, SW_FILE_NOT_FOUND);
        }
        return put_sw(resp, 0, SW_OK);
    }
    if (a->p1 == 0x04) {
        if (a->nc == 0 || a->nc > 16)
            return sw_only(resp, cap, SW_WRONG_LENGTH);
        if (cap < 2)
            return 2;
        if (a->nc != sizeof(sim_aid) || memcmp(a->data, sim_aid, sizeof(sim_aid)) != 0)
            return put_sw(resp, 0, SW_FILE_NOT_FOUND);
        c->app_selected = 1;
        c->selected = SEL_NONE;
        return put_sw(resp, 0, SW_OK);
    }
    return sw_only(resp, cap, SW_WRONG_P1P2);
}

/* P1-P2 as a 15-bit offset; P1 b8 set would mean a short EF identifier,
 * which this card does not support. */
static int binary_offset(const apdu_t *a, size_t *off)
{
    if (a->p1 & 0x80)
        return -1;
    *off = ((size_t)(a->p1 & 0x7F) << 8) | a->p2;
    return 0;
}

/* The selected EF and the offset P1 P2 name in it, for READ / UPDATE
 * BINARY: 0, or the status word that refuses the command. */
static unsigned locate_binary(sim_card *c, const apdu_t *a, uint8_t **ef, size_t *off)
{
    if ((*ef = selected_ef(c)) == NULL)
        return SW_NO_EF_SELECTED;
    if (binary_offset(a, off) != 0)
        return SW_WRONG_P1P2;
    if (*off >= SIM_EF_SIZE)
        return SW_WRONG_OFFSET;
    return 0;
}

static size_t cmd_read_binary(sim_card *c, const apdu_t *a, uint8_t *resp, size_t cap)
{
    uint8_t *ef;
    size_t off, rem, n;
    unsigned sw = SW_OK;

    if (!a->has_le || a->nc != 0)
        return sw_only(resp, cap, SW_WRONG_LENGTH);
    if ((sw = locate_binary(c, a, &ef, &off)) != 0)
        return sw_only(resp, cap, sw);
    sw = SW_OK;
    rem = SIM_EF_SIZE - off;
    n = capped(a->ne);
    if (n > rem) {
        /* T=0: tell the exact length (Le is then short, so rem < 256).
         * T=1: return what is left with the end-of-file warning. */
        if (c->protocol == 0)
            return sw_only(resp, cap, 0x6C00u | (unsigned)(rem & 0xFF));
        n = rem;
        sw = SW_EOF_WARNING;
    }
    if (n + 2 > cap)
        return n + 2;
    memcpy(resp, ef + off, n);
    return put_sw(resp, n, sw);
}

static size_t cmd_update_binary(sim_card *c, const apdu_t *a, uint8_t *resp, size_t cap)
{
    uint8_t *ef;
    size_t off;
    unsigned sw;

    if (a->nc == 0)
        return sw_only(resp, cap, SW_WRONG_LENGTH);
    if ((sw = locate_binary(c, a, &ef, &off)) != 0)
        return sw_only(resp, cap, sw);
    if (a->nc > SIM_EF_SIZE - off)
        return sw_only(resp, cap, SW_NOT_ENOUGH_SPACE);
    if (cap < 2)
        return 2;
    memcpy(ef + off, a->data, a->nc);
    return put_sw(resp, 0, SW_OK);
}

static uint32_t xorshift32(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

static size_t cmd_get_challenge(sim_card *c, const apdu_t *a, uint8_t *resp, size_t cap)
{
    size_t n, i;

    if (!a->has_le || a->nc != 0)
        return sw_only(resp, cap, SW_WRONG_LENGTH);
    if (a->p1 != 0 || a->p2 != 0)
        return sw_only(resp, cap, SW_WRONG_P1P2);
    n = capped(a->ne);
    if (n + 2 > cap)
        return n + 2;
    for (i = 0; i < n; i++)
        resp[i] = (uint8_t)(xorshift32(&c->rng) >> 24);
    return put_sw(resp, n, SW_OK);
}

static size_t cmd_get_response(sim_card *c, const apdu_t *a, uint8_t *resp, size_t cap)
{
    size_t n, rest;

    if (!a->has_le || a->nc != 0)
        return sw_only(resp, cap, SW_WRONG_LENGTH);
    if (a->p1 != 0 || a->p2 != 0)
        return sw_only(resp, cap, SW_WRONG_P1P2);
    if (c->pending_len == 0)
        return sw_only(resp, cap, SW_COND_NOT_SATISFIED);
    n = a->ne;
    if (n > c->pending_len) {
        /* Le too long: T=0 says how much there is and keeps it. */
        if (c->protocol == 0)
            return sw_only(resp, cap, 0x6C00u | (unsigned)(c->pending_len & 0xFF));
        n = c->pending_len;
    }
    if (n + 2 > cap)
        return n + 2;
    memcpy(resp, c->pending, n);
    rest = c->pending_len - n;
    memmove(c->pending, c->pending + n, rest);
    c->pending_len = rest;
    if (rest == 0)
        return put_sw(resp, n, SW_OK);
    return put_sw(resp, n, 0x6100u | (unsigned)((rest > 256 ? 256 : rest) & 0xFF));
}

/* Byte i of the ECHO response. */
static uint8_t echo_byte(const apdu_t *a, size_t i)
{
    if (a->nc == 0)
        return (uint8_t)(i & 0xFF);
    return a->data[i % a->nc];
}

static size_t cmd_echo(sim_card *c, const apdu_t *a, uint8_t *resp, size_t cap)
{
    size_t n = capped(a->ne), i;

    if (c->protocol == 0 && a->nc != 0 && n != 0) {
        /* T=0 case 4: the data waits for GET RESPONSE (short Ne <= 256). */
        if (n > sizeof(c->pending))
            n = sizeof(c->pending);
        if (cap < 2)
            return 2;
        for (i = 0; i < n; i++)
            c->pending[i] = echo_byte(a, i);
        c->pending_len = n;
        return put_sw(resp, 0, 0x6100u | (unsigned)((n > 256 ? 256 : n) & 0xFF));
    }
    if (n + 2 > cap)
        return n + 2;
    for (i = 0; i < n; i++)
        resp[i] = echo_byte(a, i);
    return put_sw(resp, n, SW_OK);
}

size_t sim_card_process(sim_card *c, const uint8_t *apdu, size_t apdu_len,
                        uint8_t *resp, size_t resp_cap)
{
    apdu_t a;
    int proprietary = 0;
    unsigned sw;
    size_t saved_pending, out;

    if (resp == NULL)
        resp_cap = 0;
    if (apdu == NULL)
        apdu_len = 0;

    if (apdu_len < 4) {
        out = sw_only(resp, resp_cap, SW_WRONG_LENGTH);
        if (out <= resp_cap)
            c->pending_len = 0;
        return out;
    }
    sw = check_cla(apdu[0], &proprietary);

    /* Every command except GET RESPONSE drops pending T=0 data; restored
     * below when the response does not fit (no side effect then). */
    saved_pending = c->pending_len;
    if (sw != 0 || proprietary || apdu[1] != 0xC0)
        c->pending_len = 0;

    if (sw != 0) {
        out = sw_only(resp, resp_cap, sw);
        goto done;
    }
    if (parse_apdu(apdu, apdu_len, &a) != 0
        || (a.extended && c->protocol == 0)) {   /* extended needs T=1 */
        out = sw_only(resp, resp_cap, SW_WRONG_LENGTH);
        goto done;
    }
    if (proprietary) {
        if (a.ins == SIM_INS_ECHO)
            out = cmd_echo(c, &a, resp, resp_cap);
        else
            out = sw_only(resp, resp_cap, SW_INS_UNSUPP);
        goto done;
    }
    switch (a.ins) {
    case 0xA4: out = cmd_select(c, &a, resp, resp_cap); break;
    case 0xB0: out = cmd_read_binary(c, &a, resp, resp_cap); break;
    case 0xD6: out = cmd_update_binary(c, &a, resp, resp_cap); break;
    case 0x84: out = cmd_get_challenge(c, &a, resp, resp_cap); break;
    case 0xC0: out = cmd_get_response(c, &a, resp, resp_cap); break;
    default:   out = sw_only(resp, resp_cap, SW_INS_UNSUPP); break;
    }
done:
    if (out > resp_cap)
        c->pending_len = saved_pending;
    return out;
}

uint32_t sim_card_protocols(const sim_card *c, uint32_t *first)
{
    uint32_t mask = 0, dflt = 1;
    size_t i = 2;
    uint8_t y;
    int level = 1;

    if (c->atr_len >= 2) {
        y = (uint8_t)(c->atr[1] >> 4);
        for (;;) {
            unsigned t;
            if (y & 1) i++;
            if (y & 2) i++;
            if (y & 4) i++;
            if (!(y & 8) || i >= c->atr_len)
                break;
            t = c->atr[i] & 0x0Fu;
            y = (uint8_t)(c->atr[i] >> 4);
            i++;
            if (t <= 1)
                mask |= 1u << t;
            if (level == 1) /* TD1 names the default protocol */
                dflt = t <= 1 ? 1u << t : 0;
            level++;
        }
    }
    if (first)
        *first = dflt;
    return level == 1 ? 1u : mask; /* no TD1: T=0 only */
}
