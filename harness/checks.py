"""What a backend checks before it simulates anything: that the files it will write can be written.

A waveform that cannot be written is its own error, raised before anything is built or run, not
a failed run at its end.
"""

import errno
import os

__all__ = ["check_output_file"]


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
