"""PG213Checker's rules on interface traces written here, without a simulator: each rule that
no shim in the tree breaks is shown to fire on a trace of one that does (issue 22), and to stay
quiet on the same trace done right.

The checker reads its ports' ``value`` at every edge; here a trace sets them cycle by cycle and
calls the checker's per-cycle steps, as its cocotb task does.
"""

import pytest

from vmshm.testbench.pcie_rules import PG213Checker

PORTS = {
    "user_reset": 1, "cfg_function_status": 16, "cfg_flr_in_process": 4, "cfg_max_payload": 2,
    "cfg_max_read_req": 3,
    **{f"cfg_interrupt_{n}": 32 for n in ("int", "pending", "sent", "msi_enable", "msi_int",
                                          "msi_sent", "msi_fail", "msi_function_number",
                                          "msi_data", "msi_select")},
    **{f"{p}_{s}": 256 for p in ("s_axis_cq", "m_axis_cc", "m_axis_rq", "s_axis_rc")
       for s in ("tvalid", "tready", "tdata", "tkeep", "tlast", "tuser")},
}


class Port:
    def __init__(self, width):
        self.value = 0
        self._width = width

    def __len__(self):
        return self._width


class Dut:
    def __init__(self):
        for name, width in PORTS.items():
            setattr(self, name, Port(width))
        self.m_axis_rq_tkeep = Port(2)
        self.m_axis_cc_tkeep = Port(2)
        self.cfg_function_status.value = 0b0110        # memory space and bus master on


class Checker(PG213Checker):
    """The checker with a cycle counter of its own instead of cocotb's clock."""

    def __init__(self, dut):
        super().__init__(dut, 4.0)
        self.now = 0

    def cycle(self):
        return self.now

    def step(self, **values):
        for name, value in values.items():
            getattr(self.dut, name).value = value
        for stream, is_source in ((self.cq, False), (self.cc, True), (self.rq, True),
                                  (self.rc, False)):
            self._step(stream, is_source)
        self._interrupts(self.irq)
        self.now += 1
        for name in values:
            if name.endswith("msi_int") or name.endswith("tvalid"):
                getattr(self.dut, name).value = 0

    def rules(self):
        return {v.rule for v in self.violations}


def msi_trace(chk, *, mask):
    """Ask for MSI vector 0 with MSI enabled and the vector's mask bit ``mask``."""
    chk.step(cfg_interrupt_msi_enable=1, cfg_interrupt_msi_data=mask)
    chk.step()
    chk.step()
    chk.step(cfg_interrupt_msi_int=1)


@pytest.mark.parametrize("mask", [1, 0])
def test_msi_mask_fires_on_a_request_for_a_masked_vector(mask):
    """A shim that ignores the mask (as test_usp_irq's masked case would catch in RTL) asks for
    a masked vector: msi-mask fires; unmasked, the same request is fine."""
    chk = Checker(Dut())
    msi_trace(chk, mask=mask)
    assert ("msi-mask" in chk.rules()) == bool(mask), chk.violations


def rq_read(chk, **extra):
    """Offer one 1-DWORD memory read on RQ (64-bit interface: two beats)."""
    desc = [0x1000, 0x40, 1 | (0b0000 << 11), 0]
    chk.step(m_axis_rq_tvalid=1, m_axis_rq_tready=1, m_axis_rq_tkeep=3,
             m_axis_rq_tdata=desc[0] | desc[1] << 32, m_axis_rq_tlast=0,
             m_axis_rq_tuser=0xF, **extra)
    chk.step(m_axis_rq_tvalid=1, m_axis_rq_tready=1, m_axis_rq_tkeep=3,
             m_axis_rq_tdata=desc[2] | desc[3] << 32, m_axis_rq_tlast=1, m_axis_rq_tuser=0)


@pytest.mark.parametrize("flr", [1, 0])
def test_flr_quiet_fires_on_a_tlp_or_interrupt_during_flr(flr):
    """A shim that keeps sending while the IP reports an FLR in process: a read on RQ and an
    INTx assertion both fire flr-quiet; with no FLR, neither does."""
    chk = Checker(Dut())
    chk.step(cfg_flr_in_process=flr)
    rq_read(chk)
    assert ("flr-quiet" in chk.rules()) == bool(flr)
    chk.violations.clear()
    chk.step(cfg_interrupt_int=1, cfg_interrupt_pending=1)
    assert ("flr-quiet" in chk.rules()) == bool(flr), chk.violations
