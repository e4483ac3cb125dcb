/*
 * device.c - the generic device: synchronous calls, overlapped operations,
 * the two worker lanes that serve them, cancellation and shutdown.
 *
 * Each device has two lanes, each a FIFO served by one lazily started thread:
 * the I/O lane (every IOCTL but the tracking ones) and the tracking lane
 * (IS_PRESENT / IS_ABSENT, which may block in the driver for a long time and
 * must not hold up transmits).  Only one tracking request may be pending per
 * device, as with smclib drivers; a second completes with DEVICE_BUSY.  A
 * backend may take overlapped tracking requests itself (submit_tracking),
 * to serve many devices from one thread: they then use no lane.
 * A backend with its own overlapped I/O (backend.h: submit) gets no lanes:
 * its operations are handed to it and come back through scio_op_complete.
 *
 * Locks: an operation's lock guards its result (done, status, output); the
 * device lock guards everything else, including an operation's lane
 * membership and cancel flag.  Order: operation lock, then device lock.
 */
#include <stdlib.h>
#include <string.h>

#include "core_internal.h"

enum op_where { OP_NEW, OP_QUEUED, OP_RUNNING, OP_DONE };

struct scio_op {
    scio_mutex lock;
    scio_cond cv;
    int refs;                /* caller + core (until completed) */
    uint64_t id, user;
    uint32_t code;
    scio_device *dev;        /* holds a device reference until completed */
    scio_queue *q;           /* heap ops: a queue reference for their life */
    uint8_t *in;
    size_t in_len;
    uint8_t *out;
    size_t out_cap, out_len;
    scio_status status;
    long driver_code;
    int released, post, posted, heap;
    int awaited;             /* its submitter waits for it (scio_submit_awaited) */
    int64_t deadline_us;     /* scio_now_us() its waiter gives up at; 0: none */
    int done;                /* written under the op lock; spinning waiters read it without */
    scio_call_fn call;       /* a call (scio_submit_call), not an IOCTL */
    void *call_ctx;
    size_t call_out_len;     /* the output a call leaves in `out` */
    /* guarded by the device lock */
    int cancel, tracking;
    int call_started;        /* the call function has been (or is being) called */
    int native;              /* handed to the backend's submit */
    int abandoned;           /* completed by close while still in the driver */
    int returned;            /* given back by the driver: its returner completes it */
    int inline_run;          /* run in its submitter's thread (run_inline) */
    /* A tracking request held by a tracking set (track_set.c): QUEUED while
     * parked, RUNNING while the set's wait is using it. */
    scio_track_set *set;
    enum op_where where;
    struct scio_op *next;    /* in a lane, or in the device's submitted list */
};

/* Heap operations carry the backend's op_data_size bytes after the struct. */
#define OP_DATA_OFFSET ((sizeof(struct scio_op) + 15u) & ~(size_t)15u)

typedef struct lane {
    scio_op *head, *tail;
    scio_op *running;
    scio_op *inline_op;      /* an awaited op run in its submitter's thread:
                                the lane waits for it (FIFO order) */
    int thread_up;
    int pushes;              /* bumped (under the device lock) per queued op */
    int after_awaited;       /* the last op run was awaited: its waiter's next
                                step usually follows at once */
    /* Processors (scio_current_cpu, -1: not known) the lane thread and the
     * last awaited op's waiter were last seen on: each spins for the other
     * only while they differ (read and written without the lock: hints). */
    int cpu, waiter_cpu;
    /* The last awaited op took longer in the driver than the spin budget
     * (a real card or reader round trip): its waiters sleep at once. */
    int await_slow;
    struct scio_device *dev;
} lane;

struct scio_device {
    const scio_backend *be;
    void *state;
    scio_queue *q;
    scio_mutex lock;
    scio_cond cv;            /* lane work, in-driver count, thread and
                                release exits, shutdown done */
    int drain_waiters;       /* shutdowns waiting for the in-driver count */
    int refs;
    int shut, shut_done, released, release_done;
    unsigned close_timeout_ms;
    int in_driver;           /* calls inside the backend right now */
    int sync_calls;          /* of them, synchronous non-tracking scio_ioctl */
    long last_driver_code;
    lane io, track;
    lane submitted;          /* natively submitted, not yet back (no thread) */
    scio_op *sync_tracking;  /* a synchronous IS_PRESENT / IS_ABSENT */
    unsigned cancels;        /* cancel_everything calls: ends sliced waits (never 0) */
    scio_op *native_tracking; /* one handed to the backend's submit_tracking */
    scio_op *held_tracking;  /* one held by a tracking set (track_set.c) */
};

#if defined(_MSC_VER) && !defined(__clang__)
#define SCIO_THREAD_LOCAL __declspec(thread)
#else
#define SCIO_THREAD_LOCAL _Thread_local
#endif

static scio_mutex id_lock = SCIO_MUTEX_INITIALIZER;
static uint64_t next_op_id = 1;

static int is_tracking(uint32_t code)
{
    return code == SCIO_IOCTL_IS_PRESENT || code == SCIO_IOCTL_IS_ABSENT;
}

/* Is a tracking request pending on the device, wherever it runs (device
 * locked)?  The one-tracking-request rule of every way in. */
static int tracking_pending_locked(const scio_device *d)
{
    return d->track.head || d->track.running || d->sync_tracking || d->native_tracking ||
           d->held_tracking;
}

/* ---- device references ------------------------------------------------ */

static void dev_ref_locked(scio_device *d) { d->refs++; }

static void dev_unref(scio_device *d)
{
    int last;
    scio_mutex_lock(&d->lock);
    last = --d->refs == 0;
    scio_mutex_unlock(&d->lock);
    if (!last)
        return;
    if (!d->released && d->be->release)
        d->be->release(d);
    if (d->be->destroy)
        d->be->destroy(d);
    scio_queue_unref(d->q);
    scio_cond_destroy(&d->cv);
    scio_mutex_destroy(&d->lock);
    free(d);
}

scio_status scio_device_create(const scio_backend *be, void *state,
                               scio_queue *q, unsigned close_timeout_ms,
                               scio_device **out)
{
    scio_device *d;
    /* before the first device exists: a child must be able to tell it */
    if (scio_watch_forks() != 0)
        return SCIO_INSUFFICIENT_RESOURCES;
    d = calloc(1, sizeof *d);
    if (!d)
        return SCIO_NO_MEMORY;
    if (q) {
        scio_queue_ref(q);
    } else if (!(q = scio_queue_new_private())) {
        free(d);
        return SCIO_INSUFFICIENT_RESOURCES;
    }
    d->be = be;
    d->state = state;
    d->q = q;
    d->refs = 1;
    d->close_timeout_ms = close_timeout_ms ? close_timeout_ms : SCIO_DEFAULT_CLOSE_MS;
    d->cancels = 1;
    d->io.dev = d->track.dev = d->submitted.dev = d;
    d->io.cpu = d->io.waiter_cpu = -1;
    scio_mutex_init(&d->lock);
    scio_cond_init(&d->cv);
    *out = d;
    return SCIO_SUCCESS;
}

void *scio_device_state(scio_device *d) { return d->state; }
scio_queue *scio_device_queue(scio_device *d) { return d->q; }

