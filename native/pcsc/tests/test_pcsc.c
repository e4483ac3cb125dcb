/*
 * test_pcsc.c - the PC/SC backend over fake_pcsc.c (a scripted client
 * library), run under valgrind by run.sh: the contract's IOCTLs, the
 * translations to the library (share modes, dispositions, PCI, control
 * codes), the error mapping, and cancellation of a tracking wait whose
 * first SCardCancel is dropped, and scardio's extension IOCTLs (share mode
 * per connection, transactions); on Linux calls and tracking waits bounded
 * in their caller's thread (the watchdog).
 *
 * usage: test_pcsc main FAKE_LIBRARY
 *        test_pcsc missing            (SCARDIO_PCSC_LIBRARY names no file)
 *        test_pcsc no-entry LIBRARY   (a library without the SCard* API)
 * The library is loaded once per process, so each case is its own run.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scio.h"
#include "pcsc/pcsc_abi.h"

static int passed, failed;

/* The backend looks at a connected card through SCardGetAttrib on
 * pcsc-lite (one round trip), through SCardStatus elsewhere. */
#if defined(_WIN32) || defined(__APPLE__)
#define LOOKS_BY_ATTRIBUTE 0
#else
#define LOOKS_BY_ATTRIBUTE 1
#endif

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) {                                                          \
            passed++;                                                        \
        } else {                                                             \
            failed++;                                                        \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
                    #cond);                                                  \
        }                                                                    \
    } while (0)

enum { EP_ESTABLISH, EP_CONNECT, EP_RECONNECT, EP_DISCONNECT, EP_STATUS, EP_GSC,
       EP_CONTROL, EP_TRANSMIT, EP_GET_ATTRIB, EP_CANCEL, EP_LIST, EP_BEGIN, EP_END };

static void (*fake_set_present)(int);
static void (*fake_tear)(int);
static void (*fake_set_atr_attribute)(int);
static void (*fake_count_event)(void);
static void (*fake_fail_next)(int, unsigned long);
static void (*fake_set_no_service)(int);
static void (*fake_set_cancel_delay_ms)(unsigned);
static void (*fake_pnp_change)(int);
static void (*fake_pnp_missing)(int);
static void (*fake_set_claim_rx)(unsigned long);
static unsigned long (*fake_last)(int);
static int (*fake_calls)(int);
static int (*fake_waiting)(void);
static void (*fake_hold_other)(int);
static void (*fake_context_sockets)(int);
static void (*fake_hang_connect)(int);
static void (*fake_drop_sockets)(void);
static void (*fake_hang_gsc)(int);
static void (*fake_set_gone)(int);

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

static void sleep_ms(unsigned ms)
{
    struct timespec t = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

static scio_status ioctl_u32(scio_device *d, uint32_t code, uint32_t in, uint8_t *out,
                             size_t cap, size_t *n)
{
    uint8_t b[4] = { (uint8_t)in, (uint8_t)(in >> 8), (uint8_t)(in >> 16),
                     (uint8_t)(in >> 24) };
    return scio_ioctl(d, code, b, 4, out, cap, n);
}

static uint32_t state_of(scio_device *d)
{
    uint8_t out[4];
    size_t n = 0;
    if (scio_ioctl(d, SCIO_IOCTL_GET_STATE, NULL, 0, out, 4, &n) != SCIO_SUCCESS || n != 4)
        return 99;
    return (uint32_t)out[0] | (uint32_t)out[1] << 8;
}

static void *insert_later(void *arg)
{
    (void)arg;
    sleep_ms(50);
    fake_set_present(1);
    return NULL;
}

static void test_listing(void)
{
    char buf[64];
    size_t needed = 0;
    char err[256];
    CHECK(scio_pcsc_list_readers(buf, 4, &needed, err, sizeof err) == SCIO_BUFFER_TOO_SMALL);
    CHECK(needed == sizeof "Fake Reader 0" + sizeof "Fake Reader 1" + 1);
    CHECK(scio_pcsc_list_readers(buf, sizeof buf, &needed, err, sizeof err) == SCIO_SUCCESS);
    CHECK(strcmp(buf, "Fake Reader 0") == 0);
    CHECK(strcmp(buf + sizeof "Fake Reader 0", "Fake Reader 1") == 0);
    CHECK(buf[needed - 1] == 0 && buf[needed - 2] == 0);
    fake_fail_next(EP_LIST, PCSC_E_NO_READERS_AVAILABLE);
    CHECK(scio_pcsc_list_readers(buf, sizeof buf, &needed, err, sizeof err) == SCIO_SUCCESS);
    CHECK(needed == 1 && buf[0] == 0);
    fake_set_no_service(1);
    CHECK(scio_pcsc_list_readers(buf, sizeof buf, &needed, err, sizeof err) == SCIO_NO_SERVICE);
    CHECK(strstr(err, "not running") != NULL);
    fake_set_no_service(0);
}

static void test_open_errors(void)
{
    scio_device *d = (scio_device *)1;
    char err[256];
    scio_pcsc_options bad = { 7, 0 };
    CHECK(scio_open_pcsc("", NULL, NULL, &d, err, sizeof err) == SCIO_INVALID_PARAMETER);
    CHECK(d == NULL);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, &bad, &d, err, sizeof err) ==
          SCIO_INVALID_PARAMETER);
    CHECK(scio_open_pcsc("Nobody", NULL, NULL, &d, err, sizeof err) ==
          SCIO_OBJECT_NAME_NOT_FOUND);
    CHECK(strstr(err, "Nobody") != NULL);
    fake_set_no_service(1);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, NULL, &d, err, sizeof err) == SCIO_NO_SERVICE);
    fake_set_no_service(0);
}

