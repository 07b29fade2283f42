"""The message ring of ``guest/vmshm_channel.h`` in Python, byte for byte (``docs/channel.md``).

One producer and one consumer share a ring of length-prefixed messages in a shared object; a
doorbell tells a sleeping side that the other has moved. A :class:`Channel` is a view of a ring at
an offset of any writable buffer (an ``mmap`` of the POSIX object, or of an ivshmem BAR).

Python has no C11 atomics. The header's words are read and written as single aligned 32-bit
accesses through a ``memoryview`` (atomic on the hardware this runs on); release and acquire
order is what x86 gives every store and load. The one store-load fence the sleep protocol needs
is a locked instruction, taken from a lock's acquire; and every sleep re-checks the ring at least
every :data:`RECHECK` seconds, so even a wake-up lost on a weaker machine costs time, not
correctness.
"""

import threading
import time

__all__ = ["Channel", "PeerDoorbell", "ChannelError", "MAGIC", "VERSION", "HEADER",
           "MIN_CAPACITY", "MAX_CAPACITY", "RECHECK"]

MAGIC = 0x48434D56          # b"VMCH"
VERSION = 1
OFF_MAGIC, OFF_VERSION, OFF_CAPACITY = 0x00, 0x04, 0x08
OFF_HEAD, OFF_PROD_WAITING = 0x40, 0x44
OFF_TAIL, OFF_CONS_WAITING = 0x80, 0x84
HEADER = 0x100
MIN_CAPACITY = 64
MAX_CAPACITY = 1 << 30
#: Seconds a sleeping side waits on its doorbell before it looks at the ring again anyway.
RECHECK = 0.05
_MASK = 0xFFFFFFFF
_FENCE = threading.Lock()


class ChannelError(RuntimeError):
    """The ring is not a channel, or holds something no producer could have written."""


def _record(length):
    return 4 + ((length + 3) & ~3)


def _fence():
    # A lock's acquire is a locked read-modify-write: a full barrier (the store-load one).
    _FENCE.acquire()
    _FENCE.release()


class PeerDoorbell:
    """A doorbell through an :class:`~vmshm.ivshmem.IvshmemPeer`: ring ``target``, wait on ours.

    Parameters
    ----------
    peer : IvshmemPeer
    target : int
        The other side's peer ID.
    vector : int
        The vector rung on the other side, and waited on on this one.
    """

    def __init__(self, peer, target, vector=0):
        self.peer, self.target, self.vector = peer, target, vector
        self.rings = 0
        self.wakes = 0

    def ring(self):
        """Ring the other side."""
        self.rings += 1
        self.peer.ring(self.target, self.vector)

    def wait(self, timeout):
        """Sleep until rung or ``timeout`` seconds; return whether it was rung."""
        got = self.peer.wait(self.vector, timeout) > 0
        self.wakes += got
        return got


