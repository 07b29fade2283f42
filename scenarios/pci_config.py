"""Scenarios of the PCI configuration space: enables, the Type-0 header, BAR sizing.

These check the function against the PCI Local Bus specification's rules (and PCI Express's
where it tightens them), not only against VMShm's own constants.
"""

from vmshm.abi import pci_regs as P
from vmshm.abi.config_space import MSI_CAP_OFFSET
from vmshm.driver_model import (pci_clear_master, pci_disable_device, pci_enable_device,
                                pci_set_master)
from vmshm.abi.regmap import (ABI_VERSION, CAP, CAP_LEN, CAP_VERSION, DEVICE_ID, PCI_DEVICE_ID,
                              PCI_REVISION, PCI_SUBSYSTEM_ID, PCI_SUBSYSTEM_VENDOR_ID,
                              PCI_VENDOR_ID, Status)

from .checks import expect, expect_bytes, expect_status, open_by_register, probe, reg
from .registry import scenario


@scenario(shm_size=4096)
async def pci_enables(bus, env):
    """Refuse OPEN and window accesses without Bus Master Enable, and decode nothing without MSE."""
    drv = await probe(bus)
    pdev = drv.pdev
    await pci_clear_master(pdev)
    expect(await open_by_register(drv, env.shm_name), Status.EPERM, "OPEN without bus master")
    await expect_status(drv, False, Status.EPERM, "after OPEN without bus master")
    await pci_set_master(pdev)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, env.shm_size)
    await mapping.write(0, b"mastered")
    # Bus mastering off under an open object: the window rejects, the object stays open.
    await pci_clear_master(pdev)
    expect_bytes(await mapping.read(0, 8), b"\xff" * 8, "window read without bus master")
    await mapping.write(0, b"dropped!")
    expect(await reg(drv, "REJECTS"), 2, "REJECTS without bus master")
    await expect_status(drv, True, Status.OK, "open object without bus master")
    await pci_set_master(pdev)
    expect_bytes(await mapping.read(0, 8), b"mastered", "window read with bus master again")
    # Memory decode off: nothing of the device answers memory requests, config still does.
    await pci_disable_device(pdev)
    expect(await reg(drv, "ID"), 0xFFFF_FFFF, "ID with memory decode off")
    expect(bus.records[-1].status, "UR", "status of a register read with memory decode off")
    await drv.window.write(0, b"nowhere!")
    expect(bus.records[-1].status, "UR", "status of a window write with memory decode off")
    expect(await pdev.read_config(0, 2), pdev.vendor, "vendor ID with memory decode off")
    await pci_enable_device(pdev)
    await pci_set_master(pdev)
    expect(await reg(drv, "ID"), DEVICE_ID, "ID with memory decode on again")
    await expect_status(drv, True, Status.OK, "after memory decode was off")
    expect_bytes(await mapping.read(0, 8), b"mastered", "window after memory decode was off")
    await drv.munmap(mapping)
    await drv.close(fd)
    await expect_status(drv, False, Status.OK, "after release")


#: Size of one configuration header dword.
DWORD = 4
#: The Type-0 header: configuration offsets below this are the spec's, above it capabilities.
HEADER_END = 0x40
#: BAR register offsets, BAR0 to BAR5.
BAR_OFFSETS = tuple(range(P.PCI_BASE_ADDRESS_0, P.PCI_BASE_ADDRESS_5 + 4, 4))
#: The command register's bits VMShm implements; the spec lets the others be hardwired to 0.
COMMAND_BITS = P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER | P.PCI_COMMAND_INTX_DISABLE
#: What each header dword holds, for messages.
HEADER_FIELDS = {
    0x00: "vendor and device ID", 0x04: "command and status", 0x08: "revision and class code",
    0x0C: "cache line size, latency timer, header type and BIST",
    **{off: f"BAR{i}" for i, off in enumerate(BAR_OFFSETS)},
    0x28: "CardBus CIS pointer", 0x2C: "subsystem IDs", 0x30: "expansion ROM BAR",
    0x34: "capability pointer", 0x38: "reserved dword 0x38",
    0x3C: "interrupt line and pin, Min_Gnt, Max_Lat",
}
ONES32 = 0xFFFF_FFFF