static void test_card_sequence(void)
{
    scio_device *d;
    scio_pcsc_options opts = { SCIO_PCSC_SHARE_EXCLUSIVE, 0 };
    uint8_t out[300];
    uint8_t tx[8 + 5] = { 2, 0, 0, 0, 8, 0, 0, 0, 0x00, 0xB0, 0x00, 0x00, 0x02 };
    size_t n = 0;
    char err[256];
    long drv;

    fake_set_present(0);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, &opts, &d, err, sizeof err) == SCIO_SUCCESS);
    CHECK(state_of(d) == SCIO_STATE_ABSENT);
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_NO_MEDIA);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_NO_MEDIA);
    fake_set_present(1);
    CHECK(state_of(d) == SCIO_STATE_SWALLOWED);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_INVALID_DEVICE_STATE);
    /* COLD_RESET without a handle: connect, in the share mode opened with. */
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
    CHECK(n == 5 && out[0] == 0x3B && fake_last(0) == PCSC_SHARE_EXCLUSIVE);
    CHECK(state_of(d) == SCIO_STATE_SPECIFIC);
    CHECK(ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_ATR_STRING, out, 33, &n) ==
          SCIO_SUCCESS && n == 5);
    CHECK(ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_CURRENT_PROTOCOL_TYPE, out, 4, &n)
          == SCIO_SUCCESS && out[0] == SCIO_PROTOCOL_T1);
    CHECK(ioctl_u32(d, SCIO_IOCTL_SET_PROTOCOL, SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1, out, 4,
                    &n) == SCIO_SUCCESS && n == 4 && out[0] == SCIO_PROTOCOL_T1);
    /* RELEASE_CARD: the handle goes as LEAVE, the card's power pcscd's. */
    {
        int before = fake_calls(EP_DISCONNECT);
        CHECK(ioctl_u32(d, SCIO_IOCTL_RELEASE_CARD, 0, out, 3, &n) == SCIO_BUFFER_TOO_SMALL);
        CHECK(fake_calls(EP_DISCONNECT) == before);
        CHECK(scio_ioctl(d, SCIO_IOCTL_RELEASE_CARD, NULL, 0, out, 4, &n) == SCIO_SUCCESS &&
              n == 4 && out[0] == 1);
        CHECK(fake_calls(EP_DISCONNECT) == before + 1 && fake_last(2) == PCSC_LEAVE_CARD);
        CHECK(state_of(d) == SCIO_STATE_SWALLOWED); /* no handle now: the reader's view */
        CHECK(scio_ioctl(d, SCIO_IOCTL_RELEASE_CARD, NULL, 0, out, 4, &n) == SCIO_SUCCESS &&
              out[0] == 1 && fake_calls(EP_DISCONNECT) == before + 1); /* nothing more */
        CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
        CHECK(ioctl_u32(d, SCIO_IOCTL_SET_PROTOCOL, SCIO_PROTOCOL_T0 | SCIO_PROTOCOL_T1, out, 4,
                        &n) == SCIO_SUCCESS && out[0] == SCIO_PROTOCOL_T1);
    }
    /* Another protocol: a reconnect with a reset. */
    CHECK(ioctl_u32(d, SCIO_IOCTL_SET_PROTOCOL, SCIO_PROTOCOL_T0, out, 4, &n) == SCIO_SUCCESS);
    CHECK(out[0] == SCIO_PROTOCOL_T0 && fake_last(2) == PCSC_RESET_CARD);
    CHECK(ioctl_u32(d, SCIO_IOCTL_SET_PROTOCOL, SCIO_PROTOCOL_RAW, out, 4, &n) ==
          SCIO_NOT_SUPPORTED);
    CHECK(ioctl_u32(d, SCIO_IOCTL_SET_PROTOCOL, SCIO_PROTOCOL_T1, out, 4, &n) == SCIO_SUCCESS);
    /* TRANSMIT: the PCI names the protocol in force; T=0 asked is refused. */
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_SUCCESS);
    CHECK(n == 8 + 5 + 2 && out[0] == 2 && out[4] == 8 && out[8 + 5] == 0x90);
    CHECK(fake_last(3) == PCSC_PROTOCOL_T1);
    tx[0] = 1;
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_INVALID_DEVICE_STATE);
    tx[0] = 2;
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, 12, &n) ==
          SCIO_BUFFER_TOO_SMALL);
    fake_set_claim_rx(70000); /* more than any buffer: not trusted */
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_DEVICE_DATA_ERROR);
    fake_set_claim_rx(0);
    /* Errors of the library, typed. */
    fake_fail_next(EP_TRANSMIT, PCSC_E_TIMEOUT);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_IO_TIMEOUT);
    drv = scio_device_driver_code(d);
    CHECK((uint32_t)drv == PCSC_E_TIMEOUT);
    fake_fail_next(EP_TRANSMIT, PCSC_F_COMM_ERROR);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_NO_SERVICE);
    /* GET_STATE with a handle on pcsc-lite: one SCardGetAttrib, no
     * SCardStatus (two round trips to pcscd). */
    {
        int status_calls = fake_calls(EP_STATUS), attrib_calls = fake_calls(EP_GET_ATTRIB);
        CHECK(state_of(d) == SCIO_STATE_SPECIFIC);
        CHECK(fake_calls(EP_STATUS) == status_calls + !LOOKS_BY_ATTRIBUTE);
        CHECK(fake_calls(EP_GET_ATTRIB) == attrib_calls + LOOKS_BY_ATTRIBUTE);
    }
    /* Reset by another client: POWERED until a reset of ours (pcscd
     * reports the pending reset to either call). */
    if (LOOKS_BY_ATTRIBUTE)
        fake_fail_next(EP_GET_ATTRIB, PCSC_W_RESET_CARD);
    fake_fail_next(EP_STATUS, PCSC_W_RESET_CARD);
    CHECK(state_of(d) == SCIO_STATE_POWERED);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_INVALID_DEVICE_STATE);
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_WARM_RESET, out, 33, &n) == SCIO_SUCCESS);
    CHECK(fake_last(2) == PCSC_RESET_CARD && state_of(d) == SCIO_STATE_SPECIFIC);
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
    CHECK(fake_last(2) == PCSC_UNPOWER_CARD);
    /* Vendor controls go through the card handle while there is one. */
    {
        uint8_t data[3] = { 1, 2, 3 };
        CHECK(scio_ioctl(d, SCIO_VENDOR_CTL_PCSC(3500), data, 3, out, 8, &n) == SCIO_SUCCESS);
        CHECK(n == 3 && out[2] == 3 && fake_last(1) == 0x42000000u + 3500u);
        CHECK(fake_last(0) == PCSC_SHARE_EXCLUSIVE);
        CHECK(scio_ioctl(d, SCIO_VENDOR_CTL_WIN(3500), data, 3, out, 2, &n) ==
              SCIO_BUFFER_TOO_SMALL);
        CHECK(fake_last(1) == 0x42000000u + 3500u); /* Windows style, pcsc-lite code */
    }
    /* POWER_DOWN: the handle goes with SCARD_UNPOWER_CARD. */
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_POWER_DOWN, out, 0, &n) == SCIO_SUCCESS);
    CHECK(fake_last(2) == PCSC_UNPOWER_CARD && fake_last(4) == 0);
    CHECK(state_of(d) == SCIO_STATE_SWALLOWED);
    /* Without a card handle: a direct connection per call, closed after. */
    {
        uint8_t data[1] = { 9 };
        CHECK(scio_ioctl(d, SCIO_VENDOR_CTL_PCSC(3501), data, 1, out, 8, &n) == SCIO_SUCCESS);
        CHECK(fake_last(0) == PCSC_SHARE_DIRECT && fake_last(4) == 0);
        CHECK(scio_ioctl(d, SCIO_CTL_CODE(99), NULL, 0, out, 8, &n) ==
              SCIO_INVALID_DEVICE_REQUEST);
    }
    CHECK(ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_VENDOR_NAME, out, 16, &n) ==
          SCIO_SUCCESS && n == 4 && memcmp(out, "fake", 4) == 0);
    CHECK(fake_last(0) == PCSC_SHARE_DIRECT && fake_last(4) == 0);
    CHECK(ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_VENDOR_IFD_TYPE, out, 16, &n) ==
          SCIO_NOT_SUPPORTED);
    CHECK(ioctl_u32(d, SCIO_IOCTL_GET_ATTRIBUTE, SCIO_ATTR_CHARACTERISTICS, out, 16, &n) ==
          SCIO_SUCCESS && n == 4 && out[0] == 0);
    fake_fail_next(EP_CONNECT, PCSC_E_SHARING_VIOLATION);
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) ==
          SCIO_SHARING_VIOLATION);
    /* A card removed under a connection: NO_MEDIA, and the handle is gone. */
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
    fake_set_present(0);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_NO_MEDIA);
    CHECK(fake_last(4) == 0 && state_of(d) == SCIO_STATE_ABSENT);
    /* Removed under a connection, seen by GET_STATE: SCardStatus says so. */
    fake_set_present(1);
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
    fake_set_present(0);
    CHECK(state_of(d) == SCIO_STATE_ABSENT && fake_last(4) == 0);
    /* A driver without the ATR attribute: SCardStatus, and no more tries. */
    fake_set_present(1);
    fake_set_atr_attribute(0);
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
    CHECK(n == 5 && out[0] == 0x3B);
    {
        int status_calls = fake_calls(EP_STATUS), attrib_calls = fake_calls(EP_GET_ATTRIB);
        CHECK(state_of(d) == SCIO_STATE_SPECIFIC && state_of(d) == SCIO_STATE_SPECIFIC);
        CHECK(fake_calls(EP_STATUS) == status_calls + 2);
        CHECK(fake_calls(EP_GET_ATTRIB) == attrib_calls);
    }
    fake_set_atr_attribute(1);
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_POWER_DOWN, out, 0, &n) == SCIO_SUCCESS);
    fake_set_present(0);
    {
        uint8_t le[4];
        size_t m = 0;
        CHECK(scio_ioctl(d, SCIO_IOCTL_GET_LAST_ERROR, NULL, 0, le, 4, &m) == SCIO_SUCCESS);
        CHECK(m == 4 && le[3] == 0xC0);
    }
    CHECK(scio_ioctl(d, SCIO_IOCTL_EJECT, NULL, 0, NULL, 0, &n) == SCIO_NOT_SUPPORTED);
    /* Closing with a card connected leaves it to the resource manager. */
    fake_set_present(1);
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
    scio_close(d);
    CHECK(fake_last(2) == PCSC_LEAVE_CARD && fake_last(4) == 0);
}

