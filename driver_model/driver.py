"""The VMShm Linux driver's behaviour, in Python: ``/dev/vmshmN`` over any guest bus.

It mirrors the original driver: ``open`` is exclusive, ``ioctl(fd, 0, name)`` writes the name into
BAR2 and reads OPEN, ``mmap`` maps BAR1, and release (the last ``close``/``munmap``) reads CLOSE.
Errors are ``OSError`` with Linux's errno, the device's status codes passed through unchanged.
"""

import errno
import os

from vmshm.abi import pci_regs as P
from vmshm.abi.regmap import (CAP, CAP_LEN, CAP_VERSION, DEVICE_ID, PCI_DEVICE_ID, PCI_VENDOR_ID,
                              REG, STATUS_TEXT, VSEC_FIELDS, VSEC_ID, VSEC_LEN, VSEC_REV)

from .pci import (MemAllocator, pci_assign_resources, pci_enable_device, pci_find_capability,
                  pci_find_ext_capability, pci_iomap, pci_scan_bus, pci_set_master)

__all__ = ["VMSHM_IOCTL_OPEN", "VMSHM_IOCTL_RING", "VMSHM_IOCTL_IVPOSITION", "VMSHM_IDS",
           "PAGE_SIZE", "MSI_ADDRESS", "VMShmDriver", "Mapping", "vmshm_probe",
           "read_vmshm_capability"]

#: The IDs the driver binds to, as its ``pci_device_id`` table.
VMSHM_IDS = ((PCI_VENDOR_ID, PCI_DEVICE_ID),)

#: The one ioctl the original driver knows: open the object named by the argument.
VMSHM_IOCTL_OPEN = 0
#: Ring a peer: the argument is ``peer << 16 | vector``, written to DOORBELL. ``_IO('v', 1)``, as
#: vmshm.ko has it (``guest/vmshm_ioctl.h``): Linux answers a plain 2 itself (FIGETBSZ).
VMSHM_IOCTL_RING = 0x7601
#: Return this device's peer ID (IVPOSITION); ``ENXIO`` while the host has given it none.
#: ``_IO('v', 2)``.
VMSHM_IOCTL_IVPOSITION = 0x7602

#: Where the model's guest points MSI messages: x86's interrupt address range (0xfee00000).
MSI_ADDRESS = 0xFEE0_0000

#: The guest's page size: ``mmap`` offsets are multiples of it (x86-64 and arm64 defaults).
PAGE_SIZE = 4096

#: Linux's MAX_ERRNO: a status at or above it is no errno.
MAX_ERRNO = 4095


def _err(code, detail=None, filename=None):
    msg = os.strerror(code)
    if detail:
        msg = f"{msg} ({detail})"
    return OSError(code, msg, filename) if filename is not None else OSError(code, msg)


