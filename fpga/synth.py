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

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .paths import critical_paths
from .platforms import resolve_board
from .toolchain import RESOURCES, _clock_name, _run_tool, require_toolchain, write_verilog

__all__ = ["ECP5Target", "SynthResult", "DEFAULT_TARGET", "ecp5_target", "synthesize"]

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
