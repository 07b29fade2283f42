"""Directed checks of the UltraScale+ top's interrupts and doorbells (issue 14).

Run as :mod:`.pcie_checks`' are (``fn="vmshm.scenarios.pcie_irq_checks:NAME"``): the host model
rings vectors on the device's ``ring`` port, and the root complex sees what the hard-IP model
makes of the shim's requests: MSI writes (once the root complex's driver-like configuration
writes enabled MSI) or INTx messages (:mod:`.pcie_irq`). Every wait is bounded in cycles.
"""

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import RisingEdge
from cocotbext.pcie.core.caps import PciCapId

from vmshm.abi import pci_regs as P
from vmshm.abi.regmap import REG
from .checks import expect

from .pcie_checks import _driver, _wait_cycles

__all__ = ["msi_on_ring", "intx_on_ring", "doorbell_to_host", "ring_latency"]

#: Cycles an interrupt may take to reach the root complex once it is due.
IRQ_WAIT = 3000
#: Cycles to watch for an interrupt that must not come.
QUIET = 600


async def _irq_driver(bus, tb, *, msi):
    drv = await _driver(bus)
    pdev = tb.rc.find_device(tb.dev.functions[0].pcie_id)
    if msi:
        expect(await pdev.enable_msi_range(1, 1), 1, "MSI vectors the root complex enabled")
        tb.interrupts.attach_msi(pdev)
    return drv, pdev


async def _quiet(tb, what):
    irq = tb.interrupts
    before = (len(irq.intx), len(irq.msi))
    await _wait_cycles(tb, QUIET)
    if (len(irq.intx), len(irq.msi)) != before:
        raise AssertionError(f"{what}: an interrupt came (INTx {irq.intx[before[0]:]}, MSI at "
                             f"{irq.msi[before[1]:]})")


async def _status(drv):
    return await drv.regs.read32(REG["INTR_STATUS"].offset)


async def msi_on_ring(bus, tb, vectors=(0, 5, 31)):
    """One MSI per ring of an unmasked vector; none for a pending, masked or unknown vector;
    one on unmasking a pending vector; INTR_STATUS bits set by rings and cleared by W1C; a
    message held by the MSI capability's mask until it is unmasked."""
    drv, pdev = await _irq_driver(bus, tb, msi=True)
    irq, regs, host = tb.interrupts, drv.regs, tb.host
    mask = 0
    for v in vectors:
        mask |= 1 << v
    await regs.write32(REG["INTR_MASK"].offset, mask)
    for i, v in enumerate(vectors):
        host.ring(v)
        await irq.wait(lambda: len(irq.msi) > i, IRQ_WAIT)
        expect(await _status(drv) >> v & 1, 1, f"INTR_STATUS bit {v} after its ring")
    host.ring(vectors[0])
    await _quiet(tb, "a ring of a vector already pending")
    await regs.write32(REG["INTR_STATUS"].offset, mask)
    expect(await _status(drv), 0, "INTR_STATUS after writing 1s to its bits")
    host.ring(7)
    await _quiet(tb, "a ring of a masked vector")
    expect(await _status(drv), 1 << 7, "INTR_STATUS after a ring of masked vector 7")
    n = len(irq.msi)
    await regs.write32(REG["INTR_MASK"].offset, mask | 1 << 7)
    await irq.wait(lambda: len(irq.msi) > n, IRQ_WAIT)
    await regs.write32(REG["INTR_STATUS"].offset, 1 << 7)
    host.ring(40)
    await _quiet(tb, "a ring of vector 40")
    expect(await _status(drv), 0, "INTR_STATUS after a ring of vector 40")
    # The capability's per-vector mask, set by the root complex: the message waits, shown in
    # the capability's Pending bit, and goes when unmasked.
    dev = drv.pdev
    cap = pdev.get_capability_offset(PciCapId.MSI)
    mask_reg, pending_reg = cap + 0x10, cap + 0x14      # 64-bit address, per-vector masking
    await dev.write_config(mask_reg, 4, 1)
    n = len(irq.msi)
    host.ring(vectors[1])
    await _quiet(tb, "a ring while the MSI vector is masked")
    expect(await dev.read_config(pending_reg, 4), 1, "MSI Pending bits while masked")
    await dev.write_config(mask_reg, 4, 0)
    await irq.wait(lambda: len(irq.msi) > n, IRQ_WAIT)
    expect(await dev.read_config(pending_reg, 4), 0, "MSI Pending bits once sent")
    expect(irq.intx, [], "INTx messages while MSI is enabled")
    return {"msi": list(irq.msi)}


