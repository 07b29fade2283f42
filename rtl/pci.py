"""VMShm as a PCI function: a Type-0 configuration space, BAR sizing and decode around the core.

:class:`VMShmPCI` is the soft front end for our own bus-functional models (a hard IP that owns the
configuration space gets a shim instead). :class:`PciBus` joins several functions on one shared
bus, the way a guest sees a PCI segment: configuration requests go to the addressed slot,
memory requests to everyone, and the function whose BAR decodes the address answers.
"""

from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from vmshm.abi import pci_regs as P
from vmshm.abi.config_space import CAP_OFFSET, CLASS_CODE, vmshm_bars, vmshm_config_space
from vmshm.abi.regmap import (BAR0_SIZE, CAP_LEN, DEFAULT_NAME_SIZE, DEFAULT_WINDOW_SIZE,
                              PCI_DEVICE_ID, PCI_REVISION, PCI_SUBSYSTEM_ID,
                              PCI_SUBSYSTEM_VENDOR_ID, PCI_VENDOR_ID)

from .bars import BarDef
from .config_regs import ConfigRegisters
from .core import DEFAULT_HOST_TIMEOUT, VMShmCore
from .flr_hold import FlrHold
from .layouts import CplStatus, Space, bus_req_layout, cpl_layout, msi_layout, pci_req_layout
from .refuse import refuse

__all__ = ["VMShmPCI", "PciBus", "VMShmSystem"]



def _check_id(name, value, bits):
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must be an integer of {bits} bits, not {value!r}")


def _connect_host(m, core, host, flr):
    """Connect the core's host side ``core`` to the function's ``host`` ports.

    The FLR (``flr``) resets the core but not the host: the beats the host was offered stay on
    offer until taken, and the core's RESET follows a DMA beat kept (rtl/flr_hold.py).
    """
    holds = {}
    for name in ("ctl_req", "dma_req", "db"):
        port = getattr(core, name)
        m.submodules[f"{name}_hold"] = holds[name] = hold = FlrHold(port.payload.shape())
        wiring.connect(m, port, hold.i)
        wiring.connect(m, hold.o, wiring.flipped(getattr(host, name)))
        m.d.comb += hold.flr.eq(flr)
    m.d.comb += holds["ctl_req"].wait.eq(holds["dma_req"].busy)
    for name in ("ctl_rsp", "dma_rsp", "ring"):
        wiring.connect(m, wiring.flipped(getattr(host, name)), getattr(core, name))
    m.d.comb += [core.peer_valid.eq(host.peer_valid), core.peer_id.eq(host.peer_id)]


