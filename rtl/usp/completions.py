"""The requester's completion side: its client tags and the completions that come back on RC.

:class:`TagTable` keeps the client tags (which are owed completions, which one the next read
takes); :class:`RcReceiver` takes the completions, puts their data in place and says which
DWORDs have arrived. :class:`~vmshm.rtl.usp.requester.USPRequester` holds both.
"""

from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .descriptors import RC_DESCRIPTOR, RC_DISCONTINUE, RC_USER_WIDTH
from .streams import dw_in_layout

__all__ = ["BUF_DWORDS", "TAGS", "TagTable", "RcReceiver"]

#: Most DWORDs the reorder buffer holds: one core DMA request (``count`` is 8 bits).
BUF_DWORDS = 256
#: Client tags used without extended tags (the model and PG213 both allow 0..31).
TAGS = 32


class TagTable(wiring.Component):
    """Keep the requester's client tags: those the read at hand waits on, those earlier reads
    left owed (stale), and the one the next read TLP takes.

    A tag is free when it is neither outstanding nor stale. The request side offers ``tag``;
    while it is not free, it asks for the next (``skip``); when a TLP with it goes out, it is
    outstanding (``take``). When the read at hand is over (``retire``), its tags still owed
    become stale, so no late completion of theirs is taken for a later read's. The completion
    side ends a tag's wait (``release``), parks a tag whose completions the hard IP still
    tracks (``park``), and frees a stale tag the hard IP reports complete (``unpark``).

    Members
    -------
    tag : ``Out(5)``
        The tag the next read TLP takes.
    tag_busy : ``Out(1)``
        ``tag`` is outstanding or stale.
    skip, take, retire : ``In(1)``
    outstanding : ``Out(32)``
        Tags of the read at hand still owed completions.
    release, park, unpark : ``In(32)``
        One bit per tag.
    orphan : ``In(1)``
        A Function Level Reset: every outstanding tag turns stale. The table itself is outside
        the function's reset (its two registers are reset-less): completions may still be on
        their way, and a read after the FLR must not take them for its own (issue 22,
        finding 8).
    forget : ``In(1)``
        The link's reset: no completion is on its way any more, every tag is free.
    """

    tag: Out(5)
    tag_busy: Out(1)
    skip: In(1)
    take: In(1)
    retire: In(1)
    outstanding: Out(TAGS)
    release: In(TAGS)
    park: In(TAGS)
    unpark: In(TAGS)
    orphan: In(1)
    forget: In(1)

    def elaborate(self, platform):
        m = Module()
        outstanding = Signal(TAGS, reset_less=True)
        m.d.comb += self.outstanding.eq(outstanding)
        stale = Signal(TAGS, reset_less=True)  # tags of earlier reads still owed completions
        set_out = Signal(TAGS)
        with m.If(self.take):
            m.d.comb += set_out.bit_select(self.tag, 1).eq(1)
        retired = Mux(self.retire | self.orphan, outstanding, 0)
        with m.If(self.forget):
            m.d.sync += [outstanding.eq(0), stale.eq(0)]
        with m.Elif(self.orphan):
            m.d.sync += [outstanding.eq(0), stale.eq((stale | retired) & ~self.unpark)]
        with m.Else():
            m.d.sync += [outstanding.eq((outstanding | set_out) & ~(retired | self.release)),
                         stale.eq((stale | retired | self.park) & ~self.unpark)]
        busy = outstanding | stale
        m.d.comb += self.tag_busy.eq(busy.bit_select(self.tag, 1))
        with m.If(self.skip | self.take):
            m.d.sync += self.tag.eq(self.tag + 1)
        return m


