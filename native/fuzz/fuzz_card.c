/*
 * fuzz_card.c - libFuzzer target: the simulated card's APDU processing
 * (native/sim/card.c), the code behind every simulated TRANSMIT.
 *
 * Input: u8 flags (bit 0: T=1, bit 1: custom ATR), [u8 atr_len, atr],
 * then records: u16 resp_cap | u16 apdu_len | apdu.  Each response buffer is
 * an exact-size heap block, so ASan catches any write past resp_cap; the
 * returned length must be >= 2 (a status word) and, when it fits, the bytes
 * are written; when it does not fit, nothing may change (the same command
 * with a large buffer then gives the same answer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sim/card.h"

static sim_card card, shadow;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t flags;
    int steps = 0;
    if (size < 1)
        return 0;
    flags = data[0];
    data++; size--;
    if ((flags & 2) && size >= 1) {
        size_t n = data[0] % 40; /* also > 33: truncated by sim_card_init */
        data++; size--;
        if (n > size)
            n = size;
        sim_card_init(&card, data, n);
        data += n; size -= n;
    } else {
        sim_card_init(&card, NULL, 0);
    }
    sim_card_reset(&card);
    sim_card_set_protocol(&card, flags & 1);
    while (size >= 4 && steps++ < 32) {
        size_t cap = (size_t)data[0] | (size_t)data[1] << 8;
        size_t n = (size_t)data[2] | (size_t)data[3] << 8;
        uint8_t *apdu, *resp;
        size_t len;
        data += 4; size -= 4;
        if (n > size)
            n = size;
        apdu = malloc(n ? n : 1);
        resp = malloc(cap ? cap : 1);
        if (!apdu || !resp) {
            free(apdu);
            free(resp);
            return 0;
        }
        memcpy(apdu, data, n);
        data += n; size -= n;
        memcpy(&shadow, &card, sizeof card);
        len = sim_card_process(&card, apdu, n, resp, cap);
        if (len < 2 || len > 65537)
            abort();
        if (len > cap && memcmp(&shadow, &card, sizeof card) != 0)
            abort(); /* a response that did not fit changed the card */
        free(apdu);
        free(resp);
    }
    return 0;
}
