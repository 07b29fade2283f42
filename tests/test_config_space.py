"""The configuration space described once: the capability list, the fields, the three users.

:mod:`vmshm.abi.config_space` places and chains the capabilities and describes every field; the
soft function's RTL, the fuzzer's golden model and QEMU's floor device are built from it. Here:
the list's placement and pointers (against cocotbext-pcie's ``PciCapList`` too), the fields'
write rules, and the three users read the same 256 bytes after the same writes.
"""

import os
import random
from pathlib import Path

import pytest
from amaranth.hdl import Fragment

from vmshm.abi import pci_regs as P
from vmshm.abi.config_space import (CAP_OFFSET, CAPABILITIES, EXP_CAP_OFFSET, MSI_CAP_OFFSET,
                                    Capability, CapabilityList, ConfigField, ConfigSpace,
                                    ConfigState, render_markdown, vmshm_bars, vmshm_config_space)
from vmshm.driver_model.bus import Space
from vmshm.fuzz.model import DeviceModel, FuzzConfig
from vmshm.qemu.device import FloorDevice
from vmshm.abi.regmap import PCI_SUBSYSTEM_ID
from vmshm.sim import simulate

DOC = Path(__file__).resolve().parent.parent / "docs" / "config_space.md"


def _caps(*lengths):
    return [Capability(f"c{i}", 0x09, n) for i, n in enumerate(lengths)]


# -- the capability list ------------------------------------------------------------------------

def test_capabilities_go_one_after_another_on_dword_boundaries():
    caps = CapabilityList()
    offsets = [caps.register(c) for c in _caps(0x14, 0x0E, 6, 0x3C)]
    assert offsets == [0x40, 0x54, 0x64, 0x6C]
    assert caps.head == 0x40
    assert [caps.next_pointer(f"c{i}") for i in range(4)] == [0x54, 0x64, 0x6C, 0]


def test_alignment_moves_each_capability_to_the_next_boundary():
    caps = CapabilityList(align=16)
    assert [caps.register(c) for c in _caps(0x14, 0x3C, 0x0E)] == [0x40, 0x60, 0xA0]


def test_after_puts_a_capability_into_the_chain_where_asked():
    caps = CapabilityList()
    for c in _caps(8, 8, 8):
        caps.register(c)
    assert caps.register(Capability("late", 0x05, 8), after="c0") == 0x58
    assert [c.name for c in caps] == ["c0", "late", "c1", "c2"]
    pointers = {c.name: caps.next_pointer(c.name) for c in caps}
    assert pointers == {"c0": 0x58, "late": 0x48, "c1": 0x50, "c2": 0}


@pytest.mark.parametrize("seed", range(5))
def test_random_lists_are_aligned_disjoint_and_chained(seed):
    rng = random.Random(seed)
    align = rng.choice([4, 8, 16, 32])
    caps = CapabilityList(align=align)
    placed = []
    for i in range(20):
        cap = Capability(f"c{i}", 1 + i, rng.randint(2, 40))
        after = rng.choice([None, *[c.name for c, _ in placed]])
        try:
            placed.append((cap, caps.register(cap, after=after)))
        except ValueError:
            break
    spans = sorted((off, off + c.length) for c, off in placed)
    assert all(off % align == 0 and 0x40 <= off and end <= 0x100 for off, end in spans)
    assert all(a_end <= b for (_, a_end), (b, _) in zip(spans, spans[1:])), "overlap"
    # Following the pointers from the head visits every capability once.
    seen, pos = [], caps.head
    by_offset = {off: c.name for c, off in placed}
    while pos:
        seen.append(by_offset[pos])
        pos = caps.next_pointer(by_offset[pos])
    assert seen == [c.name for c in caps] and len(seen) == len(placed)


