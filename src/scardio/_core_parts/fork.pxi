# The core's fork generation (scio_fork_generation) is bumped in the child
# of every fork() that runs the C library's fork handlers, os.fork() and a
# fork() made from C alike: a device (and its operations) opened in another
# generation belongs to the parent, whose lane threads and driver state the
# child does not have.  A global read, so the check costs no more than a
# module variable did.
if scio_watch_forks() != 0:
    raise MemoryError("cannot install the fork handler (pthread_atfork)")


cdef object _inherited_error(str what):
    return _errors.InvalidStateError(
        f"{what} was opened in the parent process and cannot be used after fork(); "
        f"open readers again in the child")

