"""The golden model: what VMShm answers, written from the register map and the docs, not the RTL.

:class:`DeviceModel` takes guest transactions at the PCI function (memory bursts with byte
enables, configuration requests, resets) together with what the host did for each one (answered
in time, late, or never asked), and returns the completion the device must give: its status and
every data word. It also holds every byte of the host's objects, so a run can compare them whole.

Sources, rule by rule:

- BARs, registers, reset values, access types, status codes: ``abi/regmap.py`` and
  ``docs/registers.md`` (OPEN and CLOSE read-to-trigger on the lane that holds them, unknown
  offsets read 0 and ignore writes, REJECTS cleared by any write, MAP_SIZE rounding);
- the name the host sees (bytes up to the first NUL, or the whole buffer) and its errno:
  the status-code table and the ``HostModel.open`` contract;
- the window (words past MAP_SIZE rounded up to a word are rejected, bytes past the object read
  0xff and ignore writes, nothing leaves while closed or with Bus Master Enable clear): the
  MAP_SIZE and REJECTS rows and ARCHITECTURE.md;
- timeouts (ETIMEDOUT, all ones for a timed-out read, a late OPEN success closed again, the
  stale answer drained before the next OPEN or CLOSE, TIMEOUTS counting each, the sticky
  DMA_ERROR bit of STATUS for a window's), what a misbehaving host's extra answers do (dropped by
  tag), a write cut off half-way (the beat on offer goes as it is, the rest with no byte
  enabled), resets reaching the host (it releases its object): ``docs/timing.md``, "The host
  timeout" and "What the device does when the host misbehaves", and ``docs/registers.md``;
- configuration space: its fields (IDs, command register, BARs, the capabilities and where they
  sit, what a write does to each) are the description in ``abi/config_space.py``, which the
  RTL is built from too, so the model checks that the RTL follows it, not the description
  itself (``scenarios/pci_config.py`` checks that against the PCI spec's rules); what sets
  Signaled Target Abort (a window read the host failed) and UR for anything not a one-dword
  request to the function: ``VMShmPCI``'s docstring.

Where the docs say nothing the RTL was read to decide, and the choice is marked ``RTL:`` below.
None of these looked like a bug, so the model follows the RTL on each:

- a window burst that runs past MAP_SIZE (rounded up to a word) is rejected whole and counted
  once in REJECTS, not cut at MAP_SIZE ("accesses to words at or past this offset are
  rejected" could be read either way);
- OPEN while open is EBUSY even with Bus Master Enable clear (EBUSY before EPERM);
- an OPEN or CLOSE read while a timed-out one's answer is still owed first waits for that answer
  under its own timeout, so it returns ETIMEDOUT even where it would have been EBUSY or EPERM;
- a window write whose acknowledgement times out (late, or never answered) completes SC and the
  host has the data: it took every beat before answering (docs/timing.md's "dropped" is about
  the beats a host never took);
- window and name-buffer reads return whole words whatever their byte enables; only a BAR0 read's
  first-beat byte enables matter (whether it touches OPEN's or CLOSE's lane); later beats of a
  burst count as touching every lane, so a burst through 0x20 triggers CLOSE;
- the name buffer keeps its bytes across a reset of the function (a RAM has no reset); a
  Function Level Reset clears it (:meth:`DeviceModel.flr`, docs/timing.md).
"""

from dataclasses import dataclass

from vmshm.abi import pci_regs as P
from vmshm.abi.config_space import ConfigState, vmshm_bars, vmshm_config_space
from vmshm.abi.regmap import BAR0_SIZE, BAR_NAME, BAR_REGS, NAME_MAX, REG, REGISTERS, Status

__all__ = ["FuzzConfig", "DeviceModel", "OPEN_OFF", "CLOSE_OFF"]

OPEN_OFF = REG["OPEN"].offset
CLOSE_OFF = REG["CLOSE"].offset
_DMA_ERROR_BIT = next(f.offset for f in REG["STATUS"].fields if f.name == "DMA_ERROR")
#: Window fates whose wait on the host times out.
_TIMED_OUT = ("late", "never-answer", "never-accept")


@dataclass(frozen=True)
class FuzzConfig:
    """The device a campaign builds: the build parameters the model needs."""
    data_width: int = 32
    window_size: int = 4096
    name_size: int = 512
    regs_size: int = BAR0_SIZE
    host_timeout: int = 1024

    @property
    def wb(self):
        return self.data_width // 8

    def params(self):
        """Return the build parameters of :class:`~vmshm.rtl.VMShmPCI`."""
        return {"data_width": self.data_width, "window_size": self.window_size,
                "name_size": self.name_size, "regs_size": self.regs_size,
                "host_timeout": self.host_timeout}


