"""Stream utilities of the UltraScale+ shim: gearboxes between the hard IP's AXI streams and
streams of DWORDs, and a FIFO that holds whole packets.

Nothing here knows what a TLP holds. TLP fields are DWORD-based and the core's data path is 32
bits, so inside the shim every stream carries one DWORD a cycle: :class:`AxisToDwords` splits
the hard IP's beats (``tkeep`` one bit per DWORD, contiguous from lane 0), :class:`DwordsToAxis`
gathers them again and, through a :class:`PacketFifo`, sends each packet back to back, as PG213
asks of CC and RQ (``tvalid`` never drops inside a packet).
"""

from amaranth.hdl import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

__all__ = ["axis_signature", "dw_in_layout", "dw_out_layout", "AxisToDwords", "PacketFifo",
           "TX_BUFFER_DWORDS", "DwordsToAxis", "SkidBuffer", "AxisSkid"]


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


def dw_in_layout(user_width):
    """Return the layout of a received stream's DWORDs: ``data``, ``first``, ``last``, ``user``.

    ``first`` marks a packet's first DWORD; ``user`` is the ``tuser`` of the beat it came in.
    """
    return data.StructLayout({"data": 32, "first": 1, "last": 1, "user": user_width})


def dw_out_layout(sop_user_width):
    """Return the layout of a transmitted stream's DWORDs: ``data``, ``last`` and ``user``.

    ``user`` (``sop_user_width`` bits) is taken with a packet's first DWORD and sent on its first
    beat only.
    """
    # A stream with no ``user`` has no such field: a field nobody drives inside a struct that a
    # process drives comes out of Yosys as X bits in simulation, not as its init value.
    fields = {"data": 32, "last": 1}
    if sop_user_width:
        fields["user"] = sop_user_width
    return data.StructLayout(fields)


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
            "dw":   Out(stream.Signature(dw_in_layout(user_width))),
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
            # The difference of two (bits + 1)-bit pointers, taken modulo 2 ** (bits + 1): as a
            # signed number it would miss a full FIFO whose write pointer had wrapped.
            self.w.ready.eq((wp - rp)[:bits + 1] != depth),
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
            # Forget the packet being written, its last entry too if it comes now (a Function
            # Level Reset in the cycle the requester hands over a TLP's last DWORD): committing
            # it here while wp went back to cp would leave cp past wp, and the next packets
            # would overwrite it while it leaves. The whole ones still go.
            m.d.sync += [wp.eq(cp), cp.eq(cp)]
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
    buffer_dwords : int
        DWORDs the buffer holds (:data:`TX_BUFFER_DWORDS`; the formal harness uses a few).

    Members
    -------
    dw : ``In(stream.Signature(...))``
        ``data``, ``last`` and, if ``sop_user_width``, ``user``.
    axis : ``Out(axis_signature(width, user_width))``
    clear : ``In(1)``
        Forget the packet being gathered (a function reset); whole packets still leave whole.
    """

    def __init__(self, width, user_width, sop_user_width=0, buffer_dwords=TX_BUFFER_DWORDS):
        self._lanes = width // 32
        self._buffer_dwords = buffer_dwords
        self._sop_user_width = sop_user_width
        super().__init__({
            "dw":   In(stream.Signature(dw_out_layout(sop_user_width))),
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
            fields["tuser"] = uw     # no field nobody drives (see dw_out_layout)
        entry = data.StructLayout(fields)
        m.submodules.fifo = fifo = PacketFifo(entry.size, self._buffer_dwords // n)
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


class SkidBuffer(wiring.Component):
    """A register slice with a skid register: every output is a flip-flop, so no path runs
    through it from ``i`` to ``o`` or from ``o.ready`` to ``i.ready``, and it still moves one
    entry a cycle. It costs one cycle of latency.

    Parameters
    ----------
    width : int
        Bits of one entry.

    Members
    -------
    i : ``In(stream.Signature(width))``
    o : ``Out(stream.Signature(width))``
    """

    def __init__(self, width):
        super().__init__({"i": In(stream.Signature(width)), "o": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        main_valid, skid_valid = Signal(), Signal()
        main, skid = Signal(len(i.payload), name="held"), Signal(len(i.payload), name="spare")
        m.d.comb += [i.ready.eq(~skid_valid), o.valid.eq(main_valid), o.payload.eq(main)]
        take_in = i.valid & ~skid_valid
        with m.If(~main_valid | o.ready):
            # The main register empties or is taken this cycle: refill it, from the skid
            # register first.
            with m.If(skid_valid):
                m.d.sync += [main.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [main.eq(i.payload), main_valid.eq(take_in)]
        with m.Elif(take_in):
            m.d.sync += [skid.eq(i.payload), skid_valid.eq(1)]
        return m


class AxisSkid(wiring.Component):
    """A :class:`SkidBuffer` on a hard-IP AXI stream: the IP's side of it is all flip-flops
    (``tready`` towards an IP source, ``tdata``/``tkeep``/``tlast``/``tuser``/``tvalid`` towards an
    IP sink), so no combinational path crosses the hard-IP boundary at ``user_clk``.

    Members
    -------
    i : ``In(axis_signature(width, user_width))``
    o : ``Out(axis_signature(width, user_width))``
    """

    _FIELDS = ("tdata", "tuser", "tlast", "tkeep")

    def __init__(self, width, user_width):
        self._widths = (width, user_width)
        super().__init__({"i": In(axis_signature(width, user_width)),
                          "o": Out(axis_signature(width, user_width))})

    def elaborate(self, platform):
        m = Module()
        width, user_width = self._widths
        m.submodules.buffer = skid = SkidBuffer(width + user_width + 1 + width // 32)
        m.d.comb += [
            skid.i.payload.eq(Cat(*(getattr(self.i, f) for f in self._FIELDS))),
            skid.i.valid.eq(self.i.tvalid),
            self.i.tready.eq(skid.i.ready),
            Cat(*(getattr(self.o, f) for f in self._FIELDS)).eq(skid.o.payload),
            self.o.tvalid.eq(skid.o.valid),
            skid.o.ready.eq(self.o.tready),
        ]
        return m
