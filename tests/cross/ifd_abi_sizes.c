/*
 * ifd_abi_sizes.c - compiled with -fsyntax-only for one target at a time
 * (tests/test_cross_builds.py): native/ifd/ifd_abi.h must give that target's
 * driver types, which the test states independently of the header:
 *
 *   EXPECT_DWORD, EXPECT_RESPONSECODE  the exact C types
 *   EXPECT_DWORD_SIZE, EXPECT_RC_SIZE  their sizes in bytes
 *
 * The header's own _Static_asserts run too.
 */
#include "ifd_abi.h"

#define SAME_TYPE(expr, type) _Generic((expr), type: 1, default: 0)

_Static_assert(SAME_TYPE((IFD_DWORD)0, EXPECT_DWORD), "DWORD is not the expected type");
_Static_assert(SAME_TYPE((IFD_RESPONSECODE)0, EXPECT_RESPONSECODE),
               "RESPONSECODE is not the expected type");
_Static_assert(sizeof(IFD_DWORD) == EXPECT_DWORD_SIZE, "DWORD has the wrong size");
_Static_assert(sizeof(IFD_RESPONSECODE) == EXPECT_RC_SIZE, "RESPONSECODE has the wrong size");
_Static_assert(IFD_DWORD_MAX == (IFD_DWORD)-1, "IFD_DWORD_MAX is not the DWORD's maximum");

/* The polling function's signature: RESPONSECODE f(DWORD lun, int timeout_ms). */
IFD_RESPONSECODE poll_fn(IFD_DWORD lun, int timeout_ms);
IFD_RESPONSECODE poll_fn(IFD_DWORD lun, int timeout_ms)
{
    (void)lun;
    (void)timeout_ms;
    return IFD_SUCCESS;
}
_Static_assert(SAME_TYPE(&poll_fn, ifdh_polling_fn), "polling function type");
