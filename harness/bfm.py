"""Bus-functional models written once, for every simulation backend.

A backend supplies a :class:`StreamIO`: how to offer and take one beat on a stream, how to let
cycles pass, and the current cycle. Everything above that (how a guest burst becomes request
beats, how the host answers OPEN, CLOSE and DMA) lives here, so the Amaranth simulator and cocotb
runs make the same decisions on the same cycles, and their transaction records match.

Cycle semantics every :class:`StreamIO` keeps: a BFM acts at a *drive point*, just after a rising
clock edge; a beat moves at the next edge where ``valid`` and ``ready`` are both high, and the
call returns at the drive point after that edge. ``now()`` is the number of edges since reset.
"""

import abc
from typing import NamedTuple

from vmshm.driver_model.bus import BusTimeout, GuestBus, Space
from vmshm.abi.regmap import CtlOp, Status
from vmshm.rtl.layouts import TAG_BITS, CplStatus
from vmshm.rtl.layouts import Space as RtlSpace

__all__ = ["StreamIO", "StreamGuestBus", "HostBFM", "HostEvent", "DEFAULT_BUS_TIMEOUT",
           "bus_timeout", "pack_payload"]

#: Cycles a guest BFM waits for any beat before it calls the device hung.
DEFAULT_BUS_TIMEOUT = 1 << 18


def bus_timeout(host_timeout):
    """Return how long a guest BFM waits on a device whose host timeout is ``host_timeout``.

    Well past the device's own timeout (which always answers first), so it only trips on a
    hardware bug; 0 ("wait for ever") still gets a bound.
    """
    return 4 * max(host_timeout, DEFAULT_BUS_TIMEOUT >> 2)


class HostEvent(NamedTuple):
    """One handshake on a device's host side, stamped by :class:`HostBFM` (see its ``events``).

    ``cycle`` is ``io.now()`` when the BFM's call returned, that is the edge that moved the beat.
    ``kind`` is ``"ctl_req_first"``, ``"ctl_req_last"`` (first and last beat of OPEN's name or
    of CLOSE), ``"ctl_rsp"`` (the host's answer taken), ``"dma_req_first"``, ``"dma_req_last"``
    (a read's one request beat is both; a write's first and last data beats), ``"dma_rsp_first"``
    or ``"dma_rsp_last"`` (a read's first and last data beats; a write's one ack is both).
    ``"db"`` is a doorbell taken (op ``"DOORBELL"``), ``"ring"`` a ring the device took (op
    ``"RING"``).
    ``op`` is ``"OPEN"``, ``"CLOSE"``, ``"READ"`` or ``"WRITE"``. The timing study
    (:mod:`vmshm.timing`) splits each guest transaction into phases at these stamps.
    """
    cycle: int
    kind: str
    op: str


def pack_payload(layout, values):
    """Return ``values`` (a dict of field values) packed into one integer by ``layout``.

    Fields are placed at their layout offsets, first field in the low bits, as in the Verilog.
    """
    raw = 0
    for name, fld in layout:
        value = int(values.get(name, 0))
        raw |= (value & ((1 << fld.width) - 1)) << fld.offset
    return raw


class StreamIO(abc.ABC):
    """One backend's way of moving beats on the device's streams."""

    @abc.abstractmethod
    async def put(self, stream, payload, *, valid_gate=None, timeout=None):
        """Offer ``payload`` (a dict of field values) on ``stream``; return once it was taken.

        ``valid_gate``, if given, is called once per try and returns whether to offer the beat
        in that try: a source that stalls. A try with the beat offered lasts until it is taken.
        """

    @abc.abstractmethod
    async def get(self, stream, *, ready_gate=None, timeout=None):
        """Take one beat from ``stream`` and return it (fields readable as attributes).

        ``ready_gate``, if given, is called once per try and returns whether to be ready in that
        try: a sink applying back-pressure. A try with ready high lasts until a beat comes.
        """

    @abc.abstractmethod
    async def wait(self, cycles):
        """Let ``cycles`` clock edges pass."""

    @abc.abstractmethod
    def now(self):
        """Return the number of clock edges since reset."""

    def peek(self, signal):
        """Return the value of ``signal`` (a backend's handle) now."""
        raise NotImplementedError(f"{type(self).__name__} cannot read signals")


