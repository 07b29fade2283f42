"""Scenarios of the register file (BAR0): constants, STATUS and sizes, unknown offsets, rejects."""

import errno

from vmshm.regmap import ABI_VERSION, BAR0_SIZE, DEVICE_ID, REG, REGISTERS, Status

from .checks import (expect, expect_bytes, expect_errno, expect_sizes, expect_status,
                     generated_registers, host_object, open_by_register, probe, records_in, reg)
from .registry import scenario


@scenario(shm_size=4096)
async def regs_constants(bus, env):
    """Read the constant registers and the reset state, and check writes do not change them."""
    drv = await probe(bus)
    # The driver learnt the sizes from the PCI capability; the registers must agree.
    expect((drv.window_size, drv.name_size, drv.version),
           (env.window_size, env.name_size, ABI_VERSION), "sizes and version from the capability")
    expect((drv.regs.size, drv.window.size, drv.names.size),
           (env.regs_size, env.window_size, env.name_size), "BAR sizes")
    constants = {"ID": DEVICE_ID, "VERSION": ABI_VERSION, "WINDOW_SIZE": env.window_size,
                 "NAME_SIZE": env.name_size}
    # OPEN is left out: reading it would trigger.
    at_reset = {"STATUS": 0, "MAP_SIZE": 0, "OBJ_SIZE_LO": 0, "OBJ_SIZE_HI": 0, "REJECTS": 0}
    for name, value in constants.items():
        expect(await reg(drv, name), value, name)
    for name, value in at_reset.items():
        expect(await reg(drv, name), value, f"{name} at reset")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE with nothing open")
    for name in constants:
        await drv.regs.write32(REG[name].offset, ~constants[name])
        expect(await reg(drv, name), constants[name], f"{name} after a write")


@scenario(shm_size=5000)
async def regs_status_and_sizes(bus, env):
    """Follow STATUS, MAP_SIZE and OBJ_SIZE through failed, successful and repeated OPEN, CLOSE."""
    drv = await probe(bus)
    await expect_status(drv, False, Status.OK, "at reset")
    await expect_sizes(drv, 0, 0, "at reset")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE with nothing open")
    await expect_status(drv, False, Status.OK, "after CLOSE with nothing open")

    got = await open_by_register(drv, env.shm_name + "-missing")
    expect(got, Status.ENOENT, "OPEN of a missing object")
    await expect_status(drv, False, Status.ENOENT, "after a failed OPEN")
    await expect_sizes(drv, 0, 0, "after a failed OPEN")

    expect(await open_by_register(drv, env.shm_name), Status.OK, "OPEN")
    await expect_status(drv, True, Status.OK, "after OPEN")
    await expect_sizes(drv, env.shm_size, env.shm_size, "after OPEN")

    # A second OPEN is refused by the device itself and leaves the open object alone.
    expect(await reg(drv, "OPEN"), Status.EBUSY, "OPEN while open")
    await expect_status(drv, True, Status.EBUSY, "after a second OPEN")
    await expect_sizes(drv, env.shm_size, env.shm_size, "after a second OPEN")
    with host_object(env) as host:
        host.write(0, b"still mapped")
    expect_bytes(await drv.window.read(0, 12), b"still mapped", "window after EBUSY")

    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE")
    await expect_status(drv, False, Status.OK, "after CLOSE")
    await expect_sizes(drv, 0, 0, "after CLOSE")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE again")
    await expect_status(drv, False, Status.OK, "after CLOSE again")
    expect_bytes(await drv.window.read(0, 4), b"\xff" * 4, "window after CLOSE")

    # And the object opens again.
    expect(await reg(drv, "OPEN"), Status.OK, "OPEN after CLOSE")
    await expect_sizes(drv, env.shm_size, env.shm_size, "after the second OPEN")
    expect(await reg(drv, "CLOSE"), Status.OK, "final CLOSE")


