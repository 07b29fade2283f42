"""The native backend beyond the scenario suite: identical records, layouts, bench, errors.

The scenario suite (tests/test_scenarios.py) runs every scenario on ``native`` and compares its
records with Amaranth's; here the same comparison covers the host-side event stamps the timing
study reads, payload layouts other than today's, and what a user sees when a tool is missing.
"""

import dataclasses
import errno
import os
import subprocess
import sys

import pytest
from amaranth.lib import data

from vmshm.backends import run_function
from vmshm.scenarios.bench import run_bench
from vmshm.host_model import Fault, HostFaults, HostTiming, ShmRegion

from conftest import require_backend

#: Late answers and random back-pressure on every host channel.
STALLING = HostTiming(ctl_latency=5, dma_latency=3, ctl_ready=0.7, dma_ready=0.5, rsp_valid=0.5,
                      seed=11)


def both(shm_objects, *, size, data_width, timing):
    """Run the bench workload on Amaranth and native; return both results."""
    name = shm_objects.create(4096, tag="native")
    kwargs = {"name": name, "size": size}
    return [run_function("vmshm.scenarios.bench:workload", backend=b, kwargs=kwargs, timing=timing,
                         data_width=data_width) for b in ("amaranth", "native")]


@pytest.mark.parametrize("data_width", (32, 64))
def test_records_and_host_events_equal_amaranths(shm_objects, data_width):
    require_backend("native")
    ref, ours = both(shm_objects, size=600, data_width=data_width, timing=STALLING)
    assert ours.records == ref.records
    assert ours.events == ref.events, "the host-side handshakes differ"
    assert ours.cycles == ref.cycles and ours.value == ref.value


def test_follows_changed_layouts(shm_objects, monkeypatch):
    """Fields added to the host-port layouts move every other field; native follows them."""
    require_backend("native")
    import vmshm.rtl.layouts as layouts
    dma_req, dma_rsp, ctl_rsp = (layouts.dma_req_layout, layouts.dma_rsp_layout,
                                 layouts.ctl_rsp_layout)
    monkeypatch.setattr(layouts, "dma_req_layout", lambda aw, dw: data.StructLayout(
        {"tag": 3, **dict(dma_req(aw, dw).members), "reset": 1}))
    monkeypatch.setattr(layouts, "dma_rsp_layout", lambda dw: data.StructLayout(
        {"tag": 5, **dict(dma_rsp(dw).members)}))
    monkeypatch.setattr(layouts, "ctl_rsp_layout", lambda: data.StructLayout(
        {"pad": 7, **dict(ctl_rsp().members)}))
    ref, ours = both(shm_objects, size=300, data_width=64, timing=STALLING)
    assert ours.records == ref.records and ours.events == ref.events


def test_follows_a_reordered_shared_block(shm_objects, monkeypatch):
    """The Shared block's words and the run codes come from native/shared.py to both the C++
    harness and the engine: reordered there, the two still agree."""
    require_backend("native")
    import importlib

    from vmshm.native import engine, shared
    monkeypatch.setattr(shared, "SHARED", tuple(reversed(shared.SHARED)))
    monkeypatch.setattr(shared, "RUN_STATUS", tuple(reversed(shared.RUN_STATUS)))
    try:
        importlib.reload(engine)
        assert "uint64_t timeout;" in shared.header_lines()[1]
        ref, ours = both(shm_objects, size=300, data_width=32, timing=STALLING)
    finally:
        monkeypatch.undo()
        importlib.reload(engine)
    assert ours.records == ref.records and ours.events == ref.events


def test_bench_shows_native_beside_amaranth():
    require_backend("native")
    rows = run_bench(["amaranth", "native"], size=1024)
    amaranth, native = rows
    assert amaranth["cycles"] == native["cycles"] > 0
    assert amaranth["python_share"] == 1.0
    assert 0.0 < native["python_share"] < 1.0


def test_timed_runs_leave_the_older_heap_out():
    """The bench's timed runs start with the process's older objects frozen (a full collection
    of them, 80 ms, landed in one native run in five); the run's own objects are collected as
    usual, and the freeze ends with the run, whatever way it ends."""
    import gc
    from vmshm.scenarios.bench import _timed_heap
    assert gc.get_freeze_count() == 0
    with _timed_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 1000
        made = [[] for _ in range(1000)]
        # The run's objects are not frozen (a frozen object freed meanwhile lowers the count).
        assert gc.get_freeze_count() <= frozen and gc.is_tracked(made)
    assert gc.get_freeze_count() == 0
    with pytest.raises(ZeroDivisionError), _timed_heap():
        1 / 0
    assert gc.get_freeze_count() == 0


