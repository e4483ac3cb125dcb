/* atr_info.c - see atr_info.h. */
#include "atr_info.h"
#include "scio.h"

static uint32_t proto_bit(unsigned t)
{
    return t == 0 ? SCIO_PROTOCOL_T0 : t == 1 ? SCIO_PROTOCOL_T1 : 0;
}

int scio_atr_info_parse(const uint8_t *atr, size_t len, scio_atr_info *info)
{
    size_t i = 2;
    unsigned group = 1;
    uint8_t y;

    info->offered = SCIO_PROTOCOL_T0;
    info->first = SCIO_PROTOCOL_T0;
    info->has_ta1 = 0;
    info->ta1 = 0;
    info->specific = 0;
    info->specific_protocol = 0;
    if (len < 2 || (atr[0] != 0x3B && atr[0] != 0x3F))
        return -1;
    y = atr[1] >> 4;
    int saw_td = 0;
    for (;;) {
        uint8_t ta = 0;
        int has_ta = 0;
        if (y & 1) {
            if (i >= len)
                return -1;
            ta = atr[i++];
            has_ta = 1;
        }
        if (y & 2) {
            if (i >= len)
                return -1;
            i++;
        }
        if (y & 4) {
            if (i >= len)
                return -1;
            i++;
        }
        if (group == 1 && has_ta) {
            info->has_ta1 = 1;
            info->ta1 = ta;
        }
        if (group == 2 && has_ta) {
            info->specific = 1;
            info->specific_protocol = proto_bit(ta & 0x0F);
        }
        if (!(y & 8))
            break;
        if (i >= len)
            return -1;
        uint8_t td = atr[i++];
        uint32_t bit = proto_bit(td & 0x0F);
        if (!saw_td) {
            /* The first TD names the default protocol; T=0 is then only
             * offered if some TD names it. */
            info->offered = 0;
            info->first = bit;
            saw_td = 1;
        }
        info->offered |= bit;
        y = td >> 4;
        group++;
    }
    if (info->offered == 0) {
        /* Only protocols other than T=0/T=1: nothing we can use. */
        info->first = 0;
    }
    return 0;
}
