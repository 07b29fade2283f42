"""Formal properties of VMShmCore and VMShmPCI, written in Amaranth next to small trackers.

:class:`CoreProperties` puts a small core (:data:`CORE_PARAMS`) between a guest and a host that
may do anything the valid/ready rules allow, and a reset that may come on any cycle. The guest
is assumed to keep to the rules too, to send one request at a time, to offer a write's beats back
to back and to take completions at once (what the bound in docs/timing.md assumes). Each
property set is one ``Assert`` group, chosen by name, so each becomes its own SymbiYosys task:

``dma_safe``
    No DMA request starts while nothing is open or past ``MAP_SIZE`` (rounded up to a word),
    and none at all after a reset until an OPEN has been answered with success since.
``one_completion``
    Every guest request gets its completion beats, the last one flagged ``last``, and no beat
    comes without a request (none dropped, doubled or unrequested). Safety: proved unbounded.
``cpl_time``
    Each request ends within :func:`vmshm.abi.bounds.core_bound` cycles of its first beat
    (bounded, at :func:`cpl_time_depth`).
``open_close_once``
    A fresh OPEN packet starts only during a read of exactly OPEN's offset, a fresh CLOSE only
    during a read of exactly CLOSE's, at most one per read.
``streams``
    The core keeps every beat it offers (``cpl``, ``ctl_req``, ``dma_req``) valid and unchanged
    until it is taken: a packet it started on a host port is finished, never taken back.
``reset``
    After a reset the first control beat is RESET, so the host drops whatever it held.

:class:`PCIProperties` checks ``one_completion``, ``cpl_time`` and ``streams`` through the soft
PCI front end (``one_completion`` and ``streams`` proved unbounded; a beat on offer on a host
port is kept through a Function Level Reset too).
"""

from amaranth.asserts import AnySeq
from amaranth.hdl import *

from vmshm.abi.bounds import FRONT_END_CYCLES, core_bound
from vmshm.abi.regmap import BAR_REGS, BAR_WINDOW, REG, CtlOp
from vmshm.rtl import VMShmCore, VMShmPCI
from vmshm.rtl.layouts import Space

from .components import _past, signal_named

__all__ = ["CORE_PARAMS", "PROPERTIES", "cpl_time_depth", "pci_cpl_time_depth", "PCI_PROPERTIES",
           "CoreProperties", "PCIProperties"]

#: The core the proofs run on: small, so the solver copes; the logic is the same at any size.
CORE_PARAMS = dict(window_size=64, name_size=8, data_width=32, regs_size=256, host_timeout=2)
#: The PCI function's: its name buffer spans at least 16 bytes (the smallest memory BAR).
PCI_PARAMS = dict(CORE_PARAMS, name_size=16)
#: The longest guest burst the proofs let the guest send (beats).
MAX_BEATS = 2

PROPERTIES = ("dma_safe", "one_completion", "cpl_time", "open_close_once", "streams", "reset")
#: The soft function's: ``msi_gated`` (no MSI on offer while MSI Enable or Bus Master Enable is
#: clear, nor during a Function Level Reset), ``msi_edge`` (a vector pending and unmasked when
#: MSI and BME become enabled, or pending while they are, is messaged within 2 cycles) and
#: ``flr_quiet`` (from a Function Level Reset or a reset on, no DMA request until the guest has
#: set Bus Master Enable again, and no MSI until it has set both it and MSI Enable again).
PCI_PROPERTIES = ("one_completion", "cpl_time", "streams", "msi_gated", "msi_edge",
                  "flr_quiet")


def _any_source(m, stream):
    """Drive ``stream`` (an input stream of the design) as any source obeying the rules."""
    valid, payload = AnySeq(1), AnySeq(len(stream.payload.as_value()))
    m.d.comb += [stream.valid.eq(valid), stream.payload.as_value().eq(payload)]
    held = Signal(name=f"{stream.valid.name}_held")
    prev = Signal.like(stream.payload.as_value(), name=f"{stream.valid.name}_prev")
    m.d.sync += [held.eq(stream.valid & ~stream.ready), prev.eq(stream.payload.as_value())]
    # A beat offered and not taken stays offered, unchanged.
    m.d.comb += Assume(~held | (stream.valid & (stream.payload.as_value() == prev)))
    return held, prev


def _stable_sink(m, stream, name, rst, withdraw=C(0)):
    """Assert ``stream`` (an output) keeps an offered beat until it is taken, unless ``rst`` was
    high in the cycle before or ``withdraw`` is high now (a beat that may no longer be sent)."""
    held = Signal(name=f"{name}_held")
    prev = Signal.like(stream.payload.as_value(), name=f"{name}_prev")
    m.d.sync += [held.eq(stream.valid & ~stream.ready & ~rst), prev.eq(stream.payload.as_value())]
    return Assert(~held | withdraw | (stream.valid & (stream.payload.as_value() == prev)),
                  f"{name} took back or changed a beat it offered")


