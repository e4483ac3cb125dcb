/* ifd_internal.h - shared between the IFD backend's modules. */
#ifndef SCIO_IFD_INTERNAL_H
#define SCIO_IFD_INTERNAL_H

/* Make log_msg / log_xxd visible to drivers loaded afterwards. */
void scio_ifd_export_log_symbols(void);

/* pcsc-lite's log priorities (PCSC_LOG_*), as drivers pass them. */
#define SCIO_IFD_LOG_ERROR  2

/* The backend's own messages about a driver: same channel as log_msg. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
void scio_ifd_log(int priority, const char *fmt, ...);

#endif
