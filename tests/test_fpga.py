"""FPGA prototyping: the on-chip self-test, `vmshm synth` and `vmshm build`.

The self-test runs in Amaranth's simulator everywhere. Synthesis and the board build need the
``fpga`` extra (YoWASP Yosys and nextpnr, amaranth-boards): without it they are skipped with the
reason, except under CI (``CI=true``), which installs it, where a missing extra fails. One
synthesis of the smallest configuration serves the whole session.
"""

import json
import os
import subprocess
import sys

import pytest
from amaranth.sim import Simulator

from vmshm.rtl.selftest import OnChipHost, SelfTestBoard, VMShmSelfTest
from vmshm.fpga.paths import critical_paths, describe, sets_fmax, signal_of
from vmshm.fpga.synth import DEFAULT_TARGET, ECP5Target, ecp5_target, synthesize
from vmshm.fpga.toolchain import toolchain_missing

#: The smallest core there is: what the synthesis test builds.
SMALLEST = ["--top", "core", "--data-width", "32", "--window-size", "64", "--name-size", "8",
            "--host-timeout", "0"]
#: The clock it must meet, with vmshm synth's fixed seed: a PCIe core's user clock.
SMALLEST_FREQ = 125


def _need(reason):
    # CI installs the fpga extra, so there a missing toolchain is a broken set-up.
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"must run under CI: {reason}")
        pytest.skip(reason)


def vmshm(*args, cwd=None, env=None, python_prefix=""):
    code = f"{python_prefix}import sys; from vmshm.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       timeout=600, cwd=cwd, env=env)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    return r


# -- the self-test, in simulation ---------------------------------------------------------------

def run_selftest(dut, cycles=5000):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out = {}

    async def bench(ctx):
        for cycle in range(cycles):
            await ctx.tick()
            if ctx.get(dut.done):
                out.update(cycle=cycle, passed=ctx.get(dut.passed), failed=ctx.get(dut.failed),
                           step=ctx.get(dut.step))
                return
        out.update(cycle=None, step=ctx.get(dut.step))

    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("params", [
    dict(),
    dict(data_width=64),
    dict(data_width=64, window_64bit=True, regs_size=4096, window_size=4096, name_size=64,
         host_size=256, vendor_id=0x1234, device_id=0x5678),
    dict(window_size=64, name_size=16, host_size=64, host_timeout=0, shm_name="/x",
         message="hi"),
], ids=["32", "64", "64-options", "tiny"])
def test_selftest_passes(params):
    dut = VMShmSelfTest(**params)
    out = run_selftest(dut)
    assert out["cycle"] is not None, f"hung at step {out['step']}"
    assert (out["passed"], out["failed"]) == (1, 0), f"failed at step {out['step']}"
    assert out["step"] == len(dut.steps) - 1


def test_selftest_fails_when_the_host_knows_another_name():
    dut = VMShmSelfTest()
    dut.host._MustUse__silence = True    # replaced before elaboration
    # The sequence writes /shared-with-qemu; a host that knows only /other answers ENOENT.
    dut._host = OnChipHost(dut.pci.core.addr_width, 32, name="/other", size=1024)
    out = run_selftest(dut)
    assert (out["passed"], out["failed"]) == (0, 1)
    open_step = next(i for i, s in enumerate(dut.steps)
                     if not s["write"] and s["space"] == 0 and s["addr"] == 0x8010_0400)
    assert out["step"] == open_step, "expected to fail at the OPEN read"


def test_selftest_checks_what_it_reads_back():
    dut = VMShmSelfTest()
    dut._steps[-3]["data"] ^= 1         # the last word of the message read back from the window
    out = run_selftest(dut)
    assert (out["passed"], out["failed"], out["step"]) == (0, 1, len(dut.steps) - 3)


def test_selftest_refuses_bad_parameters():
    with pytest.raises(ValueError, match="must fit the name buffer"):
        VMShmSelfTest(name_size=16, shm_name="/a-name-that-is-too-long")
    with pytest.raises(ValueError, match="must fit the object"):
        VMShmSelfTest(host_size=64, message="x" * 64)
    with pytest.raises(ValueError, match="size must be a power of two"):
        OnChipHost(20, 32, size=100)
    with pytest.raises(ValueError, match="non-empty str or bytes without NUL"):
        OnChipHost(20, 32, name=b"/a\0b")


def test_board_top_needs_leds():
    class NoLeds:
        default_clk_frequency = 1e6

        def request(self, *args, **kwargs):
            from amaranth.build import ResourceError
            raise ResourceError("none")

    board = SelfTestBoard()
    with pytest.raises(ValueError, match="no `led` or `rgb_led`"):
        board.elaborate(NoLeds())
    # Refused at elaboration: nothing of it is meant to be used any more.
    for part in (board, board.selftest, board.selftest.pci, board.selftest.pci.core,
                 board.selftest.host):
        part._MustUse__silence = True


