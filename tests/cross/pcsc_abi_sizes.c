/*
 * pcsc_abi_sizes.c - compiled with -fsyntax-only for one target at a time
 * (tests/test_pcsc_abi.py): native/pcsc/pcsc_abi.h must give that target's
 * PC/SC client types, which the test states independently of the header:
 *
 *   EXPECT_DWORD, EXPECT_LONG, EXPECT_HANDLE  the exact C types
 *   EXPECT_READERSTATE_SIZE                   sizeof(SCARD_READERSTATE)
 *   EXPECT_ATR_OFFSET                         offsetof(..., rgbAtr)
 *
 * The header's own _Static_asserts run too.
 */
#include "pcsc_abi.h"

#define SAME_TYPE(expr, type) _Generic((expr), type: 1, default: 0)

_Static_assert(SAME_TYPE((PCSC_DWORD)0, EXPECT_DWORD), "DWORD is not the expected type");
_Static_assert(SAME_TYPE((PCSC_LONG)0, EXPECT_LONG), "LONG is not the expected type");
_Static_assert(SAME_TYPE((PCSC_CONTEXT)0, EXPECT_HANDLE), "SCARDCONTEXT is not the expected type");
_Static_assert(SAME_TYPE((PCSC_HANDLE)0, EXPECT_HANDLE), "SCARDHANDLE is not the expected type");
_Static_assert(sizeof(PCSC_READERSTATE) == EXPECT_READERSTATE_SIZE,
               "SCARD_READERSTATE has the wrong size");
_Static_assert(offsetof(PCSC_READERSTATE, rgbAtr) == EXPECT_ATR_OFFSET,
               "SCARD_READERSTATE.rgbAtr is at the wrong offset");
_Static_assert(sizeof(PCSC_IO_REQUEST) == 2 * sizeof(EXPECT_DWORD),
               "SCARD_IO_REQUEST has the wrong size");
