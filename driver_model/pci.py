"""A guest kernel's PCI core, in Python: find functions, size and place their BARs, enable them.

Named after Linux's (``pci_scan_bus``, ``pci_assign_resource``, ``pci_enable_device``,
``pci_set_master``, ``pci_find_capability``, ``pci_iomap``) so the driver reads like the original.
Everything goes through a :class:`~vmshm.driver_model.bus.GuestBus`'s configuration and memory
accesses; nothing here knows which simulator is underneath.
"""

import errno
from dataclasses import dataclass, field

from vmshm.abi import pci_regs as P

from .bus import BarWindow

__all__ = ["Resource", "PciDev", "MemAllocator", "pci_scan_bus", "pci_assign_resources",
           "pci_enable_device", "pci_disable_device", "pci_set_master", "pci_clear_master",
           "pci_find_capability", "pci_find_ext_capability", "pcie_flr",
           "pci_iomap"]

#: Slots on one bus (device numbers 0..31).
PCI_SLOTS = 32


@dataclass
class Resource:
    """A BAR's resource: its index, size, type, and the address the PCI core gave it."""
    index: int
    size: int
    is64: bool
    prefetch: bool
    start: int = None

    @property
    def end(self):
        return None if self.start is None else self.start + self.size - 1

    def __str__(self):
        kind = ("64-bit" if self.is64 else "32-bit") + (" prefetchable" if self.prefetch else "")
        where = "unassigned" if self.start is None else f"{self.start:#x}-{self.end:#x}"
        return f"BAR{self.index} [mem {where} {kind}] size {_size(self.size)}"


