"""Size the UltraScale+ top with Yosys' ``synth_xilinx``: LUTs, flip-flops and block RAMs.

The UltraScale+ shim (``vmshm synth --top usp``) sits behind Xilinx's PCIe hard IP, which no
open tool places and routes: nextpnr has no UltraScale+ back end we can install from PyPI, and
the hard IP itself exists only in Vivado. So the open flow gives its *size* only, from Yosys'
technology mapping for the family (``synth_xilinx -family xcup``), out of context (no I/O or
clock buffers, like the ECP5 tops). Its Fmax needs the vendor's tools: run Vivado on the
Verilog (``vmshm generate --top usp``).
"""

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .toolchain import _run_tool, require_toolchain, write_verilog

__all__ = ["XILINX_TOPS", "XILINX_FAMILY", "XILINX_NOTE", "XilinxResult", "synthesize_xilinx"]

#: Tops that sit behind a Xilinx hard IP: sized with synth_xilinx, not placed on an ECP5.
XILINX_TOPS = frozenset({"usp"})

#: Yosys' name of the UltraScale+ family.
XILINX_FAMILY = "xcup"

#: What a user must be told with every UltraScale+ figure.
XILINX_NOTE = ("UltraScale+: size from Yosys synth_xilinx -family xcup (out of context, before "
               "Vivado's own optimization); Fmax needs the vendor's tools (Vivado), which are "
               "not part of the open flow.")

# Cell types of the UltraScale+ library, by the column they count towards. INV cells are not
# counted: Vivado folds them into the LUTs around them.
_LUTS = ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6", "LUT6_2")
_FFS = ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")
_LUTRAM = ("RAM16X1D", "RAM32X1D", "RAM64X1D", "RAM128X1D", "RAM256X1D", "RAM32M", "RAM64M",
           "RAM32M16", "RAM64M8", "RAM32X1S", "RAM64X1S", "RAM128X1S", "RAM256X1S", "SRL16E",
           "SRLC32E")


@dataclass
class XilinxResult:
    """What one ``synth_xilinx`` run found: cells by kind, and every cell type it used."""
    top: str
    module: str
    params: dict
    family: str
    resources: dict = field(default_factory=dict)   # LUT, FF, CARRY, RAMB36E2, ...: count
    cells: dict = field(default_factory=dict)       # every cell type: count
    seconds: dict = field(default_factory=dict)

    @property
    def bram36(self):
        """Block RAM in 36 Kib tiles: a RAMB18E2 is half of one."""
        return self.resources.get("RAMB36E2", 0) + self.resources.get("RAMB18E2", 0) / 2

    def as_dict(self):
        """Return the result as plain data for JSON."""
        d = asdict(self)
        d["bram36"] = self.bram36
        d["fmax_mhz"] = None
        d["note"] = XILINX_NOTE
        return d


def _count(cells, names):
    return sum(n for t, n in cells.items() if t in names)


def synthesize_xilinx(top="usp", params=None, *, family=XILINX_FAMILY, workdir=None,
                      progress=None, verilog=None):
    """Synthesize ``top`` with ``synth_xilinx`` and return a :class:`XilinxResult`.

    Parameters
    ----------
    top : str
        A key of :data:`vmshm.rtl.tops.TOPS` (the UltraScale+ shim is ``"usp"``).
    params : dict, optional
        Its parameters, as for :func:`vmshm.rtl.tops.generate`.
    family : str
        Yosys' Xilinx family (default ``xcup``, UltraScale+).
    workdir : str or Path, optional
        Keep the Verilog, log and statistics here; by default a temporary directory.
    progress : callable, optional
        Called with a line of text as each stage starts.
    verilog : str, optional
        The top's Verilog, if it was already generated from ``params``.

    Raises
    ------
    ToolchainMissing
        The ``fpga`` extra is not installed.
    ToolFailed
        Yosys failed; the message holds the end of its log.
    """
    from vmshm.rtl.tops import module_name

    require_toolchain()
    params = dict(params or {})
    module = module_name(top)
    result = XilinxResult(top, module, params, family)
    with tempfile.TemporaryDirectory(prefix="vmshm-synth-") as scratch:
        work = Path(workdir) if workdir is not None else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        result.seconds["generate"] = write_verilog(work, top, params, verilog, progress)
        # Out of context, like the ECP5 tops: no I/O buffers, no clock buffer on clk.
        result.seconds["yosys"] = round(_run_tool(
            "yosys", ["-q", "-l", "yosys.log", "-p",
                      f"read_verilog {module}.v; "
                      f"synth_xilinx -family {family} -top {module} -flatten -noiopad "
                      f"-noclkbuf; tee -q -o stat.json stat -json"],
            work, "yosys.log", progress, f"synthesizing {module} for Xilinx {family}"), 2)
        stat = json.loads((work / "stat.json").read_text())
    cells = stat.get("design", {}).get("num_cells_by_type")
    if cells is None:
        cells = stat["modules"][f"\\{module}"]["num_cells_by_type"]
    result.cells = dict(sorted(cells.items()))
    result.resources = {
        "LUT": _count(cells, _LUTS),
        "FF": _count(cells, _FFS),
        "LUTRAM/SRL": _count(cells, _LUTRAM),
        "CARRY": cells.get("CARRY4", 0) + cells.get("CARRY8", 0),
        "RAMB36E2": cells.get("RAMB36E2", 0),
        "RAMB18E2": cells.get("RAMB18E2", 0),
    }
    return result
