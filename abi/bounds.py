"""The most cycles any guest request to VMShm can take, whatever the host does.

These are the bounds docs/timing.md states ("The bound on every guest request"): from the edge
after which the guest offers its request on the PCI front end to the edge that moves its last
completion beat, with a guest that takes completions at once, for a host that may do anything on
its side (never take a beat, stop half-way, never answer, answer late, twice or unasked).
``tests/test_wedge.py`` checks them in simulation against misbehaving hosts, and the formal
properties in ``formal/`` prove them for the core at small sizes (:func:`core_bound`).
"""

__all__ = ["FRONT_END_CYCLES", "core_bound", "request_bound", "flr_clear_cycles"]

#: Cycles the soft PCI front end adds in front of the core: address decode, then the forward.
FRONT_END_CYCLES = 2


def _check(host_timeout, beats):
    if isinstance(host_timeout, bool) or not isinstance(host_timeout, int) or host_timeout < 1:
        raise ValueError(f"host_timeout must be a positive number of cycles (0 waits for ever "
                         f"and has no bound), not {host_timeout!r}")
    if isinstance(beats, bool) or not isinstance(beats, int) or not 1 <= beats <= 256:
        raise ValueError(f"beats must be an integer from 1 to 256, not {beats!r}")


def core_bound(kind, host_timeout, *, beats=1, name_bytes=1, data_width=32, doorbell=False):
    """Return the most cycles the core takes for one request, from the edge that takes its
    first beat to the edge that moves its last completion beat.

    Parameters
    ----------
    kind : str
        ``"open"`` (a read of OPEN), ``"close"`` (a read of CLOSE), ``"read"`` or ``"write"``
        (a window burst), ``"pass"`` (a window write passing a waiting window read: its
        passage, not counting its completion), ``"reg-read"`` or ``"reg-write"`` (registers or
        the name buffer).
    host_timeout : int
        ``T``, the core's ``host_timeout`` (not 0).
    beats : int
        ``N``, beats of the burst.
    name_bytes : int
        ``B``, bytes OPEN streams (the name and its NUL; at most the name buffer's size).
    data_width : int
        32 or 64.
    doorbell : bool
        For ``"reg-write"``: the burst may write DOORBELL while the host has not taken the
        previous doorbell; it then waits up to ``T`` cycles once (ABI 1.2).
    """
    _check(host_timeout, beats)
    t, n = host_timeout, beats
    if kind == "open":
        words = -(-name_bytes // (data_width // 8))
        # Waiting for owed beats and a late answer, the name stream and the answer all run on
        # one timer; a host that takes every byte in time is never cut off, hence + B + W.
        return t + name_bytes + words + 7
    if kind == "close":
        return t + 6
    if kind == "read":
        # The request beat and each answer beat wait up to T + 1 cycles each; then the beats
        # not answered go out as all ones, the first of them in a cycle of its own.
        return (n + 1) * (t + 1) + 1
    if kind == "write":
        # Each request beat and the answer wait up to T + 1; one cycle to choose, one to ack.
        return (n + 1) * (t + 1) + 2
    if kind == "pass":
        # A window write passing a waiting read (a PCIe front end's, issue 22): from the edge
        # that hands it over to the edge that moves its last beat or gives up; each beat waits
        # up to T + 1, and no acknowledgement is waited for (it is posted). The read it passes
        # waits at most this, and the cycle of the write's completion, longer per answer beat.
        return n * (t + 1)
    if kind == "reg-read":
        return 2 * n
    if kind == "reg-write":
        return n + 2 + (t if doorbell else 0)
    raise ValueError(f"kind must be open, close, read, write, pass, reg-read or reg-write, "
                     f"not {kind!r}")


def request_bound(kind, host_timeout, **kwargs):
    """Return :func:`core_bound` plus what the soft PCI front end adds (a guest's view)."""
    return FRONT_END_CYCLES + core_bound(kind, host_timeout, **kwargs)


def flr_clear_cycles(name_size, data_width=32):
    """Return the cycles a Function Level Reset's clearing of the name RAM takes (one word a
    cycle, ``flr_busy`` high): a request the core takes meanwhile waits at most this much longer
    than its bound."""
    return name_size // (data_width // 8)
