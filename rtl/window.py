"""WindowDMA: the window's data path, one guest request at a time, to and from the host's DMA port.

The core decides that a request goes to the window (it is open, inside MAP_SIZE, bus mastering
is on) and hands it over with ``start``; :class:`WindowDMA` moves its beats between the guest's
streams and ``dma_req``/``dma_rsp`` and says when it is done, or that it gave up on the host (the
core then answers the rest itself: all ones for a read, the write's beats dropped). What it gave
up on while a beat was on offer it still owes the host, and sends whenever the host takes it.

What ``dma_req`` may carry after a timeout (the contract a front end builds on)
-------------------------------------------------------------------------------
A beat once offered is never withdrawn (a stream's payload holds until it is taken), so a
request the window gave up on while a beat was on offer still reaches the host whole:

- A read: its one request beat, unchanged. The answers come back to a newer tag and are dropped.
- A write of ``count`` + 1 beats, given up on at beat *k*: beats 0 to *k* - 1 as the host took
  them, beat *k* unchanged (the guest's data and enables), then beats *k* + 1 to ``count`` with
  ``be == 0`` **and** ``data == 0``: they write nothing and carry no data of anyone's.
  ``write``, ``addr``, ``count`` and ``tag`` are those of the request on every beat.

Only such a tail (or a guest's own beat with no byte enabled) has ``be == 0``. A front end that
cannot send a DWORD without enabled bytes in the middle or at the end of a packet (PCIe Base
2.2.5: Last DW BE 0000b with Length > 1 is malformed; middle DWORDs are implied fully enabled)
ends its packet at the last beat with a non-zero ``be`` and drops the tail, and sends nothing
for a request whose beats all have ``be == 0``. No other beat is ever invented: the host never
sees the data of a beat at an address the guest did not write it to.

A write passing a waiting read (``post``; issue 22, finding 2)
--------------------------------------------------------------
PCIe lets posted requests pass non-posted ones, and a root port may hold the completion of the
read we sent behind the posted writes it has queued for us: a device that takes no write while
its read waits never gets the read's data. So while a read waits for the host's answer (its
request beat taken, no beat of its answer on offer, its wait not over, nothing owed) the core may
hand over a window write with ``post.start``: its beats go out on ``dma_req`` as a packet of their
own, with its own tag (the read's with the top bit flipped), and ``post.done`` says when the host
has taken them all, or (``post.failed``) that it did not take one within ``host_timeout``: that
beat and the rest are owed as above. The write is posted: its answer is not waited for and is
dropped like any other tag's. The read's wait goes on meanwhile and is checked again after the
write, so a read gives up at most one write's passage after its own ``host_timeout``.
"""

from amaranth.hdl import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import MAX_BURST, TAG_BITS, dma_signature
from .refuse import check_data_width
from .timer import HostTimer

__all__ = ["window_cmd_signature", "window_post_signature", "window_rd_layout",
           "window_wr_layout", "WindowDMA"]


