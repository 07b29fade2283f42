"""The guest bus: what the driver model talks to, implemented once per simulation backend.

A backend supplies three things: the data width, the current cycle, and two burst primitives
(:meth:`GuestBus._burst_read`, :meth:`GuestBus._burst_write`) on the device's request and
completion streams. Everything above them is shared: byte-level reads and writes are split here
into aligned bursts with byte enables, and every burst is recorded with its start and end cycle.
"""

import abc
import enum
from dataclasses import dataclass

from vmshm.regmap import BAR_NAMES

__all__ = ["Access", "Transaction", "GuestBus", "BusTimeout", "split_bursts"]

#: Most words one burst carries; matches the core's 8-bit ``count``.
MAX_BURST = 256


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Transaction:
    """One burst on the guest bus, stamped by the BFM that carried it.

    ``start`` is the cycle the request was offered, ``end`` the cycle its last completion beat
    was taken. ``status`` is the completion status name (``"SC"``, ``"UR"``).
    """
    access: Access
    bar: int
    offset: int
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
        return (f"{self.start:>8} {self.end:>8} {self.cycles:>6}  {self.access.value:<5} "
                f"{BAR_NAMES.get(self.bar, f'BAR{self.bar}'):<11} {self.offset:#07x} "
                f"x{self.words:<3} {self.status} {self.label}")


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
    """Memory reads and writes to the device's BARs, as the guest's CPU would issue them.

    Reads of a request the device does not support return all ones, as on PCI; the transaction
    record carries the status.
    """

    def __init__(self):
        self.records = []
        self.label = ""

    # -- what a backend implements ------------------------------------------------------------

    @property
    @abc.abstractmethod
    def data_width(self):
        """Width of the device's data path in bits."""

    @abc.abstractmethod
    def now(self):
        """Return the current cycle."""

    @abc.abstractmethod
    async def _burst_read(self, bar, addr, words, be):
        """Read ``words`` words at aligned byte address ``addr``; return ``(ints, status)``."""

    @abc.abstractmethod
    async def _burst_write(self, bar, addr, beats):
        """Write ``beats``, a list of ``(int, be)``, at ``addr``; return the status name."""

    # -- shared by every backend --------------------------------------------------------------

    @property
    def word_bytes(self):
        return self.data_width // 8

    async def read(self, bar, offset, size):
        """Read ``size`` bytes at byte ``offset`` of BAR ``bar``."""
        wb = self.word_bytes
        out = bytearray(size)
        for addr, n, first_be, _, lo, hi in split_bursts(offset, size, wb):
            start = self.now()
            ints, status = await self._burst_read(bar, addr, n, first_be)
            self.records.append(Transaction(Access.READ, bar, addr, n, start, self.now(),
                                            status, self.label))
            raw = b"".join(v.to_bytes(wb, "little") for v in ints)
            skip = offset + lo - addr
            out[lo:hi] = raw[skip:skip + hi - lo]
        return bytes(out)

    async def write(self, bar, offset, data):
        """Write the bytes ``data`` at byte ``offset`` of BAR ``bar``."""
        wb = self.word_bytes
        data = bytes(data)
        for addr, n, first_be, last_be, lo, hi in split_bursts(offset, len(data), wb):
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
            status = await self._burst_write(bar, addr, beats)
            self.records.append(Transaction(Access.WRITE, bar, addr, n, start, self.now(),
                                            status, self.label))

    async def read32(self, bar, offset):
        """Read the 32-bit register at ``offset`` of BAR ``bar``."""
        return int.from_bytes(await self.read(bar, offset, 4), "little")

    async def write32(self, bar, offset, value):
        """Write the 32-bit register at ``offset`` of BAR ``bar``."""
        await self.write(bar, offset, (value & 0xFFFF_FFFF).to_bytes(4, "little"))
