/* ifd_internal.h - shared between the IFD backend's modules. */
#ifndef SCIO_IFD_INTERNAL_H
#define SCIO_IFD_INTERNAL_H

/* Make log_msg / log_xxd visible to drivers loaded afterwards. */
void scio_ifd_export_log_symbols(void);

#endif
