"""Run scenarios on VMShm's RTL in Amaranth's own simulator: the embedded default backend."""

from dataclasses import dataclass, field

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from vmshm.host_model import HostModel, HostTiming
from vmshm.rtl import VMShmSystem

from .bfm import CLOCK_PERIOD, AmaranthGuestBus, HostBFM

__all__ = ["Harness", "SimResult", "simulate"]


class Harness(Elaboratable):
    """Hold the system under test and a free-running cycle counter the BFMs stamp records with."""

    def __init__(self, system):
        self.system = system
        self.cycle = Signal(64)

    def elaborate(self, platform):
        m = Module()
        m.submodules.system = self.system
        m.d.sync += self.cycle.eq(self.cycle + 1)
        return m


@dataclass
class SimResult:
    """What a simulation run leaves behind."""
    value: object = None                    # what the scenario returned
    records: list = field(default_factory=list)
    cycles: int = 0                         # cycles simulated in all


def _per_device(value, count, default, what):
    if value is None:
        return [default() for _ in range(count)]
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{what} must name one per device ({count}), not {len(value)}")
        return list(value)
    if count != 1 and what == "hosts":
        raise ValueError("hosts must be a list with one HostModel per device")
    return [value] * count


def simulate(scenario, *, devices=1, hosts=None, timing=None, vcd=None, **params):
    """Run ``await scenario(bus)`` against simulated VMShm devices and return a :class:`SimResult`.

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
    system = VMShmSystem(devices, **params)
    hosts = _per_device(hosts, devices, HostModel, "hosts")
    timings = _per_device(timing, devices, HostTiming, "timing")
    harness = Harness(system)
    result = SimResult()
    bus_box = []

    async def testbench(ctx):
        bus = AmaranthGuestBus(ctx, system, harness.cycle)
        bus_box.append(bus)
        result.value = await scenario(bus)
        result.cycles = ctx.get(harness.cycle)

    sim = Simulator(harness)
    sim.add_clock(CLOCK_PERIOD)
    for i, (host, t) in enumerate(zip(hosts, timings)):
        bfm = HostBFM(system.host(i), system.data_width, host, t)
        sim.add_testbench(bfm.ctl_process, background=True)
        sim.add_testbench(bfm.dma_process, background=True)
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