class StreamGuestBus(GuestBus):
    """The guest bus on a system's request and completion streams, over any :class:`StreamIO`.

    Parameters
    ----------
    io : StreamIO
        The backend.
    req, cpl
        The backend's handles of the bus request and completion streams.
    intx : list, optional
        The backend's handles of each slot's INTx line, read with ``io.peek``.
    data_width : int
        The bus's data width in bits.
    timeout : int
        Cycles without progress after which the device is called hung
        (:exc:`~vmshm.driver_model.bus.BusTimeout`).
    reset : async callable, optional
        Resets the devices and their host side; what :meth:`reset` awaits.
    """

    def __init__(self, io, req, cpl, data_width, *, timeout=DEFAULT_BUS_TIMEOUT, reset=None,
                 intx=()):
        super().__init__()
        self._intx = list(intx)
        #: Called (no arguments) before each operation runs the clock: the harness drives the
        #: host ports' peer IDs and wakes its ring processes there (:meth:`HostBFM.ring_process`).
        self.before_clock = None
        self._reset = reset
        self._io = io
        self._req = req
        self._cpl = cpl
        self._data_width = data_width
        self._timeout = timeout

    @property
    def data_width(self):
        return self._data_width

    @property
    def timeout(self):
        """Cycles without progress before a wait gives up (``None``: wait for ever)."""
        return self._timeout

    @timeout.setter
    def timeout(self, cycles):
        self._timeout = cycles

    def now(self):
        return self._io.now()

    async def reset(self):
        """Reset every device on the bus and its host side, as a PCI function reset does."""
        if self._reset is None:
            raise NotImplementedError("this backend has no way to reset the device")
        await self._reset()

    def intx(self, dev=0):
        return int(self._io.peek(self._intx[dev]))

    def _before_clock(self):
        if self.before_clock is not None:
            self.before_clock()

    async def idle(self, cycles):
        """Let ``cycles`` clock edges pass, one wake-up each: the backend's bare cost per cycle."""
        self._before_clock()
        for _ in range(cycles):
            await self._io.wait(1)

    @staticmethod
    def _header(space, dev, addr, write, count):
        return {"space": RtlSpace.CFG if space is Space.CFG else RtlSpace.MEM,
                "dev": dev or 0, "addr": addr, "write": write, "count": count}

    async def _burst_read(self, space, dev, addr, words, be):
        try:
            return await self._burst_read_now(space, dev, addr, words, be)
        except BusTimeout:
            raise self._hung("read", space, addr) from None

    async def _burst_write(self, space, dev, addr, beats):
        try:
            return await self._burst_write_now(space, dev, addr, beats)
        except BusTimeout:
            raise self._hung("write", space, addr) from None

    def _hung(self, what, space, addr):
        where = "configuration space" if space is Space.CFG else "memory"
        return BusTimeout(f"the device did not answer a {where} {what} at {addr:#x} within "
                          f"{self._timeout} cycles: it has stopped answering, a hardware bug "
                          f"(every request must be answered in bounded time)")

    async def _burst_read_now(self, space, dev, addr, words, be):
        io = self._io
        self._before_clock()
        await io.put(self._req, {**self._header(space, dev, addr, 0, words - 1),
                                 "data": 0, "be": be}, timeout=self._timeout)
        out, status = [], CplStatus.SC
        for _ in range(words):
            beat = await io.get(self._cpl, timeout=self._timeout)
            out.append(int(beat.data))
            status = max(status, CplStatus(beat.status))
        return out, status.name

    async def _burst_write_now(self, space, dev, addr, beats):
        io = self._io
        self._before_clock()
        header = self._header(space, dev, addr, 1, len(beats) - 1)
        for data, be in beats:
            await io.put(self._req, {**header, "data": data, "be": be}, timeout=self._timeout)
        beat = await io.get(self._cpl, timeout=self._timeout)
        return CplStatus(beat.status).name


#: Event names of the control channel's operations.
_CTL_OPS = {CtlOp.OPEN: "OPEN", CtlOp.CLOSE: "CLOSE"}


