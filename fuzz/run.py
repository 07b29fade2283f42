"""Run a fuzz campaign on any backend: make the host objects, run the guest, gather the outcome.

On Amaranth's simulator the campaign runs on :class:`FuzzTop` (the simulated top with a reset
input for the function) and gets a :class:`Probe`: resets of the function, and the core's
``host_base`` output read after each OPEN, with a random bus address in the host's answer. The
cocotb benches (Verilator, Icarus) run the same guest function through a job of the backend
registry (:func:`vmshm.backends.run_job`, the hosts made by :func:`~.host.fuzz_hosts`); their
bench holds ``rst`` itself and answers OPEN with bus address 0, so resets and ``host_base`` checks
are not drawn there (the traffic is otherwise the same, and so are the records). Another backend
that runs in this process (native: the Verilated model, the host faults played by its C++ host)
runs the guest function here through its ``simulate``; native has a probe too,
:class:`NativeProbe`: the same resets (``rst`` held for as many edges) and the core's
``host_base`` register, read from the Verilated model.
"""

import os
import random
import time
from dataclasses import asdict
from uuid import uuid4

from amaranth.hdl import Module, ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from vmshm.backends import get_backend, run_job
from vmshm.harness.bfm import HostBFM, StreamGuestBus
from vmshm.harness.job import Job
from vmshm.host_model import HostTiming, ShmRegion
from vmshm.rtl import VMShmSystem
from vmshm.sim.bfm import CLOCK_PERIOD, AmaranthIO

from .host import ACTIVE, DEFAULT_BEHAVIOURS, FuzzHost
from .model import FuzzConfig

__all__ = ["FuzzTop", "Probe", "NativeProbe", "PROBED", "host_timing", "make_objects", "run_fuzz"]

GUEST = "vmshm.fuzz.gen:fuzz_guest"
HOSTS = "vmshm.fuzz.host:fuzz_hosts"


class FuzzTop(wiring.Component):
    """The simulated top of :class:`vmshm.harness.top.SimTop`, plus ``rst_fn``: reset the function.

    The cycle counter is outside the reset, so records keep counting across resets.
    """

    def __init__(self, **params):
        self._system = VMShmSystem(1, **params)
        super().__init__({**self._system.signature.members, "cycle": Out(64), "rst_fn": In(1)})

    @property
    def system(self):
        return self._system

    def elaborate(self, platform):
        m = Module()
        m.submodules.system = ResetInserter(self.rst_fn)(self._system)
        wiring.connect(m, wiring.flipped(self.req), self._system.req)
        wiring.connect(m, self._system.cpl, wiring.flipped(self.cpl))
        wiring.connect(m, wiring.flipped(self.host0), self._system.host(0))
        m.d.sync += self.cycle.eq(self.cycle + 1)
        return m


class Probe:
    """What the Amaranth run offers the guest beyond the bus: resets and ``host_base``."""

    def __init__(self, ctx, io, top, bfm):
        self._ctx, self._io, self._top, self._bfm = ctx, io, top, bfm

    async def reset(self, cycles=2):
        """Hold the function's reset for ``cycles`` edges, between two guest transactions."""
        self._io.settle()
        self._ctx.set(self._top.rst_fn, 1)
        await self._io.wait(cycles)
        self._ctx.set(self._top.rst_fn, 0)

    def host_base(self):
        """Return the core's ``host_base`` output (the bus address of the open object)."""
        return self._ctx.get(self._top.system.functions[0].core.host_base)

    def set_bus_address(self, addr):
        """Make the host give ``addr`` as the object's bus address in its next OPEN answer."""
        self._bfm.bus_address = addr


class NativeProbe:
    """:class:`Probe` on the native backend: the same resets and ``host_base`` checks."""

    def __init__(self, bus):
        self._sim = bus.sim

    async def reset(self, cycles=2):
        """Hold the function's reset for ``cycles`` edges, between two guest transactions."""
        self._sim.hold_reset(cycles)

    def host_base(self):
        """Return the core's ``host_base`` register (the bus address of the open object)."""
        return self._sim.host_base(0)

    def set_bus_address(self, addr):
        """Make the host give ``addr`` as the object's bus address in its next OPEN answer."""
        self._sim.set_bus_address(0, addr)


#: Backends whose runs have a probe (resets, host_base): the others' benches hold rst and answer
#: OPEN with bus address 0 themselves.
PROBED = ("amaranth", "native")


def host_timing(seed, *, ctl_ready=None, dma_ready=None, rsp_valid=None):
    """Return the seed's host back-pressure: each probability drawn from 1, 0.75 and 0.5."""
    rng = random.Random(f"vmshm-fuzz-timing:{seed}")
    draw = lambda given: given if given is not None else rng.choice([1.0, 0.75, 0.5])  # noqa
    return HostTiming(ctl_ready=draw(ctl_ready), dma_ready=draw(dma_ready),
                      rsp_valid=draw(rsp_valid), seed=seed)


