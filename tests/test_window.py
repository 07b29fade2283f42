"""The window DMA and the host timer alone, on Amaranth's simulator, against a scripted host.

The testbench plays the core's part (it hands over a request and counts the guest's beats, as
the core does with ``remaining``) and the guest's, and a host process answers the DMA port as
each test scripts it: on time, with an error, late, or never.
"""

import pytest
from amaranth.sim import Simulator

from vmshm.rtl.timer import HostTimer
from vmshm.rtl.window import WindowDMA

TIMEOUT = 16


def _run(bench_fn, *, data_width=32, answer=None, stall=0):
    """Run ``await bench_fn(ctx, dut)`` against a host; return its result and the host's log.

    The host takes no request beat before cycle ``stall``. ``answer(req)`` returns, for each
    request the host takes, the beats to answer with as ``[(delay, data, err, tag), ...]``
    (``None`` for the request's own tag). The log lists every request beat the host took as
    ``(write, addr, count, data, be, tag)``.
    """
    dut = WindowDMA(addr_width=12, data_width=data_width, host_timeout=TIMEOUT)
    log, out = [], []

    async def host(ctx):
        queue, cycle = [], 0
        while True:
            ctx.set(dut.dma_req.ready, cycle >= stall)
            if queue and queue[0][0] <= cycle:
                _, data, err, tag = queue[0]
                ctx.set(dut.dma_rsp.valid, 1)
                ctx.set(dut.dma_rsp.payload, {"data": data, "err": err, "last": 0, "tag": tag})
            else:
                ctx.set(dut.dma_rsp.valid, 0)
            _, _, valid, ready, p, rsp_valid, rsp_ready = await ctx.tick().sample(
                dut.dma_req.valid, dut.dma_req.ready, dut.dma_req.payload, dut.dma_rsp.valid,
                dut.dma_rsp.ready)
            cycle += 1
            if rsp_valid and rsp_ready:
                queue.pop(0)
            if valid and ready:
                beat = (p.write, p.addr, p.count, p.data, p.be, p.tag)
                log.append(beat)
                first = not p.write or len([b for b in log if b[1:3] == beat[1:3]]) == 1
                if answer is not None and first:
                    at = cycle
                    for delay, data, err, tag in answer(beat) or ():
                        at += delay
                        queue.append((at, data, err, p.tag if tag is None else tag))

    async def testbench(ctx):
        out.append(await bench_fn(ctx, dut))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host, background=True)
    sim.add_testbench(testbench)
    sim.run()
    return out[0], log


async def _request(ctx, dut, *, write, addr, beats, data=(), end_be=None, limit=200):
    """Hand over one request and play the guest; return what happened.

    Returns ``(read beats as (data, err, last), done cycle, failed, events)`` where events
    counts the cycles ``error``, ``reject`` and ``timeout`` were high.
    """
    wb = len(dut.cmd.end_be)
    ctx.set(dut.cmd.addr, addr)
    ctx.set(dut.cmd.count, beats - 1)
    ctx.set(dut.cmd.remaining, beats - 1)
    ctx.set(dut.cmd.end_be, (1 << wb) - 1 if end_be is None else end_be)
    ctx.set(dut.cmd.write, write)
    ctx.set(dut.cmd.start, 1)
    await ctx.tick()
    ctx.set(dut.cmd.start, 0)
    remaining, got, events = beats - 1, [], {"error": 0, "reject": 0, "timeout": 0}
    ctx.set(dut.rd.ready, 1)
    data = list(data)
    for cycle in range(limit):
        if write and data:
            ctx.set(dut.wr.valid, 1)
            ctx.set(dut.wr.payload, {"data": data[0], "be": (1 << wb) - 1})
        else:
            ctx.set(dut.wr.valid, 0)
        for name in events:
            events[name] += ctx.get(getattr(dut, name))
        done, failed = ctx.get(dut.cmd.done), ctx.get(dut.cmd.failed)
        rd_valid, p = ctx.get(dut.rd.valid), ctx.get(dut.rd.payload)
        wr_taken = write and data and ctx.get(dut.wr.ready)
        await ctx.tick()
        if rd_valid:
            got.append((p.data, p.err, p.last))
        if rd_valid or wr_taken:
            if wr_taken:
                data.pop(0)
            remaining -= 1
            ctx.set(dut.cmd.remaining, remaining & 0xFF)
        if done:
            ctx.set(dut.wr.valid, 0)
            return got, cycle, failed, events
    raise AssertionError("the request never finished")