class Bar:
    """A BAR of the function: what it carries and where its register puts it."""

    def __init__(self, spec, config):
        self.function, self.index, self.size = spec.function, spec.index, spec.size
        self._config = config

    @property
    def base(self):
        return self._config[f"bar{self.index}"]

    @property
    def mask(self):
        return 0xFFFF_FFFF & ~(self.size - 1)


class DeviceModel:
    """Predict VMShm's completions and the host's objects, one transaction at a time.

    Parameters
    ----------
    config : FuzzConfig
    objects : dict
        ``{name (bytes, with the '/'): bytearray}``: the host's objects and their contents; the
        model changes them as the device's DMA would.
    """

    def __init__(self, config, objects):
        self.cfg = config
        self.wb = config.wb
        self.ones = (1 << config.data_width) - 1
        self.objects = objects
        # RTL: the name buffer is a RAM without reset; it powers up zero and keeps its bytes
        # across a reset of the function (the docs do not say).
        self.name_ram = bytearray(config.name_size)
        bars = vmshm_bars(regs_size=config.regs_size, window_size=config.window_size,
                          name_size=config.name_size)
        #: The configuration space's registers.
        self.config = ConfigState(vmshm_config_space(bars=bars, window_size=config.window_size,
                                                     name_size=config.name_size))
        self.bars = [Bar(b, self.config) for b in bars]
        self.reset()

    # -- state ----------------------------------------------------------------------------------

    def reset(self):
        """Apply a reset of the function: registers and configuration space to their reset values.

        docs/timing.md, "Resets reach the host": the core's first control beat out of reset is a
        RESET, and the host releases its object, so the next OPEN behaves as after power-on.
        """
        self._reset_core()
        self.config.reset()

    def flr(self):
        """Apply a Function Level Reset: the core as :meth:`reset`, the configuration space's
        fields the description marks ``flr``, and the name buffer cleared (PCIe Base 6.6.2: the
        core's sequencer zeroes the name RAM, which no reset clears; issue 22, finding 5)."""
        self._reset_core()
        self.config.reset(flr=True)
        self.name_ram[:] = bytes(len(self.name_ram))

    def _reset_core(self):
        self.is_open = False
        self.last_error = 0
        self.obj_name = None
        self.obj_size = 0
        self.map_size = 0
        self.rejects = 0
        self.timeouts = 0
        self.dma_error = False
        # Doorbells (ABI 1.2): the fuzzer's host never rings and has no peer ID, so INTR_STATUS
        # stays 0 and IVPOSITION reads 0xffffffff; the host takes every doorbell at once.
        # Read-write registers hold what was written, from their reset value, whatever they are:
        # the register map says which there are (INTR_MASK among them).
        self.rw = {r.name: r.reset or 0 for r in REGISTERS if r.access == "RW"}
        self.intr_status = 0
        self.host_base = 0
        self.host_open = None
        self.stale = None

    @property
    def mse(self):
        return bool(self.config["command"] & P.PCI_COMMAND_MEMORY)

    @property
    def bme(self):
        return bool(self.config["command"] & P.PCI_COMMAND_MASTER)

    @property
    def map_limit(self):
        wb = self.wb
        return (self.map_size + wb - 1) // wb * wb

    # -- the host, as the status-code table describes it ------------------------------------------

    def streamed_name(self):
        """Return the bytes OPEN streams to the host: up to and including the first NUL."""
        nul = self.name_ram.find(b"\0")
        return bytes(self.name_ram if nul < 0 else self.name_ram[:nul + 1])

    def host_answer_open(self):
        """Return ``(status, size)`` the host answers to OPEN with the name buffer as it is."""
        raw = self.streamed_name()
        if self.host_open is not None:
            return Status.EBUSY, 0
        if not raw.endswith(b"\0"):
            return Status.ENAMETOOLONG, 0
        name = raw[:-1]
        if (not name or not name.startswith(b"/") or b"/" in name[1:] or
                name in (b"/", b"/.", b"/..")):
            return Status.EINVAL, 0
        if len(name) - 1 > NAME_MAX:
            return Status.ENAMETOOLONG, 0
        if name not in self.objects:
            return Status.ENOENT, 0
        if not self.objects[name]:
            return Status.EINVAL, 0
        return Status.OK, len(self.objects[name])

    # -- what a guest access does -----------------------------------------------------------------

    def decode(self, addr, count):
        """Return the BAR a memory burst of ``count + 1`` words at ``addr`` hits, or None (UR)."""
        if not self.mse:
            return None
        hits = []
        for b in self.bars:
            if addr >> 32 or (addr & b.mask) != b.base:
                continue
            off = addr & (b.size - 1)
            if off // self.wb + count + 1 <= b.size // self.wb:
                hits.append((b, off))
        assert len(hits) <= 1, "the generator placed BARs that overlap"
        return hits[0] if hits else None

    def reg_word(self, off):
        """Return the register-file word at byte offset ``off`` of BAR0 (OPEN and CLOSE read 0)."""
        word = 0
        for lane in range(self.wb // 4):
            word |= self._reg(off + 4 * lane) << (32 * lane)
        return word

    @property
    def intr_mask(self):
        return self.rw["INTR_MASK"]

    def _constants(self):
        # Constant registers read their reset value, or the build parameter of their name
        # (WINDOW_SIZE, NAME_SIZE), as the RTL's register file is given them.
        build = {"WINDOW_SIZE": self.cfg.window_size, "NAME_SIZE": self.cfg.name_size}
        return {r.offset: build[r.name] if r.reset is None else r.reset
                for r in REGISTERS if r.access == "C"}

    def _reg(self, off):
        values = {
            **self._constants(),
            **{REG[name].offset: value for name, value in self.rw.items()},
            REG["STATUS"].offset: (int(self.is_open) | int(self.dma_error) << _DMA_ERROR_BIT |
                                   (self.last_error & 0xFF) << 8),
            REG["MAP_SIZE"].offset: self.map_size,
            REG["OBJ_SIZE_LO"].offset: self.obj_size & 0xFFFF_FFFF,
            REG["OBJ_SIZE_HI"].offset: self.obj_size >> 32,
            REG["REJECTS"].offset: self.rejects,
            REG["TIMEOUTS"].offset: self.timeouts,
            REG["INTR_STATUS"].offset: self.intr_status,
            REG["IVPOSITION"].offset: 0xFFFF_FFFF,
        }
        return values.get(off, 0)

    def triggers(self, off, count, be):
        """Return the ops (``"OPEN"``, ``"CLOSE"``) a BAR0 read burst triggers, in order."""
        ops = []
        for k in range(count + 1):
            o = off + k * self.wb
            # A read triggers when its byte enables touch the register's lane (lane 0 of the
            # word); beats after the first carry no byte enables and read whole words.
            if k == 0 and not be & 0xF:
                continue
            if o == OPEN_OFF:
                ops.append("OPEN")
            elif o == CLOSE_OFF:
                ops.append("CLOSE")
        return ops

    def op_reaches_host(self, op):
        """Return whether OPEN or CLOSE, read now, will send a request to the host."""
        if self.stale is not None:
            return False        # the caller decides whether the stale answer comes in time
        if op == "OPEN":
            return not self.is_open and self.bme
        return True

    def _do_op(self, op, fate):
        """Carry out OPEN or CLOSE; ``fate`` says what the host did. Return the status."""
        if self.stale is not None:
            # The device first waits for the stale answer; the caller issued this op only where
            # that answer cannot come before the timeout.
            assert fate == "blocked", fate
            status = Status.ETIMEDOUT
            stale_op, _, never = self.stale
            if never:
                # An answer that never comes is given up on; a forgotten OPEN, or this CLOSE,
                # goes to the host as a CLOSE to be sure, whose answer is owed in turn.
                self.stale = None
                if stale_op == "OPEN" or op == "CLOSE":
                    self.host_open = None
                    self.stale = ("CLOSE", Status.OK, False)
        elif op == "OPEN" and fate in ("stop-mid-name", "never-taken"):
            # The host never had the whole name: it takes the byte on offer and a RESET once
            # back, and holds nothing (docs/timing.md: a cut-off OPEN ends with RESET).
            self.stale = ("RESET", None, False)
            status = Status.ETIMEDOUT
        elif op == "OPEN" and self.is_open:
            status = Status.EBUSY
        elif op == "OPEN" and not self.bme:
            status = Status.EPERM
        elif op == "OPEN":
            status, size = self.host_answer_open()
            if status == Status.OK:
                self.host_open = self.streamed_name()[:-1]
            if fate in ("late", "never-answer"):
                self.stale = ("OPEN", status, fate == "never-answer")
                status = Status.ETIMEDOUT
            elif status == Status.OK:
                self.is_open = True
                self.obj_name = self.host_open
                self.obj_size = size
                self.map_size = min(size, self.cfg.window_size)
                self.host_base = self.next_host_base
        else:
            # CLOSE leaves the window closed whatever the host answers.
            self.is_open = False
            self.obj_name = None
            self.obj_size = self.map_size = 0
            self.host_open = None
            status = Status.OK
            if fate in ("late", "never-answer", "never-taken"):
                # A CLOSE never taken goes once the host is back: its answer is owed as a late one.
                self.stale = ("CLOSE", status, fate == "never-answer")
                status = Status.ETIMEDOUT
        if status == Status.ETIMEDOUT:
            self.count_timeout()
        self.last_error = status
        return status

    def cut_write(self):
        """Undo the last window write: a reset cut it off before the host stored it (a host
        drops a write cut off by the reset: docs/timing.md, "Resets reach the host")."""
        obj, off, old = self._undo
        obj[off:off + len(old)] = old

    def count_timeout(self, *, window=False):
        """Count a wait on the host that timed out (TIMEOUTS); a window's sets DMA_ERROR."""
        self.timeouts = min(self.timeouts + 1, 0xFFFF_FFFF)
        if window:
            self.dma_error = True

    #: The host bus address the host gives with its next OPEN success (set by the generator).
    next_host_base = 0

    def settle(self):
        """Take the stale answer of a timed-out OPEN or CLOSE, once it has certainly come.

        A late OPEN success is closed again by the device, so the host ends up holding nothing.
        An answer that never comes stays awaited (the next OPEN or CLOSE gives up on it).
        """
        if self.stale is not None and not self.stale[2]:
            op, status, _ = self.stale
            if op == "OPEN" and status == Status.OK:
                self.host_open = None
            self.stale = None

    def mem_read(self, addr, count, be, fates=(), dma_fate=None):
        """Return ``(status, words)`` of a memory read burst of ``count + 1`` words.

        ``fates`` holds one fate (``"fast"``, ``"late"``, ``"blocked"``, ``"never-answer"``,
        ``"stop-mid-name"``, ``"never-taken"``) per OPEN or CLOSE the burst triggers;
        ``dma_fate`` says what the host does with a window read: ``"late"``
        (answers after the timeout) and ``"never-answer"`` time out; ``"answer-twice"``,
        ``"unasked"`` (extra answers dropped by their tags) and ``"fast"`` do not;
        ``"never-accept"`` (the request is not taken within the timeout) times out too.
        """
        n = count + 1
        hit = self.decode(addr, count)
        if hit is None:
            return "UR", [self.ones] * n
        bar, off = hit
        wb = self.wb
        if bar.function == BAR_REGS:
            fates = list(fates)
            words = []
            for k in range(n):
                o = off + k * wb
                word = self.reg_word(o)
                if (o in (OPEN_OFF, CLOSE_OFF)) and (k > 0 or be & 0xF):
                    op = "OPEN" if o == OPEN_OFF else "CLOSE"
                    status = self._do_op(op, fates.pop(0))
                    word = (word & ~0xFFFF_FFFF) | status
                words.append(word)
            return "SC", words
        if bar.function == BAR_NAME:
            return "SC", [int.from_bytes(self.name_ram[off + k * wb:off + (k + 1) * wb],
                                         "little") for k in range(n)]
        if not self.window_ok(off, count):
            self.rejects = min(self.rejects + 1, 0xFFFF_FFFF)
            return "SC", [self.ones] * n
        if dma_fate in _TIMED_OUT:
            # docs/timing.md: all ones, counted in TIMEOUTS, DMA_ERROR set; the soft front end
            # signals a Target Abort in its Status register (VMShmPCI's docstring).
            self.count_timeout(window=True)
            self.config["status_sig_target_abort"] = 1
            return "SC", [self.ones] * n
        obj = self.objects[self.obj_name]
        raw = bytes(obj[off:off + n * wb])
        raw += b"\xff" * (n * wb - len(raw))
        return "SC", [int.from_bytes(raw[k * wb:(k + 1) * wb], "little") for k in range(n)]

    def window_ok(self, off, count):
        """Return whether a window burst at ``off`` reaches the host."""
        end = off + (count + 1) * self.wb
        return self.is_open and self.bme and end <= self.map_limit

    def mem_write(self, addr, beats, dma_fate=None):
        """Return the status of a memory write burst of ``beats`` (``(data, be)`` pairs).

        ``dma_fate`` as for :meth:`mem_read`; besides, ``("stop-mid-packet", b)``: the host
        stops before beat ``b`` for longer than the timeout.
        """
        hit = self.decode(addr, len(beats) - 1)
        if hit is None:
            return "UR"
        bar, off = hit
        wb = self.wb
        if bar.function == BAR_REGS:
            rej, tmo, st = (REG[r].offset for r in ("REJECTS", "TIMEOUTS", "STATUS"))
            for k, (data, be) in enumerate(beats):
                o = off + k * wb
                if o == rej & ~(wb - 1) and (be >> (rej % wb)) & 0xF:
                    self.rejects = 0
                if o == tmo & ~(wb - 1) and (be >> (tmo % wb)) & 0xF:
                    self.timeouts = 0
                # STATUS is read-only but for DMA_ERROR: a write with its bit set clears it.
                if (o == st & ~(wb - 1) and be >> (st % wb) & 1 and
                        data >> (8 * (st % wb) + _DMA_ERROR_BIT) & 1):
                    self.dma_error = False
                # Read-write registers (the map's, INTR_MASK among them): byte by byte;
                # INTR_STATUS: write 1 to clear.
                for name in (*self.rw, "INTR_STATUS"):
                    r = REG[name].offset
                    if o != r & ~(wb - 1):
                        continue
                    lane_be = be >> (r % wb) & 0xF
                    bits = sum(0xFF << (8 * i) for i in range(4) if lane_be >> i & 1)
                    value = data >> (8 * (r % wb)) & 0xFFFF_FFFF & bits
                    if name in self.rw:
                        self.rw[name] = self.rw[name] & ~bits | value
                    else:
                        self.intr_status &= ~value
            return "SC"
        if bar.function == BAR_NAME:
            for k, (data, be) in enumerate(beats):
                for i in range(wb):
                    if be >> i & 1:
                        self.name_ram[off + k * wb + i] = data >> (8 * i) & 0xFF
            return "SC"
        if not self.window_ok(off, len(beats) - 1):
            self.rejects = min(self.rejects + 1, 0xFFFF_FFFF)
            return "SC"
        # "late", "never-answer": the host took every beat and stores the data; only its
        # acknowledgement does not come in time, and that wait timing out counts like any other.
        # "stop-mid-packet" before beat b: the beat on offer then stays owed and goes out as it
        # is; the rest are finished with no byte enabled (docs/timing.md). "never-accept": the
        # same before beat 0, so only the first beat's bytes reach the host.
        keep = len(beats)
        if isinstance(dma_fate, tuple) and dma_fate[0] == "stop-mid-packet":
            keep = dma_fate[1] + 1
            self.count_timeout(window=True)
        elif dma_fate == "never-accept":
            keep = 1
            self.count_timeout(window=True)
        elif dma_fate in _TIMED_OUT:
            self.count_timeout(window=True)
        obj = self.objects[self.obj_name]
        # What the bytes were, should a reset cut the write off before the host stores it.
        self._undo = (obj, off, bytes(obj[off:off + keep * wb]))
        for k, (data, be) in enumerate(beats[:keep]):
            for i in range(wb):
                a = off + k * wb + i
                if be >> i & 1 and a < len(obj):
                    obj[a] = data >> (8 * i) & 0xFF
        return "SC"

    # -- configuration space -----------------------------------------------------------------------

    def cfg_dword(self, off):
        """Return the configuration dword at ``off`` (a multiple of 4)."""
        return self.config.read(off, {"status_interrupt": int(bool(self.intr_status &
                                                                   self.intr_mask))})

    def _cfg_ok(self, dev, addr, count):
        # Only a one-word request to this function's slot, inside 4 KiB, is served.
        return dev == 0 and count == 0 and addr < 4096

    def cfg_read(self, dev, addr, count):
        """Return ``(status, words)`` of a configuration read."""
        if not self._cfg_ok(dev, addr, count):
            return "UR", [self.ones] * (count + 1)
        word = 0
        base = addr & ~(self.wb - 1)
        for lane in range(self.wb // 4):
            word |= self.cfg_dword(base + 4 * lane) << (32 * lane)
        return "SC", [word]

    def cfg_write(self, dev, addr, beats):
        """Return the status of a configuration write."""
        if not self._cfg_ok(dev, addr, len(beats) - 1):
            return "UR"
        data, be = beats[0]
        base = addr & ~(self.wb - 1)
        for lane in range(self.wb // 4):
            fired = self.config.write(base + 4 * lane, data >> (32 * lane) & 0xFFFF_FFFF,
                                      be >> (4 * lane) & 0xF)
            if "exp_initiate_flr" in fired:
                self.flr()
        return "SC"
