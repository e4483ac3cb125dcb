/* sync.c - pthread / Win32 implementations of sync.h. */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_getaffinity */
#elif !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif
#include "sync.h"

#ifdef _WIN32

void scio_mutex_init(scio_mutex *m) { InitializeSRWLock(m); }
void scio_mutex_destroy(scio_mutex *m) { (void)m; }
void scio_mutex_lock(scio_mutex *m) { AcquireSRWLockExclusive(m); }
void scio_mutex_unlock(scio_mutex *m) { ReleaseSRWLockExclusive(m); }
int scio_mutex_trylock(scio_mutex *m) { return TryAcquireSRWLockExclusive(m) != 0; }
void scio_cond_init(scio_cond *c) { InitializeConditionVariable(c); }
void scio_cond_destroy(scio_cond *c) { (void)c; }
void scio_cond_signal(scio_cond *c) { WakeConditionVariable(c); }
void scio_cond_broadcast(scio_cond *c) { WakeAllConditionVariable(c); }
void scio_cond_wait(scio_cond *c, scio_mutex *m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }

int scio_cond_wait_until(scio_cond *c, scio_mutex *m, int64_t deadline_ms)
{
    int64_t left = deadline_ms - scio_now_ms();
    if (left <= 0)
        return 0;
    if (!SleepConditionVariableSRW(c, m, (DWORD)left, 0))
        return GetLastError() == ERROR_TIMEOUT ? 0 : 1;
    return 1;
}

int64_t scio_now_us(void)
{
    LARGE_INTEGER f, t;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&t);
    return (int64_t)(t.QuadPart / f.QuadPart) * 1000000 +
           (int64_t)(t.QuadPart % f.QuadPart) * 1000000 / f.QuadPart;
}

int64_t scio_now_ms(void) { return scio_now_us() / 1000; }
void scio_sleep_ms(unsigned ms) { Sleep(ms); }

int scio_cpu_count(void)
{
    DWORD_PTR proc = 0, sys = 0;
    int n = 0;
    if (GetProcessAffinityMask(GetCurrentProcess(), &proc, &sys))
        for (; proc; proc &= proc - 1)
            n++;
    return n > 0 ? n : 1;
}

void scio_yield(void) { SwitchToThread(); }
int scio_current_cpu(void) { return (int)GetCurrentProcessorNumber(); }

int scio_thread_start_detached(scio_thread_fn fn, void *arg)
{
    HANDLE h = CreateThread(NULL, 0, fn, arg, 0, NULL);
    if (h == NULL)
        return -1;
    CloseHandle(h);
    return 0;
}

#else /* POSIX */

#include <errno.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>

int scio_cpu_count(void)
{
    long n;
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
#endif
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void scio_yield(void) { sched_yield(); }

int scio_current_cpu(void)
{
#ifdef __linux__
    return sched_getcpu(); /* the vDSO: no system call */
#else
    return -1;
#endif
}

void scio_mutex_init(scio_mutex *m) { pthread_mutex_init(m, NULL); }
void scio_mutex_destroy(scio_mutex *m) { pthread_mutex_destroy(m); }
void scio_mutex_lock(scio_mutex *m) { pthread_mutex_lock(m); }
void scio_mutex_unlock(scio_mutex *m) { pthread_mutex_unlock(m); }
int scio_mutex_trylock(scio_mutex *m) { return pthread_mutex_trylock(m) == 0; }

void scio_cond_init(scio_cond *c)
{
    /* CLOCK_MONOTONIC so that wall-clock jumps do not stretch timeouts. */
    pthread_condattr_t a;
    pthread_condattr_init(&a);
#ifndef __APPLE__
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
#endif
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

void scio_cond_destroy(scio_cond *c) { pthread_cond_destroy(c); }
void scio_cond_signal(scio_cond *c) { pthread_cond_signal(c); }
void scio_cond_broadcast(scio_cond *c) { pthread_cond_broadcast(c); }
void scio_cond_wait(scio_cond *c, scio_mutex *m) { pthread_cond_wait(c, m); }

int64_t scio_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t scio_now_ms(void) { return scio_now_us() / 1000; }

int scio_cond_wait_until(scio_cond *c, scio_mutex *m, int64_t deadline_ms)
{
    struct timespec ts;
#ifdef __APPLE__
    /* macOS condvars use the realtime clock: convert the relative wait. */
    int64_t left = deadline_ms - scio_now_ms();
    struct timespec now;
    if (left <= 0)
        return 0;
    clock_gettime(CLOCK_REALTIME, &now);
    ts.tv_sec = now.tv_sec + (time_t)(left / 1000);
    ts.tv_nsec = now.tv_nsec + (long)(left % 1000) * 1000000L;
#else
    ts.tv_sec = (time_t)(deadline_ms / 1000);
    ts.tv_nsec = (long)(deadline_ms % 1000) * 1000000L;
#endif
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_cond_timedwait(c, m, &ts) == ETIMEDOUT ? 0 : 1;
}

void scio_sleep_ms(unsigned ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int scio_thread_start_detached(scio_thread_fn fn, void *arg)
{
    pthread_t t;
    pthread_attr_t a;
    int rc;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    /* Workers only wait and call drivers: 1 MiB, not the 8 MiB default, keeps 256 readers cheap. */
    pthread_attr_setstacksize(&a, 1024 * 1024);
    rc = pthread_create(&t, &a, fn, arg);
    pthread_attr_destroy(&a);
    return rc == 0 ? 0 : -1;
}

#endif
