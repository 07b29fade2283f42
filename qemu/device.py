"""The device side: answer the proxy's requests with the simulated RTL of a PCI function.

:func:`serve` is a guest function (``async def fn(bus)``): it runs inside a simulation backend
(:func:`vmshm.backends.run_function` or :func:`vmshm.sim.engine.simulate`) and blocks on the
transport between requests, so simulated time stands still while the guest is idle. Each request
becomes accesses on the guest bus: configuration reads and writes go to the function's
configuration space, BAR accesses (absolute bus addresses) become memory requests that the
function decodes with its own BAR registers, and a device reset resets the RTL and its host side.

Interrupts: after each request the function's INTx line is compared with what the guest's
interrupt controller last heard, and a change is forwarded (:class:`~vmshm.qemu.irq.QtestIrq`)
before the request completes, so a handler's write-1-to-clear lowers the line before the guest
can see it again. MSI messages the function sends are forwarded the same way, as the memory
writes they are. A host that rings while the guest is idle wakes the server through its
``ring_fd``: the clock runs until the ring reaches the interrupt line, which is forwarded.

:class:`FloorDevice` answers the same requests from plain bytes, with no simulation: what the
transport and the guest cost on their own (``vmshm qemu --bench``).
"""

import os
import struct
import time
from dataclasses import dataclass

from vmshm.abi import pci_regs as P
from vmshm.abi.config_space import ConfigState, vmshm_bars, vmshm_config_space
from vmshm.driver_model.bus import BusTimeout
from vmshm.abi.regmap import DEVICE_ID, REG

__all__ = ["Access", "bar_bases", "DeviceHung", "serve", "proxy_refusal", "FloorDevice",
           "serve_floor", "RING_CYCLES"]

#: Most cycles the clock runs for a host's ring to reach the interrupt line while the guest is
#: idle; the core takes a few, so this only bounds a ring of a masked vector (no line to wait for).
RING_CYCLES = 16


class DeviceHung(RuntimeError):
    """The simulated device did not complete a request: the guest cannot go on."""


@dataclass
class Access:
    """One request from the guest as the device served it, with the simulated cycles it took."""
    kind: str       # cfg_read, cfg_write, mem_read, mem_write, io_read, io_write, reset, ring
    addr: int
    size: int
    value: int      # what was written, or what the read returned
    start: int      # simulated cycle the request entered the bus
    end: int        # simulated cycle its completion left it
    # Wall time this process took to answer it (simulation and Python): beside QEMU's exits and
    # the guest's own work, where a guest's time goes (docs/channel.md).
    seconds: float = 0.0

    @property
    def cycles(self):
        return self.end - self.start


