"""Check the timing model (vmshm.timing, docs/timing.md) against the simulator, and `vmshm timing`.

The model's formulas must equal the simulated cycles of every phase exactly on a grid of name
lengths, data widths, host and DMA latencies and burst lengths; with random back-pressure their
expected values must match the mean of many transactions. The timeout path is checked end to end:
a late host answer gives ETIMEDOUT, the device releases the object the host opened late, and a
later OPEN works.
"""

import csv
import errno
import json
import struct
import subprocess
import sys

import pytest

from vmshm import timing as T
from vmshm.abi.regmap import REG, Status
from vmshm.backends import backend_names
from vmshm.cli import main
from vmshm.driver_model import vmshm_probe
from vmshm.host_model import HostModel, HostTiming
from vmshm.sim import simulate

#: Name lengths without the NUL: "/" alone (the host refuses it), word boundaries at 32 and 64
#: bits on both sides, and the longest name the host accepts.
NAME_LENGTHS = (1, 2, 3, 4, 7, 8, 9, 16, 31, 100, 256)
BURSTS = (1, 2, 7, 64, 256)
DATA_WIDTHS = (32, 64)


@pytest.fixture(scope="module")
def objects():
    """Objects whose names have each length of the grid; removed after the module."""
    objs = T._Objects(max(BURSTS) * 8)
    yield objs
    objs.cleanup()


def run_plan(objects, plan, *, data_width, timing, **params):
    """Run :func:`vmshm.timing.measure` over ``plan`` (``[(length, burst)]``) in one simulation."""
    steps = [(objects.name(length), burst) for length, burst in plan]
    result = simulate(lambda bus: T.measure(bus, plan=steps), timing=timing,
                      data_width=data_width, **params)
    return result, T.split_phases(result.records, result.events[0])


@pytest.mark.parametrize("data_width", DATA_WIDTHS)
@pytest.mark.parametrize("host_latency", (0, 1, 37, 100))
@pytest.mark.parametrize("dma_latency", (0, 1, 13))
def test_model_matches_simulation(objects, data_width, host_latency, dma_latency):
    plan = [(length, BURSTS[i % len(BURSTS)]) for i, length in enumerate(NAME_LENGTHS)]
    timing = HostTiming(ctl_latency=host_latency, dma_latency=dma_latency)
    result, rows = run_plan(objects, plan, data_width=data_width, timing=timing)
    assert result.value["status"][0] == errno.EINVAL     # "/" alone names no object
    assert set(result.value["status"][1:]) == {0}
    seen = set()
    for row in rows:
        length, burst = plan[row["rep"]]
        params = T.TimingParams(name_length=length, data_width=data_width,
                                host_latency=host_latency, dma_latency=dma_latency, burst=burst)
        want = T.model_phases(params)[row["op"]]
        assert row["phases"] == want, (row["op"], length, burst)
        assert row["end"] - row["start"] == T.total(want)
        seen.add((row["op"], row["rep"]))
    # Every step's OPEN and CLOSE, and its window accesses where the OPEN succeeded.
    assert seen == {(op, i) for i in range(len(plan)) for op in T.OPS
                    if i or op in ("OPEN", "CLOSE")}


