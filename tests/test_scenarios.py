"""Run the scenario suite (vmshm.scenarios) on every backend and data width, plus timing variants.

Amaranth's simulator runs each scenario here (the reference); every other backend of the registry
(:data:`vmshm.backends.BACKENDS`) runs it through :func:`~vmshm.scenarios.run_scenario` and must
give the same records, cycle for cycle: the backends in this process at every data width, Icarus
and Verilator each at one width per scenario (:data:`ELSEWHERE`).
"""

import os
import pickle

import pytest
from amaranth.hdl import Signal
from amaranth.sim import Simulator

from conftest import require_backend
from vmshm.abi.regmap import REG, Status
from vmshm.backends import backend_names
from vmshm.harness.bfm import HostBFM
from vmshm.host_model import HostModel, HostTiming
from vmshm.rtl import CplStatus, VMShmCore
from vmshm.scenarios import (LATE, SCENARIOS, SHORT_TIMEOUT, LateHost, ScenarioEnv, expect_errno,
                             probe, reg, run_scenario, scenario, status)
from vmshm.sim import CLOCK_PERIOD, AmaranthIO, simulate, stream_get, stream_put

#: Seed of the scenarios' random choices; set VMSHM_SEED to replay another one.
SEED = int(os.environ.get("VMSHM_SEED", "20240611"))
DATA_WIDTHS = (32, 64)
#: A host that answers late and stalls every handshake half the time.
SLOW = HostTiming(ctl_latency=100, dma_latency=7, ctl_ready=0.5, dma_ready=0.5, rsp_valid=0.5,
                  seed=SEED)


def run_amaranth(scn, env, hosts, timings):
    """Run one scenario in Amaranth's simulator and return its
    :class:`~vmshm.harness.top.SimResult`."""
    return simulate(lambda bus: scn.fn(bus, env), devices=scn.devices, hosts=hosts,
                    timing=timings, **scn.core_args_for(env.data_width))


#: Backend name -> ``runner(scenario, env, hosts, timings)``: one host and timing per device.
RUNNERS = {"amaranth": run_amaranth}
#: Every backend of the registry: Amaranth's simulator in this process, the generated Verilog
#: under cocotb, and the generated Verilog run natively (Verilator and a C++ loop, in this process).
BACKENDS = backend_names()


#: (scenario, data width, timing, seed) -> Amaranth's transactions: the reference every other
#: backend's run of the same scenario is checked against, simulated once per process (a run is
#: deterministic: the object's name has a fixed length, its contents start zero).
_REFERENCES = {}


#: Backends that run the generated Verilog in a simulator of its own (Icarus, Verilator under
#: cocotb): each scenario runs on each of them at one width, the widths rotating (a Latin
#: square): every scenario on every simulator and every simulator at every width, without the
#: other half, which would run the same Verilog again on a simulator already shown to agree.
#: The backends in this process (Amaranth's simulator, native) run every scenario at every width.
ELSEWHERE = backend_names(in_process=False)


def on_every_backend(names):
    """Parameters ``name, data_width, backend`` of ``names`` (see :data:`ELSEWHERE`), grouped so
    that xdist runs one scenario's backends in one worker, where Amaranth's reference is
    simulated once for all of them (:data:`_REFERENCES`)."""
    params = []
    for i, name in enumerate(names):
        for j, width in enumerate(DATA_WIDTHS):
            for backend in BACKENDS:
                if backend in ELSEWHERE and \
                        (i + ELSEWHERE.index(backend)) % len(DATA_WIDTHS) != j:
                    continue
                params.append(pytest.param(
                    name, width, backend, id=f"{name}-{width}-{backend}",
                    marks=pytest.mark.xdist_group(f"scenario={name}-{width}")))
    return pytest.mark.parametrize("name,data_width,backend", params)


def transactions(result):
    """Return what must match across backends: every record, and the cycles of the whole run."""
    return [(r.access, r.space, r.dev, r.addr, r.words, r.start, r.end, r.status, r.label)
            for r in result.records], result.cycles


