"""Interrupts between the UltraScale+ hard-IP model and the root complex.

cocotbext-pcie's hard-IP model turns a ``cfg_interrupt_msi_int`` request into the MSI memory
write the function's capability describes, and answers ``cfg_interrupt_msi_sent``; it leaves
the legacy interface (``cfg_interrupt_int``, ``cfg_interrupt_sent``, ``cfg_interrupt_pending``)
unmodelled, and its root complex has no handler for INTx messages. This module adds both, as
PG213 and the PCIe base specification describe them:

- :class:`HardIpIntx`, the IP's legacy interrupt logic: each change of ``cfg_interrupt_int[0]``
  becomes an Assert_INTA or Deassert_INTA message (a Message TLP routed "local", its code in
  the header byte a request keeps its byte enables in) sent upstream by the function, and
  ``cfg_interrupt_sent`` pulses one cycle once it is out. With the Command register's
  Interrupt Disable set, an assertion is answered but no message goes; a deassertion is sent
  only for an assertion that was. ``cfg_interrupt_pending[0]`` drives the function's Interrupt
  Status bit.
- :class:`RootComplexInterrupts`, what the root complex saw: INTx messages and MSI writes, each
  stamped with the user-clock cycle it arrived in, and the INTx line's level; also as the guest
  bus's :class:`~vmshm.driver_model.bus.Interrupt` records. INTx messages are routed
  "terminate at receiver": the root port takes them (and would raise the system interrupt its
  INTx line maps to); the model's root port has no route for messages, so this class takes them
  at its downstream port, before its routing. There too it takes memory writes to x86's
  interrupt window (0xfee00000, where the driver model points MSI), as a root complex whose
  interrupt controller claims that range; MSI writes to the root complex's own MSI region (its
  ``enable_msi_range``) reach it through memory as before.
"""

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, First, RisingEdge, Timer
from cocotbext.pcie.core.tlp import Tlp, TlpType

from vmshm.driver_model.bus import Interrupt

__all__ = ["ASSERT_INTA", "DEASSERT_INTA", "message_code", "HardIpIntx",
           "RootComplexInterrupts", "interrupt_options", "configure_interrupts"]

#: x86's interrupt message window: memory writes here are interrupts, not memory.
MSI_WINDOW = (0xFEE0_0000, 0xFEF0_0000)
#: PCIe message codes of INTA's virtual wire.
ASSERT_INTA = 0x20
DEASSERT_INTA = 0x24


def _message(code, requester_id):
    tlp = Tlp()
    tlp.fmt_type = TlpType.MSG_LOCAL
    tlp.requester_id = requester_id
    # A message's code sits in DW1 byte 3, where a request carries its byte enables.
    tlp.first_be, tlp.last_be = code & 0xF, code >> 4
    return tlp


def message_code(tlp):
    """Return the message code of a Message TLP built as this module builds them."""
    return tlp.first_be | tlp.last_be << 4


def interrupt_options(config):
    """Return the hard-IP model's options for ``hard_ip_config()["interrupts"]``."""
    return {"pf0_msi_enable": config["msi_vectors"] > 0,
            "pf0_msi_count": max(config["msi_vectors"], 1),
            "pf0_msix_enable": config["msix"]}


def configure_interrupts(fn, config):
    """Give the model's function 0 the rest of ``hard_ip_config()["interrupts"]``.

    The Interrupt Pin, and the MSI capability's address width and per-vector masking (options
    the IP has and the model's constructor does not).
    """
    fn.interrupt_pin = config["intx_pin"]
    fn.msi_cap.msi_64bit_address_capable = int(config["msi_64bit"])
    fn.msi_cap.msi_per_vector_mask_capable = int(config["msi_per_vector_mask"])