long scio_device_driver_code(scio_device *d)
{
    long c;
    scio_mutex_lock(&d->lock);
    c = d->last_driver_code;
    scio_mutex_unlock(&d->lock);
    return c;
}

/* ---- spinning ----------------------------------------------------------- */

/* A thread hand-off costs two wake-ups, and on a VM a wake-up of a thread
 * whose processor went idle costs 5-20 us (the idle vCPU must be woken),
 * several times a fast driver's whole call.  So the two ends of an awaited
 * call (scio_submit_awaited: a synchronous call bounded by its caller's
 * timeout) spin briefly instead of sleeping: the waiter for the completion
 * (AWAIT_SPIN_US), the I/O lane for the waiter's next call after it has run
 * one (the same budget).  Spinning is bounded (tens of microseconds, then
 * they sleep as before: an idle process uses no processor) and only where
 * it can pay: a thread whose affinity mask has a single processor (every
 * thread pinned to one CPU) never spins, since the thread it waits for
 * cannot run until it stops; nor does a waiter whose lane's last awaited
 * call took longer than the budget in the driver (a real reader's round
 * trip: spinning would only burn it).  SCARDIO_AWAIT_SPIN_US sets the
 * budget (0: no spinning; at most MAX_SPIN_US).
 *
 * Other waits (Operation.wait, the lanes after overlapped work) do not spin
 * unless SCARDIO_WAIT_SPIN_US / SCARDIO_LANE_SPIN_US ask (and
 * SCARDIO_SPIN_YIELD=1: yield while spinning): their next step is an event
 * loop's or another thread's, not an immediate one, and on a loaded machine
 * the spinner takes the processor the other thread needs. */
#define WAIT_SPIN_US 0
#define LANE_SPIN_US 0
#define AWAIT_SPIN_US 50
#define MAX_SPIN_US 1000
static scio_mutex spin_lock = SCIO_MUTEX_INITIALIZER;
static int spin_ready, wait_spin, lane_spin, await_spin, spin_yield;

static int spin_budget(const char *name, int dflt)
{
    const char *e = getenv(name);
    int v = e ? atoi(e) : dflt;
    return v < 0 ? 0 : v > MAX_SPIN_US ? MAX_SPIN_US : v;
}

static void spin_init(void)
{
    const char *e;
    if (scio_load_acquire(&spin_ready))
        return;
    scio_mutex_lock(&spin_lock);
    if (!spin_ready) {
        wait_spin = spin_budget("SCARDIO_WAIT_SPIN_US", WAIT_SPIN_US);
        lane_spin = spin_budget("SCARDIO_LANE_SPIN_US", LANE_SPIN_US);
        await_spin = spin_budget("SCARDIO_AWAIT_SPIN_US", AWAIT_SPIN_US);
        if ((e = getenv("SCARDIO_SPIN_YIELD")) != NULL)
            spin_yield = atoi(e);
        scio_store_release(&spin_ready, 1);
    }
    scio_mutex_unlock(&spin_lock);
}

/* Whether this thread may run beside another one: its affinity mask has
 * more than one processor.  Asked again every CPU_RECHECK_US, so that a
 * thread pinned (or unpinned) later is seen, without a system call on
 * every wait. */
#define CPU_RECHECK_US 100000
static SCIO_THREAD_LOCAL int64_t cpus_checked_us;
static SCIO_THREAD_LOCAL int cpus_many;

static int many_cpus_here(void)
{
    int64_t now = scio_now_us();
    if (cpus_checked_us == 0 || now - cpus_checked_us >= CPU_RECHECK_US) {
        cpus_many = scio_cpu_count() > 1;
        cpus_checked_us = now;
    }
    return cpus_many;
}

static int spin_here(int budget) { return budget > 0 && many_cpus_here() ? budget : 0; }

static int wait_spin_us(void) { spin_init(); return spin_here(wait_spin); }
static int lane_spin_us(void) { spin_init(); return spin_here(lane_spin); }
static int await_spin_us(void) { spin_init(); return spin_here(await_spin); }
static int await_budget_us(void) { spin_init(); return await_spin; }

/* Spin up to `us` microseconds for *word to move from `seen`; 1 if it did.
 * With a partner: the thread it waits for cannot run while we spin on its
 * processor (the scheduler often puts the two there on a busy machine,
 * affinity mask or not), so stop (0) as soon as it was last seen here
 * (*partner_cpu), and publish where we run (*mine) for its same test;
 * where the processor is not known, yield between bursts instead. */
static int spin_apart(const volatile int *word, int seen, int us,
                      const volatile int *partner_cpu, volatile int *mine)
{
    int64_t end = scio_now_us() + us;
    for (;;) {
        int here = 0;
        if (partner_cpu != NULL) {
            here = scio_current_cpu();
            scio_store_release(mine, here);
            if (here >= 0 && scio_load_acquire(partner_cpu) == here)
                return scio_load_acquire(word) != seen;
        }
        for (int i = 0; i < 32; i++) {
            if (scio_load_acquire(word) != seen)
                return 1;
            scio_cpu_relax();
        }
        if (spin_yield || here < 0)
            scio_yield();
        if (scio_now_us() >= end)
            return scio_load_acquire(word) != seen;
    }
}

/* Spin up to `us` microseconds for *counter to move from `seen`. */
static int spin_change(const volatile int *counter, int seen, int us)
{
    return spin_apart(counter, seen, us, NULL, NULL);
}

/* Spin up to `us` microseconds for *flag to become nonzero; 1 if it did. */
static int spin_for(const volatile int *flag, int us)
{
    if (us <= 0)
        return scio_load_acquire(flag) != 0;
    return spin_change(flag, 0, us);
}

/* ---- operations --------------------------------------------------------- */

static void op_init(scio_op *op, scio_device *d, uint32_t code)
{
    scio_mutex_init(&op->lock);
    scio_cond_init(&op->cv);
    scio_mutex_lock(&id_lock);
    op->id = next_op_id++;
    scio_mutex_unlock(&id_lock);
    op->dev = d;
    op->code = code;
    op->status = SCIO_PENDING;
    op->tracking = is_tracking(code);
}

static void op_unref(scio_op *op)
{
    int last;
    scio_mutex_lock(&op->lock);
    last = --op->refs == 0;
    scio_mutex_unlock(&op->lock);
    if (!last || !op->heap)
        return;
    scio_cond_destroy(&op->cv);
    scio_mutex_destroy(&op->lock);
    if (op->q)
        scio_queue_unref(op->q);
    free(op->in);
    free(op->out);
    free(op);
}

/* Record the result, wake waiters, queue the completion, drop the core's
 * references.  Called exactly once per operation, with no lock held. */