def run_on_backend(shm_objects, name, *, backend, data_width, timing, seed):
    """Run one scenario through the registry; check it is cycle-identical to Amaranth's."""
    require_backend(backend)
    scn = SCENARIOS[name]
    result = run_scenario(name, backend=backend, data_width=data_width, seed=seed,
                          timing=timing, shm_name=shm_objects.create(scn.shm_size))
    left_open = [i for i, h in enumerate(result.hosts) if h["is_open"]]
    assert not left_open, f"{name} left the object open on the hosts of devices {left_open}"
    key = (name, data_width, repr(timing), seed)
    if key not in _REFERENCES:
        run(shm_objects, name, data_width=data_width, timing=timing, seed=seed)
    ours, theirs = transactions(result), _REFERENCES[key]
    for i, (a, b) in enumerate(zip(ours[0], theirs[0])):
        assert a == b, f"transaction {i} differs: {backend} {a} != amaranth {b}"
    assert ours == theirs, f"{backend} and amaranth records differ in length or total cycles"
    return result, result.hosts


def run(shm_objects, name, *, backend="amaranth", data_width=32, timing=None, seed=SEED):
    """Create the scenario's object, run it, and return ``(result, hosts)``, one host per device.

    Every scenario ends with its devices closed, so no host may hold anything open after it.
    """
    if backend != "amaranth":
        return run_on_backend(shm_objects, name, backend=backend, data_width=data_width,
                          timing=timing, seed=seed)
    scn = SCENARIOS[name]
    env = scn.env(shm_objects.create(scn.shm_size), seed=seed, data_width=data_width)
    pairs = [scn.make_host(timing) for _ in range(scn.devices)]
    hosts = [host for host, _ in pairs]
    try:
        result = RUNNERS[backend](scn, env, hosts, [t for _, t in pairs])
        _REFERENCES[name, data_width, repr(timing), seed] = transactions(result)
        left_open = [i for i, host in enumerate(hosts) if host.is_open]
        assert not left_open, f"{name} left the object open on the hosts of devices {left_open}"
    finally:
        for host in hosts:
            if host.is_open:
                host.close()    # unmap it even when the scenario failed
    return result, hosts


@on_every_backend(SCENARIOS)
def test_scenario(shm_objects, name, data_width, backend):
    """Run the scenario; on Verilator and Icarus also check its records match Amaranth's."""
    run(shm_objects, name, backend=backend, data_width=data_width)


@on_every_backend(["seed_example", "window_random_integrity", "window_short_object",
                   "driver_release_with_live_mapping", "names_rejected"])
def test_scenario_slow_host(shm_objects, name, data_width, backend):
    """Run with a late, randomly back-pressuring host: the same draws on every backend."""
    run(shm_objects, name, backend=backend, data_width=data_width, timing=SLOW)


@pytest.mark.parametrize("data_width", DATA_WIDTHS)
def test_seed_example_result(shm_objects, data_width):
    result, _ = run(shm_objects, "seed_example", data_width=data_width)
    assert result.value["found"] == b"Hello from the host side\n"
    assert result.value["wrote"] == f"I was here: {os.getpid()}\0".encode()
    assert result.records and all(r.end >= r.start for r in result.records)


@pytest.mark.parametrize("data_width", DATA_WIDTHS)
def test_slow_host_takes_longer(shm_objects, data_width):
    fast, _ = run(shm_objects, "seed_example", data_width=data_width)
    slow, _ = run(shm_objects, "seed_example", data_width=data_width, timing=SLOW)
    assert slow.cycles > fast.cycles + 2 * SLOW.ctl_latency