class VMShmPCI(wiring.Component):
    """Wrap a :class:`~vmshm.rtl.VMShmCore` in a PCI function with a Type-0 header.

    BAR0 holds the registers, BAR1 the window (prefetchable; with ``window_64bit`` a 64-bit BAR
    that also takes BAR2's register), and the next free BAR the name buffer (BAR2, or BAR3 with a
    64-bit window). A vendor-specific capability tells the driver the indices and sizes.
    Nothing decodes until Memory Space Enable is set; without Bus Master Enable OPEN returns
    ``EPERM`` and the window rejects accesses. Requests nobody claims are answered UR. A PCI
    Express capability offers Function Level Reset: setting Initiate FLR in its Device
    Control register resets the core as ``rst`` does (the host hears of it as a RESET, after
    any beat it was offered: :class:`~vmshm.rtl.flr_hold.FlrHold`) and clears the command
    register, the BARs and MSI's registers. The header and the capabilities
    (where each sits, what a write does to each field) are
    :func:`~vmshm.abi.config_space.vmshm_config_space`'s; ``docs/config_space.md`` lists them.

    Parameters
    ----------
    window_size, name_size, data_width, host_timeout
        As for :class:`~vmshm.rtl.VMShmCore`; besides, the name buffer spans at least 16 bytes
        (the smallest memory BAR) and the window at most 2 GiB (the capability's 32-bit field).
    regs_size : int
        Size of BAR0: 256 (default) or 4096.
    window_64bit : bool
        Make the window a 64-bit BAR.
    vendor_id, device_id, subsystem_vendor_id, subsystem_id, revision, class_code
        Identity in the configuration header. ``vendor_id`` may be neither 0xFFFF nor 0, which
        a PCI core takes for an empty slot.

    Members
    -------
    req : ``In(stream.Signature(pci_req_layout(data_width)))``
        Memory and configuration requests from the bus.
    cpl : ``Out(stream.Signature(cpl_layout(data_width)))``
        Completions to the bus.
    host : ``Out(host_signature(...))``
        The core's host side, passed through.
    intx : ``Out(1)``
        INTA#, active high: the core's ``irq`` while neither the Command register's Interrupt
        Disable nor MSI Enable is set. Status bit 3 reads ``irq`` whatever they say.
    msi : ``Out(stream.Signature(msi_layout()))``
        MSI messages: one beat (Message Data to Message Address) per ``irq_msg`` pulse of the
        core while MSI Enable and Bus Master Enable are set. A pulse while a message is still
        on offer is merged into it: the guest learns of every bit from INTR_STATUS.
    """

    def __init__(self, *, window_size=DEFAULT_WINDOW_SIZE, name_size=DEFAULT_NAME_SIZE,
                 data_width=32, host_timeout=DEFAULT_HOST_TIMEOUT, regs_size=BAR0_SIZE,
                 window_64bit=False, vendor_id=PCI_VENDOR_ID, device_id=PCI_DEVICE_ID,
                 subsystem_vendor_id=PCI_SUBSYSTEM_VENDOR_ID, subsystem_id=PCI_SUBSYSTEM_ID,
                 revision=PCI_REVISION, class_code=CLASS_CODE):
        try:
            for name, value, bits in (("vendor_id", vendor_id, 16), ("device_id", device_id, 16),
                                      ("subsystem_vendor_id", subsystem_vendor_id, 16),
                                      ("subsystem_id", subsystem_id, 16),
                                      ("revision", revision, 8), ("class_code", class_code, 24)):
                _check_id(name, value, bits)
            if vendor_id == P.PCI_ANY_ID:
                raise ValueError("vendor_id 0xffff is what an empty slot reads; choose another")
            if vendor_id == 0:
                raise ValueError("vendor_id 0x0000 is not a valid vendor: Linux's PCI core "
                                 "takes it for an empty slot; choose another")
            if regs_size not in (BAR0_SIZE, 4096):
                raise ValueError(f"regs_size must be {BAR0_SIZE} or 4096, not {regs_size!r}")
            # A memory BAR's bits 3:0 are its read-only type bits, so it spans at least 16 bytes.
            if isinstance(name_size, int) and name_size < 16:
                raise ValueError(f"name_size must be at least 16, the smallest memory BAR, "
                                 f"not {name_size!r}")
            # The capability's WINDOW_SIZE has 32 bits (and a 32-bit BAR spans at most 2 GiB).
            if isinstance(window_size, int) and window_size > 1 << 31:
                raise ValueError(f"window_size must be at most 2 GiB, what the capability's "
                                 f"32-bit WINDOW_SIZE field can tell, not {window_size:#x}")
            self._core = VMShmCore(window_size=window_size, name_size=name_size,
                                   data_width=data_width, regs_size=regs_size,
                                   host_timeout=host_timeout)
        except ValueError:
            self._MustUse__silence = True
            raise
        self._ids = dict(vendor_id=vendor_id, device_id=device_id,
                         subsystem_vendor_id=subsystem_vendor_id, subsystem_id=subsystem_id,
                         revision=revision, class_code=class_code)
        self._bars = tuple(BarDef(*b) for b in vmshm_bars(
            regs_size=regs_size, window_size=window_size, name_size=name_size,
            window_64bit=window_64bit))
        self._config = vmshm_config_space(bars=self._bars, window_size=window_size,
                                          name_size=name_size, **self._ids)
        super().__init__({
            "req":  In(stream.Signature(pci_req_layout(data_width))),
            "cpl":  Out(stream.Signature(cpl_layout(data_width))),
            "host": Out(self._core.signature.members["host"].signature),
            "intx": Out(1),
            "msi":  Out(stream.Signature(msi_layout())),
        })

    @property
    def core(self):
        return self._core

    @property
    def bars(self):
        """The BARs, as :class:`BarDef` records."""
        return self._bars

    @property
    def ids(self):
        return dict(self._ids)

    @property
    def data_width(self):
        return self._core.data_width

    @property
    def config_space(self):
        """The configuration space's description (:class:`~vmshm.abi.config_space.ConfigSpace`)."""
        return self._config

    def capability(self):
        """Return VMShm's vendor-specific capability as the bytes this function presents."""
        return self._config.reset_bytes(CAP_OFFSET, CAP_LEN)

    @property
    def window_size(self):
        return self._core.window_size

    @property
    def name_size(self):
        return self._core.name_size

    @property
    def host_timeout(self):
        return self._core.host_timeout

    def elaborate(self, platform):
        m = Module()
        core = self._core
        # A Function Level Reset resets the core as its `rst` would; the front end finishes the
        # configuration write that asked for it, then forgets its command register and BARs.
        flr = Signal()
        m.submodules.core = ResetInserter(flr)(core)
        _connect_host(m, core.host, self.host, flr)

        W = self.data_width
        wb = W // 8
        wshift = exact_log2(wb)
        ones = (1 << W) - 1
        req = self.req.payload

        # -- configuration space: its registers come from the description ----------------------
        m.submodules.config = regs = ConfigRegisters(self._config, W)
        command = regs.command
        mse = command[1]
        m.d.comb += core.dma_enable.eq(command[2])
        # Signaled Target Abort: the function answered a read with data the host failed to give
        # (the guest reads all ones).
        m.d.comb += [regs.status_sig_target_abort_set.eq(core.cpl.valid & core.cpl.ready &
                                                         core.cpl_error),
                     regs.status_interrupt.eq(core.irq)]

        # -- interrupts: INTx, and the MSI capability's registers --------------------------------
        msi_enable = regs.msi_enable
        msi_addr = Cat(regs.msi_address_lo, regs.msi_address_hi)   # bits 1:0 stay 0
        # An FLR is in process from Initiate FLR until the core has cleared its name RAM: no
        # interrupt of any kind meanwhile (PCIe Base 6.6.2).
        flr_busy = Signal()
        m.d.comb += flr_busy.eq(flr | core.flr_busy)
        m.d.comb += self.intx.eq(core.irq & ~command[10] & ~msi_enable & ~flr_busy)
        # A message may go out only while MSI Enable and Bus Master Enable are set and no FLR is
        # in process (issue 22, finding 3): one on offer when that ends is withdrawn. When it
        # begins with the interrupt pending, the core asks for one message (finding 4: the one
        # INTx stood for, or the withdrawn one). The message is latched when asked for and stays
        # on offer, unchanged, until taken or withdrawn.
        msi_ok = Signal()
        msi_pending = Signal()
        m.d.comb += [msi_ok.eq(msi_enable & command[2] & ~flr_busy), core.msi_ok.eq(msi_ok),
                     self.msi.valid.eq(msi_pending & msi_ok)]
        with m.If(self.msi.ready | ~msi_ok):
            m.d.sync += msi_pending.eq(0)
        with m.If(core.irq_msg & ~msi_pending):
            m.d.sync += [msi_pending.eq(1), self.msi.payload.addr.eq(msi_addr),
                         self.msi.payload.data.eq(regs.msi_data)]

        # -- BAR registers: the stored base keeps only the bits the BAR's size lets software set.
        bases = {b.index: Cat(*(getattr(regs, f"bar{i}")
                                for i in (b.index, b.index + 1)[:1 + b.is64]))
                 for b in self._bars}

        cfg_addr = Signal(12)       # byte offset of the current word in configuration space
        cfg_word = regs.rd_data
        m.d.comb += [regs.rd_addr.eq(cfg_addr[wshift:]), regs.wr_addr.eq(req.addr[wshift:12]),
                     regs.wr_data.eq(req.data), regs.wr_be.eq(req.be)]

        # -- memory decode: which BAR, if any, claims the request's address ----------------------
        hits = []
        for b in self._bars:
            size_bits = exact_log2(b.size)
            base = bases[b.index]
            if b.is64:
                match = req.addr[size_bits:] == base[size_bits:]
            else:
                match = (req.addr[32:] == 0) & (req.addr[size_bits:32] == base[size_bits:])
            end = Signal(size_bits + 10, name=f"bar{b.index}_end")
            m.d.comb += end.eq(req.addr[wshift:size_bits] + req.count + 1)
            hit = Signal(name=f"bar{b.index}_hit")
            m.d.comb += hit.eq(mse & match & (end <= (b.size >> wshift)))
            hits.append((b, hit))
        claimed = Cat(h for _, h in hits).any()

        tgt_bar = Signal(3)
        tgt_off = Signal(core.addr_width)
        remaining = Signal(8)
        count = Signal(8)

        is_cfg = req.space == Space.CFG
        cfg_ok = is_cfg & req.sel & (req.count == 0) & (req.addr[12:] == 0)

        # The reset lasts one cycle, while the write's completion goes out: the command register,
        # the BARs and MSI's registers forget what they held (the description says which).
        # The core clears its name RAM from the same edge on (core.flr_busy).
        m.d.comb += [regs.flr.eq(flr), core.flr_start.eq(flr)]
        with m.If(flr):
            m.d.sync += flr.eq(0)
        with m.If(regs.exp_initiate_flr):
            m.d.sync += flr.eq(1)
        # The core's request payload comes straight from registers (and the bus), whatever the
        # state: only `valid` waits for FORWARD. Gated by the state, it would put this state
        # machine in front of the core's decode adders, the slowest path of the function.
        m.d.comb += [
            core.req.payload.bar.eq(tgt_bar),
            core.req.payload.addr.eq(tgt_off),
            core.req.payload.write.eq(req.write),
            core.req.payload.count.eq(count),
            core.req.payload.data.eq(req.data),
            core.req.payload.be.eq(req.be),
        ]

        with m.FSM(name="fsm"):
            with m.State("IDLE"):
                with m.If(self.req.valid):
                    m.d.sync += [remaining.eq(req.count), count.eq(req.count),
                                 cfg_addr.eq(req.addr[:12])]
                    with m.If(cfg_ok):
                        m.d.comb += self.req.ready.eq(1)
                        with m.If(req.write):
                            m.d.comb += regs.we.eq(1)
                            m.next = "ACK"
                        with m.Else():
                            m.next = "CFG-READ"
                    with m.Elif(~is_cfg & claimed):
                        for b, hit in hits:
                            with m.If(hit):
                                m.d.sync += [tgt_bar.eq(b.function),
                                             tgt_off.eq(req.addr[:exact_log2(b.size)])]
                        m.next = "FORWARD"
                    with m.Elif(req.write):
                        m.next = "DROP"
                    with m.Else():
                        m.d.comb += self.req.ready.eq(1)
                        m.next = "UR-READ"

            with m.State("FORWARD"):
                m.d.comb += [
                    core.req.valid.eq(self.req.valid),
                    self.req.ready.eq(core.req.ready),
                ]
                with m.If(self.req.valid & core.req.ready):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(~req.write | (remaining == 0)):
                        m.next = "COMPLETE"

            with m.State("COMPLETE"):
                wiring.connect(m, core.cpl, wiring.flipped(self.cpl))
                with m.If(self.cpl.valid & self.cpl.ready & self.cpl.payload.last):
                    m.next = "IDLE"

            with m.State("CFG-READ"):
                m.d.comb += [
                    self.cpl.valid.eq(1),
                    self.cpl.payload.data.eq(cfg_word),
                    self.cpl.payload.status.eq(CplStatus.SC),
                    self.cpl.payload.last.eq(1),
                ]
                with m.If(self.cpl.ready):
                    m.next = "IDLE"

            with m.State("ACK"):
                m.d.comb += [
                    self.cpl.valid.eq(1),
                    self.cpl.payload.status.eq(CplStatus.SC),
                    self.cpl.payload.last.eq(1),
                ]
                with m.If(self.cpl.ready):
                    m.next = "IDLE"

            with m.State("DROP"):
                m.d.comb += self.req.ready.eq(1)
                with m.If(self.req.valid):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 0):
                        m.next = "UR-ACK"

            with m.State("UR-ACK"):
                m.d.comb += [
                    self.cpl.valid.eq(1),
                    self.cpl.payload.status.eq(CplStatus.UR),
                    self.cpl.payload.last.eq(1),
                ]
                with m.If(self.cpl.ready):
                    m.next = "IDLE"

            with m.State("UR-READ"):
                m.d.comb += [
                    self.cpl.valid.eq(1),
                    self.cpl.payload.data.eq(ones),
                    self.cpl.payload.status.eq(CplStatus.UR),
                    self.cpl.payload.last.eq(remaining == 0),
                ]
                with m.If(self.cpl.ready):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 0):
                        m.next = "IDLE"
        # What the formal properties (formal/) look at inside; not a port, changes nothing.
        self._probe = {"flr": flr, "msi_ok": msi_ok}
        return m


