"""POSIX shared-memory regions: the host side of the VMShm window.

:class:`ShmRegion` opens an object with the C library's ``shm_open`` and serves reads and writes
of all of it. It is deliberately not :class:`multiprocessing.shared_memory.SharedMemory`: on
Python 3.11 that class registers every object it touches with the resource tracker, which unlinks
them when the process exits. A VMShm object belongs to whoever created it and must outlive the
simulator.

Accesses go through ``pread``/``pwrite`` on the object's descriptor, not through a mapping: a
load or store into a mapping raises SIGBUS, which kills the process, whenever the kernel cannot
back the page, and that happens in two ways a host cannot prevent. Another process may shrink the
object past the page (so every access is also checked against the object's current size and
refused with :class:`RegionError`), or the object may be sparse (someone else made it with
``ftruncate`` alone) on a tmpfs that is full, where even *reading* a hole through a mapping needs
a page. ``pwrite`` answers that with ``ENOSPC`` and ``pread`` reads holes as zeros. Objects this
module creates reserve their space up front (``posix_fallocate``), so a full tmpfs is ``ENOSPC``
at creation rather than later.
"""

import ctypes
import errno
import functools
import operator
import os

import _posixshmem

__all__ = ["ShmRegion", "RegionError", "LINK_REFUSED", "check_not_link"]

_CREATE_MODE = 0o600

#: Why a symbolic link in /dev/shm is refused, with ``ELOOP``, whether it is opened or created
#: through: glibc's ``shm_open`` opens with ``O_NOFOLLOW`` (its own word for it is "Too many
#: levels of symbolic links", which says nothing to a user).
LINK_REFUSED = ("is a symbolic link in /dev/shm: shared-memory objects are never opened through "
                "a link (shm_open uses O_NOFOLLOW); name the object itself")

#: The largest size an object can have: Linux's off_t is a signed 64-bit number.
_MAX_SIZE = (1 << 63) - 1


class RegionError(OSError):
    """Signal an access outside a region (errno ``EFAULT``).

    Parameters
    ----------
    message : str
        What was refused and why.
    """

    def __init__(self, message):
        super().__init__(errno.EFAULT, message)


def _fsname(name):
    """Return an object name as ``str``, decoding ``bytes`` with the file-system encoding.

    Parameters
    ----------
    name : str or bytes
        The object's name, such as ``"/shared-with-qemu"``.

    Raises
    ------
    TypeError
        If `name` is neither ``str`` nor ``bytes``.
    ValueError
        If `name` holds a NUL, which no C string can carry.
    """
    if not isinstance(name, (str, bytes)):
        raise TypeError(f"a shared-memory object name must be str or bytes, not "
                        f"{type(name).__name__} ({name!r})")
    name = os.fsdecode(name)
    if "\0" in name:
        raise ValueError(f"a shared-memory object name cannot hold a NUL byte: {name!r}")
    return name


@functools.cache
def _libc():
    """Return ``{name: function}`` for libc's ``shm_open`` and ``shm_unlink``, or ``None``."""
    # glibc >= 2.34 has them in libc itself (dlopen(NULL) finds them); older ones in librt.
    for lib in (None, "librt.so.1"):
        try:
            handle = ctypes.CDLL(lib, use_errno=True)
            shm_open, shm_unlink = handle.shm_open, handle.shm_unlink
        except (OSError, AttributeError):
            continue
        shm_open.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.c_uint)
        shm_open.restype = ctypes.c_int
        shm_unlink.argtypes = (ctypes.c_char_p,)
        shm_unlink.restype = ctypes.c_int
        return {"shm_open": shm_open, "shm_unlink": shm_unlink}
    return None


