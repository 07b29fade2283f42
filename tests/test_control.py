"""The control channel alone, on Amaranth's simulator: OPEN and CLOSE against a scripted host.

A small bench plays the core's part (a name RAM behind the channel's name reads, the read
register the name is streamed from) and the testbench plays the core's commands and the host:
it records every control beat the channel sends and answers as each test scripts it.
"""

import pytest
from amaranth.hdl import *
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from vmshm.abi.regmap import CtlOp, Status
from vmshm.rtl.control import ControlChannel

TIMEOUT = 20
NAME = b"/obj\0"


class Bench(Elaboratable):
    """A :class:`ControlChannel` with a name RAM and read register as the core has them."""

    def __init__(self, data_width, name=NAME, name_size=16, window_size=4096):
        self.dut = ControlChannel(window_size=window_size, name_size=name_size,
                                  data_width=data_width, host_timeout=TIMEOUT)
        wb = data_width // 8
        raw = name.ljust(name_size, b"\xAA")
        self.words = [int.from_bytes(raw[i:i + wb], "little") for i in range(0, name_size, wb)]
        self.data_width = data_width

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.submodules.ram = ram = Memory(shape=self.data_width, depth=len(self.words),
                                        init=self.words)
        rd = ram.read_port()
        loaded = Signal()
        word = Signal(self.data_width)
        m.d.comb += rd.addr.eq(dut.name.addr)
        m.d.sync += loaded.eq(dut.name.fetch)
        with m.If(loaded):
            m.d.sync += word.eq(rd.data)
        m.d.comb += [dut.name.loaded.eq(loaded), dut.name.first.eq(rd.data[:8]),
                     dut.name.rest.eq(word[8:])]
        return m


def _run(bench_fn, data_width=32, **kwargs):
    """Run ``await bench_fn(ctx, dut, host)``; return its result and every beat the host took.

    ``host`` is a dict the testbench fills: ``answers`` is a list of ``(delay, status, size)``
    answered in order to each packet (``None`` never answers), ``ready`` whether the host
    takes beats.
    """
    bench = Bench(data_width, **kwargs)
    dut = bench.dut
    beats = []
    host = {"answers": [], "ready": True, "packets": []}
    out = []

    async def host_side(ctx):
        packet, due = [], []
        cycle = 0
        while True:
            ctx.set(dut.ctl_req.ready, host["ready"])
            if due and due[0][0] <= cycle:
                _, status, size, op, tag = due[0]
                ctx.set(dut.ctl_rsp.valid, 1)
                ctx.set(dut.ctl_rsp.payload, {"status": status, "size": size, "addr": 0,
                                              "op": op, "tag": tag})
            else:
                ctx.set(dut.ctl_rsp.valid, 0)
            _, _, valid, ready, payload, rsp_valid, rsp_ready = await ctx.tick().sample(
                dut.ctl_req.valid, dut.ctl_req.ready, dut.ctl_req.payload,
                dut.ctl_rsp.valid, dut.ctl_rsp.ready)
            cycle += 1
            if rsp_valid and rsp_ready:
                due.pop(0)
            if valid and ready:
                beats.append((payload.op, payload.data, payload.last, payload.tag))
                packet.append(payload.data)
                if payload.last:
                    host["packets"].append((payload.op, bytes(packet)))
                    packet = []
                    if payload.op != CtlOp.RESET and host["answers"]:
                        answer = host["answers"].pop(0)
                        if answer is not None:
                            delay, status, size = answer
                            due.append((cycle + delay, status, size, payload.op, payload.tag))

    async def testbench(ctx):
        out.append(await bench_fn(ctx, dut, host))

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(host_side, background=True)
    sim.add_testbench(testbench)
    sim.run()
    return out[0], beats, host["packets"]


async def _ready(ctx, dut):
    """Play an idle core with bus mastering on, until the RESET owed out of reset has gone."""
    ctx.set(dut.dma_enable, 1)
    ctx.set(dut.dma_free, 1)
    ctx.set(dut.cmd.listen, 1)
    await ctx.tick().repeat(3)


async def _op(ctx, dut, op, *, limit=500):
    """Start ``op`` and return ``(status, cycles until done)``, with busy checked on the way."""
    ctx.set(dut.cmd.start, 1)
    ctx.set(dut.cmd.op, op)
    await ctx.tick()
    ctx.set(dut.cmd.start, 0)
    for cycles in range(1, limit):
        assert ctx.get(dut.cmd.busy), "busy fell before done"
        if ctx.get(dut.cmd.done):
            status = ctx.get(dut.cmd.status)
            await ctx.tick()
            assert not ctx.get(dut.cmd.busy)
            return status, cycles
        await ctx.tick()
    raise AssertionError(f"{op} never finished")


