"""Scenarios of doorbells and interrupts: DOORBELL to the host, rings to INTR_STATUS, INTx, MSI.

A scenario here plays a host program too: it rings the device through its host model
(``bus.hosts[0].ring``) and reads the doorbells the host took (``bus.hosts[0].doorbells``), as a
program beside the simulation would. The exact cycle counts are the timing model's
(:mod:`vmshm.timing.model`, ``tests/test_timing.py``); these check what a guest and a host see.
"""

import errno

from vmshm.abi.config_space import MSI_CAP_OFFSET
from vmshm.driver_model import VMSHM_IOCTL_IVPOSITION, VMSHM_IOCTL_RING
from vmshm.driver_model.driver import MSI_ADDRESS
from vmshm.driver_model.pci import pcie_flr
from vmshm.host_model.faults import Fault, HostFaults
from vmshm.abi.regmap import REG

from .checks import expect, expect_errno, probe, reg
from .registry import scenario

#: The host timeout of the scenario whose host never takes a doorbell.
DB_TIMEOUT = 100


async def _write(drv, name, value):
    await drv.regs.write32(REG[name].offset, value)


def _intx_count(bus, dev=0):
    return sum(1 for i in bus.interrupts if i.dev == dev and i.kind == "intx")


async def _settle(bus, cycles=8):
    # Long enough for any ring to reach INTR_STATUS and the line (docs/timing.md: a few cycles),
    # and the interrupt to travel as far as the bus watches (a PCIe link's messages take longer).
    await bus.idle(cycles + bus.interrupt_latency)


@scenario(shm_size=4096)
async def doorbell_guest_rings(bus, env):
    """Ring peers from the guest: the host takes each (peer, vector) while the write completes."""
    drv = await probe(bus)
    host = bus.hosts[0]
    seen = []
    host.on_doorbell = lambda peer, vector: seen.append((peer, vector, bus.now()))
    fd = await drv.open()
    rung = [(1, 0), (0xFFFF, 0xFFFF), (7, 31)]
    writes = []
    for peer, vector in rung:
        start = bus.now()
        await drv.ioctl(fd, VMSHM_IOCTL_RING, peer << 16 | vector)
        writes.append((start, bus.now()))
    await _settle(bus)
    expect(host.doorbells, rung, "doorbells the host took")
    # The doorbell leaves while the write completes: the host takes it by the write's last edge
    # (on that edge, the host and the guest see their beats in either order).
    for (peer, vector, cycle), (start, end) in zip(seen, writes):
        if not start < cycle <= end:
            raise AssertionError(f"doorbell {peer}/{vector} reached the host at cycle {cycle}, "
                                 f"outside its write ({start} to {end})")
    expect([s[:2] for s in seen], rung, "on_doorbell calls")
    # A sub-word write rings with the bytes it has; a write of another register rings nothing.
    await drv.regs.write(REG["DOORBELL"].offset, b"\x05\x00")
    await _write(drv, "INTR_MASK", 0)
    await _settle(bus)
    expect(host.doorbells[3:], [(0, 5)], "a two-byte DOORBELL write")
    expect(await reg(drv, "DOORBELL"), 0, "DOORBELL reads 0")
    expect(await reg(drv, "TIMEOUTS"), 0, "TIMEOUTS after doorbells a host took")
    await drv.close(fd)
    return {"doorbells": [list(s) for s in seen]}


