/*
 * pcsc_abi.h - the PC/SC API (SCard*) as the resource manager's client
 * library exports it, declared from its public documentation so that
 * building scardio never needs a PC/SC header or library: the library is
 * loaded at run time (pcsc_backend.c).
 *
 * The integer types are the platform's:
 *   Linux and other pcsc-lite systems: DWORD unsigned long, LONG long,
 *     SCARDCONTEXT / SCARDHANDLE long (8 bytes each on LP64);
 *   macOS (the PCSC framework): DWORD uint32_t, LONG int32_t, handles
 *     int32_t, and SCARD_READERSTATE / SCARD_IO_REQUEST byte-packed;
 *   Windows (winscard.dll): DWORD and LONG 32 bits, handles ULONG_PTR
 *     (pointer sized), WINAPI calling convention, rgbAtr of 36 bytes.
 * Reader states from SCardStatus differ too: pcsc-lite and macOS report bit
 * flags (PCSC_BIT_*), Windows the enumerated 0..6 of the IOCTL contract.
 *
 * Self-contained (only <limits.h>, <stddef.h> and <stdint.h>), so that the
 * size checks below can be compiled for any target.
 */
#ifndef SCARDIO_PCSC_ABI_H
#define SCARDIO_PCSC_ABI_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
typedef unsigned long PCSC_DWORD;
typedef long PCSC_LONG;
typedef uintptr_t PCSC_CONTEXT;
typedef uintptr_t PCSC_HANDLE;
#define PCSC_CALL __stdcall
#define PCSC_ATR_BUFFER 36
#elif defined(__APPLE__)
typedef uint32_t PCSC_DWORD;
typedef int32_t PCSC_LONG;
typedef int32_t PCSC_CONTEXT;
typedef int32_t PCSC_HANDLE;
#define PCSC_CALL
#define PCSC_ATR_BUFFER 33
#else
typedef unsigned long PCSC_DWORD;
typedef long PCSC_LONG;
typedef long PCSC_CONTEXT;
typedef long PCSC_HANDLE;
#define PCSC_CALL
#define PCSC_ATR_BUFFER 33
#endif

#if defined(__APPLE__)
#pragma pack(push, 1)
#endif
typedef struct {
    const char *szReader;
    void *pvUserData;
    PCSC_DWORD dwCurrentState;
    PCSC_DWORD dwEventState;
    PCSC_DWORD cbAtr;
    unsigned char rgbAtr[PCSC_ATR_BUFFER];
} PCSC_READERSTATE;

typedef struct {
    PCSC_DWORD dwProtocol;
    PCSC_DWORD cbPciLength;
} PCSC_IO_REQUEST;
#if defined(__APPLE__)
#pragma pack(pop)
#endif

/* What the client libraries of each platform are compiled with. */
#if defined(_WIN32)
_Static_assert(sizeof(PCSC_DWORD) == 4 && sizeof(PCSC_LONG) == 4,
               "DWORD and LONG are 32 bits on Windows");
_Static_assert(sizeof(PCSC_CONTEXT) == sizeof(void *) && sizeof(PCSC_HANDLE) == sizeof(void *),
               "SCARDCONTEXT and SCARDHANDLE are ULONG_PTR on Windows");
_Static_assert(sizeof(PCSC_READERSTATE) == 2 * sizeof(void *) + 12 + 36,
               "SCARD_READERSTATEA: two pointers, three DWORDs, 36 ATR bytes");
#elif defined(__APPLE__)
_Static_assert(sizeof(PCSC_DWORD) == 4 && sizeof(PCSC_LONG) == 4,
               "DWORD and LONG are 32 bits in the macOS PCSC framework");
_Static_assert(sizeof(PCSC_CONTEXT) == 4 && sizeof(PCSC_HANDLE) == 4,
               "SCARDCONTEXT and SCARDHANDLE are int32_t on macOS");
_Static_assert(sizeof(PCSC_READERSTATE) == 2 * sizeof(void *) + 12 + 33,
               "SCARD_READERSTATE is packed on macOS");
#elif defined(__linux__)
/* Linux is LP64 or ILP32: long is as wide as a pointer. */
_Static_assert(sizeof(PCSC_DWORD) == sizeof(void *) && sizeof(PCSC_LONG) == sizeof(void *),
               "DWORD is unsigned long and LONG is long in pcsc-lite");
