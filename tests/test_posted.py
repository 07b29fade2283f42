"""Window writes pass a waiting window read (issue 22, finding 2), on Amaranth's simulator.

A root port may not pass the completion of the read we sent ahead of the posted writes it has
queued for us (PCIe ordering: a completion does not pass a posted request). The host here plays
that root port: it holds its answer to a window read until it has taken the guest's window writes
queued behind the read. A core that takes no write while its read waits never gets the answer,
and the read fails with all ones after ``host_timeout`` (what main did); the core must let the
writes pass, send them on ``dma_req`` as their own packets, and complete the read with its data.
"""

from amaranth.sim import Simulator

from vmshm.abi.regmap import BAR_NAME, BAR_REGS, BAR_WINDOW, CtlOp
from vmshm.rtl import VMShmCore
from vmshm.rtl.layouts import CplStatus

TIMEOUT = 64
SIZE = 4096


def _run(guest, *, writes_first, timeout=TIMEOUT):
    """Run ``await guest(ctx, core, send)`` against a host that answers a window read only once it
    has taken ``writes_first`` window write beats after it; return the host's DMA log and the
    completions as ``(data, status, last, error)``."""
    core = VMShmCore(window_size=SIZE, name_size=16, data_width=32, host_timeout=timeout)
    host = core.host
    dma_log, cpls = [], []

    async def control(ctx):
        # Answers every OPEN with success: a SIZE-byte object.
        while True:
            ctx.set(host.ctl_req.ready, 1)
            _, _, valid, p = await ctx.tick().sample(host.ctl_req.valid, host.ctl_req.payload)
            if valid and p.last and p.op == CtlOp.OPEN:
                ctx.set(host.ctl_rsp.payload, {"status": 0, "size": SIZE, "addr": 0,
                                               "op": CtlOp.OPEN, "tag": p.tag})
                ctx.set(host.ctl_rsp.valid, 1)
                await ctx.tick().until(host.ctl_rsp.ready)
                ctx.set(host.ctl_rsp.valid, 0)

    async def dma(ctx):
        # One FIFO of answers, as a root port's: a write's acknowledgement waits behind the
        # read's data, and the read's data behind the writes queued after it.
        answers, held = [], None
        while True:
            ctx.set(host.dma_req.ready, 1)
            if held is not None and held[0] <= sum(1 for b in dma_log if b[0]):
                answers = held[1] + answers
                held = None
            if answers:
                ctx.set(host.dma_rsp.payload, answers[0])
            ctx.set(host.dma_rsp.valid, bool(answers))
            _, _, valid, p, rsp_valid, rsp_ready = await ctx.tick().sample(
                host.dma_req.valid, host.dma_req.payload, host.dma_rsp.valid, host.dma_rsp.ready)
            if rsp_valid and rsp_ready:
                answers.pop(0)
            if valid:
                dma_log.append((p.write, p.addr, p.count, p.data, p.be, p.tag))
                if not p.write:
                    beats = [{"data": 0xD000 + p.addr + 4 * i, "err": 0, "last": i == p.count,
                              "tag": p.tag} for i in range(p.count + 1)]
                    writes = sum(1 for b in dma_log if b[0])
                    held = (writes + writes_first, beats)
                elif len([b for b in dma_log if b[0] and b[1:3] == (p.addr, p.count)
                          and b[5] == p.tag]) == p.count + 1:
                    answers.append({"data": 0, "err": 0, "last": 1, "tag": p.tag})

    async def completions(ctx):
        ctx.set(core.cpl.ready, 1)
        while True:
            _, _, valid, p, err = await ctx.tick().sample(core.cpl.valid, core.cpl.payload,
                                                          core.cpl_error)
            if valid:
                cpls.append((p.data, p.status, p.last, err))

    async def send(ctx, *, bar, addr, write, count=0, data=(), be=0xF, gap=0):
        """Offer one guest request until the core takes it: a write's beats back to back, or
        ``gap`` cycles without a beat offered after each but the last (a slow guest)."""
        beats = data if write else (0,)
        for i, beat in enumerate(beats):
            ctx.set(core.req.payload, {"bar": bar, "addr": addr, "write": write, "count": count,
                                       "data": beat, "be": be})
            ctx.set(core.req.valid, 1)
            await ctx.tick().until(core.req.ready)
            if gap and i < len(beats) - 1:
                ctx.set(core.req.valid, 0)
                await ctx.tick().repeat(gap)
        ctx.set(core.req.valid, 0)

    async def bench(ctx):
        ctx.set(core.dma_enable, 1)
        await ctx.tick().repeat(2)
        # Open the object: its name, then a read of OPEN.
        await send(ctx, bar=BAR_NAME, addr=0, write=1, data=(0x6F6F662F, 0))
        await send(ctx, bar=BAR_REGS, addr=0, write=0)
        await ctx.tick().repeat(100)
        assert cpls[-1][:2] == (0, CplStatus.SC), "OPEN failed"
        del cpls[:]
        await guest(ctx, core, send)
        await ctx.tick().repeat(4 * timeout)

    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(control, background=True)
    sim.add_testbench(dma, background=True)
    sim.add_testbench(completions, background=True)
    sim.add_testbench(bench)
    sim.run()
    return dma_log, cpls


