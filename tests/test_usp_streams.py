"""The UltraScale+ shim's stream utilities alone, on Amaranth's simulator.

The gearboxes between the hard IP's beats and the shim's DWORDs, the packet FIFO in front of CC
and RQ, and the CQ buffer, each fed random packets with random stalls on both sides; every edge
is checked against the stream rules PG213 relies on (:func:`usp_harness.pg213_rules`). The whole
top runs against cocotbext-pcie's model in tests/test_pcie.py; these run in the daily subset.
"""

import pytest
from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from vmshm.rtl.usp.completer import CQ_BE_WIDTH, CQ_BUFFER_DWORDS, CqBuffer
from vmshm.rtl.usp.descriptors import CQ_DISCONTINUE, ReqType
from vmshm.rtl.usp.streams import AxisSkid, AxisToDwords, DwordsToAxis, PacketFifo
from vmshm.sim import stream_get, stream_put, wait_cycles

from usp_harness import (LIMIT, beat_layout, beats_in, beats_out, gate, get_packet, pg213_rules,
                         put_packet, run, seeded, to_beats)

WIDTHS = (64, 128, 256)
USER = 8            # tuser bits the loopback carries

class BeatsThrough(wiring.Component):
    """Harness streams of beats into and out of what ``wire(m, width)`` builds.

    ``wire`` adds its parts to ``m`` and returns the AXIS stream in and the one out.
    """

    def __init__(self, width, wire):
        self._width = width
        self._wire = wire
        super().__init__({
            "i": In(stream.Signature(beat_layout(width, USER))),
            "o": Out(stream.Signature(beat_layout(width, USER))),
        })

    def elaborate(self, platform):
        m = Module()
        axis_in, axis_out = self._wire(m, self._width)
        beats_in(m, self.i, axis_in)
        beats_out(m, axis_out, self.o)
        return m


def Loopback(width):
    """:class:`AxisToDwords` into :class:`DwordsToAxis`: the same packets, split and regathered.

    The first beat's ``tuser`` rides with the packet's first DWORD, as RQ's byte enables do.
    """
    def wire(m, width):
        m.submodules.rx = rx = AxisToDwords(width, USER)
        m.submodules.tx = tx = DwordsToAxis(width, USER, sop_user_width=USER)
        m.d.comb += [
            tx.dw.valid.eq(rx.dw.valid),
            tx.dw.payload.data.eq(rx.dw.payload.data),
            tx.dw.payload.last.eq(rx.dw.payload.last),
            tx.dw.payload.user.eq(rx.dw.payload.user),
            rx.dw.ready.eq(tx.dw.ready),
        ]
        return rx.axis, tx.axis
    return BeatsThrough(width, wire)


@pytest.mark.parametrize("width", WIDTHS)
def test_gearboxes_carry_every_packet_whole_and_hold_tvalid(width):
    """Split beats into DWORDs and gather them again: the same DWORDs, tkeep contiguous,
    the first beat's tuser only on the first beat out, and tvalid never dropping inside a
    packet however slowly its DWORDs come (PG213's rule for CC and RQ)."""
    rng = seeded(width)
    dut = Loopback(width)
    packets = [([rng.getrandbits(32) for _ in range(rng.randint(1, 40))], rng.getrandbits(USER))
               for _ in range(60)]
    got = []

    async def source(ctx):
        for dwords, user in packets:
            # Later beats carry other tuser bits, which must not leak into the packet out.
            beats = to_beats(dwords, width,
                             lambda first, last: user if first else rng.getrandbits(USER))
            await put_packet(ctx, dut.i, beats, valid_gate=gate(rng, 0.4))

    async def sink(ctx):
        for _ in packets:
            got.append(await get_packet(ctx, dut.o, width, ready_gate=gate(rng, 0.3)))

    async def main(ctx):
        await sink(ctx)

    run(dut, main, source, pg213_rules(dut.o, "out"))
    assert got == packets


class FifoWatch:
    """Count, at every edge, what a :class:`PacketFifo` took and gave: nothing of a packet may
    leave before its last entry was in, and a dropped packet never leaves."""

    def __init__(self, dut):
        self.dut = dut

    async def testbench(self, ctx):
        w, r = self.dut.w, self.dut.r
        pending = committed = read = 0
        async for _, _, wv, wr, wp, rv, rr in ctx.tick().sample(w.valid, w.ready, w.payload,
                                                                r.valid, r.ready):
            if rv and rr:
                assert read < committed, "an entry left before its packet was whole"
                read += 1
            if wv and wr:
                pending += 1
                if wp.last:
                    committed += 0 if wp.drop else pending
                    pending = 0


@pytest.mark.parametrize("seed", [1, 2])
def test_packet_fifo_keeps_every_packet_it_took(seed):
    """Random packets, a third dropped by the writer, both sides stalling and the FIFO often
    full: the kept packets come out whole, in order, each only once it is all in."""
    rng = seeded(seed)
    depth = 16
    dut = PacketFifo(16, depth)
    packets = [([rng.getrandbits(16) for _ in range(rng.randint(1, depth))], rng.random() < 0.3)
               for _ in range(80)]
    kept = [entry for entries, drop in packets if not drop for entry in entries]
    got = []

    async def writer(ctx):
        for entries, drop in packets:
            for i, entry in enumerate(entries):
                last = i == len(entries) - 1
                await stream_put(ctx, dut.w, {"data": entry, "last": last, "drop": drop and last},
                                 valid_gate=gate(rng, 0.3), timeout=LIMIT)

    async def main(ctx):
        for _ in kept:
            got.append(await stream_get(ctx, dut.r, ready_gate=gate(rng, 0.6), timeout=LIMIT))

    run(dut, main, writer, FifoWatch(dut).testbench)
    assert got == kept


