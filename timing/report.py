"""Write what ``vmshm timing`` measured: the per-phase table, CSV, JSON and the PNG plot.

matplotlib is imported only when a plot is drawn, so the rest runs without it.
"""

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path

from .model import (OP_LABELS, OPS, PCIE_RANGES, PHASE_LABELS, PHASES, SWEEPABLE, _fmt_time,
                    pcie_flag_text, pcie_flags, total)

# -- outputs ------------------------------------------------------------------------------------

def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float) and v != int(v):
        return f"{v:.1f}"
    return str(int(v))


def _agree(point):
    # Exact for a deterministic host; within 5 % on average for random back-pressure.
    if point.params.deterministic:
        return "=" if point.matches() else "≠"
    return "≈" if point.matches(0.05) else "≠"


def table_rows(points, sweep=None, clock_hz=None):
    """Return the terminal table as ``(headers, rows)`` of strings."""
    b0 = points[0].params.burst
    burst = f"×{b0}" if all(p.params.burst == b0 for p in points) else "burst"
    headers = [f"{sweep}\n({SWEEPABLE[sweep].unit})"] if sweep else []
    headers += ["OPEN\nstatus", "name\nwrite", "setup", "name\nstream", "host", "cpl",
                "ioctl\ntotal", "OPEN\nread", "CLOSE", f"win read\n{burst}",
                f"win write\n{burst}", "model"]
    if clock_hz:
        headers += [f"OPEN read\n@{clock_hz / 1e6:g} MHz", "PCIe CTO\nranges"]
    rows = []
    for pt in points:
        m = pt.measured.get("OPEN", {})
        row = [f"{pt.value:g}"] if sweep else []
        row += [pt.status] + [_fmt(m.get(ph)) for ph in
                              ("name_write", "setup", "request", "host", "completion")]
        op_total = total(m) if m else None
        read_only = op_total - m["name_write"] if m else None
        row += [_fmt(op_total), _fmt(read_only)]
        for op in ("CLOSE", "READ", "WRITE"):
            row.append(_fmt(total(pt.measured[op])) if op in pt.measured else "-")
        row.append(_agree(pt))
        if clock_hz:
            if read_only is None:
                row += ["-", "-"]
            else:
                row += [_fmt_time(read_only / clock_hz), pcie_flag_text(read_only / clock_hz)]
        rows.append(row)
    return headers, rows


def rich_table(points, sweep=None, clock_hz=None, title=None):
    """Return the per-phase table as a :class:`rich.table.Table`."""
    from rich import box
    from rich.table import Table

    headers, rows = table_rows(points, sweep, clock_hz)
    caption = ("cycles. name write .. cpl: the ioctl's phases (its BAR2 name write, then the "
               "OPEN read). model: '=' every transaction as the model says, '≈' within 5 % "
               "(random back-pressure), '≠' off.")
    if clock_hz:
        caption += (" PCIe CTO ranges: the completion timeout ranges under which a root port "
                    "may (or will) give up on the OPEN read first.")
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), title_justify="left",
                  caption=caption, caption_justify="left")
    for h in headers:
        table.add_column(h, justify="left" if h.startswith(("OPEN\ns", "PCIe")) else "right",
                         overflow="fold")
    for r in rows:
        table.add_row(*r)
    return table


def _point_dict(pt, clock_hz):
    d = {"value": pt.value, "status": pt.status, "params": _params_dict(pt.params),
         "samples": pt.samples, "measured": {}, "model": {}}
    for op in OPS:
        if op in pt.measured:
            d["measured"][op] = {**pt.measured[op], "total": total(pt.measured[op])}
        d["model"][op] = {**pt.model[op], "total": total(pt.model[op])}
    if "OPEN" in pt.measured:
        open_read = total(pt.measured["OPEN"]) - pt.measured["OPEN"]["name_write"]
        d["open_read_cycles"] = open_read
        if clock_hz:
            d["open_read_ns"] = open_read / clock_hz * 1e9
            d["pcie"] = pcie_flags(open_read / clock_hz)
    d["matches_model"] = _agree(pt) != "≠"
    return d


