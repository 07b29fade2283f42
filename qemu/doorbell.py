"""Doorbells and interrupts in a real guest: one boot running ``vmshm_doorbell_checks``.

The guest program (``guest/vmshm_doorbell_checks.c``) prints ``WAIT <what>`` before it blocks; the host side here
rings it then, from another thread, as a host program would. Its doorbells land in the host's
``doorbells`` record; vector :data:`PING` is answered at once with a ring back, which is how the
guest times round trips. The host side is the simulated device's :class:`HostModel` or, for the
floor, a :class:`~.device.FloorDevice`: both have ``ring``, ``peer_id``, ``doorbells`` and
``on_doorbell``.
"""

import re
import statistics
import threading
import time
from dataclasses import dataclass, field

from . import image
from .boot import boot

__all__ = ["PING", "PEER_ID", "DoorbellRun", "run_doorbell_guest", "PROGRAM", "ring_cycles"]

#: The vector the host answers with a ring back.
PING = 9
#: The peer ID the host gives the device (what IVPOSITION reads).
PEER_ID = 7
#: The guest program's source.
PROGRAM = image.GUEST_DIR / "vmshm_doorbell_checks.c"
#: When the host rings after each ``WAIT`` line (seconds after it, vector).
_RINGS = {"ring": ((0.5, 0),), "poll": ((0.5, 0),), "two": ((0.2, 0), (1.2, 1))}


@dataclass
class DoorbellRun:
    """What one boot of the doorbell program left: its checks, figures and the host's record."""
    boot: object
    checks: dict = field(default_factory=dict)
    irq: dict = field(default_factory=dict)       # PCI address -> the kernel's IRQ number
    interrupts: list = field(default_factory=list)  # the function's /proc/interrupts lines
    rtt_us: dict = field(default_factory=dict)      # min, median, p90, max
    blocked_ms: float = None
    doorbells: list = field(default_factory=list)
    pings: list = field(default_factory=list)       # host: monotonic time of each PING taken
    rings: list = field(default_factory=list)       # host: monotonic time of each ring made


def run_doorbell_guest(parts, *, rounds, timeout, host=None, floor=None, backend="amaranth",
                       params=None, echo=None):
    """Boot once and run the doorbell program against ``host`` (a HostModel) or ``floor``.

    Returns a :class:`DoorbellRun`.
    """
    side = floor if floor is not None else host
    side.peer_id = PEER_ID
    run = DoorbellRun(boot=None)
    timers = []

    def ring(vector):
        run.rings.append(time.monotonic())
        side.ring(vector)

    def on_doorbell(peer, vector):
        if vector == PING:
            run.pings.append(time.monotonic())
            ring(0)

    def on_line(line):
        if echo:
            echo(line)
        word = line.split()
        if word[:1] == ["WAIT"] and len(word) > 1:
            for delay, vector in _RINGS.get(word[1], ()):
                t = threading.Timer(delay, ring, (vector,))
                t.daemon = True
                timers.append(t)
                t.start()

    side.on_doorbell = on_doorbell
    initrd = image.build_image(parts, {"doorbell_checks": PROGRAM})
    init = image.init_archive("doorbell_checks", [str(PEER_ID), str(rounds)])
    if floor is not None:
        result = boot(parts, initrd, init, timeout=timeout, device=False, floor=floor,
                      echo=on_line)
    else:
        result = boot(parts, initrd, init, timeout=timeout, params=params, backend=backend,
                      host=host, echo=on_line)
    for t in timers:
        t.cancel()
    run.boot = result
    run.doorbells = list(side.doorbells)
    for line in result.output:
        m = re.match(r"CHECK (\S+) (ok|FAIL.*)", line)
        if m:
            run.checks[m.group(1)] = m.group(2)
        m = re.match(r"IRQ (\S+) (-?\d+)", line)
        if m:
            run.irq[m.group(1)] = int(m.group(2))
        if line.startswith("INTERRUPTS "):
            run.interrupts.append(line[len("INTERRUPTS "):])
        m = re.match(r"BLOCKED (\d+) ms", line)
        if m:
            run.blocked_ms = float(m.group(1))
        m = re.match(r"RTT rounds \d+ min (\d+) median (\d+) p90 (\d+) max (\d+) us", line)
        if m:
            run.rtt_us = dict(zip(("min", "median", "p90", "max"), map(float, m.groups())))
    return run


def ring_cycles(accesses):
    """Return the simulated cycles of each host ring the server delivered while the guest idled.

    Each is from the server's wake-up to the cycle the INTx line rose (what the guest's
    interrupt controller then hears).
    """
    return [a.cycles for a in accesses if a.kind == "ring" and a.value]


def median(values):
    """Return the median of ``values``, or None if there are none."""
    return statistics.median(values) if values else None
