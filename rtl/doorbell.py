"""Doorbells: VMShm's ivshmem-style interrupts, the doorbell to the host and the host's rings.

:class:`Doorbells` decides the interrupt (``irq`` and the ``irq_msg`` pulse) from INTR_MASK and
INTR_STATUS, whose storage is their field actions' in the register file
(:mod:`vmshm.rtl.registers`), sets INTR_STATUS's bits from the host's rings and holds the one
doorbell beat on offer to the host. It is a component of its own so its rules sit in one place
(and the proofs in ``formal/`` can look at them): every new output is a register or a few gates
past one.
"""

from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from vmshm.abi.regmap import VECTORS

from .layouts import db_layout, ring_layout

__all__ = ["Doorbells"]


class Doorbells(wiring.Component):
    """Offer the guest's doorbells, take the host's rings and raise the interrupt.

    Members
    -------
    mask : ``In(32)``
        INTR_MASK's value.
    status : ``In(32)``
        INTR_STATUS's value.
    clear : ``In(32)``
        INTR_STATUS bits the guest clears on the next edge (a W1C write's ones under its byte
        enables).
    rung : ``Out(32)``
        INTR_STATUS bits a ring sets on the next edge: a ring of vector v < 32 sets bit v; a
        ring of a larger vector is ignored.
    ring_we : ``In(1)``
        A DOORBELL write is taken this cycle, with its value in ``ring_data``; only while
        ``full`` is low (the core holds or drops the write otherwise).
    ring_data : ``In(32)``
    full : ``Out(1)``
        A doorbell is on offer on ``db`` and the host has not taken it yet.
    ivposition : ``Out(32)``
        What IVPOSITION reads.
    db : ``Out(stream.Signature(db_layout()))``
        The doorbell to the host. A beat once offered stays on offer until taken (or a reset).
    ring : ``In(stream.Signature(ring_layout()))``
        The host's rings; always ready.
    peer_valid, peer_id : ``In(1)``, ``In(16)``
        The host's peer ID for IVPOSITION.
    irq : ``Out(1)``
        ``(INTR_STATUS & INTR_MASK) != 0``.
    msg_ok : ``In(1)``
        The front end may send a message now (MSI Enable and Bus Master Enable set, no FLR in
        process); high if the front end does not say.
    irq_msg : ``Out(1)``
        A one-cycle pulse while ``msg_ok`` is high, on the cycle ``irq``'s cause changes, when
        ``INTR_STATUS & INTR_MASK`` gained a bit: a ring of an unmasked vector that was not
        pending (or that the guest cleared on the same edge), or an unmask of a pending one;
        and on the cycle ``msg_ok`` rises with ``irq`` high: the message owed for what is
        pending while none could be sent (issue 22, finding 4), which INTx stood for until now
        or no one told at all.
    """

    mask: In(VECTORS)
    status: In(VECTORS)
    clear: In(VECTORS)
    rung: Out(VECTORS)
    ring_we: In(1)
    ring_data: In(32)
    full: Out(1)
    ivposition: Out(32)
    db: Out(stream.Signature(db_layout()))
    ring: In(stream.Signature(ring_layout()))
    peer_valid: In(1)
    peer_id: In(16)
    irq: Out(1)
    msg_ok: In(1, init=1)
    irq_msg: Out(1)

    def elaborate(self, platform):
        m = Module()

        # -- rings and the guest's clears -------------------------------------------------------
        m.d.comb += self.ring.ready.eq(1)
        with m.If(self.ring.valid & (self.ring.payload.vector < VECTORS)):
            m.d.comb += self.rung.eq(C(1, VECTORS) << self.ring.payload.vector[:5])
        kept = Signal(VECTORS)      # pending bits the guest does not clear on this edge
        m.d.comb += kept.eq(self.status & ~self.clear)
        # What was pending and enabled before this edge, less what the guest clears on it:
        # a bit pending now and not then is news (cleared bits count as not pending), and asks
        # for a message in the cycle after the edge. Kept as a register so the 32-bit
        # reduction below starts at flip-flops, not at the guest's write decode.
        before = Signal(VECTORS)
        m.d.sync += before.eq(kept & self.mask)
        # msg_ok a cycle ago: its rising edge with the interrupt pending owes one message.
        # Reset to high, so a front end that never lowers it sees no edge.
        msg_ok_before = Signal(init=1)
        m.d.sync += msg_ok_before.eq(self.msg_ok)
        m.d.comb += self.irq_msg.eq(self.msg_ok & ((self.status & self.mask & ~before).any() |
                                                   (self.irq & ~msg_ok_before)))
        m.d.comb += self.irq.eq((self.status & self.mask).any())

        # -- the doorbell on offer -----------------------------------------------------------------
        with m.If(self.db.ready):
            m.d.sync += self.db.valid.eq(0)
        with m.If(self.ring_we):
            m.d.sync += [
                self.db.valid.eq(1),
                self.db.payload.vector.eq(self.ring_data[:16]),
                self.db.payload.peer.eq(self.ring_data[16:]),
            ]
        m.d.comb += self.full.eq(self.db.valid)

        m.d.comb += self.ivposition.eq(Mux(self.peer_valid, self.peer_id, 0xFFFF_FFFF))
        return m