class HostBFM:
    """Connect a :class:`~vmshm.host_model.HostModel` to one device's host side.

    The model decides what the host answers; this class decides when, from its
    :class:`~vmshm.host_model.HostTiming`: latencies and random back-pressure drawn from a seeded
    generator, so a run is repeatable and every backend draws the same numbers on the same
    cycles.

    Each process draws its back-pressure from its own generator, so the draws of one never
    shift those of the other, whatever order a backend runs them in.

    Parameters
    ----------
    port
        The backend's handle of the device's host side, with ``ctl_req``, ``ctl_rsp``,
        ``dma_req`` and ``dma_rsp`` streams as attributes.
    data_width : int
        The device's data width in bits.
    host : HostModel
    timing : HostTiming
    bus_address : int
        The host bus address of the object's first byte, told to the device in the answer to a
        successful OPEN (``ctl_rsp``'s ``addr``). 0 when the device's DMA is served here by
        offset; a front end whose DMA goes out on a real bus (the UltraScale+ shim) needs where
        the host mapped the object.

    Attributes
    ----------
    events : list of HostEvent
        Every handshake of both processes, in order, stamped with the cycle it happened on.
    """

    def __init__(self, port, data_width, host, timing, *, bus_address=0):
        self._port = port
        self._wb = data_width // 8
        self.host = host
        self.timing = timing
        self.bus_address = bus_address
        # Stamps only: appending never waits, so every backend keeps the same handshakes.
        self.events = []
        # RESETs seen on the control channel: the DMA process drops work from before one.
        self._resets = 0

    def _stamp(self, io, kind, op):
        self.events.append(HostEvent(io.now(), kind, op))

    def _gates(self, *channels):
        # A gate of None skips the per-cycle draw: the stream helpers then sleep through idle
        # cycles instead of waking at every edge.
        stalls = self.timing.stalls()
        return [getattr(stalls, ch) if getattr(self.timing, ch) < 1 else None
                for ch in channels]

    def _faults(self, channel, exchange):
        faults = self.timing.faults
        return faults.of(channel, exchange) if faults else {}

    async def _stall(self, io, channel, exchange, beat):
        faults = self.timing.faults
        cycles = faults.stall(channel, exchange, beat) if faults else 0
        if cycles:
            await io.wait(cycles)

    async def _answer(self, io, stream, beats, faults, gate, *, unasked):
        """Offer the answer ``beats`` (payload dicts) on ``stream`` as ``faults`` say.

        Yields ``"first"`` after the first beat moved and ``"last"`` after the last, for the
        caller's stamps; a dropped answer yields nothing.
        """
        if "unasked" in faults:
            for beat in unasked:
                await io.put(stream, beat, valid_gate=gate)
        if "drop" in faults:
            return
        for i, beat in enumerate(beats):
            await io.put(stream, beat, valid_gate=gate)
            if i == 0:
                yield "first"
        yield "last"
        if "double" in faults:
            for beat in beats:
                await io.put(stream, beat, valid_gate=gate)

    def device_reset(self):
        """Take a RESET packet: the device was reset (or gave up on the packet), so nothing
        stays open for it and DMA from before it is not answered."""
        self._resets += 1
        self.host.reset()

    def control(self, op, name):
        """Return the host's ``(status, size, addr)`` answer to control packet ``op`` ``name``.

        The rules of every backend's control channel (the native one calls this too).
        """
        if op == CtlOp.OPEN:
            status, size = self.host.open(name)
            return status, size, self.bus_address if status == Status.OK else 0
        if op == CtlOp.CLOSE:
            return self.host.close(), 0, 0
        return Status.EIO, 0, 0

    async def ctl_process(self, io):
        """Answer OPEN and CLOSE for ever on ``io``: run in the background.

        A packet holding a RESET beat (the device was reset, or gave up on the packet half-way)
        is dropped, releases the open object and gets no answer. Answers echo the request's
        ``op`` and ``tag``. ``timing.faults`` may make the host misbehave.
        """
        port, t = self._port, self.timing
        gate, rsp_gate = self._gates("ctl_ready", "rsp_valid")
        exchange = 0
        while True:
            await self._stall(io, "ctl", exchange, 0)
            beat = await io.get(port.ctl_req, ready_gate=gate)
            op, name = int(beat.op), bytearray([int(beat.data)])
            reset = op == CtlOp.RESET
            what = _CTL_OPS.get(op, f"op{op}")
            if not reset:
                self._stamp(io, "ctl_req_first", what)
            while not beat.last:
                await self._stall(io, "ctl", exchange, len(name))
                beat = await io.get(port.ctl_req, ready_gate=gate)
                name.append(int(beat.data))
                reset |= int(beat.op) == CtlOp.RESET
            tag = int(beat.tag)
            faults = self._faults("ctl", exchange)
            exchange += 1
            if reset:
                self.device_reset()
                self._stamp(io, "reset", "RESET")
                continue
            self._stamp(io, "ctl_req_last", what)
            status, size, addr = self.control(op, bytes(name))
            await io.wait(t.ctl_latency + (faults["late"].cycles if "late" in faults else 0))
            answer = {"status": status, "size": size, "addr": addr, "op": op, "tag": tag}
            bogus = {**answer, "status": Status.OK, "size": 1 << 20,
                     "tag": (tag + (1 << (TAG_BITS - 1))) % (1 << TAG_BITS)}
            async for point in self._answer(io, port.ctl_rsp, [answer], faults, rsp_gate,
                                            unasked=[bogus]):
                if point == "last":
                    self._stamp(io, "ctl_rsp", what)

    async def dma_process(self, io):
        """Serve window reads and writes for ever on ``io``: run in the background.

        Answer beats echo the request's ``tag``. A write cut off by a reset of the device (the
        control channel saw RESET since its first beat) is dropped, and the next beat starts a
        new request; nothing is answered to a request from before a reset.
        """
        port, t, wb = self._port, self.timing, self._wb
        gate, rsp_gate = self._gates("dma_ready", "rsp_valid")
        exchange = 0
        beat = None
        while True:
            if beat is None:
                await self._stall(io, "dma", exchange, 0)
                beat = await io.get(port.dma_req, ready_gate=gate)
            epoch = self._resets
            addr, words, tag = int(beat.addr), int(beat.count) + 1, int(beat.tag)
            what = "WRITE" if beat.write else "READ"
            self._stamp(io, "dma_req_first", what)
            faults = self._faults("dma", exchange)
            exchange += 1
            if beat.write:
                data, mask = bytearray(), []
                cut = None
                for i in range(words):
                    if i:
                        await self._stall(io, "dma", exchange - 1, i)
                        beat = await io.get(port.dma_req, ready_gate=gate)
                        if self._resets != epoch:
                            cut = beat
                            break
                    data += int(beat.data).to_bytes(wb, "little")
                    be = int(beat.be)
                    mask += [bool(be >> b & 1) for b in range(wb)]
                beat = cut
                if cut is not None:
                    continue
                self._stamp(io, "dma_req_last", what)
                ok = self.host.dma_write(addr, bytes(data), mask)
                await io.wait(t.dma_latency + (faults["late"].cycles if "late" in faults else 0))
                if self._resets != epoch:
                    continue
                answer = [{"data": 0, "err": not ok, "last": 1, "tag": tag}]
            else:
                beat = None
                self._stamp(io, "dma_req_last", what)
                data, ok = self.host.dma_read(addr, words * wb)
                await io.wait(t.dma_latency + (faults["late"].cycles if "late" in faults else 0))
                if self._resets != epoch:
                    continue
                answer = [{"data": int.from_bytes(data[i * wb:(i + 1) * wb], "little"),
                           "err": not ok, "last": i == words - 1, "tag": tag}
                          for i in range(words)]
            bogus = [{**a, "data": (1 << (8 * wb)) - 1,
                      "tag": (tag + (1 << (TAG_BITS - 1))) % (1 << TAG_BITS)} for a in answer]
            async for point in self._answer(io, port.dma_rsp, answer, faults, rsp_gate,
                                            unasked=bogus):
                self._stamp(io, f"dma_rsp_{point}", what)

    async def db_process(self, io):
        """Take the device's doorbells for ever on ``io``: run in the background.

        Always ready, unless ``timing.faults`` stalls a doorbell (channel ``"db"``); each one
        taken goes to :meth:`HostModel.doorbell <vmshm.host_model.HostModel.doorbell>`.
        """
        port = self._port
        exchange = 0
        while True:
            await self._stall(io, "db", exchange, 0)
            beat = await io.get(port.db)
            exchange += 1
            self._stamp(io, "db", "DOORBELL")
            self.host.doorbell(int(beat.peer), int(beat.vector))

    async def ring_process(self, io, wake):
        """Deliver the host's queued rings on the device's ``ring`` port for ever: background.

        One ring a cycle (the device is always ready). ``wake`` is an async callable that
        returns once rings may have been queued: the harness makes it return when its guest bus
        next runs the clock with rings pending (:attr:`StreamGuestBus.before_clock`), so a ring
        queued at a drive point moves at the next edge on every backend.
        """
        while True:
            rings = self.host.take_rings()
            for vector in rings:
                await io.put(self._port.ring, {"vector": vector})
                self._stamp(io, "ring", "RING")
            if not rings:
                await wake()