@pytest.mark.parametrize("data_width", DATA_WIDTHS)
def test_host_timeout_open(shm_objects, data_width):
    result, (host,) = run(shm_objects, "host_timeout_open", data_width=data_width)
    assert SHORT_TIMEOUT <= result.value["timed_out_after"] < LATE
    # The late success was closed by the device itself before the guest's second OPEN.
    assert [op for op in host.ops if op in ("OPEN", "CLOSE")] == ["OPEN", "CLOSE", "OPEN", "CLOSE"]
    assert not host.is_open


@pytest.mark.parametrize("data_width", DATA_WIDTHS)
def test_late_open_closed_while_guest_idles(shm_objects, data_width):
    """Close a late OPEN success without waiting for the guest's next OPEN or CLOSE."""
    name = shm_objects.create(4096)
    timing = HostTiming(ctl_latency=LATE)
    host = LateHost(timing, late_ctl=2)

    async def guest(bus):
        drv = await probe(bus)
        fd = await drv.open()
        await expect_errno(drv.ioctl(fd, 0, name), Status.ETIMEDOUT, "ioctl, host late")
        start, slowest = bus.now(), 0
        while bus.now() - start < 4 * LATE:
            t = bus.now()
            await reg(drv, "ID")
            slowest = max(slowest, bus.now() - t)
        return slowest, await status(drv)

    try:
        result = simulate(guest, hosts=host, timing=timing, data_width=data_width,
                          host_timeout=SHORT_TIMEOUT)
        assert host.ops == ["OPEN", "CLOSE"]
        assert not host.is_open
        slowest, (is_open, busy, last_error) = result.value
        assert (is_open, busy, last_error) == (0, 0, Status.ETIMEDOUT)
        assert slowest <= SHORT_TIMEOUT, f"a register read was held {slowest} cycles"
    finally:
        if host.is_open:
            host.close()


@pytest.mark.parametrize("data_width", DATA_WIDTHS)
def test_host_timeout_dma(shm_objects, data_width):
    result, (host,) = run(shm_objects, "host_timeout_dma", data_width=data_width)
    assert SHORT_TIMEOUT <= result.value["timed_out_after"] < LATE
    assert host.ops[:4] == ["OPEN", "READ", "WRITE", "READ"]
    assert host.ops[-1] == "CLOSE"


def test_registry():
    assert len(SCENARIOS) >= 15
    for name, scn in SCENARIOS.items():
        assert scn.name == name
        assert scn.doc and scn.doc[0].isupper() and scn.doc.endswith("."), name
        assert "data_width" not in scn.core_args
        # Backends in another process get the scenario by name and its environment pickled.
        env = scn.env("/x", seed=1, data_width=64)
        assert pickle.loads(pickle.dumps((scn, env))) == (scn, env)
    assert SCENARIOS["names_buffer_limits_small"].env("/x", seed=1, data_width=32).name_size == 64
    env = SCENARIOS["pci_bar_sizing_64bit_window"].env("/x", seed=1, data_width=32)
    assert env.window_64bit is True and env.devices == 1
    two = SCENARIOS["pci_two_devices"]
    assert two.devices == 2 and two.env("/x", seed=1, data_width=32).devices == 2
    assert {scn.devices for scn in SCENARIOS.values()} >= {1, 2}


def test_multi_device_scenario_gets_one_fresh_host_per_device(shm_objects):
    result, hosts = run(shm_objects, "pci_two_devices")
    assert len(hosts) == 2 and hosts[0] is not hosts[1], "expected a host of its own per device"
    assert all(isinstance(host, HostModel) for host in hosts), "expected plain host models"
    assert len(result.value["bars"]) == 6, "expected three BARs on each of the two functions"


def test_registry_refuses_bad_requirements():
    with pytest.raises(TypeError, match="data_width"):
        scenario(shm_size=1, data_width=64)
    with pytest.raises(ValueError, match="shm_size"):
        scenario(shm_size=0)
    with pytest.raises(ValueError, match="already registered"):
        scenario(shm_size=1, name="seed_example")(lambda bus, env: None)
    for devices in (0, 33, 1.0, True, "2"):
        with pytest.raises(ValueError, match="devices must be an integer from 1 to 32"):
            scenario(shm_size=1, devices=devices)


