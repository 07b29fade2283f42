"""Draw one OPEN and one CLOSE as WaveDrom diagrams from a VCD of a simulation run.

wavedrom (and its VCD reader) are imported only when a diagram is drawn.
"""

import json
import math
from pathlib import Path

from .model import PHASES, total
from .report import _fmt
from .runs import _Objects, split_phases

# -- waveforms ----------------------------------------------------------------------------------

async def waveform_run(bus, *, name, gap=4):
    """Probe, then one ioctl(name) and one close, labelled as in :func:`measure`."""
    from vmshm.driver_model import vmshm_probe

    drv = (await vmshm_probe(bus))[0][0]
    fd = await drv.open()
    await bus.idle(gap)
    bus.label = "OPEN 0"
    try:
        await drv.ioctl(fd, 0, name)
        status = 0
    except OSError as exc:
        status = exc.errno
    bus.label = ""
    await bus.idle(gap)
    bus.label = "CLOSE 0"
    await drv.close(fd)
    bus.label = ""
    await bus.idle(gap)
    return {"status": [status]}


#: The lanes of the WaveDrom diagrams: (label, VCD name under bench.top or a sub-scope, kind,
#: the valid that qualifies a payload lane).
_LANES = (
    ("guest req.valid", "req__valid", "bit", None),
    ("guest req.ready", "req__ready", "bit", None),
    ("guest cpl.valid", "cpl__valid", "bit", None),
    ("guest cpl.ready", "cpl__ready", "bit", None),
    ("PCI front end", "system.fn0.fsm_state", "state", None),
    ("core FSM", "system.fn0.core.fsm_state", "state", None),
    ("control FSM", "system.fn0.core.control.fsm_state", "state", None),
    ("ctl_req.valid", "host0__ctl_req__valid", "bit", None),
    ("ctl_req.ready", "host0__ctl_req__ready", "bit", None),
    ("ctl_req.data", "host0__ctl_req__payload.data", "char", "host0__ctl_req__valid"),
    ("ctl_req.last", "host0__ctl_req__payload.last", "bit", "host0__ctl_req__valid"),
    ("ctl_rsp.valid", "host0__ctl_rsp__valid", "bit", None),
    ("ctl_rsp.ready", "host0__ctl_rsp__ready", "bit", None),
    ("ctl_rsp.status", "host0__ctl_rsp__payload.status", "int", "host0__ctl_rsp__valid"),
)

#: Short names of the FSM states, so a one-cycle state's name fits its cycle in the diagram.
_STATE_SHORT = {"FORWARD": "FWD", "COMPLETE": "CPL", "WRITE-ACK": "W-ACK",
                "READ-FETCH": "R-FETCH", "READ-SEND": "R-SEND", "OPEN-START": "O-START",
                "OPEN-FETCH": "O-FETCH", "OPEN-NAME": "O-NAME", "CLOSE-START": "C-START",
                "CLOSE-SEND": "C-SEND", "CTL-WAIT": "WAIT", "CTL-DRAIN": "DRAIN",
                "CTL-CLEANUP": "CLEANUP"}


def _read_vcd(path, wanted):
    """Return ``{name: [(time, value), ...]}`` for the signals ``wanted`` under ``bench.top``.

    Names are dotted paths below ``bench.top`` (``system.fn0.core.fsm_state``); Amaranth's own
    escapes and ``$n`` duplicates are skipped, so the port itself is read.
    """
    from vcd.reader import TokenKind, tokenize

    scope, ids, changes, now = [], {}, {}, 0
    with open(path, "rb") as f:
        for tok in tokenize(f):
            kind = tok.kind
            if kind is TokenKind.SCOPE:
                scope.append(tok.data.ident)
            elif kind is TokenKind.UPSCOPE:
                scope.pop()
            elif kind is TokenKind.VAR:
                ref = tok.data.reference.lstrip("\\")
                full = ".".join(scope[2:] + [ref]) if scope[:2] == ["bench", "top"] else None
                if full in wanted and full not in ids.values():
                    ids.setdefault(tok.data.id_code, full)
            elif kind is TokenKind.CHANGE_TIME:
                now = tok.data
            elif kind in (TokenKind.CHANGE_SCALAR, TokenKind.CHANGE_VECTOR,
                          TokenKind.CHANGE_STRING):
                name = ids.get(tok.data.id_code)
                if name is not None:
                    changes.setdefault(name, []).append((now, _vcd_value(tok.data.value)))
    return changes


