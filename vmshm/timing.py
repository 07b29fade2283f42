"""Study how long VMShm's OPEN, CLOSE and window accesses take: the model, the sweep, the outputs.

``docs/timing.md`` explains the model; this module holds it as functions (:func:`model_phases`
and the per-transaction functions it calls), runs the same transactions on a simulation backend
(:func:`run_point`, :func:`run_sweep`), splits each one into phases at the host BFM's event stamps
(:func:`split_phases`), and writes what ``vmshm timing`` prints: a per-phase table, CSV, JSON, a
PNG plot and, for one run, a VCD and WaveDrom diagrams of one OPEN and one CLOSE.

Every transaction is cut into the same phases, at the edges where beats move:

``name_write``
    OPEN only: the name and its NUL written into BAR2 (one burst, before the OPEN read).
``setup``
    From the guest offering its request to the first beat the device moved on the host side.
``request``
    The rest of the device's host-side request beats (OPEN's name bytes, a window write's data).
``host``
    From the last request beat to the host's first answer beat: the host's latency and more.
``response``
    The rest of the host's answer beats (a window read's data).
``completion``
    From the host's last answer beat to the guest taking the completion.

Nothing here imports matplotlib or wavedrom until a plot or a diagram is asked for, so the demo
and the rest of the CLI run without them.
"""

import csv
import errno
import json
import math
import os
import random
import statistics
import string
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

__all__ = [
    "PHASES", "OPS", "PCIE_RANGES", "SWEEPABLE", "TimingParams", "Point",
    "name_bytes", "name_words", "name_write_phases", "open_phases", "close_phases",
    "read_phases", "write_phases", "model_phases", "total", "open_read_cycles",
    "open_in_time", "close_in_time", "open_timeout_cycles", "close_timeout_cycles",
    "pcie_flags", "pcie_flag_text", "recommend_host_timeout", "measure_host_latency",
    "parse_sweep", "measure", "split_phases", "run_point", "run_sweep", "write_outputs",
    "write_waveforms", "add_arguments", "run_cli",
]

#: The phases every transaction is cut into, in order (see the module's docstring).
PHASES = ("name_write", "setup", "request", "host", "response", "completion")
#: The transactions measured: the ioctl (name write + OPEN read), CLOSE, a window read and write.
OPS = ("OPEN", "CLOSE", "READ", "WRITE")
#: How each transaction is called in tables and plots.
OP_LABELS = {"OPEN": "ioctl (name write + OPEN read)", "CLOSE": "CLOSE read",
             "READ": "window read", "WRITE": "window write"}
PHASE_LABELS = {"name_write": "name write (BAR2 burst)", "setup": "setup (bus + core FSM)",
                "request": "name stream (ctl_req)", "host": "host answer (latency + ctl_rsp)",
                "response": "response beats", "completion": "completion (READ-SEND)"}

#: PCIe completion timeout ranges (PCIe Base Specification, Device Capabilities 2 "Completion
#: Timeout Ranges Supported" and Device Control 2 "Completion Timeout Value"): name, the Device
#: Control 2 encodings in the range, lowest and highest timeout in seconds. A root port waits at
#: least the low end for the completion of the guest's OPEN read, and at most the high end.
PCIE_RANGES = (
    ("default", "0000b: 50 µs to 50 ms", 50e-6, 50e-3),
    ("A", "0001b: 50 µs to 100 µs; 0010b: 1 ms to 10 ms", 50e-6, 10e-3),
    ("B", "0101b: 16 ms to 55 ms; 0110b: 65 ms to 210 ms", 10e-3, 250e-3),
    ("C", "1001b: 260 ms to 900 ms; 1010b: 1 s to 3.5 s", 250e-3, 4.0),
    ("D", "1101b: 4 s to 13 s; 1110b: 17 s to 64 s", 4.0, 64.0),
)
#: Share of a completion timeout the device may use: the rest covers the link, the switches
#: and the root complex on the completion's way back.
PCIE_MARGIN = 0.9

DEFAULT_NAME_LENGTH = len("/shared-with-qemu")


# -- the model ---------------------------------------------------------------------------------

def _check_probability(name, p):
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
        raise ValueError(f"{name} must be a probability in (0, 1], not {p!r}")


def name_bytes(name_length):
    """Return how many bytes OPEN streams to the host: the name and its NUL."""
    if not isinstance(name_length, int) or name_length < 1:
        raise ValueError(f"name_length must be a positive integer, not {name_length!r}")
    return name_length + 1


