/* atr_info.h - the few ATR facts the IFD backend needs to pick a protocol.  The
 * full ISO 7816-3 parser is scardio.atr (Python); this one only walks the
 * interface bytes, never reading past the given length. */
#ifndef SCIO_ATR_INFO_H
#define SCIO_ATR_INFO_H

#include <stddef.h>
#include <stdint.h>

typedef struct scio_atr_info {
    uint32_t offered;        /* SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1 bits */
    uint32_t first;          /* the first offered protocol (the default) */
    int has_ta1;
    uint8_t ta1;
    int specific;            /* TA2 present: specific mode */
    uint32_t specific_protocol;
} scio_atr_info;

/* 0 on success, -1 if the ATR is malformed (info then holds a T=0 guess). */
int scio_atr_info_parse(const uint8_t *atr, size_t len, scio_atr_info *info);

#endif
