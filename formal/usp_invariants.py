"""The invariants that :func:`vmshm.formal.usp._rq` states for k-induction on the requester.

Each ties a tracker of the harness (the RQ beat at hand, the RC descriptor DWORD at hand, the
core's request open) to the requester's own state, read by name; each is an ``Assert``, so it is
checked with the properties. docs/formal.md says how they close the proof.
"""

from amaranth.hdl import Assert, Cat

from .components import signal_named as _named

__all__ = ["open_invariants", "rq_invariants"]


def open_invariants(rq_inner, open_, left, count):
    """Return invariants tying the harness's core (a request open, its write beats left) to the
    requester's state: nothing open while it idles or flushes, a write's beats counted by its
    buffer pointer while collected, all of them taken once it goes out."""
    s, ptr = rq_inner._generated["fsm"], _named(rq_inner, "ptr")

    def any_of(*states):
        return Cat(*(s.ongoing(x) for x in states)).any()
    return [
        Assert(~any_of("IDLE", "R-DONE", "F-TLP", "F-WAIT") | ~open_,
               "inv: a request open while the requester has none"),
        Assert(~s.ongoing("W-COLLECT") | ((open_ == (ptr != 0)) &
                                          (~open_ | (left + ptr == count + 1))),
               "inv: a write's beats collected do not match the core's"),
        Assert(~any_of("W-NEXT", "W-TLP", "W-DATA", "W-SEQ", "W-ACK", "R-START", "R-TLP",
                       "R-WAIT", "R-SEND") | (open_ & (left == 0)),
               "inv: a request at hand the core has not sent whole"),
    ]


