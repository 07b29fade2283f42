"""Formal harnesses for VMShm's components, one each: the control channel, the window DMA, the
register file's field actions and the doorbell/interrupt block.

Each harness puts one component between free inputs that keep only the rules its neighbours
promise (the core's commands, the guest's and the host's valid/ready rules, with back-pressure
and gaps on both sides) and states three groups of properties, each its own SymbiYosys task:

``safety``
    What must hold on every cycle; proved unbounded by k-induction (``vmshm formal`` prints
    ``proved``). The trackers that state them are kept small and exact so induction closes.
``live``
    That every wait ends in time: a bounded check, at a depth the runner computes from
    :mod:`vmshm.abi.bounds` (see :func:`live_depth`), never typed.
``cover``
    That each path the component exists for is reached (an OPEN succeeding, a DMA, a ring and
    its message, a write-1-to-clear racing a ring).

The parameters are small (:data:`T`, :data:`WINDOW`) so the solver copes; :data:`WIDE` gives a
second set whose counters and tags can wrap within the check.
"""

from types import SimpleNamespace

from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import *

from vmshm.abi.bounds import core_bound
from vmshm.abi.regmap import VECTORS, CtlOp, Status
from vmshm.rtl.control import ControlChannel
from vmshm.rtl.doorbell import Doorbells
from vmshm.rtl.layouts import TAG_BITS
from vmshm.rtl.registers import RC, RW, W1C
from vmshm.rtl.window import WindowDMA

__all__ = ["COMPONENTS", "GROUPS", "PARAMS", "WIDE", "ComponentProperties", "live_depth"]

#: The components with a harness here.
COMPONENTS = ("control", "window", "registers", "doorbell")
#: The property groups of every harness.
GROUPS = ("safety", "live", "cover")
#: Small parameters: host_timeout, window bytes, name bytes, the longest guest burst (beats).
PARAMS = dict(host_timeout=2, window_size=64, name_size=8, max_beats=4)
#: Parameters whose counters wrap: a timer of 5 cycles (3 bits), 6-beat bursts, a 16-byte name;
#: no write passes a waiting read there (``passing``): the small run proves that, and with it
#: the wide checks took about 9 minutes of CPU time instead of half a minute (docs/formal.md).
WIDE = dict(host_timeout=5, window_size=128, name_size=16, max_beats=6, passing=False)


def live_depth(component, params=PARAMS):
    """Return the depth the ``live`` group of ``component`` is checked to: the longest wait the
    component may make under :mod:`vmshm.abi.bounds`, plus the cycles to start one and one more
    to see it broken."""
    t = params["host_timeout"]
    if component == "control":
        # A CLOSE, then an OPEN that drains a stale answer first: both bounds back to back.
        return core_bound("close", t) + core_bound("open", t, name_bytes=params["name_size"]) + 2
    if component == "window":
        # A burst, or a write passing a read whose request beat went (3 cycles in).
        most = params["max_beats"]
        return max(core_bound("write", t, beats=most), core_bound("pass", t, beats=most) + 3) + 3
    # The register actions and the doorbell answer on the next edge: two cycles show it.
    return 4


def _any_source(m, stream, name, release=C(0)):
    """Drive ``stream`` (an input of the component) as any source keeping the stream rules; a
    beat on offer on a cycle of ``release`` need not stay (the core stops handing the window a
    write's beats once the window says it is done with them)."""
    value = Value.cast(stream.payload)
    m.d.comb += [stream.valid.eq(AnySeq(1)), value.eq(AnySeq(len(value)))]
    held = Signal(name=f"{name}_in_held")
    prev = Signal.like(value, name=f"{name}_in_prev")
    m.d.sync += [held.eq(stream.valid & ~stream.ready & ~release), prev.eq(value)]
    m.d.comb += Assume(~held | (stream.valid & (value == prev)))


def _stable(m, stream, name):
    """Return an assertion that ``stream`` (an output) keeps an offered beat until taken."""
    value = Value.cast(stream.payload)
    held = Signal(name=f"{name}_held")
    prev = Signal.like(value, name=f"{name}_prev")
    m.d.sync += [held.eq(stream.valid & ~stream.ready), prev.eq(value)]
    return Assert(~held | (stream.valid & (value == prev)),
                  f"{name} took back or changed a beat it offered")


def _in_window(addr, count, end_be, limit, most):
    """Return whether a window request the core may hand over has this header: whole words, at
    most ``most`` beats, inside the mapped window (below ``limit``), its last word's first byte
    enabled (the core's decode)."""
    return ((addr[:2] == 0) & (count < most) & (addr + ((count + 1) << 2) <= limit) &
            end_be[0])