class HardIpIntx:
    """The hard IP's legacy interrupt logic for physical function 0 (see the module's text).

    Parameters
    ----------
    dut
        The top, with ``cfg_interrupt_int``, ``cfg_interrupt_pending``, ``cfg_interrupt_sent``
        and ``user_clk``.
    fn
        The model's function 0, which sends the messages and holds the Command and Status
        registers.

    Attributes
    ----------
    delay : int
        Cycles the IP takes to send each message after it saw the change (a link short of
        posted credits is slow): 0 by default.
    """

    def __init__(self, dut, fn):
        self.dut = dut
        self.fn = fn
        self.delay = 0
        self._task = None

    def start(self):
        self.dut.cfg_interrupt_sent.value = 0
        self._task = cocotb.start_soon(self._run())
        return self

    async def _run(self):
        dut, fn = self.dut, self.fn
        edge = RisingEdge(dut.user_clk)
        level = 0           # the level the IP last acted on
        told = False        # an Assert_INTA went out and no Deassert_INTA yet
        while True:
            await edge
            dut.cfg_interrupt_sent.value = 0
            if int(dut.user_reset.value):
                level, told = 0, False
                continue
            fn.interrupt_status = bool(int(dut.cfg_interrupt_pending.value) & 1)
            now = int(dut.cfg_interrupt_int.value) & 1
            if now == level:
                continue
            level = now
            for _ in range(self.delay):
                await edge
            if now and not fn.interrupt_disable:
                await fn.send(_message(ASSERT_INTA, fn.pcie_id))
                told = True
            elif not now and told:
                await fn.send(_message(DEASSERT_INTA, fn.pcie_id))
                told = False
            # Answered from the next edge on, for one cycle: the change has been acted upon.
            await edge
            dut.cfg_interrupt_sent.value = 1


class RootComplexInterrupts:
    """Record the interrupts a root port receives from its device, by user-clock cycle.

    Parameters
    ----------
    root_port
        The model's root port the device hangs off.
    period_ns : float
        The user clock's period.
    bus : GuestBus, optional
        Whose ``interrupts`` list gets an :class:`~vmshm.driver_model.bus.Interrupt` per INTx
        assertion and per MSI write (slot 0, the root port's one device).

    Attributes
    ----------
    intx : list of (int, str)
        ``(cycle, "assert" | "deassert")`` per INTx message.
    msi : list of int
        The cycle of each MSI write.
    changed : Event
        Set at each arrival (cleared by :meth:`wait`).
    """

    def __init__(self, root_port, period_ns, bus=None):
        self._period = period_ns
        self._bus = bus
        self.intx = []
        self.msi = []
        self.changed = Event()
        port = root_port.downstream_port
        route = port.rx_handler

        async def receive(tlp):
            if tlp.fmt_type is TlpType.MSG_LOCAL:
                tlp.release_fc()
                self._message(tlp)
            elif tlp.fmt_type in (TlpType.MEM_WRITE, TlpType.MEM_WRITE_64) and \
                    MSI_WINDOW[0] <= tlp.address < MSI_WINDOW[1]:
                tlp.release_fc()
                self._msi(tlp.address, int.from_bytes(bytes(tlp.get_data()[:4]), "little"))
            else:
                await route(tlp)
        port.rx_handler = receive

    def cycle(self):
        return int(get_sim_time("ns") // self._period)

    @property
    def intx_level(self):
        """Whether INTA is asserted, as the messages so far say."""
        return bool(self.intx) and self.intx[-1][1] == "assert"

    def _message(self, tlp):
        code = message_code(tlp)
        if code not in (ASSERT_INTA, DEASSERT_INTA):
            raise AssertionError(f"an unexpected message, code {code:#04x}: {tlp!r}")
        now = self.cycle()
        self.intx.append((now, "assert" if code == ASSERT_INTA else "deassert"))
        if code == ASSERT_INTA and self._bus is not None:
            self._bus.interrupts.append(Interrupt(now, 0, "intx"))
        self.changed.set()

    def _msi(self, addr, data):
        now = self.cycle()
        self.msi.append(now)
        if self._bus is not None:
            self._bus.interrupts.append(Interrupt(now, 0, "msi", addr, data))
        self.changed.set()

    def attach_msi(self, pdev):
        """Count the MSI writes to ``pdev``'s vector 0, once the root complex's own MSI set-up
        (``enable_msi_range``) pointed the function at its MSI region."""
        vector = pdev.msi_vectors[0]

        async def arrived():
            self._msi(vector.addr, vector.data)
        pdev.request_irq(0, arrived)

    async def wait(self, check, timeout_cycles):
        """Wait until ``check()`` is true; raise :exc:`TimeoutError` after ``timeout_cycles``."""
        if not await self.wait_until(check, timeout_cycles):
            raise TimeoutError(f"no interrupt within {timeout_cycles} cycles")

    async def wait_until(self, check, timeout_cycles=None):
        """Wait until ``check()`` is true or ``timeout_cycles`` passed; return ``check()``."""
        deadline = None if timeout_cycles is None else self.cycle() + timeout_cycles
        while not check():
            self.changed.clear()
            if deadline is None:
                await self.changed.wait()
                continue
            left = deadline - self.cycle()
            if left <= 0:
                return False
            await First(self.changed.wait(), Timer(int(left * self._period) + 1, "ns"))
        return True