static void op_complete(scio_op *op, scio_status st, size_t out_len, long drv)
{
    scio_device *d = op->dev;
    scio_queue *q = op->q;
    int post, unrun, notify = SCIO_QUEUE_QUIET;

    scio_mutex_lock(&d->lock);
    /* A call that never ran is called once now, to release its context. */
    unrun = op->call != NULL && !op->call_started;
    op->call_started = 1;
    op->where = OP_DONE;
    /* Free the lane before anyone can see the completion, so a waiter
     * that submits the next tracking request at once is not "busy". */
    if (d->track.running == op)
        d->track.running = NULL;
    if (d->io.running == op)
        d->io.running = NULL;
    if (d->native_tracking == op)
        d->native_tracking = NULL;
    if (d->held_tracking == op)
        d->held_tracking = NULL;
    if (st != SCIO_SUCCESS)
        d->last_driver_code = drv;
    scio_mutex_unlock(&d->lock);
    if (unrun)
        op->call(op, op->call_ctx, 0);

    scio_mutex_lock(&op->lock);
    op->status = st;
    op->out_len = st == SCIO_SUCCESS && out_len <= op->out_cap ? out_len : 0;
    op->driver_code = drv;
    scio_store_release(&op->done, 1);
    post = op->post && !op->released;
    /* Queued under the op lock so that a release racing with us either
     * sees the record (and forgets it) or stops it being queued. */
    if (post)
        notify = scio_queue_enqueue(q, op->id, op->user, st);
    op->posted = post;
    /* A heap op's waiter and harvester are woken after the unlock (the
     * core's reference keeps the op, and through it the queue, alive until
     * op_unref): woken under the lock, either would only block again on
     * it, and that round trip doubles a lane hop.  A stack op may be gone
     * once the lock is dropped. */
    if (!op->heap) {
        scio_cond_broadcast(&op->cv);
        scio_queue_notify(q, notify);
    }
    scio_mutex_unlock(&op->lock);

    if (op->heap) {
        scio_cond_broadcast(&op->cv);
        scio_queue_notify(q, notify);
        op_unref(op);
        dev_unref(d);
    }
}

/* The devices whose driver this thread is inside right now, innermost first
 * (frames on the thread's stack).  A driver calling back into the host (a
 * log callback) may close the reader it is serving: close must not wait
 * for the very call it is made from. */

typedef struct call_frame {
    const scio_device *dev;
    struct call_frame *up;
} call_frame;

static SCIO_THREAD_LOCAL call_frame *calls_here;

/* The operation with a deadline whose work this thread is doing (a loop's
 * synchronous steps inherit its deadline), or NULL. */
static SCIO_THREAD_LOCAL const scio_op *bounding_here;

static void call_enter(call_frame *f, const scio_device *d)
{
    f->dev = d;
    f->up = calls_here;
    calls_here = f;
}

static void call_leave(const call_frame *f) { calls_here = f->up; }

static int inside_call_of(const scio_device *d)
{
    for (const call_frame *f = calls_here; f; f = f->up)
        if (f->dev == d)
            return 1;
    return 0;
}

/* A call left the driver (device locked): returns 1 if the caller must now
 * release the channel, because close gave up waiting for this call.
 * Only a shutdown waits for the in-driver count; lanes wait for work.  A
 * broadcast nobody needs would wake the idle lane threads on every
 * synchronous call, so signal only when a shutdown is counted as waiting
 * (counted under the device lock before it waits: no wake-up is lost). */
static int leave_driver_locked(scio_device *d)
{
    d->in_driver--;
    if (d->drain_waiters)
        scio_cond_broadcast(&d->cv);
    if (d->shut_done && d->in_driver == 0 && !d->released && d->be->release) {
        d->released = 1;
        return 1;
    }
    return 0;
}

static int lane_remove_locked(lane *l, scio_op *op);

/* An operation came back from the backend (lane or native submit); the
 * caller holds a reference on it and on the device. */
static void op_returned(scio_op *op, scio_status st, size_t out_len, long drv)
{
    scio_device *d = op->dev;
    int release, abandoned;
    if (st == SCIO_SUCCESS && out_len > op->out_cap)
        st = SCIO_DEVICE_DATA_ERROR; /* a backend bug must not leak memory */
    scio_mutex_lock(&d->lock);
    if (op->native)
        lane_remove_locked(&d->submitted, op);
    abandoned = op->abandoned;
    op->returned = 1; /* close no longer gives up on it */
    scio_mutex_unlock(&d->lock);
    if (!abandoned) /* else close completed it already: drop the late result */
        op_complete(op, st, out_len, drv);
    /* It leaves the driver only once complete, so that a shutdown, which
     * waits for the calls in the driver, returns with every operation the
     * driver gave back done. */
    scio_mutex_lock(&d->lock);
    release = leave_driver_locked(d);
    scio_mutex_unlock(&d->lock);
    if (release)
        d->be->release(d);
}

/* Run one lane operation in the backend, in the calling (lane) thread,
 * which holds a reference on the op. */
static void op_run(scio_op *op)
{
    scio_device *d = op->dev;
    size_t out_len = 0;
    long drv = 0;
    call_frame f;
    scio_status st;
    const scio_op *outer = bounding_here;
    if (op->deadline_us > 0)
        bounding_here = op;
    call_enter(&f, d);
    if (op->call) {
        st = op->call(op, op->call_ctx, 1);
        out_len = op->call_out_len;
    } else
        st = d->be->ioctl(d, op, op->code, op->in, op->in_len,
                          op->out, op->out_cap, &out_len, &drv);
    call_leave(&f);
    bounding_here = outer;
    op_returned(op, st, out_len, drv);
}

void scio_op_complete(scio_op *op, scio_status st, size_t out_len, long drv)
{
    scio_device *d = op->dev;
    op_returned(op, st, out_len, drv);
    /* The driver's references, taken at submit. */
    op_unref(op);
    dev_unref(d);
}

void *scio_op_backend_data(scio_op *op)
{
    return (unsigned char *)op + OP_DATA_OFFSET;
}

int64_t scio_op_deadline_us(const scio_op *op) { return op->deadline_us; }

int scio_op_cancelled(scio_op *op)
{
    int c;
    scio_mutex_lock(&op->dev->lock);
    c = op->cancel;
    scio_mutex_unlock(&op->dev->lock);
    return c;
}

uint64_t scio_op_id(const scio_op *op) { return op->id; }

int scio_op_done(scio_op *op)
{
    int done;
    scio_mutex_lock(&op->lock);
    done = op->done;
    scio_mutex_unlock(&op->lock);
    return done;
}

int scio_op_wait(scio_op *op, int timeout_ms)
{
    int64_t deadline;
    int done;
    if (timeout_ms != 0 && spin_for(&op->done, wait_spin_us()))
        return 1;
    deadline = timeout_ms > 0 ? scio_now_ms() + timeout_ms : 0;
    scio_mutex_lock(&op->lock);
    while (!op->done && timeout_ms != 0) {
        if (timeout_ms < 0)
            scio_cond_wait(&op->cv, &op->lock);
        else if (!scio_cond_wait_until(&op->cv, &op->lock, deadline))
            break;
    }
    done = op->done;
    scio_mutex_unlock(&op->lock);
    return done;
}

int scio_op_await(scio_op *op, int timeout_ms)
{
    /* An awaited op's lane is usually running it already, or spinning for
     * it: spin (bounded, see spin_init) before sleeping. */
    lane *l = &op->dev->io;
    int spin = timeout_ms != 0 && op->awaited && !scio_load_acquire(&l->await_slow)
               ? await_spin_us() : 0;
    if (spin > 0 && spin_apart(&op->done, 0, spin, &l->cpu, &l->waiter_cpu))
        return 1;
    return scio_op_wait(op, timeout_ms);
}