@scenario(shm_size=3 * 4096 + 5, window_size=4096)
async def regs_object_bigger_than_window(bus, env):
    """Open an object bigger than the window: MAP_SIZE is the window, OBJ_SIZE the object."""
    ws, wb = env.window_size, bus.word_bytes
    with host_object(env) as host:
        host.write(ws - 8, bytes(range(16)))
    drv = await probe(bus)
    expect(await open_by_register(drv, env.shm_name), Status.OK, "OPEN")
    await expect_sizes(drv, ws, env.shm_size, "after OPEN")
    expect_bytes(await drv.window.read(ws - 8, 8), bytes(range(8)), "last bytes of window")
    await drv.window.write(ws - 3, b"xyz")
    with host_object(env) as host:
        expect_bytes(host.read(ws - 8, 16), bytes(range(5)) + b"xyz" + bytes(range(8, 16)),
                     "object around the window's end")
    # A burst that runs off the window's end is no access of the BAR: unsupported.
    expect_bytes(await bus.mem_read(drv.window.base + ws - wb, 2 * wb), b"\xff" * 2 * wb,
                 "a burst across the window's end")
    expect(bus.records[-1].status, "UR", "status of a burst across the window's end")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after a burst across the window's end")
    fd = await drv.open()
    await expect_errno(drv.mmap(fd, ws + 1), errno.EINVAL, "mmap past the window")
    mapping = await drv.mmap(fd, ws)
    await drv.munmap(mapping)
    await drv.close(fd)     # releases the device: reads CLOSE
    await expect_sizes(drv, 0, 0, "after release")


@scenario(shm_size=(4 << 30) + 4099)
async def regs_object_over_4gib(bus, env):
    """Open a (sparse) object over 4 GiB: OBJ_SIZE_HI carries the high bits."""
    drv = await probe(bus)
    expect(await open_by_register(drv, env.shm_name), Status.OK, "OPEN")
    await expect_sizes(drv, min(env.window_size, env.shm_size), env.shm_size, "after OPEN")
    lo_hi = int.from_bytes(await drv.regs.read(REG["OBJ_SIZE_LO"].offset, 8), "little")
    expect(lo_hi, env.shm_size, "OBJ_SIZE_LO and OBJ_SIZE_HI read as one 8-byte access")
    await drv.window.write(env.window_size - 4, b"tail")
    with host_object(env) as host:
        expect_bytes(host.read(env.window_size - 4, 4), b"tail", "object at the window's end")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE")


@scenario(shm_size=4096, name="regs_unknown_offsets_4k", regs_size=4096)
@scenario(shm_size=4096)
async def regs_unknown_offsets(bus, env):
    """Read 0 from every unassigned register offset and check writes anywhere change nothing."""
    drv = await probe(bus)
    known = {r.offset for r in REGISTERS}
    # Past the register map a sample does: the decode there is one "else".
    offsets = [o for o in range(0, BAR0_SIZE, 4)] + list(range(BAR0_SIZE, env.regs_size, 0x7C))
    if env.regs_size > BAR0_SIZE:
        offsets.append(env.regs_size - 4)
    unknown = [o for o in offsets if o not in known]
    for offset in unknown:
        expect(await drv.regs.read32(offset), 0, f"unassigned offset {offset:#05x}")
    # A valid name sits in BAR2, so a write that wrongly triggered OPEN would open the object.
    await drv.names.write(0, env.shm_name.encode() + b"\0")
    # Registers a write acts on (INTR_MASK, INTR_STATUS, DOORBELL) are the doorbell scenarios'.
    before = {r.name: await reg(drv, r.name) for r in REGISTERS
              if r.access not in ("RT", "RW", "W1C", "W")}
    for offset in offsets:
        await drv.regs.write32(offset, 0xFFFF_FFFF)
    for offset in unknown:
        expect(await drv.regs.read32(offset), 0, f"unassigned offset {offset:#05x} "
                                                 f"after a write")
    after = {name: await reg(drv, name) for name in before}
    expect(after, before, "registers after writing all ones everywhere in BAR0")
    await expect_status(drv, False, Status.OK, "after writing OPEN and CLOSE")
    # Byte and half-word writes too.
    await drv.regs.write(REG["OPEN"].offset, b"\xff")
    await drv.regs.write(REG["CLOSE"].offset + 1, b"\xff\xff")
    await expect_status(drv, False, Status.OK, "after sub-word writes to OPEN and CLOSE")


