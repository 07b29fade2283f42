"""The completer side of the UltraScale+ shim: requests to the device on CQ, completions on CC.

:class:`CqBuffer` takes whole TLPs from the hard IP and drops the discontinued ones whole;
:class:`USPCompleter` turns the memory requests among them into the core's guest requests and
the core's completions into CC completions. Inside the completer, :class:`RequestDecoder` says
what a request asks for (core BAR and offset, whether it is supported, the byte count and lower
address of its completions) and :class:`NpCredits` grants the hard IP its non-posted credits.
"""

from amaranth.hdl import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..layouts import CplStatus, cpl_layout, guest_req_layout
from .passing import PassingLane
from .descriptors import (CC_DESCRIPTOR, CQ_DESCRIPTOR, CQ_DISCONTINUE, CQ_FIRST_BE, CQ_LAST_BE,
                          CQ_USER_WIDTH, POSTED_TYPES, ReqType)
from .streams import PacketFifo, dw_in_layout, dw_out_layout
from .tlp import leading_zeros, size_mask, to_boundary, trailing_zeros

__all__ = ["CQ_BE_WIDTH", "CQ_BUFFER_DWORDS", "CqBuffer", "RequestDecoder", "NpCredits",
           "USPCompleter"]

#: The CQ ``tuser`` bits the completer keeps: first and last byte enables.
CQ_BE_WIDTH = 8
#: DWORDs the CQ buffer holds: a write of Max_Payload_Size and its descriptor with room to spare,
#: so posted writes keep flowing while a window read waits for the host.
CQ_BUFFER_DWORDS = 512

#: Completion status Completer Abort (PCIe; the core's own statuses are SC and UR).
CplStatus_CA = 0b100