@scenario(shm_size=4096)
async def doorbell_host_rings_intx(bus, env):
    """Ring the device from the host: INTR_STATUS, the INTx line, mask and unmask, W1C."""
    drv = await probe(bus)
    host = bus.hosts[0]
    expect(await reg(drv, "INTR_STATUS"), 0, "INTR_STATUS out of reset")
    expect(await reg(drv, "INTR_MASK"), 0, "INTR_MASK out of reset")
    # Masked: the status bit is set, the line stays low.
    host.ring(3)
    host.ring(40)           # past the 32 vectors: ignored
    await _settle(bus)
    expect(await reg(drv, "INTR_STATUS"), 1 << 3, "INTR_STATUS after rings of 3 and 40")
    expect(bus.intx(), 0, "INTx while vector 3 is masked")
    status_reg = await bus.cfg_read_int(0, 0x06, 2)
    expect(status_reg >> 3 & 1, 0, "PCI Status bit 3 while masked")
    # Unmasking a pending vector raises the line.
    await _write(drv, "INTR_MASK", 1 << 3)
    await _settle(bus)
    expect(bus.intx(), 1, "INTx after unmasking pending vector 3")
    expect(_intx_count(bus), 1, "INTx rising edges")
    expect(await bus.cfg_read_int(0, 0x06, 2) >> 3 & 1, 1, "PCI Status bit 3 (Interrupt Status)")
    # Interrupt Disable holds the line low but not Status bit 3.
    command = await bus.cfg_read_int(0, 0x04, 2)
    await bus.cfg_write_int(0, 0x04, 2, command | 0x400)
    expect(bus.intx(), 0, "INTx with Interrupt Disable set")
    expect(await bus.cfg_read_int(0, 0x06, 2) >> 3 & 1, 1, "Status bit 3 with Interrupt Disable")
    await bus.cfg_write_int(0, 0x04, 2, command)
    expect(bus.intx(), 1, "INTx with Interrupt Disable cleared again")
    expect(_intx_count(bus), 2, "INTx rising edges after Interrupt Disable was cleared")
    # W1C: writing 0s clears nothing, a 1 clears only its bit.
    host.ring(5)
    await _settle(bus)
    await _write(drv, "INTR_STATUS", 0)
    expect(await reg(drv, "INTR_STATUS"), 1 << 3 | 1 << 5, "INTR_STATUS after writing 0")
    await _write(drv, "INTR_STATUS", 1 << 5)
    expect(await reg(drv, "INTR_STATUS"), 1 << 3, "INTR_STATUS after clearing bit 5")
    expect(bus.intx(), 1, "INTx while vector 3 is still pending")
    await _write(drv, "INTR_STATUS", 1 << 3)
    expect(await reg(drv, "INTR_STATUS"), 0, "INTR_STATUS after clearing bit 3")
    expect(bus.intx(), 0, "INTx once nothing enabled is pending")
    # Reads have no side effect; a masked ring still lands in the status.
    await _write(drv, "INTR_MASK", 1 << 3)
    host.ring(5)
    await _settle(bus)
    for _ in range(2):
        expect(await reg(drv, "INTR_STATUS"), 1 << 5, "INTR_STATUS read twice")
    expect(bus.intx(), 0, "INTx for a masked vector")
    # Another ring of the enabled vector: a new edge on the line.
    host.ring(3)
    await _settle(bus)
    expect(_intx_count(bus), 3, "INTx rising edges after a second unmasked ring")
    # The mask is read-write byte by byte.
    await drv.regs.write(REG["INTR_MASK"].offset + 2, b"\xa5")
    expect(await reg(drv, "INTR_MASK"), 0xA5 << 16 | 1 << 3, "INTR_MASK after a byte write")
    await _write(drv, "INTR_STATUS", 0xFFFF_FFFF)
    await _settle(bus)
    expect(bus.intx(), 0, "INTx after clearing everything")
    return {"interrupts": [(i.cycle, i.kind) for i in bus.interrupts]}


