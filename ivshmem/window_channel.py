"""The channel of ``docs/channel.md`` on the guest side of a simulated VMShm device.

:class:`WindowChannel` is the ring of :mod:`.channel` (and ``guest/vmshm_channel.h``) reached
through a guest mapping of the device's window (``VMShmDriver.mmap``: ``await read(offset, n)``,
``await write(offset, data)``), so every load and store is a bus transaction the simulation
counts in cycles. :class:`GuestDoorbell` rings a peer (DOORBELL) and waits for the device's
interrupt through the driver model's ioctl and blocking read. Both run in a guest function on
any backend.

Same bytes, same protocol as the C header; what differs is only which loads are made, since each
one is a round trip over the bus: a side keeps its own index (it is the only writer) instead of
loading it, keeps the last value it loaded of the other's and loads it again only when that value
says the ring is full (producer) or empty (consumer), and writes a record's length and message in
one store (one burst). The bus completes requests in order, one at a time, so a store is in the
object before the next access starts: that is the store-load fence the sleep protocol needs.
"""

from vmshm.driver_model.driver import VMSHM_IOCTL_RING

from .channel import (HEADER, MAGIC, MAX_CAPACITY, MIN_CAPACITY, OFF_CAPACITY, OFF_CONS_WAITING,
                      OFF_HEAD, OFF_MAGIC, OFF_PROD_WAITING, OFF_TAIL, OFF_VERSION, VERSION,
                      ChannelError, _record)

__all__ = ["WindowChannel", "GuestDoorbell"]

_MASK = 0xFFFFFFFF


def _u32(raw):
    return int.from_bytes(raw, "little")


class GuestDoorbell:
    """Ring ``target``'s ``vector`` and wait for this device's interrupt, through the driver.

    As a Linux guest program on ``/dev/vmshm0`` does: ``ioctl(VMSHM_IOCTL_RING, target << 16 |
    vector)`` writes DOORBELL, and a blocking ``read`` returns once the device has interrupted
    (the driver's handler acknowledges INTR_STATUS). Any vector wakes it; the channel looks at
    its ring again after every wake, so a wake meant for another channel costs one look.

    Parameters
    ----------
    driver : VMShmDriver
    fd : int
        The driver's open file.
    target : int
        The peer rung (0..65535).
    vector : int
        The vector rung on ``target`` (0..65535).
    """

    def __init__(self, driver, fd, target, vector=0):
        if not 0 <= target <= 0xFFFF or not 0 <= vector <= 0xFFFF:
            raise ValueError(f"a doorbell rings a peer 0..65535 on a vector 0..65535, not peer "
                             f"{target} vector {vector}")
        self.driver, self.fd, self.target, self.vector = driver, fd, target, vector
        self.rings = self.wakes = 0

    async def ring(self):
        """Write ``target << 16 | vector`` to DOORBELL (``VMSHM_IOCTL_RING``)."""
        self.rings += 1
        await self.driver.ioctl(self.fd, VMSHM_IOCTL_RING, self.target << 16 | self.vector)

    async def wait(self, cycles):
        """Wait up to ``cycles`` for an interrupt; return whether one came."""
        woke = await self.driver.read(self.fd, timeout=cycles) > 0
        self.wakes += woke
        return woke