static void *release_other_later(void *arg)
{
    (void)arg;
    sleep_ms(60);
    fake_hold_other(0);
    return NULL;
}

static uint32_t share_of(scio_device *d, uint32_t want, scio_status *st)
{
    uint8_t out[4] = { 0xEE, 0xEE, 0xEE, 0xEE };
    size_t n = 0;
    *st = ioctl_u32(d, SCIO_IOCTL_SET_SHARE_MODE, want, out, 4, &n);
    return n == 4 ? (uint32_t)out[0] | (uint32_t)out[1] << 8 : 99;
}

static void test_share_and_transactions(void)
{
    scio_device *d;
    uint8_t out[300];
    uint8_t tx[8 + 5] = { 2, 0, 0, 0, 8, 0, 0, 0, 0x00, 0xB0, 0x00, 0x00, 0x02 };
    size_t n = 0;
    char err[256];
    scio_status st;
    pthread_t t;
    double t0;

    fake_set_present(1);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, NULL, &d, err, sizeof err) == SCIO_SUCCESS);
    /* Bad input, typed; nothing changes. */
    CHECK(scio_ioctl(d, SCIO_IOCTL_SET_SHARE_MODE, "\1", 1, out, 4, &n) ==
          SCIO_INVALID_PARAMETER);
    CHECK(share_of(d, 3, &st) == 99 && st == SCIO_INVALID_PARAMETER);
    CHECK(ioctl_u32(d, SCIO_IOCTL_SET_SHARE_MODE, SCIO_SHARE_SHARED, out, 3, &n) ==
          SCIO_BUFFER_TOO_SMALL);
    /* No connection yet: the mode of the next SCardConnect. */
    CHECK(share_of(d, SCIO_SHARE_DEFAULT, &st) == SCIO_SHARE_SHARED && st == SCIO_SUCCESS);
    CHECK(share_of(d, SCIO_SHARE_EXCLUSIVE, &st) == SCIO_SHARE_EXCLUSIVE && st == SCIO_SUCCESS);
    CHECK(fake_last(4) == 0); /* nothing connected for it */
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
    CHECK(fake_last(0) == PCSC_SHARE_EXCLUSIVE);
    /* The same mode again: no call.  Another: the kept handle is let go
     * (LEAVE: the card stays powered) and the next POWER connects anew. */
    {
        int disconnects = fake_calls(EP_DISCONNECT);
        CHECK(share_of(d, SCIO_SHARE_EXCLUSIVE, &st) == SCIO_SHARE_EXCLUSIVE);
        CHECK(fake_calls(EP_DISCONNECT) == disconnects && fake_last(4) == 1);
        CHECK(share_of(d, SCIO_SHARE_DEFAULT, &st) == SCIO_SHARE_SHARED && st == SCIO_SUCCESS);
        CHECK(fake_calls(EP_DISCONNECT) == disconnects + 1 && fake_last(4) == 0);
        CHECK(fake_last(2) == PCSC_LEAVE_CARD && state_of(d) == SCIO_STATE_SWALLOWED);
        CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
        CHECK(fake_last(0) == PCSC_SHARE_SHARED && state_of(d) == SCIO_STATE_SPECIFIC);
        /* Exclusive refused while others are connected: at the connect,
         * typed. */
        CHECK(share_of(d, SCIO_SHARE_EXCLUSIVE, &st) == SCIO_SHARE_EXCLUSIVE);
        fake_fail_next(EP_CONNECT, PCSC_E_SHARING_VIOLATION);
        CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) ==
              SCIO_SHARING_VIOLATION);
        CHECK((uint32_t)scio_device_driver_code(d) == PCSC_E_SHARING_VIOLATION);
        CHECK(fake_last(0) == PCSC_SHARE_EXCLUSIVE && fake_last(4) == 0);
        CHECK(share_of(d, SCIO_SHARE_SHARED, &st) == SCIO_SHARE_SHARED);
        CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
        CHECK(fake_last(0) == PCSC_SHARE_SHARED);
    }
    /* Transactions: END without BEGIN is refused; BEGIN then END. */
    CHECK(scio_ioctl(d, SCIO_IOCTL_END_TRANSACTION, NULL, 0, NULL, 0, &n) ==
          SCIO_INVALID_DEVICE_STATE);
    CHECK(scio_ioctl(d, SCIO_IOCTL_BEGIN_TRANSACTION, NULL, 0, NULL, 0, &n) == SCIO_SUCCESS);
    CHECK(fake_last(5) == 1);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_SUCCESS);
    /* Nested, or switching the share mode inside: refused. */
    CHECK(scio_ioctl(d, SCIO_IOCTL_BEGIN_TRANSACTION, NULL, 0, NULL, 0, &n) ==
          SCIO_INVALID_DEVICE_STATE);
    CHECK(share_of(d, SCIO_SHARE_EXCLUSIVE, &st) == 99 && st == SCIO_INVALID_DEVICE_STATE);
    CHECK(fake_last(6) == 1);
    CHECK(scio_ioctl(d, SCIO_IOCTL_END_TRANSACTION, NULL, 0, NULL, 0, &n) == SCIO_SUCCESS);
    CHECK(fake_last(5) == 0 && fake_last(7) == 1 && fake_last(2) == PCSC_LEAVE_CARD);
    CHECK(scio_ioctl(d, SCIO_IOCTL_END_TRANSACTION, NULL, 0, NULL, 0, &n) ==
          SCIO_INVALID_DEVICE_STATE);
    /* Another client's transaction: BEGIN waits for it to end. */
    fake_hold_other(1);
    pthread_create(&t, NULL, release_other_later, NULL);
    t0 = now_ms();
    CHECK(scio_ioctl(d, SCIO_IOCTL_BEGIN_TRANSACTION, NULL, 0, NULL, 0, &n) == SCIO_SUCCESS);
    CHECK(now_ms() - t0 >= 50);
    pthread_join(t, NULL);
    CHECK(scio_ioctl(d, SCIO_IOCTL_END_TRANSACTION, NULL, 0, NULL, 0, &n) == SCIO_SUCCESS);
    /* An overlapped BEGIN given up (cancelled) while it waits: once the
     * other client lets go, the transaction it got is ended at once. */
    {
        scio_op *op;
        int ends = (int)fake_last(7);
        fake_hold_other(1);
        CHECK(scio_submit(d, SCIO_IOCTL_BEGIN_TRANSACTION, NULL, 0, 0, 8, &op) == SCIO_SUCCESS);
        sleep_ms(20);
        scio_op_cancel(op);
        CHECK(!scio_op_done(op)); /* still inside SCardBeginTransaction */
        fake_hold_other(0);
        CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_CANCELLED);
        scio_op_release(op);
        CHECK(fake_last(5) == 0 && (int)fake_last(7) == ends + 1);
        CHECK(scio_ioctl(d, SCIO_IOCTL_END_TRANSACTION, NULL, 0, NULL, 0, &n) ==
              SCIO_INVALID_DEVICE_STATE);
    }
    /* A card removed inside a transaction: NO_MEDIA, and the transaction
     * ended with the handle (END succeeds, a second END is refused). */
    CHECK(scio_ioctl(d, SCIO_IOCTL_BEGIN_TRANSACTION, NULL, 0, NULL, 0, &n) == SCIO_SUCCESS);
    fake_set_present(0);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_NO_MEDIA);
    CHECK(fake_last(4) == 0 && fake_last(5) == 0);
    CHECK(scio_ioctl(d, SCIO_IOCTL_END_TRANSACTION, NULL, 0, NULL, 0, &n) == SCIO_SUCCESS);
    CHECK(scio_ioctl(d, SCIO_IOCTL_END_TRANSACTION, NULL, 0, NULL, 0, &n) ==
          SCIO_INVALID_DEVICE_STATE);
    /* No card: BEGIN is the no-card error, as TRANSMIT is. */
    CHECK(scio_ioctl(d, SCIO_IOCTL_BEGIN_TRANSACTION, NULL, 0, NULL, 0, &n) == SCIO_NO_MEDIA);
    /* A card in, not connected for us: INVALID_DEVICE_STATE. */
    fake_set_present(1);
    CHECK(scio_ioctl(d, SCIO_IOCTL_BEGIN_TRANSACTION, NULL, 0, NULL, 0, &n) ==
          SCIO_INVALID_DEVICE_STATE);
    /* A reset inside a transaction: TRANSMIT reports it; the library will
     * not end the transaction on that handle, so END drops the handle (which
     * ends it) and reports the reset. */
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
    CHECK(scio_ioctl(d, SCIO_IOCTL_BEGIN_TRANSACTION, NULL, 0, NULL, 0, &n) == SCIO_SUCCESS);
    fake_fail_next(EP_TRANSMIT, PCSC_W_RESET_CARD);
    CHECK(scio_ioctl(d, SCIO_IOCTL_TRANSMIT, tx, sizeof tx, out, sizeof out, &n) ==
          SCIO_INVALID_DEVICE_STATE);
    CHECK(scio_ioctl(d, SCIO_IOCTL_BEGIN_TRANSACTION, NULL, 0, NULL, 0, &n) ==
          SCIO_INVALID_DEVICE_STATE);
    fake_fail_next(EP_END, PCSC_W_RESET_CARD);
    CHECK(scio_ioctl(d, SCIO_IOCTL_END_TRANSACTION, NULL, 0, NULL, 0, &n) ==
          SCIO_INVALID_DEVICE_STATE);
    CHECK((uint32_t)scio_device_driver_code(d) == PCSC_W_RESET_CARD);
    CHECK(fake_last(4) == 0 && fake_last(5) == 0 && state_of(d) == SCIO_STATE_SWALLOWED);
    /* POWER_DOWN inside a transaction ends it with the handle. */
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
    CHECK(scio_ioctl(d, SCIO_IOCTL_BEGIN_TRANSACTION, NULL, 0, NULL, 0, &n) == SCIO_SUCCESS);
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_POWER_DOWN, out, 0, &n) == SCIO_SUCCESS);
    CHECK(fake_last(5) == 0);
    CHECK(scio_ioctl(d, SCIO_IOCTL_END_TRANSACTION, NULL, 0, NULL, 0, &n) == SCIO_SUCCESS);
    /* Closing inside a transaction ends it (the handle goes). */
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_COLD_RESET, out, 33, &n) == SCIO_SUCCESS);
    CHECK(scio_ioctl(d, SCIO_IOCTL_BEGIN_TRANSACTION, NULL, 0, NULL, 0, &n) == SCIO_SUCCESS);
    /* Overlapped too (the core's lane). */
    {
        scio_op *op;
        CHECK(scio_submit(d, SCIO_IOCTL_SET_SHARE_MODE, "\1\0\0\0", 4, 4, 9, &op) ==
              SCIO_SUCCESS);
        CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_INVALID_DEVICE_STATE);
        scio_op_release(op);
    }
    scio_close(d);
    CHECK(fake_last(4) == 0 && fake_last(5) == 0);
}

