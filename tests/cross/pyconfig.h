/*
 * pyconfig.h for building an extension for 64-bit Windows CPython (win-amd64)
 * with mingw-w64: the configuration macros whose values CPython's
 * PC/pyconfig.h gives there, and nothing else.  The test puts it in front of
 * the running interpreter's own headers (which carry the Linux pyconfig.h).
 */
#ifndef Py_CONFIG_H
#define Py_CONFIG_H

#if !defined(_WIN64) || !defined(__x86_64__)
#error "this pyconfig.h describes win-amd64 only"
#endif

#include <io.h>
#include <stdio.h>

/* The platform. */
#define MS_WIN32
#define MS_WIN64
#define MS_WINDOWS
#define NT_THREADS
#define WITH_THREAD
#define PLATFORM "win32"
#define COMPILER "[gcc]"

/* LLP64: long stays 32 bits. */
#define SIZEOF_SHORT 2
#define SIZEOF_INT 4
#define SIZEOF_LONG 4
#define SIZEOF_LONG_LONG 8
#define SIZEOF_FLOAT 4
#define SIZEOF_DOUBLE 8
#define SIZEOF_VOID_P 8
#define SIZEOF_SIZE_T 8
#define SIZEOF_TIME_T 8
#define SIZEOF_OFF_T 4
#define SIZEOF_FPOS_T 8
#define SIZEOF_HKEY 8
#define SIZEOF_WCHAR_T 2
#define SIZEOF__BOOL 1
#define SIZEOF_PID_T SIZEOF_INT
#define LONG_BIT 32
#define WORD_BIT 32
#define PY_LONG_LONG long long
#define PY_LLONG_MIN LLONG_MIN
#define PY_LLONG_MAX LLONG_MAX
#define PY_ULLONG_MAX ULLONG_MAX
#define DOUBLE_IS_LITTLE_ENDIAN_IEEE754 1
#define HAVE_LARGEFILE_SUPPORT

/* ssize_t and pid_t: mingw-w64's own (PC/pyconfig.h declares them only for
 * MSVC); Py_ssize_t is then intptr_t, of the same size. */

/* The interpreter lives in pythonXY.dll: its API is imported with
 * __declspec(dllimport), PyInit_* exported with __declspec(dllexport). */
#define Py_ENABLE_SHARED 1
#define MS_COREDLL
#define HAVE_DECLSPEC_DLL

/* Headers and functions of the C runtime. */
#define STDC_HEADERS 1
#define HAVE_STDDEF_H 1
#define HAVE_ERRNO_H 1
#define HAVE_FCNTL_H 1
#define HAVE_IO_H
#define HAVE_PROCESS_H 1
#define HAVE_SIGNAL_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_WCHAR_H 1
#define HAVE_CLOCK
#define HAVE_STRFTIME
#define HAVE_COPYSIGN 1
#define HAVE_DECL_ISINF 1
#define HAVE_DECL_ISNAN 1
#define HAVE_DYNAMIC_LOADING
#define WITH_DOC_STRINGS 1
#define WITH_PYMALLOC 1

#endif /* !Py_CONFIG_H */
