"""Drive an UltraScale+ PCIe hard IP's interrupt interface (PG213) from VMShmCore's interrupts.

The hard IP owns the configuration space, so the PCI Command register's Interrupt Disable bit
and the MSI capability live there: the IP tells the user logic what they hold
(``cfg_function_status``, ``cfg_interrupt_msi_enable``, the mask bits on ``cfg_interrupt_msi_data``)
and sends the messages itself when asked. :class:`USPInterrupts` asks:

- **INTx** (legacy, INTA): ``cfg_interrupt_int[0]`` follows the core's level ``irq`` while MSI is
  off and Interrupt Disable is clear. PG213 turns each 0-to-1 change into an Assert_INTA message
  and each 1-to-0 change into a Deassert_INTA message, and pulses ``cfg_interrupt_sent`` once the
  message is out; a change is held until that pulse and the next one waits for it, so the IP
  never sees a change it has not finished. ``cfg_interrupt_pending[0]`` is the function's
  Interrupt Status: high while the core's level is, and while an assertion is still held.
- **MSI** (single message, vector 0): each ``irq_msg`` pulse while MSI Enable and Bus Master
  Enable are set owes the root complex one message. The shim pulses ``cfg_interrupt_msi_int[0]``
  for one cycle and waits for ``cfg_interrupt_msi_sent`` or ``cfg_interrupt_msi_fail`` before the
  next; a failed message is asked again, a message masked by the capability's per-vector mask
  waits (and shows in its Pending bit) until it is unmasked, and pulses that come while one is
  in flight or held fold into one more message (a Pending bit is one bit; the driver reads
  INTR_STATUS on each message and sees every vector), as the soft PCI function merges a message
  still on offer. Messages owed when MSI is turned off are
  dropped: the level, on INTx, carries the state from then on.
"""

from amaranth.hdl import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["USPInterrupts", "INTX_PORTS", "MSI_PORTS"]

#: Cycles an MSI request is still waited for after MSI Enable went off under it: far longer
#: than the IP takes to answer one (a few cycles in PG213's waveforms), so a request never
#: overlaps one the IP may still answer.
MSI_ORPHAN_WAIT = 64

#: The hard IP's legacy interrupt ports: name -> (direction from the user logic, width).
INTX_PORTS = {
    "cfg_interrupt_int":        (Out, 4),
    "cfg_interrupt_pending":    (Out, 4),
    "cfg_interrupt_sent":       (In, 1),
}
#: The hard IP's MSI ports the shim uses (PG213, "MSI Interrupt Interface").
MSI_PORTS = {
    "cfg_interrupt_msi_enable":                     (In, 4),
    "cfg_interrupt_msi_int":                        (Out, 32),
    "cfg_interrupt_msi_sent":                       (In, 1),
    "cfg_interrupt_msi_fail":                       (In, 1),
    "cfg_interrupt_msi_function_number":            (Out, 8),
    "cfg_interrupt_msi_attr":                       (Out, 3),
    "cfg_interrupt_msi_select":                     (Out, 2),
    "cfg_interrupt_msi_data":                       (In, 32),
    "cfg_interrupt_msi_pending_status":             (Out, 32),
    "cfg_interrupt_msi_pending_status_data_enable": (Out, 1),
    "cfg_interrupt_msi_pending_status_function_num": (Out, 2),
}