def _size(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


@dataclass
class PciDev:
    """One function found on the bus, like Linux's ``struct pci_dev``."""
    bus: object
    slot: int
    vendor: int
    device: int
    revision: int
    class_code: int
    subsystem_vendor: int
    subsystem_device: int
    header_type: int
    resources: dict = field(default_factory=dict)   # BAR index -> Resource

    @property
    def name(self):
        return f"0000:00:{self.slot:02x}.0"

    async def read_config(self, offset, size):
        """Read a ``size``-byte (1, 2, 4) field of this function's configuration space."""
        return await self.bus.cfg_read_int(self.slot, offset, size)

    async def write_config(self, offset, size, value):
        """Write a ``size``-byte (1, 2, 4) field of this function's configuration space."""
        await self.bus.cfg_write_int(self.slot, offset, size, value)

    def __str__(self):
        return (f"{self.name} [{self.vendor:04x}:{self.device:04x}] rev {self.revision:02x} "
                f"class {self.class_code:06x}")


class MemAllocator:
    """Hand out naturally aligned, non-overlapping bus addresses for BARs.

    32-bit BARs come from a window below 4 GiB, 64-bit ones from a window above it, as a
    firmware's or kernel's resource allocator would.
    """

    def __init__(self, mem32=(0xE000_0000, 0xF000_0000), mem64=(0x80_0000_0000, 0x90_0000_0000)):
        self._next = {False: mem32[0], True: mem64[0]}
        self._limit = {False: mem32[1], True: mem64[1]}

    def allocate(self, size, is64):
        start = -(-self._next[is64] // size) * size
        if start + size > self._limit[is64]:
            raise OSError(errno.ENOMEM, f"no room for a {_size(size)} BAR")
        self._next[is64] = start + size
        return start


async def _size_bar(dev, index):
    # Write all ones, read back the mask, restore: the PCI specification's sizing sequence.
    reg = P.PCI_BASE_ADDRESS_0 + 4 * index
    orig = await dev.read_config(reg, 4)
    await dev.write_config(reg, 4, 0xFFFF_FFFF)
    mask = await dev.read_config(reg, 4)
    await dev.write_config(reg, 4, orig)
    if mask == 0 or mask & P.PCI_BASE_ADDRESS_SPACE_IO:
        return None, 1
    is64 = mask & P.PCI_BASE_ADDRESS_MEM_TYPE_MASK == P.PCI_BASE_ADDRESS_MEM_TYPE_64
    prefetch = bool(mask & P.PCI_BASE_ADDRESS_MEM_PREFETCH)
    mask &= P.PCI_BASE_ADDRESS_MEM_MASK & 0xFFFF_FFFF
    if is64:
        orig_hi = await dev.read_config(reg + 4, 4)
        await dev.write_config(reg + 4, 4, 0xFFFF_FFFF)
        mask |= (await dev.read_config(reg + 4, 4)) << 32
        await dev.write_config(reg + 4, 4, orig_hi)
        width = 64
    else:
        width = 32
    size = ((~mask) & ((1 << width) - 1)) + 1
    return Resource(index, size, is64, prefetch), (2 if is64 else 1)


async def pci_scan_bus(bus, slots=range(PCI_SLOTS)):
    """Find every function on ``bus`` and size its BARs; return a list of :class:`PciDev`."""
    found = []
    for slot in slots:
        vendor = await bus.cfg_read_int(slot, P.PCI_VENDOR_ID, 2)
        if vendor in (P.PCI_ANY_ID, 0):
            continue    # an empty slot reads all ones
        class_rev = await bus.cfg_read_int(slot, P.PCI_CLASS_REVISION, 4)
        dev = PciDev(
            bus=bus, slot=slot, vendor=vendor,
            device=await bus.cfg_read_int(slot, P.PCI_DEVICE_ID, 2),
            revision=class_rev & 0xFF, class_code=class_rev >> 8,
            subsystem_vendor=await bus.cfg_read_int(slot, P.PCI_SUBSYSTEM_VENDOR_ID, 2),
            subsystem_device=await bus.cfg_read_int(slot, P.PCI_SUBSYSTEM_ID, 2),
            header_type=await bus.cfg_read_int(slot, P.PCI_HEADER_TYPE, 1))
        if dev.header_type & P.PCI_HEADER_TYPE_MASK != P.PCI_HEADER_TYPE_NORMAL:
            continue    # bridges and CardBus are not ours to drive
        # Decode stays off while BARs are sized, so the all-ones probe never claims addresses.
        cmd = await dev.read_config(P.PCI_COMMAND, 2)
        await dev.write_config(P.PCI_COMMAND, 2, cmd & ~(P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_IO))
        index = 0
        while index < 6:
            res, used = await _size_bar(dev, index)
            if res is not None:
                dev.resources[index] = res
            index += used
        await dev.write_config(P.PCI_COMMAND, 2, cmd)
        found.append(dev)
    return found


async def pci_assign_resources(dev, allocator):
    """Give each of ``dev``'s BARs an aligned address and program it."""
    for res in dev.resources.values():
        res.start = allocator.allocate(res.size, res.is64)
        reg = P.PCI_BASE_ADDRESS_0 + 4 * res.index
        await dev.write_config(reg, 4, res.start & 0xFFFF_FFFF)
        if res.is64:
            await dev.write_config(reg + 4, 4, res.start >> 32)
        back = await dev.read_config(reg, 4) & (P.PCI_BASE_ADDRESS_MEM_MASK & 0xFFFF_FFFF)
        if res.is64:
            back |= await dev.read_config(reg + 4, 4) << 32
        if back != res.start:
            raise OSError(errno.EIO, f"{dev.name} BAR{res.index} reads back {back:#x} after "
                                     f"{res.start:#x} was written")


async def _update_command(dev, set_bits=0, clear_bits=0):
    cmd = await dev.read_config(P.PCI_COMMAND, 2)
    await dev.write_config(P.PCI_COMMAND, 2, (cmd | set_bits) & ~clear_bits)


async def pci_enable_device(dev):
    """Turn on memory decoding (Memory Space Enable)."""
    await _update_command(dev, set_bits=P.PCI_COMMAND_MEMORY)


async def pci_disable_device(dev):
    """Turn off memory decoding and bus mastering."""
    await _update_command(dev, clear_bits=P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER)


async def pci_set_master(dev):
    """Let the function master the bus (Bus Master Enable): VMShm's window needs it."""
    await _update_command(dev, set_bits=P.PCI_COMMAND_MASTER)


async def pci_clear_master(dev):
    """Stop the function from mastering the bus."""
    await _update_command(dev, clear_bits=P.PCI_COMMAND_MASTER)


async def pci_find_capability(dev, cap_id):
    """Return the configuration offset of ``dev``'s first capability ``cap_id``, or 0."""
    if not await dev.read_config(P.PCI_STATUS, 2) & P.PCI_STATUS_CAP_LIST:
        return 0
    pos = await dev.read_config(P.PCI_CAPABILITY_LIST, 1)
    for _ in range(48):     # as Linux does: a looping list must not hang the probe
        pos &= ~3
        if pos < 0x40:
            return 0
        if await dev.read_config(pos + P.PCI_CAP_LIST_ID, 1) == cap_id:
            return pos
        pos = await dev.read_config(pos + P.PCI_CAP_LIST_NEXT, 1)
    return 0


async def pci_find_ext_capability(dev, cap_id, start=0):
    """Return the offset of ``dev``'s first extended capability ``cap_id`` after ``start``, or 0.

    As Linux's ``pci_find_next_ext_capability``: the list starts at 0x100 (an empty header, or
    all ones from a function without extended space, means none) and is walked at most as many
    steps as 8-byte capabilities fit, so a looping list cannot hang the probe.
    """
    pos = start or P.PCI_CFG_SPACE_SIZE
    header = await dev.read_config(pos, 4)
    if header in (0, 0xFFFF_FFFF):
        return 0
    for _ in range((4096 - P.PCI_CFG_SPACE_SIZE) // 8):
        if P.PCI_EXT_CAP_ID(header) == cap_id and pos != start:
            return pos
        pos = P.PCI_EXT_CAP_NEXT(header)
        if pos < P.PCI_CFG_SPACE_SIZE:
            break
        header = await dev.read_config(pos, 4)
    return 0


def pci_iomap(dev, index):
    """Return a :class:`~vmshm.driver_model.bus.BarWindow` on BAR ``index``."""
    res = dev.resources.get(index)
    if res is None or res.start is None:
        raise OSError(errno.ENODEV, f"{dev.name} has no assigned BAR{index}")
    return BarWindow(dev.bus, res.start, res.size)


async def pcie_flr(dev):
    """Reset ``dev`` with a Function Level Reset, as Linux's ``pcie_flr`` does.

    Sets Initiate FLR in the PCI Express capability's Device Control register. The function
    forgets its command register and BARs: probe it again afterwards. Raises ``OSError(ENOTTY)``
    if the function has no PCI Express capability or does not offer FLR.
    """
    pos = await pci_find_capability(dev, P.PCI_CAP_ID_EXP)
    if not pos or not await dev.read_config(pos + P.PCI_EXP_DEVCAP, 4) & P.PCI_EXP_DEVCAP_FLR:
        raise OSError(errno.ENOTTY, f"{dev.name} cannot do a Function Level Reset")
    await dev.write_config(pos + P.PCI_EXP_DEVCTL, 2, P.PCI_EXP_DEVCTL_BCR_FLR)
