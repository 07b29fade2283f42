"""HostTimer: how long a wait on the host has lasted, for every component that waits on one.

The core's doorbell wait, the control channel and the window DMA each wait on the host and each
gives up after the same number of cycles (``host_timeout``); each has its own timer, so none of
them hangs on another's state.
"""

from amaranth.hdl import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .refuse import refuse

__all__ = ["HostTimer"]


class HostTimer(wiring.Component):
    """Count the cycles of a wait on the host and say when it has lasted ``timeout`` cycles.

    Parameters
    ----------
    timeout : int
        Cycles a wait may last; 0 waits for ever (``expired`` never rises).

    Members
    -------
    restart : ``In(1)``
        Start counting from 0 on the next edge (it wins over ``run``).
    run : ``In(1)``
        The wait goes on this cycle: count it, up to ``timeout``.
    expired : ``Out(1)``
        The wait has lasted ``timeout`` counted cycles; it stays high until ``restart``.
    """

    restart: In(1)
    run: In(1)
    expired: Out(1)

    def __init__(self, timeout):
        if not isinstance(timeout, int) or timeout < 0:
            refuse(self, f"timeout must be a non-negative integer, not {timeout!r}")
        self._timeout = timeout
        super().__init__()

    @property
    def timeout(self):
        return self._timeout

    def elaborate(self, platform):
        m = Module()
        count = Signal(range(max(self._timeout, 1) + 1))
        # `expired` is a register that always equals `count == timeout`, set on the edge the
        # count reaches it: every wait's way out then starts at a flip-flop, not at a
        # comparator.
        expired = Signal()
        m.d.comb += self.expired.eq(expired)
        if self._timeout:
            with m.If(self.run & ~expired):
                m.d.sync += [count.eq(count + 1), expired.eq(count == self._timeout - 1)]
        with m.If(self.restart):
            m.d.sync += [count.eq(0), expired.eq(0)]
        return m