def _flag(m, clear, set_, name):
    """Return a flag the harness keeps: 0 from a cycle of ``clear``, 1 from one of ``set_``
    (``clear`` wins)."""
    flag = Signal(name=name)
    with m.If(clear):
        m.d.sync += flag.eq(0)
    with m.Elif(set_):
        m.d.sync += flag.eq(1)
    return flag


def _count(m, restart, step, name, init=0):
    """Return an 8-bit count the harness keeps: ``init`` from a cycle of ``restart``, one more
    for each other cycle of ``step``, stopping at 255."""
    count = Signal(8, name=name)
    with m.If(restart):
        m.d.sync += count.eq(init)
    with m.Elif(step & (count != 255)):
        m.d.sync += count.eq(count + 1)
    return count


def _packet_view(m, req):
    """Return the host's view of ``req``'s write packets: the beats of the one under way still
    to come, its header and the header of the beat on offer (address, count, tag)."""
    left = Signal(9, name="pkt_left")
    beat_hdr = Cat(req.payload.addr, req.payload.count, req.payload.tag)
    hdr = Signal(len(beat_hdr), name="pkt_hdr")
    with m.If(req.valid & req.ready & req.payload.write):
        with m.If(left == 0):
            m.d.sync += [left.eq(req.payload.count), hdr.eq(beat_hdr)]
        with m.Else():
            m.d.sync += left.eq(left - 1)
    return left, hdr, beat_hdr


def _passing_write(m, dut, limit, most, t, read_start, passing=True):
    """Play the core's side of the window's ``post``, a write passing the waiting read, as
    rtl/core.py does it, and return its trackers.

    The contract the core keeps (its DMA-READ, DMA-PASS, PASS-DROP and PASS-ACK states):
    ``post.start`` only while the window says a read waits (``post.ready``) and never while the
    core still answers the write before (PASS-DROP, PASS-ACK: ``ack``, which ends whenever the
    guest takes that completion), for a write inside the mapped window; its header latched on
    ``start`` and shown from the next cycle; ``remaining`` counted down as its beats move.
    Its trackers: ``slow`` counts the cycles since its last beat went while the guest offers
    the next (the host's share of its wait), ``failed`` and ``passed`` say that a write passing
    the read started on ``read_start`` was given up on (its beats may still be owed while the
    read goes on), or completed with two beats or more."""
    post, wr = dut.post, dut.wr
    aw = len(post.addr)
    pw = SimpleNamespace(busy=Signal(name="pw_busy"), ack=Signal(name="pw_ack"),
                         addr=Signal(aw, name="pw_addr"), count=Signal(8, name="pw_count"),
                         remaining=Signal(8, name="pw_remaining"),
                         end_be=Signal(4, name="pw_end_be"),
                         slow=Signal(range(t + 2), name="pw_slow"))
    start = Signal(name="pw_start")
    q_addr, q_count, q_be = AnySeq(aw), AnySeq(8), AnySeq(4)
    m.d.comb += [start.eq(AnySeq(1) if passing else 0), Assume(~start | (post.ready & ~pw.ack)),
                 Assume(~start | _in_window(q_addr, q_count, q_be, limit, most)),
                 post.start.eq(start), post.addr.eq(pw.addr), post.count.eq(pw.count),
                 post.remaining.eq(pw.remaining), post.end_be.eq(pw.end_be)]
    pw.moved = wr.valid & wr.ready & pw.busy
    with m.If(start):
        m.d.sync += [pw.busy.eq(1), pw.addr.eq(q_addr), pw.count.eq(q_count),
                     pw.remaining.eq(q_count), pw.end_be.eq(q_be)]
    with m.Elif(pw.moved & (pw.remaining != 0)):
        m.d.sync += pw.remaining.eq(pw.remaining - 1)
    pw.age = _count(m, start, pw.busy, "pw_age", init=1)
    # The guest's share of the write's time: cycles it offered no beat.
    pw.gaps = _count(m, start, pw.busy & ~wr.valid, "pw_gaps")
    with m.If(start | pw.moved):
        m.d.sync += pw.slow.eq(0)
    with m.Elif(pw.busy & wr.valid & (pw.slow <= t)):
        m.d.sync += pw.slow.eq(pw.slow + 1)
    pw.failed = _flag(m, read_start, post.done & post.failed, "pw_failed")
    pw.passed = _flag(m, read_start, post.done & ~post.failed & (pw.count != 0), "pw_passed")
    with m.If(post.done):
        m.d.sync += [pw.busy.eq(0), pw.ack.eq(1)]
    with m.Elif(AnySeq(1)):
        m.d.sync += pw.ack.eq(0)
    return pw


