"""Issue 22, finding 2 on the UltraScale+ shim: posted window writes behind a waiting window read.

A root port may not pass the completion of the read we sent the host ahead of the posted writes
it has queued for us (PCIe ordering: a completion does not pass a posted request). The root
complex here holds every completion of the device's read until it has received, on RQ, every
DWORD of the window writes the guest sent after its read; the guest sends more of them than the
CQ buffer holds (``CQ_BUFFER_DWORDS``), back to back, as a CPU's write-combined stores do. On
main nothing was taken from CQ while the read waited: the guest's writes stalled on CQ, RQ went
silent and the root complex never answered (the test stops with "the device is hung" after
``LIMIT`` idle cycles; the core would have ended the read with a Completer Abort after its
``host_timeout``).
"""

from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from vmshm.abi.regmap import BAR_REGS, BAR_WINDOW, CtlOp
from vmshm.rtl import VMShmCore
from vmshm.rtl.core import DEFAULT_HOST_TIMEOUT
from vmshm.rtl.layouts import ctl_req_layout, ctl_rsp_layout
from vmshm.rtl.usp.completer import CQ_BUFFER_DWORDS, CqBuffer, USPCompleter
from vmshm.rtl.usp.descriptors import (CC_DESCRIPTOR, CC_USER_WIDTH, CQ_USER_WIDTH,
                                       RC_USER_WIDTH, RQ_USER_WIDTH, ReqType)
from vmshm.rtl.usp.requester import USPRequester
from vmshm.rtl.usp.streams import AxisToDwords, DwordsToAxis
from vmshm.sim import stream_get, stream_put, wait_cycles

from test_usp_shims import HOST_BASE, RootComplex, cq_request, dwords_at
from usp_harness import (LIMIT, beat_layout, beats_in, beats_out, get_packet, pg213_rules,
                         put_packet, run, seeded, unpack, usp_bars)

WIDTH = 64
#: Window writes the root port has queued towards the device ahead of the read's completion:
#: more, with their descriptors, than the CQ buffer holds.
QUEUED = 30


class LinkHarness(wiring.Component):
    """The UltraScale+ top's four streams around a real core, wired as the top wires them (no
    skid buffers, no configuration inputs): CQ and RC in, CC and RQ out as beats, the sequence
    numbers in, the control channel out (a control request waits for the writes' flush)."""

    def __init__(self, width, host_timeout=DEFAULT_HOST_TIMEOUT):
        self._width = width
        self._core = VMShmCore(window_size=4096, name_size=1024, data_width=32, regs_size=256,
                               host_timeout=host_timeout)
        super().__init__({
            "cq": In(stream.Signature(beat_layout(width, CQ_USER_WIDTH))),
            "cc": Out(stream.Signature(beat_layout(width, CC_USER_WIDTH))),
            "rq": Out(stream.Signature(beat_layout(width, RQ_USER_WIDTH))),
            "rc": In(stream.Signature(beat_layout(width, RC_USER_WIDTH))),
            "seq_num": In(6),
            "seq_num_valid": In(1),
            "ctl_req": Out(stream.Signature(ctl_req_layout())),
            "ctl_rsp": In(stream.Signature(ctl_rsp_layout())),
        })

    def elaborate(self, platform):
        m = Module()
        W = self._width
        m.submodules.core = core = self._core
        m.submodules.cq_rx = cq_rx = AxisToDwords(W, CQ_USER_WIDTH)
        m.submodules.cc_tx = cc_tx = DwordsToAxis(W, CC_USER_WIDTH)
        m.submodules.rq_tx = rq_tx = DwordsToAxis(W, RQ_USER_WIDTH, sop_user_width=RQ_USER_WIDTH)
        m.submodules.rc_rx = rc_rx = AxisToDwords(W, RC_USER_WIDTH)
        m.submodules.cq_buf = cq_buf = CqBuffer()
        m.submodules.completer = completer = USPCompleter(usp_bars(), core.addr_width)
        m.submodules.requester = requester = USPRequester(core.addr_width)
        beats_in(m, self.cq, cq_rx.axis)
        beats_out(m, cc_tx.axis, self.cc)
        beats_out(m, rq_tx.axis, self.rq)
        beats_in(m, self.rc, rc_rx.axis)
        wiring.connect(m, cq_rx.dw, cq_buf.i)
        wiring.connect(m, cq_buf.o, completer.cq)
        wiring.connect(m, completer.cc, cc_tx.dw)
        wiring.connect(m, completer.req, core.req)
        wiring.connect(m, core.cpl, completer.cpl)
        wiring.connect(m, requester.rq, rq_tx.dw)
        wiring.connect(m, rc_rx.dw, requester.rc)
        wiring.connect(m, core.host.dma_req, requester.dma_req)
        wiring.connect(m, requester.dma_rsp, core.host.dma_rsp)
        wiring.connect(m, core.host.ctl_rsp, wiring.flipped(self.ctl_rsp))
        ctl = core.host.ctl_req
        m.d.comb += [
            completer.np_dropped.eq(cq_buf.np_dropped),
            completer.cpl_error.eq(core.cpl_error),
            completer.memory_enable.eq(1),
            cc_tx.clear.eq(completer.cc_clear),
            core.dma_enable.eq(1),
            requester.bus_master.eq(1),
            requester.host_base.eq(core.host_base),
            requester.seq_num.eq(self.seq_num),
            requester.seq_num_valid.eq(self.seq_num_valid),
            requester.flush.eq(ctl.valid),
            self.ctl_req.valid.eq(ctl.valid & ~requester.dirty),
            self.ctl_req.payload.eq(ctl.payload),
            ctl.ready.eq(self.ctl_req.ready & ~requester.dirty),
        ]
        if "post_ok" in completer.signature.members:     # (main before the fix had none)
            m.d.comb += completer.post_ok.eq(core.post_ok)
        return m


