"""Deliver the function's interrupt to a TCG guest through QEMU's qtest socket.

QEMU's PCI proxy carries INTx only through SET_IRQFD's eventfd, which needs real KVM. Under TCG
the device server drives the interrupt controller's input itself: QEMU runs with ``-qtest
unix:PATH`` and this side sends ``set_irq_in /machine/q35/ioapic unnamed-gpio-in GSI LEVEL``
(level-triggered, as INTx is). The GSI is where q35's ACPI routing table (QEMU's
``build_q35_routing_table``, what Linux follows in APIC mode) sends the function's pin. The qtest
socket controls the whole VM, so it lives in a private 0700 directory.

The proxy carries no MSI either; an MSI message is a memory write, and :meth:`QtestIrq.msi` makes
it one (``writel ADDR DATA``): on x86 a write to 0xFEExxxxx lands in the local APIC's MSI region,
which delivers it as the message it is.
"""

import os
import socket
import tempfile
from pathlib import Path

__all__ = ["q35_gsi", "QtestIrq", "IrqError"]

#: The ioapic's input GPIOs on QEMU's q35 machine (``-machine q35``).
IOAPIC = "/machine/q35/ioapic"
#: Seconds to wait for QEMU to answer one qtest command or to connect.
QTEST_TIMEOUT = 10


class IrqError(RuntimeError):
    """QEMU refused or did not answer a qtest command."""


def q35_gsi(slot, pin):
    """Return the ioapic GSI that ``pin`` (1 = INTA#) of a function in ``slot`` of q35's root bus
    raises, as QEMU's ACPI routing table (``_PRT`` in APIC mode) says.

    Slots 0 to 0x18 rotate their four pins over PIRQ E..H (GSI 20..23) starting at ``slot & 3``
    (0x18 starts at E); slots 0x19 to 0x1d and 0x1f start at PIRQ A (GSI 16), 0x1e at E.
    """
    if not 0 <= slot < 32:
        raise ValueError(f"slot must be 0..31, not {slot}")
    if not 1 <= pin <= 4:
        raise ValueError(f"interrupt pin must be 1..4 (INTA#..INTD#), not {pin}")
    if slot < 0x18:
        base, head = 20, slot & 3
    elif slot in (0x18, 0x1e):
        base, head = 20, 0
    else:
        base, head = 16, 0
    return base + (head + pin - 1) % 4


class QtestIrq:
    """The listening end of QEMU's ``-qtest`` socket, and one interrupt line through it.

    Make it before QEMU starts (:meth:`qemu_args` goes on its command line), :meth:`accept`
    once it runs, then :meth:`set` the line. QEMU answers each command with ``OK``; a command
    whose answer is not awaited (``wait=False``, for requests QEMU's main loop is itself blocked
    on) is accounted for before the next one's answer is read.

    Parameters
    ----------
    slot : int
        The function's slot on q35's root bus (QEMU's ``addr=``); :meth:`route` adds its pin.
    """

    def __init__(self, slot):
        self.slot = slot
        self.gsi = None
        self.level = 0
        self.messages = 0           # MSI messages delivered
        self.changes = 0            # commands sent
        self._dir = tempfile.mkdtemp(prefix="vmshm-qtest-")    # mode 0700: only this user
        self.path = Path(self._dir) / "qtest.sock"
        self._listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listen.bind(str(self.path))
        self._listen.listen(1)
        self._sock = None
        self._unanswered = 0
        self._buf = b""

    def route(self, pin):
        """Settle the GSI from the function's Interrupt Pin register (1 = INTA#); return it."""
        self.gsi = q35_gsi(self.slot, pin)
        return self.gsi

    def qemu_args(self):
        """Return the QEMU options that connect its qtest server to this socket."""
        # qtest logs every command to stderr unless told otherwise.
        return ["-qtest", f"unix:{self.path}", "-qtest-log", "/dev/null"]

    def accept(self, timeout=QTEST_TIMEOUT):
        """Take QEMU's connection (it connects while it starts); raise IrqError if it does not."""
        self._listen.settimeout(timeout)
        try:
            self._sock, _ = self._listen.accept()
        except OSError as exc:
            raise IrqError(f"QEMU did not connect to its qtest socket within {timeout} s: "
                           f"{exc}") from None
        finally:
            self._listen.close()
            self._unlink()
        self._sock.settimeout(QTEST_TIMEOUT)

    def _unlink(self):
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass

    def _answer(self):
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(4096)
            except OSError as exc:
                raise IrqError(f"QEMU's qtest socket: {exc}") from None
            if not chunk:
                raise IrqError("QEMU closed its qtest socket")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("ascii", "replace")

    def _command(self, text, wait):
        if self._sock is None:
            raise IrqError("QEMU is not connected to the qtest socket yet")
        try:
            self._sock.sendall(f"{text}\n".encode())
        except OSError as exc:
            raise IrqError(f"QEMU's qtest socket: {exc}") from None
        self.changes += 1
        self._unanswered += 1
        if wait:
            while self._unanswered:
                answer = self._answer()
                self._unanswered -= 1
                if not answer.startswith("OK"):
                    raise IrqError(f"QEMU refused {text}: {answer}")

    def set(self, level, *, wait=True):
        """Drive the line to ``level`` (0 or 1); with ``wait``, return once QEMU has done it."""
        level = 1 if level else 0
        if self.gsi is None:
            raise IrqError("the qtest interrupt line is not routed yet")
        self.level = level
        self._command(f"set_irq_in {IOAPIC} unnamed-gpio-in {self.gsi} {level}", wait)

    def msi(self, addr, data, *, wait=True):
        """Deliver an MSI message: write the 32-bit ``data`` to the guest address ``addr``."""
        self.messages += 1
        self._command(f"writel {addr:#x} {data & 0xFFFFFFFF:#x}", wait)

    def close(self):
        for s in (self._sock, self._listen):
            if s is not None:
                s.close()
        self._unlink()
