"""The fuzzer's host: today's :class:`~vmshm.host_model.HostModel`, told per request how late to be.

The generator decides, before each guest access that will reach the host, how the host behaves
for it, and queues that decision here; the host BFM (:class:`vmshm.harness.bfm.HostBFM`) reads the
latency from the shared :class:`~vmshm.host_model.HostTiming` after calling the model, as it does
for :class:`vmshm.scenarios.LateHost`. Back-pressure comes from the timing's probabilities.

:data:`BEHAVIOURS` lists every host behaviour the fuzzer knows. Those today's RTL survives are
enabled by default; window faults are drawn through the host-fault API
(:mod:`vmshm.host_model.faults`), set per exchange. Those not drawn yet are named here
(``implemented`` false) with what they wait for.
"""

import math
from collections import deque
from dataclasses import dataclass

from vmshm.host_model import HostModel
from vmshm.host_model.faults import Fault, HostFaults

__all__ = ["Behaviour", "BEHAVIOURS", "DEFAULT_BEHAVIOURS", "FuzzHost", "ACTIVE", "fuzz_hosts"]


@dataclass(frozen=True)
class Behaviour:
    """One way the host may act, as the generator draws it.

    ``enabled`` says whether ``vmshm fuzz`` draws it by default; ``needs`` says what it waits on
    when it is not.
    """
    name: str
    doc: str
    enabled: bool
    needs: str = ""
    implemented: bool = True


BEHAVIOURS = (
    Behaviour("fast", "answer within the host timeout (latency 0..64 cycles, and random "
              "back-pressure on every host handshake)", True),
    Behaviour("late-ctl", "answer OPEN or CLOSE after host_timeout: the device says ETIMEDOUT, "
              "drains the stale answer and closes a late OPEN success again", True),
    Behaviour("late-dma", "answer a window read or write after host_timeout: the read returns "
              "all ones, the write is acknowledged; the late beats are drained", True),
    Behaviour("refuse", "refuse OPEN: missing object (ENOENT), empty object, bad or long name "
              "(EINVAL, ENAMETOOLONG), already open (EBUSY)", True),
    Behaviour("reset-idle", "reset the function while nothing is open and nothing is in "
              "flight (Amaranth backend only: the cocotb benches hold rst themselves)", True),
    Behaviour("reset-open", "reset the function while an object is open: the core's RESET "
              "makes the host release it, and the next OPEN behaves as after power-on", True),
    Behaviour("reset-in-flight", "reset while the host still holds an OPEN, CLOSE or window "
              "access (an answer owed, a name or write it stopped taking, a request not taken "
              "yet): no answer from before the reset is taken for a later request, a write cut "
              "off stores nothing, and the next OPEN or CLOSE drains the device's RESET first",
              True),
    Behaviour("flr", "a Function Level Reset (Initiate FLR in Device Control) idle, with an "
              "object open and, with reset-in-flight, while the host holds an exchange: the "
              "host hears RESET and releases the object, configuration space returns to its "
              "FLR values, the name buffer is cleared, a beat the host was offered stays on "
              "offer until taken and any answer to it is dropped", True),
    Behaviour("never-answer", "take a window read or write and never answer it: the read "
              "returns all ones, the write's data stays, TIMEOUTS counts it and DMA_ERROR is set",
              True),
    Behaviour("answer-twice", "answer a window access twice: the second answer is dropped by "
              "its tag", True),
    Behaviour("unasked", "before answering a window access, send an answer with a tag no "
              "request had: it is dropped", True),
    Behaviour("stop-mid-packet", "take part of a window write, then stop for longer than the "
              "timeout: the beats taken before stay written, the rest arrive with no byte "
              "enabled, TIMEOUTS counts it", True),
    Behaviour("never-accept", "take no window request for longer than the timeout (a host "
              "whose queue is full): the read returns all ones, the write's first beat stays "
              "and the rest arrive with no byte enabled once the host takes them again, "
              "TIMEOUTS counts it and DMA_ERROR is set. The host BFM looks up a stall of a "
              "request's first beat as soon as the exchange before ends, so the stall is drawn "
              "with that exchange and the next window access meets it if it surely comes "
              "before the stall ends, or waits it out", True),
    Behaviour("ctl-extra-answers", "answer OPEN or CLOSE twice, or send an answer with a tag no "
              "request had (OK, 1 MiB) before the real one: the extra ones are dropped by their "
              "tags", True),
    Behaviour("ctl-faults", "never answer OPEN or CLOSE (ETIMEDOUT; the next OPEN or CLOSE "
              "waits for the answer under its own timeout, says ETIMEDOUT and sends a CLOSE to "
              "be sure), stop taking OPEN's name half-way, or take an OPEN or CLOSE only long "
              "after the timeout (ETIMEDOUT; OPEN's byte on offer and a RESET, or the CLOSE, go "
              "once the host is back; drawn with the exchange before, as never-accept)", True),
)
#: Names of the behaviours drawn by default.
DEFAULT_BEHAVIOURS = tuple(b.name for b in BEHAVIOURS if b.enabled)

#: The hosts of the run in progress in this process, for the guest function to find: the backend
#: makes them (:func:`fuzz_hosts`), the guest function plans their answers.
ACTIVE = {}


