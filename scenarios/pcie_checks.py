"""Directed checks of the UltraScale+ top that the scenario suite cannot express.

Each is ``async def check(bus, tb, **kwargs)``, run in the simulator process by
:class:`~vmshm.testbench.pcie.PcieJob` (``fn="vmshm.scenarios.pcie_checks:NAME"``): ``bus`` is the
:class:`~vmshm.testbench.pcie_tb.RootComplexBus` the driver model runs on, ``tb`` the
:class:`~vmshm.testbench.pcie_tb.PcieTB` with the root complex and the hard-IP model, for what
only raw TLPs can do. They raise :exc:`AssertionError` saying what was expected.
"""

import os
import random

import cocotb
from cocotb.triggers import RisingEdge, Timer
from cocotbext.pcie.core.tlp import CplStatus, Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId
from cocotbext.pcie.xilinx.us.tlp import Tlp_us

from vmshm.driver_model import (pci_clear_master, pci_disable_device, pci_enable_device,
                                pci_set_master, vmshm_probe)
from vmshm.driver_model.bus import Space
from vmshm.host_model import ShmRegion
from vmshm.abi.bounds import flr_clear_cycles
from vmshm.abi.regmap import BAR_NAME, DEVICE_ID, REG, Status

#: STATUS.DMA_ERROR, from the register map.
REG_FIELD_DMA_ERROR = 1 << next(f.offset for f in REG["STATUS"].fields if f.name == "DMA_ERROR")
from .checks import expect, expect_bytes

__all__ = ["probe_only", "byte_enables", "long_reads", "unsupported_requests",
           "completion_errors", "np_flow_control", "discontinued_requests",
           "discontinued_completion", "writes_pass_a_waiting_read",
           "window_writes_pass_a_waiting_read", "close_without_bus_master",
           "close_after_write_timeout", "last_word_masked", "function_level_reset"]


async def _driver(bus):
    drivers, pdevs = await vmshm_probe(bus)
    expect(len(drivers), 1, "VMShm functions bound")
    return drivers[0]


async def _open(drv, name):
    fd = await drv.open()
    await drv.ioctl(fd, 0, name)
    return fd


async def probe_only(bus, tb):
    """Probe as the driver does; return what it found, as plain data."""
    drv = await _driver(bus)
    return {"resources": {i: (r.size, r.is64, r.prefetch, r.start)
                          for i, r in drv.pdev.resources.items()},
            "ids": (drv.pdev.vendor, drv.pdev.device, drv.pdev.class_code, drv.pdev.revision,
                    drv.pdev.subsystem_vendor, drv.pdev.subsystem_device),
            "sizes": (drv.window_size, drv.name_size, drv.version),
            "capability": (drv.capability["kind"], drv.capability["where"]),
            "ident": await drv.regs.read32(REG["ID"].offset)}


async def byte_enables(bus, tb, name, seed=1):
    """Write every byte-enable pattern and multi-DWORD lengths into BAR2 and the window."""
    rng = random.Random(seed)
    drv = await _driver(bus)
    fd = await _open(drv, name)
    size = await drv.regs.read32(REG["MAP_SIZE"].offset)
    mapping = await drv.mmap(fd, size)
    with ShmRegion.attach(name) as host:
        shadow = bytearray(host.read(0, size))
        names = bytearray(await drv.names.read(0, drv.name_size))
        # One to four bytes at each offset of a DWORD: every contiguous first/last BE pattern,
        # and two-DWORD writes whose first and last byte enables are both partial.
        cases = [(o, n) for o in range(8) for n in range(1, 6)]
        # Multi-DWORD writes: across Max_Payload_Size and 4 KiB, longer than one core request.
        cases += [(0x7D, 130), (0x3F1, 517), (0xFF9, 20), (0x2, 1023), (0x101, 1030)]
        for offset, n in cases:
            data = rng.randbytes(n)
            await mapping.write(offset, data)
            shadow[offset:offset + n] = data
            lo, hi = max(0, offset - 8), min(size, offset + n + 8)
            expect_bytes(host.read(lo, hi - lo), shadow[lo:hi],
                         f"object around a {n}-byte write at {offset:#x}")
            if offset + n <= len(names):
                await drv.names.write(offset, data)
                names[offset:offset + n] = data
                expect_bytes(await drv.names.read(lo, min(len(names), hi) - lo),
                             names[lo:min(len(names), hi)],
                             f"BAR2 around a {n}-byte write at {offset:#x}")
        expect_bytes(await mapping.read(0, 0x1200), shadow[:0x1200], "window read back")
        expect_bytes(host.read(0, size), shadow, "whole object")
    await drv.munmap(mapping)
    await drv.close(fd)
    expect(await drv.regs.read32(REG["REJECTS"].offset), 0, "REJECTS")
    return {"writes": len(cases)}