@scenario(shm_size=4096)
async def doorbell_msi(bus, env):
    """Take rings as MSI messages: one per newly pending enabled vector, none while masked."""
    drv = await probe(bus)
    host = bus.hosts[0]
    await drv.enable_msi(data=0x4041)
    await _write(drv, "INTR_MASK", 0b11)
    host.ring(0)
    await _settle(bus)
    msis = [i for i in bus.interrupts if i.kind == "msi"]
    expect([(i.addr, i.data) for i in msis], [(MSI_ADDRESS, 0x4041)], "MSI after a ring")
    expect(bus.intx(), 0, "INTx while MSI is enabled")
    # Pending already: no second message. A second vector: another.
    host.ring(0)
    await _settle(bus)
    expect(len([i for i in bus.interrupts if i.kind == "msi"]), 1, "MSIs after ringing 0 again")
    host.ring(1)
    await _settle(bus)
    expect(len([i for i in bus.interrupts if i.kind == "msi"]), 2, "MSIs after ringing 1")
    # Masked: nothing; unmasking the pending vector sends one.
    await _write(drv, "INTR_STATUS", 0b11)
    await _write(drv, "INTR_MASK", 0)
    host.ring(2)
    await _settle(bus)
    expect(len([i for i in bus.interrupts if i.kind == "msi"]), 2, "MSIs for a masked ring")
    await _write(drv, "INTR_MASK", 1 << 2)
    await _settle(bus)
    expect(len([i for i in bus.interrupts if i.kind == "msi"]), 3, "MSIs after unmasking")
    # Without Bus Master Enable the function sends no message.
    await _write(drv, "INTR_STATUS", 1 << 2)
    command = await bus.cfg_read_int(0, 0x04, 2)
    await bus.cfg_write_int(0, 0x04, 2, command & ~0x4)
    host.ring(2)
    await _settle(bus)
    expect(len([i for i in bus.interrupts if i.kind == "msi"]), 3, "MSIs without bus mastering")
    # Bus mastering back with vector 2 still pending: the message it could not send is owed
    # now, once (issue 22, finding 4; main sent none, and vector 2 stayed silent for good).
    await bus.cfg_write_int(0, 0x04, 2, command)
    await _settle(bus)
    expect(len([i for i in bus.interrupts if i.kind == "msi"]), 4,
           "MSIs once bus mastering is back with a vector pending")
    expect(_intx_count(bus), 0, "INTx edges while MSI was enabled")
    return {"interrupts": [(i.cycle, i.kind) for i in bus.interrupts]}


@scenario(shm_size=4096)
async def doorbell_msi_enabled_while_pending(bus, env):
    """MSI Enable set while a vector is pending sends the message it owes (issue 22, finding 4).

    INTx goes off and one message goes out in its place (before the fix none did, and later rings
    of the vector, pending already, stayed silent); MSI Enable cleared again: INTx is back, no
    message.
    """
    drv = await probe(bus)
    host = bus.hosts[0]
    await _write(drv, "INTR_MASK", 0b1)
    host.ring(0)
    await _settle(bus)
    expect(bus.intx(), 1, "INTx for a pending vector with MSI off")
    await drv.enable_msi(data=0x77)
    await _settle(bus)
    msis = [(i.addr, i.data) for i in bus.interrupts if i.kind == "msi"]
    expect(msis, [(MSI_ADDRESS, 0x77)], "MSIs once MSI is enabled with a vector pending")
    expect(bus.intx(), 0, "INTx while MSI is enabled")
    flags = await bus.cfg_read_int(0, MSI_CAP_OFFSET + 2, 2)
    await bus.cfg_write_int(0, MSI_CAP_OFFSET + 2, 2, flags & ~1)
    await _settle(bus)
    expect(bus.intx(), 1, "INTx once MSI is disabled again")
    host.ring(0)
    await _settle(bus)
    expect(len([i for i in bus.interrupts if i.kind == "msi"]), 1, "MSIs while MSI is off")
    return {"interrupts": [(i.cycle, i.kind) for i in bus.interrupts]}


@scenario(shm_size=4096)
async def doorbell_wait_interrupt(bus, env):
    """Wait for interrupts as a program does: poll, then a read that returns the count."""
    drv = await probe(bus)
    host = bus.hosts[0]
    fd = await drv.open()
    expect(await drv.poll(fd), False, "poll before any ring")
    expect(await drv.read(fd, timeout=50), 0, "read with nothing rung, after its timeout")
    host.ring(4)
    expect(await drv.read(fd, timeout=200), 1, "read after one ring")
    expect(await reg(drv, "INTR_STATUS"), 0, "INTR_STATUS after the handler")
    # Two rings, each handled before the next: the count adds up.
    host.ring(4)
    await _settle(bus)
    expect(await drv.poll(fd), True, "poll after a ring")
    host.ring(9)
    await _settle(bus)
    expect(await drv.read(fd, timeout=200), 2, "read after two rings")
    await drv.close(fd)