# -- targets --------------------------------------------------------------------------------------

def test_targets():
    assert DEFAULT_TARGET.nextpnr_args() == ["--85k", "--package", "CABGA381", "--speed", "8"]
    assert ecp5_target(device="LFE5UM5G-45F", package="bg554", speed=7) == \
        ECP5Target("LFE5UM5G-45F", "CABGA554", 7)
    with pytest.raises(ValueError, match="must be an ECP5 device"):
        ecp5_target(device="XC7A35T")
    with pytest.raises(ValueError, match="speed must be 6, 7 or 8"):
        ECP5Target("LFE5U-85F", "CABGA381", 9)
    with pytest.raises(ValueError, match="not both"):
        ecp5_target(board="ulx3s-85f", device="LFE5U-85F")
    with pytest.raises(ValueError, match="freq must be"):
        synthesize("core", freq=0)


def test_board_target():
    _need(toolchain_missing(tools=False, boards=True))
    assert ecp5_target(board="ulx3s-85f") == \
        ECP5Target("LFE5U-85F", "CABGA381", 6, board="ULX3S_85F_Platform")
    assert ecp5_target(board="VersaECP5").device == "LFE5UM-45F"
    with pytest.raises(ValueError, match="not an ECP5 board"):
        ecp5_target(board="nitefury")
    with pytest.raises(ValueError, match="no board"):
        ecp5_target(board="nonesuch")


# -- a missing extra ------------------------------------------------------------------------------

# Pretend the extra is not installed: the checks ask importlib.util.find_spec.
HIDE_EXTRA = ("import importlib.util as u; f = u.find_spec; "
              "u.find_spec = lambda n, *a: None if n.startswith(('yowasp', 'amaranth_boards')) "
              "else f(n, *a); ")


@pytest.mark.parametrize("args", [["synth"], ["build", "--board", "ulx3s-85f"],
                                  ["build", "--list-boards"]], ids=["synth", "build", "list"])
def test_missing_extra_is_one_line(args, tmp_path):
    r = vmshm(*args, cwd=tmp_path, python_prefix=HIDE_EXTRA)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'vmshm[fpga]'" in lines[0], r.stderr


# -- synthesis: one run for the session -----------------------------------------------------------

@pytest.fixture(scope="session")
def synth_run(tmp_path_factory):
    _need(toolchain_missing())
    work = tmp_path_factory.mktemp("synth")
    r = vmshm("synth", *SMALLEST, "--freq", str(SMALLEST_FREQ), "--json", "synth.json",
              "--keep", "keep", cwd=work)
    return r, work


def test_synth_prints_a_table(synth_run):
    r, _ = synth_run
    assert r.returncode == 0, r.stderr
    for word in ("vmshm_core", "LUT4", "FF", "DP16KD", "Fmax clk MHz", "LFE5U-85F CABGA381",
                 "out of context"):
        assert word in r.stdout, word


def test_synth_writes_json(synth_run):
    r, work = synth_run
    assert r.returncode == 0, r.stderr
    doc = json.loads((work / "synth.json").read_text())
    assert doc["target"] == {"device": "LFE5U-85F", "package": "CABGA381", "speed": 8,
                             "board": None}
    assert doc["out_of_context"] and doc["freq_mhz"] == SMALLEST_FREQ
    (result,) = doc["results"]
    assert result["module"] == "vmshm_core" and result["params"]["window_size"] == 64
    res = result["resources"]
    assert 100 < res["LUT4"]["used"] < res["LUT4"]["available"]
    assert 50 < res["FF"]["used"] < res["FF"]["available"]
    assert res["DP16KD"]["used"] <= 1
    assert result["timing_met"] == (result["fmax_mhz"]["clk"] >= SMALLEST_FREQ)
    assert set(result["seconds"]) == {"generate", "yosys", "nextpnr"}
    (path,) = result["critical_paths"]
    assert path["from_clock"] == path["to_clock"] == "clk"
    # The path's delay is the clock period Fmax stands for.
    assert abs(1000 / path["delay_ns"] - result["fmax_mhz"]["clk"]) < 1
    assert path["logic_levels"] >= 1 and 0 < path["routing_share"] < 1
    # The cell is named after the signal it drives; Amaranth's "__" and Yosys' dots both read as dots.
    assert path["end"]["signal"]
    assert path["end"]["cell"].replace("__", ".").startswith(path["end"]["signal"])


def test_synth_meets_timing(synth_run):
    # A change that slows the design down past the clock a PCIe core hands its user logic
    # fails here, with the path that limits it in the message.
    r, work = synth_run
    assert r.returncode == 0, r.stderr
    (result,) = json.loads((work / "synth.json").read_text())["results"]
    assert result["fmax_mhz"]["clk"] >= SMALLEST_FREQ, \
        "missed timing: " + describe(result["critical_paths"][0])
    assert result["timing_met"]


