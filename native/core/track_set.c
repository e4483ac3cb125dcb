/*
 * track_set.c - tracking sets: one thread waits for the tracking requests
 * (IS_PRESENT / IS_ABSENT) of many devices in one call of their backend
 * (backend.h: track_set_*), and gets each completion straight back, with
 * no lane thread and no queue between the driver's answer and it (scio.h).
 *
 * The set keeps one entry per request it holds.  A wait enters every
 * parked request (device.c: it is then counted as a call in its driver, so
 * a close waits for the wait, bounded, before the channel goes), makes one
 * backend call over them, and leaves them again, completing the ones the
 * call ended.  Requests a cancel or a close ended meanwhile are reported
 * by the next wait.  Only the waiting thread removes entries, so the
 * entries it waits on stay put while a submit from another thread adds
 * one (and wakes it).
 *
 * Waking: `woken` (under the set's lock) makes the running or the next
 * wait return; while a backend call runs, the waker repeats the backend's
 * interrupt until the call has returned, since a resource manager may drop
 * an interrupt that arrives before the call reached it.
 */
#include <stdlib.h>
#include <string.h>

#include "core_internal.h"

typedef struct set_entry {
    scio_track_entry t;
    scio_op *op;
    int entered;
} set_entry;

struct scio_track_set {
    const scio_backend *be;
    void *state;
    unsigned long generation;
    scio_mutex lock;
    scio_cond cv;
    int refs;                /* under ref_lock */
    /* guarded by lock */
    int woken, in_call;
    unsigned calls;          /* backend calls made: a waker interrupts its own only */
    set_entry **e;
    size_t n, cap;
    /* the waiting thread's own */
    set_entry **snap;
    scio_track_entry **call;
    size_t snap_cap;
};

/* The wait a waker repeats the interrupt for, and how often. */
#define SET_WAKE_TRIES 50
#define SET_WAKE_STEP_MS 2

static scio_mutex ref_lock = SCIO_MUTEX_INITIALIZER;

static int supported(const scio_backend *be)
{
    return be->track_set_open && be->track_set_wait && be->track_set_interrupt &&
           be->track_set_close;
}

void scio_track_set_ref(scio_track_set *s)
{
    scio_mutex_lock(&ref_lock);
    s->refs++;
    scio_mutex_unlock(&ref_lock);
}

void scio_track_set_unref(scio_track_set *s)
{
    int last;
    scio_mutex_lock(&ref_lock);
    last = --s->refs == 0;
    scio_mutex_unlock(&ref_lock);
    if (!last)
        return;
    s->be->track_set_close(s->state);
    scio_cond_destroy(&s->cv);
    scio_mutex_destroy(&s->lock);
    free(s->e);
    free(s->snap);
    free(s->call);
    free(s);
}

scio_status scio_track_set_new(scio_device *d, scio_track_set **out)
{
    const scio_backend *be;
    scio_track_set *s;
    scio_status st;
    *out = NULL;
    if (!d)
        return SCIO_INVALID_PARAMETER;
    be = scio_device_backend(d);
    if (!supported(be))
        return SCIO_NOT_SUPPORTED;
    s = calloc(1, sizeof *s);
    if (!s)
        return SCIO_NO_MEMORY;
    if ((st = be->track_set_open(&s->state)) != SCIO_SUCCESS) {
        free(s);
        return st;
    }
    s->be = be;
    s->refs = 1;
    s->generation = scio_fork_generation;
    scio_mutex_init(&s->lock);
    scio_cond_init(&s->cv);
    *out = s;
    return SCIO_SUCCESS;
}

static int inherited(const scio_track_set *s)
{
    return s->generation != scio_fork_generation;
}

int scio_track_set_accepts(scio_track_set *s, scio_device *d)
{
    return s && d && !inherited(s) && scio_device_backend(d) == s->be;
}

size_t scio_track_set_capacity(const scio_track_set *s)
{
    return s->be->track_set_max;
}