def cq_tlp(rng, *, posted, discontinue, length):
    """Return the DWORDs of a CQ TLP as CqBuffer sees them: ``(data, user)`` pairs."""
    req_type = ReqType.MEM_WRITE if posted else ReqType.MEM_READ
    desc = [rng.getrandbits(32), rng.getrandbits(32),
            (rng.getrandbits(32) & ~(0xF << 11)) | (req_type << 11), rng.getrandbits(32)]
    dwords = desc + [rng.getrandbits(32) for _ in range(length - 4)]
    users = [rng.getrandbits(CQ_BE_WIDTH) for _ in dwords]
    if discontinue:
        users[-1] |= 1 << CQ_DISCONTINUE
    return list(zip(dwords, users))


async def put_tlp(ctx, port, tlp, *, valid_gate=None, timeout=LIMIT):
    for i, (dword, user) in enumerate(tlp):
        await stream_put(ctx, port, {"data": dword, "first": i == 0, "last": i == len(tlp) - 1,
                                     "user": user}, valid_gate=valid_gate, timeout=timeout)


def out_of(tlps):
    """Return the entries CqBuffer must give for ``tlps``: the byte enables of tuser only."""
    mask = (1 << CQ_BE_WIDTH) - 1
    return [(dword, user & mask, i == 0, i == len(tlp) - 1)
            for tlp in tlps for i, (dword, user) in enumerate(tlp)]


class PulseCount:
    """Count the cycles a signal is high."""

    def __init__(self, signal):
        self.signal = signal
        self.count = 0

    async def testbench(self, ctx):
        async for _, _, value in ctx.tick().sample(self.signal):
            self.count += value


def test_cq_buffer_drops_discontinued_tlps_whole():
    """Posted and non-posted TLPs, a third marked discontinued on their last DWORD: the others
    come out whole and in order with their byte enables; np_dropped pulses once for each
    non-posted one dropped (its credit is spent)."""
    rng = seeded(3)
    dut = CqBuffer()
    tlps = [(cq_tlp(rng, posted=rng.random() < 0.5, discontinue=rng.random() < 0.3,
                    length=rng.randint(4, 20))) for _ in range(60)]
    dropped = [t for t in tlps if t[-1][1] >> CQ_DISCONTINUE & 1]
    np_dropped = sum(1 for t in dropped if (t[2][0] >> 11) & 0xF == ReqType.MEM_READ)
    kept = [t for t in tlps if t not in dropped]
    pulses = PulseCount(dut.np_dropped)
    got = []

    async def writer(ctx):
        for tlp in tlps:
            await put_tlp(ctx, dut.i, tlp, valid_gate=gate(rng, 0.3))

    async def main(ctx):
        for _ in out_of(kept):
            e = await stream_get(ctx, dut.o, ready_gate=gate(rng, 0.5), timeout=LIMIT)
            got.append((e.data, e.user, e.first, e.last))
        await wait_cycles(ctx, 10)

    run(dut, main, writer, pulses.testbench)
    assert got == out_of(kept)
    assert dropped and np_dropped
    assert pulses.count == np_dropped


def test_cq_buffer_takes_posted_writes_while_the_reader_waits():
    """With the completer stalled (a window read waiting for the host), posted writes keep
    being taken until the buffer is full, then CQ stalls: nothing taken is lost. Some traffic
    has passed before, so the buffer fills across the wrap of its pointers."""
    rng = seeded(4)
    dut = CqBuffer()
    length = CQ_BUFFER_DWORDS // 4
    before = [cq_tlp(rng, posted=True, discontinue=False, length=length) for _ in range(5)]
    # Five writes, of which four fill the buffer exactly: the fifth must wait.
    tlps = [cq_tlp(rng, posted=True, discontinue=False, length=length) for _ in range(5)]
    taken = []
    got = []

    async def writer(ctx):
        for tlp in before + tlps:
            await put_tlp(ctx, dut.i, tlp, timeout=None)
            taken.append(len(tlp))

    async def take(ctx, tlps):
        for _ in out_of(tlps):
            e = await stream_get(ctx, dut.o, timeout=LIMIT)
            got.append((e.data, e.user, e.first, e.last))

    async def main(ctx):
        await take(ctx, before)
        await wait_cycles(ctx, 5 * length + 50)
        # Every DWORD of the four that fit was taken; the fifth is waiting.
        assert len(taken) == len(before) + 4 and ctx.get(dut.i.ready) == 0
        await take(ctx, tlps)

    run(dut, main, writer)
    assert got == out_of(before + tlps)


def SkidLoop(width):
    """An :class:`AxisSkid` between two harness streams of beats."""
    def wire(m, width):
        m.submodules.skid = skid = AxisSkid(width, USER)
        return skid.i, skid.o
    return BeatsThrough(width, wire)


@pytest.mark.parametrize("width", WIDTHS)
def test_skid_buffer_passes_every_beat_and_keeps_tvalid_through_packets(width):
    """The skid buffer on each hard-IP stream (issue 22, finding 6): every beat through, in
    order, one a cycle when nobody stalls, and a packet offered back to back leaves back to
    back (tvalid never drops inside it) however the sink stalls."""
    rng = seeded(width + 6)
    dut = SkidLoop(width)
    packets = [([rng.getrandbits(32) for _ in range(rng.randint(1, 40))], rng.getrandbits(USER))
               for _ in range(40)]
    got = []

    async def source(ctx):
        for dwords, user in packets:
            await put_packet(ctx, dut.i, to_beats(dwords, width, lambda f, l: user if f else 0))

    async def main(ctx):
        for _ in packets:
            got.append(await get_packet(ctx, dut.o, width, ready_gate=gate(rng, 0.4)))

    run(dut, main, source, pg213_rules(dut.o, "out"))
    assert got == packets
