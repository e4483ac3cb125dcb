# cython: language_level=3, boundscheck=False, wraparound=False
"""Binding over the scardio C core (native/scio.h): Device and Operation.

The GIL is released around every call that can block.  Inputs are read in
place through the buffer protocol; outputs are written straight into the
bytes object that is returned whenever it is large, so no copy is made that
can be avoided.
"""

import os
from operator import index as _index
from time import monotonic as _monotonic

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.exc cimport PyErr_CheckSignals
from cpython.float cimport PyFloat_AsDouble
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from cpython.weakref cimport PyWeakref_NewRef
from libc.math cimport isinf
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy

from ._scio cimport *

from . import errors as _errors

cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject **b, Py_ssize_t newsize) except -1
    ctypedef struct PyThreadState:
        pass
    PyThreadState *PyGILState_GetThisThreadState() nogil
    int PyGILState_Ensure() nogil
    PyThreadState *PyEval_SaveThread() nogil

MAX_INPUT = SCIO_MAX_INPUT
MAX_OUTPUT = SCIO_MAX_OUTPUT
MAX_ATR = SCIO_MAX_ATR
MAX_APDU = SCIO_MAX_APDU
MAX_RESPONSE = SCIO_MAX_RESPONSE
DEFAULT_POLL_MS = SCIO_DEFAULT_POLL_MS
DEFAULT_CLOSE_MS = SCIO_DEFAULT_CLOSE_MS
STATUS_PENDING = SCIO_PENDING
#: The loops Device.run_loop() runs, and the decisions it records in their
#: trails (scio.h).
LOOP_CONNECT = SCIO_LOOP_CONNECT
LOOP_POWER_DOWN = SCIO_LOOP_POWER_DOWN
LOOP_TRAIL = {"ATR": SCIO_TRAIL_ATR, "ATR_PROTOCOL": SCIO_TRAIL_ATR_PROTOCOL,
              "SWALLOW": SCIO_TRAIL_SWALLOW, "COLD_RESET": SCIO_TRAIL_COLD_RESET,
              "WARM_RESET": SCIO_TRAIL_WARM_RESET, "SET_PROTOCOL": SCIO_TRAIL_SET_PROTOCOL,
              "POWER_DOWN": SCIO_TRAIL_POWER_DOWN}
#: LUNs, IOCTL codes, option values: DWORDs (32 bits on every platform).
MAX_DWORD = 0xFFFFFFFF

cdef enum:
    # Outputs up to this size go through a stack buffer and one small copy;
    # larger ones are written into the result bytes object directly.
    SMALL_OUTPUT = 512
    # Waits are sliced so that Ctrl-C is seen while blocked.
    WAIT_SLICE_MS = 100
    # ... those of the PC/SC reader-list watch too, more coarsely: each slice
    # is a round trip to the resource manager (the C side slices as much).
    PCSC_WAIT_SLICE_MS = 1000
    # A tracking wait in the caller's thread off the main thread, where no
    # signal handler runs: a slice a minute (Device.wait_tracking).
    TRACK_SLICE_OFF_MAIN_MS = 60000


# The module's parts, one concept each (paths relative to this file), in an
# order where a cdef class comes before the parts that use it as a type;
# card_base.pxi forward-declares SessionBase, which CardBase and connect.pxi
# use before session_base.pxi defines it.
include "_core_parts/arguments.pxi"
include "_core_parts/waits.pxi"
include "_core_parts/fork.pxi"
include "_core_parts/status.pxi"
include "_core_parts/discovery.pxi"
include "_core_parts/pcsc_watch.pxi"
include "_core_parts/driver_log.pxi"
include "_core_parts/callbacks.pxi"
include "_core_parts/operation.pxi"
include "_core_parts/lane_call.pxi"
include "_core_parts/loop_outcome.pxi"
include "_core_parts/device.pxi"
include "_core_parts/reader_lock.pxi"
include "_core_parts/card_base.pxi"
include "_core_parts/connect.pxi"
# after session_base: a herald tells a SessionBase, the queues run heralds
include "_core_parts/session_base.pxi"
include "_core_parts/herald.pxi"
include "_core_parts/completion_queue.pxi"
include "_core_parts/tracking_set.pxi"
