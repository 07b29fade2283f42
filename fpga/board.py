"""Build the on-chip self-test for an FPGA board: a bitstream for ECP5 boards, a plan elsewhere.

``vmshm build --board NAME`` takes an amaranth-boards platform and builds
:class:`~vmshm.rtl.selftest.SelfTestBoard` for it: the PCI function driven by a sequencer that
plays the driver and the seed's example, answered by a block-RAM host, with the result on the
board's LEDs. On an ECP5 board the whole flow runs here through the open toolchain from PyPI
(Yosys, nextpnr-ecp5, ecppack from YoWASP) down to a bitstream. For any other board (a Xilinx
PCIe card such as the NiteFury) it writes amaranth's build plan for the vendor's tools: the
Verilog, the constraints and the script that runs them.

What the self-test does not have is a PCIe link: no hard IP, no host, no DMA to host memory. Those
come with the hard-IP front end.
"""

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from vmshm.options import UsageError, add_core_args, add_pci_args, core_args, parse_size

from .paths import critical_paths, describe, sets_fmax
from .platforms import _builds_bitstream, list_boards, resolve_board
from .toolchain import (RESOURCES, ToolchainMissing, ToolFailed, _clock_name, require_toolchain,
                        tool_path)

__all__ = ["BuildResult", "build", "add_arguments", "run"]

#: The name of the design in every build.
BUILD_NAME = "vmshm_selftest"

@dataclass
class BuildResult:
    """What ``vmshm build`` produced for one board."""
    board: str
    device: str
    kind: str                   # "bitstream": built here; "plan": files for the vendor's tools
    build_dir: Path
    script: Path
    bitstream: Path = None
    clock_mhz: float = None     # the board clock the design runs on
    resources: dict = field(default_factory=dict)
    fmax_mhz: dict = field(default_factory=dict)
    seconds: float = 0.0
    critical_paths: list = field(default_factory=list)

    @property
    def timing_met(self):
        """Whether every clock reaches the board clock; ``None`` when there is nothing to judge
        (a plan, or a build without nextpnr's report)."""
        if self.clock_mhz is None or not self.fmax_mhz:
            return None
        return all(f >= self.clock_mhz for f in self.fmax_mhz.values())


def build(board, params=None, build_dir=None, *, plan_only=False, progress=None):
    """Build the self-test for ``board`` and return a :class:`BuildResult`.

    Parameters
    ----------
    board : str
        See :func:`resolve_board`.
    params : dict, optional
        Parameters of :class:`~vmshm.rtl.selftest.VMShmSelfTest` (window size, data width, ...).
    build_dir : str or Path, optional
        Where the build goes (default ``build-BOARD``). Files of an earlier build are replaced.
    plan_only : bool
        Write the build plan even for an ECP5 board, without running it.
    progress : callable, optional
        Called with a line of text as each stage starts.

    Raises
    ------
    ToolchainMissing
        The ``fpga`` extra is not installed.
    ToolFailed
        The build script failed; the message holds the end of its log.
    """
    from vmshm.rtl.selftest import SelfTestBoard

    cls = resolve_board(board)
    platform = cls()
    build_dir = Path(build_dir or f"build-{board.lower()}")
    top = SelfTestBoard(**(params or {}))
    kind = "bitstream" if _builds_bitstream(platform) and not plan_only else "plan"
    if kind == "bitstream":
        require_toolchain()
    if progress is not None:
        progress(f"elaborating the self-test for {cls.__name__}")
    extra = {}
    if _builds_bitstream(platform):
        # nextpnr's JSON report gives utilisation and Fmax without reading its log.
        extra["nextpnr_opts"] = f"--report {BUILD_NAME}.report.json"
    try:
        plan = platform.prepare(top, name=BUILD_NAME, **extra)
    except (LookupError, AttributeError) as exc:
        # A board without a default clock, say: amaranth cannot make the sync domain.
        raise ValueError(f"cannot build for {cls.__name__}: {exc}") from None
    root = plan.extract(build_dir)
    script = root / f"{plan.script}.sh"
    clock = getattr(platform, "default_clk_frequency", None)
    result = BuildResult(cls.__name__, platform.device, kind, root, script,
                         clock_mhz=None if clock is None else clock / 1e6)
    if kind == "plan":
        return result

    # A file the build script sources (AMARANTH_ENV_TRELLIS) so a rerun by hand finds the same
    # YoWASP tools: `AMARANTH_ENV_TRELLIS=$PWD/yowasp_env.sh sh build_vmshm_selftest.sh`.
    tools = {var: tool_path(tool) for var, tool in (("YOSYS", "yosys"),
                                                    ("NEXTPNR_ECP5", "nextpnr-ecp5"),
                                                    ("ECPPACK", "ecppack"))}
    env_file = root / "yowasp_env.sh"
    env_file.write_text("".join(f"export {k}='{v}'\n" for k, v in tools.items()))
    products = {ext: root / f"{BUILD_NAME}.{ext}" for ext in ("json", "config", "bit",
                                                               "report.json")}
    for path in products.values():
        path.unlink(missing_ok=True)
    env = dict(os.environ, **tools, AMARANTH_ENV_TRELLIS=str(env_file.resolve()))
    log = root / "build.log"
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(["sh", script.name], cwd=root, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        waiter = threading.Thread(target=proc.wait, daemon=True)
        waiter.start()
        stage = None
        while waiter.is_alive():
            now = ("ecppack: packing the bitstream" if products["config"].exists() else
                   "nextpnr-ecp5: placing and routing" if products["json"].exists() else
                   "yosys: synthesizing")
            if now != stage and progress is not None:
                progress(f"{now} ({cls.__name__}, {platform.device})")
            stage = now
            waiter.join(0.2)
    result.seconds = round(time.monotonic() - start, 1)
    if proc.returncode != 0 or not products["bit"].exists():
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
        raise ToolFailed("the board build", log, tail)
    result.bitstream = products["bit"]
    if products["report.json"].exists():
        report = json.loads(products["report.json"].read_text())
        for name, cell in RESOURCES.items():
            entry = report.get("utilization", {}).get(cell, {"used": 0, "available": 0})
            result.resources[name] = {"used": entry["used"], "available": entry["available"]}
        for clock, entry in report.get("fmax", {}).items():
            result.fmax_mhz[_clock_name(clock)] = round(entry["achieved"], 2)
        result.critical_paths = critical_paths(report, _clock_name)
    return result


# -- the command line -----------------------------------------------------------------------------

def add_arguments(parser):
    """Add ``vmshm build``'s options to ``parser``: the core's, the PCI function's, its own."""
    add_core_args(parser)
    add_pci_args(parser)
    parser.add_argument("--board", metavar="NAME",
                        help="amaranth-boards platform: a short name (ulx3s-85f, versa-ecp5, "
                             "nitefury, ...), a class name, or module.Class")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="build folder (default build-NAME)")
    parser.add_argument("--plan-only", action="store_true",
                        help="write the build plan without running it, also for an ECP5 board")
    parser.add_argument("--list-boards", action="store_true",
                        help="list the boards and what vmshm build makes for each")
    parser.add_argument("--shm-name", default=None, metavar="NAME",
                        help="the name the self-test opens (default /shared-with-qemu)")
    parser.add_argument("--host-size", type=parse_size, default=None, metavar="N",
                        help="bytes of block RAM standing in for the object (default 1K)")