def field_name(offset, cap=None):
    """Return what the configuration dword at ``offset`` holds, for an assertion message."""
    if offset in HEADER_FIELDS:
        return f"{HEADER_FIELDS[offset]} (dword {offset:#04x})"
    if cap is not None and cap <= offset < cap + CAP_LEN:
        return f"VMShm capability +{offset - cap:#04x} (dword {offset:#04x})"
    return f"unimplemented dword {offset:#05x}"


def expected_bars(env):
    """Return ``{index: (size, is64, prefetchable)}`` of the BARs the device was built with."""
    name_index = 3 if env.window_64bit else 2
    return {0: (env.regs_size, False, False), 1: (env.window_size, env.window_64bit, True),
            name_index: (env.name_size, False, False)}


def writable_bits(env):
    """Return ``{dword offset: bits software may change}`` for every writable header dword.

    Everything else in the 256-byte space is read-only: writes must leave it as it was.
    """
    rw = {P.PCI_COMMAND: COMMAND_BITS, P.PCI_CACHE_LINE_SIZE: 0xFF,
          P.PCI_INTERRUPT_LINE: 0xFF,
          # The MSI capability: MSI Enable, the message's address (dword-aligned) and data.
          MSI_CAP_OFFSET: P.PCI_MSI_FLAGS_ENABLE << 16,
          MSI_CAP_OFFSET + P.PCI_MSI_ADDRESS_LO: ONES32 & ~3,
          MSI_CAP_OFFSET + P.PCI_MSI_ADDRESS_HI: ONES32,
          MSI_CAP_OFFSET + P.PCI_MSI_DATA_64: 0xFFFF}
    for index, (size, is64, _) in expected_bars(env).items():
        mask = ((1 << (64 if is64 else 32)) - 1) & ~(size - 1)
        rw[BAR_OFFSETS[index]] = mask & ONES32
        if is64:
            rw[BAR_OFFSETS[index + 1]] = mask >> 32
    return rw


async def find_functions(bus, env):
    """Read the vendor ID of all 32 slots as a PCI core does; return the occupied ones.

    An empty slot must read vendor ID 0xFFFF (the master abort's all ones) with status UR.
    """
    slots = []
    for slot in range(32):
        vendor = await bus.cfg_read_int(slot, P.PCI_VENDOR_ID, 2)
        if vendor == P.PCI_ANY_ID:
            expect(bus.records[-1].status, "UR", f"status of a configuration read of empty "
                                                 f"slot {slot}")
        else:
            slots.append(slot)
    expect(slots, list(range(env.devices)), "slots that answer a configuration read")
    return slots


async def walk_capabilities(bus, slot):
    """Follow ``slot``'s capability list, checking the spec's rules; return ``[(offset, id)]``.

    Status bit 4 must be set exactly when the capability pointer is not 0; every entry sits on
    a dword boundary at 0x40..0xFC, and the list ends (next pointer 0) within 48 entries, the
    bound Linux puts on the walk.
    """
    status = await bus.cfg_read_int(slot, P.PCI_STATUS, 2)
    pos = await bus.cfg_read_int(slot, P.PCI_CAPABILITY_LIST, 1)
    expect(bool(status & P.PCI_STATUS_CAP_LIST), pos != 0,
           f"status bit 4 (capabilities list) set when the capability pointer ({pos:#x}) is "
           f"not 0")
    found = []
    for _ in range(48):
        if pos == 0:
            return found
        if pos % DWORD or not HEADER_END <= pos <= P.PCI_CFG_SPACE_SIZE - DWORD:
            raise AssertionError(f"capability at {pos:#x}: expected a dword-aligned offset "
                                 f"from 0x40 to 0xfc (after {found})")
        if any(pos == p for p, _ in found):
            raise AssertionError(f"capability list loops back to {pos:#x} (after {found})")
        found.append((pos, await bus.cfg_read_int(slot, pos + P.PCI_CAP_LIST_ID, 1)))
        pos = await bus.cfg_read_int(slot, pos + P.PCI_CAP_LIST_NEXT, 1)
    raise AssertionError(f"the capability list does not end within 48 entries: {found}")