scio_status scio_track_set_submit(scio_track_set *s, scio_device *d, uint32_t code,
                                  uint64_t user, scio_op **op_out)
{
    set_entry *e;
    scio_status st;
    int wake;
    *op_out = NULL;
    if (!s || !d || inherited(s) ||
        (code != SCIO_IOCTL_IS_PRESENT && code != SCIO_IOCTL_IS_ABSENT))
        return SCIO_INVALID_PARAMETER;
    if (!scio_track_set_accepts(s, d))
        return SCIO_NOT_SUPPORTED;
    e = calloc(1, sizeof *e);
    if (!e)
        return SCIO_NO_MEMORY;
    scio_mutex_lock(&s->lock);
    if (s->be->track_set_max && s->n >= s->be->track_set_max) {
        scio_mutex_unlock(&s->lock);
        free(e);
        return SCIO_INSUFFICIENT_RESOURCES; /* the backend's wait takes no more */
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        set_entry **grown = realloc(s->e, cap * sizeof *grown);
        if (!grown) {
            scio_mutex_unlock(&s->lock);
            free(e);
            return SCIO_NO_MEMORY;
        }
        s->e = grown;
        s->cap = cap;
    }
    scio_mutex_unlock(&s->lock);
    if ((st = scio_held_submit(d, s, code, user, &e->op)) != SCIO_SUCCESS) {
        free(e);
        return st;
    }
    e->t.dev = d;
    e->t.code = code;
    scio_mutex_lock(&s->lock);
    s->e[s->n++] = e; /* room was made above, and only the waiter removes */
    wake = s->in_call;
    scio_cond_broadcast(&s->cv); /* a wait asleep with nothing to wait for */
    scio_mutex_unlock(&s->lock);
    *op_out = e->op;
    if (wake) /* a wait running without it: have it look again */
        scio_track_set_wake(s);
    return SCIO_SUCCESS;
}

size_t scio_track_set_pending(scio_track_set *s)
{
    size_t n;
    scio_mutex_lock(&s->lock);
    n = s->n;
    scio_mutex_unlock(&s->lock);
    return n;
}

void scio_track_set_wake(scio_track_set *s)
{
    int in_call;
    unsigned call;
    if (!s || inherited(s))
        return;
    scio_mutex_lock(&s->lock);
    s->woken = 1;
    in_call = s->in_call;
    call = s->calls;
    scio_cond_broadcast(&s->cv);
    scio_mutex_unlock(&s->lock);
    /* Until the call running now has returned (the next one sees `woken`
     * before it starts, or is a later wait's, not ours to end). */
    for (int i = 0; in_call && i < SET_WAKE_TRIES; i++) {
        s->be->track_set_interrupt(s->state);
        scio_mutex_lock(&s->lock);
        if (s->in_call && s->calls == call)
            scio_cond_wait_until(&s->cv, &s->lock, scio_now_ms() + SET_WAKE_STEP_MS);
        in_call = s->in_call && s->calls == call;
        scio_mutex_unlock(&s->lock);
    }
}

/* Room for the waiter's own arrays (the waiting thread only). */
static int snap_room(scio_track_set *s, size_t n)
{
    set_entry **snap;
    scio_track_entry **call;
    size_t cap;
    if (n <= s->snap_cap)
        return 0;
    cap = n < 8 ? 8 : n * 2;
    snap = realloc(s->snap, cap * sizeof *snap);
    if (!snap)
        return -1;
    s->snap = snap;
    call = realloc(s->call, cap * sizeof *call);
    if (!call)
        return -1;
    s->call = call;
    s->snap_cap = cap;
    return 0;
}

/* Report (and forget) done entries of the snapshot, at most cap of them. */
static int reap(scio_track_set *s, size_t n, scio_completion *out, size_t cap)
{
    int got = 0;
    for (size_t i = 0; i < n && (size_t)got < cap; i++) {
        set_entry *e = s->snap[i];
        if (!e || !scio_op_done(e->op))
            continue;
        out[got].op_id = scio_op_id(e->op);
        out[got].user = scio_op_user(e->op);
        out[got].status = scio_op_status(e->op);
        got++;
        scio_mutex_lock(&s->lock);
        for (size_t j = 0; j < s->n; j++) {
            if (s->e[j] == e) { /* keep the others in submission order */
                memmove(&s->e[j], &s->e[j + 1], (s->n - j - 1) * sizeof *s->e);
                s->n--;
                break;
            }
        }
        scio_mutex_unlock(&s->lock);
        scio_op_drop(e->op);
        free(e);
        s->snap[i] = NULL;
    }
    return got;
}

