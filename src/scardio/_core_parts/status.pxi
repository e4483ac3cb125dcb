def status_name(status):
    """The core's short name of a status, or None."""
    cdef const char *n = scio_status_name(_dword(status, "status"))
    return None if n == NULL else n.decode("ascii")


_errors.use_status_names(status_name)


cdef object _error(scio_status st, long driver_code, object ioctl, str message=""):
    return _errors.error_for_status(st, message, driver_code=driver_code, ioctl=ioctl)