def _vcd_value(v):
    # pyvcd gives vectors as ints, scalars as "0"/"1"/"x" and strings (FSM states) as str.
    if isinstance(v, int) or v is None:
        return v
    if v in ("0", "1"):
        return int(v)
    return None if v in ("x", "z", "X", "Z") else v


def _sample(changes, times):
    """Return the value of a change list at each of the sorted ``times``."""
    out, i, value = [], 0, None
    for t in times:
        while i < len(changes) and changes[i][0] <= t:
            value = changes[i][1]
            i += 1
        out.append(value)
    return out


def _wavedrom(samples, first, phases, title):
    """Build a WaveDrom source from per-cycle ``samples`` (``{lane: [value per cycle]}``).

    Long stretches where nothing changes are cut to a gap (``|``) so a slow host fits.
    """
    n = len(next(iter(samples.values())))
    keys = list(samples)
    rows = [tuple(samples[k][i] for k in keys) for i in range(n)]
    # Column i shows cycle first + 1 + i: the cycle that ends at edge first + 1 + i.
    phase_of = [next((label for label, a, b in phases if a < first + 1 + i <= b), "")
                for i in range(n)]
    cols = []       # (cycle index, is_gap)
    i = 0
    while i < n:
        j = i
        while j + 1 < n and rows[j + 1] == rows[i] and phase_of[j + 1] == phase_of[i]:
            j += 1
        if j - i >= 6:
            # The gap goes early in the run, clear of the label WaveDrom centres over it.
            cols += [(i, False), (None, True)] + [(k, False) for k in range(j - 3, j + 1)]
        else:
            cols += [(k, False) for k in range(i, j + 1)]
        i = j + 1

    def lane(values, kind):
        wave, data, prev = "", [], object()
        for idx, gap in cols:
            if gap:
                wave += "|"
                continue
            v = values[idx]
            if kind == "bit":
                ch = "1" if v == 1 else "0"
                wave += "." if ch == prev else ch
                prev = ch
            else:
                label = _lane_text(v, kind)
                if label is None:
                    wave += "." if prev is None else "x"
                    prev = None
                elif label == prev and kind != "char":
                    wave += "."
                else:
                    wave += "="
                    data.append(label)
                    prev = label
        return {"wave": wave, **({"data": data} if data else {})}

    signal = [{"name": "clk", "wave": "".join("|" if g else ("p" if k == 0 else ".")
                                               for k, (_, g) in enumerate(cols))}]
    phase_lane = lane(phase_of, "phase")
    signal.append({"name": "phase", **phase_lane})
    groups = {"guest bus": [], "device": [], "host side": []}
    shown = set()
    for label, name, kind, qualifier in _LANES:
        group = ("guest bus" if label.startswith("guest") else
                 "device" if kind == "state" else "host side")
        values = samples[name]
        if qualifier is not None:
            # A payload means nothing while its valid is low: draw it as don't-care.
            values = [v if q == 1 else None for v, q in zip(values, samples[qualifier])]
            if kind == "bit":
                kind = "int"
        if kind == "state":
            shown |= {str(v).split("/")[0] for v in values if v is not None}
        groups[group].append({"name": label, **lane(values, kind)})
    for g, lanes in groups.items():
        signal.append([g, *lanes])
    key = ", ".join(f"{short} = {full}" for full, short in _STATE_SHORT.items() if full in shown)
    foot = f"| cuts cycles where nothing changes; {key}"
    # Wide enough that the foot's line fits: about 7 px a character, 20 px a column per hscale.
    hscale = min(4, max(2, math.ceil(len(foot) * 7 / (20 * len(cols)))))
    return {"signal": signal,
            "head": {"text": f"{title}, cycles {first + 1} to {first + n}"},
            "foot": {"text": foot},
            "config": {"hscale": hscale}}


