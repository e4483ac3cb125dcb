/*
 * ifd_abi.h - the pcsc-lite IFD-handler driver ABI, declared from its public
 * documentation so that building scardio never needs pcsc-lite's headers.
 *
 * The integer types are the platform's, as drivers are built against them:
 *   Linux and other pcsc-lite systems: DWORD unsigned long, RESPONSECODE long
 *     (8 bytes on LP64, 4 on ILP32);
 *   macOS (Apple's PCSC wintypes.h): DWORD uint32_t, RESPONSECODE int32_t;
 *   Windows: DWORD and LONG of the SDK, unsigned long and long (4 bytes).
 * A caller reading a 64-bit long where a macOS driver returns an int32_t
 * would see undefined upper bits (arm64 leaves them unspecified).
 *
 * Self-contained (only <limits.h> and <stdint.h>), so that the size checks below can be
 * compiled for any target, even without its system headers.
 */
#ifndef SCARDIO_IFD_ABI_H
#define SCARDIO_IFD_ABI_H

#include <limits.h>
#include <stdint.h>

#if defined(__APPLE__)
typedef uint32_t IFD_DWORD;
typedef int32_t IFD_RESPONSECODE;
#define IFD_DWORD_MAX UINT32_MAX
#else
typedef unsigned long IFD_DWORD;
typedef long IFD_RESPONSECODE;
#define IFD_DWORD_MAX ULONG_MAX
#endif
typedef unsigned char IFD_UCHAR;

typedef struct {
    IFD_DWORD Protocol;
    IFD_DWORD Length;
} IFD_SCARD_IO_HEADER;

/* What drivers of each platform are compiled with. */
#if defined(_WIN32) || defined(__APPLE__)
_Static_assert(sizeof(IFD_DWORD) == 4, "DWORD is 32 bits on Windows and macOS");
_Static_assert(sizeof(IFD_RESPONSECODE) == 4, "RESPONSECODE is 32 bits on Windows and macOS");
#elif defined(__linux__)
/* Linux is LP64 or ILP32: long is as wide as a pointer. */
_Static_assert(sizeof(IFD_DWORD) == sizeof(void *), "DWORD is unsigned long on Linux");
_Static_assert(sizeof(IFD_RESPONSECODE) == sizeof(void *), "RESPONSECODE is long on Linux");
#endif
_Static_assert((IFD_DWORD)-1 > 0, "DWORD is unsigned");
_Static_assert((IFD_RESPONSECODE)-1 < 0, "RESPONSECODE is signed");
_Static_assert(sizeof(IFD_DWORD) >= 4 && sizeof(IFD_RESPONSECODE) >= 4,
               "DWORD and RESPONSECODE hold 32-bit values");
_Static_assert(sizeof(IFD_SCARD_IO_HEADER) == 2 * sizeof(IFD_DWORD),
               "SCARD_IO_HEADER is two DWORDs, unpadded");

/* Return codes. */
#define IFD_SUCCESS                    0
#define IFD_ERROR_TAG                  600
#define IFD_ERROR_SET_FAILURE          601
#define IFD_ERROR_VALUE_READ_ONLY      602
#define IFD_ERROR_PTS_FAILURE          605
#define IFD_ERROR_NOT_SUPPORTED        606
#define IFD_PROTOCOL_NOT_SUPPORTED     607
#define IFD_ERROR_POWER_ACTION         608
#define IFD_ERROR_SWALLOW              609
#define IFD_ERROR_EJECT                610
#define IFD_ERROR_CONFISCATE           611
#define IFD_COMMUNICATION_ERROR        612
#define IFD_RESPONSE_TIMEOUT           613
#define IFD_NOT_SUPPORTED              614
#define IFD_ICC_PRESENT                615
#define IFD_ICC_NOT_PRESENT            616
#define IFD_NO_SUCH_DEVICE             617
#define IFD_ERROR_INSUFFICIENT_BUFFER  618

/* IFDHPowerICC actions. */
#define IFD_POWER_UP    500
#define IFD_POWER_DOWN  501
#define IFD_RESET       502

/* IFDHSetProtocolParameters flags. */
#define IFD_NEGOTIATE_PTS1  1
#define IFD_NEGOTIATE_PTS2  2
#define IFD_NEGOTIATE_PTS3  4

/* Capability tags. */
#define IFD_TAG_ATR                           0x0303
#define IFD_TAG_SLOTS_NUMBER                  0x0FAE
#define IFD_TAG_SLOT_THREAD_SAFE              0x0FAC
#define IFD_TAG_THREAD_SAFE                   0x0FAD
#define IFD_TAG_POLLING_THREAD                0x0FB1
#define IFD_TAG_STOP_POLLING_THREAD           0x0FB2
#define IFD_TAG_POLLING_THREAD_WITH_TIMEOUT   0x0FB3
#define IFD_TAG_POLLING_THREAD_KILLABLE       0x0FB4

/* Entry points, as function-pointer types. */
typedef IFD_RESPONSECODE (*ifdh_create_channel_by_name_fn)(IFD_DWORD lun, char *device_name);
typedef IFD_RESPONSECODE (*ifdh_create_channel_fn)(IFD_DWORD lun, IFD_DWORD channel);
typedef IFD_RESPONSECODE (*ifdh_close_channel_fn)(IFD_DWORD lun);
typedef IFD_RESPONSECODE (*ifdh_get_capabilities_fn)(IFD_DWORD lun, IFD_DWORD tag,
                                                     IFD_DWORD *length, IFD_UCHAR *value);
typedef IFD_RESPONSECODE (*ifdh_set_capabilities_fn)(IFD_DWORD lun, IFD_DWORD tag,
                                                     IFD_DWORD length, IFD_UCHAR *value);
typedef IFD_RESPONSECODE (*ifdh_set_protocol_parameters_fn)(IFD_DWORD lun, IFD_DWORD protocol,
                                                            IFD_UCHAR flags, IFD_UCHAR pts1,
                                                            IFD_UCHAR pts2, IFD_UCHAR pts3);
typedef IFD_RESPONSECODE (*ifdh_power_icc_fn)(IFD_DWORD lun, IFD_DWORD action,
                                              IFD_UCHAR *atr, IFD_DWORD *atr_length);
typedef IFD_RESPONSECODE (*ifdh_transmit_to_icc_fn)(IFD_DWORD lun, IFD_SCARD_IO_HEADER send_pci,
                                                    IFD_UCHAR *tx, IFD_DWORD tx_length,
                                                    IFD_UCHAR *rx, IFD_DWORD *rx_length,
                                                    IFD_SCARD_IO_HEADER *recv_pci);
typedef IFD_RESPONSECODE (*ifdh_icc_presence_fn)(IFD_DWORD lun);
typedef IFD_RESPONSECODE (*ifdh_control_fn)(IFD_DWORD lun, IFD_DWORD code,
                                            IFD_UCHAR *tx, IFD_DWORD tx_length,
                                            IFD_UCHAR *rx, IFD_DWORD rx_length,
                                            IFD_DWORD *bytes_returned);
/* Returned by IFD_TAG_POLLING_THREAD_WITH_TIMEOUT / IFD_TAG_STOP_POLLING_THREAD. */
typedef IFD_RESPONSECODE (*ifdh_polling_fn)(IFD_DWORD lun, int timeout_ms);
typedef IFD_RESPONSECODE (*ifdh_stop_polling_fn)(IFD_DWORD lun);

#endif /* SCARDIO_IFD_ABI_H */