async def long_reads(bus, tb, name):
    """Read 4 KiB in one TLP, and the device's DMA split by MRRS and 4 KiB, both ways."""
    drv = await _driver(bus)
    fd = await _open(drv, name)
    size = await drv.regs.read32(REG["MAP_SIZE"].offset)
    with ShmRegion.attach(name) as host:
        pattern = random.Random(2).randbytes(size)
        host.write(0, pattern)
        # One memory read of 1024 DWORDs: four core requests, completions of at most MPS.
        words, status = await bus._burst_read(Space.MEM, None, drv.window.base, 1024, 0xF)
        got = b"".join(w.to_bytes(4, "little") for w in words)
        expect(status, "SC", "status of a 4 KiB read")
        expect_bytes(got, pattern[:4096], "a 4 KiB read in one TLP")
        # The device's own reads and writes: 256 DWORDs from unaligned offsets, some across a
        # 4 KiB boundary of the host address.
        for offset in (0x7C, 0xE04, 0x1F00, 0x2FFC - 1020):
            expect_bytes(await drv.window.read(offset, 1024), pattern[offset:offset + 1024],
                         f"1 KiB at {offset:#x}")
            data = random.Random(offset).randbytes(1024)
            await drv.window.write(offset, data)
            expect_bytes(host.read(offset, 1024), data, f"1 KiB written at {offset:#x}")
            pattern = pattern[:offset] + data + pattern[offset + 1024:]
        # Byte reads at every offset: first byte enables and lower addresses.
        for offset in range(0x40, 0x48):
            expect_bytes(await drv.window.read(offset, 1), pattern[offset:offset + 1],
                         f"byte at {offset:#x}")
    await drv.close(fd)
    return {"host_reads": tb.region.reads, "host_writes": tb.region.writes}


async def _inject(tb, fmt_type, *, bar_id, address, length=1, data=None, first_be=0xF,
                  last_be=0, aperture=None, tc=0, attr=0):
    """Hand the device a request through the hard IP as the IP would, bypassing its BAR match.

    The model forwards only memory requests that match a BAR; this puts any request type on CQ
    (still through its non-posted flow control) and returns the completion, or ``None`` for a
    posted request.
    """
    tlp = Tlp_us()
    tlp.fmt_type = fmt_type
    tlp.requester_id = PcieId(0, 0, 0)
    tlp.completer_id = PcieId(0, 0, 0)
    tlp.address = address
    tlp.length = length
    tlp.first_be = first_be
    tlp.last_be = last_be
    tlp.bar_id = bar_id
    tlp.tc, tlp.attr = tc, attr
    fn = tb.dev.functions[0]
    tlp.bar_aperture = aperture if aperture is not None else \
        (~fn.bar_mask[bar_id] & 0xFFFF_FFFF).bit_length()
    if data is not None:
        tlp.data = bytearray(data)
    posted = fmt_type in (TlpType.MEM_WRITE, TlpType.MEM_WRITE_64)
    if posted:
        tb.dev.cq_queue.put_nowait(tlp)
        return None
    tlp.tag = await tb.rc.alloc_tag()
    try:
        tb.dev.cq_queue.put_nowait(tlp)
        cpl = await tb.rc.recv_cpl(tlp.tag, 200_000, "ns")
    finally:
        tb.rc.release_tag(tlp.tag)
    if cpl is None:
        raise AssertionError(f"no completion for {fmt_type.name}")
    return cpl


