"""Amaranth-simulator harnesses for the UltraScale+ shim's parts, without cocotb.

The hard IP's AXI streams become :mod:`amaranth.lib.stream` interfaces of whole beats
(:func:`beat_layout`), so the project's :func:`~vmshm.sim.stream_put` and
:func:`~vmshm.sim.stream_get` carry every handshake; :func:`pg213_rules` checks the stream rules
the hard IP relies on at every clock edge; descriptors are packed and unpacked with the PG213
layouts the RTL uses. ``tests/test_usp_streams.py`` and ``tests/test_usp_shims.py`` use them.
"""

import random

from amaranth.hdl import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from vmshm.abi.regmap import BAR_NAME, BAR_REGS, BAR_WINDOW
from vmshm.rtl import BarDef, VMShmCore
from vmshm.rtl.usp.completer import CqBuffer, USPCompleter
from vmshm.rtl.usp.descriptors import CC_USER_WIDTH, CQ_USER_WIDTH, RC_USER_WIDTH, RQ_USER_WIDTH
from vmshm.rtl.usp.requester import USPRequester
from vmshm.rtl.usp.streams import AxisToDwords, DwordsToAxis
from vmshm.sim import CLOCK_PERIOD, stream_get, stream_put

#: Cycles any one wait may take before a test calls the part hung.
LIMIT = 5000

AXIS_NAMES = ("tdata", "tuser", "tlast", "tkeep")


