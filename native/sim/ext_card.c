/*
 * ext_card.c - T=0 framing around an external card (see ext_card.h).
 *
 * Pure C11, no threads, no allocation: the caller serialises calls on one
 * sim_ext_t0 (the reader does, with the card's own lock).
 */
#include <string.h>

#include "ext_card.h"

/* Lengths of one command APDU (ISO 7816-3 12.1.3). */
typedef struct {
    size_t nc;     /* command data bytes */
    size_t ne;     /* expected response bytes (0: no Le) */
    int has_le;
    int extended;
    int valid;     /* the lengths are consistent */
} apdu_lengths;

static apdu_lengths lengths_of(const uint8_t *a, size_t len)
{
    apdu_lengths l;
    size_t body;

    memset(&l, 0, sizeof(l));
    if (len < 4)
        return l;
    body = len - 4;
    l.valid = 1;
    if (body == 0)
        return l;                                   /* case 1 */
    if (body == 1) {                                /* case 2S */
        l.has_le = 1;
        l.ne = a[4] ? a[4] : 256;
        return l;
    }
    if (a[4] != 0) {                                /* case 3S / 4S */
        l.nc = a[4];
        if (body == 1 + l.nc)
            return l;
        if (body == 2 + l.nc) {
            l.has_le = 1;
            l.ne = a[5 + l.nc] ? a[5 + l.nc] : 256;
            return l;
        }
        l.valid = 0;
        return l;
    }
    l.extended = 1;                                 /* 00 after the header */
    if (body == 3) {                                /* case 2E */
        size_t le = ((size_t)a[5] << 8) | a[6];
        l.has_le = 1;
        l.ne = le ? le : 65536;
        return l;
    }
    if (body < 3) {                                 /* 00 and one byte */
        l.valid = 0;
        return l;
    }
    l.nc = ((size_t)a[5] << 8) | a[6];
    if (l.nc == 0) {
        l.valid = 0;
        return l;
    }
    if (body == 3 + l.nc)                           /* case 3E */
        return l;
    if (body == 5 + l.nc) {                         /* case 4E */
        size_t le = ((size_t)a[7 + l.nc] << 8) | a[8 + l.nc];
        l.has_le = 1;
        l.ne = le ? le : 65536;
        return l;
    }
    l.valid = 0;
    return l;
}

int sim_ext_is_extended(const uint8_t *cmd, size_t cmd_len)
{
    return cmd != NULL && cmd_len > 5 && cmd[4] == 0;
}

static size_t put_sw(uint8_t *resp, size_t cap, size_t n, uint8_t sw1, uint8_t sw2)
{
    if (n + 2 > cap)
        return n + 2;
    resp[n] = sw1;
    resp[n + 1] = sw2;
    return n + 2;
}

/* 61xx for `rest` bytes still available (00 means 256 or more). */
static uint8_t more_count(size_t rest)
{
    return (uint8_t)(rest >= 256 ? 0 : rest);
}

size_t sim_ext_t0_before(sim_ext_t0 *s, const uint8_t *cmd, size_t cmd_len,
                         uint8_t *resp, size_t cap)
{
    size_t ne, rest;

    if (cmd == NULL)
        cmd_len = 0;
    if (resp == NULL)
        cap = 0;
    if (s->pending_len == 0)
        return 0;
    if (cmd_len < 2 || cmd[0] != 0x00 || cmd[1] != 0xC0) {
        s->pending_len = 0;                /* any other command drops it */
        return 0;
    }
    if (cmd_len != 5 || cmd[2] != 0 || cmd[3] != 0)
        return 0;                          /* the card answers the odd form */
    ne = cmd[4] ? cmd[4] : 256;
    if (ne > s->pending_len)               /* Le too long: the exact length */
        return put_sw(resp, cap, 0, 0x6C, (uint8_t)s->pending_len);
    if (ne + 2 > cap)
        return ne + 2;
    memcpy(resp, s->pending, ne);
    rest = s->pending_len - ne;
    memmove(s->pending, s->pending + ne, rest);
    s->pending_len = rest;
    if (rest == 0)
        return put_sw(resp, cap, ne, s->sw1, s->sw2);
    return put_sw(resp, cap, ne, 0x61, more_count(rest));
}

size_t sim_ext_frame(sim_ext_t0 *s, int t, const uint8_t *cmd, size_t cmd_len,
                     const uint8_t *ans, size_t ans_len, uint8_t *resp, size_t cap)
{
    apdu_lengths l;
    size_t n, max_data;

    if (cmd == NULL)
        cmd_len = 0;
    if (resp == NULL)
        cap = 0;
    if (ans == NULL || ans_len < 2)
        return 0;
    n = ans_len - 2;
    l = lengths_of(cmd, cmd_len);
    max_data = sim_ext_is_extended(cmd, cmd_len) ? 65536u : 256u;
    if (n > max_data || (t == 0 && n > sizeof(s->pending)))
        return 0;
    if (t != 0 || n == 0) {
        if (ans_len > cap)
            return ans_len;
        memcpy(resp, ans, ans_len);
        return ans_len;
    }
    /* T=0 with data to return. */
    if (l.valid && l.has_le && l.nc == 0) {         /* case 2 */
        size_t rest;
        if (n < l.ne)
            return put_sw(resp, cap, 0, 0x6C, (uint8_t)n);
        if (n == l.ne) {
            if (ans_len > cap)
                return ans_len;
            memcpy(resp, ans, ans_len);
            return ans_len;
        }
        /* More than asked: Ne bytes now, the rest for GET RESPONSE. */
        rest = n - l.ne;
        if (l.ne + 2 > cap)
            return l.ne + 2;
        memcpy(resp, ans, l.ne);
        memcpy(s->pending, ans + l.ne, rest);
        s->pending_len = rest;
        s->sw1 = ans[n];
        s->sw2 = ans[n + 1];
        return put_sw(resp, cap, l.ne, 0x61, more_count(rest));
    }
    /* Case 1, 3 or 4 (or lengths the card had to refuse): T=0 cannot carry
     * data back with this command; it waits for GET RESPONSE. */
    if (cap < 2)
        return 2;
    memcpy(s->pending, ans, n);
    s->pending_len = n;
    s->sw1 = ans[n];
    s->sw2 = ans[n + 1];
    return put_sw(resp, cap, 0, 0x61, more_count(n));
}
