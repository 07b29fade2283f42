"""Issue 22's findings on the UltraScale+ shim, each on Amaranth's simulator: what a hard IP and a
real root port would hit on a board.

Each test names the finding it guards; each failed on main before its fix (the docstring says
how). The root complex is the one tests/test_usp_shims.py plays, which checks every RQ TLP's
byte enables against PCIe Base 2.2.5 as it takes it.
"""

import pytest
from amaranth.hdl import Module, ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from vmshm.rtl.usp.descriptors import CQ_DESCRIPTOR, RC_DESCRIPTOR, RC_DISCONTINUE, ReqType
from vmshm.sim import stream_get, stream_put

from test_usp_shims import HOST_BASE, RootComplex, dma, dwords_at
from usp_harness import (LIMIT, RequesterHarness, gate, pack, pg213_rules, put_packet, run, run_top,
                         seeded, to_beats)

#: Writes the core may hand the requester, as each DWORD's byte enables. The first is what the
#: core owes after a window write timed out on its first beat (issue 22, finding 1): that beat
#: with its enables, then the rest of the burst writing nothing with the same data; the others
#: are other beats timing out, and enables a guest may give.
RAGGED_WRITES = [
    [0xF, 0, 0],
    [0xF, 0xF, 0b0011, 0, 0, 0],
    [0b1100, 0xF, 0xF, 0, 0],
    [0xF, 0b0110, 0xF, 0xF],
    [0, 0, 0],
    [0xF] * 20 + [0] * 12,
    [0b0110, 0xF, 0xF, 0b1010],
]


def apply_each(memory, addr, dwords, bes):
    """Write ``dwords`` at ``addr`` of ``memory``, each DWORD with its own byte enables."""
    for i, (dword, be) in enumerate(zip(dwords, bes)):
        for b in range(4):
            if be >> b & 1:
                memory[addr + 4 * i + b] = dword >> (8 * b) & 0xFF


