"""Bus-functional models for Amaranth's simulator: the guest bus and the host's two ports.

One pair of stream helpers (:func:`stream_put`, :func:`stream_get`) carries every handshake. They
sleep through idle cycles on signal changes instead of waking at every clock edge, and decide each
transfer on values sampled at the edge, so several BFMs can share a stream without races.
"""

from vmshm.driver_model.bus import BusTimeout, GuestBus, Space
from vmshm.regmap import CtlOp, Status
from vmshm.rtl.layouts import CplStatus
from vmshm.rtl.layouts import Space as RtlSpace

__all__ = ["CLOCK_PERIOD", "stream_put", "stream_get", "wait_cycles", "AmaranthGuestBus",
           "HostBFM"]

#: Simulated clock period in seconds (100 MHz). Cycle counts do not depend on it.
CLOCK_PERIOD = 10e-9


async def wait_cycles(ctx, n):
    """Let ``n`` clock edges pass, waking once instead of ``n`` times."""
    if n <= 0:
        return
    if n > 1:
        # Land mid-cycle, clear of the edge, then take the edge itself.
        await ctx.delay((n - 1) * CLOCK_PERIOD + CLOCK_PERIOD / 2)
    await ctx.tick()


async def _idle_until(ctx, stream, signal, timeout):
    # Sleep until `signal` may be high instead of waking at every edge; the timeout bounds a wait
    # on a device that never answers.
    if ctx.get(signal):
        return
    if timeout is None:
        await ctx.changed(signal)
        return
    _, expired = await ctx.changed(signal).delay(timeout * CLOCK_PERIOD)
    if expired and not ctx.get(signal):
        raise BusTimeout(f"nothing happened on {stream!r} for {timeout} cycles")


async def stream_put(ctx, stream, payload, *, valid_gate=None, timeout=None):
    """Offer ``payload`` on ``stream`` and return at the clock edge that took it.

    ``valid_gate``, if given, is called each cycle and returns whether to offer the payload in
    that cycle: a source that stalls. ``timeout`` (cycles) bounds each idle wait and raises
    :exc:`~vmshm.driver_model.bus.BusTimeout`.
    """
    ctx.set(stream.payload, payload)
    while True:
        offer = valid_gate() if valid_gate is not None else True
        ctx.set(stream.valid, offer)
        if offer:
            await _idle_until(ctx, stream, stream.ready, timeout)
        _, _, ready = await ctx.tick().sample(stream.ready)
        if offer and ready:
            break
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, ready_gate=None, timeout=None):
    """Take one payload from ``stream`` at a clock edge and return it.

    ``ready_gate``, if given, is called each cycle and returns whether to be ready in that cycle:
    a sink that applies back-pressure. ``timeout`` (cycles) bounds each idle wait and raises
    :exc:`~vmshm.driver_model.bus.BusTimeout`.
    """
    while True:
        ready = ready_gate() if ready_gate is not None else True
        ctx.set(stream.ready, ready)
        if ready:
            await _idle_until(ctx, stream, stream.valid, timeout)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if ready and valid:
            break
    ctx.set(stream.ready, 0)
    return payload


class AmaranthGuestBus(GuestBus):
    """The guest bus on a :class:`~vmshm.rtl.VMShmSystem`'s request and completion streams.

    Parameters
    ----------
    ctx : SimulatorContext
        The testbench's context.
    system : VMShmSystem
        The PCI segment with its devices.
    cycle : Signal
        A free-running cycle counter (see :class:`~vmshm.sim.harness.Harness`).
    timeout : int
        Cycles to wait for any beat before raising :exc:`BusTimeout`; the devices' own host
        timeout is shorter, so this only trips on a hardware bug.
    """

    def __init__(self, ctx, system, cycle, *, timeout=None):
        super().__init__()
        self._ctx = ctx
        self._system = system
        self._cycle = cycle
        host_timeout = system.functions[0].host_timeout
        self._timeout = timeout if timeout is not None else 4 * max(host_timeout, 1 << 16)

    @property
    def data_width(self):
        return self._system.data_width

    def now(self):
        return self._ctx.get(self._cycle)

    def _header(self, space, dev, addr, write, count):
        return {"space": RtlSpace.CFG if space is Space.CFG else RtlSpace.MEM,
                "dev": dev or 0, "addr": addr, "write": write, "count": count}

    async def _burst_read(self, space, dev, addr, words, be):
        ctx, sys_ = self._ctx, self._system
        await stream_put(ctx, sys_.req, {**self._header(space, dev, addr, 0, words - 1),
                                         "data": 0, "be": be}, timeout=self._timeout)
        out, status = [], CplStatus.SC
        for _ in range(words):
            beat = await stream_get(ctx, sys_.cpl, timeout=self._timeout)
            out.append(beat.data)
            status = max(status, CplStatus(beat.status))
        return out, status.name

    async def _burst_write(self, space, dev, addr, beats):
        ctx, sys_ = self._ctx, self._system
        header = self._header(space, dev, addr, 1, len(beats) - 1)
        for data, be in beats:
            await stream_put(ctx, sys_.req, {**header, "data": data, "be": be},
                             timeout=self._timeout)
        beat = await stream_get(ctx, sys_.cpl, timeout=self._timeout)
        return CplStatus(beat.status).name


