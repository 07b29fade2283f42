"""The requester side of the UltraScale+ shim: the core's DMA as requests on RQ, their
completions on RC.

:class:`USPRequester` sends the core's DMA writes and reads as TLPs and hands the read data back
in order; its tag table and completion receiver are in :mod:`.completions`.
"""

from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..layouts import dma_req_layout, dma_rsp_layout
from .completions import BUF_DWORDS, RcReceiver, TagTable
from .descriptors import RC_USER_WIDTH, RQ_DESCRIPTOR, RQ_USER_WIDTH, ReqType
from .streams import dw_in_layout, dw_out_layout
from .tlp import size_mask, to_boundary

__all__ = ["DEFAULT_CPL_TIMEOUT", "USPRequester"]

#: Cycles the requester waits for a read's completions before it fails the missing DWORDs. The
#: hard IP reports its own completion timeout (error code 0b1001) long before that on hardware.
DEFAULT_CPL_TIMEOUT = 1 << 16


class _RequestAtHand:
    """The requester's registers for the DMA request at hand and the TLP it is sending."""

    def __init__(self, cpl_timeout, tag_width):
        self.addr = Signal(64)          # host address of the next TLP
        self.count = Signal(8)          # DWORDs - 1
        self.rem = Signal(9)            # DWORDs not yet put into a TLP
        self.ptr = Signal(9)            # write: next DWORD to send; read: next to hand over
        self.tlp_rem = Signal(9)
        self.first_be = Signal(4)
        self.last_be = Signal(4)
        self.fail = Signal()            # bus mastering was off: nothing goes out
        self.start_lo = Signal(12)      # low address bits of the read's first DWORD
        self.epoch = Signal(3)          # which read completions may still write the buffer for
        self.desc_idx = Signal(2)
        self.out_err = Signal()
        self.timer = Signal(range(cpl_timeout + 1))
        self.timed_out = Signal()
        self.given_up = Signal()        # the read timed out: whatever has not come fails at once
        self.seq = Signal(6)            # sequence number of the next RQ TLP
        self.last_seq = Signal(6)       # ... of the last write TLP sent
        self.flush_addr = Signal(64)    # a DWORD of the object the last write touched
        self.flushing = Signal()        # the TLP at hand is a zero-length read
        self.is_write = Signal()
        self.tlp_len = Signal(11)       # DWORDs of the TLP at hand
        # The core pairs answers with requests by tag: every answer beat echoes the request's.
        self.tag = Signal(tag_width)
        self.rq_desc = Signal(RQ_DESCRIPTOR)
        self.tlp_first_be = Signal(4)
        self.tlp_last_be = Signal(4)
        # A write whose DWORDs between its ends are not all whole, or with an end that writes
        # nothing (the core's owed beats after a timed-out window write): sent as 1-DWORD TLPs,
        # each with its own byte enables, and the DWORDs that write nothing not at all.
        self.ragged = Signal()
        self.peeked = Signal()          # the buffer's read data is the DWORD at ptr
        self.sent = Signal()            # a TLP of the write at hand went out


