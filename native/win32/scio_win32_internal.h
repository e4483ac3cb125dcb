/* scio_win32_internal.h - helpers shared by the Windows backend's sources. */
#ifndef SCIO_WIN32_INTERNAL_H
#define SCIO_WIN32_INTERNAL_H

#include "scio.h"

/* The scio status for a Win32 error code (ERROR_*). */
scio_status scio_win32_map_error(unsigned long win32_error);

/* The Win32 error for an NTSTATUS (RtlNtStatusToDosError when ntdll has
 * it), 0 for success. */
long scio_win32_status_to_win32(scio_status status);

#endif