def test_synth_prints_the_critical_path(synth_run):
    r, work = synth_run
    (result,) = json.loads((work / "synth.json").read_text())["results"]
    (path,) = result["critical_paths"]
    assert "Critical paths (what sets Fmax):" in r.stdout
    assert f"vmshm_core 32, {describe(path)}" in " ".join(r.stdout.split())


def test_synth_keeps_its_work(synth_run):
    r, work = synth_run
    assert r.returncode == 0, r.stderr
    kept = work / "keep" / "core-32"
    for name in ("vmshm_core.v", "vmshm_core.json", "yosys.log", "nextpnr.log", "report.json"):
        assert (kept / name).is_file(), name


# -- critical paths, from a report of the shape nextpnr-ecp5 writes --------------------------------

def _segment(kind, delay, src, dst, src_port="F", dst_port="A"):
    return {"type": kind, "delay": delay, "from": {"cell": src, "port": src_port},
            "to": {"cell": dst, "port": dst_port}}


def test_signal_names_come_back_from_cell_names():
    assert signal_of("fsm_state_TRELLIS_FF_Q_2") == "fsm_state"
    assert signal_of("name_ram.0.0") == "name_ram"
    assert signal_of("name_ram.1.0_DOB10_LUT4_Z") == "name_ram"
    assert signal_of("host__ctl_req__ready_LUT4_B_Z_LUT4_Z_3_B_PFUMX_Z") == "host.ctl_req.ready"
    assert signal_of("core.waddr_CCU2C_A0") == "core.waddr"
    assert signal_of("$abc$1234$auto$blifparse.cc:396:parse_blif$1235") is None


def test_critical_path_summary():
    report = {"critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": [
        _segment("clk-to-q", 4.0, "name_ram.0.0", "name_ram.0.0", "DOB1", "DOB1"),
        _segment("routing", 1.0, "name_ram.0.0", "name_byte_LUT4_Z", "DOB1", "C"),
        _segment("logic", 0.5, "name_byte_LUT4_Z", "name_byte_LUT4_Z", "C", "F"),
        _segment("routing", 3.0, "name_byte_LUT4_Z", "fsm_state_TRELLIS_FF_Q", "F", "DI"),
        _segment("setup", 1.5, "fsm_state_TRELLIS_FF_Q", "fsm_state_TRELLIS_FF_Q", "DI", "DI"),
    ]}]}
    (path,) = critical_paths(report, lambda net: net.upper())
    assert path["from_clock"] == path["to_clock"] == "CLK"
    assert path["delay_ns"] == 10.0 and path["routing_ns"] == 4.0
    assert path["routing_share"] == 0.4 and path["logic_levels"] == 1
    assert path["start"] == {"cell": "name_ram.0.0", "port": "DOB1", "signal": "name_ram",
                             "clk_to_q_ns": 4.0}
    assert path["end"]["signal"] == "fsm_state" and path["through"] == ["name_byte"]
    text = describe(path)
    assert text.startswith("CLK: 10.00 ns from name_ram (name_ram.0.0.DOB1)")
    assert "1 logic levels" in text and "40 % of the path" in text
    assert text.endswith("through name_byte")
    assert critical_paths({}) == []
    assert sets_fmax(path)
    io = dict(path, to_clock="<async>")
    assert not sets_fmax(io)


# -- the UltraScale+ top: size only ---------------------------------------------------------------

