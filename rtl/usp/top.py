"""The UltraScale+ top: VMShm's core, the completer and requester shims, flat hard-IP ports.

The ports carry the names of the user interface of a ``pcie4_uscale_plus`` hard IP (PG213), so
each wires straight to the instance; inside, the four AXI streams go through the gearboxes of
:mod:`~vmshm.rtl.usp.streams` to the completer (CQ, CC) and the requester (RQ, RC), and the
core's interrupts through :mod:`~vmshm.rtl.usp.irq`.
"""

from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from vmshm.abi import pci_regs as P
from vmshm.abi.regmap import (BAR0_SIZE, BAR_NAME, BAR_REGS, BAR_WINDOW, DEFAULT_NAME_SIZE,
                              DEFAULT_WINDOW_SIZE, PCI_DEVICE_ID, PCI_REVISION, PCI_SUBSYSTEM_ID,
                              PCI_SUBSYSTEM_VENDOR_ID, PCI_VENDOR_ID, VSEC_OFFSET,
                              capability_bytes, vsec_bytes)

from ..bars import BarDef
from ..core import DEFAULT_HOST_TIMEOUT, VMShmCore
from ..flr_hold import FlrHold
from ..layouts import ctl_req_layout, ctl_rsp_layout, db_layout, ring_layout
from .cfg_ext import CFG_EXT_PORTS, CfgExtVsec
from .completer import CqBuffer, USPCompleter
from .descriptors import CC_USER_WIDTH, CQ_USER_WIDTH, RC_USER_WIDTH, RQ_USER_WIDTH
from .irq import INTX_PORTS, MSI_PORTS, USPInterrupts
from .requester import DEFAULT_CPL_TIMEOUT, USPRequester
from .streams import AxisSkid, AxisToDwords, DwordsToAxis

__all__ = ["AXIS_WIDTHS", "VMShmUSP"]

#: AXI-stream data widths the shim is built and verified at.
AXIS_WIDTHS = (64, 128, 256)


def _check_width(width):
    if width not in AXIS_WIDTHS:
        raise ValueError(f"axis_width must be one of {', '.join(map(str, AXIS_WIDTHS))}, "
                         f"not {width!r}")