def bar_bases(accesses):
    """Return ``{bar: base}`` as the guest left the BARs, from its configuration writes.

    Sizing writes all ones and then the base back, so the last other 4-byte write to a BAR
    register is where the firmware or the kernel put it.
    """
    bases = {}
    for a in accesses:
        if (a.kind == "cfg_write" and a.size == 4 and 0x10 <= a.addr < 0x28 and not a.addr % 4
                and a.value != 0xFFFFFFFF):
            bases[(a.addr - 0x10) // 4] = a.value & ~0xF
    return {bar: base for bar, base in bases.items() if base}


def proxy_refusal(function):
    """Return why QEMU's PCI proxy cannot carry ``function`` (a VMShmPCI), or ``None``.

    The proxy forwards 32-bit memory BARs and I/O BARs only; a 64-bit BAR would need the two
    halves of its register and an address above 4 GiB, which it does not carry.
    """
    for bar in function.bars:
        if bar.is64:
            return (f"BAR{bar.index} (the window) is a 64-bit BAR, and QEMU's PCI proxy "
                    f"(x-pci-proxy-dev) carries only 32-bit memory BARs: build the device "
                    f"without window_64bit")
    return None


def _ones(size):
    return (1 << 8 * size) - 1


def _drain(fd):
    try:
        os.read(fd, 8)
    except BlockingIOError:
        pass


async def serve(bus, *, link, log, dev=0, watch=None, host=None, irq=None):
    """Answer ``link``'s requests on ``bus`` until QEMU closes its end; return how many.

    Parameters
    ----------
    bus : GuestBus
        The simulation's guest bus (the function sits in slot ``dev``).
    link
        The transport: ``next()`` blocks for a :class:`~vmshm.qemu.mpqemu.Request` (``None`` at
        the end), ``reply(request, value)`` completes it.
    log : list
        Receives one :class:`Access` per request, as it is served.
    watch : dict, optional
        Holds ``"in_flight"``: ``(kind, addr, time.monotonic())`` of the request being served,
        or ``None``: how a watchdog in another thread sees a device that stopped answering.
    host : HostModel, optional
        The function's host; its ``ring_fd`` wakes the server between requests.
    irq : QtestIrq, optional
        Where the function's INTx line goes; routed here from its Interrupt Pin register.
        Without it the guest gets no interrupt (and rings wait for its next request).
    """
    watch = {} if watch is None else watch
    served = 0
    wake = None
    if irq is not None:
        pin = await bus.cfg_read_int(dev, P.PCI_INTERRUPT_PIN, 1)
        try:
            bus.intx(dev)
        except (NotImplementedError, AttributeError):
            # A backend that cannot see the line yet: the guest gets no interrupts.
            watch["no_interrupts"] = (f"this backend ({type(bus).__name__}) cannot see the "
                                      f"function's interrupt line: the guest gets no "
                                      f"interrupts (use --backend amaranth)")
            pin = 0
        if pin:
            irq.route(pin)
            wake = getattr(host, "ring_fd", None)
        else:
            irq = None          # a function without INTx: nothing to forward

    taken = len(getattr(bus, "interrupts", ()))

    def forward(*, wait=True):
        nonlocal taken
        if irq is None:
            return
        level = bus.intx(dev)
        if level != irq.level:
            irq.set(level, wait=wait)
        # The MSI messages the function sent meanwhile (the backend took them off its stream).
        seen = getattr(bus, "interrupts", ())
        for message in seen[taken:]:
            if message.kind == "msi" and message.dev == dev:
                irq.msi(message.addr, message.data, wait=wait)
        taken = len(seen)

    if hasattr(bus, "timeout"):
        # Each bounded wait leaves a timer in the simulator until its deadline, and simulated
        # time barely moves between requests, so over a boot they pile up and slow every
        # step. The caller bounds a hang by the wall clock instead (``link.in_flight``).
        bus.timeout = None
    while True:
        req = link.next(wake=wake)
        if req is None:
            return served
        if req.kind == "wake":
            _drain(wake)
            # Run the clock until the ring raises the line, then tell the guest.
            start, level = bus.now(), irq.level
            before = len(getattr(bus, "interrupts", ()))
            raised = False
            for _ in range(RING_CYCLES):
                await bus.idle(1)
                raised = (bus.intx(dev) != level
                          or len(getattr(bus, "interrupts", ())) > before)
                if raised:
                    break
            end = bus.now()
            forward()
            # value: whether the ring raised an interrupt (a masked vector's does not)
            log.append(Access("ring", 0, 0, int(raised), start, end))
            continue
        kind, addr, size, value = req.kind, req.addr, req.size, req.value
        start = bus.now()
        began = time.monotonic()
        watch["in_flight"] = (kind, addr, began)
        bus.label = kind
        try:
            if kind == "cfg_read":
                value = (await bus.cfg_read_int(dev, addr, size)
                         if size in (1, 2, 4) and addr + size <= P.PCI_CFG_SPACE_SIZE
                         else _ones(4))
            elif kind == "cfg_write":
                if size in (1, 2, 4) and addr + size <= P.PCI_CFG_SPACE_SIZE:
                    await bus.cfg_write_int(dev, addr, size, value)
            elif kind == "mem_read":
                # An 8-byte access on a 32-bit device is one burst of two words.
                value = int.from_bytes(await bus.mem_read(addr, size), "little")
            elif kind == "mem_write":
                await bus.mem_write(addr, (value & _ones(size)).to_bytes(size, "little"))
            elif kind == "io_read":
                value = _ones(size)    # VMShm has no I/O BARs: nobody claims these
            elif kind == "reset":
                await bus.reset()
        except BusTimeout as exc:
            raise DeviceHung(f"the simulated device did not answer the guest's {kind} at "
                             f"{addr:#x}: {exc}") from None
        finally:
            bus.label = ""
        # QEMU's main thread sends the reset and waits for it: it cannot answer qtest meanwhile.
        forward(wait=kind != "reset")
        watch["in_flight"] = None
        log.append(Access(kind, addr, size, value, start, bus.now(),
                          time.monotonic() - began))
        link.reply(req, value)
        served += 1


_INTR_MASK, _INTR_STATUS, _IVPOSITION, _DOORBELL = (
    REG[n].offset for n in ("INTR_MASK", "INTR_STATUS", "IVPOSITION", "DOORBELL"))


class FloorDevice:
    """A VMShm-shaped PCI function made of plain bytes: no simulation, no host object.

    Its configuration space is the device's (:func:`~vmshm.abi.config_space.vmshm_config_space`, but
    for :attr:`SUBSYSTEM_ID`), so the guest finds it the same way; its registers read their
    constants (OPEN and CLOSE read 0), the window and the name buffer are byte arrays. What it
    costs is the floor any simulation adds to. It sends no MSI message: with MSI Enable set its
    INTx line stays low, as the device's does, and nothing else comes (its bench takes INTx).
    A Function Level Reset clears what the description says and INTR_MASK and INTR_STATUS.

    Its doorbell registers behave as the device's do, with the host's side in Python:
    :meth:`ring` (thread-safe, wakes :func:`serve_floor` through :attr:`ring_fd`) sets
    INTR_STATUS, a DOORBELL write lands in :attr:`doorbells` and calls :attr:`on_doorbell`,
    :attr:`peer_id` is what IVPOSITION reads, and :attr:`intx` is the INTx line (Interrupt Pin
    1, the Command register's Interrupt Disable honoured).
    """

    #: Subsystem ID that tells the floor from the simulated device in the guest.
    SUBSYSTEM_ID = 0xF100

    def __init__(self, *, window_size, name_size, regs_size=0x100):
        import threading
        self.intr_mask = self.intr_status = 0
        self.peer_id = None
        self.doorbells = []
        self.on_doorbell = None
        self.ring_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._rings = []
        self._lock = threading.Lock()
        bars = vmshm_bars(regs_size=regs_size, window_size=window_size, name_size=name_size)
        #: The configuration space's registers.
        self.config = ConfigState(vmshm_config_space(bars=bars, window_size=window_size,
                                                     name_size=name_size,
                                                     subsystem_id=self.SUBSYSTEM_ID))
        self.sizes = {b.index: b.size for b in bars}
        self.regs = bytearray(regs_size)
        for name, value in (("ID", DEVICE_ID), ("WINDOW_SIZE", window_size),
                            ("NAME_SIZE", name_size), ("MAP_SIZE", window_size)):
            struct.pack_into("<I", self.regs, REG[name].offset, value)
        self.window = bytearray(window_size)
        self.names = bytearray(name_size)
        self._buffers = dict(zip((b.index for b in bars), (self.regs, self.window, self.names)))

    def ring(self, vector):
        """Queue a ring of ``vector`` (what a host does); thread-safe."""
        with self._lock:
            self._rings.append(vector)
        os.eventfd_write(self.ring_fd, 1)

    def take_rings(self):
        """Apply the queued rings to INTR_STATUS (vectors >= 32 are ignored, as the device's)."""
        with self._lock:
            rings, self._rings = self._rings, []
        for v in rings:
            if v < 32:
                self.intr_status |= 1 << v

    @property
    def command(self):
        """int: The command register."""
        return self.config["command"]

    @property
    def intx(self):
        """int: The INTx line: a pending unmasked vector, unless Interrupt Disable or MSI Enable
        is set."""
        return int(bool(self.intr_status & self.intr_mask)
                   and not self.command & P.PCI_COMMAND_INTX_DISABLE
                   and not self.config["msi_enable"])

    def cfg_read(self, addr, size):
        """Return ``size`` bytes of configuration space at ``addr``; past 256 bytes, all ones."""
        if addr + size > P.PCI_CFG_SPACE_SIZE:
            return _ones(size)
        live = {"status_interrupt": int(bool(self.intr_status & self.intr_mask))}
        raw = b"".join(self.config.read(d, live).to_bytes(4, "little")
                       for d in range(addr & ~3, addr + size, 4))
        return int.from_bytes(raw[addr & 3:(addr & 3) + size], "little")

    def cfg_write(self, addr, size, value):
        """Write ``size`` bytes of ``value`` at ``addr``: each dword with its byte enables."""
        if addr + size > P.PCI_CFG_SPACE_SIZE:
            return
        for d in range(addr & ~3, addr + size, 4):
            lanes = [(addr + i - d, value >> 8 * i & 0xFF) for i in range(size)
                     if addr + i - d in range(4)]
            fired = self.config.write(d, sum(byte << 8 * lane for lane, byte in lanes),
                                      sum(1 << lane for lane, _ in lanes))
            if "exp_initiate_flr" in fired:
                # As the device's FLR sequencer: the last user's name does not outlive the reset.
                self.config.reset(flr=True)
                self.intr_mask = self.intr_status = 0
                self.names[:] = bytes(len(self.names))

    def _target(self, addr, size):
        if not self.command & P.PCI_COMMAND_MEMORY:
            return None, 0
        for bar, buf in self._buffers.items():
            base = self.config[f"bar{bar}"]
            if base and base <= addr and addr + size <= base + self.sizes[bar]:
                return buf, addr - base
        return None, 0

    def mem_read(self, addr, size):
        buf, off = self._target(addr, size)
        if buf is self.regs and size == 4:
            if off == _INTR_MASK:
                return self.intr_mask
            if off == _INTR_STATUS:
                return self.intr_status
            if off == _IVPOSITION:
                return 0xFFFFFFFF if self.peer_id is None else self.peer_id
            if off == _DOORBELL:
                return 0
        return int.from_bytes(buf[off:off + size], "little") if buf is not None else _ones(size)

    def mem_write(self, addr, size, value):
        buf, off = self._target(addr, size)
        if buf is self.regs and size == 4:
            if off == _INTR_MASK:
                self.intr_mask = value & 0xFFFFFFFF
            elif off == _INTR_STATUS:
                self.intr_status &= ~value
            elif off == _DOORBELL:
                peer, vector = value >> 16 & 0xFFFF, value & 0xFFFF
                self.doorbells.append((peer, vector))
                if self.on_doorbell is not None:
                    self.on_doorbell(peer, vector)
        elif buf is not None and buf is not self.regs:
            buf[off:off + size] = (value & _ones(size)).to_bytes(size, "little")


def serve_floor(device, link, log, irq=None):
    """Answer ``link``'s requests from ``device`` (a :class:`FloorDevice`) until QEMU goes.

    With ``irq`` (a :class:`~vmshm.qemu.irq.QtestIrq`), its INTx line reaches the guest as the
    simulated device's does, and :meth:`FloorDevice.ring` wakes the loop.
    """
    wake = None
    if irq is not None:
        irq.route(device.cfg_read(P.PCI_INTERRUPT_PIN, 1))
        wake = device.ring_fd

    def forward(*, wait=True):
        device.take_rings()
        if irq is not None and device.intx != irq.level:
            irq.set(device.intx, wait=wait)

    while True:
        req = link.next(wake=wake)
        if req is None:
            return
        t0 = time.perf_counter_ns()
        if req.kind == "wake":
            _drain(wake)
            forward()
            log.append(Access("ring", 0, 0, irq.level, t0, time.perf_counter_ns()))
            continue
        value = 0
        if req.kind == "cfg_read":
            value = device.cfg_read(req.addr, req.size)
        elif req.kind == "cfg_write":
            device.cfg_write(req.addr, req.size, req.value)
        elif req.kind == "mem_read":
            value = device.mem_read(req.addr, req.size)
        elif req.kind == "mem_write":
            device.mem_write(req.addr, req.size, req.value)
        elif req.kind == "io_read":
            value = _ones(req.size)
        elif req.kind == "reset":
            device.intr_mask = device.intr_status = 0
        forward(wait=req.kind != "reset")
        log.append(Access(req.kind, req.addr, req.size, value, t0, time.perf_counter_ns()))
        link.reply(req, value)
