/*
 * card.h - the simulated card: an ATR and a small ISO 7816-4 file system.
 *
 * Pure C with no threads, no allocation and no OS calls, so the same source
 * is compiled into the IFD-handler simulated reader and the simulated WDM
 * reader driver used under Wine.  The caller serialises access to one card.
 */
#ifndef SCARDIO_SIM_CARD_H
#define SCARDIO_SIM_CARD_H

#include <stddef.h>
#include <stdint.h>

#include "sim_protocol.h"

#define SIM_CARD_MAX_ATR 33

typedef struct sim_card {
    uint8_t atr[SIM_CARD_MAX_ATR];
    size_t atr_len;
    int protocol;              /* 0 = T=0, 1 = T=1 (set by sim_card_set_protocol) */
    int selected;              /* currently selected file (internal id) */
    int app_selected;          /* application by AID selected */
    uint8_t ef_mf[SIM_EF_SIZE];  /* EF 2F01 under the MF */
    uint8_t ef_app[SIM_EF_SIZE]; /* EF 0101 in the application */
    uint8_t pending[258];      /* T=0: data waiting for GET RESPONSE */
    size_t pending_len;
    uint32_t rng;              /* GET CHALLENGE state */
} sim_card;

/* A fresh card with this ATR (NULL / 0: SIM_ATR_T1).  atr_len > 33 is
 * truncated to 33.  Files start filled with bytes i & 0xFF. */
void sim_card_init(sim_card *c, const uint8_t *atr, size_t atr_len);

/* Power-up or reset: forget the selection and any pending GET RESPONSE. */
void sim_card_reset(sim_card *c);

/* The transmission protocol now in use: 0 (T=0) or 1 (T=1). */
void sim_card_set_protocol(sim_card *c, int t);

/* Protocols the card's ATR offers, as SCARD_PROTOCOL bits (1: T=0, 2: T=1):
 * the T of every TDi, T=0 alone when there is no TD1.  *first (may be NULL)
 * gets the default protocol, the one TD1 names (0 if neither T=0 nor T=1). */
uint32_t sim_card_protocols(const sim_card *c, uint32_t *first);

/* Process one command APDU (short or extended).  Writes the response (data
 * followed by SW1 SW2) into resp when it fits in resp_cap and returns its
 * length; returns the length needed without writing anything when it does
 * not fit (the caller compares).  Never writes more than resp_cap bytes. */
size_t sim_card_process(sim_card *c, const uint8_t *apdu, size_t apdu_len,
                        uint8_t *resp, size_t resp_cap);

#endif /* SCARDIO_SIM_CARD_H */