class USPRequester(wiring.Component):
    """Carry the core's DMA out as memory requests (RQ) and reassemble their completions (RC).

    A DMA request at object offset ``o`` goes to host address ``host_base + o``.

    Writes are collected, then sent as posted memory writes of at most Max_Payload_Size, none
    crossing a 4 KiB boundary. The core's write is acknowledged once the hard IP has reported the
    sequence number of the last of them (``pcie_rq_seq_num0``): from then on nothing the device
    sends on CC can overtake them, which is what PCIe's ordering rules need to hold across the
    IP's two interfaces. Before the core's next control request (OPEN, CLOSE) leaves for the host
    over its own channel, which no PCIe ordering covers, a zero-length read flushes the writes
    into host memory (``flush``/``dirty``). A write whose DWORDs between its ends are not all
    whole, or whose first or last DWORD's byte enables are not contiguous towards the rest (what
    the core owes after a window write timed out: the beat on offer, then beats with no byte
    enabled; or a guest's sparse byte enables), is sent as one 1-DWORD TLP
    per DWORD that writes something, so no TLP is malformed (PCIe Base 2.2.5: Last DW BE is not
    0000b when Length > 1) and host memory changes only where the core's byte enables say.

    Reads are sent as memory reads of at most Max_Read_Request_Size, none crossing 4 KiB, each
    with its own client tag, all outstanding at once; completions may come in any order and are
    put in place by their lower address, then handed to the core in order. A completion error
    (non-SC status, poisoned data, or an error code from the hard IP) or no progress within
    ``cpl_timeout`` cycles fails the DWORDs it should have brought: they go to the core as
    errors, which the completer answers with Completer Abort. A completion the hard IP marks
    discontinued is dropped whole: its DWORDs count as arrived only at its last beat. A tag
    whose completions are still owed after that is not used again until the hard IP reports it
    complete.

    Parameters
    ----------
    addr_width : int
        Width of the core's DMA offset.
    cpl_timeout : int
        Cycles without progress after which a read's missing DWORDs are failed, and a write's
        or a flush's acknowledgement is given up on.

    Members
    -------
    rq : ``Out(stream.Signature(...))``
        RQ, one DWORD a beat (to :class:`DwordsToAxis`).
    rc : ``In(stream.Signature(...))``
        RC, one DWORD a beat (from :class:`AxisToDwords`).
    dma_req : ``In(stream.Signature(dma_req_layout(addr_width, 32)))``
    dma_rsp : ``Out(stream.Signature(dma_rsp_layout(32)))``
    host_base : ``In(64)``
        Host address of object offset 0.
    bus_master : ``In(1)``
        Bus Master Enable, looked at before each TLP: without it a request fails without
        reaching RQ, and what is left of one under way fails from the next TLP on.
    max_payload : ``In(2)``
        ``cfg_max_payload``.
    max_read_req : ``In(3)``
        ``cfg_max_read_req``.
    seq_num : ``In(6)``, seq_num_valid : ``In(1)``
        ``pcie_rq_seq_num0`` and ``pcie_rq_seq_num_vld0``.
    flush : ``In(1)``
        Asked to flush: a control request waits.
    dirty : ``Out(1)``
        Writes have been sent that no flush has followed yet.
    flr : ``In(1)``
        A Function Level Reset resets the requester this cycle: the tags of reads still owed
        completions stay out of use until the IP reports them complete (:class:`TagTable`).
    link_reset : ``In(1)``
        The link's reset (``user_reset``): every tag is free again.
    """

    def __init__(self, addr_width, *, cpl_timeout=DEFAULT_CPL_TIMEOUT):
        if not isinstance(cpl_timeout, int) or cpl_timeout < 1:
            raise ValueError(f"cpl_timeout must be a positive integer, not {cpl_timeout!r}")
        self._cpl_timeout = cpl_timeout
        super().__init__({
            "rq":            Out(stream.Signature(dw_out_layout(RQ_USER_WIDTH))),
            "rc":            In(stream.Signature(dw_in_layout(RC_USER_WIDTH))),
            "dma_req":       In(stream.Signature(dma_req_layout(addr_width, 32))),
            "dma_rsp":       Out(stream.Signature(dma_rsp_layout(32))),
            "host_base":     In(64),
            "bus_master":    In(1),
            "max_payload":   In(2),
            "max_read_req":  In(3),
            "seq_num":       In(6),
            "seq_num_valid": In(1),
            "flush":         In(1),
            "dirty":         Out(1),
            "flr":           In(1),
            "link_reset":    In(1),
        })


    def elaborate(self, platform):
        m = Module()
        dma_rsp = self.dma_rsp

        # A DWORD and, for a write, its byte enables: a ragged write sends each with its own.
        m.submodules.buf = buf = Memory(shape=36, depth=BUF_DWORDS, init=[])
        wr = buf.write_port()
        rd = buf.read_port()
        r = _RequestAtHand(self._cpl_timeout, len(self.dma_req.payload.tag))
        m.submodules.tags = tags = TagTable()
        m.submodules.rc_receiver = rcv = RcReceiver()
        wiring.connect(m, wiring.flipped(self.rc), rcv.rc)
        m.d.comb += [
            rcv.outstanding.eq(tags.outstanding),
            rcv.epoch.eq(r.epoch),
            rcv.start_dw.eq(r.start_lo[2:]),
            rcv.count.eq(r.count),
            tags.release.eq(rcv.release),
            tags.park.eq(rcv.park),
            tags.unpark.eq(rcv.unpark),
            tags.orphan.eq(self.flr),
            tags.forget.eq(self.link_reset),
            rcv.link_reset.eq(self.link_reset),
            r.timed_out.eq(r.timer == self._cpl_timeout),
            dma_rsp.payload.tag.eq(r.tag),
        ]
        self._frame(m, r, tags)

        lane_busy = Signal()
        with m.FSM(name="fsm") as fsm:
            self._idle(m, r, lane_busy)
            self._write(m, r, wr, rd)
            self._flush(m, r, tags, rcv)
            self._read(m, r, tags, rcv, rd)
        self._pass_lane(m, r, lane_busy,
                        reading=fsm.ongoing("R-WAIT") | fsm.ongoing("R-SEND"))

        # The completion side writes the buffer only while a read is at hand, never while a
        # write is collected; should both ever meet, the completion's DWORD goes in.
        with m.If(rcv.buf_en):
            m.d.comb += [wr.addr.eq(rcv.buf_addr), wr.data.eq(rcv.buf_data), wr.en.eq(1)]
        return m

    def _frame(self, m, r, tags):
        """Size the TLP at hand and build its RQ descriptor and ``tuser``."""
        mps_mask = size_mask(m, self.max_payload, (128, 256, 512, 1024), "mps_mask")
        mrrs_mask = size_mask(m, self.max_read_req, (128, 256, 512, 1024, 2048, 4096),
                              "mrrs_mask")
        tlp_len = r.tlp_len
        limit = Signal(11)
        m.d.comb += limit.eq(to_boundary(r.addr[:12], Mux(r.is_write, mps_mask, mrrs_mask)))
        with m.If(r.flushing | (r.is_write & r.ragged)):
            m.d.comb += tlp_len.eq(1)
        with m.Else():
            m.d.comb += tlp_len.eq(Mux(r.rem < limit, r.rem, limit))

        # Byte enables of a write TLP from ptr: the request's first and last DWORDs carry the
        # core's, every DWORD between them is whole, unless the write is ragged.
        tlp_first_be, tlp_last_be = r.tlp_first_be, r.tlp_last_be
        ends_request = (r.ptr + tlp_len - 1) == r.count
        with m.If(r.flushing):
            pass                    # a zero-length read: no byte enabled
        with m.Elif(r.is_write & r.ragged):
            m.d.comb += tlp_first_be.eq(r.first_be)     # the DWORD's own (W-NEXT latched it)
        with m.Elif(~r.is_write):
            # The request's last DWORD carries the core's enables: none past the object.
            ends_read = r.rem == tlp_len
            with m.If(tlp_len == 1):
                m.d.comb += tlp_first_be.eq(Mux(ends_read, r.last_be, 0xF))
            with m.Else():
                m.d.comb += [tlp_first_be.eq(0xF),
                             tlp_last_be.eq(Mux(ends_read, r.last_be, 0xF))]
        with m.Elif(tlp_len == 1):
            m.d.comb += tlp_first_be.eq(Mux(r.ptr == 0, r.first_be,
                                            Mux(ends_request, r.last_be, 0xF)))
        with m.Else():
            m.d.comb += [tlp_first_be.eq(Mux(r.ptr == 0, r.first_be, 0xF)),
                         tlp_last_be.eq(Mux(ends_request, r.last_be, 0xF))]

        # Requester ID 0 with Requester ID Enable clear: the IP puts in the function's own.
        # Everything not set here is 0: address type untranslated, TC 0, no attributes.
        m.d.comb += [
            r.rq_desc.address.eq(r.addr[2:]),
            r.rq_desc.dword_count.eq(tlp_len),
            r.rq_desc.request_type.eq(Mux(r.is_write, ReqType.MEM_WRITE, ReqType.MEM_READ)),
            r.rq_desc.tag.eq(Mux(r.is_write, 0, tags.tag)),
        ]

    def _send_desc(self, m, r):
        """Offer the RQ descriptor's DWORDs; return whether its last one went.

        A read is its descriptor alone; a write's payload follows.
        """
        rq = self.rq
        # RQ tuser: byte enables, and the sequence number the IP reports once the TLP is on its
        # way (bits 27:24 and 61:60); address offset, discontinue, TPH and parity stay 0.
        rq_user = Cat(r.tlp_first_be, r.tlp_last_be, C(0, 16), r.seq[:4], C(0, 32), r.seq[4:6])
        m.d.comb += [rq.valid.eq(1),
                     rq.payload.data.eq(r.rq_desc.as_value().word_select(r.desc_idx, 32)),
                     rq.payload.last.eq(~r.is_write & (r.desc_idx == 3)),
                     rq.payload.user.eq(rq_user)]
        done = Signal()
        m.d.comb += done.eq(rq.ready & (r.desc_idx == 3))
        with m.If(rq.ready):
            m.d.sync += r.desc_idx.eq(r.desc_idx + 1)
        with m.If(done):
            m.d.sync += r.seq.eq(r.seq + 1)
        return done

    def _send_read(self, m, r, tags):
        """Offer a read TLP (a flush is one) under the next free tag; return whether its
        descriptor's last DWORD went, the tag then being outstanding."""
        done = Signal()
        with m.If((r.desc_idx == 0) & tags.tag_busy):
            # Still owed completions from an earlier read: try the next tag.
            m.d.comb += tags.skip.eq(1)
        with m.Else():
            m.d.comb += done.eq(self._send_desc(m, r))
        m.d.comb += tags.take.eq(done)
        return done

    def _count_down(self, m, r, moved):
        """Run the no-progress timer, restarting it whenever ``moved``."""
        with m.If(moved):
            m.d.sync += r.timer.eq(0)
        with m.Elif(~r.timed_out):
            m.d.sync += r.timer.eq(r.timer + 1)

    def _idle(self, m, r, lane_busy):
        """The state that takes the core's next request, or starts a flush it asks for; it
        waits while the passing lane finishes a packet (its beats and RQ are the lane's)."""
        dma_req, dirty = self.dma_req, self.dirty
        with m.State("IDLE"):
            m.d.comb += dma_req.ready.eq(~dma_req.payload.write & ~lane_busy)
            m.d.sync += [r.timer.eq(0), r.flushing.eq(0)]
            with m.If(lane_busy):
                pass
            with m.Elif(dma_req.valid):
                m.d.sync += [
                    r.tag.eq(dma_req.payload.tag),
                    r.addr.eq(self.host_base + dma_req.payload.addr),
                    r.count.eq(dma_req.payload.count),
                    r.is_write.eq(dma_req.payload.write),
                    r.fail.eq(~self.bus_master),
                    r.ptr.eq(0), r.desc_idx.eq(0),
                ]
                with m.If(~dma_req.payload.write):
                    m.d.sync += r.last_be.eq(dma_req.payload.be)
                with m.If(dma_req.payload.write):
                    # Pending from now on, not from when it leaves: a control request
                    # the core makes meanwhile (after giving up on the acknowledgement)
                    # must wait for this write and its flush.
                    m.d.sync += [r.flush_addr.eq(self.host_base + dma_req.payload.addr),
                                 dirty.eq(self.bus_master | dirty), r.ragged.eq(0),
                                 r.sent.eq(0)]
                    m.next = "W-COLLECT"
                with m.Else():
                    m.next = "R-START"
            with m.Elif(self.flush & dirty & ~self.bus_master):
                # Without Bus Master Enable the function may send nothing, a flush
                # included: the writes already sent are ordered only by the link.
                m.d.sync += dirty.eq(0)
            with m.Elif(self.flush & dirty):
                m.d.sync += [r.addr.eq(r.flush_addr), r.is_write.eq(0), r.flushing.eq(1),
                             r.desc_idx.eq(0)]
                m.next = "F-TLP"

    def _write(self, m, r, wr, rd):
        """The states of a write: collect it, send it as TLPs, wait until the hard IP reports
        the last one sent, acknowledge it to the core."""
        rq, dma_req, dma_rsp = self.rq, self.dma_req, self.dma_rsp
        with m.State("W-COLLECT"):
            # All of it first: the last DWORD's byte enables go in front of the last TLP.
            m.d.comb += dma_req.ready.eq(1)
            with m.If(dma_req.valid):
                be = dma_req.payload.be
                m.d.comb += [wr.addr.eq(r.ptr), wr.data.eq(Cat(dma_req.payload.data, be)),
                             wr.en.eq(1)]
                m.d.sync += [r.ptr.eq(r.ptr + 1), r.last_be.eq(be)]
                # PCIe Base 2.2.5: a TLP's DWORDs between its ends are whole, and the ends of a
                # TLP longer than one DWORD enable contiguous bytes that run into the next and
                # the previous DWORD (so Last DW BE is never 0000b). A write that cannot go out
                # so (the core's owed beats write nothing) goes DWORD by DWORD.
                odd = Signal()
                with m.If(r.count == 0):
                    pass                        # one DWORD: any byte enables, none included
                with m.Elif(r.ptr == 0):
                    m.d.comb += odd.eq(~be.matches(0b1000, 0b1100, 0b1110, 0b1111))
                with m.Elif(r.ptr == r.count):
                    m.d.comb += odd.eq(~be.matches(0b0001, 0b0011, 0b0111, 0b1111))
                with m.Else():
                    m.d.comb += odd.eq(be != 0xF)
                with m.If(odd):
                    m.d.sync += r.ragged.eq(1)
                with m.If(r.ptr == 0):
                    m.d.sync += r.first_be.eq(be)
                with m.If(r.ptr == r.count):
                    m.d.sync += [r.ptr.eq(0), r.rem.eq(r.count + 1)]
                    with m.If(r.fail):
                        m.next = "W-ACK"
                    with m.Elif(r.ragged | odd):
                        m.next = "W-NEXT"
                    with m.Else():
                        m.next = "W-TLP"

        with m.State("W-NEXT"):
            # A ragged write's next DWORD: read its byte enables (a cycle for the buffer's
            # read port), skip it if it writes nothing, else send it alone.
            m.d.comb += rd.addr.eq(r.ptr)
            m.d.sync += r.peeked.eq(1)
            with m.If(r.peeked):
                be = rd.data[32:]
                m.d.sync += r.peeked.eq(0)
                with m.If(be != 0):
                    m.d.sync += r.first_be.eq(be)
                    m.next = "W-TLP"
                with m.Else():
                    m.d.sync += [r.ptr.eq(r.ptr + 1), r.rem.eq(r.rem - 1),
                                 r.addr.eq(r.addr + 4)]
                    with m.If(r.rem == 1):
                        # Nothing left to send; with nothing sent, no sequence number comes.
                        m.d.sync += r.timer.eq(0)
                        with m.If(r.sent):
                            m.next = "W-SEQ"
                        with m.Else():
                            m.next = "W-ACK"

        with m.State("W-TLP"):
            m.d.comb += rd.addr.eq(r.ptr)
            with m.If((r.desc_idx == 0) & ~self.bus_master):
                # Bus Master Enable went off: no further TLP of the write goes (issue 22,
                # finding 12); the core hears of it as an error.
                m.d.sync += [r.fail.eq(1), r.timer.eq(0)]
                with m.If(r.sent):
                    m.next = "W-SEQ"
                with m.Else():
                    m.next = "W-ACK"
            with m.Else():
                with m.If(self._send_desc(m, r)):
                    m.d.sync += [r.tlp_rem.eq(r.tlp_len), r.rem.eq(r.rem - r.tlp_len),
                                 r.last_seq.eq(r.seq), r.sent.eq(1)]
                    m.next = "W-DATA"

        with m.State("W-DATA"):
            took = rq.ready
            m.d.comb += [
                rq.valid.eq(1),
                rq.payload.data.eq(rd.data[:32]),
                rq.payload.last.eq(r.tlp_rem == 1),
                rd.addr.eq(Mux(took, r.ptr + 1, r.ptr)),
            ]
            with m.If(took):
                m.d.sync += [r.ptr.eq(r.ptr + 1), r.tlp_rem.eq(r.tlp_rem - 1),
                             r.addr.eq(r.addr + 4)]
                with m.If(r.tlp_rem == 1):
                    with m.If(r.rem == 0):
                        m.d.sync += r.timer.eq(0)
                        m.next = "W-SEQ"
                    with m.Elif(r.ragged):
                        m.next = "W-NEXT"
                    with m.Else():
                        m.next = "W-TLP"

        with m.State("W-SEQ"):
            # The IP reports sequence numbers in order: the last write's means all are out.
            self._count_down(m, r, moved=self.seq_num_valid)
            with m.If((self.seq_num_valid & (self.seq_num == r.last_seq)) | r.timed_out):
                m.next = "W-ACK"

        with m.State("W-ACK"):
            m.d.comb += [dma_rsp.valid.eq(1), dma_rsp.payload.err.eq(r.fail),
                         dma_rsp.payload.last.eq(1)]
            with m.If(dma_rsp.ready):
                m.next = "IDLE"

    def _flush(self, m, r, tags, rcv):
        """The states of a flush before a control request: a zero-length read, and its wait."""
        with m.State("F-TLP"):
            with m.If(self._send_read(m, r, tags)):
                m.next = "F-WAIT"

        with m.State("F-WAIT"):
            # Its completion cannot pass the writes before it: once it is here, they landed.
            self._count_down(m, r, moved=rcv.progress)
            with m.If((tags.outstanding == 0) | r.timed_out):
                m.d.comb += tags.retire.eq(1)
                m.d.sync += [self.dirty.eq(0), r.epoch.eq(r.epoch + 1)]
                m.next = "IDLE"

    def _read(self, m, r, tags, rcv, rd):
        """The states of a read: send it as TLPs, each with its own tag, then hand the DWORDs
        to the core in order as they arrive, or as errors once their wait is over."""
        dma_rsp = self.dma_rsp
        with m.State("R-START"):
            m.d.comb += rcv.restart.eq(1)
            m.d.sync += [r.start_lo.eq(r.addr[:12]), r.rem.eq(r.count + 1), r.given_up.eq(0)]
            with m.If(r.fail):
                m.next = "R-WAIT"
            with m.Else():
                m.next = "R-TLP"

        with m.State("R-TLP"):
            with m.If((r.desc_idx == 0) & ~self.bus_master):
                # Bus Master Enable went off: the read's TLPs not sent yet never go (issue 22,
                # finding 12); the DWORDs they would have brought fail.
                m.d.sync += r.fail.eq(1)
                m.next = "R-WAIT"
            with m.Else():
                with m.If(self._send_read(m, r, tags)):
                    m.d.sync += [r.rem.eq(r.rem - r.tlp_len),
                                 r.addr.eq(r.addr + (r.tlp_len << 2))]
                    with m.If(r.rem == r.tlp_len):
                        m.next = "R-WAIT"

        with m.State("R-WAIT"):
            m.d.comb += rd.addr.eq(r.ptr)
            here = rcv.have.bit_select(r.ptr, 1)
            resolved = (tags.outstanding == 0) | r.timed_out | r.given_up | r.fail
            with m.If(here | resolved):
                m.d.sync += [r.out_err.eq(~here), r.given_up.eq(r.given_up | r.timed_out)]
                m.next = "R-SEND"
            with m.Else():
                self._count_down(m, r, moved=rcv.progress)

        with m.State("R-SEND"):
            m.d.comb += [
                rd.addr.eq(r.ptr),
                dma_rsp.valid.eq(1),
                dma_rsp.payload.data.eq(Mux(r.out_err, 0xFFFF_FFFF, rd.data[:32])),
                dma_rsp.payload.err.eq(r.out_err),
                dma_rsp.payload.last.eq(r.ptr == r.count),
            ]
            with m.If(dma_rsp.ready):
                m.d.sync += [r.ptr.eq(r.ptr + 1), r.timer.eq(0)]
                with m.If(r.ptr == r.count):
                    m.next = "R-DONE"
                with m.Else():
                    m.next = "R-WAIT"

        with m.State("R-DONE"):
            # Completions still owed keep their tags out of use until they come; from here on,
            # a completion of this read still on its way writes nothing.
            m.d.comb += tags.retire.eq(1)
            m.d.sync += r.epoch.eq(r.epoch + 1)
            m.next = "IDLE"

    def _pass_lane(self, m, r, lane_busy, *, reading):
        """A window write passing the read at hand (issue 22, finding 2), one DWORD a TLP.

        While the read's TLPs are all out and it waits for (or hands over) its completions, the
        core may send a write that passes it (:mod:`~vmshm.rtl.window`; its tag is the read's
        with the top bit flipped). The buffer holds the read's data, so each of the write's
        DWORDs goes out as a 1-DWORD memory write with its own byte enables, straight from
        ``dma_req`` (a DWORD with none enabled, or any without Bus Master Enable, goes nowhere):
        five RQ DWORDs for each, the price of passing. A beat is taken once its TLP is handed to
        RQ; the packet's last once the hard IP has also reported its sequence number (or after
        ``cpl_timeout``), so the core's acknowledgement to the completer comes after the write
        is on the link, as for any write. No answer goes back: the core waits for none. Once a
        packet has begun, the lane finishes it before ``IDLE`` takes anything.
        """
        rq, dma_req = self.rq, self.dma_req
        beat = dma_req.payload
        ptr = Signal(8, name="lane_ptr")    # the packet's next beat
        seq = Signal(6)                     # the sequence number of the lane's TLP
        desc_idx = Signal(2, name="lane_desc_idx")
        timer = Signal(range(self._cpl_timeout + 1))
        tag_bits = len(beat.tag)
        ours = dma_req.valid & beat.write & (beat.tag == r.tag ^ (1 << (tag_bits - 1)))
        desc = Signal(RQ_DESCRIPTOR)
        m.d.comb += [desc.address.eq((self.host_base + beat.addr + (ptr << 2))[2:]),
                     desc.dword_count.eq(1), desc.request_type.eq(ReqType.MEM_WRITE)]

        def take():
            m.d.comb += dma_req.ready.eq(1)
            m.d.sync += ptr.eq(Mux(ptr == beat.count, 0, ptr + 1))

        with m.FSM(name="lane") as lane:
            m.d.comb += lane_busy.eq((ptr != 0) | ~lane.ongoing("L-IDLE"))
            with m.State("L-IDLE"):
                with m.If(ours & (reading | (ptr != 0))):
                    with m.If((beat.be == 0) | ~self.bus_master):
                        take()
                    with m.Else():
                        m.d.sync += desc_idx.eq(0)
                        m.next = "L-DESC"

            with m.State("L-DESC"):
                user = Cat(beat.be, C(0, 4), C(0, 16), r.seq[:4], C(0, 32), r.seq[4:6])
                m.d.comb += [rq.valid.eq(1),
                             rq.payload.data.eq(desc.as_value().word_select(desc_idx, 32)),
                             rq.payload.last.eq(0), rq.payload.user.eq(user)]
                with m.If(rq.ready):
                    m.d.sync += desc_idx.eq(desc_idx + 1)
                    with m.If(desc_idx == 3):
                        m.d.sync += [seq.eq(r.seq), r.seq.eq(r.seq + 1), self.dirty.eq(1)]
                        m.next = "L-DATA"

            with m.State("L-DATA"):
                m.d.comb += [rq.valid.eq(1), rq.payload.data.eq(beat.data),
                             rq.payload.last.eq(1)]
                with m.If(rq.ready & (ptr == beat.count)):
                    m.d.sync += timer.eq(0)
                    m.next = "L-SEQ"
                with m.Elif(rq.ready):
                    take()
                    m.next = "L-IDLE"

            with m.State("L-SEQ"):
                m.d.sync += timer.eq(timer + 1)
                with m.If((self.seq_num_valid & (self.seq_num == seq)) |
                          (timer == self._cpl_timeout)):
                    take()
                    m.next = "L-IDLE"