class CoreProperties(Elaboratable):
    """Check one property set of a small :class:`~vmshm.rtl.VMShmCore`.

    Parameters
    ----------
    prop : str
        One of :data:`PROPERTIES`.
    """

    def __init__(self, prop):
        if prop not in PROPERTIES:
            raise ValueError(f"prop must be one of {', '.join(PROPERTIES)}, not {prop!r}")
        self.prop = prop

    def elaborate(self, platform):
        m = Module()
        core = VMShmCore(**CORE_PARAMS)
        core._MustUse__silence = True   # elaborated by hand below, for its probes
        wb = core.data_width // 8
        rst = Signal()
        m.d.comb += rst.eq(AnySeq(1))
        # The core's own Module, elaborated here so its probes exist; reset on any cycle.
        # The control channel and the window too, so the invariants can name their states.
        inner, part = _elaborate_parts(core, platform)
        m.submodules.core = ResetInserter(rst)(inner)
        probe = core._probe
        host = core.host
        t = CORE_PARAMS["host_timeout"]

        # -- the host: anything the valid/ready rules allow ------------------------------------
        _any_source(m, host.ctl_rsp)
        _any_source(m, host.dma_rsp)
        _any_source(m, host.ring)
        m.d.comb += [host.ctl_req.ready.eq(AnySeq(1)), host.dma_req.ready.eq(AnySeq(1)),
                     core.dma_enable.eq(AnySeq(1)), host.db.ready.eq(AnySeq(1)),
                     host.peer_valid.eq(AnySeq(1)), host.peer_id.eq(AnySeq(16))]

        # -- the guest: one request at a time, by the rules, completions taken at once ---------
        req = core.req
        req_held, req_prev = _any_source(m, req)
        m.d.comb += core.cpl.ready.eq(1)
        outstanding = Signal()
        beats_left = Signal(range(MAX_BEATS + 1))   # write beats still to send
        cpls_left = Signal(range(MAX_BEATS + 1))    # completion beats still owed
        age = Signal(16)
        bound = Signal(16)
        is_read = Signal()
        hdr = Signal.like(req.payload.as_value())
        first = req.valid & req.ready & ~outstanding
        m.d.comb += Assume(req.payload.count < MAX_BEATS)
        # A new request waits for the last one's completion; a write's beats come back to back
        # with the same header.
        with m.If(outstanding & (beats_left == 0)):
            m.d.comb += Assume(~req.valid)
        with m.If(outstanding & (beats_left != 0)):
            m.d.comb += Assume(req.valid & (req.payload.write == 1) &
                               (req.payload.bar == hdr[:3]))

        def kind_bound(p):
            return _kind_bound(p.bar, p.write, p.count + 1, Mux)

        with m.If(first):
            m.d.sync += [outstanding.eq(1), age.eq(1), hdr.eq(req.payload.as_value()),
                         is_read.eq(~req.payload.write), bound.eq(kind_bound(req.payload)),
                         beats_left.eq(Mux(req.payload.write, req.payload.count, 0)),
                         cpls_left.eq(Mux(req.payload.write, 1, req.payload.count + 1))]
        with m.Elif(outstanding):
            m.d.sync += age.eq(age + 1)
            with m.If(req.valid & req.ready & (beats_left != 0)):
                m.d.sync += beats_left.eq(beats_left - 1)
        cpl = core.cpl
        with m.If(cpl.valid & cpl.ready & outstanding):
            m.d.sync += cpls_left.eq(cpls_left - 1)
            with m.If(cpls_left == 1):
                m.d.sync += outstanding.eq(0)

        # -- control packets, as the host sees them ----------------------------------------------
        ctl = host.ctl_req
        in_packet = Signal()
        with m.If(ctl.valid & ctl.ready):
            m.d.sync += in_packet.eq(~ctl.payload.last)
        fresh = ctl.valid & ctl.ready & ~in_packet & ~probe["ctl_owed"]
        started = Signal(2)     # fresh OPEN/CLOSE packets during this request
        with m.If(first):
            m.d.sync += started.eq(0)
        with m.Elif(fresh & (started != 3)):
            m.d.sync += started.eq(started + 1)
        since_reset = Signal()      # a control beat moved since the last reset
        with m.If(ctl.valid & ctl.ready):
            m.d.sync += since_reset.eq(1)
        opened = Signal()           # an OPEN was answered with success since the last reset
        rsp = host.ctl_rsp
        with m.If(rsp.valid & rsp.ready & (rsp.payload.op == CtlOp.OPEN) &
                  (rsp.payload.status == 0)):
            m.d.sync += opened.eq(1)
        m = _wrap_reset(m, rst)

        # -- the properties ----------------------------------------------------------------------
        dma = host.dma_req
        hdr_addr = dma.payload.addr
        end = hdr_addr + ((dma.payload.count + 1) << (wb.bit_length() - 1))
        checks = {
            "dma_safe": lambda: _dma_invariants(inner, part, probe, opened, wb) + [
                Assert(~(dma.valid & probe["dma_free"]) |
                       (probe["is_open"] & (end <= probe["map_limit"])),
                       "a DMA request left while nothing was open, or past MAP_SIZE"),
                Assert(~dma.valid | opened, "a DMA request left before an OPEN since the reset"),
            ],
            "one_completion": lambda: _cpl_invariants(
                inner, part, outstanding, is_read, beats_left, cpls_left,
                req_held, req.payload.shape()(req_prev)) + [
                Assert(~cpl.valid | outstanding, "a completion came without a request"),
                Assert(~(cpl.valid & outstanding) | (cpl.payload.last == (cpls_left == 1)),
                       "the last completion beat was not flagged last, or an extra one was"),
            ],
            "cpl_time": lambda: [
                Assert(~outstanding | (age <= bound), "a request took longer than its bound"),
            ],
            "open_close_once": lambda: _once_invariants(
                core, inner, part, probe, outstanding, is_read, beats_left, cpls_left,
                req_held, req.payload.shape()(req_prev), hdr, started, in_packet) + [
                Assert(~(fresh & (ctl.payload.op == CtlOp.OPEN)) |
                       (outstanding & _reads(hdr, core, "OPEN")),
                       "an OPEN went out without a read of OPEN"),
                Assert(~(fresh & (ctl.payload.op == CtlOp.CLOSE)) |
                       (outstanding & _reads(hdr, core, "CLOSE")),
                       "a CLOSE went out without a read of CLOSE"),
                Assert(~fresh | (started == 0), "two control packets for one read"),
            ],
            "streams": lambda: _streams_invariants(inner, part, probe) + [
                _stable_sink(m, cpl, "cpl", rst),
                _stable_sink(m, host.ctl_req, "ctl_req", rst),
                _stable_sink(m, host.dma_req, "dma_req", rst),
                _stable_sink(m, host.db, "db", rst),
            ],
            "reset": lambda: _reset_invariants(part, probe, since_reset) + [
                Assert(~(ctl.valid & ~since_reset) | (ctl.payload.op == CtlOp.RESET),
                       "the first control beat after a reset was not RESET"),
            ],
        }
        m.d.comb += checks[self.prop]()
        m.d.comb += Cover(cpl.valid & cpl.ready & cpl.payload.last & is_read &
                          (hdr[:3] == BAR_REGS) & (_addr(hdr, core) == 0))
        return m


