"""Formal harnesses for the UltraScale+ shim's pieces, in the style of
:mod:`vmshm.formal.components`: each piece between free inputs that keep only the rules its
neighbours promise, its ``safety`` group proved by k-induction and its ``cover`` group reached.

``usp_skid``
    :class:`~vmshm.rtl.usp.streams.SkidBuffer`: never drops, doubles or reorders an entry; the
    beat on offer is held until taken.
``usp_fifo``
    :class:`~vmshm.rtl.usp.streams.PacketFifo` (4 entries): only whole packets leave, in order,
    none dropped unless the writer drops it; never accepts past its depth.
``usp_cq``
    :class:`~vmshm.rtl.usp.completer.CqBuffer` (8 DWORDs): every DWORD of an accepted TLP the
    hard IP did not mark discontinued (posted writes among them) leaves, in order, and nothing
    of a discontinued one.
``usp_tx``
    :class:`~vmshm.rtl.usp.streams.DwordsToAxis` (a 128-bit interface, 4 beats of buffer), what
    PG213 asks of CC and RQ: ``tvalid`` held from a packet's first beat to its last, the beat
    unchanged while not ready, ``tkeep`` contiguous from lane 0 (all lanes but on the last
    beat), the packet's ``tuser`` on its first beat only.
``usp_irq``
    :class:`~vmshm.rtl.usp.irq.USPInterrupts`: ``cfg_interrupt_msi_int`` only while MSI Enable
    and Bus Master Enable are set and the vector unmasked, never while the hard IP may still
    answer the one before (``_sent`` / ``_fail``); an INTx change never while the last is
    unanswered, an assertion only while MSI is off and Interrupt Disable clear.
``usp_credits``
    :class:`~vmshm.rtl.usp.completer.NpCredits`: the credits the hard IP holds plus the
    non-posted requests on their way to the completer are never more than one (at most one
    waits in CQ) and never negative (a request is used or dropped only under a credit).
``usp_rq``
    :class:`~vmshm.rtl.usp.requester.USPRequester` (bursts of up to 4 DWORDs): RQ keeps the
    stream rules (a Function Level Reset may withdraw a beat; the top clears the packet then),
    every TLP is framed by its descriptor's length, its byte enables are legal (PCIe Base 2.2.5:
    Last DW BE 0 for one DWORD, else neither end 0 and each contiguous towards the other), and
    a read never takes a tag the hard IP may still complete (one outstanding use per tag).

The data properties are stated against a reference model (a queue of whole packets kept by the
harness); the invariants that let induction close tie the model to the piece's pointers and to
its memory's rows, read through extra asynchronous ports the harness adds to that memory.
"""

from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import *

from vmshm.rtl.usp.completer import CqBuffer, NpCredits
from vmshm.rtl.usp.completions import TAGS
from vmshm.rtl.usp.descriptors import CQ_DISCONTINUE, RC_DISCONTINUE, ReqType
from vmshm.rtl.usp.irq import USPInterrupts
from vmshm.rtl.usp.requester import USPRequester
from vmshm.rtl.usp.streams import DwordsToAxis, PacketFifo, SkidBuffer

from .components import _any_source, _past, _stable
from .usp_invariants import open_invariants, rq_invariants

__all__ = ["USP_COMPONENTS", "USP_PARAMS", "UspProperties"]

#: The pieces with a harness here (each has a ``safety`` and a ``cover`` group).
USP_COMPONENTS = ("usp_skid", "usp_fifo", "usp_cq", "usp_tx", "usp_irq", "usp_credits",
                  "usp_rq")
#: Small sizes: induction must close. FIFO entries, CqBuffer DWORDs, DwordsToAxis lanes and
#: buffer DWORDs, and the most cycles the hard IP takes to answer an MSI request.
USP_PARAMS = dict(fifo_depth=4, cq_dwords=8, tx_lanes=4, tx_dwords=16, msi_answer=8)


def _elaborated(dut):
    """Return ``dut`` elaborated by hand (so the harness reaches its inner parts)."""
    dut._MustUse__silence = True
    inner = dut.elaborate(None)
    inner._flush()              # its last If chain too, so _named finds what it assigns
    return inner


