cdef extern from "Python.h":
    # Declared without an exception check: the callers look at the value.
    unsigned long long PyLong_AsUnsignedLongLong(object o)
    Py_ssize_t PyLong_AsSsize_t(object o)
    bint PyLong_Check(object o)
    void PyErr_Clear()


cdef inline uint32_t _dword(object value, str name) except? 0xFFFFFFFF:
    """An integer argument that must fit a DWORD: ValueError naming the
    argument and its range otherwise (a non-integer stays a TypeError)."""
    cdef unsigned long long v
    if PyLong_Check(value):
        v = PyLong_AsUnsignedLongLong(value)  # (unsigned)-1 and OverflowError if < 0
        if v <= 0xFFFFFFFFULL:
            return <uint32_t>v
    return _dword_slow(value, name)


cdef uint32_t _dword_slow(object value, str name) except? 0xFFFFFFFF:
    if not PyLong_Check(value):
        return _dword(_index(value), name)  # TypeError unless it has __index__
    PyErr_Clear()
    raise ValueError(f"{name} must be in 0..{MAX_DWORD} (0xFFFFFFFF), got {value!r}")


cdef inline Py_ssize_t _size(object value, str name) except -1:
    """A size argument: ValueError unless 0 <= value <= sys.maxsize."""
    cdef Py_ssize_t n
    if PyLong_Check(value):
        n = PyLong_AsSsize_t(value)  # -1 and OverflowError when too large
        if n >= 0:
            return n
    return _size_slow(value, name)


cdef Py_ssize_t _size_slow(object value, str name) except -1:
    if not PyLong_Check(value):
        return _size(_index(value), name)
    PyErr_Clear()
    raise ValueError(f"{name} must be >= 0 (at most MAX_OUTPUT = {SCIO_MAX_OUTPUT} "
                     f"bytes are used), got {value!r}")


cdef bytes _c_string(object value, str name, bint fs):
    """`value` as the bytes of a C string; ValueError if it holds a NUL,
    which C would silently cut the string at."""
    cdef bytes b = os.fsencode(value) if fs else str(value).encode("utf-8")
    if b"\0" in b:
        raise ValueError(f"{name} must not contain a NUL character, got {value!r}")
    return b