def test_missing_compiler_is_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError) as info:
        run_function("vmshm.scenarios.bench:idle_loop", backend="native", kwargs={"cycles": 1})
    message = str(info.value)
    assert message.startswith("backend native cannot run here:") and "g++" in message
    assert "\n" not in message


@pytest.mark.slow
def test_a_second_configuration_compiles_only_its_model(tmp_path, monkeypatch):
    # Through ccache, the Verilator runtime every build compiles (verilated.cpp and its kin)
    # is compiled by the first build only: the second configuration's log shows the compiles
    # going through ccache, and ccache answered the runtime's from its cache.
    from vmshm.harness.tools import compiler_cache
    from vmshm.native import build as native_build
    require_backend("native")
    if compiler_cache() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("must run under CI: ccache is not installed (apt-get install ccache)")
        pytest.skip("ccache is not installed: apt-get install ccache")
    monkeypatch.setenv("VMSHM_BUILD_DIR", str(tmp_path / "builds"))
    monkeypatch.setenv("CCACHE_DIR", str(tmp_path / "ccache"))
    monkeypatch.setattr(native_build, "_built", {})

    def hits():
        out = subprocess.run([compiler_cache(), "--print-stats"], capture_output=True,
                             text=True, check=True).stdout
        stats = dict(line.split("\t") for line in out.splitlines() if "\t" in line)
        return int(stats["direct_cache_hit"]) + int(stats["preprocessed_cache_hit"])

    native_build.build(data_width=32)
    assert hits() == 0
    model = native_build.build(data_width=32, name_size=64)
    log = (model.path.parent / "build.log").read_text()
    runtime = ("verilated.cpp", "verilated_dpi.cpp", "verilated_threads.cpp")
    assert all("ccache c++" in line for line in log.splitlines()
               if any(name in line for name in runtime)), log
    assert hits() >= len(runtime)


def test_guest_may_only_await_the_bus():
    require_backend("native")
    from vmshm.native.engine import NativeError

    with pytest.raises(NativeError, match="may only await bus operations"):
        run_function("native_guests:awaits_sleep", backend="native")


@pytest.mark.parametrize("backend", ["amaranth", "native"])
def test_a_stalled_burst_ends_in_bus_timeout(backend):
    """A burst that makes no progress for the bus's timeout raises BusTimeout on every backend
    (native's run status and its Shared block's timeout word once shared one Python name)."""
    require_backend(backend)
    from vmshm.driver_model.bus import BusTimeout

    with pytest.raises(BusTimeout, match="8 cycles"):
        run_function("native_guests:outwaits_the_bus", backend=backend,
                     timing=HostTiming(ctl_latency=200))


def test_dma_never_reaches_past_a_shrunk_object(shm_objects):
    """The C++ DMA checks the object's current size, as HostModel does: no SIGBUS, the same
    answer as on Amaranth's simulator."""
    require_backend("native")
    results = []
    for backend in ("amaranth", "native"):
        name = shm_objects.create(8192, tag="shrink")
        results.append(run_function("native_guests:shrink_then_read", backend=backend,
                                    kwargs={"name": name}))
        with ShmRegion.attach(name) as region:
            assert region.size == 4096
    ref, ours = results
    before, after, _ = ours.value
    assert before == b"\x5a" * 16 and after != before
    assert ours.value == ref.value and ours.records == ref.records
    assert ours.hosts == ref.hosts, "the host must refuse, count and say why as on Amaranth"
    assert ours.hosts[0]["dma_errors"] > 0


