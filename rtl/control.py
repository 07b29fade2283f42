"""ControlChannel: OPEN and CLOSE on the host's control channel, with what it owes the host.

The core starts an OPEN or a CLOSE when the guest reads the register (read-to-trigger) and waits
for ``done``; :class:`ControlChannel` streams the name from the name RAM, waits for the host's
answer, keeps the window's state (open, MAP_SIZE, the object's size) and gives up after the host
timeout. Everything that outlives a guest's read lives here: the tag of the newest packet, the
beats owed to the host when a wait was cut off, and the answer the host still owes (docs/timing.md,
"What the device does when the host misbehaves").
"""

from amaranth.hdl import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from vmshm.abi.regmap import CtlOp, Status

from .layouts import TAG_BITS, ctl_signature
from .refuse import check_data_width
from .timer import HostTimer

__all__ = ["control_cmd_signature", "name_read_signature", "ControlChannel"]


def control_cmd_signature():
    """Return the signature of the OPEN and CLOSE commands, from the core's side.

    Members
    -------
    start : ``Out(1)``
        Start ``op`` (only while ``busy`` is low).
    op : ``Out(2)``
        :attr:`~vmshm.abi.regmap.CtlOp.OPEN` or :attr:`~vmshm.abi.regmap.CtlOp.CLOSE`.
    listen : ``Out(1)``
        The core is idle: the host's stray and late answers may be taken now (they are taken
        only then and while an operation waits for one).
    busy : ``In(1)``
        An operation is under way (STATUS.BUSY); it rises on the edge after ``start``.
    done : ``In(1)``
        The operation ends this cycle, with its status code in ``status``.
    status : ``In(8)``
        0 or an errno (:class:`~vmshm.abi.regmap.Status`), with ``done``.
    """
    return wiring.Signature({
        "start": Out(1),
        "op": Out(2),
        "listen": Out(1),
        "busy": In(1),
        "done": In(1),
        "status": In(8),
    })


def name_read_signature(addr_width, data_width):
    """Return the signature of a read of the name RAM, from the reader's side.

    The RAM's read port is the core's: its output goes only into registers (a block RAM's
    clock-to-output is slow), the core's read-data register among them, which also holds the
    word the reader streams the rest of its bytes from.

    Members
    -------
    addr : ``Out(addr_width)``
        The word to fetch this cycle.
    fetch : ``Out(1)``
        Fetch it: it is on the read port, with ``loaded``, on the next cycle.
    loaded : ``In(1)``
        The read port holds a fetched word (the one asked for on the cycle before).
    first : ``In(8)``
        The read port's first byte.
    rest : ``In(data_width - 8)``
        The other bytes of the last word loaded, held until the next load.
    """
    return wiring.Signature({
        "addr": Out(addr_width),
        "fetch": Out(1),
        "loaded": In(1),
        "first": In(8),
        "rest": In(data_width - 8),
    })