int scio_track_set_wait(scio_track_set *s, int timeout_ms, scio_completion *out, size_t cap)
{
    int64_t deadline = timeout_ms >= 0 ? scio_now_ms() + timeout_ms : -1;
    if (!s || inherited(s) || !out || cap == 0)
        return 0;
    for (;;) {
        size_t n, m = 0, ended = 0;
        int woke, got;
        scio_status st;
        int64_t left;

        scio_mutex_lock(&s->lock);
        n = s->n;
        if (snap_room(s, n) != 0) {
            scio_mutex_unlock(&s->lock);
            return 0;
        }
        memcpy(s->snap, s->e, n * sizeof *s->snap);
        scio_mutex_unlock(&s->lock);

        for (size_t i = 0; i < n; i++) {
            set_entry *e = s->snap[i];
            e->entered = scio_held_enter(e->op);
            if (!e->entered) {
                ended++;
                continue;
            }
            e->t.done = 0;
            e->t.status = SCIO_PENDING;
            e->t.driver_code = 0;
            s->call[m++] = &e->t;
        }

        scio_mutex_lock(&s->lock);
        woke = s->woken;
        if (woke || ended) {
            s->woken = 0;
            st = SCIO_CANCELLED;
        } else if (m == 0) {
            /* Nothing to wait for: sleep until a submit, a wake or the end. */
            size_t had = s->n;
            while (!s->woken && s->n == had && (deadline < 0 || scio_now_ms() < deadline)) {
                if (deadline < 0)
                    scio_cond_wait(&s->cv, &s->lock);
                else
                    scio_cond_wait_until(&s->cv, &s->lock, deadline);
            }
            woke = s->woken;
            s->woken = 0;
            had = s->n != had;
            scio_mutex_unlock(&s->lock);
            if (woke)
                return -1;
            if (!had)
                return 0;
            continue; /* a submit from another thread: wait on it too */
        } else {
            s->in_call = 1;
            s->calls++;
            st = SCIO_PENDING;
        }
        scio_mutex_unlock(&s->lock);

        if (st == SCIO_PENDING) {
            left = deadline < 0 ? -1 : deadline - scio_now_ms();
            st = s->be->track_set_wait(s->state, s->call, m, left < 0 && deadline >= 0 ? 0
                                       : (int)(left > 0x7FFFFFFF ? 0x7FFFFFFF : left));
            scio_mutex_lock(&s->lock);
            s->in_call = 0;
            woke = s->woken;
            s->woken = 0;
            scio_cond_broadcast(&s->cv);
            scio_mutex_unlock(&s->lock);
        }

        for (size_t i = 0; i < n; i++) {
            set_entry *e = s->snap[i];
            if (e->entered)
                scio_held_leave(e->op, e->t.done, e->t.status, e->t.driver_code);
            e->entered = 0;
        }
        got = reap(s, n, out, cap);
        if (got > 0)
            return got;
        if (woke)
            return -1;
        if (ended)
            return 0;
        if (st == SCIO_CANCELLED || st == SCIO_IO_TIMEOUT ||
            (deadline >= 0 && scio_now_ms() >= deadline))
            return 0;
        /* The call returned on a change none of the requests waits for. */
    }
}

void scio_track_set_free(scio_track_set *s)
{
    size_t n;
    if (!s)
        return;
    if (inherited(s))
        return; /* the parent's: its context is not ours to use */
    scio_mutex_lock(&s->lock);
    n = s->n;
    scio_mutex_unlock(&s->lock);
    /* No wait runs: every request is parked, so a cancel ends it at once. */
    for (size_t i = 0; i < n; i++) {
        set_entry *e = s->e[i];
        scio_op_cancel(e->op);
        scio_op_wait(e->op, -1);
        scio_op_drop(e->op);
        free(e);
    }
    s->n = 0;
    scio_track_set_unref(s);
}