def beat_layout(width, user_width):
    """Return the layout of one hard-IP AXI beat as a stream payload."""
    return data.StructLayout({"tdata": width, "tuser": user_width, "tlast": 1,
                              "tkeep": width // 32})


def beats_in(m, beats, axis):
    """Drive the hard-IP stream port ``axis`` of a part from the harness's stream ``beats``."""
    m.d.comb += [getattr(axis, n).eq(getattr(beats.payload, n)) for n in AXIS_NAMES]
    m.d.comb += [axis.tvalid.eq(beats.valid), beats.ready.eq(axis.tready)]


def beats_out(m, axis, beats):
    """Drive the harness's stream ``beats`` from the hard-IP stream port ``axis`` of a part."""
    m.d.comb += [getattr(beats.payload, n).eq(getattr(axis, n)) for n in AXIS_NAMES]
    m.d.comb += [beats.valid.eq(axis.tvalid), axis.tready.eq(beats.ready)]


def to_beats(dwords, width, user=lambda first, last: 0):
    """Return the beats of one packet of ``dwords``; ``user(first, last)`` gives each tuser."""
    lanes = width // 32
    beats = []
    for i in range(0, len(dwords), lanes):
        chunk = dwords[i:i + lanes]
        last = i + lanes >= len(dwords)
        beats.append({"tdata": sum(d << (32 * k) for k, d in enumerate(chunk)),
                      "tkeep": (1 << len(chunk)) - 1, "tlast": int(last),
                      "tuser": user(i == 0, last)})
    return beats


def dwords_of(beat, width):
    """Return the DWORDs a received beat keeps (its ``tkeep`` checked by :func:`pg213_rules`)."""
    return [(beat.tdata >> (32 * k)) & 0xFFFF_FFFF for k in range(width // 32)
            if beat.tkeep >> k & 1]


def pack(layout, **fields):
    """Return the DWORDs of a descriptor of ``layout`` with ``fields``."""
    value = layout.const(fields).as_value().value
    return [(value >> (32 * i)) & 0xFFFF_FFFF for i in range(layout.size // 32)]


def unpack(layout, dwords):
    """Return the descriptor of ``layout`` that ``dwords`` begin with, as a constant view."""
    n = layout.size // 32
    return data.Const(layout, sum(d << (32 * i) for i, d in enumerate(dwords[:n])))


def pg213_rules(beats, name):
    """Return a background testbench that checks PG213's rules for ``beats`` at every edge.

    Once offered, a beat stays offered, unchanged, until taken (AXI); ``tvalid`` never drops
    between the first and the last beat of a packet (PG213's rule for CC and RQ); ``tkeep`` is
    contiguous from lane 0, and whole on every beat but a packet's last.
    """
    async def testbench(ctx):
        waiting = None          # a beat offered and not yet taken
        in_packet = False
        cycle = 0
        full = (1 << len(beats.payload.tkeep)) - 1
        async for _, _, valid, ready, payload in ctx.tick().sample(beats.valid, beats.ready,
                                                                   beats.payload):
            cycle += 1
            raw = payload.as_value().value
            where = f"{name}, cycle {cycle}"
            if waiting is not None:
                assert valid, f"{where}: tvalid dropped before the beat was taken"
                assert raw == waiting, f"{where}: the beat changed while it waited"
            if in_packet:
                assert valid, f"{where}: tvalid dropped inside a packet"
            if valid and ready:
                keep = payload.tkeep
                assert keep and keep & (keep + 1) == 0, \
                    f"{where}: tkeep {keep:#x} is not contiguous from lane 0"
                assert payload.tlast or keep == full, f"{where}: tkeep {keep:#x} inside a packet"
                in_packet = not payload.tlast
                waiting = None
            else:
                waiting = raw if valid else None
    return testbench


async def get_packet(ctx, beats, width, *, ready_gate=None):
    """Take one packet's beats from ``beats``; return ``(dwords, first beat's tuser)``."""
    dwords, user = [], None
    while True:
        beat = await stream_get(ctx, beats, ready_gate=ready_gate, timeout=LIMIT)
        user = beat.tuser if user is None else user
        dwords += dwords_of(beat, width)
        if beat.tlast:
            return dwords, user


async def put_packet(ctx, beats, packet, *, valid_gate=None):
    """Offer the beats of ``packet`` (from :func:`to_beats`) on ``beats``."""
    for beat in packet:
        await stream_put(ctx, beats, beat, valid_gate=valid_gate, timeout=LIMIT)


def gate(rng, busy):
    """Return a gate for ``valid_gate``/``ready_gate`` that says no ``busy`` of the time."""
    return (lambda: rng.random() >= busy) if busy else None


def run(dut, main, *background, vcd=None):
    """Run ``main(ctx)`` on ``dut`` with the ``background`` testbenches, at CLOCK_PERIOD."""
    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    for testbench in background:
        sim.add_testbench(testbench, background=True)
    sim.add_testbench(main)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()


def run_top(top, main, *background):
    """Run ``main(ctx)`` on the UltraScale+ ``top``, its ``user_clk`` driven at CLOCK_PERIOD,
    with the ``background`` testbenches."""
    async def clock(ctx):
        while True:
            ctx.set(top.user_clk, 0)
            await ctx.delay(CLOCK_PERIOD / 2)
            ctx.set(top.user_clk, 1)
            await ctx.delay(CLOCK_PERIOD / 2)

    sim = Simulator(top)
    sim.add_process(clock)
    for testbench in background:
        sim.add_testbench(testbench, background=True)
    sim.add_testbench(main)
    sim.run()


def usp_bars(window_size=4096, name_size=1024):
    """Return a BAR map as :class:`~vmshm.rtl.usp.VMShmUSP` lays it out with a 64-bit window."""
    return (BarDef(BAR_REGS, 0, 256),
            BarDef(BAR_WINDOW, 1, window_size, is64=True, prefetch=True),
            BarDef(BAR_NAME, 3, name_size))


class CompleterHarness(wiring.Component):
    """The completer's half of the UltraScale+ top around a real core: CQ in, CC out, as beats.

    CQ goes through :class:`AxisToDwords` and :class:`CqBuffer` to :class:`USPCompleter`, whose
    requests the core serves, and CC leaves through :class:`DwordsToAxis`, wired as the top
    wires them. The core's host side is left undriven: most tests reach only its registers and
    its name buffer, which need no host; a test that reads the window plays the host on
    ``core.host`` itself.
    """

    def __init__(self, width, bars):
        self._width = width
        self._bars = bars
        size = {b.function: b.size for b in bars}
        self.core = VMShmCore(window_size=size[BAR_WINDOW], name_size=size[BAR_NAME],
                              data_width=32, regs_size=size[BAR_REGS])
        super().__init__({
            "cq": In(stream.Signature(beat_layout(width, CQ_USER_WIDTH))),
            "cc": Out(stream.Signature(beat_layout(width, CC_USER_WIDTH))),
            "max_payload": In(2),
            "memory_enable": In(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.cq_rx = cq_rx = AxisToDwords(self._width, CQ_USER_WIDTH)
        m.submodules.cq_buf = cq_buf = CqBuffer()
        m.submodules.completer = completer = USPCompleter(self._bars, core.addr_width)
        m.submodules.cc_tx = cc_tx = DwordsToAxis(self._width, CC_USER_WIDTH)
        beats_in(m, self.cq, cq_rx.axis)
        beats_out(m, cc_tx.axis, self.cc)
        wiring.connect(m, cq_rx.dw, cq_buf.i)
        wiring.connect(m, cq_buf.o, completer.cq)
        wiring.connect(m, completer.cc, cc_tx.dw)
        wiring.connect(m, completer.req, core.req)
        wiring.connect(m, core.cpl, completer.cpl)
        m.d.comb += [
            completer.np_dropped.eq(cq_buf.np_dropped),
            completer.cpl_error.eq(core.cpl_error),
            completer.post_ok.eq(core.post_ok),
            completer.memory_enable.eq(self.memory_enable),
            completer.max_payload.eq(self.max_payload),
            cc_tx.clear.eq(completer.cc_clear),
        ]
        return m


class RequesterHarness(wiring.Component):
    """The requester's half of the UltraScale+ top: the core's DMA in, RQ out and RC in as beats.

    RQ leaves through :class:`DwordsToAxis` (with the byte enables on the first beat's tuser)
    and RC comes through :class:`AxisToDwords`, wired as the top wires them; the test plays the
    core on ``dma_req``/``dma_rsp`` and the root complex on RQ, RC and the sequence numbers.
    """

    def __init__(self, width, addr_width=20, cpl_timeout=2000):
        self._width = width
        self._requester = USPRequester(addr_width, cpl_timeout=cpl_timeout)
        # The requester's own ports but RQ and RC, which become streams of beats.
        members = dict(self._requester.signature.members)
        members.update({
            "rq": Out(stream.Signature(beat_layout(width, RQ_USER_WIDTH))),
            "rc": In(stream.Signature(beat_layout(width, RC_USER_WIDTH))),
            "bus_master": In(1, init=1),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.requester = requester = self._requester
        m.submodules.rq_tx = rq_tx = DwordsToAxis(self._width, RQ_USER_WIDTH,
                                                  sop_user_width=RQ_USER_WIDTH)
        m.submodules.rc_rx = rc_rx = AxisToDwords(self._width, RC_USER_WIDTH)
        beats_out(m, rq_tx.axis, self.rq)
        beats_in(m, self.rc, rc_rx.axis)
        wiring.connect(m, requester.rq, rq_tx.dw)
        wiring.connect(m, rc_rx.dw, requester.rc)
        wiring.connect(m, wiring.flipped(self.dma_req), requester.dma_req)
        wiring.connect(m, requester.dma_rsp, wiring.flipped(self.dma_rsp))
        inputs = ("host_base", "bus_master", "max_payload", "max_read_req", "seq_num",
                  "seq_num_valid", "flush", "flr", "link_reset")
        for name in inputs:
            if name in requester.signature.members:
                m.d.comb += getattr(requester, name).eq(getattr(self, name))
        m.d.comb += self.dirty.eq(requester.dirty)
        return m


def seeded(seed):
    """Return a random generator for one test, seeded so a failure repeats."""
    return random.Random(seed)
