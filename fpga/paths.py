"""Read the critical path of each clock from nextpnr's JSON report, in the design's own names.

nextpnr-ecp5's ``--report FILE`` lists, per clock, the path that sets Fmax: a clock-to-output
delay, then alternating routing and logic segments, then the end register's setup time. Cells
there carry the names Yosys gave them while mapping, which start with the Amaranth signal they
drive (``fsm_state_TRELLIS_FF_Q_2`` is a flip-flop of ``fsm_state``; ``name_ram.0.0`` is a block
RAM of ``name_ram``); :func:`signal_of` takes that name back. :func:`critical_paths` sums each path
up: where it starts and ends, what it passes through, how many logic levels and how much of the
delay is routing, which is what a designer needs to decide where a register goes.
"""

import re

__all__ = ["signal_of", "critical_paths", "sets_fmax", "describe"]

# What Yosys' ECP5 mapping and nextpnr's packer append to the name of the signal a cell drives.
_CELL_SUFFIX = re.compile(
    r"_(TRELLIS_FF|TRELLIS_COMB|TRELLIS_RAMW|TRELLIS_DPR16X4|TRELLIS_IO|LUT4|PFUMX|L6MUX21|CCU2C|"
    r"DP16KD|DPR16X4C|MULT18X18D|ALU54B)(_|$).*")
# A block RAM's tiles and their data outputs: name_ram.0.0, name_ram.1.0_DOB10, ...
_RAM_TILE = re.compile(r"(\.\d+)+(_D[IO][AB]?\d+)?$")


def signal_of(cell):
    """Return the Amaranth signal a nextpnr cell name stands for, or ``None`` if Yosys made it up.

    Hierarchy levels, which Yosys joins with dots, and the ``__`` that Amaranth puts between the
    parts of a port's name (``host__ctl_req__ready``) both come back as dots:
    ``core.host.ctl_req.ready``.
    """
    if not cell or cell.startswith("$") or "$auto$" in cell or "$abc$" in cell:
        return None
    name = _CELL_SUFFIX.sub("", cell)
    name = _RAM_TILE.sub("", name)
    name = name.replace("__", ".")
    return name or None


def _clock_of(edge):
    # "posedge clk" -> "clk"; an asynchronous start or end ("<async>") stays as it is.
    return edge.split()[-1] if edge else edge


def critical_paths(report, clock_name=lambda net: net):
    """Return each critical path of nextpnr's JSON ``report`` as a summary dict.

    Parameters
    ----------
    report : dict
        The parsed ``--report`` file of nextpnr-ecp5.
    clock_name : callable
        Maps a clock net's name to the one to show (e.g. without ``$glbnet$``).

    Returns
    -------
    list of dict
        One per path, with ``from_clock`` and ``to_clock``; ``delay_ns``; ``start`` and ``end``
        (each the ``cell``, its ``port``, the ``signal`` it stands for and, for the start, its
        clock-to-output ``clk_to_q_ns``); ``through``, the signals of the logic in between in path
        order; ``logic_levels``, ``logic_ns``, ``routing_ns``, ``setup_ns`` and ``routing_share``
        (routing delay over the whole path's delay).
    """
    out = []
    for path in report.get("critical_paths", []):
        segments = path.get("path", [])
        if not segments:
            continue
        total = sum(s.get("delay", 0.0) for s in segments)
        by_type = {}
        for s in segments:
            by_type[s["type"]] = by_type.get(s["type"], 0.0) + s.get("delay", 0.0)
        first, last = segments[0], segments[-1]
        start_cell = first["from"]["cell"]
        end_cell = last["to"]["cell"]
        through = []
        for s in segments:
            if s["type"] != "logic":
                continue
            name = signal_of(s["to"]["cell"])
            if name and name not in through and name not in (signal_of(start_cell),
                                                              signal_of(end_cell)):
                through.append(name)
        out.append({
            "from_clock": clock_name(_clock_of(path.get("from", ""))),
            "to_clock": clock_name(_clock_of(path.get("to", ""))),
            "delay_ns": round(total, 3),
            "start": {"cell": start_cell, "port": first["from"].get("port"),
                      "signal": signal_of(start_cell),
                      "clk_to_q_ns": round(by_type.get("clk-to-q", 0.0), 3)},
            "end": {"cell": end_cell, "port": last["to"].get("port"),
                    "signal": signal_of(end_cell)},
            "through": through,
            "logic_levels": sum(1 for s in segments if s["type"] == "logic"),
            "logic_ns": round(by_type.get("logic", 0.0), 3),
            "routing_ns": round(by_type.get("routing", 0.0), 3),
            "setup_ns": round(by_type.get("setup", 0.0), 3),
            "routing_share": round(by_type.get("routing", 0.0) / total, 3) if total else 0.0,
        })
    return out


def sets_fmax(path):
    """Whether a :func:`critical_paths` entry runs from a clock to the same clock: the paths
    that set a clock's Fmax, as opposed to those from or to I/O (``<async>``)."""
    return path["from_clock"] == path["to_clock"] and not path["from_clock"].startswith("<")


def describe(path):
    """Return one line of plain text that says what a :func:`critical_paths` entry is."""
    def end(e):
        sig = e["signal"] or "?"
        return sig if e["signal"] == e["cell"] else f"{sig} ({e['cell']}.{e['port']})"

    clock = path["from_clock"] if path["from_clock"] == path["to_clock"] else \
        f"{path['from_clock']} -> {path['to_clock']}"
    text = (f"{clock}: {path['delay_ns']:.2f} ns from {end(path['start'])}, clock-to-output "
            f"{path['start']['clk_to_q_ns']:.2f} ns, to {end(path['end'])}; "
            f"{path['logic_levels']} logic levels ({path['logic_ns']:.2f} ns), routing "
            f"{path['routing_ns']:.2f} ns = {100 * path['routing_share']:.0f} % of the path")
    if path["through"]:
        text += "; through " + ", ".join(path["through"])
    return text
