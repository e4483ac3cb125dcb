/*
 * queue.c - completion queues: a FIFO of completion records guarded by a
 * mutex, plus a descriptor that is readable exactly while the FIFO is not
 * empty (eventfd on Linux, a pipe elsewhere) so event loops can poll it.
 * On Windows a manual-reset event plays the descriptor's part.
 */
#ifndef _WIN32
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core_internal.h"

#ifdef __linux__
#include <sys/eventfd.h>
#endif
#ifndef _WIN32
#include <fcntl.h>
#include <unistd.h>
#endif

struct scio_queue {
    scio_mutex lock;
    scio_cond cv;
    int refs;                 /* owner + every device and operation using it */
    int owned;                /* the creator's reference is still held */
    scio_completion *ring;    /* circular buffer */
    size_t cap, head, count;
    int wakes;                /* pending scio_queue_wake calls */
    int rfd, wfd;             /* signalling descriptor(s); rfd == wfd for eventfd */
    int signalled;            /* the descriptor is currently readable */
#ifdef _WIN32
    HANDLE event;             /* manual-reset: set while rfd would be readable */
#endif
};

static int signal_open(scio_queue *q)
{
#ifdef __linux__
    q->rfd = q->wfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return q->rfd >= 0 ? 0 : -1;
#elif defined(_WIN32)
    q->rfd = q->wfd = -1;
    q->event = CreateEventW(NULL, TRUE, FALSE, NULL);
    return q->event != NULL ? 0 : -1;
#else
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
    }
    q->rfd = fds[0];
    q->wfd = fds[1];
    return 0;
#endif
}

static void signal_raise(scio_queue *q)
{
#ifndef _WIN32
    uint64_t one = 1;
    ssize_t n = write(q->wfd, &one, q->rfd == q->wfd ? sizeof one : 1);
    (void)n; /* non-blocking; a full pipe is still readable */
#else
    SetEvent(q->event);
#endif
}

static void signal_lower(scio_queue *q)
{
#ifndef _WIN32
    uint64_t v;
    ssize_t n = read(q->rfd, &v, q->rfd == q->wfd ? sizeof v : 1);
    (void)n;
#else
    ResetEvent(q->event);
#endif
}

/* Keep the descriptor readable iff something is waiting (called locked).
 * Always under the lock: raised outside it, it could be lowered by a
 * harvest before the raise lands and stay readable with nothing queued (a
 * level-triggered poller would then spin until the poster ran again). */
static void signal_update(scio_queue *q)
{
    int want = q->count > 0 || q->wakes > 0;
    if (want && !q->signalled) {
        signal_raise(q);
        q->signalled = 1;
    } else if (!want && q->signalled) {
        signal_lower(q);
        q->signalled = 0;
    }
}

static scio_queue *queue_new(int owned)
{
    scio_queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->cap = 16;
    q->ring = calloc(q->cap, sizeof *q->ring);
    if (!q->ring || signal_open(q) != 0) {
        free(q->ring);
        free(q);
        return NULL;
    }
    scio_mutex_init(&q->lock);
    scio_cond_init(&q->cv);
    q->refs = 1;
    q->owned = owned;
    return q;
}

scio_queue *scio_queue_new(void) { return queue_new(1); }
scio_queue *scio_queue_new_private(void) { return queue_new(0); }

int scio_queue_fd(const scio_queue *q) { return q->rfd; }
#ifdef _WIN32
void *scio_queue_handle(const scio_queue *q) { return q->event; }
#else
void *scio_queue_handle(const scio_queue *q) { (void)q; return NULL; }
#endif

void scio_queue_ref(scio_queue *q)
{
    scio_mutex_lock(&q->lock);
    q->refs++;
    scio_mutex_unlock(&q->lock);
}

void scio_queue_unref(scio_queue *q)
{
    int last;
    scio_mutex_lock(&q->lock);
    last = --q->refs == 0;
    scio_mutex_unlock(&q->lock);
    if (!last)
        return;
#ifndef _WIN32
    close(q->rfd);
    if (q->wfd != q->rfd)
        close(q->wfd);
#else
    CloseHandle(q->event);
#endif
    scio_cond_destroy(&q->cv);
    scio_mutex_destroy(&q->lock);
    free(q->ring);
    free(q);
}