def rq_invariants(rq_inner, rcv, beat, is_read, dwc, first_be, last_be, in_rc, rc_idx,
                   rc_data, r0, busy, stale, tag_busy, most, rcv_count, outstanding,
                   req_held, req):
    """Return invariants tying the harness's trackers of RQ (the beat of the TLP at hand, its
    type, length and byte enables) and of RC (the descriptor DWORD at hand) to the requester's
    state machines and to its RC receiver's framing."""
    s, lane = rq_inner._generated["fsm"], rq_inner._generated["lane"]
    n = {k: _named(rq_inner, k) for k in ("desc_idx", "tlp_rem", "lane_desc_idx", "lane_ptr",
                                          "is_write")}
    tlp_len, tfb, tlb = (_named(rq_inner, k) for k in ("tlp_len", "tlp_first_be",
                                                         "tlp_last_be"))
    rr = {k: _named(rcv, k) for k in ("rc_idx", "r0", "in_data", "rc_release",
                                      "rc_tag", "rc_known", "current", "rc_done")}
    q = {k: _named(rq_inner, k) for k in ("rem", "ptr", "first_be", "last_be", "ragged",
                                          "flushing")}

    def any_of(fsm, *states):
        return Cat(*(fsm.ongoing(x) for x in states)).any()
    q["count"] = rcv_count          # the request's, as the receiver is given it
    legal_first = q["first_be"].matches(0b1000, 0b1100, 0b1110, 0b1111)
    legal_last = q["last_be"].matches(0b0001, 0b0011, 0b0111, 0b1111)
    tlps = s.ongoing("W-NEXT") | s.ongoing("W-TLP") | s.ongoing("W-DATA") | s.ongoing("R-TLP")
    sending = s.ongoing("W-TLP") | s.ongoing("R-TLP") | s.ongoing("F-TLP")
    reading = s.ongoing("IDLE") | s.ongoing("R-WAIT") | s.ongoing("R-SEND") | s.ongoing("R-DONE")
    return [
        # RQ: the beat at hand is the descriptor DWORD or payload DWORD the requester offers.
        Assert(reading | (lane.ongoing("L-IDLE") & (n["lane_ptr"] == 0)),
               "inv: the lane sends only while a read waits"),
        Assert(~sending | (beat == n["desc_idx"]), "inv: RQ beat is the descriptor's DWORD"),
        Assert(sending | (n["desc_idx"] == 0), "inv: a descriptor begun outside its state"),
        Assert(~s.ongoing("W-DATA") | (~is_read & (n["tlp_rem"] >= 1) &
                                       (beat + n["tlp_rem"] == dwc + 4)),
               "inv: RQ beat is the write's DWORD"),
        # The lane's TLP is built from the core's beat, which it holds (not taken) meanwhile.
        Assert(lane.ongoing("L-IDLE") | req_held, "inv: the lane's beat not held"),
        # IDLE latched a write without taking its first beat: until W-COLLECT takes it, that
        # beat stays on offer unchanged, and nothing of the write is flagged yet.
        Assert(~(s.ongoing("W-COLLECT") & (q["ptr"] == 0)) |
               (req_held & req.write & (req.count == q["count"]) & ~q["ragged"]),
               "inv: a write's first beat not the one IDLE latched"),
        Assert(~lane.ongoing("L-DESC") | (beat == n["lane_desc_idx"]),
               "inv: RQ beat is the lane's descriptor DWORD"),
        Assert(~(lane.ongoing("L-DESC") & (n["lane_desc_idx"] == 3)) | ((dwc == 1) & ~is_read),
               "inv: the lane's descriptor is not a 1-DWORD write's"),
        Assert(n["lane_ptr"] < most, "inv: the lane past the core's burst"),
        Assert(~lane.ongoing("L-DATA") | ((beat == 4) & (dwc == 1) & ~is_read),
               "inv: RQ beat is the lane's DWORD"),
        Assert(sending | s.ongoing("W-DATA") | lane.ongoing("L-DESC") | lane.ongoing("L-DATA") |
               (beat == 0), "inv: an RQ packet under way that nothing sends"),
        Assert(~(sending & (n["desc_idx"] == 3)) | ((is_read == ~n["is_write"]) &
                                                    (dwc == tlp_len)),
               "inv: the descriptor's type and length are the TLP's"),
        Assert(~(sending & (n["desc_idx"] != 0)) | ((first_be == tfb) & (last_be == tlb)),
               "inv: the byte enables are the TLP's"),
        # RC: the receiver parses what the harness parses, an FLR or not (its place in RC is
        # outside the function's reset, as AxisToDwords's framing is).
        Assert(in_rc | ((rc_idx == 0) & ~rc_data), "inv: RC parsed outside a packet"),
        Assert((rr["rc_idx"] == rc_idx) & (rr["in_data"] == rc_data) &
               ((rc_idx == 0) | (rr["r0"] == r0)),
               "inv: the receiver parses RC as the harness does"),
        Assert((rc_idx != 3) & (rr["rc_idx"] != 3) & (~rc_data | (rc_idx == 0)),
               "inv: RC descriptor index out of range"),
        # The request at hand is one the core may send: at most `most` DWORDs, a read's byte
        # enables from byte 0, a write's ends contiguous unless it goes DWORD by DWORD.
        Assert(q["count"] < most, "inv: the request at hand is longer than the core sends"),
        Assert(~tlps | (q["rem"] <= q["count"] + 1), "inv: more DWORDs to send than asked"),
        Assert(~s.ongoing("W-DATA") | (n["tlp_rem"] <= dwc), "inv: a write TLP overrun"),
        Assert(~(s.ongoing("R-START") | s.ongoing("R-TLP")) | legal_last,
               "inv: a read's last byte enables not from byte 0"),
        Assert(~(tlps & n["is_write"] & ~q["ragged"] & (q["count"] != 0)) |
               (legal_first & legal_last), "inv: a write sent whole with ends not contiguous"),
        Assert(~(s.ongoing("W-COLLECT") & ~q["ragged"] & (q["ptr"] != 0) & (q["count"] != 0)) |
               legal_first, "inv: a write collected whole with a first DWORD not contiguous"),
        # The state machine's states match the request's kind and its counts.
        Assert(~any_of(s, "R-START", "R-TLP", "R-WAIT", "R-SEND", "R-DONE", "F-TLP",
                       "F-WAIT") | ~n["is_write"], "inv: a read's state with a write at hand"),
        Assert(~any_of(s, "W-COLLECT", "W-NEXT", "W-TLP", "W-DATA", "W-SEQ") | n["is_write"],
               "inv: a write's state with a read at hand"),
        Assert(~any_of(s, "F-TLP", "F-WAIT") | q["flushing"], "inv: a flush not flagged"),
        Assert(~s.ongoing("W-NEXT") | q["ragged"], "inv: DWORD by DWORD, not flagged ragged"),
        Assert(~q["flushing"] | any_of(s, "F-TLP", "F-WAIT", "IDLE"), "inv: a flush outside F-*"),
        Assert(~any_of(s, "W-NEXT", "W-TLP") | ((q["ptr"] + q["rem"] == q["count"] + 1) &
                                                (q["rem"] != 0)),
               "inv: a write's DWORDs sent and to send do not add up"),
        Assert(~s.ongoing("W-DATA") | (q["ptr"] + n["tlp_rem"] + q["rem"] == q["count"] + 1),
               "inv: a write's DWORDs sent and to send do not add up"),
        Assert(~any_of(s, "R-START", "R-TLP") | (q["ptr"] == 0), "inv: a read hands over early"),
        Assert(~s.ongoing("R-TLP") | (q["rem"] != 0), "inv: a read's TLP with nothing to ask"),
        Assert((beat < 3) | ((dwc >= 1) & (dwc <= most)), "inv: a TLP longer than a request"),
        Assert(~any_of(s, "R-WAIT", "R-SEND") | (q["ptr"] <= q["count"]),
               "inv: a read hands over more than asked"),
        Assert(~(lane.ongoing("L-DESC") & (n["lane_desc_idx"] != 0)) | (last_be == 0),
               "inv: the lane's 1-DWORD TLP has Last DW BE"),
        # A read's descriptor, once begun, goes under a free tag.
        Assert(~((s.ongoing("R-TLP") | s.ongoing("F-TLP")) & (n["desc_idx"] != 0)) | ~tag_busy,
               "inv: a read's descriptor under a busy tag"),
        # A completion of a tag the read waited on keeps its tag out of use until it ends.
        Assert(~rr["rc_release"] | rr["rc_known"], "inv: a tag released that was not known"),
        Assert(~(rr["in_data"] & rr["rc_known"]) |
               (outstanding | stale).bit_select(rr["rc_tag"], 1),
               "inv: the completion at hand's tag is free"),
        # The buffer is written only for the read at hand: a completion's data goes in while its
        # tag is outstanding, and tags are outstanding only in a read's (or flush's) states,
        # so no row changes under a write collected or sent.
        Assert(~(rr["in_data"] & rr["current"]) | outstanding.bit_select(rr["rc_tag"], 1),
               "inv: a completion writes for a read that is over"),
        Assert((outstanding == 0) | any_of(s, "R-TLP", "R-WAIT", "R-SEND", "R-DONE", "F-WAIT"),
               "inv: a tag outstanding outside a read"),
        # A completion whose tag is released at its end either said it completed the request
        # (the harness freed the tag at its descriptor) or failed and parked its tag.
        Assert(~(rr["in_data"] & rr["rc_release"] & busy.bit_select(rr["rc_tag"], 1)) |
               stale.bit_select(rr["rc_tag"], 1),
               "inv: a tag to release at a completion's end the hard IP may still complete"),
        # A completion that said it completed its request frees its tag at its end (its read may
        # have ended meanwhile): the hard IP is done with that tag since its descriptor.
        # (An FLR since its descriptor leaves it unknown, its tag stale.)
        Assert(~(rr["in_data"] & rr["rc_done"]) |
               (~busy.bit_select(rr["rc_tag"], 1) &
                (outstanding | stale).bit_select(rr["rc_tag"], 1)),
               "inv: a tag freed at a completion's end the hard IP may still complete"),
    ]