@scenario(shm_size=4096)
async def regs_reads_do_not_trigger(bus, env):
    """Read every register but OPEN and CLOSE, alone and in bursts, without opening or closing."""
    drv = await probe(bus)
    await drv.names.write(0, env.shm_name.encode() + b"\0")
    quiet = [o for o in range(0, BAR0_SIZE, 4) if o not in (REG["OPEN"].offset,
                                                             REG["CLOSE"].offset)]
    for offset in quiet:
        await drv.regs.read32(offset)
        await expect_status(drv, False, Status.OK, f"closed, after reading {offset:#04x}")
    # A burst from ID to REJECTS: on a 64-bit path its first word also holds OPEN.
    raw = await drv.regs.read(REG["ID"].offset, REG["CLOSE"].offset - REG["ID"].offset)
    expect(int.from_bytes(raw[:4], "little"), DEVICE_ID, "ID read in a burst")
    expect(int.from_bytes(raw[4:8], "little"), ABI_VERSION, "VERSION read in a burst")
    await expect_status(drv, False, Status.OK, "after a burst from ID to REJECTS")
    for offset in (1, 2, 3):
        await drv.regs.read(REG["ID"].offset + offset, 1)
    await expect_status(drv, False, Status.OK, "after byte reads of ID")

    # OPEN read together with ID in one 8-byte access: OPEN's status, then ID.
    raw = await drv.regs.read(REG["OPEN"].offset, 8)
    expect(int.from_bytes(raw[:4], "little"), Status.OK, "OPEN read as 8 bytes with ID")
    expect(int.from_bytes(raw[4:], "little"), DEVICE_ID, "ID read as 8 bytes with OPEN")
    await expect_status(drv, True, Status.OK, "after OPEN")
    for offset in quiet:
        await drv.regs.read32(offset)
        await expect_status(drv, True, Status.OK, f"open, after reading {offset:#04x}")
    raw = await drv.regs.read(REG["WINDOW_SIZE"].offset, 8)
    expect(int.from_bytes(raw[:4], "little"), env.window_size, "WINDOW_SIZE in a burst")
    expect(int.from_bytes(raw[4:], "little"), env.name_size, "NAME_SIZE in a burst")
    await expect_status(drv, True, Status.OK, "after a burst of WINDOW_SIZE and NAME_SIZE")
    # A byte read of CLOSE is still a read of CLOSE.
    expect(await drv.regs.read(REG["CLOSE"].offset + 2, 1), b"\0", "byte 2 of CLOSE")
    await expect_status(drv, False, Status.OK, "after a byte read of CLOSE")


@scenario(shm_size=4096)
async def regs_rejects(bus, env):
    """Count rejected window accesses in REJECTS and clear it by writing to it.

    Registers are read and written through the generated register layer (by name, not by
    offset); only the writes the layer refuses (to read-only registers, or of one byte) are raw.
    """
    drv = await probe(bus)
    regs = (await generated_registers(drv)).regs
    expect(await regs.REJECTS.read(), 0, "REJECTS at reset")
    mark = len(bus.records)
    await drv.window.read(0, 4)
    await drv.window.write(8, b"abc")
    # A long access is split into bursts; each is rejected and counted once.
    await drv.window.read(16, 300 * bus.word_bytes)
    bursts = len(records_in(bus, mark, drv.window))
    expect(bursts, 4, "bursts on the window")
    expect(await regs.REJECTS.read(), bursts, "REJECTS after window accesses while closed")
    # Writes to the neighbouring registers leave it alone (on 64 bits they share a word).
    # Both are read-only, so the layer has no write for them.
    for name in ("OBJ_SIZE_HI", "CLOSE"):
        await drv.regs.write32(REG[name].offset, 0xFFFF_FFFF)
        expect(await regs.REJECTS.read(), bursts, f"REJECTS after a write to {name}")
    await regs.REJECTS.write(0x1234)
    expect(await regs.REJECTS.read(), 0, "REJECTS after a write")
    await drv.window.read(0, 1)
    await drv.regs.write(REG["REJECTS"].offset + 3, b"\0")
    expect(await regs.REJECTS.read(), 0, "REJECTS after a byte write")
    # Accepted accesses do not count.
    expect(await open_by_register(drv, env.shm_name), Status.OK, "OPEN")
    expect(await regs.STATUS.OPEN.read(), 1, "STATUS.OPEN after OPEN")
    await drv.window.read(0, 64)
    await drv.window.write(1, b"x")
    expect(await regs.REJECTS.read(), 0, "REJECTS after accepted accesses")
    await drv.window.read(env.shm_size, 4)
    expect(await regs.REJECTS.read(), 1, "REJECTS after a read past the object")
    expect(await regs.CLOSE.read(), Status.OK, "CLOSE")
    expect(await regs.STATUS.OPEN.read(), 0, "STATUS.OPEN after CLOSE")
