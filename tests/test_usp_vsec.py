"""Issue 22, finding 9: VMShm's capability reaches the driver through the hard IP's ``cfg_ext_*``.

A ``pcie4_uscale_plus`` owns the configuration space; its legacy user range (0xB0-0xBF) is too
small for VMShm's 20-byte capability, so the UltraScale+ top serves it as a Vendor-Specific
Extended Capability at 0x480 on the configuration extension interface (PG213, "Configuration
Extend Interface Port Descriptions"). These tests drive that interface of the whole top on
Amaranth's simulator, as the IP does, and decode what comes back with the driver model's own
parser (:func:`~vmshm.driver_model.driver.read_vmshm_capability`). On main the top had no
``cfg_ext_*`` ports at all.
"""

import asyncio

import pytest

from vmshm.abi import pci_regs as P
from vmshm.abi.regmap import (ABI_VERSION, CAP, CAP_LEN, EXT_CAP_ID_VNDR, VSEC_FIELDS, VSEC_ID,
                              VSEC_LEN, VSEC_OFFSET, VSEC_REV, capability_bytes, vsec_bytes)
from vmshm.driver_model.driver import read_vmshm_capability
from vmshm.rtl.usp.cfg_ext import EXT_RANGE
from vmshm.rtl.usp.top import VMShmUSP

from usp_harness import run_top, seeded

#: The cycles from ``cfg_ext_read_received`` to ``cfg_ext_read_data_valid``: the request is
#: registered on the way in and the answer on the way out.
LATENCY = 2


class CfgExtPort:
    """Plays the hard IP's side of ``cfg_ext_*`` on a running simulation of the top.

    :meth:`read` pulses ``cfg_ext_read_received`` for one cycle with the register and function
    numbers and waits for the answer; every cycle it also checks that ``read_data_valid`` comes
    exactly once per read, ``LATENCY`` cycles after it (``answers`` keeps what came when).
    """

    def __init__(self, ctx, top):
        self.ctx, self.top = ctx, top
        self.cycle = 0
        self.asked = {}         # cycle a read was received -> (register, function)
        self.answers = {}       # cycle of the read it answers -> data

    async def tick(self):
        await self.ctx.posedge(self.top.user_clk)
        self.cycle += 1
        if self.ctx.get(self.top.cfg_ext_read_data_valid):
            asked = self.cycle - LATENCY
            assert asked in self.asked and asked not in self.answers, \
                f"read_data_valid at cycle {self.cycle} answers no read of cycle {asked}"
            self.answers[asked] = self.ctx.get(self.top.cfg_ext_read_data)
        for asked in self.asked:
            assert asked in self.answers or self.cycle < asked + LATENCY, \
                f"the read of cycle {asked} got no answer {LATENCY} cycles later"

    async def pulse(self, kind, register, function=0, data=0, be=0):
        top, ctx = self.top, self.ctx
        ctx.set(top.cfg_ext_register_number, register)
        ctx.set(top.cfg_ext_function_number, function)
        ctx.set(top.cfg_ext_write_data, data)
        ctx.set(top.cfg_ext_write_byte_enable, be)
        received = top.cfg_ext_read_received if kind == "read" else top.cfg_ext_write_received
        ctx.set(received, 1)
        at = self.cycle         # the cycle the IP holds the request for
        if kind == "read":
            self.asked[at] = (register, function)
        await self.tick()
        ctx.set(received, 0)
        return at

    async def read(self, register, function=0):
        at = await self.pulse("read", register, function)
        while at not in self.answers:
            await self.tick()
        return self.answers[at]


