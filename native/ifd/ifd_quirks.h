/*
 * ifd_quirks.h - the IFD backend's driver quirks table.
 *
 * The backend drives every IFD handler through the standard calls and the
 * documented extensions (ifd_ext.h) and knows no driver by name, except
 * here: this table is the one place a driver may be named.  Each entry says
 * how to recognise one driver and which workaround the backend applies to
 * it; a driver no entry matches gets none.  An entry matches by the file
 * name of the library (as given, or as a symlink resolves) or by symbols
 * only that driver exports, so a renamed copy is recognised too.
 *
 * The entries (ifd_quirks.c):
 *
 *   vpcd   vsmartcard's virtual reader (libifdvpcd; file name libifdvpcd*, or
 *          the library exports vicc_init and vicc_transmit).  The driver
 *          listens on TCP for its card, and vpcd 0.8 (Debian 12) writes
 *          each message's 2-byte length and its payload with two send()
 *          calls on a socket without TCP_NODELAY: Nagle's algorithm holds the
 *          payload until the card acknowledges the length, which a card
 *          that delays its ACKs does ~40 ms later, on every message.
 *          Workaround (SCIO_IFD_QUIRK_TCP_NODELAY): set TCP_NODELAY on the
 *          driver's listening socket right after the channel opens (Linux's
 *          accepted sockets inherit it, so the card's first exchange is
 *          fast), and on every connection accepted from it when the driver
 *          reports a new card (a connection swapped in without the slot
 *          ever being reported empty keeps what it inherited).
 *
 * Which sockets are the driver's: the TCP/IPv4 sockets of this process whose
 * *local* port is the port the driver was told to listen on (vpcd: the port
 * of the device name "/dev/null:PORT", default 0x8C7B, or the channel
 * number; plus the slot, LUN & 0xFFFF).  That is the driver's listening
 * socket and the connections accepted from it, and nothing the application
 * owns: while vpcd listens on 0.0.0.0:PORT (without SO_REUSEPORT) the kernel
 * lets no other socket bind that port, and the application's own
 * connections to the driver (a card in the same process) have an ephemeral
 * local port, PORT being their peer's.  The only exception would be an
 * application socket that held PORT as its local port, with SO_REUSEADDR,
 * before the driver bound it; TCP_NODELAY then only makes that socket send
 * without batching.  The process's descriptors are listed from
 * /proc/self/fd; a descriptor closed and reused during the scan is checked
 * as what it is when looked at, so it is never mistaken for a driver socket.
 * vpcd's client mode (a host name in the device name: the driver connects
 * to the card) and port 0 (any port) are not covered: the driver's sockets
 * could not be told from the application's by their port.
 *
 * Where: the socket scan uses Linux's /proc/self/fd, so the workaround acts
 * on Linux only; elsewhere the entry still matches (for the log) and does
 * nothing.
 */
#ifndef SCIO_IFD_QUIRKS_H
#define SCIO_IFD_QUIRKS_H

/* Set TCP_NODELAY on the driver's TCP sockets (entry vpcd, above). */
#define SCIO_IFD_QUIRK_TCP_NODELAY 0x1u

/* What applies to one open channel; all zero (driver NULL) for none. */
typedef struct scio_ifd_quirks {
    const char *driver;  /* the matching entry's name, for logs; NULL: none */
    unsigned flags;      /* SCIO_IFD_QUIRK_* that apply here */
    int tcp_port;        /* TCP_NODELAY: local port of the driver's sockets */
} scio_ifd_quirks;

/* Look the driver up before its channel is opened: `library` as given to
 * scio_open_ifd, `handle` what the loader returned for it, `by_name` 1 for
 * IFDHCreateChannelByName(`device_name`), 0 for IFDHCreateChannel (the
 * channel number is then `device_name` as a number). */
void scio_ifd_quirks_find(scio_ifd_quirks *q, const char *library, void *handle,
                          int by_name, const char *device_name, unsigned long lun);

/* Right after the driver opened the channel (before any other call on it). */
void scio_ifd_quirks_channel_opened(const scio_ifd_quirks *q);

/* The driver reported a card where there was none (or none known yet). */
void scio_ifd_quirks_card_arrived(const scio_ifd_quirks *q);

#endif
