"""VMShmCore: the device function behind any PCI front end.

The guest side takes requests already tagged with a BAR number and returns completions; the host
side opens objects over a control channel and moves window data over a DMA master. The core serves
one guest request at a time, so a read after a write always sees it, with one exception: a window
write that comes while a window read waits for the host's data passes it (PCIe lets posted
requests pass non-posted ones, and a root port may hold the read's data behind the writes it
queued for us: issue 22, finding 2). Its completion comes before the read's next beat.

The core decodes the request, serves the register file and the name RAM, and hands the rest to
its components, joined by a few signals: the register file (:mod:`~vmshm.rtl.registers`, every
register's access action from the register map), the doorbells (:mod:`~vmshm.rtl.doorbell`),
the control channel (:mod:`~vmshm.rtl.control`: OPEN and CLOSE, behind start/busy/done) and the
window's DMA (:mod:`~vmshm.rtl.window`).
"""

from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from vmshm.abi.regmap import (BAR0_SIZE, BAR_NAME, BAR_REGS, BAR_WINDOW, DEFAULT_NAME_SIZE,
                              DEFAULT_WINDOW_SIZE, CtlOp)

from .control import ControlChannel
from .doorbell import Doorbells
from .layouts import CplStatus, cpl_layout, guest_req_layout, host_signature
from .registers import RegisterFile
from .timer import HostTimer
from .window import WindowDMA

__all__ = ["VMShmCore", "DEFAULT_HOST_TIMEOUT"]

#: Cycles the core waits on the host before it gives up (ETIMEDOUT, or all ones for DMA): an OPEN
#: that times out completes after 5619 + 6 cycles, 45 µs at 125 MHz, within 90 % of a PCIe root
#: port's shortest default completion timeout (50 µs). See docs/timing.md.
DEFAULT_HOST_TIMEOUT = 5619


def _check_pow2(name, value, minimum):
    if not isinstance(value, int) or value < minimum or value & (value - 1):
        raise ValueError(f"{name} must be a power of two no smaller than {minimum}, not {value!r}")


class _Request:
    """The guest request at hand, as the core latches it from its first beat.

    Besides the header (:meth:`VMShmCore._decode` adds the name RAM's ports and the decode of a
    new request's first beat), the few registers the core's states share.
    """

    def __init__(self, word_bits, data_width):
        wb = data_width // 8
        self.bar = Signal(3)
        self.in_bar0 = Signal()             # the request lies inside the registers
        self.waddr = Signal(word_bits)      # word address of the current beat
        self.remaining = Signal(8)          # beats after the current one
        self.count = Signal(8)              # beats - 1 of the whole request
        self.rd_be = Signal(wb)
        self.first = Signal()               # the current read beat is the first
        self.cpl_status = Signal(CplStatus)
        # The burst ends in the object's last word, with MAP_SIZE inside that word.
        self.clip = Signal()
        self.host_failed = Signal()         # the all-ones beats being sent stand for a failed DMA
        self.rd_data = Signal(data_width)   # a read's word, or the name word OPEN streams
        self.name_load = Signal()           # rd_data takes the name RAM's output
        # A window write passing the waiting window read (issue 22, finding 2): its header.
        self.pw_waddr = Signal(word_bits)
        self.pw_remaining = Signal(8)
        self.pw_count = Signal(8)
        self.pw_clip = Signal()
        self.read_failed = Signal()         # the read gave up while the write passed it