static void test_tracking(void)
{
    scio_device *d;
    scio_op *op, *busy;
    char err[256];
    pthread_t t;
    double t0;

    fake_set_present(0);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, NULL, &d, err, sizeof err) == SCIO_SUCCESS);
    /* Already true: at once. */
    CHECK(scio_ioctl(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, NULL, 0, NULL) == SCIO_SUCCESS);
    /* Pends until the card comes. */
    pthread_create(&t, NULL, insert_later, NULL);
    t0 = now_ms();
    CHECK(scio_ioctl(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, NULL, 0, NULL) == SCIO_SUCCESS);
    CHECK(now_ms() - t0 >= 40);
    pthread_join(t, NULL);
    /* A removal and a reinsertion between two requests still completes
     * IS_ABSENT (the event count moved), and then IS_PRESENT. */
    fake_set_present(0);
    fake_set_present(1);
    CHECK(scio_ioctl(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, NULL, 0, NULL) == SCIO_SUCCESS);
    CHECK(scio_ioctl(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, NULL, 0, NULL) == SCIO_SUCCESS);
    /* A removal seen torn (the new level, then its event count) is one
     * event: the IS_PRESENT after it waits for a card. */
    fake_tear(0);
    CHECK(scio_ioctl(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, NULL, 0, NULL) == SCIO_SUCCESS);
    fake_count_event();
    CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 4, &op) == SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 100) == 0);
    fake_set_present(1);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    scio_op_release(op);
    /* The same torn look in the middle of a wait: no phantom either. */
    CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 5, &op) == SCIO_SUCCESS);
    fake_tear(0);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    scio_op_release(op);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 6, &op) == SCIO_SUCCESS);
    while (!fake_waiting())
        sleep_ms(1);
    fake_count_event();
    CHECK(scio_op_wait(op, 100) == 0);
    fake_set_present(1);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    scio_op_release(op);
    /* The wake-up is the request's last library call: nothing after the
     * SCardGetStatusChange that saw the event (no second look, no
     * SCardStatus), so the event costs what pcscd's own client pays. */
    {
        int before[EP_END + 1], changed = 0, gsc;
        CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 7, &op) == SCIO_SUCCESS);
        do { /* inside the blocking call, not the first look */
            gsc = fake_calls(EP_GSC);
            sleep_ms(20);
        } while (!fake_waiting() || fake_calls(EP_GSC) != gsc);
        for (int ep = 0; ep <= EP_END; ep++)
            before[ep] = fake_calls(ep);
        fake_set_present(0);
        CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
        for (int ep = 0; ep <= EP_END; ep++)
            changed += fake_calls(ep) != before[ep];
        CHECK(changed == 0);
        scio_op_release(op);
        fake_set_present(1);
    }
    /* A cancel the library drops (the wait is not yet cancellable) is
     * repeated until it lands: prompt, not the 1 s slice. */
    fake_set_cancel_delay_ms(20);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 1, &op) == SCIO_SUCCESS);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 2, &busy) == SCIO_SUCCESS);
    CHECK(scio_op_wait(busy, 2000) == 1 && scio_op_status(busy) == SCIO_DEVICE_BUSY);
    scio_op_release(busy);
    while (!fake_waiting())
        sleep_ms(1);
    t0 = now_ms();
    scio_op_cancel(op);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_CANCELLED);
    CHECK(now_ms() - t0 < 500);
    scio_op_release(op);
    /* Close with a wait pending: prompt, the wait cancelled. */
    fake_set_cancel_delay_ms(0);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 3, &op) == SCIO_SUCCESS);
    while (!fake_waiting())
        sleep_ms(1);
    t0 = now_ms();
    scio_close(d);
    CHECK(now_ms() - t0 < 500);
    CHECK(scio_op_done(op) && scio_op_status(op) == SCIO_CANCELLED);
    scio_op_release(op);
    /* The reader going away during a wait. */
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, NULL, &d, err, sizeof err) == SCIO_SUCCESS);
    fake_fail_next(EP_GSC, PCSC_E_READER_UNAVAILABLE);
    CHECK(scio_ioctl(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, NULL, 0, NULL) ==
          SCIO_DEVICE_NOT_CONNECTED);
    scio_close(d);
}