def name_words(name_length, data_width):
    """Return how many data-path words the name and its NUL span in BAR2."""
    if data_width not in (32, 64):
        raise ValueError(f"data_width must be 32 or 64, not {data_width!r}")
    return -(-name_bytes(name_length) // (data_width // 8))


def name_write_phases(name_length, data_width):
    """Return the phases of the BAR2 burst that writes the name: ``W + 3`` cycles.

    Two cycles take the first beat through the PCI front end (IDLE decodes, FORWARD passes it
    on while the core moves from IDLE to WRITE), one beat a cycle in WRITE, one cycle for the
    write's completion (WRITE-ACK).
    """
    return {"name_write": name_words(name_length, data_width) + 3}


def open_phases(name_length, data_width, host_latency, *, ctl_ready=1.0, rsp_valid=1.0,
                host_timeout=0):
    """Return the phases of an ioctl: the name write, then the OPEN read.

    Parameters
    ----------
    name_length : int
        Bytes of the name without its NUL (``/shared-with-qemu`` is 17).
    data_width : int
        32 or 64.
    host_latency : int
        The host's control latency in cycles (:attr:`HostTiming.ctl_latency`).
    ctl_ready, rsp_valid : float
        Probabilities that the host's ``ctl_req.ready`` (``ctl_rsp.valid``) is high on a
        cycle; below 1 the phases are expected values.
    host_timeout : int
        The device's timeout in cycles (0: none). A host slower than it makes the OPEN read end
        with ``ETIMEDOUT`` after :func:`open_timeout_cycles`.

    Returns
    -------
    dict
        ``{phase: cycles}`` with ``B = name_length + 1`` bytes in ``W`` words:
        ``name_write = W + 3``, ``setup = 6``, ``request = (B - 1)/p + (W - 1)·p`` (``B + W - 2``
        without back-pressure), ``host = host_latency + 1/q``, ``response = 0``,
        ``completion = 1``.
    """
    _check_probability("ctl_ready", ctl_ready)
    _check_probability("rsp_valid", rsp_valid)
    b, w = name_bytes(name_length), name_words(name_length, data_width)
    phases = name_write_phases(name_length, data_width)
    phases["setup"] = 6
    # Each byte after the first waits for a ready draw (1/p cycles on average); a byte that
    # starts a new word also waits out the cycle the name RAM is read (OPEN-FETCH), which a
    # ready draw made in that cycle overlaps: max(draws, 2) cycles, 1/p + p on average.
    phases["request"] = (b - 1) / ctl_ready + (w - 1) * ctl_ready
    phases["host"] = host_latency + 1 / rsp_valid
    phases["response"] = 0
    phases["completion"] = 1
    if not open_in_time(name_length, data_width, host_latency, host_timeout):
        # The core leaves CTL-WAIT with ETIMEDOUT when its timer reaches host_timeout.
        phases["host"] = open_timeout_cycles(name_length, data_width, host_timeout) - (b + w + 5)
    return _tidy(phases)


def close_phases(host_latency, *, rsp_valid=1.0, host_timeout=0):
    """Return the phases of a CLOSE read: ``L + 7`` cycles without back-pressure.

    ``setup = 5``, ``host = host_latency + 1/q``, ``completion = 1``. The core spends
    READ-FETCH, CLOSE-START and CLOSE-SEND before the one CLOSE beat; the window is closed the
    moment that beat moves, whatever the host answers.
    """
    _check_probability("rsp_valid", rsp_valid)
    phases = {"setup": 5, "request": 0, "host": host_latency + 1 / rsp_valid, "response": 0,
              "completion": 1}
    if not close_in_time(host_latency, host_timeout):
        phases["host"] = close_timeout_cycles(host_timeout) - 6
    return _tidy(phases)


def read_phases(burst, dma_latency, *, rsp_valid=1.0):
    """Return the phases of a window read of ``burst`` words: ``N + D + 3`` in all.

    ``setup = 3`` (the front end's two cycles, then DMA-READ-REQ), ``host = dma_latency + 1/q``,
    ``response = (burst - 1)/q`` (the data beats go straight through to the guest),
    ``completion = 0``.
    """
    _check_burst(burst)
    _check_probability("rsp_valid", rsp_valid)
    return _tidy({"setup": 3, "request": 0, "host": dma_latency + 1 / rsp_valid,
                  "response": (burst - 1) / rsp_valid, "completion": 0})


def write_phases(burst, dma_latency, *, dma_ready=1.0, rsp_valid=1.0):
    """Return the phases of a window write of ``burst`` words: ``N + D + 4`` in all.

    ``setup = 3`` (as for a write to BAR2, the core's IDLE needs a cycle to pick DMA-WRITE),
    ``request = (burst - 1)/p`` (the guest's beats pass straight through to ``dma_req``),
    ``host = dma_latency + 1/q``, ``completion = 1`` (WRITE-ACK).
    """
    _check_burst(burst)
    _check_probability("dma_ready", dma_ready)
    _check_probability("rsp_valid", rsp_valid)
    return _tidy({"setup": 3, "request": (burst - 1) / dma_ready,
                  "host": dma_latency + 1 / rsp_valid, "response": 0, "completion": 1})


def _check_burst(burst):
    if not isinstance(burst, int) or not 1 <= burst <= 256:
        raise ValueError(f"burst must be 1 to 256 beats, not {burst!r}")


def _tidy(phases):
    # Whole cycles stay ints, so deterministic results compare and print exactly.
    out = {p: 0 for p in PHASES if p in phases or p != "name_write"}
    for p, v in phases.items():
        out[p] = int(round(v)) if abs(v - round(v)) < 1e-9 else v
    return out


def total(phases):
    """Return the cycles of a transaction: the sum of its phases (``None`` ones count 0)."""
    return sum(v for v in phases.values() if v is not None)


def open_read_cycles(name_length, data_width, host_latency, **kwargs):
    """Return the cycles of the OPEN read alone: what a PCIe completion timeout has to cover.

    Without back-pressure: ``B + W + host_latency + 6``.
    """
    phases = open_phases(name_length, data_width, host_latency, **kwargs)
    return total(phases) - phases["name_write"]


def open_in_time(name_length, data_width, host_latency, host_timeout):
    """Return whether the host's OPEN answer beats the device's timeout (no back-pressure).

    The core's timer starts in OPEN-FETCH, so the name stream already uses ``B + W - 1`` of
    ``host_timeout``; the answer is in time when ``host_latency <= host_timeout - B - W``.
    """
    if not host_timeout:
        return True
    return host_latency <= max(host_timeout - name_bytes(name_length)
                               - name_words(name_length, data_width), 0)


def close_in_time(host_latency, host_timeout):
    """Return whether the host's CLOSE answer beats the device's timeout: ``L <= T - 1``."""
    return not host_timeout or host_latency <= max(host_timeout - 1, 0)


def open_timeout_cycles(name_length, data_width, host_timeout):
    """Return the cycles of an OPEN read that times out: ``max(T, B + W) + 6``."""
    return max(host_timeout, name_bytes(name_length) + name_words(name_length, data_width)) + 6


def close_timeout_cycles(host_timeout):
    """Return the cycles of a CLOSE read that times out: ``max(T, 1) + 6``."""
    return max(host_timeout, 1) + 6


# -- parameters -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TimingParams:
    """Describe one timing run: the device, the object's name and the host's timing.

    Attributes
    ----------
    name_length : int
        Bytes of the object's name without its NUL, ``/`` included.
    data_width : int
        32 or 64.
    host_latency, dma_latency : int
        Cycles the host takes to answer OPEN/CLOSE and window accesses.
    burst : int
        Beats (data-path words) of the measured window read and write.
    ctl_ready, dma_ready, rsp_valid : float
        Probabilities of the host's handshake signals (:class:`~vmshm.host_model.HostTiming`).
    host_timeout : int
        The device's host timeout in cycles (0: none).
    core : dict
        Other build parameters of the device (``window_size``, ``name_size``, ...).
    """
    name_length: int = DEFAULT_NAME_LENGTH
    data_width: int = 32
    host_latency: int = 0
    dma_latency: int = 0
    burst: int = 16
    ctl_ready: float = 1.0
    dma_ready: float = 1.0
    rsp_valid: float = 1.0
    host_timeout: int = None
    core: dict = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self):
        from vmshm.regmap import DEFAULT_NAME_SIZE
        from vmshm.rtl.core import DEFAULT_HOST_TIMEOUT

        if self.host_timeout is None:
            object.__setattr__(self, "host_timeout", DEFAULT_HOST_TIMEOUT)
        for name in ("host_latency", "dma_latency", "host_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative number of cycles, not {value!r}")
        name_size = self.core.get("name_size", DEFAULT_NAME_SIZE)
        if not isinstance(self.name_length, int) or not 1 <= self.name_length < name_size:
            raise ValueError(f"name_length must be 1 to {name_size - 1} (the name and its NUL "
                             f"fill the {name_size}-byte name buffer), not {self.name_length!r}")
        name_words(self.name_length, self.data_width)
        _check_burst(self.burst)
        for name in ("ctl_ready", "dma_ready", "rsp_valid"):
            _check_probability(name, getattr(self, name))
        window = self.core.get("window_size", 1 << 20)
        if self.burst * self.data_width // 8 > window:
            raise ValueError(f"a burst of {self.burst} beats does not fit the {window}-byte window")

    @property
    def deterministic(self):
        """bool: Whether the host applies no random back-pressure (then one sample is exact)."""
        return self.ctl_ready == self.dma_ready == self.rsp_valid == 1.0

    def host_timing(self, seed=0):
        """Return the :class:`~vmshm.host_model.HostTiming` of these parameters."""
        from vmshm.host_model import HostTiming
        return HostTiming(ctl_latency=self.host_latency, dma_latency=self.dma_latency,
                          ctl_ready=self.ctl_ready, dma_ready=self.dma_ready,
                          rsp_valid=self.rsp_valid, seed=seed)

    def build_params(self):
        """Return the device's build parameters."""
        return {**self.core, "data_width": self.data_width, "host_timeout": self.host_timeout}

    def summary(self, skip=()):
        """Return the parameters as a short line for titles, leaving out those in ``skip``."""
        parts = {"data_width": f"{self.data_width}-bit",
                 "name_length": f"name {self.name_length} B",
                 "host_latency": f"host latency {self.host_latency}",
                 "dma_latency": f"DMA latency {self.dma_latency}",
                 "burst": f"burst {self.burst} beats"}
        for name in ("ctl_ready", "dma_ready", "rsp_valid"):
            if getattr(self, name) != 1.0:
                parts[name] = f"{name} {getattr(self, name):g}"
        return ", ".join(v for k, v in parts.items() if k not in skip)