class HostBFM:
    """Connect a :class:`~vmshm.host_model.HostModel` to the core's control and DMA ports.

    The model decides what the host answers; this class decides when, from its
    :class:`~vmshm.host_model.HostTiming`: latencies and random back-pressure drawn from a seeded
    generator, so a run is repeatable.
    """

    def __init__(self, port, data_width, host, timing):
        self._port = port
        self._wb = data_width // 8
        self.host = host
        self.timing = timing
        stalls = timing.stalls()
        # A gate of None skips the per-cycle draw: the stream helpers then sleep through idle
        # cycles instead of waking at every edge.
        self._ctl_ready = stalls.ctl_ready if timing.ctl_ready < 1 else None
        self._dma_ready = stalls.dma_ready if timing.dma_ready < 1 else None
        self._rsp_valid = stalls.rsp_valid if timing.rsp_valid < 1 else None

    async def ctl_process(self, ctx):
        """Answer OPEN and CLOSE for ever: add with ``add_testbench(..., background=True)``."""
        port, t = self._port, self.timing
        gate = self._ctl_ready
        while True:
            beat = await stream_get(ctx, port.ctl_req, ready_gate=gate)
            op, name = beat.op, bytearray()
            name.append(beat.data)
            while not beat.last:
                beat = await stream_get(ctx, port.ctl_req, ready_gate=gate)
                name.append(beat.data)
            if op == CtlOp.OPEN:
                status, size = self.host.open(bytes(name))
            elif op == CtlOp.CLOSE:
                status, size = self.host.close(), 0
            else:
                status, size = Status.EIO, 0
            await wait_cycles(ctx, t.ctl_latency)
            await stream_put(ctx, port.ctl_rsp, {"status": status, "size": size},
                             valid_gate=self._rsp_valid)

    async def dma_process(self, ctx):
        """Serve window reads and writes for ever: add with ``add_testbench(..., background=True)``."""
        port, t = self._port, self.timing
        wb = self._wb
        gate = self._dma_ready
        rsp_gate = self._rsp_valid
        while True:
            beat = await stream_get(ctx, port.dma_req, ready_gate=gate)
            addr, words = beat.addr, beat.count + 1
            if beat.write:
                data, mask = bytearray(), []
                for i in range(words):
                    if i:
                        beat = await stream_get(ctx, port.dma_req, ready_gate=gate)
                    data += beat.data.to_bytes(wb, "little")
                    mask += [bool(beat.be >> b & 1) for b in range(wb)]
                ok = self.host.dma_write(addr, bytes(data), mask)
                await wait_cycles(ctx, t.dma_latency)
                await stream_put(ctx, port.dma_rsp, {"data": 0, "err": not ok, "last": 1},
                                 valid_gate=rsp_gate)
            else:
                data, ok = self.host.dma_read(addr, words * wb)
                await wait_cycles(ctx, t.dma_latency)
                for i in range(words):
                    word = int.from_bytes(data[i * wb:(i + 1) * wb], "little")
                    await stream_put(ctx, port.dma_rsp,
                                     {"data": word, "err": not ok, "last": i == words - 1},
                                     valid_gate=rsp_gate)
