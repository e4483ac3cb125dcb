/*
 * check.h - the pass/fail counting the native test programs share: CHECK and
 * CHECK_EQ count a check, print the file and line of a failed one, and
 * check_report() prints "N passed, N failed" (the line run.sh and the
 * Python runner count) and gives the exit status; LOAD looks a symbol up
 * as a check (returning -1 from the caller when it is missing).  Include
 * once per program.
 */
#ifndef SCARDIO_TESTS_CHECK_H
#define SCARDIO_TESTS_CHECK_H

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static int g_pass, g_fail;

#define CHECK(cond) check_impl(!!(cond), #cond, __FILE__, __LINE__)
#define CHECK_EQ(a, b) check_eq_impl((long long)(a), (long long)(b), #a, #b, __FILE__, __LINE__)

static const char *check_base(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void check_impl(int ok, const char *what, const char *file, int line)
{
    if (ok) {
        g_pass++;
    } else {
        g_fail++;
        fprintf(stderr, "%s:%d: FAILED: %s\n", check_base(file), line, what);
    }
}

static void check_eq_impl(long long a, long long b, const char *sa, const char *sb,
                          const char *file, int line)
{
    if (a == b) {
        g_pass++;
    } else {
        g_fail++;
        fprintf(stderr, "%s:%d: FAILED: %s == %s (0x%llx != 0x%llx)\n",
                check_base(file), line, sa, sb, a, b);
    }
}

/* dlsym returns void *; copy the representation to stay within ISO C. */
#define LOAD(handle, var, name) do { \
        void *sym_ = dlsym(handle, name); \
        CHECK(sym_ != NULL); \
        if (sym_ == NULL) return -1; \
        memcpy(&var, &sym_, sizeof(var)); \
    } while (0)

static int check_report(void)
{
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}

#endif