def _lane_text(v, kind):
    if kind == "phase":
        return v or None
    if v is None:
        return None
    if kind == "state":
        name = str(v).split("/")[0]
        return _STATE_SHORT.get(name, name)
    if not isinstance(v, int):
        return None
    n = v
    if kind == "char":
        return repr(chr(n))[1:-1] if 32 <= n < 127 else f"{n:02x}"
    return str(n)


def write_waveforms(params, out, *, backend="amaranth", seed=0):
    """Run one ioctl and one close with ``params``; write a VCD and WaveDrom diagrams of both.

    Writes ``waveform.vcd`` (the whole run, probe included), ``open.wavedrom.json`` and
    ``close.wavedrom.json`` (WaveDrom sources of the guest's request and completion, both FSMs
    and the control channel) and, with the ``wavedrom`` package, the same as SVG. Returns
    ``({kind: path}, [phase rows])``.
    """
    from vmshm.backends import run_function

    if backend != "amaranth":
        raise ValueError("--waveform reads Amaranth's VCD signal names; run it with "
                         "--backend amaranth")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vcd = out / "waveform.vcd"
    objects = _Objects(4096)
    try:
        name = objects.name(params.name_length)
        result = run_function("vmshm.timing.waves:waveform_run", backend=backend,
                              kwargs={"name": name}, timing=params.host_timing(seed),
                              waves=str(vcd), **params.build_params())
    finally:
        objects.cleanup()
    rows = split_phases(result.records, result.events[0])
    wanted = {n for _, n, _, _ in _LANES} | {"clk", "cycle"}
    changes = _read_vcd(vcd, wanted)
    clk, cyc = changes["clk"], changes["cycle"]
    rises = [t for t, v in clk if str(v) == "1"]
    # The cycle counter's value right after a rising edge numbers that edge.
    numbers = _sample(cyc, rises)
    edge = {c: t for t, c in zip(rises, numbers) if isinstance(c, int)}
    paths = {"vcd": vcd}
    for row in rows:
        op = row["op"]
        ph = row["phases"]
        lo, hi = row["start"], row["end"] + 1
        cycles = [c for c in range(lo + 1, hi + 1) if c in edge and c - 1 in edge]
        mids = [(edge[c - 1] + edge[c]) / 2 for c in cycles]
        samples = {n: _sample(changes.get(n, []), mids) for _, n, _, _ in _LANES}
        a = row["start"]
        bounds = []
        short = {"name_write": "name write", "request": "name" if op == "OPEN" else "request",
                 "completion": "cpl"}
        for p in PHASES:
            if p in ph and ph[p]:
                bounds.append((f"{short.get(p, p)} {_fmt(ph[p])}", a, a + ph[p]))
                a += ph[p]
        title = (f"{'ioctl: name write + OPEN read' if op == 'OPEN' else 'CLOSE read'}: "
                 f"{total(ph)} cycles ({params.summary({'dma_latency', 'burst'})})")
        src = _wavedrom(samples, cycles[0] - 1, bounds, title)
        jpath = out / f"{op.lower()}.wavedrom.json"
        jpath.write_text(json.dumps(src, indent=1) + "\n")
        paths[f"{op.lower()}_json"] = jpath
        try:
            import wavedrom
        except ImportError:
            paths[f"{op.lower()}_svg"] = None   # JSON only: pip install 'vmshm[timing]'
            continue
        spath = out / f"{op.lower()}.wavedrom.svg"
        wavedrom.render(json.dumps(src)).saveas(str(spath))
        paths[f"{op.lower()}_svg"] = spath
    return paths, rows