def _kind_bound(bar, write, n, mux, params=CORE_PARAMS):
    """Return the cycles a guest request of ``n`` beats to ``bar`` may take in the core
    (:func:`~vmshm.abi.bounds.core_bound` at :data:`CORE_PARAMS`), choosing with ``mux``
    (Amaranth's ``Mux`` on a request's fields, or a Python choice on numbers)."""
    t = params["host_timeout"]
    worst_open = core_bound("open", t, name_bytes=params["name_size"])
    slow = mux(write, core_bound("write", t, beats=1) + (n - 1) * (t + 1),
               core_bound("read", t, beats=1) + (n - 1) * (t + 1))
    # A register burst may hold OPEN or CLOSE (worst: OPEN) besides plain words.
    # A register write may hold a DOORBELL beat that waits on the host's doorbell slot.
    reg_write = core_bound("reg-write", t, doorbell=True) + (n - 1)
    return mux(bar == BAR_REGS, mux(write, reg_write, worst_open + 2 * n),
               mux(bar == BAR_WINDOW, slow, mux(write, n + 2, 2 * n)))


def _worst_bound(params):
    return max(_kind_bound(bar, write, n, lambda c, a, b: a if c else b, params)
               for bar in range(8) for write in (0, 1) for n in range(1, MAX_BEATS + 1))


def cpl_time_depth():
    """Return the depth ``core.cpl_time`` is checked to: the longest bound any request of the
    harness's guest has (:func:`_kind_bound` over every BAR, direction and burst length), plus
    the cycle it may start on after a reset and the one that would break it."""
    return _worst_bound(CORE_PARAMS) + 2


def pci_cpl_time_depth():
    """Return the depth ``pci.cpl_time`` is checked to: the longest bound any request through
    the front end has (:func:`_kind_bound` at :data:`PCI_PARAMS` plus the front end's cycles),
    plus the cycle a request may start on and the one that would break it."""
    return FRONT_END_CYCLES + _worst_bound(PCI_PARAMS) + 2


def _any_of(fsm, *states):
    return Cat(*(fsm.ongoing(s) for s in states)).any()


