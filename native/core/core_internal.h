/*
 * core_internal.h - what the core's own modules (device.c, queue.c) share.
 * Backends include backend.h only.
 */
#ifndef SCIO_CORE_INTERNAL_H
#define SCIO_CORE_INTERNAL_H

#include "backend.h"

void scio_queue_ref(scio_queue *q);
void scio_queue_unref(scio_queue *q);
/* A queue the core made for one device: the device's reference is the only
 * one, so scio_queue_free by anyone else leaves it alone. */
scio_queue *scio_queue_new_private(void);
void scio_queue_post(scio_queue *q, uint64_t op_id, uint64_t user, scio_status st);
/* scio_queue_post in two steps, so that a caller holding a lock of its own
 * wakes a blocked scio_queue_pop only once it dropped it (else the woken
 * thread would block on that lock at once): scio_queue_enqueue queues
 * (the descriptor is made readable under the queue's lock) and answers
 * what scio_queue_notify (no lock held; the queue kept alive by the
 * caller) must do. */
#define SCIO_QUEUE_QUIET  0 /* nothing queued (out of memory) */
#define SCIO_QUEUE_SIGNAL 1 /* wake a blocked pop */
int scio_queue_enqueue(scio_queue *q, uint64_t op_id, uint64_t user, scio_status st);
void scio_queue_notify(scio_queue *q, int how);
/* Drop a completion that has not been popped yet (released operation). */
void scio_queue_forget(scio_queue *q, uint64_t op_id);

/* Tracking requests held by a tracking set (device.c keeps their place in
 * their device, track_set.c the set).  scio_held_submit: a parked request
 * holding the device's tracking slot (or one completed at once with
 * DEVICE_BUSY), with a reference for the set (scio_op_drop).
 * scio_held_enter: 1 when it is now in the set's wait (counted as a call
 * in its driver), 0 when it is done (cancelled or closed meanwhile).
 * scio_held_leave: the wait returned; done says whether it completed the
 * request (with st and drv). */
scio_status scio_held_submit(scio_device *d, scio_track_set *set, uint32_t code,
                             uint64_t user, scio_op **op_out);
int scio_held_enter(scio_op *op);
void scio_held_leave(scio_op *op, int done, scio_status st, long drv);
void scio_op_drop(scio_op *op);
uint64_t scio_op_user(const scio_op *op);
const scio_backend *scio_device_backend(const scio_device *d);
/* A set's references, for those that wake it from another thread. */
void scio_track_set_ref(scio_track_set *s);
void scio_track_set_unref(scio_track_set *s);

#endif /* SCIO_CORE_INTERNAL_H */
