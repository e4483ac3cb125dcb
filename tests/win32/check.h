/*
 * check.h - the counting assertions the Windows C tests share.  Each test
 * file that includes it gets its own counters (chk_pass, chk_fail) and
 * label (chk_label, printed with every failure).
 */
#ifndef SCARDIO_WIN32_CHECK_H
#define SCARDIO_WIN32_CHECK_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "scio.h"

static int chk_pass, chk_fail;
static const char *chk_label = "";

static void check(int ok, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    if (ok) {
        chk_pass++;
        return;
    }
    chk_fail++;
    printf("FAIL [%s] %s line %d: ", chk_label, file, line);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}
#define CHECK(cond, ...) check((cond) != 0, __FILE__, __LINE__, __VA_ARGS__)

/* A status by name, or in hex (four rotating buffers: several per printf). */
static const char *sname(scio_status st)
{
    static char buf[4][16];
    static int k;
    const char *n = scio_status_name(st);
    if (n)
        return n;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof(buf[k]), "0x%08lX", (unsigned long)st);
    return buf[k];
}

/* Evaluates `got` once: it is often the call under test. */
static void check_st(scio_status got, scio_status want, const char *file, int line)
{
    check(got == want, file, line, "status %s, expected %s", sname(got), sname(want));
}
#define CHECK_ST(got, want) check_st((got), (want), __FILE__, __LINE__)

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

#endif /* SCARDIO_WIN32_CHECK_H */