@pytest.mark.parametrize("data_width", DATA_WIDTHS)
def test_closed_forms(data_width):
    """The totals docs/timing.md gives, for every name length the name buffer can hold."""
    wb = data_width // 8
    for length in range(1, 300):
        b = length + 1
        w = -(-b // wb)
        for lat in (0, 5):
            phases = T.open_phases(length, data_width, lat)
            assert phases["name_write"] == w + 3
            assert T.open_read_cycles(length, data_width, lat) == b + w + lat + 6
            assert T.total(phases) == b + 2 * w + lat + 9
    for n in (1, 16, 256):
        assert T.total(T.read_phases(n, 9)) == n + 3 + 9
        assert T.total(T.write_phases(n, 9)) == n + 4 + 9
    assert T.total(T.close_phases(9)) == 7 + 9


def test_model_matches_random_backpressure(objects):
    """Expected values: the mean of 48 transactions each is within 5 % of the model."""
    length, burst = 40, 16
    params = T.TimingParams(name_length=length, burst=burst, host_latency=5, dma_latency=2,
                            ctl_ready=0.5, dma_ready=0.5, rsp_valid=0.5)
    point = T.run_point(params, repeat=48, seed=11, objects=objects)
    assert point.samples == {op: 48 for op in T.OPS}
    for op in T.OPS:
        got, want = T.total(point.measured[op]), T.total(point.model[op])
        assert abs(got - want) <= 0.05 * want, (op, got, want)
    # The phases that back-pressure stretches, one by one.
    for op, phase in (("OPEN", "request"), ("READ", "response"), ("WRITE", "request")):
        got, want = point.measured[op][phase], point.model[op][phase]
        assert abs(got - want) <= 0.06 * want, (op, phase, got, want)
    assert point.measured["OPEN"]["request"] > 1.5 * (length + 1)


@pytest.mark.parametrize("data_width", DATA_WIDTHS)
@pytest.mark.parametrize("length", (3, 40))
def test_open_timeout_boundary(objects, data_width, length):
    """A host answering within host_timeout - B - W cycles is in time; one cycle later is not."""
    timeout = 80
    slack = timeout - T.name_bytes(length) - T.name_words(length, data_width)
    for latency, status in ((slack, "OK"), (slack + 1, "ETIMEDOUT")):
        params = T.TimingParams(name_length=length, data_width=data_width,
                                host_latency=latency, host_timeout=timeout, burst=1)
        point = T.run_point(params, objects=objects)
        assert point.status == status
        assert T.open_in_time(length, data_width, latency, timeout) == (status == "OK")
        assert point.measured["OPEN"] == point.model["OPEN"]
        if status == "ETIMEDOUT":
            opened = point.measured["OPEN"]
            assert (T.total(opened) - opened["name_write"] ==
                    T.open_timeout_cycles(length, data_width, timeout) == timeout + 6)


@pytest.mark.parametrize("data_width", DATA_WIDTHS)
def test_late_open_answer_is_released(shm_objects, data_width):
    """Late host answer: ETIMEDOUT, the device closes what the host opened, a new OPEN works."""
    name = shm_objects.create(4096)
    timeout, late = 100, 500
    timing = HostTiming(ctl_latency=late)
    host = HostModel(timing)
    length = len(name)

    async def guest(bus):
        drv = (await vmshm_probe(bus))[0][0]
        fd = await drv.open()
        seen = {}
        bus.label = "OPEN 0"
        try:
            await drv.ioctl(fd, 0, name)
        except OSError as exc:
            seen["errno"] = exc.errno
        bus.label = ""
        # The host opened the object as the name arrived; its answer is still on the way.
        seen["host_open_at_timeout"] = host.is_open
        timing.ctl_latency = 0          # the device's own CLOSE is answered at once
        await bus.idle(late)
        seen["host_open_after_late_answer"] = host.is_open
        status = await drv.regs.read32(REG["STATUS"].offset)
        seen["device_open"], seen["last_error"] = status & 1, status >> 8 & 0xFF
        await drv.ioctl(fd, 0, name)    # a later OPEN works
        seen["host_open_after_reopen"] = host.is_open
        mapping = await drv.mmap(fd, 16)
        await mapping.write(0, b"late but fine")
        seen["read_back"] = await mapping.read(0, 13)
        await drv.munmap(mapping)
        await drv.close(fd)
        seen["host_open_at_end"] = host.is_open
        return seen

    try:
        result = simulate(guest, hosts=host, timing=timing, data_width=data_width,
                          host_timeout=timeout)
    finally:
        if host.is_open:
            host.close()
    seen = result.value
    assert seen["errno"] == errno.ETIMEDOUT
    assert seen["host_open_at_timeout"] is True
    assert seen["host_open_after_late_answer"] is False
    assert (seen["device_open"], seen["last_error"]) == (0, Status.ETIMEDOUT)
    assert seen["host_open_after_reopen"] is True
    assert seen["read_back"] == b"late but fine"
    assert seen["host_open_at_end"] is False
    (row,) = [r for r in T.split_phases(result.records, result.events[0]) if r["op"] == "OPEN"]
    params = T.TimingParams(name_length=length, data_width=data_width, host_latency=late,
                            host_timeout=timeout)
    assert row["phases"] == T.model_phases(params)["OPEN"]
    # The device's cleanup CLOSE went out after the late answer, before the guest's next OPEN.
    kinds = [(e.kind, e.op) for e in result.events[0] if e.kind.startswith("ctl")]
    assert kinds[:6] == [("ctl_req_first", "OPEN"), ("ctl_req_last", "OPEN"),
                         ("ctl_rsp", "OPEN"), ("ctl_req_first", "CLOSE"),
                         ("ctl_req_last", "CLOSE"), ("ctl_rsp", "CLOSE")]


def test_close_timeout(shm_objects):
    """A CLOSE the host answers late ends after max(T, 1) + 6 cycles; the window is shut."""
    name = shm_objects.create(4096)
    timeout = 50
    timing = HostTiming()
    host = HostModel(timing)

    async def guest(bus):
        drv = (await vmshm_probe(bus))[0][0]
        fd = await drv.open()
        await drv.ioctl(fd, 0, name)
        timing.ctl_latency = timeout + 20
        bus.label = "CLOSE 0"
        await drv.close(fd)
        bus.label = ""
        timing.ctl_latency = 0
        status = await drv.regs.read32(REG["STATUS"].offset)
        return status & 1, status >> 8 & 0xFF

    try:
        result = simulate(guest, hosts=host, timing=timing, host_timeout=timeout)
    finally:
        if host.is_open:
            host.close()
    assert result.value == (0, Status.ETIMEDOUT)
    (rec,) = [r for r in result.records if r.label == "CLOSE 0"]
    assert rec.cycles == T.close_timeout_cycles(timeout) == T.total(
        T.close_phases(timeout + 20, host_timeout=timeout))
    assert not T.close_in_time(timeout + 20, timeout) and T.close_in_time(timeout - 1, timeout)


def test_parse_sweep():
    assert T.parse_sweep("host-latency=0:1000:100") == ("host-latency",
                                                        list(range(0, 1001, 100)))
    assert T.parse_sweep("ready=0.2:1:0.2") == ("ready", [0.2, 0.4, 0.6, 0.8, 1.0])
    assert T.parse_sweep("data_width=32:64:32") == ("data-width", [32, 64])
    for bad in ("latency=0:10:1", "host-latency", "host-latency=5:1:1",
                "host-latency=0:10:0", "burst=a:b:c"):
        with pytest.raises(ValueError):
            T.parse_sweep(bad)


def test_pcie_flags_and_recommendation():
    assert set(T.pcie_flags(10e-6).values()) == {"ok"}
    assert T.pcie_flags(60e-6) == {"default": "may", "A": "may", "B": "ok", "C": "ok", "D": "ok"}
    assert T.pcie_flags(60e-3) == {"default": "will", "A": "will", "B": "may", "C": "ok",
                                   "D": "ok"}
    assert T.pcie_flag_text(10e-6) == "ok"
    assert T.pcie_flag_text(20e-3) == "times out: A; may: default,B"
    rec = T.recommend_host_timeout(125e6, 17, 32, 1000)
    assert (rec["range"], rec["host_timeout"]) == ("default", 5619)
    assert rec["timeout_s"] <= T.PCIE_MARGIN * 50e-6
    assert T.open_in_time(17, 32, 1000, rec["host_timeout"])
    assert not T.open_in_time(17, 32, 1000, rec["needed"] - 1)
    # A host slower than the default range allows: program range B and wait up to 9 ms.
    slow = T.recommend_host_timeout(125e6, 17, 32, 100_000)
    assert slow["range"] == "B" and slow["timeout_s"] <= T.PCIE_MARGIN * 10e-3
    assert T.recommend_host_timeout(125e6, 17, 32, 10**12)["range"] is None


def _png_size(path):
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


def test_sweep_writes_table_csv_json_png(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["timing", "--sweep", "host-latency=0:200:100", "--clock", "125",
                 "--out", str(out)]) == 0
    assert "recommended: --host-timeout 5619" in capsys.readouterr().out
    table = (out / "table.txt").read_text()
    assert "host-latency" in table and "stream" in table and "1029" not in table
    for latency, ioctl in ((0, 37), (100, 137), (200, 237)):
        assert f"{latency}   OK" in table and f" {ioctl} " in table
    with open(out / "timing.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["value"] for r in rows} == {"0", "100", "200"}
    assert {r["op"] for r in rows} == set(T.OPS)
    assert all(float(r["cycles"]) == float(r["model"]) for r in rows)
    (host_row,) = [r for r in rows if r["value"] == "200" and r["op"] == "OPEN" and
                   r["phase"] == "host"]
    assert host_row["cycles"] == "201" and float(host_row["ns"]) == 1608.0
    doc = json.loads((out / "timing.json").read_text())
    assert doc["sweep"] == "host-latency" and doc["clock_mhz"] == 125
    assert [p["value"] for p in doc["points"]] == [0, 100, 200]
    assert all(p["matches_model"] for p in doc["points"])
    assert doc["points"][2]["open_read_cycles"] == 229
    assert [r["range"] for r in doc["pcie_ranges"]] == ["default", "A", "B", "C", "D"]
    assert doc["recommendation"]["host_timeout"] == 5619
    width, height = _png_size(out / "timing.png")
    assert 800 <= width <= 4000 and 300 <= height <= 3000


def test_single_run_waveform(tmp_path, capsys):
    out = tmp_path / "wave"
    assert main(["timing", "--waveform", "--host-latency", "12", "--data-width", "64",
                 "--out", str(out)]) == 0
    assert (out / "waveform.vcd").read_bytes().startswith(b"$")
    for op, phases in (("open", ["name write 6", "setup 6", "name 19", "host 13", "cpl 1"]),
                       ("close", ["setup 5", "host 13", "cpl 1"])):
        src = json.loads((out / f"{op}.wavedrom.json").read_text())
        lanes = {lane["name"]: lane for lane in src["signal"] if isinstance(lane, dict)}
        assert lanes["phase"]["data"] == phases
        host = {lane["name"]: lane for group in src["signal"] if isinstance(group, list)
                for lane in group[1:]}
        assert "1" in host["ctl_req.valid"]["wave"] and "1" in host["ctl_rsp.valid"]["wave"]
        svg = (out / f"{op}.wavedrom.svg").read_text()
        assert "<svg" in svg and "ctl_req.valid" in svg
    width, height = _png_size(out / "timing.png")
    assert width > 500 and height > 200


def test_measure_host(tmp_path, capsys):
    out = tmp_path / "host"
    assert main(["timing", "--measure-host", "5", "--clock", "250", "--out", str(out)]) == 0
    doc = json.loads((out / "timing.json").read_text())
    cycles = doc["measured_host"]["host_latency_cycles"]
    assert cycles >= 1 and doc["measured_host"]["repeat"] == 5
    assert doc["points"][0]["params"]["host_latency"] == cycles
    assert "shm_open+fstat median" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--measure-host", "3"], ["--waveform", "--sweep", "burst=1:2"],
                                  ["--sweep", "name-length=0:4:1"], ["--burst", "257"],
                                  ["--repeat", "0"]])
