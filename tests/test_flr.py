"""A Function Level Reset keeps the stream rule on the host's ports (Amaranth's simulator).

An FLR resets the core, not the host: a beat the host was offered on ``ctl_req``, ``dma_req`` or
``db`` stays on offer, unchanged, until the host takes it (rtl/flr_hold.py); the core's RESET
follows, so the host still releases the object and drops the rest of a write it began taking.
Found by k-induction (``pci.streams``, docs/formal.md): before the fix a CLOSE on offer became
a RESET under the host's eyes, and owed DMA beats vanished before they were taken.
"""

from amaranth.sim import Simulator

from vmshm.abi.regmap import REG, CtlOp, Status
from vmshm.driver_model import vmshm_probe
from vmshm.driver_model.pci import pcie_flr
from vmshm.harness.bfm import HostBFM, StreamGuestBus, bus_timeout
from vmshm.harness.top import SimTop
from vmshm.host_model import Fault, HostFaults, HostModel, HostTiming, ShmRegion
from vmshm.rtl.layouts import ctl_req_layout
from vmshm.sim.bfm import CLOCK_PERIOD, AmaranthIO

#: A small host timeout, so the test is quick.
T = 64
#: How long the host stops taking beats: well past the timeout and the FLR.
STALL = 12 * T
SIZE = 4096
#: Cycles the UltraScale+ top's FLR may take: the core clears its 1024-byte name RAM meanwhile.
LIMIT_FLR = 2000
PATTERN = bytes(range(256)) * (SIZE // 256)


def watch_streams(ports, taken, broken):
    """Return a testbench checking the stream rule on ``ports`` (name: stream) at every edge.

    Each beat taken is appended to ``taken[name]`` as ``(edge, payload)``; each beat a port took
    back or changed while it was on offer, to ``broken`` as ``(name, edge, beat, what came)``.
    """
    taken.update({n: [] for n in ports})

    async def watch(ctx):
        held = dict.fromkeys(ports)
        sampled = [x for p in ports.values() for x in (p.valid, p.ready, p.payload.as_value())]
        edge = 0
        async for _, _, *values in ctx.tick().sample(*sampled):
            edge += 1
            for i, n in enumerate(ports):
                valid, ready, payload = values[3 * i:3 * i + 3]
                if held[n] is not None and not (valid and payload == held[n]):
                    broken.append((n, edge, held[n], valid and payload))
                if valid and ready:
                    taken[n].append((edge, payload))
                held[n] = payload if valid and not ready else None
    return watch


def run(shm_objects, guest, *faults, dma=None):
    """Run ``await guest(bus, name, host)`` against one function on a host with ``faults``.

    ``dma``, if given, replaces the host BFM's window process: ``await dma(io, port, host)``.
    Returns ``(beats, broken, host)``: as :func:`watch_streams` fills them, and the host model.
    """
    name = shm_objects.create(SIZE, "flr")
    region = ShmRegion.attach(name)
    region.write(0, PATTERN)
    region.close()
    timing = HostTiming(faults=HostFaults(tuple(faults)))
    host = HostModel(timing)
    top = SimTop(1, host_timeout=T)
    port = top.host(0)
    beats, broken = {}, []
    monitor = watch_streams({n: getattr(port, n) for n in ("ctl_req", "dma_req", "db")},
                            beats, broken)

    async def guest_bench(ctx):
        io = AmaranthIO(ctx, top.cycle)
        bus = StreamGuestBus(io, top.req, top.cpl, top.data_width,
                             timeout=bus_timeout(top.host_timeout))
        await guest(bus, name, host)
        io.settle()

    def background(process):
        async def bench(ctx):
            await process(AmaranthIO(ctx, top.cycle))
        return bench

    sim = Simulator(top)
    sim.add_clock(CLOCK_PERIOD)
    bfm = HostBFM(port, top.data_width, host, timing)
    dma_process = bfm.dma_process if dma is None else lambda io: dma(io, port, host)
    for process in (bfm.ctl_process, dma_process, bfm.db_process):
        sim.add_testbench(background(process), background=True)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(guest_bench)
    try:
        sim.run()
    finally:
        if host.is_open:
            host.close()
    return beats, broken, host


def ctl_ops(beats):
    """Return the ops of the control beats the host took, with the edges they moved on."""
    op = ctl_req_layout()["op"]
    mask = (1 << op.width) - 1
    return [(edge, payload >> op.offset & mask) for edge, payload in beats["ctl_req"]]


async def opened(bus, name):
    drv = (await vmshm_probe(bus))[0][0]
    fd = await drv.open()
    assert await drv.ioctl(fd, 0, name) == 0
    return drv, fd


def test_flr_keeps_a_close_on_offer_and_a_doorbell(shm_objects):
    """A CLOSE that timed out with its beat on offer, and a doorbell the host has not taken, go
    through an FLR unchanged; the host then takes CLOSE, then the RESET, and releases the
    object. (Before the fix the CLOSE on offer became a RESET, and the doorbell vanished.)"""
    seen = {}

    async def guest(bus, name, host):
        drv, fd = await opened(bus, name)
        await drv.regs.write32(REG["DOORBELL"].offset, 0x0002_0005)   # peer 2, vector 5
        seen["close"] = await drv.regs.read32(REG["CLOSE"].offset)
        seen["open_before"] = host.is_open
        await pcie_flr(drv.pdev)
        await bus.idle(2 * STALL)
        seen["open_after"] = host.is_open

    # Control exchanges: 0 the power-on RESET, 1 the OPEN, 2 the CLOSE.
    beats, broken, host = run(shm_objects, guest,
                              Fault("ctl", "stall", exchange=2, cycles=STALL),
                              Fault("db", "stall", exchange=0, cycles=STALL))
    assert seen["close"] == Status.ETIMEDOUT and seen["open_before"] is True
    assert broken == [], f"a beat on offer was taken back or changed: {broken}"
    ops = [op for _, op in ctl_ops(beats)]
    after_open = ops[ops.index(CtlOp.OPEN):]
    assert after_open[-2:] == [CtlOp.CLOSE, CtlOp.RESET] and after_open.count(CtlOp.RESET) == 1, \
        f"after the OPEN: CLOSE, then the FLR's RESET ({ops})"
    assert len(beats["db"]) == 1, "the doorbell on offer reaches the host"
    assert seen["open_after"] is False and not host.is_open


def test_flr_keeps_an_owed_dma_beat_then_the_reset_ends_the_write(shm_objects):
    """A window write the host stopped taking after its first beat: the beat on offer goes
    through an FLR unchanged and is taken before the RESET, which ends the write (stored
    nowhere) and releases the object; the rest of the write, not yet offered, is dropped.
    The function works again after the FLR."""
    seen = {}

    async def guest(bus, name, host):
        drv, fd = await opened(bus, name)
        mapping = await drv.mmap(fd, 64)
        await mapping.write(0, b"\xAA" * 32)
        await pcie_flr(drv.pdev)
        await bus.idle(2 * STALL)
        seen["open_after"] = host.is_open
        drv, fd = await opened(bus, name)
        mapping = await drv.mmap(fd, 64)
        await mapping.write(32, b"after the FLR")
        seen["read_back"] = await mapping.read(0, 48)
        await drv.munmap(mapping)
        await drv.close(fd)

    beats, broken, host = run(shm_objects, guest,
                              Fault("dma", "stall", exchange=0, beat=1, cycles=STALL))
    assert broken == [], f"a beat on offer was taken back or changed: {broken}"
    resets = [edge for edge, op in ctl_ops(beats) if op == CtlOp.RESET]
    assert len(resets) == 2, "the power-on RESET and the FLR's"
    before = [edge for edge, _ in beats["dma_req"] if edge < resets[1]]
    assert len(before) == 2, "the write's first beat, then the one on offer at the FLR"
    assert seen["open_after"] is False and not host.is_open
    # The write cut off by the FLR stored nothing; the one after it is stored whole.
    assert seen["read_back"] == PATTERN[:32] + b"after the FLR" + PATTERN[45:48]


def test_an_answer_to_a_read_kept_through_an_flr_is_dropped(shm_objects):
    """A window read the host did not take before the guest gave up on it (all ones) is kept on
    offer through an FLR (rtl/flr_hold.py); the host takes it after the FLR, then the first
    window read of the function probed again, and answers the old one only then, in front of
    the new one's answer (PCIe orders no completions of different requests). The core drops
    the old answer: the new read and a later one return the object's bytes, and TIMEOUTS,
    REJECTS and DMA_ERROR stay as the FLR left them (0). Before the fix the FLR restarted the
    core's tags, the new read carried the old one's tag, and it returned the old answer's
    bytes."""
    seen = {}
    stale = b"\xee" * 8
    release = []

    async def guest(bus, name, host):
        drv, fd = await opened(bus, name)
        mapping = await drv.mmap(fd, 64)
        seen["given_up"] = await mapping.read(0, 8)
        await pcie_flr(drv.pdev)
        release.append(bus.now())
        drv, fd = await opened(bus, name)
        mapping = await drv.mmap(fd, 64)
        seen["after"] = await mapping.read(32, 8)
        seen["later"] = await mapping.read(40, 8)
        seen["timeouts"] = await drv.regs.read32(REG["TIMEOUTS"].offset)
        seen["rejects"] = await drv.regs.read32(REG["REJECTS"].offset)
        seen["status"] = await drv.regs.read32(REG["STATUS"].offset)
        await drv.munmap(mapping)
        await drv.close(fd)

    async def dma(io, port, host):
        wb = len(port.dma_rsp.payload.data) // 8

        async def answer(req, data):
            words = int(req.count) + 1
            for i in range(words):
                await io.put(port.dma_rsp, {"data": int.from_bytes(data[i * wb:(i + 1) * wb],
                                                                   "little"),
                                            "err": 0, "last": i == words - 1,
                                            "tag": int(req.tag)})

        # Take nothing until the FLR is done: the first read's request stays on offer.
        while not release:
            await io.wait(1)
        old = await io.get(port.dma_req)
        new = await io.get(port.dma_req)
        seen["tags"] = (int(old.tag), int(new.tag))
        # The old read's answer first, then the new read's; then serve the rest in order.
        await answer(old, stale * (int(old.count) + 1))
        while True:
            data, _ = host.dma_read(int(new.addr), (int(new.count) + 1) * wb)
            await answer(new, data)
            new = await io.get(port.dma_req)

    beats, broken, host = run(shm_objects, guest, dma=dma)
    assert seen["given_up"] == b"\xff" * 8, "the host took the first read too early"
    assert broken == [], f"a beat on offer was taken back or changed: {broken}"
    assert seen["after"] == PATTERN[32:40], \
        f"the read after the FLR got {seen['after'].hex()} (tags old/new {seen['tags']})"
    assert seen["later"] == PATTERN[40:48]
    dma_error = next(f.offset for f in REG["STATUS"].fields if f.name == "DMA_ERROR")
    assert seen["timeouts"] == seen["rejects"] == 0 and not seen["status"] >> dma_error & 1, seen
    assert not host.is_open


def test_usp_flr_keeps_a_close_and_a_doorbell_on_offer():
    """The UltraScale+ top, whose FLR (``cfg_flr_in_process``) may come at any time: a CLOSE the
    host has not taken yet (still being sent, not given up on) and a doorbell on offer stay on
    offer, unchanged, through the FLR; the host then takes CLOSE, then the RESET. (Before the
    fix both were taken back on the FLR's edge.)"""
    from vmshm.abi.regmap import BAR_REGS
    from vmshm.rtl.usp import top as usp_top
    from vmshm.rtl.usp.descriptors import ReqType
    from test_usp_board import _cq_put, _cq_request, _out_of_reset
    from usp_harness import run_top

    width = 64
    dut = usp_top.VMShmUSP(axis_width=width)
    put = _cq_put(dut)
    taken, broken = {}, []
    watch = watch_streams({"ctl_req": dut.ctl_req, "db": dut.db}, taken, broken)

    async def main(ctx):
        await _out_of_reset(ctx, dut)
        ctx.set(dut.m_axis_cc_tready, 1)
        ctx.set(dut.ctl_req.ready, 1)                       # the power-on RESET is taken
        for _ in range(4):
            await ctx.posedge(dut.user_clk)
        ctx.set(dut.ctl_req.ready, 0)
        await put(ctx, _cq_request(dut, width, BAR_REGS, ReqType.MEM_WRITE,
                                   REG["DOORBELL"].offset, 1, [0x0002_0005]))
        await put(ctx, _cq_request(dut, width, BAR_REGS, ReqType.MEM_READ,
                                   REG["CLOSE"].offset, 1, tag=1))
        for _ in range(40):
            await ctx.posedge(dut.user_clk)
        assert ctx.get(dut.ctl_req.valid) and ctx.get(dut.db.valid), "nothing on offer"
        ctx.set(dut.cfg_flr_in_process, 1)
        for _ in range(LIMIT_FLR):
            await ctx.posedge(dut.user_clk)
            if ctx.get(dut.cfg_flr_done) & 1:
                break
        ctx.set(dut.cfg_flr_in_process, 0)
        ctx.set(dut.ctl_req.ready, 1)
        ctx.set(dut.db.ready, 1)
        for _ in range(20):
            await ctx.posedge(dut.user_clk)

    run_top(dut, main, watch)
    assert broken == [], f"a beat on offer was taken back or changed: {broken}"
    ops = [op for _, op in ctl_ops(taken)]
    assert ops == [CtlOp.RESET, CtlOp.CLOSE, CtlOp.RESET], ops
    assert len(taken["db"]) == 1, "the doorbell reaches the host"
