"""Amaranth-simulator backend of the BFMs: one pair of stream helpers and a :class:`StreamIO`.

:func:`stream_put` and :func:`stream_get` carry every handshake. They sleep through idle cycles on
signal changes instead of waking at every clock edge, and decide each transfer on values sampled
at the edge, so several BFMs can share a stream without races. The BFM logic above them is shared
with the cocotb backend (:mod:`vmshm.harness.bfm`).
"""

from amaranth.hdl import Cat
from amaranth.sim import BrokenTrigger

from vmshm.harness.bfm import StreamIO, pack_payload
from vmshm.driver_model.bus import BusTimeout

__all__ = ["CLOCK_PERIOD", "TIMER_CYCLES", "Deferred", "stream_put", "stream_get", "wait_cycles",
           "AmaranthIO"]

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


#: Longest timer one idle wait sets, in cycles. Amaranth's simulator keeps a wait's timer until
#: its deadline even when the signal came first, and looks at every timer at every step: a wait
#: bounded by one timer of its whole timeout (2**18 cycles on the guest bus) left one behind per
#: beat for as long, so a long run slowed down as they piled up (`vmshm bench --pace`). A wait
#: of more cycles wakes every this many to look again, so at most this many cycles' worth
#: of timers are ever left.
TIMER_CYCLES = 64


async def _idle_until(ctx, stream, signal, timeout, what):
    # Sleep until `signal` may be high instead of waking at every edge; the timeout bounds a wait
    # on a device that never answers.
    if ctx.get(signal):
        return
    if timeout is None:
        await ctx.changed(signal)
        return
    # In quarter cycles. The waits before the last end a quarter cycle off both an edge and
    # mid-cycle, whichever of the two the wait began at, so they never meet a clock edge: a
    # testbench woken by a timer in the very step of an edge may run before or after it (the
    # simulator's order of wakers in one step is not fixed), which would move a cycle count by
    # one from run to run, and a timer running out in the step a signal changed in wakes this
    # twice, which Amaranth refuses (BrokenTrigger, caught below for the last wait). The last
    # ends where one timer of the whole timeout would.
    left, step = 4 * timeout, 4 * TIMER_CYCLES - 1
    while True:
        final = left <= step
        wait = left if final else step
        try:
            _, expired = await ctx.changed(signal).delay(wait * CLOCK_PERIOD / 4)
        except BrokenTrigger:
            # The signal changed and the timer ran out in the same step: both happened, the
            # signal says which matters.
            expired = True
        if not expired or ctx.get(signal):
            return
        if final:
            raise BusTimeout(f"the device is hung: {what} for {timeout} cycles")
        left, step = left - wait, 4 * TIMER_CYCLES


class Deferred:
    """Signal drops a BFM owes before the next clock edge, held back in case they cancel out.

    After a beat moves, its source must drop ``valid`` (its sink ``ready``) before the next edge.
    Most of the time the same BFM offers (takes) the next beat at once, and the drop and the raise
    would cost the simulator two settles of the whole design for nothing. Held here, a drop is
    cancelled by the next operation on the same stream, or applied by the BFM's next operation on
    any other, always before its next await, so the design never sees it late.
    """

    def __init__(self):
        self._drops = {}

    def drop(self, signal):
        self._drops[id(signal)] = signal     # Amaranth values are not hashable

    def take(self, signal):
        """Forget the drop owed on ``signal``; return whether there was one."""
        return self._drops.pop(id(signal), None) is not None

    def flush(self, ctx):
        for signal in self._drops.values():
            ctx.set(signal, 0)
        self._drops.clear()


async def stream_put(ctx, stream, payload, *, valid_gate=None, timeout=None, deferred=None):
    """Offer ``payload`` on ``stream`` and return at the clock edge that took it.

    ``valid_gate``, if given, is called each try and returns whether to offer the payload in
    that try: a source that stalls. ``timeout`` (cycles) bounds each idle wait and raises
    :exc:`~vmshm.driver_model.bus.BusTimeout`. With ``deferred`` (a :class:`Deferred`), the drop
    of ``valid`` after the beat is owed there instead of done.
    """
    # Payload and valid change together: one settle of the design instead of two.
    both = Cat(stream.payload.as_value(), stream.valid)
    width = len(stream.payload.as_value())
    raw = (pack_payload(stream.payload.shape(), payload) if isinstance(payload, dict)
           else stream.payload.shape().const(payload).as_value().value)
    if deferred is not None:
        deferred.take(stream.valid)
        deferred.flush(ctx)
    first = True
    while True:
        offer = valid_gate() if valid_gate is not None else True
        if first:
            ctx.set(both, raw | (int(offer) << width))
            first = False
        else:
            ctx.set(stream.valid, offer)
        if offer:
            await _idle_until(ctx, stream, stream.ready, timeout, "it took no request beat")
        _, _, ready = await ctx.tick().sample(stream.ready)
        if offer and ready:
            break
    if deferred is not None:
        deferred.drop(stream.valid)
    else:
        ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, ready_gate=None, timeout=None, deferred=None):
    """Take one payload from ``stream`` at a clock edge and return it.

    ``ready_gate``, if given, is called each try and returns whether to be ready in that try:
    a sink that applies back-pressure. ``timeout`` (cycles) bounds each idle wait and raises
    :exc:`~vmshm.driver_model.bus.BusTimeout`. With ``deferred`` (a :class:`Deferred`), the drop
    of ``ready`` after the beat is owed there instead of done.
    """
    still_ready = deferred.take(stream.ready) if deferred is not None else False
    if deferred is not None:
        deferred.flush(ctx)
    while True:
        ready = ready_gate() if ready_gate is not None else True
        if not (still_ready and ready):
            ctx.set(stream.ready, ready)
        still_ready = False
        if ready:
            await _idle_until(ctx, stream, stream.valid, timeout, "no completion beat came")
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if ready and valid:
            break
    if deferred is not None:
        deferred.drop(stream.ready)
    else:
        ctx.set(stream.ready, 0)
    return payload


class AmaranthIO(StreamIO):
    """Move beats on Amaranth stream interfaces from a testbench's context.

    Parameters
    ----------
    ctx : SimulatorContext
        The context of the testbench this IO is used from (each testbench needs its own).
    cycle : Signal
        The harness's free-running cycle counter.
    """

    def __init__(self, ctx, cycle):
        self._ctx = ctx
        self._cycle = cycle
        self._deferred = Deferred()

    async def put(self, stream, payload, *, valid_gate=None, timeout=None):
        await stream_put(self._ctx, stream, payload, valid_gate=valid_gate, timeout=timeout,
                         deferred=self._deferred)

    async def get(self, stream, *, ready_gate=None, timeout=None):
        return await stream_get(self._ctx, stream, ready_gate=ready_gate, timeout=timeout,
                                deferred=self._deferred)

    async def wait(self, cycles):
        self._deferred.flush(self._ctx)
        await wait_cycles(self._ctx, cycles)

    def settle(self):
        """Apply every drop still owed: call before the coroutine using this IO ends."""
        self._deferred.flush(self._ctx)

    def now(self):
        return self._ctx.get(self._cycle)

    def peek(self, signal):
        return self._ctx.get(signal)