def _state_invariants(core, part):
    """Return the invariants that tie the state machines of the core, the control channel and
    the window to each other (read by name), as k-induction needs them: each holds one of its
    states, the control channel runs a command exactly while the core waits for it, and each
    window state is served by the core's matching states."""
    fsm, ctl, win = core._generated["fsm"], part["control"]._generated["fsm"], \
        part["window"]._generated["fsm"]
    failed = signal_named(core, "read_failed")
    # Which of the core's states serve each of the window's (a passing write's beats, or
    # their drop, and its completion while the read waits on).
    serves = ((~_any_of(win, "WRITE", "WRITE-ACK") | fsm.ongoing("DMA-WRITE")) &
              (~win.ongoing("READ-REQ") | fsm.ongoing("DMA-READ")) &
              (~win.ongoing("READ-DATA") | fsm.ongoing("DMA-READ") |
               (_any_of(fsm, "PASS-DROP", "PASS-ACK") & ~failed)) &
              (~win.ongoing("PASS") | (fsm.ongoing("DMA-PASS") & ~failed)))
    return [
        # Each state machine holds one of its states (induction may start from any encoding).
        *(Assert(f.state < len(f.encoding), f"{name}'s state machine in no state")
          for name, f in (("core", fsm), ("control", ctl), ("window", win))),
        # The control channel runs a command exactly while the core waits for it (CTL), so
        # nothing opens, closes or moves MAP_SIZE while the window has a request.
        Assert(fsm.ongoing("CTL") == ~ctl.ongoing("IDLE"), "the control channel runs alone"),
        Assert(serves, "the window has a request the core does not serve"),
    ]


def _dma_invariants(core, part, probe, opened, wb):
    """Return the invariants that let k-induction close for ``dma_safe``: besides
    :func:`_state_invariants`, they tie the ``opened`` tracker and the window's request at
    hand to the core's state (the request's latched header, read by name). Each is an
    ``Assert``, proved with the rest."""
    win = part["window"]._generated["fsm"]
    r = {n: signal_named(core, n) for n in ("waddr", "count", "remaining", "pw_waddr",
                                            "pw_count")}
    limit, shift = probe["map_limit"], wb.bit_length() - 1

    def inside(waddr, count):
        return ((waddr + count + 1) << shift) <= limit
    win_busy = ~win.ongoing("IDLE")
    return _state_invariants(core, part) + [
        # The window opens only on a successful OPEN answer; beats are owed only of a request
        # started while it was open.
        Assert(~probe["is_open"] | opened, "open without an OPEN answered since the reset"),
        Assert(probe["dma_free"] | opened, "DMA beats owed without an OPEN since the reset"),
        # The window's request at hand lies inside the open window: its header is the core's
        # latched one (a read's first beat not yet answered: all its beats remain).
        Assert(~win_busy | (probe["is_open"] & inside(r["waddr"], r["count"])),
               "the window's request lies outside the open window"),
        Assert(~win.ongoing("READ-REQ") | (r["remaining"] == r["count"]),
               "a read's request on offer after its first beat was answered"),
        Assert(~win.ongoing("PASS") | inside(r["pw_waddr"], r["pw_count"]),
               "a passing write lies outside the open window"),
    ]


def _streams_invariants(core, part, probe):
    """Return the invariants that let k-induction close for ``streams``."""
    return _state_invariants(core, part) + [
        # The control channel owes a beat or is owed an answer, never both: an answer taken
        # late would replace the owed beat on offer.
        Assert(~(probe["ctl_owed"] & probe["ctl_stale"]), "a beat and an answer owed at once"),
        # Nothing is owed either way while a command's packet goes out or its answer is
        # awaited (OPEN-START and CLOSE-START drain both first).
        Assert(~_any_of(part["control"]._generated["fsm"], "OPEN-FETCH", "OPEN-NAME",
                        "CLOSE-SEND", "CTL-WAIT") | ~(probe["ctl_owed"] | probe["ctl_stale"]),
               "a command under way while a beat or an answer is owed"),
    ]


def _cpl_invariants(core, part, outstanding, is_read, beats_left, cpls_left, held, prev,
                    alone=True):
    """Return the invariants that let k-induction close for ``one_completion``: they tie the
    guest's trackers (a request outstanding, a read or a write, its write beats still to come,
    its completion beats still owed) to the core's state and its latched request (``remaining``,
    ``count``), and a write not yet started to the beat the guest holds on offer (``held``, its
    header ``prev``): the core latched that beat's header at IDLE. ``alone``: the guest is the
    core's own (no front end in front of it, no FLR), so the core idles exactly while nothing is
    outstanding; :func:`_front_end_invariants` says what holds instead behind the front end."""
    fsm, win = core._generated["fsm"], part["window"]._generated["fsm"]
    rem, count = signal_named(core, "remaining"), signal_named(core, "count")
    reads = _any_of(fsm, "READ-FETCH", "READ-SEND", "READ-ONES", "CTL", "DMA-READ")
    writes = _any_of(fsm, "WRITE", "DMA-WRITE")
    alone_only = [
        # No FLR here (flr_start is 0).
        Assert(~signal_named(core, "clearing"), "the name RAM clears without an FLR"),
        Assert(~fsm.ongoing("IDLE") | ~outstanding, "the core idles with a request outstanding"),
    ] if alone else []
    return _state_invariants(core, part) + alone_only + [
        # The guest's one request at a time never passes a read.
        Assert(~_any_of(fsm, "DMA-PASS", "PASS-DROP", "PASS-ACK"),
               "a write passed a read of a guest that sends one request at a time"),
        # A read's completion beats owed are the core's beats remaining, plus the current one.
        Assert(~reads | (outstanding & is_read & (beats_left == 0) & (cpls_left == rem + 1)),
               "a read's state does not match the guest's request"),
        Assert(~fsm.ongoing("WRITE-ACK") | (outstanding & ~is_read & (beats_left == 0) &
                                            (cpls_left == 1)),
               "a write's acknowledgement does not match the guest's request"),
        # A write's beats still to come are the core's remaining plus the current one (the
        # count wraps to 255 once the window has them all and waits for the host's answer);
        # before its first beat is taken, the guest holds that beat on offer.
        Assert(~writes | Mux(outstanding,
                             ~is_read & (cpls_left == 1) & (beats_left == (rem + 1)[:8]),
                             held & prev.write & (prev.count == count) & (rem == count)),
               "a write's state does not match the guest's request"),
        Assert(~win.ongoing("WRITE-ACK") | (rem == 255), "the window acknowledges a write "
               "whose beats are not all taken"),
        Assert(~win.ongoing("WRITE") | (rem <= count), "a write's beats exceed its count"),
    ]


