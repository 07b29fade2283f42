"""The fuzzer's host: today's :class:`~vmshm.host_model.HostModel`, told per request how late to be.

The generator decides, before each guest access that will reach the host, how the host behaves
for it, and queues that decision here; the host BFM (:class:`vmshm.bfm.HostBFM`) reads the
latency from the shared :class:`~vmshm.host_model.HostTiming` after calling the model, as it does
for :class:`vmshm.scenarios.LateHost`. Back-pressure comes from the timing's probabilities.

:data:`BEHAVIOURS` lists every host behaviour the fuzzer knows. Those today's RTL survives are
enabled by default; the others need the never-wedge fixes of issue 17 (items 1 and 2), and all but
``reset-open`` also the host-fault API the generator will draw them through: they are named here
(``implemented`` false) so they can be switched on once those land.
"""

from collections import deque
from dataclasses import dataclass

from vmshm.host_model import HostModel

__all__ = ["Behaviour", "BEHAVIOURS", "DEFAULT_BEHAVIOURS", "FuzzHost", "ACTIVE"]


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
    Behaviour("reset-open", "reset the function while an object is open: the host keeps it "
              "open and the next OPEN gets EBUSY", False,
              "issue 17 item 2 (resets reach the host)"),
    Behaviour("reset-in-flight", "reset during OPEN, CLOSE or a window access: a stale answer "
              "is taken for a later request", False, "issue 17 item 2", implemented=False),
    Behaviour("never-accept", "never take a control or DMA request", False,
              "issue 17 item 1 (timeout on host-port accept) and the host-fault API",
              implemented=False),
    Behaviour("stop-mid-packet", "take part of OPEN's name or of a DMA write, then stop", False,
              "issue 17 item 1 and the host-fault API", implemented=False),
    Behaviour("never-answer", "take a request and never answer it (the DMA port then "
              "blocks every later window access)", False, "issue 17 item 1", implemented=False),
    Behaviour("answer-twice", "answer a request twice, or answer one never asked", False,
              "issue 17 item 1 (tagged exchanges) and the host-fault API", implemented=False),
)
#: Names of the behaviours drawn by default.
DEFAULT_BEHAVIOURS = tuple(b.name for b in BEHAVIOURS if b.enabled)

#: The hosts of the run in progress in this process, for the guest function to find: the backend
#: makes them (see :class:`vmshm.fuzz.run.FuzzJob`), the guest function plans their answers.
ACTIVE = {}


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
        self.counts = {"OPEN": 0, "CLOSE": 0, "READ": 0, "WRITE": 0}

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
