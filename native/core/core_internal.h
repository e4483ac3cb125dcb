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

#endif /* SCIO_CORE_INTERNAL_H */