def _named(module, name):
    """Return the signal ``name`` that ``module``'s statements assign (one only)."""
    found = {}

    def walk(stmts):
        for st in stmts:
            if hasattr(st, "cases"):
                for _patterns, body, _loc in st.cases:
                    walk(body)
            elif hasattr(st, "lhs"):
                found.update((id(s), s) for s in st.lhs._lhs_signals() if s.name == name)
    for stmts in module._statements.values():
        walk(stmts)
    if len(found) != 1:
        raise LookupError(f"{len(found)} signals named {name!r}")
    return found.popitem()[1]


def _open_fifo(m, fifo, sub="fifo"):
    """Elaborate the :class:`PacketFifo` ``fifo`` by hand into ``m`` as ``sub``; return its
    pointers ``(wp, cp, rp)`` and its memory's rows (read through asynchronous ports)."""
    inner = _elaborated(fifo)
    mem = inner._named_submodules["mem"][0]
    rows = []
    for i in range(mem.depth):
        port = mem.read_port(domain="comb")
        m.d.comb += port.addr.eq(i)
        rows.append(port.data)
    m.submodules[sub] = inner
    return tuple(_named(inner, n) for n in ("wp", "cp", "rp")), Array(rows)


class _Model:
    """A reference queue of whole packets, kept by the harness: ``push`` appends ``data``;
    with ``last`` the packet is kept (``commit``) or forgotten (``drop``); ``clear`` forgets
    the packet being written; ``pop`` takes the head. ``n`` entries are in, ``c`` of them in
    whole packets; ``q[0]`` is the head."""

    def __init__(self, m, depth, width, *, push, data, last, drop, pop, clear=C(0)):
        bits = (depth + 1).bit_length()
        self.depth = depth
        self.q = [Signal(width, name=f"model_q{i}") for i in range(depth)]
        self.n = Signal(bits, name="model_n")
        self.c = Signal(bits, name="model_c")
        self.push, self.pop = push, pop
        n1 = Signal(bits, name="model_n1")
        c1 = Signal(bits, name="model_c1")
        m.d.comb += [n1.eq(self.n - pop), c1.eq(self.c - pop)]
        for i in range(depth):
            shifted = Mux(pop, self.q[i + 1], self.q[i]) if i + 1 < depth else self.q[i]
            m.d.sync += self.q[i].eq(Mux(push & (n1 == i), data, shifted))
        with m.If(push & last & drop):
            m.d.sync += [self.n.eq(c1), self.c.eq(c1)]
        with m.Elif(push & last):
            m.d.sync += [self.n.eq(n1 + 1), self.c.eq(n1 + 1)]
        with m.Elif(push):
            m.d.sync += [self.n.eq(n1 + 1), self.c.eq(c1)]
        with m.Else():
            m.d.sync += [self.n.eq(n1), self.c.eq(c1)]
        with m.If(clear):
            # The packet being written is forgotten, its last entry too if it comes now.
            m.d.sync += [self.n.eq(c1), self.c.eq(c1)]

    def promises(self, out_valid, out_data):
        """Assert what the queue promises of a piece's output: it offers exactly the head of
        the whole packets, and never takes more than it holds."""
        return [
            Assert(self.c <= self.n, "inv: whole within all"),
            Assert(self.n <= self.depth, "inv: depth"),
            Assert(~(self.push & (self.n - self.pop >= self.depth)),
                   "took an entry with no room for it"),
            Assert(out_valid == (self.c != 0),
                   "offered an entry of no whole packet, or held back a whole packet"),
            Assert(~out_valid | (out_data == self.q[0]),
                   "dropped, doubled or reordered an entry"),
        ]

    def tied_to(self, pointers, rows, bits, head):
        """Invariants: the model is the FIFO's state (pointers, memory rows, read register)."""
        wp, cp, rp = pointers
        width = bits + 1
        props = [
            Assert(self.n == (wp - rp)[:width], "inv: entries"),
            Assert(self.c == (cp - rp)[:width], "inv: whole entries"),
            # (Not right after a reset, when it still holds an old read and offers nothing.)
            Assert((self.c == 0) | (head == rows[rp[:bits]]),
                   "inv: the read register is the head row"),
        ]
        for i in range(self.depth):
            props.append(Assert(~(self.n > i) | (rows[(rp + i)[:bits]] == self.q[i]),
                                f"inv: row {i}"))
        return props