def test_finding2_window_writes_pass_a_read_the_host_answers_behind_them():
    """A 2-word read waits for answers the host sends only after the 3 write beats queued
    behind it (a 2-beat and a 1-beat write): they reach the host, the read gets its data."""
    async def guest(ctx, core, send):
        await send(ctx, bar=BAR_WINDOW, addr=0x40, write=0, count=1)
        await send(ctx, bar=BAR_WINDOW, addr=0x80, write=1, count=1, data=(0x11, 0x22))
        await send(ctx, bar=BAR_WINDOW, addr=0x90, write=1, data=(0x33,), be=0x3)

    dma_log, cpls = _run(guest, writes_first=3)
    read = [b for b in dma_log if not b[0]]
    writes = [b[:5] for b in dma_log if b[0]]
    assert [b[1:3] for b in read] == [(0x40, 1)]
    assert writes == [(1, 0x80, 1, 0x11, 0xF), (1, 0x80, 1, 0x22, 0xF), (1, 0x90, 0, 0x33, 0x3)]
    # Each write its own packet, none with the read's tag (its answer is not the read's).
    tags = {b[5] for b in dma_log if b[0]}
    assert read[0][5] not in tags
    # Every request one completion: the writes' acknowledgements come before the read's data,
    # which is the host's, not all ones.
    assert cpls == [(0, CplStatus.SC, 1, 0), (0, CplStatus.SC, 1, 0),
                    (0xD040, CplStatus.SC, 0, 0), (0xD044, CplStatus.SC, 1, 0)]


def test_a_read_whose_host_never_answers_still_fails_in_time_with_a_write_passing():
    """The read's wait goes on while a write passes it: the host takes the write but never
    answers the read, which still ends in all ones, after the write's acknowledgement."""
    async def guest(ctx, core, send):
        await send(ctx, bar=BAR_WINDOW, addr=0x40, write=0)
        await send(ctx, bar=BAR_WINDOW, addr=0x80, write=1, data=(0x11,))

    dma_log, cpls = _run(guest, writes_first=1000)
    assert [b[:5] for b in dma_log if b[0]] == [(1, 0x80, 0, 0x11, 0xF)]
    assert cpls == [(0, CplStatus.SC, 1, 0), (0xFFFF_FFFF, CplStatus.SC, 1, 1)]


def test_a_slow_guest_does_not_cut_a_passing_write():
    """A passing write's timer runs only while the host does not take a beat offered, not while
    the guest is slow to offer the next: beats two timeouts apart all reach the host with their
    bytes, each once, and the read it passed gets its data after the write's acknowledgement."""
    async def guest(ctx, core, send):
        await send(ctx, bar=BAR_WINDOW, addr=0x40, write=0)
        await send(ctx, bar=BAR_WINDOW, addr=0x80, write=1, count=2, data=(0x11, 0x22, 0x33),
                   gap=2 * TIMEOUT)

    dma_log, cpls = _run(guest, writes_first=3)
    assert [b[:5] for b in dma_log if b[0]] == [(1, 0x80, 2, 0x11, 0xF), (1, 0x80, 2, 0x22, 0xF),
                                                 (1, 0x80, 2, 0x33, 0xF)]
    assert cpls == [(0, CplStatus.SC, 1, 0), (0xD040, CplStatus.SC, 1, 0)]