class _Owed:
    """What the channel owes the host and what the host owes it, across the guest's reads.

    Every packet carries a tag; the host echoes it and the op, so an answer is only taken for
    the request waited on. ``owed`` (a port, for the proofs) is a beat still to send: the beat on
    offer when a wait timed out (a stream source may not take back a beat it offered), then
    RESET to end a cut-off OPEN. Out of reset the owed beat is a RESET: the host learns of every
    reset of the device. ``stale`` is an answer the host owes to a packet the guest gave up on.
    At most one of the two is set.
    """

    def __init__(self, owed, stale):
        self.tag = Signal(TAG_BITS)             # tag of the newest packet
        self.owed = owed
        self.op = Signal(2, init=CtlOp.RESET)
        self.data = Signal(8)
        self.last = Signal(init=1)
        self.stale = stale
        self.stale_op = Signal(2)

    def owe(self, m, op, data, last):
        m.d.sync += [self.owed.eq(1), self.op.eq(op), self.data.eq(data), self.last.eq(last)]

    def owe_cleanup(self, m):
        # The host may hold an object the guest was told is not open: CLOSE it. CLOSE is
        # harmless if nothing is open, and the host serves its channel in order.
        m.d.sync += self.tag.eq(self.tag + 1)
        self.owe(m, CtlOp.CLOSE, 0, 1)

    def take_late(self, m, ctl_rsp, match):
        """Take a late answer to an OPEN or CLOSE the guest gave up on; close a late OPEN
        success again."""
        rsp = ctl_rsp.payload
        with m.If(ctl_rsp.ready & self.stale & match & (rsp.op == self.stale_op)):
            m.d.sync += self.stale.eq(0)
            with m.If((self.stale_op == CtlOp.OPEN) & (rsp.status == Status.OK)):
                self.owe_cleanup(m)

    def send(self, m, ctl_req):
        """Offer the owed beat whenever there is one, whatever the channel is doing."""
        with m.If(self.owed):
            m.d.comb += [
                ctl_req.valid.eq(1),
                ctl_req.payload.op.eq(self.op),
                ctl_req.payload.data.eq(self.data),
                ctl_req.payload.last.eq(self.last),
                ctl_req.payload.tag.eq(self.tag),
            ]
            with m.If(ctl_req.ready):
                with m.If(self.last):
                    m.d.sync += self.owed.eq(0)
                    with m.If(self.op != CtlOp.RESET):
                        # A whole OPEN or CLOSE went out after all: its answer is owed.
                        m.d.sync += [self.stale.eq(1), self.stale_op.eq(self.op)]
                with m.Else():
                    m.d.sync += [self.op.eq(CtlOp.RESET), self.data.eq(0), self.last.eq(1)]