def make_objects(config, seed):
    """Create the campaign's host objects, filled with the seed's bytes; return names and regions.

    Sizes follow the window: one a quarter of it (odd, so its last word is partly past the
    object), one larger than the window, one of 6 bytes, one under a 200-byte name, and an
    empty one (OPEN must say EINVAL).
    """
    w = config.window_size
    # Short, so OPEN fits a short host timeout: the name is streamed a byte a cycle. Of one
    # length in every process, so a seed replays to the same cycles in any process (a shard).
    prefix = f"/fz{os.getpid() % 1000:03d}{uuid4().hex[:4]}"
    rng = random.Random(f"vmshm-fuzz-objects:{seed}")
    specs = [("-a", w // 4 + 1), ("-big", w + 100), ("-t", 6),
             ("-" + "n" * (min(200, config.name_size - 40)), w // 2 + 3)]
    regions = []
    try:
        for suffix, size in specs:
            region = ShmRegion.create(prefix + suffix, size)
            regions.append(region)
            region.write(0, rng.randbytes(size))
        regions.append(ShmRegion.create(prefix + "-empty", 0))
    except BaseException:
        for r in regions:
            r.unlink()
            r.close()
        raise
    names = {"objects": [prefix + s for s, _ in specs], "empty": prefix + "-empty",
             "prefix": prefix}
    return names, regions


def guest_timeout(config):
    """Return the cycles the guest waits for a beat before it calls the device hung.

    Past the longest wait the generator plans (a name streamed under back-pressure and a late
    answer; a window access queued behind a late 256-beat one), and much shorter than
    :func:`vmshm.harness.bfm.bus_timeout`'s 2**18, so a device that hangs is reported soon. (Such
    timers no longer slow Amaranth's simulator down: :data:`vmshm.sim.bfm.TIMER_CYCLES`.)
    """
    return 4 * config.host_timeout + 16 * config.name_size + 256 * 48 + 4096


def _run_amaranth(kwargs, timing, config, waves=None):
    top = FuzzTop(**config.params())
    host = FuzzHost(timing)
    ACTIVE.clear()
    ACTIVE["hosts"] = [host]
    out = {}
    bfm = HostBFM(top.host0, config.data_width, host, timing)

    async def guest(ctx):
        from .gen import fuzz_guest
        io = AmaranthIO(ctx, top.cycle)
        bus = StreamGuestBus(io, top.req, top.cpl, config.data_width,
                             timeout=guest_timeout(config))
        ACTIVE["probe"] = Probe(ctx, io, top, bfm)
        out["value"] = await fuzz_guest(bus, **kwargs)
        io.settle()
        out["cycles"] = ctx.get(top.cycle)

    def background(process):
        async def testbench(ctx):
            await process(AmaranthIO(ctx, top.cycle))
        return testbench

    sim = Simulator(top)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(background(bfm.ctl_process), background=True)
    sim.add_testbench(background(bfm.dma_process), background=True)
    # The model's host takes every doorbell at once, as the native harness's does.
    sim.add_testbench(background(bfm.db_process), background=True)
    sim.add_testbench(guest)
    try:
        if waves is not None:
            with sim.write_vcd(str(waves)):
                sim.run()
        else:
            sim.run()
    finally:
        ACTIVE.clear()
        if host.is_open:
            host.close()
    return out["value"], out["cycles"]


def _run_here(backend, kwargs, timing, config, waves=None):
    """Run the campaign on an in-process ``backend`` other than Amaranth's (native: a probe)."""
    from .gen import fuzz_guest

    simulate = get_backend(backend).simulate

    host = FuzzHost(timing)
    ACTIVE.clear()
    ACTIVE["hosts"] = [host]

    async def guest(bus):
        bus.timeout = guest_timeout(config)
        if backend in PROBED:
            ACTIVE["probe"] = NativeProbe(bus)
        return await fuzz_guest(bus, **kwargs)

    try:
        result = simulate(guest, hosts=[host], timing=timing, vcd=waves, **config.params())
    finally:
        ACTIVE.clear()
        if host.is_open:
            host.close()
    return result.value, result.cycles


def run_fuzz(*, transactions, seed, backend="amaranth", config=None, behaviours=None,
             history=20, check_every=500, timing=None, waves=None, progress=False):
    """Run one campaign and return its outcome (see :func:`vmshm.fuzz.gen.fuzz_guest`).

    The outcome gains ``seed``, ``backend``, ``config``, ``timing``, ``cycles`` and ``wall``
    (seconds). ``timing`` overrides the seed's back-pressure (a :class:`HostTiming`).
    """
    config = config or FuzzConfig()
    behaviours = list(DEFAULT_BEHAVIOURS if behaviours is None else behaviours)
    if backend not in PROBED:
        # Their benches drive rst and answer OPEN with bus address 0 themselves.
        behaviours = [b for b in behaviours if not b.startswith("reset")]
    reason = get_backend(backend).missing()
    if reason:
        raise RuntimeError(f"backend {backend} cannot run here: {reason}")
    timing = timing or host_timing(seed)
    drawn = asdict(timing)       # the host changes its latencies as the run goes
    names, regions = make_objects(config, seed)
    kwargs = {"seed": seed, "transactions": transactions, "config": asdict(config),
              "names": names, "behaviours": behaviours, "history": history,
              "check_every": check_every, "progress": progress}
    t0 = time.perf_counter()
    try:
        if backend == "amaranth":
            value, cycles = _run_amaranth(kwargs, timing, config, waves)
        elif get_backend(backend).in_process:
            value, cycles = _run_here(backend, kwargs, timing, config, waves)
        else:
            job = Job(devices=1, params=config.params(), timing=[timing], fn=GUEST,
                      kwargs=kwargs, hosts=HOSTS)
            result = run_job(job, backend, waves=waves)
            value, cycles = result.value, result.cycles
    finally:
        for r in regions:
            r.unlink()
            r.close()
    value.update(seed=seed, backend=backend, config=asdict(config), timing=drawn,
                 cycles=cycles, wall=time.perf_counter() - t0, behaviours=behaviours)
    return value
