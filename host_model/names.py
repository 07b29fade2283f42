"""The one rule for shared-memory object names: what the device's host accepts, and why not.

The host answers OPEN with the errno this module gives, and a tool that is about to create an
object for the device (``vmshm demo --create``) asks it first, so that a name the device would
refuse is refused before anything exists.
"""

import errno
import os

from vmshm.abi.regmap import NAME_MAX

__all__ = ["name_problem", "check_name"]


def _show(raw):
    """Return `raw` (bytes) as a quoted string for messages, escaping undecodable bytes."""
    return repr(raw.decode("utf-8", errors="backslashreplace"))


def name_problem(raw):
    """Return ``(errno, reason)`` if the host refuses the object name `raw`, else ``None``.

    Parameters
    ----------
    raw : bytes
        The name, without its terminating NUL.

    Returns
    -------
    tuple or None
        ``EINVAL`` for an empty name, one without a leading ``/``, one with another ``/``, just
        ``/``, ``/.`` or ``/..``, or one holding a NUL; ``ENAMETOOLONG`` for more than
        ``NAME_MAX`` bytes after the ``/``. The reason is one sentence for people.
    """
    if not raw:
        return errno.EINVAL, "the name is empty"
    if b"\0" in raw:
        return errno.EINVAL, f"the name {_show(raw)} holds a NUL byte, which ends a C string"
    if not raw.startswith(b"/"):
        return errno.EINVAL, f"the name {_show(raw)} does not start with '/'"
    if b"/" in raw[1:]:
        return errno.EINVAL, f"the name {_show(raw)} holds a '/' after the leading one"
    if len(raw) == 1:
        return errno.EINVAL, "the name '/' names no object"
    if raw in (b"/.", b"/.."):
        # shm_open refuses them with EINVAL (they name folders): not a host failure (EIO).
        return errno.EINVAL, f"the name {_show(raw)} names no object"
    if len(raw) - 1 > NAME_MAX:
        return errno.ENAMETOOLONG, (f"the name is {len(raw) - 1} bytes long after its '/', "
                                    f"more than NAME_MAX ({NAME_MAX})")
    return None


def check_name(name, name_size=None):
    """Return `name` as bytes if the device can open it, else raise ``OSError`` saying why.

    Parameters
    ----------
    name : str or bytes
        A POSIX shared-memory object name such as ``"/shared-with-qemu"``.
    name_size : int, optional
        Bytes in the device's name buffer: the name and its NUL must fit, or the driver refuses
        it with ``ENAMETOOLONG`` before the device sees it.

    Raises
    ------
    OSError
        With the errno the device or driver would answer (``EINVAL``, ``ENAMETOOLONG``), the
        reason as its message and `name` as its filename.
    TypeError
        If `name` is neither ``str`` nor ``bytes``.
    """
    if not isinstance(name, (str, bytes)):
        raise TypeError(f"a shared-memory object name must be str or bytes, not "
                        f"{type(name).__name__}")
    raw = os.fsencode(name)
    problem = name_problem(raw)
    if problem is None and name_size is not None and len(raw) + 1 > name_size:
        problem = errno.ENAMETOOLONG, (f"the name is {len(raw)} bytes, and with its NUL it "
                                       f"does not fit the device's {name_size}-byte name buffer")
    if problem is not None:
        raise OSError(problem[0], problem[1], os.fsdecode(raw))
    return raw