@pytest.mark.parametrize("dw", (32, 64))
def test_open_streams_the_name_and_close_releases(dw):
    async def bench(ctx, dut, host):
        await _ready(ctx, dut)
        host["answers"] += [(2, Status.OK, 5000), (1, Status.OK, 0)]
        opened = await _op(ctx, dut, CtlOp.OPEN)
        state = (ctx.get(dut.is_open), ctx.get(dut.map_size), ctx.get(dut.map_limit),
                 ctx.get(dut.obj_size), ctx.get(dut.last_error))
        busy = await _op(ctx, dut, CtlOp.OPEN)        # already open: no packet
        closed = await _op(ctx, dut, CtlOp.CLOSE)
        return opened, state, busy, closed, ctx.get(dut.is_open), ctx.get(dut.map_size)

    (opened, state, busy, closed, is_open, map_size), beats, packets = _run(bench, dw)
    assert packets == [(CtlOp.RESET, b"\0"), (CtlOp.OPEN, NAME), (CtlOp.CLOSE, b"\0")]
    assert opened[0] == Status.OK
    # One beat a cycle, a fetch cycle at each word's start, the answer two cycles after.
    assert opened[1] == len(NAME) + -(-len(NAME) // (dw // 8)) + 4
    assert state == (1, 4096, 4096, 5000, Status.OK)
    assert busy[0] == Status.EBUSY and closed[0] == Status.OK
    assert (is_open, map_size) == (0, 0)
    assert len({tag for _, _, _, tag in beats[1:]}) == 2, "each packet has a tag of its own"


def test_without_bus_mastering_open_fails_with_eperm():
    async def bench(ctx, dut, host):
        ctx.set(dut.dma_free, 1)
        await ctx.tick().repeat(3)
        return await _op(ctx, dut, CtlOp.OPEN)

    (status, _), _, packets = _run(bench)
    assert status == Status.EPERM and packets == [(CtlOp.RESET, b"\0")]


def test_a_host_that_stops_taking_the_name_gets_the_rest_owed():
    async def bench(ctx, dut, host):
        await _ready(ctx, dut)
        host["ready"] = False
        status, cycles = await _op(ctx, dut, CtlOp.OPEN)
        owed = ctx.get(dut.owed)
        host["ready"] = True
        await ctx.tick().repeat(5)
        # The next OPEN waits for the channel to drain: the cut-off packet ended with RESET.
        host["answers"] += [(1, Status.ENOENT, 0)]
        again = await _op(ctx, dut, CtlOp.OPEN)
        return status, cycles, owed, ctx.get(dut.owed), again

    (status, cycles, owed_then, owed_now, again), beats, packets = _run(bench)
    assert status == Status.ETIMEDOUT and cycles <= TIMEOUT + 3
    assert owed_then == 1 and owed_now == 0
    # The byte on offer when the wait ran out went out, then a RESET ended the packet.
    assert packets[1] == (CtlOp.RESET, b"/\0") and beats[1][:2] == (CtlOp.OPEN, ord("/"))
    assert again[0] == Status.ENOENT and packets[2] == (CtlOp.OPEN, NAME)


def test_a_late_open_success_is_closed_and_its_answer_dropped():
    async def bench(ctx, dut, host):
        await _ready(ctx, dut)
        host["answers"] += [(TIMEOUT + 10, Status.OK, 100), (1, Status.OK, 0)]
        late = await _op(ctx, dut, CtlOp.OPEN)
        stale = ctx.get(dut.stale)
        await ctx.tick().repeat(40)
        return late, stale, ctx.get(dut.stale), ctx.get(dut.is_open), ctx.get(dut.timeout)

    (late, stale_then, stale_now, is_open, _), _, packets = _run(bench)
    assert late[0] == Status.ETIMEDOUT
    assert stale_then == 1 and stale_now == 0
    assert is_open == 0, "a success the guest was told timed out opened the window"
    assert packets[-1] == (CtlOp.CLOSE, b"\0"), "the late success was not closed again"


def test_first_beat_out_of_reset_is_reset():
    async def bench(ctx, dut, host):
        await ctx.tick().repeat(3)

    _, beats, _ = _run(bench)
    assert beats and beats[0][0] == CtlOp.RESET and beats[0][2] == 1