int scio_lane_apart(scio_device *d)
{
    int lane_cpu = scio_load_acquire(&d->io.cpu), here;
    if (await_spin_us() <= 0)
        return 0;
    here = scio_current_cpu();
    return lane_cpu < 0 || here < 0 || lane_cpu != here;
}

scio_status scio_op_status(scio_op *op)
{
    scio_status st;
    scio_mutex_lock(&op->lock);
    st = op->status;
    scio_mutex_unlock(&op->lock);
    return st;
}

const uint8_t *scio_op_output(scio_op *op, size_t *len)
{
    int done;
    scio_mutex_lock(&op->lock);
    done = op->done;
    *len = done ? op->out_len : 0;
    scio_mutex_unlock(&op->lock);
    /* The buffer is only written before `done` is set. */
    return done ? op->out : NULL;
}

long scio_op_driver_code(scio_op *op)
{
    long c;
    scio_mutex_lock(&op->lock);
    c = op->driver_code;
    scio_mutex_unlock(&op->lock);
    return c;
}

/* ---- lanes -------------------------------------------------------------- */

static SCIO_THREAD_FN lane_main(void *arg)
{
    lane *l = arg;
    scio_device *d = l->dev;
    scio_mutex_lock(&d->lock);
    for (;;) {
        scio_op *op = l->head;
        if (op && l->inline_op) {
            /* An awaited op submitted before these runs in its caller. */
            scio_cond_wait(&d->cv, &d->lock);
            continue;
        }
        if (!op) {
            int seen = l->pushes, spin = 0;
            if (d->shut)
                break;
            int awaited = l->after_awaited;
            if (l == &d->io)
                spin = awaited ? await_spin_us() : lane_spin_us();
            /* Spin once per idle stretch, then sleep until the next push. */
            l->after_awaited = 0;
            if (spin > 0) {
                /* Work often follows work at once (a sequence's next step). */
                scio_mutex_unlock(&d->lock);
                if (awaited)
                    spin_apart(&l->pushes, seen, spin, &l->waiter_cpu, &l->cpu);
                else
                    spin_change(&l->pushes, seen, spin);
                scio_mutex_lock(&d->lock);
                if (l->head || d->shut)
                    continue;
            }
            scio_cond_wait(&d->cv, &d->lock);
            continue;
        }
        l->head = op->next;
        if (!l->head)
            l->tail = NULL;
        op->next = NULL;
        if (op->cancel) {
            scio_mutex_unlock(&d->lock);
            op_complete(op, SCIO_CANCELLED, 0, 0);
            scio_mutex_lock(&d->lock);
            continue;
        }
        op->where = OP_RUNNING;
        op->call_started = 1;
        l->running = op;
        l->after_awaited = op->awaited;
        if (l == &d->io)
            scio_store_release(&l->cpu, scio_current_cpu());
        d->in_driver++;
        scio_mutex_unlock(&d->lock);
        /* Our own reference: close may complete (and its owner free) the
         * op while the driver still writes into its buffer. */
        scio_mutex_lock(&op->lock);
        op->refs++;
        scio_mutex_unlock(&op->lock);
        if (op->awaited) {
            int64_t t0 = scio_now_us();
            op_run(op);
            scio_store_release(&l->await_slow, scio_now_us() - t0 > await_budget_us());
        } else {
            op_run(op);
        }
        op_unref(op);
        scio_mutex_lock(&d->lock);
        l->running = NULL;
    }
    l->thread_up = 0;
    scio_cond_broadcast(&d->cv);
    scio_mutex_unlock(&d->lock);
    dev_unref(d);
    SCIO_THREAD_RETURN;
}

static void list_append_locked(lane *l, scio_op *op)
{
    op->next = NULL;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
}

/* Append to a lane, starting its thread if needed (device locked).  The
 * caller wakes the lane with scio_cond_broadcast(&d->cv) once it has
 * unlocked the device, so the lane thread does not wake only to wait for
 * the lock. */
static int lane_push_locked(lane *l, scio_op *op)
{
    if (!l->thread_up) {
        dev_ref_locked(l->dev);
        if (scio_thread_start_detached(lane_main, l) != 0) {
            l->dev->refs--; /* cannot be the last: the caller holds one */
            return -1;
        }
        l->thread_up = 1;
    }
    op->where = OP_QUEUED;
    list_append_locked(l, op);
    scio_store_release(&l->pushes, l->pushes + 1);
    return 0;
}

/* An awaited op with a deadline, on a backend that bounds its own calls
 * (backend.h: can_bound, abort_call), runs in its submitter's thread when
 * nothing is queued or running on the I/O lane and no synchronous call is
 * in the driver: no thread hand-off, and FIFO order with the lane's work
 * kept (the lane waits for it).  Device locked; 1 if the op was taken, and
 * the caller then runs it with run_inline after unlocking. */
static int inline_locked(scio_device *d, scio_op *op, int boundable)
{
    if (!boundable || d->io.head || d->io.running || d->io.inline_op || d->sync_calls)
        return 0;
    op->where = OP_RUNNING;
    op->call_started = 1;
    op->inline_run = 1;
    d->io.inline_op = op;
    d->in_driver++;
    dev_ref_locked(d); /* run_inline's: a close may end once the op is done */
    return 1;
}

static void run_inline(scio_device *d, scio_op *op)
{
    int wake;
    op_run(op); /* completes it: the caller's reference keeps op */
    scio_mutex_lock(&d->lock);
    d->io.inline_op = NULL;
    wake = d->io.head != NULL; /* lane work queued meanwhile waits for us */
    scio_mutex_unlock(&d->lock);
    if (wake)
        scio_cond_broadcast(&d->cv);
    dev_unref(d);
}

/* May an awaited op with this deadline run inline (asked before the device
 * lock is taken: the backend looks at its own state)? */
static int boundable(scio_device *d, int awaited, int64_t deadline_us)
{
    return awaited && deadline_us > 0 && !d->be->submit && d->be->can_bound &&
           d->be->abort_call && d->be->can_bound(d);
}

/* Unlink a queued op from its lane (device locked); 1 if it was queued. */
static int lane_remove_locked(lane *l, scio_op *op)
{
    scio_op *prev = NULL;
    for (scio_op *p = l->head; p; prev = p, p = p->next) {
        if (p != op)
            continue;
        if (prev)
            prev->next = p->next;
        else
            l->head = p->next;
        if (l->tail == p)
            l->tail = prev;
        p->next = NULL;
        return 1;
    }
    return 0;
}

/* ---- submit, cancel ----------------------------------------------------- */

static scio_status check_args(const void *in, size_t in_len, size_t *out_cap)
{
    if (in_len > SCIO_MAX_INPUT)
        return SCIO_INVALID_BUFFER_SIZE;
    if (in_len && !in)
        return SCIO_INVALID_PARAMETER;
    if (*out_cap > SCIO_MAX_OUTPUT)
        *out_cap = SCIO_MAX_OUTPUT;
    return SCIO_SUCCESS;
}