class VMShmCore(wiring.Component):
    """Implement VMShm's BAR decoder, register file, name RAM and window.

    Parameters
    ----------
    window_size : int
        Size of BAR1 in bytes, a power of two (default 1 MiB).
    name_size : int
        Size of BAR2 in bytes, a power of two (default 1 KiB).
    data_width : int
        Width of the guest and DMA data paths in bits: 32 or 64.
    regs_size : int
        Size of the register BAR in bytes: 256 (the original's), or up to 4 KiB for guests that
        map whole pages. Offsets past the register map read 0.
    host_timeout : int
        Cycles to wait on the host (for it to take a request beat, or to answer) before
        completing the guest's access anyway: OPEN and CLOSE return ``ETIMEDOUT``, a window read
        returns all ones, a window write is dropped. The timer covers a whole OPEN or CLOSE, and
        each beat of a window burst. Beats the host had been offered stay owed and go out when
        it takes them (a write's rest with no byte enabled, an OPEN's rest as one RESET beat);
        late answers are dropped by tag, a late OPEN success is closed again. 0 waits for ever.
        docs/timing.md states the bound on every access. A DOORBELL write waits on the host
        only while the previous doorbell is still on offer, for at most this long; it is then
        dropped (and counted in TIMEOUTS).

    Members
    -------
    req : ``In(stream.Signature(guest_req_layout(...)))``
        Guest requests, tagged with a BAR number.
    cpl : ``Out(stream.Signature(cpl_layout(...)))``
        Completions to the guest.
    host : ``Out(host_signature(...))``
        The host side: ``ctl_req`` (OPEN with the name, CLOSE), ``ctl_rsp`` (the host's
        answers), ``dma_req`` (window reads and writes at an offset into the object) and
        ``dma_rsp`` (read data and write acknowledgements), ``db`` (the guest's doorbells),
        ``ring`` (the host's rings of the device's vectors), ``peer_valid``/``peer_id`` (what
        IVPOSITION reads).
    dma_enable : ``In(1)``
        Bus Master Enable. While it is low OPEN fails with ``EPERM`` and window accesses are
        rejected.
    cpl_error : ``Out(1)``
        With a ``cpl`` beat: its data never came, the host failed it (an error answer or none in
        time). The beat reads all ones; a PCIe front end answers Completer Abort instead.
    host_base : ``Out(64)``
        The host bus address of the open object (``ctl_rsp.payload.addr`` of the last successful
        OPEN): where a bus-addressed DMA master puts ``dma_req`` offset 0.
    irq : ``Out(1)``
        The interrupt, as a level: ``(INTR_STATUS & INTR_MASK) != 0``.
    msi_ok : ``In(1)``
        The front end may send a message now: MSI Enable and Bus Master Enable set, no FLR in
        process (high if the front end does not say).
    irq_msg : ``Out(1)``
        A one-cycle pulse, while ``msi_ok`` is high, each time ``INTR_STATUS & INTR_MASK`` gains
        a bit, and when ``msi_ok`` rises with a vector pending (the message owed since: issue 22,
        finding 4): a message-signalled front end sends one message per pulse (see
        :class:`~vmshm.rtl.doorbell.Doorbells`), and withdraws one on offer when ``msi_ok``
        falls.
    flr_start : ``In(1)``
        A Function Level Reset begins: the name RAM, which no reset clears, is cleared word by
        word, one word a cycle (PCIe Base 6.6.2: no trace of the previous user may stay readable).
        The sequencer's two registers are reset-less, so the front end may reset the rest of the
        core (``ResetInserter``) on the same edge.
    post_ok : ``Out(1)``
        A window read waits for the host's data: a window write offered on ``req`` this cycle
        passes it (it is taken, its completion comes before the read's next beat; issue 22,
        finding 2). A front end that holds a posted write behind a waiting read offers it only
        then, and so never waits on the core while the core waits on it.
    flr_busy : ``Out(1)``
        The clearing goes on (``name_size`` / (``data_width`` / 8) cycles from the edge after
        ``flr_start``): the core takes no guest request, and the front end reports the FLR as
        still in process (UltraScale+: ``cfg_flr_done`` waits for it) and sends no interrupt.
    """

    def __init__(self, *, window_size=DEFAULT_WINDOW_SIZE, name_size=DEFAULT_NAME_SIZE,
                 data_width=32, regs_size=BAR0_SIZE, host_timeout=DEFAULT_HOST_TIMEOUT):
        try:
            _check_pow2("window_size", window_size, 64)
            if window_size > 1 << 31:
                # WINDOW_SIZE and MAP_SIZE are 32-bit registers: 4 GiB would read as 0.
                raise ValueError(f"window_size must be at most 2 GiB (1 << 31), what the 32-bit "
                                 f"WINDOW_SIZE register can say, not {window_size!r}")
            _check_pow2("name_size", name_size, 8)
            _check_pow2("regs_size", regs_size, BAR0_SIZE)
            if regs_size > 4096:
                raise ValueError(f"regs_size must be at most 4096, not {regs_size}")
            if data_width not in (32, 64):
                raise ValueError(f"data_width must be 32 or 64, not {data_width!r}")
            if not isinstance(host_timeout, int) or host_timeout < 0:
                raise ValueError(f"host_timeout must be a non-negative integer, "
                                 f"not {host_timeout!r}")
            if name_size > window_size:
                raise ValueError(f"name_size ({name_size}) must not exceed "
                                 f"window_size ({window_size})")
        except ValueError:
            # A core refused at construction was never meant to be elaborated: no warning.
            self._MustUse__silence = True
            raise
        self._window_size = window_size
        self._name_size = name_size
        self._data_width = data_width
        self._host_timeout = host_timeout
        self._regs_size = regs_size
        self._addr_width = ceil_log2(max(window_size, regs_size))
        super().__init__({
            "req":     In(stream.Signature(guest_req_layout(self._addr_width, data_width))),
            "cpl":     Out(stream.Signature(cpl_layout(data_width))),
            "host":    Out(host_signature(self._addr_width, data_width)),
            # Bus Master Enable from the PCI front end: no OPEN and no DMA without it.
            "dma_enable": In(1, init=1),
            "cpl_error": Out(1),
            # Where the host put the object on its bus, for a front end whose DMA is addressed.
            "host_base": Out(64),
            "irq": Out(1),
            "msi_ok": In(1, init=1),
            "irq_msg": Out(1),
            "flr_start": In(1),
            "flr_busy": Out(1),
            "post_ok": Out(1),
        })

    @property
    def window_size(self):
        return self._window_size

    @property
    def name_size(self):
        return self._name_size

    @property
    def data_width(self):
        return self._data_width

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def regs_size(self):
        return self._regs_size

    @property
    def host_timeout(self):
        return self._host_timeout

    def elaborate(self, platform):
        m = Module()
        wb = self._data_width // 8
        wshift = exact_log2(wb)
        host = self.host

        # -- the components, each joined to the host port it serves -------------------------------
        m.submodules.regs = regs = RegisterFile(
            addr_width=self._addr_width - wshift, data_width=self._data_width,
            values={"WINDOW_SIZE": self._window_size, "NAME_SIZE": self._name_size})
        m.submodules.doorbells = bells = Doorbells()
        m.submodules.control = ctl = ControlChannel(
            window_size=self._window_size, name_size=self._name_size,
            data_width=self._data_width, host_timeout=self._host_timeout)
        m.submodules.window = dma = WindowDMA(
            addr_width=self._addr_width, data_width=self._data_width,
            host_timeout=self._host_timeout)
        # A DOORBELL write's wait for the host to take the previous doorbell.
        m.submodules.db_timer = db_timer = HostTimer(self._host_timeout)
        for name, sub in (("ctl_req", ctl), ("ctl_rsp", ctl), ("dma_req", dma),
                          ("dma_rsp", dma), ("db", bells), ("ring", bells)):
            wiring.connect(m, wiring.flipped(getattr(host, name)), getattr(sub, name))
        m.d.comb += [bells.peer_valid.eq(host.peer_valid), bells.peer_id.eq(host.peer_id),
                     bells.msg_ok.eq(self.msi_ok),
                     self.irq.eq(bells.irq), self.irq_msg.eq(bells.irq_msg),
                     self.host_base.eq(ctl.host_base),
                     ctl.dma_enable.eq(self.dma_enable), ctl.dma_free.eq(dma.free)]

        # The core drives the components' command sides itself (each declared from the core's
        # side: register bus, OPEN/CLOSE command, name reads, window request and its streams).
        # The guest's data reaches the register file and the window only in the states that
        # write: elsewhere it changes nothing they hold, and Amaranth's simulator then does
        # not carry every beat's data through them.
        bus, ctl_cmd, name, dma_cmd, wr, rd = regs.bus, ctl.cmd, ctl.name, dma.cmd, dma.wr, dma.rd

        # -- the registers' values and events, from the register map's fields ------------------
        f = regs.f
        db_timeout = Signal()       # a DOORBELL write dropped: the host kept the last one
        reject_now = Signal()       # a window access rejected at its decode
        m.d.comb += [
            f.STATUS.OPEN.r_data.eq(ctl.is_open),
            f.STATUS.BUSY.r_data.eq(ctl_cmd.busy),
            f.STATUS.DMA_ERROR.set.eq(dma.error),
            f.STATUS.LAST_ERROR.r_data.eq(ctl.last_error),
            f.MAP_SIZE.r_data.eq(ctl.map_size),
            f.OBJ_SIZE_LO.r_data.eq(ctl.obj_size[:32]),
            f.OBJ_SIZE_HI.r_data.eq(ctl.obj_size[32:]),
            f.REJECTS.inc.eq(reject_now | dma.reject),
            f.TIMEOUTS.inc.eq(db_timeout | ctl.timeout | dma.timeout),
            bells.mask.eq(f.INTR_MASK.data),
            bells.status.eq(f.INTR_STATUS.data),
            bells.clear.eq(f.INTR_STATUS.clear),
            f.INTR_STATUS.set.eq(bells.rung),
            f.IVPOSITION.r_data.eq(bells.ivposition),
            # A DOORBELL write is taken while the slot is free, and dropped once the wait for it
            # has timed out (see the WRITE state).
            bells.ring_we.eq(f.DOORBELL.stb & ~bells.full),
            bells.ring_data.eq(f.DOORBELL.data),
            db_timeout.eq(f.DOORBELL.stb & bells.full & db_timer.expired),
        ]
        # The beat at hand is in DOORBELL's word while the last doorbell is still on offer.
        db_held = Signal()
        m.d.comb += db_held.eq(f.DOORBELL.sel & bells.full)

        r = self._decode(m, bus=bus, ctl=ctl, name=name, dma=dma, dma_cmd=dma_cmd, wr=wr)
        self._serve(m, r, bus=bus, ctl=ctl, ctl_cmd=ctl_cmd, name=name, dma=dma, wr=wr,
                    rd=rd, db_timer=db_timer, db_held=db_held, reject_now=reject_now,
                    triggers=(f.OPEN.trigger, f.CLOSE.trigger))

        # What the formal properties (formal/) look at inside; not ports, changes nothing.
        self._probe = {"is_open": ctl.is_open, "map_limit": ctl.map_limit, "dma_free": dma.free,
                       "ctl_owed": ctl.owed, "ctl_stale": ctl.stale}
        return m

    def _decode(self, m, *, bus, ctl, name, dma, dma_cmd, wr):
        """Latch the guest's request at hand, decode it and show it to the components; return
        the latched header (a :class:`_Request`)."""
        wb = self._data_width // 8
        wshift = exact_log2(wb)
        req = self.req.payload
        r = _Request(self._addr_width - wshift, self._data_width)

        # -- name RAM ---------------------------------------------------------------------------
        m.submodules.name_ram = name_ram = Memory(
            shape=self._data_width, depth=self._name_size // wb, init=[])
        r.name_rd = name_rd = name_ram.read_port()
        r.name_wr = name_wr = name_ram.write_port(granularity=8)

        # -- FLR: clear the name RAM ---------------------------------------------------------------
        # Reset-less, so a reset of the core on flr_start's own edge does not stop it; at
        # power-on the RAM is already zero and the sequencer idle.
        depth = self._name_size // wb
        clr_addr = Signal(range(depth), reset_less=True)
        r.clearing = clearing = Signal(reset_less=True)
        m.d.comb += self.flr_busy.eq(clearing)
        with m.If(self.flr_start):
            m.d.sync += [clearing.eq(1), clr_addr.eq(0)]
        with m.Elif(clearing):
            m.d.sync += clr_addr.eq(clr_addr + 1)
            with m.If(clr_addr == depth - 1):
                m.d.sync += clearing.eq(0)
        r.clear_ram = [name_wr.addr.eq(clr_addr), name_wr.data.eq(0),
                       name_wr.en.eq((1 << wb) - 1)]
        # The name RAM's output only ever goes into a register: a block RAM's clock-to-output is
        # slow (4.3 ns on an ECP5 DP16KD), and it would otherwise run on through the completion
        # muxes of the core and the front end (or the control channel's byte select and
        # end-of-name test) into whatever takes them. The read port is addressed a cycle ahead:
        # IDLE with the request's first word and READ-SEND with a burst's next, for READ-FETCH
        # to load into rd_data; during OPEN the control channel addresses it (`name`). The cycle
        # counts stay those of a combinational read. Whether they load it is itself a register
        # (name_load, set by the state before), so the read data meets one two-way mux in front
        # of them, not the state decode.
        m.d.comb += name_rd.addr.eq(r.waddr)
        m.d.sync += r.name_load.eq(0)
        m.d.comb += [name.loaded.eq(r.name_load), name.first.eq(name_rd.data[:8]),
                     name.rest.eq(r.rd_data[8:])]

        # -- decode of a new request (combinational on the first beat) --------------------------
        r.hdr_waddr = req.addr[wshift:]
        r.hdr_end = hdr_end = Signal(max(self._addr_width, 8 + wshift) + 2)   # byte past it
        m.d.comb += hdr_end.eq((r.hdr_waddr + req.count + 1) << wshift)
        r.in_regs = (req.bar == BAR_REGS) & (hdr_end <= self._regs_size)
        r.in_name = (req.bar == BAR_NAME) & (hdr_end <= self._name_size)
        in_window = (req.bar == BAR_WINDOW) & (hdr_end <= self._window_size)
        r.window_ok = in_window & ctl.is_open & self.dma_enable & (hdr_end <= ctl.map_limit)
        r.rejected = (req.bar == BAR_WINDOW) & ~r.window_ok

        # -- the object's last word, when MAP_SIZE ends inside it --------------------------------
        # Its bytes past the object read all ones and are never written, whatever the host does:
        # the front end sees byte enables without them. Only a burst's last beat can hold it.
        tail_be = Signal(wb)        # the enables of its bytes inside the object
        with m.If(ctl.map_size[:wshift] == 0):
            m.d.comb += tail_be.eq((1 << wb) - 1)
        with m.Else():
            m.d.comb += tail_be.eq(Cat(*[ctl.map_size[:wshift] > i for i in range(wb - 1)]))

        # -- what the components see of the request at hand ---------------------------------------
        m.d.comb += [
            bus.addr.eq(r.waddr), bus.sel.eq(r.in_bar0),
            bus.r_be.eq(Mux(r.first, r.rd_be, (1 << wb) - 1)),
            dma_cmd.write.eq(req.write), dma_cmd.addr.eq(r.waddr << wshift),
            dma_cmd.count.eq(r.count), dma_cmd.remaining.eq(r.remaining),
            dma_cmd.end_be.eq(Mux(r.clip, tail_be, (1 << wb) - 1)),
            dma.post.addr.eq(r.pw_waddr << wshift), dma.post.count.eq(r.pw_count),
            dma.post.remaining.eq(r.pw_remaining),
            dma.post.end_be.eq(Mux(r.pw_clip, tail_be, (1 << wb) - 1)),
        ]
        return r

    def _serve(self, m, r, *, bus, ctl, ctl_cmd, name, dma, wr, rd, db_timer, db_held,
               reject_now, triggers):
        """Serve the guest's requests: the core's state machine."""
        ones = (1 << self._data_width) - 1
        dma_cmd, post = dma.cmd, dma.post
        req = self.req.payload
        name_rd, name_wr = r.name_rd, r.name_wr
        trigger_open, trigger_close = triggers

        with m.FSM(name="fsm"):
            with m.State("IDLE"):
                # A read is one beat: take it now. A write's beats are taken by its state.
                # While an FLR clears the name RAM no request is taken (the sequencer has the
                # RAM's write port; the core stays here).
                m.d.comb += [self.req.ready.eq(~req.write & ~r.clearing), ctl_cmd.listen.eq(1),
                             db_timer.restart.eq(1),
                             # A name-buffer read's first word, for READ-FETCH.
                             name_rd.addr.eq(r.hdr_waddr)]
                # The header is latched every idle cycle, not only with `valid`: until a request
                # comes nothing reads it, and the wide enable would otherwise hang on the
                # request's handshake (a slow, high-fanout path from the front end).
                m.d.sync += [
                    r.bar.eq(req.bar), r.in_bar0.eq(r.in_regs), r.waddr.eq(r.hdr_waddr),
                    r.remaining.eq(req.count), r.count.eq(req.count),
                    r.rd_be.eq(req.be), r.first.eq(1), r.clip.eq(r.hdr_end > ctl.map_size),
                    r.cpl_status.eq(Mux((req.bar == BAR_WINDOW) | r.in_regs | r.in_name,
                                        CplStatus.SC, CplStatus.UR)),
                ]
                with m.If(self.req.valid & ~r.clearing):
                    m.d.comb += [reject_now.eq(r.rejected), dma_cmd.start.eq(r.window_ok)]
                    with m.If(req.write):
                        with m.If(r.window_ok):
                            m.next = "DMA-WRITE"
                        with m.Else():
                            m.next = "WRITE"
                    with m.Else():
                        with m.If(r.window_ok):
                            m.next = "DMA-READ"
                        with m.Elif(r.in_regs | r.in_name):
                            m.d.sync += r.name_load.eq(r.in_name)
                            m.next = "READ-FETCH"
                        with m.Else():
                            m.next = "READ-ONES"

            # -- writes to registers and the name RAM, and dropped writes --------------------------
            with m.State("WRITE"):
                # A DOORBELL write waits while the previous doorbell is on offer, at most the
                # host timeout; then it is taken and dropped. The wait depends on registers
                # only (the word's address, the slot), not on the beat's byte enables.
                db_wait = Signal()
                m.d.comb += db_wait.eq(db_held & ~db_timer.expired)
                m.d.comb += [self.req.ready.eq(~db_wait), bus.w_stb.eq(self.req.valid),
                             bus.w_be.eq(req.be), bus.w_data.eq(req.data)]
                with m.If(self.req.valid & db_wait):
                    m.d.comb += db_timer.run.eq(1)
                # The register writes touch other words than DOORBELL's, where db_wait is low,
                # so they need not wait on it (and the doorbell slot stays off their enables).
                with m.If(self.req.valid & (r.cpl_status == CplStatus.SC) & (r.bar == BAR_NAME)):
                    m.d.comb += [
                        name_wr.addr.eq(r.waddr),
                        name_wr.data.eq(req.data),
                        name_wr.en.eq(req.be),
                    ]
                with m.If(self.req.valid & ~db_wait):
                    m.d.sync += [r.waddr.eq(r.waddr + 1), r.remaining.eq(r.remaining - 1)]
                    with m.If(r.remaining == 0):
                        m.next = "WRITE-ACK"

            with m.State("WRITE-ACK"):
                m.d.comb += [
                    self.cpl.valid.eq(1),
                    self.cpl.payload.status.eq(r.cpl_status),
                    self.cpl.payload.last.eq(1),
                ]
                with m.If(self.cpl.ready):
                    m.next = "IDLE"

            # -- reads of registers and the name RAM -----------------------------------------------
            with m.State("READ-FETCH"):
                # A name word is loaded by name_load instead.
                m.d.sync += r.rd_data.eq(bus.r_data)
                m.d.comb += bus.r_stb.eq(1)
                with m.If(trigger_open | trigger_close):
                    m.d.comb += [ctl_cmd.start.eq(1),
                                 ctl_cmd.op.eq(Mux(trigger_open, CtlOp.OPEN, CtlOp.CLOSE))]
                    m.next = "CTL"
                with m.Else():
                    m.next = "READ-SEND"

            with m.State("READ-SEND"):
                m.d.comb += [
                    self.cpl.valid.eq(1),
                    self.cpl.payload.data.eq(r.rd_data),
                    self.cpl.payload.status.eq(CplStatus.SC),
                    self.cpl.payload.last.eq(r.remaining == 0),
                    # A burst's next word, for READ-FETCH.
                    name_rd.addr.eq(r.waddr + 1),
                ]
                with m.If(self.cpl.ready):
                    m.d.sync += [r.waddr.eq(r.waddr + 1), r.remaining.eq(r.remaining - 1),
                                 r.first.eq(0)]
                    with m.If(r.remaining == 0):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += r.name_load.eq(r.bar == BAR_NAME)
                        m.next = "READ-FETCH"

            # Rejected window reads, unsupported BARs and timed-out DMA: all ones, one per beat.
            with m.State("READ-ONES"):
                m.d.comb += [
                    self.cpl.valid.eq(1),
                    self.cpl.payload.data.eq(ones),
                    self.cpl.payload.status.eq(r.cpl_status),
                    self.cpl.payload.last.eq(r.remaining == 0),
                    self.cpl_error.eq(r.host_failed),
                ]
                with m.If(self.cpl.ready):
                    m.d.sync += r.remaining.eq(r.remaining - 1)
                    with m.If(r.remaining == 0):
                        m.d.sync += r.host_failed.eq(0)
                        m.next = "IDLE"

            # -- OPEN and CLOSE: the control channel has them; the read completes with the status
            with m.State("CTL"):
                m.d.comb += name_rd.addr.eq(name.addr)
                m.d.sync += r.name_load.eq(name.fetch)
                with m.If(ctl_cmd.done):
                    # The status goes in lane 0 of the register word, where OPEN and CLOSE are.
                    m.d.sync += r.rd_data.eq(Cat(ctl_cmd.status, C(0, 24), bus.r_data[32:]))
                    m.next = "READ-SEND"

            # -- window: the DMA has it; the core counts the guest's beats ------------------------
            with m.State("DMA-READ"):
                m.d.comb += [
                    self.cpl.valid.eq(rd.valid),
                    self.cpl.payload.data.eq(rd.payload.data),
                    self.cpl.payload.status.eq(CplStatus.SC),
                    self.cpl.payload.last.eq(rd.payload.last),
                    self.cpl_error.eq(rd.payload.err),
                    rd.ready.eq(self.cpl.ready),
                ]
                with m.If(self.cpl.valid & self.cpl.ready):
                    m.d.sync += r.remaining.eq(r.remaining - 1)
                with m.If(dma_cmd.done & dma_cmd.failed):
                    # The rest of the burst is all ones.
                    m.d.sync += r.host_failed.eq(1)
                    m.next = "READ-ONES"
                with m.Elif(dma_cmd.done):
                    m.next = "IDLE"
                # Only while the read waits, so never with `done` (nor from it: a front end's
                # `valid` may follow post_ok).
                m.d.comb += self.post_ok.eq(post.ready & ~r.clearing)
                with m.If(self.post_ok & self.req.valid & req.write & (req.bar == BAR_WINDOW)):
                    # A window write behind the waiting read passes it (issue 22, finding 2):
                    # a root port may hold the read's answer behind writes it queued for us.
                    # One the window refuses is dropped (and counted) as it would be at IDLE.
                    m.d.comb += [post.start.eq(r.window_ok), reject_now.eq(r.rejected)]
                    m.d.sync += [r.pw_waddr.eq(r.hdr_waddr), r.pw_remaining.eq(req.count),
                                 r.pw_count.eq(req.count), r.pw_clip.eq(r.hdr_end > ctl.map_size),
                                 r.read_failed.eq(0)]
                    with m.If(r.window_ok):
                        m.next = "DMA-PASS"
                    with m.Else():
                        m.next = "PASS-DROP"

            self._passing(m, r, dma_cmd=dma_cmd, post=post, wr=wr)

            with m.State("DMA-WRITE"):
                # Given up on: the guest's remaining beats are taken and dropped in WRITE.
                self._beats_to_window(m, wr, r.remaining, dma_cmd, failed="WRITE",
                                      done="WRITE-ACK")

        # The FLR's clearing owns the write port (the core is idle meanwhile).
        with m.If(r.clearing):
            m.d.comb += r.clear_ram
        # Last, so it wins: READ-FETCH's and OPEN-FETCH's load of the word the read port holds.
        with m.If(r.name_load):
            m.d.sync += r.rd_data.eq(name_rd.data)

    def _passing(self, m, r, *, dma_cmd, post, wr):
        """The core's states of a window write passing the waiting window read (issue 22,
        finding 2): its beats to the window, or dropped, then its completion; then the read."""
        with m.State("DMA-PASS"):
            self._beats_to_window(m, wr, r.pw_remaining, post, failed="PASS-DROP",
                                  done="PASS-ACK")

        # In these two the read may give up (its wait went on while the write passed).
        read_gives_up = dma_cmd.done & dma_cmd.failed
        with m.State("PASS-DROP"):
            # The window refused the write, or the host did not take a beat in time: the
            # guest's beats left are dropped.
            m.d.comb += self.req.ready.eq(1)
            with m.If(read_gives_up):
                m.d.sync += [r.host_failed.eq(1), r.read_failed.eq(1)]
            with m.If(self.req.valid):
                m.d.sync += r.pw_remaining.eq(r.pw_remaining - 1)
                with m.If(r.pw_remaining == 0):
                    m.next = "PASS-ACK"

        with m.State("PASS-ACK"):
            # The write's completion, before any further beat of the read's.
            m.d.comb += [self.cpl.valid.eq(1), self.cpl.payload.status.eq(CplStatus.SC),
                         self.cpl.payload.last.eq(1)]
            with m.If(read_gives_up):
                m.d.sync += [r.host_failed.eq(1), r.read_failed.eq(1)]
            with m.If(self.cpl.ready):
                with m.If(r.read_failed | read_gives_up):
                    m.next = "READ-ONES"
                with m.Else():
                    m.next = "DMA-READ"

    def _beats_to_window(self, m, wr, remaining, cmd, *, failed, done):
        """Hand the guest's write beats to the window as it takes them, ``remaining`` counted
        down (a write at IDLE's decode, or one passing a read), until ``cmd`` (the window's
        ``cmd`` or ``post``) says done: then go to state ``done``, or ``failed`` if it failed."""
        req = self.req.payload
        m.d.comb += [wr.valid.eq(self.req.valid), wr.payload.data.eq(req.data),
                     wr.payload.be.eq(req.be), self.req.ready.eq(wr.ready)]
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += remaining.eq(remaining - 1)
        with m.If(cmd.done & cmd.failed):
            m.next = failed
        with m.Elif(cmd.done):
            m.next = done