async def check_vmshm_capability(bus, slot, env):
    """Find VMShm's vendor-specific capability, check its layout and values; return its offset."""
    caps = await walk_capabilities(bus, slot)
    vendor_caps = [pos for pos, cap_id in caps if cap_id == P.PCI_CAP_ID_VNDR]
    expect(len(vendor_caps), 1, f"vendor-specific capabilities in the list {caps}")
    pos = vendor_caps[0]
    length = await bus.cfg_read_int(slot, pos + P.PCI_CAP_FLAGS, 1)
    if length < 3:
        raise AssertionError(f"vendor capability length byte: expected at least 3 (ID, next, "
                             f"length), got {length}")
    expect(length, CAP_LEN, "vendor capability length byte (regmap CAP_LEN)")
    if pos + length > P.PCI_CFG_SPACE_SIZE:
        raise AssertionError(f"vendor capability at {pos:#x} of {length} bytes runs past 0xff")
    got = {f.name: await bus.cfg_read_int(slot, pos + f.offset, f.size) for f in CAP.values()}
    name_index = 3 if env.window_64bit else 2
    want = {"CAP_ID": P.PCI_CAP_ID_VNDR, "CAP_NEXT": got["CAP_NEXT"], "CAP_LEN": CAP_LEN,
            "CAP_VERSION": CAP_VERSION, "ABI_VERSION": ABI_VERSION,
            "WINDOW_SIZE": env.window_size, "NAME_SIZE": env.name_size, "REGS_BAR": 0,
            "WINDOW_BAR": 1, "NAME_BAR": name_index, "RESERVED": 0}
    expect(got, want, f"VMShm capability fields at {pos:#x}")
    return pos


