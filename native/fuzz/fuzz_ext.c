/*
 * fuzz_ext.c - libFuzzer target: the T=0 framing the simulated reader puts
 * around an external card (native/sim/ext_card.c), with any command, any
 * card answer and any response buffer.
 *
 * Input: u8 flags (bit 0: T=1), then records: u16 resp_cap | u16 cmd_len |
 * u16 ans_len | cmd | ans.  Buffers are exact-size heap blocks, so ASan
 * catches any access past them.  A returned length larger than resp_cap
 * means nothing was written; the pending data never exceeds its buffer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sim/ext_card.h"

static size_t take(const uint8_t **data, size_t *size, size_t n)
{
    if (n > *size)
        n = *size;
    *data += n;
    *size -= n;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sim_ext_t0 s;
    int t, steps = 0;

    if (size < 1)
        return 0;
    t = data[0] & 1;
    data++; size--;
    memset(&s, 0, sizeof s);
    while (size >= 6 && steps++ < 32) {
        size_t cap = (size_t)data[0] | (size_t)data[1] << 8;
        size_t cmd_len = (size_t)data[2] | (size_t)data[3] << 8;
        size_t ans_len = (size_t)data[4] | (size_t)data[5] << 8;
        const uint8_t *p;
        uint8_t *cmd, *ans, *resp;
        size_t n;
        data += 6; size -= 6;
        p = data;
        cmd_len = take(&data, &size, cmd_len);
        cmd = malloc(cmd_len ? cmd_len : 1);
        memcpy(cmd, p, cmd_len);
        p = data;
        ans_len = take(&data, &size, ans_len);
        ans = malloc(ans_len ? ans_len : 1);
        memcpy(ans, p, ans_len);
        resp = malloc(cap ? cap : 1);
        n = t == 0 ? sim_ext_t0_before(&s, cmd, cmd_len, resp, cap) : 0;
        if (n == 0)
            n = sim_ext_frame(&s, t, cmd, cmd_len, ans, ans_len, resp, cap);
        if (n > SIM_EXT_MAX_RESPONSE || s.pending_len > sizeof s.pending)
            abort();
        if (n != 0 && n <= cap && n < 2)
            abort();     /* every framed response ends with a status word */
        free(cmd);
        free(ans);
        free(resp);
    }
    return 0;
}
