/*
 * test_quirks.c - the IFD backend's driver quirks table (ifd/ifd_quirks.c)
 * alone: which libraries an entry matches, the TCP port it derives from a
 * vpcd device name, and (Linux) that TCP_NODELAY lands on the sockets with
 * the driver's local port, listening or accepted, and on none of the
 * application's.  Run by native/tests/run.sh; prints "N passed, N failed".
 *
 * usage: test_quirks <scratch directory>
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __linux__
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#endif

#include "ifd_quirks.h"

static int passed, failed;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) {                                                          \
            passed++;                                                        \
        } else {                                                             \
            failed++;                                                        \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);  \
        }                                                                    \
    } while (0)

/* The vpcd entry's other way of recognising the driver: these two symbols,
 * exported by this program (-rdynamic) and found through dlopen(NULL). */
__attribute__((visibility("default"))) int vicc_init(void);
__attribute__((visibility("default"))) int vicc_transmit(void);
int vicc_init(void) { return 0; }
int vicc_transmit(void) { return 0; }

static scio_ifd_quirks find(const char *lib, void *handle, int by_name, const char *name,
                            unsigned long lun)
{
    scio_ifd_quirks q;
    scio_ifd_quirks_find(&q, lib, handle, by_name, name, lun);
    return q;
}

static int is_vpcd(scio_ifd_quirks q)
{
    return q.driver && strcmp(q.driver, "vpcd") == 0;
}

static void test_matching(const char *scratch)
{
    void *self = dlopen(NULL, RTLD_NOW);
    char target[4096], link_path[4096];
    FILE *f;
    scio_ifd_quirks q;

    q = find("/usr/lib/pcsc/drivers/serial/libifdvpcd.so", NULL, 1, "/dev/null:0x8C7B", 0);
    CHECK(is_vpcd(q) && (q.flags & SCIO_IFD_QUIRK_TCP_NODELAY) && q.tcp_port == 0x8C7B);
    q = find("libifdvpcd.so.0.8", NULL, 1, "/dev/null:0x8C7B", 0);
    CHECK(is_vpcd(q));
    /* not vpcd: another name, no vicc_* symbols */
    q = find("/usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Linux/libccid.so", NULL, 1,
             "/dev/null:0x8C7B", 0);
    CHECK(q.driver == NULL && q.flags == 0 && q.tcp_port == -1);
    q = find("/opt/vpcd/other.so", NULL, 1, "/dev/null:0x8C7B", 0);
    CHECK(q.driver == NULL);
    q = find(NULL, self, 1, "", 0);
    CHECK(q.driver == NULL);
    /* another name, but the library exports vpcd's transport */
    CHECK(self != NULL);
    q = find("/opt/renamed/driver.so", self, 1, "/dev/null:0x1234", 0);
    CHECK(is_vpcd(q) && q.tcp_port == 0x1234);
    /* a symlink with another name to a file named like the driver */
    snprintf(target, sizeof target, "%s/libifdvpcd.so.9", scratch);
    snprintf(link_path, sizeof link_path, "%s/reader-driver.so", scratch);
    f = fopen(target, "w");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    unlink(link_path);
    CHECK(symlink(target, link_path) == 0);
    q = find(link_path, NULL, 1, "/dev/null:0x1234", 0);
    CHECK(is_vpcd(q));
    unlink(link_path);
    unlink(target);
    if (self)
        dlclose(self);
}

static void test_vpcd_ports(void)
{
    const char *lib = "libifdvpcd.so";
    scio_ifd_quirks q;
    CHECK(find(lib, NULL, 1, "/dev/null:0x1234", 0).tcp_port == 0x1234);
    CHECK(find(lib, NULL, 1, "/dev/null:4660", 0).tcp_port == 4660);
    CHECK(find(lib, NULL, 1, "/dev/null:0x1234", 1).tcp_port == 0x1235);      /* slot 1 */
    CHECK(find(lib, NULL, 1, "/dev/null:0x1234", 0x10001).tcp_port == 0x1235); /* LUN's reader part */
    CHECK(find(lib, NULL, 1, "/dev/null", 0).tcp_port == 0x8C7B);             /* the default */
    CHECK(find(lib, NULL, 1, "", 1).tcp_port == 0x8C7C);
    CHECK(find(lib, NULL, 1, NULL, 0).tcp_port == 0x8C7B);
    CHECK(find(lib, NULL, 0, "0x4000", 1).tcp_port == 0x4001);                /* IFDHCreateChannel */
    CHECK(find(lib, NULL, 1, "/dev/null:0x1FFFF", 0).tcp_port == 0xFFFF);     /* 16 bits, as vpcd */
    /* no port to recognise the sockets by: the entry matches, the fix is off */
    q = find(lib, NULL, 1, "/dev/null:0xFFFF", 1);                            /* wraps to 0 */
    CHECK(is_vpcd(q) && q.flags == 0 && q.tcp_port == -1);
    q = find(lib, NULL, 1, "/dev/null:0", 0);
    CHECK(is_vpcd(q) && q.flags == 0);
    q = find(lib, NULL, 1, "localhost:0x8C7B", 0);                            /* client mode */
    CHECK(is_vpcd(q) && q.flags == 0 && q.tcp_port == -1);
    q = find(lib, NULL, 1, "/dev/nul:0x8C7B", 0);
    CHECK(q.flags == 0);
    q = find(lib, NULL, 1, "/dev/null:99999999999999999999999", 0);           /* ERANGE */
    CHECK(q.flags == 0);
}