class Channel:
    """View one ring at ``offset`` in a buffer; made by :meth:`init` or :meth:`attach`."""

    def __init__(self, buffer, offset, capacity):
        self._buf = memoryview(buffer)
        self._data = self._buf[offset + HEADER:offset + HEADER + capacity]
        self._words = self._buf[offset:offset + HEADER].cast("I")
        self.offset = offset
        self.capacity = capacity

    @staticmethod
    def _check(buffer, offset, size):
        if offset % 64:
            raise ValueError(f"a channel starts 64-byte aligned, not at {offset:#x}")
        if size < HEADER + MIN_CAPACITY or offset + size > len(memoryview(buffer)):
            raise ValueError(f"{size} bytes at {offset:#x} do not hold a channel (at least "
                             f"{HEADER + MIN_CAPACITY}, inside the {len(memoryview(buffer))}-byte "
                             f"buffer)")

    @classmethod
    def init(cls, buffer, offset, size):
        """Lay a new, empty ring over ``size`` bytes at ``offset``: the largest power of two."""
        cls._check(buffer, offset, size)
        cap = MIN_CAPACITY
        while cap < MAX_CAPACITY and cap * 2 <= size - HEADER:
            cap *= 2
        view = memoryview(buffer)
        words = view[offset:offset + HEADER].cast("I")
        words[0] = 0
        view[offset + 4:offset + HEADER] = bytes(HEADER - 4)
        words[OFF_VERSION // 4] = VERSION
        words[OFF_CAPACITY // 4] = cap
        words[0] = MAGIC              # last: a side that sees it sees the rest
        words.release()
        view.release()
        return cls(buffer, offset, cap)

    @classmethod
    def attach(cls, buffer, offset, size, timeout=0.0):
        """Attach to a ring the other side laid out, waiting up to ``timeout`` for its magic."""
        cls._check(buffer, offset, size)
        view = memoryview(buffer)
        words = view[offset:offset + HEADER].cast("I")
        try:
            end = time.monotonic() + timeout
            while words[0] != MAGIC:
                if time.monotonic() >= end:
                    raise ChannelError(f"no channel at {offset:#x} (magic {words[0]:#010x})")
                time.sleep(0.001)
            cap = words[OFF_CAPACITY // 4]
            if (words[OFF_VERSION // 4] != VERSION or not MIN_CAPACITY <= cap <= MAX_CAPACITY
                    or cap & (cap - 1) or cap > size - HEADER):
                raise ChannelError(f"the channel at {offset:#x} has version "
                                   f"{words[OFF_VERSION // 4]} and capacity {cap}; this side "
                                   f"speaks version {VERSION} within {size} bytes")
        finally:
            words.release()
            view.release()
        return cls(buffer, offset, cap)

    def close(self):
        """Release the views (so the underlying mmap may be closed)."""
        self._words.release()
        self._data.release()
        self._buf.release()

    @property
    def max_message(self):
        """The largest message this ring carries."""
        return self.capacity - 4

    def _w(self, off):
        return self._words[off // 4]

    def _set(self, off, value):
        self._words[off // 4] = value & _MASK

    def _copy_in(self, pos, data):
        at = pos & (self.capacity - 1)
        first = min(len(data), self.capacity - at)
        self._data[at:at + first] = data[:first]
        if first < len(data):
            self._data[:len(data) - first] = data[first:]

    def _copy_out(self, pos, n):
        at = pos & (self.capacity - 1)
        first = min(n, self.capacity - at)
        out = bytes(self._data[at:at + first])
        if first < n:
            out += bytes(self._data[:n - first])
        return out

    def used(self):
        """Bytes of records in the ring now."""
        return (self._w(OFF_HEAD) - self._w(OFF_TAIL)) & _MASK

    def try_send(self, message):
        """Put ``message`` in the ring; return whether the consumer sleeps and must be rung.

        Returns None when it does not fit now; raises ValueError when it never will.
        """
        message = bytes(message)
        if not 1 <= len(message) <= self.max_message:
            raise ValueError(f"a message is 1..{self.max_message} bytes, not {len(message)}")
        need = _record(len(message))
        head = self._w(OFF_HEAD)
        if self.capacity - ((head - self._w(OFF_TAIL)) & _MASK) < need:
            return None
        self._copy_in(head, len(message).to_bytes(4, "little"))
        self._copy_in(head + 4, message)
        self._set(OFF_HEAD, head + need)
        _fence()
        return self._w(OFF_CONS_WAITING) != 0

    def try_recv(self):
        """Take one message; return ``(message, ring_producer)``, or None when empty."""
        tail = self._w(OFF_TAIL)
        head = self._w(OFF_HEAD)
        if head == tail:
            return None
        length = int.from_bytes(self._copy_out(tail, 4), "little")
        if not 1 <= length <= self.max_message or _record(length) > ((head - tail) & _MASK):
            raise ChannelError(f"a corrupt ring at {self.offset:#x}: a record of {length} bytes "
                               f"with {(head - tail) & _MASK} bytes in the ring")
        message = self._copy_out(tail + 4, length)
        self._set(OFF_TAIL, tail + _record(length))
        _fence()
        return message, self._w(OFF_PROD_WAITING) != 0

    def _sleep(self, flag, ready, doorbell, end):
        self._set(flag, 1)
        _fence()
        try:
            while not ready():
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("the channel's other side did not move in time")
                doorbell.wait(RECHECK if left is None else min(left, RECHECK))
        finally:
            self._set(flag, 0)

    def send(self, message, doorbell, timeout=None):
        """Send ``message``, sleeping on ``doorbell`` while the ring is full."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            ring = self.try_send(message)
            if ring is not None:
                if ring:
                    doorbell.ring()
                return
            need = _record(len(message))
            self._sleep(OFF_PROD_WAITING,
                        lambda: self.capacity - self.used() >= need, doorbell, end)

    def recv(self, doorbell, timeout=None):
        """Receive one message, sleeping on ``doorbell`` while the ring is empty."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            got = self.try_recv()
            if got is not None:
                message, ring = got
                if ring:
                    doorbell.ring()
                return message
            self._sleep(OFF_CONS_WAITING, lambda: self.used() != 0, doorbell, end)


class SharedVector:
    """One of a peer's vectors shared by several channels (threads): every ring wakes them all.

    An eventfd's count goes to whichever reader comes first; with several channels on one vector
    (a guest rings the host's vector 0 for each of its channels) a thread reads it and wakes
    every waiter, each of which looks at its own ring. ``doorbell(target)`` gives a channel's
    doorbell: ring ``target``'s ``vector``, wait on this one.
    """

    def __init__(self, peer, vector=0):
        self.peer, self.vector = peer, vector
        self._cond = threading.Condition()
        self._generation = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"ivshmem-vector-{vector}")
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                got = self.peer.wait(self.vector, 0.1)
            except (OSError, ValueError):
                return                   # the peer was closed
            if got:
                with self._cond:
                    self._generation += 1
                    self._cond.notify_all()

    def close(self):
        """Stop the reading thread."""
        self._stop = True
        self._thread.join(timeout=1)

    def doorbell(self, target, vector=None):
        """Return a doorbell that rings ``target`` (its ``vector``, default ours) and waits here."""
        shared = self

        class _Doorbell:
            rings = 0
            wakes = 0
            seen = self._generation

            def ring(self):
                self.rings += 1
                shared.peer.ring(target, shared.vector if vector is None else vector)

            def wait(self, timeout):
                with shared._cond:
                    if shared._generation == self.seen:
                        shared._cond.wait(timeout)
                    woke = shared._generation != self.seen
                    self.seen = shared._generation
                self.wakes += woke
                return woke

        return _Doorbell()
