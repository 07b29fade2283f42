"""A checker of PG213's rules on the four user interfaces of an UltraScale+ PCIe hard IP.

cocotbext-pcie's model is looser than the hard IP: its AXI sinks take only the beats where
``tvalid`` and ``tready`` are both high, so a ``tvalid`` gap inside a packet, which the real IP
answers by nullifying the TLP, goes unseen; it never marks a TLP discontinued, so nobody sees
whether the user logic drops one; and it checks few descriptor fields. :class:`PG213Checker`
watches every clock edge of ``vmshm_usp``'s CQ, CC, RQ and RC streams and records each breach of
the rules below, written from PG213 (*UltraScale+ Devices Integrated Block for PCI Express*,
DWORD-aligned interfaces, no straddling, client tags, no extended tags) and the PCIe base
specification it follows, not from our RTL. Each violation names its rule, interface and cycle.

The rules (:data:`RULES`):

``axi-hold``
    CC, RQ: while ``tvalid`` is high and ``tready`` low, ``tdata``/``tkeep``/``tlast``/``tuser``
    hold and ``tvalid`` stays high (AXI4-Stream).
``tvalid-continuous``
    CC, RQ: ``tvalid`` stays high from a packet's first beat to its last (PG213: the core
    nullifies a TLP whose ``tvalid`` drops inside it).
``tkeep``
    CC, RQ: ``tkeep`` is contiguous from DWORD 0 and all ones on every beat but the last.
``length``
    CC, RQ: ``tlast`` comes exactly at the end of the descriptor plus the DWORD count it gives
    (a read request is its descriptor alone).
``cc-descriptor``
    CC: status SC, UR or CA; UR and CA without payload; SC with a payload of at most
    Max_Payload_Size that does not outrun the byte count; lower address within 7 bits; the
    requester ID and tag of a request still owed a completion (a discontinued request is owed
    nothing).
``rq-descriptor``
    RQ: memory read or write only; 1 to Max_Payload_Size (write) or Max_Read_Request_Size
    (read) DWORDs, not crossing 4 KiB; byte enables as PCIe allows them (last BE 0 for one
    DWORD, both non-zero for more); discontinue clear.
``rq-tag``
    RQ: a read's tag is below 32 and not owed completions (freed only by an RC completion
    with "request completed").
``bus-master``
    RQ: no request while the function's Bus Master Enable is clear.
``host-object``
    RQ: no enabled byte outside the object the host mapped (``object_range``): VMShm's own
    promise, checked on the wire.
``cq-discontinue``
    CQ: a request marked discontinued gets no completion (its write effect is for the test
    that injected it to look at).
``rc-discontinue``
    RC: no data of a discontinued completion reaches a CC completion (checked by the test
    that injects it: data is not visible here).
``intx-handshake``
    ``cfg_interrupt_int`` changes only once the change before it was answered by
    ``cfg_interrupt_sent``: an assertion is held until its message is sent, and so is a
    deassertion (PG213, legacy interrupt mode).
``intx-pending``
    ``cfg_interrupt_pending`` is high for every function whose ``cfg_interrupt_int`` is (else
    the Status register's Interrupt Status is wrong).
``msi-request``
    ``cfg_interrupt_msi_int`` has at most one bit set, is high for one cycle per request, and no
    new request comes before ``cfg_interrupt_msi_sent`` or ``cfg_interrupt_msi_fail`` answered the
    last one.
``msi-enable``
    No MSI request while the function's MSI Enable (``cfg_interrupt_msi_enable``) is clear: in
    legacy mode the interface sends only INTx messages.
``bus-master``
    (also) no MSI request while Bus Master Enable is clear: an MSI is a memory write.
``cc-meaning``
    CC: what a completion says is what its request implies (PCIe Base 2.3.1.1): the lower
    address of the first byte it returns (the request's address and first byte enables, then
    on from the bytes completed before it), and the request's traffic class and attributes
    echoed.
``rq-data``
    RQ: a write's enabled bytes are bytes the guest wrote at that offset of the window (CQ
    writes to the window BAR): the device never writes the host's memory with data nobody
    gave it.
``flr-quiet``
    No TLP begins on CC or RQ, and no interrupt request (INTx change, MSI) is made, while the
    hard IP reports a Function Level Reset in process (``cfg_flr_in_process``, PF0).
``msi-mask``
    No MSI request for a vector masked (``cfg_interrupt_msi_data`` with the function selected on
    ``cfg_interrupt_msi_select``) in that cycle and the two before: the shim sees the IP's
    outputs through a register and asks through one.
"""