def _libc_call(which, name, *args):
    """Call libc's `which` (``"shm_open"`` or ``"shm_unlink"``) with `name` encoded to bytes."""
    funcs = _libc()
    if funcs is None:
        raise OSError(errno.EINVAL, "shared-memory object name is not valid UTF-8 and the C "
                      "library's shm_open cannot be reached to open it as raw bytes", name)
    result = funcs[which](os.fsencode(name), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)
    return result


def _shm_open(name, flags, mode):
    """Return a file descriptor for the shared-memory object `name` (libc ``shm_open``)."""
    try:
        try:
            return _posixshmem.shm_open(name, flags, mode)
        except UnicodeEncodeError:
            # _posixshmem encodes names strictly as UTF-8, but Linux names are arbitrary bytes
            # and a guest can write any byte into the name buffer.
            return _libc_call("shm_open", name, flags, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, LINK_REFUSED, name) from None
        raise


def check_not_link(name):
    """Raise ``OSError(ELOOP)`` with :data:`LINK_REFUSED` if the object `name` is a symbolic
    link, as opening or creating it would; a command calls it before it simulates anything, so
    a link gets the same message with and without ``--create``."""
    path = os.path.join("/dev/shm", os.fsdecode(name).lstrip("/"))
    if os.path.islink(path):
        raise OSError(errno.ELOOP, LINK_REFUSED, name)


def _shm_unlink(name):
    """Remove the shared-memory object `name` (libc ``shm_unlink``)."""
    try:
        _posixshmem.shm_unlink(name)
    except UnicodeEncodeError:
        _libc_call("shm_unlink", name)


def _reserve(fd, name, size):
    """Allocate the `size` bytes of the new object on `fd`, or raise ``OSError`` saying why."""
    def no_room():
        free = os.fstatvfs(fd)
        return OSError(errno.ENOSPC, f"no room for {size} bytes in the shared-memory file "
                       f"system ({free.f_bavail * free.f_frsize} bytes free)", name)

    stats = os.fstatvfs(fd)
    if stats.f_blocks and size > stats.f_bavail * stats.f_frsize:
        # Refused before allocating: a tmpfs fills page by page, taking memory from everyone
        # until it fails.
        raise no_room()
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise no_room() from None
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS):
            # A file system without fallocate still works; its objects may be sparse.
            return
        raise OSError(exc.errno, exc.strerror, name) from None


def _check_int(value, what):
    """Return `value` as a non-negative ``int``, or raise naming `what`."""
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(value).__name__} ({value!r})") from None
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")
    return value


