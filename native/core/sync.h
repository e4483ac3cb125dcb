/*
 * sync.h - the few threading primitives the core needs, over pthreads or
 * Win32, so that the generic device code compiles on both.
 */
#ifndef SCIO_SYNC_H
#define SCIO_SYNC_H

#include <stdint.h>

#ifdef _WIN32
#include <windows.h>
typedef SRWLOCK scio_mutex;
#define SCIO_MUTEX_INITIALIZER SRWLOCK_INIT
typedef CONDITION_VARIABLE scio_cond;
typedef HANDLE scio_thread;
#define SCIO_THREAD_FN DWORD WINAPI
typedef DWORD (WINAPI *scio_thread_fn)(void *);
#define SCIO_THREAD_RETURN return 0
#else
#include <pthread.h>
typedef pthread_mutex_t scio_mutex;
#define SCIO_MUTEX_INITIALIZER PTHREAD_MUTEX_INITIALIZER
typedef pthread_cond_t scio_cond;
typedef pthread_t scio_thread;
#define SCIO_THREAD_FN void *
typedef void *(*scio_thread_fn)(void *);
#define SCIO_THREAD_RETURN return NULL
#endif

void scio_mutex_init(scio_mutex *m);
void scio_mutex_destroy(scio_mutex *m);
void scio_mutex_lock(scio_mutex *m);
void scio_mutex_unlock(scio_mutex *m);
/* 1 if the mutex was free and is now held, 0 (at once) if not. */
int scio_mutex_trylock(scio_mutex *m);

void scio_cond_init(scio_cond *c);
void scio_cond_destroy(scio_cond *c);
void scio_cond_signal(scio_cond *c);
void scio_cond_broadcast(scio_cond *c);
void scio_cond_wait(scio_cond *c, scio_mutex *m);
/* Waits until *deadline_ms (scio_now_ms clock); returns 0 on timeout. */
int scio_cond_wait_until(scio_cond *c, scio_mutex *m, int64_t deadline_ms);

/* Monotonic milliseconds / microseconds. */
int64_t scio_now_ms(void);
int64_t scio_now_us(void);
void scio_sleep_ms(unsigned ms);

/* A detached thread: 0 on success. */
int scio_thread_start_detached(scio_thread_fn fn, void *arg);

/* Processors this process may run on (at least 1): spinning for another
 * thread only pays when that thread can run at the same time. */
int scio_cpu_count(void);
/* Let another runnable thread have this processor (a hint). */
void scio_yield(void);
/* The processor this thread runs on right now, -1 where the platform does
 * not say (a hint: it may have moved by the time it is read). */
int scio_current_cpu(void);

/* An int (or a 64-bit word) that one thread reads without the lock another
 * writes it under (the writer still holds it): acquire / release ordering. */
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
/* int and long are both 32 bits on Windows */
static __inline int scio_load_acquire(const volatile int *p) { return (int)_InterlockedOr((volatile long *)p, 0); }
static __inline void scio_store_release(volatile int *p, int v) { _InterlockedExchange((volatile long *)p, v); }
static __inline uint64_t scio_load_acquire_u64(const volatile uint64_t *p)
{
    return (uint64_t)InterlockedCompareExchange64((volatile LONG64 *)p, 0, 0);
}
static __inline void scio_store_release_u64(volatile uint64_t *p, uint64_t v)
{
    InterlockedExchange64((volatile LONG64 *)p, (LONG64)v);
}
#define scio_cpu_relax() YieldProcessor()
#else
static inline int scio_load_acquire(const volatile int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void scio_store_release(volatile int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint64_t scio_load_acquire_u64(const volatile uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void scio_store_release_u64(volatile uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
#if defined(__x86_64__) || defined(__i386__)
#define scio_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define scio_cpu_relax() __asm__ __volatile__("yield")
#else
#define scio_cpu_relax() ((void)0)
#endif
#endif

#endif /* SCIO_SYNC_H */