def model_phases(params):
    """Return ``{op: {phase: cycles}}`` predicted for ``params`` (a :class:`TimingParams`)."""
    p = params
    return {
        "OPEN": open_phases(p.name_length, p.data_width, p.host_latency, ctl_ready=p.ctl_ready,
                            rsp_valid=p.rsp_valid, host_timeout=p.host_timeout),
        "CLOSE": close_phases(p.host_latency, rsp_valid=p.rsp_valid,
                              host_timeout=p.host_timeout),
        "READ": read_phases(p.burst, p.dma_latency, rsp_valid=p.rsp_valid),
        "WRITE": write_phases(p.burst, p.dma_latency, dma_ready=p.dma_ready,
                              rsp_valid=p.rsp_valid),
    }


# -- sweeps -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sweepable:
    """A parameter ``--sweep`` can vary: the fields it sets, its type, label and unit."""
    fields: tuple
    kind: type
    label: str
    unit: str

    def axis_label(self):
        return f"{self.label} ({self.unit})" if self.unit else self.label


#: What ``--sweep NAME=start:stop:step`` can vary, by NAME.
SWEEPABLE = {
    "name-length": Sweepable(("name_length",), int, "name length without NUL", "bytes"),
    "data-width": Sweepable(("data_width",), int, "data width", "bits"),
    "host-latency": Sweepable(("host_latency",), int, "host control latency", "cycles"),
    "dma-latency": Sweepable(("dma_latency",), int, "host DMA latency", "cycles"),
    "burst": Sweepable(("burst",), int, "window burst length", "beats"),
    "ready": Sweepable(("ctl_ready", "dma_ready", "rsp_valid"), float,
                       "host ready/valid probability", "per cycle"),
    "ctl-ready": Sweepable(("ctl_ready",), float, "host ctl_req ready probability",
                           "per cycle"),
    "dma-ready": Sweepable(("dma_ready",), float, "host dma_req ready probability",
                           "per cycle"),
    "rsp-valid": Sweepable(("rsp_valid",), float, "host response valid probability",
                           "per cycle"),
}


