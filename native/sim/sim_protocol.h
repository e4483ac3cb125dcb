/*
 * sim_protocol.h - the simulated reader's vendor interface.
 *
 * The simulated reader is an ordinary IFD-handler driver.  Tests steer it with
 * vendor control codes sent through IFDHControl (pcsc-lite style code
 * 0x42000000 + n, or Windows style SCARD_CTL_CODE(n); both reach it through the
 * scardio core, and SCardControl reaches it through pcscd).  Every multi-byte
 * field is a 32-bit little-endian integer.
 *
 * Besides the standard capability tags it answers scardio's IFD extensions
 * (native/ifd/ifd_ext.h): card-event counts and their generation, and the controls
 * SIM_CTL_FIRST..SIM_CTL_LAST as served without the reader lock (they are
 * thread safe, and must get through while a faulted call holds the lock).
 */
#ifndef SCARDIO_SIM_PROTOCOL_H
#define SCARDIO_SIM_PROTOCOL_H

/* Vendor control function numbers (n). */
#define SIM_CTL_INSERT        3500 /* in: empty = default T=1 card; 1 byte = card
                                      kind (SIM_CARD_*); 2..33 bytes = that ATR */
#define SIM_CTL_REMOVE        3501 /* in: empty */
#define SIM_CTL_SET_LATENCY   3502 /* in: u32 microseconds added to every IFDH
                                      call of this LUN (0 = none) */
#define SIM_CTL_FAULT         3503 /* in: u32 entry point (SIM_EP_*), u32 kind
                                      (SIM_FAULT_*), u32 value; armed for the
                                      next call of that entry point */
#define SIM_CTL_STOP          3504 /* in: empty; releases calls blocked by
                                      SIM_FAULT_BLOCK and disarms all faults */
#define SIM_CTL_COUNTERS      3505 /* out: SIM_COUNTER_COUNT u32 values */
                                   /* 3506: not assigned */
#define SIM_CTL_RESET_COUNTERS 3507 /* in: empty */
/* The range answered for SCIO_IFD_TAG_UNLOCKED_CONTROLS (0x42000000 + n). */
#define SIM_CTL_FIRST         SIM_CTL_INSERT
#define SIM_CTL_LAST          SIM_CTL_RESET_COUNTERS

/* Card kinds for SIM_CTL_INSERT. */
#define SIM_CARD_T1  0  /* default: a T=1 card (ATR SIM_ATR_T1) */
#define SIM_CARD_T0  1  /* a T=0-only card (ATR SIM_ATR_T0) */

/* Default ATRs.
 * T=1: TA1=13 (Fi 372 / Di 4), TD1/TD2 offer T=1, IFSC 254, BWI 4, CWI 5,
 *      historical bytes "scardio1", TCK. */
#define SIM_ATR_T1 { 0x3B, 0xF8, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x45, \
                     0x73, 0x63, 0x61, 0x72, 0x64, 0x69, 0x6F, 0x31, 0xB0 }
#define SIM_ATR_T1_LEN 18
/* T=0: TB1=00, TC1=00, no TD1 (T=0 only, no TCK), historical "scardio0". */
#define SIM_ATR_T0 { 0x3B, 0x68, 0x00, 0x00, \
                     0x73, 0x63, 0x61, 0x72, 0x64, 0x69, 0x6F, 0x30 }
#define SIM_ATR_T0_LEN 12

/* Entry points, for faults and counters. */
#define SIM_EP_CREATE_CHANNEL     0
#define SIM_EP_CLOSE_CHANNEL      1
#define SIM_EP_GET_CAPABILITIES   2
#define SIM_EP_SET_CAPABILITIES   3
#define SIM_EP_SET_PROTOCOL       4
#define SIM_EP_POWER_ICC          5
#define SIM_EP_TRANSMIT           6
#define SIM_EP_ICC_PRESENCE       7
#define SIM_EP_CONTROL            8
#define SIM_EP_POLLING            9
#define SIM_EP_COUNT              10

/* Fault kinds. */
#define SIM_FAULT_NONE            0
#define SIM_FAULT_RETURN          1 /* return `value` (an IFD_* code) */
#define SIM_FAULT_REMOVE_CARD     2 /* the card is removed during the call */
#define SIM_FAULT_BLOCK           3 /* block until SIM_CTL_STOP */
#define SIM_FAULT_OVERLONG_LENGTH 4 /* report `value` more bytes than the
                                       buffer holds (nothing is overrun) */
#define SIM_FAULT_LONG_ATR        5 /* power-up reports an ATR of `value`
                                       bytes (> 33), writing at most the
                                       buffer's capacity */

/* SIM_CTL_COUNTERS layout (index of each u32). */
#define SIM_COUNTER_CALLS         0  /* SIM_EP_COUNT values, one per entry */
#define SIM_COUNTER_POWER_UPS     (SIM_EP_COUNT + 0) /* IFD_POWER_UP actions */
#define SIM_COUNTER_RESETS        (SIM_EP_COUNT + 1) /* IFD_RESET actions */
#define SIM_COUNTER_POWER_DOWNS   (SIM_EP_COUNT + 2)
#define SIM_COUNTER_POWERED       (SIM_EP_COUNT + 3) /* 1 while powered */
#define SIM_COUNTER_PRESENT       (SIM_EP_COUNT + 4) /* 1 while a card is in */
#define SIM_COUNTER_INSERTIONS    (SIM_EP_COUNT + 5)
#define SIM_COUNTER_REMOVALS      (SIM_EP_COUNT + 6)
#define SIM_COUNTER_PROTOCOL      (SIM_EP_COUNT + 7) /* 0, 1 (T=0), 2 (T=1) */
#define SIM_COUNTER_LATENCY_US    (SIM_EP_COUNT + 8)
#define SIM_COUNTER_COUNT         (SIM_EP_COUNT + 9)

/* Vendor strings. */
#define SIM_VENDOR_NAME  "scardio"
#define SIM_IFD_TYPE     "Simulated Reader"

/* Card model: proprietary ECHO command.  CLA 0x80, INS 0xEE: the response is
 * Ne bytes: the command data repeated, or bytes i & 0xFF when there is none. */
#define SIM_CLA_PROPRIETARY  0x80
#define SIM_INS_ECHO         0xEE
/* Files: MF 3F00 > EF 2F01 (transparent, SIM_EF_SIZE bytes), and an
 * application selected by AID SIM_AID holding EF 0101 (SIM_EF_SIZE bytes). */
#define SIM_EF_SIZE  4096
#define SIM_AID { 0xF0, 0x73, 0x63, 0x61, 0x72, 0x64, 0x69, 0x6F }
#define SIM_AID_LEN 8

#endif /* SCARDIO_SIM_PROTOCOL_H */