static scio_status submit_ioctl(scio_device *d, scio_queue *q, uint32_t code,
                                const void *in, size_t in_len, size_t out_cap,
                                uint64_t user, int awaited, int64_t deadline_us,
                                scio_op **op_out)
{
    scio_status st = check_args(in, in_len, &out_cap);
    scio_op *op;
    int busy = 0, pushed = 0, ran_inline = 0, native = d->be->submit != NULL;
    int may_inline;
    int native_track = !native && is_tracking(code) && d->be->submit_tracking != NULL;

    *op_out = NULL;
    if (st != SCIO_SUCCESS)
        return st;
    op = calloc(1, OP_DATA_OFFSET + (native ? d->be->op_data_size : 0));
    if (!op)
        return SCIO_NO_MEMORY;
    op->in = malloc(in_len ? in_len : 1);
    op->out = malloc(out_cap ? out_cap : 1);
    if (!op->in || !op->out) {
        free(op->in);
        free(op->out);
        free(op);
        return SCIO_NO_MEMORY;
    }
    if (in_len)
        memcpy(op->in, in, in_len);
    op->in_len = in_len;
    op->out_cap = out_cap;
    op->user = user;
    op->heap = 1;
    op->post = !awaited; /* an awaited op's waiter waits on the op itself */
    op->awaited = awaited;
    if (awaited)
        scio_store_release(&d->io.waiter_cpu, scio_current_cpu());
    op->refs = 2; /* caller + core */
    op_init(op, d, code);
    op->q = q ? q : d->q;
    op->deadline_us = deadline_us;
    scio_queue_ref(op->q);
    may_inline = !op->tracking && boundable(d, awaited, deadline_us);

    scio_mutex_lock(&d->lock);
    if (d->shut) {
        scio_mutex_unlock(&d->lock);
        op->refs = 1;
        op->dev = d;
        op_unref(op);
        return SCIO_DEVICE_NOT_CONNECTED;
    }
    dev_ref_locked(d);
    if (native) {
        /* In the driver until scio_op_complete, which drops the driver's
         * references on the op and the device. */
        op->native = 1;
        op->where = OP_RUNNING;
        op->refs++;
        dev_ref_locked(d);
        d->in_driver++;
        list_append_locked(&d->submitted, op);
    } else if (op->tracking) {
        busy = tracking_pending_locked(d);
        if (busy) {
            native_track = 0;
        } else if (native_track) {
            /* As a native submit: in the driver until scio_op_complete. */
            op->native = 1;
            op->where = OP_RUNNING;
            op->refs++;
            dev_ref_locked(d);
            d->in_driver++;
            list_append_locked(&d->submitted, op);
            d->native_tracking = op;
        } else if (lane_push_locked(&d->track, op) != 0) {
            st = SCIO_INSUFFICIENT_RESOURCES;
        } else {
            pushed = 1;
        }
    } else if (inline_locked(d, op, may_inline)) {
        ran_inline = 1;
    } else if (lane_push_locked(&d->io, op) != 0) {
        st = SCIO_INSUFFICIENT_RESOURCES;
    } else {
        pushed = 1;
    }
    scio_mutex_unlock(&d->lock);
    if (pushed)
        scio_cond_broadcast(&d->cv); /* the caller's reference keeps d alive */

    *op_out = op;
    if (ran_inline)
        run_inline(d, op);
    else if (native)
        d->be->submit(d, op, code, op->in, in_len, op->out, out_cap);
    else if (native_track)
        d->be->submit_tracking(d, op, code);
    else if (busy)
        op_complete(op, SCIO_DEVICE_BUSY, 0, 0);
    else if (st != SCIO_SUCCESS)
        op_complete(op, st, 0, 0);
    return SCIO_SUCCESS;
}

scio_status scio_submit(scio_device *d, uint32_t code,
                        const void *in, size_t in_len, size_t out_cap,
                        uint64_t user, scio_op **op_out)
{
    return submit_ioctl(d, NULL, code, in, in_len, out_cap, user, 0, 0, op_out);
}

scio_status scio_submit_to(scio_device *d, scio_queue *q, uint32_t code,
                           const void *in, size_t in_len, size_t out_cap,
                           uint64_t user, scio_op **op_out)
{
    if (!q) {
        *op_out = NULL;
        return SCIO_INVALID_PARAMETER;
    }
    return submit_ioctl(d, q, code, in, in_len, out_cap, user, 0, 0, op_out);
}

scio_status scio_submit_awaited(scio_device *d, uint32_t code,
                                const void *in, size_t in_len, size_t out_cap,
                                scio_op **op_out)
{
    return submit_ioctl(d, NULL, code, in, in_len, out_cap, 0, 1, 0, op_out);
}

scio_status scio_submit_awaited_for(scio_device *d, uint32_t code,
                                    const void *in, size_t in_len, size_t out_cap,
                                    int64_t timeout_us, scio_op **op_out)
{
    return submit_ioctl(d, NULL, code, in, in_len, out_cap, 0, 1,
                        timeout_us > 0 ? scio_now_us() + timeout_us : 0, op_out);
}

/* A call operation on the I/O lane.  `out_size` bytes of output, which
 * `init` (if any) fills before the lane can see the op and which returns
 * the op's deadline (0: none); awaited as in
 * submit_ioctl, and a call that is not awaited completes into the queue
 * only when `post` asks (scio_submit_call's waiter waits on the op). */
static scio_status submit_call(scio_device *d, scio_call_fn fn, void *ctx, uint64_t user,
                               int awaited, int post, size_t out_size,
                               int64_t (*init)(void *out, const void *arg), const void *arg,
                               scio_op **op_out)
{
    scio_status st = SCIO_SUCCESS;
    scio_op *op;
    int ran_inline = 0, may_inline;

    *op_out = NULL;
    if (!fn)
        return SCIO_INVALID_PARAMETER;
    op = calloc(1, OP_DATA_OFFSET); /* never natively submitted: no backend data */
    if (!op)
        return SCIO_NO_MEMORY;
    op->in = malloc(1);
    op->out = malloc(out_size ? out_size : 1);
    if (!op->in || !op->out) {
        free(op->in);
        free(op->out);
        free(op);
        return SCIO_NO_MEMORY;
    }
    if (init)
        op->deadline_us = init(op->out, arg);
    op->out_cap = op->call_out_len = out_size;
    op->user = user;
    op->heap = 1;
    op->post = post && !awaited;
    op->awaited = awaited;
    if (awaited)
        scio_store_release(&d->io.waiter_cpu, scio_current_cpu());
    op->refs = 2; /* caller + core */
    op_init(op, d, 0);
    op->call = fn;
    op->call_ctx = ctx;
    op->q = d->q;
    scio_queue_ref(op->q);
    may_inline = boundable(d, awaited, op->deadline_us);

    scio_mutex_lock(&d->lock);
    if (d->shut) {
        scio_mutex_unlock(&d->lock);
        op->refs = 1;
        op_unref(op);
        return SCIO_DEVICE_NOT_CONNECTED;
    }
    dev_ref_locked(d);
    if (inline_locked(d, op, may_inline))
        ran_inline = 1;
    else if (lane_push_locked(&d->io, op) != 0)
        st = SCIO_INSUFFICIENT_RESOURCES;
    scio_mutex_unlock(&d->lock);
    if (st == SCIO_SUCCESS && !ran_inline)
        scio_cond_broadcast(&d->cv); /* the caller's reference keeps d alive */

    *op_out = op;
    if (ran_inline)
        run_inline(d, op);
    else if (st != SCIO_SUCCESS)
        op_complete(op, st, 0, 0);
    return SCIO_SUCCESS;
}