def parse_sweep(text):
    """Parse ``PARAM=start:stop:step`` (stop included) into ``(PARAM, [values])``."""
    name, sep, spec = str(text).partition("=")
    name = name.strip().replace("_", "-")
    if not sep or name not in SWEEPABLE:
        raise ValueError(f"--sweep takes PARAM=start:stop:step with PARAM one of "
                         f"{', '.join(SWEEPABLE)}, not {text!r}")
    kind = SWEEPABLE[name].kind
    parts = spec.split(":")
    if len(parts) == 2:
        parts.append("1")
    if len(parts) != 3:
        raise ValueError(f"--sweep {name}: give start:stop:step, not {spec!r}")
    try:
        start, stop, step = (kind(float(x)) if kind is float else int(x, 0) for x in parts)
    except ValueError:
        raise ValueError(f"--sweep {name}: {spec!r} is not start:stop:step of "
                         f"{kind.__name__}s") from None
    if step <= 0 or stop < start:
        raise ValueError(f"--sweep {name}: step must be positive and stop at least start, "
                         f"not {spec!r}")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > 1000:
        raise ValueError(f"--sweep {name}: {count} points is too many (at most 1000)")
    values = [start + i * step for i in range(count)]
    if kind is float:
        values = [round(v, 9) for v in values]
    return name, values


def _with(params, sweep, value):
    return replace(params, **{f: value for f in SWEEPABLE[sweep].fields})


# -- measurement ------------------------------------------------------------------------------

async def measure(bus, *, name=None, burst=16, repeat=1, gap=16, plan=None):
    """Probe, then time ``repeat`` rounds of ioctl(name), window read, window write, close.

    Each transaction is labelled for :func:`split_phases` with its step's number; the window
    accesses are bursts of ``burst`` beats. Runs on any backend as ``"vmshm.timing:measure"``.
    ``plan``, a list of ``[name, burst]``, replaces ``name``, ``burst`` and ``repeat`` with one
    step each (a grid in one simulation).
    ``gap`` idle cycles come before each measured transaction, so a host that stalls at random
    has drawn ready again by then (the model assumes a host that was idle). An OPEN that fails
    skips the window; one that times out ends the run, since the device then deals with the late
    answer first.

    Returns
    -------
    dict
        ``{"status": [errno of each step's OPEN, 0 for success]}``.
    """
    from vmshm.driver_model import vmshm_probe
    from vmshm.regmap import REG

    drivers, _ = await vmshm_probe(bus)
    drv = drivers[0]
    statuses = []
    if plan is None:
        plan = [(name, burst)] * repeat

    async def timed(label, coro):
        await bus.idle(gap)
        bus.label = label
        try:
            return await coro
        finally:
            bus.label = ""

    for i, (step_name, step_burst) in enumerate(plan):
        nbytes = step_burst * bus.word_bytes
        fd = await drv.open()
        try:
            await timed(f"OPEN {i}", drv.ioctl(fd, 0, step_name))
            statuses.append(0)
        except OSError as exc:
            statuses.append(exc.errno)
        if statuses[-1] == 0:
            if await drv.regs.read32(REG["MAP_SIZE"].offset) < nbytes:
                raise ValueError(f"{step_name} is smaller than a burst of {nbytes} bytes")
            mapping = await drv.mmap(fd, nbytes)
            await timed(f"READ {i}", mapping.read(0, nbytes))
            pattern = bytes((i + k * 7 + 1) & 0xFF for k in range(nbytes))
            await timed(f"WRITE {i}", mapping.write(0, pattern))
            await drv.munmap(mapping)
        if statuses[-1] == errno.ETIMEDOUT:
            await drv.close(fd)
            break
        await timed(f"CLOSE {i}", drv.close(fd))
    return {"status": statuses}


_STAMPS = {"OPEN": ("ctl_req_first", "ctl_req_last", "ctl_rsp", "ctl_rsp"),
           "CLOSE": ("ctl_req_first", "ctl_req_last", "ctl_rsp", "ctl_rsp"),
           "READ": ("dma_req_first", "dma_req_last", "dma_rsp_first", "dma_rsp_last"),
           "WRITE": ("dma_req_first", "dma_req_last", "dma_rsp_first", "dma_rsp_last")}


