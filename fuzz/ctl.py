"""OPEN and CLOSE in a fuzz campaign: the host's plan for each, and the read that triggers it.

A mixin of :class:`vmshm.fuzz.gen.Fuzzer`. An OPEN or CLOSE that reaches the host is answered in
time ("fast"), after the timeout ("late"), never ("never-answer": the stale answer the device
waits for never comes, so the next OPEN or CLOSE gives up on it under its own timeout and the
device sends a CLOSE to be sure), or, for OPEN, the host stops taking the name half-way
("stop-mid-name": the byte on offer and a RESET go once the host is back, and it releases
whatever it held). While the device owes beats or waits for an answer, the next OPEN or CLOSE is
issued only where the wait surely times out first ("blocked": ETIMEDOUT) or once it has surely
ended, so the model never guesses a race. Drawn with an exchange in time, the host may also
take the next packet only long after the timeout ("never-taken": an OPEN's first byte and a RESET,
or the CLOSE, go once it is back).
"""

import math

from vmshm.host_model.faults import Fault

from .model import OPEN_OFF

__all__ = ["ControlPlans", "NEVER"]

#: The cycle a stale answer that never comes is awaited by.
NEVER = 1 << 62


class ControlPlans:
    """The control channel's part of :class:`~vmshm.fuzz.gen.Fuzzer`."""

    def _stream_bound(self, nbytes):
        p = self.p_ctl
        return math.ceil(nbytes / p + 8 * math.sqrt(nbytes * (1 - p)) / p + self.gb_ctl +
                         2 * (nbytes // self.wb + 1) + 8)

    def _ctl_fate(self, op):
        """Return ``(fate, latency)`` for an OPEN or CLOSE that reaches the host, or None."""
        T = self.cfg.host_timeout
        nbytes = len(self.model.streamed_name()) if op == "OPEN" else 1
        bound = self._stream_bound(nbytes)
        slack = T - bound - self.gb_rsp - 24 if T else 1 << 30
        late_ok = T and "late-ctl" in self.behaviours
        if T and bound + 16 > T:
            # The timer may run out while the name is streamed: whether the beat on offer is cut
            # off then depends on the very cycle the host takes it (timing.md), so not drawn.
            return None
        if slack >= 0 and not (late_ok and self.rng.random() < 0.12):
            return "fast", self.rng.randint(0, min(64, slack)), bound
        if not late_ok:
            return None
        return "late", bound + 2 * T + 64 + self.rng.randint(0, T // 2), bound

    def _ctl_fault(self, op):
        """Draw a ``ctl-faults`` fault for an OPEN or CLOSE planned in time; return
        ``("never-answer",)``, ``("stop-mid-name", beat, cycles)`` or None.

        A stop before beat 0 is not drawn: the host looks that stall up as soon as the exchange
        before ends, before the request exists (as ``never-accept`` on the window). Nor before
        the last byte: a whole OPEN would go out after all and its answer be owed.
        """
        T = self.cfg.host_timeout
        if "ctl-faults" not in self.behaviours or not T or self.rng.random() >= 0.1:
            return None
        exchange = self.host.ctl_exchange
        nbytes = len(self.model.streamed_name())
        if op == "OPEN" and nbytes >= 3 and self.rng.random() < 0.5:
            beat = self.rng.randint(1, nbytes - 2)
            # Well past the timer's end, wherever in the stream the stop comes.
            cycles = 2 * T + 64 + self.rng.randint(0, T // 2)
            self.host.add_fault(Fault("ctl", "stall", exchange=exchange, beat=beat,
                                      cycles=cycles))
            return "stop-mid-name", beat, cycles
        self.host.add_fault(Fault("ctl", "drop", exchange=exchange))
        return ("never-answer",)

    async def _prepare_ctl(self, n_ops):
        """Before a read that triggers OPEN or CLOSE: return the fate of each, or None to skip."""
        m = self.model
        if m.stale is not None:
            now = self.bus.now()
            T = self.cfg.host_timeout
            if n_ops == 1 and now + T + 32 <= self.stale_earliest:
                return ["blocked"]
            await self._wait_until(self.stale_safe)
            m.settle()
        if n_ops != 1:
            return None
        return []

    async def ctl_read(self, off, be, what):
        """Read BAR0 at ``off`` (one word) whose lane 0 is OPEN or CLOSE."""
        m = self.model
        op = "OPEN" if off == OPEN_OFF else "CLOSE"
        await self._dma_settle()
        triggers = m.triggers(off, 0, be) if m.decode(self.bar_base(0) + off, 0) else []
        fates = []
        late = extra = fault = None
        if triggers:
            fates = await self._prepare_ctl(1)
            if fates is None:
                return
            if not fates:
                if m.op_reaches_host(op):
                    plan = self._ctl_fate(op)
                    if plan is None:
                        return
                    fate, latency, bound = plan
                    if self.ctl_stall is not None:
                        fault = await self._meet_ctl_stall(op, bound)
                        if fault is not None:
                            fate = "fast"
                    if fate == "fast" and fault is None:
                        fault = self._ctl_fault(op)
                    if fault is None or op == "CLOSE":
                        # A name cut off ends with RESET: the host never answers, nor plans.
                        self.host.plan("ctl", latency)
                    if fate == "late":
                        late = (latency, bound)
                    elif fault is None:
                        room = self.cfg.host_timeout - bound - 2 * self.gb_rsp - 24 - latency
                        extra = self.host.draw_ctl_extra(self.rng, self.behaviours, room)
                        if extra is None:
                            self._draw_ctl_stall(start=self.bus.now())
                    if op == "OPEN":
                        # Drawn on every backend, so the traffic does not depend on the probe.
                        m.next_host_base = self.rng.randrange(1 << 52) << 12
                        if self.probe is not None:
                            self.probe.set_bus_address(m.next_host_base)
                    fates = [fate if fault is None else fault[0]]
                else:
                    fates = ["fast"]
        start = self.bus.now()
        never = fates == ["blocked"] and m.stale[2]
        if fates == ["blocked"]:
            self.stats["ETIMEDOUT-drain"] += 1
        await self.mem_read(self.bar_base(0) + off, 0, be, fates=fates, what=what)
        if extra:
            self.stats[extra] += 1
            await self.probe_wait(4 * self.gb_rsp + 32)     # the second answer may still come
        if late is not None:
            latency, bound = late
            self.stats["ETIMEDOUT-late"] += 1
            self.stale_earliest = start + latency
            self.stale_safe = (start + bound + latency + self.gb_rsp + 2 * self.gb_ctl +
                               3 * self.gb_rsp + 64)
        if fault is not None:
            self._after_ctl_fault(fault, start, bound, latency)
        if self.ctl_stall is not None and self.ctl_stall[1] is None:
            # The host looks the stall up once done with this exchange: by the read's end.
            s_start, _, cycles = self.ctl_stall
            self.ctl_stall = (s_start + cycles, self.bus.now() + cycles + 2, cycles)
        if never and m.stale is not None:
            # The device gave up on an answer that never comes and sent a CLOSE to be sure:
            # its answer comes at once, and is awaited before the next OPEN or CLOSE.
            self.stale_earliest = start
            self.stale_safe = self.bus.now() + 2 * self.gb_ctl + 4 * self.gb_rsp + 64
        if triggers and op == "OPEN" and m.is_open and self.probe is not None:
            got = self.probe.host_base()
            self.stats["host_base checks"] += 1
            if got != m.host_base:
                self._fail("host_base after OPEN", f"{m.host_base:#x}", f"{got:#x}")

    def _draw_ctl_stall(self, start):
        """Draw whether the host takes the control packet after this OPEN's or CLOSE's only
        long after the timeout: the host looks a first beat's stall up as soon as the exchange
        before ends, before the packet exists, so it is drawn with that exchange."""
        T = self.cfg.host_timeout
        if "ctl-faults" not in self.behaviours or not T or self.rng.random() >= 0.05:
            return
        cycles = 2 * T + 512 + self.rng.randint(0, T)
        self.host.add_fault(Fault("ctl", "stall", exchange=self.host.ctl_exchange + 1, beat=0,
                                  cycles=cycles))
        self.ctl_stall = (start, None, cycles)

    async def _meet_ctl_stall(self, op, bound):
        """An OPEN or CLOSE about to reach a host that may be stalled: return
        ``("never-taken", cycles)`` where the device surely gives up on its first beat first,
        else wait the stall out and return None."""
        earliest, latest, _ = self.ctl_stall
        self.ctl_stall = None
        if (self.bus.now() + self.cfg.host_timeout + 64 <= earliest and
                (op == "CLOSE" or len(self.model.streamed_name()) >= 2)):
            # (An OPEN of one byte would go whole once the host is back, its answer owed.)
            return ("never-taken", earliest, latest)
        await self._wait_until(latest + 16)
        return None

    def _reset_meets_ctl_stall(self, in_flight):
        """Return whether the RESET about to go is the packet a stalled host takes only once
        its stall ends (else the caller waits the stall out: a RESET ends no wait of the
        device's)."""
        return (in_flight and self.ctl_stall is not None and self.model.stale is None and
                self.bus.now() + 16 <= self.ctl_stall[0])

    def _after_ctl_fault(self, fault, start, bound, latency):
        """Note when what a faulted OPEN or CLOSE left owed may end, and surely has."""
        self.stats["ctl-" + fault[0]] += 1
        if fault[0] == "never-taken":
            # The first beat goes when the stall ends (then a RESET, or CLOSE's answer).
            self.stale_earliest = fault[1]
            self.stale_safe = fault[2] + bound + latency + 4 * self.gb_ctl + 3 * self.gb_rsp + 64
        elif fault[0] == "never-answer":
            # Nothing more comes; the host is done with the exchange after its latency.
            self.stale_earliest = NEVER
            self.stale_safe = start + bound + latency + 2 * self.gb_ctl + 64
        else:
            # The host takes the byte on offer and the RESET once its stall ends: not before
            # it began plus its length, surely by the name's bound plus its length.
            cycles = fault[2]
            self.stale_earliest = start + cycles
            self.stale_safe = start + bound + cycles + 4 * self.gb_ctl + 64
