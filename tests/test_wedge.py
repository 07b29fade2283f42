"""The device never wedges: every guest request gets one completion in bounded time, whatever the
host does, and a reset of the function reaches the host.

Each test is one of the wedges issue 17 lists, played by a misbehaving host
(:class:`~vmshm.host_model.HostFaults`, applied by the shared host BFM) or a reset of the function,
on Amaranth's simulator. Every timed-out access is checked against the bound docs/timing.md states
(:mod:`vmshm.abi.bounds`), and after it the device must still work: registers answer at once, CLOSE
releases, and once the host is back OPEN and the window work again.
"""

import errno
import os
import subprocess
import sys

import pytest
from amaranth.hdl import ResetInserter, Signal
from amaranth.sim import Simulator

from vmshm.abi import pci_regs as P
from vmshm.harness.bfm import HostBFM, StreamGuestBus, bus_timeout
from vmshm.abi.bounds import request_bound
from vmshm.driver_model import vmshm_probe
from vmshm.driver_model.pci import pcie_flr
from vmshm.host_model import Fault, HostFaults, HostModel, HostTiming, ShmRegion
from vmshm.abi.regmap import REG, Status
from vmshm.sim.bfm import CLOCK_PERIOD, AmaranthIO
from vmshm.harness.top import SimTop
from vmshm.sim.engine import simulate