def _front_end_invariants(fe, core, flr, outstanding, is_read, beats_left, cpls_left, held,
                          prev):
    """Return the invariants that tie the soft front end's state machine and its latched
    request (``remaining``, ``count``) to the guest's trackers and to the core's state: the
    core is busy only while the front end forwards or completes a request, an FLR comes only
    with the acknowledgement of the configuration write that asked for it, and a request not
    yet started is the beat the guest holds on offer."""
    f, c = fe._generated["fsm"], core._generated["fsm"]
    rem, count = signal_named(fe, "remaining"), signal_named(fe, "count")
    core_idle = c.ongoing("IDLE")
    unstarted = held & (prev.count == count) & (rem == count)
    owes_one = outstanding & (beats_left == 0) & (cpls_left == 1)
    # A write outstanding with beats still to come: the front end's remaining plus the current.
    writing = outstanding & ~is_read & (cpls_left == 1) & (beats_left == rem + 1)
    return [
        Assert(f.state < len(f.encoding), "the front end's state machine in no state"),
        Assert(~flr | f.ongoing("ACK"), "an FLR without the write that asked for it"),
        Assert(~signal_named(core, "clearing") | core_idle, "the core busy while it clears"),
        Assert(~f.ongoing("IDLE") | (~outstanding & core_idle), "the front end idles while busy"),
        Assert(~_any_of(f, "CFG-READ", "ACK", "UR-ACK") | (owes_one & core_idle),
               "a one-beat answer of the front end does not match the guest's request"),
        Assert(~f.ongoing("UR-READ") | (outstanding & is_read & (beats_left == 0) &
                                        (cpls_left == rem + 1) & core_idle),
               "an unclaimed read's answer does not match the guest's request"),
        Assert(~f.ongoing("DROP") | (core_idle & Mux(outstanding, writing,
                                                     unstarted & prev.write)),
               "a dropped write does not match the guest's request"),
        Assert(~f.ongoing("FORWARD") | Mux(outstanding,
                                           writing & _any_of(c, "WRITE", "DMA-WRITE"),
                                           unstarted & (core_idle | prev.write)),
               "a forwarded request does not match the guest's request"),
        Assert(~f.ongoing("COMPLETE") | (outstanding & (beats_left == 0) & ~core_idle),
               "a request completing does not match the guest's request"),
    ]


def _reset_invariants(part, probe, since_reset):
    """Return the invariants that let k-induction close for ``reset``: until a control beat has
    moved since the reset, the beat the control channel owes is the RESET it owes out of reset,
    no answer is owed to it (which could replace that beat by a CLOSE), and its state machine
    is in a state that sends nothing but the owed beat."""
    ctl = part["control"]._generated["fsm"]
    quiet = Cat(*(ctl.ongoing(s) for s in ("IDLE", "OPEN-START", "CLOSE-START",
                                           "CTL-DRAIN"))).any()
    return [
        Assert(ctl.state < len(ctl.encoding), "the control channel's state machine in no state"),
        Assert(since_reset | (probe["ctl_owed"] & ~probe["ctl_stale"] & quiet &
                              (signal_named(part["control"], "op") == CtlOp.RESET)),
               "before the first control beat, the RESET owed out of reset was not owed"),
    ]


