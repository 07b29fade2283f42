"""The completer's passing lane: posted window writes taken from CQ while a read waits.

PCIe lets posted requests pass non-posted ones, and a root port may not pass the completion of
the read we sent the host ahead of the posted writes it has queued for us: a completer that takes
nothing from CQ while its read waits for the host fills the CQ buffer, the IP stops posted
credits, and the read's data never comes (issue 22, finding 2). So while
:class:`~.completer.USPCompleter` waits for the core's read data (``RD-STATUS``, ``CPL-DATA``)
with none on offer, it reads the next TLP's descriptor into a descriptor of its own:

- a supported memory write to the window of at most 256 DWORDs goes to the core as one write,
  offered only while the core's ``post_ok`` says it passes the waiting read (the core then takes
  it whole, and acknowledges it before the read's next beat, which the completer swallows);
- a posted request the completer would not serve anyway (a message, a write to no BAR) is
  dropped, as ``DECODE`` would;
- anything else (a non-posted request, a write to the registers or the name buffer) is *held*:
  ``HDR`` takes it from the lane once the read is over, in the order it came.

A write whose first beat finds ``post_ok`` low while a read beat is on offer is held too and
offered again when no read beat is (it has not been offered to the core in between). Registers
and name-buffer writes do not pass a read: a stream of them behind a waiting window read still
fills the CQ buffer.
"""

from amaranth.hdl import *

from vmshm.abi.regmap import BAR_WINDOW
from .descriptors import CQ_DESCRIPTOR, CQ_FIRST_BE, CQ_LAST_BE

__all__ = ["PassingLane"]


class PassingLane:
    """The registers and states of the completer's passing lane (see the module's docstring).

    Parameters
    ----------
    decoder : RequestDecoder
        A decoder of the completer's own, for the lane's descriptor.
    addr_width : int
    """

    def __init__(self, decoder, addr_width):
        self.dec = decoder
        self.desc = Signal(CQ_DESCRIPTOR)
        self.first_be = Signal(4)
        self.last_be = Signal(4)
        self.hdr_last = Signal()
        self.idx = Signal(2)
        self.held = Signal()            # the descriptor waits for the read to end
        self.passable = Signal()        # ... and is a window write that may still pass it
        self.committed = Signal()       # the core took the write's header: it takes the rest
        self.tot_rem = Signal(11)
        self.core_off = Signal(addr_width)
        self.first_dw = Signal()
        self.to_read_data = Signal()    # the read waits in CPL-DATA (else RD-STATUS)

    def wire(self, m, memory_enable):
        """Drive the lane's decoder; return whether its descriptor is a window write that
        may pass a read."""
        dec = self.dec
        m.d.comb += [dec.desc.eq(self.desc), dec.be.first.eq(self.first_be),
                     dec.be.last.eq(self.last_be), dec.hdr_last.eq(self.hdr_last),
                     dec.memory_enable.eq(memory_enable)]
        passes = Signal()
        m.d.comb += passes.eq(dec.supported & dec.is_write & (dec.bar == BAR_WINDOW) &
                              (self.desc.dword_count <= 256))
        return passes

    def enter(self, m, *, cq, read_beat, in_read_data):
        """In a state where the read waits: go into the lane when there is something for it.
        Return the condition (the caller's state adds nothing else in that case)."""
        go = ~read_beat & ((self.held & self.passable) | (~self.held & cq.valid))
        with m.If(go):
            m.d.sync += [self.to_read_data.eq(in_read_data), self.idx.eq(0)]
            with m.If(self.held):
                m.next = "P-WRITE"
            with m.Else():
                m.next = "P-HDR"
        return go

    def take_held(self, m, t):
        """In ``HDR``: hand a held descriptor to the completer; return whether there was one."""
        with m.If(self.held):
            m.d.sync += [t.desc.eq(self.desc), t.first_be.eq(self.first_be),
                         t.last_be.eq(self.last_be), t.hdr_last.eq(self.hdr_last),
                         t.hdr_idx.eq(0), self.held.eq(0), self.passable.eq(0)]
            m.next = "DECODE"
        return self.held

    def states(self, m, t, *, cq, req, post_ok, read_beat, passes):
        """The lane's states: its descriptor, then the write, a drain, or back to the read."""
        dec = self.dec

        def back():
            with m.If(self.to_read_data):
                m.next = "CPL-DATA"
            with m.Else():
                m.next = "RD-STATUS"

        with m.State("P-HDR"):
            m.d.comb += cq.ready.eq(1)
            with m.If(cq.valid):
                m.d.sync += self.desc.as_value().word_select(self.idx, 32).eq(cq.payload.data)
                with m.If(self.idx == 0):
                    m.d.sync += [self.first_be.eq(cq.payload.user[CQ_FIRST_BE]),
                                 self.last_be.eq(cq.payload.user[CQ_LAST_BE])]
                m.d.sync += self.idx.eq(self.idx + 1)
                with m.If(self.idx == 3):
                    m.d.sync += [self.idx.eq(0), self.hdr_last.eq(cq.payload.last)]
                    m.next = "P-DECIDE"
                with m.Elif(cq.payload.last):
                    back()          # shorter than a descriptor: nothing to answer, as HDR

        with m.State("P-DECIDE"):
            dwc = self.desc.dword_count
            m.d.sync += [self.tot_rem.eq(dwc), self.core_off.eq(dec.offset),
                         self.first_dw.eq(1), self.committed.eq(0)]
            with m.If(passes):
                m.next = "P-WRITE"
            with m.Elif(~dec.supported & dec.posted & ~self.hdr_last):
                m.next = "P-DRAIN"
            with m.Elif(~dec.supported & dec.posted):
                back()
            with m.Else():
                m.d.sync += [self.held.eq(1), self.passable.eq(0)]
                back()

        with m.State("P-WRITE"):
            offer = self.committed | post_ok
            be = Mux(self.first_dw, self.first_be, Mux(self.tot_rem == 1, self.last_be, 0xF))
            m.d.comb += [
                req.valid.eq(cq.valid & offer),
                req.payload.bar.eq(dec.bar),
                req.payload.addr.eq(self.core_off),
                req.payload.write.eq(1),
                req.payload.count.eq(self.desc.dword_count - 1),
                req.payload.data.eq(cq.payload.data),
                req.payload.be.eq(be),
                cq.ready.eq(req.ready & offer),
            ]
            with m.If(cq.valid & post_ok):
                m.d.sync += [self.committed.eq(1), self.held.eq(0), self.passable.eq(0)]
            with m.If(cq.valid & req.ready & offer):
                m.d.sync += [self.first_dw.eq(0), self.tot_rem.eq(self.tot_rem - 1)]
                with m.If(self.tot_rem == 1):
                    m.d.comb += t.ack_made.eq(1)
                    m.d.sync += self.committed.eq(0)
                    back()
            with m.Elif(~offer & read_beat):
                # Not offered yet, and the read has a beat for us: it goes first.
                m.d.sync += [self.held.eq(1), self.passable.eq(1)]
                back()

        with m.State("P-DRAIN"):
            m.d.comb += cq.ready.eq(1)
            with m.If(cq.valid & cq.payload.last):
                back()
