"""Random guest traffic and host decisions from one seed, checked against the golden model.

:func:`fuzz_guest` is the guest function the backends run (``"vmshm.fuzz.gen:fuzz_guest"``): it
enumerates the function, then draws transactions one at a time, asks the model what the device
must answer, plans the host's latency for the accesses that reach it, carries the transaction out
on the guest bus and compares status and every data word. Every so often, and at the end, it
compares every byte of the host's objects with the model. Same seed, same traffic, same host
decisions: a failing seed replays exactly.

Host decisions are kept clear of the timeout: an answer "in time" is planned so that it comes well
before ``host_timeout`` even under the worst back-pressure the seed may draw (a bound with a
failure probability below 1e-9 per access), and a "late" one well after it, so that the model
never has to guess a race. After a late OPEN or CLOSE the next control access is either issued
while the stale answer surely cannot arrive in time (the drain path must answer ETIMEDOUT) or
once it has surely been drained.
"""

import random
import sys
from collections import deque

from vmshm.driver_model.bus import BusTimeout, Space
from vmshm.host_model import ShmRegion
from vmshm.abi.regmap import BAR0_SIZE, BAR_WINDOW, REG

from .ctl import ControlPlans
from .resets import ResetPlans
from .host import ACTIVE, DEFAULT_BEHAVIOURS, gate_bound as _gate_bound
from .model import CLOSE_OFF, OPEN_OFF, DeviceModel, FuzzConfig

__all__ = ["KINDS", "fuzz_guest", "Mismatch"]

#: Transaction kinds and their weights.
KINDS = {
    "reg_read": 8, "reg_write": 3, "name_write": 6, "name_bytes": 5, "name_read": 4,
    "open": 7, "close": 4, "win_read": 12, "win_write": 12, "cfg_read": 3, "cfg_write": 2,
    "cfg_bad": 2, "bar_size": 1, "mem_bad": 3, "reset": 1, "flr": 1, "idle": 1,
}
#: Bases the BARs are placed at: slots of 1 MiB (at least one BAR's size) from 2 GiB up.
_SLOT_BASE = 0x8000_0000


class Mismatch(AssertionError):
    """The device and the model disagree."""


