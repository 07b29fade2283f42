"""The UltraScale+ completer and requester on Amaranth's simulator, against PCIe's arithmetic.

The completer runs with the real core behind it (its name buffer is plain memory a guest may
read and write at any length), the requester with a small root complex played here: it takes
RQ TLPs, reports their sequence numbers, applies writes to a host memory and answers reads with
completions split at a 64-byte Read Completion Boundary, tags interleaved. What each TLP must
carry is computed here from the PCIe Base Specification's rules (2.2.5 byte enables, 2.3.1.1
byte count and lower address), not from the RTL; every edge of CC and RQ is checked against
the stream rules the hard IP relies on. The whole top runs against cocotbext-pcie's model in
tests/test_pcie.py; these run in the daily subset.
"""

import pytest

from vmshm.abi.regmap import BAR_NAME, CtlOp, Status
from vmshm.rtl.usp.descriptors import (CC_DESCRIPTOR, CQ_DESCRIPTOR, CQ_DISCONTINUE,
                                       RC_DESCRIPTOR, RC_DISCONTINUE, RQ_DESCRIPTOR, ReqType)
from vmshm.sim import stream_get, stream_put, wait_cycles

from usp_harness import (LIMIT, CompleterHarness, RequesterHarness, gate, get_packet, pack,
                         pg213_rules, put_packet, run, seeded, to_beats, unpack, usp_bars)

SC, UR = 0b000, 0b001
MPS = {0: 128, 1: 256}      # cfg_max_payload / cfg_max_read_req codes -> bytes
REQUESTER_ID = 0x0A10


def enabled(be):
    """Return the offsets of the first and last enabled byte of a DWORD's byte enables."""
    lanes = [i for i in range(4) if be >> i & 1]
    return lanes[0], lanes[-1]