scio_status scio_submit_call(scio_device *d, scio_call_fn fn, void *ctx,
                             uint64_t user, scio_op **op_out)
{
    return submit_call(d, fn, ctx, user, 0, 0, 0, NULL, NULL, op_out);
}

/* ---- the loops on the lane ------------------------------------------------ */

static scio_status loop_call(scio_op *op, void *ctx, int run)
{
    (void)ctx;
    if (run)
        scio_loop_run(op->dev, (scio_loop *)(void *)op->out, op);
    return SCIO_SUCCESS;
}

/* The inputs only: the loop writes the rest.  Returns its deadline. */
static int64_t loop_init(void *out, const void *arg)
{
    scio_loop *c = out;
    const scio_loop *in = arg;
    memset(c, 0, sizeof *c);
    c->kind = in->kind;
    c->protocols = in->protocols;
    c->max_steps = in->max_steps;
    c->timeout_us = in->timeout_us;
    c->deadline = in->timeout_us > 0 ? scio_now_us() + in->timeout_us : 0;
    return c->deadline;
}

scio_status scio_submit_loop(scio_device *d, const scio_loop *in,
                             int awaited, uint64_t user, scio_op **op_out)
{
    *op_out = NULL;
    if (!in)
        return SCIO_INVALID_PARAMETER;
    return submit_call(d, loop_call, NULL, user, awaited, 1, sizeof(scio_loop),
                       loop_init, in, op_out);
}

uint32_t scio_loop_ioctl(scio_op *op)
{
    if (op->call != loop_call)
        return 0;
    return (uint32_t)scio_load_acquire(&((scio_loop *)(void *)op->out)->current);
}

/* Cancel with the device locked; returns 1 if the op was dequeued (and the
 * caller must complete it with CANCELLED after unlocking). */
static int cancel_locked(scio_device *d, scio_op *op)
{
    if (op->where == OP_DONE)
        return 0;
    op->cancel = 1;
    if (op->where == OP_QUEUED && op->set)
        return 1; /* parked in its set: no wait is using it */
    if (op->where == OP_QUEUED &&
        lane_remove_locked(op->tracking ? &d->track : &d->io, op))
        return 1;
    return 0;
}

/* The driver's stop function is a driver call like any other: counted, so
 * that close waits for it (bounded) and never releases the channel under
 * it, and skipped once the channel is gone. */
static void wake_tracking_counted(scio_device *d)
{
    int release;
    scio_mutex_lock(&d->lock);
    if (d->released) {
        scio_mutex_unlock(&d->lock);
        return;
    }
    d->in_driver++;
    scio_mutex_unlock(&d->lock);
    d->be->wake_tracking(d);
    scio_mutex_lock(&d->lock);
    release = leave_driver_locked(d);
    scio_mutex_unlock(&d->lock);
    if (release)
        d->be->release(d);
}

/* Wakes a running tracking request on a core thread (holding a device
 * reference): for scio_op_release, which must never block or run the
 * driver's stop function in its caller (a deallocator, a garbage collector,
 * with an interpreter lock held). */
static SCIO_THREAD_FN wake_main(void *arg)
{
    scio_device *d = arg;
    wake_tracking_counted(d);
    dev_unref(d);
    SCIO_THREAD_RETURN;
}

/* Wakes a tracking set's wait on a core thread (holding a set reference),
 * as wake_main does for a device. */
static SCIO_THREAD_FN set_wake_main(void *arg)
{
    scio_track_set *set = arg;
    scio_track_set_wake(set);
    scio_track_set_unref(set);
    SCIO_THREAD_RETURN;
}

static void op_cancel(scio_op *op, int defer_wake)
{
    scio_device *d;
    scio_track_set *set = NULL;
    int dequeued, wake;

    scio_mutex_lock(&op->lock);
    if (op->done) {
        scio_mutex_unlock(&op->lock);
        return;
    }
    d = op->dev;
    scio_mutex_lock(&d->lock);
    dev_ref_locked(d); /* op_complete may drop the op's reference meanwhile */
    dequeued = cancel_locked(d, op);
    wake = !dequeued && !op->native && !op->set && op->tracking && op->where == OP_RUNNING;
    if (!dequeued && op->set && op->where == OP_RUNNING) {
        set = op->set; /* in its set's wait: wake it, which then ends it */
        scio_track_set_ref(set);
    }
    if (op->native && op->where == OP_RUNNING && !d->released)
        d->be->cancel(d, op);
    if (op->inline_run && op->where == OP_RUNNING && !d->released)
        d->be->abort_call(d);
    scio_mutex_unlock(&d->lock);
    scio_mutex_unlock(&op->lock);
    if (set) {
        if (!defer_wake || scio_thread_start_detached(set_wake_main, set) != 0) {
            scio_track_set_wake(set);
            scio_track_set_unref(set);
        }
    }
    if (dequeued) {
        op_complete(op, SCIO_CANCELLED, 0, 0);
    } else if (wake && d->be->wake_tracking) {
        /* The thread takes over our device reference. */
        if (defer_wake && scio_thread_start_detached(wake_main, d) == 0)
            return;
        wake_tracking_counted(d);
    }
    dev_unref(d);
}

void scio_op_cancel(scio_op *op) { op_cancel(op, 0); }

void scio_op_release(scio_op *op)
{
    int pending;
    if (!op)
        return;
    scio_mutex_lock(&op->lock);
    op->released = 1;
    pending = !op->done;
    if (op->posted) {
        /* Nobody will pop it now: do not let unread records pile up. */
        scio_queue_forget(op->q, op->id);
        op->posted = 0;
    }
    scio_mutex_unlock(&op->lock);
    if (pending)
        op_cancel(op, 1);
    op_unref(op);
}

