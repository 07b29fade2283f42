"""docs/architecture.md's register recipe, checked: a constant or read-write register is one line
in abi/regmap.py, and the RTL, the driver model, the golden model, docs/registers.md and the
guest's C header pick it up with no other file changed.

The test adds two registers to a copy of the map and puts that copy where the map is: every
module's binding of ``REGISTERS`` and ``REG`` (the map's only two names) is swapped for the copy,
and nothing else. A module with a register table of its own would not see them.
"""

import sys
import pytest

from vmshm.abi import regmap
from vmshm.abi.regmap import REG, REGISTERS, Register
from vmshm.backends import run_function
from vmshm.driver_model import vmshm_probe

#: The two registers the recipe adds: a constant and a read-write one, at offsets nobody uses.
MAGIC = Register("MAGIC", 0x40, "C", 0x1234_5678, "A constant added by the recipe's test.")
SCRATCH = Register("SCRATCH", 0x44, "RW", 0xA5A5_0000, "A read-write register added likewise.")
#: What the guest writes to SCRATCH: (byte offset into it, bytes); the second writes one byte.
WRITES = [(0, (0xDEAD_BEEF).to_bytes(4, "little")), (1, b"\x77")]


@pytest.fixture
def extended_map(monkeypatch):
    """Put a copy of the map with MAGIC and SCRATCH where every module holds the map."""
    registers = REGISTERS + (MAGIC, SCRATCH)
    table = {r.name: r for r in registers}
    swapped = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("vmshm") or module is None:
            continue
        for attr, old, new in (("REGISTERS", REGISTERS, registers), ("REG", REG, table)):
            if getattr(module, attr, None) is old:
                monkeypatch.setattr(module, attr, new)
                swapped.append(f"{name}.{attr}")
    assert "vmshm.abi.regmap.REGISTERS" in swapped
    return table


async def use_new_registers(bus):
    """Read MAGIC and SCRATCH through the driver model, write SCRATCH, read it back."""
    drivers, _ = await vmshm_probe(bus)
    regs = drivers[0].regs
    reads = [await regs.read32(REG_NOW()["MAGIC"].offset),
             await regs.read32(REG_NOW()["SCRATCH"].offset)]
    for at, data in WRITES:
        await regs.write(REG_NOW()["SCRATCH"].offset + at, data)
        reads.append(await regs.read32(REG_NOW()["SCRATCH"].offset))
    return reads


def REG_NOW():
    # The map as the modules see it now (the fixture's copy while the test runs).
    return regmap.REG


def model_reads():
    """Return what the golden model predicts the guest function reads."""
    from vmshm.fuzz.model import DeviceModel, FuzzConfig

    model = DeviceModel(FuzzConfig(), {})
    base = 0xE000_0000
    model.cfg_write(0, 0x10, [(base, 0xF)])         # BAR0
    model.cfg_write(0, 0x04, [(0x2, 0x3)])          # Memory Space Enable
    read = lambda off: model.mem_read(base + off, 0, 0xF)[1][0]
    reads = [read(MAGIC.offset), read(SCRATCH.offset)]
    for at, data in WRITES:
        beat = (int.from_bytes(data, "little") << 8 * at, ((1 << len(data)) - 1) << at)
        model.mem_write(base + SCRATCH.offset, [beat])
        reads.append(read(SCRATCH.offset))
    return reads


def test_a_constant_and_a_read_write_register_need_only_the_map(extended_map):
    result = run_function(f"{__name__}:use_new_registers", backend="amaranth")
    expected = [MAGIC.reset, SCRATCH.reset, 0xDEAD_BEEF, 0xDEAD_77EF]
    assert result.value == expected, "the RTL (through the driver model)"
    assert model_reads() == expected, "the fuzzer's golden model"

    from vmshm.abi.cheader import render_c_header
    header = render_c_header()
    assert "MAGIC" in header and "0x40" in header and "SCRATCH" in header and "0x44" in header
    doc = regmap.render_markdown()
    assert "MAGIC" in doc and "SCRATCH" in doc


def test_the_copy_is_gone_after_the_test():
    assert "MAGIC" not in regmap.REG and REGISTERS == regmap.REGISTERS
