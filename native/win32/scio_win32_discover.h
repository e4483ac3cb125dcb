/*
 * scio_win32_discover.h - find smart-card reader devices on Windows.
 *
 * Readers register the device interface GUID_DEVINTERFACE_SMARTCARD_READER
 * {50DD5230-BA8A-11D1-BF5D-0000F805F530}; the paths returned here are opened
 * with scio_open_win32().
 */
#ifndef SCIO_WIN32_DISCOVER_H
#define SCIO_WIN32_DISCOVER_H

#ifdef _WIN32
#include <stddef.h>
#include <wchar.h>

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Where a list came from. */
#define SCIO_WIN32_SOURCE_NONE      0 /* empty everywhere */
#define SCIO_WIN32_SOURCE_CFGMGR    1 /* CM_Get_Device_Interface_ListW */
#define SCIO_WIN32_SOURCE_SETUPAPI  2 /* SetupDi* fallback */

/* Return values besides a count. */
#define SCIO_WIN32_LIST_TOO_SMALL  (-1) /* buf holds fewer than *needed */
#define SCIO_WIN32_LIST_FAILED     (-2) /* out of memory / system failure */

/* The present device interfaces of class `guid` as a list of paths, each
 * terminated by a NUL, the list terminated by one more NUL (an empty list
 * is a single NUL).  cap and *needed count wchar_t including every NUL.
 * Asks the configuration manager first and falls back to SetupAPI when it
 * fails or finds nothing (Wine 8 implements only the latter).  Returns the
 * number of paths, SCIO_WIN32_LIST_TOO_SMALL (nothing written; *needed says
 * how much room to give) or SCIO_WIN32_LIST_FAILED.  needed and source may
 * be NULL; buf may be NULL when cap is 0. */
int scio_win32_list_interfaces(const GUID *guid, wchar_t *buf, size_t cap,
                               size_t *needed, int *source);

/* scio_win32_list_interfaces for the smart-card reader interface class. */
int scio_win32_list_readers(wchar_t *buf, size_t cap, size_t *needed);

#ifdef __cplusplus
}
#endif
#endif /* _WIN32 */
#endif /* SCIO_WIN32_DISCOVER_H */
