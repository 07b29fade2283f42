"""What a backend checks before it simulates anything: that the files it will write can be written.

A waveform that cannot be written is its own error, raised before anything is built or run, not
a failed run at its end.
"""

import errno
import os
import stat

__all__ = ["check_output_file", "check_output_dir"]

#: What the message calls each kind of file that is not a regular one.
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a block device"))


def check_output_file(path):
    """Make sure `path` can be written now, so a run does not fail at its end because of it.

    The one rule for every output of every command: an output is a regular file. An existing
    one is opened for appending and left as it is; a missing one is created and removed again
    (the only honest test of a directory's permissions, also for root and on read-only mounts).
    Anything else is refused without being opened: opening a FIFO blocks until a reader comes
    (and the probe's close would end that reader's input), and the writers behind ``--vcd`` and
    ``--json`` expect a file they can finish at the end of a run.

    Raises
    ------
    OSError
        With the errno of the failure (``ENOENT`` for a missing directory, ``EISDIR``,
        ``EACCES``, ``EROFS``, ``EINVAL`` for a FIFO, socket or device, ...) and `path` as its
        filename.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
        raise OSError(errno.EINVAL, f"is {kind}: an output must be a regular file", path)
    try:
        if mode is None:
            # O_EXCL: a dangling symbolic link is not followed to make its target.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            os.unlink(path)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None


def check_output_dir(path):
    """Make the folder `path` now (like ``mkdir -p``) and make sure a file can be written in it,
    so a run that writes its results there does not fail at its end because of it.

    Raises
    ------
    OSError
        With the errno of the failure (``ENOTDIR``, ``EACCES``, ``EROFS``, ...) and the path
        that failed as its filename.
    """
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    check_output_file(os.path.join(path, ".vmshm-write-check"))
