"""Resets of the function in a fuzz campaign: idle, with an object open, or in flight.

A reset is either ``rst`` held by the run's probe (``reset``) or a Function Level Reset (``flr``):
a configuration write of Initiate FLR in the PCI Express capability's Device Control, which
needs no probe. The FLR resets the core and the configuration space's FLR fields and clears the
name buffer, but not the host's side: a beat the host was offered stays on offer until taken
(rtl/flr_hold.py), so a window request or write the host had not taken whole goes on after the
FLR: taken whole (its last beat was the one kept, or a read), it is stored or read, and an
answer to it is dropped; else the RESET that follows ends it and it stores nothing. After an
FLR the fuzzer reads back the command register, MSI's Message Control and a BAR (FLR values),
enumerates the function again and reads the name buffer's first words (cleared).

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
        if self.probe is None or "reset-idle" not in self.behaviours:
            return await self.do_idle()
        if self.model.is_open and "reset-open" not in self.behaviours:
            return await self.do_close()
        await self._reset_function(flr=False)

    async def do_flr(self):
        if "flr" not in self.behaviours:
            return await self.do_idle()
        await self._reset_function(flr=True)

    async def _reset_function(self, *, flr):
        """Reset the function (``rst``, or a Function Level Reset if ``flr``), in flight or not."""
        m = self.model
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
        never = ctl and m.stale[2]
        if flr:
            await self._initiate_flr()      # the model's cfg_write applies its flr()
        else:
            await self.probe.reset()
            m.reset()
        kept = self._cut_window_access(cut, flr)
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
            # A CLOSE the host had not taken yet is replaced by the RESET: never answered. (An
            # FLR keeps it on offer: the host takes it, answers at once, and the core drops it.)
            self.host.forget("ctl")
        held = ctl or cut is not None
        if flr:
            self.stats["flr"] += 1
            self.stats["flr-in-flight"] += held
        else:
            self.stats["reset-in-flight"] += held
            self.stats["reset-cut-write"] += cut == "WRITE"
            self.stats["reset-lost-request"] += cut == "lost"
            self.stats["resets"] += 1
        self.dma_busy = self.dma_busy or cut is not None
        self.dma_last = (None, False, 0)        # what the host held is settled now
        what = "FLR" if flr else "RESET"
        self.records.append((what, 0, 0, "", None, start, self.bus.now()))
        self._log(start, what.lower() + (" (in flight)" if held else ""), "")
        if flr:
            await self._after_flr(kept)
        else:
            await self.enumerate()

    def _cut_window_access(self, cut, flr):
        """Tell the model and the host what the reset did to the window access the host held
        (``cut``, from :meth:`_dma_cut`); return whether an FLR kept a beat of it on offer.

        The host took part of the access, or none, and is told of the reset before it stores
        anything: a write cut off stores nothing, the latency planned is not used. An FLR keeps
        the beat on offer instead (the write's beat the host stopped before, or a request's
        first): is it the write's last beat (or a read's request), the host takes the access
        whole once its stall ends; else the RESET ends the write it began taking."""
        if not cut:
            return False
        fate, write, count = self.dma_last
        if flr:
            kept = fate[1] if cut == "WRITE" else 0
            if not write or kept == count:
                self.stats["flr-kept-whole"] += 1
                return True
            self.stats["flr-kept-cut"] += 1
            cut = "WRITE"
        if write:
            self.model.cut_write()
        if not self.host.cut(cut):
            self._fail(f"the host's window requests after {'an FLR' if flr else 'a reset'} "
                       f"cutting off {self.current}",
                       f"the {'write' if flr else 'request'} cut off, never taken whole",
                       "the host took it whole")
        return flr

    def _config_field(self, name):
        return next(f for f in self.model.config.space.fields if f.name == name)

    async def _initiate_flr(self):
        """Set Initiate FLR in Device Control, now and then with other Device Control bits."""
        f = self._config_field("exp_initiate_flr")
        value = 1 << f.lsb | (self.rng.getrandbits(16) if self.rng.random() < 0.3 else 0)
        await self.cfg_write_reg(f.offset, value & 0xFFFF, 0x3, "Initiate FLR")

    async def _after_flr(self, kept):
        """Check the FLR's configuration values, enumerate again, check the name buffer."""
        if kept:
            # The beat kept goes once the host's stall ends, then the RESET: let both go, so
            # the next OPEN does not wait for them (the RESET waits for the kept beat).
            await self._wait_until(self.dma_safe + 2 * self.gb_ctl + 16)
            self.dma_busy = False
        wb = self.wb
        for name in ("command", "msi_enable", "bar1"):
            off = self._config_field(name).offset
            await self.cfg_read(0, off & ~(wb - 1), 0, 0xF << (4 * (off % wb // 4)),
                                what=f"after FLR: {name}")
        await self.enumerate()
        count = min(3, self.cfg.name_size // wb - 1)
        await self.mem_read(self.bar_base(2), count, (1 << wb) - 1, what="after FLR: name read")

    def _in_flight(self):
        """Return whether a reset now would be one in flight (if the behaviour is drawn)."""
        if "reset-in-flight" not in self.behaviours or self.probe is None:
            return False
        now = self.bus.now()
        return ((self.model.stale is not None and now < self.stale_safe) or
                (now < self.dma_safe and self._dma_cut() is not None))

    def _cut_ahead(self):
        """Return whether a reset now would meet a window request or write the host has not
        taken whole: rarer than the rest, so drawn more often when it can be."""
        return self.bus.now() < self.dma_safe and self._dma_cut() in ("WRITE", "lost")

    def _dma_cut(self):
        """Return what a reset now does to the window access the host may still hold, or None
        to wait it out: ``""`` (taken whole: its data stored or read, its answer never sent),
        ``"WRITE"`` (a write the host stopped taking: cut off, stored nowhere), ``"lost"`` (a
        request the host has not taken yet: never taken)."""
        fate, write, _ = self.dma_last
        name = fate[0] if isinstance(fate, tuple) else fate
        if name in ("late", "never-answer"):
            return ""
        if name in ("stop-mid-packet", "never-accept") and self.bus.now() + 16 <= self.cut_end:
            return "WRITE" if name == "stop-mid-packet" else "lost"
        return None
