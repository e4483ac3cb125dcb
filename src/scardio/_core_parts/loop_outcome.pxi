cdef object _loop_outcome(const scio_loop *c):
    """Device.run_loop()'s answer, from the loop's record."""
    cdef const scio_loop_step *s
    cdef unsigned i
    cdef unsigned n = c.n if c.n <= SCIO_LOOP_RECORDS else SCIO_LOOP_RECORDS
    cdef unsigned out_len
    if c.complete and c.atr_len <= SCIO_MAX_ATR and c.trail_len <= SCIO_LOOP_TRAIL:
        return (True, PyBytes_FromStringAndSize(<const char *>c.atr, c.atr_len),
                PyBytes_FromStringAndSize(<const char *>c.trail, c.trail_len))
    steps = []
    for i in range(n):
        s = &c.step[i]
        out_len = s.out_len if s.out_len <= SCIO_MAX_ATR else 0
        steps.append((s.code, (<uint32_t>s.in_).to_bytes(4, "little") if s.in_len == 4 else b"",
                      s.status, s.driver_code,
                      PyBytes_FromStringAndSize(<const char *>s.out, out_len)))
    return (False, tuple(steps), None)


cdef int _loop_input(scio_loop *c, object kind, object protocols,
                     object max_steps) except -1:
    """A loop's arguments, each a DWORD, into `c` (no timeout yet)."""
    c.kind = _dword(kind, "kind")
    c.protocols = _dword(protocols, "protocols")
    c.max_steps = _dword(max_steps, "max_steps")
    c.timeout_us = 0
    return 0


def loop_outcome(raw):
    """What run_loop() answers, from the result() of a submit_loop()
    operation (ValueError for anything else)."""
    cdef const unsigned char[:] view = raw
    if view.shape[0] != sizeof(scio_loop):
        raise ValueError(f"not a loop's record: {view.shape[0]} bytes")
    return _loop_outcome(<const scio_loop *>&view[0])