_Static_assert(sizeof(PCSC_CONTEXT) == sizeof(long) && sizeof(PCSC_HANDLE) == sizeof(long),
               "SCARDCONTEXT and SCARDHANDLE are LONG in pcsc-lite");
_Static_assert(offsetof(PCSC_READERSTATE, rgbAtr) == 5 * sizeof(void *),
               "SCARD_READERSTATE: two pointers and three DWORDs before the ATR");
#endif
_Static_assert((PCSC_DWORD)-1 > 0, "DWORD is unsigned");
_Static_assert((PCSC_LONG)-1 < 0, "LONG is signed");
_Static_assert(sizeof(PCSC_IO_REQUEST) == 2 * sizeof(PCSC_DWORD),
               "SCARD_IO_REQUEST is two DWORDs, unpadded");

/* Return codes (LONG; compared as 32-bit unsigned values). */
#define PCSC_S_SUCCESS               0x00000000u
#define PCSC_F_INTERNAL_ERROR        0x80100001u
#define PCSC_E_CANCELLED             0x80100002u
#define PCSC_E_INVALID_HANDLE        0x80100003u
#define PCSC_E_INVALID_PARAMETER     0x80100004u
#define PCSC_E_NO_MEMORY             0x80100006u
#define PCSC_E_INSUFFICIENT_BUFFER   0x80100008u
#define PCSC_E_UNKNOWN_READER        0x80100009u
#define PCSC_E_TIMEOUT               0x8010000Au
#define PCSC_E_SHARING_VIOLATION     0x8010000Bu
#define PCSC_E_NO_SMARTCARD          0x8010000Cu
#define PCSC_E_PROTO_MISMATCH        0x8010000Fu
#define PCSC_E_NOT_READY             0x80100010u
#define PCSC_E_INVALID_VALUE         0x80100011u
#define PCSC_E_SYSTEM_CANCELLED      0x80100012u
#define PCSC_F_COMM_ERROR            0x80100013u
#define PCSC_E_INVALID_ATR           0x80100015u
#define PCSC_E_NOT_TRANSACTED        0x80100016u
#define PCSC_E_READER_UNAVAILABLE    0x80100017u
#define PCSC_P_SHUTDOWN              0x80100018u
#define PCSC_E_PCI_TOO_SMALL         0x80100019u
#define PCSC_E_READER_UNSUPPORTED    0x8010001Au
#define PCSC_E_CARD_UNSUPPORTED      0x8010001Cu
#define PCSC_E_NO_SERVICE            0x8010001Du
#define PCSC_E_SERVICE_STOPPED       0x8010001Eu
/* 0x8010001F is E_UNEXPECTED on Windows and also E_UNSUPPORTED_FEATURE in
 * pcsc-lite; Windows' E_UNSUPPORTED_FEATURE is 0x80100022. */
#define PCSC_E_UNEXPECTED            0x8010001Fu
#define PCSC_E_UNSUPPORTED_FEATURE_WIN 0x80100022u
#define PCSC_E_NO_READERS_AVAILABLE  0x8010002Eu
#define PCSC_E_SERVER_TOO_BUSY       0x80100031u
#define PCSC_W_UNSUPPORTED_CARD      0x80100065u
#define PCSC_W_UNRESPONSIVE_CARD     0x80100066u
#define PCSC_W_UNPOWERED_CARD        0x80100067u
#define PCSC_W_RESET_CARD            0x80100068u
#define PCSC_W_REMOVED_CARD          0x80100069u

#define PCSC_SCOPE_SYSTEM    2u
#define PCSC_SHARE_EXCLUSIVE 1u
#define PCSC_SHARE_SHARED    2u
#define PCSC_SHARE_DIRECT    3u
#define PCSC_LEAVE_CARD      0u
#define PCSC_RESET_CARD      1u
#define PCSC_UNPOWER_CARD    2u
#define PCSC_INFINITE        0xFFFFFFFFu

/* Protocols: T=0 and T=1 are the same everywhere; RAW is the IOCTL
 * contract's 0x10000 on Windows, 4 in pcsc-lite and macOS. */
#define PCSC_PROTOCOL_T0     1u
#define PCSC_PROTOCOL_T1     2u
#if defined(_WIN32)
#define PCSC_PROTOCOL_RAW    0x00010000u
#else
#define PCSC_PROTOCOL_RAW    4u
#endif