def test_bad_options_exit_2(tmp_path, capsys, argv):
    assert main(["timing", "--out", str(tmp_path), *argv]) == 2
    assert "vmshm timing:" in capsys.readouterr().err


def test_demo_path_does_not_import_plotting():
    code = ("import sys, vmshm.cli; vmshm.cli._parser(); import vmshm.timing; "
            "bad = {'matplotlib', 'wavedrom'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("backend", backend_names(in_process=True))
@pytest.mark.parametrize("data_width", (32, 64))
def test_doorbell_latencies_match_the_model(data_width, backend):
    # Exact: the doorbell's way out and a ring's way in, in cycles, as docs/timing.md states.
    from conftest import require_backend
    from vmshm.backends import run_function
    require_backend(backend)
    got = run_function("vmshm.timing.runs:measure_doorbells", backend=backend,
                       data_width=data_width).value
    assert got == {"doorbell_write": T.doorbell_write_cycles(),
                   "doorbell_to_host": T.doorbell_to_host_cycles(),
                   "ring_to_intx": T.ring_to_intx_cycles(),
                   "ring_to_msi": T.ring_to_msi_cycles()}


def test_cli_prints_doorbell_latencies(capsys):
    assert main(["timing", "--doorbells"]) == 0
    out = capsys.readouterr().out
    assert "HostModel.ring -> MSI message taken" in out and "doorbell latencies" in out