from dataclasses import dataclass

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import RisingEdge

__all__ = ["RULES", "Violation", "PG213Checker", "PG213Error"]

RULES = ("axi-hold", "tvalid-continuous", "tkeep", "length", "cc-descriptor", "rq-descriptor",
         "rq-tag", "bus-master", "host-object", "cq-discontinue", "rc-discontinue",
         "intx-handshake", "intx-pending", "msi-request", "msi-enable", "cc-meaning",
         "rq-data", "flr-quiet", "msi-mask")

#: ``tuser`` bits below 512 bits (PG213, "Completer Request", "Requester Completion", ...).
CQ_DISCONTINUE = 41
RC_DISCONTINUE = 42
CC_DISCONTINUE = 0
RQ_DISCONTINUE = 11

_MEM_READ, _MEM_WRITE = 0b0000, 0b0001
_SC, _UR, _CA = 0, 1, 4
_POSTED_CQ = {0b0001, 0b1100, 0b1101, 0b1110, 0b1111}


class PG213Error(AssertionError):
    """The device broke a rule of PG213: the first violation, and how many there were."""


@dataclass
class Violation:
    """One breach of a rule: which, where, when and what was seen."""
    rule: str
    interface: str
    cycle: int
    text: str

    def __str__(self):
        return f"PG213 {self.rule} on {self.interface} at cycle {self.cycle}: {self.text}"


class _Stream:
    def __init__(self, dut, prefix, name):
        self.name = name
        self.sig = {s: getattr(dut, f"{prefix}_{s}") for s in
                    ("tvalid", "tready", "tdata", "tkeep", "tlast", "tuser")}
        self.lanes = len(self.sig["tkeep"])
        self.prev = None            # (valid, ready, data, keep, last, user) of the last cycle
        self.in_packet = False
        self.dwords = []
        self.user0 = 0
        self.overrun = False

    def sample(self):
        s = self.sig
        valid = int(s["tvalid"].value)
        ready = int(s["tready"].value)
        if not valid:
            return (0, ready, None, None, None, None)
        return (1, ready, int(s["tdata"].value), int(s["tkeep"].value), int(s["tlast"].value),
                int(s["tuser"].value))


class _Interrupts:
    """What the checker remembers of the interrupt interface between cycles."""

    def __init__(self, dut):
        self.name = "cfg_interrupt"
        self.sig = {s: getattr(dut, f"cfg_interrupt_{s}") for s in
                    ("int", "pending", "sent", "msi_enable", "msi_int", "msi_sent", "msi_fail",
                     "msi_function_number", "msi_data", "msi_select")}
        self.reset()

    def reset(self):
        self.intx = 0               # the last value of cfg_interrupt_int
        self.intx_waiting = None    # cycle of a change not yet answered by sent
        self.msi_prev = 0
        self.msi_waiting = None     # cycle of an MSI request not yet answered
        self.mask_prev = [0, 0]     # cfg_interrupt_msi_data of the two cycles before


def _contiguous(be):
    return be in (0x1, 0x3, 0x7, 0xF, 0x2, 0x6, 0xE, 0x4, 0xC, 0x8)


