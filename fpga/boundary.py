"""Check a top's boundary with a hard IP for combinational paths, from Yosys' netlist.

At the UltraScale+ hard IP's 250 MHz ``user_clk``, a path that leaves the IP, runs through our
logic and goes back into the IP in the same cycle crosses the IP's own clock-to-out and setup
times twice; PG213's example designs register both sides. :func:`check_boundary` reads the
top's netlist as Yosys elaborates it (``proc; flatten; memory -nomap; opt -fast``: coarse
cells, before technology mapping) and finds, bit by bit:

- every path from an input port to an output port that passes no flip-flop (or clocked
  memory read port): none is allowed;
- for every input port, the most cells its bits pass before they reach a flip-flop (its data,
  enable or reset): "registered before use" allows :data:`MAX_INPUT_DEPTH`, a register's data
  select and enable logic, not arithmetic or state-machine logic.
"""

import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .toolchain import _run_tool, require_toolchain, write_verilog

__all__ = ["MAX_INPUT_DEPTH", "HARD_IP_PREFIXES", "BoundaryReport", "analyse_netlist",
           "check_boundary"]

#: Cells an input may pass before its first flip-flop: a register's next-value select and its
#: enable (a skid buffer's ``tvalid`` takes 4: taken, which register, hold or load), not
#: arithmetic or a state machine's decisions.
MAX_INPUT_DEPTH = 4

#: Port names of the UltraScale+ top that are the hard IP's user interface: the boundary
#: checked. The others (the host's control channel and doorbells) are VMShm's own.
HARD_IP_PREFIXES = ("s_axis_", "m_axis_", "pcie_", "cfg_")

_SEQUENTIAL = re.compile(r"^\$(\w*dff\w*|\w*latch\w*|ff|sr)$")
_IGNORED = {"$scopeinfo", "$print", "$check", "$assert", "$assume", "$cover"}


@dataclass
class BoundaryReport:
    """What :func:`check_boundary` found.

    Attributes
    ----------
    paths : list of (str, str, list of str)
        Input port, output port, and the cells of one combinational path between them.
    depths : dict
        Input port -> most cells before a flip-flop (0: straight into one).
    """
    paths: list = field(default_factory=list)
    depths: dict = field(default_factory=dict)

    @property
    def deep_inputs(self):
        """Input ports used through more than :data:`MAX_INPUT_DEPTH` cells: name -> depth."""
        return {p: d for p, d in sorted(self.depths.items()) if d > MAX_INPUT_DEPTH}

    @property
    def clean(self):
        return not self.paths and not self.deep_inputs

    def lines(self):
        """Return the report as lines of text, the offending paths first."""
        out = [f"combinational path {a} -> {b} through {len(cells)} cells: "
               f"{' -> '.join(cells[:6])}{' ...' if len(cells) > 6 else ''}"
               for a, b, cells in self.paths]
        out += [f"input {p} passes {d} cells before its first register "
                f"(at most {MAX_INPUT_DEPTH})" for p, d in self.deep_inputs.items()]
        return out or ["no combinational path across the boundary; every input registered "
                       "before use"]


def _comb_edges(cell):
    """Return ``[(input bits, output bits)]`` of a cell's combinational arcs."""
    kind, conns, dirs = cell["type"], cell["connections"], cell.get("port_directions", {})
    if kind in _IGNORED or _SEQUENTIAL.match(kind):
        return []
    if kind == "$mem_v2":
        params = cell["parameters"]
        ports = int(params["RD_PORTS"], 2)
        clocked = params["RD_CLK_ENABLE"][::-1]      # bit i: read port i
        abits, width = int(params["ABITS"], 2), int(params["WIDTH"], 2)
        arcs = []
        for i in range(ports):
            if i < len(clocked) and clocked[i] == "1":
                continue
            arcs.append((conns["RD_ADDR"][i * abits:(i + 1) * abits],
                         conns["RD_DATA"][i * width:(i + 1) * width]))
        return arcs
    ins = [b for p, bits in conns.items() if dirs.get(p) == "input" for b in bits]
    outs = [b for p, bits in conns.items() if dirs.get(p) == "output" for b in bits]
    return [(ins, outs)]


def analyse_netlist(net, module, prefixes=HARD_IP_PREFIXES):
    """Return the :class:`BoundaryReport` of ``module`` in Yosys' JSON netlist ``net``, for its
    ports whose names begin with one of ``prefixes``."""
    mod = net["modules"][module]

    def boundary(port):
        return port.startswith(prefixes)
    fanout = defaultdict(list)      # bit -> [(cell name, output bits)]
    for name, cell in mod["cells"].items():
        for ins, outs in _comb_edges(cell):
            outs = [b for b in outs if isinstance(b, int)]
            for b in ins:
                if isinstance(b, int):
                    fanout[b].append((name, outs))
    out_port = {b: p for p, d in mod["ports"].items() if d["direction"] == "output" and
                boundary(p) for b in d["bits"] if isinstance(b, int)}
    longest = {}                    # bit -> (cells to a register, port reached or None, cells)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))

    def walk(bit):
        if bit in longest:
            return longest[bit]
        longest[bit] = (0, None, [])        # a loop (there should be none) ends here
        depth, reached, path = 0, out_port.get(bit), []
        for name, outs in fanout.get(bit, ()):
            for ob in outs:
                d, r, p = walk(ob)
                if reached is None and r is not None:
                    reached, path = r, [name] + p
                depth = max(depth, d + 1)
        longest[bit] = (depth, reached, path)
        return longest[bit]

    report = BoundaryReport()
    for port, d in mod["ports"].items():
        if d["direction"] != "input" or not boundary(port):
            continue
        depth, seen = 0, set()
        for bit in d["bits"]:
            if not isinstance(bit, int):
                continue
            bd, reached, path = walk(bit)
            depth = max(depth, bd)
            if reached is not None and reached not in seen:
                seen.add(reached)
                report.paths.append((port, reached, path))
        report.depths[port] = depth
    return report


def check_boundary(top="usp", params=None, *, workdir=None, verilog=None, progress=None):
    """Generate ``top``, elaborate it with Yosys and return its :class:`BoundaryReport`."""
    import tempfile

    from vmshm.rtl.tops import module_name

    require_toolchain()
    module = module_name(top)
    with tempfile.TemporaryDirectory(prefix="vmshm-boundary-") as scratch:
        work = Path(workdir) if workdir is not None else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        write_verilog(work, top, dict(params or {}), verilog, progress)
        _run_tool("yosys", ["-q", "-l", "boundary.log", "-p",
                            f"read_verilog {module}.v; hierarchy -top {module}; proc; flatten; "
                            f"opt_clean; memory -nomap; opt -fast; write_json boundary.json"],
                  work, "boundary.log", progress, f"elaborating {module} for its boundary")
        net = json.loads((work / "boundary.json").read_text())
    return analyse_netlist(net, module)
