"""Run guest functions on the native model: Python submits bursts, C++ runs the cycles.

:func:`simulate` is the native counterpart of :func:`vmshm.sim.simulate`: the same system top (as
Verilated C++), the same :class:`~vmshm.driver_model.bus.GuestBus` records, host models and
:class:`~vmshm.harness.top.SimResult`. The C++ harness plays the BFMs of :mod:`vmshm.harness.bfm`
cycle for cycle and comes back to Python only when a burst completes or it needs the host model:
OPEN and CLOSE always (their rules live in :class:`~vmshm.host_model.HostModel`), DMA only for a
host model that overrides HostModel's DMA or that HostModel would refuse (the rest is served in
C++ on the object's descriptor), and back-pressure draws, which come from the same
:class:`~vmshm.host_model.HostStalls` generators the Python BFMs use. A misbehaving host's
:class:`~vmshm.host_model.HostFaults` are handed over when they change and played in C++ as
:class:`~vmshm.harness.bfm.HostBFM` plays them. A one-word access (what a QEMU guest's load or store
is) takes a short path: its request and answer go through a block of the harness's memory, so it
costs one call with no argument conversions.
"""

import ctypes
import time
from functools import cache

from vmshm.harness.bfm import HostBFM, HostEvent, bus_timeout
from vmshm.driver_model.bus import (MAX_BURST, Access, BusTimeout, GuestBus, Interrupt, Space,
                                   Transaction, split_bursts)
from vmshm.host_model import HostModel, HostTiming
from vmshm.host_model.faults import FAULT_KINDS, FOREVER
from vmshm.abi.regmap import CtlOp
from vmshm.rtl.layouts import CplStatus
from vmshm.rtl.layouts import Space as RtlSpace
from vmshm.harness.top import SimResult, per_device

from . import shared
from .build import build

__all__ = ["NativeError", "NativeSim", "NativeGuestBus", "simulate"]

#: What the harness's runs return (native/shared.py's RUN_STATUS, in the harness's numbering).
(_ST_DONE, _ST_CTL, _ST_DMA, _ST_DRAWS, _ST_TIMEOUT, _ST_DB, _ST_IRQ) = (
    shared.RUN_STATUS.index(n) for n in ("DONE", "CTL", "DMA", "DRAWS", "TIMEOUT", "DB", "IRQ"))
_CHANNELS = len(shared.CHANNELS)
#: Back-pressure draws handed to C++ at a time.
_BATCH = 4096
_DMA_OPS = {code: name for name, code in shared.EVENT_OPS.items()}
_CTL_OPS = {CtlOp.OPEN: "OPEN", CtlOp.CLOSE: "CLOSE", CtlOp.RESET: "RESET"}
assert set(shared.FAULT_KINDS) == set(FAULT_KINDS), "a fault kind the harness does not know"
#: Completion status names by value: an enum lookup per burst costs more than the burst's C++.
_STATUS_NAMES = {int(s): s.name for s in CplStatus}
_SPACES = {Space.MEM: int(RtlSpace.MEM), Space.CFG: int(RtlSpace.CFG)}
#: The harness's Shared block, by 64-bit word (native/shared.py's SHARED).
(_CYCLE, _START, _DATA, _STATUS, _SPACE, _DEV, _ADDR, _WRITE, _WDATA, _BE, _REQ_TIMEOUT) = (
    shared.word(n) for n in ("cycle", "start", "data", "status", "space", "dev", "addr",
                             "write", "wdata", "be", "timeout"))


def _record(access, space, dev, addr, words, start, end, status, label):
    # A Transaction without the frozen dataclass's __init__ (one object.__setattr__ per field):
    # half the cost, on the path of every access a QEMU guest waits for. Equal to one made the
    # usual way (tests/test_native.py checks).
    record = object.__new__(Transaction)
    record.__dict__.update(access=access, space=space, dev=dev, addr=addr, words=words,
                           start=start, end=end, status=status, label=label)
    return record