def test_placement_agrees_with_cocotbext_pcies_list():
    """Registered one after another, dword-aligned, capabilities land where cocotbext-pcie's
    PciCapList (which counts in dwords) puts them, with the same next pointers. (Its overlap
    test misses one-dword capabilities, which no real capability is: they start at two.)"""
    from cocotbext.pcie.core.caps.common import PciCap, PciCapList
    rng = random.Random(7)
    theirs, ours = PciCapList(), CapabilityList()
    for i in range(8):
        dwords = rng.randint(2, 6)
        cap = PciCap()
        cap.cap_id, cap.length = 0x09, dwords
        theirs.register(cap)
        ours.register(Capability(f"c{i}", 0x09, 4 * dwords))
    assert [4 * c.offset for c in theirs.list] == [ours.offset(c.name) for c in ours]
    assert [c.next_cap for c in theirs.list] == [ours.next_pointer(c.name) for c in ours]


def test_a_capability_that_does_not_fit_says_so():
    caps = CapabilityList(align=16)
    for c in _caps(0x3C, 0x3C, 0x3C):
        caps.register(c)
    with pytest.raises(ValueError, match=r"^capability 'big' \(20 bytes\) does not fit in "
                                         r"0x40-0xff at a multiple of 16: taken are c0 "
                                         r"0x40-0x7b, c1 0x80-0xbb, c2 0xc0-0xfb$"):
        caps.register(Capability("big", 0x10, 20))
    assert len(caps) == 3, "a refused capability must not join the list"


@pytest.mark.parametrize("length, fits", [(4, True), (5, False)])
def test_the_last_capability_fits_up_to_the_end_and_not_a_byte_past(length, fits):
    caps = CapabilityList()
    assert caps.register(Capability("a", 9, 0xBC)) == 0x40
    if fits:
        assert caps.register(Capability("b", 9, length)) == 0xFC
    else:
        with pytest.raises(ValueError, match="does not fit in 0x40-0xff"):
            caps.register(Capability("b", 9, length))


@pytest.mark.parametrize("make, message", [
    (lambda: CapabilityList(align=6), "align must be a power of two from 4, not 6"),
    (lambda: CapabilityList(align=2), "align must be a power of two from 4"),
    (lambda: CapabilityList(start=0x30), "start must be a multiple of 4 from 0x40"),
    (lambda: CapabilityList(end=0x200), "end must be past start"),
    (lambda: Capability("x", 0, 8), "cap_id must be an integer from 1 to 255, not 0"),
    (lambda: Capability("x", 9, 1), "length must be an integer of at least 2 bytes"),
])
def test_bad_lists_and_capabilities_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_names_must_be_new_and_after_must_be_known():
    caps = CapabilityList()
    caps.register(Capability("a", 9, 8))
    with pytest.raises(ValueError, match="a capability named 'a' is registered already"):
        caps.register(Capability("a", 9, 8))
    with pytest.raises(ValueError, match="is to follow 'b', which is not registered"):
        caps.register(Capability("c", 9, 8), after="b")
    with pytest.raises(KeyError, match="no capability named 'b'"):
        caps.offset("b")


def test_vmshms_capabilities_sit_where_drivers_find_them():
    """The offsets and the chain every driver and record has seen: 0x40 -> 0xa0 -> 0x60."""
    assert (CAP_OFFSET, MSI_CAP_OFFSET, EXP_CAP_OFFSET) == (0x40, 0xA0, 0x60)
    assert CAPABILITIES.head == CAP_OFFSET
    assert [(c.name, c.cap_id, CAPABILITIES.next_pointer(c.name)) for c in CAPABILITIES] == [
        ("vendor", P.PCI_CAP_ID_VNDR, MSI_CAP_OFFSET), ("msi", P.PCI_CAP_ID_MSI, EXP_CAP_OFFSET),
        ("exp", P.PCI_CAP_ID_EXP, 0)]


# -- fields and their write rules -----------------------------------------------------------------

def test_overlapping_fields_are_refused():
    with pytest.raises(ValueError, match="fields a and b overlap in dword 0x10"):
        ConfigSpace([ConfigField("a", 0x10, 0, 8, "const", value=1),
                     ConfigField("b", 0x10, 4, 8, "rw")])
    with pytest.raises(ValueError, match="bits 30..33 do not fit in a dword"):
        ConfigField("c", 0x10, 30, 4, "rw")
    with pytest.raises(ValueError, match="offset must be a multiple of 4 below 0x100"):
        ConfigField("d", 0x11, 0, 4, "rw")