class RcReceiver(wiring.Component):
    """Take read completions from RC: check each against the tags, put its data in place by its
    lower address, and count its DWORDs as arrived once it has ended whole and good.

    A completion error (non-SC status, poisoned data, an error code from the hard IP) ends the
    wait on its tag without its DWORDs, which the requester then fails. A completion the hard IP
    marks discontinued is dropped whole: its DWORDs never count as arrived and its tag is parked
    for good. A completion of an earlier read (another ``epoch``) writes nothing, nor does one
    whose read ended while it was under way, however many reads later it goes on.

    Members
    -------
    rc : ``In(stream.Signature(dw_in_layout(RC_USER_WIDTH)))``
        RC, one DWORD a beat (from :class:`~vmshm.rtl.usp.streams.AxisToDwords`).
    outstanding : ``In(32)``
        The tags the read at hand waits on (:class:`TagTable`).
    epoch : ``In(3)``
        Which read completions may still write the buffer for.
    start_dw : ``In(10)``
        Address bits 11:2 of the read's first DWORD.
    count : ``In(8)``
        The read's DWORDs - 1.
    restart : ``In(1)``
        A new read begins: nothing of it has arrived.
    have : ``Out(256)``
        DWORDs of the read at hand that have arrived.
    progress : ``Out(1)``
        A completion of the read at hand came this cycle.
    buf_addr : ``Out(8)``, buf_data : ``Out(32)``, buf_en : ``Out(1)``
        A write into the reorder buffer.
    release, park, unpark : ``Out(32)``
        To :class:`TagTable`, one bit per tag.
    link_reset : ``In(1)``
        The link's reset: RC starts again at a packet's first DWORD. How far the receiver is into
        a completion (descriptor, data, the tag and whether it is the tag's last) is outside the
        function's reset: the hard IP frames RC across a Function Level Reset, so the receiver
        goes on parsing a completion the FLR cut, takes none of it for a read (the FLR ended
        them all), and frees its tag if it was the tag's last.
    """

    rc: In(stream.Signature(dw_in_layout(RC_USER_WIDTH)))
    outstanding: In(TAGS)
    epoch: In(3)
    start_dw: In(10)
    count: In(8)
    restart: In(1)
    have: Out(BUF_DWORDS)
    progress: Out(1)
    buf_addr: Out(8)
    buf_data: Out(32)
    buf_en: Out(1)
    release: Out(TAGS)
    park: Out(TAGS)
    unpark: Out(TAGS)
    link_reset: In(1)

    def elaborate(self, platform):
        m = Module()
        rc, have = self.rc, self.have
        pend = Signal(BUF_DWORDS)      # DWORDs in the completion at hand, not yet known good
        with m.If(self.restart):
            m.d.sync += have.eq(0)

        # Where RC is: outside the function's reset (reset-less, cleared by the link's reset).
        r0 = Signal(32, reset_less=True)
        r1 = Signal(32, reset_less=True)
        rc_idx = Signal(2, reset_less=True)     # descriptor DWORDs parsed
        in_data = Signal(reset_less=True)       # in a completion's data
        rc_tag = Signal(5, reset_less=True)
        rc_done = Signal(reset_less=True)       # the completion is its tag's last (Request Completed)
        # What the completion means for the read at hand: the FLR's reset ends it.
        rc_known = Signal()         # the completion belongs to the current read
        rc_ok = Signal()            # ... and carries good data
        rc_release = Signal()       # its tag is done with once the packet ends
        rc_epoch = Signal(3)
        # Good data for the read at hand: once that read is over (the epoch moved on), never
        # again, even when a completion paused across 8 more reads finds the 3-bit epoch back
        # at its own (rc_ok falls for good).
        current = Signal()
        m.d.comb += current.eq(rc_ok & (rc_epoch == self.epoch))
        widx = Signal(10)
        m.d.comb += rc.ready.eq(1)
        with m.If(~in_data):
            with m.If(rc.valid):
                idx = Mux(rc.payload.first, 0, rc_idx)
                with m.If(idx == 0):
                    m.d.sync += [r0.eq(rc.payload.data), rc_idx.eq(1)]
                with m.Elif(idx == 1):
                    m.d.sync += [r1.eq(rc.payload.data), rc_idx.eq(2)]
                with m.Else():
                    rcd = RC_DESCRIPTOR(Cat(r0, r1, rc.payload.data))
                    tag8 = rcd.tag
                    completed = rcd.request_completed
                    in_range = tag8 < TAGS
                    known = in_range & self.outstanding.bit_select(tag8[:5], 1)
                    # A discontinued completion without payload is known so at once.
                    cut = rc.payload.last & rc.payload.user[RC_DISCONTINUE]
                    ok = (known & (rcd.error_code == 0) & (rcd.completion_status == 0) &
                          ~rcd.poisoned_completion & ~cut)
                    # A bad completion ends what this read waits for; a tag the IP still
                    # tracks is parked until the IP says it is done. A discontinued one's
                    # descriptor is not to be trusted: its tag is parked for good.
                    release = known & (completed | ~ok)
                    with m.If(known & ~ok & (~completed | cut)):
                        m.d.comb += self.park.bit_select(tag8[:5], 1).eq(1)
                    # The hard IP is done with the tag: free it, whether or not the read at
                    # hand waits on it. A tag turns stale when its read ends (a timeout, an
                    # FLR) while its last completion is on its way, even on this very cycle;
                    # only this frees it again. A packet with data for the read at hand frees
                    # it at its end (``rc_done``).
                    with m.If(in_range & completed & ~cut & (~known | rc.payload.last)):
                        m.d.comb += self.unpark.bit_select(tag8[:5], 1).eq(1)
                    m.d.comb += self.progress.eq(known)
                    m.d.sync += [
                        rc_idx.eq(0), rc_tag.eq(tag8[:5]), rc_known.eq(known), rc_ok.eq(ok),
                        rc_release.eq(release), rc_done.eq(known & completed),
                        rc_epoch.eq(self.epoch),
                        widx.eq(rcd.lower_address[2:] - self.start_dw),
                    ]
                    with m.If(rc.payload.last):
                        with m.If(release):
                            m.d.comb += self.release.bit_select(tag8[:5], 1).eq(1)
                    with m.Else():
                        m.d.sync += in_data.eq(1)
                with m.If(rc.payload.last & (idx != 2)):
                    m.d.sync += rc_idx.eq(0)     # shorter than a descriptor: ignored
        with m.Else():
            m.d.sync += rc_ok.eq(current)
            with m.If(rc.valid):
                m.d.comb += self.progress.eq(rc_known)
                fresh = Signal(BUF_DWORDS)
                # Never over a DWORD already arrived: a later completion that is then
                # discontinued, or has a bad lower address, must not change what the read
                # hands over (issue 22, finding 10).
                arrived = have.bit_select(widx[:8], 1)
                with m.If(current & (widx <= self.count) & ~arrived):
                    m.d.comb += [self.buf_addr.eq(widx), self.buf_data.eq(rc.payload.data),
                                 self.buf_en.eq(1), fresh.bit_select(widx[:8], 1).eq(1)]
                m.d.sync += widx.eq(widx + 1)
                with m.If(rc.payload.last):
                    m.d.sync += [pend.eq(0), in_data.eq(0)]
                    with m.If(rc.payload.user[RC_DISCONTINUE]):
                        # PG213: discard all of it. Its DWORDs never count as arrived, so
                        # the read fails them; its tag is parked for good.
                        with m.If(rc_known):
                            m.d.comb += [self.release.bit_select(rc_tag, 1).eq(1),
                                         self.park.bit_select(rc_tag, 1).eq(1)]
                    with m.Else():
                        # Its DWORDs count only now, all at once, and its tag is released
                        # with them, so the read side never sees a resolved tag whose
                        # DWORDs are still on their way.
                        with m.If(current):
                            m.d.sync += have.eq(have | pend | fresh)
                        with m.If(rc_release):
                            m.d.comb += self.release.bit_select(rc_tag, 1).eq(1)
                        # Its read may have ended while it came (a timeout or an FLR turned
                        # the tag stale): the tag is free again all the same.
                        with m.If(rc_done):
                            m.d.comb += self.unpark.bit_select(rc_tag, 1).eq(1)
                with m.Else():
                    m.d.sync += pend.eq(pend | fresh)
        with m.If(self.link_reset):
            m.d.sync += [rc_idx.eq(0), in_data.eq(0), rc_done.eq(0)]
        return m