/* Cancel everything queued or running; returns with the device unlocked. */
static void cancel_everything(scio_device *d, int shut)
{
    scio_op *dead = NULL;
    scio_track_set *wake_set = NULL;
    int wake = 0;
    scio_mutex_lock(&d->lock);
    if (shut)
        d->shut = 1;
    /* A sliced tracking wait between two slices is not in sync_tracking:
     * its next slice sees the count move (scio_track_slice). */
    if (++d->cancels == 0)
        d->cancels = 1;
    lane *lanes[2] = { &d->io, &d->track };
    for (int i = 0; i < 2; i++) {
        lane *l = lanes[i];
        scio_op *op;
        while ((op = l->head) != NULL) {
            lane_remove_locked(l, op);
            op->cancel = 1;
            op->next = dead;
            dead = op;
        }
        if (l->running)
            l->running->cancel = 1;
    }
    if (d->io.inline_op) {
        d->io.inline_op->cancel = 1;
        if (!d->released)
            d->be->abort_call(d);
    }
    if (d->track.running)
        wake = 1;
    if (d->held_tracking && d->held_tracking->where != OP_DONE) {
        scio_op *op = d->held_tracking;
        op->cancel = 1;
        if (op->where == OP_QUEUED) {
            op->next = dead;
            dead = op;
        } else if (!wake_set) {
            wake_set = op->set;
            scio_track_set_ref(wake_set);
        }
    }
    if (d->sync_tracking) {
        d->sync_tracking->cancel = 1;
        wake = 1;
    }
    for (scio_op *op = d->submitted.head; op; op = op->next) {
        op->cancel = 1;
        if (!shut && !d->released)
            d->be->cancel(d, op);
    }
    if (shut && d->be->cancel && !d->released)
        d->be->cancel(d, NULL); /* synchronous calls too */
    scio_cond_broadcast(&d->cv);
    scio_mutex_unlock(&d->lock);
    while (dead) {
        scio_op *next = dead->next;
        dead->next = NULL;
        op_complete(dead, SCIO_CANCELLED, 0, 0);
        dead = next;
    }
    if (wake && d->be->wake_tracking)
        d->be->wake_tracking(d);
    if (wake_set) {
        scio_track_set_wake(wake_set);
        scio_track_set_unref(wake_set);
    }
}

void scio_cancel_all(scio_device *d) { cancel_everything(d, 0); }

/* ---- synchronous calls -------------------------------------------------- */

/* Run a synchronous request its caller has entered (in_driver counted, and
 * sync_tracking or sync_calls taken, device unlocked) in the driver, and
 * leave: the request's status. */
static scio_status run_sync(scio_device *d, scio_op *op, const void *in, size_t in_len,
                            void *out, size_t out_cap, size_t *n)
{
    call_frame f;
    scio_status st;
    long drv = 0;
    int release;

    call_enter(&f, d);
    st = d->be->ioctl(d, op, op->code, in, in_len, out, out_cap, n, &drv);
    call_leave(&f);
    if (st == SCIO_SUCCESS && *n > out_cap)
        st = SCIO_DEVICE_DATA_ERROR; /* a backend bug must not leak memory */

    scio_mutex_lock(&d->lock);
    release = leave_driver_locked(d);
    if (op->tracking)
        d->sync_tracking = NULL;
    else
        d->sync_calls--;
    if (st != SCIO_SUCCESS)
        d->last_driver_code = drv;
    scio_mutex_unlock(&d->lock);
    if (release)
        d->be->release(d);
    return st;
}

scio_status scio_ioctl(scio_device *d, uint32_t code,
                       const void *in, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len)
{
    scio_op op;
    scio_status st;
    size_t n = 0;

    if (out_len)
        *out_len = 0;
    if ((st = check_args(in, in_len, &out_cap)) != SCIO_SUCCESS)
        return st;
    if (out_cap && !out)
        return SCIO_INVALID_PARAMETER;
    /* The fast path: a stack operation that only the backend (through
     * scio_op_cancelled) and cancellation (under the device lock) see, so it
     * needs no lock, condition or id of its own; the output goes straight
     * into the caller's buffer. */
    memset(&op, 0, sizeof op);
    op.dev = d;
    op.code = code;
    /* The one-tracking-request rule is the lanes'; a backend with native
     * submit leaves it to its driver. */
    op.tracking = is_tracking(code) && !d->be->submit;
    op.where = OP_RUNNING;
    /* A step of an operation with a deadline (a loop) shares its deadline. */
    if (bounding_here && bounding_here->dev == d)
        op.deadline_us = bounding_here->deadline_us;

    scio_mutex_lock(&d->lock);
    if (d->shut) {
        scio_mutex_unlock(&d->lock);
        return SCIO_DEVICE_NOT_CONNECTED;
    }
    if (op.tracking) {
        if (tracking_pending_locked(d)) {
            scio_mutex_unlock(&d->lock);
            return SCIO_DEVICE_BUSY;
        }
        d->sync_tracking = &op;
    } else {
        d->sync_calls++;
    }
    d->in_driver++;
    scio_mutex_unlock(&d->lock);

    st = run_sync(d, &op, in, in_len, out, out_cap, &n);
    if (out_len && st == SCIO_SUCCESS)
        *out_len = n;
    return st;
}

scio_status scio_track_slice(scio_device *d, uint32_t code, int64_t timeout_us,
                             unsigned *wait)
{
    const scio_backend *be = d->be;
    scio_op op;
    size_t n = 0;

    if (!is_tracking(code) || timeout_us <= 0 || !wait)
        return SCIO_INVALID_PARAMETER;
    /* As scio_ioctl's tracking request (sync_tracking: the one-request
     * rule, cancel and close wake it), with the slice's deadline. */
    memset(&op, 0, sizeof op);
    op.dev = d;
    op.code = code;
    op.tracking = 1;
    op.where = OP_RUNNING;
    op.deadline_us = scio_now_us() + timeout_us;

    scio_mutex_lock(&d->lock);
    if (*wait && *wait != d->cancels) {
        scio_mutex_unlock(&d->lock);
        return SCIO_CANCELLED;
    }
    if (d->shut) {
        scio_mutex_unlock(&d->lock);
        return SCIO_DEVICE_NOT_CONNECTED;
    }
    /* Asked after the cancel count: a wait cancelled between two slices
     * must not go on, on the lane, because the cancel cut its context. */
    if (be->submit || !be->wake_tracking || !be->can_bound_tracking ||
        !be->can_bound_tracking(d)) {
        scio_mutex_unlock(&d->lock);
        return SCIO_NOT_SUPPORTED;
    }
    if (tracking_pending_locked(d)) {
        scio_mutex_unlock(&d->lock);
        return SCIO_DEVICE_BUSY;
    }
    *wait = d->cancels;
    d->sync_tracking = &op;
    d->in_driver++;
    scio_mutex_unlock(&d->lock);

    return run_sync(d, &op, NULL, 0, NULL, 0, &n);
}

/* ---- shutdown ------------------------------------------------------------ */

/* Releasing the channel calls the driver too (power-down, close channel),
 * and a hung driver must not hang close: it runs on its own thread. */
static SCIO_THREAD_FN release_main(void *arg)
{
    scio_device *d = arg;
    d->be->release(d);
    scio_mutex_lock(&d->lock);
    d->release_done = 1;
    scio_cond_broadcast(&d->cv);
    scio_mutex_unlock(&d->lock);
    dev_unref(d);
    SCIO_THREAD_RETURN;
}