#: A small host timeout, so tests are quick; the bounds scale with it.
T = 64
#: How long a host that is "back later" stalls: well past the timeout.
STALL = 12 * T
SIZE = 4096
PATTERN = bytes(range(256)) * (SIZE // 256)


def faults(*items):
    return HostTiming(faults=HostFaults(tuple(items)))


def run(shm_objects, guest, timing=None, **params):
    """Run ``await guest(bus, name, host)`` against one device whose object holds PATTERN."""
    name = shm_objects.create(SIZE, "wedge")
    region = ShmRegion.attach(name)
    region.write(0, PATTERN)
    region.close()
    timing = timing or HostTiming()
    host = HostModel(timing)
    try:
        result = simulate(lambda bus: guest(bus, name, host), hosts=host, timing=timing,
                          host_timeout=T, **params)
        result.hosts = [host.state()]
    finally:
        if host.is_open:
            host.close()
    return result, name


def content(name):
    region = ShmRegion.attach(name)
    try:
        return region.read(0, SIZE)
    finally:
        region.close()


async def timed(bus, label, coro):
    """Await ``coro`` with the bus records labelled ``label``; return its value or OSError."""
    bus.label = label
    try:
        return await coro
    except OSError as exc:
        return exc
    finally:
        bus.label = ""


def longest(result, label):
    cycles = [r.cycles for r in result.records if r.label == label]
    assert cycles, f"no transaction labelled {label!r}"
    return max(cycles)


async def status(drv):
    value = await drv.regs.read32(REG["STATUS"].offset)
    return value & 1, value >> 8 & 0xFF


async def opened(bus, name):
    drv = (await vmshm_probe(bus))[0][0]
    fd = await drv.open()
    await drv.ioctl(fd, 0, name)
    return drv, fd


async def still_usable(bus, drv, fd, name, seen):
    """Check registers answer at once, then (host back) CLOSE, OPEN and the window work."""
    await timed(bus, "ID", drv.regs.read32(REG["ID"].offset))
    await bus.idle(STALL + 4 * T)
    seen["close"] = await timed(bus, "CLOSE", drv.regs.read32(REG["CLOSE"].offset))
    seen["reopen"] = await timed(bus, "OPEN again", drv.ioctl(fd, 0, name))
    mapping = await drv.mmap(fd, 64)
    await mapping.write(32, b"after the fault")
    seen["read_back"] = await mapping.read(32, 15)
    seen["pattern"] = await mapping.read(0, 16)
    await drv.munmap(mapping)
    await drv.close(fd)


def check_usable(result, seen):
    assert longest(result, "ID") == request_bound("reg-read", T)
    assert seen["close"] == 0
    assert seen["reopen"] == 0
    assert seen["read_back"] == b"after the fault"
    assert seen["pattern"] == PATTERN[:16]
    assert result.hosts[0]["is_open"] is False


# -- the control channel -------------------------------------------------------------------------

# Control exchanges count every packet: 0 is the device's RESET out of power-on, 1 the first OPEN.

@pytest.mark.parametrize("beat", [0, 3], ids=["never-takes", "stops-mid-name"])
def test_open_host_stops_taking(shm_objects, beat):
    """A host that stops taking OPEN's name: ETIMEDOUT in bound, nothing opened, usable after."""
    seen = {}

    async def guest(bus, name, host):
        drv = (await vmshm_probe(bus))[0][0]
        fd = await drv.open()
        seen["open"] = await timed(bus, "OPEN", drv.ioctl(fd, 0, name))
        seen["status"] = await status(drv)
        seen["host_open"] = host.is_open
        await still_usable(bus, drv, fd, name, seen)

    result, name = run(shm_objects, guest, faults(Fault("ctl", "stall", exchange=1, beat=beat,
                                                          cycles=STALL)))
    assert isinstance(seen["open"], OSError) and seen["open"].errno == errno.ETIMEDOUT
    name_bytes = len(name) + 1
    assert longest(result, "OPEN") <= request_bound("open", T, name_bytes=name_bytes)
    assert seen["status"] == (0, Status.ETIMEDOUT)
    assert seen["host_open"] is False
    check_usable(result, seen)
    # The cut-off OPEN was finished by the byte on offer and a RESET, which the host saw
    # (besides the power-on one).
    assert [e.kind for e in result.events[0]].count("reset") == 2


def test_close_host_never_takes(shm_objects):
    """CLOSE the host does not take: ETIMEDOUT in bound, the window shut; released once back."""
    seen = {}

    async def guest(bus, name, host):
        drv, fd = await opened(bus, name)
        mapping = await drv.mmap(fd, 16)
        seen["close"] = await timed(bus, "CLOSE", drv.regs.read32(REG["CLOSE"].offset))
        seen["status"] = await status(drv)
        seen["window"] = await mapping.read(0, 4)
        seen["host_open_during"] = host.is_open
        await bus.idle(STALL)
        seen["host_open_after"] = host.is_open
        await drv.munmap(mapping)
        seen["reopen"] = await timed(bus, "OPEN again", drv.ioctl(fd, 0, name))
        seen["map_size"] = await drv.regs.read32(REG["MAP_SIZE"].offset)
        await drv.close(fd)

    result, _ = run(shm_objects, guest, faults(Fault("ctl", "stall", exchange=2,
                                                      cycles=STALL)))
    assert seen["close"] == Status.ETIMEDOUT
    assert longest(result, "CLOSE") <= request_bound("close", T)
    assert seen["status"] == (0, Status.ETIMEDOUT)
    assert seen["window"] == b"\xff" * 4
    assert seen["host_open_during"] is True
    assert seen["host_open_after"] is False, "the owed CLOSE must reach the host"
    assert seen["reopen"] == 0 and seen["map_size"] == SIZE
    assert result.hosts[0]["is_open"] is False


@pytest.mark.parametrize("kind", ["double", "unasked"])
def test_open_answer_twice_or_unasked(shm_objects, kind):
    """An OPEN answered twice, or an answer nobody asked for: neither is taken for another op."""
    seen = {}

    async def guest(bus, name, host):
        drv, fd = await opened(bus, name)
        seen["map_size"] = await drv.regs.read32(REG["MAP_SIZE"].offset)
        await drv.close(fd)
        seen["after_close"] = await status(drv), host.is_open
        fd = await drv.open()
        seen["reopen"] = await timed(bus, "OPEN again", drv.ioctl(fd, 0, name))
        seen["map_size_again"] = await drv.regs.read32(REG["MAP_SIZE"].offset)
        mapping = await drv.mmap(fd, 16)
        seen["data"] = await mapping.read(0, 16)
        await drv.munmap(mapping)
        await drv.close(fd)

    result, _ = run(shm_objects, guest, faults(Fault("ctl", kind, exchange=1),
                                               Fault("ctl", kind, exchange=2)))
    assert seen["map_size"] == SIZE
    assert seen["after_close"] == ((0, Status.OK), False)
    assert seen["reopen"] == 0 and seen["map_size_again"] == SIZE
    assert seen["data"] == PATTERN[:16]
    assert result.hosts[0]["is_open"] is False


def test_open_answer_never_comes(shm_objects):
    """A host that opens but never answers: ETIMEDOUT; the device closes it again by itself."""
    seen = {}

    async def guest(bus, name, host):
        drv = (await vmshm_probe(bus))[0][0]
        fd = await drv.open()
        seen["open"] = await timed(bus, "OPEN", drv.ioctl(fd, 0, name))
        seen["host_open"] = host.is_open
        # The next OPEN waits out the missing answer, gives up, and sends a CLOSE to be sure.
        seen["second"] = await timed(bus, "OPEN 2", drv.ioctl(fd, 0, name))
        await bus.idle(4 * T)
        seen["host_open_after"] = host.is_open
        seen["third"] = await timed(bus, "OPEN 3", drv.ioctl(fd, 0, name))
        await drv.close(fd)

    result, name = run(shm_objects, guest, faults(Fault("ctl", "drop", exchange=1)))
    assert seen["open"].errno == errno.ETIMEDOUT and seen["second"].errno == errno.ETIMEDOUT
    for label in ("OPEN", "OPEN 2"):
        assert longest(result, label) <= request_bound("open", T, name_bytes=len(name) + 1)
    assert seen["host_open"] is True and seen["host_open_after"] is False
    assert seen["third"] == 0
    assert result.hosts[0]["is_open"] is False


# -- the DMA port --------------------------------------------------------------------------------

@pytest.mark.parametrize("beat", [0, 2], ids=["never-takes", "stops-mid-burst"])
def test_window_write_host_stops_taking(shm_objects, beat):
    """A write the host stops taking: completes in bound; the host's packet is finished with
    beats that write nothing; the device works after."""
    seen = {}

    async def guest(bus, name, host):
        drv, fd = await opened(bus, name)
        mapping = await drv.mmap(fd, SIZE)
        seen["write"] = await timed(bus, "WRITE", mapping.write(256, b"\xaa" * 16))
        seen["timeouts"] = await drv.regs.read32(REG["TIMEOUTS"].offset)
        await drv.munmap(mapping)
        await still_usable(bus, drv, fd, name, seen)

    result, name = run(shm_objects, guest, faults(Fault("dma", "stall", exchange=0, beat=beat,
                                                         cycles=STALL)))
    assert longest(result, "WRITE") <= request_bound("write", T, beats=4)
    assert seen["timeouts"] == 1
    check_usable(result, seen)
    got = content(name)
    # Beats the host took before it stalled, and the one on offer, land; the rest do not.
    landed = 4 * (beat + 1)
    assert got[256:256 + landed] == b"\xaa" * landed
    assert got[256 + landed:272] == PATTERN[256 + landed:272]


@pytest.mark.parametrize("fault", [Fault("dma", "stall", exchange=0, cycles=STALL),
                                   Fault("dma", "drop", exchange=0),
                                   Fault("dma", "late", exchange=0, cycles=STALL)],
                         ids=["never-takes", "never-answers", "answers-late"])
def test_window_read_host_fails(shm_objects, fault):
    """A read the host never takes, never answers or answers late: all ones in bound; the next
    write, CLOSE and reads work."""
    seen = {}

    async def guest(bus, name, host):
        drv, fd = await opened(bus, name)
        mapping = await drv.mmap(fd, SIZE)
        seen["read"] = await timed(bus, "READ", mapping.read(0, 16))
        seen["id"] = await timed(bus, "ID", drv.regs.read32(REG["ID"].offset))
        await bus.idle(STALL + 2 * T)
        seen["write"] = await timed(bus, "WRITE after", mapping.write(512, b"then this"))
        seen["later"] = await mapping.read(512, 9)
        seen["other"] = await mapping.read(1024, 16)
        await drv.munmap(mapping)
        seen["close"] = await timed(bus, "CLOSE", drv.regs.read32(REG["CLOSE"].offset))
        await drv.close(fd)

    result, name = run(shm_objects, guest, faults(fault))
    assert seen["read"] == b"\xff" * 16
    assert longest(result, "READ") <= request_bound("read", T, beats=4)
    assert longest(result, "ID") == request_bound("reg-read", T)
    assert longest(result, "WRITE after") <= request_bound("write", T, beats=3)
    assert seen["later"] == b"then this" and seen["other"] == PATTERN[1024:1040]
    assert seen["close"] == 0 and longest(result, "CLOSE") <= request_bound("close", T)
    assert content(name)[512:521] == b"then this"


@pytest.mark.parametrize("kind", ["double", "unasked"])
def test_window_answer_twice_or_unasked(shm_objects, kind):
    """Read data answered twice, or beats nobody asked for: never taken for another read."""
    seen = {}

    async def guest(bus, name, host):
        drv, fd = await opened(bus, name)
        mapping = await drv.mmap(fd, SIZE)
        seen["first"] = await mapping.read(0, 16)
        seen["second"] = await mapping.read(2048, 16)
        await mapping.write(64, b"ok")
        seen["third"] = await mapping.read(64, 2)
        await drv.munmap(mapping)
        await drv.close(fd)

    faulty = [Fault("dma", kind, exchange=i) for i in range(3)]
    result, name = run(shm_objects, guest, faults(*faulty))
    assert seen["first"] == PATTERN[:16]
    assert seen["second"] == PATTERN[2048:2064]
    assert seen["third"] == b"ok"


# -- resets reach the host -----------------------------------------------------------------------

def simulate_with_reset(guest, host, timing, **params):
    """Run ``await guest(bus, pulse)``; ``await pulse()`` resets the function (its ``rst``)."""
    top = SimTop(1, **params)
    rst = Signal()
    dut = ResetInserter(rst)(top)
    out = {}

    async def testbench(ctx):
        io = AmaranthIO(ctx, top.cycle)
        bus = StreamGuestBus(io, top.req, top.cpl, top.data_width,
                             timeout=bus_timeout(top.host_timeout))

        async def pulse():
            io.settle()
            ctx.set(rst, 1)
            await ctx.tick().repeat(2)
            ctx.set(rst, 0)

        out["value"] = await guest(bus, pulse)
        io.settle()

    def background(process):
        async def testbench(ctx):
            await process(AmaranthIO(ctx, top.cycle))
        return testbench

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    bfm = HostBFM(top.host(0), top.data_width, host, timing)
    sim.add_testbench(background(bfm.ctl_process), background=True)
    sim.add_testbench(background(bfm.dma_process), background=True)
    sim.add_testbench(testbench)
    sim.run()
    return out["value"], bfm.events


def test_reset_while_the_host_owes_an_open_answer(shm_objects):
    """Reset while OPEN's answer is on its way: the host releases the object, the old answer is
    dropped, and the first OPEN after the reset behaves as after power-on."""
    name = shm_objects.create(SIZE, "wedge")
    timing = faults(Fault("ctl", "late", exchange=1, cycles=3 * T))
    host = HostModel(timing)

    async def guest(bus, pulse):
        seen = {}
        drv = (await vmshm_probe(bus))[0][0]
        fd = await drv.open()
        seen["open"] = await timed(bus, "OPEN", drv.ioctl(fd, 0, name))
        seen["host_open_before"] = host.is_open
        await pulse()
        # The host sends its old answer (which must be dropped), then takes the RESET.
        await bus.idle(4 * T)
        seen["host_open_after_reset"] = host.is_open
        drv = (await vmshm_probe(bus))[0][0]
        fd = await drv.open()
        seen["status"] = await status(drv)
        seen["reopen"] = await timed(bus, "OPEN again", drv.ioctl(fd, 0, name))
        seen["map_size"] = await drv.regs.read32(REG["MAP_SIZE"].offset)
        mapping = await drv.mmap(fd, 16)
        await mapping.write(0, b"after reset")
        await drv.munmap(mapping)
        await drv.close(fd)
        seen["host_open_end"] = host.is_open
        return seen

    try:
        seen, events = simulate_with_reset(guest, host, timing, host_timeout=T)
    finally:
        if host.is_open:
            host.close()
    assert seen["open"].errno == errno.ETIMEDOUT
    assert seen["host_open_before"] is True
    assert seen["host_open_after_reset"] is False, "the reset must reach the host"
    assert seen["status"] == (0, 0), "no state from before the reset"
    assert seen["reopen"] == 0 and seen["map_size"] == SIZE
    assert seen["host_open_end"] is False
    assert content(name)[:11] == b"after reset"


def test_reset_during_a_window_write(shm_objects):
    """Reset while the host holds half a DMA write: the host drops it and releases the object;
    the first OPEN after the reset is not EBUSY and the window works."""
    name = shm_objects.create(SIZE, "wedge")
    timing = faults(Fault("dma", "stall", exchange=0, beat=2, cycles=6 * T))
    host = HostModel(timing)

    async def guest(bus, pulse):
        seen = {}
        drv, fd = await opened(bus, name)
        mapping = await drv.mmap(fd, SIZE)
        seen["write"] = await timed(bus, "WRITE", mapping.write(256, b"\xbb" * 32))
        await pulse()
        await bus.idle(8 * T)       # the host wakes up half-way through the old write
        seen["host_open_after_reset"] = host.is_open
        drv = (await vmshm_probe(bus))[0][0]
        fd = await drv.open()
        seen["reopen"] = await timed(bus, "OPEN again", drv.ioctl(fd, 0, name))
        mapping = await drv.mmap(fd, SIZE)
        await mapping.write(1024, b"new write")
        seen["read_back"] = await mapping.read(1024, 9)
        await drv.munmap(mapping)
        await drv.close(fd)
        return seen

    try:
        seen, events = simulate_with_reset(guest, host, timing, host_timeout=T)
    finally:
        if host.is_open:
            host.close()
    assert seen["host_open_after_reset"] is False
    assert seen["reopen"] == 0
    assert seen["read_back"] == b"new write"
    got = content(name)
    # The cut-off write never completed on the host: nothing of it was stored.
    assert got[256:288] == b"\0" * 32
    assert got[1024:1033] == b"new write"


def test_function_level_reset_reaches_the_host(shm_objects):
    """An FLR through the PCI Express capability while the host owes an OPEN answer: the host
    releases the object, the old answer is dropped, and the device works after a new probe."""
    seen = {}

    async def guest(bus, name, host):
        drv = (await vmshm_probe(bus))[0][0]
        fd = await drv.open()
        seen["open"] = await timed(bus, "OPEN", drv.ioctl(fd, 0, name))
        seen["host_open_before"] = host.is_open
        await timed(bus, "FLR", pcie_flr(drv.pdev))
        seen["command"] = await drv.pdev.read_config(P.PCI_COMMAND, 2)
        await bus.idle(4 * T)
        seen["host_open_after_reset"] = host.is_open
        drv = (await vmshm_probe(bus))[0][0]
        fd = await drv.open()
        seen["status"] = await status(drv)
        seen["reopen"] = await timed(bus, "OPEN again", drv.ioctl(fd, 0, name))
        mapping = await drv.mmap(fd, 16)
        seen["data"] = await mapping.read(0, 16)
        await drv.munmap(mapping)
        await drv.close(fd)

    result, _ = run(shm_objects, guest, faults(Fault("ctl", "late", exchange=1, cycles=3 * T)))
    assert seen["open"].errno == errno.ETIMEDOUT and seen["host_open_before"] is True
    assert longest(result, "FLR") <= request_bound("reg-write", T, beats=1)
    assert seen["command"] == 0, "FLR resets the command register"
    assert seen["host_open_after_reset"] is False
    assert seen["status"] == (0, 0)
    assert seen["reopen"] == 0 and seen["data"] == PATTERN[:16]
    assert result.hosts[0]["is_open"] is False


# -- the command line ----------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--dma-latency", "--host-latency"])
def test_demo_against_a_host_that_never_answers(shm_objects, option):
    """The demo ends in seconds with a readable ETIMEDOUT, exit 1, and the object untouched."""
    name = shm_objects.create(SIZE, "wedge")
    region = ShmRegion.attach(name)
    region.write(0, b"left alone\0")
    region.close()
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "vmshm.cli", "demo", "--shm", name, option,
                        "1000000", "--host-timeout", "1000"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "ETIMEDOUT" in out
    assert "Traceback" not in out and "stream.Interface" not in out and "View(" not in out
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert content(name)[:11] == b"left alone\0"


def test_faults_cross_to_cocotb_jobs():
    """A cocotb job carries HostTiming as plain data: the faults come back whole."""
    from dataclasses import asdict
    timing = faults(Fault("ctl", "stall", exchange=1, beat=3, cycles=10), Fault("dma", "double"))
    again = HostTiming(**asdict(timing))
    assert again == timing and again.faults.stall("ctl", 1, 3) == 10


@pytest.mark.parametrize("kwargs,message", [
    (dict(channel="pcie", kind="drop"), "Fault.channel must be one of ctl, dma"),
    (dict(channel="ctl", kind="explode"), "Fault.kind must be one of"),
    (dict(channel="dma", kind="late"), "needs cycles"),
    (dict(channel="dma", kind="stall", beat=-1), "Fault.beat must be a non-negative int"),
])
def test_bad_faults_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Fault(**kwargs)