def test_make_host_merges_timing():
    host, timing = SCENARIOS["host_timeout_open"].make_host(SLOW)
    assert isinstance(host, LateHost) and host.timing is timing
    assert (timing.ctl_latency, timing.dma_latency, timing.ctl_ready) == (LATE, 7, 0.5)
    _, plain = SCENARIOS["seed_example"].make_host()
    assert plain == HostTiming()
    assert isinstance(ScenarioEnv("/x", 1, 0, 32), ScenarioEnv)


# -- the core on its own: what a hard-IP shim hands it, BAR numbers included ---------------------

def run_core(guest, data_width, **core_args):
    """Run ``await guest(ctx, core)`` against a bare :class:`~vmshm.rtl.VMShmCore` and a host."""
    core = VMShmCore(data_width=data_width, **core_args)
    host = HostModel()
    bfm = HostBFM(core.host, data_width, host, HostTiming())
    out = []
    cycle = Signal(64)  # the host BFM stamps nothing here; a counter keeps AmaranthIO whole

    async def testbench(ctx):
        out.append(await guest(ctx, core))

    def background(process):
        async def testbench(ctx):
            await process(AmaranthIO(ctx, cycle))
        return testbench

    sim = Simulator(core)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(background(bfm.ctl_process), background=True)
    sim.add_testbench(background(bfm.dma_process), background=True)
    sim.add_testbench(testbench)
    sim.run()
    host.close()
    return out[0]


async def core_access(ctx, core, bar, addr, words, *, write=False, be=None):
    """Send one burst to the core's guest side; return ``(data words, status names)``."""
    be = (1 << core.data_width // 8) - 1 if be is None else be
    header = {"bar": bar, "addr": addr, "write": int(write), "count": words - 1, "be": be}
    # A bound on every wait: a request the core never completes fails instead of hanging.
    limit = 1000
    for _ in range(words if write else 1):
        await stream_put(ctx, core.req, {**header, "data": 0}, timeout=limit)
    beats = [await stream_get(ctx, core.cpl, timeout=limit) for _ in range(1 if write else words)]
    return [b.data for b in beats], [CplStatus(b.status).name for b in beats]


@pytest.mark.parametrize("data_width", DATA_WIDTHS)
def test_core_unsupported_bars(data_width):
    """Answer BARs 3..7 and offsets past BAR0 and BAR2 with UR and all ones, and never hang."""
    wb = data_width // 8
    ones = (1 << data_width) - 1

    async def guest(ctx, core):
        seen = []
        targets = [(bar, 0) for bar in range(3, 8)] + [
            (0, core.regs_size - wb), (0, core.regs_size), (2, core.name_size - wb),
            (2, core.name_size)]
        for bar, addr in targets:
            data, st = await core_access(ctx, core, bar, addr, 2)
            seen.append((bar, addr, "read", data, st))
            _, st = await core_access(ctx, core, bar, addr, 2, write=True)
            seen.append((bar, addr, "write", None, st))
        # A burst running off the window's end is a rejected window access: SC, all ones.
        data, st = await core_access(ctx, core, 1, core.window_size - wb, 2)
        seen.append((1, core.window_size - wb, "read", data, st))
        rejects, _ = await core_access(ctx, core, 0, REG["REJECTS"].offset & ~(wb - 1), 1)
        return seen, rejects[0]

    seen, rejects = run_core(guest, data_width, window_size=4096)
    for bar, addr, kind, data, st in seen:
        where = f"{kind} of BAR{bar} at {addr:#x}"
        if bar == 1:
            assert st == ["SC", "SC"] and data == [ones, ones], where
        elif kind == "read":
            assert st == ["UR", "UR"] and data == [ones, ones], where
        else:
            assert st == ["UR"], where
    rejects >>= 8 * (REG["REJECTS"].offset % wb)
    assert rejects & 0xFFFF_FFFF == 1