class PG213Checker:
    """Watch ``vmshm_usp``'s four hard-IP streams and record every breach of :data:`RULES`.

    Parameters
    ----------
    dut
        The ``vmshm_usp`` top, ports named as the hard IP's user interface.
    period_ns : float
        The user clock's period, to count cycles from simulated time.
    object_range : callable
        Returns ``(bus address, size)`` of the host object while one is mapped, else ``None``.
    window_bar : int or None
        Index of the window's BAR, whose offsets are the object's: for ``rq-data``.
    """

    def __init__(self, dut, period_ns, object_range=lambda: None, window_bar=None):
        self.dut = dut
        self._window_bar = window_bar
        self.guest_wrote = {}       # object offset -> byte values the guest wrote there, in order
        self._period = period_ns
        self._object_range = object_range
        self.violations = []
        self.counts = {"cq": 0, "cc": 0, "rq": 0, "rc": 0, "intx": 0, "msi": 0}
        self.cq = _Stream(dut, "s_axis_cq", "CQ")
        self.cc = _Stream(dut, "m_axis_cc", "CC")
        self.rq = _Stream(dut, "m_axis_rq", "RQ")
        self.rc = _Stream(dut, "s_axis_rc", "RC")
        self.irq = _Interrupts(dut)
        self.owed_cq = {}           # (requester id, tag) -> bytes still to complete, or None
        self.discontinued = {}      # (requester id, tag) of dropped requests -> cycle
        self.owed_tags = set()      # RQ read tags not yet completed
        self._task = None

    # -- running --------------------------------------------------------------------------------

    def start(self):
        self._task = cocotb.start_soon(self._run())
        return self

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _flr(self):
        return int(self.dut.cfg_flr_in_process.value) & 1

    def cycle(self):
        return int(get_sim_time("ns") // self._period)

    def report(self, rule, stream, text):
        self.violations.append(Violation(rule, stream.name, self.cycle(), text))

    def check(self):
        """Raise :exc:`PG213Error` with the first violation if there was any."""
        if self.violations:
            more = len(self.violations) - 1
            rules = sorted({v.rule for v in self.violations})
            raise PG213Error(f"{self.violations[0]}" +
                             (f" (and {more} more: {', '.join(rules)})" if more else ""))

    async def _run(self):
        clk = RisingEdge(self.dut.user_clk)
        while True:
            await clk
            if int(self.dut.user_reset.value):
                for s in (self.cq, self.cc, self.rq, self.rc):
                    s.prev, s.in_packet, s.dwords = None, False, []
                self.irq.reset()
                continue
            for stream, is_source in ((self.cq, False), (self.cc, True), (self.rq, True),
                                      (self.rc, False)):
                self._step(stream, is_source)
            self._interrupts(self.irq)

    # -- the interrupt interface ----------------------------------------------------------------

    def _interrupts(self, s):
        v = {k: int(sig.value) for k, sig in s.sig.items()}
        now = self.cycle()
        flr = self._flr()
        if flr and (v["int"] != s.intx or v["msi_int"]):
            self.report("flr-quiet", s, "an interrupt request while a Function Level Reset is "
                                        "in process")
        # INTx: a change answered in this cycle frees the next one from the cycle after.
        answered = s.intx_waiting is not None and v["sent"]
        if v["int"] != s.intx:
            if s.intx_waiting is not None:
                self.report("intx-handshake", s, f"cfg_interrupt_int {s.intx:#x} -> "
                                                 f"{v['int']:#x} before the change at cycle "
                                                 f"{s.intx_waiting} was sent")
            s.intx_waiting = now
            s.intx = v["int"]
            self.counts["intx"] += 1
        elif answered:
            s.intx_waiting = None
        if v["int"] & ~v["pending"] & 0xF:
            self.report("intx-pending", s, f"cfg_interrupt_int {v['int']:#x} with "
                                           f"cfg_interrupt_pending {v['pending']:#x}")
        # MSI: one-cycle requests, one at a time, only where MSI and bus mastering are on.
        if s.msi_waiting is not None and (v["msi_sent"] or v["msi_fail"]):
            s.msi_waiting = None
        msi = v["msi_int"]
        if msi and msi & (msi - 1):
            self.report("msi-request", s, f"cfg_interrupt_msi_int {msi:#x}: more than one vector")
        if msi and s.msi_prev:
            self.report("msi-request", s, "cfg_interrupt_msi_int high two cycles in a row")
        elif msi:
            if s.msi_waiting is not None:
                self.report("msi-request", s, f"a new request before the one at cycle "
                                              f"{s.msi_waiting} was sent or failed")
            fn = v["msi_function_number"]
            if not v["msi_enable"] >> fn & 1:
                self.report("msi-enable", s, f"an MSI request for function {fn} with MSI "
                                             f"Enable clear")
            masked = v["msi_data"] & s.mask_prev[0] & s.mask_prev[1] & msi \
                if v["msi_select"] == fn else 0
            if masked:
                self.report("msi-mask", s, f"an MSI request for vector {masked.bit_length() - 1} "
                                           f"of function {fn}, which is masked")
            status = int(self.dut.cfg_function_status.value)
            if not status >> (4 * fn + 2) & 1:
                self.report("bus-master", s, f"an MSI request for function {fn} with Bus "
                                             f"Master Enable clear")
            s.msi_waiting = now
            self.counts["msi"] += 1
        s.msi_prev = msi
        s.mask_prev = [v["msi_data"] if v["msi_select"] == v["msi_function_number"] else 0,
                       s.mask_prev[0]]

    # -- per beat -------------------------------------------------------------------------------

    def _step(self, s, is_source):
        now = s.sample()
        valid, ready, data, keep, last, user = now
        prev = s.prev
        s.prev = now
        if is_source:
            if prev is not None and prev[0] and not prev[1]:
                if not valid:
                    self.report("axi-hold", s, "tvalid dropped before the beat was taken")
                elif now[2:] != prev[2:]:
                    self.report("axi-hold", s, "the beat changed while tready was low")
            if s.in_packet and not valid and not (prev is not None and prev[0] and not prev[1]):
                self.report("tvalid-continuous", s,
                            f"tvalid low inside a packet after {len(s.dwords)} DWORDs")
        if not (valid and ready):
            return
        if is_source:
            n = bin(keep).count("1")
            if keep != (1 << n) - 1:
                self.report("tkeep", s, f"tkeep {keep:#x} is not contiguous from DWORD 0")
            elif not last and n != s.lanes:
                self.report("tkeep", s, f"tkeep {keep:#x} on a beat that is not the last")
        else:
            n = bin(keep).count("1") if keep else s.lanes
        if not s.in_packet:
            s.user0 = user
            s.dwords = []
            s.overrun = False
            if is_source and self._flr():
                self.report("flr-quiet", s, "a TLP begins while a Function Level Reset is in "
                                            "process")
        for lane in range(n):
            s.dwords.append((data >> (32 * lane)) & 0xFFFF_FFFF)
        s.in_packet = not last
        handler = {"CQ": self._cq, "CC": self._cc, "RQ": self._rq, "RC": self._rc}[s.name]
        handler(s, user, last)

    # -- completer request (the IP's side; what the device must do about it) ------------------

    def _cq(self, s, user, last):
        if not last:
            return
        self.counts["cq"] += 1
        d = s.dwords
        if len(d) < 4:
            return
        req_type = (d[2] >> 11) & 0xF
        key = (d[2] >> 16, d[3] & 0xFF)
        dwc = d[2] & 0x7FF
        first_be, last_be = s.user0 & 0xF, (s.user0 >> 4) & 0xF
        address = (d[1] << 32) | (d[0] & 0xFFFF_FFFC)
        cut = user >> CQ_DISCONTINUE & 1
        if req_type in _POSTED_CQ:
            bar, aperture = (d[3] >> 16) & 7, (d[3] >> 19) & 0x3F
            if req_type == _MEM_WRITE and not cut and bar == self._window_bar:
                offset = address & ((1 << aperture) - 1)
                for at, byte in _enabled_bytes(offset, d[4:4 + dwc], first_be, last_be):
                    self.guest_wrote.setdefault(at, []).append(byte)
            return
        if cut:
            self.discontinued[key] = self.cycle()
            return
        self.discontinued.pop(key, None)
        tc_attr = (d[3] >> 25) & 0x3F
        if req_type == _MEM_READ:
            if dwc == 1:
                nbytes = 1 if first_be == 0 else 4 - _tz(first_be) - _lz(first_be)
            else:
                nbytes = 4 * dwc - _tz(first_be) - _lz(last_be)
            first = address + (_tz(first_be) if first_be else 0)
            self.owed_cq[key] = _Owed(nbytes, tc_attr, first, nbytes)
        else:
            self.owed_cq[key] = _Owed(None, tc_attr)

    # -- completer completion ---------------------------------------------------------------------

    def _check_length(self, s, expected, last):
        if expected is None:
            return
        if len(s.dwords) > expected and not s.overrun:
            s.overrun = True
            self.report("length", s, f"{len(s.dwords)} DWORDs and no tlast; the descriptor "
                                     f"gives {expected}")
        elif last and len(s.dwords) < expected:
            self.report("length", s, f"tlast after {len(s.dwords)} DWORDs; the descriptor "
                                     f"gives {expected}")

    def _cc(self, s, user, last):
        d = s.dwords
        if len(d) < 3:
            if last:
                self.report("length", s, f"a packet of {len(d)} DWORDs, shorter than a "
                                         f"descriptor")
            return
        dwc = d[1] & 0x7FF
        self._check_length(s, 3 + dwc, last)
        if not last:
            return
        self.counts["cc"] += 1
        la, bc = d[0] & 0x7F, (d[0] >> 16) & 0x1FFF
        status, poisoned = (d[1] >> 11) & 7, (d[1] >> 14) & 1
        key = (d[1] >> 16, d[2] & 0xFF)
        mps = 128 << int(self.dut.cfg_max_payload.value)
        if (d[0] >> 7) & 1 or (d[0] >> 8) & 3 or (d[0] >> 30) & 3:
            self.report("cc-descriptor", s, f"reserved or address-type bits set in DW0 "
                                            f"{d[0]:#010x}")
        if status not in (_SC, _UR, _CA):
            self.report("cc-descriptor", s, f"completion status {status}")
        if key in self.discontinued:
            self.report("cq-discontinue", s, f"a completion for requester {key[0]:#06x} tag "
                                             f"{key[1]} whose request was discontinued at cycle "
                                             f"{self.discontinued.pop(key)}")
            return
        if key not in self.owed_cq:
            self.report("cc-descriptor", s, f"a completion for requester {key[0]:#06x} tag "
                                            f"{key[1]} that is owed none")
            return
        request = self.owed_cq[key]
        owed = request.nbytes
        if (d[2] >> 25) & 0x3F != request.tc_attr:
            self.report("cc-meaning", s, f"traffic class and attributes {(d[2] >> 25) & 0x3F:#x}, "
                                         f"the request's {request.tc_attr:#x}")
        if status == _SC and owed is not None:
            expected = (request.first + request.total - owed) & 0x7F
            if la != expected:
                self.report("cc-meaning", s, f"lower address {la:#x}; the bytes it returns "
                                             f"begin at {expected:#x}")
        if status != _SC:
            if dwc:
                self.report("cc-descriptor", s, f"status {status} with {dwc} DWORDs of payload")
            del self.owed_cq[key]
            return
        if owed is None:
            del self.owed_cq[key]        # a non-read request's completion
            return
        if dwc == 0 or 4 * dwc > mps:
            self.report("cc-descriptor", s, f"{dwc} DWORDs of payload with Max_Payload_Size "
                                            f"{mps}")
        if (bc or 4096) != owed:
            self.report("cc-descriptor", s, f"byte count {bc}, {owed} bytes still owed")
        covers = 4 * dwc - (la & 3)
        if covers - owed >= 4:
            self.report("cc-descriptor", s, f"{dwc} DWORDs from lower address {la:#x} outrun "
                                            f"the {owed} bytes owed")
        rest = owed - covers
        if rest <= 0:
            del self.owed_cq[key]
        else:
            request.nbytes = rest

    # -- requester request ------------------------------------------------------------------------

    def _rq(self, s, user, last):
        d = s.dwords
        if len(d) < 4:
            if last:
                self.report("length", s, f"a packet of {len(d)} DWORDs, shorter than a "
                                         f"descriptor")
            return
        req_type = (d[2] >> 11) & 0xF
        dwc = d[2] & 0x7FF
        is_write = req_type == _MEM_WRITE
        self._check_length(s, 4 + dwc if is_write else 4, last)
        if not last:
            return
        self.counts["rq"] += 1
        first_be, last_be = s.user0 & 0xF, (s.user0 >> 4) & 0xF
        address = (d[1] << 32) | (d[0] & 0xFFFF_FFFC)
        status = int(self.dut.cfg_function_status.value)
        if not status >> 2 & 1:
            self.report("bus-master", s, f"a {'write' if is_write else 'read'} of {dwc} DWORDs "
                                         f"at {address:#x} with Bus Master Enable clear")
        if req_type not in (_MEM_READ, _MEM_WRITE):
            self.report("rq-descriptor", s, f"request type {req_type:#06b}")
            return
        if user >> RQ_DISCONTINUE & 1:
            self.report("rq-descriptor", s, "discontinue set")
        limit = 128 << int(self.dut.cfg_max_payload.value) if is_write else \
            128 << int(self.dut.cfg_max_read_req.value)
        if dwc == 0 or 4 * dwc > limit:
            self.report("rq-descriptor", s, f"{dwc} DWORDs with a limit of {limit} bytes")
        if (address & 0xFFF) + 4 * dwc > 0x1000:
            self.report("rq-descriptor", s, f"{dwc} DWORDs at {address:#x} cross 4 KiB")
        zero_len_read = not is_write and dwc == 1 and first_be == 0 and last_be == 0
        if dwc == 1 and last_be:
            self.report("rq-descriptor", s, f"last BE {last_be:#x} on a one-DWORD request")
        if dwc > 1 and (not first_be or not last_be):
            self.report("rq-descriptor", s, f"first BE {first_be:#x}, last BE {last_be:#x} "
                                            f"on a {dwc}-DWORD request")
        if dwc > 2 and not (_contiguous(first_be) and first_be & 8 and _contiguous(last_be)
                            and last_be & 1):
            self.report("rq-descriptor", s, f"byte enables {first_be:#x}/{last_be:#x} not "
                                            f"contiguous on a {dwc}-DWORD request")
        if not is_write:
            tag = d[3] & 0xFF
            if tag >= 32:
                self.report("rq-tag", s, f"tag {tag} with extended tags off")
            elif tag in self.owed_tags:
                self.report("rq-tag", s, f"a read with tag {tag}, still owed completions")
            self.owed_tags.add(tag)
        if not zero_len_read:
            self._check_object(s, address, dwc, first_be, last_be)
        if is_write:
            self._check_data(s, address, d[4:4 + dwc], first_be, last_be)

    def _check_data(self, s, address, payload, first_be, last_be):
        span = self._object_range()
        if span is None or self._window_bar is None:
            return
        for at, byte in _enabled_bytes(address - span[0], payload, first_be, last_be):
            wrote = self.guest_wrote.get(at, [])
            if byte not in wrote:
                self.report("rq-data", s, f"byte {byte:#04x} written at object offset {at:#x}, "
                                          f"where the guest wrote "
                                          f"{'nothing' if not wrote else wrote[-4:]}")
                return
            del wrote[:wrote.index(byte) + 1]

    def _check_object(self, s, address, dwc, first_be, last_be):
        span = self._object_range()
        bes = [first_be] + [0xF] * (dwc - 2) + ([last_be] if dwc > 1 else [])
        touched = [address + 4 * i + b for i, be in enumerate(bes) for b in range(4)
                   if be >> b & 1]
        if not touched:
            return
        lo, hi = min(touched), max(touched)
        if span is None:
            self.report("host-object", s, f"bytes {lo:#x}..{hi:#x} touched with no object "
                                          f"mapped")
        elif lo < span[0] or hi >= span[0] + span[1]:
            self.report("host-object", s, f"bytes {lo:#x}..{hi:#x} outside the object at "
                                          f"{span[0]:#x} of {span[1]} bytes")

    # -- requester completion ---------------------------------------------------------------------

    def _rc(self, s, user, last):
        if not last:
            return
        self.counts["rc"] += 1
        d = s.dwords
        if len(d) < 3:
            return
        if d[0] >> 30 & 1 and not user >> RC_DISCONTINUE & 1:
            self.owed_tags.discard(d[2] & 0xFF)


@dataclass
class _Owed:
    """What a non-posted request is owed: bytes still to complete (``None``: not a read), its
    traffic class and attributes, its first byte's address and its byte count."""
    nbytes: int
    tc_attr: int
    first: int = 0
    total: int = 0


def _enabled_bytes(offset, dwords, first_be, last_be):
    """Yield ``(offset, byte)`` of each byte a write of ``dwords`` at ``offset`` enables."""
    n = len(dwords)
    for i, dword in enumerate(dwords):
        be = first_be if i == 0 else last_be if i == n - 1 else 0xF
        for b in range(4):
            if be >> b & 1:
                yield offset + 4 * i + b, dword >> (8 * b) & 0xFF


def _tz(be):
    for i in range(4):
        if be >> i & 1:
            return i
    return 3


def _lz(be):
    for i in range(4):
        if be >> (3 - i) & 1:
            return i
    return 3