def test_write_rules_by_kind():
    space = ConfigSpace([
        ConfigField("rw", 0x00, 4, 16, "rw", mask=0xF0F0, flr=True),
        ConfigField("sticky", 0x00, 0, 4, "rw"),
        ConfigField("flag", 0x04, 24, 1, "rw1c"),
        ConfigField("go", 0x04, 15, 1, "trigger"),
        ConfigField("line", 0x04, 0, 8, "live"),
    ])
    state = ConfigState(space)
    assert state.write(0x00, 0xFFFF_FFFF, 0b0010) == []
    assert state["rw"] == 0x00F0 and state["sticky"] == 0, "only byte 1 is enabled"
    state.write(0x00, 0xFFFF_FFFF, 0b1111)
    assert state.read(0x00, {}) == 0xF0F0 << 4 | 0xF
    state["flag"] = 1
    assert state.write(0x04, 1 << 24, 0b0111) == [] and state["flag"] == 1
    assert state.write(0x04, 1 << 24 | 1 << 15, 0b1010) == ["go"] and state["flag"] == 0
    assert state.read(0x04, {"line": 0x1AB}) == 0xAB, "a live field reads what it is given"
    state.reset(flr=True)
    assert (state["rw"], state["sticky"]) == (0, 0xF)


def test_the_generated_document_is_fresh(tmp_path):
    assert DOC.read_text() == render_markdown(), (
        "docs/config_space.md is stale: run `vmshm regs --format config-space -o "
        "docs/config_space.md`")
    from vmshm.cli import main
    assert main(["regs", "--format", "config-space", "-o", str(tmp_path / "c.md")]) == 0
    assert (tmp_path / "c.md").read_text() == DOC.read_text()


# -- the RTL, the fuzz model and the floor device agree ----------------------------------------

WINDOW, NAMES = 4096, 512


def _writes():
    """Return the writes every user takes: ``(dword offset, value, byte enables)``, in phases.

    All ones to every dword (Initiate FLR among them), zeros, then random values with random
    byte enables; a snapshot of the whole space is taken after each phase.
    """
    rng = random.Random(20240611)
    dwords = range(0, P.PCI_CFG_SPACE_SIZE, 4)
    return [[(off, 0xFFFF_FFFF, 0xF) for off in dwords],
            [(off, 0, 0xF) for off in dwords],
            [(rng.randrange(0, P.PCI_CFG_SPACE_SIZE, 4), rng.getrandbits(32),
              rng.getrandbits(4)) for _ in range(300)]]


def _rtl_snapshots(data_width):
    wb = data_width // 8

    async def guest(bus):
        async def snapshot():
            out = []
            for off in range(0, P.PCI_CFG_SPACE_SIZE, 4):
                lane = off % wb // 4
                words, status = await bus._burst_read(Space.CFG, 0, off - off % wb, 1,
                                                      0xF << 4 * lane)
                assert status == "SC"
                out.append(words[0] >> 32 * lane & 0xFFFF_FFFF)
            return out

        shots = [await snapshot()]
        for phase in _writes():
            for off, value, be in phase:
                lane = off % wb // 4
                await bus._burst_write(Space.CFG, 0, off - off % wb,
                                       [(value << 32 * lane, be << 4 * lane)])
            shots.append(await snapshot())
        return shots

    return simulate(guest, data_width=data_width, window_size=WINDOW, name_size=NAMES).value


def _model_snapshots(data_width):
    model = DeviceModel(FuzzConfig(data_width=data_width, window_size=WINDOW, name_size=NAMES),
                        {})
    wb = data_width // 8

    def snapshot():
        return [model.cfg_dword(off) for off in range(0, P.PCI_CFG_SPACE_SIZE, 4)]

    shots = [snapshot()]
    for phase in _writes():
        for off, value, be in phase:
            lane = off % wb // 4
            model.cfg_write(0, off - off % wb, [(value << 32 * lane, be << 4 * lane)])
        shots.append(snapshot())
    return shots