async def unsupported_requests(bus, tb, name):
    """Answer unsupported non-posted requests UR, drop posted ones, and keep working."""
    drv = await _driver(bus)
    pdev = drv.pdev
    regs, names = drv.regs, drv.names
    await names.write(0, name.encode() + b"\0")
    before_names = await names.read(0, drv.name_size)

    # A BAR the hard IP was given and the top does not know (BAR4): reads UR, writes vanish.
    extra = pdev.resources[4]
    expect_bytes(await bus.mem_read(extra.start, 8), b"\xff" * 8, "read of the unknown BAR4")
    expect(bus.records[-1].status, "UR", "status of a read of BAR4")
    await bus.mem_write(extra.start, b"\0" * 8)
    # A request that starts inside a BAR and runs off its end (no 4 KiB crossing).
    expect_bytes(await bus.mem_read(regs.base + regs.size - 4, 8), b"\xff" * 8,
                 "read running off BAR0's end")
    expect(bus.records[-1].status, "UR", "status of a read running off BAR0's end")
    await bus.mem_write(names.base + names.size - 4, b"\x55" * 8)

    # Request types a VMShm function does not support, straight onto CQ.
    bar0 = regs.base
    kinds = [
        ("I/O read", TlpType.IO_READ, {}),
        ("I/O write", TlpType.IO_WRITE, {"data": b"\1\2\3\4"}),
        ("fetch-and-add", TlpType.FETCH_ADD, {"data": b"\1\0\0\0"}),
        ("swap", TlpType.SWAP, {"data": b"\1\0\0\0"}),
        ("compare-and-swap", TlpType.CAS, {"length": 2, "last_be": 0xF, "data": bytes(8)}),
        ("locked read", TlpType.MEM_READ_LOCKED, {}),
        ("read with another aperture", TlpType.MEM_READ, {"aperture": 12}),
        ("read of an unknown BAR id", TlpType.MEM_READ, {"bar_id": 5}),
    ]
    seen = {}
    for what, fmt_type, extra_args in kinds:
        args = {"bar_id": 0, "address": bar0 + REG["ID"].offset, **extra_args}
        cpl = await _inject(tb, fmt_type, **args)
        expect(cpl.status, CplStatus.UR, f"completion status of a {what}")
        expect(cpl.length, 0, f"payload of the UR completion of a {what}")
        seen[what] = cpl.status.name
    # Posted requests it cannot serve are dropped without a word.
    await _inject(tb, TlpType.MEM_WRITE, bar_id=5, address=bar0, data=b"\xff" * 4)
    await _inject(tb, TlpType.MEM_WRITE, bar_id=2, address=names.base, data=b"\xff" * 4,
                  aperture=20)

    # Memory Space Enable off: the shim refuses memory requests even if the IP passes them.
    await pci_disable_device(pdev)
    expect(await regs.read32(REG["ID"].offset), 0xFFFF_FFFF, "ID with memory decode off")
    expect(bus.records[-1].status, "UR", "status of a read with memory decode off")
    await names.write(0, b"\xaa" * 4)
    await pci_enable_device(pdev)
    await pci_set_master(pdev)

    # Nothing of that reached the device; it still works.
    expect_bytes(await names.read(0, drv.name_size), before_names, "BAR2 after all that")
    expect(await regs.read32(REG["ID"].offset), DEVICE_ID, "ID afterwards")
    expect(await regs.read32(REG["REJECTS"].offset), 0, "REJECTS afterwards")
    expect(await regs.read32(REG["OPEN"].offset), Status.OK, "OPEN afterwards")
    expect(await regs.read32(REG["CLOSE"].offset), Status.OK, "CLOSE afterwards")
    return seen