def _int_arg(value, what):
    """Return `value` as an int; a C argument of another type is ``EINVAL``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(errno.EINVAL, f"{what} must be an int, not {type(value).__name__}")
    return value


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
        offset, n = _int_arg(offset, "offset"), _int_arg(n, "length")
        if not self.mapped:
            raise _err(errno.EFAULT, "the mapping was unmapped")
        if offset < 0 or n < 0 or offset + n > self.length:
            raise _err(errno.EINVAL, f"bytes {offset:#x}..{offset + n:#x} are outside the "
                                     f"{self.length:#x}-byte mapping")

    async def read(self, offset, n):
        """Load ``n`` bytes at ``offset`` of the mapping."""
        self._check(offset, n)
        return await self._driver.window.read(self.offset + offset, n)

    async def write(self, offset, data):
        """Store the bytes ``data`` at ``offset`` of the mapping."""
        data = bytes(data)
        self._check(offset, len(data))
        await self._driver.window.write(self.offset + offset, data)


async def read_vmshm_capability(pdev):
    """Find VMShm's capability in ``pdev``'s configuration space and return its fields.

    As vmshm.ko's ``vmshm_find_cap``: the legacy vendor-specific capability (ID 09h, the soft
    function's and QEMU's) first, then a Vendor-Specific Extended Capability (ID 000Bh) whose
    VSEC header names VMShm (:data:`~vmshm.abi.regmap.VSEC_ID`, revision, length), which is
    how a hard IP with no room in its legacy list presents it. Returns ``{field name: value}``
    for the fields from ABI_VERSION on, plus ``"where"`` (the capability's offset) and
    ``"kind"`` (``"legacy"`` or ``"vsec"``); raises ``OSError(ENODEV)`` when there is none.
    """
    base = kind = None
    pos = await pci_find_capability(pdev, P.PCI_CAP_ID_VNDR)
    if pos:
        version = await pdev.read_config(pos + CAP["CAP_VERSION"].offset, 1)
        if version != CAP_VERSION:
            raise _err(errno.ENODEV, f"{pdev.name}: unknown capability version {version}")
        base, kind = pos, "legacy"
    else:
        while pos := await pci_find_ext_capability(pdev, P.PCI_EXT_CAP_ID_VNDR, pos):
            vh = await pdev.read_config(pos + P.PCI_VNDR_HEADER, 4)
            if (vh & 0xFFFF, vh >> 16 & 0xF, vh >> 20) == (VSEC_ID, VSEC_REV, VSEC_LEN):
                base, kind = pos + VSEC_FIELDS, "vsec"
                break
    if base is None:
        raise _err(errno.ENODEV, f"{pdev.name} has no VMShm capability")
    out = {"where": base if kind == "legacy" else base - VSEC_FIELDS, "kind": kind}
    for f in CAP.values():
        if f.offset >= VSEC_FIELDS and f.offset + f.size <= CAP_LEN:
            out[f.name] = await pdev.read_config(base + f.offset, f.size)
    return out


class VMShmDriver:
    """Drive one VMShm function the way the Linux driver does.

    Made by :func:`vmshm_probe`, which finds, places and enables the function first.

    Parameters
    ----------
    pdev : PciDev
        The function, with its BARs assigned.
    minor : int
        Device minor: the file is ``/dev/vmshm{minor}``.
    """

    def __init__(self, pdev, *, minor=0):
        self.pdev = pdev
        self.path = f"/dev/vmshm{minor}"
        self.regs = self.window = self.names = None
        self.window_size = None
        self.name_size = None
        self.version = None
        self._fd = None          # the one open file, if any
        self._fd_closed = True   # close() was called on it
        self._mappings = []      # live mappings; each holds a reference to the file
        self._next_fd = 3
        self._irq_on = False     # INTR_MASK set: the handler is installed
        self._irq_seen = 0       # interrupts of this slot the handler has run for
        self._irq_count = 0      # handled since the last read(), as UIO counts
        self.msi = False         # interrupts come as MSI messages instead of INTx
        self.capability = None   # what read_vmshm_capability found

    async def probe(self):
        """Bind to the function: enable it, find the BARs from the capability, check the ID."""
        pdev = self.pdev
        await pci_enable_device(pdev)
        await pci_set_master(pdev)
        cap = await read_vmshm_capability(pdev)
        self.capability = cap
        self.version = cap["ABI_VERSION"]
        self.window_size = cap["WINDOW_SIZE"]
        self.name_size = cap["NAME_SIZE"]
        self.regs = pci_iomap(pdev, cap["REGS_BAR"])
        self.window = pci_iomap(pdev, cap["WINDOW_BAR"])
        self.names = pci_iomap(pdev, cap["NAME_BAR"])
        ident = await self.regs.read32(REG["ID"].offset)
        if ident != DEVICE_ID:
            raise _err(errno.ENODEV, f"{pdev.name}: ID register reads {ident:#010x}, "
                                     f"not {DEVICE_ID:#010x}")
        return self

    def _file(self, fd):
        if self._fd is None or fd != self._fd or self._fd_closed:
            raise _err(errno.EBADF, f"{fd!r} is not an open file of {self.path}")

    async def open(self):
        """Open the device file and return its descriptor; ``EBUSY`` if it is already open."""
        if self._fd is not None:
            raise _err(errno.EBUSY, f"{self.path} is already open", self.path)
        self._fd = self._next_fd
        self._next_fd += 1
        self._fd_closed = False
        return self._fd

    async def ioctl(self, fd, cmd, name=0):
        """Carry out ioctl ``cmd``; the seed's ``VMSHM_IOCTL_OPEN`` opens the host object ``name``.

        ``VMSHM_IOCTL_OPEN`` (0): write ``name`` into BAR2 and read OPEN. ``name`` is the string
        the C argument points to: ``str`` or a bytes-like object, which ends at its first NUL as
        in C. Anything else is ``EFAULT``, as a pointer to memory the caller does not have would
        be (``strncpy_from_user`` fails). A name that does not fit the name buffer with its NUL
        is ``ENAMETOOLONG`` and nothing is written.

        ``VMSHM_IOCTL_RING`` (0x7601): the argument is ``peer << 16 | vector`` (an int from 0 to
        0xffffffff, else ``EINVAL``), written to DOORBELL; returns 0.
        ``VMSHM_IOCTL_IVPOSITION`` (0x7602): returns this device's peer ID, ``ENXIO`` while it has
        none.
        """
        self._file(fd)
        if isinstance(cmd, bool) or not isinstance(cmd, int) or cmd not in (
                VMSHM_IOCTL_OPEN, VMSHM_IOCTL_RING, VMSHM_IOCTL_IVPOSITION):
            raise _err(errno.ENOTTY, f"unknown ioctl {cmd!r}")
        if cmd == VMSHM_IOCTL_RING:
            value = _int_arg(name, "the doorbell argument")
            if not 0 <= value <= 0xFFFF_FFFF:
                raise _err(errno.EINVAL, f"the doorbell argument {value:#x} is not "
                                         f"peer << 16 | vector in 32 bits")
            await self.regs.write32(REG["DOORBELL"].offset, value)
            return 0
        if cmd == VMSHM_IOCTL_IVPOSITION:
            position = await self.regs.read32(REG["IVPOSITION"].offset)
            if position > 0xFFFF:
                raise _err(errno.ENXIO, "the host has not given this device a peer ID")
            return position
        if isinstance(name, str):
            raw = os.fsencode(name)
        elif isinstance(name, (bytes, bytearray, memoryview)):
            raw = bytes(name)
        else:
            # bytes(12345) would be 12345 NULs: an int is an address, not a string.
            raise _err(errno.EFAULT, f"the name argument is {type(name).__name__}, not a "
                                     f"string in the caller's memory")
        raw = raw.split(b"\0", 1)[0]
        if len(raw) + 1 > self.name_size:
            # Nothing is written: the name and its NUL would not fit in BAR2.
            raise _err(errno.ENAMETOOLONG, f"{len(raw)} bytes and a NUL do not fit the "
                                           f"{self.name_size}-byte name buffer")
        await self.names.write(0, raw + b"\0")
        status = await self.regs.read32(REG["OPEN"].offset)
        if status:
            if status >= MAX_ERRNO:
                # Not an errno at all: the kernel module answers EIO, and so does this.
                raise _err(errno.EIO, f"OPEN returned {status:#x}", os.fsdecode(raw))
            raise _err(status, STATUS_TEXT.get(status), os.fsdecode(raw))
        return 0

    # -- interrupts, as UIO offers them: read() blocks for the count, poll() says if one came ----

    async def enable_msi(self, address=MSI_ADDRESS, data=0):
        """Use an MSI message instead of INTx, as ``pci_alloc_irq_vectors(PCI_IRQ_MSI)`` does.

        Programs the MSI capability (one message, ``data`` to ``address``) and sets MSI Enable;
        ``ENODEV`` if the function has no MSI capability. Call before the first :meth:`read`.
        """
        pdev = self.pdev
        pos = await pci_find_capability(pdev, P.PCI_CAP_ID_MSI)
        if not pos:
            raise _err(errno.ENODEV, f"{pdev.name} has no MSI capability")
        await pdev.write_config(pos + P.PCI_MSI_ADDRESS_LO, 4, address & 0xFFFF_FFFF)
        await pdev.write_config(pos + P.PCI_MSI_ADDRESS_HI, 4, address >> 32)
        await pdev.write_config(pos + P.PCI_MSI_DATA_64, 2, data)
        flags = await pdev.read_config(pos + P.PCI_MSI_FLAGS, 2)
        await pdev.write_config(pos + P.PCI_MSI_FLAGS, 2, flags | P.PCI_MSI_FLAGS_ENABLE)
        self.msi = True

    async def _irq_enable(self):
        # The handler is installed the first time a program waits: every vector enabled, so a
        # ring that came before is pending in INTR_STATUS and raises the interrupt now.
        if not self._irq_on:
            self._irq_on = True
            await self.regs.write32(REG["INTR_MASK"].offset, 0xFFFF_FFFF)

    async def _irq_handle(self):
        # The interrupt handler, run for the interrupts that came: acknowledge every pending
        # vector (write its bits back to INTR_STATUS), which drops a level-triggered INTx.
        bus, slot = self.pdev.bus, self.pdev.slot
        came = sum(1 for i in bus.interrupts if i.dev == slot) - self._irq_seen
        if came > 0:
            self._irq_seen += came
            self._irq_count += came
            pending = await self.regs.read32(REG["INTR_STATUS"].offset)
            if pending:
                await self.regs.write32(REG["INTR_STATUS"].offset, pending)

    async def read(self, fd, timeout=None):
        """Block until an interrupt came; return how many came since the last read (UIO's read).

        ``timeout`` in cycles: return 0 if none came by then (``None``: wait for ever).
        """
        self._file(fd)
        await self._irq_enable()
        await self._irq_handle()
        if not self._irq_count:
            await self.pdev.bus.wait_interrupt(self.pdev.slot, self._irq_seen, timeout)
            await self._irq_handle()
        count, self._irq_count = self._irq_count, 0
        return count

    async def poll(self, fd):
        """Return whether a :meth:`read` would return at once (``POLLIN``), without blocking."""
        self._file(fd)
        await self._irq_enable()
        await self._irq_handle()
        return self._irq_count > 0

    async def mmap(self, fd, length, offset=0):
        """Map ``length`` bytes of the window at ``offset``.

        As Linux's ``mmap`` with the checks of ``guest/vmshm.c``: ``EINVAL`` for a length that
        is not positive, an offset that is negative or not a multiple of the page size
        (:data:`PAGE_SIZE`), or a range past the bytes of the object the window holds
        (``MAP_SIZE``, also 0 when nothing is open) rounded up to a page, as
        ``vm_iomap_memory`` maps whole pages; ``EIO`` if MAP_SIZE exceeds the window (a broken
        device). Loads and stores in the rest of the last page reach the device, which refuses
        them (all ones, stores dropped).
        """
        self._file(fd)
        length, offset = _int_arg(length, "length"), _int_arg(offset, "offset")
        if offset % PAGE_SIZE:
            raise _err(errno.EINVAL, f"offset {offset:#x} is not a multiple of the "
                                     f"{PAGE_SIZE}-byte page")
        map_size = await self.regs.read32(REG["MAP_SIZE"].offset)
        if map_size > self.window_size:
            raise _err(errno.EIO, f"MAP_SIZE reads {map_size:#x}, more than the "
                                  f"{self.window_size:#x}-byte window")
        # Whole pages, but never past the window BAR itself (one smaller than a page).
        pages = min(-(-map_size // PAGE_SIZE) * PAGE_SIZE, self.window_size)
        if length <= 0 or offset < 0 or offset + length > pages:
            raise _err(errno.EINVAL, f"cannot map {length:#x} bytes at {offset:#x}: the window "
                                     f"holds {map_size:#x} bytes of the object ({pages:#x} in "
                                     f"whole pages)")
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
            await self.regs.read32(REG["CLOSE"].offset)
        finally:
            # The release path always releases, whatever the device answered.
            self._fd = None


async def vmshm_probe(bus, *, ids=VMSHM_IDS, allocator=None):
    """Do what a booting guest does: scan ``bus``, place every BAR, bind the driver.

    Returns one :class:`VMShmDriver` per VMShm function found, ``/dev/vmshm0`` first, and the
    list of every function on the bus (VMShm or not) as ``(drivers, pci_devs)``.
    """
    allocator = allocator if allocator is not None else MemAllocator()
    pdevs = await pci_scan_bus(bus)
    for pdev in pdevs:
        await pci_assign_resources(pdev, allocator)
    drivers = []
    for pdev in pdevs:
        if (pdev.vendor, pdev.device) in ids:
            drivers.append(await VMShmDriver(pdev, minor=len(drivers)).probe())
    return drivers, pdevs
