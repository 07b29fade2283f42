"""Build the on-chip self-test for an FPGA board: a bitstream for ECP5 boards, a plan elsewhere.

``vmshm build --board NAME`` (:mod:`vmshm.commands.build`) takes an amaranth-boards platform
and builds :class:`~vmshm.rtl.selftest.SelfTestBoard` for it: the PCI function driven by a sequencer
that plays the driver and the seed's example, answered by a block-RAM host, with the result on the
board's LEDs. On an ECP5 board the whole flow runs here through the open toolchain from PyPI (Yosys,
nextpnr-ecp5, ecppack from YoWASP) down to a bitstream. For any other board (a Xilinx PCIe card such
as the NiteFury) it writes amaranth's build plan for the vendor's tools: the Verilog, the
constraints and the script that runs them.

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

from .paths import critical_paths
from .platforms import _builds_bitstream, resolve_board
from .toolchain import RESOURCES, ToolFailed, _clock_name, require_toolchain, tool_path

__all__ = ["BuildResult", "build"]

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
