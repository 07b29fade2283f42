"""The register file and its field actions alone, on Amaranth's simulator, at both data widths.

A testbench plays the core's side of the register bus (the word at hand, whether it lies in
BAR0, a read's or a write's strobe and enables) and the owners' side of the field actions; every
register is reached through the offset and lane the register map gives it, so a register moved
in :mod:`vmshm.abi.regmap` moves here too.
"""

import pytest
from amaranth.sim import Simulator

from vmshm.abi.regmap import REG, REGISTERS
from vmshm.rtl.registers import ACTIONS, RC, RW, Constant, RegisterFile

WINDOW, NAME = 4096, 512


def _run(data_width, bench):
    """Run ``await bench(ctx, regs)`` against a :class:`RegisterFile`; return what it returns."""
    regs = RegisterFile(addr_width=10, data_width=data_width,
                        values={"WINDOW_SIZE": WINDOW, "NAME_SIZE": NAME})
    out = []

    async def testbench(ctx):
        out.append(await bench(ctx, regs))

    sim = Simulator(regs)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return out[0]


def _at(name, data_width):
    """Return ``(word, shift)``: where register ``name`` sits on the bus."""
    word, lane = REG[name].placement(data_width)
    return word, 32 * lane


async def _read(ctx, regs, name, *, be=None, dw):
    """Read the word holding ``name`` (a read strobe for one cycle); return its 32 bits and
    whether it fired the register's trigger."""
    word, shift = _at(name, dw)
    ctx.set(regs.bus.addr, word)
    ctx.set(regs.bus.sel, 1)
    ctx.set(regs.bus.r_be, (1 << dw // 8) - 1 if be is None else be)
    ctx.set(regs.bus.r_stb, 1)
    action = regs.f[name]
    fired = ctx.get(action.trigger) if hasattr(action, "trigger") else None
    value = ctx.get(regs.bus.r_data) >> shift & 0xFFFF_FFFF
    await ctx.tick()
    ctx.set(regs.bus.r_stb, 0)
    return value, fired


async def _write(ctx, regs, name, value, *, be=0xF, dw, sel=1):
    """Write ``value`` under the lane enables ``be`` to ``name`` for one cycle."""
    word, shift = _at(name, dw)
    ctx.set(regs.bus.addr, word)
    ctx.set(regs.bus.sel, sel)
    ctx.set(regs.bus.w_be, be << shift // 8)
    ctx.set(regs.bus.w_data, value << shift)
    ctx.set(regs.bus.w_stb, 1)
    await ctx.tick()
    ctx.set(regs.bus.w_stb, 0)


@pytest.mark.parametrize("dw", (32, 64))
def test_read_values_sit_where_the_register_map_puts_them(dw):
    async def bench(ctx, regs):
        f = regs.f
        ctx.set(f.MAP_SIZE.r_data, 0x1234)
        ctx.set(f.OBJ_SIZE_HI.r_data, 0xCAFE_F00D)
        ctx.set(f.STATUS.OPEN.r_data, 1)
        ctx.set(f.STATUS.LAST_ERROR.r_data, 0x5A)
        ctx.set(f.IVPOSITION.r_data, 0xFFFF_FFFF)
        got = {r.name: (await _read(ctx, regs, r.name, dw=dw))[0] for r in REGISTERS}
        # Past the registers, and a word that holds none, read 0.
        ctx.set(regs.bus.addr, 0x200 // (dw // 8))
        unknown = ctx.get(regs.bus.r_data)
        return got, unknown

    got, unknown = _run(dw, bench)
    status = {f.name: f for f in REG["STATUS"].fields}
    assert got["STATUS"] == 1 << status["OPEN"].offset | 0x5A << status["LAST_ERROR"].offset
    assert got["ID"] == REG["ID"].reset and got["VERSION"] == REG["VERSION"].reset
    assert (got["WINDOW_SIZE"], got["NAME_SIZE"]) == (WINDOW, NAME)
    assert (got["MAP_SIZE"], got["OBJ_SIZE_HI"]) == (0x1234, 0xCAFE_F00D)
    assert got["IVPOSITION"] == 0xFFFF_FFFF
    for name in ("OPEN", "CLOSE", "DOORBELL", "REJECTS", "TIMEOUTS", "INTR_MASK", "OBJ_SIZE_LO"):
        assert got[name] == 0, name
    assert unknown == 0


@pytest.mark.parametrize("dw", (32, 64))
def test_write_actions(dw):
    async def bench(ctx, regs):
        f = regs.f
        seen = {}
        # RW: each byte enable writes its byte.
        await _write(ctx, regs, "INTR_MASK", 0x1122_3344, be=0b0101, dw=dw)
        seen["mask"] = ctx.get(f.INTR_MASK.data)
        # W1C: hardware sets, a write of 1s under the enables clears; a set wins.
        ctx.set(f.INTR_STATUS.set, 0xFF00_00FF)
        await ctx.tick()
        ctx.set(f.INTR_STATUS.set, 0x0000_0001)
        await _write(ctx, regs, "INTR_STATUS", 0xFFFF_FFFF, be=0b0011, dw=dw)
        ctx.set(f.INTR_STATUS.set, 0)
        seen["status"] = ctx.get(f.INTR_STATUS.data)
        # STATUS.DMA_ERROR: cleared by its bit with byte 0 enabled, and only so.
        ctx.set(f.STATUS.DMA_ERROR.set, 1)
        await ctx.tick()
        ctx.set(f.STATUS.DMA_ERROR.set, 0)
        bit = 1 << next(x.offset for x in REG["STATUS"].fields if x.name == "DMA_ERROR")
        await _write(ctx, regs, "STATUS", bit, be=0b1110, dw=dw)
        seen["dma_error_kept"] = ctx.get(f.STATUS.DMA_ERROR.data)
        await _write(ctx, regs, "STATUS", ~bit & 0xFFFF_FFFF, dw=dw)
        seen["dma_error_zero_bit"] = ctx.get(f.STATUS.DMA_ERROR.data)
        seen["status_read"] = (await _read(ctx, regs, "STATUS", dw=dw))[0]
        await _write(ctx, regs, "STATUS", bit, be=0b0001, dw=dw)
        seen["dma_error_cleared"] = ctx.get(f.STATUS.DMA_ERROR.data)
        # RC: an event counts a cycle later; a write with no byte enabled does not clear it,
        # any other write does.
        ctx.set(f.REJECTS.inc, 1)
        await ctx.tick().repeat(3)
        ctx.set(f.REJECTS.inc, 0)
        await ctx.tick()
        seen["rejects"] = ctx.get(f.REJECTS.data)
        await _write(ctx, regs, "REJECTS", 0, be=0, dw=dw)
        seen["rejects_no_be"] = ctx.get(f.REJECTS.data)
        await _write(ctx, regs, "REJECTS", 0, be=0b1000, dw=dw)
        seen["rejects_cleared"] = ctx.get(f.REJECTS.data)
        # Outside BAR0 (sel low) nothing acts.
        await _write(ctx, regs, "INTR_MASK", 0xFFFF_FFFF, dw=dw, sel=0)
        seen["mask_unselected"] = ctx.get(f.INTR_MASK.data)
        # W: a strobe with any byte enabled, its data masked; sel says the word is at hand.
        word, shift = _at("DOORBELL", dw)
        ctx.set(regs.bus.addr, word)
        ctx.set(regs.bus.sel, 1)
        ctx.set(regs.bus.w_be, 0b0011 << shift // 8)
        ctx.set(regs.bus.w_data, 0xABCD_1234 << shift)
        seen["db_idle"] = (ctx.get(f.DOORBELL.sel), ctx.get(f.DOORBELL.stb))
        ctx.set(regs.bus.w_stb, 1)
        seen["db"] = (ctx.get(f.DOORBELL.stb), ctx.get(f.DOORBELL.data))
        ctx.set(regs.bus.w_be, 0)
        seen["db_no_be"] = ctx.get(f.DOORBELL.stb)
        ctx.set(regs.bus.w_stb, 0)
        return seen

    seen = _run(dw, bench)
    assert seen["mask"] == 0x0022_0044
    assert seen["status"] == 0xFF00_0001
    assert seen["dma_error_kept"] == 1 and seen["dma_error_zero_bit"] == 1
    assert seen["status_read"] == 1 << 2
    assert seen["dma_error_cleared"] == 0
    assert seen["rejects"] == 3 and seen["rejects_no_be"] == 3 and seen["rejects_cleared"] == 0
    assert seen["mask_unselected"] == 0x0022_0044
    assert seen["db_idle"] == (1, 0)
    assert seen["db"] == (1, 0x1234) and seen["db_no_be"] == 0


@pytest.mark.parametrize("dw", (32, 64))
def test_read_to_trigger(dw):
    async def bench(ctx, regs):
        fired = {}
        for name in ("OPEN", "CLOSE"):
            _, shift = _at(name, dw)
            fired[name, "touched"] = (await _read(ctx, regs, name, be=0x1 << shift // 8,
                                                  dw=dw))[1]
            others = ((1 << dw // 8) - 1) & ~(0xF << shift // 8)
            fired[name, "other lane"] = (await _read(ctx, regs, name, be=others, dw=dw))[1]
        # A read of another word, or outside BAR0, fires nothing.
        ctx.set(regs.bus.addr, _at("ID", dw)[0] + 1)
        fired["elsewhere"] = ctx.get(regs.f.OPEN.trigger) | ctx.get(regs.f.CLOSE.trigger)
        ctx.set(regs.bus.addr, _at("OPEN", dw)[0])
        ctx.set(regs.bus.sel, 0)
        ctx.set(regs.bus.r_stb, 1)
        fired["unselected"] = ctx.get(regs.f.OPEN.trigger)
        return fired

    fired = _run(dw, bench)
    assert fired["OPEN", "touched"] == 1 and fired["CLOSE", "touched"] == 1
    assert fired["OPEN", "other lane"] == 0 and fired["CLOSE", "other lane"] == 0
    assert fired["elsewhere"] == 0 and fired["unselected"] == 0


def test_counter_saturates_and_clear_wins():
    counter = RC(2)

    async def bench(ctx):
        ctx.set(counter.inc, 1)
        await ctx.tick().repeat(6)
        full = ctx.get(counter.data)
        # A count and a clear land on the same edge: the clear wins.
        ctx.set(counter.port.w_stb, 1)
        ctx.set(counter.port.w_mask, 1)
        await ctx.tick()
        return full, ctx.get(counter.data)

    out = []
    sim = Simulator(counter)
    sim.add_clock(1e-8)

    async def testbench(ctx):
        out.append(await bench(ctx))

    sim.add_testbench(testbench)
    sim.run()
    assert out[0] == (3, 0)


def test_every_access_has_an_action_and_bad_builds_are_refused():
    assert set(ACTIONS) == {r.access for r in REGISTERS} | {"C"}
    with pytest.raises(ValueError, match="values must give exactly"):
        RegisterFile(addr_width=10, data_width=32, values={"WINDOW_SIZE": 1})
    with pytest.raises(ValueError, match="data_width must be 32 or 64"):
        RegisterFile(addr_width=10, data_width=16, values={})
    with pytest.raises(ValueError, match="fits 4 bits"):
        Constant(4, 16)
    with pytest.raises(ValueError, match="width must be an integer from 1 to 32"):
        RW(0)