def window_cmd_signature(addr_width, data_width):
    """Return the signature of a window request handed to :class:`WindowDMA`, from the core's side.

    The header members hold for the whole request (the core latches them); ``remaining`` counts
    down as the guest's beats move (a completion taken for a read, a write beat taken).

    Members
    -------
    start : ``Out(1)``
        Take the request at hand; only while neither side is busy.
    write : ``Out(1)``
        With ``start``: the request writes.
    addr : ``Out(addr_width)``
        Byte offset of the request's first word in the object.
    count : ``Out(8)``
        Beats of the request, less one.
    remaining : ``Out(8)``
        Guest beats after the current one.
    end_be : ``Out(data_width // 8)``
        Byte enables of the request's last word that lie inside the object (all of them unless
        MAP_SIZE ends in that word): the bytes past it read all ones and are never written.
    done : ``In(1)``
        The request ends this cycle (its last beat or the write's acknowledgement, or a wait on
        the host timed out).
    failed : ``In(1)``
        With ``done``: the host failed the request before the guest's beats were all moved; the
        core answers the rest (``remaining`` + 1 beats) itself.
    """
    return wiring.Signature({
        "start": Out(1),
        "write": Out(1),
        "addr": Out(addr_width),
        "count": Out(8),
        "remaining": Out(8),
        "end_be": Out(data_width // 8),
        "done": In(1),
        "failed": In(1),
    })


def window_post_signature(addr_width, data_width):
    """Return the signature of a window write passing a waiting read, from the core's side.

    The header members hold from ``start`` until ``done`` (the core latches them); the beats
    come on :class:`WindowDMA`'s ``wr`` stream, ``remaining`` counted down as they move.

    Members
    -------
    ready : ``In(1)``
        A read waits for the host's answer: a write may pass it now.
    start : ``Out(1)``
        With ``ready``: take the write whose header is on the members below from the next cycle.
    addr, count, remaining, end_be
        As in :func:`window_cmd_signature`, for the write.
    done : ``In(1)``
        The write's beats are all taken by the host, or (``failed``) the host did not take one
        in time: the core takes the guest's ``remaining`` + 1 beats left and drops them.
    failed : ``In(1)``
    """
    return wiring.Signature({
        "ready": In(1),
        "start": Out(1),
        "addr": Out(addr_width),
        "count": Out(8),
        "remaining": Out(8),
        "end_be": Out(data_width // 8),
        "done": In(1),
        "failed": In(1),
    })


def window_rd_layout(data_width):
    """Return the layout of a read's beat to the guest: its data, and whether the host failed it
    (it then reads all ones)."""
    return data.StructLayout({"data": data_width, "err": 1, "last": 1})


def window_wr_layout(data_width):
    """Return the layout of a write's beat from the guest: its data and byte enables."""
    return data.StructLayout({"data": data_width, "be": data_width // 8})


class WindowDMA(wiring.Component):
    """Move a window request's beats between the guest and the host's DMA port.

    Parameters
    ----------
    addr_width : int
        Bits of a byte offset into the window.
    data_width : int
        32 or 64.
    host_timeout : int
        Cycles to wait on the host (for it to take a beat, or to answer one) before giving up;
        each beat of a burst has its own wait; 0 waits for ever.

    Members
    -------
    cmd : ``In(window_cmd_signature(addr_width, data_width))``
        The request, from the core.
    post : ``In(window_post_signature(addr_width, data_width))``
        A write passing the read at hand while it waits (see the module's docstring).
    wr : ``In(stream.Signature(window_wr_layout(data_width)))``
        A write's beats from the guest; taken only while the request writes.
    rd : ``Out(stream.Signature(window_rd_layout(data_width)))``
        A read's beats to the guest, ``last`` on the one ``remaining`` says is last.
    dma_req, dma_rsp : members of :func:`~vmshm.rtl.layouts.dma_signature`
        The host's DMA port; answers of any other tag than the newest request's are dropped.
    free : ``Out(1)``
        No beat is owed to the host: a new request's beats go out at once.
    error : ``Out(1)``
        The host failed a beat of the request this cycle (an error answer, or none in time):
        STATUS.DMA_ERROR is set.
    reject : ``Out(1)``
        The host refused the request (an error answer to a read's first beat or to a write):
        counted in REJECTS.
    timeout : ``Out(1)``
        A wait on the host timed out this cycle: counted in TIMEOUTS.
    """

    def __init__(self, *, addr_width, data_width, host_timeout):
        check_data_width(self, data_width)
        self._addr_width = addr_width
        self._data_width = data_width
        self._host_timeout = host_timeout
        super().__init__({
            "cmd": In(window_cmd_signature(addr_width, data_width)),
            "post": In(window_post_signature(addr_width, data_width)),
            "wr": In(stream.Signature(window_wr_layout(data_width))),
            "rd": Out(stream.Signature(window_rd_layout(data_width))),
            **dma_signature(addr_width, data_width).members,
            "free": Out(1),
            "error": Out(1),
            "reject": Out(1),
            "timeout": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        wb = self._data_width // 8
        ones = (1 << self._data_width) - 1
        cmd, dma_req, dma_rsp = self.cmd, self.dma_req, self.dma_rsp
        m.submodules.timer = timer = HostTimer(self._host_timeout)
        # The wait of a write passing the read (``post``): the read's own goes on meanwhile.
        m.submodules.post_timer = post_timer = HostTimer(self._host_timeout)
        post = self.post

        # The newest request's; counts on through an FLR (docs/timing.md: a request kept on offer).
        tag = Signal(TAG_BITS, reset_less=True)
        match = Signal()
        m.d.comb += match.eq(dma_rsp.payload.tag == tag)
        # Beats of a request the core gave up on while it was on offer: the beat itself, then
        # (for a write) the rest of the burst with no byte enabled and no data, so the host's
        # packet ends and no word of the guest's lands anywhere but where it was written (the
        # contract above; issue 22, finding 1).
        owed = Signal(range(MAX_BURST + 1))
        owed_write = Signal()
        owed_addr = Signal(self._addr_width)
        owed_count = Signal(8)
        owed_data = Signal(self._data_width)
        owed_be = Signal(wb)
        # Their tag: the request's own, kept, so a beat on offer keeps its tag when the next
        # request takes a new one (a stream source may not change a beat it offered).
        owed_tag = Signal(TAG_BITS)
        m.d.comb += self.free.eq(owed == 0)
        # A passing write's tag: the read's with the top bit flipped, so its answer is dropped
        # while the read waits, and by the next requests for the next 2 ** (TAG_BITS - 1).
        post_tag = Signal(TAG_BITS)
        m.d.comb += post_tag.eq(tag ^ (1 << (TAG_BITS - 1)))
        post_be = Mux(post.remaining == 0, post.end_be, (1 << wb) - 1)
        # The enables of the beat at hand: a burst's last word may end inside the object.
        last_be = Mux(cmd.remaining == 0, cmd.end_be, (1 << wb) - 1)
        tail_ones = Cat(*[Mux(last_be[i], 0, 0xFF) for i in range(wb)])

        # Answers for no request waited on are dropped: always ready unless a read's beat waits
        # for the guest.
        m.d.comb += dma_rsp.ready.eq(1)

        def give_up():
            m.d.comb += [self.timeout.eq(1), self.error.eq(1), cmd.done.eq(1), cmd.failed.eq(1)]
            m.next = "IDLE"

        with m.FSM(name="fsm"):
            with m.State("IDLE"):
                m.d.comb += timer.restart.eq(1)
                with m.If(cmd.start):
                    m.d.sync += tag.eq(tag + 1)
                    with m.If(cmd.write):
                        m.next = "WRITE"
                    with m.Else():
                        m.next = "READ-REQ"

            with m.State("READ-REQ"):
                m.d.comb += [
                    timer.run.eq(1),
                    dma_req.valid.eq(self.free),
                    dma_req.payload.write.eq(0),
                    dma_req.payload.addr.eq(cmd.addr),
                    dma_req.payload.count.eq(cmd.remaining),
                    # A read's enables: those of its last word, for a front end that asks the
                    # host for bytes (PCIe's last BE).
                    dma_req.payload.be.eq(cmd.end_be),
                    dma_req.payload.tag.eq(tag),
                ]
                with m.If(self.free & dma_req.ready):
                    m.d.comb += timer.restart.eq(1)
                    m.next = "READ-DATA"
                with m.Elif(timer.expired):
                    with m.If(self.free):
                        m.d.sync += [owed.eq(1), owed_write.eq(0), owed_addr.eq(cmd.addr),
                                     owed_count.eq(cmd.remaining), owed_be.eq(cmd.end_be),
                                     owed_tag.eq(tag), owed_data.eq(0)]
                    give_up()

            with m.State("READ-DATA"):
                took = Signal()
                m.d.comb += [
                    self.rd.valid.eq(dma_rsp.valid & match),
                    self.rd.payload.data.eq(Mux(dma_rsp.payload.err, ones,
                                                dma_rsp.payload.data | tail_ones)),
                    self.rd.payload.err.eq(dma_rsp.payload.err),
                    self.rd.payload.last.eq(cmd.remaining == 0),
                    dma_rsp.ready.eq(~match | self.rd.ready),
                    took.eq(self.rd.valid & self.rd.ready),
                ]
                with m.If(took & dma_rsp.payload.err):
                    m.d.comb += self.error.eq(1)
                # Each beat has its own timeout: a long burst with gaps still completes.
                with m.If(took):
                    m.d.comb += timer.restart.eq(1)
                    # The host refused the access (it could not read the object): count it once.
                    with m.If(dma_rsp.payload.err & (cmd.remaining == cmd.count)):
                        m.d.comb += self.reject.eq(1)
                    with m.If(cmd.remaining == 0):
                        m.d.comb += cmd.done.eq(1)
                        m.next = "IDLE"
                with m.Elif(~self.rd.valid):
                    m.d.comb += timer.run.eq(1)
                    with m.If(timer.expired):
                        # The rest of the burst is all ones; its late beats are dropped by tag.
                        give_up()
                    with m.Else():
                        # The read waits on the host: a write may pass it (issue 22, finding 2).
                        m.d.comb += post.ready.eq(self.free)
                        with m.If(post.start & self.free):
                            m.d.comb += post_timer.restart.eq(1)
                            m.next = "PASS"

            with m.State("PASS"):
                # A window write passing the waiting read, as in WRITE but with its own header,
                # tag and timer. The read's answer waits on dma_rsp; its wait goes on.
                m.d.comb += [
                    dma_rsp.ready.eq(~match),
                    timer.run.eq(~(dma_rsp.valid & match)),
                    dma_req.valid.eq(self.wr.valid & self.free),
                    dma_req.payload.write.eq(1),
                    dma_req.payload.addr.eq(post.addr),
                    dma_req.payload.count.eq(post.count),
                    dma_req.payload.data.eq(self.wr.payload.data),
                    dma_req.payload.be.eq(self.wr.payload.be & post_be),
                    dma_req.payload.tag.eq(post_tag),
                    self.wr.ready.eq(dma_req.ready & self.free),
                ]
                with m.If(self.wr.valid & self.free & dma_req.ready):
                    m.d.comb += post_timer.restart.eq(1)
                    with m.If(post.remaining == 0):
                        m.d.comb += post.done.eq(1)
                        m.next = "READ-DATA"
                with m.Elif(self.wr.valid):
                    m.d.comb += post_timer.run.eq(1)
                    with m.If(post_timer.expired):
                        with m.If(self.free):
                            m.d.sync += [owed.eq(post.remaining + 1), owed_write.eq(1),
                                         owed_addr.eq(post.addr), owed_count.eq(post.count),
                                         owed_data.eq(self.wr.payload.data),
                                         owed_be.eq(self.wr.payload.be & post_be),
                                         owed_tag.eq(post_tag)]
                        m.d.comb += [self.timeout.eq(1), self.error.eq(1), post.done.eq(1),
                                     post.failed.eq(1)]
                        m.next = "READ-DATA"

            with m.State("WRITE"):
                m.d.comb += [
                    dma_req.valid.eq(self.wr.valid & self.free),
                    dma_req.payload.write.eq(1),
                    dma_req.payload.addr.eq(cmd.addr),
                    dma_req.payload.count.eq(cmd.count),
                    dma_req.payload.data.eq(self.wr.payload.data),
                    dma_req.payload.be.eq(self.wr.payload.be & last_be),
                    dma_req.payload.tag.eq(tag),
                    self.wr.ready.eq(dma_req.ready & self.free),
                ]
                with m.If(self.wr.valid & self.free & dma_req.ready):
                    m.d.comb += timer.restart.eq(1)
                    with m.If(cmd.remaining == 0):
                        m.next = "WRITE-ACK"
                with m.Elif(self.wr.valid):
                    # Only a host that does not take the beat runs the timer, not a slow guest.
                    m.d.comb += timer.run.eq(1)
                    with m.If(timer.expired):
                        with m.If(self.free):
                            # The host's packet is finished with the beat on offer, then beats
                            # that write nothing; the guest's beats are taken and dropped.
                            m.d.sync += [owed.eq(cmd.remaining + 1), owed_write.eq(1),
                                         owed_addr.eq(cmd.addr), owed_count.eq(cmd.count),
                                         owed_data.eq(self.wr.payload.data),
                                         owed_be.eq(self.wr.payload.be & last_be),
                                         owed_tag.eq(tag)]
                        give_up()

            with m.State("WRITE-ACK"):
                m.d.comb += timer.run.eq(1)
                with m.If(dma_rsp.valid & match):
                    # A write is posted, so REJECTS is all the guest learns of a write the host
                    # could not store (a full tmpfs, an object shrunk under it).
                    m.d.comb += [self.error.eq(dma_rsp.payload.err),
                                 self.reject.eq(dma_rsp.payload.err), cmd.done.eq(1)]
                    m.next = "IDLE"
                with m.Elif(timer.expired):
                    # The guest's write is complete either way: it is posted.
                    m.d.comb += [self.timeout.eq(1), self.error.eq(1), cmd.done.eq(1)]
                    m.next = "IDLE"

        # -- owed beats: sent whenever the host takes them, whatever the request at hand -----------
        with m.If(~self.free):
            m.d.comb += [
                dma_req.valid.eq(1),
                dma_req.payload.write.eq(owed_write),
                dma_req.payload.addr.eq(owed_addr),
                dma_req.payload.count.eq(owed_count),
                dma_req.payload.data.eq(owed_data),
                dma_req.payload.be.eq(owed_be),
                dma_req.payload.tag.eq(owed_tag),
            ]
            with m.If(dma_req.ready):
                m.d.sync += [owed.eq(owed - 1), owed_be.eq(0), owed_data.eq(0)]
        return m