def _fsm(m, dut):
    """Add ``dut`` to ``m`` elaborated by hand and return its FSM named ``fsm``: the invariants
    that let k-induction close tie the harness's trackers to the component's state."""
    dut._MustUse__silence = True        # elaborated here instead
    inner = dut.elaborate(None)
    m.submodules.dut = inner
    return inner._generated["fsm"]


def _internal(m, name):
    """Return the component's signal ``name`` (a register its statements assign), for an
    invariant on state no port shows."""
    return signal_named(m.submodules.dut, name)


def signal_named(module, name):
    """Return the one signal ``name`` that ``module``'s own statements assign (an elaborated
    :class:`~amaranth.hdl.Module`), for an invariant on state no port shows."""
    found = {}

    def walk(stmts):
        for st in stmts:
            if hasattr(st, "cases"):            # a Switch: If/Elif/Else and FSM states
                for _patterns, body, _loc in st.cases:
                    walk(body)
            elif hasattr(st, "lhs"):
                found.update((id(s), s) for s in st.lhs._lhs_signals() if s.name == name)
    for stmts in module._statements.values():
        walk(stmts)
    if len(found) != 1:
        raise LookupError(f"the module has {len(found)} signals named {name!r}")
    return found.popitem()[1]


def _past(m, value, name):
    """Return a register holding ``value`` of the cycle before (its reset on the first)."""
    reg = Signal.like(value, name=name)
    m.d.sync += reg.eq(value)
    return reg