class Fuzzer(ControlPlans, ResetPlans):
    """Draw, run and check transactions on one device; see :func:`fuzz_guest`."""

    def __init__(self, bus, host, probe, cfg, *, seed, behaviours, names, history):
        self.bus = bus
        self.host = host
        self.probe = probe
        self.cfg = cfg
        self.wb = cfg.wb
        self.rng = random.Random(f"vmshm-fuzz:{seed}")
        self.behaviours = set(behaviours)
        self.names = names
        objects = {}
        for name in names["objects"] + ([names["empty"]] if names.get("empty") else []):
            region = ShmRegion.attach(name)
            try:
                objects[name.encode()] = bytearray(region.read(0, region.size))
            finally:
                region.close()
        self.model = DeviceModel(cfg, objects)
        t = host.timing
        self.gb_ctl = _gate_bound(t.ctl_ready)
        self.gb_dma = _gate_bound(t.dma_ready)
        self.gb_rsp = _gate_bound(t.rsp_valid)
        self.p_ctl = t.ctl_ready
        self.history = deque(maxlen=history)
        self.records = []
        self.counts = {}
        self.stats = {"ETIMEDOUT-drain": 0, "ETIMEDOUT-late": 0, "host_base checks": 0,
                      "object checks": 0, "resets": 0, "late": 0, "never-answer": 0,
                      "answer-twice": 0, "unasked": 0, "stop-mid-packet": 0, "never-accept": 0,
                      "ctl-double": 0, "ctl-unasked": 0, "ctl-never-answer": 0,
                      "ctl-stop-mid-name": 0, "ctl-never-taken": 0, "reset-in-flight": 0,
                      "reset-cut-write": 0, "reset-lost-request": 0, "flr": 0,
                      "flr-in-flight": 0, "flr-kept-whole": 0, "flr-kept-cut": 0}
        self.index = 0
        self.progress = False       # a line on stderr at every object check
        self.current = ""           # the transaction on the bus, for a report if it never ends
        self.stale_earliest = self.stale_safe = 0
        # ctl-faults: a stall of the next control packet's first beat, drawn with the exchange
        # before: (earliest end, latest end, cycles), the latest None until that exchange ends.
        self.ctl_stall = None
        self.dma_safe = 0
        self.dma_busy = False
        # never-accept: the stall drawn with a window exchange, then (earliest, latest) its end.
        self.stall_cycles, self.stall_end = 0, None
        # The last window access's fate and whether a write, and the cycle its host holds it
        # until at least (a write stopped half-way, a request not taken): for resets in flight.
        self.dma_last, self.cut_end = (None, False, 0), None

    # -- carrying out one transaction -------------------------------------------------------------

    async def _read(self, space, dev, addr, count, be):
        return await self.bus._burst_read(space, dev, addr, count + 1, be)

    async def _write(self, space, dev, addr, beats):
        return await self.bus._burst_write(space, dev, addr, beats)

    def _fail(self, what, expected, got):
        lines = [f"mismatch in transaction {self.index}: {what}",
                 f"  expected {expected}", f"  got      {got}",
                 f"last {len(self.history)} transactions (index start end: what -> result):"]
        lines += [f"  {h}" for h in self.history]
        raise Mismatch("\n".join(lines))

    def _log(self, start, text, result):
        self.history.append(f"{self.index:>7} {start:>9} {self.bus.now():>9}: {text} -> {result}")

    async def mem_read(self, addr, count, be, *, fates=(), fate=None, what="read"):
        exp_status, exp_words = self.model.mem_read(addr, count, be, fates=fates, dma_fate=fate)
        start = self.bus.now()
        text = self.current = f"{what} mem {addr:#x} x{count + 1} be {be:#x}"
        words, status = await self._read(Space.MEM, None, addr, count, be)
        self._record("R", addr, count, status, words, start)
        self._log(start, text, f"{status} {_words(words)}")
        if (status, words) != (exp_status, exp_words):
            self._fail(text, f"{exp_status} {_words(exp_words)}", f"{status} {_words(words)}")
        return words

    async def mem_write(self, addr, beats, *, fate=None, what="write"):
        exp = self.model.mem_write(addr, beats, dma_fate=fate)
        start = self.bus.now()
        text = self.current = (f"{what} mem {addr:#x} x{len(beats)} "
                               f"{' '.join(f'{d:0{2 * self.wb}x}/{e:x}' for d, e in beats[:8])}"
                               f"{' ...' if len(beats) > 8 else ''}")
        status = await self._write(Space.MEM, None, addr, beats)
        self._record("W", addr, len(beats) - 1, status, None, start)
        self._log(start, text, status)
        if status != exp:
            self._fail(text, exp, status)

    async def cfg_read(self, dev, addr, count, be, what="cfg read"):
        exp = self.model.cfg_read(dev, addr, count)
        start = self.bus.now()
        text = self.current = f"{what} dev {dev} {addr:#x} x{count + 1} be {be:#x}"
        words, status = await self._read(Space.CFG, dev, addr, count, be)
        self._record("CR", addr, count, status, words, start)
        self._log(start, text, f"{status} {_words(words)}")
        if (status, words) != exp:
            self._fail(text, f"{exp[0]} {_words(exp[1])}", f"{status} {_words(words)}")
        return words

    async def cfg_write(self, dev, addr, beats, what="cfg write"):
        exp = self.model.cfg_write(dev, addr, beats)
        start = self.bus.now()
        text = self.current = f"{what} dev {dev} {addr:#x} x{len(beats)} " + \
            " ".join(f"{d:x}/{e:x}" for d, e in beats[:4])
        status = await self._write(Space.CFG, dev, addr, beats)
        self._record("CW", addr, len(beats) - 1, status, None, start)
        self._log(start, text, status)
        if status != exp:
            self._fail(text, exp, status)

    def _record(self, kind, addr, count, status, words, start):
        self.records.append((kind, addr, count, status, None if words is None else tuple(words),
                             start, self.bus.now()))

    # -- the device's setup, as a driver's probe does it -------------------------------------------

    def bar_base(self, function):
        for b in self.model.bars:
            if b.function == function:
                return b.base
        raise KeyError(function)

    async def enumerate(self):
        """Place the three BARs in distinct random slots and enable memory and bus mastering."""
        slot = max(1 << 20, self.cfg.window_size)
        slots = self.rng.sample(range(16), 3)
        for b, s in zip(self.model.bars, slots):
            base = _SLOT_BASE + s * slot
            await self.cfg_write_reg(0x10 + 4 * b.index, base, 0xF, "assign BAR")
        await self.cfg_write_reg(4, 0x6, 0x3, "enable")

    def _cfg_beat(self, off, value, be):
        lane = (off % self.wb) // 4
        return (value << (32 * lane), be << (4 * lane))

    async def cfg_write_reg(self, off, value, be, what):
        """Write the configuration dword at ``off`` (``be`` its byte enables)."""
        await self.cfg_write(0, off & ~(self.wb - 1), [self._cfg_beat(off, value, be)], what)

    # -- timing plans ------------------------------------------------------------------------------

    async def _wait_until(self, cycle):
        now = self.bus.now()
        if cycle > now:
            await self.probe_wait(cycle - now)

    async def probe_wait(self, cycles):
        # A stream bus's idle() wakes once a cycle; its backend's wait() sleeps through them all.
        # The native bus has no such backend: its idle() is one call into C++ already.
        io = getattr(self.bus, "_io", None)
        await (io.wait(cycles) if io is not None else self.bus.idle(cycles))

    # -- the kinds ------------------------------------------------------------------------------

    def _rand_word(self):
        return self.rng.getrandbits(8 * self.wb)

    def _rand_be(self):
        return self.rng.getrandbits(self.wb)

    async def do_reg_read(self):
        wb, m = self.wb, self.model
        off = self.rng.randrange(0, BAR0_SIZE if self.rng.random() < 0.9 else self.cfg.regs_size,
                                 wb)
        count = self.rng.choice([0, 0, 0, 1, 2, 5])
        count = min(count, self.cfg.regs_size // wb - off // wb - 1)
        be = self._rand_be() if self.rng.random() < 0.5 else (1 << wb) - 1
        if m.decode(self.bar_base(0) + off, count) and m.triggers(off, count, be):
            # A burst that triggers OPEN or CLOSE is an OPEN or CLOSE: drawn as such instead.
            return await self.do_open() if self.rng.random() < 0.5 else await self.do_close()
        await self.mem_read(self.bar_base(0) + off, count, be, what="reg read")

    async def do_reg_write(self):
        wb = self.wb
        off = self.rng.randrange(0, BAR0_SIZE, wb)
        if self.rng.random() < 0.3:
            off = REG["REJECTS"].offset & ~(wb - 1)
        count = min(self.rng.choice([0, 0, 1, 3]), self.cfg.regs_size // wb - off // wb - 1)
        beats = [(self._rand_word(), self._rand_be()) for _ in range(count + 1)]
        await self.mem_write(self.bar_base(0) + off, beats, what="reg write")

    def _name_choice(self):
        n, r = self.names, self.rng.random()
        size = self.cfg.name_size
        if r < 0.6:
            return self.rng.choice(n["objects"]).encode(), "good"
        if r < 0.67:
            return f"{n['prefix']}-missing-{self.rng.randrange(1000)}".encode(), "missing"
        if r < 0.72 and n.get("empty"):
            return n["empty"].encode(), "empty object"
        if r < 0.8 and size >= 258:
            return b"/" + b"x" * self.rng.randint(NAME_LONG, min(size - 2, NAME_LONG + 40)), \
                "too long"
        if r < 0.88:
            return None, "no NUL"
        return self.rng.choice([b"", b"noslash", b"/a/b", b"/", b"//x"]), "malformed"

    async def do_name_write(self):
        """Write a whole name and its NUL at offset 0, as the driver's ioctl does."""
        name, cls = self._name_choice()
        wb = self.wb
        if name is None:
            data = bytes(self.rng.randrange(1, 256) for _ in range(self.cfg.name_size))
        else:
            data = name[:self.cfg.name_size - 1] + b"\0"
        nwords = (len(data) + wb - 1) // wb
        raw = data + bytes(nwords * wb - len(data))
        beats = []
        for k in range(nwords):
            chunk = raw[k * wb:(k + 1) * wb]
            valid = min(wb, len(data) - k * wb)
            beats.append((int.from_bytes(chunk, "little"), (1 << valid) - 1))
        await self.mem_write(self.bar_base(2), beats, what=f"name ({cls})")

    async def do_name_bytes(self):
        """Write random bytes with random, often non-contiguous, byte enables into BAR2."""
        wb = self.wb
        words = self.cfg.name_size // wb
        # Mostly where names live, so the bytes land on a buffer that holds one.
        w0 = self.rng.randrange(min(words, 1 + 40 // wb) if self.rng.random() < 0.7 else words)
        count = self.rng.randint(0, min(7, words - w0 - 1))
        beats = []
        for _ in range(count + 1):
            data = bytes(self.rng.choice([0, self.rng.randrange(32, 127),
                                          self.rng.randrange(256)]) for _ in range(wb))
            beats.append((int.from_bytes(data, "little"), self._rand_be()))
        await self.mem_write(self.bar_base(2) + w0 * wb, beats, what="name bytes")

    async def do_name_read(self):
        wb = self.wb
        words = self.cfg.name_size // wb
        w0 = self.rng.randrange(words)
        count = self.rng.randint(0, min(15, words - w0 - 1))
        await self.mem_read(self.bar_base(2) + w0 * wb, count, self._rand_be(), what="name read")

    async def do_open(self):
        be = 0xF
        if self.wb == 8 and self.rng.random() < 0.2:
            be = self.rng.choice([0xF0, 0x01, 0xFF, 0x30])
        await self.ctl_read(OPEN_OFF, be, "OPEN")

    async def do_close(self):
        be = 0xF if self.rng.random() < 0.8 else (1 << self.wb) - 1
        await self.ctl_read(CLOSE_OFF & ~(self.wb - 1), be << (CLOSE_OFF % self.wb), "CLOSE")

    def _window_target(self):
        wb, m = self.wb, self.model
        words = self.cfg.window_size // wb
        limit = m.map_limit // wb
        r = self.rng.random()
        if limit and r < 0.85:
            long = self.rng.random() < 0.4
            # A long burst starts early, so it has room to be long.
            w0 = self.rng.randrange(max(1, limit // 8) if long else limit)
            room = limit - w0
            if r < 0.1:
                w0 = max(0, limit - self.rng.randint(1, 4))    # the object's last words
                room = limit - w0
            count = self.rng.randint(0, min(255, room - 1) if long else min(7, room - 1))
            if self.rng.random() < 0.05:
                count = min(255, words - w0 - 1)                # may run past MAP_SIZE
        else:
            w0 = self.rng.randrange(words)
            count = self.rng.randint(0, min(15, words - w0 - 1))
        return w0 * wb, count

    def _dma_plan(self, off, count, write):
        """Plan the host's latency and fault for a window access; return its fate.

        ``"fast"``: answered in time; ``"late"``: answered after the timeout; ``"never-answer"``,
        ``"answer-twice"``, ``"unasked"``, ``"stop-mid-packet"``: the host faults of the same
        names (:data:`~vmshm.fuzz.host.BEHAVIOURS`); None: the access never reaches the host.
        """
        self.host.fault(None)
        self.cut_end = None
        if not self._reaches_host(off, count):
            return None         # it never reaches the host: nothing to plan
        T = self.cfg.host_timeout
        beats = (count + 1) * (self.gb_rsp + 1)     # how long the answer's beats take at worst
        if self.stall_end is not None:
            # The stall surely outlasts this request's timeout (_window_access waited otherwise):
            # the host takes it once the stall ends, and its answer is dropped by its tag.
            latency = self.rng.randint(0, 64)
            self.host.plan("dma", latency)
            self.dma_pending = (self.stall_end[1] - self.bus.now() + latency + beats +
                                (count + 1) * (self.gb_dma + 1))
            # Not taken before the stall's earliest end: a reset before it loses the request.
            self.cut_end = self.stall_end[0]
            self.stall_end, self.dma_busy = None, True
            return "never-accept"
        slack = T - self.gb_rsp - 16 if T else 1 << 30
        late = (T and "late-dma" in self.behaviours and
                (slack < 0 or self.rng.random() < 0.05))
        if late:
            latency = T + 32 + self.rng.randint(0, T // 4)
        else:
            latency = self.rng.randint(0, max(0, min(64, slack)))
        self.host.plan("dma", latency)
        # When the late host is done with this access, at the latest (for resets).
        self.dma_pending = latency + beats + self.gb_dma * (count + 1)
        if late:
            if self.dma_pending - T > T // 2 - 64:
                # The host may still be answering it when the next request comes, for longer
                # than that one's timeout (a short timeout, a long answer): the next waits.
                self.dma_busy = True
            return "late"
        faults = [f for f in ("never-answer", "answer-twice", "unasked", "stop-mid-packet")
                  if f in self.behaviours and T]
        if not (faults and self.rng.random() < 0.15):
            if "never-accept" in self.behaviours and T and self.rng.random() < 0.04:
                # The next window request finds a host that takes nothing for a while.
                self.stall_cycles = 2 * T + 512 + self.rng.randint(0, T)
                self.host.stall_next(self.stall_cycles)
            return "fast"
        fate = self.rng.choice(faults)
        if fate == "never-answer":
            self.host.fault("drop")
        elif fate == "answer-twice":
            self.host.fault("double")
            self.dma_pending += beats
            # The second answer occupies the answer channel: the next access waits it out.
            self.dma_busy = True
        elif fate == "unasked" and latency + beats + self.gb_rsp + 16 < T:
            self.host.fault("unasked")
            self.dma_pending += beats
        elif fate == "stop-mid-packet" and write and count:
            cycles = T + 32 + self.rng.randint(0, T // 2)
            beat = self.rng.randint(1, count)
            self.host.fault("stall", beat=beat, cycles=cycles)
            self.dma_pending += cycles
            self.dma_busy = True
            # The host takes no beat from `beat` on before then: a reset before it cuts it off.
            self.cut_end = self.bus.now() + cycles
            return ("stop-mid-packet", beat)
        else:
            return "fast"
        return fate

    async def _dma_settle(self):
        """Wait until a faulted window access's extra answer or owed beats have surely gone.

        A new OPEN and a new window request wait for owed beats on their own timer, so the next
        access is predictable only after them (docs/timing.md).
        """
        if self.dma_busy:
            await self._wait_until(self.dma_safe)
            self.dma_busy = False

    def _reaches_host(self, off, count):
        hit = self.model.decode(self.bar_base(1) + off, count)
        return bool(hit) and hit[0].function == BAR_WINDOW and self.model.window_ok(off, count)

    async def _window_access(self, write):
        off, count = self._window_target()
        await self._dma_settle()
        if (self.stall_end is not None and self._reaches_host(off, count) and
                self.bus.now() + self.cfg.host_timeout + 8 * count + 264 > self.stall_end[0]):
            # The stall may end about when this request times out: let it end first.
            await self._wait_until(self.stall_end[1] + 16)
            self.stall_end = None
            self.host.stall_spent()
        start = self.bus.now()
        self.dma_pending = 0
        fate = self._dma_plan(off, count, write)
        name = fate if fate is None or isinstance(fate, str) else fate[0]
        label = "" if name in (None, "fast") else f" ({name})"
        if name in self.stats:
            self.stats[name] += 1
        if write:
            full = (1 << self.wb) - 1
            beats = [(self._rand_word(), full if self.rng.random() < 0.6 else self._rand_be())
                     for _ in range(count + 1)]
            await self.mem_write(self.bar_base(1) + off, beats, fate=fate,
                                 what="window write" + label)
        else:
            await self.mem_read(self.bar_base(1) + off, count, self._rand_be(), fate=fate,
                                what="window read" + label)
        if self.stall_cycles:
            # The host looked the stall up when it was done with this access: after it began,
            # by its end (the BFMs' stall begun at time 0 lasts an edge more).
            self.stall_end = (start + self.stall_cycles, self.bus.now() + self.stall_cycles + 2)
            self.stall_cycles = 0
        self.dma_safe = max(self.dma_safe, self.bus.now() + self.dma_pending + 32)
        self.dma_last = (fate, write, count)

    async def do_win_read(self):
        await self._window_access(False)

    async def do_win_write(self):
        await self._window_access(True)

    async def do_cfg_read(self):
        off = self.rng.choice([self.rng.randrange(0, 0x60, self.wb),
                               self.rng.randrange(0, 0x1000, self.wb)])
        await self.cfg_read(0, off, 0, self._rand_be())

    async def do_cfg_write(self):
        r = self.rng.random()
        if r < 0.6:
            # The command register: now and then without Memory Space or Bus Master Enable.
            value = self.rng.choice([0x6, 0x6, 0x6, 0x2, 0x406, 0x4, self.rng.getrandbits(16)])
            await self.cfg_write_reg(4, value, 0x3, "command")
        else:
            # MSI's Message Control too: MSI Enable, which an FLR clears.
            off = self.rng.choice([0x0C, 0x3C, 0x00, 0x08, 0x2C, 0x34, 0x40, 0x44, 0x80,
                                   self._config_field("msi_enable").offset])
            await self.cfg_write_reg(off, self.rng.getrandbits(32), self.rng.getrandbits(4),
                                     "cfg write")

    async def do_cfg_bad(self):
        """Configuration requests the function must refuse: more than one word, another slot."""
        r = self.rng.random()
        wb = self.wb
        off = self.rng.randrange(0, 0x40, wb)
        if r < 0.5:
            count = self.rng.randint(1, 3)
            if self.rng.random() < 0.5:
                await self.cfg_read(0, off, count, (1 << wb) - 1, what="multi-word cfg read")
            else:
                # Were it taken, its words would change the command register and the BARs.
                beats = [(self._rand_word(), (1 << wb) - 1) for _ in range(count + 1)]
                await self.cfg_write(0, self.rng.choice([0, 0x10]), beats,
                                     what="multi-word cfg write")
        elif r < 0.8:
            await self.cfg_read(self.rng.randint(1, 31), off, 0, 0xF, what="cfg read, empty slot")
        else:
            await self.cfg_read(0, 0x1000 * self.rng.randint(1, 15) + off, 0, 0xF,
                                what="cfg read past 4 KiB")

    async def do_bar_size(self):
        """Size a BAR the way a PCI core does: write all ones, read the mask, restore."""
        b = self.rng.choice(self.model.bars)
        off = 0x10 + 4 * b.index
        base = b.base
        await self.cfg_write_reg(off, 0xFFFF_FFFF, 0xF, f"size BAR{b.index}")
        await self.cfg_read(0, off & ~(self.wb - 1), 0, 0xF << (4 * ((off % self.wb) // 4)),
                            what=f"size BAR{b.index}")
        await self.cfg_write_reg(off, base, 0xF, f"restore BAR{b.index}")

    async def do_mem_bad(self):
        """Memory bursts no BAR claims: across a BAR's end, or at an address nobody decodes."""
        wb = self.wb
        b = self.rng.choice(self.model.bars)
        if self.rng.random() < 0.7:
            words = b.size // wb
            w0 = words - self.rng.randint(1, min(8, words))
            count = words - w0 + self.rng.randint(0, 4)
            addr = b.base + w0 * wb
        else:
            addr = self.rng.choice([0x1000, 0x7000_0000, 1 << 33]) + self.rng.randrange(0, 64, wb)
            count = self.rng.randint(0, 3)
        if self.rng.random() < 0.5:
            await self.mem_read(addr, count, self._rand_be(), what="unclaimed read")
        else:
            await self.mem_write(addr, [(self._rand_word(), self._rand_be())
                                        for _ in range(count + 1)], what="unclaimed write")

    async def do_idle(self):
        await self.probe_wait(self.rng.randint(1, 40))

    # -- the run ---------------------------------------------------------------------------------

    def check_objects(self):
        """Compare every byte of every host object with the model."""
        self.stats["object checks"] += 1
        for name, expected in self.model.objects.items():
            region = ShmRegion.attach(name)
            try:
                got = region.read(0, region.size)
            finally:
                region.close()
            if got != expected:
                i = next(i for i in range(min(len(got), len(expected)))
                         if got[i] != expected[i]) if len(got) == len(expected) else 0
                self._fail(f"host object {name.decode()!r} byte {i:#x}",
                           f"{bytes(expected[i:i + 8]).hex()}", f"{bytes(got[i:i + 8]).hex()}")

    async def run(self, transactions, check_every):
        await self.enumerate()
        kinds = list(KINDS)
        weights = [KINDS[k] for k in kinds]
        # While an object is open the window gets most of the traffic, so long bursts happen.
        open_weights = [w * 4 if k.startswith("win_") else w for k, w in zip(kinds, weights)]
        for self.index in range(transactions):
            m = self.model
            if m.stale is not None and self.bus.now() >= self.stale_safe:
                m.settle()
            if not m.mse or not m.bme:
                # Do not stay disabled for long: a driver enables the device again.
                if self.rng.random() < 0.3:
                    await self.cfg_write_reg(4, 0x6, 0x3, "enable")
                    continue
            kind = self.rng.choices(kinds, open_weights if m.is_open else weights)[0]
            if self._in_flight() and self.rng.random() < (0.5 if self._cut_ahead() else 0.1):
                # Resets are rare: catch the host holding an exchange, with rst or an FLR.
                kind = "flr" if "flr" in self.behaviours and self.rng.random() < 0.5 else "reset"
            self.counts[kind] = self.counts.get(kind, 0) + 1
            await getattr(self, f"do_{kind}")()
            # Every planned answer is used by the time its access completes; one left over means
            # the device and the model disagree on which accesses reach the host.
            for channel in ("ctl", "dma"):
                # A write the host stopped taking reaches it once the stall ends.
                if self.host.pending(channel) and not (channel == "dma" and self.dma_busy or
                                                       channel == "ctl" and m.stale is not None):
                    self._fail(f"the host's {channel} requests after {self.current}",
                               "every planned request sent to the host",
                               f"{self.host.pending(channel)} planned request(s) never sent")
            if check_every and (self.index + 1) % check_every == 0:
                await self._dma_settle()    # a write the host stopped taking lands first
                self.check_objects()
                if self.progress:
                    print(f"vmshm fuzz: {self.index + 1} transactions, cycle {self.bus.now()}",
                          file=sys.stderr, flush=True)
        await self._dma_settle()
        self.check_objects()


#: Shortest name the "too long" class writes, counting its '/': one past NAME_MAX.
NAME_LONG = 256


def _words(words):
    if len(words) > 6:
        return " ".join(f"{w:x}" for w in words[:6]) + f" ... ({len(words)} words)"
    return " ".join(f"{w:x}" for w in words)


async def fuzz_guest(bus, *, seed, transactions, config, names, behaviours=DEFAULT_BEHAVIOURS,
                     history=20, check_every=500, progress=False):
    """Run a fuzz campaign on ``bus`` and return its outcome as plain data.

    Parameters
    ----------
    seed : int
        Seeds the traffic and the host's decisions.
    transactions : int
        Guest transactions to draw (enumeration and the BAR sizing's extra accesses not counted).
    config : dict
        :class:`~vmshm.fuzz.model.FuzzConfig` fields: the device's build parameters.
    names : dict
        ``objects`` (names of the host objects), ``empty`` (an empty object's name, or None),
        ``prefix`` (for names of objects that do not exist).
    behaviours : sequence of str
        Names from :data:`~vmshm.fuzz.host.BEHAVIOURS` to draw.
    progress : bool
        Print a line on stderr every ``check_every`` transactions.

    Returns
    -------
    dict
        ``transactions``, ``records`` (one tuple per bus request), ``counts`` per kind, ``stats``
        and ``mismatch`` (None, or the first mismatch with its history).
    """
    cfg = FuzzConfig(**config)
    host = ACTIVE["hosts"][0]
    fz = Fuzzer(bus, host, ACTIVE.get("probe"), cfg, seed=seed, behaviours=behaviours,
                names=names, history=history)
    fz.progress = progress
    mismatch = None
    try:
        await fz.run(transactions, check_every)
    except Mismatch as exc:
        mismatch = str(exc)
    except BusTimeout as exc:
        # The device never completed a request: a mismatch too (the model always answers).
        try:
            # Its message names the stream by its repr: say what a person needs instead.
            del exc
            fz._fail(f"no completion for: {fz.current}", "a completion",
                     "none within the bus timeout (the device hung)")
        except Mismatch as inner:
            mismatch = str(inner)
    return {"transactions": fz.index + 1 if mismatch is None else fz.index,
            "requests": len(fz.records), "records": fz.records, "counts": fz.counts,
            "stats": fz.stats, "mismatch": mismatch}