def _once_invariants(design, core, part, probe, outstanding, is_read, beats_left, cpls_left,
                     held, prev, hdr, started, in_packet):
    """Return the invariants that let k-induction close for ``open_close_once``: besides
    :func:`_cpl_invariants` and :func:`_streams_invariants`, they tie the core's read at hand
    (word address, beats, first beat, byte enables) to the header the guest tracker latched,
    the control channel's command to the register word that triggered it, the ``started``
    count to the word the read has passed, and ``in_packet`` to the name byte OPEN streams."""
    fsm, ctl = core._generated["fsm"], part["control"]._generated["fsm"]
    r = {n: signal_named(core, n) for n in ("remaining", "count", "waddr", "first", "rd_be",
                                            "in_bar0", "bar")}
    pending = signal_named(part["control"], "pending_op")
    name_ptr = signal_named(part["control"], "name_ptr")
    h = design.req.payload.shape()(hdr)
    wshift = (design.data_width // 8).bit_length() - 1
    start = h.addr[wshift:]
    words = {name: REG[name].offset >> wshift for name in ("OPEN", "CLOSE")}
    at = Signal.like(r["waddr"], name="read_word_expected")
    reg_reads = _any_of(fsm, "READ-FETCH", "READ-SEND", "CTL")
    triggered = Signal(name="read_word_triggers")
    passed = Signal(name="read_word_passed_trigger")
    streaming = _any_of(ctl, "OPEN-FETCH", "OPEN-NAME")
    before_packet = (_any_of(ctl, "OPEN-START", "CLOSE-START", "CTL-DRAIN", "CLOSE-SEND") |
                     (streaming & (name_ptr == 0)))
    be_ok = Mux(r["first"], r["rd_be"], (1 << (design.data_width // 8)) - 1)[:4].any()
    return (_cpl_invariants(core, part, outstanding, is_read, beats_left, cpls_left, held, prev)
            + _streams_invariants(core, part, probe) + [
        # The read at hand is the guest's: its word is the header's first plus the beats done.
        at.eq(start + (r["count"] - r["remaining"])),
        triggered.eq(Cat(*(at == w for w in words.values())).any()),
        passed.eq(Cat(*(at - 1 == w for w in words.values())).any()),
        Assert(~outstanding | ((h.count < MAX_BEATS) & (h.write == ~is_read)),
               "the guest tracker's header is not a request the guest may send"),
        Assert(~reg_reads | ((r["bar"] == h.bar) & (r["count"] == h.count) &
                             (r["remaining"] <= r["count"]) &
                             (r["rd_be"] == h.be) & (r["waddr"] == at) &
                             (r["first"] == (r["remaining"] == r["count"])) &
                             (r["in_bar0"] == ((h.bar == BAR_REGS) &
                                               ((start + h.count + 1) << wshift <=
                                                design.regs_size)))),
               "the core's read is not the guest's request"),
        # A command runs for the word that triggered it, read with its byte enables.
        Assert(ctl.ongoing("IDLE") | (pending == CtlOp.OPEN) | (pending == CtlOp.CLOSE),
               "the control channel runs no command"),
        Assert(~_any_of(ctl, "OPEN-START", "OPEN-FETCH", "OPEN-NAME") | (pending == CtlOp.OPEN),
               "an OPEN's state serves another command"),
        Assert(~_any_of(ctl, "CLOSE-START", "CLOSE-SEND") | (pending == CtlOp.CLOSE),
               "a CLOSE's state serves another command"),
        *(Assert(~(fsm.ongoing("CTL") & (pending == op)) |
                 (r["in_bar0"] & (r["waddr"] == words[name]) & be_ok),
                 f"a {name} runs without a read of its word")
          for name, op in (("OPEN", CtlOp.OPEN), ("CLOSE", CtlOp.CLOSE))),
        # One packet per read: none counted before the command's first beat, and once one
        # went, the read is at (or, fetching its next word, just past) the word that sent it.
        Assert(started <= 1, "more than one control packet counted"),
        Assert(~(fsm.ongoing("CTL") & before_packet) | (started == 0),
               "a packet counted before its command sent it"),
        Assert(~(started == 1) | ~outstanding |
               (_any_of(fsm, "CTL", "READ-SEND") & triggered) |
               (_any_of(fsm, "READ-SEND", "READ-FETCH") & ~r["first"] & passed),
               "a packet counted for a read past no trigger word"),
        # A packet is under way exactly while OPEN streams the name past its first byte (or
        # an owed beat continues one).
        Assert(probe["ctl_owed"] | (in_packet == (streaming & (name_ptr != 0))),
               "a control packet under way that nothing continues"),
    ])


def _reads(hdr, core, name):
    """Return whether the request ``hdr`` is a read of BAR0 whose words include register
    ``name`` (addresses are word-aligned: their low bits are ignored), with its byte enables
    touching that register if it is the first word."""
    from vmshm.rtl.layouts import guest_req_layout
    layout = guest_req_layout(core.addr_width, core.data_width)
    view = layout(hdr)
    wshift = (core.data_width // 8).bit_length() - 1
    word = REG[name].offset >> wshift
    start = view.addr[wshift:]
    first_hit = (start == word) & view.be[:4].any()
    later_hit = (start < word) & (start + view.count >= word)
    return ((view.write == 0) & (view.bar == BAR_REGS) & (first_hit | later_hit))


def _addr(hdr, core):
    # The header's addr field: after bar (3 bits).
    return hdr[3:3 + core.addr_width]


def _wrap_reset(m, rst):
    # The trackers live in this module's sync domain; a reset of the function resets them too,
    # so each property speaks of the time since the last reset.
    outer = Module()
    outer.submodules.props = ResetInserter(rst)(m)
    return outer


class PCIProperties(Elaboratable):
    """Check that every memory request through the soft front end gets exactly one completion
    in bound, and that the front end keeps the stream rules.

    Parameters
    ----------
    prop : str
        ``"one_completion"`` or ``"streams"``.
    """

    def __init__(self, prop):
        if prop not in PCI_PROPERTIES:
            raise ValueError(f"prop must be one of {', '.join(PCI_PROPERTIES)}, not {prop!r}")
        self.prop = prop

    def elaborate(self, platform):
        m = Module()
        fn = VMShmPCI(**PCI_PARAMS)
        fn._MustUse__silence = True     # elaborated by hand below, for its probe
        m.submodules.fn = fe = fn.elaborate(platform)
        # The core, its control channel and its window too, so the invariants can name their
        # states (the front end resets the core with an FLR).
        core = fn._core
        core._MustUse__silence = True
        inner, part = _elaborate_parts(core, platform)
        unused, loc = fe._named_submodules["core"]
        unused._MustUse__silence = True
        fe._named_submodules["core"] = (ResetInserter(fn._probe["flr"])(inner), loc)
        # A Function Level Reset resets the core (the front end's FlrHold keeps what the host
        # was offered) and withdraws the MSI message on offer (it may not be sent meanwhile).
        flr = fn._probe["flr"]
        _any_source(m, fn.host.ctl_rsp)
        _any_source(m, fn.host.dma_rsp)
        _any_source(m, fn.host.ring)
        m.d.comb += [fn.host.ctl_req.ready.eq(AnySeq(1)), fn.host.dma_req.ready.eq(AnySeq(1)),
                     fn.host.db.ready.eq(AnySeq(1)), fn.msi.ready.eq(AnySeq(1)),
                     fn.host.peer_valid.eq(AnySeq(1)), fn.host.peer_id.eq(AnySeq(16))]
        req, cpl = fn.req, fn.cpl
        req_held, req_prev = _any_source(m, req)
        m.d.comb += cpl.ready.eq(1)
        t = CORE_PARAMS["host_timeout"]
        outstanding = Signal()
        is_read = Signal()
        beats_left = Signal(range(MAX_BEATS + 1))
        cpls_left = Signal(range(MAX_BEATS + 1))
        age = Signal(16)
        first = req.valid & req.ready & ~outstanding
        p = req.payload
        m.d.comb += Assume(p.count < MAX_BEATS)
        with m.If(outstanding & (beats_left == 0)):
            m.d.comb += Assume(~req.valid)
        with m.If(outstanding & (beats_left != 0)):
            m.d.comb += Assume(req.valid & p.write)
        # Each request's bound: the core's for the BAR the front end forwards it to; a
        # configuration request or an unclaimed one is answered as an unsupported BAR's.
        fe_fsm = fe._generated["fsm"]
        bound = Signal(16)
        bar = Mux(fe_fsm.ongoing("FORWARD"), fn._core.req.payload.bar, 7)
        with m.If(first):
            m.d.sync += [outstanding.eq(1), age.eq(1), is_read.eq(~p.write),
                         bound.eq(FRONT_END_CYCLES +
                                  _kind_bound(bar, p.write, p.count + 1, Mux, PCI_PARAMS)),
                         beats_left.eq(Mux(p.write, p.count, 0)),
                         cpls_left.eq(Mux(p.write, 1, p.count + 1))]
        with m.Elif(outstanding):
            m.d.sync += age.eq(age + 1)
            with m.If(req.valid & req.ready & (beats_left != 0)):
                m.d.sync += beats_left.eq(beats_left - 1)
        with m.If(cpl.valid & outstanding):
            m.d.sync += cpls_left.eq(cpls_left - 1)
            with m.If(cpls_left == 1):
                m.d.sync += outstanding.eq(0)
        # The interrupt's enables, as configuration space holds them.
        regs = m.submodules.fn._named_submodules["config"][0]
        enabled = Signal()
        m.d.comb += enabled.eq(regs.msi_enable & regs.command[2])
        # An FLR is in process from its one-cycle reset until the core has cleared its name
        # RAM (flr_busy): no message may go out meanwhile, and one is owed when it ends.
        in_flr = Signal()
        m.d.comb += in_flr.eq(flr | fn._core.flr_busy)
        messageable = Signal()
        m.d.comb += messageable.eq(enabled & ~in_flr)
        irq = fn._core.irq
        news = Signal()             # the vector pending & unmasked became messageable
        m.d.comb += news.eq(irq & messageable & ~_past(m, irq & messageable,
                                                       "was_messageable"))
        owe = Signal()
        owe_age = Signal(4)
        # Owed while messaging stays possible: when it stops the message is withdrawn, and owed
        # again on the next enabling edge.
        with m.If(fn.msi.valid | flr | ~messageable):
            m.d.sync += [owe.eq(0), owe_age.eq(0)]
        with m.Elif(news | owe):
            m.d.sync += [owe.eq(1), owe_age.eq(Mux(owe_age == 15, 15, owe_age + 1))]
        if self.prop == "msi_gated":
            m.d.comb += [Assert(~fn.msi.valid | enabled,
                                "an MSI on offer while MSI Enable or Bus Master Enable is clear"),
                         Assert(~(fn.msi.valid & in_flr), "an MSI on offer during an FLR")]
        elif self.prop == "flr_quiet":
            m.d.comb += _flr_quiet(m, fn, regs, flr, inner, part)
        elif self.prop == "msi_edge":
            m.d.comb += Assert(owe_age <= 2, "a pending vector was not messaged (lost MSI)")
        elif self.prop == "one_completion":
            trk = (outstanding, is_read, beats_left, cpls_left, req_held,
                   req.payload.shape()(req_prev))
            m.d.comb += _cpl_invariants(inner, part, *trk, alone=False)
            m.d.comb += _front_end_invariants(fe, inner, flr, *trk)
            m.d.comb += [
                Assert(~cpl.valid | outstanding, "a completion came without a request"),
                Assert(~(cpl.valid & outstanding) | (cpl.payload.last == (cpls_left == 1)),
                       "the last completion beat was not flagged last, or an extra one was"),
            ]
        elif self.prop == "cpl_time":
            m.d.comb += Assert(~outstanding | (age <= bound),
                               "a request took longer than the bound")
        else:
            m.d.comb += _streams_invariants(inner, part, core._probe)
            m.d.comb += [_stable_sink(m, cpl, "cpl", C(0)),
                         # An FLR resets the core, not the host: the beats on offer on the
                         # host's ports are kept through it (rtl/flr_hold.py), no exception.
                         _stable_sink(m, fn.host.ctl_req, "ctl_req", C(0)),
                         _stable_sink(m, fn.host.dma_req, "dma_req", C(0)),
                         _stable_sink(m, fn.host.db, "db", C(0)),
                         # A message is withdrawn while it may not be sent (MSI Enable or
                         # Bus Master Enable clear, an FLR in process: issue 22, finding 3).
                         _stable_sink(m, fn.msi, "msi", C(0), ~fn._probe["msi_ok"])]
        m.d.comb += Cover(cpl.valid & cpl.payload.last & (p.space == Space.MEM))
        return m


def _flr_quiet(m, fn, regs, flr, core, part):
    """Return ``flr_quiet``'s assertions and invariants: trackers of the configuration writes
    that set Bus Master Enable and MSI Enable, cleared by an FLR (and a reset), and what the
    function may send without them: no DMA beat newly offered, no MSI."""
    def sets(name, bit):        # a configuration write the registers take sets the bit
        f = next(f for f in fn._config.fields if f.name == name)
        at = f.lsb + bit
        return (regs.we & (regs.wr_addr == f.offset // 4) & regs.wr_be[at // 8] &
                regs.wr_data[at])
    bme_set, msie_set = Signal(), Signal()
    with m.If(sets("command", 2)):
        m.d.sync += bme_set.eq(1)
    with m.If(sets("msi_enable", 0)):
        m.d.sync += msie_set.eq(1)
    with m.If(flr):
        m.d.sync += [bme_set.eq(0), msie_set.eq(0)]
    win = part["window"]._generated["fsm"]
    # A beat on offer before may stay until taken (the stream rule): only a new one counts.
    dma = fn.host.dma_req
    dma_held = _past(m, dma.valid & ~dma.ready, "flr_dma_held")
    return _state_invariants(core, part) + [
        Assert(~(dma.valid & ~dma_held) | bme_set,
               "a DMA beat offered after an FLR before Bus Master Enable was set again"),
        Assert(~fn.msi.valid | (bme_set & msie_set),
               "an MSI after an FLR before Bus Master Enable and MSI Enable were set again"),
        Assert(bme_set | ~regs.command[2], "inv: Bus Master Enable set by no write since"),
        Assert(msie_set | ~regs.msi_enable, "inv: MSI Enable set by no write since"),
        Assert(bme_set | (win.ongoing("IDLE") & fn._core._probe["dma_free"]),
               "inv: the window busy with no Bus Master Enable since"),
    ]


def _elaborate_parts(core, platform):
    """Elaborate ``core`` and its control channel and window by hand; return the core's Module
    and ``{"control": Module, "window": Module}``, for invariants that name their states."""
    inner = core.elaborate(platform)
    part = {}
    for sub in ("control", "window"):
        comp, loc = inner._named_submodules[sub]
        comp._MustUse__silence = True
        part[sub] = comp.elaborate(platform)
        inner._named_submodules[sub] = (part[sub], loc)
    return inner, part