class ShmRegion:
    """Map a POSIX shared-memory object into this process for reading and writing.

    Build one with :meth:`attach`, :meth:`create` or :meth:`open_or_create`, not directly. The
    region covers the object at the size it had when it was opened; later growth is not seen and
    accesses past :attr:`size` are refused. Reads and writes reach the object itself (other
    processes' mappings see them at once). Closing a region never removes its object; only
    :meth:`unlink` does, and only for an object this region created.

    Parameters
    ----------
    name : str
        The object's name, already decoded.
    fd : int
        An open read-write descriptor of the object. The region owns it and closes it.
    created : bool
        Whether this region created the object.
    """

    def __init__(self, name, fd, created):
        self._name = name
        self._fd = fd
        self._created = created
        self._size = 0
        try:
            self._size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            self._fd = None
            raise

    @classmethod
    def attach(cls, name):
        """Open and map an existing object; never create it and never change its size.

        Parameters
        ----------
        name : str or bytes
            The object's name, such as ``"/shared-with-qemu"``.

        Returns
        -------
        ShmRegion
            A region with :attr:`created` false.

        Raises
        ------
        OSError
            With the real errno of ``shm_open``: ``ENOENT`` (FileNotFoundError) if
            there is no such object, ``EACCES`` (PermissionError) if it may not be opened
            read-write, ``EINVAL`` for a name ``shm_open`` rejects, ...
        """
        name = _fsname(name)
        return cls(name, _shm_open(name, os.O_RDWR, 0), created=False)

    @classmethod
    def create(cls, name, size, *, reserve=True):
        """Create a new object of `size` zero bytes, readable and writable by its owner only.

        Parameters
        ----------
        name : str or bytes
            The new object's name.
        size : int
            Its size in bytes; 0 makes an empty object.
        reserve : bool
            Allocate all of its memory now (``posix_fallocate``), so that a tmpfs without room
            for it is ``ENOSPC`` here rather than a write the host cannot store later. Only an
            object meant to be sparse (a test of sizes beyond the memory at hand) skips it.

        Returns
        -------
        ShmRegion
            A region with :attr:`created` true, which may :meth:`unlink` the object.

        Raises
        ------
        FileExistsError
            If an object of that name already exists; it is left untouched.
        OSError
            If the object cannot be created or sized: ``ENOSPC`` if its file system has no room
            for `size` bytes, ``EFBIG`` if `size` is beyond what it can hold. The object is
            removed again.
        """
        name = _fsname(name)
        size = _check_int(size, "shared-memory object size")
        if size > _MAX_SIZE:
            raise OSError(errno.EFBIG, f"{size} bytes is more than any object can hold "
                          f"({_MAX_SIZE}, the largest off_t)", name)
        fd = _shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, _CREATE_MODE)
        try:
            os.ftruncate(fd, size)
            if size and reserve:
                _reserve(fd, name, size)
        except BaseException:
            # The object is ours (O_EXCL made it), so removing it again takes nothing from anyone.
            os.close(fd)
            _shm_unlink(name)
            raise
        try:
            return cls(name, fd, created=True)
        except BaseException:
            _shm_unlink(name)
            raise

    @classmethod
    def open_or_create(cls, name, size, *, reserve=True):
        """Attach to the object `name` if it exists, else create it with `size` bytes.

        An existing object keeps its size, whatever `size` says.

        Parameters
        ----------
        name : str or bytes
            The object's name.
        size : int
            Size to give the object if it has to be created.
        reserve : bool
            As for :meth:`create`.

        Returns
        -------
        region : ShmRegion
            The mapped region.
        created : bool
            Whether the object was created by this call.
        """
        size = _check_int(size, "shared-memory object size")
        # Another process may create or unlink the object between our two attempts; retry a few
        # times rather than reporting a race as an error.
        for attempt in range(8):
            try:
                return cls.attach(name), False
            except FileNotFoundError:
                pass
            try:
                return cls.create(name, size, reserve=reserve), True
            except FileExistsError:
                if attempt == 7:
                    raise

    @property
    def name(self):
        """str: The object's name."""
        return self._name

    @property
    def size(self):
        """int: The object's size when it was opened: the bytes this region serves."""
        return self._size

    @property
    def created(self):
        """bool: Whether this region created its object (and so may unlink it)."""
        return self._created

    @property
    def closed(self):
        """bool: Whether :meth:`close` has been called."""
        return self._fd is None

    def fileno(self):
        """Return the object's file descriptor, for code that maps the object itself.

        The descriptor stays this region's: dup it to keep it past :meth:`close`.

        Raises
        ------
        ValueError
            If the region is closed.
        """
        self._check_open()
        return self._fd

    def current_size(self):
        """Return the object's size now; another process may have resized it since it was opened.

        Raises
        ------
        ValueError
            If the region is closed.
        """
        self._check_open()
        return os.fstat(self._fd).st_size

    def read(self, offset, n):
        """Return `n` bytes of the object starting at `offset`.

        Parameters
        ----------
        offset : int
            Byte offset into the object.
        n : int
            Number of bytes.

        Raises
        ------
        RegionError
            If the range reaches past :attr:`size` or past the object's current end.
        ValueError
            If the region is closed or `offset` or `n` is negative.
        """
        offset, end = self._check_range(offset, n, "read")
        data = b""
        while len(data) < end - offset:
            # pread reads a hole as zeros without allocating it, where a mapping would need a
            # page (and die of SIGBUS on a full tmpfs).
            chunk = os.pread(self._fd, end - offset - len(data), offset + len(data))
            if not chunk:
                raise RegionError(f"cannot read {n} bytes at offset {offset:#x} of "
                                  f"{self._name!r}: another process shrank it meanwhile")
            data += chunk
        return data

    def write(self, offset, data, mask=None):
        """Store `data` into the object at `offset`, only the bytes that `mask` enables.

        Parameters
        ----------
        offset : int
            Byte offset into the object.
        data : bytes-like
            The bytes to store.
        mask : sequence, optional
            One enable per byte of `data` (bools, or a ``bytes`` of 0 and non-zero); a byte is
            stored only when its enable is true. All bytes are stored when omitted.

        Raises
        ------
        RegionError
            If the range reaches past :attr:`size` or past the object's current end.
        ValueError
            If the region is closed, `offset` is negative or `mask` is not as long as `data`.
        """
        data = bytes(data)
        n = len(data)
        enables = None
        if mask is not None:
            enables = [bool(m) for m in mask]
            if len(enables) != n:
                raise ValueError(f"write mask has {len(enables)} enables but there are {n} data "
                                 f"bytes; give exactly one per byte")
        offset, end = self._check_range(offset, n, "write")
        if enables is None or all(enables):
            self._pwrite(offset, data)
            return
        i = 0
        while i < n:
            if not enables[i]:
                i += 1
                continue
            j = i
            while j < n and enables[j]:
                j += 1
            # Store each enabled run with one call so a mostly-enabled write stays a few calls.
            self._pwrite(offset + i, data[i:j])
            i = j

    def _pwrite(self, offset, data):
        """Store `data` at `offset` with ``pwrite``; ``ENOSPC`` where the host cannot store it."""
        view = memoryview(data)
        while view:
            try:
                done = os.pwrite(self._fd, view, offset)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot store {len(view)} bytes at offset "
                              f"{offset:#x}: {exc.strerror}", self._name) from None
            view, offset = view[done:], offset + done

    def close(self):
        """Close the object's descriptor, leaving the object itself in place.

        Closing twice is harmless.
        """
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)

    def unlink(self):
        """Remove the object's name from the system; allowed only if this region created it.

        The region stays usable until :meth:`close`.

        Raises
        ------
        PermissionError
            If the region attached to an object it did not create: those belong to someone else.
        FileNotFoundError
            If the object is already gone.
        """
        if not self._created:
            raise PermissionError(errno.EPERM, "refusing to unlink a shared-memory object this "
                                  "region attached to but did not create", self._name)
        _shm_unlink(self._name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        state = "closed" if self.closed else f"size={self._size}"
        return f"ShmRegion({self._name!r}, {state}, created={self._created})"

    def _check_open(self):
        if self._fd is None:
            raise ValueError(f"shared-memory region {self._name!r} is closed")

    def _check_range(self, offset, n, what):
        """Return ``(offset, end)`` after making sure ``[offset, end)`` may be touched now."""
        self._check_open()
        offset = _check_int(offset, f"{what} offset")
        n = _check_int(n, f"{what} length")
        end = offset + n
        if end > self._size:
            raise RegionError(f"cannot {what} {n} bytes at offset {offset:#x} of {self._name!r}: "
                              f"past the end of the {self._size} bytes it had when opened")
        if n:
            # A remote shrink is only visible through fstat. A shrink between this check and the
            # pwrite would let the write grow the object back: a window of a few microseconds
            # that no file API closes, and a stored byte, not a signal, when it is hit.
            current = os.fstat(self._fd).st_size
            if end > current:
                raise RegionError(f"cannot {what} {n} bytes at offset {offset:#x} of "
                                  f"{self._name!r}: another process shrank it to {current} bytes "
                                  f"after it was opened with {self._size}")
        return offset, end