@scenario(shm_size=4096, name="pci_config_header_64bit_window", window_64bit=True)
@scenario(shm_size=4096)
async def pci_config_header(bus, env):
    """Check every Type-0 header field and its write behaviour against the PCI spec's rules."""
    slot = (await find_functions(bus, env))[0]

    async def read(offset, size=4):
        return await bus.cfg_read_int(slot, offset, size)

    # Identity. 0xFFFF is what an empty slot reads and 0 is no device to Linux either.
    vendor = await read(P.PCI_VENDOR_ID, 2)
    if vendor in (0xFFFF, 0x0000):
        raise AssertionError(f"vendor ID: expected a real vendor, not {vendor:#06x}")
    expect(vendor, PCI_VENDOR_ID, "vendor ID")
    expect(await read(P.PCI_DEVICE_ID, 2), PCI_DEVICE_ID, "device ID")
    class_rev = await read(P.PCI_CLASS_REVISION)
    expect(class_rev & 0xFF, PCI_REVISION, "revision ID")
    expect(class_rev >> 24, 0x05, "base class code (0x05: memory controller)")
    expect(class_rev >> 8, P.PCI_CLASS_MEMORY_RAM << 8, "class code (RAM, programming interface 0)")
    header = await read(P.PCI_HEADER_TYPE, 1)
    expect(header & P.PCI_HEADER_TYPE_MASK, P.PCI_HEADER_TYPE_NORMAL,
           "header type bits 6:0 (0: Type 0, an endpoint)")
    expect(header >> 7, 0, "header type bit 7 (multi-function: VMShm has one function)")
    expect(await read(P.PCI_BIST, 1), 0, "BIST (not BIST-capable, so the register reads 0)")
    expect(await read(P.PCI_LATENCY_TIMER, 1), 0, "latency timer (hardwired to 0, as in PCIe)")
    expect(await read(P.PCI_CACHE_LINE_SIZE, 1), 0, "cache line size at reset")
    expect(await read(P.PCI_COMMAND, 2), 0, "command register at reset (decode and bus "
                                            "mastering off)")
    subsys_vendor = await read(P.PCI_SUBSYSTEM_VENDOR_ID, 2)
    if subsys_vendor == 0xFFFF:
        raise AssertionError("subsystem vendor ID: expected a real vendor, not 0xffff")
    expect(subsys_vendor, PCI_SUBSYSTEM_VENDOR_ID, "subsystem vendor ID")
    expect(await read(P.PCI_SUBSYSTEM_ID, 2), PCI_SUBSYSTEM_ID, "subsystem ID")
    pin = await read(P.PCI_INTERRUPT_PIN, 1)
    if pin > 4:
        raise AssertionError(f"interrupt pin: expected 0 (none) or 1..4 (INTA..INTD), got {pin}")
    expect(pin, 1, "interrupt pin (INTA#: VMShm's doorbell interrupt)")
    expect(await read(P.PCI_MIN_GNT, 1), 0, "Min_Gnt (hardwired to 0, as in PCIe)")
    expect(await read(P.PCI_MAX_LAT, 1), 0, "Max_Lat (hardwired to 0, as in PCIe)")
    cap = await check_vmshm_capability(bus, slot, env)
    expect(await read(P.PCI_STATUS, 2), P.PCI_STATUS_CAP_LIST,
           "status at reset (capabilities list only, no error bits)")

    # Every dword the function does not implement reads 0, as the spec asks of reserved ones.
    offsets = range(0, P.PCI_CFG_SPACE_SIZE, DWORD)
    state = {off: await read(off) for off in offsets}
    # An MSI capability after VMShm's, then a PCI Express capability offering Function Level
    # Reset.
    exp = await read(cap + P.PCI_CAP_LIST_NEXT, 1)
    implemented = {0x00, 0x04, 0x08, 0x0C, *BAR_OFFSETS, 0x2C, 0x34, 0x3C,
                   *range(cap, cap + CAP_LEN, DWORD)}
    msi = 0
    if exp and state[exp] & 0xFF == P.PCI_CAP_ID_MSI:
        msi = exp
        expect(msi, MSI_CAP_OFFSET, "where the MSI capability sits")
        expect(state[msi] >> 16, P.PCI_MSI_FLAGS_64BIT, "MSI Message Control at reset (one "
                                                        "message, 64-bit, disabled)")
        implemented |= set(range(msi, msi + 16, DWORD))
        exp = state[msi] >> 8 & 0xFF
    if exp:
        expect(state[exp] & 0xFF, P.PCI_CAP_ID_EXP, "the capability after VMShm's")
        implemented |= {exp, exp + P.PCI_EXP_DEVCAP}
        # Device/Port Type (issue 22, finding 7; main said Endpoint, with a 32-bit prefetchable
        # window and no link). A PCI Express Endpoint has a link and only 64-bit prefetchable
        # BARs; the soft function has no link: a Root Complex Integrated Endpoint, whose link
        # registers are reserved (read 0; checked below with the other unimplemented dwords).
        port_type = (state[exp] >> 16 & P.PCI_EXP_FLAGS_TYPE) >> 4
        if port_type == P.PCI_EXP_TYPE_ENDPOINT:
            if not state[exp + P.PCI_EXP_LNKCAP]:
                raise AssertionError("a PCI Express Endpoint with Link Capabilities 0")
            for index, off in enumerate(BAR_OFFSETS):
                flags = state[off] & 0xF
                if flags & P.PCI_BASE_ADDRESS_MEM_PREFETCH and not (
                        flags & P.PCI_BASE_ADDRESS_MEM_TYPE_64):
                    raise AssertionError(f"a PCI Express Endpoint with BAR{index} prefetchable "
                                         f"and 32-bit")
        expect(port_type, P.PCI_EXP_TYPE_RC_END, "Device/Port Type (1001b: Root Complex "
                                                 "Integrated Endpoint, no link)")
    at_reset = dict(state)
    for off in sorted(set(offsets) - implemented):
        expect(state[off], 0, field_name(off, cap))
    rw = writable_bits(env)
    for index, off in enumerate(BAR_OFFSETS):
        if off not in rw:
            expect(state[off], 0, f"unimplemented BAR{index} at reset")

    # Writes: each writable bit takes the value, every other bit keeps its own.

    def model(offset, data):
        # The spec's write rule, byte by byte: read-only bits ignore the write.
        flr = False
        for i, byte in enumerate(data):
            off, lane = (offset + i) & ~3, 8 * ((offset + i) & 3)
            bits = (rw.get(off, 0) >> lane) & 0xFF
            state[off] = (state[off] & ~(bits << lane)) | ((byte & bits) << lane)
            flr |= bool(exp) and off + lane // 8 == exp + P.PCI_EXP_DEVCTL + 1 and byte & 0x80
        if flr:
            # Initiate FLR: every register is back at its reset value, Cache Line Size and
            # Interrupt Line included (PCIe Base 6.6.2: nothing here is sticky; issue 22,
            # finding 5).
            state.update(at_reset)

    async def check(offs, what):
        for off in offs:
            expect(await read(off), state[off], f"{field_name(off, cap)} after {what}")

    for value in (ONES32, 0):
        for off in offsets:
            await bus.cfg_write_int(slot, off, 4, value)
            model(off, value.to_bytes(4, "little"))
        await check(offsets, f"writing {value:#x} to every dword")
    # The named rules, once more with their own messages.
    await bus.cfg_write_int(slot, P.PCI_COMMAND, 2, 0xFFFF)
    expect(await read(P.PCI_COMMAND, 2), COMMAND_BITS,
           "command after writing 0xffff (only MEMORY, MASTER and INTX_DISABLE are implemented)")
    model(P.PCI_COMMAND, b"\xff\xff")
    for off, value, what in ((P.PCI_CACHE_LINE_SIZE, 0x10, "cache line size"),
                             (P.PCI_INTERRUPT_LINE, 0x0B, "interrupt line")):
        await bus.cfg_write_int(slot, off, 1, value)
        model(off, bytes([value]))
        expect(await read(off, 1), value, f"{what} read back (RW)")
    for off, what in ((P.PCI_ROM_ADDRESS, "expansion ROM BAR"),
                      (P.PCI_CARDBUS_CIS, "CardBus CIS pointer")):
        await bus.cfg_write_int(slot, off, 4, ONES32)
        expect(await read(off), 0, f"{what} after writing all ones (not implemented)")

    # Byte enables: a write of part of a dword touches only the bytes it enables.
    header_and_cap = [*range(0, HEADER_END, DWORD), *range(cap, cap + CAP_LEN, DWORD)]
    partial = [
        (P.PCI_VENDOR_ID + 1, b"\x00", "the vendor ID's high byte"),
        (P.PCI_DEVICE_ID, b"\x00", "the device ID's low byte"),
        (P.PCI_COMMAND, b"\x00", "the command register's low byte"),
        (P.PCI_COMMAND + 1, b"\x00", "the command register's high byte"),
        (P.PCI_COMMAND + 1, b"\xff", "the command register's high byte"),
        (P.PCI_COMMAND, b"\xff", "the command register's low byte"),
        (P.PCI_STATUS, b"\x00\x00", "the status register"),
        (P.PCI_STATUS + 1, b"\xff", "the status register's high byte"),
        (P.PCI_REVISION_ID, b"\xff", "the revision ID"),
        (P.PCI_CLASS_PROG, b"\x00\x00\x00", "the class code"),
        (P.PCI_CACHE_LINE_SIZE, b"\x20", "the cache line size"),
        (P.PCI_LATENCY_TIMER, b"\xff", "the latency timer"),
        (P.PCI_HEADER_TYPE, b"\xff\xff", "the header type and BIST"),
        (P.PCI_BASE_ADDRESS_0 + 2, b"\xab", "byte 2 of BAR0"),
        (P.PCI_BASE_ADDRESS_0, b"\x00", "byte 0 of BAR0"),
        (BAR_OFFSETS[1] + 3, b"\xcd", "byte 3 of BAR1"),
        (BAR_OFFSETS[1] + 1, b"\x00\x00", "bytes 1 and 2 of BAR1"),
        (P.PCI_SUBSYSTEM_VENDOR_ID + 1, b"\x00", "the subsystem vendor ID's high byte"),
        (P.PCI_SUBSYSTEM_ID, b"\x00\x00", "the subsystem ID"),
        (P.PCI_ROM_ADDRESS, b"\x01", "the expansion ROM enable bit"),
        (P.PCI_CAPABILITY_LIST, b"\x00", "the capability pointer"),
        (P.PCI_INTERRUPT_PIN, b"\x02", "the interrupt pin"),
        (P.PCI_INTERRUPT_LINE, b"\x05", "the interrupt line"),
        (P.PCI_MIN_GNT, b"\xff\xff", "Min_Gnt and Max_Lat"),
        (cap + CAP["CAP_LEN"].offset, b"\x00", "the capability's length byte"),
        (cap + CAP["WINDOW_SIZE"].offset + 1, b"\xff", "a byte of the capability's WINDOW_SIZE"),
    ]
    for offset, data, what in partial:
        await bus.cfg_write(slot, offset, data)
        model(offset, data)
        await check(header_and_cap, f"writing {data.hex()} to {what} at {offset:#04x}")

    # Extended configuration space (0x100..0xfff) holds no capabilities and reads 0. Each address
    # bit 8..11 is tried under every header dword that is not 0, so an alias would show.
    nonzero = [off for off in header_and_cap if state[off]]
    for high in (0x100, 0x200, 0x400, 0x800, 0xF00):
        for off in nonzero:
            expect(await read(high + off), 0, f"extended dword {high + off:#05x}")
        await bus.cfg_write_int(slot, high + P.PCI_COMMAND, 4, 0)
        await bus.cfg_write_int(slot, high + P.PCI_INTERRUPT_LINE, 4, 0)
        await bus.cfg_write_int(slot, high + BAR_OFFSETS[0], 4, 0)
    expect(await read(0xFFC), 0, "extended dword 0xffc")
    await check(header_and_cap, "writes to extended configuration space")

    # After all that, a guest still finds, places and binds the device.
    for off in (P.PCI_COMMAND, P.PCI_CACHE_LINE_SIZE, P.PCI_INTERRUPT_LINE):
        await bus.cfg_write_int(slot, off, 1 if off != P.PCI_COMMAND else 2, 0)
    drv = await probe(bus)
    expect(await reg(drv, "ID"), DEVICE_ID, "ID register after probe")
    expect(await reg(drv, "VERSION"), drv.version, "VERSION register and the capability's "
                                                   "ABI_VERSION")
    expect(await read(P.PCI_COMMAND, 2), P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER,
           "command after probe")
    return {"capability": cap, "nonzero_dwords": len(nonzero)}