#define RESOLVE(name)                               \
    do {                                            \
        *(void **)(&name) = dlsym(h, #name);        \
        CHECK(name != NULL);                        \
    } while (0)

struct watch_waiter {
    scio_pcsc_watch *w;
    unsigned timeout_ms;
    scio_status st;
};

static void *watch_wait_thread(void *arg)
{
    struct watch_waiter *ww = arg;
    unsigned count = 99;
    long drv;
    ww->st = scio_pcsc_watch_wait(ww->w, ww->timeout_ms, 2, &count, &drv);
    return NULL;
}

/* Wait until the backend's watch is inside SCardGetStatusChange. */
static void until_waiting(void)
{
    for (int i = 0; i < 2000 && !fake_waiting(); i++) {
        struct timespec t = {0, 1000000};
        nanosleep(&t, NULL);
    }
}

/* ---- a tracking set: many readers in one SCardGetStatusChange ---------- */

static void *wake_set_later(void *arg)
{
    sleep_ms(50);
    scio_track_set_wake(arg);
    return NULL;
}

static void *cancel_later(void *arg)
{
    sleep_ms(50);
    scio_op_cancel(arg);
    return NULL;
}

static void *close_later(void *arg)
{
    sleep_ms(50);
    scio_close(arg);
    return NULL;
}

static double closed_in_ms;

static void *close_timed_later(void *arg)
{
    double t0;
    sleep_ms(50);
    t0 = now_ms();
    scio_close(arg);
    closed_in_ms = now_ms() - t0;
    return NULL;
}

static void *gone_later(void *arg)
{
    (void)arg;
    sleep_ms(50);
    fake_set_gone(1);
    return NULL;
}

/* One wait's completions, in `c`; the count, or the wait's 0 / -1. */
static int set_wait(scio_track_set *set, int ms, scio_completion *c)
{
    return scio_track_set_wait(set, ms, c, 4);
}

/* Completions within `ms`, over any spurious wake (a close repeats its
 * wake while it waits, and one may land after the wait returned). */
static int set_wait_done(scio_track_set *set, int ms, scio_completion *c)
{
    double end = now_ms() + ms;
    int n;
    do {
        n = scio_track_set_wait(set, ms, c, 4);
    } while (n == -1 && now_ms() < end);
    return n;
}

/* Submit `code` on `d` through the set and wait for it alone: its status. */
static scio_status set_request(scio_track_set *set, scio_device *d, uint32_t code, int ms)
{
    scio_completion c[4];
    scio_op *op;
    scio_status st = SCIO_PENDING;
    if (scio_track_set_submit(set, d, code, 77, &op) != SCIO_SUCCESS)
        return SCIO_UNSUCCESSFUL;
    if (set_wait_done(set, ms, c) == 1 && c[0].user == 77 && c[0].op_id == scio_op_id(op))
        st = c[0].status;
    CHECK(st == SCIO_PENDING || scio_op_status(op) == st);
    scio_op_release(op);
    return st;
}

static void test_track_set(void)
{
    scio_device *a, *b;
    scio_track_set *set;
    scio_op *oa, *ob, *busy;
    scio_completion c[4];
    char err[256];
    pthread_t t;
    double t0;
    int n, users = 0;

    fake_set_present(0);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, NULL, &a, err, sizeof err) == SCIO_SUCCESS);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, NULL, &b, err, sizeof err) == SCIO_SUCCESS);
    CHECK(scio_track_set_new(a, &set) == SCIO_SUCCESS);
    CHECK(scio_track_set_accepts(set, b) == 1);
    CHECK(scio_track_set_capacity(set) == 15);
    CHECK(scio_track_set_submit(set, a, SCIO_IOCTL_TRANSMIT, 0, &oa) ==
          SCIO_INVALID_PARAMETER && oa == NULL);
    /* Two readers' requests in one wait: none done yet (the first look,
     * then the blocking call, until the timeout). */
    CHECK(scio_track_set_submit(set, a, SCIO_IOCTL_IS_PRESENT, 1, &oa) == SCIO_SUCCESS);
    CHECK(scio_track_set_submit(set, b, SCIO_IOCTL_IS_PRESENT, 2, &ob) == SCIO_SUCCESS);
    CHECK(scio_track_set_pending(set) == 2);
    CHECK(set_wait(set, 50, c) == 0);
    /* The held request is the reader's one tracking request. */
    CHECK(scio_submit(a, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 9, &busy) == SCIO_SUCCESS);
    CHECK(scio_op_wait(busy, 1000) == 1 && scio_op_status(busy) == SCIO_DEVICE_BUSY);
    scio_op_release(busy);
    CHECK(scio_ioctl(a, SCIO_IOCTL_IS_ABSENT, NULL, 0, NULL, 0, NULL) == SCIO_DEVICE_BUSY);
    /* A card: both complete, handed back to this thread. */
    pthread_create(&t, NULL, insert_later, NULL);
    t0 = now_ms();
    for (n = 0; n < 2 && now_ms() - t0 < 3000;) {
        int got = scio_track_set_wait(set, 2000, c + n, 4 - (size_t)n);
        for (int i = 0; i < got; i++)
            users |= 1 << c[n + i].user;
        n += got > 0 ? got : 0;
    }
    pthread_join(t, NULL);
    CHECK(n == 2 && users == 6 && c[0].status == SCIO_SUCCESS && c[1].status == SCIO_SUCCESS);
    CHECK(scio_op_done(oa) && scio_op_status(oa) == SCIO_SUCCESS);
    CHECK(scio_track_set_pending(set) == 0);
    scio_op_release(oa);
    scio_op_release(ob);
    /* wake() ends a running wait (the first cancel dropped: repeated), and
     * the next wait when none runs. */
    CHECK(scio_track_set_submit(set, a, SCIO_IOCTL_IS_ABSENT, 3, &oa) == SCIO_SUCCESS);
    fake_set_cancel_delay_ms(20);
    pthread_create(&t, NULL, wake_set_later, set);
    t0 = now_ms();
    CHECK(set_wait(set, -1, c) == -1);
    CHECK(now_ms() - t0 < 1000);
    pthread_join(t, NULL);
    fake_set_cancel_delay_ms(0);
    scio_track_set_wake(set);
    t0 = now_ms();
    CHECK(set_wait(set, 1000, c) == -1 && now_ms() - t0 < 500);
    /* Removed and put back between two waits: IS_ABSENT completes (the
     * event count moved), then IS_PRESENT at once. */
    fake_set_present(0);
    fake_set_present(1);
    CHECK(set_wait_done(set, 1000, c) == 1 && c[0].user == 3 && c[0].status == SCIO_SUCCESS);
    scio_op_release(oa);
    CHECK(set_request(set, a, SCIO_IOCTL_IS_PRESENT, 1000) == SCIO_SUCCESS);
    /* A removal seen torn (the level, then its count) is one event: no
     * phantom arrival after it. */
    fake_tear(0);
    CHECK(set_request(set, a, SCIO_IOCTL_IS_ABSENT, 1000) == SCIO_SUCCESS);
    fake_count_event();
    CHECK(scio_track_set_submit(set, a, SCIO_IOCTL_IS_PRESENT, 4, &oa) == SCIO_SUCCESS);
    CHECK(set_wait(set, 100, c) <= 0);
    fake_set_present(1);
    CHECK(set_wait_done(set, 1000, c) == 1 && c[0].user == 4 && c[0].status == SCIO_SUCCESS);
    scio_op_release(oa);
    /* A parked request cancelled: done at once, reported by the next wait. */
    CHECK(scio_track_set_submit(set, a, SCIO_IOCTL_IS_ABSENT, 5, &oa) == SCIO_SUCCESS);
    scio_op_cancel(oa);
    CHECK(scio_op_done(oa) && scio_op_status(oa) == SCIO_CANCELLED);
    CHECK(set_wait_done(set, 1000, c) == 1 && c[0].user == 5 && c[0].status == SCIO_CANCELLED);
    scio_op_release(oa);
    /* Cancelled from another thread while the wait has it: the wait ends. */
    CHECK(scio_track_set_submit(set, a, SCIO_IOCTL_IS_ABSENT, 6, &oa) == SCIO_SUCCESS);
    pthread_create(&t, NULL, cancel_later, oa);
    t0 = now_ms();
    CHECK(set_wait_done(set, 2000, c) == 1 && c[0].user == 6 && c[0].status == SCIO_CANCELLED);
    CHECK(now_ms() - t0 < 1000);
    pthread_join(t, NULL);
    scio_op_release(oa);
    /* A device closed under the wait: bounded, its request cancelled, the
     * other one still waited for.  (b first catches up with the card's
     * moves since its last request, which would end its IS_ABSENT at once.) */
    CHECK(set_request(set, b, SCIO_IOCTL_IS_PRESENT, 1000) == SCIO_SUCCESS);
    CHECK(scio_track_set_submit(set, a, SCIO_IOCTL_IS_ABSENT, 7, &oa) == SCIO_SUCCESS);
    CHECK(scio_track_set_submit(set, b, SCIO_IOCTL_IS_ABSENT, 8, &ob) == SCIO_SUCCESS);
    pthread_create(&t, NULL, close_later, b);
    t0 = now_ms();
    n = set_wait_done(set, 2000, c);
    CHECK(n == 1 && c[0].user == 8 && c[0].status == SCIO_CANCELLED);
    pthread_join(t, NULL);
    CHECK(now_ms() - t0 < 1500);
    CHECK(scio_op_done(ob) && !scio_op_done(oa));
    scio_op_release(ob);
    /* The reader goes away mid-wait: its request ends DEVICE_NOT_CONNECTED. */
    pthread_create(&t, NULL, gone_later, NULL);
    n = set_wait_done(set, 2000, c);
    pthread_join(t, NULL);
    CHECK(n == 1 && c[0].user == 7 && c[0].status == SCIO_DEVICE_NOT_CONNECTED);
    scio_op_release(oa);
    fake_set_gone(0);
    /* A failed wait is each request's; the next wait makes a new context. */
    fake_fail_next(EP_GSC, PCSC_E_NO_SERVICE);
    CHECK(set_request(set, a, SCIO_IOCTL_IS_PRESENT, 1000) == SCIO_NO_SERVICE);
    CHECK(set_request(set, a, SCIO_IOCTL_IS_PRESENT, 1000) == SCIO_SUCCESS);
    /* A wait the library does not let go of (its cancels dropped): closing
     * a device under it gives up at the close's bound, and the wait's late
     * return is dropped. */
    {
        scio_pcsc_options o = {SCIO_PCSC_SHARE_SHARED, 100};
        scio_device *stuck;
        CHECK(scio_open_pcsc("Fake Reader 0", NULL, &o, &stuck, err, sizeof err) ==
              SCIO_SUCCESS);
        CHECK(set_request(set, stuck, SCIO_IOCTL_IS_PRESENT, 1000) == SCIO_SUCCESS);
        CHECK(scio_track_set_submit(set, stuck, SCIO_IOCTL_IS_ABSENT, 10, &oa) ==
              SCIO_SUCCESS);
        fake_set_cancel_delay_ms(5000);
        pthread_create(&t, NULL, close_timed_later, stuck);
        n = set_wait_done(set, 3000, c);
        pthread_join(t, NULL);
        fake_set_cancel_delay_ms(0);
        CHECK(n == 1 && c[0].user == 10 && c[0].status == SCIO_CANCELLED);
        CHECK(closed_in_ms < 800);
        scio_op_release(oa);
    }
    /* Freed with a request held: cancelled, nothing left. */
    CHECK(scio_track_set_submit(set, a, SCIO_IOCTL_IS_ABSENT, 9, &oa) == SCIO_SUCCESS);
    scio_track_set_free(set);
    CHECK(scio_op_done(oa) && scio_op_status(oa) == SCIO_CANCELLED);
    scio_op_release(oa);
    /* The slot is free again: the reader's own request runs. */
    fake_set_present(0);
    CHECK(scio_ioctl(a, SCIO_IOCTL_IS_ABSENT, NULL, 0, NULL, 0, NULL) == SCIO_SUCCESS);
    scio_close(a);
}

