/*
 * fuzz_atr.c - libFuzzer target: the IFD backend's ATR walker (native/ifd/
 * atr_info.c), which picks the protocol from whatever ATR a driver returns.
 * The input is the ATR (any length: the backend passes at most 33 bytes, the
 * parser must not read past the length it is given either way).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scio.h"
#include "ifd/atr_info.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    scio_atr_info info;
    uint8_t *copy = malloc(size ? size : 1); /* exact size: ASan sees over-reads */
    int rc;
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    memset(&info, 0xA5, sizeof info);
    rc = scio_atr_info_parse(size ? copy : NULL, size, &info);
    if (rc != 0 && rc != -1)
        abort();
    /* whatever the input, the result names only T=0 / T=1 */
    if (info.offered & ~(uint32_t)(SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1))
        abort();
    if (rc == 0 && info.first && !(info.first & (SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1)))
        abort();
    free(copy);
    return 0;
}
