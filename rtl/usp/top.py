"""VMShm behind a Xilinx UltraScale+ PCIe hard IP (``pcie4_uscale_plus``, PG213).

The hard IP owns the configuration space and hands the user logic whole TLPs on four AXI streams,
named here from the user logic's side: CQ in (requests to the device), CC out (their completions),
RQ out (the device's own requests) and RC in (their completions). Each TLP is a descriptor
followed by its payload, DWORD-aligned, one TLP per packet (no straddling).

:class:`USPCompleter` turns memory requests on CQ into the core's guest requests (the BAR id in the
descriptor picks the core's BAR) and the core's completions into CC completions;
:class:`USPRequester` turns the core's DMA into memory reads and writes at the host bus address
the host gave in its OPEN answer, and reassembles the completions. :class:`VMShmUSP` is the top:
the core, both shims and flat ports named like the hard IP's user interface.

Ordering matters where PCIe's rules cannot see: a DMA write is acknowledged to the core only once
the hard IP reports it sent (its RQ sequence number), so no later CC completion can pass it; and
OPEN and CLOSE, which go to the host on VMShm's own control channel, wait for a zero-length read
to flush the writes before them into host memory.

Inside, every stream is handled one DWORD a cycle (:class:`AxisToDwords`,
:class:`DwordsToAxis`): TLP fields are DWORD-based, the core's data path is 32 bits, and the
simulated root complex is far slower than that anyway. PG213 is stricter than a plain AXI
stream: CC and RQ hold each TLP until its last DWORD is in, then send it back to back
(``tvalid`` never drops inside a packet); CQ takes whole TLPs into a buffer (:class:`CqBuffer`),
so a TLP marked discontinued is dropped whole and posted writes keep flowing while a read waits
for the host. ``testbench/pcie_rules.py`` checks these rules on every simulated run.
"""

import enum

from amaranth.hdl import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from vmshm import pci_regs as P
from vmshm.regmap import (BAR0_SIZE, BAR_NAME, BAR_REGS, BAR_WINDOW, DEFAULT_NAME_SIZE,
                          DEFAULT_WINDOW_SIZE, PCI_DEVICE_ID, PCI_REVISION, PCI_SUBSYSTEM_ID,
                          PCI_SUBSYSTEM_VENDOR_ID, PCI_VENDOR_ID, capability_bytes)

from ..bars import BarDef
from ..core import DEFAULT_HOST_TIMEOUT, VMShmCore
from ..layouts import (CplStatus, cpl_layout, ctl_req_layout, ctl_rsp_layout, db_layout,
                      dma_req_layout, dma_rsp_layout, guest_req_layout, ring_layout)
from .descriptors import CC_DESCRIPTOR, CQ_DESCRIPTOR, RC_DESCRIPTOR, RQ_DESCRIPTOR
from .irq import INTX_PORTS, MSI_PORTS, USPInterrupts

__all__ = ["AXIS_WIDTHS", "TX_BUFFER_DWORDS", "PacketFifo", "CqBuffer", "CQ_USER_WIDTH",
           "CC_USER_WIDTH", "RQ_USER_WIDTH", "RC_USER_WIDTH",
           "DEFAULT_CPL_TIMEOUT", "ReqType", "axis_signature", "AxisToDwords", "DwordsToAxis",
           "USPCompleter", "USPRequester", "VMShmUSP"]

#: AXI-stream data widths the shim is built and verified at.
AXIS_WIDTHS = (64, 256)
#: ``tuser`` widths of the UltraScale+ (``pcie4_uscale_plus``) interfaces below 512 bits.
CQ_USER_WIDTH = 88
CC_USER_WIDTH = 33
RQ_USER_WIDTH = 62
RC_USER_WIDTH = 75
#: CQ ``tuser`` bits: first and last DWORD byte enables (valid at the first beat), discontinue.
CQ_FIRST_BE, CQ_LAST_BE, CQ_DISCONTINUE = slice(0, 4), slice(4, 8), 41
#: The CQ ``tuser`` bits the completer keeps: first and last byte enables.
CQ_BE_WIDTH = 8
#: RC ``tuser`` discontinue bit.
RC_DISCONTINUE = 42
#: DWORDs the CQ buffer holds: a write of Max_Payload_Size and its descriptor with room to spare,
#: so posted writes keep flowing while a window read waits for the host.
CQ_BUFFER_DWORDS = 512

#: Cycles the requester waits for a read's completions before it fails the missing DWORDs. The
#: hard IP reports its own completion timeout (error code 0b1001) long before that on hardware.
DEFAULT_CPL_TIMEOUT = 1 << 16

#: Completion status Completer Abort (PCIe; the core's own statuses are SC and UR).
CplStatus_CA = 0b100

#: Most DWORDs the reorder buffer holds: one core DMA request (``count`` is 8 bits).
_BUF_DWORDS = 256
#: Client tags used without extended tags (the model and PG213 both allow 0..31).
_TAGS = 32


class ReqType(enum.IntEnum):
    """Request type field of the CQ and RQ descriptors (PG213)."""
    MEM_READ = 0b0000
    MEM_WRITE = 0b0001
    IO_READ = 0b0010
    IO_WRITE = 0b0011
    FETCH_ADD = 0b0100
    SWAP = 0b0101
    CAS = 0b0110
    MEM_READ_LOCKED = 0b0111
    CFG_READ_0 = 0b1000
    CFG_READ_1 = 0b1001
    CFG_WRITE_0 = 0b1010
    CFG_WRITE_1 = 0b1011
    MSG = 0b1100
    MSG_VENDOR = 0b1101
    MSG_ATS = 0b1110


#: Request types that take no completion: writes and messages. 0b1111 is reserved; it is dropped,
#: since answering a posted request would be the worse mistake of the two.
_POSTED = (ReqType.MEM_WRITE, ReqType.MSG, ReqType.MSG_VENDOR, ReqType.MSG_ATS, 0b1111)


