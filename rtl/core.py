"""VMShmCore: the device function behind any PCI front end.

The guest side takes requests already tagged with a BAR number and returns completions; the host
side opens objects over a control channel and moves window data over a DMA master. The core serves
one guest request at a time, so a read after a write always sees it.
"""

from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from vmshm.abi.regmap import (BAR0_SIZE, BAR_NAME, BAR_REGS, BAR_WINDOW, DEFAULT_NAME_SIZE,
                              DEFAULT_WINDOW_SIZE, REG, REGISTERS, CtlOp, Status)

from .doorbell import Doorbells
from .layouts import (MAX_BURST, TAG_BITS, CplStatus, cpl_layout, guest_req_layout,
                      host_signature)

__all__ = ["VMShmCore", "DEFAULT_HOST_TIMEOUT"]

#: Cycles the core waits on the host before it gives up (ETIMEDOUT, or all ones for DMA): an OPEN
#: that times out completes after 5619 + 6 cycles, 45 µs at 125 MHz, within 90 % of a PCIe root
#: port's shortest default completion timeout (50 µs). See docs/timing.md.
DEFAULT_HOST_TIMEOUT = 5619


def _check_pow2(name, value, minimum):
    if not isinstance(value, int) or value < minimum or value & (value - 1):
        raise ValueError(f"{name} must be a power of two no smaller than {minimum}, not {value!r}")


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
    irq_msg : ``Out(1)``
        A one-cycle pulse each time ``INTR_STATUS & INTR_MASK`` gains a bit: a message-signalled
        front end sends one message per pulse (see :class:`~vmshm.rtl.doorbell.Doorbells`).
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
            "irq_msg": Out(1),
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

        wb = self._data_width // 8           # bytes per word
        wshift = exact_log2(wb)
        ones = (1 << self._data_width) - 1
        req = self.req.payload
        ctl_req, ctl_rsp = self.host.ctl_req, self.host.ctl_rsp
        dma_req, dma_rsp = self.host.dma_req, self.host.dma_rsp

        # -- latched request header ----------------------------------------------------------
        bar = Signal(3)
        waddr = Signal(self._addr_width - wshift)   # word address of the current beat
        remaining = Signal(8)                       # beats after the current one
        count = Signal(8)                           # beats - 1 of the whole request
        rd_be = Signal(wb)
        first = Signal()                            # the current read beat is the first
        cpl_status = Signal(CplStatus)

        # -- device state ----------------------------------------------------------------------
        is_open = Signal()
        busy = Signal()
        last_error = Signal(8)
        obj_size = Signal(64)
        map_size = Signal(range(self._window_size + 1))
        rejects = Signal(32)
        dma_error = Signal()        # sticky: a window access failed at the host
        host_failed = Signal()      # the all-ones beats being sent stand for a failed DMA
        timeouts = Signal(32)

        # -- name RAM ---------------------------------------------------------------------------
        m.submodules.name_ram = name_ram = Memory(
            shape=self._data_width, depth=self._name_size // wb, init=[])
        name_rd = name_ram.read_port()
        name_wr = name_ram.write_port(granularity=8)

        # -- doorbells and interrupts: their registers live in their own component -------------
        m.submodules.doorbells = bells = Doorbells()
        m.d.comb += [
            self.host.db.valid.eq(bells.db.valid),
            self.host.db.payload.eq(bells.db.payload),
            bells.db.ready.eq(self.host.db.ready),
            bells.ring.valid.eq(self.host.ring.valid),
            bells.ring.payload.eq(self.host.ring.payload),
            self.host.ring.ready.eq(bells.ring.ready),
            bells.peer_valid.eq(self.host.peer_valid),
            bells.peer_id.eq(self.host.peer_id),
            self.irq.eq(bells.irq),
            self.irq_msg.eq(bells.irq_msg),
        ]

        # -- register file: each register's read value, from the one register map --------------
        reg_value = {
            "INTR_MASK": bells.mask, "INTR_STATUS": bells.status,
            "IVPOSITION": bells.ivposition, "DOORBELL": C(0, 32),
            "OPEN": C(0, 32), "CLOSE": C(0, 32),
            "ID": C(REG["ID"].reset, 32), "VERSION": C(REG["VERSION"].reset, 32),
            "STATUS": Cat(is_open, busy, dma_error, C(0, 5), last_error),
            "MAP_SIZE": map_size, "OBJ_SIZE_LO": obj_size[:32], "OBJ_SIZE_HI": obj_size[32:],
            "REJECTS": rejects, "TIMEOUTS": timeouts,
            "WINDOW_SIZE": C(self._window_size, 32), "NAME_SIZE": C(self._name_size, 32),
        }
        assert set(reg_value) == {r.name for r in REGISTERS}, "register file and map disagree"
        reg_word = Signal(self._data_width)
        with m.Switch(waddr):
            for word in range(BAR0_SIZE // wb):
                lanes = []
                for lane in range(wb // 4):
                    offset = word * wb + lane * 4
                    regs = [r for r in REGISTERS if r.offset == offset]
                    value = Value.cast(reg_value[regs[0].name] if regs else C(0, 32))
                    # Zero-extend: a narrower register (MAP_SIZE, STATUS) must not shift the
                    # registers in the lanes above it on a 64-bit data path.
                    lanes.append(Cat(value, C(0, 32 - len(value))) if len(value) < 32 else value)
                with m.Case(word):
                    m.d.comb += reg_word.eq(Cat(*lanes))

        byte_offset = Signal(self._addr_width)
        m.d.comb += byte_offset.eq(waddr << wshift)
        touches_lane0 = Signal()
        m.d.comb += touches_lane0.eq(Mux(first, rd_be[:4].any(), 1))
        hits_open = (bar == BAR_REGS) & (byte_offset == REG["OPEN"].offset) & touches_lane0
        hits_close = (bar == BAR_REGS) & (byte_offset == REG["CLOSE"].offset) & touches_lane0

        # -- decode of a new request (combinational on the first beat) --------------------------
        hdr_waddr = req.addr[wshift:]
        hdr_end = Signal(max(self._addr_width, 8 + wshift) + 2)   # first byte past the burst
        m.d.comb += hdr_end.eq((hdr_waddr + req.count + 1) << wshift)
        # map_size rounded up to a word: a register set with map_size, so the decode compares
        # against it without an adder in front.
        map_limit = Signal(range(self._window_size + wb + 1))
        in_regs = (req.bar == BAR_REGS) & (hdr_end <= self._regs_size)
        in_name = (req.bar == BAR_NAME) & (hdr_end <= self._name_size)
        in_window = (req.bar == BAR_WINDOW) & (hdr_end <= self._window_size)
        window_ok = in_window & is_open & self.dma_enable & (hdr_end <= map_limit)
        rejected = (req.bar == BAR_WINDOW) & ~window_ok

        # -- the object's last word, when MAP_SIZE ends inside it --------------------------------
        # Its bytes past the object read all ones and are never written, whatever the host does:
        # the front end sees byte enables without them. Only a burst's last beat can hold it.
        clip = Signal()             # the burst at hand ends in that word
        tail_be = Signal(wb)        # the enables of its bytes inside the object
        with m.If(map_size[:wshift] == 0):
            m.d.comb += tail_be.eq((1 << wb) - 1)
        with m.Else():
            m.d.comb += tail_be.eq(Cat(*[map_size[:wshift] > i for i in range(wb - 1)]))
        last_be = Mux(clip & (remaining == 0), tail_be, (1 << wb) - 1)
        tail_ones = Cat(*[Mux(last_be[i], 0, 0xFF) for i in range(wb)])

        # A rejected window access is counted the cycle after its decode, from a register: the
        # counter's 32 enables then do not hang on the decode's adders and comparators. No read
        # of REJECTS can come sooner.
        count_reject = Signal()
        m.d.sync += count_reject.eq(0)
        with m.If(count_reject):
            m.d.sync += rejects.eq(rejects + (rejects != 0xFFFF_FFFF))

        # -- host timeout ------------------------------------------------------------------------
        timer = Signal(range(max(self._host_timeout, 1) + 1))
        timed_out = Signal()
        if self._host_timeout:
            m.d.comb += timed_out.eq(timer == self._host_timeout)
        op_status = Signal(8)
        rd_data = Signal(self._data_width)
        pending_op = Signal(2)      # the guest's OPEN or CLOSE being served

        # -- control channel bookkeeping ---------------------------------------------------------
        # Every packet carries a tag; the host echoes it and the op, so an answer is only taken
        # for the request the core is waiting for. At most one of ctl_owed and ctl_stale is set.
        ctl_tag = Signal(TAG_BITS)              # tag of the newest packet
        # A beat the core must still send: the beat on offer when a wait timed out (a stream
        # source may not take back a beat it offered), then RESET to end a cut-off OPEN. Out of
        # reset the owed beat is a RESET: the host learns of every reset of the device.
        ctl_owed = Signal(init=1)
        ctl_owed_op = Signal(2, init=CtlOp.RESET)
        ctl_owed_data = Signal(8)
        ctl_owed_last = Signal(init=1)
        ctl_stale = Signal()        # the host owes an answer to a packet the guest gave up on
        ctl_stale_op = Signal(2)

        # -- DMA bookkeeping ---------------------------------------------------------------------
        dma_tag = Signal(TAG_BITS)              # tag of the newest DMA request
        # Beats of a request the core gave up on while it was on offer: the beat itself, then
        # (for a write) the rest of the burst with no byte enabled, so the host's packet ends.
        dma_owed = Signal(range(MAX_BURST + 1))
        dma_owed_write = Signal()
        dma_owed_addr = Signal(self._addr_width)
        dma_owed_count = Signal(8)
        dma_owed_data = Signal(self._data_width)
        dma_owed_be = Signal(wb)
        dma_free = Signal()
        m.d.comb += dma_free.eq(dma_owed == 0)
        dma_match = Signal()
        m.d.comb += dma_match.eq(dma_rsp.payload.tag == dma_tag)

        name_ptr = Signal(range(self._name_size))
        # The name RAM's output only ever goes into a register: a block RAM's clock-to-output is
        # slow (4.3 ns on an ECP5 DP16KD), and it would otherwise run on through the completion
        # muxes of the core and the front end (or the byte select and the end-of-name test)
        # into whatever takes them. The read port is addressed a cycle ahead: IDLE with the
        # request's first word and READ-SEND with a burst's next, for READ-FETCH to load into
        # rd_data; OPEN-START and OPEN-NAME with the name's next word, for OPEN-FETCH to load
        # into rd_data (free while OPEN streams: the completion's value is set when it ends)
        # and its first byte into name_byte. The cycle counts stay those of a combinational
        # read. Whether they load it is itself a register (name_load, set by the state before),
        # so the read data meets one two-way mux in front of them, not the state decode.
        m.d.comb += name_rd.addr.eq(waddr)
        name_byte = Signal(8)
        name_lane = name_ptr[:wshift]
        name_load = Signal()
        m.d.sync += name_load.eq(0)

        # The host's answers are taken whenever the core is idle or waiting for one (control:
        # the states that set ctl_rsp.ready; DMA: always); those for no request waited on are
        # dropped.
        m.d.comb += dma_rsp.ready.eq(1)
        rsp = ctl_rsp.payload
        rsp_map = Signal.like(map_size)         # what an OPEN success maps: at most the window
        m.d.comb += rsp_map.eq(Mux(rsp.size > self._window_size, self._window_size, rsp.size))
        ctl_match = Signal()
        m.d.comb += ctl_match.eq(ctl_rsp.valid & (rsp.tag == ctl_tag))

        def owe_cleanup():
            # The host may hold an object the guest was told is not open: CLOSE it. CLOSE is
            # harmless if nothing is open, and the host serves its channel in order.
            m.d.sync += [ctl_tag.eq(ctl_tag + 1), ctl_owed.eq(1), ctl_owed_op.eq(CtlOp.CLOSE),
                         ctl_owed_data.eq(0), ctl_owed_last.eq(1)]

        # A late answer to an OPEN or CLOSE the guest gave up on; a late OPEN success is closed.
        with m.If(ctl_rsp.ready & ctl_stale & ctl_match & (rsp.op == ctl_stale_op)):
            m.d.sync += ctl_stale.eq(0)
            with m.If((ctl_stale_op == CtlOp.OPEN) & (rsp.status == Status.OK)):
                owe_cleanup()

        def start_timer():
            m.d.sync += timer.eq(0)

        def run_timer():
            if self._host_timeout:
                with m.If(~timed_out):
                    m.d.sync += timer.eq(timer + 1)

        def finish_op(status):
            # An OPEN or CLOSE read completes with its status in lane 0 of the register word.
            m.d.sync += [
                rd_data.eq(Cat(status, C(0, 24), reg_word[32:])),
                last_error.eq(status),
                busy.eq(0),
                pending_op.eq(0),
            ]

        # Counted the cycle after, from a register, like REJECTS: the timer's compare then
        # does not reach the counter's enables.
        timeout_now = Signal()
        m.d.sync += timeout_now.eq(0)
        with m.If(timeout_now):
            m.d.sync += timeouts.eq(timeouts + (timeouts != 0xFFFF_FFFF))

        def count_timeout():
            m.d.sync += timeout_now.eq(1)

        def close_window():
            m.d.sync += [is_open.eq(0), map_size.eq(0), map_limit.eq(0), obj_size.eq(0)]

        # -- the doorbell registers' writes, decoded for the WRITE state -------------------------
        def reg_lane(name):
            # Whether the beat at hand is in the register's word, and its lane's enables and data.
            r = REG[name]
            lane = (r.offset % wb) // 4
            return ((bar == BAR_REGS) & (waddr == r.offset >> wshift) &
                    (cpl_status == CplStatus.SC),
                    req.be.word_select(lane, 4), req.data.word_select(lane, 32))

        def bytes_of(be):
            return Cat(*[be[i].replicate(8) for i in range(4)])

        db_word, db_be, db_data = reg_lane("DOORBELL")

        def reg_writes():
            hit, be, value = reg_lane("INTR_MASK")
            m.d.comb += [bells.mask_we.eq(Mux(hit, be, 0)), bells.mask_data.eq(value)]
            hit, be, value = reg_lane("INTR_STATUS")
            with m.If(hit):
                m.d.comb += bells.clear.eq(value & bytes_of(be))
            with m.If(db_word & db_be.any() & ~bells.full):
                m.d.comb += [bells.ring_we.eq(1), bells.ring_data.eq(db_data & bytes_of(db_be))]

        with m.FSM(name="fsm"):
            with m.State("IDLE"):
                # A read is one beat: take it now. A write's beats are taken by its state.
                m.d.comb += [self.req.ready.eq(~req.write), ctl_rsp.ready.eq(1),
                             # A name-buffer read's first word, for READ-FETCH.
                             name_rd.addr.eq(hdr_waddr)]
                start_timer()
                # The header is latched every idle cycle, not only with `valid`: until a request
                # comes nothing reads it, and the wide enable would otherwise hang on the
                # request's handshake (a slow, high-fanout path from the front end).
                m.d.sync += [
                    bar.eq(req.bar), waddr.eq(hdr_waddr), remaining.eq(req.count),
                    count.eq(req.count),
                    rd_be.eq(req.be), first.eq(1), clip.eq(hdr_end > map_size),
                    cpl_status.eq(Mux((req.bar == BAR_WINDOW) | in_regs | in_name,
                                      CplStatus.SC, CplStatus.UR)),
                ]
                with m.If(self.req.valid):
                    with m.If(rejected):
                        m.d.sync += count_reject.eq(1)
                    with m.If(window_ok):
                        m.d.sync += dma_tag.eq(dma_tag + 1)
                    with m.If(req.write):
                        with m.If(window_ok):
                            m.next = "DMA-WRITE"
                        with m.Else():
                            m.next = "WRITE"
                    with m.Else():
                        with m.If(window_ok):
                            m.next = "DMA-READ-REQ"
                        with m.Elif(in_regs | in_name):
                            m.d.sync += name_load.eq(in_name)
                            m.next = "READ-FETCH"
                        with m.Else():
                            m.next = "READ-ONES"

            # -- writes to registers and the name RAM, and dropped writes --------------------------
            with m.State("WRITE"):
                # A DOORBELL write waits while the previous doorbell is on offer, at most the
                # host timeout; then it is taken and dropped. The wait depends on registers
                # only (the word's address, the slot), not on the beat's byte enables.
                db_wait = Signal()
                m.d.comb += db_wait.eq(db_word & bells.full & ~timed_out)
                m.d.comb += self.req.ready.eq(~db_wait)
                with m.If(self.req.valid & db_wait):
                    run_timer()
                with m.If(self.req.valid & db_word & db_be.any() & bells.full & timed_out):
                    count_timeout()
                # The writes below touch other words than DOORBELL's, where db_wait is low, so
                # they need not wait on it (and the doorbell slot stays off their enables).
                with m.If(self.req.valid):
                    with m.If(cpl_status == CplStatus.SC):
                        reg_writes()
                        with m.If(bar == BAR_NAME):
                            m.d.comb += [
                                name_wr.addr.eq(waddr),
                                name_wr.data.eq(req.data),
                                name_wr.en.eq(req.be),
                            ]
                        with m.If((bar == BAR_REGS) &
                                  (byte_offset == REG["REJECTS"].offset & ~(wb - 1)) &
                                  req.be.word_select((REG["REJECTS"].offset % wb) // 4, 4).any()):
                            m.d.sync += rejects.eq(0)
                        status_lane = (REG["STATUS"].offset % wb) // 4
                        with m.If((bar == BAR_REGS) &
                                  (byte_offset == REG["STATUS"].offset & ~(wb - 1)) &
                                  req.be[status_lane * 4] & req.data[status_lane * 32 + 2]):
                            m.d.sync += dma_error.eq(0)     # write 1 to clear
                        with m.If((bar == BAR_REGS) &
                                  (byte_offset == REG["TIMEOUTS"].offset & ~(wb - 1)) &
                                  req.be.word_select((REG["TIMEOUTS"].offset % wb) // 4, 4).any()):
                            m.d.sync += timeouts.eq(0)
                with m.If(self.req.valid & ~db_wait):
                    m.d.sync += [waddr.eq(waddr + 1), remaining.eq(remaining - 1)]
                    with m.If(remaining == 0):
                        m.next = "WRITE-ACK"

            with m.State("WRITE-ACK"):
                m.d.comb += [
                    self.cpl.valid.eq(1),
                    self.cpl.payload.status.eq(cpl_status),
                    self.cpl.payload.last.eq(1),
                ]
                with m.If(self.cpl.ready):
                    m.next = "IDLE"

            # -- reads of registers and the name RAM -----------------------------------------------
            with m.State("READ-FETCH"):
                # A name word is loaded by name_load instead.
                m.d.sync += rd_data.eq(reg_word)
                with m.If(hits_open):
                    m.d.sync += [busy.eq(1), pending_op.eq(CtlOp.OPEN)]
                    start_timer()
                    m.next = "OPEN-START"
                with m.Elif(hits_close):
                    m.d.sync += [busy.eq(1), pending_op.eq(CtlOp.CLOSE)]
                    start_timer()
                    m.next = "CLOSE-START"
                with m.Else():
                    m.next = "READ-SEND"

            with m.State("READ-SEND"):
                m.d.comb += [
                    self.cpl.valid.eq(1),
                    self.cpl.payload.data.eq(rd_data),
                    self.cpl.payload.status.eq(CplStatus.SC),
                    self.cpl.payload.last.eq(remaining == 0),
                    # A burst's next word, for READ-FETCH.
                    name_rd.addr.eq(waddr + 1),
                ]
                with m.If(self.cpl.ready):
                    m.d.sync += [waddr.eq(waddr + 1), remaining.eq(remaining - 1), first.eq(0)]
                    with m.If(remaining == 0):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += name_load.eq(bar == BAR_NAME)
                        m.next = "READ-FETCH"

            # Rejected window reads, unsupported BARs and timed-out DMA: all ones, one per beat.
            with m.State("READ-ONES"):
                m.d.comb += [
                    self.cpl.valid.eq(1),
                    self.cpl.payload.data.eq(ones),
                    self.cpl.payload.status.eq(cpl_status),
                    self.cpl.payload.last.eq(remaining == 0),
                    self.cpl_error.eq(host_failed),
                ]
                with m.If(self.cpl.ready):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 0):
                        m.d.sync += host_failed.eq(0)
                        m.next = "IDLE"

            # -- OPEN ------------------------------------------------------------------------------
            with m.State("OPEN-START"):
                # The name's first word, for OPEN-FETCH to take its first byte from.
                m.d.comb += name_rd.addr.eq(0)
                # Owed DMA beats go out first too: none may reach the object opened next.
                with m.If(ctl_stale | ctl_owed | ~dma_free):
                    m.next = "CTL-DRAIN"
                with m.Elif(is_open):
                    finish_op(C(Status.EBUSY, 8))
                    m.next = "READ-SEND"
                with m.Elif(~self.dma_enable):
                    finish_op(C(Status.EPERM, 8))
                    m.next = "READ-SEND"
                with m.Else():
                    # The name RAM follows name_ptr from here on; waddr keeps pointing at OPEN so
                    # the rest of the completion (ID in a 64-bit word, later beats of a burst)
                    # reads the right registers.
                    m.d.sync += [name_ptr.eq(0), ctl_tag.eq(ctl_tag + 1), name_load.eq(1)]
                    m.next = "OPEN-FETCH"

            with m.State("OPEN-FETCH"):
                # Entered at the start of a word, which the read port holds now: name_load
                # takes it.
                run_timer()
                m.next = "OPEN-NAME"

            with m.State("OPEN-NAME"):
                run_timer()
                # The port reads the next word, for OPEN-FETCH to take after the last byte.
                m.d.comb += name_rd.addr.eq(name_ptr[wshift:] + 1)
                last = (name_byte == 0) | (name_ptr == self._name_size - 1)
                m.d.comb += [
                    ctl_req.valid.eq(1),
                    ctl_req.payload.op.eq(CtlOp.OPEN),
                    ctl_req.payload.data.eq(name_byte),
                    ctl_req.payload.last.eq(last),
                    ctl_req.payload.tag.eq(ctl_tag),
                ]
                with m.If(ctl_req.ready):
                    m.d.sync += [
                        name_ptr.eq(name_ptr + 1),
                        # After the word's last byte OPEN-FETCH loads the next: no byte here.
                        name_byte.eq(rd_data[8:].word_select(name_lane, 8)),
                    ]
                    with m.If(last):
                        m.next = "CTL-WAIT"
                    with m.Elif(name_ptr[:wshift] == wb - 1):
                        m.d.sync += name_load.eq(1)
                        m.next = "OPEN-FETCH"
                with m.Elif(timed_out):
                    # The byte on offer stays owed; a RESET after it ends the packet unless it
                    # was the last, in which case its answer is owed like a timed-out one.
                    m.d.sync += [ctl_owed.eq(1), ctl_owed_op.eq(CtlOp.OPEN),
                                 ctl_owed_data.eq(name_byte), ctl_owed_last.eq(last)]
                    finish_op(C(Status.ETIMEDOUT, 8))
                    count_timeout()
                    m.next = "READ-SEND"

            # -- CLOSE -----------------------------------------------------------------------------
            with m.State("CLOSE-START"):
                with m.If(ctl_stale | ctl_owed):
                    m.next = "CTL-DRAIN"
                with m.Else():
                    m.d.sync += ctl_tag.eq(ctl_tag + 1)
                    m.next = "CLOSE-SEND"

            with m.State("CLOSE-SEND"):
                run_timer()
                m.d.comb += [
                    ctl_req.valid.eq(1),
                    ctl_req.payload.op.eq(CtlOp.CLOSE),
                    ctl_req.payload.last.eq(1),
                    ctl_req.payload.tag.eq(ctl_tag),
                ]
                # The window closes as soon as CLOSE is sent, or given up on: no access reaches
                # a released object, whatever the host answers.
                with m.If(ctl_req.ready):
                    close_window()
                    m.next = "CTL-WAIT"
                with m.Elif(timed_out):
                    close_window()
                    m.d.sync += [ctl_owed.eq(1), ctl_owed_op.eq(CtlOp.CLOSE),
                                 ctl_owed_data.eq(0), ctl_owed_last.eq(1)]
                    finish_op(C(Status.ETIMEDOUT, 8))
                    count_timeout()
                    m.next = "READ-SEND"

            # -- the host's answer -----------------------------------------------------------------
            with m.State("CTL-WAIT"):
                run_timer()
                m.d.comb += ctl_rsp.ready.eq(1)
                with m.If(ctl_match & (rsp.op == pending_op)):
                    with m.If((pending_op == CtlOp.OPEN) & (rsp.status == Status.OK)):
                        m.d.sync += [
                            is_open.eq(1),
                            obj_size.eq(rsp.size),
                            self.host_base.eq(rsp.addr),
                            map_size.eq(rsp_map),
                            map_limit.eq(((rsp_map + wb - 1) >> wshift) << wshift),
                        ]
                    finish_op(rsp.status)
                    m.next = "READ-SEND"
                with m.Elif(timed_out):
                    m.d.sync += [ctl_stale.eq(1), ctl_stale_op.eq(pending_op)]
                    finish_op(C(Status.ETIMEDOUT, 8))
                    count_timeout()
                    m.next = "READ-SEND"

            # Before a new OPEN or CLOSE goes out, the owed beats go and the owed answer comes
            # (the host serves its channel in order). A host that never does gives ETIMEDOUT;
            # an answer given up on is forgotten, and a forgotten OPEN is closed to be sure.
            with m.State("CTL-DRAIN"):
                run_timer()
                m.d.comb += ctl_rsp.ready.eq(1)
                with m.If(~ctl_stale & ~ctl_owed & (dma_free | (pending_op == CtlOp.CLOSE))):
                    with m.If(pending_op == CtlOp.OPEN):
                        m.next = "OPEN-START"
                    with m.Else():
                        m.next = "CLOSE-START"
                with m.Elif(timed_out):
                    m.d.sync += ctl_stale.eq(0)
                    # A CLOSE given up on still shuts the window, and is owed to the host if the
                    # channel has room (an owed RESET or CLOSE releases the object anyway).
                    with m.If(pending_op == CtlOp.CLOSE):
                        close_window()
                    with m.If(~ctl_owed & ((ctl_stale & (ctl_stale_op == CtlOp.OPEN)) |
                                           (pending_op == CtlOp.CLOSE))):
                        owe_cleanup()
                    finish_op(C(Status.ETIMEDOUT, 8))
                    count_timeout()
                    m.next = "READ-SEND"

            # -- window: DMA -----------------------------------------------------------------------
            with m.State("DMA-READ-REQ"):
                run_timer()
                m.d.comb += [
                    dma_req.valid.eq(dma_free),
                    dma_req.payload.write.eq(0),
                    dma_req.payload.addr.eq(byte_offset),
                    dma_req.payload.count.eq(remaining),
                    # A read's enables: those of its last word, for a front end that asks the
                    # host for bytes (PCIe's last BE).
                    dma_req.payload.be.eq(Mux(clip, tail_be, (1 << wb) - 1)),
                    dma_req.payload.tag.eq(dma_tag),
                ]
                with m.If(dma_free & dma_req.ready):
                    start_timer()
                    m.next = "DMA-READ-DATA"
                with m.Elif(timed_out):
                    with m.If(dma_free):
                        m.d.sync += [dma_owed.eq(1), dma_owed_write.eq(0),
                                     dma_owed_addr.eq(byte_offset), dma_owed_count.eq(remaining),
                                     dma_owed_be.eq(Mux(clip, tail_be, (1 << wb) - 1))]
                    count_timeout()
                    m.d.sync += [dma_error.eq(1), host_failed.eq(1)]
                    m.next = "READ-ONES"

            with m.State("DMA-READ-DATA"):
                took = Signal()
                m.d.comb += [
                    self.cpl.valid.eq(dma_rsp.valid & dma_match),
                    self.cpl.payload.data.eq(Mux(dma_rsp.payload.err, ones,
                                                 dma_rsp.payload.data | tail_ones)),
                    self.cpl.payload.status.eq(CplStatus.SC),
                    self.cpl.payload.last.eq(remaining == 0),
                    self.cpl_error.eq(dma_rsp.payload.err),
                    dma_rsp.ready.eq(~dma_match | self.cpl.ready),
                    took.eq(dma_rsp.valid & dma_match & self.cpl.ready),
                ]
                with m.If(took & dma_rsp.payload.err):
                    m.d.sync += dma_error.eq(1)
                # Each beat has its own timeout: a long burst with gaps still completes.
                with m.If(took):
                    start_timer()
                    m.d.sync += remaining.eq(remaining - 1)
                    # The host refused the access (it could not read the object): count it once.
                    with m.If(dma_rsp.payload.err & (remaining == count)):
                        m.d.sync += count_reject.eq(1)
                    with m.If(remaining == 0):
                        m.next = "IDLE"
                with m.Elif(~(dma_rsp.valid & dma_match)):
                    run_timer()
                    with m.If(timed_out):
                        # The rest of the burst is all ones; its late beats are dropped by tag.
                        count_timeout()
                        m.d.sync += [dma_error.eq(1), host_failed.eq(1)]
                        m.next = "READ-ONES"

            with m.State("DMA-WRITE"):
                m.d.comb += [
                    dma_req.valid.eq(self.req.valid & dma_free),
                    dma_req.payload.write.eq(1),
                    dma_req.payload.addr.eq(byte_offset),
                    dma_req.payload.count.eq(count),
                    dma_req.payload.data.eq(req.data),
                    dma_req.payload.be.eq(req.be & last_be),
                    dma_req.payload.tag.eq(dma_tag),
                    self.req.ready.eq(dma_req.ready & dma_free),
                ]
                with m.If(self.req.valid & dma_free & dma_req.ready):
                    start_timer()
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 0):
                        m.next = "DMA-WRITE-ACK"
                with m.Elif(self.req.valid):
                    # Only a host that does not take the beat runs the timer, not a slow guest.
                    run_timer()
                    with m.If(timed_out):
                        with m.If(dma_free):
                            # The host's packet is finished with the beat on offer, then beats
                            # that write nothing; the guest's beats are taken and dropped.
                            m.d.sync += [dma_owed.eq(remaining + 1), dma_owed_write.eq(1),
                                         dma_owed_addr.eq(byte_offset), dma_owed_count.eq(count),
                                         dma_owed_data.eq(req.data),
                                         dma_owed_be.eq(req.be & last_be)]
                        count_timeout()
                        m.d.sync += dma_error.eq(1)
                        m.next = "WRITE"

            with m.State("DMA-WRITE-ACK"):
                run_timer()
                with m.If(dma_rsp.valid & dma_match):
                    m.d.sync += dma_error.eq(dma_error | dma_rsp.payload.err)
                    # A write is posted, so this count is all the guest learns of a write the
                    # host could not store (a full tmpfs, an object shrunk under it).
                    with m.If(dma_rsp.payload.err):
                        m.d.sync += count_reject.eq(1)
                    m.next = "WRITE-ACK"
                with m.Elif(timed_out):
                    count_timeout()
                    m.d.sync += dma_error.eq(1)
                    m.next = "WRITE-ACK"

        # Last, so it wins: READ-FETCH's and OPEN-FETCH's load of the word the read port holds.
        with m.If(name_load):
            m.d.sync += [rd_data.eq(name_rd.data), name_byte.eq(name_rd.data[:8])]

        # -- owed beats: sent whenever the host takes them, whatever the FSM is doing --------------
        with m.If(ctl_owed):
            m.d.comb += [
                ctl_req.valid.eq(1),
                ctl_req.payload.op.eq(ctl_owed_op),
                ctl_req.payload.data.eq(ctl_owed_data),
                ctl_req.payload.last.eq(ctl_owed_last),
                ctl_req.payload.tag.eq(ctl_tag),
            ]
            with m.If(ctl_req.ready):
                with m.If(ctl_owed_last):
                    m.d.sync += ctl_owed.eq(0)
                    with m.If(ctl_owed_op != CtlOp.RESET):
                        # A whole OPEN or CLOSE went out after all: its answer is owed.
                        m.d.sync += [ctl_stale.eq(1), ctl_stale_op.eq(ctl_owed_op)]
                with m.Else():
                    m.d.sync += [ctl_owed_op.eq(CtlOp.RESET), ctl_owed_data.eq(0),
                                 ctl_owed_last.eq(1)]
        with m.If(~dma_free):
            m.d.comb += [
                dma_req.valid.eq(1),
                dma_req.payload.write.eq(dma_owed_write),
                dma_req.payload.addr.eq(dma_owed_addr),
                dma_req.payload.count.eq(dma_owed_count),
                dma_req.payload.data.eq(dma_owed_data),
                dma_req.payload.be.eq(dma_owed_be),
                dma_req.payload.tag.eq(dma_tag),
            ]
            with m.If(dma_req.ready):
                m.d.sync += [dma_owed.eq(dma_owed - 1), dma_owed_be.eq(0)]

        # What the formal properties (formal/) look at inside; not ports, changes nothing.
        self._probe = {"is_open": is_open, "map_limit": map_limit, "dma_free": dma_free,
                       "ctl_owed": ctl_owed, "ctl_stale": ctl_stale}
        return m