def run(args, console):
    """Run ``vmshm build`` with parsed ``args`` and return the exit status."""
    try:
        return build_command(args, console, core_args(args, "selftest"))
    except ToolchainMissing as exc:
        raise UsageError(str(exc)) from None


def build_command(args, console, params):
    """Run ``vmshm build`` with parsed ``args`` and the self-test's ``params``; return the exit
    status."""
    from rich.table import Table

    if args.list_boards:
        # Plain columns: the long module.Class names do not fit a table in 80 columns.
        rows = [("NAME", "DEVICE", "PACKAGE", "SPEED", "MAKES")]
        rows += [(name, *rest) for name, _, *rest in list_boards()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            console.print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4])
        return 0
    if not args.board:
        raise ValueError("choose a board with --board NAME (--list-boards lists them)")
    params = dict(params)
    if args.shm_name is not None:
        params["shm_name"] = args.shm_name
    if args.host_size is not None:
        params["host_size"] = args.host_size
    with console.status("starting") as status:
        result = build(args.board, params, args.output, plan_only=args.plan_only,
                       progress=status.update)
    if result.kind == "plan":
        console.print(f"wrote the build plan for {result.board} ({result.device}) to "
                      f"{result.build_dir}: run `sh {result.script.name}` there with the "
                      f"vendor's tools installed")
        return 0
    table = Table(title=f"{result.board} ({result.device}): the self-test, built in "
                        f"{result.seconds:.0f} s")
    for col in ("LUT4", "FF", "DP16KD", *(f"Fmax {c} MHz" for c in result.fmax_mhz),
                "board clock MHz", "met"):
        table.add_column(col, justify="right")
    res = result.resources
    met = result.timing_met
    table.add_row(*(str(res.get(k, {}).get("used", "-")) for k in ("LUT4", "FF", "DP16KD")),
                  *(f"{f:.1f}" for f in result.fmax_mhz.values()),
                  "-" if result.clock_mhz is None else f"{result.clock_mhz:g}",
                  {True: "yes", False: "no", None: "-"}[met])
    console.print(table)
    if met is None:
        console.print("timing: not checked (no board clock or no timing report)")
    else:
        fmax = ", ".join(f"{c} {f:.1f} MHz" for c, f in result.fmax_mhz.items())
        if met:
            console.print(f"timing: met ({fmax} against the {result.clock_mhz:g} MHz board "
                          f"clock)", style="green", markup=False)
        else:
            console.print(f"timing: NOT met ({fmax} against the {result.clock_mhz:g} MHz board "
                          f"clock): the bitstream may not work on the board", style="red",
                          markup=False)
    for path in filter(sets_fmax, result.critical_paths):
        console.print(f"critical path, {describe(path)}", markup=False)
    console.print(f"bitstream: {result.bitstream}")
    console.print("After loading it: LED 0 (green) lights when the self-test passed, LED 1 "
                  "(red) when it failed, LED 2 (blue) blinks while the clock runs.")
    return 0