if tuple(Transaction.__dataclass_fields__) != ("access", "space", "dev", "addr", "words",
                                               "start", "end", "status", "label"):
    # Transaction has changed: its own constructor, defaults and all, until _record follows.
    _record = Transaction  # noqa: F811


class NativeError(RuntimeError):
    """The native backend cannot run what it was asked to."""


@cache
def _load(path):
    lib = ctypes.CDLL(str(path))
    vp, u64, u32, i32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int
    pi32, pu64, pu32 = ctypes.POINTER(i32), ctypes.POINTER(u64), ctypes.POINTER(u32)
    pu8 = ctypes.POINTER(ctypes.c_uint8)
    for name, res, args in (
            ("vm_config", i32, [pi32, pi32]),
            ("vm_new", vp, [ctypes.c_char_p]),
            ("vm_edge_phases", i32, []),
            ("vm_input_passes", u64, [vp]),
            ("vm_free", None, [vp]),
            ("vm_now", u64, [vp]),
            ("vm_shared", vp, [vp]),
            ("vm_word", i32, [vp, pi32]),
            ("vm_set_timing", None, [vp, i32, u32, i32]),
            ("vm_add_draws", None, [vp, i32, i32, ctypes.c_char_p, i32]),
            ("vm_set_fast", None, [vp, i32, i32]),
            ("vm_set_region", i32, [vp, i32, i32, u64]),
            ("vm_submit", None, [vp, i32, i32, u64, i32, i32, i32, pu64, pu32, u64]),
            ("vm_idle", None, [vp, u64]),
            ("vm_reset", None, [vp, u64]),
            ("vm_host_base", u64, [vp, i32]),
            ("vm_run", i32, [vp, pi32]),
            ("vm_go", i32, [vp, i32, i32, u64, i32, i32, i32, pu64, pu32, u64, pi32]),
            ("vm_go_bytes", i32, [vp, i32, i32, u64, i32, vp, vp, u32, u32, u64, pi32]),
            ("vm_result", i32, [vp, pu64, pi32]),
            ("vm_ctl_request", i32, [vp, i32, ctypes.c_char_p, pi32]),
            ("vm_ctl_answer", None, [vp, i32, i32, u64, u64, u32]),
            ("vm_ctl_drop", None, [vp, i32]),
            ("vm_dma_request", i32, [vp, i32, pu64, pi32, pu64, pu32]),
            ("vm_dma_answer", None, [vp, i32, i32, pu64, u32]),
            ("vm_events", i32, [vp, i32, pu64, pu8, pu8, i32]),
            ("vm_set_faults", None, [vp, i32, i32, pu64]),
            ("vm_db_stall", None, [vp, i32, u64, u64]),
            ("vm_db_take", None, [vp, i32, pu32, pu32]),
            ("vm_ring", None, [vp, i32, i32]),
            ("vm_set_peer", None, [vp, i32, i32, i32]),
            ("vm_intx", i32, [vp, i32]),
            ("vm_irqs", i32, [vp, i32, pu64, pu8, pu64, pu32, i32])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def _fault_rows(faults):
    # HostFaults as the harness's rows: (channel, kind, exchange, beat, cycles) each.
    rows = []
    for f in faults.faults if faults else ():
        if f.channel == "db":
            continue    # a doorbell's stall goes over vm_db_stall
        cycles = f.cycles if f.cycles is not None else FOREVER if f.kind == "stall" else 0
        rows += [shared.FAULT_CHANNELS.index(f.channel), shared.FAULT_KINDS.index(f.kind),
                 f.exchange,
                 f.beat, cycles]
    return (ctypes.c_uint64 * len(rows))(*rows), len(rows) // 5


def _serves_dma_as_plain(host):
    # A host model that changes DMA (counts it, changes latencies) is asked in Python; a plain
    # one's rules (HostModel.dma_read, dma_write, _clip) are copied in the C++ harness.
    kind = type(host)
    return all(getattr(kind, m) is getattr(HostModel, m) for m in ("dma_read", "dma_write",
                                                                    "_clip"))


class NativeSim:
    """One native simulation of ``devices`` functions, each with its host model and timing.

    Parameters
    ----------
    devices : int
    hosts : list of HostModel
    timings : list of HostTiming
        Each host's timing: read again before every burst, as the Python BFMs read it.
    waves : path, optional
        Write a VCD waveform of the run there (a build with Verilator's tracing).
    **params
        Build parameters of every :class:`~vmshm.rtl.VMShmPCI`.
    """

    def __init__(self, devices, hosts, timings, *, waves=None, **params):
        self._model = build(devices, waves=waves is not None, **params)
        self._lib = lib = _load(self._model.path)
        self.data_width = self._model.data_width
        self.host_timeout = self._model.host_timeout
        self.hosts = hosts
        self.timings = timings
        self._h = lib.vm_new(str(waves).encode() if waves is not None else None)
        if not self._h:
            raise NativeError("the native model could not be made")
        self._wb = self.data_width // 8
        # Reused on every burst: a burst's Python cost is what a guest's access waits for.
        self._out = (ctypes.c_uint64 * shared.MAX_BURST)()
        self._data = (ctypes.c_uint64 * shared.MAX_BURST)()
        self._be = (ctypes.c_uint32 * shared.MAX_BURST)()
        self._which = ctypes.c_int()
        self._which_ref = ctypes.byref(self._which)
        self._status = ctypes.c_int()
        self._status_ref = ctypes.byref(self._status)
        # The harness's Shared block, read and written in place: no call, no conversions.
        block = (ctypes.c_uint64 * len(shared.SHARED)).from_address(lib.vm_shared(self._h))
        self._pub = memoryview(block).cast("B").cast("Q")
        self._told = [None] * devices
        self._faults_told = [None] * devices
        self._pairs = list(zip(range(devices), hosts, timings))
        #: Seconds spent running cycles in C++ (the rest of a run's wall time is Python's).
        self.compiled_s = 0.0
        self._mapped = [None] * devices
        self._gates = []
        # HostBFM's own rules answer the control channel (HostBFM.control, device_reset).
        self._bfms = []
        for i, (host, timing) in enumerate(zip(hosts, timings)):
            # HostBFM decides which channels draw, once per process, as its processes do.
            bfm = HostBFM(None, self.data_width, host, timing)
            self._bfms.append(bfm)
            gates = bfm._gates("ctl_ready", "rsp_valid") + bfm._gates("dma_ready", "rsp_valid")
            self._gates.append(gates)
            lib.vm_set_fast(self._h, i, _serves_dma_as_plain(host))
            for f in (timing.faults.faults if timing.faults else ()):
                lib.vm_db_stall(self._h, i, f.exchange, timing.faults.stall("db", f.exchange, 0))
        #: The guest's interrupts (GuestBus.interrupts), shared with the bus.
        self.interrupts = []
        self._peers = [None] * devices
        self._sync()

    def close(self):
        """Free the model (and close its waveform); the hosts are the caller's."""
        if self._h:
            # The block goes with the model; the cycle count stays readable.
            self._pub = list(self._pub)
            self._lib.vm_free(self._h)
            self._h = None

    def now(self):
        """Return the number of clock edges since reset."""
        return self._pub[_CYCLE]

    def edge_phases(self):
        """Return whether rising edges skip Verilator's second input pass (``harness.cpp``'s
        ``edge()``): false where the Verilator installed names its phases otherwise."""
        return bool(self._lib.vm_edge_phases())

    def input_passes(self):
        """Return how many cycles settled their inputs with eval()'s input pass; the others
        changed no input and skipped it (``harness.cpp``'s ``settle()``)."""
        return self._lib.vm_input_passes(self._h)

    def _sync(self):
        # Latencies may change between bursts (a LateHost changes them), and so may the object
        # open on each host and its faults (the fuzzer sets them per access): hand over what
        # changed before running cycles. Checked before every burst, so kept to one test each.
        for i, host, timing in self._pairs:
            if (timing.dma_latency != self._told[i] or host.region is not self._mapped[i]
                    or timing.faults is not self._faults_told[i]):
                self._hand_over(i, host, timing)

    def _hand_over(self, i, host, timing):
        lib = self._lib
        if timing.dma_latency != self._told[i]:
            mask = sum(1 << c for c, g in enumerate(self._gates[i]) if g is not None)
            lib.vm_set_timing(self._h, i, timing.dma_latency, mask)
            self._told[i] = timing.dma_latency
        region = host.region
        if region is not self._mapped[i]:
            err = (lib.vm_set_region(self._h, i, region.fileno(), region.size)
                   if region is not None else lib.vm_set_region(self._h, i, -1, 0))
            if err:
                raise NativeError(f"cannot use the object {region.name!r} for the native "
                                  f"model: errno {err}")
            self._mapped[i] = region
        if timing.faults is not self._faults_told[i]:
            rows, n = _fault_rows(timing.faults)
            lib.vm_set_faults(self._h, i, n, rows)
            self._faults_told[i] = timing.faults

    def _host_ports(self):
        # As HostBFM's ring process and the harnesses' before_clock: at the guest's drive point
        # the hosts' peer IDs go onto the ports and their queued rings into the ring processes.
        lib = self._lib
        for i, host in enumerate(self.hosts):
            if host.peer_id != self._peers[i]:
                self._peers[i] = host.peer_id
                lib.vm_set_peer(self._h, i, host.peer_id is not None, host.peer_id or 0)
            if host.pending_rings():
                for vector in host.take_rings():
                    lib.vm_ring(self._h, i, vector)

    def intx(self, i):
        """Return device ``i``'s INTx level now."""
        return self._lib.vm_intx(self._h, i)

    def transact(self, space, dev, addr, write, count, datas, bes, timeout):
        """Run one guest burst to its end; return ``(data words, worst status)``."""
        n = len(datas)
        self._sync()
        self._host_ports()
        self._data[:n] = datas
        self._be[:n] = bes
        t0 = time.perf_counter()
        status = self._lib.vm_go(self._h, space, dev, addr, write, count, n, self._data,
                                 self._be, timeout or 0, self._which_ref)
        self.compiled_s += time.perf_counter() - t0
        if status != _ST_DONE:
            self._run(timeout, status)
        words = self._lib.vm_result(self._h, self._out, self._status_ref)
        return self._out[:words], self._status.value

    def burst_bytes(self, space, dev, addr, count, src, dst, first_be, last_be, timeout):
        """Run one burst of ``count + 1`` words given as bytes to its end; return its status.

        A write (``src``: the address of its bytes) or a read (``src`` 0: ``dst`` is where its
        bytes go): :meth:`transact` without a conversion per word (``vm_go_bytes``).
        """
        self._sync()
        self._host_ports()
        t0 = time.perf_counter()
        status = self._lib.vm_go_bytes(self._h, space, dev, addr, count, src or None,
                                       dst or None, first_be, last_be, timeout or 0,
                                       self._which_ref)
        self.compiled_s += time.perf_counter() - t0
        if status != _ST_DONE:
            self._run(timeout, status)
        return self._pub[_STATUS]

    def word(self, space, dev, addr, write, data, be, timeout):
        """Run a one-beat burst to its end; return ``(data word, worst status, start cycle)``.

        :meth:`transact` for one word, with its arguments handed over in the Shared block.
        """
        self._sync()
        self._host_ports()
        pub = self._pub
        pub[_SPACE] = space
        pub[_DEV] = dev
        pub[_ADDR] = addr
        pub[_WRITE] = write
        pub[_WDATA] = data
        pub[_BE] = be
        pub[_REQ_TIMEOUT] = timeout or 0
        t0 = time.perf_counter()
        status = self._lib.vm_word(self._h, self._which_ref)
        self.compiled_s += time.perf_counter() - t0
        if status != _ST_DONE:
            self._run(timeout, status)
        return pub[_DATA], pub[_STATUS], pub[_START]

    def reset(self):
        """Reset every function for one clock edge, then release what the hosts hold open.

        As :func:`vmshm.sim.simulate`'s reset: the cycle count goes on, the host processes run
        through the edge, and every host closes its object afterwards.
        """
        self.hold_reset(1)
        for host in self.hosts:
            if host.is_open:
                host.close()
        self._sync()

    def hold_reset(self, cycles):
        """Hold every function's reset for ``cycles`` clock edges, nothing more.

        The host processes run on; a host releases its object when the core's RESET reaches it,
        as with the fuzzer's Amaranth top (``rst_fn``).
        """
        self._sync()
        self._host_ports()
        self._lib.vm_reset(self._h, cycles)
        self._run(None)
        self._sync()

    def host_base(self, i):
        """Return device ``i``'s core's ``host_base`` register (the open object's bus address)."""
        return self._lib.vm_host_base(self._h, i)

    def set_bus_address(self, i, addr):
        """Make device ``i``'s host give ``addr`` as the object's bus address at the next OPEN."""
        self._bfms[i].bus_address = addr

    def idle(self, cycles):
        """Let ``cycles`` clock edges pass, the hosts still serving the device."""
        self._sync()
        self._host_ports()
        self._lib.vm_idle(self._h, cycles)
        self._run(None)

    def _run(self, timeout, status=None):
        # Serve what the harness asks for until the burst is done; ``status`` is what the call
        # that started it returned, if it ran already.
        lib, h, which = self._lib, self._h, self._which
        while True:
            if status is None:
                t0 = time.perf_counter()
                status = lib.vm_run(h, self._which_ref)
                self.compiled_s += time.perf_counter() - t0
            if status == _ST_DONE:
                return
            if status == _ST_CTL:
                self._serve_ctl(which.value)
            elif status == _ST_DMA:
                self._serve_dma(which.value)
            elif status == _ST_DRAWS:
                dev, channel = divmod(which.value, _CHANNELS)
                gate = self._gates[dev][channel]
                draws = bytes(gate() for _ in range(_BATCH))
                lib.vm_add_draws(h, dev, channel, draws, len(draws))
            elif status == _ST_DB:
                self._serve_db(which.value)
            elif status == _ST_IRQ:
                self._take_irqs(which.value)
            elif status == _ST_TIMEOUT:
                raise BusTimeout(f"the device made no progress on the guest bus for {timeout} "
                                 f"cycles")
            else:
                raise NativeError(f"the native model returned an unknown status {status}")
            status = None

    def _serve_ctl(self, i):
        # As HostBFM.ctl_process: the host model decides, its timing says when.
        timing = self.timings[i]
        size = ctypes.c_int(4096)
        buf = ctypes.create_string_buffer(size.value)
        op = self._lib.vm_ctl_request(self._h, i, buf, ctypes.byref(size))
        if size.value > len(buf):
            buf = ctypes.create_string_buffer(size.value)
            op = self._lib.vm_ctl_request(self._h, i, buf, ctypes.byref(size))
        name = buf.raw[:size.value]
        if op == CtlOp.RESET:
            # The device was reset (or gave up on the packet): release, and never answer.
            self._bfms[i].device_reset()
            self._lib.vm_ctl_drop(self._h, i)
            self._sync()
            return
        status, size, addr = self._bfms[i].control(op, name)
        self._lib.vm_ctl_answer(self._h, i, status, size, addr, timing.ctl_latency)
        self._sync()

    def _serve_dma(self, i):
        # As HostBFM.dma_process, for a host model whose DMA is its own.
        host, timing, wb = self.hosts[i], self.timings[i], self._wb
        addr, words = ctypes.c_uint64(), ctypes.c_int()
        write = self._lib.vm_dma_request(self._h, i, ctypes.byref(addr), ctypes.byref(words),
                                         self._out, self._be)
        n = words.value
        if write:
            data = b"".join(self._out[k].to_bytes(wb, "little") for k in range(n))
            mask = [bool(self._be[k] >> b & 1) for k in range(n) for b in range(wb)]
            ok = host.dma_write(addr.value, data, mask)
            out = None
        else:
            data, ok = host.dma_read(addr.value, n * wb)
            out = (ctypes.c_uint64 * n)(*(int.from_bytes(data[k * wb:(k + 1) * wb], "little")
                                          for k in range(n)))
        self._lib.vm_dma_answer(self._h, i, bool(ok), out, timing.dma_latency)

    def _serve_db(self, i):
        # As HostBFM.db_process: the host model takes the doorbell at the drive point after it.
        peer, vector = ctypes.c_uint32(), ctypes.c_uint32()
        self._lib.vm_db_take(self._h, i, ctypes.byref(peer), ctypes.byref(vector))
        self.hosts[i].doorbell(peer.value, vector.value)

    def _take_irqs(self, i):
        n = 16
        cycles, kinds = (ctypes.c_uint64 * n)(), (ctypes.c_uint8 * n)()
        addrs, datas = (ctypes.c_uint64 * n)(), (ctypes.c_uint32 * n)()
        while True:
            got = self._lib.vm_irqs(self._h, i, cycles, kinds, addrs, datas, n)
            self.interrupts += [Interrupt(cycles[k], i, shared.IRQ_KINDS[kinds[k]], addrs[k],
                                          datas[k])
                                for k in range(got)]
            if got < n:
                return

    def events(self):
        """Return each device's host-side handshakes as lists of :class:`HostEvent`."""
        out = []
        for i in range(len(self.hosts)):
            n = self._lib.vm_events(self._h, i, None, None, None, 0)
            cycles = (ctypes.c_uint64 * n)()
            kinds, ops = (ctypes.c_uint8 * n)(), (ctypes.c_uint8 * n)()
            self._lib.vm_events(self._h, i, cycles, kinds, ops, n)
            out.append([HostEvent(cycles[k], shared.EVENT_KINDS[kinds[k]],
                                  _DMA_OPS.get(ops[k]) or _CTL_OPS.get(ops[k], f"op{ops[k]}"))
                        for k in range(n)])
        return out


class NativeGuestBus(GuestBus):
    """The guest bus of a :class:`NativeSim`: each burst runs in C++ to its last completion."""

    def __init__(self, sim, *, timeout):
        super().__init__()
        self._sim = sim
        self._timeout = timeout
        self.interrupts = sim.interrupts
        self.hosts = sim.hosts

    @property
    def data_width(self):
        return self._sim.data_width

    def now(self):
        return self._sim.now()

    @property
    def timeout(self):
        """Cycles without progress before a burst gives up (``None``: wait for ever)."""
        return self._timeout

    @timeout.setter
    def timeout(self, cycles):
        self._timeout = cycles

    async def reset(self):
        """Reset every device on the bus and its host side, as a PCI function reset does."""
        self._sim.reset()

    async def idle(self, cycles):
        """Let ``cycles`` clock edges pass: one call into C++, not one wake-up per edge."""
        self._sim.idle(cycles)

    @property
    def sim(self):
        """The :class:`NativeSim` this bus drives (resets, ``host_base``: the fuzzer's probe)."""
        return self._sim

    def intx(self, dev=0):
        return self._sim.intx(dev)

    async def _read(self, space, dev, offset, size, max_words=MAX_BURST):
        # The common case (a register, a guest's load): one word, one call into C++. The same
        # burst and record as GuestBus._read makes.
        wb = self._sim._wb
        lo = offset % wb
        if not 0 < size <= wb - lo:
            return await self._bulk_read(space, dev, offset, size, max_words)
        sim, addr = self._sim, offset - lo
        word, status, start = sim.word(_SPACES[space], dev or 0, addr, 0, 0,
                                       ((1 << size) - 1) << lo, self._timeout)
        self.records.append(_record(Access.READ, space, dev, addr, 1, start, sim.now(),
                                    _STATUS_NAMES[status], self.label))
        return (word >> 8 * lo & ((1 << 8 * size) - 1)).to_bytes(size, "little")

    async def _write(self, space, dev, offset, data, max_words=MAX_BURST):
        data = bytes(data)
        wb = self._sim._wb
        lo = offset % wb
        size = len(data)
        if not 0 < size <= wb - lo:
            return await self._bulk_write(space, dev, offset, data, max_words)
        sim, addr = self._sim, offset - lo
        _, status, start = sim.word(_SPACES[space], dev or 0, addr, 1,
                                    int.from_bytes(data, "little") << 8 * lo,
                                    ((1 << size) - 1) << lo, self._timeout)
        self.records.append(_record(Access.WRITE, space, dev, addr, 1, start, sim.now(),
                                    _STATUS_NAMES[status], self.label))

    async def _bulk_read(self, space, dev, offset, size, max_words):
        # GuestBus._read's bursts and records, each burst's bytes written by C++ in place.
        sim, wb = self._sim, self._sim._wb
        base = offset - offset % wb
        buf = bytearray((offset + size - base + wb - 1) // wb * wb)
        at = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
        sp, records, label = _SPACES[space], self.records, self.label
        for addr, n, first_be, _, _, _ in split_bursts(offset, size, wb, max_words):
            start = sim.now()
            status = sim.burst_bytes(sp, dev or 0, addr, n - 1, 0, at + addr - base, first_be,
                                     first_be, self._timeout)
            records.append(_record(Access.READ, space, dev, addr, n, start, sim.now(),
                                   _STATUS_NAMES[status], label))
        return bytes(buf[offset - base:offset - base + size])

    async def _bulk_write(self, space, dev, offset, data, max_words):
        # GuestBus._write's bursts, beats and records, each burst's beats made by C++.
        sim, wb = self._sim, self._sim._wb
        base = offset - offset % wb
        pad = -(offset + len(data)) % wb
        raw = (ctypes.c_char * (offset - base + len(data) + pad)).from_buffer_copy(
            bytes(offset - base) + data + bytes(pad))
        at = ctypes.addressof(raw)
        sp, records, label = _SPACES[space], self.records, self.label
        for addr, n, first_be, last_be, _, _ in split_bursts(offset, len(data), wb, max_words):
            start = sim.now()
            status = sim.burst_bytes(sp, dev or 0, addr, n - 1, at + addr - base, 0, first_be,
                                     last_be, self._timeout)
            records.append(_record(Access.WRITE, space, dev, addr, n, start, sim.now(),
                                   _STATUS_NAMES[status], label))

    async def _burst_read(self, space, dev, addr, words, be):
        out, status = self._sim.transact(_SPACES[space], dev or 0, addr, 0, words - 1, (0,),
                                         (be,), self._timeout)
        return out, _STATUS_NAMES[status]

    async def _burst_write(self, space, dev, addr, beats):
        datas, bes = zip(*beats)
        _, status = self._sim.transact(_SPACES[space], dev or 0, addr, 1, len(beats) - 1,
                                       datas, bes, self._timeout)
        return _STATUS_NAMES[status]


def _drive(coro):
    # The bus never suspends (every burst runs to its end in C++), so one send runs the guest.
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise NativeError("the guest function awaited something other than the bus; on the native "
                      "backend a guest function may only await bus operations")


def simulate(scenario, *, devices=1, hosts=None, timing=None, vcd=None, **params):
    """Run ``await scenario(bus)`` on the native model; return a :class:`SimResult`.

    Takes the arguments of :func:`vmshm.sim.simulate`. The result also has ``compiled_s``, the
    seconds spent running cycles in C++.
    """
    hosts = per_device(hosts, devices, HostModel, "hosts")
    timings = per_device(timing, devices, HostTiming, "timing")
    sim = NativeSim(devices, hosts, timings, waves=vcd, **params)
    result = SimResult()
    bus = NativeGuestBus(sim, timeout=bus_timeout(sim.host_timeout))
    try:
        result.value = _drive(scenario(bus))
        result.cycles = sim.now()
    finally:
        result.records = bus.records
        result.events = sim.events()
        result.compiled_s = sim.compiled_s
        sim.close()
    return result