def split_phases(records, events):
    """Cut each labelled transaction of a :func:`measure` run into phases.

    Parameters
    ----------
    records : list of Transaction
        The guest bus's records (``SimResult.records``).
    events : list of HostEvent
        Device 0's host-side stamps (``SimResult.events[0]``).

    Returns
    -------
    list of dict
        ``{"op", "rep", "start", "end", "phases"}`` per transaction, in order. A host-side
        stamp that falls outside the transaction (the host answered after the device gave up)
        leaves the time until the device gave up in ``host`` and 1 in ``completion``.
    """
    from vmshm.driver_model import Access

    groups = {}
    for rec in records:
        if rec.label:
            groups.setdefault(rec.label, []).append(rec)
    out = []
    for label, recs in groups.items():
        op, _, rep = label.partition(" ")
        phases = {}
        if op == "OPEN":
            writes = [r for r in recs if r.access is Access.WRITE]
            phases["name_write"] = sum(r.cycles for r in writes)
            recs = [r for r in recs if r.access is Access.READ]
        if len(recs) != 1:
            raise ValueError(f"{label}: expected one {op} burst, found {len(recs)}")
        rec = recs[0]
        mine = [e for e in events if e.op == op and rec.start < e.cycle <= rec.end]
        first = {}
        last = {}
        for e in mine:
            first.setdefault(e.kind, e.cycle)
            last[e.kind] = e.cycle
        req_first, req_last, rsp_first, rsp_last = _STAMPS[op]
        a = first.get(req_first)
        b = last.get(req_last)
        if a is None or b is None:
            raise ValueError(f"{label}: the host saw no request between cycles {rec.start} and "
                             f"{rec.end}")
        c = first.get(rsp_first)
        d = last.get(rsp_last)
        phases["setup"] = a - rec.start
        phases["request"] = b - a
        if c is None:
            # Timed out: the core completed one cycle after it stopped waiting.
            phases.update(host=rec.end - 1 - b, response=0, completion=1)
        else:
            phases.update(host=c - b, response=d - c, completion=rec.end - d)
        start = rec.start - phases.get("name_write", 0)
        out.append({"op": op, "rep": int(rep), "start": start, "end": rec.end,
                    "phases": phases})
    return out


@dataclass
class Point:
    """One run's result: the measured phases (means over repetitions) beside the model's.

    Attributes
    ----------
    value : int or float
        The swept parameter's value (``None`` for a single run).
    params : TimingParams
    status : str
        ``"OK"`` or the errno name the OPEN returned.
    measured : dict
        ``{op: {phase: mean cycles}}`` for each transaction that ran.
    samples : dict
        ``{op: how many transactions the mean is over}``.
    model : dict
        ``{op: {phase: cycles}}`` from :func:`model_phases`.
    """
    value: object
    params: TimingParams
    status: str
    measured: dict
    samples: dict
    model: dict

    def matches(self, tolerance=0.0):
        """Return whether every measured total is within ``tolerance`` (relative) of the model."""
        for op, phases in self.measured.items():
            want = total(self.model[op])
            if abs(total(phases) - want) > tolerance * max(want, 1) + 1e-9:
                return False
        return True


class _Objects:
    """Create shared-memory objects whose names have an exact length; unlink only those."""

    def __init__(self, size):
        self._size = size
        self._made = {}
        self._regions = []

    def name(self, length):
        """Return the name of an object of ``length`` name bytes, made on first use.

        Lengths that no object can have (``/`` alone, or past NAME_MAX) get a name anyway: the
        host refuses it (EINVAL, ENAMETOOLONG) after the same cycles, and the window is skipped.
        """
        from vmshm.host_model import ShmRegion
        from vmshm.regmap import NAME_MAX

        if length in self._made:
            return self._made[length]
        rng = random.Random()
        alphabet = string.ascii_letters + string.digits
        prefix = f"/vmshm-t{os.getpid()}-"
        name = "/" + "x" * (length - 1)
        if 2 <= length <= NAME_MAX + 1:
            for _ in range(64):
                head = prefix if length > len(prefix) + 6 else "/"
                name = head + "".join(rng.choice(alphabet) for _ in range(length - len(head)))
                try:
                    self._regions.append(ShmRegion.create(name, self._size))
                    break
                except FileExistsError:
                    continue    # someone else's object: never touch it, pick another name
        self._made[length] = name
        return name

    def cleanup(self):
        for region in self._regions:
            try:
                region.unlink()
            except FileNotFoundError:
                pass
            finally:
                region.close()
        self._regions.clear()
        self._made.clear()


def _gap(params):
    # Idle cycles before each measured transaction: enough that a host drawing ready with the
    # smallest probability has been ready for a while (miss chance about e^-16).
    p = min(params.ctl_ready, params.dma_ready, params.rsp_valid)
    return max(16, math.ceil(16 / p))