class PciBus(wiring.Component):
    """Join PCI functions on one shared bus, as slots on a conventional PCI segment.

    A configuration request goes to the slot its ``dev`` names (the others see IDSEL low); a
    memory request goes to every slot. The bus waits until every slot has taken each beat and
    answered each completion beat, and passes on the one that claimed it (status SC), or UR if
    none did: an empty slot or an unclaimed address reads all ones, as on real hardware.

    Parameters
    ----------
    count : int
        Number of slots, 1 to 32.
    data_width : int
        Data width of the bus and its functions.

    Members
    -------
    req : ``In(stream.Signature(bus_req_layout(data_width)))``
    cpl : ``Out(stream.Signature(cpl_layout(data_width)))``
    slot{i}_req : ``Out(stream.Signature(pci_req_layout(data_width)))``
    slot{i}_cpl : ``In(stream.Signature(cpl_layout(data_width)))``
    """

    def __init__(self, count, data_width):
        if not isinstance(count, int) or not 1 <= count <= 32:
            refuse(self, f"count must be an integer from 1 to 32, not {count!r}")
        self._count = count
        members = {
            "req": In(stream.Signature(bus_req_layout(data_width))),
            "cpl": Out(stream.Signature(cpl_layout(data_width))),
        }
        for i in range(count):
            members[f"slot{i}_req"] = Out(stream.Signature(pci_req_layout(data_width)))
            members[f"slot{i}_cpl"] = In(stream.Signature(cpl_layout(data_width)))
        super().__init__(members)

    def slot(self, i):
        """Return the request and completion streams of slot ``i``."""
        return getattr(self, f"slot{i}_req"), getattr(self, f"slot{i}_cpl")

    def elaborate(self, platform):
        m = Module()
        n = self._count
        req = self.req.payload
        taken = Signal(n)       # slots that took the current request beat
        slots = [self.slot(i) for i in range(n)]

        # Requests: offer the beat to every slot that has not taken it yet.
        all_taken = Signal()
        now_taken = Signal(n)
        for i, (s_req, _) in enumerate(slots):
            m.d.comb += [
                s_req.valid.eq(self.req.valid & ~taken[i]),
                s_req.payload.space.eq(req.space),
                s_req.payload.write.eq(req.write),
                s_req.payload.sel.eq(req.dev == i),
                s_req.payload.addr.eq(req.addr),
                s_req.payload.count.eq(req.count),
                s_req.payload.data.eq(req.data),
                s_req.payload.be.eq(req.be),
                now_taken[i].eq(taken[i] | (s_req.valid & s_req.ready)),
            ]
        m.d.comb += [all_taken.eq(now_taken.all()), self.req.ready.eq(all_taken)]
        with m.If(self.req.valid):
            m.d.sync += taken.eq(Mux(all_taken, 0, now_taken))

        # Completions: every slot answers every request beat-for-beat; pass on the claimer's.
        valids = Cat(c.valid for _, c in slots)
        m.d.comb += self.cpl.valid.eq(valids.all())
        m.d.comb += [
            self.cpl.payload.data.eq(C((1 << len(self.cpl.payload.data)) - 1)),
            self.cpl.payload.status.eq(CplStatus.UR),
            self.cpl.payload.last.eq(slots[0][1].payload.last),
        ]
        for _, c in reversed(slots):
            with m.If(c.payload.status == CplStatus.SC):
                m.d.comb += [self.cpl.payload.data.eq(c.payload.data),
                             self.cpl.payload.status.eq(CplStatus.SC)]
        for _, c in slots:
            m.d.comb += c.ready.eq(self.cpl.ready & valids.all())
        return m


