"""Scenarios of the PCI function's decoding: enables, addresses outside the BARs, two devices,
discovery through the capability."""

import errno
import random

from vmshm.abi import pci_regs as P
from vmshm.driver_model import (MemAllocator, VMShmDriver, pci_assign_resources, pci_clear_master,
                                pci_disable_device, pci_enable_device, pci_scan_bus, pci_set_master,
                                vmshm_probe)
from vmshm.abi.regmap import DEFAULT_NAME_SIZE, DEFAULT_WINDOW_SIZE, DEVICE_ID, REG, Status

from .checks import (claimed, expect, expect_bytes, expect_errno, expect_sizes, expect_status,
                     host_object, probe, reg)
from .pci_config import BAR_OFFSETS, ONES32
from .registry import scenario


async def expect_undecoded(bus, resources, what):
    """Check no BAR in ``resources`` decodes: reads all ones with UR, writes answered UR."""
    for res in resources:
        for offset in (0, res.size - 8):
            addr = res.start + offset
            mark = len(bus.records)
            expect_bytes(await bus.mem_read(addr, 8), b"\xff" * 8,
                         f"{what}: read of BAR{res.index} at {addr:#x}")
            expect({r.status for r in bus.records[mark:]}, {"UR"},
                   f"{what}: status of the read of BAR{res.index} at {addr:#x}")
            await bus.mem_write(addr, b"dropped!")
            expect(bus.records[-1].status, "UR",
                   f"{what}: status of a write to BAR{res.index} at {addr:#x}")


@scenario(shm_size=4096)
async def pci_decode_enables(bus, env):
    """Decode nothing before Memory Space Enable or once it is cleared; OPEN needs bus mastering."""
    pdevs = await pci_scan_bus(bus)
    expect(len(pdevs), env.devices, "functions found")
    pdev = pdevs[0]
    await pci_assign_resources(pdev, MemAllocator())
    resources = list(pdev.resources.values())
    expect(await pdev.read_config(P.PCI_COMMAND, 2), 0, "command after placing the BARs")
    # Reads of OPEN and CLOSE are among these: if one reached the core it would trigger.
    await expect_undecoded(bus, resources, "before Memory Space Enable")
    await pci_set_master(pdev)
    await expect_undecoded(bus, resources, "with Bus Master Enable but no Memory Space Enable")
    await pci_clear_master(pdev)

    drv = await VMShmDriver(pdev).probe()
    expect(await pdev.read_config(P.PCI_COMMAND, 2),
           P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER, "command after the driver's probe")
    expect_bytes(await drv.names.read(0, 8), bytes(8), "name buffer: writes before MSE dropped")
    expect_bytes(await drv.names.read(env.name_size - 8, 8), bytes(8),
                 "name buffer's end: writes before MSE dropped")
    await expect_status(drv, False, Status.OK, "after reading OPEN and CLOSE before MSE")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after window accesses before MSE")

    # Without Bus Master Enable the driver's ioctl fails with EPERM and nothing opens.
    await pci_clear_master(pdev)
    fd = await drv.open()
    await expect_errno(drv.ioctl(fd, 0, env.shm_name), errno.EPERM,
                       "ioctl without Bus Master Enable")
    await expect_status(drv, False, Status.EPERM, "after ioctl without Bus Master Enable")
    await expect_errno(drv.mmap(fd, 16), errno.EINVAL, "mmap after the refused ioctl")
    await pci_set_master(pdev)
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, env.shm_size)
    await mapping.write(0, b"decoded!")

    # Memory Space Enable cleared again, Bus Master Enable kept: nothing decodes or triggers.
    await pdev.write_config(P.PCI_COMMAND, 2, P.PCI_COMMAND_MASTER)
    await expect_undecoded(bus, resources, "after Memory Space Enable was cleared")
    expect_bytes(await bus.mem_read(drv.regs.base + REG["CLOSE"].offset, 4), b"\xff" * 4,
                 "read of CLOSE with decode off")
    await pci_enable_device(pdev)
    await expect_status(drv, True, Status.OK, "after reads of OPEN and CLOSE with decode off")
    expect_bytes(await mapping.read(0, 8), b"decoded!", "window: the write with decode off")
    expect_bytes(await drv.names.read(0, len(env.shm_name) + 1),
                 env.shm_name.encode() + b"\0", "name buffer: the write with decode off")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after accesses with decode off")
    with host_object(env) as host:
        expect_bytes(host.read(0, 8), b"decoded!", "object: the write with decode off")
    await drv.munmap(mapping)
    await drv.close(fd)
    await expect_status(drv, False, Status.OK, "after release")