def test_synth_usp_reports_its_size(tmp_path):
    _need(toolchain_missing())
    r = vmshm("synth", "--top", "usp", "--json", "usp.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "synth_xilinx -family xcup" in out
    assert "Fmax needs the vendor's tools (Vivado), which are not part of the open flow" in out
    doc = json.loads((tmp_path / "usp.json").read_text())
    assert doc["results"] == []
    (result,) = doc["xilinx"]
    assert result["module"] == "vmshm_usp" and result["family"] == "xcup"
    res = result["resources"]
    # The core's name RAM is a block RAM; the shim's TLP logic is logic and registers.
    assert res["LUT"] > 500 and res["FF"] > 300
    assert res["RAMB18E2"] + 2 * res["RAMB36E2"] >= 1
    assert result["fmax_mhz"] is None
    assert all(t.startswith(("LUT", "FD", "RAMB", "CARRY", "MUXF", "INV", "$scopeinfo"))
               for t in result["cells"]), result["cells"]
    # Issue 22, finding 6: nothing combinational across the hard IP's boundary.
    assert doc["boundary"]["usp"] == ["no combinational path across the boundary; every input "
                                      "registered before use"]
    assert "hard-IP boundary of --top usp:" in r.stdout


def _unbuffered(width, user_width):
    """A stand-in for the shim's AxisSkid that is only wires: the boundary as main had it."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from vmshm.rtl.usp.streams import axis_signature

    class Wires(wiring.Component):
        def __init__(self):
            super().__init__({"i": In(axis_signature(width, user_width)),
                              "o": Out(axis_signature(width, user_width))})

        def elaborate(self, platform):
            m = Module()
            for name in ("tdata", "tuser", "tlast", "tkeep", "tvalid"):
                m.d.comb += getattr(self.o, name).eq(getattr(self.i, name))
            m.d.comb += self.i.tready.eq(self.o.tready)
            return m
    return Wires()


def test_boundary_check_prints_the_paths_of_an_unbuffered_shim(monkeypatch):
    """Finding 6: without the skid buffers, the check finds CQ/RC tready made from tkeep, names
    the cells, and finds the streams' inputs used deep before a register. On main's top it
    reported both tkeep -> tready paths and 18 inputs used deep (cfg_max_payload and
    cfg_max_read_req through 27 cells of length arithmetic, RC tdata through 40)."""
    _need(toolchain_missing())
    from vmshm.fpga.boundary import check_boundary
    from vmshm.rtl.usp import top
    monkeypatch.setattr(top, "AxisSkid", _unbuffered)
    report = check_boundary("usp", {"axis_width": 64})
    pairs = {(a, b) for a, b, _ in report.paths}
    assert ("s_axis_cq_tkeep", "s_axis_cq_tready") in pairs
    assert ("s_axis_rc_tkeep", "s_axis_rc_tready") in pairs
    assert "s_axis_rc_tdata" in report.deep_inputs
    assert not report.clean
    assert any("s_axis_cq_tkeep -> s_axis_cq_tready" in line for line in report.lines())


def test_synth_usp_refuses_what_it_cannot_build(tmp_path):
    # Checked before any tool runs: the core's 64-bit run would otherwise be wasted.
    r = vmshm("synth", "--top", "core", "usp", "--data-width", "32", "64", cwd=tmp_path)
    assert r.returncode == 2
    assert "--top usp --data-width 64: data_width must be 32" in r.stderr
    r = vmshm("synth", "--top", "usp", "--board", "ulx3s-85f", cwd=tmp_path)
    assert r.returncode == 2 and "sized for UltraScale+ only" in r.stderr


def test_synth_refuses_options_no_top_takes(tmp_path):
    r = vmshm("synth", "--top", "core", "--vendor-id", "1234", cwd=tmp_path)
    assert r.returncode == 2 and "--vendor-id: not taken by --top core" in r.stderr


# -- board builds ---------------------------------------------------------------------------------

def test_board_build_makes_a_bitstream(tmp_path):
    _need(toolchain_missing(boards=True))
    r = vmshm("build", "--board", "ulx3s-85f", "-o", "ulx3s", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "ulx3s"
    bit = (out / "vmshm_selftest.bit").read_bytes()
    assert b"\xff\xff\xbd\xb3" in bit[:4096], "no ECP5 preamble in the bitstream"
    lpf = (out / "vmshm_selftest.lpf").read_text()
    for led in ("led_0__io", "led_1__io", "led_2__io"):
        assert led in lpf
    assert "bitstream:" in r.stdout and "ULX3S_85F_Platform" in r.stdout
    # The ULX3S runs the design at 25 MHz, far below what it reaches.
    assert "timing: met (" in r.stdout and "against the 25 MHz board clock" in r.stdout
    assert "critical path, " in r.stdout and " logic levels " in r.stdout
    # The script reruns by hand with the same tools.
    assert "YOSYS=" in (out / "yowasp_env.sh").read_text()


def test_board_build_plan_for_a_xilinx_pcie_card(tmp_path):
    _need(toolchain_missing(tools=False, boards=True))
    r = vmshm("build", "--board", "nitefury", "-o", "nitefury", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "nitefury"
    assert "create_project -force -name vmshm_selftest -part xc7a200tfbg484-2" in \
        (out / "vmshm_selftest.tcl").read_text()
    assert "module vmshm_selftest" in (out / "vmshm_selftest.v").read_text()
    assert (out / "vmshm_selftest.xdc").is_file() and (out / "build_vmshm_selftest.sh").is_file()
    assert "build plan" in r.stdout


def test_board_errors(tmp_path):
    _need(toolchain_missing(tools=False, boards=True))
    r = vmshm("build", cwd=tmp_path)
    assert r.returncode == 2 and "--board NAME" in r.stderr
    r = vmshm("build", "--board", "nonesuch", cwd=tmp_path)
    assert r.returncode == 2 and "no board 'nonesuch'" in r.stderr
    r = vmshm("build", "--list-boards", cwd=tmp_path)
    assert r.returncode == 0 and "ulx3s-85f" in r.stdout and "nitefury" in r.stdout