class HardIpConfigSpace:
    """A function's configuration space as a ``pcie4_uscale_plus`` configured by
    :meth:`VMShmUSP.hard_ip_config` presents it, for the driver model's ``read_config``.

    The IP's own part is what matters to the search: a legacy list holding only its PCI Express
    capability (no vendor-specific one), an extended list whose last capability (AER at 0x100)
    points at ``cfg_ext.vsec_offset``, as the IP's extended-capability next pointer is set. The
    user extended range is read from the top through :class:`CfgExtPort`; anything else reads 0.
    """

    name = "0000:01:00.0"

    def __init__(self, port, cfg):
        self.port = port
        self.own = {P.PCI_STATUS & ~3: P.PCI_STATUS_CAP_LIST << 16,
                    P.PCI_CAPABILITY_LIST: 0x70, 0x70: P.PCI_CAP_ID_EXP,
                    0x100: 0x0001 | 2 << 16 | cfg["cfg_ext"]["vsec_offset"] << 20}
        self.reads = []

    async def read_config(self, offset, size):
        dword = offset & ~3
        if EXT_RANGE[0] <= dword < EXT_RANGE[1]:
            value = await self.port.read(dword // 4)
            self.reads.append(dword)
        else:
            value = self.own.get(dword, 0)
        return value >> 8 * (offset & 3) & ((1 << 8 * size) - 1)


def run_reads(top, body):
    """Run ``body(port)`` against ``top`` after its reset; return what it returned."""
    out = []

    async def main(ctx):
        port = CfgExtPort(ctx, top)
        ctx.set(top.user_reset, 1)
        for _ in range(3):
            await port.tick()
        ctx.set(top.user_reset, 0)
        await port.tick()
        out.append(await body(port))
        for _ in range(LATENCY + 2):        # every read answered, no answer left over
            await port.tick()

    run_top(top, main)
    return out[0]


@pytest.mark.parametrize("window_64bit", [True, False])
def test_finding9_driver_model_finds_the_vsec_through_cfg_ext(window_64bit):
    """The driver model's parser, reading configuration space the way the IP presents it, finds
    VMShm's VSEC at 0x480 through ``cfg_ext_*`` and reads the BARs and sizes the top was built
    with; each of its reads is answered once, two cycles after the IP asked."""
    top = VMShmUSP(axis_width=64, window_size=1 << 16, name_size=4096,
                   window_64bit=window_64bit)
    cfg = top.hard_ip_config()
    assert cfg["cfg_ext"]["vsec"] == top.vsec()

    async def body(port):
        space = HardIpConfigSpace(port, cfg)
        cap = await read_vmshm_capability(space)
        return cap, space.reads

    cap, reads = run_reads(top, body)
    bar_of = {b.function: b.index for b in top.bars}
    assert cap == {"where": VSEC_OFFSET, "kind": "vsec", "ABI_VERSION": ABI_VERSION,
                   "WINDOW_SIZE": 1 << 16, "NAME_SIZE": 4096, "REGS_BAR": bar_of[0],
                   "WINDOW_BAR": bar_of[1], "NAME_BAR": bar_of[2], "RESERVED": 0}
    assert cap["NAME_BAR"] == (3 if window_64bit else 2)
    assert reads and set(reads) <= set(range(VSEC_OFFSET, VSEC_OFFSET + VSEC_LEN, 4))


def test_finding9_every_read_of_the_user_range_is_answered_once():
    """Every DWORD of the user extended range (and registers and functions outside it, which
    PG213 leaves to the IP), read back to back and with gaps, comes back once, two cycles
    later: the VSEC's bytes where it is, zeros everywhere else; writes change nothing."""
    top = VMShmUSP(axis_width=256)
    image = top.vsec() + bytes(EXT_RANGE[1] - VSEC_OFFSET - VSEC_LEN)
    expect = {(VSEC_OFFSET + i) // 4: int.from_bytes(image[i:i + 4], "little")
              for i in range(0, len(image), 4)}
    rng = seeded(9)
    registers = list(expect) + [0x2C, 0x2F, 0x00, 0x11F, 0x140, 0x3FF]
    rng.shuffle(registers)

    async def body(port):
        got = {}
        at = {}
        for reg in registers:                  # back to back: a read every cycle
            at[reg] = await port.pulse("read", reg)
        for _ in range(LATENCY):
            await port.tick()
        got = {reg: port.answers[c] for reg, c in at.items()}
        for reg in expect:                     # written with ones, then read with gaps
            await port.pulse("write", reg, data=0xFFFF_FFFF, be=0xF)
            for _ in range(rng.randrange(3)):
                await port.tick()
            assert await port.read(reg) == got[reg], f"a write changed register {reg:#x}"
        other_fn = [await port.read(reg, function=1) for reg in list(expect)[:4]]
        return got, other_fn

    got, other_fn = run_reads(top, body)
    assert {r: got[r] for r in expect} == expect
    assert all(got[r] == 0 for r in registers if r not in expect)
    assert other_fn == [0, 0, 0, 0]


def test_vsec_carries_the_legacy_capabilitys_fields():
    """One layout: the VSEC's headers are PCIe's (ID 000Bh, version 1, next 0; VSEC ID,
    revision, length) and each field of the legacy capability from ABI_VERSION on sits
    ``VSEC_FIELDS`` bytes further on, with the same value."""
    fields = dict(window_size=1 << 20, name_size=1024, regs_bar=0, window_bar=1, name_bar=3)
    legacy, vsec = capability_bytes(**fields), vsec_bytes(**fields)
    assert len(vsec) == VSEC_LEN == CAP_LEN + VSEC_FIELDS
    header, vh = (int.from_bytes(vsec[i:i + 4], "little") for i in (0, 4))
    assert (header & 0xFFFF, header >> 16 & 0xF, header >> 20) == (EXT_CAP_ID_VNDR, 1, 0)
    assert (vh & 0xFFFF, vh >> 16 & 0xF, vh >> 20) == (VSEC_ID, VSEC_REV, VSEC_LEN)
    for f in CAP.values():
        if f.offset >= VSEC_FIELDS:
            at = f.offset + VSEC_FIELDS
            assert vsec[at:at + f.size] == legacy[f.offset:f.offset + f.size], f.name


def test_soft_function_still_presents_the_legacy_capability():
    """The soft front end (and QEMU's proxy of it) keeps the legacy capability, which the
    parser tries first."""
    from vmshm.abi.config_space import CAP_OFFSET
    from vmshm.rtl.pci import VMShmPCI

    class SoftSpace:
        name = "soft"

        def __init__(self, raw):
            self.raw = raw

        async def read_config(self, offset, size):
            return int.from_bytes(self.raw[offset:offset + size], "little")

    fn = VMShmPCI()
    fn._MustUse__silence = fn.core._MustUse__silence = True     # only its description is read
    cap = asyncio.run(read_vmshm_capability(SoftSpace(fn.config_space.reset_bytes(0, 256))))
    assert cap["kind"] == "legacy" and cap["where"] == CAP_OFFSET
    assert cap["WINDOW_SIZE"] == fn.window_size