class ControlChannel(wiring.Component):
    """Serve OPEN and CLOSE on the host's control channel, and keep the window's state.

    Parameters
    ----------
    window_size, name_size, data_width, host_timeout
        As for :class:`~vmshm.rtl.VMShmCore`.

    Members
    -------
    cmd : ``In(control_cmd_signature())``
        The core's commands.
    name : ``Out(name_read_signature(...))``
        Reads of the name RAM, for the name OPEN streams.
    ctl_req, ctl_rsp : members of :func:`~vmshm.rtl.layouts.ctl_signature`
        The host's control channel.
    dma_enable : ``In(1)``
        Bus Master Enable: without it OPEN fails with ``EPERM``.
    dma_free : ``In(1)``
        No window beat is owed to the host: an OPEN waits for it, so none reaches the object
        opened next.
    is_open, map_size, map_limit, obj_size, host_base : ``Out(...)``
        The window: an object is open; MAP_SIZE; MAP_SIZE rounded up to a word (a register, so
        the window's decode compares against it without an adder); the object's size; its host
        bus address (``ctl_rsp.payload.addr`` of the last successful OPEN).
    last_error : ``Out(8)``
        STATUS.LAST_ERROR: the status of the last OPEN or CLOSE.
    timeout : ``Out(1)``
        A wait on the host timed out this cycle: counted in TIMEOUTS.
    owed : ``Out(1)``
        A beat of a packet given up on is on offer (``ctl_req``'s beats are not a new packet's).
    stale : ``Out(1)``
        The host owes an answer to a packet the guest gave up on.
    """

    def __init__(self, *, window_size, name_size, data_width, host_timeout):
        check_data_width(self, data_width)
        self._window_size = window_size
        self._name_size = name_size
        self._data_width = data_width
        self._host_timeout = host_timeout
        wb = data_width // 8
        super().__init__({
            "cmd": In(control_cmd_signature()),
            "name": Out(name_read_signature(ceil_log2(name_size // wb), data_width)),
            **ctl_signature().members,
            "dma_enable": In(1),
            "dma_free": In(1),
            "is_open": Out(1),
            "map_size": Out(range(window_size + 1)),
            "map_limit": Out(range(window_size + wb + 1)),
            "obj_size": Out(64),
            "host_base": Out(64),
            "last_error": Out(8),
            "timeout": Out(1),
            "owed": Out(1, init=1),
            "stale": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        wb = self._data_width // 8
        wshift = exact_log2(wb)
        cmd, ctl_req, ctl_rsp = self.cmd, self.ctl_req, self.ctl_rsp
        m.submodules.timer = timer = HostTimer(self._host_timeout)
        pending_op = Signal(2)      # the guest's OPEN or CLOSE being served

        b = _Owed(self.owed, self.stale)
        rsp = ctl_rsp.payload
        match = Signal()
        m.d.comb += match.eq(ctl_rsp.valid & (rsp.tag == b.tag))
        rsp_map = Signal.like(self.map_size)    # what an OPEN success maps: at most the window
        m.d.comb += rsp_map.eq(Mux(rsp.size > self._window_size, self._window_size, rsp.size))

        # -- the name, one byte a beat -----------------------------------------------------------
        # The word at hand is the core's read register (free while OPEN streams: the
        # completion's value is set when it ends); the byte on offer is a register of its own,
        # loaded from the RAM with the word, so the RAM's output meets no byte select.
        name_ptr = Signal(range(self._name_size))
        name_byte = Signal(8)
        name_lane = name_ptr[:wshift]

        b.take_late(m, ctl_rsp, match)

        def finish(status):
            m.d.comb += [cmd.done.eq(1), cmd.status.eq(status)]
            m.d.sync += [self.last_error.eq(status), cmd.busy.eq(0), pending_op.eq(0)]
            m.next = "IDLE"

        def give_up():
            m.d.comb += self.timeout.eq(1)
            finish(C(Status.ETIMEDOUT, 8))

        def close_window():
            m.d.sync += [self.is_open.eq(0), self.map_size.eq(0), self.map_limit.eq(0),
                         self.obj_size.eq(0)]

        with m.FSM(name="fsm"):
            with m.State("IDLE"):
                m.d.comb += [timer.restart.eq(1), ctl_rsp.ready.eq(cmd.listen)]
                with m.If(cmd.start):
                    m.d.sync += [cmd.busy.eq(1), pending_op.eq(cmd.op)]
                    with m.If(cmd.op == CtlOp.OPEN):
                        m.next = "OPEN-START"
                    with m.Else():
                        m.next = "CLOSE-START"

            # -- OPEN ------------------------------------------------------------------------------
            with m.State("OPEN-START"):
                # The name's first word, for OPEN-FETCH to take its first byte from.
                m.d.comb += self.name.addr.eq(0)
                # Owed DMA beats go out first too: none may reach the object opened next.
                with m.If(b.stale | b.owed | ~self.dma_free):
                    m.next = "CTL-DRAIN"
                with m.Elif(self.is_open):
                    finish(C(Status.EBUSY, 8))
                with m.Elif(~self.dma_enable):
                    finish(C(Status.EPERM, 8))
                with m.Else():
                    m.d.comb += self.name.fetch.eq(1)
                    m.d.sync += [name_ptr.eq(0), b.tag.eq(b.tag + 1)]
                    m.next = "OPEN-FETCH"

            with m.State("OPEN-FETCH"):
                # Entered at the start of a word, which the read port holds now: it is loaded.
                m.d.comb += timer.run.eq(1)
                m.next = "OPEN-NAME"

            with m.State("OPEN-NAME"):
                m.d.comb += timer.run.eq(1)
                # The port reads the next word, for OPEN-FETCH to take after the last byte.
                m.d.comb += self.name.addr.eq(name_ptr[wshift:] + 1)
                last = (name_byte == 0) | (name_ptr == self._name_size - 1)
                m.d.comb += [
                    ctl_req.valid.eq(1),
                    ctl_req.payload.op.eq(CtlOp.OPEN),
                    ctl_req.payload.data.eq(name_byte),
                    ctl_req.payload.last.eq(last),
                    ctl_req.payload.tag.eq(b.tag),
                ]
                with m.If(ctl_req.ready):
                    m.d.sync += [
                        name_ptr.eq(name_ptr + 1),
                        # After the word's last byte OPEN-FETCH loads the next: no byte here.
                        name_byte.eq(self.name.rest.word_select(name_lane, 8)),
                    ]
                    with m.If(last):
                        m.next = "CTL-WAIT"
                    with m.Elif(name_ptr[:wshift] == wb - 1):
                        m.d.comb += self.name.fetch.eq(1)
                        m.next = "OPEN-FETCH"
                with m.Elif(timer.expired):
                    # The byte on offer stays owed; a RESET after it ends the packet unless it
                    # was the last, in which case its answer is owed like a timed-out one.
                    b.owe(m, CtlOp.OPEN, name_byte, last)
                    give_up()

            # -- CLOSE -----------------------------------------------------------------------------
            with m.State("CLOSE-START"):
                with m.If(b.stale | b.owed):
                    m.next = "CTL-DRAIN"
                with m.Else():
                    m.d.sync += b.tag.eq(b.tag + 1)
                    m.next = "CLOSE-SEND"

            with m.State("CLOSE-SEND"):
                m.d.comb += [
                    timer.run.eq(1),
                    ctl_req.valid.eq(1),
                    ctl_req.payload.op.eq(CtlOp.CLOSE),
                    ctl_req.payload.last.eq(1),
                    ctl_req.payload.tag.eq(b.tag),
                ]
                # The window closes as soon as CLOSE is sent, or given up on: no access reaches
                # a released object, whatever the host answers.
                with m.If(ctl_req.ready):
                    close_window()
                    m.next = "CTL-WAIT"
                with m.Elif(timer.expired):
                    close_window()
                    b.owe(m, CtlOp.CLOSE, 0, 1)
                    give_up()

            # -- the host's answer -----------------------------------------------------------------
            with m.State("CTL-WAIT"):
                m.d.comb += [timer.run.eq(1), ctl_rsp.ready.eq(1)]
                with m.If(match & (rsp.op == pending_op)):
                    with m.If((pending_op == CtlOp.OPEN) & (rsp.status == Status.OK)):
                        m.d.sync += [
                            self.is_open.eq(1),
                            self.obj_size.eq(rsp.size),
                            self.host_base.eq(rsp.addr),
                            self.map_size.eq(rsp_map),
                            self.map_limit.eq(((rsp_map + wb - 1) >> wshift) << wshift),
                        ]
                    finish(rsp.status)
                with m.Elif(timer.expired):
                    m.d.sync += [b.stale.eq(1), b.stale_op.eq(pending_op)]
                    give_up()

            # Before a new OPEN or CLOSE goes out, the owed beats go and the owed answer comes
            # (the host serves its channel in order). A host that never does gives ETIMEDOUT;
            # an answer given up on is forgotten, and a forgotten OPEN is closed to be sure.
            with m.State("CTL-DRAIN"):
                m.d.comb += [timer.run.eq(1), ctl_rsp.ready.eq(1)]
                with m.If(~b.stale & ~b.owed & (self.dma_free | (pending_op == CtlOp.CLOSE))):
                    with m.If(pending_op == CtlOp.OPEN):
                        m.next = "OPEN-START"
                    with m.Else():
                        m.next = "CLOSE-START"
                with m.Elif(timer.expired):
                    m.d.sync += b.stale.eq(0)
                    # A CLOSE given up on still shuts the window, and is owed to the host if the
                    # channel has room (an owed RESET or CLOSE releases the object anyway).
                    with m.If(pending_op == CtlOp.CLOSE):
                        close_window()
                    with m.If(~b.owed & ((b.stale & (b.stale_op == CtlOp.OPEN)) |
                                           (pending_op == CtlOp.CLOSE))):
                        b.owe_cleanup(m)
                    give_up()

        # Last, so it wins over OPEN-NAME's: the byte a fetched word starts with.
        with m.If(self.name.loaded):
            m.d.sync += name_byte.eq(self.name.first)

        b.send(m, ctl_req)
        return m
