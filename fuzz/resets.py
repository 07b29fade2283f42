"""Resets of the function in a fuzz campaign: idle, with an object open, or in flight.

A mixin of :class:`vmshm.fuzz.gen.Fuzzer`. A reset in flight (``reset-in-flight``) comes while
the host still holds an OPEN, CLOSE or window access: an answer owed, a name or a write it
stopped taking, a request it has not taken yet, or a stall of the next control packet. The host
answers nothing from before the reset and stores no write cut off by it; the device's RESET goes
once the host is done with what it holds, and the next OPEN or CLOSE drains it first. Where the
reset would race with the host (a stall about to end, extra answers on their way), it waits.
"""

__all__ = ["ResetPlans"]


class ResetPlans:
    """The resets of :class:`~vmshm.fuzz.gen.Fuzzer`."""

    async def do_reset(self):
        m = self.model
        if self.probe is None or "reset-idle" not in self.behaviours:
            return await self.do_idle()
        if m.is_open and "reset-open" not in self.behaviours:
            return await self.do_close()
        in_flight = "reset-in-flight" in self.behaviours and self.rng.random() < 0.8
        while True:
            # Wait out what the reset would race with, then decide again (a wait changes what
            # is in flight) until nothing is left to wait for.
            now = self.bus.now()
            cut = self._dma_cut() if in_flight and now < self.dma_safe else None
            ctl = in_flight and m.stale is not None and now < self.stale_safe
            stalled = self._reset_meets_ctl_stall(in_flight)
            until = max(self.dma_safe if cut is None else 0, 0 if ctl else self.stale_safe,
                        self.ctl_stall[1] + 16 if self.ctl_stall and not stalled else 0)
            if until <= now:
                break
            await self._wait_until(until)
        if not stalled:
            self.ctl_stall = None
        if not ctl:
            m.settle()
        start = self.bus.now()
        await self.probe.reset()
        never = ctl and m.stale[2]
        m.reset()
        if cut:
            # The host took part of the request, or none, and is told of the reset before it
            # stores anything: a write cut off stores nothing, the latency planned is not used.
            if self.dma_last[1]:
                m.cut_write()
            if not self.host.cut(cut):
                self._fail(f"the host's window requests after a reset cutting off "
                           f"{self.current}", "the request cut off, never taken whole",
                           "the host took it whole")
        if ctl:
            # The device's RESET goes once the host is done with the exchange it holds; the
            # next OPEN or CLOSE drains it first (ETIMEDOUT where it surely cannot in time).
            m.stale = ("RESET", None, False)
            if never:
                self.stale_earliest = 0
            self.stale_safe += 2 * self.gb_ctl + 16
        if stalled:
            # The RESET is the packet the host takes only once its stall ends.
            m.stale = ("RESET", None, False)
            self.stale_earliest = self.ctl_stall[0]
            self.stale_safe = max(self.stale_safe, self.ctl_stall[1] + 2 * self.gb_ctl + 16)
            self.ctl_stall = None
            ctl = True
        if ctl:
            # A CLOSE the host had not taken yet is replaced by the RESET: never answered.
            self.host.forget("ctl")
        if ctl or cut is not None:
            self.stats["reset-in-flight"] += 1
            self.stats["reset-cut-write"] += cut == "WRITE"
            self.stats["reset-lost-request"] += cut == "lost"
            self.dma_busy = self.dma_busy or cut is not None
        self.dma_last = (None, False)       # what the host held is settled now
        self.stats["resets"] += 1
        self.records.append(("RESET", 0, 0, "", None, start, self.bus.now()))
        self._log(start, "reset" + (" (in flight)" if ctl or cut is not None else ""), "")
        await self.enumerate()

    def _in_flight(self):
        """Return whether a reset now would be one in flight (if the behaviour is drawn)."""
        if "reset-in-flight" not in self.behaviours or self.probe is None:
            return False
        now = self.bus.now()
        return ((self.model.stale is not None and now < self.stale_safe) or
                (now < self.dma_safe and self._dma_cut() is not None))

    def _dma_cut(self):
        """Return what a reset now does to the window access the host may still hold, or None
        to wait it out: ``""`` (taken whole: its data stored or read, its answer never sent),
        ``"WRITE"`` (a write the host stopped taking: cut off, stored nowhere), ``"lost"`` (a
        request the host has not taken yet: never taken)."""
        fate, write = self.dma_last
        name = fate[0] if isinstance(fate, tuple) else fate
        if name in ("late", "never-answer"):
            return ""
        if name in ("stop-mid-packet", "never-accept") and self.bus.now() + 16 <= self.cut_end:
            return "WRITE" if name == "stop-mid-packet" else "lost"
        return None