def _params_dict(p):
    d = asdict(p)
    d.update(d.pop("core"))
    return d


def write_outputs(points, out, *, sweep=None, clock_hz=None, backend="amaranth", extra=None,
                  table_text=None):
    """Write ``timing.csv``, ``timing.json``, ``timing.png`` and ``table.txt`` into ``out``.

    The CSV has one row per point, transaction and phase (``value, op, phase, cycles, model``,
    plus ``ns`` and ``model_ns`` with a clock), the JSON everything, the PNG a plot of cycles
    per phase against the swept parameter. ``table.txt`` is ``table_text`` (the table as the
    command printed it) or, without it, the table's rows tab-separated. Returns ``{kind: path}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "timing.csv", "json": out / "timing.json", "png": out / "timing.png",
             "table": out / "table.txt"}
    with open(paths["csv"], "w", newline="") as f:
        cols = ["param", "value", "status", "op", "phase", "cycles", "model", "samples"]
        if clock_hz:
            cols += ["ns", "model_ns"]
        wr = csv.writer(f)
        wr.writerow(cols)
        for pt in points:
            for op in OPS:
                if op not in pt.measured:
                    continue
                phases = {**pt.measured[op], "total": total(pt.measured[op])}
                model = {**pt.model[op], "total": total(pt.model[op])}
                for ph, v in phases.items():
                    row = [sweep or "", "" if pt.value is None else pt.value, pt.status, op, ph,
                           v, model[ph], pt.samples[op]]
                    if clock_hz:
                        row += [round(v / clock_hz * 1e9, 3), round(model[ph] / clock_hz * 1e9, 3)]
                    wr.writerow(row)
    doc = {"backend": backend, "sweep": sweep,
           "unit": SWEEPABLE[sweep].unit if sweep else None,
           "clock_mhz": clock_hz / 1e6 if clock_hz else None,
           "phases": {p: PHASE_LABELS[p] for p in PHASES},
           "pcie_ranges": [{"range": n, "encodings": c, "low_s": lo, "high_s": hi}
                           for n, c, lo, hi in PCIE_RANGES],
           "points": [_point_dict(pt, clock_hz) for pt in points]}
    doc.update(extra or {})
    paths["json"].write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    if table_text is not None:
        paths["table"].write_text(table_text)
    else:
        headers, rows = table_rows(points, sweep, clock_hz)
        paths["table"].write_text("\t".join(headers) + "\n" +
                                  "".join("\t".join(r) + "\n" for r in rows))
    try:
        plot(points, paths["png"], sweep=sweep, clock_hz=clock_hz, backend=backend)
    except ImportError:
        paths["png"] = None     # the demo's install has no matplotlib: say so, keep the rest
    return paths


def plot(points, path, *, sweep=None, clock_hz=None, backend="amaranth"):
    """Draw cycles per phase against the swept parameter into the PNG ``path``.

    A single point is drawn as one bar per transaction, split into its phases.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = points[0].params
    colors = {"name_write": "#4e79a7", "setup": "#f28e2b", "request": "#59a14f",
              "host": "#e15759", "response": "#b07aa1", "completion": "#9c755f"}
    op_colors = {"OPEN": "#1f77b4", "OPEN read": "#17becf", "CLOSE": "#d62728",
                 "READ": "#2ca02c", "WRITE": "#9467bd"}
    skip = set(SWEEPABLE[sweep].fields) if sweep else set()
    title = f"VMShm transaction timing ({backend}): {base.summary(skip)}"

    def add_time_axis(ax):
        if clock_hz:
            sec = ax.secondary_yaxis("right", functions=(lambda c: c / clock_hz * 1e6,
                                                         lambda us: us * clock_hz / 1e6))
            sec.set_ylabel(f"µs at {clock_hz / 1e6:g} MHz")

    if not sweep or len(points) == 1:
        pt = points[0]
        fig, ax = plt.subplots(figsize=(11, 4.8), layout="constrained")
        ops = [op for op in OPS if op in pt.measured]
        for i, op in enumerate(ops):
            left = 0
            for ph in PHASES:
                v = pt.measured[op].get(ph) or 0
                if v:
                    ax.barh(i, v, left=left, color=colors[ph],
                            label=PHASE_LABELS[ph] if i == ops.index(op) else None)
                    ax.text(left + v / 2, i, _fmt(v), ha="center", va="center", fontsize=8,
                            color="white")
                    left += v
            ax.plot([total(pt.model[op])], [i], "k|", markersize=24, markeredgewidth=2,
                    label="model total" if i == 0 else None)
        ax.set_yticks(range(len(ops)), [OP_LABELS[op] for op in ops])
        ax.invert_yaxis()
        ax.set_xlabel("cycles")
        handles, labels = ax.get_legend_handles_labels()
        seen = dict(zip(labels, handles))
        ax.legend(seen.values(), seen.keys(), loc="lower right", fontsize=8)
        if clock_hz:
            sec = ax.secondary_xaxis("top", functions=(lambda c: c / clock_hz * 1e6,
                                                       lambda us: us * clock_hz / 1e6))
            sec.set_xlabel(f"µs at {clock_hz / 1e6:g} MHz")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return

    xs = [pt.value for pt in points]
    xlabel = SWEEPABLE[sweep].axis_label()
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.6), layout="constrained")

    # Left: the ioctl, stacked by phase, with the model's total over it.
    open_pts = [pt for pt in points if "OPEN" in pt.measured]
    ox = [pt.value for pt in open_pts]
    stacks = [[pt.measured["OPEN"].get(ph) or 0 for pt in open_pts]
              for ph in ("name_write", "setup", "request", "host", "completion")]
    left.stackplot(ox, stacks, colors=[colors[p] for p in ("name_write", "setup", "request",
                                                           "host", "completion")],
                   labels=[PHASE_LABELS[p] for p in ("name_write", "setup", "request", "host",
                                                     "completion")], alpha=0.85)
    left.plot(xs, [total(pt.model["OPEN"]) for pt in points], "k--", marker="x",
              label="model total")
    left.set_title("ioctl (name write + OPEN read) by phase", fontsize=10)
    left.set_xlabel(xlabel)
    left.set_ylabel("cycles")
    left.legend(loc="upper left", fontsize=8)
    left.grid(alpha=0.3)
    add_time_axis(left)

    # Right: every transaction's total, measured (markers) against the model (dashed).
    def series(op, fn):
        return [fn(pt) if op.split()[0] in pt.measured else math.nan for pt in points]

    burst = f" ×{base.burst}" if "burst" not in skip else ""
    markers = {"OPEN": "o", "OPEN read": "s", "CLOSE": "^", "READ": "v", "WRITE": "D"}
    for key, label in (("OPEN", "ioctl"), ("OPEN read", "OPEN read"), ("CLOSE", "CLOSE read"),
                       ("READ", f"window read{burst}"), ("WRITE", f"window write{burst}")):
        op = key.split()[0]
        if key == "OPEN read":
            meas = series(op, lambda pt: total(pt.measured["OPEN"]) -
                          pt.measured["OPEN"]["name_write"])
            mod = series(op, lambda pt: total(pt.model["OPEN"]) - pt.model["OPEN"]["name_write"])
        else:
            meas = series(op, lambda pt, op=op: total(pt.measured[op]))
            # Only where the transaction ran (a failed OPEN skips the window).
            mod = series(op, lambda pt, op=op: total(pt.model[op]))
        right.plot(xs, mod, "--", color=op_colors[key], alpha=0.8, zorder=1)
        # Hollow markers: where two transactions cost the same, both stay visible.
        right.plot(xs, meas, markers[key], color=op_colors[key], markerfacecolor="none",
                   markersize=7, markeredgewidth=1.5, label=label, zorder=2)
    right.plot([], [], "k--", label="model (dashed)")
    right.plot([], [], "ko", markerfacecolor="none", label="measured (markers)")
    right.set_title("cycles per transaction", fontsize=10)
    right.set_xlabel(xlabel)
    right.set_ylabel("cycles")
    right.legend(loc="upper left", fontsize=8, ncols=2, framealpha=0.9)
    right.grid(alpha=0.3)
    add_time_axis(right)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
