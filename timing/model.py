"""The cycle model of OPEN, CLOSE and window accesses, phase by phase, and what it means for PCIe.

``docs/timing.md`` explains the model; :func:`model_phases` computes it for a
:class:`TimingParams`, :data:`SWEEPABLE` says what ``--sweep`` can vary, and
:func:`recommend_host_timeout` turns it into a host timeout that suits a PCIe completion timeout
range. Phase names are those of :mod:`vmshm.timing`.
"""

import math
from dataclasses import dataclass, field, replace

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


# -- doorbells and interrupts ------------------------------------------------------------------

def doorbell_write_cycles(*, dropped_after=None):
    """Return the cycles of a guest's 32-bit DOORBELL write, from its offer to its completion.

    ``4`` as any one-beat register write (two cycles through the PCI front end, one in WRITE,
    one in WRITE-ACK): the doorbell is put on offer on the edge WRITE takes the beat, whatever
    the host does. Only while the previous doorbell is still on offer does WRITE wait, and for
    at most the host timeout: pass it as ``dropped_after`` for a write that is dropped then
    (``T + 4``).
    """
    return 4 + (dropped_after or 0)


def doorbell_to_host_cycles(db_ready=True):
    """Return the cycles from a DOORBELL write's offer to the edge the host takes its ``db`` beat.

    ``4`` for a host that is ready: the beat is on offer from the edge WRITE takes the guest's
    beat and moves on the next, the edge the write's completion moves too. A host that is not
    ready takes it later; the write's completion does not wait for it.
    """
    if not db_ready:
        raise ValueError("the beat waits on the host as long as it is not ready: no bound")
    return 4


def ring_to_intx_cycles():
    """Return the cycles from a host ring (``HostModel.ring`` at a drive point) to INTx rising.

    ``1``: the ring beat moves at the next edge and sets INTR_STATUS on it; ``irq`` (and
    ``intx``) is that register AND INTR_MASK, so the line rises on the same edge. From the ring
    beat's edge: 0.
    """
    return 1


def ring_to_msi_cycles():
    """Return the cycles from a host ring (``HostModel.ring`` at a drive point) to its MSI message.

    ``3``: the ring beat's edge sets INTR_STATUS and the registered ``irq_msg`` pulse; the PCI
    function latches the message on the next edge and a ready receiver takes it on the one after.
    From the ring beat's edge: 2.
    """
    return 3


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
        from vmshm.abi.regmap import DEFAULT_NAME_SIZE
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