static void test_reader_list_watch(void)
{
    scio_pcsc_watch *w = NULL;
    struct watch_waiter ww;
    pthread_t th;
    char err[256];
    unsigned count;
    long drv;
    int cancels;

    CHECK(scio_pcsc_watch_open(NULL, err, sizeof err) == SCIO_INVALID_PARAMETER);
    fake_set_no_service(1);
    CHECK(scio_pcsc_watch_open(&w, err, sizeof err) == SCIO_NO_SERVICE && w == NULL);
    CHECK(strstr(err, "not running") != NULL);
    fake_set_no_service(0);
    CHECK(scio_pcsc_watch_open(&w, err, sizeof err) == SCIO_SUCCESS && w != NULL);
    if (!w)
        return;
    /* Nothing changes: a timeout. */
    CHECK(scio_pcsc_watch_wait(w, 30, 2, &count, &drv) == SCIO_IO_TIMEOUT);
    /* A reader appears during the wait. */
    ww.w = w;
    ww.timeout_ms = 5000;
    pthread_create(&th, NULL, watch_wait_thread, &ww);
    until_waiting();
    fake_pnp_change(1);
    pthread_join(th, NULL);
    CHECK(ww.st == SCIO_SUCCESS);
    /* A wake before the wait: the wait ends at once, without a call. */
    scio_pcsc_watch_wake(w);
    CHECK(scio_pcsc_watch_wait(w, 5000, 3, &count, &drv) == SCIO_CANCELLED);
    /* A wake during a wait whose first cancel the library drops. */
    fake_set_cancel_delay_ms(20);
    cancels = fake_calls(EP_CANCEL);
    pthread_create(&th, NULL, watch_wait_thread, &ww);
    until_waiting();
    scio_pcsc_watch_wake(w);
    pthread_join(th, NULL);
    CHECK(ww.st == SCIO_CANCELLED);
    CHECK(fake_calls(EP_CANCEL) - cancels >= 2);
    fake_set_cancel_delay_ms(0);
    /* The library's errors, typed. */
    fake_fail_next(EP_GSC, PCSC_E_NO_SERVICE);
    CHECK(scio_pcsc_watch_wait(w, 5000, 3, &count, &drv) == SCIO_NO_SERVICE);
    CHECK((unsigned long)drv == PCSC_E_NO_SERVICE);
    fake_pnp_missing(1);
    CHECK(scio_pcsc_watch_wait(w, 5000, 3, &count, &drv) == SCIO_NOT_SUPPORTED);
    fake_pnp_missing(0);
    /* Close during a wait: the wait ends, close returns, nothing leaks. */
    ww.timeout_ms = SCIO_PCSC_WATCH_INFINITE;
    pthread_create(&th, NULL, watch_wait_thread, &ww);
    until_waiting();
    scio_pcsc_watch_close(w);
    pthread_join(th, NULL);
    CHECK(ww.st == SCIO_CANCELLED);
    fake_pnp_change(-1);
}

#if defined(__linux__)
/* POWER(COLD_RESET) as a bounded call of `timeout_ms`; the time it took to
 * return in *took_ms. */
static scio_op *bounded_power(scio_device *d, uint32_t what, unsigned timeout_ms,
                              double *took_ms)
{
    uint8_t in[4] = { (uint8_t)what, 0, 0, 0 };
    scio_op *op = NULL;
    double t0 = now_ms();
    CHECK(scio_submit_awaited_for(d, SCIO_IOCTL_POWER, in, 4, 64,
                                  (int64_t)timeout_ms * 1000, &op) == SCIO_SUCCESS);
    *took_ms = now_ms() - t0;
    return op;
}

typedef struct closer_arg {
    scio_device *d;
    scio_op *op;
    double took_ms;
} closer_arg;

static void *bounded_power_thread(void *arg)
{
    closer_arg *a = arg;
    a->op = bounded_power(a->d, SCIO_COLD_RESET, 10000, &a->took_ms);
    return NULL;
}