def test_read_burst_moves_the_host_data_and_fills_past_the_object():
    def answer(req):
        return [(1, 0x1111_1111, 0, None), (0, 0x3333_3333, 0, 0x7F), (1, 0x2222_2222, 0, None)]

    async def bench(ctx, dut):
        return await _request(ctx, dut, write=0, addr=0x40, beats=2, end_be=0b0011)

    (got, _, failed, events), log = _run(bench, answer=answer)
    # One request for both words, its enables those of the last word; a beat of another tag is
    # dropped; the last word's bytes past the object read all ones.
    assert [b[:3] for b in log] == [(0, 0x40, 1)] and log[0][4] == 0b0011
    assert got == [(0x1111_1111, 0, 0), (0xFFFF_2222, 0, 1)]
    assert not failed and events == {"error": 0, "reject": 0, "timeout": 0}


def test_read_error_reads_ones_and_is_counted_once():
    def answer(req):
        return [(1, 0, 1, None), (1, 0, 1, None)]

    async def bench(ctx, dut):
        return await _request(ctx, dut, write=0, addr=0, beats=2)

    (got, _, failed, events), _ = _run(bench, answer=answer)
    assert got == [(0xFFFF_FFFF, 1, 0), (0xFFFF_FFFF, 1, 1)] and not failed
    assert events == {"error": 2, "reject": 1, "timeout": 0}


def test_a_host_that_never_answers_a_read_fails_it_in_time():
    async def bench(ctx, dut):
        first = await _request(ctx, dut, write=0, addr=8, beats=3)
        return first, ctx.get(dut.free)

    ((got, cycle, failed, events), free), log = _run(bench)
    assert got == [] and failed and cycle == TIMEOUT + 1
    assert events == {"error": 1, "reject": 0, "timeout": 1} and free


def test_write_burst_and_its_acknowledgement():
    async def bench(ctx, dut):
        return await _request(ctx, dut, write=1, addr=0x10, beats=2, data=(5, 6), end_be=0b0001)

    (got, _, failed, events), log = _run(bench, answer=lambda req: [(3, 0, 0, None)])
    assert [(b[0], b[1], b[2], b[3], b[4]) for b in log] == [(1, 0x10, 1, 5, 0xF),
                                                             (1, 0x10, 1, 6, 0x1)]
    assert not failed and events == {"error": 0, "reject": 0, "timeout": 0}


def test_a_write_cut_off_still_ends_the_hosts_packet():
    async def bench(ctx, dut):
        result = await _request(ctx, dut, write=1, addr=0x20, beats=3, data=(7, 8, 9))
        free_then = ctx.get(dut.free)
        await ctx.tick().repeat(10)
        return result, free_then, ctx.get(dut.free)

    # A host that takes nothing for longer than the timeout, then everything.
    ((got, cycle, failed, events), free_then, free_now), log = _run(bench, stall=TIMEOUT + 3)
    assert failed and events == {"error": 1, "reject": 0, "timeout": 1}
    assert free_then == 0 and free_now == 1
    # The beat on offer goes out as it was, then the rest of the burst with no byte enabled.
    assert [b[:5] for b in log] == [(1, 0x20, 2, 7, 0xF), (1, 0x20, 2, 7, 0), (1, 0x20, 2, 7, 0)]


def test_owed_beats_keep_their_requests_tag_when_the_next_request_starts():
    # A write cut off with a beat on offer, then a read started while its beats are still owed:
    # the owed beats keep the write's tag (the stream rule: a beat on offer does not change),
    # and the read goes out with its own, the next, after them.
    async def bench(ctx, dut):
        await _request(ctx, dut, write=1, addr=0x20, beats=2, data=(7, 8))
        return await _request(ctx, dut, write=0, addr=0x30, beats=1)

    _, log = _run(bench, stall=TIMEOUT + 6, answer=lambda req: [(1, 0, 0, None)])
    writes = [b for b in log if b[0]]
    assert [b[:5] for b in writes] == [(1, 0x20, 1, 7, 0xF), (1, 0x20, 1, 7, 0)]
    read = [b for b in log if not b[0]]
    assert {b[5] for b in writes} == {1} and [b[5] for b in read] == [2]


@pytest.mark.parametrize("timeout", (0, 3))
def test_host_timer(timeout):
    timer = HostTimer(timeout)
    seen = []

    async def bench(ctx):
        ctx.set(timer.run, 1)
        for cycles in (2, 1, 4):
            for _ in range(cycles):
                seen.append(ctx.get(timer.expired))
                await ctx.tick()
            # A restart in a cycle the wait also goes on: the restart wins.
            ctx.set(timer.restart, 1)
            await ctx.tick()
            ctx.set(timer.restart, 0)

    sim = Simulator(timer)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == ([0] * 7 if timeout == 0 else [0, 0, 0, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="non-negative integer"):
        HostTimer(-1)