void scio_shutdown(scio_device *d)
{
    int64_t deadline;
    int clean;

    scio_mutex_lock(&d->lock);
    if (d->shut) {
        /* Another caller is shutting down: wait until it is done. */
        while (!d->shut_done)
            scio_cond_wait(&d->cv, &d->lock);
        scio_mutex_unlock(&d->lock);
        return;
    }
    scio_mutex_unlock(&d->lock);
    cancel_everything(d, 1);

    /* From inside a call of this device (a driver's log callback): that call
     * cannot end while we wait, so give up on what is in the driver at once;
     * the channel is released when the last call leaves. */
    deadline = scio_now_ms() + (inside_call_of(d) ? 0 : d->close_timeout_ms);
    scio_mutex_lock(&d->lock);
    for (;;) {
        clean = d->in_driver == 0 && !d->io.thread_up && !d->track.thread_up;
        if (clean || scio_now_ms() >= deadline)
            break;
        /* A driver's stop function can miss a poll that was just starting:
         * repeat the wake-up while waiting. */
        if (d->track.running || d->sync_tracking) {
            scio_mutex_unlock(&d->lock);
            if (d->be->wake_tracking)
                d->be->wake_tracking(d);
            scio_mutex_lock(&d->lock);
        }
        if (d->held_tracking && d->held_tracking->where == OP_RUNNING) {
            scio_track_set *set = d->held_tracking->set;
            scio_track_set_ref(set);
            scio_mutex_unlock(&d->lock);
            scio_track_set_wake(set);
            scio_track_set_unref(set);
            scio_mutex_lock(&d->lock);
        }
        /* Likewise a request a racing submit issued after the cancel, and
         * an inline call that armed its bound after the abort. */
        if (d->be->cancel && d->in_driver > 0 && !d->released)
            d->be->cancel(d, NULL);
        if (d->io.inline_op && !d->released)
            d->be->abort_call(d);
        /* The wake-up above dropped the lock: a call that left meanwhile
         * found no waiter to signal, so look again before waiting. */
        if (d->in_driver == 0 && !d->io.thread_up && !d->track.thread_up)
            continue;
        int64_t step = scio_now_ms() + 20;
        d->drain_waiters++;
        scio_cond_wait_until(&d->cv, &d->lock, step < deadline ? step : deadline);
        d->drain_waiters--;
    }
    if (!clean) {
        /* Give up on operations stuck in the driver: complete them now so
         * their waiters return; the lane thread drops the late result. */
        scio_op *stuck[3];
        int n = 0;
        lane *lanes[2] = { &d->io, &d->track };
        for (int i = 0; i < 2; i++) {
            scio_op *op = lanes[i]->running;
            if (op && op->where == OP_RUNNING && !op->abandoned && !op->returned) {
                op->abandoned = 1;
                stuck[n++] = op;
            }
        }
        if (d->held_tracking && d->held_tracking->where == OP_RUNNING &&
            !d->held_tracking->abandoned && !d->held_tracking->returned) {
            d->held_tracking->abandoned = 1; /* its set's wait drops the late result */
            stuck[n++] = d->held_tracking;
        }
        scio_mutex_unlock(&d->lock);
        for (int i = 0; i < n; i++)
            op_complete(stuck[i], SCIO_CANCELLED, 0, 0);
        /* Natively submitted ones too; the driver's references keep them
         * (and their buffers) alive until the backend gives them back. */
        for (;;) {
            scio_op *op;
            scio_mutex_lock(&d->lock);
            for (op = d->submitted.head; op && op->abandoned; op = op->next) {
            }
            if (op)
                op->abandoned = 1;
            scio_mutex_unlock(&d->lock);
            if (!op)
                break;
            op_complete(op, SCIO_CANCELLED, 0, 0);
        }
        scio_mutex_lock(&d->lock);
    }
    if (d->in_driver == 0 && !d->released && d->be->release) {
        /* Nothing is inside the driver (lane threads that are still
         * unwinding no longer call it), so the channel can go now. */
        d->released = 1;
        dev_ref_locked(d);
        if (scio_thread_start_detached(release_main, d) != 0) {
            d->refs--; /* not the last: the caller holds one */
            scio_mutex_unlock(&d->lock);
            d->be->release(d);
            scio_mutex_lock(&d->lock);
            d->release_done = 1;
        }
        while (!d->release_done &&
               scio_cond_wait_until(&d->cv, &d->lock, deadline)) {
        }
    }
    d->shut_done = 1;
    scio_cond_broadcast(&d->cv);
    scio_mutex_unlock(&d->lock);
}

void scio_close(scio_device *d)
{
    if (!d)
        return;
    scio_shutdown(d);
    dev_unref(d);
}

/* ---- tracking requests held by a tracking set (track_set.c) -------------- */

const scio_backend *scio_device_backend(const scio_device *d) { return d->be; }

uint64_t scio_op_user(const scio_op *op) { return op->user; }

void scio_op_drop(scio_op *op) { op_unref(op); }

scio_status scio_held_submit(scio_device *d, scio_track_set *set, uint32_t code,
                             uint64_t user, scio_op **op_out)
{
    scio_op *op;
    int busy;
    *op_out = NULL;
    if (!is_tracking(code))
        return SCIO_INVALID_PARAMETER;
    op = calloc(1, OP_DATA_OFFSET);
    if (!op)
        return SCIO_NO_MEMORY;
    op->in = malloc(1);
    op->out = malloc(1);
    if (!op->in || !op->out) {
        free(op->in);
        free(op->out);
        free(op);
        return SCIO_NO_MEMORY;
    }
    op->heap = 1;
    op->user = user;
    op->refs = 3; /* caller + core + the set */
    op_init(op, d, code);
    op->q = d->q; /* posts nothing: the set's wait reports it */
    scio_queue_ref(op->q);
    op->set = set;
    scio_mutex_lock(&d->lock);
    if (d->shut) {
        scio_mutex_unlock(&d->lock);
        op->refs = 1;
        op_unref(op);
        return SCIO_DEVICE_NOT_CONNECTED;
    }
    dev_ref_locked(d); /* the core's, until it completes */
    busy = tracking_pending_locked(d);
    if (!busy) {
        d->held_tracking = op;
        op->where = OP_QUEUED;
    }
    scio_mutex_unlock(&d->lock);
    *op_out = op;
    if (busy)
        op_complete(op, SCIO_DEVICE_BUSY, 0, 0);
    return SCIO_SUCCESS;
}

int scio_held_enter(scio_op *op)
{
    scio_device *d;
    int completing;
    scio_mutex_lock(&op->lock);
    if (op->done) {
        scio_mutex_unlock(&op->lock);
        return 0;
    }
    d = op->dev; /* alive: the core's reference goes only once it is done */
    scio_mutex_lock(&d->lock);
    completing = op->where != OP_QUEUED || op->cancel;
    if (!completing) {
        op->where = OP_RUNNING;
        d->in_driver++;
        dev_ref_locked(d); /* the wait's own, until scio_held_leave */
    }
    scio_mutex_unlock(&d->lock);
    scio_mutex_unlock(&op->lock);
    if (!completing)
        return 1;
    /* A cancel or close is completing it right now (nothing blocks there). */
    scio_op_wait(op, -1);
    return 0;
}

void scio_held_leave(scio_op *op, int done, scio_status st, long drv)
{
    scio_device *d = op->dev;
    int ends, release = 0;
    scio_mutex_lock(&d->lock);
    /* Cancelled while the wait had it (the cancel woke the wait), or given
     * up on by a close that timed out: it ends now. */
    ends = done || op->cancel || op->abandoned;
    if (!ends) {
        op->where = OP_QUEUED;
        release = leave_driver_locked(d);
    }
    scio_mutex_unlock(&d->lock);
    if (ends)
        op_returned(op, done ? st : SCIO_CANCELLED, 0, done ? drv : 0);
    else if (release)
        d->be->release(d);
    dev_unref(d);
}
