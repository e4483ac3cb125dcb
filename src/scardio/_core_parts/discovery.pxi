def list_device_paths():
    """Reader device paths the platform offers (Windows: the interface paths
    of GUID_DEVINTERFACE_SMARTCARD_READER; an empty list elsewhere)."""
    cdef size_t needed = 256
    cdef bytes buf
    cdef char *p
    cdef int n = -1
    for _ in range(4):
        buf = PyBytes_FromStringAndSize(NULL, needed)
        p = PyBytes_AS_STRING(buf)
        with nogil:
            n = scio_list_paths(p, needed, &needed)
        if n >= 0:
            return [p.decode("utf-8") for p in buf.split(b"\0")[:n]]
        if n != -1:
            break
    raise _errors.DriverError("listing reader device paths failed")


def list_pcsc_readers():
    """The names of the readers the PC/SC resource manager holds (an empty
    list when it has none).  Raises ResourceManagerNotRunningError when it
    is not running, DriverNotFoundError when no PC/SC client library is
    installed."""
    cdef size_t needed = 1024
    cdef size_t cap
    cdef bytes buf
    cdef char *p
    cdef char errbuf[512]
    cdef scio_status st = SCIO_BUFFER_TOO_SMALL
    for _ in range(4):
        cap = needed
        buf = PyBytes_FromStringAndSize(NULL, cap)
        p = PyBytes_AS_STRING(buf)
        errbuf[0] = 0
        with nogil:
            st = scio_pcsc_list_readers(p, cap, &needed, errbuf, sizeof(errbuf))
        if st == SCIO_SUCCESS:
            names = []
            for name in buf[:needed].split(b"\0"):
                if not name:
                    break
                names.append(name.decode("utf-8", "replace"))
            return names
        if st != SCIO_BUFFER_TOO_SMALL:
            break
    raise _error(st, 0, None, errbuf.decode("utf-8", "replace") or "listing PC/SC readers")

