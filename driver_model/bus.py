"""The guest bus: what the driver model talks to, implemented once per simulation backend.

A backend supplies three things: the data width, the current cycle, and two burst primitives
(:meth:`GuestBus._burst_read`, :meth:`GuestBus._burst_write`) on the bus's request and completion
streams. Everything above them is shared: byte-level memory and configuration accesses are split
here into aligned bursts with byte enables, and every burst is recorded with its start and end
cycle.
"""

import abc
import enum
from dataclasses import dataclass

__all__ = ["Access", "Space", "Transaction", "Interrupt", "GuestBus", "BarWindow", "BusTimeout",
           "split_bursts"]

#: Most words one burst carries; matches the core's 8-bit ``count``.
MAX_BURST = 256


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"


class Space(enum.Enum):
    MEM = "mem"
    CFG = "cfg"


@dataclass(frozen=True)
class Transaction:
    """One burst on the guest bus, stamped by the BFM that carried it.

    ``start`` is the cycle the request was offered, ``end`` the cycle its last completion beat
    was taken. ``status`` is the completion status name (``"SC"``, ``"UR"``). ``dev`` is the
    slot of a configuration request (``None`` for memory).
    """
    access: Access
    space: Space
    dev: object
    addr: int
    words: int
    start: int
    end: int
    status: str
    label: str = ""

    @property
    def cycles(self):
        """Return how many cycles the burst took."""
        return self.end - self.start

    def __str__(self):
        where = (f"cfg {self.dev:>2}:{self.addr:#05x}" if self.space is Space.CFG
                 else f"mem {self.addr:#014x}")
        return (f"{self.start:>8} {self.end:>8} {self.cycles:>6}  {self.access.value:<5} "
                f"{where:<18} x{self.words:<3} {self.status:<2} {self.label}")


@dataclass(frozen=True)
class Interrupt:
    """One interrupt a function raised, as the guest's interrupt controller sees it.

    ``kind`` is ``"intx"`` (the slot's INTx line rose at edge ``cycle``) or ``"msi"`` (a message
    of ``data`` to ``addr`` was taken at edge ``cycle``); ``dev`` is the slot.
    """
    cycle: int
    dev: int
    kind: str
    addr: int = 0
    data: int = 0


class BusTimeout(RuntimeError):
    """The device did not complete a request in time: a hardware bug, never a user mistake."""


def split_bursts(offset, size, word_bytes, max_words=MAX_BURST):
    """Split the byte range ``[offset, offset + size)`` into aligned bursts.

    Yields ``(addr, words, first_be, last_be, lo, hi)``: the aligned byte address, the number of
    words, the byte enables of the first and last word, and the slice ``[lo, hi)`` of the caller's
    buffer the burst covers.
    """
    if size <= 0:
        return
    end = offset + size
    full = (1 << word_bytes) - 1
    word = offset // word_bytes
    last_word = (end - 1) // word_bytes
    while word <= last_word:
        n = min(max_words, last_word - word + 1)
        addr = word * word_bytes
        burst_end = addr + n * word_bytes
        lo = max(offset, addr)
        hi = min(end, burst_end)
        first_be = full & ~((1 << (lo - addr)) - 1)
        tail = burst_end - hi
        last_be = full >> tail
        if n == 1:
            first_be = last_be = first_be & last_be
        yield addr, n, first_be, last_be, lo - offset, hi - offset
        word += n