/* SCardStatus reader states of pcsc-lite and macOS (bit flags). */
#define PCSC_BIT_UNKNOWN     0x0001u
#define PCSC_BIT_ABSENT      0x0002u
#define PCSC_BIT_PRESENT     0x0004u
#define PCSC_BIT_SWALLOWED   0x0008u
#define PCSC_BIT_POWERED     0x0010u
#define PCSC_BIT_NEGOTIABLE  0x0020u
#define PCSC_BIT_SPECIFIC    0x0040u

/* SCardGetStatusChange event states; the high 16 bits count card events. */
#define PCSC_STATE_UNAWARE     0x0000u
#define PCSC_STATE_CHANGED     0x0002u
#define PCSC_STATE_UNKNOWN     0x0004u
#define PCSC_STATE_UNAVAILABLE 0x0008u
#define PCSC_STATE_EMPTY       0x0010u
#define PCSC_STATE_PRESENT     0x0020u
#define PCSC_STATE_MUTE        0x0200u

/* Entry points, as function-pointer types.  The A (ANSI) names on
 * Windows; pcsc-lite and macOS have no A/W split. */
typedef PCSC_LONG (PCSC_CALL *pcsc_establish_fn)(PCSC_DWORD scope, const void *r1,
                                                 const void *r2, PCSC_CONTEXT *ctx);
typedef PCSC_LONG (PCSC_CALL *pcsc_release_fn)(PCSC_CONTEXT ctx);
typedef PCSC_LONG (PCSC_CALL *pcsc_list_readers_fn)(PCSC_CONTEXT ctx, const char *groups,
                                                    char *readers, PCSC_DWORD *len);
typedef PCSC_LONG (PCSC_CALL *pcsc_connect_fn)(PCSC_CONTEXT ctx, const char *reader,
                                               PCSC_DWORD share, PCSC_DWORD protocols,
                                               PCSC_HANDLE *card, PCSC_DWORD *active);
typedef PCSC_LONG (PCSC_CALL *pcsc_reconnect_fn)(PCSC_HANDLE card, PCSC_DWORD share,
                                                 PCSC_DWORD protocols, PCSC_DWORD init,
                                                 PCSC_DWORD *active);
typedef PCSC_LONG (PCSC_CALL *pcsc_disconnect_fn)(PCSC_HANDLE card, PCSC_DWORD disposition);
typedef PCSC_LONG (PCSC_CALL *pcsc_status_fn)(PCSC_HANDLE card, char *name,
                                              PCSC_DWORD *name_len, PCSC_DWORD *state,
                                              PCSC_DWORD *protocol, unsigned char *atr,
                                              PCSC_DWORD *atr_len);
typedef PCSC_LONG (PCSC_CALL *pcsc_get_status_change_fn)(PCSC_CONTEXT ctx, PCSC_DWORD timeout,
                                                         PCSC_READERSTATE *states,
                                                         PCSC_DWORD count);
typedef PCSC_LONG (PCSC_CALL *pcsc_control_fn)(PCSC_HANDLE card, PCSC_DWORD code,
                                               const void *in, PCSC_DWORD in_len,
                                               void *out, PCSC_DWORD out_cap,
                                               PCSC_DWORD *returned);
typedef PCSC_LONG (PCSC_CALL *pcsc_transmit_fn)(PCSC_HANDLE card, const PCSC_IO_REQUEST *send,
                                                const unsigned char *tx, PCSC_DWORD tx_len,
                                                PCSC_IO_REQUEST *recv, unsigned char *rx,
                                                PCSC_DWORD *rx_len);
typedef PCSC_LONG (PCSC_CALL *pcsc_cancel_fn)(PCSC_CONTEXT ctx);
typedef PCSC_LONG (PCSC_CALL *pcsc_get_attrib_fn)(PCSC_HANDLE card, PCSC_DWORD attr,
                                                  unsigned char *out, PCSC_DWORD *len);
typedef PCSC_LONG (PCSC_CALL *pcsc_set_attrib_fn)(PCSC_HANDLE card, PCSC_DWORD attr,
                                                  const unsigned char *in, PCSC_DWORD len);

typedef PCSC_LONG (PCSC_CALL *pcsc_begin_transaction_fn)(PCSC_HANDLE card);
typedef PCSC_LONG (PCSC_CALL *pcsc_end_transaction_fn)(PCSC_HANDLE card,
                                                       PCSC_DWORD disposition);

#endif /* SCARDIO_PCSC_ABI_H */
