cdef object _log_callback = None

cdef void _log_trampoline(int priority, const char *message, void *ctx) noexcept with gil:
    try:
        if _log_callback is not None:
            _log_callback(priority, message.decode("utf-8", "replace"))
    except BaseException:
        pass  # a logging callback must never break a driver call


def set_driver_log(callback):
    """Send drivers' log_msg / log_xxd output to callback(priority, text),
    or drop it (None).  SCARDIO_DRIVER_LOG=1 prints it to stderr too."""
    global _log_callback
    _log_callback = callback
    if callback is None:
        scio_set_log(NULL, NULL)
    else:
        scio_set_log(_log_trampoline, NULL)

