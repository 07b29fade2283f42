"""The VMShm Linux driver's behaviour, in Python: ``/dev/vmshmN`` over any guest bus.

It mirrors the original driver: ``open`` is exclusive, ``ioctl(fd, 0, name)`` writes the name into
BAR2 and reads OPEN, ``mmap`` maps BAR1, and release (the last ``close``/``munmap``) reads CLOSE.
Errors are ``OSError`` with Linux's errno, the device's status codes passed through unchanged.
"""

import errno
import os

from vmshm.regmap import BAR_NAME, BAR_REGS, BAR_WINDOW, DEVICE_ID, REG, STATUS_TEXT

__all__ = ["VMSHM_IOCTL_OPEN", "VMShmDriver", "Mapping"]

#: The one ioctl the original driver knows: open the object named by the argument.
VMSHM_IOCTL_OPEN = 0


def _err(code, detail=None, filename=None):
    msg = os.strerror(code)
    if detail:
        msg = f"{msg} ({detail})"
    return OSError(code, msg, filename) if filename is not None else OSError(code, msg)


class Mapping:
    """A guest mapping of BAR1, as ``mmap`` returns it: byte-level loads and stores.

    Parameters
    ----------
    driver : VMShmDriver
        The driver that made the mapping.
    offset : int
        Offset of the mapping into the window.
    length : int
        Length of the mapping in bytes.
    """

    def __init__(self, driver, offset, length):
        self._driver = driver
        self.offset = offset
        self.length = length
        self.mapped = True

    def _check(self, offset, n):
        if not self.mapped:
            raise _err(errno.EFAULT, "the mapping was unmapped")
        if offset < 0 or n < 0 or offset + n > self.length:
            raise _err(errno.EINVAL, f"bytes {offset:#x}..{offset + n:#x} are outside the "
                                     f"{self.length:#x}-byte mapping")

    async def read(self, offset, n):
        """Load ``n`` bytes at ``offset`` of the mapping."""
        self._check(offset, n)
        return await self._driver.bus.read(BAR_WINDOW, self.offset + offset, n)

    async def write(self, offset, data):
        """Store the bytes ``data`` at ``offset`` of the mapping."""
        data = bytes(data)
        self._check(offset, len(data))
        await self._driver.bus.write(BAR_WINDOW, self.offset + offset, data)


class VMShmDriver:
    """Drive one VMShm device the way the Linux driver does.

    Parameters
    ----------
    bus : GuestBus
        The guest bus the device sits on.
    minor : int
        Device minor: the file is ``/dev/vmshm{minor}``.
    """

    def __init__(self, bus, *, minor=0):
        self.bus = bus
        self.path = f"/dev/vmshm{minor}"
        self.window_size = None
        self.name_size = None
        self._fd = None          # the one open file, if any
        self._fd_closed = True   # close() was called on it
        self._mappings = []      # live mappings; each holds a reference to the file
        self._next_fd = 3

    async def probe(self):
        """Check the device is a VMShm and learn its window and name-buffer sizes."""
        ident = await self.bus.read32(BAR_REGS, REG["ID"].offset)
        if ident != DEVICE_ID:
            raise _err(errno.ENODEV, f"ID register reads {ident:#010x}, not {DEVICE_ID:#010x}")
        self.version = await self.bus.read32(BAR_REGS, REG["VERSION"].offset)
        self.window_size = await self.bus.read32(BAR_REGS, REG["WINDOW_SIZE"].offset)
        self.name_size = await self.bus.read32(BAR_REGS, REG["NAME_SIZE"].offset)
        return self

    def _file(self, fd):
        if self._fd is None or fd != self._fd or self._fd_closed:
            raise _err(errno.EBADF, f"{fd!r} is not an open file of {self.path}")

    async def open(self):
        """Open the device file and return its descriptor; ``EBUSY`` if it is already open."""
        if self.window_size is None:
            await self.probe()
        if self._fd is not None:
            raise _err(errno.EBUSY, f"{self.path} is already open", self.path)
        self._fd = self._next_fd
        self._next_fd += 1
        self._fd_closed = False
        return self._fd

    async def ioctl(self, fd, cmd, name):
        """Open the host object ``name``: write it into BAR2 and read OPEN.

        ``name`` is ``str`` or ``bytes``; as in C, it ends at its first NUL.
        """
        self._file(fd)
        if cmd != VMSHM_IOCTL_OPEN:
            raise _err(errno.ENOTTY, f"unknown ioctl {cmd!r}")
        raw = os.fsencode(name) if isinstance(name, str) else bytes(name)
        raw = raw.split(b"\0", 1)[0]
        if len(raw) + 1 > self.name_size:
            # Nothing is written: the name and its NUL would not fit in BAR2.
            raise _err(errno.ENAMETOOLONG, f"{len(raw)} bytes and a NUL do not fit the "
                                           f"{self.name_size}-byte name buffer")
        await self.bus.write(BAR_NAME, 0, raw + b"\0")
        status = await self.bus.read32(BAR_REGS, REG["OPEN"].offset)
        if status:
            raise _err(status, STATUS_TEXT.get(status), os.fsdecode(raw))
        return 0

    async def mmap(self, fd, length, offset=0):
        """Map ``length`` bytes of the window at ``offset``; ``EINVAL`` past the mapped object."""
        self._file(fd)
        map_size = await self.bus.read32(BAR_REGS, REG["MAP_SIZE"].offset)
        if length <= 0 or offset < 0 or offset + length > map_size:
            raise _err(errno.EINVAL, f"cannot map {length:#x} bytes at {offset:#x}: the window "
                                     f"holds {map_size:#x} bytes of the object")
        mapping = Mapping(self, offset, length)
        self._mappings.append(mapping)
        return mapping

    async def munmap(self, mapping):
        """Unmap ``mapping``; the last reference to a closed file releases the device."""
        if mapping not in self._mappings:
            raise _err(errno.EINVAL, "not a live mapping of this device")
        mapping.mapped = False
        self._mappings.remove(mapping)
        await self._maybe_release()

    async def close(self, fd):
        """Close the file; once no mapping is left either, release the device (read CLOSE)."""
        self._file(fd)
        self._fd_closed = True
        await self._maybe_release()

    async def _maybe_release(self):
        # As in Linux, release runs when the last reference goes: the fd and every mapping.
        if self._fd is None or not self._fd_closed or self._mappings:
            return
        try:
            await self.bus.read32(BAR_REGS, REG["CLOSE"].offset)
        finally:
            # The release path always releases, whatever the device answered.
            self._fd = None