class WindowChannel:
    """One ring at ``offset`` of a guest mapping of the window; make it with :meth:`attach`."""

    def __init__(self, mapping, offset, capacity):
        self.mapping, self.offset, self.capacity = mapping, offset, capacity
        self._data = offset + HEADER
        self._head = self._tail = None          # own index (kept), other's (last loaded)

    @classmethod
    async def attach(cls, mapping, offset):
        """Attach to the ring another side laid out at ``offset`` (magic, version, capacity)."""
        if offset % 64:
            raise ValueError(f"a channel starts 64-byte aligned, not at {offset:#x}")
        raw = await mapping.read(offset + OFF_MAGIC, 12)
        magic, version, cap = _u32(raw[0:4]), _u32(raw[4:8]), _u32(raw[8:12])
        if magic != MAGIC:
            raise ChannelError(f"no channel at {offset:#x} (magic {magic:#010x})")
        if (version != VERSION or not MIN_CAPACITY <= cap <= MAX_CAPACITY or cap & (cap - 1)
                or offset + HEADER + cap > mapping.length):
            raise ChannelError(f"the channel at {offset:#x} has version {version} and capacity "
                               f"{cap}; this side speaks version {VERSION} within the "
                               f"{mapping.length}-byte mapping")
        ch = cls(mapping, offset, cap)
        words = await mapping.read(offset + OFF_HEAD, 4), await mapping.read(offset + OFF_TAIL, 4)
        ch._head, ch._tail = _u32(words[0]), _u32(words[1])
        return ch

    @property
    def max_message(self):
        """The largest message this ring carries."""
        return self.capacity - 4

    async def _load(self, off):
        return _u32(await self.mapping.read(self.offset + off, 4))

    async def _store(self, off, value):
        await self.mapping.write(self.offset + off, (value & _MASK).to_bytes(4, "little"))

    async def _copy_in(self, pos, data):
        at = pos & (self.capacity - 1)
        first = min(len(data), self.capacity - at)
        await self.mapping.write(self._data + at, data[:first])
        if first < len(data):
            await self.mapping.write(self._data, data[first:])

    async def _copy_out(self, pos, n):
        at = pos & (self.capacity - 1)
        first = min(n, self.capacity - at)
        out = await self.mapping.read(self._data + at, first)
        if first < n:
            out += await self.mapping.read(self._data, n - first)
        return out

    # --- producer --------------------------------------------------------------------------

    async def try_send(self, message):
        """Put ``message`` in the ring; return whether the consumer sleeps and must be rung.

        Returns None when it does not fit now; raises ValueError when it never will.
        """
        message = bytes(message)
        if not 1 <= len(message) <= self.max_message:
            raise ValueError(f"a message is 1..{self.max_message} bytes, not {len(message)}")
        need = _record(len(message))
        head = self._head
        if self.capacity - ((head - self._tail) & _MASK) < need:
            self._tail = await self._load(OFF_TAIL)
            if self.capacity - ((head - self._tail) & _MASK) < need:
                return None
        # The length word and the message in one store, padded to the record's end.
        record = len(message).to_bytes(4, "little") + message + bytes(need - 4 - len(message))
        await self._copy_in(head, record)
        self._head = (head + need) & _MASK
        await self._store(OFF_HEAD, self._head)
        return await self._load(OFF_CONS_WAITING) != 0

    async def send(self, message, doorbell, *, cycles=1 << 20):
        """Send ``message``, sleeping on ``doorbell`` while the ring is full (``cycles`` a sleep)."""
        need = _record(len(message))
        while True:
            ring = await self.try_send(message)
            if ring is not None:
                if ring:
                    await doorbell.ring()
                return
            await self._store(OFF_PROD_WAITING, 1)
            self._tail = await self._load(OFF_TAIL)
            if self.capacity - ((self._head - self._tail) & _MASK) < need:
                if not await doorbell.wait(cycles):
                    await self._store(OFF_PROD_WAITING, 0)
                    raise TimeoutError(f"the consumer freed no room within {cycles} cycles")
            await self._store(OFF_PROD_WAITING, 0)

    # --- consumer --------------------------------------------------------------------------

    async def try_recv(self):
        """Take one message; return ``(message, ring_producer)``, or None when empty."""
        tail = self._tail
        if self._head == tail:
            self._head = await self._load(OFF_HEAD)
            if self._head == tail:
                return None
        avail = (self._head - tail) & _MASK
        length = _u32(await self._copy_out(tail, 4))
        if not 1 <= length <= self.max_message or _record(length) > avail:
            raise ChannelError(f"a corrupt ring at {self.offset:#x}: a record of {length} bytes "
                               f"with {avail} bytes in the ring")
        message = await self._copy_out(tail + 4, length)
        self._tail = (tail + _record(length)) & _MASK
        await self._store(OFF_TAIL, self._tail)
        return message, await self._load(OFF_PROD_WAITING) != 0

    async def recv(self, doorbell, *, cycles=1 << 20):
        """Receive one message, sleeping on ``doorbell`` while the ring is empty."""
        while True:
            got = await self.try_recv()
            if got is not None:
                message, ring = got
                if ring:
                    await doorbell.ring()
                return message
            await self._store(OFF_CONS_WAITING, 1)
            self._head = await self._load(OFF_HEAD)
            if self._head == self._tail:
                if not await doorbell.wait(cycles):
                    await self._store(OFF_CONS_WAITING, 0)
                    raise TimeoutError(f"the producer sent nothing within {cycles} cycles")
            await self._store(OFF_CONS_WAITING, 0)