def _floor_snapshots():
    floor = FloorDevice(window_size=WINDOW, name_size=NAMES)
    try:
        def snapshot():
            return [floor.cfg_read(off, 4) for off in range(0, P.PCI_CFG_SPACE_SIZE, 4)]

        shots = [snapshot()]
        for phase in _writes():
            for off, value, be in phase:
                # QEMU hands the floor bytes: one write per enabled byte.
                for byte in range(4):
                    if be >> byte & 1:
                        floor.cfg_write(off + byte, 1, value >> 8 * byte & 0xFF)
            shots.append(snapshot())
        return shots
    finally:
        os.close(floor.ring_fd)


@pytest.mark.parametrize("data_width", [32, 64])
def test_rtl_model_and_floor_agree_dword_by_dword(data_width):
    rtl, model, floor = _rtl_snapshots(data_width), _model_snapshots(data_width), _floor_snapshots()
    subsystem = P.PCI_SUBSYSTEM_VENDOR_ID // 4
    for phase, (r, m, f) in enumerate(zip(rtl, model, floor)):
        # The floor differs in its subsystem ID alone, so the guest tells it from the device.
        assert f[subsystem] >> 16 == FloorDevice.SUBSYSTEM_ID
        f = list(f)
        f[subsystem] = f[subsystem] & 0xFFFF | PCI_SUBSYSTEM_ID << 16
        for i, (a, b, c) in enumerate(zip(r, m, f)):
            assert a == b == c, (f"phase {phase}, dword {4 * i:#04x}: RTL {a:#010x}, model "
                                 f"{b:#010x}, floor {c:#010x}")
    assert rtl[0][CAP_OFFSET // 4] & 0xFF == P.PCI_CAP_ID_VNDR, "the reads reached the function"
    assert rtl[1] != rtl[2], "the writes reached the function"


def test_the_function_presents_the_capability_bytes_of_the_register_map():
    from vmshm.abi.regmap import capability_bytes
    from vmshm.rtl import VMShmPCI
    fn = VMShmPCI(window_size=WINDOW, name_size=NAMES, window_64bit=True)
    assert fn.capability() == capability_bytes(window_size=WINDOW, name_size=NAMES, regs_bar=0,
                                               window_bar=1, name_bar=3,
                                               next_ptr=MSI_CAP_OFFSET)
    Fragment.get(fn, None)      # elaborated, as a build would (and no unused-warning later)


def test_description_follows_the_build_parameters():
    bars = vmshm_bars(regs_size=4096, window_size=1 << 20, name_size=1024, window_64bit=True)
    space = vmshm_config_space(bars=bars, window_size=1 << 20, name_size=1024)
    state = ConfigState(space)
    for off, value in ((0x10, 0xFFFF_FFFF), (0x14, 0xFFFF_FFFF), (0x18, 0xFFFF_FFFF),
                       (0x1C, 0xFFFF_FFFF)):
        state.write(off, value, 0xF)
    live = {"status_interrupt": 0}
    assert [state.read(off, live) for off in (0x10, 0x14, 0x18, 0x1C)] == [
        0xFFFF_F000, 0xFFF0_000C, 0xFFFF_FFFF, 0xFFFF_FC00]
    assert state.read(CAP_OFFSET + 0x10, live) == 0x03_01_00, "name buffer in BAR3"


def test_the_floor_forgets_the_last_users_name_on_flr():
    # Issue 22 finding 5, on QEMU's floor device as on the RTL: an FLR clears the name buffer.
    floor = FloorDevice(window_size=WINDOW, name_size=NAMES)
    try:
        bar2 = 0x4000_0000
        floor.cfg_write(P.PCI_COMMAND, 2, P.PCI_COMMAND_MEMORY)
        name_bar = next(i for i, buf in floor._buffers.items() if buf is floor.names)
        floor.cfg_write(P.PCI_BASE_ADDRESS_0 + 4 * name_bar, 4, bar2)
        floor.mem_write(bar2, 4, int.from_bytes(b"/sec", "little"))
        assert floor.mem_read(bar2, 4) == int.from_bytes(b"/sec", "little")
        flr = floor.config.space.field("exp_initiate_flr")
        floor.cfg_write(flr.offset, 4, 1 << flr.lsb)
        assert bytes(floor.names) == bytes(NAMES)
    finally:
        os.close(floor.ring_fd)
