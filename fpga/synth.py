"""Synthesize a VMShm top for an ECP5 FPGA with the open toolchain from PyPI: size and speed.

``vmshm synth`` runs Yosys (``synth_ecp5``) and nextpnr-ecp5 from the YoWASP packages (the
``fpga`` extra: ``pip install 'vmshm[fpga]'``) on the Verilog of :func:`vmshm.rtl.tops.generate`,
and reads LUTs, flip-flops, block RAMs and the highest clock frequency from nextpnr's JSON report.

The tops are placed and routed *out of context* (``nextpnr-ecp5 --out-of-context``): no I/O
buffers, ports left as internal nets. The core's ports are about 300 signals and the PCI
function's more, past the 197 user I/Os of a CABGA381 package; out of context the numbers are
those of the function itself, as it would sit inside a larger design (behind a PCIe hard IP),
not of a pin-limited toy wrapper. Clocks are not promoted to global nets in that mode; before the
timing work of issue 13, placing the 32-bit core with its I/O on a 756-ball package, where it
fits, gave 101 MHz against 95 to 98 MHz out of context, on the same critical path.
"""

import argparse
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vmshm.options import TOP_OPTIONS, UsageError, add_core_args, add_pci_args, core_args

from .paths import critical_paths, describe, sets_fmax
from .platforms import resolve_board
from .toolchain import (RESOURCES, ToolchainMissing, _clock_name, _run_tool, require_toolchain,
                        tool_versions, write_verilog)

__all__ = ["ECP5Target", "SynthResult", "DEFAULT_TARGET", "ecp5_target", "synthesize",
           "add_arguments", "run", "synthesize_all"]

