/*
 * msvc_prelude.h - included first (clang -include) when the Windows sources
 * are compiled in MSVC mode (--target=x86_64-pc-windows-msvc) with
 * mingw-w64's headers standing in for the Windows SDK.
 *
 * Those headers expect either gcc or MSVC itself.  For a compiler that is not
 * gcc, _mingw.h defines __attribute__(x) as nothing, which breaks clang's own
 * intrinsic headers (their vector types are declared with attributes); it
 * also puts __declspec(noreturn) / __declspec(deprecated) after declarators,
 * where clang does not accept them.  Load _mingw.h once (it has an include
 * guard) and undo both, so that only the project's own code is being judged.
 */
#ifndef SCARDIO_MSVC_PRELUDE_H
#define SCARDIO_MSVC_PRELUDE_H

#include <_mingw.h>

#undef __attribute__

#undef __MINGW_ATTRIB_NORETURN
#define __MINGW_ATTRIB_NORETURN __attribute__((__noreturn__))
#undef __MINGW_ATTRIB_DEPRECATED
#define __MINGW_ATTRIB_DEPRECATED __attribute__((__deprecated__))

/* The SDK's winnt.h declares the Interlocked* intrinsics; mingw-w64 declares
 * them (psdk_inc/intrin-impl.h) only when this macro is set, which _mingw.h
 * does for gcc alone.  clang implements them as builtins, so only the
 * declarations are used. */
#ifndef __MINGW_INTRIN_INLINE
#define __MINGW_INTRIN_INLINE extern __inline__ __attribute__((__always_inline__, __gnu_inline__))
#endif

#endif /* SCARDIO_MSVC_PRELUDE_H */