class GuestBus(abc.ABC):
    """Memory and configuration reads and writes, as the guest's CPU and PCI core issue them.

    Reads that nobody claims return all ones, as on PCI; the transaction record carries the
    status.
    """

    def __init__(self):
        self.records = []
        self.label = ""
        #: Every :class:`Interrupt` the backend saw, in order: INTx rising edges and MSI messages.
        self.interrupts = []
        #: The host models behind the devices, for a program that plays the host too (a
        #: scenario ringing the device); set by backends that have them in this process.
        self.hosts = []
        #: Cycles an interrupt takes beyond the function's pins to reach what :attr:`interrupts`
        #: records: 0 where the bus watches the pins; a PCIe link's messages take longer.
        self.interrupt_latency = 0

    # -- what a backend implements ------------------------------------------------------------

    @property
    @abc.abstractmethod
    def data_width(self):
        """Width of the bus's data path in bits."""

    @abc.abstractmethod
    def now(self):
        """Return the current cycle."""

    @abc.abstractmethod
    async def _burst_read(self, space, dev, addr, words, be):
        """Read ``words`` words at aligned byte address ``addr``; return ``(ints, status)``."""

    @abc.abstractmethod
    async def _burst_write(self, space, dev, addr, beats):
        """Write ``beats``, a list of ``(int, be)``, at ``addr``; return the status name."""

    def intx(self, dev=0):
        """Return the level of slot ``dev``'s INTx line now (1: asserted)."""
        raise NotImplementedError(f"{type(self).__name__} cannot see interrupt lines")

    async def idle(self, cycles):
        """Let ``cycles`` clock edges pass."""
        raise NotImplementedError(f"{type(self).__name__} cannot let cycles pass")

    async def wait_interrupt(self, dev, since, timeout=None):
        """Wait until slot ``dev`` has raised more than ``since`` interrupts; return the count.

        Checks once a cycle (a backend may wait more cheaply). ``timeout`` in cycles: return
        the count as it is then, possibly still ``since``.
        """
        waited = looked = count = 0
        while True:
            # Only the interrupts recorded since the last look: the list only grows.
            new = self.interrupts[looked:]
            looked += len(new)
            count += sum(1 for i in new if i.dev == dev)
            if count > since or (timeout is not None and waited >= timeout):
                return count
            await self.idle(1)
            waited += 1

    # -- shared by every backend --------------------------------------------------------------

    @property
    def word_bytes(self):
        return self.data_width // 8

    async def _read(self, space, dev, offset, size, max_words=MAX_BURST):
        wb = self.word_bytes
        out = bytearray(size)
        for addr, n, first_be, _, lo, hi in split_bursts(offset, size, wb, max_words):
            start = self.now()
            ints, status = await self._burst_read(space, dev, addr, n, first_be)
            self.records.append(Transaction(Access.READ, space, dev, addr, n, start,
                                            self.now(), status, self.label))
            raw = b"".join(v.to_bytes(wb, "little") for v in ints)
            skip = offset + lo - addr
            out[lo:hi] = raw[skip:skip + hi - lo]
        return bytes(out)

    async def _write(self, space, dev, offset, data, max_words=MAX_BURST):
        wb = self.word_bytes
        data = bytes(data)
        for addr, n, first_be, last_be, lo, hi in split_bursts(offset, len(data), wb,
                                                                max_words):
            skip = offset + lo - addr
            raw = bytes(skip) + data[lo:hi] + bytes(n * wb - skip - (hi - lo))
            beats = []
            for i in range(n):
                be = (1 << wb) - 1
                if i == 0:
                    be &= first_be
                if i == n - 1:
                    be &= last_be
                beats.append((int.from_bytes(raw[i * wb:(i + 1) * wb], "little"), be))
            start = self.now()
            status = await self._burst_write(space, dev, addr, beats)
            self.records.append(Transaction(Access.WRITE, space, dev, addr, n, start,
                                            self.now(), status, self.label))

    async def mem_read(self, addr, size):
        """Read ``size`` bytes of memory space at ``addr``."""
        return await self._read(Space.MEM, None, addr, size)

    async def mem_write(self, addr, data):
        """Write the bytes ``data`` to memory space at ``addr``."""
        await self._write(Space.MEM, None, addr, data)

    async def cfg_read(self, dev, offset, size):
        """Read ``size`` bytes of slot ``dev``'s configuration space, one dword at a time."""
        if not 0 <= offset < offset + size <= 4096:
            raise ValueError(f"configuration offset {offset:#x}+{size} is outside 0..0xfff")
        out = bytearray()
        for dword in range(offset & ~3, offset + size, 4):
            lo, hi = max(offset, dword), min(offset + size, dword + 4)
            out += (await self._read(Space.CFG, dev, lo, hi - lo, max_words=1))
        return bytes(out)

    async def cfg_write(self, dev, offset, data):
        """Write the bytes ``data`` to slot ``dev``'s configuration space, one dword at a time."""
        data = bytes(data)
        if not 0 <= offset < offset + len(data) <= 4096:
            raise ValueError(f"configuration offset {offset:#x}+{len(data)} is outside 0..0xfff")
        for dword in range(offset & ~3, offset + len(data), 4):
            lo, hi = max(offset, dword), min(offset + len(data), dword + 4)
            await self._write(Space.CFG, dev, lo, data[lo - offset:hi - offset], max_words=1)

    async def cfg_read_int(self, dev, offset, size):
        """Read a little-endian integer of ``size`` bytes (1, 2 or 4) from configuration space."""
        return int.from_bytes(await self.cfg_read(dev, offset, size), "little")

    async def cfg_write_int(self, dev, offset, size, value):
        """Write a little-endian integer of ``size`` bytes (1, 2 or 4) to configuration space."""
        await self.cfg_write(dev, offset, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"))


class BarWindow:
    """A BAR as the driver sees it once mapped: reads and writes at offsets into it.

    Like ``pci_iomap`` in Linux (and cocotbext-pcie's ``bar_window``); every access is checked to
    stay inside the BAR.
    """

    def __init__(self, bus, base, size):
        self.bus = bus
        self.base = base
        self.size = size

    def _check(self, offset, n):
        if offset < 0 or n < 0 or offset + n > self.size:
            raise ValueError(f"bytes {offset:#x}..{offset + n:#x} are outside the "
                             f"{self.size:#x}-byte BAR")

    async def read(self, offset, n):
        """Read ``n`` bytes at ``offset``."""
        self._check(offset, n)
        return await self.bus.mem_read(self.base + offset, n)

    async def write(self, offset, data):
        """Write the bytes ``data`` at ``offset``."""
        self._check(offset, len(data))
        await self.bus.mem_write(self.base + offset, data)

    async def read32(self, offset):
        """Read the 32-bit register at ``offset``."""
        return int.from_bytes(await self.read(offset, 4), "little")

    async def write32(self, offset, value):
        """Write the 32-bit register at ``offset``."""
        await self.write(offset, (value & 0xFFFF_FFFF).to_bytes(4, "little"))