class UspProperties(Elaboratable):
    """Check one property group (``safety`` or ``cover``) of one piece of
    :data:`USP_COMPONENTS`."""

    def __init__(self, component, group, params=USP_PARAMS):
        if component not in USP_COMPONENTS:
            raise ValueError(f"component must be one of {', '.join(USP_COMPONENTS)}, "
                             f"not {component!r}")
        self.component, self.group, self.params = component, group, dict(params)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += _HARNESSES[self.component](m, self.params)[self.group]()
        return m


def _skid(m, p):
    dut = SkidBuffer(8)
    inner = _elaborated(dut)
    m.submodules.dut = inner
    _any_source(m, dut.i, "i")
    m.d.comb += dut.o.ready.eq(AnySeq(1))
    model = _Model(m, 2, 8, push=dut.i.valid & dut.i.ready, data=dut.i.payload, last=C(1),
                   drop=C(0), pop=dut.o.valid & dut.o.ready)
    # Its two valid flags are unnamed: found by what they drive.
    drives = {id(st.lhs): st.rhs for st in inner._statements["comb"]}
    main_valid = drives[id(dut.o.valid)]
    skid_valid = drives[id(dut.i.ready)].operands[0]
    held, spare = _named(inner, "held"), _named(inner, "spare")
    return {
        "safety": lambda: model.promises(dut.o.valid, dut.o.payload) + [
            _stable(m, dut.o, "o"),
            Assert(model.n == main_valid + skid_valid, "inv: entries"),
            Assert(model.c == model.n, "inv: every entry a whole packet"),
            Assert(~skid_valid | main_valid, "inv: the spare only behind the main"),
            Assert(~main_valid | (held == model.q[0]), "inv: main"),
            Assert(~skid_valid | (spare == model.q[1]), "inv: spare"),
        ],
        "cover": lambda: [Cover(skid_valid & dut.o.ready),
                          Cover(_past(m, dut.o.valid & dut.o.ready, "took") &
                                dut.o.valid & dut.o.ready)],
    }


def _fifo(m, p):
    depth = p["fifo_depth"]
    bits = (depth - 1).bit_length()
    dut = PacketFifo(6, depth)
    # Any clear, on any cycle: the top's Function Level Reset clears RQ's and CC's buffers
    # while the requester or the completer may be offering a packet's last entry.
    m.d.comb += dut.clear.eq(AnySeq(1))
    pointers, rows = _open_fifo(m, dut, "dut")
    _any_source(m, dut.w, "w")
    m.d.comb += dut.r.ready.eq(AnySeq(1))
    w = dut.w
    model = _Model(m, depth, 6, push=w.valid & w.ready, data=w.payload.data,
                   last=w.payload.last, drop=w.payload.drop, pop=dut.r.valid & dut.r.ready,
                   clear=dut.clear)
    return {
        "safety": lambda: model.promises(dut.r.valid, dut.r.payload) + [
            _stable(m, dut.r, "r"),
            Assert(w.ready == (model.n < depth), "refused an entry with room for it"),
        ] + model.tied_to(pointers, rows, bits, dut.r.payload),
        "cover": lambda: [
            Cover(model.n == depth),
            Cover(w.valid & w.ready & w.payload.last & w.payload.drop & (model.c != 0)),
            Cover(dut.r.valid & dut.r.ready & (model.c == 1) & (model.n == 3)),
        ],
    }


