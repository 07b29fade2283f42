"""Checks a command makes before it creates or simulates anything: validate, then act.

Each raises what the command reports in one line: ``OSError`` with the errno and the file's
name for an output file that cannot be written, ``ValueError`` for a size out of range.
"""

import errno
import os

__all__ = ["MAX_OBJECT_SIZE", "check_output_file", "check_object_size"]

#: The largest size a POSIX object can have: ``off_t`` is a signed 64-bit number on Linux.
MAX_OBJECT_SIZE = (1 << 63) - 1


def check_output_file(path):
    """Make sure `path` can be written now, so a run does not fail at its end because of it.

    An existing file is left as it is; a missing one is created and removed again (the only
    honest test of a directory's permissions, also for root and on read-only mounts).

    Raises
    ------
    OSError
        With the errno of the failure (``ENOENT`` for a missing directory, ``EISDIR``,
        ``EACCES``, ``EROFS``, ...) and `path` as its filename.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    existed = os.path.lexists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    if not existed:
        os.unlink(path)


def check_object_size(size, what="size"):
    """Return `size` if a shared-memory object can have it, else raise ``ValueError``."""
    if size <= 0:
        raise ValueError(f"{what} must be positive, not {size}")
    if size > MAX_OBJECT_SIZE:
        raise ValueError(f"{what} {size} is too large: an object holds at most "
                         f"{MAX_OBJECT_SIZE} bytes (8 EiB)")
    return size
