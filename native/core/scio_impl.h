/*
 * scio_impl.h - lets two implementations of scio.h live in one Windows build.
 *
 * On Windows the core offers two kinds of device: Windows device paths
 * (native/win32/scio_win32.c, DeviceIoControl + IOCP) and IFD-handler DLLs
 * (the generic device layer native/core + native/ifd).  Each implementation
 * keeps its own scio_device / scio_op / scio_queue structures, and
 * native/win32/dispatch.c implements the public names by looking at a tag,
 * the first member (an int) of every one of these structures.
 *
 * Include this header before scio.h in every source of an implementation.
 * SCIO_IMPL_WIN32, defined before the include, selects the scio_w32_ prefix
 * (scio_win32.c); otherwise the generic layer's scio_gen_ prefix applies.
 * The dispatcher defines SCIO_IMPL_DISPATCH and gets no renaming, only the
 * prototypes of both sets.
 *
 * Elsewhere (POSIX) there is one implementation: nothing is renamed, the
 * structures carry no tag and there is no dispatcher.
 */
#ifndef SCIO_IMPL_H
#define SCIO_IMPL_H

#ifdef _WIN32
#define SCIO_DISPATCH 1
#endif

/* Tags (first int of every device, operation and queue).  Arbitrary
 * values, unlikely to be found in freed or foreign memory. */
#define SCIO_KIND_GENERIC 0x53474E31 /* "SGN1" */
#define SCIO_KIND_WIN32   0x53573332 /* "SW32" */

#ifdef SCIO_DISPATCH
/* Put first in struct scio_device, struct scio_op and struct scio_queue. */
#define SCIO_KIND_FIELD int kind;
#define SCIO_SET_KIND(obj, k) ((obj)->kind = (k))
#else
#define SCIO_KIND_FIELD
#define SCIO_SET_KIND(obj, k) ((void)0)
#endif

#if defined(SCIO_DISPATCH) && !defined(SCIO_IMPL_DISPATCH)
#ifdef SCIO_IMPL_WIN32
#define SCIO_RENAME(name) scio_w32_##name
#else
#define SCIO_RENAME(name) scio_gen_##name
#endif
#define scio_queue_new          SCIO_RENAME(queue_new)
#define scio_queue_fd           SCIO_RENAME(queue_fd)
#define scio_queue_handle       SCIO_RENAME(queue_handle)
#define scio_queue_pop          SCIO_RENAME(queue_pop)
#define scio_queue_wake         SCIO_RENAME(queue_wake)
#define scio_queue_pending      SCIO_RENAME(queue_pending)
#define scio_queue_free         SCIO_RENAME(queue_free)
#define scio_open_ifd           SCIO_RENAME(open_ifd)
#define scio_open_win32         SCIO_RENAME(open_win32)
#define scio_device_queue       SCIO_RENAME(device_queue)
#define scio_ioctl              SCIO_RENAME(ioctl)
#define scio_device_driver_code SCIO_RENAME(device_driver_code)
#define scio_shutdown           SCIO_RENAME(shutdown)
#define scio_close              SCIO_RENAME(close)
#define scio_submit             SCIO_RENAME(submit)
#define scio_op_id              SCIO_RENAME(op_id)
#define scio_op_done            SCIO_RENAME(op_done)
#define scio_op_wait            SCIO_RENAME(op_wait)
#define scio_op_status          SCIO_RENAME(op_status)
#define scio_op_output          SCIO_RENAME(op_output)
#define scio_op_driver_code     SCIO_RENAME(op_driver_code)
#define scio_op_cancel          SCIO_RENAME(op_cancel)
#define scio_op_release         SCIO_RENAME(op_release)
#define scio_cancel_all         SCIO_RENAME(cancel_all)
/* Not renamed: scio_status_name (status.c) and scio_set_log (ifd_log.c)
 * are shared by both implementations. */
#endif

#endif /* SCIO_IMPL_H */