def _cq(m, p):
    depth = p["cq_dwords"]
    bits = (depth - 1).bit_length()
    dut = CqBuffer(depth)
    inner = _elaborated(dut)
    fifo = inner._named_submodules["fifo"][0]
    pointers, rows = _open_fifo(m, fifo, "fifo")
    del inner._named_submodules["fifo"]
    m.submodules.dut = inner
    i = dut.i
    _any_source(m, i, "cq")
    m.d.comb += dut.o.ready.eq(AnySeq(1))
    # What the hard IP's TLPs are, as the harness reads them: a TLP starts at a `first` DWORD
    # (the rest of one cut by a reset is not one), and is discontinued if any beat says so.
    in_tlp = Signal()
    cut = Signal()
    took = i.valid & i.ready
    starts = i.payload.first | in_tlp
    dropped = cut | i.payload.user[CQ_DISCONTINUE]
    with m.If(took):
        m.d.sync += in_tlp.eq(starts & ~i.payload.last)
    with m.If(took & starts):
        m.d.sync += cut.eq(dropped & ~i.payload.last)
    entry = Cat(i.payload.data, i.payload.first, i.payload.last, i.payload.user[:8])
    model = _Model(m, depth, len(entry), push=took & starts, data=entry, last=i.payload.last,
                   drop=dropped, pop=dut.o.valid & dut.o.ready)
    return {
        "safety": lambda: model.promises(dut.o.valid, dut.o.payload.as_value()) + [
            _stable(m, dut.o, "o"),
            Assert(in_tlp == _named(inner, "synced"), "inv: in a TLP"),
            Assert(cut == _named(inner, "cut"), "inv: cut"),
            Assert(~in_tlp | (model.n != model.c), "inv: a TLP under way has entries"),
        ] + model.tied_to(pointers, rows, bits, dut.o.payload.as_value()),
        "cover": lambda: [
            # A posted write (descriptor and one DWORD) leaves whole, and a discontinued one
            # leaves nothing.
            Cover(dut.o.valid & dut.o.ready & dut.o.payload.last & (model.c == 1) &
                  _past(m, model.c == 2, "c2")),
            Cover(took & i.payload.last & i.payload.user[CQ_DISCONTINUE] &
                  (model.n - model.c >= 2)),
        ],
    }


def _tx(m, p):
    lanes, dwords = p["tx_lanes"], p["tx_dwords"]
    depth = dwords // lanes
    bits = (depth - 1).bit_length()
    uw = 8
    dut = DwordsToAxis(lanes * 32, uw, sop_user_width=uw, buffer_dwords=dwords)
    inner = _elaborated(dut)
    fifo = inner._named_submodules["fifo"][0]
    (wp, cp, rp), rows = _open_fifo(m, fifo, "fifo")
    del inner._named_submodules["fifo"]
    m.submodules.dut = inner
    _any_source(m, dut.dw, "dw")
    axis = dut.axis
    m.d.comb += [axis.tready.eq(AnySeq(1)), dut.clear.eq(AnySeq(1))]
    # The beat on offer, as the hard IP sees it (held until taken).
    beat = Cat(axis.tdata, axis.tkeep, axis.tlast, axis.tuser)
    held = Signal()
    prev = Signal.like(beat)
    m.d.sync += [held.eq(axis.tvalid & ~axis.tready), prev.eq(beat)]
    in_pkt = Signal()           # a beat without tlast was taken: the packet goes on
    with m.If(axis.tvalid & axis.tready):
        m.d.sync += in_pkt.eq(~axis.tlast)
    legal_keep = [(1 << k) - 1 for k in range(1, lanes + 1)]
    full = (1 << lanes) - 1

    def row(k):
        r = rows[k[:bits]]
        w = lanes * 32
        return r[w:w + lanes], r[w + lanes], r[w + lanes + 1:]      # keep, last, user

    idx, keep, sop = (_named(inner, n) for n in ("idx", "keep", "sop"))

    def safety():
        return _tx_safety(m, axis, beat, held, prev, in_pkt, legal_keep, full, row, depth, bits,
                          (wp, cp, rp), rows, idx, keep, sop, lanes)
    return {
        "safety": safety,
        "cover": lambda: [
            Cover(axis.tvalid & axis.tready & in_pkt & axis.tlast & (axis.tkeep == 0b11)),
            Cover(axis.tvalid & ~axis.tready & _past(m, held, "held2")),
        ],
    }