class PostedFirstRootComplex(RootComplex):
    """A root complex that sends a read's completions only once it has received ``after``
    write DWORDs more than when the read came (its posted queue towards the device goes first)."""

    def __init__(self, *args, after, **kwargs):
        super().__init__(*args, **kwargs)
        self.after = after
        self.held = []              # (write DWORDs needed, completions)

    def written(self):
        return sum(d.dword_count for d, *_ in self.tlps if d.request_type == ReqType.MEM_WRITE)

    def answer(self, desc, addr):
        super().answer(desc, addr)
        self.held.append((self.written() + self.after, self.pending.pop()))

    async def rc_process(self, ctx):
        while True:
            for need, parts in list(self.held):
                if self.written() >= need:
                    self.pending.append(parts)
                    self.held.remove((need, parts))
            live = [p for p in self.pending if p]
            if not live:
                await wait_cycles(ctx, 1)
                continue
            await put_packet(ctx, self.dut.rc, live[0].pop(0))
            self.pending = [p for p in self.pending if p]


def _window(width, req_type, addr, length, payload=(), tag=0):
    window = next(b for b in usp_bars() if b.function == BAR_WINDOW)
    return cq_request(width, req_type, addr, length, payload=payload, tag=tag, bar=window.index,
                      aperture=window.size.bit_length() - 1)


def _regs(width, req_type, addr, length, tag=0):
    regs = next(b for b in usp_bars() if b.function == BAR_REGS)
    return cq_request(width, req_type, addr, length, tag=tag, bar=regs.index,
                      aperture=regs.size.bit_length() - 1)


def test_finding2_window_writes_pass_a_read_the_root_port_answers_behind_them():
    """A 4-DWORD window read, then 40 window writes of 16 DWORDs, the first 30 of which (600
    DWORDs with their descriptors, past the 512-DWORD CQ buffer) the root complex must receive
    before it completes the read: the read completes with the host's data within the core's
    default ``host_timeout`` (SC, not a Completer Abort) and every write reaches host memory."""
    rng = seeded(22)
    memory = bytearray(rng.getrandbits(8) for _ in range(0x1000))
    dut = LinkHarness(WIDTH)
    writes = [(0x100 + 64 * n, [rng.getrandbits(32) for _ in range(16)]) for n in range(40)]
    assert QUEUED * 20 > CQ_BUFFER_DWORDS
    rc = PostedFirstRootComplex(dut, WIDTH, rng, memory, HOST_BASE, mps=128, mrrs=128,
                                after=16 * QUEUED)
    expect = dwords_at(memory, 0x40, 4)
    out = {}

    async def control(ctx):
        # The host's control channel: OPEN succeeds, the object at HOST_BASE.
        while True:
            beat = await stream_get(ctx, dut.ctl_req, timeout=None)
            if beat.last and beat.op == CtlOp.OPEN:
                await stream_put(ctx, dut.ctl_rsp, {"status": 0, "size": 0x1000,
                                                    "addr": HOST_BASE, "op": CtlOp.OPEN,
                                                    "tag": beat.tag}, timeout=LIMIT)

    async def guest(ctx):
        await put_packet(ctx, dut.cq, cq_request(WIDTH, ReqType.MEM_WRITE, 0, 2,
                                                 payload=[0x6F6F662F, 0]))
        await put_packet(ctx, dut.cq, _regs(WIDTH, ReqType.MEM_READ, 0, 1, tag=1))
        await put_packet(ctx, dut.cq, _window(WIDTH, ReqType.MEM_READ, 0x40, 4, tag=2))
        for addr, dwords in writes:
            await put_packet(ctx, dut.cq, _window(WIDTH, ReqType.MEM_WRITE, addr, 16,
                                                  payload=dwords))
        out["sent"] = True

    async def main(ctx):
        ctx.set(dut.ctl_req.ready, 1)
        cpls = []
        for _ in range(2):
            dwords, _ = await get_packet(ctx, dut.cc, WIDTH)
            cpls.append((unpack(CC_DESCRIPTOR, dwords), dwords[3:]))
        out["cpls"] = cpls
        # Every write reached the host.
        for _ in range(LIMIT):
            if rc.written() == 16 * len(writes):
                break
            await wait_cycles(ctx, 1)

    run(dut, main, control, guest, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"),
        pg213_rules(dut.cc, "CC"))
    (open_cpl, status), (read_cpl, data) = out["cpls"]
    assert open_cpl.tag == 1 and status == [0], "OPEN failed"
    assert (read_cpl.tag, read_cpl.completion_status) == (2, 0), \
        "the read did not complete with its data (on main: a Completer Abort)"
    assert data == expect
    assert out.get("sent"), "the guest's writes were still waiting on CQ"
    for addr, dwords in writes:
        assert dwords_at(memory, addr, 16) == dwords, f"write at {addr:#x} not in host memory"
