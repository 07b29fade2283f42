"""Run scenarios on VMShm's RTL in Amaranth's own simulator: the embedded default backend."""

from dataclasses import dataclass, field

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from vmshm.driver_model.bus import GuestBus
from vmshm.host_model import HostModel, HostTiming
from vmshm.rtl import VMShmCore

from .bfm import CLOCK_PERIOD, AmaranthGuestBus, HostBFM

__all__ = ["Harness", "SimResult", "simulate"]


class Harness(Elaboratable):
    """Hold the core under test and a free-running cycle counter the BFMs stamp records with."""

    def __init__(self, core):
        self.core = core
        self.cycle = Signal(64)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = self.core
        m.d.sync += self.cycle.eq(self.cycle + 1)
        return m


@dataclass
class SimResult:
    """What a simulation run leaves behind."""
    value: object = None                    # what the scenario returned
    records: list = field(default_factory=list)
    cycles: int = 0                         # cycles simulated in all


def simulate(scenario, *, core=None, host=None, timing=None, vcd=None, **core_args):
    """Run ``await scenario(bus)`` against a simulated device and return a :class:`SimResult`.

    Parameters
    ----------
    scenario : async callable
        Takes a :class:`~vmshm.driver_model.bus.GuestBus`; what it returns is kept in the result.
    core : VMShmCore, optional
        The device; by default a :class:`~vmshm.rtl.VMShmCore` built from ``core_args``.
    host : HostModel, optional
        The host behind the device; by default a fresh one.
    timing : HostTiming, optional
        Latencies and back-pressure of the host.
    vcd : str or path, optional
        Write a waveform of the whole run there.
    """
    core = core if core is not None else VMShmCore(**core_args)
    host = host if host is not None else HostModel()
    timing = timing if timing is not None else HostTiming()
    harness = Harness(core)
    host_bfm = HostBFM(core, host, timing)
    result = SimResult()
    bus_box = []

    async def testbench(ctx):
        bus = AmaranthGuestBus(ctx, core, harness.cycle)
        bus_box.append(bus)
        result.value = await scenario(bus)
        result.cycles = ctx.get(harness.cycle)

    sim = Simulator(harness)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(host_bfm.ctl_process, background=True)
    sim.add_testbench(host_bfm.dma_process, background=True)
    sim.add_testbench(testbench)
    try:
        if vcd is not None:
            with sim.write_vcd(str(vcd), traces=[harness.cycle]):
                sim.run()
        else:
            sim.run()
    finally:
        if bus_box:
            result.records = bus_box[0].records
    return result