def _tx_safety(m, axis, beat, held, prev, in_pkt, legal_keep, full, row, depth, bits, pointers,
               rows, idx, keep, sop, lanes):
    wp, cp, rp = pointers
    safety = [
        Assert(~held | (axis.tvalid & (beat == prev)), "a beat taken back or changed"),
        Assert(~in_pkt | axis.tvalid, "tvalid dropped inside a packet"),
        Assert(~axis.tvalid | axis.tkeep.matches(*legal_keep),
               "tkeep not contiguous from lane 0"),
        Assert(~axis.tvalid | axis.tlast | (axis.tkeep == full),
               "a beat before the last with a lane empty"),
        Assert(~(axis.tvalid & in_pkt) | (axis.tuser == 0), "tuser on a beat after the first"),
        # Invariants: the FIFO holds such beats, whole packets ending in tlast.
        Assert((wp - rp)[:bits + 1] <= depth, "inv: depth"),
        Assert((cp - rp)[:bits + 1] <= (wp - rp)[:bits + 1], "inv: whole within all"),
        Assert(~in_pkt | (cp != rp), "inv: the packet out has its rest in"),
        Assert((cp == rp) | row(cp - 1)[1], "inv: whole packets end in tlast"),
        Assert(sop == (wp == cp), "inv: a packet being gathered"),
        Assert(keep == Array(C((1 << k) - 1, lanes) for k in range(lanes))[idx],
               "inv: gathered lanes"),
        # (Not right after a reset, when it still holds an old read and offers nothing.)
        Assert((cp == rp) | (Cat(axis.tdata, axis.tkeep, axis.tlast, axis.tuser) ==
                             rows[rp[:bits]]), "inv: the read register is the head row"),
    ]
    for i in range(depth):
        k = rp + i
        keep_k, last_k, user_k = row(k)
        in_range = (wp - rp)[:bits + 1] > i
        pending = (cp - rp)[:bits + 1] <= i
        safety.append(Assert(~in_range | (keep_k.matches(*legal_keep) &
                                          (last_k | (keep_k == full)) & ~(pending & last_k)),
                             f"inv: row {i}"))
        before = in_pkt if i == 0 else ~row(k - 1)[1]
        safety.append(Assert(~(in_range & before) | (user_k == 0), f"inv: row {i} user"))
    return safety


def _irq(m, p):
    answer = p["msi_answer"]
    dut = USPInterrupts()
    inner = _elaborated(dut)
    m.submodules.dut = inner
    for port in ("irq", "irq_msg", "bus_master", "intx_disable", "cfg_interrupt_sent",
                 "cfg_interrupt_msi_enable", "cfg_interrupt_msi_sent", "cfg_interrupt_msi_fail",
                 "cfg_interrupt_msi_data"):
        sig = getattr(dut, port)
        m.d.comb += sig.eq(AnySeq(len(sig)))
    msi_int = dut.cfg_interrupt_msi_int[0]
    sent, fail = dut.cfg_interrupt_msi_sent, dut.cfg_interrupt_msi_fail
    enable = dut.cfg_interrupt_msi_enable[0]
    # The hard IP: it answers a request (sent or fail, once) within `answer` cycles; if MSI
    # Enable goes off under it, it may never answer (the harness forgets it then).
    inflight = Signal()
    may_drop = Signal()
    age = Signal(range(answer + 2))
    m.d.comb += [Assume(~(sent & fail)), Assume(~(sent | fail) | inflight),
                 Assume(~inflight | may_drop | (age < answer) | sent | fail)]
    with m.If(msi_int):
        m.d.sync += [inflight.eq(1), may_drop.eq(0), age.eq(0)]
    with m.Elif(inflight & (sent | fail)):
        m.d.sync += inflight.eq(0)
    with m.Elif(inflight):
        m.d.sync += age.eq(age + 1)
        with m.If(~enable):
            m.d.sync += may_drop.eq(1)
        with m.If(may_drop & (age >= answer)):
            m.d.sync += inflight.eq(0)          # the IP forgot it
    # INTx: the IP answers a change with cfg_interrupt_sent, once.
    intx = dut.cfg_interrupt_int[0]
    was_intx = _past(m, intx, "was_intx")
    intx_wait = Signal()
    m.d.comb += Assume(~dut.cfg_interrupt_sent | intx_wait)
    started = _past(m, C(1), "started")
    changed = started & (intx != was_intx)
    with m.If(dut.cfg_interrupt_sent):
        m.d.sync += intx_wait.eq(0)
    with m.If(changed):
        m.d.sync += intx_wait.eq(1)
    could = _past(m, enable & dut.bus_master & ~dut.cfg_interrupt_msi_data[0], "could")
    level = _past(m, dut.irq & ~enable & ~dut.intx_disable, "level")
    failed = Signal()           # the IP failed a message: the next request asks it again
    with m.If(inflight & fail):
        m.d.sync += failed.eq(1)
    busy, orphan, waited = (_named(inner, n) for n in ("busy", "orphan", "waited"))
    return {
        "safety": lambda: [
            Assert(~(msi_int & inflight), "an MSI request while the IP may answer the last"),
            Assert(~msi_int | could, "an MSI request while MSI or BME is off, or masked"),
            Assert(~(changed & intx_wait), "an INTx change before the last was answered"),
            Assert(~(changed & intx) | level,
                   "INTx asserted while MSI is on, Interrupt Disable set, or irq low"),
            Assert(~msi_int | busy, "inv: a request is waited for"),
            Assert(~inflight | busy, "inv: the IP may answer: the shim waits"),
            Assert(~(busy & ~orphan) | (waited == 0), "inv: not yet orphaned"),
            Assert(~(inflight & orphan) | (waited <= age + 1), "inv: orphaned after the request"),
            Assert(~inflight | (age <= answer), "inv: age"),
            Assert(~(inflight & may_drop) | orphan, "inv: MSI went off under it"),
            Assert(~(busy & ~inflight & ~msi_int) | orphan, "inv: forgotten only if orphaned"),
            Assert((intx_wait | changed) == _named(inner, "waiting"), "inv: INTx wait"),
            Assert(intx == _named(inner, "asserted"), "inv: INTx"),
        ],
        "cover": lambda: [
            Cover(inflight & sent),
            Cover(failed & msi_int),
            Cover(changed & intx),
            Cover(changed & ~intx),
        ],
    }