#ifdef __linux__
static int nodelay(int fd)
{
    int v = -1;
    socklen_t len = sizeof v;
    if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) != 0)
        return -1;
    return v;
}

static void set_nodelay(int fd, int v)
{
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == 0);
}

static int tcp_listener(int *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static int tcp_connect(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((unsigned short)port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* An IPv6-only socket on the same port number (another socket family, so
 * not the driver's), or -1 where IPv6 is off. */
static int tcp6_listener(int port)
{
    struct sockaddr_in6 sa;
    int one = 1;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    sa.sin6_port = htons((unsigned short)port);
    if (fd < 0 || setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void test_tcp_nodelay(void)
{
    int port = 0, app_port = 0;
    int drv_listen = tcp_listener(&port);     /* the driver's, as vpcd's */
    int app_listen = tcp_listener(&app_port); /* the application's */
    int app_client, app_server, card, drv_conn, card2, drv_conn2, v6;
    char name[64];
    scio_ifd_quirks q, none;

    CHECK(drv_listen >= 0 && app_listen >= 0);
    if (drv_listen < 0 || app_listen < 0)
        return;
    app_client = tcp_connect(app_port);
    app_server = accept(app_listen, NULL, NULL);
    card = tcp_connect(port);                 /* the application's, peer port = port */
    drv_conn = accept(drv_listen, NULL, NULL);
    v6 = tcp6_listener(port);
    CHECK(app_client >= 0 && app_server >= 0 && card >= 0 && drv_conn >= 0);
    CHECK(nodelay(drv_listen) == 0 && nodelay(drv_conn) == 0 && nodelay(card) == 0);

    /* a driver without the quirk: nothing changes */
    snprintf(name, sizeof name, "/dev/null:%d", port);
    none = find("libccid.so", NULL, 1, name, 0);
    scio_ifd_quirks_channel_opened(&none);
    scio_ifd_quirks_card_arrived(&none);
    CHECK(nodelay(drv_listen) == 0 && nodelay(drv_conn) == 0);

    q = find("libifdvpcd.so", NULL, 1, name, 0);
    CHECK(q.flags & SCIO_IFD_QUIRK_TCP_NODELAY);
    scio_ifd_quirks_channel_opened(&q);
    CHECK(nodelay(drv_listen) == 1);
    CHECK(nodelay(drv_conn) == 1);
    /* the application's sockets, its own connection to the driver's port included */
    CHECK(nodelay(card) == 0);
    CHECK(nodelay(app_listen) == 0 && nodelay(app_client) == 0 && nodelay(app_server) == 0);
    if (v6 >= 0)
        CHECK(nodelay(v6) == 0);

    /* a connection accepted later, from a listener that lost the option
     * (or accepted before it was set): set when the driver reports a card */
    set_nodelay(drv_listen, 0);
    card2 = tcp_connect(port);
    drv_conn2 = accept(drv_listen, NULL, NULL);
    CHECK(card2 >= 0 && drv_conn2 >= 0);
    CHECK(nodelay(drv_conn2) == 0);
    scio_ifd_quirks_card_arrived(&q);
    CHECK(nodelay(drv_conn2) == 1 && nodelay(drv_listen) == 1);
    CHECK(nodelay(card2) == 0 && nodelay(card) == 0 && nodelay(app_server) == 0);

    /* the other slot's port is another channel's business */
    snprintf(name, sizeof name, "/dev/null:%d", port - 1);
    set_nodelay(drv_conn, 0);
    q = find("libifdvpcd.so", NULL, 1, name, 0); /* slot 0: port - 1 */
    scio_ifd_quirks_card_arrived(&q);
    CHECK(nodelay(drv_conn) == 0);
    q = find("libifdvpcd.so", NULL, 1, name, 1); /* slot 1: port */
    scio_ifd_quirks_card_arrived(&q);
    CHECK(nodelay(drv_conn) == 1);

    {
        int fds[] = {drv_listen, app_listen, app_client, app_server, card, drv_conn, card2,
                     drv_conn2, v6};
        size_t i;
        for (i = 0; i < sizeof fds / sizeof fds[0]; i++)
            if (fds[i] >= 0)
                close(fds[i]);
    }
}
#endif

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <scratch directory>\n", argv[0]);
        return 2;
    }
    test_matching(argv[1]);
    test_vpcd_ports();
#ifdef __linux__
    test_tcp_nodelay();
#endif
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