@pytest.mark.parametrize("width", [64, 128, 256])
def test_finding1_owed_write_beats_never_become_a_malformed_tlp(width):
    """Finding 1 (requester side): a write whose later beats write nothing (the core's owed beats
    after a window-write timeout) or whose middle DWORDs are not whole leaves as TLPs PCIe allows
    (Last DW BE non-zero when Length > 1, every DWORD between a TLP's ends whole), and host
    memory changes only where a beat's byte enables say. On main the first write left as MWr of
    3 DWORDs with last BE 0 and beat 0's data at +4 and +8."""
    rng = seeded(width + 22)
    memory = bytearray(rng.getrandbits(8) for _ in range(0x1000))
    model = bytearray(memory)
    dut = RequesterHarness(width)
    rc = RootComplex(dut, width, rng, memory, HOST_BASE, mps=128, mrrs=128)
    acks = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        for n, bes in enumerate(RAGGED_WRITES):
            addr = 0x100 * n + 4 * n
            data = rng.getrandbits(32)
            # The owed beats repeat the data of the beat on offer, as window.py sends them.
            dwords = [data if be == 0 else rng.getrandbits(32) for be in bes]
            apply_each(model, addr, dwords, bes)
            for dword, be in zip(dwords, bes):
                await stream_put(ctx, dut.dma_req, {"write": 1, "addr": addr,
                                                    "count": len(bes) - 1, "data": dword,
                                                    "be": be, "tag": n},
                                 valid_gate=gate(rng, 0.3), timeout=LIMIT)
            beat = await stream_get(ctx, dut.dma_rsp, timeout=LIMIT)
            acks.append((beat.tag, beat.err))

    run(dut, main, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    assert acks == [(n, 0) for n in range(len(RAGGED_WRITES))]
    for desc, first_be, last_be, payload in rc.tlps:
        if desc.dword_count > 1:
            assert last_be, "Last DW BE 0 with Length > 1 (malformed)"
            assert first_be in (0x8, 0xC, 0xE, 0xF) and last_be in (0x1, 0x3, 0x7, 0xF), \
                f"byte enables {first_be:#x}/{last_be:#x} not contiguous across the TLP"
    for n, bes in enumerate(RAGGED_WRITES):
        addr = 0x100 * n + 4 * n
        assert dwords_at(memory, addr, len(bes)) == dwords_at(model, addr, len(bes)), \
            f"write {n}: host memory holds data the guest did not write"
    # DWORDs that write nothing do not go out at all.
    assert sum(t[0].dword_count for t in rc.tlps) == sum(be != 0 for w in RAGGED_WRITES
                                                         for be in w)


def test_finding5_flr_done_waits_for_the_name_ram_clear():
    """Finding 5 (UltraScale+ side): cfg_flr_done is pulsed once, only after the core's name-RAM
    clear sequencer (flr_start/flr_busy) has finished, so the IP does not end the FLR while the
    previous user's name is still readable. On main it was pulsed the cycle after the FLR began
    whatever the core was doing."""
    from vmshm.abi.bounds import flr_clear_cycles
    from vmshm.abi.regmap import DEFAULT_NAME_SIZE
    from vmshm.rtl.usp import top as usp_top
    dut = usp_top.VMShmUSP(axis_width=64)
    clear = flr_clear_cycles(DEFAULT_NAME_SIZE, 32)     # the real core's sequencer (32-bit)
    seen = []

    async def main(ctx):
        ctx.set(dut.user_reset, 1)
        for _ in range(3):
            await ctx.posedge(dut.user_clk)
        ctx.set(dut.user_reset, 0)
        await ctx.posedge(dut.user_clk)
        ctx.set(dut.cfg_flr_in_process, 0b0011)      # PF0 and PF1
        for cycle in range(clear + 20):
            await ctx.posedge(dut.user_clk)
            done = ctx.get(dut.cfg_flr_done)
            if done:
                seen.append((cycle, done))
                ctx.set(dut.cfg_flr_in_process, ctx.get(dut.cfg_flr_in_process) & ~done)

    run_top(dut, main)
    pf0 = [c for c, d in seen if d & 1]
    pf1 = [c for c, d in seen if d & 2]
    assert len(pf0) == 1 and pf0[0] >= clear, seen
    assert len(pf1) == 1 and pf1[0] < 4, seen


class OverlappingRootComplex(RootComplex):
    """Answer the first read with its first 64-byte completion, then a completion carrying
    other data at the same lower address (discontinued, or not), then the rest."""

    def __init__(self, *args, discontinue, **kwargs):
        super().__init__(*args, **kwargs)
        self.cut = discontinue

    def answer(self, desc, addr):
        super().answer(desc, addr)
        if self.reads > 1:
            return
        parts = self.pending[-1]
        bogus = pack(RC_DESCRIPTOR, lower_address=(self.base + addr) & 0xFFF,
                     byte_count=4 * desc.dword_count, request_completed=0, dword_count=16,
                     completion_status=0, tag=desc.tag)
        beats = to_beats(bogus + [0xBAD0_0000 + i for i in range(16)], self.width,
                         lambda first, last: int(last and self.cut) << RC_DISCONTINUE)
        parts.insert(1, beats)
        if self.cut:
            del parts[2:]       # the tag is parked for good: the rest would be dropped anyway


@pytest.mark.parametrize("discontinue", [True, False], ids=["discontinued", "bad-lower-address"])
def test_finding10_late_completion_never_overwrites_arrived_dwords(discontinue):
    """Finding 10: a completion that comes after the DWORDs it covers have arrived (a duplicate
    lower address; discontinued or not) writes nothing over them: the read hands over the data
    that arrived first. On main the reorder buffer took its data, and the read handed over
    0xBAD0xxxx for DWORDs 0..15."""
    rng = seeded(10 + discontinue)
    memory = bytearray(rng.getrandbits(8) for _ in range(0x1000))
    dut = RequesterHarness(64, cpl_timeout=1 << 16)
    rc = OverlappingRootComplex(dut, 64, rng, memory, HOST_BASE, mps=128, mrrs=128,
                                discontinue=discontinue)
    got = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        await stream_put(ctx, dut.dma_req, {"write": 0, "addr": 0x100, "count": 31, "data": 0,
                                            "be": 0xF, "tag": 5}, timeout=LIMIT)
        for _ in range(32):
            beat = await stream_get(ctx, dut.dma_rsp, timeout=LIMIT)
            got.append((beat.data, beat.err))

    run(dut, main, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    good = dwords_at(memory, 0x100, 32)
    assert got[:16] == [(d, 0) for d in good[:16]]
    rest = [(0xFFFF_FFFF, 1)] * 16 if discontinue else [(d, 0) for d in good[16:]]
    assert got[16:] == rest


@pytest.mark.parametrize("write", [True, False], ids=["write", "read"])
def test_finding12_bus_master_off_stops_the_rest_of_a_request(write):
    """Finding 12: Bus Master Enable is looked at before every TLP, not once per request: once
    software clears it, no further TLP of a multi-TLP write or read goes out, and the core
    hears of the rest as failed. On main all 8 TLPs of the request went out after it."""
    rng = seeded(12 + write)
    memory = bytearray(0x1000)
    dut = RequesterHarness(64)
    rc = RootComplex(dut, 64, rng, memory, HOST_BASE, mps=128, mrrs=128)
    got = []

    async def clear_bme(ctx):
        while not rc.tlps:
            await ctx.tick()
        ctx.set(dut.bus_master, 0)

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        for i in range(256 if write else 1):
            await stream_put(ctx, dut.dma_req, {"write": int(write), "addr": 0, "count": 255,
                                                "data": i, "be": 0xF, "tag": 7},
                             timeout=LIMIT)
        while True:
            beat = await stream_get(ctx, dut.dma_rsp, timeout=LIMIT)
            got.append(beat.err)
            if beat.last:
                break

    run(dut, main, clear_bme, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    assert len(rc.tlps) <= 2, f"{len(rc.tlps)} TLPs went out after Bus Master Enable went off"
    assert got[-1] == 1, "the core was not told the rest failed"


class FlrRequester(wiring.Component):
    """A :class:`RequesterHarness` inside a Function Level Reset, as the top resets it: ``flr``
    resets its logic for the cycle it is high (and tells the requester, where it listens)."""

    def __init__(self):
        self.inner = RequesterHarness(64, cpl_timeout=1 << 16)
        members = dict(self.inner.signature.members)
        members["flr"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = ResetInserter(self.flr)(self.inner)
        for name, member in self.inner.signature.members.items():
            if name == "flr":
                continue
            if member.is_port and member.flow == In:
                m.d.comb += getattr(inner, name).eq(getattr(self, name))
            elif member.is_port:
                m.d.comb += getattr(self, name).eq(getattr(inner, name))
            else:
                wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(inner, name)) \
                    if member.flow == In else \
                    wiring.connect(m, getattr(inner, name), wiring.flipped(getattr(self, name)))
        if "flr" in self.inner.signature.members:
            m.d.comb += inner.flr.eq(self.flr)
        return m


class LateRootComplex(RootComplex):
    """Hold every completion while ``hold``; then send each read's completions whole, in the
    order the reads came."""

    hold = True

    async def rc_process(self, ctx):
        while True:
            if self.hold or not self.pending:
                await ctx.tick()
                continue
            for part in self.pending.pop(0):
                await put_packet(ctx, self.dut.rc, part)


def test_finding8_flr_leaves_tags_of_reads_in_flight_out_of_use():
    """Finding 8: an FLR while a read's completions are still on their way turns its tags stale
    instead of forgetting them, so the late completions are not taken for the next read's. On
    main the FLR cleared the tag table, the next read went out with the same tag, and it handed
    over the data of the read from before the FLR."""
    rng = seeded(8)
    memory = bytearray(rng.getrandbits(8) for _ in range(0x1000))
    dut = FlrRequester()
    rc = LateRootComplex(dut, 64, rng, memory, HOST_BASE, mps=128, mrrs=128)
    got = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        req = {"write": 0, "addr": 0x100, "count": 15, "data": 0, "be": 0xF, "tag": 1}
        await stream_put(ctx, dut.dma_req, req, timeout=LIMIT)
        while not rc.tlps:
            await ctx.tick()
        ctx.set(dut.flr, 1)                 # the function is reset with the read in flight
        await ctx.tick()
        ctx.set(dut.flr, 0)
        memory[0x100:0x140] = bytes(rng.getrandbits(8) for _ in range(64))
        await stream_put(ctx, dut.dma_req, {**req, "tag": 2}, timeout=LIMIT)
        while len(rc.tlps) < 2:
            await ctx.tick()
        rc.hold = False                     # the read from before the FLR is answered first
        for _ in range(16):
            beat = await stream_get(ctx, dut.dma_rsp, timeout=LIMIT)
            got.append((beat.data, beat.err))

    run(dut, main, rc.rq_process, rc.rc_process)
    assert rc.tlps[0][0].tag != rc.tlps[1][0].tag, "the read after the FLR reused a live tag"
    assert got == [(d, 0) for d in dwords_at(memory, 0x100, 16)], \
        "the read after the FLR handed over the data of the read before it"


class _TopRequester(RequesterHarness):
    """The requester wired to an FLR as :class:`~vmshm.rtl.usp.top.VMShmUSP` wires it: ``flr``
    resets the requester for the cycle it is high (and tells it, so its tags turn stale) and
    forgets the RQ packet being gathered (``DwordsToAxis.clear``: whole ones still leave); the
    stream converters themselves are not reset, so RC stays framed across the FLR, as the hard
    IP frames it. (:class:`FlrRequester` resets the converters too.)"""

    def __init__(self):
        super().__init__(64, cpl_timeout=1 << 16)
        self._requester = ResetInserter(self.flr)(self._requester)

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += m.submodules.rq_tx.clear.eq(self.flr)
        return m


class _PausingRootComplex(RootComplex):
    """Send the first read's first completion's first ``cut`` beats, then pause RC (one stream:
    nothing else goes) until ``released``; then the rest of that completion, the first read's
    other completions, and every later read's completions whole, in the order the reads came.
    With ``cut`` None, no pause: every read's completions whole, in order, once ``released``."""

    def __init__(self, *args, cut, **kwargs):
        super().__init__(*args, **kwargs)
        self.cut, self.paused, self.released = cut, False, False

    async def rc_process(self, ctx):
        if self.cut is not None:
            while not self.pending:
                await ctx.tick()
            first, *others = self.pending.pop(0)
            await put_packet(ctx, self.dut.rc, first[:self.cut])
            self.paused = True
        while not self.released:
            await ctx.tick()
        if self.cut is not None:
            await put_packet(ctx, self.dut.rc, first[self.cut:])
            for part in others:
                await put_packet(ctx, self.dut.rc, part)
        while True:
            if not self.pending:
                await ctx.tick()
                continue
            for part in self.pending.pop(0):
                await put_packet(ctx, self.dut.rc, part)


@pytest.mark.parametrize("cut", [1, 2, None], ids=["in_descriptor", "in_data", "at_handover"])
def test_a_completion_paused_across_an_flr_is_not_taken_for_the_next_read(cut):
    """The UltraScale+ counterpart of the soft function's kept window read
    (tests/test_flr.py::test_an_answer_to_a_read_kept_through_an_flr_is_dropped): it cannot
    happen here, and this replays why. A read of 32 DWORDs (tag 0, two 16-DWORD completions
    at the 64-byte boundary) is answered; RC pauses inside its first completion (``cut`` 64-bit
    beats in: inside the descriptor, or just past it), the function is reset (FLR), the host
    changes the data, the core reads the same 32 DWORDs again and its TLP goes out; only then
    does RC go on: the rest of the cut completion, the old read's second completion (whole),
    then the new read's own. The new read must hand over the new data, all good. With
    ``at_handover`` the FLR comes instead in the cycle the requester hands RQ the old read's
    last descriptor DWORD (taking its tag); the host changes the data 20 cycles later.

    It holds on three things the FLR leaves or resets: the RC receiver keeps its place in RC
    (outside the FLR's reset, as the converter's framing is) and parses the rest of a completion
    it was in the middle of as data of no read; the tag table, reset-less, turns the old read's
    tags stale, so the tag counter restarting at 0 skips tag 0 and the old read's second
    completion matches no tag the new read waits on (it only frees tag 0 again); and RQ's
    ``clear`` drops a read TLP not yet whole, whose tag was never outstanding. To make a slip
    visible, the old data at offsets 4 to 15 is a completion descriptor for the new read's tag
    and address: read as a descriptor (the receiver's place in RC lost), its last 12 DWORDs
    would be taken as the new read's. Fails with each of the three taken away: the receiver's
    ``in_data`` and ``rc_idx`` under the FLR's reset (``in_data``: the new read gets 12 old
    DWORDs as good); the tag table's registers under the FLR's reset (``in_descriptor``
    and ``in_data``: the new read goes out as tag 0 and takes the old second completion's 16
    DWORDs); RQ's buffer committing the packet whose last entry comes with ``clear``
    (``PacketFifo``'s ``cp.eq(cp)`` removed; ``at_handover``: the old TLP leaves under tag 0,
    which the FLR left free, and the new read, under tag 0 too, takes its answer)."""
    rng = seeded(35)
    memory = bytearray(rng.getrandbits(8) for _ in range(0x1000))
    # Read 1's DWORDs 1 to 3 (the beat after the cut, at 64 bits) as the RC descriptor of a
    # completion of the rest of the new read's first 12 DWORDs under its tag (1).
    fake = pack(RC_DESCRIPTOR, lower_address=(HOST_BASE + 0x100) & 0xFFF, byte_count=48,
                request_completed=1, dword_count=12, completion_status=0, tag=1)
    memory[0x104:0x110] = b"".join(d.to_bytes(4, "little") for d in fake)
    dut = _TopRequester()
    rc = _PausingRootComplex(dut, 64, rng, memory, HOST_BASE, mps=128, mrrs=128, cut=cut)
    got = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        ctx.set(dut.max_read_req, 0)
        req = {"write": 0, "addr": 0x100, "count": 31, "data": 0, "be": 0xF, "tag": 1}
        await stream_put(ctx, dut.dma_req, req, timeout=LIMIT)
        rq = dut._requester.rq
        for _ in range(LIMIT):
            if rc.paused if cut is not None else \
                    ctx.get(rq.valid) and ctx.get(rq.ready) and ctx.get(rq.payload.last):
                break
            await ctx.tick()
        else:
            raise AssertionError("no FLR point: RC never paused, or the read never went out")
        ctx.set(dut.flr, 1)                 # the function is reset here
        await ctx.tick()
        ctx.set(dut.flr, 0)
        await ctx.tick().repeat(20 if cut is None else 1)
        memory[0x100:0x180] = bytes(b ^ 0xA5 for b in memory[0x100:0x180])
        await stream_put(ctx, dut.dma_req, {**req, "tag": 2}, timeout=LIMIT)
        for _ in range(LIMIT):
            if len(rc.tlps) == 2 - (cut is None):
                break
            await ctx.tick()
        else:
            raise AssertionError("the read after the FLR never went out")
        rc.released = True
        for _ in range(32):
            beat = await stream_get(ctx, dut.dma_rsp, timeout=LIMIT)
            assert beat.tag == 2
            got.append((beat.data, beat.err))

    before = dwords_at(memory, 0x100, 32)
    run(dut, main, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    after = dwords_at(memory, 0x100, 32)
    stale = [i for i, (data, err) in enumerate(got)
             if not err and data != after[i] and data in before]
    failed = [i for i, (_, err) in enumerate(got) if err]
    assert got == [(d, 0) for d in after], \
        f"the read after the FLR handed over the old read's DWORDs {stale} as its own, " \
        f"and failed DWORDs {failed}"
    tags = [0] if cut is None else [0, 1]
    assert [t[0].tag for t in rc.tlps] == tags, "a TLP cut off by the FLR left, or a live tag"


def _tags_after_a_last_completion_cut(dut, seed, end_read):
    """Read 8 DWORDs (tag 0), answered by one completion, its last (Request Completed), with RC
    paused inside it; ``await end_read(ctx, rc)`` ends that read; then RC goes on and the core
    reads 33 times (more reads than tags). Return the RC model and the read TLPs' tags."""
    rng = seeded(seed)
    memory = bytearray(rng.getrandbits(8) for _ in range(0x1000))
    rc = _PausingRootComplex(dut, 64, rng, memory, HOST_BASE, mps=128, mrrs=128, cut=2)

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        req = {"write": 0, "addr": 0x100, "count": 7, "data": 0, "be": 0xF, "tag": 1}
        await stream_put(ctx, dut.dma_req, req, timeout=LIMIT)
        await end_read(ctx, rc)
        rc.released = True
        for _ in range(33):
            [(_, err)] = await dma(ctx, dut, rng, write=False, addr=0x100, length=1, tag=2)
            assert not err

    run(dut, main, rc.rq_process, rc.rc_process)
    return rc, [t[0].tag for t in rc.tlps]


def test_the_tag_of_a_last_completion_an_flr_cut_is_used_again():
    """A read of 8 DWORDs (tag 0) is answered by one completion, its last (Request Completed);
    the FLR comes while RC is inside it, then the core reads 33 times (more reads than tags).
    The FLR turns tag 0 stale; the receiver, whose place in RC is outside the FLR's reset, goes
    on through the rest of that completion, takes none of it, and frees tag 0 at its end. Before
    that, the receiver was reset with the function and swallowed the rest without its tag: no
    further completion of tag 0 came to free it, so each such FLR lost a tag, and with none left
    every read waited in R-TLP for ever."""
    dut = _TopRequester()

    async def flr(ctx, rc):
        for _ in range(LIMIT):
            if rc.paused:
                break
            await ctx.tick()
        ctx.set(dut.flr, 1)
        await ctx.tick()
        ctx.set(dut.flr, 0)

    _, tags = _tags_after_a_last_completion_cut(dut, 36, flr)
    assert tags[0] == 0 and 0 in tags[1:], f"tag 0 never used again after the FLR: {tags}"


def test_the_tag_of_a_last_completion_a_read_gave_up_during_is_used_again():
    """The same loss without an FLR: a read of 8 DWORDs (tag 0) is answered by one completion,
    its last (Request Completed), and RC pauses inside it until the read has timed out (the
    requester's completion timeout): the read is over, so tag 0 turns stale while that
    completion is still coming. When the rest of it comes, the hard IP is done with tag 0 and
    the tag must be free again; the core then reads 33 times (more reads than tags). Before the
    fix the completion's end only released the tag from the read at hand (whose wait was over),
    so tag 0 stayed stale for good: each slow last completion cost a tag, and with none left
    every read hung in R-TLP."""
    dut = RequesterHarness(64, cpl_timeout=40)
    first = []

    async def time_out(ctx, rc):
        for _ in range(8):
            first.append((await stream_get(ctx, dut.dma_rsp, timeout=LIMIT)).err)

    rc, tags = _tags_after_a_last_completion_cut(dut, 37, time_out)
    assert rc.paused and first == [1] * 8, "the first read did not time out while RC paused"
    assert tags[0] == 0 and 0 in tags[1:], f"tag 0 never used again after its read gave up: {tags}"


@pytest.mark.parametrize("msi, bme", [(1, 1), (1, 0), (0, 1)])
def test_finding4_core_hears_when_messages_become_possible(msi, bme):
    """Finding 4 (UltraScale+ side): the shim tells a core that owes a message on the enabling
    edge when MSI Enable and Bus Master Enable are both set (``msi_ok``), so a vector pending
    when MSI is turned on is signalled. On main nothing drove it (the input stayed 0)."""
    from vmshm.rtl.usp import top as usp_top
    dut = usp_top.VMShmUSP(axis_width=64)
    seen = []

    async def main(ctx):
        ctx.set(dut.cfg_function_status, bme << 2)
        ctx.set(dut.cfg_interrupt_msi_enable, msi)
        for _ in range(4):
            await ctx.posedge(dut.user_clk)
        seen.append(ctx.get(dut._core.msi_ok))

    run_top(dut, main)
    assert seen == [msi & bme]


#: Cycles after an FLR starts in which RQ may still offer, where the IP takes every beat at once
#: (64 bits, 128-byte Max_Payload_Size): the requester fills RQ's buffer one DWORD a cycle and it
#: drains two, so at most one whole TLP (a descriptor and 32 DWORDs) waits there; its beats,
#: plus the skid buffer's and the converter's cycles.
DRAIN = (4 + 128 // 4) // 2 + 8


async def _out_of_reset(ctx, dut):
    """Hold ``user_reset`` for three user clocks, release it, and enable Memory Space and Bus
    Master as the hard IP's ``cfg_function_status`` reports them."""
    ctx.set(dut.user_reset, 1)
    for _ in range(3):
        await ctx.posedge(dut.user_clk)
    ctx.set(dut.user_reset, 0)
    ctx.set(dut.cfg_function_status, 0b0110)           # Memory Space and Bus Master Enable


def _cq_put(dut):
    """Return ``put(ctx, beats)``: offer CQ beats on the top's raw ports, each until taken."""
    async def put(ctx, beats):
        for beat in beats:
            for name, value in beat.items():
                ctx.set(getattr(dut, f"s_axis_cq_{name}"), value)
            ctx.set(dut.s_axis_cq_tvalid, 1)
            for _ in range(LIMIT):
                taken = ctx.get(dut.s_axis_cq_tready)      # as the edge will see it
                await ctx.posedge(dut.user_clk)
                if taken:
                    break
            else:
                raise AssertionError("CQ never took a beat")
            ctx.set(dut.s_axis_cq_tvalid, 0)
    return put


def _cq_request(dut, width, function, req_type, addr, length, payload=(), tag=0):
    """Return the CQ beats of a request to offset ``addr`` of the top's BAR of ``function``."""
    bar = next(b for b in dut.bars if b.function == function)
    desc = pack(CQ_DESCRIPTOR, address=addr >> 2, dword_count=length, request_type=req_type,
                requester_id=0x0A10, tag=tag, bar_id=bar.index,
                bar_aperture=bar.size.bit_length() - 1)
    return to_beats(desc + list(payload), width, lambda first, last: 0xFF if first else 0)


def test_no_tlp_request_and_no_msi_while_an_flr_is_in_process():
    """No RQ request and no MSI from ``cfg_flr_in_process`` until ``cfg_flr_done`` (PG213: the
    user logic must not send requests for a function while its FLR is in process; the search
    tool found no copy of PG213's exact wording, so this is the rule as the issue states it).
    A guest opens an object and unmasks vector 0; the host rings it, the MSI is asked and left
    unanswered, the guest clears it and the host rings again, so a second message is owed; the
    guest writes 256 DWORDs to the window (Memory Write TLPs of 128 bytes, one after another).
    The FLR starts as the second TLP leaves; as PCIe's FLR does, the hard IP clears MSI Enable
    and Bus Master Enable, and it answers the outstanding MSI in that cycle. Until
    ``cfg_flr_done``: no ``cfg_interrupt_msi_int``, and once the TLP already whole in RQ's
    buffer has left (by design it leaves whole: at most ``DRAIN`` cycles), RQ's ``tvalid`` stays
    low. Fails with the requester left out of the FLR's reset (a third TLP at FLR + 36 cycles)
    and with the interrupt shim ignoring MSI Enable and Bus Master Enable (the owed MSI asked
    during the FLR)."""
    from vmshm.abi.regmap import BAR_NAME, BAR_REGS, BAR_WINDOW, CtlOp, Status
    from vmshm.rtl.usp import top as usp_top
    width = 64
    dut = usp_top.VMShmUSP(axis_width=width)
    put = _cq_put(dut)
    log = {"rq": [], "flr": None, "done": None, "msi": [], "cycle": 0}

    async def main(ctx):
        await _out_of_reset(ctx, dut)
        ctx.set(dut.cfg_interrupt_msi_enable, 1)
        ctx.set(dut.m_axis_rq_tready, 1)
        ctx.set(dut.m_axis_cc_tready, 1)
        ctx.set(dut.ctl_req.ready, 1)
        await put(ctx, _cq_request(dut, width, BAR_NAME, ReqType.MEM_WRITE, 0, 1, [ord("/")]))
        await put(ctx, _cq_request(dut, width, BAR_REGS, ReqType.MEM_WRITE, 0x30, 1, [1]))
        await put(ctx, _cq_request(dut, width, BAR_REGS, ReqType.MEM_READ, 0, 1, tag=1))
        # The host: OPEN's last name byte, then its answer.
        for _ in range(LIMIT):
            await ctx.posedge(dut.user_clk)
            if ctx.get(dut.ctl_req.valid) and ctx.get(dut.ctl_req.payload.last):
                tag = ctx.get(dut.ctl_req.payload.tag)
                break
        await ctx.posedge(dut.user_clk)                      # the last byte is taken
        ctx.set(dut.ctl_rsp.payload, {"status": Status.OK, "size": 4096, "addr": HOST_BASE,
                                      "op": CtlOp.OPEN, "tag": tag})
        ctx.set(dut.ctl_rsp.valid, 1)
        while not ctx.get(dut.ctl_rsp.ready):
            await ctx.posedge(dut.user_clk)
        await ctx.posedge(dut.user_clk)
        ctx.set(dut.ctl_rsp.valid, 0)
        for _ in range(10):
            await ctx.posedge(dut.user_clk)
        assert ctx.get(dut._core.host_base) == HOST_BASE, "OPEN failed"
        # Vector 0 rung, its MSI asked and left unanswered; the guest clears it and it is rung
        # again: a second message is owed behind the first.
        for clear in (False, True):
            if clear:
                await put(ctx, _cq_request(dut, width, BAR_REGS, ReqType.MEM_WRITE, 0x34, 1, [1]))
                for _ in range(20):                           # the clear is in
                    await ctx.posedge(dut.user_clk)
            ctx.set(dut.ring.payload, {"vector": 0})
            ctx.set(dut.ring.valid, 1)
            await ctx.posedge(dut.user_clk)
            ctx.set(dut.ring.valid, 0)
            for _ in range(20):
                await ctx.posedge(dut.user_clk)
        assert len(log["msi"]) == 1 and ctx.get(dut.cfg_interrupt_msi_pending_status) & 1, \
            "no second message owed"
        await put(ctx, _cq_request(dut, width, BAR_WINDOW, ReqType.MEM_WRITE, 0, 256,
                                   list(range(256))))
        for _ in range(LIMIT):                                # the second TLP is going out
            await ctx.posedge(dut.user_clk)
            if len(log["rq"]) >= 2:
                break
        else:
            raise AssertionError(f"the write's TLPs never went out: {log}")
        ctx.set(dut.cfg_flr_in_process, 1)
        ctx.set(dut.cfg_function_status, 0)
        ctx.set(dut.cfg_interrupt_msi_enable, 0)
        ctx.set(dut.cfg_interrupt_msi_sent, 1)
        log["flr"] = log["cycle"]
        await ctx.posedge(dut.user_clk)
        ctx.set(dut.cfg_interrupt_msi_sent, 0)
        for _ in range(LIMIT):
            await ctx.posedge(dut.user_clk)
            if ctx.get(dut.cfg_flr_done) & 1:
                log["done"] = log["cycle"]
                break
        ctx.set(dut.cfg_flr_in_process, 0)

    async def watch(ctx):
        # Every cycle: RQ's tvalid (and each TLP's first beat taken), MSI requests.
        first = True
        while True:
            await ctx.posedge(dut.user_clk)
            log["cycle"] += 1
            if ctx.get(dut.m_axis_rq_tvalid):
                log.setdefault("rq_valid", []).append(log["cycle"])
                if first:
                    log["rq"].append(log["cycle"])
                first = bool(ctx.get(dut.m_axis_rq_tlast))
            if ctx.get(dut.cfg_interrupt_msi_int):
                log["msi"].append(log["cycle"])

    run_top(dut, main, watch)
    flr, done = log["flr"], log["done"]
    assert done is not None, "cfg_flr_done never came"
    assert len(log["msi"]) == 1 and log["msi"][0] < flr, f"MSI requests at {log['msi']}"
    during = [c - flr for c in log["rq_valid"] if flr < c <= done]
    assert not [c for c in during if c > DRAIN], f"RQ offered at FLR + {during}"