def _credits(m, p):
    dut = NpCredits()
    inner = _elaborated(dut)
    m.submodules.dut = inner
    # The hard IP: a pulse on pcie_cq_np_req banks a credit on the next edge; it sends a
    # non-posted request only under a banked credit; the shim sees its count through a
    # register (the top registers pcie_cq_np_req_count). A request sent is on its way (in CQ,
    # in the CqBuffer) until the completer uses it or the buffer drops it.
    bank = Signal(3)
    pipe = Signal(3)
    send, drop_it, consume = AnySeq(1), AnySeq(1), AnySeq(1)
    sent = send & (bank != 0)
    taken = consume & (pipe != 0)
    m.d.sync += [bank.eq(bank + dut.req[0] - sent), pipe.eq(pipe + sent - taken)]
    m.d.comb += [dut.count.eq(_past(m, bank, "count")), dut.used.eq(taken & ~drop_it),
                 dut.dropped.eq(taken & drop_it)]
    used_once = Signal()
    with m.If(dut.used):
        m.d.sync += used_once.eq(1)
    granted = _named(inner, "np_granted")
    pulse = _named(inner, "np_pulse")
    return {
        "safety": lambda: [
            Assert(bank + pipe <= 1, "more than one non-posted credit out at once"),
            Assert(dut.req[1] == 0, "pcie_cq_np_req[1] set"),
            Assert(granted == bank + pipe + pulse, "inv: the credits the shim counts"),
            Assert(~pulse | (bank + pipe == 0), "inv: a grant only with none out"),
        ],
        "cover": lambda: [
            Cover(used_once & dut.req[0]),        # a credit used, and the next granted
            Cover(dut.dropped),
        ],
    }