class CqBuffer(wiring.Component):
    """Take whole CQ TLPs as fast as the hard IP gives them; drop the discontinued ones whole.

    PG213 marks a TLP discontinued on its last beat and asks the user logic to discard all of
    it: nothing of a TLP reaches the completer before its last DWORD is in. While the
    completer waits on a window read, its passing lane (:mod:`.passing`) keeps taking what comes
    behind the read. Only the byte enables of ``tuser`` are kept.

    Members
    -------
    i : ``In(stream.Signature(dw_in_layout(CQ_USER_WIDTH)))``
    o : ``Out(stream.Signature(dw_in_layout(CQ_BE_WIDTH)))``
    np_dropped : ``Out(1)``
        A non-posted TLP was dropped: the credit it used is spent.

    Parameters
    ----------
    dwords : int
        DWORDs it holds, a power of two (:data:`CQ_BUFFER_DWORDS`; the formal harness uses a
        few, so its induction closes).
    """

    def __init__(self, dwords=CQ_BUFFER_DWORDS):
        self._dwords = dwords
        super().__init__({
            "i": In(stream.Signature(dw_in_layout(CQ_USER_WIDTH))),
            "o": Out(stream.Signature(dw_in_layout(CQ_BE_WIDTH))),
            "np_dropped": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        layout = dw_in_layout(CQ_BE_WIDTH)
        m.submodules.fifo = fifo = PacketFifo(layout.size, self._dwords)
        i = self.i.payload
        cut = Signal()              # an earlier beat of this TLP was marked discontinued
        drop = cut | i.user[CQ_DISCONTINUE]
        # After a reset (FLR) in the middle of a TLP, its rest is swallowed: a packet starts at
        # a first DWORD.
        synced = Signal()
        take = Signal()
        m.d.comb += take.eq(synced | i.first)
        entry = Signal(layout)
        m.d.comb += [
            entry.data.eq(i.data), entry.first.eq(i.first), entry.last.eq(i.last),
            entry.user.eq(i.user[:CQ_BE_WIDTH]),
            fifo.w.payload.data.eq(entry),
            fifo.w.payload.last.eq(i.last),
            fifo.w.payload.drop.eq(drop),
            fifo.w.valid.eq(self.i.valid & take),
            self.i.ready.eq(fifo.w.ready | ~take),
            self.o.valid.eq(fifo.r.valid),
            self.o.payload.eq(fifo.r.payload),
            fifo.r.ready.eq(self.o.ready),
        ]
        idx = Signal(2)             # DWORD of the descriptor at hand
        req_type = Signal(4)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += synced.eq(take & ~i.last)
        with m.If(self.i.valid & self.i.ready & take):
            m.d.sync += cut.eq(drop & ~i.last)
            m.d.sync += idx.eq(Mux(i.last, 0, Mux(idx == 3, 3, Mux(i.first, 1, idx + 1))))
            with m.If(idx == 2):
                m.d.sync += req_type.eq(i.data[11:15])
            with m.If(i.last & drop):
                # The hard IP spent a non-posted credit on it: the completer must know.
                typ = Mux(idx == 2, i.data[11:15], req_type)
                m.d.comb += self.np_dropped.eq(~typ.matches(*POSTED_TYPES) & (idx >= 2))
        return m


class RequestDecoder(wiring.Component):
    """Decode the CQ descriptor at hand: what it asks of which core BAR, whether it is
    supported, and the byte count and lower address its completions start from.

    Combinational. A memory request is supported when its BAR id is in the BAR map, its aperture
    is the BAR's, it stays inside the BAR, Memory Space is enabled, its length is not 0, and a
    read comes without payload and a write with. Byte count and lower address are those of a
    memory read's first completion (PCIe Base 2.3.1.1); a zero-length read's byte count is 1.

    Parameters
    ----------
    bars, addr_width
        As for :class:`USPCompleter`.

    Members
    -------
    desc : ``In(CQ_DESCRIPTOR)``
    be : ``In(StructLayout({"first": 4, "last": 4}))``
        The first and last DWORD byte enables from CQ ``tuser``.
    hdr_last : ``In(1)``
        The descriptor was the whole packet: no payload.
    memory_enable : ``In(1)``
        Memory Space Enable.
    bar : ``Out(3)``, offset : ``Out(addr_width)``
        The core BAR and the offset in it.
    is_read, is_write, posted, zero_len, supported : ``Out(1)``
        A memory read, a memory write, a request that takes no completion, a zero-length read
        (a flush), a request the core serves.
    byte_count : ``Out(13)``, lower_address : ``Out(7)``
    """

    def __init__(self, bars, addr_width):
        self._bars = tuple(bars)
        super().__init__({
            "desc":          In(CQ_DESCRIPTOR),
            "be":            In(data.StructLayout({"first": 4, "last": 4})),
            "hdr_last":      In(1),
            "memory_enable": In(1),
            "bar":           Out(3),
            "offset":        Out(addr_width),
            "is_read":       Out(1),
            "is_write":      Out(1),
            "posted":        Out(1),
            "zero_len":      Out(1),
            "supported":     Out(1),
            "byte_count":    Out(13),
            "lower_address": Out(7),
        })

    def elaborate(self, platform):
        m = Module()
        desc, first_be, last_be = self.desc, self.be.first, self.be.last
        address = Cat(C(0, 2), desc.address)
        dwc = desc.dword_count
        req_type = desc.request_type

        # BAR map: hard-IP BAR index to core BAR, checked against aperture and size.
        bar_ok = Signal()
        for b in self._bars:
            bits = exact_log2(b.size)
            dw_end = Signal(bits + 12, name=f"bar{b.index}_dw_end")
            m.d.comb += dw_end.eq(address[2:bits] + dwc)
            with m.If(desc.bar_id == b.index):
                m.d.comb += [
                    # An aperture unlike ours means the IP was configured unlike this top: refuse
                    # rather than alias.
                    bar_ok.eq((desc.bar_aperture == bits) & (dw_end <= (b.size >> 2))),
                    self.bar.eq(b.function),
                    self.offset.eq(address[:bits]),
                ]

        is_read, is_write = self.is_read, self.is_write
        m.d.comb += [
            is_read.eq(req_type == ReqType.MEM_READ),
            is_write.eq(req_type == ReqType.MEM_WRITE),
            # A zero-length read is a flush: nothing to read, only ordering to keep.
            self.zero_len.eq(is_read & (dwc == 1) & (first_be == 0)),
            self.posted.eq(req_type.matches(*POSTED_TYPES)),
            self.supported.eq(bar_ok & self.memory_enable & (dwc != 0) &
                              ((is_read & self.hdr_last) | (is_write & ~self.hdr_last))),
        ]

        # Byte count and lower address of a memory read (PCIe base spec, 2.3.1.1).
        with m.If(dwc == 1):
            m.d.comb += self.byte_count.eq(
                Mux(first_be == 0, 1, 4 - trailing_zeros(first_be) - leading_zeros(first_be)))
        with m.Else():
            m.d.comb += self.byte_count.eq((dwc << 2) - trailing_zeros(first_be) -
                                           leading_zeros(last_be))
        m.d.comb += self.lower_address.eq(Cat(C(0, 2), desc.address[:5]) +
                                          Mux(first_be == 0, 0, trailing_zeros(first_be)))
        return m


class NpCredits(wiring.Component):
    """Grant the hard IP non-posted credits one at a time, and only while it has none banked.

    At most one non-posted request then waits in the CQ stream, while posted writes keep
    flowing past the completer waiting on a read.

    Members
    -------
    count : ``In(6)``
        ``pcie_cq_np_req_count``: credits the hard IP holds.
    used : ``In(1)``
        A non-posted request was taken from CQ.
    dropped : ``In(1)``
        A non-posted request was dropped before it got to the completer: its credit is spent.
    req : ``Out(2)``
        ``pcie_cq_np_req``.
    """

    count: In(6)
    used: In(1)
    dropped: In(1)
    req: Out(2)

    def elaborate(self, platform):
        m = Module()
        np_granted = Signal(2)      # credits given to the IP and not yet used
        np_pulse = Signal()
        want = (np_granted == 0) & (self.count == 0) & ~np_pulse
        m.d.sync += np_pulse.eq(want)
        m.d.comb += self.req.eq(Cat(np_pulse, C(0, 1)))
        # A request the IP had a credit for from before our reset saturates at 0 here.
        spent = Signal(2)
        m.d.comb += spent.eq(self.used + self.dropped)
        m.d.sync += np_granted.eq(Mux(np_granted > spent, np_granted - spent, 0) + want)
        return m


class _TlpAtHand:
    """The completer's registers for the TLP at hand: its descriptor and how far it has got,
    and the fields of the completion being sent."""

    def __init__(self, addr_width):
        self.desc = Signal(CQ_DESCRIPTOR)
        self.first_be = Signal(4)
        self.last_be = Signal(4)
        self.hdr_last = Signal()            # the descriptor was the whole packet: no payload
        self.hdr_idx = Signal(2)

        self.tot_rem = Signal(11)           # DWORDs of the TLP not yet moved
        self.chunk_len = Signal(9)          # DWORDs of the current core request
        self.chunk_rem = Signal(9)          # of those, not yet moved
        self.core_off = Signal(addr_width)  # BAR offset of the next core request
        self.first_dw = Signal()            # the next write DWORD is the TLP's first
        self.first_chunk = Signal()
        self.first_cpl = Signal()
        self.resume_data = Signal()         # a new core request was made amid a completion
        self.pa_lo = Signal(12)             # low address bits of the next DWORD to complete
        self.bc_rem = Signal(13)            # byte count still to complete
        self.cpl_rem = Signal(9)            # DWORDs left in the completion being sent
        self.desc_idx = Signal(2)
        self.ur_after_drain = Signal()
        self.acks = Signal(4)               # core write acknowledgements still to swallow
        self.to_mps = Signal(11)
        self.cpl_len = Signal(11)           # DWORDs of the next completion

        self.swallow = Signal()             # the core's next beat is a write acknowledgement
        self.ack_taken = Signal()
        self.ack_made = Signal()

        self.cc_status = Signal(3)          # fields of the completion descriptor being sent
        self.cc_dwc = Signal(11)
        self.cc_bc = Signal(13)
        self.cc_la = Signal(7)
        self.tlp_bc = Signal(13)            # byte count and lower address of the completion
        self.tlp_la = Signal(7)             # ... at hand
        self.cc_desc = Signal(CC_DESCRIPTOR)


class USPCompleter(wiring.Component):
    """Serve the hard IP's completer requests (CQ) with the core and complete them (CC).

    Memory reads and writes whose BAR id the BAR map knows, whose aperture matches it and which
    stay inside it become core requests of at most 256 DWORDs each; a longer TLP becomes several.
    Writes are posted: the core's acknowledgement is swallowed here. While a read waits for the
    core's data, window writes behind it pass it (:mod:`.passing`; issue 22, finding 2). A read's completions follow
    the core's data and are split at Max_Payload_Size boundaries (which are also Read Completion
    Boundaries), with the lower address and remaining byte count the specification asks for.
    A DWORD the host failed to give (the core's ``cpl_error``) ends the read with a Completer
    Abort: the completion it would have been part of is dropped before it leaves (CC holds whole
    TLPs), the ones already sent were whole and good.
    Everything else that needs a completion (I/O, atomics, locked reads, configuration requests
    that reach the user, unknown BARs or apertures, requests running off their BAR, anything
    while Memory Space Enable is off, malformed requests) gets an Unsupported Request
    completion; posted requests that are not supported (messages, writes to unknown BARs) are
    dropped. (TLPs the hard IP marks discontinued never get here: :class:`CqBuffer` drops them
    whole.) A
    zero-length read (a flush) is answered here, once every earlier write has been handed on.

    Non-posted requests are flow-controlled with ``pcie_cq_np_req``: one credit is granted at a
    time, and only while the hard IP's ``pcie_cq_np_req_count`` shows none banked, so at most
    one non-posted request waits in the CQ stream while posted writes keep flowing.

    Parameters
    ----------
    bars : sequence of BarDef
        The BAR map: hard-IP BAR index to core BAR number, size.
    addr_width : int
        Width of the core's request address.

    Members
    -------
    cq : ``In(stream.Signature(...))``
        CQ, one DWORD a beat (from :class:`AxisToDwords`).
    cc : ``Out(stream.Signature(...))``
        CC, one DWORD a beat (to :class:`DwordsToAxis`).
    req : ``Out(stream.Signature(guest_req_layout(addr_width, 32)))``
    cpl : ``In(stream.Signature(cpl_layout(32)))``
    max_payload : ``In(2)``
        ``cfg_max_payload``: 128 << value bytes.
    np_req : ``Out(2)``
        ``pcie_cq_np_req``.
    np_req_count : ``In(6)``
        ``pcie_cq_np_req_count``.
    np_dropped : ``In(1)``
        A non-posted TLP was dropped before it got here (:class:`CqBuffer`): its credit is spent.
    cpl_error : ``In(1)``
        The core's ``cpl_error``: the beat on ``cpl`` stands for data the host failed to give.
    cc_clear : ``Out(1)``
        Forget the completion being gathered on CC (:class:`DwordsToAxis` ``clear``): it is
        replaced by a Completer Abort.
    memory_enable : ``In(1)``
        Memory Space Enable: without it every memory request is unsupported, whether or not the
        hard IP filtered it already.
    post_ok : ``In(1)``
        The core's ``post_ok``: a window write offered now passes the window read that waits
        (:mod:`.passing`, issue 22, finding 2).
    """

    def __init__(self, bars, addr_width):
        self._bars = tuple(bars)
        super().__init__({
            "cq":           In(stream.Signature(dw_in_layout(CQ_BE_WIDTH))),
            "cc":           Out(stream.Signature(dw_out_layout(0))),
            "req":          Out(stream.Signature(guest_req_layout(addr_width, 32))),
            "cpl":          In(stream.Signature(cpl_layout(32))),
            "max_payload":  In(2),
            "np_req":       Out(2),
            "np_req_count": In(6),
            "np_dropped":   In(1),
            "memory_enable": In(1),
            "cpl_error":    In(1),
            "cc_clear":     Out(1),
            "post_ok":      In(1),
        })

    def elaborate(self, platform):
        m = Module()
        addr_width = len(self.req.payload.addr)
        t = _TlpAtHand(addr_width)

        m.submodules.decode = dec = RequestDecoder(self._bars, addr_width)
        m.d.comb += [
            dec.desc.eq(t.desc),
            dec.be.first.eq(t.first_be),
            dec.be.last.eq(t.last_be),
            dec.hdr_last.eq(t.hdr_last),
            dec.memory_enable.eq(self.memory_enable),
        ]

        # A completion ends at the next Max_Payload_Size boundary (also a Read Completion
        # Boundary) or with the request.
        mps_mask = size_mask(m, self.max_payload, (128, 256, 512, 1024), "mps_mask")
        m.d.comb += [
            t.to_mps.eq(to_boundary(t.pa_lo, mps_mask)),
            t.cpl_len.eq(Mux(t.tot_rem < t.to_mps, t.tot_rem, t.to_mps)),
        ]

        # The core completes in order: the first `acks` beats are acknowledgements of writes.
        cpl = self.cpl
        m.d.comb += t.swallow.eq(t.acks != 0)
        with m.If(t.swallow):
            m.d.comb += [cpl.ready.eq(1), t.ack_taken.eq(cpl.valid)]
        m.d.sync += t.acks.eq(t.acks + t.ack_made - t.ack_taken)

        m.submodules.credits = credits = NpCredits()
        m.d.comb += [
            credits.count.eq(self.np_req_count),
            credits.dropped.eq(self.np_dropped),
            self.np_req.eq(credits.req),
        ]

        # Posted window writes taken from CQ while a read waits (issue 22, finding 2).
        m.submodules.lane_decode = lane_dec = RequestDecoder(self._bars, addr_width)
        lane = PassingLane(lane_dec, addr_width)
        passes = lane.wire(m, self.memory_enable)
        read_beat = cpl.valid & ~t.swallow

        self._completion_descriptor(m, t)
        with m.FSM(name="fsm"):
            self._receive(m, t, dec, credits, lane)
            self._write(m, t, dec)
            self._read(m, t, dec, lane, read_beat)
            self._answer(m, t, dec)
            lane.states(m, t, cq=self.cq, req=self.req, post_ok=self.post_ok,
                        read_beat=read_beat, passes=passes)
        return m

    def _completion_descriptor(self, m, t):
        desc = t.desc
        m.d.comb += [
            t.cc_desc.lower_address.eq(t.cc_la),
            t.cc_desc.byte_count.eq(t.cc_bc),
            t.cc_desc.locked_read_completion.eq(desc.request_type == ReqType.MEM_READ_LOCKED),
            t.cc_desc.dword_count.eq(t.cc_dwc),
            t.cc_desc.completion_status.eq(t.cc_status),
            t.cc_desc.requester_id.eq(desc.requester_id),
            t.cc_desc.tag.eq(desc.tag),
            # Completer ID: the function from the request; the IP fills in the bus number.
            t.cc_desc.completer_id.eq(desc.target_function),
            t.cc_desc.transaction_class.eq(desc.transaction_class),
            t.cc_desc.attributes.eq(desc.attributes),
        ]

    def _send_desc(self, m, t, last):
        """Offer the completion descriptor's DWORDs on CC; return whether its last one went."""
        cc = self.cc
        m.d.comb += [cc.valid.eq(1),
                     cc.payload.data.eq(t.cc_desc.as_value().word_select(t.desc_idx, 32)),
                     cc.payload.last.eq(last & (t.desc_idx == 2))]
        done = Signal()
        m.d.comb += done.eq(cc.ready & (t.desc_idx == 2))
        with m.If(cc.ready):
            m.d.sync += t.desc_idx.eq(Mux(t.desc_idx == 2, 0, t.desc_idx + 1))
        return done

    def _receive(self, m, t, dec, credits, lane):
        """The states that take a TLP's descriptor from CQ (or the one the passing lane held)
        and decide what to do with it."""
        cq = self.cq
        dwc = t.desc.dword_count
        with m.State("HDR"):
            m.d.comb += cq.ready.eq(~lane.held)
            with m.If(lane.take_held(m, t)):
                pass
            with m.Elif(cq.valid):
                idx = Mux(cq.payload.first, 0, t.hdr_idx)
                m.d.sync += t.desc.as_value().word_select(idx, 32).eq(cq.payload.data)
                with m.If(cq.payload.first):
                    m.d.sync += [
                        t.first_be.eq(cq.payload.user[CQ_FIRST_BE]),
                        t.last_be.eq(cq.payload.user[CQ_LAST_BE]),
                    ]
                m.d.sync += t.hdr_idx.eq(idx + 1)
                with m.If(idx == 3):
                    m.d.sync += [t.hdr_idx.eq(0), t.hdr_last.eq(cq.payload.last)]
                    m.next = "DECODE"
                with m.Elif(cq.payload.last):
                    # A packet shorter than a descriptor: nothing to answer it with.
                    m.d.sync += t.hdr_idx.eq(0)

        with m.State("DECODE"):
            m.d.comb += credits.used.eq(~dec.posted)
            m.d.sync += [
                t.tot_rem.eq(dwc), t.core_off.eq(dec.offset), t.first_dw.eq(1),
                t.first_chunk.eq(1), t.first_cpl.eq(1), t.resume_data.eq(0),
                t.pa_lo.eq(Cat(C(0, 2), t.desc.address[:10])), t.bc_rem.eq(dec.byte_count),
                t.chunk_len.eq(Mux(dwc > 256, 256, dwc)),
                t.chunk_rem.eq(Mux(dwc > 256, 256, dwc)),
                t.ur_after_drain.eq(~dec.posted),
            ]
            with m.If(dec.supported & dec.is_write):
                m.next = "WRITE"
            with m.Elif(dec.supported & dec.zero_len):
                m.next = "ZLR-DESC"
            with m.Elif(dec.supported & dec.is_read):
                m.next = "RD-REQ"
            with m.Elif(~t.hdr_last):
                m.next = "DRAIN"
            with m.Elif(~dec.posted):
                m.next = "UR-DESC"
            with m.Else():
                m.next = "HDR"

    def _write(self, m, t, dec):
        """The states of posted writes: payload DWORDs straight into core write requests, and
        the payload of a TLP that is not served drained."""
        cq, req = self.cq, self.req
        with m.State("WRITE"):
            be = Mux(t.first_dw, t.first_be, Mux(t.tot_rem == 1, t.last_be, 0xF))
            m.d.comb += [
                req.valid.eq(cq.valid),
                req.payload.bar.eq(dec.bar),
                req.payload.addr.eq(t.core_off),
                req.payload.write.eq(1),
                req.payload.count.eq(t.chunk_len - 1),
                req.payload.data.eq(cq.payload.data),
                req.payload.be.eq(be),
                cq.ready.eq(req.ready),
            ]
            with m.If(cq.valid & req.ready):
                m.d.sync += [t.first_dw.eq(0), t.tot_rem.eq(t.tot_rem - 1),
                             t.chunk_rem.eq(t.chunk_rem - 1)]
                with m.If(t.chunk_rem == 1):
                    m.d.comb += t.ack_made.eq(1)
                    m.d.sync += [
                        t.core_off.eq(t.core_off + (t.chunk_len << 2)),
                        t.chunk_len.eq(Mux(t.tot_rem - 1 > 256, 256, t.tot_rem - 1)),
                        t.chunk_rem.eq(Mux(t.tot_rem - 1 > 256, 256, t.tot_rem - 1)),
                    ]
                with m.If(t.tot_rem == 1):
                    m.next = "HDR"

        with m.State("DRAIN"):
            m.d.comb += cq.ready.eq(1)
            with m.If(cq.valid & cq.payload.last):
                with m.If(t.ur_after_drain):
                    m.next = "UR-DESC"
                with m.Else():
                    m.next = "HDR"

    def _read(self, m, t, dec, lane, read_beat):
        """The states of memory reads: core requests, then completions of at most
        Max_Payload_Size, or a Completer Abort where the host failed a DWORD. While the core
        has no beat of the read on offer, the passing lane may take what waits in CQ."""
        cc, req, cpl, cpl_error = self.cc, self.req, self.cpl, self.cpl_error
        la_first = dec.lower_address
        with m.State("RD-REQ"):
            m.d.comb += [
                req.valid.eq(1),
                req.payload.bar.eq(dec.bar),
                req.payload.addr.eq(t.core_off),
                req.payload.write.eq(0),
                req.payload.count.eq(t.chunk_len - 1),
                # The first request carries the TLP's first byte enables: a read-to-trigger
                # register must see which bytes the guest touched.
                req.payload.be.eq(Mux(t.first_chunk, t.first_be, 0xF)),
            ]
            with m.If(req.ready):
                m.d.sync += [t.chunk_rem.eq(t.chunk_len),
                             t.core_off.eq(t.core_off + (t.chunk_len << 2)),
                             t.first_chunk.eq(0)]
                with m.If(t.first_chunk):
                    m.next = "RD-STATUS"
                with m.Elif(t.resume_data):
                    m.next = "CPL-DATA"
                with m.Else():
                    m.next = "CPL-DESC"

        with m.State("RD-STATUS"):
            lane.enter(m, cq=self.cq, read_beat=read_beat, in_read_data=0)
            # The descriptor goes out before the data: look at the first beat's status first.
            with m.If(~t.swallow & cpl.valid):
                with m.If(cpl.payload.status == CplStatus.UR):
                    m.next = "UR-DESC"
                with m.Elif(cpl_error):
                    m.d.sync += [t.bc_rem.eq(dec.byte_count), t.pa_lo.eq(la_first),
                                 t.first_cpl.eq(0)]
                    m.next = "CA-DESC"
                with m.Else():
                    m.next = "CPL-DESC"

        with m.State("CA-DESC"):
            # Completer Abort (PCIe 2.3.1): no data, the byte count and lower address of
            # the bytes it stands for; the core's beats still owed are drained after it.
            m.d.comb += [t.cc_status.eq(CplStatus_CA), t.cc_dwc.eq(0), t.cc_bc.eq(t.bc_rem),
                         t.cc_la.eq(t.pa_lo[:7])]
            with m.If(self._send_desc(m, t, last=True)):
                with m.If(t.chunk_rem == 0):
                    m.next = "HDR"
                with m.Else():
                    m.next = "RD-DRAIN"

        with m.State("CPL-DESC"):
            m.d.comb += [
                t.cc_status.eq(0), t.cc_dwc.eq(t.cpl_len), t.cc_bc.eq(t.bc_rem),
                t.cc_la.eq(Mux(t.first_cpl, la_first, t.pa_lo[:7])),
            ]
            with m.If(self._send_desc(m, t, last=False)):
                m.d.sync += [t.tlp_bc.eq(t.cc_bc), t.tlp_la.eq(t.cc_la)]
                sent = (t.cpl_len << 2) - Mux(t.first_cpl, la_first[:2], 0)
                m.d.sync += [t.cpl_rem.eq(t.cpl_len), t.bc_rem.eq(t.bc_rem - sent),
                             t.first_cpl.eq(0)]
                m.next = "CPL-DATA"

        with m.State("CPL-DATA"):
            lane.enter(m, cq=self.cq, read_beat=read_beat, in_read_data=1)
            with m.If(~t.swallow & cpl_error):
                # The host failed this DWORD: the completion gathered so far never leaves
                # (CC holds whole TLPs), and a Completer Abort ends the request instead.
                # The completions already sent were whole and good.
                m.d.comb += [cpl.ready.eq(cpl.valid), self.cc_clear.eq(cpl.valid)]
                with m.If(cpl.valid):
                    m.d.sync += [t.chunk_rem.eq(t.chunk_rem - 1), t.bc_rem.eq(t.tlp_bc),
                                 t.pa_lo.eq(t.tlp_la), t.first_cpl.eq(0)]
                    m.next = "CA-DESC"
            with m.Elif(~t.swallow):
                m.d.comb += [
                    cc.valid.eq(cpl.valid),
                    cc.payload.data.eq(cpl.payload.data),
                    cc.payload.last.eq(t.cpl_rem == 1),
                    cpl.ready.eq(cc.ready),
                ]
            with m.If(~t.swallow & ~cpl_error & cpl.valid & cc.ready):
                m.d.sync += [t.tot_rem.eq(t.tot_rem - 1), t.chunk_rem.eq(t.chunk_rem - 1),
                             t.cpl_rem.eq(t.cpl_rem - 1), t.pa_lo.eq(t.pa_lo + 4)]
                with m.If(t.tot_rem == 1):
                    m.next = "HDR"
                with m.Elif(t.chunk_rem == 1):
                    m.d.sync += [t.resume_data.eq(t.cpl_rem != 1),
                                 t.chunk_len.eq(Mux(t.tot_rem - 1 > 256, 256, t.tot_rem - 1))]
                    m.next = "RD-REQ"
                with m.Elif(t.cpl_rem == 1):
                    m.next = "CPL-DESC"

    def _answer(self, m, t, dec):
        """The states that answer without the core's data: a zero-length read, once every
        earlier write is out; an Unsupported Request; the core's beats of a refused read."""
        cc, cpl = self.cc, self.cpl
        with m.State("ZLR-DESC"):
            m.d.comb += [t.cc_status.eq(0), t.cc_dwc.eq(1), t.cc_bc.eq(1),
                         t.cc_la.eq(dec.lower_address)]
            # The core's write acknowledgements come once the requester's writes are on
            # the link: with none owed, this completion is behind all of them.
            with m.If(~t.swallow):
                with m.If(self._send_desc(m, t, last=False)):
                    m.next = "ZLR-DATA"

        with m.State("ZLR-DATA"):
            m.d.comb += [cc.valid.eq(1), cc.payload.data.eq(0), cc.payload.last.eq(1)]
            with m.If(cc.ready):
                m.next = "HDR"

        with m.State("UR-DESC"):
            m.d.comb += [
                t.cc_status.eq(CplStatus.UR), t.cc_dwc.eq(0),
                # A memory read's UR completion keeps its byte count and lower address;
                # everything else's are 4 and 0.
                t.cc_bc.eq(Mux(dec.is_read, dec.byte_count, 4)),
                t.cc_la.eq(Mux(dec.is_read, dec.lower_address, 0)),
            ]
            with m.If(self._send_desc(m, t, last=True)):
                # A read the core refused still owes its completion beats: drain them.
                with m.If(dec.supported & dec.is_read):
                    m.next = "RD-DRAIN"
                with m.Else():
                    m.next = "HDR"

        with m.State("RD-DRAIN"):
            with m.If(~t.swallow):
                m.d.comb += cpl.ready.eq(1)
                with m.If(cpl.valid):
                    m.d.sync += t.chunk_rem.eq(t.chunk_rem - 1)
                    with m.If(t.chunk_rem == 1):
                        m.next = "HDR"
