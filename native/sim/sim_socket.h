/*
 * sim_socket.h - a simulated reader whose card is served over a Unix socket.
 *
 * A reader opened with the device name "socket:PATH[?options]" (pcscd
 * passes reader.conf's DEVICENAME) keeps a link to the card server
 * listening on PATH (`scardio card serve`): a thread per reader connects,
 * greets the server (HELLO), inserts the server's card as an external card
 * (ext_card.h) while the connection lasts, removes it when the server goes,
 * and connects again when it comes back.  The framing protocol is described
 * in docs/virtual-cards.md ("The card-server protocol").
 *
 * Options after '?', separated by commas:
 *   timeout=MS  bound on each reply of the server (default 5000, 1..600000);
 *               a server that does not answer in time is disconnected
 *   retry=MS    wait between connection attempts (default 200, 10..60000)
 */
#ifndef SCARDIO_SIM_SOCKET_H
#define SCARDIO_SIM_SOCKET_H

#include "ifd_abi.h"

#define SIM_SOCKET_PREFIX "socket:"

/* 1 when `name` asks for a socket card. */
int sim_socket_is_name(const char *name);

/* Start the link of reader `lun` (already open) to the server `name`
 * names.  IFD_SUCCESS, or IFD_COMMUNICATION_ERROR (malformed name, path too
 * long for a socket address, no thread, or a platform without Unix
 * sockets). */
IFD_RESPONSECODE sim_socket_start(IFD_DWORD lun, const char *name);

/* Stop the link of reader `lun`, if it has one: the card is removed and
 * the thread joined.  Call with no reader lock held (the thread removes the
 * card through the reader). */
void sim_socket_stop(IFD_DWORD lun);

#endif /* SCARDIO_SIM_SOCKET_H */