class VMShmUSP(wiring.Component):
    """Put VMShm behind a Xilinx UltraScale+ PCIe hard IP: core, completer and requester shims.

    The hard IP owns the configuration space: it must be configured with the BARs of
    :attr:`bars` (see :meth:`hard_ip_config`), DWORD-aligned interfaces without straddling,
    client tags and no extended tags. Ports carry the hard IP's user-interface names, seen
    from the user logic (``s_axis_cq_*`` is the IP's ``m_axis_cq_*``), so each wires straight
    to the instance; ``ctl_req`` and ``ctl_rsp`` are VMShm's own control channel to the host
    (OPEN with the name, CLOSE; the answer carries the object's size and host address), and
    ``db``, ``ring``, ``peer_valid``, ``peer_id`` its doorbell ports, as the core's. A
    control request leaves only after the DMA writes before it have been flushed to the host.
    ``cfg_function_status`` is registered inside (PF0's Memory Space and Bus Master Enable,
    Interrupt Disable). The core's interrupts reach the IP's legacy and MSI interrupt ports
    through :class:`~vmshm.rtl.usp.irq.USPInterrupts` (INTA, or one MSI vector; see
    :meth:`hard_ip_config`).

    Parameters
    ----------
    axis_width : int
        Width of the four AXI streams: 64, 128 or 256 bits.
    window_size, name_size, regs_size, host_timeout
        As for :class:`~vmshm.rtl.VMShmCore`; ``regs_size`` is 256 or 4096.
    data_width : int
        The core's data width: 32, one DWORD a beat, as TLPs count them.
    window_64bit : bool
        Make the window a 64-bit prefetchable BAR (and the name buffer BAR3), as PCIe asks of
        an endpoint's prefetchable BARs (the default); ``False`` makes it a 32-bit
        non-prefetchable BAR (BAR1, the name buffer BAR2), which is what QEMU's PCI proxy can
        carry. ``regs_size=4096, name_size=4096`` make the register and name BARs a page each,
        so a hypervisor can pass them through to a guest.
    cpl_timeout : int
        Cycles the requester waits for read completions before failing them.
    vendor_id, device_id, subsystem_vendor_id, subsystem_id, revision, class_code
        Identity the hard IP must be configured with (:meth:`hard_ip_config`); the Verilog does
        not depend on them.
    """

    def __init__(self, *, axis_width=64, window_size=DEFAULT_WINDOW_SIZE,
                 name_size=DEFAULT_NAME_SIZE, data_width=32, regs_size=BAR0_SIZE,
                 window_64bit=True, host_timeout=DEFAULT_HOST_TIMEOUT,
                 cpl_timeout=DEFAULT_CPL_TIMEOUT, vendor_id=PCI_VENDOR_ID,
                 device_id=PCI_DEVICE_ID, subsystem_vendor_id=PCI_SUBSYSTEM_VENDOR_ID,
                 subsystem_id=PCI_SUBSYSTEM_ID, revision=PCI_REVISION,
                 class_code=P.PCI_CLASS_MEMORY_RAM << 8):
        try:
            _check_width(axis_width)
            if data_width != 32:
                raise ValueError(f"data_width must be 32 for the UltraScale+ shim (one DWORD a "
                                 f"beat, as TLPs count them), not {data_width!r}")
            if regs_size not in (BAR0_SIZE, 4096):
                raise ValueError(f"regs_size must be {BAR0_SIZE} or 4096, not {regs_size!r}")
            if not isinstance(cpl_timeout, int) or cpl_timeout < 1:
                raise ValueError(f"cpl_timeout must be a positive integer, not {cpl_timeout!r}")
            for name, value, bits in (("vendor_id", vendor_id, 16), ("device_id", device_id, 16),
                                      ("subsystem_vendor_id", subsystem_vendor_id, 16),
                                      ("subsystem_id", subsystem_id, 16),
                                      ("revision", revision, 8), ("class_code", class_code, 24)):
                if not isinstance(value, int) or not 0 <= value < (1 << bits):
                    raise ValueError(f"{name} must be an integer of {bits} bits, not {value!r}")
            self._core = VMShmCore(window_size=window_size, name_size=name_size, data_width=32,
                                   regs_size=regs_size, host_timeout=host_timeout)
        except ValueError:
            self._MustUse__silence = True     # refused: never meant to be elaborated
            raise
        self._axis_width = axis_width
        self._cpl_timeout = cpl_timeout
        self._ids = dict(vendor_id=vendor_id, device_id=device_id,
                         subsystem_vendor_id=subsystem_vendor_id, subsystem_id=subsystem_id,
                         revision=revision, class_code=class_code)
        # The soft front end's layout (VMShmPCI), so one driver finds both the same way.
        self._bars = (
            BarDef(BAR_REGS, 0, regs_size),
            BarDef(BAR_WINDOW, 1, window_size, is64=window_64bit, prefetch=window_64bit),
            BarDef(BAR_NAME, 3 if window_64bit else 2, name_size),
        )
        W = axis_width
        members = {"user_clk": In(1), "user_reset": In(1)}
        for prefix, user, sink in (("s_axis_cq", CQ_USER_WIDTH, True),
                                   ("m_axis_cc", CC_USER_WIDTH, False),
                                   ("m_axis_rq", RQ_USER_WIDTH, False),
                                   ("s_axis_rc", RC_USER_WIDTH, True)):
            fwd, back = (In, Out) if sink else (Out, In)
            members.update({
                f"{prefix}_tdata": fwd(W), f"{prefix}_tuser": fwd(user),
                f"{prefix}_tlast": fwd(1), f"{prefix}_tkeep": fwd(W // 32),
                f"{prefix}_tvalid": fwd(1), f"{prefix}_tready": back(1),
            })
        members.update({
            "pcie_cq_np_req":       Out(2),
            "pcie_cq_np_req_count": In(6),
            "pcie_rq_seq_num0":     In(6),
            "pcie_rq_seq_num_vld0": In(1),
            "cfg_max_payload":      In(2),
            "cfg_max_read_req":     In(3),
            "cfg_function_status":  In(16),
            "cfg_flr_in_process":   In(4),
            "cfg_flr_done":         Out(4),
            "ctl_req":              Out(stream.Signature(ctl_req_layout())),
            "ctl_rsp":              In(stream.Signature(ctl_rsp_layout())),
            "db":                   Out(stream.Signature(db_layout())),
            "ring":                 In(stream.Signature(ring_layout())),
            "peer_valid":           In(1),
            "peer_id":              In(16),
        })
        for name, (direction, width) in {**INTX_PORTS, **MSI_PORTS, **CFG_EXT_PORTS}.items():
            members[name] = direction(width)
        super().__init__(members)

    @property
    def core(self):
        return self._core

    @property
    def axis_width(self):
        return self._axis_width

    @property
    def bars(self):
        """The BARs the hard IP must be configured with, as :class:`~vmshm.rtl.BarDef`."""
        return self._bars

    @property
    def ids(self):
        return dict(self._ids)

    @property
    def window_size(self):
        return self._core.window_size

    @property
    def name_size(self):
        return self._core.name_size

    @property
    def host_timeout(self):
        return self._core.host_timeout

    def _cap_fields(self):
        bar_of = {b.function: b.index for b in self._bars}
        return dict(window_size=self.window_size, name_size=self.name_size,
                    regs_bar=bar_of[BAR_REGS], window_bar=bar_of[BAR_WINDOW],
                    name_bar=bar_of[BAR_NAME])

    def capability(self):
        """Return VMShm's legacy vendor-specific capability as bytes (ID 09h, next pointer 0).

        The soft front end holds these bytes at 0x40; this top presents the same fields as the
        VSEC of :meth:`vsec` instead, which is what the hard IP has room for.
        """
        return capability_bytes(**self._cap_fields())

    def vsec(self):
        """Return the Vendor-Specific Extended Capability the top serves at 0x480 on
        ``cfg_ext_*`` (:func:`~vmshm.abi.regmap.vsec_bytes`; the end of the extended list)."""
        return vsec_bytes(**self._cap_fields())

    def hard_ip_config(self):
        """Return the hard IP settings this top needs, as plain data.

        ``bars`` maps each BAR index to ``{"size", "64bit", "prefetchable"}`` (memory BARs; the
        others disabled); ``ids`` the identity; ``interface`` the user-interface options;
        ``interrupts`` the legacy Interrupt Pin (1, INTA) and the MSI capability (one vector,
        64-bit address, per-vector masking; no MSI-X); ``capability`` the legacy vendor-specific
        capability's bytes (the fields the driver reads); ``cfg_ext`` the configuration
        extension interface: the user extended space on, the legacy one off, the IP's last
        extended capability's next pointer at ``vsec_offset``, where the top serves ``vsec``.
        """
        return {
            "bars": {b.index: {"size": b.size, "64bit": b.is64, "prefetchable": b.prefetch}
                     for b in self._bars},
            "ids": self.ids,
            "interface": {"axis_width": self._axis_width, "alignment": "dword",
                          "straddle": False, "client_tag": True, "extended_tag": False},
            "interrupts": {"intx_pin": 1, "msi_vectors": 1, "msi_64bit": True,
                           "msi_per_vector_mask": True, "msix": False},
            "capability": self.capability(),
            "cfg_ext": {"extended": True, "legacy": False, "vsec_offset": VSEC_OFFSET,
                        "vsec": self.vsec()},
        }

    def elaborate(self, platform):
        m = Module()
        # The hard IP's user clock and reset drive everything, under their own names.
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.d.comb += [cd_sync.clk.eq(self.user_clk), cd_sync.rst.eq(self.user_reset)]

        # Function Level Reset (PF0): the IP holds cfg_flr_in_process until the user logic says
        # it is done. cfg_flr_in_process is registered first (a hard-IP output fans out to every
        # flip-flop of the function through the reset). The function's logic is reset for one
        # cycle, on the edge the core starts clearing its name RAM (``flr_start``); done is
        # pulsed once the core says the clearing is over (``flr_busy`` low again, PCIe Base
        # 6.6.2: nothing of the previous user stays readable). A core without that sequencer
        # (no ``flr_busy``) is done the cycle after its reset. The streams' converters are not
        # reset: a whole TLP already buffered for CC or RQ still leaves whole, and the IP frames
        # CQ and RC across the reset. Physical functions 1 to 3 have no logic here: theirs is
        # done at once.
        flr = Signal(4)
        m.d.sync += flr.eq(self.cfg_flr_in_process)
        flr_start = Signal(4)
        flr_seen = Signal(4)
        m.d.comb += flr_start.eq(flr & ~flr_seen)
        m.d.sync += flr_seen.eq(flr & (flr_seen | flr_start))
        flr_reset = Signal()
        m.d.comb += flr_reset.eq(flr_start[0])
        function = ResetInserter(flr_reset)

        W = self._axis_width
        m.submodules.core = function(self._core)
        core = self._core
        clearing = Signal()         # PF0's FLR waits for the core's name RAM to be cleared
        flr_busy = core.flr_busy
        m.d.comb += core.flr_start.eq(flr_reset)
        with m.If(flr_start[0]):
            m.d.sync += clearing.eq(1)
        with m.Elif(clearing & ~flr_busy):
            m.d.sync += clearing.eq(0)
        m.d.sync += self.cfg_flr_done.eq(Cat(clearing & ~flr_busy & ~flr_start[0],
                                             flr_start[1:]))
        m.submodules.cq_rx = cq_rx = AxisToDwords(W, CQ_USER_WIDTH)
        m.submodules.cc_tx = cc_tx = DwordsToAxis(W, CC_USER_WIDTH)
        m.submodules.rq_tx = rq_tx = DwordsToAxis(W, RQ_USER_WIDTH,
                                                  sop_user_width=RQ_USER_WIDTH)
        m.submodules.rc_rx = rc_rx = AxisToDwords(W, RC_USER_WIDTH)
        completer = USPCompleter(self._bars, self._core.addr_width)
        requester = USPRequester(self._core.addr_width, cpl_timeout=self._cpl_timeout)
        m.submodules.completer = function(completer)
        m.submodules.requester = function(requester)
        m.d.comb += [rq_tx.clear.eq(flr_reset), requester.flr.eq(flr_reset),
                     requester.link_reset.eq(self.user_reset)]

        def wire(prefix, axis, sink):
            # Through a skid buffer each way: at 250 MHz no path may run from a hard-IP output
            # into logic and back out to a hard-IP input in one cycle (CQ/RC tready from tkeep,
            # the CC/RQ packet FIFO's read address from tready; issue 22, finding 6).
            user_width = len(axis.tuser)
            skid = AxisSkid(W, user_width)
            m.submodules[f"{prefix}_skid"] = skid
            outer, inner = (skid.i, skid.o) if sink else (skid.o, skid.i)
            for name in ("tdata", "tuser", "tlast", "tkeep", "tvalid"):
                port = getattr(self, f"{prefix}_{name}")
                m.d.comb += getattr(outer, name).eq(port) if sink else port.eq(getattr(outer,
                                                                                     name))
            ready = getattr(self, f"{prefix}_tready")
            m.d.comb += ready.eq(outer.tready) if sink else outer.tready.eq(ready)
            if sink:
                wiring.connect(m, inner, axis)
            else:
                wiring.connect(m, axis, inner)

        wire("s_axis_cq", cq_rx.axis, sink=True)
        wire("m_axis_cc", cc_tx.axis, sink=False)
        wire("m_axis_rq", rq_tx.axis, sink=False)
        wire("s_axis_rc", rc_rx.axis, sink=True)

        cq_buf = CqBuffer()
        m.submodules.cq_buf = function(cq_buf)
        wiring.connect(m, cq_rx.dw, cq_buf.i)
        wiring.connect(m, cq_buf.o, completer.cq)
        m.d.comb += [completer.np_dropped.eq(cq_buf.np_dropped),
                     completer.cpl_error.eq(core.cpl_error),
                     completer.post_ok.eq(core.post_ok),
                     cc_tx.clear.eq(flr_reset | completer.cc_clear)]
        wiring.connect(m, completer.cc, cc_tx.dw)
        wiring.connect(m, completer.req, core.req)
        wiring.connect(m, core.cpl, completer.cpl)
        wiring.connect(m, requester.rq, rq_tx.dw)
        wiring.connect(m, rc_rx.dw, requester.rc)
        wiring.connect(m, core.host.dma_req, requester.dma_req)
        wiring.connect(m, requester.dma_rsp, core.host.dma_rsp)
        wiring.connect(m, core.host.ctl_rsp, wiring.flipped(self.ctl_rsp))
        # The FLR resets the core but not the host: a doorbell or control beat on offer stays
        # on offer until taken (rtl/flr_hold.py). The DMA port is the requester's, reset too.
        m.submodules.db_hold = db_hold = FlrHold(self.db.payload.shape())
        m.submodules.ctl_hold = ctl_hold = FlrHold(self.ctl_req.payload.shape())
        m.d.comb += [db_hold.flr.eq(flr_reset), ctl_hold.flr.eq(flr_reset)]
        wiring.connect(m, core.host.db, db_hold.i)
        wiring.connect(m, db_hold.o, wiring.flipped(self.db))
        wiring.connect(m, core.host.ring, wiring.flipped(self.ring))
        m.d.comb += [core.host.peer_valid.eq(self.peer_valid),
                     core.host.peer_id.eq(self.peer_id)]
        # A control request waits until the writes before it have reached host memory: the
        # host may unmap the object the moment it sees CLOSE.
        ctl = core.host.ctl_req
        m.d.comb += [
            requester.flush.eq(ctl.valid),
            ctl_hold.i.valid.eq(ctl.valid & ~requester.dirty),
            ctl_hold.i.payload.eq(ctl.payload),
            ctl.ready.eq(ctl_hold.i.ready & ~requester.dirty),
        ]
        wiring.connect(m, ctl_hold.o, wiring.flipped(self.ctl_req))

        # cfg_function_status holds 4 bits per physical function; PF0's bit 1 is Memory Space
        # Enable, bit 2 Bus Master Enable. Registered: they change only with configuration
        # writes, and the register keeps the IP's status off our critical paths.
        status = Signal(16)
        m.d.sync += status.eq(self.cfg_function_status)
        # The IP's other status outputs likewise, before they reach length arithmetic or a
        # state machine (finding 6): a sequence number reported a cycle later only delays a
        # write's acknowledgement; Max_Payload_Size and Max_Read_Request_Size change only
        # with configuration writes, while the function is quiet.
        max_payload, max_read_req = Signal(2), Signal(3)
        np_req_count, seq_num, seq_num_valid = Signal(6), Signal(6), Signal()
        m.d.sync += [max_payload.eq(self.cfg_max_payload),
                     max_read_req.eq(self.cfg_max_read_req),
                     np_req_count.eq(self.pcie_cq_np_req_count),
                     seq_num.eq(self.pcie_rq_seq_num0),
                     seq_num_valid.eq(self.pcie_rq_seq_num_vld0)]
        bus_master = status[2]
        m.d.comb += [
            completer.memory_enable.eq(status[1]),
            core.dma_enable.eq(bus_master),
            requester.bus_master.eq(bus_master),
            requester.host_base.eq(core.host_base),
            requester.max_payload.eq(max_payload),
            requester.max_read_req.eq(max_read_req),
            completer.max_payload.eq(max_payload),
            completer.np_req_count.eq(np_req_count),
            requester.seq_num.eq(seq_num),
            requester.seq_num_valid.eq(seq_num_valid),
            self.pcie_cq_np_req.eq(completer.np_req),
        ]

        # Interrupts: not reset by FLR, so a message the IP is sending is still answered; the
        # core's reset drops its level, which the INTx handshake then follows, and the IP's
        # own reset clears MSI Enable, which drops what is owed.
        m.submodules.interrupts = irq = USPInterrupts()
        m.d.comb += [
            irq.irq.eq(core.irq),
            irq.irq_msg.eq(core.irq_msg),
            irq.bus_master.eq(bus_master),
            irq.intx_disable.eq(status[3]),
        ]
        # The IP's interrupt outputs reach the shim through a register (finding 6): an answer
        # (sent, fail) seen a cycle later only delays the next request, and MSI Enable and the
        # mask bits change with configuration writes.
        for name, (direction, _) in {**INTX_PORTS, **MSI_PORTS}.items():
            port, inner = getattr(self, name), getattr(irq, name)
            if direction is Out:
                m.d.comb += port.eq(inner)
            else:
                m.d.sync += inner.eq(port)
        # A core that owes a message when messages become possible (MSI Enable or Bus Master
        # Enable rising with a vector pending; issue 22, finding 4) is told when they are:
        # PF0's MSI Enable, as the shim sees it, and Bus Master Enable.
        m.d.comb += core.msi_ok.eq(irq.cfg_interrupt_msi_enable[0] & bus_master)

        # VMShm's capability, which the IP's own configuration space has no room for, on its
        # configuration extension interface (issue 22, finding 9). Not reset by FLR: a read
        # the IP handed over is still answered.
        m.submodules.cfg_ext = cfg_ext = CfgExtVsec(self.vsec())
        for name, (direction, _) in CFG_EXT_PORTS.items():
            port, inner = getattr(self, name), getattr(cfg_ext, name)
            m.d.comb += port.eq(inner) if direction is Out else inner.eq(port)
        return m
