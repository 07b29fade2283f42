"""Doorbells and interrupts in a real Linux guest, on the simulated RTL: one boot per session
and interrupt kind.

The guest runs ``guest/vmshm_doorbell_checks.c`` against vmshm.ko; the host side is the device's
:class:`HostModel`, which rings the guest when it says it waits and answers its pings. The
interrupt reaches the guest through QEMU's qtest socket (:mod:`vmshm.qemu.irq`): the INTx line
as the ioapic input q35 routes it to, or the function's MSI message as the memory write it is.
"""

import os
import shutil
import socket
import stat
import subprocess

import pytest
from conftest import require_qemu_parts

from vmshm.qemu.irq import IrqError, QtestIrq, q35_gsi

ROUNDS = 10


@pytest.fixture(scope="session", params=("intx", "msi"))
def doorbell_guest(request):
    """Boot one guest that runs every doorbell check; yield its :class:`DoorbellRun`."""
    from vmshm.host_model import HostModel
    from vmshm.qemu.doorbell import run_doorbell_guest

    parts = require_qemu_parts("the doorbell guest test")
    log = []
    host = HostModel(log=log.append)
    try:
        yield run_doorbell_guest(parts, rounds=ROUNDS, timeout=240, host=host,
                                 backend="amaranth", msi=request.param == "msi")
    finally:
        host.close_ring_fd()


def test_every_guest_check_passes(doorbell_guest):
    r = doorbell_guest.boot
    assert r.error is None and r.status == 0, "\n".join(r.console[-40:])
    assert doorbell_guest.checks and all(v == "ok" for v in doorbell_guest.checks.values()), \
        doorbell_guest.checks
    assert len(doorbell_guest.checks) == 13
    # No interrupt the driver did not claim, no oops.
    assert doorbell_guest.trouble == []


def test_the_interrupt_is_the_one_the_server_delivers(doorbell_guest):
    from vmshm.qemu.boot import SLOT
    line, = doorbell_guest.interrupts
    if doorbell_guest.kind == "intx":
        # Linux found the function's INTA# where the server drives it: q35's routing of the slot.
        assert doorbell_guest.irq == {f"0000:00:{SLOT:02x}.0": q35_gsi(SLOT, 1)}
        assert "IO-APIC" in line and "fasteoi" in line
    else:
        assert "PCI-MSI" in line
    assert line.split()[-1] == "vmshm"
    # It fired once for every ring the guest waited for: the rounds, 'ring', 'poll', 'two'.
    assert int(line.split()[1]) == ROUNDS + 4


def test_a_blocked_read_wakes_when_the_host_rings(doorbell_guest):
    assert doorbell_guest.checks["read_wakes_on_ring"] == "ok"
    # The host rang 0.5 s after the guest said it waits: the read slept until then.
    assert doorbell_guest.blocked_ms >= 400
    assert doorbell_guest.checks["poll_times_out"] == "ok"
    assert doorbell_guest.checks["nonblocking_read_eagain"] == "ok"


def test_the_host_takes_the_guests_doorbells(doorbell_guest):
    from vmshm.qemu.doorbell import PING
    # The guest's DOORBELL writes, in order: peer 3 vector 5, then one ping per round trip;
    # the value past 32 bits never reached the device.
    assert doorbell_guest.doorbells == [(3, 5)] + [(0, PING)] * ROUNDS
    assert len(doorbell_guest.pings) == ROUNDS
    assert set(doorbell_guest.rtt_us) == {"min", "median", "p90", "max"}


def test_rings_and_doorbells_take_the_timing_models_cycles(doorbell_guest):
    from vmshm.qemu.doorbell import doorbell_write_cycles, ring_cycles
    from vmshm.timing import doorbell_write_cycles as write_model
    from vmshm.timing import ring_to_intx_cycles, ring_to_msi_cycles
    cycles = ring_cycles(doorbell_guest.boot.accesses)
    # The rings the host made while the guest slept woke the server, which ran the clock until
    # the line rose or the message went out: as many cycles as the timing model says.
    want = ring_to_intx_cycles() if doorbell_guest.kind == "intx" else ring_to_msi_cycles()
    assert len(cycles) >= ROUNDS and set(cycles) == {want}, cycles
    writes = doorbell_write_cycles(doorbell_guest.boot.accesses)
    assert len(writes) == ROUNDS + 1 and set(writes) == {write_model()}, writes


# -- without QEMU -------------------------------------------------------------------------------

def test_q35_routing():
    # Slot 3's INTA# is GSI 23 (measured, ARCHITECTURE.md); pins rotate over PIRQ E..H.
    assert q35_gsi(3, 1) == 23
    assert [q35_gsi(4, pin) for pin in (1, 2, 3, 4)] == [20, 21, 22, 23]
    assert [q35_gsi(1, pin) for pin in (1, 2, 3, 4)] == [21, 22, 23, 20]
    assert q35_gsi(0x1F, 1) == 16 and q35_gsi(0x1E, 2) == 21
    with pytest.raises(ValueError, match="pin must be 1..4"):
        q35_gsi(3, 0)
    with pytest.raises(ValueError, match="slot must be 0..31"):
        q35_gsi(32, 1)


def test_qtest_socket_is_private_and_answers_are_checked():
    irq = QtestIrq(3)
    try:
        assert stat.S_IMODE(os.stat(irq.path.parent).st_mode) == 0o700
        assert irq.qemu_args()[:2] == ["-qtest", f"unix:{irq.path}"]
        irq.route(1)
        # QEMU's end: it answers the first command and refuses the second.
        qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        qemu.connect(str(irq.path))
        irq.accept(timeout=5)
        assert not irq.path.exists()
        qemu.sendall(b"OK\nOK\nFAIL no such gpio\n")
        irq.set(1)
        assert irq.level == 1
        irq.msi(0xFEE00000, 0x4021)        # an MSI message: the memory write it is
        with pytest.raises(IrqError, match="refused set_irq_in .* 23 0: FAIL no such gpio"):
            irq.set(0)
        got = ""
        while got.count("\n") < 3:
            got += qemu.recv(4096).decode()
        assert got == ("set_irq_in /machine/q35/ioapic unnamed-gpio-in 23 1\n"
                       "writel 0xfee00000 0x4021\n"
                       "set_irq_in /machine/q35/ioapic unnamed-gpio-in 23 0\n")
        qemu.close()
    finally:
        irq.close()


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_the_ioctl_header_is_the_driver_models(tmp_path):
    from vmshm.driver_model import VMSHM_IOCTL_IVPOSITION, VMSHM_IOCTL_OPEN, VMSHM_IOCTL_RING
    from vmshm.qemu.image import GUEST_DIR
    src = tmp_path / "t.c"
    src.write_text('#include <stdio.h>\n#include "vmshm_ioctl.h"\nint main(void) {\n'
                   'printf("%d %d %d %#lx\\n", VMSHM_IOCTL_OPEN, VMSHM_IOCTL_RING, '
                   'VMSHM_IOCTL_IVPOSITION, VMSHM_DOORBELL(3, 5));\nreturn 0;\n}\n')
    exe = tmp_path / "t"
    subprocess.run(["cc", "-Wall", "-Werror", "-I", str(GUEST_DIR), "-o", str(exe), str(src)],
                   check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(VMSHM_IOCTL_OPEN), str(VMSHM_IOCTL_RING), str(VMSHM_IOCTL_IVPOSITION),
                   hex(3 << 16 | 5)]