def run_point(params, *, backend="amaranth", repeat=None, seed=0, objects=None, value=None,
              waves=None):
    """Run :func:`measure` with ``params`` on ``backend`` and return a :class:`Point`.

    Parameters
    ----------
    params : TimingParams
    backend : str
        ``"amaranth"``; ``"verilator"`` and ``"icarus"`` once their runner passes back the host
        BFM's events (``SimResult.events``).
    repeat : int, optional
        Transactions of each kind to average over: 1 without back-pressure (the result is
        exact), else 64.
    seed : int
        Seed of the host's random back-pressure.
    objects : _Objects, optional
        Where to make the object; by default one made and removed here.
    value : object
        The swept parameter's value, kept in the point.
    waves : path, optional
        Write a VCD of the run there.
    """
    from vmshm.backends import run_function

    if repeat is None:
        repeat = 1 if params.deterministic else 64
    own = objects is None
    if own:
        objects = _Objects(max(4096, params.burst * params.data_width // 8))
    try:
        name = objects.name(params.name_length)
        result = run_function("vmshm.timing:measure", backend=backend,
                              kwargs={"name": name, "burst": params.burst, "repeat": repeat,
                                      "gap": _gap(params)},
                              timing=params.host_timing(seed), waves=waves,
                              **params.build_params())
    finally:
        if own:
            objects.cleanup()
    events = getattr(result, "events", None)
    if not events:
        raise RuntimeError(f"the {backend} backend returned no host-side event stamps "
                           f"(SimResult.events), so its transactions cannot be cut into phases")
    rows = split_phases(result.records, events[0])
    status = result.value["status"][0]
    measured, samples = {}, {}
    for op in OPS:
        mine = [r["phases"] for r in rows if r["op"] == op]
        if mine:
            samples[op] = len(mine)
            measured[op] = {ph: _mean([m[ph] for m in mine]) for ph in mine[0]}
    return Point(value=value, params=params,
                 status="OK" if status == 0 else errno.errorcode.get(status, str(status)),
                 measured=measured, samples=samples, model=model_phases(params))


def _mean(values):
    m = statistics.fmean(values)
    return int(m) if m == int(m) else m


def run_sweep(base, sweep, values, *, backend="amaranth", repeat=None, seed=0, progress=None):
    """Run :func:`run_point` for each value of the parameter ``sweep`` and return the points.

    ``progress``, if given, is called with each point's value after the point ran.
    """
    params = [_with(base, sweep, v) for v in values] if sweep else [base]
    size = max(4096, max(p.burst * p.data_width // 8 for p in params))
    objects = _Objects(size)
    points = []
    try:
        for p, v in zip(params, values if sweep else [None]):
            points.append(run_point(p, backend=backend, repeat=repeat, seed=seed,
                                    objects=objects, value=v))
            if progress:
                progress(v)
    finally:
        objects.cleanup()
    return points


# -- wall clock and PCIe ------------------------------------------------------------------------

def pcie_flags(seconds):
    """Return ``{range: "ok" | "may" | "will"}`` for a read taking ``seconds``.

    ``ok``: shorter than the range's low end; ``may``: inside the range; ``will``: past its high
    end (see :data:`PCIE_RANGES`).
    """
    out = {}
    for name, _, lo, hi in PCIE_RANGES:
        out[name] = "ok" if seconds < lo else "may" if seconds < hi else "will"
    return out


def pcie_flag_text(seconds):
    """Return ``ok``, or which completion timeout ranges may or will end a read of ``seconds``."""
    flags = pcie_flags(seconds)
    will = [n for n, f in flags.items() if f == "will"]
    may = [n for n, f in flags.items() if f == "may"]
    if not will and not may:
        return "ok"
    parts = []
    if will:
        parts.append("times out: " + ",".join(will))
    if may:
        parts.append("may: " + ",".join(may))
    return "; ".join(parts)


def _fmt_time(seconds):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            return f"{seconds / scale:.3g} {unit}"


def recommend_host_timeout(clock_hz, name_length, data_width, host_latency):
    """Recommend the device's ``host_timeout`` for a host answering OPEN in ``host_latency``.

    The device must answer the guest's OPEN read (with ``ETIMEDOUT`` if need be) before the
    root port's completion timeout fires, and should wait as long as it can for the host. The
    shortest timeout a root port may use is the low end of its range, so the recommendation is
    the largest ``host_timeout`` whose timed-out OPEN read ends within :data:`PCIE_MARGIN` of the
    low end of the first range (default, then B, C, D) under which the host's OPEN still
    succeeds.

    Returns
    -------
    dict
        ``range`` (name, or ``None`` if even range D is too short), ``host_timeout`` (cycles),
        ``timeout_s`` (when the device gives up), ``needed`` (the smallest ``host_timeout`` this
        host's OPEN succeeds with), ``open_s`` (the OPEN read's time without a timeout) and
        ``text`` (one sentence saying all that).
    """
    b, w = name_bytes(name_length), name_words(name_length, data_width)
    needed = host_latency + b + w
    open_s = open_read_cycles(name_length, data_width, host_latency) / clock_hz
    choice = None
    for name, codes, lo, _ in PCIE_RANGES:
        if name == "A":     # its low end is the default range's: nothing new to offer
            continue
        t = int(math.floor(PCIE_MARGIN * lo * clock_hz)) - 6
        if t >= needed:
            choice = (name, codes, lo, t)
            break
    mhz = clock_hz / 1e6
    if choice is None:
        return {"range": None, "host_timeout": None, "timeout_s": None, "needed": needed,
                "open_s": open_s,
                "text": f"an OPEN read takes {_fmt_time(open_s)} at {mhz:g} MHz, longer than "
                        f"any PCIe completion timeout range allows"}
    name, codes, lo, t = choice
    timeout_s = (t + 6) / clock_hz
    where = ("a root port in the default range" if name == "default" else
             f"a root port set to range {name} ({codes})")
    text = (f"--host-timeout {t}: at {mhz:g} MHz the device answers ETIMEDOUT after "
            f"{_fmt_time(timeout_s)}, before {where} can time out ({_fmt_time(lo)} at the "
            f"earliest); this host's OPEN needs at least {needed}")
    return {"range": name, "host_timeout": t, "timeout_s": timeout_s, "needed": needed,
            "open_s": open_s, "text": text}


def measure_host_latency(repeat=101, size=1 << 20):
    """Time ``shm_open`` + ``fstat`` + ``mmap`` (and ``munmap`` + ``close``) on this machine.

    Creates a fresh object of ``size`` bytes, attaches to it ``repeat`` times as the host model's
    OPEN does (:meth:`~vmshm.host_model.ShmRegion.attach`), closes each, then unlinks it.

    Returns
    -------
    dict
        ``open_s`` and ``close_s``: the medians in seconds; ``repeat``.
    """
    from vmshm.host_model import ShmRegion

    if not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"--measure-host needs a positive number of repetitions, not {repeat!r}")
    name = f"/vmshm-hostlat-{os.getpid()}-{random.getrandbits(32):08x}"
    owner = ShmRegion.create(name, size)
    opens, closes = [], []
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            region = ShmRegion.attach(name)
            t1 = time.perf_counter()
            region.close()
            t2 = time.perf_counter()
            opens.append(t1 - t0)
            closes.append(t2 - t1)
    finally:
        owner.unlink()
        owner.close()
    return {"open_s": statistics.median(opens), "close_s": statistics.median(closes),
            "repeat": repeat}


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
                  table=None):
    """Write ``timing.csv``, ``timing.json``, ``timing.png`` and ``table.txt`` into ``out``.

    The CSV has one row per point, transaction and phase (``value, op, phase, cycles, model``,
    plus ``ns`` and ``model_ns`` with a clock), the JSON everything, the PNG a plot of cycles
    per phase against the swept parameter. Returns ``{kind: path}``.
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
    if table is not None:
        from rich.console import Console
        con = Console(record=True, width=200, file=open(os.devnull, "w"))
        con.print(table)
        paths["table"].write_text(con.export_text())
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
        result = run_function("vmshm.timing:waveform_run", backend=backend,
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


# -- the command line ---------------------------------------------------------------------------

def _probability(text):
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability must be in (0, 1], not {value}")
    return value


def _count(text):
    import argparse
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def add_arguments(p):
    """Add ``vmshm timing``'s own options to the argparse parser ``p``.

    The device's build options (``--data-width``, ``--name-size``, ``--host-timeout``, ...)
    come from the CLI's shared set.
    """
    p.add_argument("--sweep", metavar="PARAM=START:STOP:STEP",
                   help=f"vary one parameter, stop included: {', '.join(SWEEPABLE)}")
    p.add_argument("--name-length", type=_count, default=DEFAULT_NAME_LENGTH, metavar="N",
                   help=f"bytes of the object's name without its NUL, '/' included "
                        f"(default {DEFAULT_NAME_LENGTH}, as /shared-with-qemu)")
    p.add_argument("--host-latency", type=_count, default=0, metavar="CYCLES",
                   help="cycles the host takes to answer OPEN and CLOSE (default 0)")
    p.add_argument("--dma-latency", type=_count, default=0, metavar="CYCLES",
                   help="cycles the host takes to answer a window access (default 0)")
    p.add_argument("--burst", type=_count, default=16, metavar="BEATS",
                   help="beats of the measured window read and write (default 16)")
    p.add_argument("--ready", type=_probability, metavar="P",
                   help="set --ctl-ready, --dma-ready and --rsp-valid at once")
    p.add_argument("--ctl-ready", type=_probability, metavar="P",
                   help="probability the host's ctl_req.ready is high on a cycle (default 1)")
    p.add_argument("--dma-ready", type=_probability, metavar="P",
                   help="probability the host's dma_req.ready is high on a cycle (default 1)")
    p.add_argument("--rsp-valid", type=_probability, metavar="P",
                   help="probability the host offers an answer beat on a cycle (default 1)")
    p.add_argument("--repeat", type=_count, metavar="N",
                   help="transactions averaged per point (default 1, or 64 with back-pressure)")
    p.add_argument("--seed", type=int, default=0, help="seed of the host's back-pressure")
    p.add_argument("--backend", choices=("amaranth", "verilator", "icarus", "native"),
                   default="amaranth",
                   help="simulator (default amaranth; the cocotb ones need their runner to "
                        "pass back the host BFM's event stamps)")
    p.add_argument("--clock", type=float, metavar="MHZ",
                   help="clock frequency: adds nanoseconds, PCIe completion timeout flags and a "
                        "host_timeout recommendation")
    p.add_argument("--measure-host", type=_count, nargs="?", const=101, metavar="N",
                   help="time shm_open+fstat+mmap on this machine N times (default 101) and use "
                        "the median, in cycles at --clock, as the host latency")
    p.add_argument("--waveform", action="store_true",
                   help="single run only: also write a VCD and WaveDrom diagrams (JSON, SVG) "
                        "of one OPEN and one CLOSE")
    p.add_argument("--out", default="vmshm-timing", metavar="DIR",
                   help="where to write the outputs (default ./vmshm-timing)")


def _report_clock(points, base, clock_hz, console):
    """Print the PCIe verdict for the slowest OPEN read and a host_timeout; return them."""
    from rich import box
    from rich.table import Table

    with_open = [pt for pt in points if "OPEN" in pt.measured]
    if not with_open:
        return {}
    worst = max(with_open, key=lambda pt: total(pt.measured["OPEN"]) -
                pt.measured["OPEN"]["name_write"])
    cycles = total(worst.measured["OPEN"]) - worst.measured["OPEN"]["name_write"]
    seconds = cycles / clock_hz
    flags = pcie_flags(seconds)
    verdict = {"ok": "ok: answered before the earliest timeout",
               "may": "may time out", "will": "times out"}
    table = Table(title=f"PCIe completion timeout ranges against the slowest OPEN read here: "
                        f"{cycles} cycles = {_fmt_time(seconds)} at {clock_hz / 1e6:g} MHz",
                  box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("range", "Device Control 2 values", "from", "to", "verdict"):
        table.add_column(col)
    for name, codes, lo, hi in PCIE_RANGES:
        table.add_row(name, codes, _fmt_time(lo), _fmt_time(hi), verdict[flags[name]])
    console.print(table)
    p = worst.params
    rec = recommend_host_timeout(clock_hz, p.name_length, p.data_width, p.host_latency)
    console.print(f"recommended: {rec['text']}.")
    now_s = (base.host_timeout + 6) / clock_hz
    if not base.host_timeout or now_s >= PCIE_RANGES[0][2]:
        console.print(f"[yellow]note:[/] host_timeout {base.host_timeout} lets the device wait "
                      f"{'for ever' if not base.host_timeout else _fmt_time(now_s)}: a root "
                      f"port in the default range may give up after 50 µs, first.")
    return {"slowest_open_read": {"cycles": cycles, "seconds": seconds, "pcie": flags},
            "recommendation": rec}


def run_cli(args, console, core):
    """Run ``vmshm timing`` with parsed ``args``; ``core`` holds the device's build parameters.

    Raises ``ValueError`` for a wrong combination of options (the CLI prints it, exit 2).
    """
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from vmshm.backends import backend_missing

    sweep, values = parse_sweep(args.sweep) if args.sweep else (None, [None])
    if args.waveform and sweep:
        raise ValueError("--waveform draws a single run: leave out --sweep")
    if args.measure_host is not None and not args.clock:
        raise ValueError("--measure-host needs --clock MHZ to turn seconds into cycles")
    if args.measure_host is not None and sweep == "host-latency":
        raise ValueError("--measure-host sets the host latency: do not sweep it as well")
    if args.repeat is not None and args.repeat < 1:
        raise ValueError(f"--repeat must be at least 1, not {args.repeat}")
    if args.clock is not None and not args.clock > 0:
        raise ValueError(f"--clock must be a positive frequency in MHz, not {args.clock}")
    reason = backend_missing(args.backend)
    if reason:
        raise ValueError(f"--backend {args.backend} cannot run here: {reason}")
    clock_hz = args.clock * 1e6 if args.clock else None

    extra = {}
    host_latency = args.host_latency
    if args.measure_host is not None:
        with console.status(f"timing shm_open+fstat+mmap {args.measure_host} times..."):
            m = measure_host_latency(args.measure_host)
        host_latency = math.ceil(m["open_s"] * clock_hz)
        extra["measured_host"] = {**m, "host_latency_cycles": host_latency}
        console.print(f"this machine: shm_open+fstat+mmap median {_fmt_time(m['open_s'])}, "
                      f"munmap+close {_fmt_time(m['close_s'])} over {m['repeat']} runs: host "
                      f"latency {host_latency} cycles at {args.clock:g} MHz")

    probs = {n: (getattr(args, n) if getattr(args, n) is not None else
                 args.ready if args.ready is not None else 1.0)
             for n in ("ctl_ready", "dma_ready", "rsp_valid")}
    core = dict(core)
    data_width = core.pop("data_width")
    host_timeout = core.pop("host_timeout", None)
    base = TimingParams(name_length=args.name_length, data_width=data_width,
                        host_latency=host_latency, dma_latency=args.dma_latency,
                        burst=args.burst, host_timeout=host_timeout, core=core, **probs)
    # Check every point before the first simulation, so a bad value fails at once.
    for v in values:
        if sweep:
            _with(base, sweep, v)

    if args.waveform:
        with console.status("simulating one OPEN and one CLOSE..."):
            paths, rows = write_waveforms(base, args.out, backend=args.backend, seed=args.seed)
        for r in rows:
            console.print(f"{r['op']}: cycles {r['start']} to {r['end']}: " +
                          ", ".join(f"{k} {_fmt(v)}" for k, v in r["phases"].items()))
        for kind, path in paths.items():
            console.print(f"wrote {path}" if path is not None else
                          f"[yellow]note:[/] no {kind} diagram: wavedrom is missing "
                          f"(pip install 'vmshm[timing]')")

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task(f"simulating on {args.backend}", total=len(values))
        points = run_sweep(base, sweep, values, backend=args.backend, repeat=args.repeat,
                           seed=args.seed, progress=lambda v: progress.advance(task))

    title = (f"VMShm timing on {args.backend}: "
             f"{'sweep of ' + SWEEPABLE[sweep].label + ', ' if sweep else ''}"
             f"{base.summary(set(SWEEPABLE[sweep].fields) if sweep else ())}")
    table = rich_table(points, sweep, clock_hz, title)
    console.print(table)
    if clock_hz:
        extra.update(_report_clock(points, base, clock_hz, console))
    paths = write_outputs(points, args.out, sweep=sweep, clock_hz=clock_hz,
                          backend=args.backend, extra=extra, table=table)
    for kind in ("table", "csv", "json", "png"):
        if paths[kind] is None:
            console.print("[yellow]note:[/] no timing.png: matplotlib is missing "
                          "(pip install 'vmshm[timing]')")
        else:
            console.print(f"wrote {paths[kind]}")
    bad = [pt for pt in points if _agree(pt) == "≠"]
    if bad:
        console.print(f"[yellow]note:[/] {len(bad)} point(s) differ from the model; see "
                      f"docs/timing.md for what it assumes")
    return 0
