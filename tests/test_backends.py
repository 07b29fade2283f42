"""The backends beyond the scenario suite: the registry, the host lifecycle, demo, waveforms,
benchmark, errors."""

import argparse
import dataclasses

import pytest

from conftest import require_backend
from vmshm import backends as registry
from vmshm.backends import BACKENDS, backend_names, get_backend, run_function
from vmshm.driver_model import vmshm_probe
from vmshm.host_model import HostModel
from vmshm.scenarios import run_scenario
from vmshm.scenarios.bench import run_bench

#: Every host :func:`recording_hosts` made, to look at after the run.
MADE = []


def recording_hosts(timings):
    """A hosts' factory (``"module:name"`` in a job) that keeps what it made in :data:`MADE`."""
    hosts = [HostModel(t) for t in timings]
    MADE.extend(hosts)
    return hosts, timings


async def open_then_fail(bus, name):
    """Open ``name`` through the driver, then fail with it still open."""
    drivers, _ = await vmshm_probe(bus)
    fd = await drivers[0].open()
    await drivers[0].ioctl(fd, 0, name)
    raise AssertionError("the guest gave up with the object open")


def test_the_registry_describes_every_backend():
    assert backend_names() == tuple(BACKENDS) == ("amaranth", "verilator", "icarus", "native")
    for name, b in BACKENDS.items():
        assert b.name == name and get_backend(name) is b
        reason = b.missing()
        assert reason is None or (isinstance(reason, str) and "\n" not in reason and reason)
        if b.in_process:
            assert callable(b.simulate)
        else:
            with pytest.raises(ValueError, match="another process"):
                b.simulate
    assert backend_names(in_process=True) == ("amaranth", "native")
    assert backend_names(pcie=True) == ("verilator", "icarus")


def test_an_unknown_backend_is_refused_by_name():
    with pytest.raises(ValueError, match="backend must be one of amaranth, verilator, icarus, "
                                         "native, not 'verilog'"):
        run_function(f"{__name__}:open_then_fail", backend="verilog")


def _backend_choices(parser):
    """Return ``{command: choices of its --backend}`` of the CLI's parser."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for command, p in sub.choices.items():
        for action in p._actions:
            if "--backend" in action.option_strings:
                out[command] = action.choices
    return out


def test_every_backend_choice_list_reads_the_registry(monkeypatch):
    from vmshm.cli import _parser
    # A backend added to the registry appears in every --backend list at once: nothing typed.
    extra = {name: dataclasses.replace(b, name=f"{name}2") for name, b in BACKENDS.items()}
    monkeypatch.setattr(registry, "BACKENDS",
                        {**BACKENDS, **{b.name: b for b in extra.values()}})
    everything = set(registry.backend_names())
    here = set(registry.backend_names(in_process=True))
    choices = _backend_choices(_parser())
    assert set(choices) >= {"demo", "scenario", "timing", "fuzz", "channel"}
    for command, listed in choices.items():
        if listed is None:
            continue        # `vmshm qemu --backend` is checked against the registry in run()
        wanted = here | {"auto"} if command == "channel" else everything
        assert set(listed) == wanted, f"vmshm {command} --backend lists {listed}"


@pytest.mark.parametrize("backend", backend_names(in_process=True))
def test_a_failed_run_records_then_closes_its_hosts(backend, shm_objects):
    # The one host lifecycle: each host's state is taken as the run left it, and what is still
    # open is closed, also when the guest function raised.
    require_backend(backend)
    MADE.clear()
    name = shm_objects.create(4096, tag="life")
    with pytest.raises(AssertionError, match="gave up") as info:
        run_function(f"{__name__}:open_then_fail", backend=backend, kwargs={"name": name},
                     hosts=f"{__name__}:recording_hosts")
    assert [h["is_open"] for h in info.value.hosts] == [True]
    assert len(MADE) == 1 and not MADE[0].is_open


@pytest.mark.parametrize("backend", BACKENDS)
def test_waveform_named_and_valid(backend, tmp_path):
    require_backend(backend)
    waves = tmp_path / f"window_closed-{backend}.vcd"
    run_scenario("window_closed", backend=backend, waves=waves)
    text = waves.read_text(errors="replace")
    assert "$enddefinitions" in text and "clk" in text, "not a VCD with the clock in it"
    assert "req__valid" in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_demo_on_backend_sees_host_data(backend, shm_objects):
    require_backend(backend)
    from vmshm.host_model import ShmRegion
    name = shm_objects.create(4096, tag="demo")
    with ShmRegion.attach(name) as region:
        region.write(0, b"from the host\0")
    result = run_function("vmshm.scenarios.demo:seed_example", backend=backend,
                          kwargs={"name": name, "pid": 4242})
    assert result.value.found == b"from the host"
    with ShmRegion.attach(name) as region:
        assert region.read(0, 16) == b"I was here: 4242"
    assert [h["is_open"] for h in result.hosts] == [False]


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_cross_the_process_boundary(backend):
    require_backend(backend)
    with pytest.raises(FileNotFoundError) as info:
        run_function("vmshm.scenarios.demo:seed_example", backend=backend,
                     kwargs={"name": "/vmshm-no-such-object-anywhere"})
    assert "no shared-memory object" in info.value.hosts[0]["last_error"]


def test_bench_prints_figures_for_each_backend():
    backends = ["amaranth"]
    rows = run_bench(backends, size=1024)
    assert [r["backend"] for r in rows] == backends
    for r in rows:
        assert r["cycles"] > 0 and r["wall_s"] > 0 and r["idle_s"] > 0


def test_bench_pace_prints_both_tenths(capsys):
    """``vmshm bench --pace`` prints cycles per CPU second in the first and last tenth and the
    ratio (the figures themselves live in docs, measured by this command)."""
    import re

    from vmshm.cli import main
    assert main(["bench", "--backends", "amaranth", "--size", "16K", "--pace"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"pace amaranth: ([\d,]+) cycles per CPU second in the first tenth, "
                  r"([\d,]+) in the last; last / first (\d+\.\d\d)", out)
    assert m, out
    first, last = (int(g.replace(",", "")) for g in m.groups()[:2])
    assert first > 0 and last > 0 and float(m[3]) == pytest.approx(last / first, abs=0.006)


async def _timers_left_after_bursts(bus, name):
    # Many guest bursts, each an idle wait bounded by the guest bus's timeout, then count the
    # timers Amaranth's simulator still holds (its timeline: a private of Amaranth 0.5).
    drivers, _ = await vmshm_probe(bus)
    drv = drivers[0]
    fd = await drv.open()
    await drv.ioctl(fd, 0, name)
    mapping = await drv.mmap(fd, 4096)
    for k in range(100):
        await mapping.write(8 * k, bytes([k]) * 8)
        await mapping.read(8 * k, 8)
    await drv.munmap(mapping)
    await drv.close(fd)
    return len(bus._io._ctx._engine.state.timeline.wakers)


def test_waits_leave_few_timers(shm_objects):
    """A bounded wait's timer outlives the wait in Amaranth's simulator, which looks at every
    timer at every step: the BFMs' waits leave timers of at most ``TIMER_CYCLES`` cycles, so a
    long run does not slow down as they pile up (``vmshm bench --pace`` measures it)."""
    name = shm_objects.create(4096, tag="timers")
    result = run_function("test_backends:_timers_left_after_bursts", backend="amaranth",
                          kwargs={"name": name})
    # About 20 with TIMER_CYCLES 64 (the clock's and the host processes' own among them); some
    # 400 when each wait set one timer for its whole timeout.
    assert result.value < 100, f"{result.value} timers left behind"