def fuzz_hosts(timings):
    """Return ``(hosts, timings)``: a :class:`FuzzHost` per timing, made the run's
    :data:`ACTIVE` hosts; the hosts' factory of a fuzz job (:class:`vmshm.harness.job.Job`)."""
    hosts = [FuzzHost(t) for t in timings]
    ACTIVE.clear()
    ACTIVE["hosts"] = hosts
    return hosts, timings


class FuzzHost(HostModel):
    """A host model whose latency is chosen per request by the fuzzer.

    Parameters
    ----------
    timing : HostTiming
        Shared with the host BFM; its ``ctl_latency`` and ``dma_latency`` are set per request.

    Attributes
    ----------
    counts : dict
        How many OPEN, CLOSE, READ and WRITE requests reached the host.
    """

    def __init__(self, timing, **kwargs):
        super().__init__(timing, **kwargs)
        self._plan = {"ctl": deque(), "dma": deque()}
        self.counts = {"OPEN": 0, "CLOSE": 0, "READ": 0, "WRITE": 0, "RESET": 0}
        self._stall = None

    @property
    def dma_exchanges(self):
        """Return how many window requests the host has taken: the next one's exchange number."""
        return self.counts["READ"] + self.counts["WRITE"]

    def fault(self, kind, **kwargs):
        """Make the host's next window exchange misbehave as ``kind`` (``None``: behave).

        The shared host BFM reads ``timing.faults`` per exchange (:mod:`vmshm.host_model.faults`).
        A stall from :meth:`stall_next` stays until its request is taken: the native harness
        looks it up at its next drive point, which may come after the next access is planned.
        """
        faults = [] if kind is None else [Fault("dma", kind, exchange=self.dma_exchanges,
                                                **kwargs)]
        if self._stall is not None and self._stall.exchange >= self.dma_exchanges:
            faults.append(self._stall)
        self.timing.faults = HostFaults(faults) if faults else None

    def stall_next(self, cycles):
        """Make the host take the window request after the next one only ``cycles`` cycles after
        it is done with the next one (the host BFM looks the stall up then, before the request
        exists), keeping the next one's fault."""
        self._stall = Fault("dma", "stall", exchange=self.dma_exchanges + 1, beat=0,
                            cycles=cycles)
        self.timing.faults = HostFaults([*(self.timing.faults or HostFaults()).faults,
                                         self._stall])

    def draw_ctl_extra(self, rng, behaviours, room):
        """Draw whether the OPEN or CLOSE about to go out gets extra answers; return the
        fault's name or None. ``room``: cycles its answer may come later and stay in time."""
        if "ctl-extra-answers" not in behaviours or rng.random() >= 0.15:
            return None
        kind = rng.choice(["double", "unasked"])
        if kind == "unasked" and room < 0:
            return None
        self.add_fault(Fault("ctl", kind, exchange=self.ctl_exchange))
        return "ctl-" + kind

    @property
    def ctl_exchange(self):
        """Return the number of the next control exchange: every packet the host took, the
        device's RESETs included."""
        return self.counts["OPEN"] + self.counts["CLOSE"] + self.counts["RESET"]

    def add_fault(self, fault):
        """Add ``fault`` (a :class:`~vmshm.host_model.faults.Fault`) to the host's faults."""
        self.timing.faults = HostFaults([*(self.timing.faults or HostFaults()).faults, fault])

    def reset(self):
        self.counts["RESET"] += 1
        return super().reset()

    def cut(self, what):
        """Forget the planned latency of a window request a reset cut off: ``"WRITE"``, a write
        the host took part of (an exchange all the same), or ``"lost"``, one it never took.
        Return False if the host has used every latency planned: it took the request whole."""
        if not self._plan["dma"]:
            return False
        self._plan["dma"].popleft()
        if what == "WRITE":
            self.counts["WRITE"] += 1
        else:
            self.stall_spent()
        return True

    def stall_spent(self):
        """Forget the stall of :meth:`stall_next`: it ended before the request it was drawn for
        came, or that request was lost. Kept, it would win over a stall drawn for the next
        request (of one exchange, the last stall wins)."""
        self._stall = None

    def forget(self, channel):
        """Forget the latencies planned on ``channel`` that no request has used."""
        self._plan[channel].clear()

    def plan(self, channel, latency):
        """Queue the latency of the next request on ``channel`` (``"ctl"`` or ``"dma"``)."""
        self._plan[channel].append(latency)

    def pending(self, channel):
        """Return how many planned answers on ``channel`` no request has used yet."""
        return len(self._plan[channel])

    def _take(self, op, channel):
        self.counts[op] += 1
        plan = self._plan[channel]
        # A request the fuzzer did not plan (the device's own CLOSE after a late OPEN success)
        # is answered at once.
        latency = plan.popleft() if plan else 0
        setattr(self.timing, f"{channel}_latency", latency)

    def open(self, name):
        self._take("OPEN", "ctl")
        return super().open(name)

    def close(self):
        self._take("CLOSE", "ctl")
        return super().close()

    def dma_read(self, offset, n):
        self._take("READ", "dma")
        return super().dma_read(offset, n)

    def dma_write(self, offset, data, mask=None):
        self._take("WRITE", "dma")
        return super().dma_write(offset, data, mask)


def gate_bound(p):
    """Return cycles a handshake gated with probability ``p`` waits at worst (P < 1e-12)."""
    if p >= 1:
        return 0
    return math.ceil(math.log(1e-12) / math.log(1 - p))