@scenario(shm_size=4096, name="pci_bar_sizing_64bit_window", window_64bit=True)
@scenario(shm_size=4096, name="pci_bar_sizing_4k_regs", regs_size=4096)
@scenario(shm_size=4096, name="pci_bar_sizing_small", window_size=64 << 10, name_size=256)
@scenario(shm_size=4096)
async def pci_bar_sizing(bus, env):
    """Size every BAR as the spec says: memory type bits, power-of-two masks, base bits writable."""
    slot = (await find_functions(bus, env))[0]
    configured = expected_bars(env)

    async def read(offset):
        return await bus.cfg_read_int(slot, offset, 4)

    async def write(offset, value):
        await bus.cfg_write_int(slot, offset, 4, value)

    found = {}
    index = 0
    while index < 6:
        reg_off, what = BAR_OFFSETS[index], f"BAR{index}"
        reset = await read(reg_off)
        await write(reg_off, ONES32)
        low = await read(reg_off)
        if index not in configured:
            expect(low, 0, f"unimplemented {what} after writing all ones")
            await write(reg_off, 0x5A5A_5A5A)
            expect(await read(reg_off), 0, f"unimplemented {what} after writing 0x5a5a5a5a")
            index += 1
            continue
        expect(low & P.PCI_BASE_ADDRESS_SPACE_IO, 0, f"{what} bit 0 (0: memory space)")
        mem_type = low & P.PCI_BASE_ADDRESS_MEM_TYPE_MASK
        if mem_type not in (P.PCI_BASE_ADDRESS_MEM_TYPE_32, P.PCI_BASE_ADDRESS_MEM_TYPE_64):
            raise AssertionError(f"{what} type bits 2:1: expected 00 (32-bit) or 10 (64-bit), "
                                 f"got {mem_type >> 1:02b}")
        is64 = mem_type == P.PCI_BASE_ADDRESS_MEM_TYPE_64
        prefetch = bool(low & P.PCI_BASE_ADDRESS_MEM_PREFETCH)
        flags = low & 0xF
        expect(reset & 0xF, flags, f"{what} type bits at reset")
        width = 64 if is64 else 32
        mask = low & ~0xF
        if is64:
            if index == 5:
                raise AssertionError("BAR5 claims to be 64-bit: there is no BAR6 for its upper "
                                     "dword")
            await write(reg_off + 4, ONES32)
            high = await read(reg_off + 4)
            expect(high, ONES32, f"upper dword of 64-bit {what} after writing all ones")
            mask |= high << 32
        size = (~mask & ((1 << width) - 1)) + 1
        if size & (size - 1) or size < 16:
            raise AssertionError(f"{what} size ~mask + 1 = {size:#x} from mask {mask:#x}: "
                                 f"expected a power of two of at least 16")
        expect(mask, ((1 << width) - 1) & ~(size - 1),
               f"{what} mask: every bit from log2(size) up writable")
        expect((size, is64, prefetch), configured[index],
               f"{what} (size, 64-bit, prefetchable) against the build parameters")
        if index == 0 and prefetch:
            raise AssertionError("BAR0 holds read-to-trigger registers: reads have side "
                                 "effects, so it must not be prefetchable")
        # Writing zeros clears the base; the type bits are read-only and stay.
        await write(reg_off, 0)
        if is64:
            await write(reg_off + 4, 0)
            expect(await read(reg_off + 4), 0, f"upper dword of {what} after writing 0")
        expect(await read(reg_off), flags, f"{what} after writing 0 (type bits stay)")
        # The base bits are exactly those at and above log2(size): two complementary patterns.
        for pattern in (0xA5A5_A5A5, 0x5A5A_5A5A):
            await write(reg_off, pattern)
            got = await read(reg_off)
            if is64:
                await write(reg_off + 4, pattern)
                got |= await read(reg_off + 4) << 32
                pattern |= pattern << 32
            expect(got, (pattern & mask) | flags,
                   f"{what} after writing {pattern:#x}: bits from {size.bit_length() - 1} up "
                   f"take it, the type bits stay")
        # A base, as a PCI core assigns one, reads back as written.
        base = (0x12 << 32 if is64 else 0xC000_0000) + 3 * size
        await write(reg_off, base & ONES32)
        if is64:
            await write(reg_off + 4, base >> 32)
        got = await read(reg_off) | ((await read(reg_off + 4)) << 32 if is64 else 0)
        expect(got, base | flags, f"{what} base read back")
        await write(reg_off, 0)
        if is64:
            await write(reg_off + 4, 0)
        found[index] = (size, is64, prefetch)
        index += 2 if is64 else 1       # a 64-bit BAR consumes the next index: its upper dword
    expect(found, configured, "BARs found by sizing (index: size, 64-bit, prefetchable)")

    # The PCI core finds the same, places every BAR naturally aligned, and the device decodes.
    drv = await probe(bus)
    resources = {i: (r.size, r.is64, r.prefetch) for i, r in drv.pdev.resources.items()}
    expect(resources, configured, "BARs found by pci_scan_bus")
    for res in drv.pdev.resources.values():
        expect(res.start % res.size, 0, f"BAR{res.index} at {res.start:#x}: aligned to its size")
        if res.is64:
            if res.start < 1 << 32:
                raise AssertionError(f"64-bit BAR{res.index} at {res.start:#x}: expected the "
                                     f"allocator to place it above 4 GiB")
    expect((drv.regs.size, drv.window.size, drv.names.size),
           (env.regs_size, env.window_size, env.name_size), "BARs the driver mapped")
    expect(await reg(drv, "ID"), DEVICE_ID, "ID register through BAR0")
    expect((await reg(drv, "WINDOW_SIZE"), await reg(drv, "NAME_SIZE")),
           (env.window_size, env.name_size), "WINDOW_SIZE and NAME_SIZE registers")
    for bar in (drv.regs, drv.window, drv.names):
        await bar.read(bar.size - 4, 4)
        expect(bus.records[-1].status, "SC", f"status of a read of the last word of the BAR "
                                             f"at {bar.base:#x}")
    return {"bars": [str(r) for r in drv.pdev.resources.values()]}
