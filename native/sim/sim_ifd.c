/*
 * sim_ifd.c - the simulated reader as a pcsc-lite IFD-handler library.
 *
 * One reader (one slot) per LUN, any number of LUNs per process (up to
 * SIM_MAX_LUNS), keyed by the full LUN value.  Tests steer a reader through
 * vendor controls (sim_protocol.h); see README.md for the semantics.
 *
 * Locking: g_lock guards the LUN table and reference counts; each LUN has its
 * own mutex and condition variable.  g_lock is never taken while a LUN mutex
 * is held.  Latency sleeps and BLOCK faults run without holding the LUN mutex
 * so that controls (and CloseChannel) stay callable meanwhile.  A LUN is
 * freed when its last reference goes, so a call still inside a closed LUN
 * never touches freed memory.
 *
 * Presence checks and card-event count reads, which a host makes for every
 * reader many times a second, take no lock at all when nothing special is
 * armed: each open LUN publishes what they answer in a slot of a static
 * table (see "hot slots"), read with atomic loads.
 *
 * The library needs nothing from its host (no log_msg / log_xxd).
 */
#ifndef _WIN32
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ifd_abi.h"
#include "ifd_ext.h"
#include "sim_protocol.h"
#include "card.h"
#include "sim_socket.h"
#include "ext_card.h"

/* Threads: pthreads, or SRW locks and condition variables on Windows (the
 * library stays self-contained: no part of the core is linked in). */
#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#define SIM_EXPORT __declspec(dllexport)

typedef SRWLOCK sim_mutex;
typedef CONDITION_VARIABLE sim_cond;
typedef ULONGLONG sim_deadline;        /* GetTickCount64() milliseconds */
#define SIM_MUTEX_INITIALIZER SRWLOCK_INIT

static int sim_mutex_init(sim_mutex *m) { InitializeSRWLock(m); return 0; }
static void sim_mutex_destroy(sim_mutex *m) { (void)m; }
static void sim_mutex_lock(sim_mutex *m) { AcquireSRWLockExclusive(m); }
static void sim_mutex_unlock(sim_mutex *m) { ReleaseSRWLockExclusive(m); }
static void sim_cond_destroy(sim_cond *c) { (void)c; }
static void sim_cond_broadcast(sim_cond *c) { WakeAllConditionVariable(c); }
static void sim_cond_wait(sim_cond *c, sim_mutex *m)
{
    SleepConditionVariableSRW(c, m, INFINITE, 0);
}
/* 1 once the deadline has passed (the caller re-checks its condition). */
static int sim_cond_timedwait(sim_cond *c, sim_mutex *m, const sim_deadline *d)
{
    ULONGLONG now = GetTickCount64(), left;
    if (now >= *d)
        return 1;
    left = *d - now;
    SleepConditionVariableSRW(c, m, left > 0x7FFFFFFFu ? 0x7FFFFFFFu : (DWORD)left, 0);
    return GetTickCount64() >= *d;
}
#else
#include <pthread.h>
#include <time.h>

#define SIM_EXPORT __attribute__((visibility("default")))

typedef pthread_mutex_t sim_mutex;
typedef pthread_cond_t sim_cond;
typedef struct timespec sim_deadline;
#define SIM_MUTEX_INITIALIZER PTHREAD_MUTEX_INITIALIZER
#define sim_mutex_init(m) pthread_mutex_init((m), NULL)
#define sim_mutex_destroy(m) pthread_mutex_destroy(m)
#define sim_mutex_lock(m) pthread_mutex_lock(m)
#define sim_mutex_unlock(m) pthread_mutex_unlock(m)
#define sim_cond_destroy(c) pthread_cond_destroy(c)
#define sim_cond_broadcast(c) pthread_cond_broadcast(c)
#define sim_cond_wait(c, m) pthread_cond_wait((c), (m))
#define sim_cond_timedwait(c, m, d) (pthread_cond_timedwait((c), (m), (d)) == ETIMEDOUT)
#endif

/* Atomics for the hot slots: the compiler's builtins, or Interlocked
 * functions with MSVC (full barriers, stronger than needed). */
