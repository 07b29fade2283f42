"""The UltraScale+ interrupt shim alone, on Amaranth's simulator, against PG213's handshakes.

A small responder plays the hard IP's side of the handshakes (``cfg_interrupt_sent`` a few cycles
after each INTx change, ``cfg_interrupt_msi_sent`` or ``_fail`` after each MSI request) and
records what the IP would have sent; the shim's obligations are checked on every cycle. The
whole top runs against cocotbext-pcie's model in tests/test_pcie.py.
"""

from amaranth.sim import Simulator

from vmshm.rtl.usp import USPInterrupts

LATENCY = 3     # cycles the responder takes to send a message


def _run(stimulus, *, fail_first=0, cycles=200, silent_when_disabled=False, latency=LATENCY):
    """Run ``stimulus(ctx, dut)`` against a PG213-like responder; return what it sent.

    Returns a list of ``(cycle, message)`` with message ``"assert"``, ``"deassert"`` or
    ``"msi"``; every breach of the handshakes raises :exc:`AssertionError`. With
    ``silent_when_disabled``, a request whose answer falls due while MSI is off gets none.
    """
    dut = USPInterrupts()
    sent = []
    state = {"cycle": 0}

    async def ip(ctx):
        level, intx_due, msi_due, fails = 0, None, None, fail_first
        while True:
            await ctx.tick()
            state["cycle"] += 1
            now = state["cycle"]
            ctx.set(dut.cfg_interrupt_sent, 0)
            ctx.set(dut.cfg_interrupt_msi_sent, 0)
            ctx.set(dut.cfg_interrupt_msi_fail, 0)
            intx = ctx.get(dut.cfg_interrupt_int) & 1
            if intx_due is None and intx != level:
                level, intx_due = intx, now + LATENCY
                sent.append((now, "assert" if intx else "deassert"))
            elif intx_due is not None and intx != level:
                raise AssertionError(f"cycle {now}: INTx changed before cfg_interrupt_sent")
            if intx and not ctx.get(dut.cfg_interrupt_pending) & 1:
                raise AssertionError(f"cycle {now}: INTx asserted without pending")
            if intx_due == now:
                ctx.set(dut.cfg_interrupt_sent, 1)
                intx_due = None
            msi = ctx.get(dut.cfg_interrupt_msi_int)
            if msi:
                if msi != 1:
                    raise AssertionError(f"cycle {now}: MSI vector bits {msi:#x}, not vector 0")
                if msi_due is not None:
                    raise AssertionError(f"cycle {now}: MSI asked before sent or fail")
                if not ctx.get(dut.cfg_interrupt_msi_enable) & 1:
                    raise AssertionError(f"cycle {now}: MSI asked with MSI disabled")
                msi_due = now + latency
            if msi_due == now and silent_when_disabled and \
                    not ctx.get(dut.cfg_interrupt_msi_enable) & 1:
                msi_due = None
            if msi_due == now:
                if fails:
                    fails -= 1
                    ctx.set(dut.cfg_interrupt_msi_fail, 1)
                else:
                    ctx.set(dut.cfg_interrupt_msi_sent, 1)
                    sent.append((now, "msi"))
                msi_due = None

    async def bench(ctx):
        await stimulus(ctx, dut)
        await ctx.tick().repeat(cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(ip, background=True)
    sim.add_testbench(bench)
    sim.run()
    return sent


async def _msi_on(ctx, dut):
    # What a driver's MSI set-up leaves: MSI Enable and Bus Master Enable set.
    ctx.set(dut.bus_master, 1)
    ctx.set(dut.cfg_interrupt_msi_enable, 1)
    await ctx.tick().repeat(2)


async def _pulse(ctx, sig):
    ctx.set(sig, 1)
    await ctx.tick()
    ctx.set(sig, 0)


def test_intx_follows_the_level_with_each_change_held_until_sent():
    async def stim(ctx, dut):
        ctx.set(dut.bus_master, 1)
        await ctx.tick().repeat(2)
        ctx.set(dut.irq, 1)
        await ctx.tick()
        ctx.set(dut.irq, 0)        # gone before the assertion was sent: still assert, then deassert
        await ctx.tick().repeat(20)
        ctx.set(dut.irq, 1)
        await ctx.tick().repeat(20)
        ctx.set(dut.intx_disable, 1)     # Interrupt Disable deasserts a pending INTx
        await ctx.tick().repeat(20)
        ctx.set(dut.intx_disable, 0)
        await ctx.tick().repeat(20)
        ctx.set(dut.cfg_interrupt_msi_enable, 1)   # MSI on: INTx is not used
        await ctx.tick().repeat(20)
    kinds = [k for _, k in _run(stim)]
    assert kinds == ["assert", "deassert", "assert", "deassert", "assert", "deassert"]


def test_one_msi_per_pulse_none_before_sent():
    async def stim(ctx, dut):
        await _msi_on(ctx, dut)
        for _ in range(3):          # apart: each sent before the next
            await _pulse(ctx, dut.irq_msg)
            await ctx.tick().repeat(2 * LATENCY)
        for _ in range(3):          # back to back, faster than the IP sends: the two that
            await _pulse(ctx, dut.irq_msg)      # come while one is in flight make one more
        ctx.set(dut.irq, 1)         # the level does not reach INTx while MSI is on
    sent = _run(stim)
    assert [k for _, k in sent] == ["msi"] * 5


def test_failed_msi_is_asked_again():
    async def stim(ctx, dut):
        await _msi_on(ctx, dut)
        await _pulse(ctx, dut.irq_msg)
    assert [k for _, k in _run(stim, fail_first=2)] == ["msi"]


def test_masked_msi_waits_and_shows_pending():
    seen = {}

    async def stim(ctx, dut):
        ctx.set(dut.cfg_interrupt_msi_data, 1)      # vector 0 masked
        await _msi_on(ctx, dut)
        await _pulse(ctx, dut.irq_msg)
        await ctx.tick().repeat(30)
        seen["pending"] = ctx.get(dut.cfg_interrupt_msi_pending_status)
        seen["enable"] = ctx.get(dut.cfg_interrupt_msi_pending_status_data_enable)
        ctx.set(dut.cfg_interrupt_msi_data, 0)
        await ctx.tick().repeat(10)
        seen["after_pending"] = ctx.get(dut.cfg_interrupt_msi_pending_status)

    sent = _run(stim)
    assert seen["pending"] == 1 and seen["enable"] == 1
    assert [k for _, k in sent] == ["msi"]
    assert seen["after_pending"] == 0
    assert sent[0][0] > 30, "the message went out while vector 0 was masked"


def test_no_msi_without_msi_enable_or_bus_master():
    async def stim(ctx, dut):
        ctx.set(dut.cfg_interrupt_msi_enable, 1)    # bus master off
        await ctx.tick().repeat(2)
        await _pulse(ctx, dut.irq_msg)
        await ctx.tick().repeat(10)
        ctx.set(dut.bus_master, 1)                  # the message asked without it is gone
        ctx.set(dut.cfg_interrupt_msi_enable, 0)
        await _pulse(ctx, dut.irq_msg)
        await ctx.tick().repeat(10)
        ctx.set(dut.cfg_interrupt_msi_enable, 1)
    assert _run(stim) == []


def test_pulses_while_held_fold_into_one_message():
    async def stim(ctx, dut):
        ctx.set(dut.cfg_interrupt_msi_data, 1)      # held back while they pile up
        await _msi_on(ctx, dut)
        for _ in range(10):
            await _pulse(ctx, dut.irq_msg)
        ctx.set(dut.cfg_interrupt_msi_data, 0)
    assert [k for _, k in _run(stim)] == ["msi"]


def test_msi_turned_off_under_a_request_does_not_wedge():
    async def stim(ctx, dut):
        await _msi_on(ctx, dut)
        await _pulse(ctx, dut.irq_msg)
        await ctx.tick()
        ctx.set(dut.cfg_interrupt_msi_enable, 0)    # before the responder answers
        await ctx.tick().repeat(20)
        ctx.set(dut.cfg_interrupt_msi_enable, 1)
        await ctx.tick().repeat(2)
        await _pulse(ctx, dut.irq_msg)

    # The responder answers neither while MSI is off: the first request is lost with it.
    sent = _run(stim, silent_when_disabled=True)
    assert [k for _, k in sent] == ["msi"]


def test_finding11_msi_off_and_on_again_never_overlaps_an_unanswered_request():
    """Finding 11: MSI disabled and re-enabled before the IP answered a request: the next
    request waits for that answer, never overlapping it. On main ``busy`` was cleared on
    disable, and a ring right after re-enabling asked again before the IP answered ("MSI asked
    before sent or fail")."""
    async def stim(ctx, dut):
        await _msi_on(ctx, dut)
        await _pulse(ctx, dut.irq_msg)
        await ctx.tick().repeat(2)
        ctx.set(dut.cfg_interrupt_msi_enable, 0)    # before the responder answers
        await ctx.tick()
        ctx.set(dut.cfg_interrupt_msi_enable, 1)
        await _pulse(ctx, dut.irq_msg)

    assert [k for _, k in _run(stim, latency=12)] == ["msi", "msi"]
