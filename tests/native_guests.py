"""Guest functions the native backend's tests run by name (``"native_guests:NAME"``)."""

import os

from vmshm.driver_model import vmshm_probe
from vmshm.abi.regmap import REG


async def _mapped(bus, name, size=4096):
    """Probe, open /dev/vmshm0, OPEN ``name`` and map ``size`` bytes of the window: the
    seed's sequence every guest here starts with; return the driver, the file and the map."""
    drivers, _ = await vmshm_probe(bus)
    drv = drivers[0]
    fd = await drv.open()
    await drv.ioctl(fd, 0, name)
    return drv, fd, await drv.mmap(fd, size)


async def awaits_sleep(bus):
    """Await something that is not the bus."""
    import asyncio
    await asyncio.sleep(0)


async def shrink_then_read(bus, name):
    """Store 16 bytes at 4 KiB, read them back, shrink the object to 4 KiB as another process
    could, then read them again and write there: the host must refuse both, not fault."""
    drv, fd, mapping = await _mapped(bus, name, 8192)
    await mapping.write(4096, b"\x5a" * 16)
    before = await mapping.read(4096, 16)
    os.truncate(f"/dev/shm{name}", 4096)
    try:
        after = await mapping.read(4096, 16)
    except OSError as exc:
        after = exc.errno
    try:
        # A write there must be refused too, not grow the object again.
        await mapping.write(4100, b"\xa5" * 8)
        wrote = "written"
    except OSError as exc:
        wrote = exc.errno
    await drv.munmap(mapping)
    await drv.close(fd)
    return before, after, wrote


async def reset_midway(bus, name):
    """Open the object, write through the window, reset the function, then probe and use it
    again: the host must have let the object go, and the cycle count must go on."""
    drv, fd, mapping = await _mapped(bus, name)
    await mapping.write(8, b"before reset")
    before = bus.now()
    await bus.reset()
    after = bus.now()
    drv, fd, mapping = await _mapped(bus, name)
    back = await mapping.read(8, 12)
    await drv.munmap(mapping)
    await drv.close(fd)
    return before, after, back


async def writes_to_a_slow_host(bus, name):
    """Write bursts through the window to a host that seldom takes a beat, so the device gives
    up on some writes half-way (finishing them with no byte enabled); return what each write
    said and what the object holds."""
    drv, fd, mapping = await _mapped(bus, name)
    said = []
    for k in range(8):
        try:
            await mapping.write(64 * k, bytes([0x10 + k]) * 64)
            said.append("ok")
        except OSError as exc:
            said.append(exc.errno)
    await bus.idle(2000)
    with open(f"/dev/shm{name}", "rb") as f:
        held = f.read(512)
    return said, held


async def opens_and_closes(bus, name, rounds, pause):
    """OPEN and CLOSE ``rounds`` times, ``pause`` cycles apart; return what each said.

    Under host faults some time out; whatever each says, the backends must say it alike.
    """
    drivers, _ = await vmshm_probe(bus)
    drv = drivers[0]
    fd = await drv.open()
    said = []
    for _ in range(rounds):
        try:
            await drv.ioctl(fd, 0, name)
            said.append("open")
        except OSError as exc:
            said.append(exc.errno)
        said.append(await drv.regs.read32(REG["CLOSE"].offset))
        said.append(await drv.regs.read32(REG["STATUS"].offset))
        await bus.idle(pause)
    await drv.close(fd)
    return said


async def window_accesses(bus, name, rounds, pause):
    """Read and write 16 bytes through the window ``rounds`` times each, ``pause`` cycles
    apart; return what the reads got and what each access said."""
    drv, fd, mapping = await _mapped(bus, name)
    said = []
    for k in range(rounds):
        for what in ("read", "write"):
            try:
                if what == "read":
                    said.append(await mapping.read(64 * k, 16))
                else:
                    await mapping.write(64 * k + 8, bytes([0x30 + k]) * 16)
                    said.append("written")
            except OSError as exc:
                said.append(exc.errno)
            await bus.idle(pause)
    await drv.munmap(mapping)
    await drv.close(fd)
    with open(f"/dev/shm{name}", "rb") as f:
        said.append(f.read(64 * rounds + 32))
    return said


async def outwaits_the_bus(bus):
    """Read OPEN with a bus timeout far shorter than the host takes to answer: the bus gives up
    (BusTimeout) instead of waiting."""
    drivers, _ = await vmshm_probe(bus)
    bus.timeout = 8
    await drivers[0].regs.read32(REG["OPEN"].offset)


async def unaligned_spans(bus, name):
    """Write and read back spans that start and end inside a word and cross bursts (the
    native bus hands each burst's bytes to C++ whole); return what the reads got."""
    drv, fd, mapping = await _mapped(bus, name)
    got = []
    # The whole window first, so a span's partial words have bytes to keep around it.
    for k, (offset, size) in enumerate(((0, 4096), (3, 1500), (1029, 13), (5, 2047), (4090, 6),
                                        (7, 1), (1, 1030))):
        await mapping.write(offset, bytes((offset + i * 7 + k) & 0xff for i in range(size)))
        lo, hi = max(0, offset - 2), min(4096, offset + size + 2)
        got.append(await mapping.read(lo, hi - lo))
    await drv.munmap(mapping)
    await drv.close(fd)
    return got
