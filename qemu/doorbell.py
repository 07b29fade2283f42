"""Doorbells and interrupts in a real guest: one boot running ``vmshm_doorbell_checks``.

The guest program (``guest/vmshm_doorbell_checks.c``) prints ``WAIT <what>`` before it blocks;
the host side here rings it then, from another thread, as a host program would. Its doorbells
land in the host's ``doorbells`` record; vector :data:`PING` is answered at once with a ring
back, which is how the guest times round trips. The host side is the simulated device's
:class:`HostModel` or, for the floor, a :class:`~.device.FloorDevice`: both have ``ring``,
``peer_id``, ``doorbells`` and ``on_doorbell``.
"""

import re
import statistics
import threading
import time
from dataclasses import dataclass, field

from . import image
from .boot import boot

__all__ = ["PING", "PEER_ID", "DoorbellRun", "run_doorbell_guest", "PROGRAM", "ring_cycles",
           "median", "doorbell_write_cycles"]

#: The vector the host answers with a ring back.
PING = 9
#: The peer ID the host gives the device (what IVPOSITION reads).
PEER_ID = 7
#: The guest program's source.
PROGRAM = image.GUEST_DIR / "vmshm_doorbell_checks.c"
#: What the kernel says of an interrupt line that fires with nobody to claim it.
_TROUBLE = re.compile(r"nobody cared|Disabling IRQ|spurious|BUG:|Oops|Call Trace")
#: When the host rings after each ``WAIT`` line (seconds after it, vector).
_RINGS = {"ring": ((0.5, 0),), "poll": ((0.5, 0),)}


@dataclass
class DoorbellRun:
    """What one boot of the doorbell program left: its checks, figures and the host's record."""
    boot: object
    kind: str = "intx"                            # the interrupt the driver took: intx, msi
    checks: dict = field(default_factory=dict)
    irq: dict = field(default_factory=dict)       # PCI address -> the kernel's IRQ number
    interrupts: list = field(default_factory=list)  # the function's /proc/interrupts lines
    rtt_us: dict = field(default_factory=dict)      # min, median, p90, max
    blocked_ms: float = None
    doorbells: list = field(default_factory=list)
    pings: list = field(default_factory=list)       # host: monotonic time of each PING taken
    rings: list = field(default_factory=list)       # host: monotonic time of each ring made
    trouble: list = field(default_factory=list)     # the kernel's complaints (spurious IRQs)


def run_doorbell_guest(parts, *, rounds, timeout, host=None, floor=None, backend="amaranth",
                       params=None, echo=None, msi=False):
    """Boot once and run the doorbell program against ``host`` (a HostModel) or ``floor``.

    ``msi``: the driver takes the function's MSI (forwarded as a memory write) instead of INTx.

    Returns a :class:`DoorbellRun`.
    """
    side = floor if floor is not None else host
    side.peer_id = PEER_ID
    run = DoorbellRun(boot=None, kind="msi" if msi else "intx")
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
            if word[1] == "two":
                t = threading.Thread(target=two, daemon=True)
                t.start()

    def two():
        # Two rings apart, then IVPOSITION moves: the guest reads only after both were rung.
        for vector in (0, 1):
            time.sleep(0.3)
            ring(vector)
        time.sleep(0.3)
        side.peer_id = PEER_ID + 1

    side.on_doorbell = on_doorbell
    initrd = image.build_image(parts, {"doorbell_checks": PROGRAM})
    init = image.init_archive("doorbell_checks", [str(PEER_ID), str(rounds)], msi=msi)
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
    run.trouble = [ln for ln in result.console if _TROUBLE.search(ln)]
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

    Each is from the cycle the server woke and ran the clock to the cycle the INTx line rose or
    the MSI message was taken (what the guest's interrupt controller then hears).
    """
    return [a.cycles for a in accesses if a.kind == "ring" and a.value]


def median(values):
    """Return the median of ``values``, or None if there are none."""
    return statistics.median(values) if values else None


def doorbell_write_cycles(accesses):
    """Return the simulated cycles of each of the guest's DOORBELL writes, from the server's log."""
    from vmshm.abi.regmap import REG

    from .device import bar_bases
    base = bar_bases(accesses).get(0)
    if base is None:
        return []
    at = base + REG["DOORBELL"].offset
    return [a.cycles for a in accesses if a.kind == "mem_write" and a.addr == at]