@scenario(shm_size=4096)
async def doorbell_ivposition(bus, env):
    """Read IVPOSITION: 0xffffffff without a peer ID, the host's peer ID once it has one."""
    drv = await probe(bus)
    host = bus.hosts[0]
    fd = await drv.open()
    expect(await reg(drv, "IVPOSITION"), 0xFFFF_FFFF, "IVPOSITION without a peer ID")
    await expect_errno(drv.ioctl(fd, VMSHM_IOCTL_IVPOSITION), errno.ENXIO, "ioctl IVPOSITION")
    host.peer_id = 0
    expect(await drv.ioctl(fd, VMSHM_IOCTL_IVPOSITION), 0, "peer ID 0")
    host.peer_id = 0xFFFF
    expect(await reg(drv, "IVPOSITION"), 0xFFFF, "peer ID 65535")
    await _write(drv, "IVPOSITION", 0x1234)
    expect(await reg(drv, "IVPOSITION"), 0xFFFF, "IVPOSITION after a write")
    host.peer_id = None
    expect(await reg(drv, "IVPOSITION"), 0xFFFF_FFFF, "IVPOSITION once the peer ID is gone")
    await drv.close(fd)


@scenario(shm_size=4096, host_timeout=DB_TIMEOUT,
          timing={"faults": HostFaults((Fault("db", "stall", exchange=0),))})
async def doorbell_host_never_takes(bus, env):
    """Ring a host that never takes a doorbell: every write still completes, the rest dropped."""
    drv = await probe(bus)
    took = []
    for k in range(3):
        start = bus.now()
        await _write(drv, "DOORBELL", 1 << 16 | k)
        took.append(bus.now() - start)
    # The first waits for nothing (it stays on offer); the others wait out the timeout.
    if took[0] > 16:
        raise AssertionError(f"the first doorbell write took {took[0]} cycles")
    for k in (1, 2):
        if not DB_TIMEOUT <= took[k] <= DB_TIMEOUT + 16:
            raise AssertionError(f"doorbell write {k} took {took[k]} cycles; the device should "
                                 f"drop it after its host timeout of {DB_TIMEOUT}")
    expect(await reg(drv, "TIMEOUTS"), 2, "TIMEOUTS after two dropped doorbells")
    expect(bus.hosts[0].doorbells, [], "doorbells the host took")
    # The bus keeps working meanwhile.
    expect(await reg(drv, "INTR_STATUS"), 0, "INTR_STATUS")
    return {"write_cycles": took}


@scenario(shm_size=4096)
async def doorbell_reset(bus, env):
    """Reset the function (FLR): INTR_STATUS, INTR_MASK, MSI and the line come back cleared."""
    drv = await probe(bus)
    host = bus.hosts[0]
    await drv.enable_msi()
    await _write(drv, "INTR_MASK", 0xFF)
    host.ring(1)
    await _settle(bus)
    expect(len(bus.interrupts), 1, "MSIs before the reset")
    await bus.cfg_write_int(0, MSI_CAP_OFFSET + 2, 2, 0)    # MSI off: INTx
    expect(bus.intx(), 1, "INTx before the reset")
    # A Function Level Reset resets the core as a reset of the device does.
    await pcie_flr(drv.pdev)
    expect(bus.intx(), 0, "INTx after the reset")
    drv = await probe(bus)
    expect(await bus.cfg_read_int(0, MSI_CAP_OFFSET + 2, 2) & 1, 0, "MSI Enable after a reset")
    expect(await reg(drv, "INTR_STATUS"), 0, "INTR_STATUS after a reset")
    expect(await reg(drv, "INTR_MASK"), 0, "INTR_MASK after a reset")
    # The device takes rings again.
    host.ring(2)
    await _settle(bus)
    expect(await reg(drv, "INTR_STATUS"), 1 << 2, "INTR_STATUS after a ring past the reset")