/* A listening socket standing in for pcscd's (PCSCLITE_CSOCK_NAME names
 * it), for the backend to tell the contexts' sockets apart by their peer;
 * the fake library then makes one such socket per context. */
typedef struct {
    char dir[32], path[160];
    int srv;
} fake_daemon;

static void fake_daemon_listen(fake_daemon *fd)
{
    struct sockaddr_un sa;
    snprintf(fd->dir, sizeof fd->dir, "/tmp/scardio-pcsc-XXXXXX");
    CHECK(mkdtemp(fd->dir) != NULL);
    snprintf(fd->path, sizeof fd->path, "%s/pcscd.comm", fd->dir);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    CHECK(strlen(fd->path) < sizeof sa.sun_path);
    strcpy(sa.sun_path, fd->path);
    fd->srv = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd->srv >= 0 && bind(fd->srv, (struct sockaddr *)&sa, sizeof sa) == 0 &&
          listen(fd->srv, 64) == 0);
    setenv("PCSCLITE_CSOCK_NAME", fd->path, 1);
    fake_context_sockets(1);
    fake_set_present(1);
}

static void fake_daemon_close(fake_daemon *fd)
{
    fake_context_sockets(0);
    unsetenv("PCSCLITE_CSOCK_NAME");
    close(fd->srv);
    unlink(fd->path);
    rmdir(fd->dir);
}

/* pcsc-lite's calls bounded in the caller's thread: the context's socket
 * (the one new socket to "the daemon") is shut down by the watchdog at the
 * deadline; a context with two new sockets is not told apart and uses the
 * lane; a call that finished is never cut short; close aborts a call. */
static void test_bounded_calls(void)
{
    char err[256];
    fake_daemon fd;
    scio_device *d = NULL, *d2 = NULL;
    scio_op *op;
    uint8_t out[64];
    size_t n;
    double took;
    int ok = 1, connects;
    pthread_t th;
    closer_arg ca;

    fake_daemon_listen(&fd);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, NULL, &d, err, sizeof err) == SCIO_SUCCESS);
    if (!d)
        goto out;

    /* A bounded call runs in the caller: done when submit returns. */
    op = bounded_power(d, SCIO_COLD_RESET, 2000, &took);
    CHECK(scio_op_done(op) && scio_op_status(op) == SCIO_SUCCESS);
    scio_op_release(op);
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_POWER_DOWN, out, 0, &n) == SCIO_SUCCESS);

    /* The daemon does not answer: the watchdog ends the call at 200 ms. */
    fake_hang_connect(1);
    op = bounded_power(d, SCIO_COLD_RESET, 200, &took);
    CHECK(scio_op_done(op) && scio_op_status(op) == SCIO_IO_TIMEOUT);
    CHECK(took >= 195 && took < 200 + 1500);
    scio_op_release(op);
    fake_hang_connect(0);

    /* It works again: a new context (on the lane), then in the caller. */
    op = bounded_power(d, SCIO_COLD_RESET, 5000, &took);
    CHECK(scio_op_await(op, 5000) && scio_op_status(op) == SCIO_SUCCESS);
    scio_op_release(op);
    for (int i = 0; i < 100; i++) {
        /* Short deadlines that pass after each call: a call is never cut
         * short by an earlier one's deadline.  One slower than its own
         * deadline (valgrind on a loaded machine) may time out, at the
         * deadline and not before; the next then re-establishes its
         * context on the lane (not done at submit: awaited). */
        unsigned deadline_ms = 20 + i % 3;
        double t0 = now_ms();
        op = bounded_power(d, i % 2 ? SCIO_WARM_RESET : SCIO_COLD_RESET, deadline_ms, &took);
        if (!scio_op_done(op))
            ok &= scio_op_await(op, 5000) == 1;
        if (scio_op_status(op) == SCIO_IO_TIMEOUT)
            ok &= now_ms() - t0 >= deadline_ms - 1;
        else
            ok &= scio_op_status(op) == SCIO_SUCCESS;
        scio_op_release(op);
        if (i % 10 == 9)
            sleep_ms(25);
    }
    CHECK(ok);

    /* Close aborts a bounded call hung in the daemon. */
    CHECK(ioctl_u32(d, SCIO_IOCTL_POWER, SCIO_POWER_DOWN, out, 0, &n) == SCIO_SUCCESS);
    fake_hang_connect(1);
    ca.d = d;
    ca.op = NULL;
    connects = fake_calls(EP_CONNECT);
    pthread_create(&th, NULL, bounded_power_thread, &ca);
    for (int i = 0; i < 2000 && fake_calls(EP_CONNECT) == connects; i++)
        sleep_ms(5); /* until it is in the hung SCardConnect */
    sleep_ms(50);    /* (one that arms later: close repeats the abort) */
    scio_close(d);
    d = NULL;
    pthread_join(th, NULL);
    CHECK(ca.op && scio_op_done(ca.op) && scio_op_status(ca.op) == SCIO_CANCELLED);
    CHECK(ca.took_ms < 5000);
    scio_op_release(ca.op);
    fake_hang_connect(0);

    /* Two new sockets after SCardEstablishContext: not told apart, so the
     * bounded call goes to the lane (not done at submit, no watchdog). */
    fake_context_sockets(2);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, NULL, &d2, err, sizeof err) == SCIO_SUCCESS);
    if (d2) {
        fake_hang_connect(1);
        op = bounded_power(d2, SCIO_COLD_RESET, 100, &took);
        CHECK(!scio_op_done(op));
        CHECK(scio_op_await(op, 300) == 0); /* the lane holds it; the caller gives up */
        fake_drop_sockets();               /* the daemon hangs up: the lane's call ends */
        CHECK(scio_op_await(op, 5000) == 1 && scio_op_status(op) == SCIO_NO_SERVICE);
        scio_op_release(op);
        fake_hang_connect(0);
        scio_close(d2);
    }
out:
    if (d)
        scio_close(d);
    fake_daemon_close(&fd);
}
#endif

#if defined(__linux__)
typedef struct slicer_arg {
    scio_device *d;
    uint32_t code;
    int64_t slice_us;
    int slices;       /* how many it ran */
    double took_ms;
    scio_status st;
} slicer_arg;

/* A tracking wait in slices, as Device.wait_tracking runs it: until a slice
 * does not time out (at most 200 slices). */
static void *slicer_thread(void *arg)
{
    slicer_arg *a = arg;
    unsigned wait = 0;
    double t0 = now_ms();
    a->slices = 0;
    do {
        a->st = scio_track_slice(a->d, a->code, a->slice_us, &wait);
        a->slices++;
    } while (a->st == SCIO_IO_TIMEOUT && a->slices < 200);
    a->took_ms = now_ms() - t0;
    return NULL;
}

/* Tracking waits in their caller's thread, in slices (scio_track_slice):
 * bounded by the slice's deadline, no event lost between two slices or two
 * waits, the one-request rule, cancel and close at once (the tracking
 * context's socket shut down, no SCardCancel), a daemon that does not
 * answer bounded by the watchdog, the lane where the socket is not known. */
