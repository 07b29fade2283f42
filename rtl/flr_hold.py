"""FlrHold: keep a host-facing stream's beat on offer through a Function Level Reset.

A front end resets the core with an FLR (``ResetInserter``), as ``rst`` would. A reset of the
whole device resets the host's side of the link too, but an FLR does not: the host port goes on
sampling the stream, and a beat it was offered must stay on offer, unchanged, until it takes it
(the stream rule every host port relies on). :class:`FlrHold` sits between the core's source and
the host, outside the FLR's reset: on the FLR's edge it keeps the beat on offer that the host did
not take, offers it until taken, and only then passes the core's beats again. The core, reset,
forgets the beat and the rest of its packet (owed beats not yet offered are dropped); on
``ctl_req`` the core's first beat out of reset is the RESET, which tells the host to forget the
rest of a packet it began taking and to release the object. ``wait`` lets a front end hold that
RESET back until the DMA beat kept on ``dma_req`` has gone, so the host takes the beat as part
of the packet it belongs to, before it hears of the reset.
"""

from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FlrHold"]


class FlrHold(wiring.Component):
    """Keep the beat on offer on a stream to the host through a Function Level Reset.

    Parameters
    ----------
    layout : amaranth.lib.data.Layout
        The stream's payload.

    Members
    -------
    i : ``In(stream.Signature(layout))``
        The core's stream (reset by the FLR).
    o : ``Out(stream.Signature(layout))``
        The host's (this component is not reset by the FLR).
    flr : ``In(1)``
        The core is reset on this cycle's edge.
    wait : ``In(1)``
        Offer no beat of ``i`` now (a beat kept is still offered); only raised from an FLR's
        edge on, so no beat of ``i`` on offer to the host is ever taken back by it.
    busy : ``Out(1)``
        A beat from before an FLR is on offer.
    """

    def __init__(self, layout):
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(layout)),
            "flr": In(1),
            "wait": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        beat = Signal.like(o.payload)
        with m.If(self.busy):
            m.d.comb += [o.valid.eq(1), o.payload.eq(beat)]
            with m.If(o.ready):
                m.d.sync += self.busy.eq(0)
        with m.Else():
            m.d.comb += [o.valid.eq(i.valid & ~self.wait), o.payload.eq(i.payload),
                         i.ready.eq(o.ready & ~self.wait)]
        # The beat on offer that the host does not take on the FLR's edge is kept (a kept one
        # stays kept).
        with m.If(self.flr & o.valid & ~o.ready):
            m.d.sync += [self.busy.eq(1), beat.eq(o.payload)]
        return m