async def intx_on_ring(bus, tb, delay=0):
    """With MSI off: a ring asserts INTA and sets the Status register's Interrupt Status; W1C of
    INTR_STATUS, masking and Interrupt Disable each deassert it. ``delay`` slows the IP's
    messages, so the level changes while a message is still being sent."""
    tb.intx.delay = delay
    drv, pdev = await _irq_driver(bus, tb, msi=False)
    irq, regs, host, dev = tb.interrupts, drv.regs, tb.host, drv.pdev
    expect(await dev.read_config(P.PCI_INTERRUPT_PIN, 1), 1, "Interrupt Pin (INTA)")
    await regs.write32(REG["INTR_MASK"].offset, 1 << 3)
    expect(await dev.read_config(P.PCI_STATUS, 2) & P.PCI_STATUS_INTERRUPT, 0,
           "Interrupt Status before a ring")
    levels = []

    async def level(want, what):
        await irq.wait(lambda: irq.intx_level == want, IRQ_WAIT + 2 * delay)
        levels.append((what, irq.intx[-1]))

    host.ring(3)
    await level(True, "ring")
    expect(await dev.read_config(P.PCI_STATUS, 2) & P.PCI_STATUS_INTERRUPT,
           P.PCI_STATUS_INTERRUPT, "Interrupt Status while INTA is asserted")
    await regs.write32(REG["INTR_STATUS"].offset, 1 << 3)
    await level(False, "W1C")
    expect(await dev.read_config(P.PCI_STATUS, 2) & P.PCI_STATUS_INTERRUPT, 0,
           "Interrupt Status after W1C")
    host.ring(9)
    await _quiet(tb, "a ring of masked vector 9")
    await regs.write32(REG["INTR_MASK"].offset, 1 << 3 | 1 << 9)
    await level(True, "unmask")
    await regs.write32(REG["INTR_MASK"].offset, 1 << 3)
    await level(False, "mask")
    await regs.write32(REG["INTR_MASK"].offset, 1 << 3 | 1 << 9)
    await level(True, "unmask again")
    cmd = await dev.read_config(P.PCI_COMMAND, 2)
    await dev.write_config(P.PCI_COMMAND, 2, cmd | P.PCI_COMMAND_INTX_DISABLE)
    await level(False, "Interrupt Disable")
    await dev.write_config(P.PCI_COMMAND, 2, cmd)
    await level(True, "Interrupt Disable cleared")
    # A ring and its clearing in quick succession: each change waits for the last message.
    await regs.write32(REG["INTR_STATUS"].offset, 1 << 9)
    host.ring(3)
    await regs.write32(REG["INTR_STATUS"].offset, 1 << 3)
    await level(False, "ring then W1C")
    await _quiet(tb, "all clear")
    expect(irq.msi, [], "MSI writes with MSI disabled")
    kinds = [k for _, k in irq.intx]
    expect(all(a != b for a, b in zip(kinds, kinds[1:])), True,
           f"INTx messages alternate ({kinds})")
    return {"levels": levels, "intx": list(irq.intx)}


async def doorbell_to_host(bus, tb, rings=((3, 5), (0, 31), (0xFFFF, 0xFFFF))):
    """A guest DOORBELL write over PCIe reaches the host model as ``doorbell(peer, vector)``;
    IVPOSITION reads the host's peer ID."""
    drv = await _driver(bus)
    regs, host = drv.regs, tb.host
    for peer, vector in rings:
        await regs.write32(REG["DOORBELL"].offset, peer << 16 | vector)
    deadline = bus.now() + IRQ_WAIT
    while len(host.doorbells) < len(rings) and bus.now() < deadline:
        await _wait_cycles(tb, 10)
    expect(list(host.doorbells), list(rings), "doorbells the host model took")
    expect(await regs.read32(REG["DOORBELL"].offset), 0, "DOORBELL reads")
    without = await regs.read32(REG["IVPOSITION"].offset)
    host.peer_id = 0x1234           # the host joined a group: the port carries it from now on
    with_peer = await regs.read32(REG["IVPOSITION"].offset)
    return {"doorbells": list(host.doorbells), "ivposition": (without, with_peer)}


async def _ring_latency(tb, vector, request_port, arrived):
    # One ring on an idle bus: the cycles of the ring port's beat, of the shim's request to the
    # hard IP on `request_port`, and of the interrupt's arrival at the root port.
    dut, irq = tb.dut, tb.interrupts
    stamps = {}

    async def watch():
        edge = RisingEdge(dut.user_clk)
        while "request" not in stamps:
            await edge
            cycle = int(get_sim_time("ns") // tb.period_ns)
            if "ring" not in stamps and int(dut.ring__valid.value) and \
                    int(dut.ring__ready.value):
                stamps["ring"] = cycle
            if int(getattr(dut, request_port).value) & 1:
                stamps["request"] = cycle
    watcher = cocotb.start_soon(watch())
    await _wait_cycles(tb, 20)
    tb.host.ring(vector)
    await irq.wait(arrived, IRQ_WAIT)
    await watcher
    ring, request = stamps["ring"], stamps["request"]
    return ring, request


async def ring_latency(bus, tb, vector=2):
    """Measure, in user-clock cycles, a host ring to INTx (MSI off) and to an MSI (MSI on): the
    ring port's beat, the shim's request to the hard IP (``cfg_interrupt_int`` rising,
    ``cfg_interrupt_msi_int``), the message's arrival at the root port. The bus is idle, so
    the figures are the device's and the model's own."""
    drv, pdev = await _irq_driver(bus, tb, msi=False)
    irq = tb.interrupts
    await drv.regs.write32(REG["INTR_MASK"].offset, 1 << vector)
    ring, request = await _ring_latency(tb, vector, "cfg_interrupt_int",
                                        lambda: irq.intx_level)
    out = {"intx": {"ring_to_request": request - ring, "ring_to_rc": irq.intx[-1][0] - ring}}
    await drv.regs.write32(REG["INTR_STATUS"].offset, 1 << vector)
    await irq.wait(lambda: not irq.intx_level, IRQ_WAIT)
    expect(await pdev.enable_msi_range(1, 1), 1, "MSI vectors the root complex enabled")
    irq.attach_msi(pdev)
    ring, request = await _ring_latency(tb, vector, "cfg_interrupt_msi_int", lambda: irq.msi)
    out["msi"] = {"ring_to_request": request - ring, "ring_to_rc": irq.msi[0] - ring}
    return out