static void test_sliced_tracking(void)
{
    char err[256];
    fake_daemon fd;
    scio_device *d = NULL;
    scio_op *op;
    unsigned wait;
    int cancels;
    double t0;
    pthread_t th;
    slicer_arg a;

    fake_daemon_listen(&fd);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, NULL, &d, err, sizeof err) == SCIO_SUCCESS);
    if (!d)
        goto out;

    /* Bad arguments. */
    wait = 0;
    CHECK(scio_track_slice(d, SCIO_IOCTL_GET_STATE, 1000, &wait) == SCIO_INVALID_PARAMETER);
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 0, &wait) == SCIO_INVALID_PARAMETER);
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 1000, NULL) == SCIO_INVALID_PARAMETER);

    /* The level: at once, even with a slice too short for any wait. */
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 1, &wait) == SCIO_SUCCESS && wait != 0);

    /* A slice ends at its deadline; a swap between two slices of the
     * device's first wait completes it (the count carried over); one
     * between two waits, the first timed out, completes the second. */
    scio_close(d);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, NULL, &d, err, sizeof err) == SCIO_SUCCESS);
    if (!d)
        goto out;
    wait = 0;
    t0 = now_ms();
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_ABSENT, 60000, &wait) == SCIO_IO_TIMEOUT);
    CHECK(now_ms() - t0 >= 59 && now_ms() - t0 < 60 + 1500);
    fake_set_present(0);
    fake_set_present(1);
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_ABSENT, 60000, &wait) == SCIO_SUCCESS);
    wait = 0;
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_ABSENT, 30000, &wait) == SCIO_IO_TIMEOUT);
    fake_set_present(0);
    fake_set_present(1);
    wait = 0;
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_ABSENT, 30000, &wait) == SCIO_SUCCESS);

    /* An event during a slice ends it; no thread hand-off was needed. */
    fake_set_present(0);
    pthread_create(&th, NULL, insert_later, NULL);
    a.d = d;
    a.code = SCIO_IOCTL_IS_PRESENT;
    a.slice_us = 20000;
    slicer_thread(&a);
    pthread_join(th, NULL);
    CHECK(a.st == SCIO_SUCCESS && a.slices >= 2 && a.took_ms >= 40);

    /* One tracking request per device: a pending one makes the slice
     * busy, and a slice running makes a submitted one busy. */
    fake_set_present(0);
    CHECK(scio_ioctl(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, NULL, 0, NULL) == SCIO_SUCCESS);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 1, &op) == SCIO_SUCCESS);
    while (!fake_waiting())
        sleep_ms(1);
    wait = 0;
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 10000, &wait) == SCIO_DEVICE_BUSY);
    scio_op_cancel(op);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_CANCELLED);
    scio_op_release(op);
    a.slice_us = 100000;
    pthread_create(&th, NULL, slicer_thread, &a);
    while (!fake_waiting())
        sleep_ms(1);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_PRESENT, NULL, 0, 0, 2, &op) == SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_DEVICE_BUSY);
    scio_op_release(op);

    /* Cancel during a slice: at once, by the socket (no SCardCancel); the
     * context is renewed by the next request, on the lane. */
    cancels = fake_calls(EP_CANCEL);
    sleep_ms(30);
    t0 = now_ms();
    scio_cancel_all(d);
    pthread_join(th, NULL);
    CHECK(a.st == SCIO_CANCELLED && now_ms() - t0 < 500);
    CHECK(fake_calls(EP_CANCEL) == cancels);
    wait = 0;
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 10000, &wait) == SCIO_NOT_SUPPORTED);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 3, &op) == SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    scio_op_release(op);
    wait = 0;
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_ABSENT, 10000, &wait) == SCIO_SUCCESS);

    /* A cancel between two slices ends the wait's next slice. */
    wait = 0;
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 10000, &wait) == SCIO_IO_TIMEOUT);
    scio_cancel_all(d);
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 10000, &wait) == SCIO_CANCELLED);
    wait = 0; /* a new wait is not cancelled */
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 10000, &wait) == SCIO_IO_TIMEOUT);

    /* A daemon that does not answer: the watchdog ends the slice shortly
     * after its deadline; the context is cut off, so the next goes to the
     * lane (which renews it once the daemon answers). */
    fake_hang_gsc(1);
    wait = 0;
    t0 = now_ms();
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 100000, &wait) == SCIO_IO_TIMEOUT);
    CHECK(now_ms() - t0 >= 195 && now_ms() - t0 < 200 + 1500);
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 100000, &wait) == SCIO_NOT_SUPPORTED);
    fake_hang_gsc(0);
    CHECK(scio_submit(d, SCIO_IOCTL_IS_ABSENT, NULL, 0, 0, 4, &op) == SCIO_SUCCESS);
    CHECK(scio_op_wait(op, 2000) == 1 && scio_op_status(op) == SCIO_SUCCESS);
    scio_op_release(op);

    /* Close during a slice hung in the daemon: the slice ends at once, and
     * so does close; then every slice is refused. */
    fake_hang_gsc(1);
    a.slice_us = 5000000;
    pthread_create(&th, NULL, slicer_thread, &a);
    sleep_ms(100);
    t0 = now_ms();
    scio_shutdown(d);
    CHECK(now_ms() - t0 < 1000);
    pthread_join(th, NULL);
    CHECK(a.st == SCIO_CANCELLED && a.took_ms < 1500);
    fake_hang_gsc(0);
    wait = 0;
    CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 1000, &wait) == SCIO_DEVICE_NOT_CONNECTED);
    scio_close(d);
    d = NULL;

    /* Two new sockets after SCardEstablishContext: the tracking context's
     * is not told apart, so its waits are not bounded here (the lane). */
    fake_context_sockets(2);
    CHECK(scio_open_pcsc("Fake Reader 0", NULL, NULL, &d, err, sizeof err) == SCIO_SUCCESS);
    if (d) {
        wait = 0;
        CHECK(scio_track_slice(d, SCIO_IOCTL_IS_PRESENT, 1000, &wait) == SCIO_NOT_SUPPORTED);
        scio_close(d);
        d = NULL;
    }
out:
    if (d)
        scio_close(d);
    fake_daemon_close(&fd);
}
#endif

int main(int argc, char **argv)
{
    char err[256];
    char buf[8];
    size_t needed;
    scio_status st;
    if (argc >= 2 && strcmp(argv[1], "missing") == 0) {
        setenv("SCARDIO_PCSC_LIBRARY", "/nonexistent/libpcsclite.so.1", 1);
        st = scio_pcsc_list_readers(buf, sizeof buf, &needed, err, sizeof err);
        CHECK(st == SCIO_DLL_NOT_FOUND && strstr(err, "/nonexistent") != NULL);
        /* The failure is remembered, not retried. */
        CHECK(scio_pcsc_list_readers(buf, sizeof buf, &needed, err, sizeof err) ==
              SCIO_DLL_NOT_FOUND);
    } else if (argc >= 3 && strcmp(argv[1], "no-entry") == 0) {
        setenv("SCARDIO_PCSC_LIBRARY", argv[2], 1);
        st = scio_pcsc_list_readers(buf, sizeof buf, &needed, err, sizeof err);
        CHECK(st == SCIO_ENTRYPOINT_NOT_FOUND && strstr(err, "SCardEstablishContext"));
    } else if (argc >= 3 && strcmp(argv[1], "main") == 0) {
        void *h = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
        CHECK(h != NULL);
        if (!h)
            return 1;
        setenv("SCARDIO_PCSC_LIBRARY", argv[2], 1);
        RESOLVE(fake_set_present);
        RESOLVE(fake_tear);
        RESOLVE(fake_set_atr_attribute);
        RESOLVE(fake_count_event);
        RESOLVE(fake_fail_next);
        RESOLVE(fake_set_no_service);
        RESOLVE(fake_set_cancel_delay_ms);
        RESOLVE(fake_pnp_change);
        RESOLVE(fake_pnp_missing);
        RESOLVE(fake_set_claim_rx);
        RESOLVE(fake_last);
        RESOLVE(fake_calls);
        RESOLVE(fake_waiting);
        RESOLVE(fake_hold_other);
        RESOLVE(fake_context_sockets);
        RESOLVE(fake_hang_connect);
        RESOLVE(fake_drop_sockets);
        RESOLVE(fake_hang_gsc);
        RESOLVE(fake_set_gone);
        if (failed)
            return 1;
        test_listing();
        test_open_errors();
        test_card_sequence();
        test_tracking();
        test_track_set();
        test_share_and_transactions();
        CHECK(fake_calls(EP_CANCEL) >= 2); /* the dropped cancel was repeated */
        test_reader_list_watch();
#if defined(__linux__)
        test_bounded_calls();
        test_sliced_tracking();
#endif
        dlclose(h);
    } else {
        fprintf(stderr, "usage: %s main FAKE | missing | no-entry LIBRARY\n", argv[0]);
        return 2;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