class USPInterrupts(wiring.Component):
    """Turn the core's ``irq`` level and ``irq_msg`` pulses into PG213 INTx and MSI requests.

    Every output to the hard IP is a register. Physical function 0 only.

    Members
    -------
    irq : ``In(1)``
        The core's interrupt level: ``INTR_STATUS & INTR_MASK`` is not zero.
    irq_msg : ``In(1)``
        The core's one-cycle pulse: one message owed.
    bus_master : ``In(1)``
        PF0's Bus Master Enable (an MSI is a memory write).
    intx_disable : ``In(1)``
        PF0's Interrupt Disable (Command register bit 10).
    cfg_interrupt_* : the hard IP's ports of :data:`INTX_PORTS` and :data:`MSI_PORTS`.
    """

    def __init__(self):
        members = {
            "irq": In(1),
            "irq_msg": In(1),
            "bus_master": In(1),
            "intx_disable": In(1),
        }
        for name, (direction, width) in {**INTX_PORTS, **MSI_PORTS}.items():
            members[name] = direction(width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        # Whole copies of the IP's per-function outputs: PF0's bits are the ones used.
        msi_enables = Signal(4)
        msi_data = Signal(32)
        m.d.comb += [msi_enables.eq(self.cfg_interrupt_msi_enable),
                     msi_data.eq(self.cfg_interrupt_msi_data)]
        msi_enable = msi_enables[0]

        # -- INTx ----------------------------------------------------------------------------
        level = Signal()
        asserted = Signal()         # what cfg_interrupt_int[0] says
        waiting = Signal()          # a change is out; cfg_interrupt_sent not seen yet
        m.d.comb += level.eq(self.irq & ~msi_enable & ~self.intx_disable)
        with m.If(waiting):
            with m.If(self.cfg_interrupt_sent):
                m.d.sync += waiting.eq(0)
        with m.Elif(level != asserted):
            m.d.sync += [asserted.eq(level), waiting.eq(1)]
        pending = Signal()
        m.d.sync += pending.eq(self.irq | asserted)
        m.d.comb += [
            self.cfg_interrupt_int.eq(asserted),
            self.cfg_interrupt_pending.eq(pending),
        ]

        # -- MSI -----------------------------------------------------------------------------
        msi_on = Signal()
        owed = Signal()             # a message is owed and not yet asked for
        busy = Signal()             # one asked for; neither sent nor fail seen yet
        fire = Signal()
        pulse = Signal()
        masked = msi_data[0]        # PF0's mask bits (select 0)
        add = Signal()
        m.d.comb += [
            msi_on.eq(msi_enable & self.bus_master),
            add.eq(self.irq_msg & msi_on),
            fire.eq((owed | add) & msi_on & ~busy & ~masked),
        ]
        m.d.sync += pulse.eq(fire)
        orphan = Signal()           # MSI went off under the request: it may never be answered
        waited = Signal(range(MSI_ORPHAN_WAIT))
        with m.If(fire):
            m.d.sync += [busy.eq(1), owed.eq(0), orphan.eq(0), waited.eq(0)]
        with m.Elif(busy & (self.cfg_interrupt_msi_sent | self.cfg_interrupt_msi_fail)):
            # A failed message is still owed; a pulse meanwhile folds into it.
            m.d.sync += [busy.eq(0), orphan.eq(0),
                         owed.eq(owed | add | self.cfg_interrupt_msi_fail)]
        with m.Else():
            with m.If(busy & (orphan | ~msi_enable)):
                # MSI turned off under a request: PG213 does not say the IP still answers it,
                # and the shim must not wait for ever; but a request made again at once (MSI
                # re-enabled) would overlap the one the IP may still answer (issue 22, finding
                # 11). So it is waited for MSI_ORPHAN_WAIT cycles, whatever MSI Enable does
                # meanwhile, and only then forgotten; a later answer is ignored.
                m.d.sync += [orphan.eq(1), waited.eq(waited + 1)]
                with m.If(waited == MSI_ORPHAN_WAIT - 1):
                    m.d.sync += [busy.eq(0), orphan.eq(0), waited.eq(0)]
            with m.If(add):
                m.d.sync += owed.eq(1)
        with m.If(~msi_on):
            m.d.sync += owed.eq(0)
        m.d.comb += [
            self.cfg_interrupt_msi_int.eq(pulse),
            self.cfg_interrupt_msi_function_number.eq(0),
            self.cfg_interrupt_msi_attr.eq(0),
            self.cfg_interrupt_msi_select.eq(0),
            # The capability's Pending bit shows a message held back by its mask.
            self.cfg_interrupt_msi_pending_status.eq(owed),
            self.cfg_interrupt_msi_pending_status_data_enable.eq(1),
            self.cfg_interrupt_msi_pending_status_function_num.eq(0),
        ]
        return m
