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
/* Drop a completion that has not been popped yet (released operation). */
void scio_queue_forget(scio_queue *q, uint64_t op_id);

#endif /* SCIO_CORE_INTERNAL_H */