class ComponentProperties(Elaboratable):
    """Check one property group of one component.

    Parameters
    ----------
    component : str
        One of :data:`COMPONENTS`.
    group : str
        One of :data:`GROUPS`.
    params : dict
        :data:`PARAMS` or :data:`WIDE`.
    """

    def __init__(self, component, group, params=PARAMS):
        if component not in COMPONENTS:
            raise ValueError(f"component must be one of {', '.join(COMPONENTS)}, "
                             f"not {component!r}")
        if group not in GROUPS:
            raise ValueError(f"group must be one of {', '.join(GROUPS)}, not {group!r}")
        self.component, self.group, self.params = component, group, dict(params)

    def elaborate(self, platform):
        m = Module()
        props = getattr(self, f"_{self.component}")(m)
        m.d.comb += props[self.group]()
        return m

    # -- the control channel -------------------------------------------------------------------
    def _control(self, m):
        p = self.params
        t = p["host_timeout"]
        dut = ControlChannel(window_size=p["window_size"], name_size=p["name_size"],
                             data_width=32, host_timeout=t)
        fsm = _fsm(m, dut)
        cmd, req, rsp = dut.cmd, dut.ctl_req, dut.ctl_rsp
        # The core: one command at a time; it listens for stray answers only while idle.
        pending = Signal()
        op = Signal(2)
        age = Signal(8)
        m.d.comb += [cmd.start.eq(AnySeq(1)), cmd.op.eq(AnySeq(2)), cmd.listen.eq(AnySeq(1)),
                     dut.dma_enable.eq(AnySeq(1)), dut.dma_free.eq(AnySeq(1))]
        m.d.comb += [Assume(~cmd.start | ~pending),
                     Assume(~cmd.start | (cmd.op == CtlOp.OPEN) | (cmd.op == CtlOp.CLOSE)),
                     Assume(~cmd.listen | ~pending)]
        # While a command is under way the core starts no window request, so no DMA beat
        # becomes owed: the window's `free` may only rise.
        m.d.comb += Assume(~(pending & _past(m, dut.dma_free, "was_free") & ~dut.dma_free))
        with m.If(cmd.start):
            m.d.sync += [pending.eq(1), op.eq(cmd.op), age.eq(1)]
        with m.Elif(pending & (age != 255)):
            m.d.sync += age.eq(age + 1)
        with m.If(cmd.done):
            m.d.sync += pending.eq(0)
        # The name RAM: a fetched word is on the port the cycle after; any name.
        name = dut.name
        m.d.sync += name.loaded.eq(name.fetch)
        m.d.comb += name.first.eq(AnySeq(8))
        with m.If(name.loaded):
            m.d.sync += name.rest.eq(AnySeq(24))
        # The host: anything the rules allow, any answer, any tag, late, doubled or never.
        _any_source(m, rsp, "ctl_rsp")
        m.d.comb += req.ready.eq(AnySeq(1))

        took = req.valid & req.ready
        in_packet = Signal()        # a beat without `last` was taken: the packet goes on
        pkt_tag = Signal(8)
        pkt_op = Signal(2)
        with m.If(took):
            m.d.sync += [in_packet.eq(~req.payload.last), pkt_tag.eq(req.payload.tag),
                         pkt_op.eq(req.payload.op)]
        any_beat = Signal()         # a control beat was taken since reset
        with m.If(took):
            m.d.sync += any_beat.eq(1)
        answered = rsp.valid & rsp.ready & (rsp.payload.status == Status.ETIMEDOUT)
        window = p["window_size"]
        bound = Mux(op == CtlOp.OPEN, core_bound("open", t, name_bytes=p["name_size"]),
                    core_bound("close", t))
        # The window opens only on the edge after the host answered an OPEN with success.
        was_open = _past(m, dut.is_open, "was_open")
        opened = _past(m, rsp.valid & rsp.ready & (rsp.payload.op == CtlOp.OPEN) &
                       (rsp.payload.status == 0) & (op == CtlOp.OPEN) & pending, "opened")
        done_ok_open = cmd.done & (op == CtlOp.OPEN) & (cmd.status == 0)
        return {
            "safety": lambda: [
                _stable(m, req, "ctl_req"),
                Assert(any_beat | (dut.owed & req.valid & (req.payload.op == CtlOp.RESET)),
                       "the first control beat out of reset was not RESET"),
                Assert(~(req.valid & in_packet) | ((req.payload.tag == pkt_tag) &
                                                   ((req.payload.op == pkt_op) |
                                                    (req.payload.op == CtlOp.RESET))),
                       "a packet's next beat is of another packet"),
                Assert(~(req.valid & (req.payload.op != CtlOp.OPEN)) | req.payload.last,
                       "a CLOSE or RESET beat without last"),
                Assert(~cmd.done | pending, "done without a command"),
                Assert(cmd.busy == pending, "busy is not the command's span"),
                Assert(~dut.timeout | (cmd.done & (cmd.status == Status.ETIMEDOUT)),
                       "a timeout without ETIMEDOUT"),
                Assert(~(cmd.done & (cmd.status == Status.ETIMEDOUT) & ~answered) | dut.timeout,
                       "a wait that timed out was not counted (TIMEOUTS)"),
                Assert(~(dut.owed & dut.stale), "a beat and an answer owed at once"),
                Assert(pending == ~fsm.ongoing("IDLE"), "inv: pending"),
                Assert(~in_packet | dut.owed | fsm.ongoing("OPEN-FETCH") |
                       fsm.ongoing("OPEN-NAME"), "inv: a packet goes on"),
                Assert(~in_packet | (pkt_op == CtlOp.OPEN), "inv: only OPEN spans beats"),
                Assert(~in_packet | (pkt_tag == _internal(m, "tag")), "inv: the packet's tag"),
                Assert(~(in_packet & dut.owed) | (req.payload.tag == pkt_tag),
                       "inv: the owed beat's tag"),
                Assert(~(fsm.ongoing("OPEN-FETCH") | fsm.ongoing("OPEN-NAME") |
                         fsm.ongoing("CLOSE-SEND") | fsm.ongoing("CTL-WAIT")) |
                       ~(dut.owed | dut.stale), "inv: a packet goes out only with none owed"),
                Assert(~pending | (op == CtlOp.OPEN) | (op == CtlOp.CLOSE), "inv: op"),
                Assert(~(fsm.ongoing("OPEN-START") | fsm.ongoing("OPEN-FETCH") |
                         fsm.ongoing("OPEN-NAME")) | (op == CtlOp.OPEN), "inv: an OPEN"),
                Assert(~(fsm.ongoing("CLOSE-START") | fsm.ongoing("CLOSE-SEND")) |
                       (op == CtlOp.CLOSE), "inv: a CLOSE"),
                Assert(dut.map_size <= window, "MAP_SIZE past the window"),
                Assert(dut.map_limit <= window, "the window's limit past the window"),
                Assert(dut.map_limit[:2] == 0, "the window's limit not a whole word"),
                Assert(dut.map_limit >= dut.map_size, "the limit below MAP_SIZE"),
                Assert(dut.map_limit < dut.map_size + 4, "the limit a word past MAP_SIZE"),
                Assert(dut.is_open | (dut.map_limit == 0), "a window mapped while closed"),
                Assert(~dut.is_open | was_open | opened,
                       "the window opened without a successful OPEN answer"),
            ],
            "live": lambda: [
                Assert(~pending | (age <= bound), "an OPEN or CLOSE outlived its bound"),
            ],
            "cover": lambda: [
                Cover(done_ok_open),
                Cover(cmd.done & (op == CtlOp.CLOSE) & (cmd.status == 0)),
                Cover(dut.timeout & (op == CtlOp.CLOSE)),
                Cover(dut.timeout & (op == CtlOp.OPEN)),
            ],
        }

    # -- the window DMA --------------------------------------------------------------------------
    def _window(self, m):
        p = self.params
        t, window, most = p["host_timeout"], p["window_size"], p["max_beats"]
        aw = (window - 1).bit_length() + 1
        dut = WindowDMA(addr_width=aw, data_width=32, host_timeout=t)
        fsm = _fsm(m, dut)
        cmd, post, req, rsp, rd, wr = (dut.cmd, dut.post, dut.dma_req, dut.dma_rsp, dut.rd,
                                       dut.wr)
        # The core: a request inside the mapped window (the core's decode), one at a time, its
        # header held, `remaining` counted down as the guest's beats move.
        limit = Signal(range(window + 1))
        m.d.comb += [limit.eq(AnyConst(len(limit))), Assume(limit <= window),
                     Assume(limit[:2] == 0)]
        busy = Signal()
        write = Signal()
        addr = Signal(aw)
        count = Signal(8)
        end_be = Signal(4)
        remaining = Signal(8)
        start = Signal()
        s_write, s_addr, s_count, s_be = AnySeq(1), AnySeq(aw), AnySeq(8), AnySeq(4)
        m.d.comb += [start.eq(AnySeq(1)), Assume(~start | ~busy),
                     Assume(~start | _in_window(s_addr, s_count, s_be, limit, most))]
        # The core may hand over a window write passing the waiting read (`post`).
        pw = _passing_write(m, dut, limit, most, t, start, p.get("passing", True))
        # The core answers the passing write (PASS-ACK) before it starts anything else.
        m.d.comb += Assume(~start | ~pw.ack)
        m.d.comb += [cmd.start.eq(start), cmd.write.eq(Mux(start, s_write, write)),
                     cmd.addr.eq(Mux(start, s_addr, addr)),
                     cmd.count.eq(Mux(start, s_count, count)),
                     cmd.remaining.eq(Mux(start, s_count, remaining)),
                     cmd.end_be.eq(Mux(start, s_be, end_be))]
        # The request's own beats: a passing write's are the write's (`pw.moved`).
        moved = (rd.valid & rd.ready) | (wr.valid & wr.ready & ~pw.busy)
        with m.If(start):
            m.d.sync += [busy.eq(1), write.eq(s_write), addr.eq(s_addr), count.eq(s_count),
                         remaining.eq(s_count), end_be.eq(s_be)]
        with m.Elif(moved & (remaining != 0)):
            m.d.sync += remaining.eq(remaining - 1)
        with m.If(cmd.done):
            m.d.sync += busy.eq(0)
        # The guest: slow on both sides (beats offered with gaps, completions taken late); the
        # core takes no read beat while it completes a passing write, and stops handing over a
        # write's beats once the window is done with them (it drops the rest itself).
        _any_source(m, wr, "wr", release=cmd.done | post.done)
        m.d.comb += rd.ready.eq(AnySeq(1) & ~pw.ack)
        # The host: anything the rules allow.
        _any_source(m, rsp, "dma_rsp")
        m.d.comb += req.ready.eq(AnySeq(1))

        took = req.valid & req.ready
        end = req.payload.addr + ((req.payload.count + 1) << 2)
        # A write packet, as the host sees it: count + 1 beats with one header.
        left, hdr, beat_hdr = _packet_view(m, req)
        htag = Signal(8, reset_less=True)   # the newest request's tag: reset-less, as the tag
        with m.If(start):
            m.d.sync += htag.eq(htag + 1)
        # A passing write's tag: the read's with the top bit flipped.
        ptag = htag ^ (1 << (TAG_BITS - 1))
        # The host's share of the wait at hand (the guest's gaps and back-pressure excluded):
        # cycles since the last beat moved, counted only while the host holds things up (a
        # passing write's beats are not the read's; the read's answer on offer while a write
        # passes is the host's part done).
        # A write's beats all went to the host.
        sent = _flag(m, start, wr.valid & wr.ready & ~pw.busy & (remaining == 0), "sent")
        guest_slow = (busy & write & ~sent & ~wr.valid) | (rd.valid & ~rd.ready)
        answered = pw.busy & rsp.valid & (rsp.payload.tag == htag)
        slow = Signal(range(t + 2))
        with m.If(start | moved | (took & dut.free & ~pw.busy)):
            m.d.sync += slow.eq(0)
        with m.Elif(busy & ~guest_slow & ~answered & (slow <= t)):
            m.d.sync += slow.eq(slow + 1)
        # The beats the component owes the host after giving up with one on offer, as the
        # harness counts them (the beat on offer, then the rest of a write's packet).
        owed = Signal(range(most + 2))
        owed_w = Signal()
        with m.If(took & (owed != 0)):
            m.d.sync += owed.eq(owed - 1)
        with m.If(dut.timeout & dut.free & busy & (fsm.ongoing("READ-REQ") |
                                                    fsm.ongoing("WRITE"))):
            m.d.sync += [owed.eq(Mux(write, remaining + 1, 1)), owed_w.eq(write)]
        with m.If(dut.timeout & dut.free & post.done):
            m.d.sync += [owed.eq(pw.remaining + 1), owed_w.eq(1)]
        # The read's request beat went to the host: its answer is owed to the guest from now.
        asked = _flag(m, start, took & dut.free & busy & ~write & ~pw.busy, "asked")
        age = _count(m, start, busy, "age", init=1)
        # Cycles the guest held the request up, or a write passed it.
        gaps = _count(m, start, busy & (guest_slow | pw.busy), "gaps")
        bound = core_bound("write", t, beats=most)
        # A passing write's own bound, for its count (beats less one).
        p_bound = Array(C(core_bound("pass", t, beats=n + 1), 8) for n in range(most))[pw.count]
        return {
            "safety": lambda: [
                _stable(m, req, "dma_req"),
                _stable(m, rd, "rd"),
                Assert(~req.valid | (end <= limit),
                       "a DMA beat outside the mapped window"),
                Assert(~(req.valid & req.payload.write & (left != 0)) | (beat_hdr == hdr),
                       "a write packet's beats disagree on its header"),
                Assert(~(req.valid & req.payload.write & dut.free & (left == 0)) |
                       (busy & write) | pw.busy,
                       "a write beat with no write to send"),
                Assert(~cmd.done | busy, "done without a request"),
                Assert(~(cmd.done & ~write & ~cmd.failed) | (rd.valid & rd.ready &
                                                               (remaining == 0)),
                       "a read ended before its last beat"),
                Assert(~(rd.valid & ~busy), "a read beat without a read"),
                Assert(~rd.valid | (rd.payload.last == (remaining == 0)),
                       "last on the wrong read beat"),
                Assert(~wr.ready | (busy & write) | pw.busy,
                       "a write beat taken without a write"),
                Assert(~dut.timeout | cmd.done | post.done,
                       "a timeout that did not end the request"),
                Assert(~(cmd.done & cmd.failed) | dut.timeout,
                       "a request failed without a timeout"),
                # A write passing a waiting read (issue 22, finding 2).
                Assert(~post.ready | (busy & ~write & dut.free & ~rd.valid & ~pw.busy),
                       "a write may pass where no read waits"),
                Assert(~post.done | pw.busy, "inv: a passing write's done"),
                Assert(~(cmd.done & pw.busy), "the read ended while a write passed it"),
                Assert(~(post.done & ~post.failed) | (took & req.payload.write &
                                                      (pw.remaining == 0)),
                       "a passing write done before its last beat went"),
                Assert(~(rd.valid & pw.busy), "inv: no read beat while a write passes"),
                Assert(~(busy & ~write & asked & rsp.valid & rsp.ready &
                         (rsp.payload.tag == htag)) | (rd.valid & rd.ready),
                       "an answer to the read at hand dropped"),
                Assert(~(req.valid & dut.free) | (req.payload.tag == Mux(pw.busy, ptag, htag)),
                       "a beat with another request's tag"),
                Assert(~(pw.busy & dut.free) | (left == Mux(
                    pw.remaining == pw.count, 0, pw.remaining + 1)),
                       "inv: passing beats left"),
                Assert(~(pw.busy & (left != 0)) | (hdr == Cat(pw.addr, pw.count, ptag)),
                       "inv: passing hdr"),
                # Invariants: the harness's view of the request is the component's.
                Assert(busy == ~fsm.ongoing("IDLE"), "inv: busy"),
                Assert(~(busy & write) | fsm.ongoing("WRITE") | fsm.ongoing("WRITE-ACK"),
                       "inv: a write"),
                Assert(fsm.ongoing("WRITE-ACK") == (busy & write & sent), "inv: acked"),
                Assert(fsm.ongoing("WRITE") == (busy & write & ~sent), "inv: writing"),
                Assert((fsm.ongoing("READ-REQ") | fsm.ongoing("READ-DATA") |
                        fsm.ongoing("PASS")) == (busy & ~write), "inv: reading"),
                Assert(fsm.ongoing("PASS") == pw.busy, "inv: passing"),
                Assert(~(busy & ~write) | (asked == (fsm.ongoing("READ-DATA") |
                                                     fsm.ongoing("PASS"))), "inv: asked"),
                Assert(~pw.busy | dut.free, "inv: nothing owed while a write passes"),
                Assert(~(pw.busy & pw.ack), "inv: a passing write answered"),
                Assert(~(pw.failed & busy) | ~write, "inv: only a read is passed"),
                Assert(pw.remaining <= pw.count, "inv: passing remaining"),
                Assert(~pw.busy |
                       _in_window(pw.addr, pw.count, pw.end_be, limit, most),
                       "inv: the passing write in the window"),
                Assert(~(busy & write & ~sent) | ~dut.free | (left == Mux(
                    remaining == count, 0, remaining + 1)), "inv: write beats left"),
                Assert(~fsm.ongoing("READ-DATA") | (left == 0) | ~dut.free, "inv: read data"),
                Assert(~(busy & ~write & ~pw.busy) | (left == 0) | ~dut.free, "inv: read"),
                Assert(remaining <= count, "inv: remaining"),
                Assert(left < most, "inv: left"),
                Assert(~(~(busy & write & ~sent) & ~pw.busy & dut.free) | (left == 0),
                       "inv: no packet"),
                Assert(_internal(m, "owed") == owed, "inv: owed beats"),
                Assert(owed <= most, "inv: owed count"),
                Assert(~(busy & ~sent & ~dut.free) | pw.failed |
                       ((remaining == count) & ~fsm.ongoing("READ-DATA")),
                       "inv: nothing moves while beats are owed"),
                Assert(_internal(m, "tag") == htag, "inv: the component's tag"),
                Assert(~(req.valid & ~dut.free) | (req.payload.write == owed_w), "inv: owed w"),
                Assert(~(~dut.free & owed_w) | (left == owed) |
                       ((left == 0) & (owed == req.payload.count + 1)), "inv: owed left"),
                Assert(~(~dut.free & owed_w) | (req.payload.count < most), "inv: owed cnt"),
                Assert(~(~dut.free & owed_w & (left != 0)) | (beat_hdr == hdr),
                       "inv: owed hdr"),
                Assert(~(~dut.free & ~owed_w) | (left == 0), "inv: owed read"),
                Assert(~(busy & write & ~sent & dut.free & (left != 0)) |
                       (hdr == Cat(addr, count, htag)), "inv: hdr"),
                Assert(count < most, "inv: count"),
                Assert(~busy | _in_window(addr, count, end_be, limit, most),
                       "inv: in the window"),
            ],
            "live": lambda: [
                Assert(~(dut.timeout & ~post.done) | (slow >= t),
                       "gave up before the host was slow for host_timeout cycles"),
                Assert(~(dut.timeout & post.done) | (pw.slow >= t),
                       "gave up on a passing write before the host was slow for host_timeout"),
                Assert(~busy | (age <= bound + gaps), "a request outlived its bound"),
                Assert(~pw.busy | (pw.age <= p_bound + pw.gaps),
                       "a passing write outlived its bound"),
            ],
            "cover": lambda: [
                Cover(cmd.done & write & ~cmd.failed & (count != 0)),
                Cover(cmd.done & ~write & ~cmd.failed & (count != 0)),
                Cover(dut.timeout & write),
                Cover(cmd.start & ~dut.free),
                # A write of two beats or more passing a waiting read, then the read's data.
                Cover(cmd.done & ~write & ~cmd.failed & pw.passed),
            ],
        }

    # -- the register file's field actions --------------------------------------------------------
    def _registers(self, m):
        m.submodules.rw = rw = RW(32, init=0x5A)
        m.submodules.w1c = w1c = W1C(32)
        m.submodules.rc = rc = RC(8)
        for a in (rw, w1c, rc):
            port = a.port
            m.d.comb += [port.sel.eq(AnySeq(1)), port.r_stb.eq(AnySeq(1)),
                         port.w_stb.eq(AnySeq(1)), port.w_mask.eq(AnySeq(a.width)),
                         port.w_data.eq(AnySeq(a.width))]
        m.d.comb += [w1c.set.eq(AnySeq(32)), rc.inc.eq(AnySeq(1))]
        started = _past(m, C(1), "started")

        def was(v, name):
            return _past(m, v, name)
        rw_was, rw_stb = was(rw.data, "rw_was"), was(rw.port.w_stb, "rw_stb")
        rw_mask, rw_wd = was(rw.port.w_mask, "rw_mask"), was(rw.port.w_data, "rw_wd")
        w_was, w_set = was(w1c.data, "w1c_was"), was(w1c.set, "w1c_set")
        w_stb, w_mask = was(w1c.port.w_stb, "w1c_stb"), was(w1c.port.w_mask, "w1c_mask")
        w_wd = was(w1c.port.w_data, "w1c_wd")
        c_was, c_inc = was(rc.data, "rc_was"), was(rc.inc, "rc_inc")
        c_inc2 = was(c_inc, "rc_inc2")
        c_clr = was(rc.port.w_stb & rc.port.w_mask.any(), "rc_clr")
        cleared = Mux(w_stb, w_wd & w_mask, 0)
        return {
            "safety": lambda: [
                Assert(~started | (rw.data == Mux(rw_stb, rw_was & ~rw_mask | rw_wd & rw_mask,
                                                  rw_was)),
                       "RW: a write changed a byte not enabled, or missed one that was"),
                Assert(started | (rw.data == 0x5A), "RW: not its reset value"),
                Assert(rw.port.r_data == rw.data, "RW: reads another value than it holds"),
                Assert(w1c.clear == Mux(w1c.port.w_stb, w1c.port.w_data & w1c.port.w_mask, 0),
                       "W1C: clears other bits than the write's ones"),
                Assert(~started | (w1c.data == (w_was & ~cleared | w_set)),
                       "W1C: a set bit was lost (a clear on the same edge), or a bit changed "
                       "by itself"),
                Assert(w1c.port.r_data == w1c.data, "W1C: reads another value than it holds"),
                Assert(~started | (rc.data == Mux(c_clr, 0, Mux(c_inc2 & (c_was != 0xFF),
                                                                 c_was + 1, c_was))) |
                       ~was(started, "started2"),
                       "RC: an event not counted, counted twice, or a clear lost"),
                Assert(rc.port.r_data == rc.data, "RC: reads another value than it holds"),
            ],
            "live": lambda: [],
            "cover": lambda: [
                Cover(w_set.any() & ((w_set & cleared) == w_set) & (w1c.data == w_set)),
                Cover(c_clr & (c_was == 2) & (rc.data == 0)),
            ],
        }

    # -- the doorbell/interrupt block -------------------------------------------------------------
    def _doorbell(self, m):
        m.submodules.dut = dut = Doorbells()
        # INTR_STATUS and INTR_MASK as the core keeps them: the register file's actions.
        m.submodules.status = status = W1C(VECTORS)
        m.submodules.mask = mask = RW(VECTORS)
        for a in (status, mask):
            port = a.port
            m.d.comb += [port.w_stb.eq(AnySeq(1)), port.w_mask.eq(AnySeq(VECTORS)),
                         port.w_data.eq(AnySeq(VECTORS))]
        m.d.comb += [dut.status.eq(status.data), dut.mask.eq(mask.data),
                     dut.clear.eq(status.clear), status.set.eq(dut.rung)]
        _any_source(m, dut.ring, "ring")
        m.d.comb += [dut.db.ready.eq(AnySeq(1)), dut.ring_we.eq(AnySeq(1)),
                     dut.ring_data.eq(AnySeq(32)), Assume(~dut.ring_we | ~dut.full),
                     dut.peer_valid.eq(AnySeq(1)), dut.peer_id.eq(AnySeq(16))]
        ring = dut.ring
        vector = ring.payload.vector
        started = _past(m, C(1), "started")
        # What was pending, enabled and not cleared before this edge: only news is messaged.
        before = _past(m, status.data & ~status.clear & mask.data, "before")
        fresh_ring = _past(m, ring.valid & (vector < VECTORS) &
                       (~(status.data >> vector[:5])[0] | (status.clear >> vector[:5])[0]),
                       "fresh_ring")
        ring_bit = _past(m, vector[:5], "ring_bit")
        we = _past(m, dut.ring_we, "we")
        we_data = _past(m, dut.ring_data, "we_data")
        return {
            "safety": lambda: [
                Assert(dut.rung == Cat(*[ring.valid & (vector == i) for i in range(VECTORS)]),
                       "a ring set another bit than its vector's (or a vector past 31 one)"),
                Assert(ring.ready, "a ring was refused"),
                Assert(dut.irq == (status.data & mask.data).any(),
                       "irq is not pending & unmasked"),
                Assert(~started | (dut.irq_msg == (status.data & mask.data & ~before).any()),
                       "a message without news, or news without a message"),
                Assert(~(started & fresh_ring & (mask.data >> ring_bit)[0]) | dut.irq_msg,
                       "a ring of an unmasked vector was not messaged (lost interrupt)"),
                _stable(m, dut.db, "db"),
                Assert(~(started & we) | (dut.db.valid &
                                          (dut.db.payload.vector == we_data[:16]) &
                                          (dut.db.payload.peer == we_data[16:])),
                       "a DOORBELL write did not offer its doorbell"),
                Assert(dut.full == dut.db.valid, "full is not the doorbell on offer"),
                Assert(dut.ivposition == Mux(dut.peer_valid, dut.peer_id, 0xFFFF_FFFF),
                       "IVPOSITION is not the peer ID"),
            ],
            "live": lambda: [],
            "cover": lambda: [
                Cover(dut.irq_msg),
                Cover(dut.db.valid & dut.db.ready),
                Cover(started & fresh_ring & (status.data >> ring_bit)[0] &
                      _past(m, (status.clear >> vector[:5])[0], "ring_on_clear")),
            ],
        }