def axis_signature(width, user_width):
    """Return the signature of one hard-IP AXI stream, from its source's point of view.

    ``tkeep`` has one bit per DWORD, as the hard IP's DWORD-aligned interfaces use it.
    """
    return wiring.Signature({
        "tdata":  Out(width),
        "tuser":  Out(user_width),
        "tlast":  Out(1),
        "tkeep":  Out(width // 32),
        "tvalid": Out(1),
        "tready": In(1),
    })


def _dw_in_layout(user_width):
    # ``first`` marks a packet's first DWORD; ``user`` is the tuser of the beat it came in.
    return data.StructLayout({"data": 32, "first": 1, "last": 1, "user": user_width})


def _dw_out_layout(sop_user_width):
    # ``user`` is taken with a packet's first DWORD and sent on its first beat only. A stream
    # with none has no such field: a field nobody drives inside a struct that a process drives
    # comes out of Yosys as X bits in simulation, not as its init value.
    fields = {"data": 32, "last": 1}
    if sop_user_width:
        fields["user"] = sop_user_width
    return data.StructLayout(fields)


def _check_width(width):
    if width not in AXIS_WIDTHS:
        raise ValueError(f"axis_width must be one of {', '.join(map(str, AXIS_WIDTHS))}, "
                         f"not {width!r}")


class AxisToDwords(wiring.Component):
    """Split a hard-IP AXI stream into a stream of DWORDs, one a cycle.

    Parameters
    ----------
    width : int
        ``tdata`` width in bits.
    user_width : int
        ``tuser`` width in bits.

    Members
    -------
    axis : ``In(axis_signature(width, user_width))``
    dw : ``Out(stream.Signature(...))``
        ``data``, ``first`` (a packet's first DWORD), ``last`` and the beat's ``user``.
    """

    def __init__(self, width, user_width):
        self._lanes = width // 32
        super().__init__({
            "axis": In(axis_signature(width, user_width)),
            "dw":   Out(stream.Signature(_dw_in_layout(user_width))),
        })

    def elaborate(self, platform):
        m = Module()
        axis, dw = self.axis, self.dw
        n = self._lanes
        idx = Signal(range(n))
        in_packet = Signal()
        # tkeep is contiguous from lane 0 on a DWORD-aligned, unstraddled interface.
        last_lane = Signal(range(n))
        for lane in range(n):
            with m.If(axis.tkeep[lane]):
                m.d.comb += last_lane.eq(lane)
        end_of_beat = Signal()
        m.d.comb += [
            end_of_beat.eq(idx == last_lane),
            dw.valid.eq(axis.tvalid),
            dw.payload.data.eq(axis.tdata.word_select(idx, 32)),
            dw.payload.user.eq(axis.tuser),
            dw.payload.first.eq(~in_packet),
            dw.payload.last.eq(axis.tlast & end_of_beat),
            # The beat is taken with its last DWORD: a beat is never half-consumed upstream.
            axis.tready.eq(dw.ready & end_of_beat),
        ]
        with m.If(dw.valid & dw.ready):
            m.d.sync += [idx.eq(Mux(end_of_beat, 0, idx + 1)), in_packet.eq(~dw.payload.last)]
        return m


class PacketFifo(wiring.Component):
    """Hold whole packets: a packet leaves only once its last entry is in, and is dropped whole
    if the writer says so at its last entry.

    Used in front of CC and RQ, where PG213 wants ``tvalid`` high from a packet's first beat to
    its last, and behind CQ, where a TLP the hard IP marks discontinued must have no effect.
    Entries leave one a cycle for as long as the reader takes them.

    Parameters
    ----------
    width : int
        Bits of one entry.
    depth : int
        Entries, a power of two: no packet may be longer.

    Members
    -------
    w : ``In(stream.Signature(...))``
        ``data``, ``last`` (the packet's last entry) and ``drop`` (with ``last``: forget it).
    r : ``Out(stream.Signature(width))``
        The packets that were kept, in order.
    clear : ``In(1)``
        Forget the packet being written (a function reset): whole packets still leave whole.
    """

    def __init__(self, width, depth):
        self._depth = depth
        exact_log2(depth)
        super().__init__({
            "w": In(stream.Signature(data.StructLayout({"data": width, "last": 1, "drop": 1}))),
            "r": Out(stream.Signature(width)),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        bits = exact_log2(depth)
        m.submodules.mem = mem = Memory(shape=len(self.r.payload), depth=depth, init=[])
        wr = mem.write_port()
        # Transparent: a packet may be committed in the cycle after its last entry was written.
        rd = mem.read_port(transparent_for=(wr,))
        wp = Signal(bits + 1)       # next entry to write
        cp = Signal(bits + 1)       # end of the last whole packet
        rp = Signal(bits + 1)       # next entry to read
        took = Signal()
        m.d.comb += [
            self.w.ready.eq((wp - rp) != depth),
            wr.addr.eq(wp[:bits]),
            wr.data.eq(self.w.payload.data),
            wr.en.eq(self.w.valid & self.w.ready),
            self.r.valid.eq(cp != rp),
            self.r.payload.eq(rd.data),
            took.eq(self.r.valid & self.r.ready),
            rd.addr.eq(Mux(took, rp + 1, rp)[:bits]),
        ]
        with m.If(took):
            m.d.sync += rp.eq(rp + 1)
        with m.If(self.w.valid & self.w.ready):
            with m.If(self.w.payload.last & self.w.payload.drop):
                m.d.sync += wp.eq(cp)
            with m.Elif(self.w.payload.last):
                m.d.sync += [wp.eq(wp + 1), cp.eq(wp + 1)]
            with m.Else():
                m.d.sync += wp.eq(wp + 1)
        with m.If(self.clear):
            m.d.sync += wp.eq(cp)   # forget the packet being written; the whole ones still go
        return m


#: DWORDs each transmit buffer holds: a TLP of Max_Payload_Size (at most 1024 bytes) plus its
#: descriptor fits with room for the next one to be gathered while it goes out.
TX_BUFFER_DWORDS = 512


class DwordsToAxis(wiring.Component):
    """Gather a stream of DWORDs into hard-IP AXI beats, and send each packet back to back.

    A beat is complete when it is full or holds a packet's last DWORD; ``tkeep`` marks its
    DWORDs. Beats wait in a :class:`PacketFifo` until their packet's last one is in, so ``tvalid``
    never drops inside a packet as PG213 requires of CC and RQ: a packet costs its length in
    DWORDs of latency, and a packet may be at most ``TX_BUFFER_DWORDS`` long. A packet's ``user``
    (the byte enables of RQ) goes into the low ``tuser`` bits of its first beat; every other
    ``tuser`` bit is 0.

    Parameters
    ----------
    width : int
        ``tdata`` width in bits.
    user_width : int
        ``tuser`` width in bits.
    sop_user_width : int
        Width of the DWORD stream's ``user``: 0 for none.

    Members
    -------
    dw : ``In(stream.Signature(...))``
        ``data``, ``last`` and, if ``sop_user_width``, ``user``.
    axis : ``Out(axis_signature(width, user_width))``
    clear : ``In(1)``
        Forget the packet being gathered (a function reset); whole packets still leave whole.
    """

    def __init__(self, width, user_width, sop_user_width=0):
        self._lanes = width // 32
        self._sop_user_width = sop_user_width
        super().__init__({
            "dw":   In(stream.Signature(_dw_out_layout(sop_user_width))),
            "axis": Out(axis_signature(width, user_width)),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        axis, dw = self.axis, self.dw
        n = self._lanes
        W = len(axis.tdata)
        uw = self._sop_user_width
        fields = {"tdata": W, "tkeep": n, "tlast": 1}
        if uw:
            fields["tuser"] = uw     # no field nobody drives (see _dw_out_layout)
        entry = data.StructLayout(fields)
        m.submodules.fifo = fifo = PacketFifo(entry.size, TX_BUFFER_DWORDS // n)
        beat = Signal(W)
        keep = Signal(n)
        idx = Signal(range(n))
        sop = Signal(init=1)        # the beat being filled is a packet's first
        user = Signal(max(uw, 1))
        ends_beat = dw.payload.last | (idx == n - 1)
        out = Signal(entry)
        m.d.comb += [
            out.tdata.eq(beat),
            out.tkeep.eq(keep),
            out.tlast.eq(dw.payload.last),
        ]
        m.d.comb += out.tdata.word_select(idx, 32).eq(dw.payload.data)
        m.d.comb += out.tkeep.bit_select(idx, 1).eq(1)
        if uw:
            m.d.comb += out.tuser.eq(Mux(sop, Mux(idx == 0, dw.payload.user, user), 0))
        m.d.comb += [
            fifo.w.payload.data.eq(out),
            fifo.w.payload.last.eq(dw.payload.last),
            fifo.w.valid.eq(dw.valid & ends_beat),
            dw.ready.eq(~ends_beat | fifo.w.ready),
        ]
        with m.If(dw.valid & dw.ready):
            with m.If(ends_beat):
                m.d.sync += [keep.eq(0), idx.eq(0), sop.eq(dw.payload.last)]
            with m.Else():
                m.d.sync += [beat.word_select(idx, 32).eq(dw.payload.data),
                             keep.bit_select(idx, 1).eq(1), idx.eq(idx + 1)]
                if uw:
                    with m.If(sop & (idx == 0)):
                        m.d.sync += user.eq(dw.payload.user)
        m.d.comb += fifo.clear.eq(self.clear)
        with m.If(self.clear):
            m.d.sync += [keep.eq(0), idx.eq(0), sop.eq(1)]
        got = Signal(entry)
        m.d.comb += [
            got.eq(fifo.r.payload),
            axis.tdata.eq(got.tdata),
            axis.tkeep.eq(got.tkeep),
            axis.tlast.eq(got.tlast),
            axis.tvalid.eq(fifo.r.valid),
            fifo.r.ready.eq(axis.tready),
        ]
        if uw:
            m.d.comb += axis.tuser.eq(got.tuser)
        else:
            m.d.comb += axis.tuser.eq(0)
        return m


class CqBuffer(wiring.Component):
    """Take whole CQ TLPs as fast as the hard IP gives them; drop the discontinued ones whole.

    PG213 marks a TLP discontinued on its last beat and asks the user logic to discard all of
    it: nothing of a TLP reaches the completer before its last DWORD is in. The buffer also
    keeps CQ flowing while the completer waits on a window read: PCIe lets posted writes pass
    the read's completion only if the device keeps taking them, and they are applied in order,
    after the read, as they arrived. Only the byte enables of ``tuser`` are kept.

    Members
    -------
    i : ``In(stream.Signature(_dw_in_layout(CQ_USER_WIDTH)))``
    o : ``Out(stream.Signature(_dw_in_layout(CQ_BE_WIDTH)))``
    np_dropped : ``Out(1)``
        A non-posted TLP was dropped: the credit it used is spent.
    """

    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(_dw_in_layout(CQ_USER_WIDTH))),
            "o": Out(stream.Signature(_dw_in_layout(CQ_BE_WIDTH))),
            "np_dropped": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        layout = _dw_in_layout(CQ_BE_WIDTH)
        m.submodules.fifo = fifo = PacketFifo(layout.size, CQ_BUFFER_DWORDS)
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
                m.d.comb += self.np_dropped.eq(~typ.matches(*_POSTED) & (idx >= 2))
        return m


def _trailing_zeros(be):
    """Return the offset of the first enabled byte of a DWORD's byte enables (3 if none)."""
    return Mux(be[0], 0, Mux(be[1], 1, Mux(be[2], 2, 3)))


def _leading_zeros(be):
    """Return how many bytes after the last enabled one a DWORD's byte enables leave out."""
    return Mux(be[3], 0, Mux(be[2], 1, Mux(be[1], 2, 3)))


def _size_mask(m, code, sizes, name):
    """Return ``size - 1`` for the 3-bit size ``code`` (128 << code bytes), 128 if reserved."""
    mask = Signal(12, name=name)
    with m.Switch(code):
        for value, size in enumerate(sizes):
            with m.Case(value):
                m.d.comb += mask.eq(size - 1)
        with m.Default():
            m.d.comb += mask.eq(127)
    return mask


def _to_boundary(addr_lo, mask):
    """Return the DWORDs from the DWORD address ``addr_lo`` to the next ``mask + 1`` boundary."""
    return ((~addr_lo & mask) >> 2) + 1


class USPCompleter(wiring.Component):
    """Serve the hard IP's completer requests (CQ) with the core and complete them (CC).

    Memory reads and writes whose BAR id the BAR map knows, whose aperture matches it and which
    stay inside it become core requests of at most 256 DWORDs each; a longer TLP becomes several.
    Writes are posted: the core's acknowledgement is swallowed here. A read's completions follow
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
    """

    def __init__(self, bars, addr_width):
        self._bars = tuple(bars)
        super().__init__({
            "cq":           In(stream.Signature(_dw_in_layout(CQ_BE_WIDTH))),
            "cc":           Out(stream.Signature(_dw_out_layout(0))),
            "req":          Out(stream.Signature(guest_req_layout(addr_width, 32))),
            "cpl":          In(stream.Signature(cpl_layout(32))),
            "max_payload":  In(2),
            "np_req":       Out(2),
            "np_req_count": In(6),
            "np_dropped":   In(1),
            "memory_enable": In(1),
            "cpl_error":    In(1),
            "cc_clear":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cq, cc, req, cpl = self.cq, self.cc, self.req, self.cpl
        addr_width = len(req.payload.addr)

        # -- the descriptor of the TLP at hand -----------------------------------------------------
        desc = Signal(CQ_DESCRIPTOR)
        first_be = Signal(4)
        last_be = Signal(4)
        hdr_last = Signal()         # the descriptor was the whole packet: no payload
        hdr_idx = Signal(2)

        address = Cat(C(0, 2), desc.address)
        dwc = desc.dword_count
        req_type = desc.request_type
        bar_id = desc.bar_id
        aperture = desc.bar_aperture

        # -- BAR map: hard-IP BAR index to core BAR, checked against aperture and size -------------
        bar_ok = Signal()
        core_bar = Signal(3)
        bar_offset = Signal(addr_width)
        for b in self._bars:
            bits = exact_log2(b.size)
            dw_end = Signal(bits + 12, name=f"bar{b.index}_dw_end")
            m.d.comb += dw_end.eq(address[2:bits] + dwc)
            with m.If(bar_id == b.index):
                m.d.comb += [
                    # An aperture unlike ours means the IP was configured unlike this top: refuse
                    # rather than alias.
                    bar_ok.eq((aperture == bits) & (dw_end <= (b.size >> 2))),
                    core_bar.eq(b.function),
                    bar_offset.eq(address[:bits]),
                ]

        is_read = req_type == ReqType.MEM_READ
        is_write = req_type == ReqType.MEM_WRITE
        # A zero-length read is a flush: nothing to read, only ordering to keep.
        zero_len = is_read & (dwc == 1) & (first_be == 0)
        posted = req_type.matches(*_POSTED)
        supported = Signal()
        m.d.comb += supported.eq(bar_ok & self.memory_enable & (dwc != 0) &
                                 ((is_read & hdr_last) | (is_write & ~hdr_last)))

        # Byte count and lower address of a memory read (PCIe base spec, 2.3.1.1).
        bc_total = Signal(13)
        with m.If(dwc == 1):
            m.d.comb += bc_total.eq(Mux(first_be == 0, 1,
                                        4 - _trailing_zeros(first_be) - _leading_zeros(first_be)))
        with m.Else():
            m.d.comb += bc_total.eq((dwc << 2) - _trailing_zeros(first_be) -
                                    _leading_zeros(last_be))
        la_first = Signal(7)
        m.d.comb += la_first.eq(Cat(C(0, 2), desc.address[:5]) +
                                Mux(first_be == 0, 0, _trailing_zeros(first_be)))

        # -- progress through the TLP --------------------------------------------------------------
        tot_rem = Signal(11)        # DWORDs of the TLP not yet moved
        chunk_len = Signal(9)       # DWORDs of the current core request
        chunk_rem = Signal(9)       # of those, not yet moved
        core_off = Signal(addr_width)   # BAR offset of the next core request
        first_dw = Signal()         # the next write DWORD is the TLP's first
        first_chunk = Signal()
        first_cpl = Signal()
        resume_data = Signal()      # a new core request was made in the middle of a completion
        pa_lo = Signal(12)          # low address bits of the next DWORD to complete
        bc_rem = Signal(13)         # byte count still to complete
        cpl_rem = Signal(9)         # DWORDs left in the completion being sent
        desc_idx = Signal(2)
        ur_after_drain = Signal()
        acks = Signal(4)            # core write acknowledgements still to swallow

        mps_mask = _size_mask(m, self.max_payload, (128, 256, 512, 1024), "mps_mask")
        to_mps = Signal(11)
        m.d.comb += to_mps.eq(_to_boundary(pa_lo, mps_mask))
        cpl_len = Signal(11)
        m.d.comb += cpl_len.eq(Mux(tot_rem < to_mps, tot_rem, to_mps))

        # The core completes in order: the first `acks` beats are acknowledgements of writes.
        swallow = Signal()
        ack_taken = Signal()
        ack_made = Signal()
        m.d.comb += swallow.eq(acks != 0)
        with m.If(swallow):
            m.d.comb += [cpl.ready.eq(1), ack_taken.eq(cpl.valid)]
        m.d.sync += acks.eq(acks + ack_made - ack_taken)

        # -- non-posted flow control ---------------------------------------------------------------
        np_granted = Signal(2)      # credits given to the IP and not yet used
        np_pulse = Signal()
        np_used = Signal()
        want = (np_granted == 0) & (self.np_req_count == 0) & ~np_pulse
        m.d.sync += np_pulse.eq(want)
        m.d.comb += self.np_req.eq(Cat(np_pulse, C(0, 1)))
        # A request the IP had a credit for from before our reset saturates at 0 here.
        spent = Signal(2)
        m.d.comb += spent.eq(np_used + self.np_dropped)
        m.d.sync += np_granted.eq(Mux(np_granted > spent, np_granted - spent, 0) + want)

        # -- completion descriptors ----------------------------------------------------------------
        cc_status = Signal(3)
        cc_dwc = Signal(11)
        cc_bc = Signal(13)
        cc_la = Signal(7)
        tlp_bc = Signal(13)         # byte count and lower address of the completion at hand
        tlp_la = Signal(7)
        cc_desc = Signal(CC_DESCRIPTOR)
        m.d.comb += [
            cc_desc.lower_address.eq(cc_la),
            cc_desc.byte_count.eq(cc_bc),
            cc_desc.locked_read_completion.eq(req_type == ReqType.MEM_READ_LOCKED),
            cc_desc.dword_count.eq(cc_dwc),
            cc_desc.completion_status.eq(cc_status),
            cc_desc.requester_id.eq(desc.requester_id),
            cc_desc.tag.eq(desc.tag),
            # Completer ID: the function from the request; the IP fills in the bus number.
            cc_desc.completer_id.eq(desc.target_function),
            cc_desc.transaction_class.eq(desc.transaction_class),
            cc_desc.attributes.eq(desc.attributes),
        ]

        def send_desc(last):
            m.d.comb += [cc.valid.eq(1),
                         cc.payload.data.eq(cc_desc.as_value().word_select(desc_idx, 32)),
                         cc.payload.last.eq(last & (desc_idx == 2))]
            done = Signal()
            m.d.comb += done.eq(cc.ready & (desc_idx == 2))
            with m.If(cc.ready):
                m.d.sync += desc_idx.eq(Mux(desc_idx == 2, 0, desc_idx + 1))
            return done

        with m.FSM(name="fsm"):
            with m.State("HDR"):
                m.d.comb += cq.ready.eq(1)
                with m.If(cq.valid):
                    idx = Mux(cq.payload.first, 0, hdr_idx)
                    m.d.sync += desc.as_value().word_select(idx, 32).eq(cq.payload.data)
                    with m.If(cq.payload.first):
                        m.d.sync += [
                            first_be.eq(cq.payload.user[CQ_FIRST_BE]),
                            last_be.eq(cq.payload.user[CQ_LAST_BE]),
                        ]
                    m.d.sync += hdr_idx.eq(idx + 1)
                    with m.If(idx == 3):
                        m.d.sync += [hdr_idx.eq(0), hdr_last.eq(cq.payload.last)]
                        m.next = "DECODE"
                    with m.Elif(cq.payload.last):
                        # A packet shorter than a descriptor: nothing to answer it with.
                        m.d.sync += hdr_idx.eq(0)

            with m.State("DECODE"):
                m.d.comb += np_used.eq(~posted)
                m.d.sync += [
                    tot_rem.eq(dwc), core_off.eq(bar_offset), first_dw.eq(1),
                    first_chunk.eq(1), first_cpl.eq(1), resume_data.eq(0),
                    pa_lo.eq(Cat(C(0, 2), desc.address[:10])), bc_rem.eq(bc_total),
                    chunk_len.eq(Mux(dwc > 256, 256, dwc)),
                    chunk_rem.eq(Mux(dwc > 256, 256, dwc)),
                    ur_after_drain.eq(~posted),
                ]
                with m.If(supported & is_write):
                    m.next = "WRITE"
                with m.Elif(supported & zero_len):
                    m.next = "ZLR-DESC"
                with m.Elif(supported & is_read):
                    m.next = "RD-REQ"
                with m.Elif(~hdr_last):
                    m.next = "DRAIN"
                with m.Elif(~posted):
                    m.next = "UR-DESC"
                with m.Else():
                    m.next = "HDR"

            # -- posted writes: payload DWORDs straight into core write requests -------------------
            with m.State("WRITE"):
                be = Mux(first_dw, first_be, Mux(tot_rem == 1, last_be, 0xF))
                m.d.comb += [
                    req.valid.eq(cq.valid),
                    req.payload.bar.eq(core_bar),
                    req.payload.addr.eq(core_off),
                    req.payload.write.eq(1),
                    req.payload.count.eq(chunk_len - 1),
                    req.payload.data.eq(cq.payload.data),
                    req.payload.be.eq(be),
                    cq.ready.eq(req.ready),
                ]
                with m.If(cq.valid & req.ready):
                    m.d.sync += [first_dw.eq(0), tot_rem.eq(tot_rem - 1),
                                 chunk_rem.eq(chunk_rem - 1)]
                    with m.If(chunk_rem == 1):
                        m.d.comb += ack_made.eq(1)
                        m.d.sync += [
                            core_off.eq(core_off + (chunk_len << 2)),
                            chunk_len.eq(Mux(tot_rem - 1 > 256, 256, tot_rem - 1)),
                            chunk_rem.eq(Mux(tot_rem - 1 > 256, 256, tot_rem - 1)),
                        ]
                    with m.If(tot_rem == 1):
                        m.next = "HDR"

            with m.State("DRAIN"):
                m.d.comb += cq.ready.eq(1)
                with m.If(cq.valid & cq.payload.last):
                    with m.If(ur_after_drain):
                        m.next = "UR-DESC"
                    with m.Else():
                        m.next = "HDR"

            # -- reads: core requests, then completions of at most Max_Payload_Size ----------------
            with m.State("RD-REQ"):
                m.d.comb += [
                    req.valid.eq(1),
                    req.payload.bar.eq(core_bar),
                    req.payload.addr.eq(core_off),
                    req.payload.write.eq(0),
                    req.payload.count.eq(chunk_len - 1),
                    # The first request carries the TLP's first byte enables: a read-to-trigger
                    # register must see which bytes the guest touched.
                    req.payload.be.eq(Mux(first_chunk, first_be, 0xF)),
                ]
                with m.If(req.ready):
                    m.d.sync += [chunk_rem.eq(chunk_len), core_off.eq(core_off + (chunk_len << 2)),
                                 first_chunk.eq(0)]
                    with m.If(first_chunk):
                        m.next = "RD-STATUS"
                    with m.Elif(resume_data):
                        m.next = "CPL-DATA"
                    with m.Else():
                        m.next = "CPL-DESC"

            with m.State("RD-STATUS"):
                # The descriptor goes out before the data: look at the first beat's status first.
                with m.If(~swallow & cpl.valid):
                    with m.If(cpl.payload.status == CplStatus.UR):
                        m.next = "UR-DESC"
                    with m.Elif(self.cpl_error):
                        m.d.sync += [bc_rem.eq(bc_total), pa_lo.eq(la_first), first_cpl.eq(0)]
                        m.next = "CA-DESC"
                    with m.Else():
                        m.next = "CPL-DESC"

            with m.State("CA-DESC"):
                # Completer Abort (PCIe 2.3.1): no data, the byte count and lower address of
                # the bytes it stands for; the core's beats still owed are drained after it.
                m.d.comb += [cc_status.eq(CplStatus_CA), cc_dwc.eq(0), cc_bc.eq(bc_rem),
                             cc_la.eq(pa_lo[:7])]
                with m.If(send_desc(last=True)):
                    with m.If(chunk_rem == 0):
                        m.next = "HDR"
                    with m.Else():
                        m.next = "RD-DRAIN"

            with m.State("CPL-DESC"):
                m.d.comb += [
                    cc_status.eq(0), cc_dwc.eq(cpl_len), cc_bc.eq(bc_rem),
                    cc_la.eq(Mux(first_cpl, la_first, pa_lo[:7])),
                ]
                with m.If(send_desc(last=False)):
                    m.d.sync += [tlp_bc.eq(cc_bc), tlp_la.eq(cc_la)]
                    sent = (cpl_len << 2) - Mux(first_cpl, la_first[:2], 0)
                    m.d.sync += [cpl_rem.eq(cpl_len), bc_rem.eq(bc_rem - sent), first_cpl.eq(0)]
                    m.next = "CPL-DATA"

            with m.State("CPL-DATA"):
                with m.If(~swallow & self.cpl_error):
                    # The host failed this DWORD: the completion gathered so far never leaves
                    # (CC holds whole TLPs), and a Completer Abort ends the request instead.
                    # The completions already sent were whole and good.
                    m.d.comb += [cpl.ready.eq(cpl.valid), self.cc_clear.eq(cpl.valid)]
                    with m.If(cpl.valid):
                        m.d.sync += [chunk_rem.eq(chunk_rem - 1), bc_rem.eq(tlp_bc),
                                     pa_lo.eq(tlp_la), first_cpl.eq(0)]
                        m.next = "CA-DESC"
                with m.Elif(~swallow):
                    m.d.comb += [
                        cc.valid.eq(cpl.valid),
                        cc.payload.data.eq(cpl.payload.data),
                        cc.payload.last.eq(cpl_rem == 1),
                        cpl.ready.eq(cc.ready),
                    ]
                with m.If(~swallow & ~self.cpl_error & cpl.valid & cc.ready):
                    m.d.sync += [tot_rem.eq(tot_rem - 1), chunk_rem.eq(chunk_rem - 1),
                                 cpl_rem.eq(cpl_rem - 1), pa_lo.eq(pa_lo + 4)]
                    with m.If(tot_rem == 1):
                        m.next = "HDR"
                    with m.Elif(chunk_rem == 1):
                        m.d.sync += [resume_data.eq(cpl_rem != 1),
                                     chunk_len.eq(Mux(tot_rem - 1 > 256, 256, tot_rem - 1))]
                        m.next = "RD-REQ"
                    with m.Elif(cpl_rem == 1):
                        m.next = "CPL-DESC"

            # -- zero-length reads: answered here once every earlier write is out ------------------
            with m.State("ZLR-DESC"):
                m.d.comb += [cc_status.eq(0), cc_dwc.eq(1), cc_bc.eq(1), cc_la.eq(la_first)]
                # The core's write acknowledgements come once the requester's writes are on
                # the link: with none owed, this completion is behind all of them.
                with m.If(~swallow):
                    with m.If(send_desc(last=False)):
                        m.next = "ZLR-DATA"

            with m.State("ZLR-DATA"):
                m.d.comb += [cc.valid.eq(1), cc.payload.data.eq(0), cc.payload.last.eq(1)]
                with m.If(cc.ready):
                    m.next = "HDR"

            # -- Unsupported Request ---------------------------------------------------------------
            with m.State("UR-DESC"):
                m.d.comb += [
                    cc_status.eq(CplStatus.UR), cc_dwc.eq(0),
                    # A memory read's UR completion keeps its byte count and lower address;
                    # everything else's are 4 and 0.
                    cc_bc.eq(Mux(is_read, bc_total, 4)),
                    cc_la.eq(Mux(is_read, la_first, 0)),
                ]
                with m.If(send_desc(last=True)):
                    # A read the core refused still owes its completion beats: drain them.
                    with m.If(supported & is_read):
                        m.next = "RD-DRAIN"
                    with m.Else():
                        m.next = "HDR"

            with m.State("RD-DRAIN"):
                with m.If(~swallow):
                    m.d.comb += cpl.ready.eq(1)
                    with m.If(cpl.valid):
                        m.d.sync += chunk_rem.eq(chunk_rem - 1)
                        with m.If(chunk_rem == 1):
                            m.next = "HDR"
        return m


class USPRequester(wiring.Component):
    """Carry the core's DMA out as memory requests (RQ) and reassemble their completions (RC).

    A DMA request at object offset ``o`` goes to host address ``host_base + o``.

    Writes are collected, then sent as posted memory writes of at most Max_Payload_Size, none
    crossing a 4 KiB boundary. The core's write is acknowledged once the hard IP has reported the
    sequence number of the last of them (``pcie_rq_seq_num0``): from then on nothing the device
    sends on CC can overtake them, which is what PCIe's ordering rules need to hold across the
    IP's two interfaces. Before the core's next control request (OPEN, CLOSE) leaves for the host
    over its own channel, which no PCIe ordering covers, a zero-length read flushes the writes
    into host memory (``flush``/``dirty``).

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
        Bus Master Enable; without it a request fails without reaching RQ.
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
    """

    def __init__(self, addr_width, *, cpl_timeout=DEFAULT_CPL_TIMEOUT):
        if not isinstance(cpl_timeout, int) or cpl_timeout < 1:
            raise ValueError(f"cpl_timeout must be a positive integer, not {cpl_timeout!r}")
        self._cpl_timeout = cpl_timeout
        super().__init__({
            "rq":            Out(stream.Signature(_dw_out_layout(RQ_USER_WIDTH))),
            "rc":            In(stream.Signature(_dw_in_layout(RC_USER_WIDTH))),
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
        })

    def elaborate(self, platform):
        m = Module()
        rq, rc, dma_req, dma_rsp = self.rq, self.rc, self.dma_req, self.dma_rsp

        m.submodules.buf = buf = Memory(shape=32, depth=_BUF_DWORDS, init=[])
        wr = buf.write_port()
        rd = buf.read_port()
        have = Signal(_BUF_DWORDS)      # DWORDs of the current read that have arrived
        pend = Signal(_BUF_DWORDS)      # ... in the completion at hand, not yet known good

        # -- tags ----------------------------------------------------------------------------------
        outstanding = Signal(_TAGS)     # the current read's tags still owed completions
        stale = Signal(_TAGS)           # tags of earlier reads still owed completions
        set_out = Signal(_TAGS)
        clr_out = Signal(_TAGS)
        set_stale = Signal(_TAGS)
        clr_stale = Signal(_TAGS)
        m.d.sync += [outstanding.eq((outstanding | set_out) & ~clr_out),
                     stale.eq((stale | set_stale) & ~clr_stale)]
        busy = outstanding | stale
        next_tag = Signal(5)

        # -- the request at hand -------------------------------------------------------------------
        addr = Signal(64)           # host address of the next TLP
        count = Signal(8)           # DWORDs - 1
        rem = Signal(9)             # DWORDs not yet put into a TLP
        ptr = Signal(9)             # write: next DWORD to send; read: next DWORD to hand over
        tlp_rem = Signal(9)
        first_be = Signal(4)
        last_be = Signal(4)
        fail = Signal()             # bus mastering was off: nothing goes out
        start_lo = Signal(12)       # low address bits of the read's first DWORD
        epoch = Signal(3)           # which read completions may still write the buffer for
        desc_idx = Signal(2)
        out_err = Signal()
        timer = Signal(range(self._cpl_timeout + 1))
        timed_out = Signal()
        m.d.comb += timed_out.eq(timer == self._cpl_timeout)
        given_up = Signal()         # the read timed out: whatever has not come fails at once
        progress = Signal()         # a completion of ours arrived (set by the RC side below)
        seq = Signal(6)             # sequence number of the next RQ TLP
        last_seq = Signal(6)        # ... of the last write TLP sent
        flush_addr = Signal(64)     # a DWORD of the object the last write touched
        flushing = Signal()         # the TLP at hand is a zero-length read
        dirty = self.dirty

        mps_mask = _size_mask(m, self.max_payload, (128, 256, 512, 1024), "mps_mask")
        mrrs_mask = _size_mask(m, self.max_read_req, (128, 256, 512, 1024, 2048, 4096),
                               "mrrs_mask")
        is_write = Signal()
        tlp_len = Signal(11)
        limit = Signal(11)
        m.d.comb += limit.eq(_to_boundary(addr[:12], Mux(is_write, mps_mask, mrrs_mask)))
        with m.If(flushing):
            m.d.comb += tlp_len.eq(1)
        with m.Else():
            m.d.comb += tlp_len.eq(Mux(rem < limit, rem, limit))

        # Byte enables of a write TLP from ptr: the request's first and last DWORDs carry the
        # core's, every DWORD between them is whole (the completer only makes such writes).
        tlp_first_be = Signal(4)
        tlp_last_be = Signal(4)
        ends_request = (ptr + tlp_len - 1) == count
        with m.If(flushing):
            pass                    # a zero-length read: no byte enabled
        with m.Elif(~is_write):
            # The request's last DWORD carries the core's enables: none past the object.
            ends_read = rem == tlp_len
            with m.If(tlp_len == 1):
                m.d.comb += tlp_first_be.eq(Mux(ends_read, last_be, 0xF))
            with m.Else():
                m.d.comb += [tlp_first_be.eq(0xF), tlp_last_be.eq(Mux(ends_read, last_be, 0xF))]
        with m.Elif(tlp_len == 1):
            m.d.comb += tlp_first_be.eq(Mux(ptr == 0, first_be, Mux(ends_request, last_be, 0xF)))
        with m.Else():
            m.d.comb += [tlp_first_be.eq(Mux(ptr == 0, first_be, 0xF)),
                         tlp_last_be.eq(Mux(ends_request, last_be, 0xF))]

        # Requester ID 0 with Requester ID Enable clear: the IP puts in the function's own.
        # Everything not set here is 0: address type untranslated, TC 0, no attributes.
        rq_desc = Signal(RQ_DESCRIPTOR)
        m.d.comb += [
            rq_desc.address.eq(addr[2:]),
            rq_desc.dword_count.eq(tlp_len),
            rq_desc.request_type.eq(Mux(is_write, ReqType.MEM_WRITE, ReqType.MEM_READ)),
            rq_desc.tag.eq(Mux(is_write, 0, next_tag)),
        ]
        # RQ tuser: byte enables, and the sequence number the IP reports once the TLP is on its
        # way (bits 27:24 and 61:60); address offset, discontinue, TPH and parity stay 0.
        rq_user = Cat(tlp_first_be, tlp_last_be, C(0, 16), seq[:4], C(0, 32), seq[4:6])

        def send_desc():
            # A read is its descriptor alone; a write's payload follows.
            m.d.comb += [rq.valid.eq(1),
                         rq.payload.data.eq(rq_desc.as_value().word_select(desc_idx, 32)),
                         rq.payload.last.eq(~is_write & (desc_idx == 3)),
                         rq.payload.user.eq(rq_user)]
            done = Signal()
            m.d.comb += done.eq(rq.ready & (desc_idx == 3))
            with m.If(rq.ready):
                m.d.sync += desc_idx.eq(desc_idx + 1)
            with m.If(done):
                m.d.sync += seq.eq(seq + 1)
            return done

        def count_down(moved=progress):
            with m.If(moved):
                m.d.sync += timer.eq(0)
            with m.Elif(~timed_out):
                m.d.sync += timer.eq(timer + 1)

        resolved = (outstanding == 0) | timed_out | given_up | fail
        # The core pairs answers with requests by tag: every answer beat echoes the request's.
        tag = Signal(len(dma_req.payload.tag))
        m.d.comb += dma_rsp.payload.tag.eq(tag)
        with m.FSM(name="fsm"):
            with m.State("IDLE"):
                m.d.comb += dma_req.ready.eq(~dma_req.payload.write)
                m.d.sync += [timer.eq(0), flushing.eq(0)]
                with m.If(dma_req.valid):
                    m.d.sync += [
                        tag.eq(dma_req.payload.tag),
                        addr.eq(self.host_base + dma_req.payload.addr),
                        count.eq(dma_req.payload.count),
                        is_write.eq(dma_req.payload.write),
                        fail.eq(~self.bus_master),
                        ptr.eq(0), desc_idx.eq(0),
                    ]
                    with m.If(~dma_req.payload.write):
                        m.d.sync += last_be.eq(dma_req.payload.be)
                    with m.If(dma_req.payload.write):
                        # Pending from now on, not from when it leaves: a control request
                        # the core makes meanwhile (after giving up on the acknowledgement)
                        # must wait for this write and its flush.
                        m.d.sync += [flush_addr.eq(self.host_base + dma_req.payload.addr),
                                     dirty.eq(self.bus_master | dirty)]
                        m.next = "W-COLLECT"
                    with m.Else():
                        m.next = "R-START"
                with m.Elif(self.flush & dirty & ~self.bus_master):
                    # Without Bus Master Enable the function may send nothing, a flush
                    # included: the writes already sent are ordered only by the link.
                    m.d.sync += dirty.eq(0)
                with m.Elif(self.flush & dirty):
                    m.d.sync += [addr.eq(flush_addr), is_write.eq(0), flushing.eq(1),
                                 desc_idx.eq(0)]
                    m.next = "F-TLP"

            # -- writes ----------------------------------------------------------------------------
            with m.State("W-COLLECT"):
                # All of it first: the last DWORD's byte enables go in front of the last TLP.
                m.d.comb += dma_req.ready.eq(1)
                with m.If(dma_req.valid):
                    m.d.comb += [wr.addr.eq(ptr), wr.data.eq(dma_req.payload.data), wr.en.eq(1)]
                    m.d.sync += [ptr.eq(ptr + 1), last_be.eq(dma_req.payload.be)]
                    with m.If(ptr == 0):
                        m.d.sync += first_be.eq(dma_req.payload.be)
                    with m.If(ptr == count):
                        m.d.sync += [ptr.eq(0), rem.eq(count + 1)]
                        with m.If(fail):
                            m.next = "W-ACK"
                        with m.Else():
                            m.next = "W-TLP"

            with m.State("W-TLP"):
                m.d.comb += rd.addr.eq(ptr)
                with m.If(send_desc()):
                    m.d.sync += [tlp_rem.eq(tlp_len), rem.eq(rem - tlp_len), last_seq.eq(seq)]
                    m.next = "W-DATA"

            with m.State("W-DATA"):
                took = rq.ready
                m.d.comb += [
                    rq.valid.eq(1),
                    rq.payload.data.eq(rd.data),
                    rq.payload.last.eq(tlp_rem == 1),
                    rd.addr.eq(Mux(took, ptr + 1, ptr)),
                ]
                with m.If(took):
                    m.d.sync += [ptr.eq(ptr + 1), tlp_rem.eq(tlp_rem - 1), addr.eq(addr + 4)]
                    with m.If(tlp_rem == 1):
                        with m.If(rem == 0):
                            m.d.sync += timer.eq(0)
                            m.next = "W-SEQ"
                        with m.Else():
                            m.next = "W-TLP"

            with m.State("W-SEQ"):
                # The IP reports sequence numbers in order: the last write's means all are out.
                count_down(moved=self.seq_num_valid)
                with m.If((self.seq_num_valid & (self.seq_num == last_seq)) | timed_out):
                    m.next = "W-ACK"

            with m.State("W-ACK"):
                m.d.comb += [dma_rsp.valid.eq(1), dma_rsp.payload.err.eq(fail),
                             dma_rsp.payload.last.eq(1)]
                with m.If(dma_rsp.ready):
                    m.next = "IDLE"

            # -- flush before a control request ----------------------------------------------------
            with m.State("F-TLP"):
                with m.If((desc_idx == 0) & busy.bit_select(next_tag, 1)):
                    m.d.sync += next_tag.eq(next_tag + 1)
                with m.Else():
                    with m.If(send_desc()):
                        m.d.comb += set_out.bit_select(next_tag, 1).eq(1)
                        m.d.sync += next_tag.eq(next_tag + 1)
                        m.next = "F-WAIT"

            with m.State("F-WAIT"):
                # Its completion cannot pass the writes before it: once it is here, they landed.
                count_down()
                with m.If((outstanding == 0) | timed_out):
                    m.d.comb += [set_stale.eq(outstanding), clr_out.eq(outstanding)]
                    m.d.sync += [dirty.eq(0), epoch.eq(epoch + 1)]
                    m.next = "IDLE"

            # -- reads -----------------------------------------------------------------------------
            with m.State("R-START"):
                m.d.sync += [have.eq(0), start_lo.eq(addr[:12]), rem.eq(count + 1),
                             given_up.eq(0)]
                with m.If(fail):
                    m.next = "R-WAIT"
                with m.Else():
                    m.next = "R-TLP"

            with m.State("R-TLP"):
                with m.If((desc_idx == 0) & busy.bit_select(next_tag, 1)):
                    # Still owed completions from an earlier read: try the next tag.
                    m.d.sync += next_tag.eq(next_tag + 1)
                with m.Else():
                    with m.If(send_desc()):
                        m.d.comb += set_out.bit_select(next_tag, 1).eq(1)
                        m.d.sync += [next_tag.eq(next_tag + 1), rem.eq(rem - tlp_len),
                                     addr.eq(addr + (tlp_len << 2))]
                        with m.If(rem == tlp_len):
                            m.next = "R-WAIT"

            with m.State("R-WAIT"):
                m.d.comb += rd.addr.eq(ptr)
                here = have.bit_select(ptr, 1)
                with m.If(here | resolved):
                    m.d.sync += [out_err.eq(~here), given_up.eq(given_up | timed_out)]
                    m.next = "R-SEND"
                with m.Else():
                    count_down()

            with m.State("R-SEND"):
                m.d.comb += [
                    rd.addr.eq(ptr),
                    dma_rsp.valid.eq(1),
                    dma_rsp.payload.data.eq(Mux(out_err, 0xFFFF_FFFF, rd.data)),
                    dma_rsp.payload.err.eq(out_err),
                    dma_rsp.payload.last.eq(ptr == count),
                ]
                with m.If(dma_rsp.ready):
                    m.d.sync += [ptr.eq(ptr + 1), timer.eq(0)]
                    with m.If(ptr == count):
                        m.next = "R-DONE"
                    with m.Else():
                        m.next = "R-WAIT"

            with m.State("R-DONE"):
                # Completions still owed keep their tags out of use until they come.
                m.d.comb += [set_stale.eq(outstanding), clr_out.eq(outstanding)]
                # From here on, a completion of this read still on its way writes nothing.
                m.d.sync += epoch.eq(epoch + 1)
                m.next = "IDLE"

        # -- completions (RC), independent of the request side -------------------------------------
        r0 = Signal(32)
        r1 = Signal(32)
        rc_idx = Signal(2)
        rc_tag = Signal(5)
        rc_known = Signal()         # the completion belongs to the current read
        rc_ok = Signal()            # ... and carries good data
        rc_release = Signal()       # its tag is done with once the packet ends
        rc_epoch = Signal(3)
        widx = Signal(10)
        rc = self.rc
        with m.FSM(name="rc_fsm"):
            with m.State("HDR"):
                m.d.comb += rc.ready.eq(1)
                with m.If(rc.valid):
                    idx = Mux(rc.payload.first, 0, rc_idx)
                    with m.If(idx == 0):
                        m.d.sync += [r0.eq(rc.payload.data), rc_idx.eq(1)]
                    with m.Elif(idx == 1):
                        m.d.sync += [r1.eq(rc.payload.data), rc_idx.eq(2)]
                    with m.Else():
                        rcd = RC_DESCRIPTOR(Cat(r0, r1, rc.payload.data))
                        tag8 = rcd.tag
                        lower_addr = rcd.lower_address
                        error_code = rcd.error_code
                        completed = rcd.request_completed
                        status = rcd.completion_status
                        poisoned = rcd.poisoned_completion
                        in_range = tag8 < _TAGS
                        known = in_range & outstanding.bit_select(tag8[:5], 1)
                        # A discontinued completion without payload is known so at once.
                        cut = rc.payload.last & rc.payload.user[RC_DISCONTINUE]
                        ok = known & (error_code == 0) & (status == 0) & ~poisoned & ~cut
                        # A bad completion ends what this read waits for; a tag the IP still
                        # tracks is parked until the IP says it is done. A discontinued one's
                        # descriptor is not to be trusted: its tag is parked for good.
                        release = known & (completed | ~ok)
                        with m.If(known & ~ok & (~completed | cut)):
                            m.d.comb += set_stale.bit_select(tag8[:5], 1).eq(1)
                        with m.If(in_range & ~known & completed & ~cut):
                            m.d.comb += clr_stale.bit_select(tag8[:5], 1).eq(1)
                        m.d.comb += progress.eq(known)
                        m.d.sync += [
                            rc_idx.eq(0), rc_tag.eq(tag8[:5]), rc_known.eq(known), rc_ok.eq(ok),
                            rc_release.eq(release), rc_epoch.eq(epoch),
                            widx.eq(lower_addr[2:] - start_lo[2:]),
                        ]
                        with m.If(rc.payload.last):
                            with m.If(release):
                                m.d.comb += clr_out.bit_select(tag8[:5], 1).eq(1)
                        with m.Else():
                            m.next = "DATA"
                    with m.If(rc.payload.last & (idx != 2)):
                        m.d.sync += rc_idx.eq(0)     # shorter than a descriptor: ignored

            with m.State("DATA"):
                m.d.comb += rc.ready.eq(1)
                with m.If(rc.valid):
                    m.d.comb += progress.eq(rc_known)
                    fresh = Signal(_BUF_DWORDS)
                    with m.If(rc_ok & (rc_epoch == epoch) & (widx <= count)):
                        m.d.comb += [wr.addr.eq(widx), wr.data.eq(rc.payload.data), wr.en.eq(1),
                                     fresh.bit_select(widx[:8], 1).eq(1)]
                    m.d.sync += widx.eq(widx + 1)
                    with m.If(rc.payload.last):
                        m.d.sync += pend.eq(0)
                        with m.If(rc.payload.user[RC_DISCONTINUE]):
                            # PG213: discard all of it. Its DWORDs never count as arrived, so
                            # the read fails them; its tag is parked for good.
                            with m.If(rc_known):
                                m.d.comb += [clr_out.bit_select(rc_tag, 1).eq(1),
                                             set_stale.bit_select(rc_tag, 1).eq(1)]
                        with m.Else():
                            # Its DWORDs count only now, all at once, and its tag is released
                            # with them, so the read side never sees a resolved tag whose
                            # DWORDs are still on their way.
                            with m.If(rc_epoch == epoch):
                                m.d.sync += have.eq(have | pend | fresh)
                            with m.If(rc_release):
                                m.d.comb += clr_out.bit_select(rc_tag, 1).eq(1)
                        m.next = "HDR"
                    with m.Else():
                        m.d.sync += pend.eq(pend | fresh)

        return m


class VMShmUSP(wiring.Component):
    """Put VMShm behind a Xilinx UltraScale+ PCIe hard IP: core, completer and requester shims.

    The hard IP owns the configuration space: it must be configured with the BARs of
    :attr:`bars` (see :meth:`hard_ip_config`), DWORD-aligned interfaces without straddling,
    client tags and no extended tags. Ports carry the hard IP's user-interface names, seen
    from the user logic (``s_axis_cq_*`` is the IP's ``m_axis_cq_*``), so each wires straight
    to the instance; ``ctl_req`` and ``ctl_rsp`` are VMShm's own control channel to the host
    (OPEN with the name, CLOSE; the answer carries the object's size and host address), and
    ``db``, ``ring``, ``peer_valid``, ``peer_id`` its doorbell ports, as the core's. A
    control request leaves only after the DMA writes before it have been flushed to the host.
    ``cfg_function_status`` is registered inside (PF0's Memory Space and Bus Master Enable,
    Interrupt Disable). The core's interrupts reach the IP's legacy and MSI interrupt ports
    through :class:`~vmshm.rtl.usp.irq.USPInterrupts` (INTA, or one MSI vector; see
    :meth:`hard_ip_config`).

    Parameters
    ----------
    axis_width : int
        Width of the four AXI streams: 64 or 256 bits.
    window_size, name_size, regs_size, host_timeout
        As for :class:`~vmshm.rtl.VMShmCore`; ``regs_size`` is 256 or 4096.
    data_width : int
        The core's data width: 32, one DWORD a beat, as TLPs count them.
    window_64bit : bool
        Make the window a 64-bit prefetchable BAR (and the name buffer BAR3), as PCIe asks of
        an endpoint's prefetchable BARs (the default); ``False`` makes it a 32-bit
        non-prefetchable BAR (BAR1, the name buffer BAR2), which is what QEMU's PCI proxy can
        carry. ``regs_size=4096, name_size=4096`` make the register and name BARs a page each,
        so a hypervisor can pass them through to a guest.
    cpl_timeout : int
        Cycles the requester waits for read completions before failing them.
    vendor_id, device_id, subsystem_vendor_id, subsystem_id, revision, class_code
        Identity the hard IP must be configured with (:meth:`hard_ip_config`); the Verilog does
        not depend on them.
    """

    def __init__(self, *, axis_width=64, window_size=DEFAULT_WINDOW_SIZE,
                 name_size=DEFAULT_NAME_SIZE, data_width=32, regs_size=BAR0_SIZE,
                 window_64bit=True, host_timeout=DEFAULT_HOST_TIMEOUT,
                 cpl_timeout=DEFAULT_CPL_TIMEOUT, vendor_id=PCI_VENDOR_ID,
                 device_id=PCI_DEVICE_ID, subsystem_vendor_id=PCI_SUBSYSTEM_VENDOR_ID,
                 subsystem_id=PCI_SUBSYSTEM_ID, revision=PCI_REVISION,
                 class_code=P.PCI_CLASS_MEMORY_RAM << 8):
        try:
            _check_width(axis_width)
            if data_width != 32:
                raise ValueError(f"data_width must be 32 for the UltraScale+ shim (one DWORD a "
                                 f"beat, as TLPs count them), not {data_width!r}")
            if regs_size not in (BAR0_SIZE, 4096):
                raise ValueError(f"regs_size must be {BAR0_SIZE} or 4096, not {regs_size!r}")
            if not isinstance(cpl_timeout, int) or cpl_timeout < 1:
                raise ValueError(f"cpl_timeout must be a positive integer, not {cpl_timeout!r}")
            for name, value, bits in (("vendor_id", vendor_id, 16), ("device_id", device_id, 16),
                                      ("subsystem_vendor_id", subsystem_vendor_id, 16),
                                      ("subsystem_id", subsystem_id, 16),
                                      ("revision", revision, 8), ("class_code", class_code, 24)):
                if not isinstance(value, int) or not 0 <= value < (1 << bits):
                    raise ValueError(f"{name} must be an integer of {bits} bits, not {value!r}")
            self._core = VMShmCore(window_size=window_size, name_size=name_size, data_width=32,
                                   regs_size=regs_size, host_timeout=host_timeout)
        except ValueError:
            self._MustUse__silence = True     # refused: never meant to be elaborated
            raise
        self._axis_width = axis_width
        self._cpl_timeout = cpl_timeout
        self._ids = dict(vendor_id=vendor_id, device_id=device_id,
                         subsystem_vendor_id=subsystem_vendor_id, subsystem_id=subsystem_id,
                         revision=revision, class_code=class_code)
        # The soft front end's layout (VMShmPCI), so one driver finds both the same way.
        self._bars = (
            BarDef(BAR_REGS, 0, regs_size),
            BarDef(BAR_WINDOW, 1, window_size, is64=window_64bit, prefetch=window_64bit),
            BarDef(BAR_NAME, 3 if window_64bit else 2, name_size),
        )
        W = axis_width
        members = {"user_clk": In(1), "user_reset": In(1)}
        for prefix, user, sink in (("s_axis_cq", CQ_USER_WIDTH, True),
                                   ("m_axis_cc", CC_USER_WIDTH, False),
                                   ("m_axis_rq", RQ_USER_WIDTH, False),
                                   ("s_axis_rc", RC_USER_WIDTH, True)):
            fwd, back = (In, Out) if sink else (Out, In)
            members.update({
                f"{prefix}_tdata": fwd(W), f"{prefix}_tuser": fwd(user),
                f"{prefix}_tlast": fwd(1), f"{prefix}_tkeep": fwd(W // 32),
                f"{prefix}_tvalid": fwd(1), f"{prefix}_tready": back(1),
            })
        members.update({
            "pcie_cq_np_req":       Out(2),
            "pcie_cq_np_req_count": In(6),
            "pcie_rq_seq_num0":     In(6),
            "pcie_rq_seq_num_vld0": In(1),
            "cfg_max_payload":      In(2),
            "cfg_max_read_req":     In(3),
            "cfg_function_status":  In(16),
            "cfg_flr_in_process":   In(4),
            "cfg_flr_done":         Out(4),
            "ctl_req":              Out(stream.Signature(ctl_req_layout())),
            "ctl_rsp":              In(stream.Signature(ctl_rsp_layout())),
            "db":                   Out(stream.Signature(db_layout())),
            "ring":                 In(stream.Signature(ring_layout())),
            "peer_valid":           In(1),
            "peer_id":              In(16),
        })
        for name, (direction, width) in {**INTX_PORTS, **MSI_PORTS}.items():
            members[name] = direction(width)
        super().__init__(members)

    @property
    def core(self):
        return self._core

    @property
    def axis_width(self):
        return self._axis_width

    @property
    def bars(self):
        """The BARs the hard IP must be configured with, as :class:`~vmshm.rtl.BarDef`."""
        return self._bars

    @property
    def ids(self):
        return dict(self._ids)

    @property
    def window_size(self):
        return self._core.window_size

    @property
    def name_size(self):
        return self._core.name_size

    @property
    def host_timeout(self):
        return self._core.host_timeout

    def capability(self):
        """Return VMShm's vendor-specific capability as bytes (ID, next pointer 0, ...).

        The hard IP must present it in its legacy capability list for the driver to find the
        BARs; the soft front end holds the same bytes at 0x40.
        """
        bar_of = {b.function: b.index for b in self._bars}
        return capability_bytes(window_size=self.window_size, name_size=self.name_size,
                                regs_bar=bar_of[BAR_REGS], window_bar=bar_of[BAR_WINDOW],
                                name_bar=bar_of[BAR_NAME])

    def hard_ip_config(self):
        """Return the hard IP settings this top needs, as plain data.

        ``bars`` maps each BAR index to ``{"size", "64bit", "prefetchable"}`` (memory BARs; the
        others disabled); ``ids`` the identity; ``interface`` the user-interface options;
        ``interrupts`` the legacy Interrupt Pin (1, INTA) and the MSI capability (one vector,
        64-bit address, per-vector masking; no MSI-X); ``capability`` the vendor-specific
        capability's bytes.
        """
        return {
            "bars": {b.index: {"size": b.size, "64bit": b.is64, "prefetchable": b.prefetch}
                     for b in self._bars},
            "ids": self.ids,
            "interface": {"axis_width": self._axis_width, "alignment": "dword",
                          "straddle": False, "client_tag": True, "extended_tag": False},
            "interrupts": {"intx_pin": 1, "msi_vectors": 1, "msi_64bit": True,
                           "msi_per_vector_mask": True, "msix": False},
            "capability": self.capability(),
        }

    def elaborate(self, platform):
        m = Module()
        # The hard IP's user clock and reset drive everything, under their own names.
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.d.comb += [cd_sync.clk.eq(self.user_clk), cd_sync.rst.eq(self.user_reset)]

        # Function Level Reset (PF0): the IP holds cfg_flr_in_process until the user logic says
        # it is done. The function's logic is reset for one cycle, then done is pulsed once.
        # The streams' converters are not reset: a whole TLP already buffered for CC or RQ
        # still leaves whole, and the IP frames CQ and RC across the reset.
        # Physical functions 1 to 3 have no logic here: theirs is done at once.
        flr = self.cfg_flr_in_process
        flr_start = Signal(4)
        flr_seen = Signal(4)
        m.d.comb += flr_start.eq(flr & ~flr_seen)
        m.d.sync += [flr_seen.eq(flr & (flr_seen | flr_start)), self.cfg_flr_done.eq(flr_start)]
        flr_reset = Signal()
        m.d.comb += flr_reset.eq(flr_start[0])
        function = ResetInserter(flr_reset)

        W = self._axis_width
        m.submodules.core = function(self._core)
        core = self._core
        m.submodules.cq_rx = cq_rx = AxisToDwords(W, CQ_USER_WIDTH)
        m.submodules.cc_tx = cc_tx = DwordsToAxis(W, CC_USER_WIDTH)
        m.submodules.rq_tx = rq_tx = DwordsToAxis(W, RQ_USER_WIDTH,
                                                  sop_user_width=RQ_USER_WIDTH)
        m.submodules.rc_rx = rc_rx = AxisToDwords(W, RC_USER_WIDTH)
        completer = USPCompleter(self._bars, self._core.addr_width)
        requester = USPRequester(self._core.addr_width, cpl_timeout=self._cpl_timeout)
        m.submodules.completer = function(completer)
        m.submodules.requester = function(requester)
        m.d.comb += rq_tx.clear.eq(flr_reset)

        def wire(prefix, axis, sink):
            for name in ("tdata", "tuser", "tlast", "tkeep", "tvalid"):
                port, inner = getattr(self, f"{prefix}_{name}"), getattr(axis, name)
                m.d.comb += inner.eq(port) if sink else port.eq(inner)
            ready = getattr(self, f"{prefix}_tready")
            m.d.comb += ready.eq(axis.tready) if sink else axis.tready.eq(ready)

        wire("s_axis_cq", cq_rx.axis, sink=True)
        wire("m_axis_cc", cc_tx.axis, sink=False)
        wire("m_axis_rq", rq_tx.axis, sink=False)
        wire("s_axis_rc", rc_rx.axis, sink=True)

        cq_buf = CqBuffer()
        m.submodules.cq_buf = function(cq_buf)
        wiring.connect(m, cq_rx.dw, cq_buf.i)
        wiring.connect(m, cq_buf.o, completer.cq)
        m.d.comb += [completer.np_dropped.eq(cq_buf.np_dropped),
                     completer.cpl_error.eq(core.cpl_error),
                     cc_tx.clear.eq(flr_reset | completer.cc_clear)]
        wiring.connect(m, completer.cc, cc_tx.dw)
        wiring.connect(m, completer.req, core.req)
        wiring.connect(m, core.cpl, completer.cpl)
        wiring.connect(m, requester.rq, rq_tx.dw)
        wiring.connect(m, rc_rx.dw, requester.rc)
        wiring.connect(m, core.host.dma_req, requester.dma_req)
        wiring.connect(m, requester.dma_rsp, core.host.dma_rsp)
        wiring.connect(m, core.host.ctl_rsp, wiring.flipped(self.ctl_rsp))
        wiring.connect(m, core.host.db, wiring.flipped(self.db))
        wiring.connect(m, core.host.ring, wiring.flipped(self.ring))
        m.d.comb += [core.host.peer_valid.eq(self.peer_valid),
                     core.host.peer_id.eq(self.peer_id)]
        # A control request waits until the writes before it have reached host memory: the
        # host may unmap the object the moment it sees CLOSE.
        ctl = core.host.ctl_req
        m.d.comb += [
            requester.flush.eq(ctl.valid),
            self.ctl_req.valid.eq(ctl.valid & ~requester.dirty),
            self.ctl_req.payload.eq(ctl.payload),
            ctl.ready.eq(self.ctl_req.ready & ~requester.dirty),
        ]

        # cfg_function_status holds 4 bits per physical function; PF0's bit 1 is Memory Space
        # Enable, bit 2 Bus Master Enable. Registered: they change only with configuration
        # writes, and the register keeps the IP's status off our critical paths.
        status = Signal(16)
        m.d.sync += status.eq(self.cfg_function_status)
        bus_master = status[2]
        m.d.comb += [
            completer.memory_enable.eq(status[1]),
            core.dma_enable.eq(bus_master),
            requester.bus_master.eq(bus_master),
            requester.host_base.eq(core.host_base),
            requester.max_payload.eq(self.cfg_max_payload),
            requester.max_read_req.eq(self.cfg_max_read_req),
            completer.max_payload.eq(self.cfg_max_payload),
            completer.np_req_count.eq(self.pcie_cq_np_req_count),
            requester.seq_num.eq(self.pcie_rq_seq_num0),
            requester.seq_num_valid.eq(self.pcie_rq_seq_num_vld0),
            self.pcie_cq_np_req.eq(completer.np_req),
        ]

        # Interrupts: not reset by FLR, so a message the IP is sending is still answered; the
        # core's reset drops its level, which the INTx handshake then follows, and the IP's
        # own reset clears MSI Enable, which drops what is owed.
        m.submodules.interrupts = irq = USPInterrupts()
        m.d.comb += [
            irq.irq.eq(core.irq),
            irq.irq_msg.eq(core.irq_msg),
            irq.bus_master.eq(bus_master),
            irq.intx_disable.eq(status[3]),
        ]
        for name, (direction, _) in {**INTX_PORTS, **MSI_PORTS}.items():
            port, inner = getattr(self, name), getattr(irq, name)
            m.d.comb += port.eq(inner) if direction is Out else inner.eq(port)
        return m
