"""Ways a simulated host can misbehave, for testing that the device never wedges.

A :class:`HostFaults` is a list of :class:`Fault` records, each naming one exchange on one channel
of the host side and what goes wrong with it. The shared bus-functional model
(:class:`vmshm.harness.bfm.HostBFM`) applies them, so every simulation backend misbehaves the same
way on the same cycles. The host model itself (:class:`~vmshm.host_model.HostModel`) still does the
work (opens, closes, reads, writes); a fault only changes what goes over the wires.

Exchanges are counted per channel from 0, in the order the host takes their first beat: on
``"ctl"`` every packet, the RESET the device sends out of reset included (so after power-on
exchange 0 is that RESET and the first OPEN is exchange 1), on ``"dma"`` every window read and
write, on ``"db"`` every doorbell (only a ``"stall"``: a host that does not take it).

Examples
--------
A host that takes two bytes of the first OPEN's name and then never takes another::

    HostFaults([Fault("ctl", "stall", exchange=1, beat=2)])

A host that answers the second DMA request twice, and a little late::

    HostFaults([Fault("dma", "double", exchange=1), Fault("dma", "late", exchange=1, cycles=50)])
"""

from dataclasses import dataclass, field

__all__ = ["Fault", "HostFaults", "FAULT_KINDS", "FOREVER"]

#: What a fault does, by kind.
FAULT_KINDS = {
    "stall": "stop taking request beats after ``beat`` beats of the packet, for ``cycles`` cycles "
             "(for ever if None); 0 never takes its first beat",
    "drop": "do the work but never answer",
    "late": "answer ``cycles`` cycles later than the timing says",
    "double": "answer, then send the same answer again",
    "unasked": "before the answer, send an answer to a request that was never made (a tag no "
               "request had)",
}
_CHANNELS = ("ctl", "dma", "db")
#: Cycles of a stall that never ends (longer than any simulation here).
FOREVER = 1 << 40


@dataclass(frozen=True)
class Fault:
    """One thing that goes wrong with one exchange.

    Attributes
    ----------
    channel : str
        ``"ctl"`` (OPEN and CLOSE), ``"dma"`` (window reads and writes) or ``"db"`` (the
        guest's doorbells; a stall only).
    kind : str
        One of :data:`FAULT_KINDS`.
    exchange : int
        Which exchange on the channel, counted from 0.
    beat : int
        For ``"stall"``: request beats of the packet taken before the stall.
    cycles : int or None
        For ``"stall"``: how long it lasts (None: for ever). For ``"late"``: the extra latency.
    """
    channel: str
    kind: str
    exchange: int = 0
    beat: int = 0
    cycles: int = None

    def __post_init__(self):
        if self.channel not in _CHANNELS:
            raise ValueError(f"Fault.channel must be one of {', '.join(_CHANNELS)}, "
                             f"not {self.channel!r}")
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"Fault.kind must be one of {', '.join(FAULT_KINDS)}, "
                             f"not {self.kind!r}")
        for name in ("exchange", "beat"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Fault.{name} must be a non-negative int, not {value!r}")
        if self.cycles is not None and (isinstance(self.cycles, bool) or
                                        not isinstance(self.cycles, int) or self.cycles < 0):
            raise ValueError(f"Fault.cycles must be a non-negative int or None, "
                             f"not {self.cycles!r}")
        if self.channel == "db" and self.kind != "stall":
            raise ValueError(f"a doorbell is never answered: a 'db' Fault can only be a "
                             f"'stall', not {self.kind!r}")
        if self.kind == "late" and self.cycles is None:
            raise ValueError("a 'late' Fault needs cycles: how much later the answer comes")


@dataclass(frozen=True)
class HostFaults:
    """The faults of one host: what goes wrong, exchange by exchange.

    Attributes
    ----------
    faults : tuple of Fault
        Several faults may name the same exchange (e.g. ``late`` and ``double``).
    """
    faults: tuple = field(default_factory=tuple)

    def __post_init__(self):
        faults = tuple(self.faults)
        for f in faults:
            if not isinstance(f, Fault):
                raise TypeError(f"HostFaults takes Fault records, not {type(f).__name__}")
        object.__setattr__(self, "faults", faults)

    def __bool__(self):
        return bool(self.faults)

    def of(self, channel, exchange):
        """Return ``{kind: Fault}`` for exchange number ``exchange`` on ``channel``."""
        return {f.kind: f for f in self.faults
                if f.channel == channel and f.exchange == exchange}

    def stall(self, channel, exchange, beat):
        """Return how many cycles to wait before taking request beat ``beat``, or 0."""
        f = self.of(channel, exchange).get("stall")
        if f is None or f.beat != beat:
            return 0
        return FOREVER if f.cycles is None else f.cycles