#if defined(_MSC_VER) && !defined(__clang__)
static uint32_t ld_acq32(volatile uint32_t *p) { return (uint32_t)InterlockedOr((volatile LONG *)p, 0); }
static uint64_t ld_acq64(volatile uint64_t *p)
{
    return (uint64_t)InterlockedCompareExchange64((volatile LONG64 *)p, 0, 0);
}
static void st_rel32(volatile uint32_t *p, uint32_t v) { InterlockedExchange((volatile LONG *)p, (LONG)v); }
static void add_rel32(volatile uint32_t *p, uint32_t v) { InterlockedExchangeAdd((volatile LONG *)p, (LONG)v); }
static void st_rel64(volatile uint64_t *p, uint64_t v)
{
    InterlockedExchange64((volatile LONG64 *)p, (LONG64)v);
}
/* 1 and *expect unchanged if *p was *expect (now v), else 0 and *expect = *p */
static int cas64(volatile uint64_t *p, uint64_t *expect, uint64_t v)
{
    uint64_t was = (uint64_t)InterlockedCompareExchange64((volatile LONG64 *)p, (LONG64)v,
                                                          (LONG64)*expect);
    if (was == *expect)
        return 1;
    *expect = was;
    return 0;
}
#define SIM_ALIGN64 __declspec(align(64))
#else
#define ld_acq32(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ld_acq64(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define st_rel32(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define st_rel64(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define add_rel32(p, v) ((void)__atomic_add_fetch((p), (v), __ATOMIC_RELEASE))
#define cas64(p, expect, v) \
    __atomic_compare_exchange_n((p), (expect), (v), 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
#define SIM_ALIGN64 __attribute__((aligned(64)))
#endif

#define SIM_MAX_LUNS      4096
#define SIM_BUCKET_BITS   10
#define SIM_BUCKETS       (1u << SIM_BUCKET_BITS)
#define SIM_CTL_BASE      0x42000000UL
#define SIM_IFD_VERSION   0x01000000u   /* 1.0.0 as 0xMMmmbbbb */
#define SIM_SIMULTANEOUS  16            /* pcscd holds 16 readers anyway */

/* SCARD_PROTOCOL_* masks, as IFDHSetProtocolParameters receives them. */
#define PROTO_T0  1u
#define PROTO_T1  2u

/* Attribute tags answered besides the IFD_TAG_* ones. */
#define TAG_VENDOR_NAME        0x00010100UL
#define TAG_VENDOR_IFD_TYPE    0x00010101UL
#define TAG_VENDOR_IFD_VERSION 0x00010102UL
#define TAG_CHARACTERISTICS    0x00060150UL
#define TAG_CURRENT_PROTOCOL   0x00080201UL
#define TAG_ATR_STRING         0x00090303UL
#define TAG_DEVICE_UNIT        0x7FFF0001UL
#define TAG_SIMULTANEOUS       0x0FAFUL

/* "Absent" answers after a swap for a host that never polls: two, because
 * a host may ask once on its own (pcscd does before powering the card down)
 * and once in its event loop. */
#define SIM_SWAP_ABSENT_CHECKS 2

struct fault {
    uint32_t kind;
    uint32_t value;
};

/* An external card (ext_card.h) in a LUN.  refs and next_dropped are
 * guarded by the LUN's lock; t0 and scratch by call_lock, which serialises
 * calls into the card and is taken before (never while holding) the LUN
 * lock. */
struct ext_ref {
    struct ext_ref *next_dropped;
    sim_ext_card card;
    unsigned refs;             /* the LUN holds one while the card is in */
    sim_mutex call_lock;
    uint64_t t0_gen;           /* l->link_gen the pending data belongs to */
    sim_ext_t0 t0;
    uint8_t scratch[SIM_EXT_MAX_RESPONSE];
};

struct lun {
    struct lun *next;          /* bucket chain (g_lock) */
    IFD_DWORD id;
    unsigned refs;             /* g_lock; the table holds one */
    int linked;                /* g_lock; still in the table */

    sim_mutex lock;            /* everything below */
    sim_cond cond;             /* card events, stops, STOP control, close */
    int closed;
    sim_card card;
    int present;
    int powered;
    uint32_t protocol;         /* 0 none, PROTO_T0, PROTO_T1 */
    uint32_t latency_us;
    struct fault fault[SIM_EP_COUNT];
    uint32_t counters[SIM_COUNTER_COUNT];
    uint64_t stop_gen;         /* bumped by SIM_CTL_STOP */
    uint64_t event_gen;        /* bumped by every insertion / removal */
    uint32_t ev_insertions;    /* SCIO_IFD_TAG_CARD_EVENTS: never reset */
    uint32_t ev_removals;
    uint64_t poll_seen_gen;    /* event_gen when the poll last returned */
    /* After a swap presence answers "absent" (so that hosts that only ask
     * presence see the removal) until the polling function has returned
     * after such an answer, or for SIM_SWAP_ABSENT_CHECKS checks for hosts
     * that do not poll. */
    int swap_absent;           /* "absent" answers left */
    int swap_told;             /* one was given */
    int poll_stop;             /* sticky: the next / current poll returns */
    int no_polling;            /* opened with option nopoll: no polling function */
    int no_events;             /* option noevents: no card-event counts */
    int no_generation;         /* option nogeneration: counts, but no generation */
    int lost_stop;             /* option loststop: a stop with no poll waiting is lost */
    int pollers;               /* polls waiting for an event */
    struct ext_ref *ext;       /* the card is external (NULL: card.c) */
    struct ext_ref *dropped;   /* external cards to release after unlocking */
    uint64_t card_gen;         /* bumped by every insertion and removal */
    uint64_t link_gen;         /* bumped by power / reset / protocol changes */
    struct lun_hot *hot;       /* while open: what lock-free calls read */
};

static sim_mutex g_lock = SIM_MUTEX_INITIALIZER;
static struct lun *g_buckets[SIM_BUCKETS];
static unsigned g_count;

/* ---- small helpers ------------------------------------------------------- */

static unsigned bucket_of(IFD_DWORD id)
{
    uint64_t k = (uint64_t)id;
    k ^= k >> 16;
    k *= 0x9E3779B97F4A7C15ull;
    return (unsigned)(k >> (64 - SIM_BUCKET_BITS));
}

static uint32_t get_u32(const IFD_UCHAR *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
           | (uint32_t)p[3] << 24;
}

static void put_u32(IFD_UCHAR *p, uint32_t v)
{
    p[0] = (IFD_UCHAR)(v & 0xFF);
    p[1] = (IFD_UCHAR)((v >> 8) & 0xFF);
    p[2] = (IFD_UCHAR)((v >> 16) & 0xFF);
    p[3] = (IFD_UCHAR)((v >> 24) & 0xFF);
}

/* A fault's return code travels as 32 bits: read it as a signed 32-bit code
 * (0xFFFFFFFF is -1), the same with a 32- or a 64-bit RESPONSECODE. */
static IFD_RESPONSECODE code_from_wire(uint32_t v)
{
    if (v <= (uint32_t)INT32_MAX)
        return (IFD_RESPONSECODE)v;
    return (IFD_RESPONSECODE)(-(int32_t)(UINT32_MAX - v) - 1);
}

/* OVERLONG_LENGTH: capacity + extra, saturated rather than wrapped where the
 * DWORD is 32 bits, so the claim always exceeds the capacity. */
static IFD_DWORD overlong(IFD_DWORD cap, uint32_t extra)
{
    return extra > IFD_DWORD_MAX - cap ? IFD_DWORD_MAX : cap + extra;
}

#ifdef _WIN32
static void sleep_us(uint32_t us)
{
    Sleep((DWORD)((us + 999u) / 1000u));   /* ms granularity at best */
}
#else
static void sleep_us(uint32_t us)
{
    struct timespec ts, rem;

    ts.tv_sec = (time_t)(us / 1000000u);
    ts.tv_nsec = (long)(us % 1000000u) * 1000L;
    while (nanosleep(&ts, &rem) != 0 && errno == EINTR)
        ts = rem;
}
#endif

/* ---- hot slots ----------------------------------------------------------- */

/*
 * What IFDHICCPresence and the card-event count read (SCIO_IFD_TAG_CARD_EVENTS)
 * answer, published by each open LUN in 32 bytes of a static table, so that
 * the two calls a host makes per reader every poll interval take no lock,
 * touch no shared line and never the LUN itself: looked up by LUN value in
 * chains of their own, answered with atomic loads and one compare-and-swap.
 * Anything that makes one of them do more than read (a fault or latency
 * armed, a swap's "absent" answers, no counts, a closed LUN) sets its SLOW
 * flag, and the call takes the locked path.
 *
 * One word holds a slot's generation (even: in use by the LUN with this id;
 * bumped to odd when it closes, to the next even value when the slot is
 * given to another LUN), the flags and the two calls' counts.  A call counts
 * itself with a compare-and-swap on that word, which therefore also checks
 * that the slot still held this LUN and these flags all along: a reader
 * racing a close or a reuse fails it and takes the locked path.  Slots are
 * never freed, only reused, so a reader only ever reads memory of the table.
 * A reader that misses (a chain changing under it) takes the locked path
 * too, which has the final word.
 *
 * The counts are folded into the LUN's counters whenever the LUN's lock is
 * released (and before COUNTERS reads them); a count this large that it
 * could overflow its field sends the call down the locked path, which folds.
 *
 * Writers: a LUN publishes (hot_sync) with its lock held, before every
 * unlock (lun_unlock); slots are given and linked under g_lock; a closing
 * LUN kills its slot with its lock held, then unlinks it under g_lock.
 */
#define HOT_PRESENT       1u
#define HOT_SLOW_PRESENCE 2u   /* IFDHICCPresence takes the locked path */
#define HOT_SLOW_EVENTS   4u   /* so does the count read */
#define HOT_NO_GENERATION 8u   /* the generation read takes the locked path */
#define HOT_SLOW          (HOT_SLOW_PRESENCE | HOT_SLOW_EVENTS)

/* The word: gen 16 bits | flags 4 | presence calls 22 | count reads 22. */
#define HW_GEN_SHIFT      48
#define HW_FLAGS_SHIFT    44
#define HW_PRESENCE_SHIFT 22
#define HW_COUNT_BITS     22
#define HW_COUNT_MASK     ((1ull << HW_COUNT_BITS) - 1)
#define HW_FOLD_AT        (1ull << (HW_COUNT_BITS - 1))
#define HW_COUNTS         (HW_COUNT_MASK << HW_PRESENCE_SHIFT | HW_COUNT_MASK)

#define hw_gen(w)      ((uint32_t)((w) >> HW_GEN_SHIFT))
#define hw_flags(w)    ((uint32_t)((w) >> HW_FLAGS_SHIFT) & 0xFu)
#define hw_presence(w) (((w) >> HW_PRESENCE_SHIFT) & HW_COUNT_MASK)
#define hw_reads(w)    ((w) & HW_COUNT_MASK)

struct lun_hot {
    uint64_t id;               /* the LUN value */
    uint64_t word;             /* gen | flags | counts, above */
    uint64_t events;           /* insertions | removals << 32, one snapshot */
    uint32_t next;             /* the next slot in the chain + 1; 0: none */
    uint32_t unused;
};

static SIM_ALIGN64 struct lun_hot g_hot[SIM_MAX_LUNS];
/* SCIO_IFD_TAG_CARD_EVENT_GENERATION: bumped by hot_sync after it publishes
 * changed counts of any LUN, so a reader that sees the bump sees them. */
static SIM_ALIGN64 uint32_t g_event_gen;
static uint32_t g_hot_head[SIM_BUCKETS]; /* slot + 1; 0: none */
static uint32_t g_hot_free[SIM_MAX_LUNS]; /* reusable slots (g_lock) */
static unsigned g_hot_nfree, g_hot_used; /* g_lock */

/* The slot of an open LUN and its word, or NULL. */
static struct lun_hot *hot_find(IFD_DWORD id, uint64_t *word)
{
    uint32_t i = ld_acq32(&g_hot_head[bucket_of(id)]);
    unsigned steps;
    /* Bounded: chains relinked under a reader must not hold it. */
    for (steps = 0; i != 0 && i <= SIM_MAX_LUNS && steps < SIM_MAX_LUNS; steps++) {
        struct lun_hot *h = &g_hot[i - 1];
        uint64_t w = ld_acq64(&h->word);
        if ((hw_gen(w) & 1u) == 0 && ld_acq64(&h->id) == (uint64_t)id) {
            *word = w;
            return h;
        }
        i = ld_acq32(&h->next);
    }
    return NULL;
}

/* Count one lock-free call (one = 1 << its count's shift) in h, whose word
 * was *w, while none of the slow flags in `slow` is set: 1 and the flags it
 * was counted under in *w, or 0 (the locked path).  With `events`, the
 * counts it was counted with in *events. */
static int hot_count(struct lun_hot *h, uint64_t *w, uint32_t slow, uint64_t one,
                     int shift, uint64_t *events)
{
    uint32_t gen = hw_gen(*w);
    for (;;) {
        if ((hw_flags(*w) & slow) != 0 || ((*w >> shift) & HW_COUNT_MASK) >= HW_FOLD_AT)
            return 0;
        if (events != NULL)
            *events = ld_acq64(&h->events);
        if (cas64(&h->word, w, *w + one))
            return 1;
        if (hw_gen(*w) != gen)
            return 0;
    }
}

/* Give a new LUN a slot and link it (g_lock held, the LUN not yet in the
 * table); NULL if every slot is taken. */
static struct lun_hot *hot_take(IFD_DWORD id)
{
    struct lun_hot *h;
    uint32_t i, gen;
    unsigned b = bucket_of(id);
    if (g_hot_nfree > 0)
        i = g_hot_free[--g_hot_nfree];
    else if (g_hot_used < SIM_MAX_LUNS)
        i = g_hot_used++;
    else
        return NULL;
    h = &g_hot[i];
    gen = ((hw_gen(ld_acq64(&h->word)) | 1u) + 1u) & 0xFFFFu;
    st_rel64(&h->id, (uint64_t)id);
    st_rel64(&h->events, 0);
    st_rel32(&h->next, g_hot_head[b]);
    /* slow until published; no reader can count on a dead word meanwhile */
    st_rel64(&h->word, (uint64_t)gen << HW_GEN_SHIFT
                        | (uint64_t)(HOT_SLOW | HOT_NO_GENERATION) << HW_FLAGS_SHIFT);
    st_rel32(&g_hot_head[b], i + 1);
    return h;
}

/* Unlink a killed slot and make it reusable (g_lock held). */
static void hot_drop(struct lun_hot *h)
{
    uint32_t i = (uint32_t)(h - g_hot), *pp = &g_hot_head[bucket_of((IFD_DWORD)h->id)];
    while (*pp != 0 && *pp != i + 1)
        pp = &g_hot[*pp - 1].next;
    if (*pp == i + 1)
        st_rel32(pp, h->next);
    g_hot_free[g_hot_nfree++] = i;
}

/* Publish what the lock-free calls answer and take their counts into the
 * LUN's counters (LUN lock held): before every unlock, so that no change
 * made under the lock goes unseen.  Stores nothing when nothing changed,
 * leaving the line clean in the readers' caches.  With `dead`, the slot
 * stops answering for the LUN (it is closing). */
static void hot_sync(struct lun *l, int dead)
{
    struct lun_hot *h = l->hot;
    uint32_t f = l->present ? HOT_PRESENT : 0;
    uint64_t ev = (uint64_t)l->ev_insertions | (uint64_t)l->ev_removals << 32, w, nw;
    if (h == NULL)
        return;
    if (l->closed || l->latency_us != 0 || l->swap_absent > 0
        || l->fault[SIM_EP_ICC_PRESENCE].kind != SIM_FAULT_NONE)
        f |= HOT_SLOW_PRESENCE;
    if (l->closed || l->latency_us != 0 || l->no_events
        || l->fault[SIM_EP_GET_CAPABILITIES].kind != SIM_FAULT_NONE)
        f |= HOT_SLOW_EVENTS;
    if ((f & HOT_SLOW_EVENTS) || l->no_generation)
        f |= HOT_NO_GENERATION;
    if (dead)
        f = HOT_SLOW | HOT_NO_GENERATION;
    /* The counts change only under the LUN lock, and every unlock comes
     * through here: each change is published, then the generation bumped. */
    if (ld_acq64(&h->events) != ev) {
        st_rel64(&h->events, ev);
        add_rel32(&g_event_gen, 1);
    }
    w = ld_acq64(&h->word);
    do {
        uint64_t gen = hw_gen(w) | (dead ? 1u : 0u);
        nw = gen << HW_GEN_SHIFT | (uint64_t)f << HW_FLAGS_SHIFT;
        if (nw == w)
            return;
    } while (!cas64(&h->word, &w, nw));
    l->counters[SIM_COUNTER_CALLS + SIM_EP_ICC_PRESENCE] += (uint32_t)hw_presence(w);
    l->counters[SIM_COUNTER_CALLS + SIM_EP_GET_CAPABILITIES] += (uint32_t)hw_reads(w);
}

static void lun_unlock(struct lun *l)
{
    hot_sync(l, 0);
    sim_mutex_unlock(&l->lock);
}

/* ---- LUN table ----------------------------------------------------------- */

static struct lun *find_locked(IFD_DWORD id)
{
    struct lun *l;
    for (l = g_buckets[bucket_of(id)]; l != NULL; l = l->next)
        if (l->id == id)
            return l;
    return NULL;
}

static struct lun *lun_get(IFD_DWORD id)
{
    struct lun *l;
    sim_mutex_lock(&g_lock);
    l = find_locked(id);
    if (l != NULL)
        l->refs++;
    sim_mutex_unlock(&g_lock);
    return l;
}

static void lun_put(struct lun *l)
{
    int last;
    sim_mutex_lock(&g_lock);
    last = --l->refs == 0;
    sim_mutex_unlock(&g_lock);
    if (last) {
        /* Close dropped the card already; nobody else can see l now. */
        struct ext_ref *e = l->dropped;
        if (l->ext != NULL) {
            l->ext->next_dropped = e;
            e = l->ext;
        }
        while (e != NULL) {
            struct ext_ref *next = e->next_dropped;
            if (--e->refs == 0) {
                if (e->card.release != NULL)
                    e->card.release(e->card.ctx);
                sim_mutex_destroy(&e->call_lock);
                free(e);
            }
            e = next;
        }
        sim_cond_destroy(&l->cond);
        sim_mutex_destroy(&l->lock);
        free(l);
    }
}

#ifdef _WIN32
static int cond_init(sim_cond *c)
{
    InitializeConditionVariable(c);
    return 0;
}

static void deadline_after_ms(sim_deadline *d, int ms)
{
    *d = GetTickCount64() + (ULONGLONG)ms;
}
#else
static int cond_init(pthread_cond_t *c)
{
#ifdef __APPLE__
    return pthread_cond_init(c, NULL);
#else
    /* Monotonic, so poll timeouts survive wall-clock changes. */
    pthread_condattr_t a;
    int rc;
    if (pthread_condattr_init(&a) != 0)
        return -1;
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return rc;
#endif
}

static void deadline_after_ms(struct timespec *ts, int ms)
{
#ifdef __APPLE__
    clock_gettime(CLOCK_REALTIME, ts);
#else
    clock_gettime(CLOCK_MONOTONIC, ts);
#endif
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}
#endif

/* Options follow a '?' in the device name, separated by commas. */
static int name_has_option(const char *name, const char *opt)
{
    const char *p = name != NULL ? strchr(name, '?') : NULL;
    size_t n = strlen(opt);
    while (p != NULL) {
        p++;
        if (strncmp(p, opt, n) == 0 && (p[n] == 0 || p[n] == ',' || p[n] == '"'))
            return 1;
        p = strchr(p, ',');
    }
    return 0;
}

static IFD_RESPONSECODE create_channel(IFD_DWORD id, const char *name)
{
    struct lun *l;

    sim_mutex_lock(&g_lock);
    if (find_locked(id) != NULL || g_count >= SIM_MAX_LUNS) {
        sim_mutex_unlock(&g_lock);
        return IFD_COMMUNICATION_ERROR;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        sim_mutex_unlock(&g_lock);
        return IFD_COMMUNICATION_ERROR;
    }
    if (sim_mutex_init(&l->lock) != 0) {
        free(l);
        sim_mutex_unlock(&g_lock);
        return IFD_COMMUNICATION_ERROR;
    }
    if (cond_init(&l->cond) != 0) {
        sim_mutex_destroy(&l->lock);
        free(l);
        sim_mutex_unlock(&g_lock);
        return IFD_COMMUNICATION_ERROR;
    }
    l->id = id;
    l->refs = 1;
    l->linked = 1;
    l->no_polling = name_has_option(name, "nopoll");
    l->no_events = name_has_option(name, "noevents");
    l->no_generation = name_has_option(name, "nogeneration");
    l->lost_stop = name_has_option(name, "loststop");
    sim_card_init(&l->card, NULL, 0);
    l->counters[SIM_COUNTER_CALLS + SIM_EP_CREATE_CHANNEL] = 1;
    l->hot = hot_take(id); /* a slot is free: g_count < SIM_MAX_LUNS */
    {
        unsigned b = bucket_of(id);
        l->next = g_buckets[b];
        g_buckets[b] = l;
    }
    g_count++;
    sim_mutex_unlock(&g_lock);
    /* Nobody else can see l yet: its first state, published. */
    sim_mutex_lock(&l->lock);
    lun_unlock(l);
    return IFD_SUCCESS;
}

/* ---- card events (LUN lock held) ----------------------------------------- */

static void card_removed_locked(struct lun *l)
{
    l->swap_absent = 0;
    l->swap_told = 0;
    if (l->ext != NULL) {      /* released once no call is inside it */
        l->ext->next_dropped = l->dropped;
        l->dropped = l->ext;
        l->ext = NULL;
    }
    if (!l->present)
        return;
    l->card_gen++;
    l->link_gen++;
    l->present = 0;
    l->powered = 0;
    l->protocol = 0;
    l->counters[SIM_COUNTER_REMOVALS]++;
    l->ev_removals++;
    l->event_gen++;
    sim_cond_broadcast(&l->cond);
}

static void card_inserted_locked(struct lun *l, const uint8_t *atr, size_t len)
{
    int swap = l->present;
    card_removed_locked(l);    /* inserting over a card swaps it */
    l->swap_absent = swap ? SIM_SWAP_ABSENT_CHECKS : 0;
    sim_card_init(&l->card, atr, len);
    l->card_gen++;
    l->link_gen++;
    l->present = 1;
    l->powered = 0;
    l->protocol = 0;
    l->counters[SIM_COUNTER_INSERTIONS]++;
    l->ev_insertions++;
    l->event_gen++;
    sim_cond_broadcast(&l->cond);
}

/* ---- external cards (ext_card.h) ------------------------------------------ */

/* Drop a reference; the last one releases the card (no lock held). */
static void ext_put(struct lun *l, struct ext_ref *e)
{
    int last;
    sim_mutex_lock(&l->lock);
    last = --e->refs == 0;
    lun_unlock(l);
    if (last) {
        if (e->card.release != NULL)
            e->card.release(e->card.ctx);
        sim_mutex_destroy(&e->call_lock);
        free(e);
    }
}

/* Release the external cards removed while the LUN lock was held: call
 * after unlocking, wherever a card may have been removed. */
static void flush_dropped(struct lun *l)
{
    struct ext_ref *e;
    sim_mutex_lock(&l->lock);
    e = l->dropped;
    l->dropped = NULL;
    lun_unlock(l);
    while (e != NULL) {
        struct ext_ref *next = e->next_dropped;
        ext_put(l, e);
        e = next;
    }
}

/* The reader's answer to a failed external call. */
static IFD_RESPONSECODE ext_failure(long r)
{
    switch (r) {
    case SIM_EXT_E_TIMEOUT: return IFD_RESPONSE_TIMEOUT;
    case SIM_EXT_E_GONE: return IFD_ICC_NOT_PRESENT;
    default: return IFD_COMMUNICATION_ERROR;
    }
}

/* Take a reference to the LUN's external card, or NULL (LUN lock held). */
static struct ext_ref *ext_get_locked(struct lun *l, uint64_t *gen)
{
    struct ext_ref *e = l->ext;
    if (e != NULL) {
        e->refs++;
        *gen = l->card_gen;
    }
    return e;
}

/* Still the card a call started with (LUN lock held). */
static int ext_same_locked(const struct lun *l, const struct ext_ref *e, uint64_t gen)
{
    return l->ext == e && l->card_gen == gen && !l->closed;
}

/* After SIM_EXT_E_GONE: remove the card if it is still this one. */
static void ext_gone(struct lun *l, struct ext_ref *e, uint64_t gen)
{
    sim_mutex_lock(&l->lock);
    if (ext_same_locked(l, e, gen))
        card_removed_locked(l);
    lun_unlock(l);
    flush_dropped(l);
}

/* ---- common prologue ----------------------------------------------------- */

/*
 * Find the LUN, count the call, take the fault armed for this entry point,
 * sleep the latency, then carry out RETURN / BLOCK / REMOVE_CARD.  On
 * IFD_SUCCESS *out holds a reference (release with lun_put) and *f the fault
 * for the kinds the caller applies itself (OVERLONG_LENGTH, LONG_ATR).
 */
static IFD_RESPONSECODE enter(IFD_DWORD id, int ep, int take_fault,
                              struct lun **out, struct fault *f)
{
    struct lun *l = lun_get(id);
    uint32_t lat;

    f->kind = SIM_FAULT_NONE;
    f->value = 0;
    if (l == NULL)
        return IFD_NO_SUCH_DEVICE;

    sim_mutex_lock(&l->lock);
    l->counters[SIM_COUNTER_CALLS + ep]++;
    if (take_fault) {
        *f = l->fault[ep];
        l->fault[ep].kind = SIM_FAULT_NONE;
        l->fault[ep].value = 0;
    }
    lat = (ep == SIM_EP_CONTROL || ep == SIM_EP_POLLING) ? 0 : l->latency_us;
    lun_unlock(l);

    if (lat != 0)
        sleep_us(lat);

    switch (f->kind) {
    case SIM_FAULT_RETURN:
        if (f->value == IFD_SUCCESS)
            break; /* "fail" with success: the call simply runs */
        lun_put(l);
        return code_from_wire(f->value);
    case SIM_FAULT_BLOCK: {
        uint64_t gen;
        int closed;
        sim_mutex_lock(&l->lock);
        gen = l->stop_gen;
        while (gen == l->stop_gen && !l->closed)
            sim_cond_wait(&l->cond, &l->lock);   /* releases the lock */
        closed = l->closed;
        lun_unlock(l);
        if (closed) {
            lun_put(l);
            return IFD_NO_SUCH_DEVICE;
        }
        if (f->value != 0) {
            lun_put(l);
            return code_from_wire(f->value);
        }
        break;
    }
    case SIM_FAULT_REMOVE_CARD:
        sim_mutex_lock(&l->lock);
        card_removed_locked(l);
        lun_unlock(l);
        flush_dropped(l);
        break;
    default:
        break;
    }
    *out = l;
    return IFD_SUCCESS;
}

/* ---- polling ------------------------------------------------------------- */

static IFD_RESPONSECODE sim_poll(IFD_DWORD id, int timeout_ms)
{
    struct lun *l;
    struct fault f;
    sim_deadline deadline;
    IFD_RESPONSECODE rv = enter(id, SIM_EP_POLLING, 1, &l, &f);
    uint64_t gen;
    int timed_out = 0;

    if (rv != IFD_SUCCESS)
        return rv;
    if (timeout_ms >= 0)
        deadline_after_ms(&deadline, timeout_ms);
    sim_mutex_lock(&l->lock);
    l->pollers++;
    /* An event since the previous return counts even if nobody waited. */
    gen = l->poll_seen_gen;
    for (;;) {
        if (l->closed) {
            rv = IFD_NO_SUCH_DEVICE;
            break;
        }
        if (l->poll_stop) {
            l->poll_stop = 0;
            rv = IFD_SUCCESS;
            break;
        }
        if (l->event_gen != gen) {
            rv = IFD_SUCCESS;
            break;
        }
        if (timed_out) {
            rv = IFD_RESPONSE_TIMEOUT;
            break;
        }
        if (timeout_ms < 0)
            sim_cond_wait(&l->cond, &l->lock);
        else if (sim_cond_timedwait(&l->cond, &l->lock, &deadline))
            timed_out = 1;
    }
    l->pollers--;
    l->poll_seen_gen = l->event_gen;
    if (l->swap_told) {
        /* The host saw the removal and will look again: the new card. */
        l->swap_absent = 0;
        l->swap_told = 0;
    }
    lun_unlock(l);
    lun_put(l);
    return rv;
}

static IFD_RESPONSECODE sim_stop_poll(IFD_DWORD id)
{
    struct lun *l = lun_get(id);
    if (l == NULL)
        return IFD_NO_SUCH_DEVICE;
    sim_mutex_lock(&l->lock);
    if (!l->lost_stop || l->pollers > 0) {
        l->poll_stop = 1;
        sim_cond_broadcast(&l->cond);
    }
    lun_unlock(l);
    lun_put(l);
    return IFD_SUCCESS;
}

/* ---- exported entry points ----------------------------------------------- */

SIM_EXPORT IFD_RESPONSECODE IFDHCreateChannelByName(IFD_DWORD, char *);
SIM_EXPORT IFD_RESPONSECODE IFDHCreateChannel(IFD_DWORD, IFD_DWORD);
SIM_EXPORT IFD_RESPONSECODE IFDHCloseChannel(IFD_DWORD);
SIM_EXPORT IFD_RESPONSECODE IFDHGetCapabilities(IFD_DWORD, IFD_DWORD, IFD_DWORD *,
                                                IFD_UCHAR *);
SIM_EXPORT IFD_RESPONSECODE IFDHSetCapabilities(IFD_DWORD, IFD_DWORD, IFD_DWORD,
                                                IFD_UCHAR *);
SIM_EXPORT IFD_RESPONSECODE IFDHSetProtocolParameters(IFD_DWORD, IFD_DWORD, IFD_UCHAR,
                                                      IFD_UCHAR, IFD_UCHAR, IFD_UCHAR);
SIM_EXPORT IFD_RESPONSECODE IFDHPowerICC(IFD_DWORD, IFD_DWORD, IFD_UCHAR *, IFD_DWORD *);
SIM_EXPORT IFD_RESPONSECODE IFDHTransmitToICC(IFD_DWORD, IFD_SCARD_IO_HEADER, IFD_UCHAR *,
                                              IFD_DWORD, IFD_UCHAR *, IFD_DWORD *,
                                              IFD_SCARD_IO_HEADER *);
SIM_EXPORT IFD_RESPONSECODE IFDHICCPresence(IFD_DWORD);
SIM_EXPORT IFD_RESPONSECODE IFDHControl(IFD_DWORD, IFD_DWORD, IFD_UCHAR *, IFD_DWORD,
                                        IFD_UCHAR *, IFD_DWORD, IFD_DWORD *);

/* The exports must match the ABI's function types exactly. */
#define SIM_SAME_TYPE(fn, type) _Static_assert(_Generic(&(fn), type: 1, default: 0), #fn)
SIM_SAME_TYPE(IFDHCreateChannelByName, ifdh_create_channel_by_name_fn);
SIM_SAME_TYPE(IFDHCreateChannel, ifdh_create_channel_fn);
SIM_SAME_TYPE(IFDHCloseChannel, ifdh_close_channel_fn);
SIM_SAME_TYPE(IFDHGetCapabilities, ifdh_get_capabilities_fn);
SIM_SAME_TYPE(IFDHSetCapabilities, ifdh_set_capabilities_fn);
SIM_SAME_TYPE(IFDHSetProtocolParameters, ifdh_set_protocol_parameters_fn);
SIM_SAME_TYPE(IFDHPowerICC, ifdh_power_icc_fn);
SIM_SAME_TYPE(IFDHTransmitToICC, ifdh_transmit_to_icc_fn);
SIM_SAME_TYPE(IFDHICCPresence, ifdh_icc_presence_fn);
SIM_SAME_TYPE(IFDHControl, ifdh_control_fn);
SIM_SAME_TYPE(sim_poll, ifdh_polling_fn);
SIM_SAME_TYPE(sim_stop_poll, ifdh_stop_polling_fn);

SIM_EXPORT IFD_RESPONSECODE IFDHCreateChannelByName(IFD_DWORD Lun, char *DeviceName)
{
    /* Any name, NULL included; options after a '?' (README.md) make a
     * reader that offers less; "socket:PATH" links the reader to a card
     * server (sim_socket.h). */
    IFD_RESPONSECODE rv = create_channel(Lun, DeviceName);
    if (rv == IFD_SUCCESS && sim_socket_is_name(DeviceName)
        && sim_socket_start(Lun, DeviceName) != IFD_SUCCESS) {
        (void)IFDHCloseChannel(Lun);
        rv = IFD_COMMUNICATION_ERROR;
    }
    return rv;
}

SIM_EXPORT IFD_RESPONSECODE IFDHCreateChannel(IFD_DWORD Lun, IFD_DWORD Channel)
{
    (void)Channel;
    return create_channel(Lun, NULL);
}

SIM_EXPORT IFD_RESPONSECODE IFDHCloseChannel(IFD_DWORD Lun)
{
    struct lun *l;
    struct lun_hot *hot;
    struct fault f;
    IFD_RESPONSECODE rv;
    int was_linked;

    /* First, with no lock held: the link's thread removes its card through
     * the reader. */
    sim_socket_stop(Lun);
    rv = enter(Lun, SIM_EP_CLOSE_CHANNEL, 1, &l, &f);
    if (rv != IFD_SUCCESS)
        return rv;
    sim_mutex_lock(&g_lock);
    was_linked = l->linked;
    if (was_linked) {
        struct lun **pp = &g_buckets[bucket_of(Lun)];
        while (*pp != l)
            pp = &(*pp)->next;
        *pp = l->next;
        l->linked = 0;
        g_count--;
    }
    sim_mutex_unlock(&g_lock);
    if (!was_linked) {         /* a concurrent close won */
        lun_put(l);
        return IFD_NO_SUCH_DEVICE;
    }
    sim_mutex_lock(&l->lock);
    l->closed = 1;             /* wakes blocked calls and polls */
    if (l->ext != NULL) {      /* the reader is gone: so is its card */
        l->ext->next_dropped = l->dropped;
        l->dropped = l->ext;
        l->ext = NULL;
    }
    hot = l->hot;
    hot_sync(l, 1);
    l->hot = NULL;
    sim_cond_broadcast(&l->cond);
    lun_unlock(l);
    if (hot != NULL) {
        sim_mutex_lock(&g_lock);
        hot_drop(hot);
        sim_mutex_unlock(&g_lock);
    }
    flush_dropped(l);
    lun_put(l);                /* the table's reference */
    lun_put(l);                /* ours */
    return IFD_SUCCESS;
}

/* Copy n bytes into a capability buffer of *length bytes. */
static IFD_RESPONSECODE give(IFD_DWORD *length, IFD_UCHAR *value, IFD_DWORD cap,
                             const void *src, size_t n)
{
    if (cap < n) {
        *length = (IFD_DWORD)n;
        return IFD_ERROR_INSUFFICIENT_BUFFER;
    }
    if (n != 0)
        memcpy(value, src, n);
    *length = (IFD_DWORD)n;
    return IFD_SUCCESS;
}

static IFD_RESPONSECODE give_u32(IFD_DWORD *length, IFD_UCHAR *value,
                                 IFD_DWORD cap, uint32_t v)
{
    IFD_UCHAR b[4];
    put_u32(b, v);
    return give(length, value, cap, b, sizeof(b));
}

static IFD_RESPONSECODE give_u8(IFD_DWORD *length, IFD_UCHAR *value,
                                IFD_DWORD cap, uint8_t v)
{
    return give(length, value, cap, &v, 1);
}

SIM_EXPORT IFD_RESPONSECODE IFDHGetCapabilities(IFD_DWORD Lun, IFD_DWORD Tag,
                                                IFD_DWORD *Length, IFD_UCHAR *Value)
{
    struct lun *l;
    struct fault f;
    IFD_RESPONSECODE rv;
    IFD_DWORD cap;

    if (Length == NULL)
        return IFD_COMMUNICATION_ERROR;
    if (Tag == SCIO_IFD_TAG_CARD_EVENTS && Value != NULL && *Length >= 8) {
        /* The hot tag: read each poll interval.  No lock when nothing is
         * armed: the published counts (one snapshot). */
        uint64_t w, ev;
        struct lun_hot *h = hot_find(Lun, &w);
        if (h != NULL && hot_count(h, &w, HOT_SLOW_EVENTS, 1, 0, &ev)) {
            put_u32(Value, (uint32_t)ev);
            put_u32(Value + 4, (uint32_t)(ev >> 32));
            *Length = 8;
            return IFD_SUCCESS;
        }
    }
    if (Tag == SCIO_IFD_TAG_CARD_EVENT_GENERATION && Value != NULL && *Length >= 4) {
        /* Read once per poll interval for all of a host's readers: no lock
         * either; counted as a GET_CAPABILITIES call of the LUN read
         * through. */
        uint64_t w;
        struct lun_hot *h = hot_find(Lun, &w);
        if (h != NULL && hot_count(h, &w, HOT_NO_GENERATION, 1, 0, NULL)) {
            put_u32(Value, ld_acq32(&g_event_gen));
            *Length = 4;
            return IFD_SUCCESS;
        }
    }
    rv = enter(Lun, SIM_EP_GET_CAPABILITIES, 1, &l, &f);
    if (rv != IFD_SUCCESS)
        return rv;
    cap = Value != NULL ? *Length : 0;

    sim_mutex_lock(&l->lock);
    switch (Tag) {
    case IFD_TAG_ATR:
    case TAG_ATR_STRING:
        /* Empty while unpowered: there is no current ATR. */
        rv = give(Length, Value, cap, l->card.atr, l->powered ? l->card.atr_len : 0);
        break;
    case IFD_TAG_SLOTS_NUMBER:
        rv = give_u8(Length, Value, cap, 1);
        break;
    case TAG_SIMULTANEOUS:
        rv = give_u8(Length, Value, cap, SIM_SIMULTANEOUS);
        break;
    case IFD_TAG_THREAD_SAFE:
        rv = give_u8(Length, Value, cap, 1);
        break;
    case IFD_TAG_SLOT_THREAD_SAFE:
        rv = give_u8(Length, Value, cap, 0);
        break;
    case IFD_TAG_POLLING_THREAD_WITH_TIMEOUT: {
        ifdh_polling_fn fn = sim_poll;
        rv = l->no_polling ? IFD_ERROR_TAG : give(Length, Value, cap, &fn, sizeof(fn));
        break;
    }
    case IFD_TAG_STOP_POLLING_THREAD: {
        ifdh_stop_polling_fn fn = sim_stop_poll;
        rv = l->no_polling ? IFD_ERROR_TAG : give(Length, Value, cap, &fn, sizeof(fn));
        break;
    }
    case TAG_VENDOR_NAME:
        rv = give(Length, Value, cap, SIM_VENDOR_NAME, sizeof(SIM_VENDOR_NAME) - 1);
        break;
    case TAG_VENDOR_IFD_TYPE:
        rv = give(Length, Value, cap, SIM_IFD_TYPE, sizeof(SIM_IFD_TYPE) - 1);
        break;
    case TAG_VENDOR_IFD_VERSION:
        rv = give_u32(Length, Value, cap, SIM_IFD_VERSION);
        break;
    case TAG_DEVICE_UNIT:
        rv = give_u32(Length, Value, cap, (uint32_t)(Lun & 0xFFFFFFFFu));
        break;
    case TAG_CHARACTERISTICS:
        rv = give_u32(Length, Value, cap, 0);
        break;
    case TAG_CURRENT_PROTOCOL:
        rv = give_u32(Length, Value, cap, l->protocol);
        break;
    case SCIO_IFD_TAG_CARD_EVENTS: {
        IFD_UCHAR ev[8];
        if (l->no_events) {
            rv = IFD_ERROR_TAG;
            break;
        }
        put_u32(ev, l->ev_insertions);
        put_u32(ev + 4, l->ev_removals);
        rv = give(Length, Value, cap, ev, sizeof ev);
        break;
    }
    case SCIO_IFD_TAG_CARD_EVENT_GENERATION:
        /* (the LUN lock held: every change of its counts is in already) */
        rv = l->no_events || l->no_generation
             ? IFD_ERROR_TAG : give_u32(Length, Value, cap, ld_acq32(&g_event_gen));
        break;
    case SCIO_IFD_TAG_UNLOCKED_CONTROLS: {
        IFD_UCHAR range[8];
        put_u32(range, (uint32_t)(SIM_CTL_BASE + SIM_CTL_FIRST));
        put_u32(range + 4, (uint32_t)(SIM_CTL_BASE + SIM_CTL_LAST));
        rv = give(Length, Value, cap, range, sizeof range);
        break;
    }
    default:
        rv = IFD_ERROR_TAG;
        break;
    }
    lun_unlock(l);
    if (rv == IFD_SUCCESS && f.kind == SIM_FAULT_OVERLONG_LENGTH)
        *Length = overlong(cap, f.value);
    lun_put(l);
    return rv;
}

SIM_EXPORT IFD_RESPONSECODE IFDHSetCapabilities(IFD_DWORD Lun, IFD_DWORD Tag,
                                                IFD_DWORD Length, IFD_UCHAR *Value)
{
    struct lun *l;
    struct fault f;
    IFD_RESPONSECODE rv = enter(Lun, SIM_EP_SET_CAPABILITIES, 1, &l, &f);

    (void)Length;
    (void)Value;
    if (rv != IFD_SUCCESS)
        return rv;
    switch (Tag) {
    case IFD_TAG_ATR: case TAG_ATR_STRING: case IFD_TAG_SLOTS_NUMBER:
    case TAG_SIMULTANEOUS: case IFD_TAG_THREAD_SAFE: case IFD_TAG_SLOT_THREAD_SAFE:
    case IFD_TAG_POLLING_THREAD_WITH_TIMEOUT: case IFD_TAG_STOP_POLLING_THREAD:
    case TAG_VENDOR_NAME: case TAG_VENDOR_IFD_TYPE: case TAG_VENDOR_IFD_VERSION:
    case TAG_DEVICE_UNIT: case TAG_CHARACTERISTICS: case TAG_CURRENT_PROTOCOL:
    case SCIO_IFD_TAG_CARD_EVENTS: case SCIO_IFD_TAG_UNLOCKED_CONTROLS:
    case SCIO_IFD_TAG_CARD_EVENT_GENERATION:
        rv = IFD_ERROR_VALUE_READ_ONLY;
        break;
    default:
        rv = IFD_ERROR_TAG;
        break;
    }
    lun_put(l);
    return rv;
}

SIM_EXPORT IFD_RESPONSECODE IFDHSetProtocolParameters(IFD_DWORD Lun, IFD_DWORD Protocol,
                                                      IFD_UCHAR Flags, IFD_UCHAR PTS1,
                                                      IFD_UCHAR PTS2, IFD_UCHAR PTS3)
{
    struct lun *l;
    struct fault f;
    IFD_RESPONSECODE rv = enter(Lun, SIM_EP_SET_PROTOCOL, 1, &l, &f);
    uint32_t offered, first;

    /* PPS always succeeds: the simulated link has no speed to negotiate. */
    (void)Flags;
    (void)PTS1;
    (void)PTS2;
    (void)PTS3;
    if (rv != IFD_SUCCESS)
        return rv;
    sim_mutex_lock(&l->lock);
    if (!l->present) {
        rv = IFD_ICC_NOT_PRESENT;
    } else if (!l->powered) {
        rv = IFD_COMMUNICATION_ERROR;
    } else {
        offered = sim_card_protocols(&l->card, &first);
        if ((Protocol != PROTO_T0 && Protocol != PROTO_T1) || !(offered & Protocol)) {
            rv = IFD_PROTOCOL_NOT_SUPPORTED;
        } else {
            l->protocol = (uint32_t)Protocol;
            l->link_gen++;
            sim_card_set_protocol(&l->card, Protocol == PROTO_T1 ? 1 : 0);
        }
    }
    lun_unlock(l);
    lun_put(l);
    return rv;
}

/* The hook an external card gets for a power action (LUN lock held), or 0. */
static int ext_power_op(const struct lun *l, IFD_DWORD action)
{
    if (l->ext == NULL || !l->present)
        return 0;
    if (action == IFD_POWER_DOWN)
        return l->powered ? SIM_EXT_OP_POWER_DOWN : 0;
    if (action == IFD_POWER_UP)
        return l->powered ? SIM_EXT_OP_RESET_COLD : SIM_EXT_OP_POWER_UP;
    if (action == IFD_RESET)
        return l->powered ? SIM_EXT_OP_RESET_WARM : SIM_EXT_OP_POWER_UP;
    return 0;
}

/* Call an external card's power hook, no LUN lock held.  Pending T=0 data
 * does not survive it. */
static long ext_power(struct ext_ref *e, int op)
{
    long r;
    sim_mutex_lock(&e->call_lock);
    e->t0.pending_len = 0;
    r = e->card.call(e->card.ctx, op, NULL, 0, e->scratch, SIM_EXT_MAX_RESPONSE);
    sim_mutex_unlock(&e->call_lock);
    return r;
}

SIM_EXPORT IFD_RESPONSECODE IFDHPowerICC(IFD_DWORD Lun, IFD_DWORD Action,
                                         IFD_UCHAR *Atr, IFD_DWORD *AtrLength)
{
    struct lun *l;
    struct fault f;
    IFD_RESPONSECODE rv;
    IFD_DWORD cap;
    struct ext_ref *e = NULL;
    uint64_t gen = 0;
    long hook_rc = 0;
    int op;

    if (AtrLength == NULL)
        return IFD_COMMUNICATION_ERROR;
    rv = enter(Lun, SIM_EP_POWER_ICC, 1, &l, &f);
    if (rv != IFD_SUCCESS)
        return rv;
    cap = Atr != NULL ? *AtrLength : 0;

    /* An external card hears of the action first, with no lock held. */
    sim_mutex_lock(&l->lock);
    op = ext_power_op(l, Action);
    if (op != 0)
        e = ext_get_locked(l, &gen);
    lun_unlock(l);
    if (e != NULL) {
        hook_rc = ext_power(e, op);
        if (hook_rc == SIM_EXT_E_GONE)
            ext_gone(l, e, gen);
    }

    sim_mutex_lock(&l->lock);
    if (e != NULL && Action != IFD_POWER_DOWN && !ext_same_locked(l, e, gen)) {
        *AtrLength = 0;        /* removed or swapped meanwhile */
        rv = IFD_ICC_NOT_PRESENT;
    } else if (Action == IFD_POWER_DOWN) {
        /* Always succeeds, card or not: the contacts are simply off. */
        l->powered = 0;
        l->protocol = 0;
        l->link_gen++;
        l->counters[SIM_COUNTER_POWER_DOWNS]++;
        *AtrLength = 0;
    } else if (Action == IFD_POWER_UP || Action == IFD_RESET) {
        size_t n = l->card.atr_len;
        if (!l->present) {
            *AtrLength = 0;
            rv = IFD_ICC_NOT_PRESENT;
        } else if (hook_rc < 0) {
            *AtrLength = 0;    /* the card did not come up */
            rv = ext_failure(hook_rc);
        } else if (f.kind == SIM_FAULT_LONG_ATR) {
            /* Report f.value bytes; write the ATR padded with zeros, never
             * past the buffer. */
            size_t w = f.value < cap ? f.value : (size_t)cap;
            size_t k = w < n ? w : n;
            if (k != 0)
                memcpy(Atr, l->card.atr, k);
            if (w > k)
                memset(Atr + k, 0, w - k);
            *AtrLength = f.value;
        } else if (cap < n) {
            *AtrLength = (IFD_DWORD)n;
            rv = IFD_ERROR_INSUFFICIENT_BUFFER;
        } else {
            memcpy(Atr, l->card.atr, n);
            *AtrLength = (IFD_DWORD)n;
        }
        if (rv == IFD_SUCCESS) {
            l->powered = 1;
            l->protocol = 0;
            l->link_gen++;
            sim_card_reset(&l->card);
            l->counters[Action == IFD_POWER_UP ? SIM_COUNTER_POWER_UPS
                                               : SIM_COUNTER_RESETS]++;
        }
    } else {
        rv = IFD_ERROR_NOT_SUPPORTED;
    }
    lun_unlock(l);
    if (e != NULL)
        ext_put(l, e);
    if (rv == IFD_SUCCESS && f.kind == SIM_FAULT_OVERLONG_LENGTH)
        *AtrLength = overlong(cap, f.value);
    lun_put(l);
    return rv;
}

/*
 * TRANSMIT to an external card (referenced by e; card_gen was gen when it
 * was taken), with no LUN lock held: T=0 framing around the card's answer
 * (ext_card.h).  Sets *rx_len; returns the IFD code.
 */
static IFD_RESPONSECODE ext_transmit(struct lun *l, struct ext_ref *e, uint64_t gen,
                                     const IFD_UCHAR *tx, size_t tx_len,
                                     IFD_UCHAR *rx, size_t cap, size_t *rx_len)
{
    IFD_RESPONSECODE rv = IFD_SUCCESS;
    uint32_t t = 0;
    long r;
    size_t need;
    int ok;

    *rx_len = 0;
    sim_mutex_lock(&e->call_lock);
    sim_mutex_lock(&l->lock);
    ok = ext_same_locked(l, e, gen) && l->powered && l->protocol != 0;
    if (ok) {
        t = l->protocol == PROTO_T1 ? 1 : 0;
        if (e->t0_gen != l->link_gen) {   /* power or protocol changed */
            e->t0_gen = l->link_gen;
            e->t0.pending_len = 0;
        }
    }
    lun_unlock(l);
    if (!ok) {
        rv = IFD_ICC_NOT_PRESENT;
        goto out;
    }
    if (t == 0) {
        need = sim_ext_t0_before(&e->t0, tx, tx_len, rx, cap);
        if (need != 0)
            goto sized;
        if (sim_ext_is_extended(tx, tx_len)) {
            /* T=0 cannot carry an extended APDU: wrong length. */
            need = 2;
            if (cap >= 2) {
                rx[0] = 0x67;
                rx[1] = 0x00;
            }
            goto sized;
        }
    }
    r = e->card.call(e->card.ctx, SIM_EXT_OP_APDU, tx, tx_len, e->scratch,
                     SIM_EXT_MAX_RESPONSE);
    if (r < 0 && r != SIM_EXT_E_MALFORMED) {
        rv = ext_failure(r);
        if (r == SIM_EXT_E_GONE) {
            sim_mutex_unlock(&e->call_lock);
            ext_gone(l, e, gen);
            return rv;
        }
        goto out;
    }
    sim_mutex_lock(&l->lock);
    ok = ext_same_locked(l, e, gen);
    lun_unlock(l);
    if (!ok) {                 /* removed during the call: the answer is lost */
        rv = IFD_ICC_NOT_PRESENT;
        goto out;
    }
    need = 0;
    if (r >= 0 && (unsigned long)r <= SIM_EXT_MAX_RESPONSE)
        need = sim_ext_frame(&e->t0, (int)t, tx, tx_len, e->scratch, (size_t)r, rx, cap);
    if (need == 0)             /* malformed: an empty response */
        goto out;
sized:
    *rx_len = need;
    if (need > cap)
        rv = IFD_ERROR_INSUFFICIENT_BUFFER;
out:
    sim_mutex_unlock(&e->call_lock);
    return rv;
}

SIM_EXPORT IFD_RESPONSECODE IFDHTransmitToICC(IFD_DWORD Lun, IFD_SCARD_IO_HEADER SendPci,
                                              IFD_UCHAR *TxBuffer, IFD_DWORD TxLength,
                                              IFD_UCHAR *RxBuffer, IFD_DWORD *RxLength,
                                              IFD_SCARD_IO_HEADER *RecvPci)
{
    struct lun *l;
    struct fault f;
    IFD_RESPONSECODE rv;
    IFD_DWORD cap;
    uint32_t t;
    struct ext_ref *e = NULL;
    uint64_t gen = 0;

    if (RxLength == NULL || (TxBuffer == NULL && TxLength != 0))
        return IFD_COMMUNICATION_ERROR;
    rv = enter(Lun, SIM_EP_TRANSMIT, 1, &l, &f);
    if (rv != IFD_SUCCESS)
        return rv;
    cap = RxBuffer != NULL ? *RxLength : 0;

    sim_mutex_lock(&l->lock);
    if (!l->present) {
        *RxLength = 0;
        rv = IFD_ICC_NOT_PRESENT;
        goto out;
    }
    if (!l->powered) {
        *RxLength = 0;
        rv = IFD_COMMUNICATION_ERROR;
        goto out;
    }
    if (l->protocol == 0) {
        /* No PPS happened: the card runs its first offered protocol. */
        uint32_t first;
        (void)sim_card_protocols(&l->card, &first);
        if (first == 0) {
            *RxLength = 0;
            rv = IFD_PROTOCOL_NOT_SUPPORTED;
            goto out;
        }
        l->protocol = first;
        l->link_gen++;
        sim_card_set_protocol(&l->card, first == PROTO_T1 ? 1 : 0);
    }
    /* pcscd passes the T number (0 or 1) here, not the SCARD_PROTOCOL mask. */
    t = l->protocol == PROTO_T1 ? 1 : 0;
    if (SendPci.Protocol != t) {
        *RxLength = 0;
        rv = IFD_PROTOCOL_NOT_SUPPORTED;
        goto out;
    }
    if ((e = ext_get_locked(l, &gen)) != NULL) {
        /* The card's code runs with no lock of ours held. */
        size_t n = 0;
        lun_unlock(l);
        rv = ext_transmit(l, e, gen, TxBuffer, (size_t)TxLength, RxBuffer, (size_t)cap, &n);
        ext_put(l, e);
        *RxLength = (IFD_DWORD)n;
        if (rv == IFD_SUCCESS && RecvPci != NULL)
            RecvPci->Protocol = t;
        goto unlocked;
    }
    {
        size_t need = sim_card_process(&l->card, TxBuffer, (size_t)TxLength,
                                       RxBuffer, (size_t)cap);
        *RxLength = (IFD_DWORD)need;
        if (need > cap) {
            rv = IFD_ERROR_INSUFFICIENT_BUFFER;
            goto out;
        }
    }
    if (RecvPci != NULL)
        RecvPci->Protocol = t;
out:
    lun_unlock(l);
unlocked:
    if (rv == IFD_SUCCESS && f.kind == SIM_FAULT_OVERLONG_LENGTH)
        *RxLength = overlong(cap, f.value);
    lun_put(l);
    return rv;
}

SIM_EXPORT IFD_RESPONSECODE IFDHICCPresence(IFD_DWORD Lun)
{
    struct lun *l;
    struct fault f;
    IFD_RESPONSECODE rv;
    uint64_t w;
    struct lun_hot *h = hot_find(Lun, &w);

    /* Nothing armed: the published answer, no lock. */
    if (h != NULL && hot_count(h, &w, HOT_SLOW_PRESENCE, 1ull << HW_PRESENCE_SHIFT,
                               HW_PRESENCE_SHIFT, NULL))
        return hw_flags(w) & HOT_PRESENT ? IFD_ICC_PRESENT : IFD_ICC_NOT_PRESENT;
    rv = enter(Lun, SIM_EP_ICC_PRESENCE, 1, &l, &f);
    if (rv != IFD_SUCCESS)
        return rv;
    sim_mutex_lock(&l->lock);
    rv = l->present ? IFD_ICC_PRESENT : IFD_ICC_NOT_PRESENT;
    if (l->swap_absent > 0) {
        /* The removal half of a swap; a waiting poll returns at once so
         * that the host looks again and finds the new card. */
        l->swap_absent--;
        l->swap_told = 1;
        rv = IFD_ICC_NOT_PRESENT;
        l->event_gen++;
        sim_cond_broadcast(&l->cond);
    }
    lun_unlock(l);
    lun_put(l);
    return rv;
}

/* One vendor control, LUN lock held.  in/out already checked non-NULL when
 * their length is non-zero. */
static IFD_RESPONSECODE control_locked(struct lun *l, uint32_t n,
                                       const IFD_UCHAR *in, IFD_DWORD in_len,
                                       IFD_UCHAR *out, IFD_DWORD out_cap,
                                       IFD_DWORD *returned)
{
    switch (n) {
    case SIM_CTL_INSERT:
        if (in_len == 0) {
            card_inserted_locked(l, NULL, 0);
        } else if (in_len == 1) {
            if (in[0] == SIM_CARD_T1) {
                card_inserted_locked(l, NULL, 0);
            } else if (in[0] == SIM_CARD_T0) {
                static const uint8_t t0[] = SIM_ATR_T0;
                card_inserted_locked(l, t0, sizeof(t0));
            } else {
                return IFD_COMMUNICATION_ERROR;
            }
        } else if (in_len <= SIM_CARD_MAX_ATR) {
            card_inserted_locked(l, in, (size_t)in_len);
        } else {
            return IFD_COMMUNICATION_ERROR;
        }
        return IFD_SUCCESS;
    case SIM_CTL_REMOVE:
        if (in_len != 0)
            return IFD_COMMUNICATION_ERROR;
        card_removed_locked(l);
        return IFD_SUCCESS;
    case SIM_CTL_SET_LATENCY:
        if (in_len != 4)
            return IFD_COMMUNICATION_ERROR;
        l->latency_us = get_u32(in);
        return IFD_SUCCESS;
    case SIM_CTL_FAULT: {
        uint32_t ep, kind;
        if (in_len != 12)
            return IFD_COMMUNICATION_ERROR;
        ep = get_u32(in);
        kind = get_u32(in + 4);
        if (ep >= SIM_EP_COUNT || kind > SIM_FAULT_LONG_ATR)
            return IFD_COMMUNICATION_ERROR;
        l->fault[ep].kind = kind;
        l->fault[ep].value = get_u32(in + 8);
        return IFD_SUCCESS;
    }
    case SIM_CTL_STOP:
        if (in_len != 0)
            return IFD_COMMUNICATION_ERROR;
        memset(l->fault, 0, sizeof(l->fault));
        l->stop_gen++;
        sim_cond_broadcast(&l->cond);
        return IFD_SUCCESS;
    case SIM_CTL_COUNTERS: {
        uint32_t v[SIM_COUNTER_COUNT];
        size_t i;
        if (in_len != 0)
            return IFD_COMMUNICATION_ERROR;
        if (out_cap < 4u * SIM_COUNTER_COUNT) {
            *returned = 4u * SIM_COUNTER_COUNT;
            return IFD_ERROR_INSUFFICIENT_BUFFER;
        }
        hot_sync(l, 0); /* with the calls that took no lock */
        memcpy(v, l->counters, sizeof(v));
        v[SIM_COUNTER_POWERED] = l->powered ? 1 : 0;
        v[SIM_COUNTER_PRESENT] = l->present ? 1 : 0;
        v[SIM_COUNTER_PROTOCOL] = l->protocol;
        v[SIM_COUNTER_LATENCY_US] = l->latency_us;
        for (i = 0; i < SIM_COUNTER_COUNT; i++)
            put_u32(out + 4 * i, v[i]);
        *returned = 4u * SIM_COUNTER_COUNT;
        return IFD_SUCCESS;
    }
    case SIM_CTL_RESET_COUNTERS: {
        size_t i;
        if (in_len != 0)
            return IFD_COMMUNICATION_ERROR;
        hot_sync(l, 0); /* the calls that took no lock, to be zeroed too */
        for (i = 0; i < SIM_EP_COUNT; i++)
            l->counters[SIM_COUNTER_CALLS + i] = 0;
        l->counters[SIM_COUNTER_POWER_UPS] = 0;
        l->counters[SIM_COUNTER_RESETS] = 0;
        l->counters[SIM_COUNTER_POWER_DOWNS] = 0;
        l->counters[SIM_COUNTER_INSERTIONS] = 0;
        l->counters[SIM_COUNTER_REMOVALS] = 0;
        return IFD_SUCCESS;
    }
    default:
        return IFD_ERROR_NOT_SUPPORTED;
    }
}

SIM_EXPORT IFD_RESPONSECODE IFDHControl(IFD_DWORD Lun, IFD_DWORD dwControlCode,
                                        IFD_UCHAR *TxBuffer, IFD_DWORD TxLength,
                                        IFD_UCHAR *RxBuffer, IFD_DWORD RxLength,
                                        IFD_DWORD *pdwBytesReturned)
{
    struct lun *l;
    struct fault f;
    IFD_RESPONSECODE rv;
    IFD_DWORD returned = 0, cap = RxBuffer != NULL ? RxLength : 0;
    uint32_t n = 0;
    int known = dwControlCode >= SIM_CTL_BASE
                && dwControlCode - SIM_CTL_BASE <= 0xFFFFu;

    if (known)
        n = (uint32_t)(dwControlCode - SIM_CTL_BASE);
    if (pdwBytesReturned != NULL)
        *pdwBytesReturned = 0;
    /* STOP is the way out of a stuck test: no fault can swallow it (it
     * disarms them all anyway). */
    rv = enter(Lun, SIM_EP_CONTROL, !(known && n == SIM_CTL_STOP), &l, &f);
    if (rv != IFD_SUCCESS)
        return rv;
    if (!known) {
        rv = IFD_ERROR_NOT_SUPPORTED;
    } else if (TxBuffer == NULL && TxLength != 0) {
        rv = IFD_COMMUNICATION_ERROR;
    } else {
        sim_mutex_lock(&l->lock);
        rv = control_locked(l, n, TxBuffer, TxLength, RxBuffer, cap, &returned);
        lun_unlock(l);
        flush_dropped(l);
    }
    if (rv == IFD_SUCCESS && f.kind == SIM_FAULT_OVERLONG_LENGTH)
        returned = overlong(cap, f.value);
    if (pdwBytesReturned != NULL)
        *pdwBytesReturned = returned;
    lun_put(l);
    return rv;
}

/* ---- external cards: insertion (ext_card.h) ------------------------------- */

IFD_RESPONSECODE sim_ext_insert(IFD_DWORD lun, const sim_ext_card *card,
                                const uint8_t *atr, size_t atr_len)
{
    struct lun *l;
    struct ext_ref *e;
    int closed;

    if (card == NULL || card->call == NULL) {
        if (card != NULL && card->release != NULL)
            card->release(card->ctx);
        return IFD_COMMUNICATION_ERROR;
    }
    if (atr == NULL || atr_len < 2 || atr_len > SIM_CARD_MAX_ATR) {
        if (card->release != NULL)
            card->release(card->ctx);
        return IFD_COMMUNICATION_ERROR;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL || sim_mutex_init(&e->call_lock) != 0) {
        free(e);
        if (card->release != NULL)
            card->release(card->ctx);
        return IFD_COMMUNICATION_ERROR;
    }
    e->card = *card;
    e->refs = 1;
    closed = 1;
    if ((l = lun_get(lun)) != NULL) {
        sim_mutex_lock(&l->lock);
        closed = l->closed;
        if (!closed) {
            card_inserted_locked(l, atr, atr_len);
            l->ext = e;
        }
        lun_unlock(l);
        flush_dropped(l);      /* the card this one replaced */
        lun_put(l);
    }
    if (closed) {              /* no such reader: the card is dropped */
        if (card->release != NULL)
            card->release(card->ctx);
        sim_mutex_destroy(&e->call_lock);
        free(e);
        return IFD_NO_SUCH_DEVICE;
    }
    return IFD_SUCCESS;
}

IFD_RESPONSECODE sim_ext_remove(IFD_DWORD lun)
{
    struct lun *l = lun_get(lun);
    if (l == NULL)
        return IFD_NO_SUCH_DEVICE;
    sim_mutex_lock(&l->lock);
    card_removed_locked(l);
    lun_unlock(l);
    flush_dropped(l);
    lun_put(l);
    return IFD_SUCCESS;
}

/* The in-process entry to sim_ext_insert, for a host that loaded this
 * library (README.md, "External cards"); not reachable through pcscd. */
SIM_EXPORT IFD_RESPONSECODE scardio_sim_insert_external(IFD_DWORD lun, sim_ext_call_fn call,
                                                        sim_ext_release_fn release, void *ctx,
                                                        const uint8_t *atr, size_t atr_len);

SIM_EXPORT IFD_RESPONSECODE scardio_sim_insert_external(IFD_DWORD lun, sim_ext_call_fn call,
                                                        sim_ext_release_fn release, void *ctx,
                                                        const uint8_t *atr, size_t atr_len)
{
    sim_ext_card card;
    card.call = call;
    card.release = release;
    card.ctx = ctx;
    return sim_ext_insert(lun, &card, atr, atr_len);
}