@scenario(shm_size=4096, name="pci_decode_outside_bars_64bit_window", window_64bit=True)
@scenario(shm_size=4096)
async def pci_decode_outside_bars(bus, env):
    """Answer accesses next to, between and aliasing the BARs as unsupported, and never hang."""
    wb = bus.word_bytes
    pattern = random.Random(env.seed).randbytes(env.shm_size)
    with host_object(env) as host:
        host.write(0, pattern)
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, env.shm_size)
    bars = sorted(drv.pdev.resources.values(), key=lambda r: r.start)

    targets = [(0, wb, "address 0"), ((1 << 64) - 2 * wb, 2 * wb, "the top of memory space")]
    for res in bars:
        bar, end = f"BAR{res.index}", res.start + res.size
        targets += [(res.start - wb, wb, f"the word below {bar}"),
                    (res.start - wb, 2 * wb, f"a burst running into {bar}"),
                    (end, wb, f"the word after {bar}"),
                    (end - wb, 2 * wb, f"a burst crossing {bar}'s end"),
                    (end - 3 * wb, 8 * wb, f"a longer burst crossing {bar}'s end")]
        if res.is64:
            targets.append((res.start & ONES32, wb, f"{bar}'s low 32 bits alone"))
            targets.append((res.start ^ 1 << 63, wb, f"{bar} with bit 63 flipped"))
        else:
            # A 32-bit BAR decodes only addresses below 4 GiB: none of these alias it.
            for bit in (32, 40, 63):
                targets.append((res.start + (1 << bit), wb, f"{bar} + 2**{bit}"))
    for lo, hi in zip(bars, bars[1:]):
        gap = hi.start - (lo.start + lo.size)
        if gap >= 2 * wb:
            mid = (lo.start + lo.size + gap // 2) // wb * wb
            targets.append((mid, wb, f"between BAR{lo.index} and BAR{hi.index}"))

    tried = 0
    for addr, n, what in targets:
        if addr < 0 or claimed(drv, addr, n):
            continue    # the allocator put a BAR right there
        tried += 1
        where = f"{what} ({n} bytes at {addr:#x})"
        mark = len(bus.records)
        expect_bytes(await bus.mem_read(addr, n), b"\xff" * n, f"read of {where}")
        expect({r.status for r in bus.records[mark:]}, {"UR"}, f"status of a read of {where}")
        await bus.mem_write(addr, bytes(range(1, n + 1)))
        expect(bus.records[-1].status, "UR", f"status of a write to {where}")
    if tried < 4 * len(bars):
        raise AssertionError(f"only {tried} of {len(targets)} targets were outside every BAR")

    # None of it reached the device or the object, and the device still works.
    await expect_status(drv, True, Status.OK, "after unsupported requests")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after unsupported requests")
    expect_bytes(await drv.names.read(0, len(env.shm_name) + 1),
                 env.shm_name.encode() + b"\0", "name buffer after unsupported requests")
    expect_bytes(await mapping.read(0, env.shm_size), pattern, "window after unsupported requests")
    with host_object(env) as host:
        expect_bytes(host.read(0, env.shm_size), pattern, "object after unsupported requests")
    await drv.munmap(mapping)
    await drv.close(fd)
    return {"tried": tried}


@scenario(shm_size=8192, devices=2)
async def pci_two_devices(bus, env):
    """Probe two functions: distinct aligned BARs, independent files, one shared host object."""
    drivers, pdevs = await vmshm_probe(bus)
    expect(len(pdevs), 2, "functions found on the bus")
    expect([d.path for d in drivers], ["/dev/vmshm0", "/dev/vmshm1"], "device files bound")
    expect([d.pdev.slot for d in drivers], [0, 1], "slots of the two functions")
    placed = []
    for drv in drivers:
        for res in drv.pdev.resources.values():
            what = f"slot {drv.pdev.slot} BAR{res.index} at {res.start:#x}"
            expect(res.start % res.size, 0, f"{what}: aligned to its size {res.size:#x}")
            back = await drv.pdev.read_config(BAR_OFFSETS[res.index], 4) & ~0xF
            if res.is64:
                back |= await drv.pdev.read_config(BAR_OFFSETS[res.index] + 4, 4) << 32
            expect(back, res.start, f"{what}: base in the BAR register")
            for other, start, size in placed:
                if start < res.start + res.size and res.start < start + size:
                    raise AssertionError(f"{what} (size {res.size:#x}) overlaps {other}")
            placed.append((what, res.start, res.size))
    d0, d1 = drivers

    # Configuration writes reach one slot only; so does turning decode off.
    await d0.pdev.write_config(P.PCI_CACHE_LINE_SIZE, 1, 0x10)
    expect(await d1.pdev.read_config(P.PCI_CACHE_LINE_SIZE, 1), 0,
           "slot 1's cache line size after a write to slot 0's")
    await pci_disable_device(d1.pdev)
    expect(await reg(d1, "ID"), ONES32, "device 1's ID with its decode off")
    expect(await reg(d0, "ID"), DEVICE_ID, "device 0's ID with device 1's decode off")
    await pci_enable_device(d1.pdev)
    await pci_set_master(d1.pdev)
    expect(await reg(d1, "ID"), DEVICE_ID, "device 1's ID with its decode on again")

    # Files and objects are per device: one open and mapped leaves the other closed.
    fd0 = await d0.open()
    await d0.ioctl(fd0, 0, env.shm_name)
    m0 = await d0.mmap(fd0, env.shm_size)
    await expect_status(d1, False, Status.OK, "device 1 while device 0 has the object open")
    expect_bytes(await d1.window.read(0, 8), b"\xff" * 8, "device 1's window, nothing opened")
    expect((await reg(d0, "REJECTS"), await reg(d1, "REJECTS")), (0, 1),
           "REJECTS of devices 0 and 1 after device 1's rejected read")
    fd1 = await d1.open()   # not EBUSY: the exclusive open is per device
    await d1.ioctl(fd1, 0, env.shm_name)
    m1 = await d1.mmap(fd1, env.shm_size)

    # Both opened the same host object: each sees the other's stores.
    await m0.write(0x101, b"from device 0")
    expect_bytes(await m1.read(0x101, 13), b"from device 0", "device 1 reads device 0's store")
    await m1.write(env.shm_size - 13, b"from device 1")
    expect_bytes(await m0.read(env.shm_size - 13, 13), b"from device 1",
                 "device 0 reads device 1's store")
    with host_object(env) as host:
        expect_bytes(host.read(0x101, 13), b"from device 0", "object: device 0's store")
        expect_bytes(host.read(env.shm_size - 13, 13), b"from device 1",
                     "object: device 1's store")

    # Releasing device 0 leaves device 1 open and working.
    await d0.munmap(m0)
    await d0.close(fd0)
    await expect_status(d0, False, Status.OK, "device 0 after its release")
    await expect_status(d1, True, Status.OK, "device 1 after device 0's release")
    expect_bytes(await d0.window.read(0x100, 8), b"\xff" * 8, "device 0's window after release")
    await m1.write(0x200, b"still here")
    expect_bytes(await m1.read(0x101, 13), b"from device 0", "device 1 after device 0's release")
    with host_object(env) as host:
        expect_bytes(host.read(0x200, 10), b"still here", "object: device 1's later store")
    fd0 = await d0.open()
    await d0.close(fd0)
    await d1.munmap(m1)
    await d1.close(fd1)
    await expect_status(d1, False, Status.OK, "device 1 after its release")
    return {"bars": [what for what, _, _ in placed]}


#: Sizes of the device the discovery scenario probes: neither is a default.
DISCOVERY_WINDOW = 64 << 10
DISCOVERY_NAMES = 256


@scenario(shm_size=2 * DISCOVERY_WINDOW, window_size=DISCOVERY_WINDOW,
          name_size=DISCOVERY_NAMES)
async def pci_capability_discovery(bus, env):
    """Let a driver that has never seen the device's sizes learn them from the capability."""
    if env.window_size == DEFAULT_WINDOW_SIZE or env.name_size == DEFAULT_NAME_SIZE:
        raise AssertionError("the discovery scenario needs a device with non-default sizes")
    pdevs = await pci_scan_bus(bus)
    pdev = pdevs[0]
    await pci_assign_resources(pdev, MemAllocator())
    drv = VMShmDriver(pdev)
    expect((drv.window_size, drv.name_size), (None, None), "sizes a fresh driver knows")
    await drv.probe()
    expect((drv.window_size, drv.name_size), (env.window_size, env.name_size),
           "window and name sizes the driver read from the capability")
    expect((drv.window.size, drv.names.size), (env.window_size, env.name_size),
           "sizes of the BARs the capability's indices led to")
    expect((await reg(drv, "WINDOW_SIZE"), await reg(drv, "NAME_SIZE")),
           (env.window_size, env.name_size), "WINDOW_SIZE and NAME_SIZE registers")

    # The name buffer's discovered size bounds the names the driver writes.
    fd = await drv.open()
    too_long = "/" + "n" * (env.name_size - 1)
    mark = len(bus.records)
    await expect_errno(drv.ioctl(fd, 0, too_long), errno.ENAMETOOLONG,
                       f"ioctl with a {len(too_long)}-byte name for a {env.name_size}-byte "
                       f"name buffer")
    expect(bus.records[mark:], [], "bus traffic of a name the driver refused")
    await drv.ioctl(fd, 0, env.shm_name)

    # The object is bigger than the window: the window's discovered size bounds mmap.
    await expect_sizes(drv, env.window_size, env.shm_size, "after OPEN")
    await expect_errno(drv.mmap(fd, env.window_size + 1), errno.EINVAL,
                       "mmap one byte past the discovered window")
    await expect_errno(drv.mmap(fd, 16, env.window_size - 8), errno.EINVAL,
                       "mmap running past the discovered window")
    mapping = await drv.mmap(fd, env.window_size)
    await mapping.write(env.window_size - 4, b"end!")
    with host_object(env) as host:
        expect_bytes(host.read(env.window_size - 4, 8), b"end!" + bytes(4),
                     "object at the window's end")
    await drv.munmap(mapping)
    await drv.close(fd)
    return {"window_size": drv.window_size, "name_size": drv.name_size}