#: nextpnr-ecp5's device flags, as amaranth's LatticePlatform spells the devices.
DEVICE_FLAGS = {
    "LFE5U-12F": "--12k", "LFE5U-25F": "--25k", "LFE5U-45F": "--45k", "LFE5U-85F": "--85k",
    "LFE5UM-25F": "--um-25k", "LFE5UM-45F": "--um-45k", "LFE5UM-85F": "--um-85k",
    "LFE5UM5G-25F": "--um5g-25k", "LFE5UM5G-45F": "--um5g-45k", "LFE5UM5G-85F": "--um5g-85k",
}
#: ECP5 packages: amaranth-boards' short names and nextpnr's names.
PACKAGES = {"BG256": "CABGA256", "MG285": "CSFBGA285", "BG381": "CABGA381",
            "BG554": "CABGA554", "BG756": "CABGA756"}


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
        An amaranth-boards platform (see :func:`vmshm.fpga.platforms.resolve_board`); its
        device, package and speed are used.
    device, package, speed : optional
        Given directly instead: ``LFE5U-85F``, ``CABGA381`` (or ``BG381``), ``8``. Missing ones
        are taken from :data:`DEFAULT_TARGET`.
    """
    if board is not None:
        if device is not None or package is not None or speed is not None:
            raise ValueError("give --board, or --device/--package/--speed, not both")
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
    # What sets each clock's Fmax: see vmshm.fpga.paths.critical_paths.
    critical_paths: list = field(default_factory=list)

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


def synthesize(top="core", params=None, *, target=DEFAULT_TARGET, freq=125.0, seed=1,
               workdir=None, progress=None, verilog=None):
    """Synthesize, place and route ``top`` out of context and return a :class:`SynthResult`.

    Parameters
    ----------
    top : str
        A key of :data:`vmshm.rtl.tops.TOPS`.
    params : dict, optional
        Its parameters, as for :func:`vmshm.rtl.tops.generate`.
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
    verilog : str, optional
        The top's Verilog, if it was already generated from ``params``.

    Raises
    ------
    ToolchainMissing
        The ``fpga`` extra is not installed.
    ToolFailed
        Yosys or nextpnr failed; the message holds the end of its log.
    """
    from vmshm.rtl.tops import module_name

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
        result.seconds["generate"] = write_verilog(work, top, params, verilog, progress)

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
    result.critical_paths = critical_paths(report, _clock_name)
    return result


# -- the command line -----------------------------------------------------------------------------

def add_arguments(parser):
    """Add ``vmshm synth``'s options to ``parser``: the core's and the PCI function's, then its own.

    ``--top`` and ``--data-width`` take several values here: every combination is synthesized
    and reported in one table. They replace the shared options of the same name, so ``parser``
    must be made with ``conflict_handler="resolve"``.
    """
    from vmshm.rtl.tops import TOPS

    add_core_args(parser)
    add_pci_args(parser)

    parser.add_argument("--top", nargs="+", choices=tuple(TOPS), default=["core"],
                        metavar="TOP", help=f"tops to synthesize: {', '.join(TOPS)} "
                                            f"(default core)")
    parser.add_argument("--data-width", nargs="+", type=int, choices=(32, 64), default=[32],
                        metavar="W", help="data path widths: 32, 64 or both (default 32)")
    parser.add_argument("--axis-width", type=int, choices=(64, 256), default=None, metavar="W",
                        help="AXI4-Stream width of --top usp: 64 (default) or 256")
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


def run(args, console):
    """Run ``vmshm synth`` with parsed ``args`` and return the exit status."""
    from vmshm.rtl.tops import top_parameters

    # An option must suit at least one of the tops; each top takes the ones it has.
    for name in TOP_OPTIONS:
        value = getattr(args, name, None)
        if value not in (None, False) and not any(name in top_parameters(t) for t in args.top):
            raise UsageError(f"--{name.replace('_', '-')}: not taken by --top "
                             f"{' '.join(args.top)}")

    def params_for(top, width):
        return core_args(argparse.Namespace(**{**vars(args), "data_width": width}), top,
                         strict=False)

    try:
        return synthesize_all(args, console, params_for)
    except ToolchainMissing as exc:
        raise UsageError(str(exc)) from None


def synthesize_all(args, console, params_for):
    """Synthesize every ``--top`` at every ``--data-width`` and print the tables.

    ECP5 tops are placed and routed (:func:`synthesize`); the UltraScale+ top is only sized
    (:func:`vmshm.fpga.xilinx.synthesize_xilinx`). ``params_for(top, data_width)`` gives each
    configuration's parameters. Return the exit status.
    """
    from vmshm.rtl.tops import generate
    from .xilinx import XILINX_NOTE, XILINX_TOPS, synthesize_xilinx

    if args.json and os.path.isdir(args.json):
        raise ValueError(f"--json needs a file name, not the folder {args.json!r}")
    require_toolchain(boards=args.board is not None)
    target = ecp5_target(board=args.board, device=args.device, package=args.package,
                         speed=args.speed)
    configs = [(top, w, params_for(top, w)) for top in dict.fromkeys(args.top)
               for w in dict.fromkeys(args.data_width)]
    if all(top in XILINX_TOPS for top, _, _ in configs) and any(
            v is not None for v in (args.board, args.device, args.package, args.speed)):
        raise UsageError("--board, --device, --package and --speed choose an ECP5 device; "
                         f"--top {' '.join(args.top)} is sized for UltraScale+ only")
    # Every configuration is built before any tool runs: a parameter a top refuses (the
    # UltraScale+ shim takes 32-bit data only) is one line, not a failure halfway through.
    verilog = {}
    for top, width, params in configs:
        try:
            verilog[top, width] = generate(top, **params)
        except ValueError as exc:
            raise UsageError(f"--top {top} --data-width {width}: {exc}") from None
    results, xresults = [], []
    with console.status("starting") as status:
        for i, (top, width, params) in enumerate(configs, start=1):
            def progress(text, i=i):
                status.update(f"[{i}/{len(configs)}] {text}")
            keep = None if args.keep is None else Path(args.keep) / f"{top}-{width}"
            if top in XILINX_TOPS:
                xresults.append(synthesize_xilinx(top, params, workdir=keep, progress=progress,
                                                  verilog=verilog[top, width]))
            else:
                results.append(synthesize(top, params, target=target, freq=args.freq,
                                          seed=args.seed, workdir=keep, progress=progress,
                                          verilog=verilog[top, width]))
    if results:
        console.print(_table(results, target, args.freq, args.seed))
        console.print("LUT4: logic cells (TRELLIS_COMB: LUT4s and carry-chain halves) after "
                      "packing; FF: TRELLIS_FF; DP16KD: 18 Kib block RAMs; Fmax from nextpnr's "
                      "timing analysis after routing.")
        console.print("Critical paths (what sets Fmax):")
        for r in results:
            for path in filter(sets_fmax, r.critical_paths):
                console.print(f"  {r.module} {r.params.get('data_width', 32)}, "
                              f"{describe(path)}", markup=False)
    if xresults:
        console.print(_xilinx_table(xresults))
        console.print(XILINX_NOTE)
    if args.json:
        doc = {"target": asdict(target), "freq_mhz": args.freq, "seed": args.seed,
               "out_of_context": True, "tools": tool_versions(),
               "results": [r.as_dict() for r in results]}
        if xresults:
            doc["xilinx"] = [r.as_dict() for r in xresults]
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"wrote {args.json}", markup=False)
    if args.keep:
        console.print(f"kept the work files in {args.keep}", markup=False)
    return 0


def _xilinx_table(results):
    from rich.table import Table

    table = Table(title="UltraScale+ (Yosys synth_xilinx -family xcup), out of context: size "
                        "only")
    for col in ("top", "width", "AXIS", "LUT", "FF", "CARRY", "LUTRAM/SRL", "RAMB36E2",
                "RAMB18E2", "Fmax", "seconds"):
        table.add_column(col, justify="left" if col == "top" else "right")
    for r in results:
        res = r.resources
        table.add_row(r.module, str(r.params.get("data_width", 32)),
                      str(r.params.get("axis_width", 64)),
                      *(str(res[k]) for k in ("LUT", "FF", "CARRY", "LUTRAM/SRL", "RAMB36E2",
                                              "RAMB18E2")),
                      "Vivado", f"{r.seconds.get('yosys', 0):.1f}")
    return table