def read_completions(addr, length, first_be, last_be, mps):
    """Return ``[(lower address, byte count, DWORDs)]`` of the completions of a memory read.

    Completions end at Max_Payload_Size boundaries (the completer's Read Completion Boundary);
    the first one's lower address is that of the first enabled byte, a later one's that of its
    first DWORD; each byte count counts from there to the last enabled byte (PCIe Base 2.3.1.1).
    A zero-length read (one DWORD, no byte enabled) has byte count 1.
    """
    if length == 1 and first_be == 0:
        return [(addr & 0x7F, 1, 1)]
    first = addr + enabled(first_be)[0]
    last = addr + 4 * (length - 1) + enabled(first_be if length == 1 else last_be)[1]
    out, dw = [], addr
    end = addr + 4 * length
    while dw < end:
        stop = min(end, (dw // mps + 1) * mps)
        start = first if dw == addr else dw
        out.append((start & 0x7F, last - start + 1, (stop - dw) // 4))
        dw = stop
    return out


def cq_request(width, req_type, addr, length, *, first_be=0xF, last_be=0xF, tag=0, payload=(),
               bar=None, aperture=None, discontinue=False, tc=0, attr=0):
    """Return the beats of a CQ request to the name buffer (or to ``bar``/``aperture``)."""
    name_bar = next(b for b in usp_bars() if b.function == BAR_NAME)
    desc = pack(CQ_DESCRIPTOR, address=addr >> 2, dword_count=length, request_type=req_type,
                requester_id=REQUESTER_ID, tag=tag, target_function=0,
                bar_id=name_bar.index if bar is None else bar,
                bar_aperture=(name_bar.size.bit_length() - 1) if aperture is None else aperture,
                transaction_class=tc, attributes=attr)

    def user(first, last):
        return ((first_be | last_be << 4) if first else 0) | \
               ((1 << CQ_DISCONTINUE) if last and discontinue else 0)
    return to_beats(desc + list(payload), width, user)


def apply_write(memory, addr, dwords, first_be, last_be):
    """Write ``dwords`` at ``addr`` of ``memory`` with PCIe's first and last byte enables."""
    for i, dword in enumerate(dwords):
        be = first_be if i == 0 else last_be if i == len(dwords) - 1 else 0xF
        for b in range(4):
            if be >> b & 1:
                memory[addr + 4 * i + b] = dword >> (8 * b) & 0xFF


def dwords_at(memory, addr, length):
    return [int.from_bytes(memory[addr + 4 * i:addr + 4 * i + 4], "little")
            for i in range(length)]


class Guest:
    """Send CQ requests to a :class:`CompleterHarness` and take what comes back on CC."""

    def __init__(self, ctx, dut, width, rng, busy):
        self.ctx, self.dut, self.width, self.rng, self.busy = ctx, dut, width, rng, busy

    async def send(self, beats):
        await put_packet(self.ctx, self.dut.cq, beats, valid_gate=gate(self.rng, self.busy))

    async def completion(self):
        """Return ``(descriptor, payload DWORDs)`` of the next CC packet."""
        dwords, _ = await get_packet(self.ctx, self.dut.cc, self.width,
                                     ready_gate=gate(self.rng, self.busy))
        desc = unpack(CC_DESCRIPTOR, dwords)
        assert len(dwords) == 3 + desc.dword_count, "CC packet length unlike its dword count"
        return desc, dwords[3:]

    async def read(self, addr, length, first_be, last_be, tag, **kw):
        await self.send(cq_request(self.width, ReqType.MEM_READ, addr, length,
                                   first_be=first_be, last_be=last_be, tag=tag, **kw))


#: Reads of the name buffer: (offset, DWORDs, first BE, last BE). Every single-DWORD byte
#: enable, a zero-length read, partial ends, and long reads across 128- and 256-byte boundaries.
READS = ([(0x40 + 4 * be, 1, be, 0) for be in range(1, 16)] +
         [(0x10, 1, 0, 0), (0x7C, 2, 0b1000, 0b0001), (0x04, 3, 0b1110, 0b0111),
          (0x70, 9, 0b0100, 0b0011), (0x74, 60, 0xF, 0xF), (0x0, 256, 0xF, 0xF),
          (0x1F8, 100, 0b1100, 0b0001), (0x3F8, 2, 0xF, 0b1000)])


@pytest.mark.parametrize("width,mps", [(64, 0), (128, 0), (256, 1)])
def test_completions_carry_byte_count_and_lower_address(width, mps):
    """Fill the name buffer with MWr, some with partial byte enables, then read it back at
    every byte-enable pattern and length: each CC completion has the lower address, byte count
    and DWORD count PCIe asks for, SC, the request's tag, requester ID, TC and attributes, the
    data the writes left, and packets that obey PG213's stream rules under back-pressure."""
    rng = seeded(width)
    dut = CompleterHarness(width, usp_bars())
    memory = bytearray(1024)
    mistakes = []

    async def main(ctx):
        ctx.set(dut.max_payload, mps)
        guest = Guest(ctx, dut, width, rng, busy=0.3)
        for addr in range(0, 1024, 128):
            dwords = [rng.getrandbits(32) for _ in range(32)]
            apply_write(memory, addr, dwords, 0xF, 0xF)
            await guest.send(cq_request(width, ReqType.MEM_WRITE, addr, 32, payload=dwords))
        for addr, length, first_be, last_be in [(0x100, 1, 0b0110, 0), (0x204, 5, 0b1000, 0b0011),
                                                (0x300, 2, 0b0001, 0b1110)]:
            dwords = [rng.getrandbits(32) for _ in range(length)]
            apply_write(memory, addr, dwords, first_be, last_be)
            await guest.send(cq_request(width, ReqType.MEM_WRITE, addr, length,
                                        first_be=first_be, last_be=last_be, payload=dwords))
        for n, (addr, length, first_be, last_be) in enumerate(READS + [(0x100, 1, 0xF, 0),
                                                                        (0x200, 8, 0xF, 0xF),
                                                                        (0x300, 2, 0xF, 0xF)]):
            tc, attr = n % 8, (n * 3) % 8
            await guest.read(addr, length, first_be, last_be, tag=n, tc=tc, attr=attr)
            expected = read_completions(addr, length, first_be, last_be, MPS[mps])
            data = []
            for la, bc, dwc in expected:
                desc, payload = await guest.completion()
                got = (desc.lower_address, desc.byte_count, desc.dword_count)
                ids = (desc.completion_status, desc.tag, desc.requester_id,
                       desc.transaction_class, desc.attributes)
                if got != (la, bc, dwc) or ids != (SC, n, REQUESTER_ID, tc, attr):
                    mistakes.append(f"read {addr:#x}+{length} BE {first_be:04b}/{last_be:04b}: "
                                    f"(la, bc, dwc) {got} status/tag/id/tc/attr {ids}, "
                                    f"expected {(la, bc, dwc)} {(SC, n, REQUESTER_ID, tc, attr)}")
                data += payload
            if length and first_be and data != dwords_at(memory, addr, length):
                mistakes.append(f"read {addr:#x}+{length}: wrong data")

    run(dut, main, pg213_rules(dut.cc, "CC"))
    assert not mistakes, "\n".join(mistakes)


@pytest.mark.parametrize("width", [64, 128, 256])
def test_unsupported_and_discontinued_requests(width):
    """Requests the core does not serve get one Unsupported Request completion each (a memory
    read's keeps its byte count and lower address, anything else's are 4 and 0); posted ones
    nothing; a request the hard IP marks discontinued has no effect at all."""
    rng = seeded(width + 1)
    dut = CompleterHarness(width, usp_bars())
    seen = []

    async def main(ctx):
        guest = Guest(ctx, dut, width, rng, busy=0.2)
        await guest.send(cq_request(width, ReqType.MEM_WRITE, 0x20, 1, payload=[0x11223344]))
        # A write to a BAR nobody has, a discontinued write: no completion, no effect.
        await guest.send(cq_request(width, ReqType.MEM_WRITE, 0x20, 1, bar=2,
                                    payload=[0xDEADBEEF]))
        await guest.send(cq_request(width, ReqType.MEM_WRITE, 0x20, 1, discontinue=True,
                                    payload=[0xBADBAD00]))
        cases = [
            ("io read", dict(req_type=ReqType.IO_READ, addr=0x20, length=1)),
            ("unknown BAR", dict(req_type=ReqType.MEM_READ, addr=0x22, length=1, bar=2,
                                 first_be=0b1100)),
            ("other aperture", dict(req_type=ReqType.MEM_READ, addr=0x20, length=2,
                                    aperture=12, first_be=0b1110, last_be=0b0011)),
            ("past the BAR", dict(req_type=ReqType.MEM_READ, addr=0x3FC, length=2)),
            ("discontinued read", dict(req_type=ReqType.MEM_READ, addr=0x20, length=1,
                                       discontinue=True)),
            ("good read", dict(req_type=ReqType.MEM_READ, addr=0x20, length=1)),
        ]
        for tag, (what, kw) in enumerate(cases):
            await guest.send(cq_request(width, tag=tag, **kw))
        for _ in range(len(cases) - 1):     # the discontinued read gets nothing
            desc, payload = await guest.completion()
            seen.append((desc.tag, desc.completion_status, desc.byte_count,
                         desc.lower_address, desc.dword_count, payload))
        await wait_cycles(ctx, 50)
        assert not ctx.get(dut.cc.valid), "a completion more than there were requests"

    run(dut, main, pg213_rules(dut.cc, "CC"))
    assert seen == [
        (0, UR, 4, 0, 0, []),
        (1, UR, 2, 0x22, 0, []),
        (2, UR, 5, 0x21, 0, []),
        (3, UR, 8, 0x7C, 0, []),
        (5, SC, 4, 0x20, 1, [0x11223344]),
    ]


class RootComplex:
    """Play the hard IP and the root complex behind RQ and RC for a :class:`RequesterHarness`.

    Takes each RQ TLP (with back-pressure), checks its byte enables (PCIe Base 2.2.5) and
    boundaries, reports its sequence number a few cycles later, applies a write to ``memory``
    and answers a read with completions of at most 64 bytes on the Read Completion Boundary,
    interleaving the TLPs of different tags. ``discontinue`` names (tag order, completion
    index) pairs whose completion is sent marked discontinued.
    """

    def __init__(self, dut, width, rng, memory, base, *, mps, mrrs, discontinue=()):
        self.dut, self.width, self.rng = dut, width, rng
        self.memory, self.base = memory, base
        self.mps, self.mrrs = mps, mrrs
        self.discontinue = set(discontinue)
        self.tlps = []              # every RQ TLP: (descriptor, first BE, last BE, payload)
        self.events = []            # ("seq", n) as reported; the test adds its own
        self.pending = []           # completions to send: lists of beats
        self.reads = 0

    def check(self, desc, first_be, last_be):
        addr, n = desc.address << 2, desc.dword_count
        size = self.mps if desc.request_type == ReqType.MEM_WRITE else self.mrrs
        assert n <= size // 4, f"TLP of {n} DWORDs past {size} bytes"
        assert addr // 4096 == (addr + 4 * n - 1) // 4096, "TLP crosses a 4 KiB boundary"
        if n == 1:
            assert last_be == 0, "1-DWORD TLP with a last DWORD byte enable"
        else:
            assert first_be and last_be, "multi-DWORD TLP without first or last byte enables"

    async def rq_process(self, ctx):
        while True:
            dwords, user = await get_packet(ctx, self.dut.rq, self.width,
                                            ready_gate=gate(self.rng, 0.3))
            desc = unpack(RQ_DESCRIPTOR, dwords)
            first_be, last_be = user & 0xF, user >> 4 & 0xF
            seq = (user >> 24 & 0xF) | (user >> 60 & 0x3) << 4
            payload = dwords[4:]
            self.tlps.append((desc, first_be, last_be, payload))
            self.check(desc, first_be, last_be)
            addr = (desc.address << 2) - self.base
            if desc.request_type == ReqType.MEM_WRITE:
                assert len(payload) == desc.dword_count
                apply_write(self.memory, addr, payload, first_be,
                            last_be if desc.dword_count > 1 else first_be)
            else:
                assert not payload
                self.answer(desc, addr)
            await wait_cycles(ctx, self.rng.randint(1, 4))
            self.events.append(("seq", seq))
            ctx.set(self.dut.seq_num, seq)
            ctx.set(self.dut.seq_num_valid, 1)
            await wait_cycles(ctx, 1)
            ctx.set(self.dut.seq_num_valid, 0)

    def answer(self, desc, addr):
        n = self.reads
        self.reads += 1
        end = addr + 4 * desc.dword_count
        start, index, parts = addr, 0, []
        while start < end:
            stop = min(end, (start // 64 + 1) * 64)
            dwords = dwords_at(self.memory, start, (stop - start) // 4)
            rc = pack(RC_DESCRIPTOR, lower_address=(self.base + start) & 0xFFF,
                      byte_count=end - start, request_completed=int(stop == end),
                      dword_count=len(dwords), completion_status=SC, tag=desc.tag)
            cut = (n, index) in self.discontinue
            parts.append(to_beats(rc + dwords, self.width,
                                  lambda first, last, cut=cut: int(last and cut) << RC_DISCONTINUE))
            start, index = stop, index + 1
        self.pending.append(parts)

    async def rc_process(self, ctx):
        while True:
            live = [p for p in self.pending if p]
            if not live:
                await wait_cycles(ctx, 1)
                continue
            # Completions of one request in order; requests interleaved at random.
            await put_packet(ctx, self.dut.rc, self.rng.choice(live).pop(0),
                             valid_gate=gate(self.rng, 0.2))
            self.pending = [p for p in self.pending if p]


async def dma(ctx, dut, rng, *, write, addr, dwords=None, length=None, first_be=0xF,
              last_be=0xF, tag=1):
    """Play the core: one DMA request; return the answer's ``[(data, err)]``."""
    if write:
        for i, dword in enumerate(dwords):
            be = first_be if i == 0 else last_be if i == len(dwords) - 1 else 0xF
            await stream_put(ctx, dut.dma_req, {"write": 1, "addr": addr,
                                                "count": len(dwords) - 1, "data": dword,
                                                "be": be if len(dwords) > 1 else first_be,
                                                "tag": tag},
                             valid_gate=gate(rng, 0.5), timeout=LIMIT)
        length = 1
    else:
        await stream_put(ctx, dut.dma_req, {"write": 0, "addr": addr, "count": length - 1,
                                            "data": 0, "be": last_be, "tag": tag},
                         timeout=LIMIT)
    out = []
    for i in range(length):
        beat = await stream_get(ctx, dut.dma_rsp, ready_gate=gate(rng, 0.2), timeout=LIMIT)
        assert beat.tag == tag and beat.last == (i == length - 1)
        out.append((beat.data, beat.err))
    return out


HOST_BASE = 0x1_2345_0000
#: DMA writes: (object offset, DWORDs, first BE, last BE), across 128-byte and 4 KiB boundaries.
WRITES = [(0x0, 1, 0b0110, 0b0110), (0x10, 2, 0b1000, 0b0001), (0x7C, 40, 0xF, 0b0111),
          (0xFF8, 9, 0b1110, 0xF), (0x2000, 256, 0xF, 0xF), (0x3004, 33, 0b1100, 0b0011)]
#: DMA reads: (object offset, DWORDs, last BE).
READS_DMA = [(0x0, 1, 0xF), (0x7C, 40, 0b0011), (0xFF0, 12, 0xF), (0x2000, 256, 0xF),
             (0x3004, 33, 0xF)]


@pytest.mark.parametrize("width,mps", [(64, 0), (128, 0), (256, 1)])
def test_dma_becomes_legal_tlps_and_reads_come_back_in_order(width, mps):
    """DMA writes leave as MWr TLPs within Max_Payload_Size and 4 KiB with legal byte enables,
    each acknowledged only after the hard IP reported its last TLP's sequence number; DMA reads
    leave as MRd TLPs within Max_Read_Request_Size with their own tags, and their completions,
    split and interleaved, come back to the core in order with no error."""
    rng = seeded(width)
    memory = bytearray(0x4000)
    dut = RequesterHarness(width)
    rc = RootComplex(dut, width, rng, memory, HOST_BASE, mps=MPS[mps], mrrs=MPS[mps])
    model = bytearray(0x4000)
    mistakes = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        ctx.set(dut.max_payload, mps)
        ctx.set(dut.max_read_req, mps)
        for addr, length, first_be, last_be in WRITES:
            dwords = [rng.getrandbits(32) for _ in range(length)]
            apply_write(model, addr, dwords, first_be, last_be if length > 1 else first_be)
            sent = len(rc.tlps)
            [(_, err)] = await dma(ctx, dut, rng, write=True, addr=addr, dwords=dwords,
                                   first_be=first_be, last_be=last_be)
            rc.events.append(("ack", addr))
            tlps = rc.tlps[sent:]
            # Acknowledged after the last TLP's sequence number was reported, not before.
            seqs = [e for e in rc.events if e[0] == "seq"]
            if err or not tlps or rc.events[-2] != seqs[-1] or len(seqs) != len(rc.tlps):
                mistakes.append(f"write {addr:#x}+{length}: acknowledged early or in error")
            if memory != model:
                mistakes.append(f"write {addr:#x}+{length}: host memory differs")
            ends = [(t[0].address << 2) - HOST_BASE for t in tlps]
            if ends[0] != addr or sum(t[0].dword_count for t in tlps) != length:
                mistakes.append(f"write {addr:#x}+{length}: TLPs cover {ends}")
        for n, (addr, length, last_be) in enumerate(READS_DMA):
            got = await dma(ctx, dut, rng, write=False, addr=addr, length=length,
                            last_be=last_be, tag=n + 2)
            if got != [(d, 0) for d in dwords_at(memory, addr, length)]:
                mistakes.append(f"read {addr:#x}+{length}: wrong data or errors")

    run(dut, main, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    assert not mistakes, "\n".join(mistakes)
    reads = [t for t in rc.tlps if t[0].request_type == ReqType.MEM_READ]
    assert len({t[0].tag for t in reads}) > 8, "reads did not use their own tags"


@pytest.mark.parametrize("width", [64, 128, 256])
def test_discontinued_completion_fails_its_dwords(width):
    """A completion the hard IP marks discontinued counts for nothing: the DWORDs it would have
    brought go to the core as errors (all ones) without waiting for the completion timeout, the
    DWORDs of the other completions are good, and its tag, whose completion the hard IP never
    reported, is not used again when the tags come round."""
    rng = seeded(width + 2)
    memory = bytearray(rng.getrandbits(8) for _ in range(0x1000))
    # A timeout no wait of the test could sit out: the errors must come without it.
    dut = RequesterHarness(width, cpl_timeout=1 << 16)
    # The read's second TLP (DWORDs 32..63) comes back in two completions; its last one is
    # discontinued.
    rc = RootComplex(dut, width, rng, memory, HOST_BASE, mps=128, mrrs=128,
                     discontinue={(1, 1)})
    got = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        got.append(await dma(ctx, dut, rng, write=False, addr=0x100, length=96, tag=3))
        # 40 more TLPs: the 32 tags come round again.
        for i in range(5):
            got.append(await dma(ctx, dut, rng, write=False, addr=0x300 * i % 0xC00,
                                 length=256, tag=4 + i))

    run(dut, main, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    good = dwords_at(memory, 0x100, 96)
    assert got[0] == ([(d, 0) for d in good[:48]] + [(0xFFFF_FFFF, 1)] * 16 +
                      [(d, 0) for d in good[64:]])
    for i, answer in enumerate(got[1:]):
        assert answer == [(d, 0) for d in dwords_at(memory, 0x300 * i % 0xC00, 256)]
    tags = [t[0].tag for t in rc.tlps]
    assert len(tags) > 32 + 3 and tags[1] not in tags[3:], \
        "the discontinued completion's tag was used again"


def test_a_write_that_writes_nothing_is_acknowledged_without_a_sequence_number():
    """The core's owed beats after a window write timed out enable no byte: no TLP leaves, so
    no sequence number will come, and the write is acknowledged at once (not after the
    completion timeout, which no wait here could sit out)."""
    rng = seeded(7)
    memory = bytearray(0x1000)
    dut = RequesterHarness(64, cpl_timeout=1 << 16)
    rc = RootComplex(dut, 64, rng, memory, HOST_BASE, mps=128, mrrs=128)
    got = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        got.append(await dma(ctx, dut, rng, write=True, addr=0x40, dwords=[0, 0],
                             first_be=0, last_be=0))

    run(dut, main, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    assert got == [[(0, 0)]] and not rc.tlps and memory == bytearray(0x1000)


def test_a_flush_after_writes_ends_and_leaves_the_function_clean():
    """A control request waits for a flush of the writes before it (a zero-length read): once
    its completion is in, ``dirty`` falls and stays low, so the request may go and no second
    flush follows."""
    rng = seeded(8)
    memory = bytearray(0x1000)
    dut = RequesterHarness(64)
    rc = RootComplex(dut, 64, rng, memory, HOST_BASE, mps=128, mrrs=128)
    dirty = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        await dma(ctx, dut, rng, write=True, addr=0x40, dwords=[1, 2])
        dirty.append(ctx.get(dut.dirty))
        ctx.set(dut.flush, 1)
        for _ in range(LIMIT):
            await wait_cycles(ctx, 1)
            if not ctx.get(dut.dirty):
                break
        dirty.append(ctx.get(dut.dirty))
        await wait_cycles(ctx, 50)          # still asking: nothing is left to flush
        dirty.append(ctx.get(dut.dirty))
        ctx.set(dut.flush, 0)

    run(dut, main, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    assert dirty == [1, 0, 0]
    flushes = [t for t in rc.tlps if t[0].request_type == ReqType.MEM_READ]
    assert len(flushes) == 1 and flushes[0][0].dword_count == 1 and flushes[0][1] == 0


class _LateRootComplex(RootComplex):
    """A root complex that holds back the first read's completions until told (``late``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.late = None

    def answer(self, desc, addr):
        super().answer(desc, addr)
        if self.reads == 1:
            self.late = self.pending.pop()


def test_a_late_completion_frees_its_tag_again():
    """A read whose completion comes after the requester gave up on it fails its DWORDs; its tag
    stays out of use while the hard IP may still complete it, and is used again when the tags
    come round once that late completion said the request is completed."""
    rng = seeded(9)
    memory = bytearray(rng.getrandbits(8) for _ in range(0x1000))
    dut = RequesterHarness(64, cpl_timeout=300)
    rc = _LateRootComplex(dut, 64, rng, memory, HOST_BASE, mps=128, mrrs=128)
    got = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        got.append(await dma(ctx, dut, rng, write=False, addr=0x100, length=1, tag=3))
        rc.pending.append(rc.late)
        while rc.pending:
            await wait_cycles(ctx, 1)
        # 40 more TLPs: the 32 tags come round again.
        for i in range(5):
            got.append(await dma(ctx, dut, rng, write=False, addr=0x300 * i % 0xC00,
                                 length=256, tag=4 + i))

    run(dut, main, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    assert got[0] == [(0xFFFF_FFFF, 1)]
    for i, answer in enumerate(got[1:]):
        assert answer == [(d, 0) for d in dwords_at(memory, 0x300 * i % 0xC00, 256)]
    tags = [t[0].tag for t in rc.tlps]
    assert len(tags) > 32 + 1 and tags[0] in tags[1:], "the late completion's tag stayed out"


class _RefusingRootComplex(RootComplex):
    """A root complex that answers the first read with an Unsupported Request: a completion
    descriptor alone, the request completed."""

    def answer(self, desc, addr):
        if self.reads:
            return super().answer(desc, addr)
        self.reads += 1
        rc = pack(RC_DESCRIPTOR, lower_address=(self.base + addr) & 0xFFF, byte_count=4,
                  request_completed=1, dword_count=0, completion_status=UR, tag=desc.tag)
        self.pending.append([to_beats(rc, self.width, lambda first, last: 0)])


def test_an_unsupported_request_fails_the_read_at_once_and_frees_its_tag():
    """A read the completer refuses (a completion without data, Unsupported Request) fails its
    DWORDs at once, not after the completion timeout (which no wait here could sit out), and
    its tag is used again when the tags come round."""
    rng = seeded(10)
    memory = bytearray(rng.getrandbits(8) for _ in range(0x1000))
    dut = RequesterHarness(64, cpl_timeout=1 << 16)
    rc = _RefusingRootComplex(dut, 64, rng, memory, HOST_BASE, mps=128, mrrs=128)
    got = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        got.append(await dma(ctx, dut, rng, write=False, addr=0x100, length=1, tag=3))
        for i in range(5):
            got.append(await dma(ctx, dut, rng, write=False, addr=0x300 * i % 0xC00,
                                 length=256, tag=4 + i))

    run(dut, main, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    assert got[0] == [(0xFFFF_FFFF, 1)]
    for i, answer in enumerate(got[1:]):
        assert answer == [(d, 0) for d in dwords_at(memory, 0x300 * i % 0xC00, 256)]
    tags = [t[0].tag for t in rc.tlps]
    assert len(tags) > 32 + 1 and tags[0] in tags[1:], "the refused read's tag stayed out"


class _StallingRootComplex(RootComplex):
    """A root complex whose RC stops inside the first read's completion, before its last beat,
    and sends nothing more (RC is one stream) until the ninth read: then that last beat goes,
    followed by the ninth read's own completion. Reads 2 to 8 are never answered."""

    def answer(self, desc, addr):
        super().answer(desc, addr)
        parts = self.pending.pop()
        if self.reads == 1:
            [beats] = parts
            self.pending.append([beats[:-1]])
            self.rest = beats[-1:]
        elif self.reads == 9:
            self.pending.append([self.rest] + parts)


def test_a_completion_held_across_eight_reads_is_not_taken_for_a_later_one():
    """RC pauses inside a read's completion until that read and the seven after it have timed
    out, so the requester's 3-bit read count (``epoch``) has come round to the first read's;
    the rest of that completion then belongs to no read at hand. The ninth read, at the same
    address after the host changed the data, must get the new data from its own completion,
    not the stale DWORDs (counted as arrived) of the first read's."""
    rng = seeded(11)
    memory = bytearray(rng.getrandbits(8) for _ in range(0x1000))
    dut = RequesterHarness(64, cpl_timeout=50)
    rc = _StallingRootComplex(dut, 64, rng, memory, HOST_BASE, mps=128, mrrs=128)
    got = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        for i in range(8):
            got.append(await dma(ctx, dut, rng, write=False, addr=0x100, length=2, tag=i))
        memory[0x100:0x108] = bytes(b ^ 0xFF for b in memory[0x100:0x108])
        got.append(await dma(ctx, dut, rng, write=False, addr=0x100, length=2, tag=8))

    run(dut, main, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    assert got[:8] == [[(0xFFFF_FFFF, 1)] * 2] * 8
    assert got[8] == [(d, 0) for d in dwords_at(memory, 0x100, 2)], \
        "a completion of a read long over was taken for the read at hand"


CA = 0b100
#: The window's BAR in :func:`usp_bars` and its aperture (log2 of its 4096 bytes).
WINDOW_BAR, WINDOW_APERTURE = 1, 12


def window_word(offset):
    """The word the host holds at byte ``offset`` of the open object."""
    return 0x5A00_0000 | offset


def failing_host(core, fail):
    """Return a background testbench that plays ``core``'s host: every OPEN succeeds with a
    4096-byte object, and window reads get :func:`window_word`, the word at byte offset
    ``fail`` answered with ``err`` (the host could not give it)."""
    h = core.host

    async def host(ctx):
        ctl, dma = [], []           # answer beats owed, in order
        ctx.set(h.ctl_req.ready, 1)
        ctx.set(h.dma_req.ready, 1)
        while True:
            for port, owed in ((h.ctl_rsp, ctl), (h.dma_rsp, dma)):
                ctx.set(port.valid, bool(owed))
                if owed:
                    ctx.set(port.payload, owed[0])
            _, _, c_valid, c_beat, d_valid, d_beat, c_taken, d_taken = await ctx.tick().sample(
                h.ctl_req.valid, h.ctl_req.payload, h.dma_req.valid, h.dma_req.payload,
                h.ctl_rsp.ready, h.dma_rsp.ready)
            if ctl and c_taken:
                ctl.pop(0)
            if dma and d_taken:
                dma.pop(0)
            if c_valid and c_beat.last and c_beat.op == CtlOp.OPEN:
                ctl.append({"status": Status.OK, "size": 4096, "addr": 0, "op": CtlOp.OPEN,
                            "tag": c_beat.tag})
            if d_valid and not d_beat.write:
                for i in range(d_beat.count + 1):
                    at = d_beat.addr + 4 * i
                    dma.append({"data": window_word(at), "err": int(at == fail),
                                "last": int(i == d_beat.count), "tag": d_beat.tag})
    return host


#: A 60-DWORD window read from 0x74: with a 128-byte Max_Payload_Size its completions are
#: 0x74-0x7F, 0x80-0xFF and 0x100-0x163. The host fails its first DWORD, one in the middle of
#: the second completion, or its last.
FAILED_READ = (0x74, 60)


@pytest.mark.parametrize("width", [64, 256])
@pytest.mark.parametrize("failed", [0, 10, 59], ids=["first", "middle", "last"])
def test_a_window_read_the_host_fails_ends_with_a_completer_abort(width, failed):
    """Open an object, then read the window while the host fails one DWORD of the read's DMA:
    the completions before the failed DWORD's come whole, with the host's data; the failed
    DWORD's completion is replaced by one Completer Abort with that completion's lower address
    and byte count (PCIe 2.3.1.1: what was still to come) and no data; nothing else follows,
    and the next read is answered as usual."""
    rng = seeded(width + failed)
    dut = CompleterHarness(width, usp_bars())
    addr, length = FAILED_READ
    fail = addr + 4 * failed
    got = []

    async def main(ctx):
        guest = Guest(ctx, dut, width, rng, busy=0.2)
        await guest.send(cq_request(width, ReqType.MEM_WRITE, 0, 1, payload=[ord("/")]))
        await guest.send(cq_request(width, ReqType.MEM_READ, 0, 1, bar=0, aperture=8, tag=1))
        desc, payload = await guest.completion()
        assert (desc.completion_status, payload) == (SC, [Status.OK]), "OPEN failed"
        await guest.read(addr, length, 0xF, 0xF, tag=2, bar=WINDOW_BAR,
                         aperture=WINDOW_APERTURE)
        await guest.read(0, 1, 0xF, 0, tag=3)               # the name buffer, after it
        while not got or got[-1][0] != 3:
            desc, payload = await guest.completion()
            got.append((desc.tag, desc.completion_status, desc.lower_address, desc.byte_count,
                        desc.dword_count, payload))

    run(dut, main, pg213_rules(dut.cc, "CC"), failing_host(dut.core, fail))
    expected, first = [], 0
    for la, bc, dwc in read_completions(addr, length, 0xF, 0xF, MPS[0]):
        if first + dwc > failed:
            expected.append((2, CA, la, bc, 0, []))
            break
        start = addr + 4 * first
        expected.append((2, SC, la, bc, dwc, [window_word(start + 4 * i) for i in range(dwc)]))
        first += dwc
    assert got == expected + [(3, SC, 0, 4, 1, [ord("/")])]