class VMShmSystem(wiring.Component):
    """Put ``count`` VMShm functions on one :class:`PciBus`: what a guest's PCI segment holds.

    Parameters
    ----------
    count : int
        Number of devices.
    **params
        Passed to every :class:`VMShmPCI`.

    Members
    -------
    req, cpl
        The bus, as for :class:`PciBus`.
    host{i} : ``Out(host_signature(...))``
        Device ``i``'s host side.
    intx{i}, msi{i}
        Device ``i``'s interrupt line and MSI messages (see :class:`VMShmPCI`).
    """

    def __init__(self, count=1, **params):
        if not isinstance(count, int) or not 1 <= count <= 32:
            refuse(self, f"count must be an integer from 1 to 32, not {count!r}")
        self._functions = [VMShmPCI(**params) for _ in range(count)]
        self._bus = PciBus(count, self._functions[0].data_width)
        fn = self._functions[0]
        members = {
            "req": In(stream.Signature(bus_req_layout(fn.data_width))),
            "cpl": Out(stream.Signature(cpl_layout(fn.data_width))),
        }
        for i in range(count):
            members[f"host{i}"] = Out(fn.signature.members["host"].signature)
        for i in range(count):
            members[f"intx{i}"] = Out(1)
            members[f"msi{i}"] = Out(stream.Signature(msi_layout()))
        super().__init__(members)

    @property
    def functions(self):
        return list(self._functions)

    @property
    def data_width(self):
        return self._functions[0].data_width

    def host(self, i):
        """Return device ``i``'s host side."""
        return getattr(self, f"host{i}")

    def elaborate(self, platform):
        m = Module()
        m.submodules.bus = bus = self._bus
        wiring.connect(m, wiring.flipped(self.req), bus.req)
        wiring.connect(m, bus.cpl, wiring.flipped(self.cpl))
        for i, fn in enumerate(self._functions):
            m.submodules[f"fn{i}"] = fn
            s_req, s_cpl = bus.slot(i)
            wiring.connect(m, s_req, fn.req)
            wiring.connect(m, fn.cpl, s_cpl)
            wiring.connect(m, wiring.flipped(self.host(i)), fn.host)
            m.d.comb += getattr(self, f"intx{i}").eq(fn.intx)
            wiring.connect(m, fn.msi, wiring.flipped(getattr(self, f"msi{i}")))
        return m
