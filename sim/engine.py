"""Run guest functions on VMShm's RTL in Amaranth's own simulator: the embedded default backend.

:func:`simulate` elaborates the shared :class:`~vmshm.harness.top.SimTop` and runs the shared BFMs
(:mod:`vmshm.harness.bfm`) as Amaranth testbenches over :class:`~.bfm.AmaranthIO`.
"""

from amaranth.hdl import Signal
from amaranth.sim import Simulator

from vmshm.driver_model.bus import Interrupt
from vmshm.harness.bfm import HostBFM, StreamGuestBus, bus_timeout
from vmshm.harness.checks import check_output_file
from vmshm.harness.top import SimResult, SimTop, per_device
from vmshm.host_model import HostModel, HostTiming

from .bfm import CLOCK_PERIOD, AmaranthIO

__all__ = ["simulate"]


def simulate(scenario, *, devices=1, hosts=None, timing=None, vcd=None, **params):
    """Run ``await scenario(bus)`` against simulated VMShm devices and return a
    :class:`~vmshm.harness.top.SimResult`.

    Parameters
    ----------
    scenario : async callable
        Takes a :class:`~vmshm.driver_model.bus.GuestBus`; what it returns is kept in the result.
    devices : int
        How many VMShm functions sit on the bus (slots 0, 1, ...).
    hosts : HostModel or list of HostModel, optional
        The host behind each device; by default a fresh one each.
    timing : HostTiming or list of HostTiming, optional
        Latencies and back-pressure of each host.
    vcd : str or path, optional
        Write a waveform of the whole run there.
    **params
        Build parameters of every :class:`~vmshm.rtl.VMShmPCI`.
    """
    if vcd is not None:
        # Before the testbenches exist: a file that cannot be written is its own error, not a
        # failed run (nor coroutines that were never awaited).
        check_output_file(vcd)
    top = SimTop(devices, **params)
    hosts = per_device(hosts, devices, HostModel, "hosts")
    timings = per_device(timing, devices, HostTiming, "timing")
    result = SimResult()
    bus_box = []

    async def testbench(ctx):
        io = AmaranthIO(ctx, top.cycle)

        async def reset():
            # A function reset: the devices go back to their reset state, and so does the host
            # side, which releases any object left open.
            io.settle()
            ctx.set(top.reset_request, 1)
            await ctx.tick()
            ctx.set(top.reset_request, 0)
            for host in hosts:
                if host.is_open:
                    host.close()

        bus = StreamGuestBus(io, top.req, top.cpl, top.data_width,
                             timeout=bus_timeout(top.host_timeout), reset=reset,
                             intx=[top.intx(i) for i in range(devices)])
        bus.interrupts = interrupts
        bus.hosts = hosts
        bus.before_clock = lambda: host_ports_now(ctx)
        bus_box.append(bus)
        result.value = await scenario(bus)
        io.settle()
        result.cycles = ctx.get(top.cycle)

    def background(process):
        # Each testbench has its own context, so each process gets its own IO.
        async def testbench(ctx):
            await process(AmaranthIO(ctx, top.cycle))
        return testbench

    # Testbench-only signals, one per host: toggled when its rings are waiting, to wake the
    # ring process without a wake-up every cycle.
    kicks = [Signal(name=f"ring_kick{i}") for i in range(devices)]
    peers = [None] * devices

    def host_ports_now(ctx):
        # At the guest's drive point, before it runs the clock: the host's peer ID onto the
        # port, and the ring processes woken if the host queued rings.
        for i, host in enumerate(hosts):
            if host.peer_id != peers[i]:
                peers[i] = host.peer_id
                port = top.host(i)
                ctx.set(port.peer_valid, host.peer_id is not None)
                ctx.set(port.peer_id, host.peer_id or 0)
            if host.pending_rings():
                ctx.set(kicks[i], ~ctx.get(kicks[i]))

    def ring_waker(i):
        async def testbench(ctx):
            io = AmaranthIO(ctx, top.cycle)

            async def wake():
                io.settle()
                await ctx.changed(kicks[i])
            await bfms[i].ring_process(io, wake)
        return testbench

    # The guest's interrupt controller: INTx rising edges and MSI messages, each stamped.
    interrupts = []

    def intx_watch(i):
        async def testbench(ctx):
            level = 0
            while True:
                await ctx.changed(top.intx(i))
                now = ctx.get(top.intx(i))
                if now and not level:
                    interrupts.append(Interrupt(ctx.get(top.cycle), i, "intx"))
                level = now
        return testbench

    def msi_take(i):
        async def testbench(io):
            while True:
                beat = await io.get(top.msi(i))
                interrupts.append(Interrupt(io.now(), i, "msi", int(beat.addr), int(beat.data)))
        return testbench

    sim = Simulator(top)
    sim.add_clock(CLOCK_PERIOD)
    for i in range(devices):
        sim.add_testbench(intx_watch(i), background=True)
        sim.add_testbench(background(msi_take(i)), background=True)
    bfms = []
    for i, (host, t) in enumerate(zip(hosts, timings)):
        bfm = HostBFM(top.host(i), top.data_width, host, t)
        bfms.append(bfm)
        result.events.append(bfm.events)
        sim.add_testbench(background(bfm.ctl_process), background=True)
        sim.add_testbench(background(bfm.dma_process), background=True)
        sim.add_testbench(background(bfm.db_process), background=True)
        sim.add_testbench(ring_waker(i), background=True)
    sim.add_testbench(testbench)
    try:
        if vcd is not None:
            with sim.write_vcd(str(vcd)):
                sim.run()
        else:
            sim.run()
    finally:
        if bus_box:
            result.records = bus_box[0].records
    return result
