/* fork.c - the fork generation (scio.h): a pthread_atfork child handler
 * bumps it, so that a child made by any fork() that runs the C library's
 * fork handlers (os.fork, a fork() called from C or through ctypes) can
 * tell the devices it inherited from the ones it opened. */
#if !defined(_WIN32) && !defined(__linux__)
#define _POSIX_C_SOURCE 200809L
#endif
#include "scio.h"

unsigned long scio_fork_generation;

#ifdef _WIN32

int scio_watch_forks(void) { return 0; } /* no fork() */

#else

#include <pthread.h>

static pthread_once_t watch_once = PTHREAD_ONCE_INIT;
static int watch_failed;

/* Runs in the child only, while it has one thread: a plain increment is
 * safe, and the parent's value never changes. */
static void in_child(void) { scio_fork_generation++; }

static void watch(void) { watch_failed = pthread_atfork(NULL, NULL, in_child) != 0; }

int scio_watch_forks(void)
{
    pthread_once(&watch_once, watch);
    return watch_failed ? -1 : 0;
}

#endif