void scio_queue_free(scio_queue *q)
{
    int owned;
    if (!q)
        return;
    /* Only the creator's reference, once: a device's private queue, or a
     * second free, must not pull the queue from under its users. */
    scio_mutex_lock(&q->lock);
    owned = q->owned;
    q->owned = 0;
    scio_mutex_unlock(&q->lock);
    if (owned)
        scio_queue_unref(q);
}

int scio_queue_enqueue(scio_queue *q, uint64_t op_id, uint64_t user, scio_status st)
{
    scio_mutex_lock(&q->lock);
    if (q->count == q->cap) {
        /* Grow; if memory is exhausted the completion is still reachable
         * through scio_op_wait / scio_op_status, only not queued. */
        size_t ncap = q->cap * 2;
        scio_completion *n = calloc(ncap, sizeof *n);
        if (!n) {
            scio_mutex_unlock(&q->lock);
            return SCIO_QUEUE_QUIET;
        }
        for (size_t i = 0; i < q->count; i++)
            n[i] = q->ring[(q->head + i) % q->cap];
        free(q->ring);
        q->ring = n;
        q->cap = ncap;
        q->head = 0;
    }
    scio_completion *c = &q->ring[(q->head + q->count) % q->cap];
    c->op_id = op_id;
    c->user = user;
    c->status = st;
    q->count++;
    signal_update(q);
    scio_mutex_unlock(&q->lock);
    return SCIO_QUEUE_SIGNAL;
}

void scio_queue_notify(scio_queue *q, int how)
{
    /* Without the lock: a woken harvester that ran at once would only
     * block on it again (two more thread switches per completion). */
    if (how == SCIO_QUEUE_SIGNAL)
        scio_cond_signal(&q->cv);
}

void scio_queue_post(scio_queue *q, uint64_t op_id, uint64_t user, scio_status st)
{
    scio_queue_notify(q, scio_queue_enqueue(q, op_id, user, st));
}

int scio_queue_pop(scio_queue *q, int timeout_ms, scio_completion *out)
{
    int64_t deadline = timeout_ms > 0 ? scio_now_ms() + timeout_ms : 0;
    int rc = 0;
    scio_mutex_lock(&q->lock);
    for (;;) {
        if (q->count > 0) {
            *out = q->ring[q->head];
            q->head = (q->head + 1) % q->cap;
            q->count--;
            rc = 1;
            break;
        }
        if (q->wakes > 0) {
            q->wakes--;
            rc = -1;
            break;
        }
        if (timeout_ms == 0)
            break;
        if (timeout_ms < 0)
            scio_cond_wait(&q->cv, &q->lock);
        else if (!scio_cond_wait_until(&q->cv, &q->lock, deadline) &&
                 q->count == 0 && q->wakes == 0)
            break;
    }
    signal_update(q);
    scio_mutex_unlock(&q->lock);
    return rc;
}

void scio_queue_forget(scio_queue *q, uint64_t op_id)
{
    size_t kept = 0;
    scio_mutex_lock(&q->lock);
    for (size_t i = 0; i < q->count; i++) {
        scio_completion c = q->ring[(q->head + i) % q->cap];
        if (c.op_id != op_id)
            q->ring[(q->head + kept++) % q->cap] = c;
    }
    q->count = kept;
    signal_update(q);
    scio_mutex_unlock(&q->lock);
}

void scio_queue_wake(scio_queue *q)
{
    scio_mutex_lock(&q->lock);
    q->wakes++;
    signal_update(q);
    scio_cond_signal(&q->cv);
    scio_mutex_unlock(&q->lock);
}

size_t scio_queue_pending(scio_queue *q)
{
    size_t n;
    scio_mutex_lock(&q->lock);
    n = q->count;
    scio_mutex_unlock(&q->lock);
    return n;
}
