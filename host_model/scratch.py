"""Scratch objects: the ones a test or a scenario run makes for itself, and their leftovers.

A run makes its object under a name that says whose it is, ``/vmshm-WORD-PID-HEX`` (the
process's id, 8 or 10 hex digits), and unlinks it when it ends. A run killed by SIGKILL (a
timeout's) cannot, so :func:`remove_stale` removes such objects whose process is gone. It is
called where scratch objects are made (each scenario run, the test suite's start), so one
killed run's leftovers go with the next run.

The object rule holds: a user's object is never unlinked. Only names of exactly that form are
looked at, only regular files this user owns, and only while no process has the id in the name
(an id a live process has again keeps the object: it is left, never guessed at). Do not give your
own objects names of that form.
"""

import errno
import os
import re
import stat
from uuid import uuid4

__all__ = ["scratch_name", "remove_stale", "SCRATCH_PATTERN", "SHM_DIR"]

#: Where Linux keeps POSIX shared-memory objects.
SHM_DIR = "/dev/shm"

#: A scratch object's name in /dev/shm: the word, the creator's process id, 8 or 10 hex digits.
SCRATCH_PATTERN = re.compile(r"vmshm-(?P<word>.+)-(?P<pid>[0-9]+)-(?:[0-9a-f]{8}|[0-9a-f]{10})")


def scratch_name(word, digits=8):
    """Return a fresh scratch object name, ``/vmshm-WORD-PID-HEX``, for this process."""
    return f"/vmshm-{word}-{os.getpid()}-{uuid4().hex[:digits]}"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True             # someone else's process: alive
    return True


def remove_stale(directory=SHM_DIR):
    """Unlink the scratch objects in `directory` whose creating process is gone.

    Returns
    -------
    list of str
        The names removed (without the leading ``/``).
    """
    removed = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    uid = os.geteuid()
    for entry in entries:
        match = SCRATCH_PATTERN.fullmatch(entry)
        if match is None or _alive(int(match["pid"])):
            continue
        path = os.path.join(directory, entry)
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
                continue
            os.unlink(path)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM):
                raise
            continue            # another run removed it first, or it is not ours to remove
        removed.append(entry)
    return removed