def _rq(m, p):
    most = 4
    dut = USPRequester(8, cpl_timeout=3)
    inner = _elaborated(dut)
    tags, loc = inner._named_submodules["tags"]
    tags_inner = _elaborated(tags)          # its `stale` tags, for an invariant
    inner._named_submodules["tags"] = (tags_inner, loc)
    rcv, loc = inner._named_submodules["rc_receiver"]
    rcv_inner = _elaborated(rcv)            # its framing of RC, for the invariants
    inner._named_submodules["rc_receiver"] = (rcv_inner, loc)
    flr = Signal()
    m.d.comb += flr.eq(AnySeq(1))
    m.submodules.dut = ResetInserter(flr)(inner)
    req, rsp, rq, rc = dut.dma_req, dut.dma_rsp, dut.rq, dut.rc
    m.d.comb += [dut.flr.eq(flr), dut.link_reset.eq(ResetSignal()),
                 dut.host_base.eq(AnyConst(64)), dut.max_payload.eq(AnyConst(2)),
                 dut.max_read_req.eq(AnyConst(3))]
    for port in ("bus_master", "flush", "seq_num", "seq_num_valid"):
        sig = getattr(dut, port)
        m.d.comb += sig.eq(AnySeq(len(sig)))
    m.d.comb += [rsp.ready.eq(AnySeq(1)), rq.ready.eq(AnySeq(1))]
    _any_source(m, rc, "rc")
    # RC as AxisToDwords frames it (not reset by an FLR): `first` on each packet's first DWORD.
    in_rc = Signal()
    with m.If(rc.valid & rc.ready):
        m.d.sync += in_rc.eq(~rc.payload.last)
    m.d.comb += Assume(~rc.valid | (rc.payload.first == ~in_rc))
    # The core: one request at a time (a write's count + 1 beats with one header), the next
    # after its answer's last beat; a read's byte enables run from byte 0 (the core's end_be).
    _any_source(m, req, "dma_req")
    hdr = Cat(req.payload.write, req.payload.addr, req.payload.count, req.payload.tag)
    open_ = Signal()
    left = Signal(range(most + 1))
    first_hdr = Signal.like(hdr)
    took = req.valid & req.ready
    m.d.comb += [Assume(~req.valid | (req.payload.count < most)),
                 Assume(~(req.valid & ~req.payload.write) |
                        req.payload.be.matches(0b0001, 0b0011, 0b0111, 0b1111)),
                 Assume(~(req.valid & open_) | ((left != 0) & (hdr == first_hdr)))]
    with m.If(took & ~open_):
        m.d.sync += [open_.eq(1), first_hdr.eq(hdr),
                     left.eq(Mux(req.payload.write, req.payload.count, 0))]
    with m.Elif(took):
        m.d.sync += left.eq(left - 1)
    with m.If(rsp.valid & rsp.ready & rsp.payload.last | flr):
        m.d.sync += [open_.eq(0), left.eq(0)]
    # RQ as the hard IP reads it: the first beat's tuser has the byte enables, the third DWORD
    # the length and type, the fourth the tag; a write's payload follows.
    beat = Signal(range(4 + most + 2))
    first_be, last_be = Signal(4), Signal(4)
    dwc = Signal(11)
    is_read = Signal()
    moved = rq.valid & rq.ready
    with m.If(moved):
        m.d.sync += beat.eq(Mux(rq.payload.last, 0, beat + 1))
        with m.If(beat == 0):
            m.d.sync += [first_be.eq(rq.payload.user[:4]), last_be.eq(rq.payload.user[4:8])]
        with m.If(beat == 2):
            m.d.sync += [dwc.eq(rq.payload.data[:11]),
                         is_read.eq(rq.payload.data[11:15] == ReqType.MEM_READ)]
    with m.If(flr):
        m.d.sync += beat.eq(0)
    # Tags the hard IP may still complete: from a read's descriptor until a completion of it
    # says the request is completed (and is not marked discontinued at its descriptor).
    busy = Signal(TAGS)
    rc_idx = Signal(2)
    rc_data = Signal()          # the RC packet at hand is past its descriptor
    r0, r1 = Signal(32), Signal(32)
    rc_moved = rc.valid & rc.ready
    idx = Mux(rc.payload.first, 0, rc_idx)
    set_tag = Signal(TAGS)
    free_tag = Signal(TAGS)
    # (A Function Level Reset clears RQ's buffer: a TLP whose last DWORD goes then never leaves.)
    with m.If(moved & (beat == 3) & is_read & ~flr):
        m.d.comb += set_tag.bit_select(rq.payload.data[:5], 1).eq(1)
    with m.If(rc_moved & ~rc_data):
        with m.If(idx == 0):
            m.d.sync += [r0.eq(rc.payload.data), rc_idx.eq(1)]
        with m.Elif(idx == 1):
            m.d.sync += [r1.eq(rc.payload.data), rc_idx.eq(2)]
        with m.Else():
            m.d.sync += [rc_idx.eq(0), rc_data.eq(~rc.payload.last)]
            d2 = rc.payload.data
            cut = rc.payload.last & rc.payload.user[RC_DISCONTINUE]
            with m.If(r0[30] & (d2[:8] < TAGS) & ~cut):
                m.d.comb += free_tag.bit_select(d2[:5], 1).eq(1)
        with m.If(rc.payload.last & (idx != 2)):
            m.d.sync += rc_idx.eq(0)
    with m.If(rc_moved & rc_data & rc.payload.last):
        m.d.sync += rc_data.eq(0)
    m.d.sync += busy.eq((busy | set_tag) & ~free_tag)
    # RQ's sink, DwordsToAxis (two lanes or more), takes a packet's first DWORD at once: the
    # requester looks at Bus Master Enable while offering it and would withdraw it otherwise.
    m.d.comb += Assume(~(rq.valid & (beat == 0)) | rq.ready)
    held = Signal()
    prev = Signal.like(Value.cast(rq.payload))
    m.d.sync += [held.eq(rq.valid & ~rq.ready & ~flr), prev.eq(rq.payload)]
    legal_first = first_be.matches(0b1000, 0b1100, 0b1110, 0b1111)
    legal_last = last_be.matches(0b0001, 0b0011, 0b0111, 0b1111)
    return {
        "safety": lambda: [
            Assert(~held | (rq.valid & (rq.payload.as_value() == prev)),
                   "rq took back or changed a beat it offered"),
            Assert(~(moved & (beat == 3) & is_read) | rq.payload.last,
                   "a read TLP longer than its descriptor"),
            Assert(~(moved & (beat > 3) & ~is_read) | (rq.payload.last == (beat == dwc + 3)),
                   "a write TLP not as long as its descriptor says"),
            Assert(~(moved & (beat == 3)) | (dwc != 0), "a TLP of length 0"),
            Assert(~(moved & (beat == 3) & (dwc == 1)) | (last_be == 0),
                   "a 1-DWORD TLP with Last DW BE set"),
            Assert(~(moved & (beat == 3) & (dwc > 1)) | (legal_first & legal_last),
                   "a longer TLP with an end's byte enables 0 or not contiguous"),
            Assert(~(moved & (beat == 3) & is_read) | ((rq.payload.data[:8] < TAGS) &
                                                       ~busy.bit_select(rq.payload.data[:5], 1)),
                   "a read took a tag the hard IP may still complete"),
            Assert((busy & ~(tags.outstanding | _named(tags_inner, "stale"))) == 0,
                   "inv: busy tags are the table's"),
            # One request at a time: while a read waits or hands over its DWORDs, the core
            # offers nothing, so no write passes it (the lane stays idle).
            Assert(~Cat(*(inner._generated["fsm"].ongoing(x)
                          for x in ("R-START", "R-TLP", "R-WAIT", "R-SEND"))).any() |
                   (open_ & (left == 0)),
                   "inv: a read's wait without the core's read open"),
            *open_invariants(inner, open_, left, rcv.count),
            Assert(inner._generated["lane"].ongoing("L-IDLE") &
                   (_named(inner, "lane_ptr") == 0), "inv: a write passed a read"),
            *rq_invariants(inner, rcv_inner, beat, is_read, dwc, first_be, last_be,
                           in_rc, rc_idx, rc_data, r0, busy, _named(tags_inner, "stale"),
                           tags.tag_busy, most, rcv.count, tags.outstanding,
                           _named(m, "dma_req_in_held"), req.payload),
        ],
        "cover": lambda: [
            Cover(moved & (beat == 3) & ~is_read & (dwc == 2)),
            Cover(moved & (beat == 3) & is_read & (dwc == 3)),
            Cover(rsp.valid & rsp.ready & rsp.payload.last & ~rsp.payload.err),
        ],
    }


_HARNESSES = {"usp_skid": _skid, "usp_fifo": _fifo, "usp_cq": _cq, "usp_tx": _tx,
              "usp_irq": _irq, "usp_credits": _credits, "usp_rq": _rq}