async def completion_errors(bus, tb, name, delay_ns):
    """Fail DMA reads whose completions are errors or never come as all ones; recover after."""
    drv = await _driver(bus)
    fd = await _open(drv, name)
    size = await drv.regs.read32(REG["MAP_SIZE"].offset)
    mapping = await drv.mmap(fd, size)
    pattern = random.Random(3).randbytes(size)
    with ShmRegion.attach(name) as host:
        host.write(0, pattern)
    # Another process shrinks the object: the host refuses the vanished part, the root
    # complex answers Completer Abort, the guest reads all ones.
    fd_obj = os.open(f"/dev/shm{name}", os.O_RDWR)
    try:
        os.ftruncate(fd_obj, size // 2)
        expect_bytes(await mapping.read(size - 64, 64), b"\xff" * 64, "read past the shrunk end")
        # Reported as PCIe defines it, and sticky for the driver to find.
        expect(bus.records[-1].status, "CA", "completion status of a read the host refused")
        dma_error = REG_FIELD_DMA_ERROR
        expect(await drv.regs.read32(REG["STATUS"].offset) & dma_error, dma_error,
               "STATUS.DMA_ERROR after a failed read")
        await drv.regs.write32(REG["STATUS"].offset, dma_error)
        expect(await drv.regs.read32(REG["STATUS"].offset) & dma_error, 0,
               "STATUS.DMA_ERROR after writing 1 to it")
        expect_bytes(await mapping.read(0, 64), pattern[:64], "read inside the shrunk object")
        os.ftruncate(fd_obj, size)
        with ShmRegion.attach(name) as host:
            host.write(0, pattern)
    finally:
        os.close(fd_obj)
    expect_bytes(await mapping.read(size - 64, 64), pattern[-64:], "read after regrowing")
    # A host that answers too late: the requester gives up, the late completions are dropped
    # when they come, and their tags are not reused before.
    tb.region.delay_ns = delay_ns
    expect_bytes(await mapping.read(256, 512), b"\xff" * 512, "read the host answers late")
    expect(bus.records[-1].status, "CA", "completion status of a read the host answers late")
    tb.region.delay_ns = 0
    for offset in (0, 1024, 2048):
        expect_bytes(await mapping.read(offset, 512), pattern[offset:offset + 512],
                     f"read at {offset:#x} after the timeout")
    await mapping.write(8, b"recovered")
    with ShmRegion.attach(name) as host:
        expect_bytes(host.read(8, 9), b"recovered", "write after the timeout")
    expect(await drv.regs.read32(REG["STATUS"].offset) & 1, 1, "object still open")
    await drv.munmap(mapping)
    await drv.close(fd)
    return {"host_reads": tb.region.reads}


async def np_flow_control(bus, tb, name, reads=12):
    """Keep at most one non-posted credit at the hard IP while many reads are in flight."""
    drv = await _driver(bus)
    fd = await _open(drv, name)
    mapping = await drv.mmap(fd, 4096)
    pattern = random.Random(4).randbytes(4096)
    await mapping.write(0, pattern)
    seen = {"max_count": 0, "pulses": 0}
    done = False

    async def monitor():
        dut = tb.dut
        while not done:
            await RisingEdge(dut.user_clk)
            seen["max_count"] = max(seen["max_count"], int(dut.pcie_cq_np_req_count.value))
            seen["pulses"] += int(dut.pcie_cq_np_req.value) != 0

    watcher = cocotb.start_soon(monitor())
    # Window reads and register reads all at once, with posted writes between them.
    tasks = []
    for i in range(reads):
        tasks.append(cocotb.start_soon(mapping.read(256 * i % 4096, 256)))
        tasks.append(cocotb.start_soon(drv.regs.read32(REG["ID"].offset)))
        tasks.append(cocotb.start_soon(drv.names.write(4 * i, i.to_bytes(4, "little"))))
    results = [await t for t in tasks]
    done = True
    await watcher
    for i in range(reads):
        off = 256 * i % 4096
        expect_bytes(results[3 * i], pattern[off:off + 256], f"concurrent window read {i}")
        expect(results[3 * i + 1], DEVICE_ID, f"concurrent ID read {i}")
    expect_bytes(await drv.names.read(0, 4 * reads),
                 b"".join(i.to_bytes(4, "little") for i in range(reads)), "concurrent writes")
    if seen["max_count"] > 1:
        raise AssertionError(f"pcie_cq_np_req_count reached {seen['max_count']}: the shim "
                             f"banked more than one non-posted credit")
    await drv.munmap(mapping)
    await drv.close(fd)
    return seen


# -- PG213 findings (issue 16): each check fails on the top as it was, by the rule checker or
# -- by what the guest or the host sees ----------------------------------------------------------

async def _wait_cycles(tb, n):
    await Timer(int(n * tb.period_ns), "ns")


def _discontinue_on_last_beat(source, lanes):
    """Make ``source`` (the model's CQ or RC source) mark a discontinued TLP on its last beat
    only, as PG213 describes the hard IP doing; the model marks every beat of it."""
    import sys

    from cocotbext.pcie.xilinx.us.interface import UsPcieFrame

    class LastBeat(UsPcieFrame):
        @property
        def discontinue(self):
            # Asked once per beat by the source's loop, before it fills the beat: the beat is
            # the last if what is left of the frame fits in it.
            caller = sys._getframe(1).f_locals
            if "frame_offset" not in caller:
                return True                 # the frame's repr in the model's log
            return len(self.data) - caller["frame_offset"] <= lanes

        @discontinue.setter
        def discontinue(self, value):
            pass

    get = source._get_frame

    async def get_frame():
        frame = await get()
        if frame is not None and frame.discontinue:
            frame.__class__ = LastBeat
        return frame

    source._get_frame = get_frame


async def discontinued_requests(bus, tb, name):
    """Drop CQ TLPs the hard IP marks discontinued, whole: a write changes nothing, a read gets
    no completion, and the credit it used is not lost."""
    drv = await _driver(bus)
    _discontinue_on_last_beat(tb.dev.cq_source, len(tb.dut.s_axis_cq_tkeep))
    names = drv.names
    before = bytes(range(64))
    await names.write(0, before)
    # Eight DWORDs: several beats at either width, the mark on the last one only.
    tlp = Tlp_us()
    tlp.fmt_type = TlpType.MEM_WRITE
    tlp.requester_id = PcieId(0, 0, 0)
    tlp.address = names.base
    tlp.first_be, tlp.last_be = 0xF, 0xF
    tlp.bar_id = 2 if 2 in drv.pdev.resources else 3
    tlp.bar_aperture = (drv.name_size - 1).bit_length()
    tlp.set_data(b"\xEE" * 32)
    tlp.discontinue = True
    tb.dev.cq_queue.put_nowait(tlp)
    # A discontinued read: the checker fails the run if it is answered.
    rd = Tlp_us()
    rd.fmt_type = TlpType.MEM_READ
    rd.requester_id = PcieId(0, 0, 0)
    rd.address = drv.regs.base + REG["ID"].offset
    rd.length, rd.first_be, rd.last_be = 1, 0xF, 0
    rd.bar_id, rd.bar_aperture = 0, (drv.regs.size - 1).bit_length()
    rd.tag = await tb.rc.alloc_tag()
    rd.discontinue = True
    tb.dev.cq_queue.put_nowait(rd)
    await _wait_cycles(tb, 2000)
    tb.rc.release_tag(rd.tag)
    expect_bytes(await names.read(0, 64), before, "BAR2 after a discontinued write")
    # Reads still flow: the discontinued read's credit was counted as spent.
    for _ in range(3):
        expect(await drv.regs.read32(REG["ID"].offset), DEVICE_ID, "ID after a discontinued read")
    return {"ok": True}


async def discontinued_completion(bus, tb, name):
    """Drop an RC completion the hard IP marks discontinued, whole: the guest never reads its
    data, and the device goes on working."""
    drv = await _driver(bus)
    fd = await _open(drv, name)
    mapping = await drv.mmap(fd, 4096)
    pattern = random.Random(5).randbytes(4096)
    await mapping.write(0, pattern)
    source = tb.dev.rc_source
    _discontinue_on_last_beat(source, len(tb.dut.s_axis_rc_tkeep))
    send = source.send
    marked = []

    async def send_marked(frame):
        # The first completion with data: corrupt it and mark it, as the IP marks a completion
        # it found damaged in its own buffer.
        if not marked and len(frame.data) > 3:
            marked.append(frame)
            frame.data = frame.data[:3] + [0xBAD0BAD0] * (len(frame.data) - 3)
            frame.discontinue = True
        await send(frame)

    source.send = send_marked
    try:
        got = await mapping.read(64, 64)
    finally:
        source.send = send
    expect(len(marked), 1, "completions marked discontinued")
    if b"\xd0\xba\xd0\xba" in got:
        raise AssertionError("the guest read the data of a discontinued completion")
    # The rest still reads right.
    expect_bytes(await mapping.read(1024, 256), pattern[1024:1280], "a read afterwards")
    await drv.munmap(mapping)
    await drv.close(fd)
    return {"read": got.hex()}


async def writes_pass_a_waiting_read(bus, tb, name, delay_ns=20_000):
    """Keep taking posted writes on CQ while a window read waits for the host; apply them after
    the read, in order."""
    drv = await _driver(bus)
    fd = await _open(drv, name)
    mapping = await drv.mmap(fd, 4096)
    await drv.names.write(0, b"\0" * 16)
    dut = tb.dut
    tb.region.delay_ns = delay_ns
    before = tb.region.writes
    read = cocotb.start_soon(mapping.read(0, 16))
    await _wait_cycles(tb, 200)
    # Posted writes straight from the root complex, without the driver's flushing read.
    for i in range(4):
        req = Tlp()
        req.fmt_type = TlpType.MEM_WRITE
        req.requester_id = PcieId(0, 0, 0)
        req.address = drv.names.base + 4 * i
        req.first_be, req.last_be = 0xF, 0
        req.set_data((i + 1).to_bytes(4, "little"))
        await tb.rc.perform_posted_operation(req)
    # Long before the host answers, the hard IP has handed all of them over.
    lanes = len(dut.s_axis_cq_tkeep)
    expected = 4 * -(-5 // lanes)       # a descriptor and one DWORD each
    taken = waited = 0
    while taken < expected and waited < 1500:
        await RisingEdge(dut.user_clk)
        waited += 1
        taken += int(dut.s_axis_cq_tvalid.value) & int(dut.s_axis_cq_tready.value)
    pending = not read.done()
    tb.region.delay_ns = 0
    await read
    if taken < expected:
        raise AssertionError(f"CQ took {taken} of the {expected} beats of 4 posted writes in "
                             f"{waited} cycles while a window read waited for the host")
    expect(pending, True, "the window read still waiting when the writes were taken")
    expect_bytes(await drv.names.read(0, 16),
                 b"".join((i + 1).to_bytes(4, "little") for i in range(4)), "the writes applied")
    await drv.munmap(mapping)
    await drv.close(fd)
    return {"waited": waited}


async def window_writes_pass_a_waiting_read(bus, tb, name, delay_ns=10_000, writes=40):
    """Window writes behind a window read the host answers late, more of them than the CQ buffer
    holds: they reach the host while the read waits (issue 22, finding 2), the read completes
    with its data, every write lands in the object.

    A root port queues the read's completion behind such writes (a completion does not pass a
    posted request); cocotbext-pcie's hard-IP model hands completions to RC whatever waits on CQ,
    so the deadlock itself is not reproduced here (tests/test_usp_posted.py does that): this
    checks that writes go up while the read waits (on main none did), as TLPs the model and the
    PG213 checker accept."""
    drv = await _driver(bus)
    fd = await _open(drv, name)
    mapping = await drv.mmap(fd, 4096)
    pattern = bytes(range(0x40, 0x50))
    await mapping.write(0, pattern)
    tb.region.delay_ns = delay_ns
    before = tb.region.writes
    read = cocotb.start_soon(mapping.read(0, 16))
    await _wait_cycles(tb, 200)
    blocks = [bytes((i + k) & 0xFF for k in range(64)) for i in range(writes)]
    for i, block in enumerate(blocks):
        req = Tlp()
        req.fmt_type = TlpType.MEM_WRITE
        req.requester_id = PcieId(0, 0, 0)
        req.address = drv.window.base + mapping.offset + 256 + 64 * i
        req.first_be, req.last_be = 0xF, 0xF
        req.set_data(block)
        await tb.rc.perform_posted_operation(req)
    got = await read
    passed = tb.region.writes - before
    tb.region.delay_ns = 0
    expect_bytes(got, pattern, "the window read the writes passed")
    if not passed:
        raise AssertionError("no window write reached the host while the window read waited")
    # A read behind the writes (down the link and out of the device in order) flushes them.
    await mapping.read(256 + 64 * writes - 4, 4)
    with ShmRegion.attach(name) as region:
        expect_bytes(region.read(256, 64 * writes), b"".join(blocks), "the writes in the object")
    await drv.munmap(mapping)
    await drv.close(fd)
    return {"writes": writes, "passed": passed}


async def close_without_bus_master(bus, tb, name):
    """CLOSE after a window write with Bus Master Enable cleared: no flush read goes out."""
    drv = await _driver(bus)
    fd = await _open(drv, name)
    mapping = await drv.mmap(fd, 4096)
    await mapping.write(0, b"written before")
    await drv.munmap(mapping)
    await pci_clear_master(drv.pdev)
    # The model reports Memory Space Enable as Bus Master Enable (cfg_function_status bits 0-2
    # all follow BME): the test plays the IP's status, memory decode on, bus mastering off.
    tb.dev.cfg_function_status = None
    tb.dut.cfg_function_status.value = 0x2
    await _wait_cycles(tb, 50)
    start = bus.now()
    await drv.close(fd)
    took = bus.now() - start
    tb.dut.cfg_function_status.value = 0x6
    await pci_set_master(drv.pdev)
    with ShmRegion.attach(name) as host:
        expect_bytes(host.read(0, 14), b"written before", "the write before")
    return {"close_cycles": took}


async def close_after_write_timeout(bus, tb, name):
    """CLOSE right after a window write whose acknowledgement timed out waits for the write:
    it never lands after the host released the object."""
    drv = await _driver(bus)
    fd = await _open(drv, name)
    mapping = await drv.mmap(fd, 4096)
    sink = tb.dev.rq_sink
    sink.pause = True               # the link takes nothing: the write cannot leave
    await mapping.write(0, b"late but first")
    await drv.munmap(mapping)
    closing = cocotb.start_soon(drv.close(fd))
    await _wait_cycles(tb, 300)
    sink.pause = False
    await closing
    with ShmRegion.attach(name) as host:
        expect_bytes(host.read(0, 14), b"late but first", "the write before CLOSE")
    return {"ok": True}


async def last_word_masked(bus, tb, name):
    """An object whose size is not a multiple of 4: bytes past it in the last word read all ones
    and are never written, in the guest's view and on the wire."""
    drv = await _driver(bus)
    fd = await _open(drv, name)
    size = await drv.regs.read32(REG["MAP_SIZE"].offset)
    expect(size % 4, 2, "MAP_SIZE modulo 4")
    with ShmRegion.attach(name) as host:
        host.write(size - 2, b"\x11\x22")
    got = await drv.window.read(size - 2, 2)
    expect_bytes(got, b"\x11\x22", "the object's last two bytes")
    word = await bus.mem_read(drv.window.base + (size & ~3), 4)
    expect_bytes(word, b"\x11\x22\xff\xff", "the last word, past the end all ones")
    await bus.mem_write(drv.window.base + (size & ~3), b"\x33\x44\x55\x66")
    with ShmRegion.attach(name) as host:
        expect_bytes(host.read(size - 2, 2), b"\x33\x44", "the last word written")
    await drv.close(fd)
    return {"size": size}


async def function_level_reset(bus, tb, name):
    """Reset the function when the hard IP says an FLR is in process, and say when it is done.

    The model has no FLR of its own: the test plays the IP's two signals.
    """
    drv = await _driver(bus)
    await _open(drv, name)
    expect(await drv.regs.read32(REG["STATUS"].offset) & 1, 1, "open before the FLR")
    dut = tb.dut
    await RisingEdge(dut.user_clk)
    dut.cfg_flr_in_process.value = 1
    done_after = None
    # The IP's FLR ends when the core has cleared the name RAM (issue 22, finding 5), a word a
    # cycle: the bound is that clear plus the shim's few registered cycles.
    for cycle in range(flr_clear_cycles(drv.name_size, 32) + 64):
        await RisingEdge(dut.user_clk)
        if int(dut.cfg_flr_done.value) & 1:
            done_after = cycle
            break
    dut.cfg_flr_in_process.value = 0
    if done_after is None:
        raise AssertionError("cfg_flr_done never came while cfg_flr_in_process was high")
    expect(await drv.regs.read32(REG["STATUS"].offset) & 1, 0, "open after the FLR")
    expect(await drv.regs.read32(REG["MAP_SIZE"].offset), 0, "MAP_SIZE after the FLR")
    expect(await drv.regs.read32(REG["ID"].offset), DEVICE_ID, "ID after the FLR")
    expect_bytes(await drv.names.read(0, drv.name_size), bytes(drv.name_size),
                 "the last user's name in BAR2 after the FLR")
    return {"done_after": done_after}


async def write_after_late_read(bus, tb, name, rc_latency=20_000):
    """Issue 22, finding 1: a window read the host answers past ``host_timeout`` keeps the
    requester waiting for its completions, so the window write after it times out too; the
    beats the core still owes the host must not become a malformed TLP (checked on the wire by
    :class:`~vmshm.testbench.pcie_rules.PG213Checker`) nor write what the guest did not."""
    drv = await _driver(bus)
    fd = await _open(drv, name)
    mapping = await drv.mmap(fd, 4096)
    before = random.Random(22).randbytes(64)
    with ShmRegion.attach(name) as host:
        host.write(0, before)
    tb.region.delay_ns = rc_latency * tb.period_ns
    expect_bytes(await mapping.read(0, 16), b"\xff" * 16, "the read the host answers late")
    await bus.mem_write(drv.window.base + 32, b"ABCDEFGHIJKL")     # one 3-DWORD TLP
    tb.region.delay_ns = 0
    await _wait_cycles(tb, rc_latency + 2_000)     # the late completions, then the owed beats
    with ShmRegion.attach(name) as host:
        after = host.read(0, 64)
    # Only the beat that timed out on offer may have landed; +36 and +40 are the guest's only
    # if the host took them, which it did not.
    expect_bytes(after[36:48], before[36:48], "the write's beats the host never took")
    expect(after[32:36] in (before[32:36], b"ABCD"), True, "the write's first DWORD")
    return {"first": after[32:36] == b"ABCD"}


async def completion_meaning(bus, tb, name):
    """Reads whose completions say what their requests imply: unaligned starts and ends, split
    completions, a traffic class and attributes to echo (PG213Checker's ``cc-meaning``). Returns
    what came back wrong, for a run on a deliberately broken shim to go on past it."""
    drv = await _driver(bus)
    names = drv.names
    pattern = bytes(range(48, 48 + 64))
    await names.write(0, pattern)
    wrong = []
    for start, size in ((1, 6), (3, 9), (2, 2), (5, 40)):
        try:
            got = await names.read(start, size)
        except AssertionError as exc:       # the bus's own completion checks
            wrong.append(f"read {start}+{size}: {exc}")
            continue
        if got != pattern[start:start + size]:
            wrong.append(f"read {start}+{size}")
    bar = {b.function: b.index for b in tb.top.bars}[BAR_NAME]
    for tc, attr in ((1, 0), (0, 2), (5, 1)):
        cpl = await _inject(tb, TlpType.MEM_READ, bar_id=bar, address=names.base + 8,
                            first_be=0b1110, tc=tc, attr=attr)
        if cpl.status != CplStatus.SC:
            wrong.append(f"status {cpl.status.name} with TC {tc}, attributes {attr}")
    return {"wrong": wrong}
