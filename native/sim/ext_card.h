/*
 * ext_card.h - a card whose answers come from outside the simulated reader.
 *
 * An external card is a function and a context: the reader calls it for the
 * card's power events and for each command APDU, WITHOUT holding the
 * reader's lock (the card may use the reader's vendor controls, block, or
 * take locks of its own).  Calls into one card are serialised.  The reader
 * does the T=0 transport framing around it (61xx + GET RESPONSE, 6Cxx for
 * a wrong Le), so a card answers whole command APDUs under either protocol.
 * See README.md ("External cards") for the rules in full.
 *
 * Two providers use this interface: cards written in Python in the process
 * that loaded the reader (scardio_sim_insert_external, exported), and cards
 * reached over a Unix socket.  The interface is meant to stay stable.
 */
#ifndef SCARDIO_SIM_EXT_CARD_H
#define SCARDIO_SIM_EXT_CARD_H

#include <stddef.h>
#include <stdint.h>

#include "ifd_abi.h"

/* Bounds of one exchange: the longest command APDU (extended case 4E), and
 * the longest response (65536 data bytes + SW1 SW2).  `out_cap` passed to
 * a card is always SIM_EXT_MAX_RESPONSE. */
#define SIM_EXT_MAX_COMMAND  (4u + 3u + 65535u + 2u)
#define SIM_EXT_MAX_RESPONSE (65536u + 2u)

/* Operations (the `op` argument). */
#define SIM_EXT_OP_POWER_UP    1 /* the reader powers the card (no input) */
#define SIM_EXT_OP_POWER_DOWN  2 /* the reader removes its power (no input) */
#define SIM_EXT_OP_RESET_WARM  3 /* warm reset of a powered card (no input) */
#define SIM_EXT_OP_RESET_COLD  4 /* cold reset: power-up of a powered card */
#define SIM_EXT_OP_APDU        5 /* in: a command APDU; out: data + SW1 SW2 */

/* Results: >= 0 is the number of bytes written to `out` (0 for the power
 * operations); negative values are failures. */
#define SIM_EXT_E_FAILED    (-1) /* the card failed: IFD_COMMUNICATION_ERROR */
#define SIM_EXT_E_MALFORMED (-2) /* its answer is unusable (not bytes, too
                                    long, ...): the reader answers an empty
                                    response (no status word) */
#define SIM_EXT_E_TIMEOUT   (-3) /* no answer in time: IFD_RESPONSE_TIMEOUT */
#define SIM_EXT_E_GONE      (-4) /* the card is gone: the reader removes it
                                    (a removal event), IFD_ICC_NOT_PRESENT */

/* One call into the card.  `in` / `in_len`: the command (APDU only; NULL /
 * 0 otherwise); `out` has room for `out_cap` bytes; a result larger than
 * `out_cap` is treated as SIM_EXT_E_MALFORMED. */
typedef long (*sim_ext_call_fn)(void *ctx, int op, const uint8_t *in, size_t in_len,
                                uint8_t *out, size_t out_cap);
/* The reader dropped the card (removal, swap, channel closed, or a failed
 * insertion): called exactly once per inserted card, with no reader lock
 * held, after the last call into the card has returned.  May be NULL. */
typedef void (*sim_ext_release_fn)(void *ctx);

typedef struct sim_ext_card {
    sim_ext_call_fn call;
    sim_ext_release_fn release;
    void *ctx;
} sim_ext_card;

/*
 * Insert `card` into reader `lun` with this ATR (2..33 bytes, not parsed
 * beyond its protocol bytes): a fresh, unpowered card; over a present card it
 * is a swap (one removal, one insertion).  From this call on the reader owns
 * the card: card->release runs exactly once, even when this call fails.
 * Returns IFD_SUCCESS, IFD_NO_SUCH_DEVICE (LUN not open) or
 * IFD_COMMUNICATION_ERROR (bad ATR length, no memory).
 */
IFD_RESPONSECODE sim_ext_insert(IFD_DWORD lun, const sim_ext_card *card,
                                const uint8_t *atr, size_t atr_len);

/* Remove the card of reader `lun` (any card; no-op without one), as the
 * REMOVE control does.  IFD_SUCCESS or IFD_NO_SUCH_DEVICE. */
IFD_RESPONSECODE sim_ext_remove(IFD_DWORD lun);

/* ---- T=0 framing (pure functions; ext_card.c) ---------------------------- */

/* What the reader keeps between two APDUs of an external card under T=0:
 * response data waiting for GET RESPONSE, and the card's status word to
 * give once it is all taken. */
typedef struct sim_ext_t0 {
    uint8_t pending[256];
    size_t pending_len;
    uint8_t sw1, sw2;
} sim_ext_t0;

/* Before the card is called, under T=0: a GET RESPONSE (00 C0 00 00 Le)
 * with pending data is answered here: writes it into resp (cap bytes) and
 * returns its length (nothing written and the state kept when it exceeds
 * cap; compare).  Returns 0 when the command goes to the card; pending data
 * is then dropped, except for other commands of the GET RESPONSE
 * instruction (00 C0 ...), which the card answers with the data kept. */
size_t sim_ext_t0_before(sim_ext_t0 *s, const uint8_t *cmd, size_t cmd_len,
                         uint8_t *resp, size_t cap);

/* Check the card's answer `ans` (ans_len bytes) to `cmd` and frame it for
 * transmission protocol `t` (0 or 1) into resp (cap bytes; may not alias
 * ans).  Returns the response length (> cap: nothing written, state kept),
 * or 0 when the answer is malformed (fewer than 2 bytes, or more data than
 * the command allows: 256 bytes for a short APDU, 65536 for an extended
 * one).  Under T=1 the answer passes unchanged.  Under T=0: a case-2
 * command (Le, no data) answered with fewer data bytes than Ne gives 6Cxx
 * (xx = their number); with more, the first Ne with 61xx and the rest kept;
 * any other command answered with data gives 61xx and keeps the data for
 * GET RESPONSE; answers without data pass unchanged. */
size_t sim_ext_frame(sim_ext_t0 *s, int t, const uint8_t *cmd, size_t cmd_len,
                     const uint8_t *ans, size_t ans_len, uint8_t *resp, size_t cap);

/* 1 when `cmd` is an extended-length APDU (which T=0 cannot carry: the
 * reader answers 6700 without calling the card). */
int sim_ext_is_extended(const uint8_t *cmd, size_t cmd_len);

#endif /* SCARDIO_SIM_EXT_CARD_H */