def test_cli_bench_row():
    """``vmshm bench --backends native`` prints a row with the share of time in Python."""
    require_backend("native")
    r = subprocess.run([sys.executable, "-m", "vmshm.cli", "bench", "--backends", "native",
                        "--size", "4K"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stderr
    assert "in Python" in r.stdout
    row = [cell.strip() for cell in next(line for line in r.stdout.splitlines()
                                         if "native" in line).split("│")[1:-1]]
    assert row[0] == "native" and int(row[3]) > 0 and row[5].endswith("%")


@pytest.mark.parametrize("data_width", (32, 64))
def test_unaligned_spans_equal_amaranths(shm_objects, data_width):
    """Accesses that start and end inside a word and cross bursts, each burst's bytes handed
    to C++ whole (``vm_go_bytes``): the bytes, records and host events of GuestBus's bursts."""
    require_backend("native")
    # An object each (of one name length: the name's bytes take cycles): both start zeroed.
    ref, ours = [run_function("native_guests:unaligned_spans", backend=b,
                              kwargs={"name": shm_objects.create(4096, tag="spans")},
                              timing=STALLING, data_width=data_width)
                 for b in ("amaranth", "native")]
    assert ours.value == ref.value and ours.records == ref.records
    assert ours.events == ref.events
    assert max(r.words for r in ours.records) == 256, "no access took a whole burst"


def test_edge_skips_the_input_pass():
    """The harness's rising edge runs Verilator's own phases, not a second input pass: a
    Verilator that names them otherwise would silently halve the speed."""
    require_backend("native")
    from vmshm.native.engine import NativeSim
    from vmshm.host_model import HostModel
    sim = NativeSim(1, [HostModel()], [HostTiming()])
    try:
        assert sim.edge_phases()
    finally:
        sim.close()


def test_unchanged_inputs_skip_the_input_pass():
    """A cycle whose inputs are those of the cycle before settles without eval()'s input pass
    (an idle stretch: none), and one whose inputs changed runs it (a burst's beats: one each)."""
    require_backend("native")
    from vmshm.native.engine import NativeSim
    from vmshm.host_model import HostModel
    sim = NativeSim(1, [HostModel()], [HostTiming()])
    try:
        sim.idle(10)
        before = sim.input_passes()
        sim.idle(1000)
        assert sim.input_passes() - before <= 2
        before = sim.input_passes()
        sim.transact(0, 0, 0, 1, 3, (1, 2, 3, 4), (15,) * 4, 2000)
        assert sim.input_passes() - before >= 4
    finally:
        sim.close()


def test_function_reset_equals_amaranths(shm_objects):
    """``bus.reset()`` (the QEMU device server's DEVICE_RESET) behaves as on Amaranth."""
    require_backend("native")
    name = shm_objects.create(4096, tag="reset")
    ref, ours = [run_function("native_guests:reset_midway", backend=b, kwargs={"name": name},
                              timing=STALLING) for b in ("amaranth", "native")]
    before, after, back = ours.value
    assert after == before + 1 and back == b"before reset"
    assert ours.value == ref.value and ours.records == ref.records and ours.events == ref.events
    assert [h["is_open"] for h in ours.hosts] == [False]


def test_resets_reach_the_host_unanswered_as_on_amaranth(shm_objects):
    """Every reset sends RESET to the host, which releases the object and never answers it."""
    require_backend("native")
    name = shm_objects.create(4096, tag="rst")
    ref, ours = [run_function("native_guests:reset_midway", backend=b, kwargs={"name": name},
                              timing=HostTiming()) for b in ("amaranth", "native")]
    resets = [e for e in ours.events[0] if e.kind == "reset"]
    # One out of the power-on reset, one out of the guest's function reset.
    assert [e.op for e in resets] == ["RESET", "RESET"]
    assert not [e for e in ours.events[0] if e.kind == "ctl_rsp" and e.op == "RESET"]
    assert ours.events == ref.events and ours.records == ref.records


#: A short host timeout for the fault runs, and a stall well past it.
T = 64
STALL = 12 * T
#: Every fault kind on each channel, a few exchanges apart; several on one exchange too.
CTL_FAULTS = (Fault("ctl", "stall", exchange=1, beat=3, cycles=STALL),
              Fault("ctl", "double", exchange=3), Fault("ctl", "unasked", exchange=4),
              Fault("ctl", "late", exchange=5, cycles=20), Fault("ctl", "drop", exchange=6),
              Fault("ctl", "stall", exchange=9, beat=0, cycles=STALL),
              Fault("ctl", "late", exchange=10, cycles=STALL),
              Fault("ctl", "unasked", exchange=12), Fault("ctl", "double", exchange=12),
              Fault("ctl", "late", exchange=12, cycles=7))
DMA_FAULTS = (Fault("dma", "stall", exchange=0, cycles=STALL), Fault("dma", "drop", exchange=1),
              Fault("dma", "late", exchange=2, cycles=STALL), Fault("dma", "double", exchange=3),
              Fault("dma", "unasked", exchange=4), Fault("dma", "stall", exchange=5, beat=2,
                                                         cycles=STALL),
              Fault("dma", "late", exchange=6, cycles=9), Fault("dma", "double", exchange=6),
              Fault("dma", "unasked", exchange=6), Fault("dma", "stall", exchange=7, beat=1,
                                                         cycles=5))


@pytest.mark.parametrize("guest,faults,data_width,pressure", [
    ("opens_and_closes", CTL_FAULTS, 32, False), ("opens_and_closes", CTL_FAULTS, 32, True),
    ("window_accesses", DMA_FAULTS, 32, False), ("window_accesses", DMA_FAULTS, 32, True),
    ("window_accesses", DMA_FAULTS, 64, True)],
    ids=["ctl", "ctl-pressure", "dma", "dma-pressure", "dma-pressure-64"])
def test_host_faults_play_as_on_amaranth(shm_objects, guest, faults, data_width, pressure):
    """A misbehaving host (HostFaults: stalls, late, dropped, doubled and unasked answers) is
    played by the C++ host on the same cycles as by HostBFM: same results, records, events."""
    require_backend("native")
    name = shm_objects.create(4096, tag="flt")
    region = ShmRegion.attach(name)
    region.write(0, bytes(range(256)) * 16)
    region.close()
    runs = []
    for backend in ("amaranth", "native"):
        base = STALLING if pressure else HostTiming()
        timing = dataclasses.replace(base, faults=HostFaults(faults))
        runs.append(run_function(f"native_guests:{guest}", backend=backend, timing=timing,
                                 kwargs={"name": name, "rounds": 8, "pause": STALL + 4 * T},
                                 host_timeout=T, data_width=data_width))
        if backend == "amaranth":
            region = ShmRegion.attach(name)
            region.write(0, bytes(range(256)) * 16)
            region.close()
    ref, ours = runs
    # The faults bit: some accesses timed out, and the host saw resets beyond power-on's.
    assert errno.ETIMEDOUT in ref.value or b"\xff" * 16 in ref.value
    assert ours.value == ref.value
    assert ours.records == ref.records
    assert ours.events == ref.events, "the host-side handshakes differ"
    assert ours.hosts == ref.hosts


def test_qemu_serves_with_native_by_default(monkeypatch):
    """`vmshm qemu` picks native where it runs, else amaranth with a note; a choice is kept."""
    import argparse
    import io

    from rich.console import Console

    from vmshm.commands.qemu import _check_args, add_arguments, choose_backend

    require_backend("native")
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def chosen(*argv):
        args = parser.parse_args(["--shm", "/vmshm-x", *argv])
        _check_args(args)
        out = io.StringIO()
        choose_backend(args, Console(file=out, width=200))
        return args.backend, out.getvalue()

    assert chosen() == ("native", "")
    assert chosen("--backend", "amaranth") == ("amaranth", "")
    monkeypatch.setenv("PATH", "/nonexistent")     # no Verilator, no compiler
    backend, note = chosen()
    assert backend == "amaranth" and note.startswith("note: serving with the amaranth backend")
    with pytest.raises(ValueError, match="^--backend native: "):
        chosen("--backend", "native")


def test_writes_cut_by_a_host_timeout_equal_amaranths(shm_objects):
    """A host that seldom takes a beat makes the device give up on writes half-way and finish
    them with no byte enabled: native stores exactly what Amaranth's host does, cycle for cycle."""
    require_backend("native")
    name = shm_objects.create(4096, tag="cut")
    timing = HostTiming(dma_ready=0.1, seed=3)
    ref, ours = [run_function("native_guests:writes_to_a_slow_host", backend=b,
                              kwargs={"name": name}, timing=timing, host_timeout=8)
                 for b in ("amaranth", "native")]
    blocks = [ref.value[1][k:k + 64] for k in range(0, 512, 64)]
    assert any(0 < block.count(0) < 64 for block in blocks), "no write was cut half-way"
    assert ours.value == ref.value
    assert ours.records == ref.records and ours.events == ref.events
