"""The scenario suite: what VMShm must do, written once and run on every simulation backend.

A scenario is ``async def fn(bus, env)``. It talks to the device only through the guest bus
(:class:`~vmshm.driver_model.bus.GuestBus`) and the driver model: it boots the bus with
:func:`~vmshm.driver_model.vmshm_probe` like a guest kernel, then uses the
:class:`~vmshm.driver_model.VMShmDriver` of ``/dev/vmshm0`` and, for register-level checks, that
driver's mapped BARs (``regs``, ``window``, ``names``). When it has to play another process on the
host (put
data into the object for the guest to find, or check that the guest's data landed) it attaches to
the object with :meth:`ShmRegion.attach <vmshm.host_model.ShmRegion.attach>` and closes that
region again; it never unlinks it. It raises :exc:`AssertionError` with a message saying what was
expected, and returns nothing or a small dict.

Everything a backend needs to run one is plain data: the scenario's name, a
:class:`ScenarioEnv`, and the scenario's requirements (:attr:`Scenario.shm_size`,
:attr:`Scenario.core_args`, :attr:`Scenario.timing`, :attr:`Scenario.host_args`,
:attr:`Scenario.devices`). A backend that runs the simulator in another process (cocotb on
Verilator or Icarus) imports this module there and looks the function up in :data:`SCENARIOS` by
name.

The caller creates the object (``env.shm_name``, :attr:`Scenario.shm_size` zero bytes) before
the run and removes it afterwards. It puts :attr:`Scenario.devices` VMShm functions on the bus
(device ``i`` in slot ``i``), each with its own host model from :meth:`Scenario.make_host`; every
host can open the same object, which is how two devices share it.
"""

import contextlib
import errno
import os
import random
from dataclasses import asdict, dataclass, field

from vmshm import pci_regs as P
from vmshm.driver_model import (MemAllocator, VMShmDriver, pci_assign_resources,
                                pci_clear_master, pci_disable_device, pci_enable_device,
                                pci_scan_bus, pci_set_master, vmshm_probe)
from vmshm.driver_model.bus import Access, Space
from vmshm.host_model import HostModel, HostTiming, ShmRegion
from vmshm.regmap import (ABI_VERSION, BAR0_SIZE, CAP, CAP_LEN, CAP_VERSION, DEFAULT_NAME_SIZE,
                          DEFAULT_WINDOW_SIZE, DEVICE_ID, NAME_MAX, PCI_DEVICE_ID, PCI_REVISION,
                          PCI_SUBSYSTEM_ID, PCI_SUBSYSTEM_VENDOR_ID, PCI_VENDOR_ID, REG,
                          REGISTERS, Status)

__all__ = ["ScenarioEnv", "Scenario", "SCENARIOS", "scenario", "LateHost", "CORE_ARGS",
           "MAX_DEVICES"]

#: Build parameters of the device a scenario may require; ``data_width`` is the backend's choice.
CORE_ARGS = ("window_size", "name_size", "host_timeout", "regs_size", "window_64bit")
#: Most VMShm functions one bus holds: one per slot.
MAX_DEVICES = 32


@dataclass
class ScenarioEnv:
    """Describe what one run of a scenario works with; plain data, so it can be pickled.

    Attributes
    ----------
    shm_name : str
        Name of the host object the caller created for the run, such as ``/vmshm-scn-1-ab``.
    shm_size : int
        Its size in bytes.
    seed : int
        Seed for the scenario's pseudo-random choices.
    data_width : int
        Width of the device's data path in bits.
    window_size : int
        Size of BAR1 the device was built with.
    name_size : int
        Size of the name buffer (BAR2) the device was built with.
    regs_size : int
        Size of the register BAR (BAR0) the device was built with.
    window_64bit : bool
        Whether the window is a 64-bit BAR.
    devices : int
        How many VMShm functions sit on the bus, in slots 0 to ``devices - 1``.
    pid : int
        The guest program's process ID, as the seed example writes it: the caller's, so a run
        in a simulator process writes the same bytes (and takes the same cycles) as one here.
    """
    shm_name: str
    shm_size: int
    seed: int
    data_width: int
    window_size: int = DEFAULT_WINDOW_SIZE
    name_size: int = DEFAULT_NAME_SIZE
    regs_size: int = BAR0_SIZE
    window_64bit: bool = False
    devices: int = 1
    pid: int = None


@dataclass(frozen=True)
class Scenario:
    """A registered scenario and what it needs from the backend that runs it.

    Attributes
    ----------
    name : str
        Key in :data:`SCENARIOS`.
    fn : async callable
        ``await fn(bus, env)``.
    shm_size : int
        Size of the object the caller must create for it.
    core_args : dict
        Build parameters the device needs (a subset of :data:`CORE_ARGS`).
    timing : dict or None
        :class:`~vmshm.host_model.HostTiming` fields the scenario needs; they override the
        caller's timing. ``None``: any timing gives the same results.
    host_args : dict or None
        Keyword arguments of :class:`LateHost` if the scenario needs a host that answers its
        first requests late; ``None`` for a plain :class:`~vmshm.host_model.HostModel`.
    doc : str
        First line of the function's docstring.
    devices : int
        How many VMShm functions the backend must put on the bus (slots 0, 1, ...), all built
        with :attr:`core_args`; each gets its own host from :meth:`make_host`.
    """
    name: str
    fn: object
    shm_size: int
    core_args: dict = field(default_factory=dict)
    timing: dict = None
    host_args: dict = None
    doc: str = ""
    devices: int = 1

    def core_args_for(self, data_width):
        """Return the device's build parameters for a run at ``data_width`` bits."""
        return {**self.core_args, "data_width": data_width}

    def env(self, shm_name, *, seed, data_width):
        """Return the :class:`ScenarioEnv` of a run on the object ``shm_name``."""
        return ScenarioEnv(shm_name=shm_name, shm_size=self.shm_size, seed=seed,
                           data_width=data_width,
                           window_size=self.core_args.get("window_size", DEFAULT_WINDOW_SIZE),
                           name_size=self.core_args.get("name_size", DEFAULT_NAME_SIZE),
                           regs_size=self.core_args.get("regs_size", BAR0_SIZE),
                           window_64bit=bool(self.core_args.get("window_64bit", False)),
                           devices=self.devices, pid=os.getpid())

    def make_host(self, timing=None):
        """Return a fresh ``(host, timing)`` pair for one device of one run.

        ``timing`` is the caller's choice (a :class:`~vmshm.host_model.HostTiming`, by default
        none), overridden by what the scenario needs. The backend must hand the returned timing
        object itself to its host BFM: a :class:`LateHost` changes its latencies during the run.
        Call it once per device (:attr:`devices`): no two devices share a host or a timing.
        """
        fields = asdict(timing) if timing is not None else {}
        timing = HostTiming(**{**fields, **(self.timing or {})})
        if self.host_args is not None:
            return LateHost(timing, **self.host_args), timing
        return HostModel(timing), timing


#: Every registered scenario, by name, in registration order.
SCENARIOS = {}


def scenario(*, shm_size, name=None, timing=None, host_args=None, devices=1, **core_args):
    """Register ``async def fn(bus, env)`` in :data:`SCENARIOS`; use as a decorator.

    Parameters
    ----------
    shm_size : int
        Size of the object the caller must create.
    name : str, optional
        Key to register under; the function's name by default. Stacking the decorator with
        different names registers one function under several requirements.
    timing : dict, optional
        :class:`~vmshm.host_model.HostTiming` fields the scenario needs.
    host_args : dict, optional
        :class:`LateHost` arguments the scenario needs.
    devices : int, optional
        How many VMShm functions the bus must hold (1 by default, at most :data:`MAX_DEVICES`).
    **core_args
        Build parameters of the device the scenario needs (see :data:`CORE_ARGS`).
    """
    if not isinstance(shm_size, int) or shm_size <= 0:
        raise ValueError(f"shm_size must be a positive integer, not {shm_size!r}")
    unknown = set(core_args) - set(CORE_ARGS)
    if unknown:
        raise TypeError(f"unknown core arguments {sorted(unknown)}; a scenario may require "
                        f"{', '.join(CORE_ARGS)} (the backend chooses data_width)")
    if timing is not None:
        HostTiming(**timing)    # refuse a bad requirement now, not in the middle of a run
    if isinstance(devices, bool) or not isinstance(devices, int) or \
            not 1 <= devices <= MAX_DEVICES:
        raise ValueError(f"devices must be an integer from 1 to {MAX_DEVICES}, not {devices!r}")

    def register(fn):
        key = name or fn.__name__
        if key in SCENARIOS:
            raise ValueError(f"scenario {key!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        SCENARIOS[key] = Scenario(key, fn, shm_size, dict(core_args), timing, host_args,
                                  doc[0] if doc else "", devices)
        return fn
    return register


class LateHost(HostModel):
    """Act as a host that answers its first requests late and every later one at once.

    The first ``late_ctl`` control requests (OPEN, CLOSE) and the first ``late_dma`` DMA requests
    are answered after the timing's latencies; then the latency of that channel drops to 0. It
    does so by changing ``timing``, so the host BFM must read the latencies from the same object,
    after calling the model for each request (as :class:`vmshm.sim.HostBFM` does).

    Parameters
    ----------
    timing : HostTiming
        The timing shared with the host BFM; changed during the run.
    late_ctl : int
        How many control requests to answer late.
    late_dma : int
        How many DMA requests to answer late.

    Attributes
    ----------
    ops : list of str
        ``"OPEN"``, ``"CLOSE"``, ``"READ"``, ``"WRITE"``: what the device asked, in order.
    """

    def __init__(self, timing, *, late_ctl=0, late_dma=0, **kwargs):
        super().__init__(timing, **kwargs)
        self.late_ctl = late_ctl
        self.late_dma = late_dma
        self.ops = []

    def _count(self, op, channel):
        self.ops.append(op)
        ctl = sum(o in ("OPEN", "CLOSE") for o in self.ops)
        dma = len(self.ops) - ctl
        if channel == "ctl" and ctl > self.late_ctl:
            self.timing.ctl_latency = 0
        if channel == "dma" and dma > self.late_dma:
            self.timing.dma_latency = 0

    def open(self, name):
        self._count("OPEN", "ctl")
        return super().open(name)

    def close(self):
        self._count("CLOSE", "ctl")
        return super().close()

    def dma_read(self, offset, n):
        self._count("READ", "dma")
        return super().dma_read(offset, n)

    def dma_write(self, offset, data, mask=None):
        self._count("WRITE", "dma")
        return super().dma_write(offset, data, mask)


# -- helpers -----------------------------------------------------------------------------------

def expect(actual, expected, what):
    """Raise :exc:`AssertionError` naming ``what`` unless ``actual == expected``."""
    if actual != expected:
        if isinstance(actual, int) and isinstance(expected, int):
            raise AssertionError(f"{what}: expected {expected:#x}, got {actual:#x}")
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def expect_bytes(actual, expected, what):
    """Raise :exc:`AssertionError` at the first byte where ``actual`` and ``expected`` differ."""
    actual, expected = bytes(actual), bytes(expected)
    if actual == expected:
        return
    if len(actual) != len(expected):
        raise AssertionError(f"{what}: expected {len(expected)} bytes, got {len(actual)}")
    i = next(i for i in range(len(actual)) if actual[i] != expected[i])
    raise AssertionError(f"{what}: first difference at byte {i:#x}: expected "
                         f"{expected[i:i + 16].hex()}, got {actual[i:i + 16].hex()}")


async def expect_errno(awaitable, code, what):
    """Await ``awaitable`` and raise :exc:`AssertionError` unless it raises ``OSError(code)``."""
    try:
        result = await awaitable
    except OSError as exc:
        if exc.errno != code:
            raise AssertionError(f"{what}: expected {errno.errorcode[code]}, got "
                                 f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc})") from exc
        return exc
    raise AssertionError(f"{what}: expected {errno.errorcode[code]}, but it succeeded "
                         f"and returned {result!r}")


async def probe(bus):
    """Boot the bus as a guest kernel would and return the driver of ``/dev/vmshm0``."""
    drivers, pdevs = await vmshm_probe(bus)
    if not drivers:
        raise AssertionError(f"no VMShm function among the {len(pdevs)} found on the bus")
    return drivers[0]


async def reg(drv, name):
    """Return the value of the register ``name``, read with one 32-bit read."""
    return await drv.regs.read32(REG[name].offset)


async def status(drv):
    """Return the STATUS register as ``(open, busy, last_error)``."""
    value = await reg(drv, "STATUS")
    return value & 1, value >> 1 & 1, value >> 8 & 0xFF


async def expect_status(drv, is_open, last_error, what):
    """Check STATUS: the OPEN bit, BUSY clear (nothing in flight), LAST_ERROR."""
    expect(await status(drv), (int(is_open), 0, last_error),
           f"{what}: STATUS (open, busy, last_error)")


async def expect_sizes(drv, map_size, obj_size, what):
    """Check MAP_SIZE, OBJ_SIZE_LO and OBJ_SIZE_HI."""
    expect(await reg(drv, "MAP_SIZE"), map_size, f"{what}: MAP_SIZE")
    expect(await reg(drv, "OBJ_SIZE_LO"), obj_size & 0xFFFF_FFFF, f"{what}: OBJ_SIZE_LO")
    expect(await reg(drv, "OBJ_SIZE_HI"), obj_size >> 32, f"{what}: OBJ_SIZE_HI")


async def open_by_register(drv, name):
    """Write ``name`` and its NUL into the name buffer, read OPEN and return its value."""
    await drv.names.write(0, os.fsencode(name) + b"\0")
    return await reg(drv, "OPEN")


@contextlib.contextmanager
def host_object(env):
    """Attach to the run's object as another host process would; close it (never unlink)."""
    region = ShmRegion.attach(env.shm_name)
    try:
        yield region
    finally:
        region.close()


def records_in(bus, since, bar):
    """Return the memory bursts since record index ``since`` that started inside ``bar``."""
    return [r for r in bus.records[since:]
            if r.space is Space.MEM and bar.base <= r.addr < bar.base + bar.size]


def claimed(drv, addr, n):
    """Return whether one of the device's BARs holds all of ``[addr, addr + n)``."""
    return any(res.start <= addr and addr + n <= res.start + res.size
               for res in drv.pdev.resources.values())


def word_ceil(n, wb):
    """Return ``n`` rounded up to a multiple of ``wb``."""
    return -(-n // wb) * wb


# -- the seed's example ------------------------------------------------------------------------

HOST_LINE = b"Hello from the host side\n\0"


@scenario(shm_size=64 << 10, name="seed_example_64bit_window", window_64bit=True)
@scenario(shm_size=64 << 10)
async def seed_example(bus, env):
    """Run the seed's userspace example: the guest reads the host's line, then leaves its own."""
    with host_object(env) as host:
        host.write(0, HOST_LINE)
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    length = min(1 << 20, await reg(drv, "MAP_SIZE"))
    expect(length, min(1 << 20, env.shm_size, env.window_size), "bytes mapped")
    mapping = await drv.mmap(fd, length)
    found = await mapping.read(0, len(HOST_LINE))
    expect_bytes(found, HOST_LINE, "what the guest found at offset 0")
    wrote = f"I was here: {env.pid if env.pid is not None else os.getpid()}\0".encode()
    await mapping.write(0, wrote)
    await drv.munmap(mapping)
    await drv.close(fd)
    await expect_status(drv, False, Status.OK, "after close")
    with host_object(env) as host:
        expect_bytes(host.read(0, len(wrote)), wrote, "what the host sees at offset 0")
        # The example's write is shorter than the host's line: the rest of the line stays.
        expect_bytes(host.read(len(wrote), len(HOST_LINE) - len(wrote)),
                     HOST_LINE[len(wrote):], "the rest of the host's line")
    return {"found": found.split(b"\0", 1)[0], "wrote": wrote,
            "window_bar": [str(r) for r in drv.pdev.resources.values() if r.prefetch]}


# -- registers ---------------------------------------------------------------------------------

@scenario(shm_size=4096)
async def regs_constants(bus, env):
    """Read the constant registers and the reset state, and check writes do not change them."""
    drv = await probe(bus)
    # The driver learnt the sizes from the PCI capability; the registers must agree.
    expect((drv.window_size, drv.name_size, drv.version),
           (env.window_size, env.name_size, ABI_VERSION), "sizes and version from the capability")
    expect((drv.regs.size, drv.window.size, drv.names.size),
           (env.regs_size, env.window_size, env.name_size), "BAR sizes")
    constants = {"ID": DEVICE_ID, "VERSION": ABI_VERSION, "WINDOW_SIZE": env.window_size,
                 "NAME_SIZE": env.name_size}
    # OPEN is left out: reading it would trigger.
    at_reset = {"STATUS": 0, "MAP_SIZE": 0, "OBJ_SIZE_LO": 0, "OBJ_SIZE_HI": 0, "REJECTS": 0}
    for name, value in constants.items():
        expect(await reg(drv, name), value, name)
    for name, value in at_reset.items():
        expect(await reg(drv, name), value, f"{name} at reset")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE with nothing open")
    for name in constants:
        await drv.regs.write32(REG[name].offset, ~constants[name])
        expect(await reg(drv, name), constants[name], f"{name} after a write")


@scenario(shm_size=5000)
async def regs_status_and_sizes(bus, env):
    """Follow STATUS, MAP_SIZE and OBJ_SIZE through failed, successful and repeated OPEN, CLOSE."""
    drv = await probe(bus)
    await expect_status(drv, False, Status.OK, "at reset")
    await expect_sizes(drv, 0, 0, "at reset")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE with nothing open")
    await expect_status(drv, False, Status.OK, "after CLOSE with nothing open")

    got = await open_by_register(drv, env.shm_name + "-missing")
    expect(got, Status.ENOENT, "OPEN of a missing object")
    await expect_status(drv, False, Status.ENOENT, "after a failed OPEN")
    await expect_sizes(drv, 0, 0, "after a failed OPEN")

    expect(await open_by_register(drv, env.shm_name), Status.OK, "OPEN")
    await expect_status(drv, True, Status.OK, "after OPEN")
    await expect_sizes(drv, env.shm_size, env.shm_size, "after OPEN")

    # A second OPEN is refused by the device itself and leaves the open object alone.
    expect(await reg(drv, "OPEN"), Status.EBUSY, "OPEN while open")
    await expect_status(drv, True, Status.EBUSY, "after a second OPEN")
    await expect_sizes(drv, env.shm_size, env.shm_size, "after a second OPEN")
    with host_object(env) as host:
        host.write(0, b"still mapped")
    expect_bytes(await drv.window.read(0, 12), b"still mapped", "window after EBUSY")

    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE")
    await expect_status(drv, False, Status.OK, "after CLOSE")
    await expect_sizes(drv, 0, 0, "after CLOSE")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE again")
    await expect_status(drv, False, Status.OK, "after CLOSE again")
    expect_bytes(await drv.window.read(0, 4), b"\xff" * 4, "window after CLOSE")

    # And the object opens again.
    expect(await reg(drv, "OPEN"), Status.OK, "OPEN after CLOSE")
    await expect_sizes(drv, env.shm_size, env.shm_size, "after the second OPEN")
    expect(await reg(drv, "CLOSE"), Status.OK, "final CLOSE")


@scenario(shm_size=3 * 4096 + 5, window_size=4096)
async def regs_object_bigger_than_window(bus, env):
    """Open an object bigger than the window: MAP_SIZE is the window, OBJ_SIZE the object."""
    ws, wb = env.window_size, bus.word_bytes
    with host_object(env) as host:
        host.write(ws - 8, bytes(range(16)))
    drv = await probe(bus)
    expect(await open_by_register(drv, env.shm_name), Status.OK, "OPEN")
    await expect_sizes(drv, ws, env.shm_size, "after OPEN")
    expect_bytes(await drv.window.read(ws - 8, 8), bytes(range(8)), "last bytes of window")
    await drv.window.write(ws - 3, b"xyz")
    with host_object(env) as host:
        expect_bytes(host.read(ws - 8, 16), bytes(range(5)) + b"xyz" + bytes(range(8, 16)),
                     "object around the window's end")
    # A burst that runs off the window's end is no access of the BAR: unsupported.
    expect_bytes(await bus.mem_read(drv.window.base + ws - wb, 2 * wb), b"\xff" * 2 * wb,
                 "a burst across the window's end")
    expect(bus.records[-1].status, "UR", "status of a burst across the window's end")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after a burst across the window's end")
    fd = await drv.open()
    await expect_errno(drv.mmap(fd, ws + 1), errno.EINVAL, "mmap past the window")
    mapping = await drv.mmap(fd, ws)
    await drv.munmap(mapping)
    await drv.close(fd)     # releases the device: reads CLOSE
    await expect_sizes(drv, 0, 0, "after release")


@scenario(shm_size=(4 << 30) + 4099)
async def regs_object_over_4gib(bus, env):
    """Open a (sparse) object over 4 GiB: OBJ_SIZE_HI carries the high bits."""
    drv = await probe(bus)
    expect(await open_by_register(drv, env.shm_name), Status.OK, "OPEN")
    await expect_sizes(drv, min(env.window_size, env.shm_size), env.shm_size, "after OPEN")
    lo_hi = int.from_bytes(await drv.regs.read(REG["OBJ_SIZE_LO"].offset, 8), "little")
    expect(lo_hi, env.shm_size, "OBJ_SIZE_LO and OBJ_SIZE_HI read as one 8-byte access")
    await drv.window.write(env.window_size - 4, b"tail")
    with host_object(env) as host:
        expect_bytes(host.read(env.window_size - 4, 4), b"tail", "object at the window's end")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE")


@scenario(shm_size=4096, name="regs_unknown_offsets_4k", regs_size=4096)
@scenario(shm_size=4096)
async def regs_unknown_offsets(bus, env):
    """Read 0 from every unassigned register offset and check writes anywhere change nothing."""
    drv = await probe(bus)
    known = {r.offset for r in REGISTERS}
    # Past the register map a sample does: the decode there is one "else".
    offsets = [o for o in range(0, BAR0_SIZE, 4)] + list(range(BAR0_SIZE, env.regs_size, 0x7C))
    if env.regs_size > BAR0_SIZE:
        offsets.append(env.regs_size - 4)
    unknown = [o for o in offsets if o not in known]
    for offset in unknown:
        expect(await drv.regs.read32(offset), 0, f"unassigned offset {offset:#05x}")
    # A valid name sits in BAR2, so a write that wrongly triggered OPEN would open the object.
    await drv.names.write(0, env.shm_name.encode() + b"\0")
    before = {r.name: await reg(drv, r.name) for r in REGISTERS if r.access != "RT"}
    for offset in offsets:
        await drv.regs.write32(offset, 0xFFFF_FFFF)
    for offset in unknown:
        expect(await drv.regs.read32(offset), 0, f"unassigned offset {offset:#05x} "
                                                 f"after a write")
    after = {name: await reg(drv, name) for name in before}
    expect(after, before, "registers after writing all ones everywhere in BAR0")
    await expect_status(drv, False, Status.OK, "after writing OPEN and CLOSE")
    # Byte and half-word writes too.
    await drv.regs.write(REG["OPEN"].offset, b"\xff")
    await drv.regs.write(REG["CLOSE"].offset + 1, b"\xff\xff")
    await expect_status(drv, False, Status.OK, "after sub-word writes to OPEN and CLOSE")


@scenario(shm_size=4096)
async def regs_reads_do_not_trigger(bus, env):
    """Read every register but OPEN and CLOSE, alone and in bursts, without opening or closing."""
    drv = await probe(bus)
    await drv.names.write(0, env.shm_name.encode() + b"\0")
    quiet = [o for o in range(0, BAR0_SIZE, 4) if o not in (REG["OPEN"].offset,
                                                             REG["CLOSE"].offset)]
    for offset in quiet:
        await drv.regs.read32(offset)
        await expect_status(drv, False, Status.OK, f"closed, after reading {offset:#04x}")
    # A burst from ID to REJECTS: on a 64-bit path its first word also holds OPEN.
    raw = await drv.regs.read(REG["ID"].offset, REG["CLOSE"].offset - REG["ID"].offset)
    expect(int.from_bytes(raw[:4], "little"), DEVICE_ID, "ID read in a burst")
    expect(int.from_bytes(raw[4:8], "little"), ABI_VERSION, "VERSION read in a burst")
    await expect_status(drv, False, Status.OK, "after a burst from ID to REJECTS")
    for offset in (1, 2, 3):
        await drv.regs.read(REG["ID"].offset + offset, 1)
    await expect_status(drv, False, Status.OK, "after byte reads of ID")

    # OPEN read together with ID in one 8-byte access: OPEN's status, then ID.
    raw = await drv.regs.read(REG["OPEN"].offset, 8)
    expect(int.from_bytes(raw[:4], "little"), Status.OK, "OPEN read as 8 bytes with ID")
    expect(int.from_bytes(raw[4:], "little"), DEVICE_ID, "ID read as 8 bytes with OPEN")
    await expect_status(drv, True, Status.OK, "after OPEN")
    for offset in quiet:
        await drv.regs.read32(offset)
        await expect_status(drv, True, Status.OK, f"open, after reading {offset:#04x}")
    raw = await drv.regs.read(REG["WINDOW_SIZE"].offset, 8)
    expect(int.from_bytes(raw[:4], "little"), env.window_size, "WINDOW_SIZE in a burst")
    expect(int.from_bytes(raw[4:], "little"), env.name_size, "NAME_SIZE in a burst")
    await expect_status(drv, True, Status.OK, "after a burst of WINDOW_SIZE and NAME_SIZE")
    # A byte read of CLOSE is still a read of CLOSE.
    expect(await drv.regs.read(REG["CLOSE"].offset + 2, 1), b"\0", "byte 2 of CLOSE")
    await expect_status(drv, False, Status.OK, "after a byte read of CLOSE")


@scenario(shm_size=4096)
async def regs_rejects(bus, env):
    """Count rejected window accesses in REJECTS and clear it by writing to it."""
    drv = await probe(bus)
    expect(await reg(drv, "REJECTS"), 0, "REJECTS at reset")
    mark = len(bus.records)
    await drv.window.read(0, 4)
    await drv.window.write(8, b"abc")
    # A long access is split into bursts; each is rejected and counted once.
    await drv.window.read(16, 300 * bus.word_bytes)
    bursts = len(records_in(bus, mark, drv.window))
    expect(bursts, 4, "bursts on the window")
    expect(await reg(drv, "REJECTS"), bursts, "REJECTS after window accesses while closed")
    # Writes to the neighbouring registers leave it alone (on 64 bits they share a word).
    for name in ("OBJ_SIZE_HI", "CLOSE"):
        await drv.regs.write32(REG[name].offset, 0xFFFF_FFFF)
        expect(await reg(drv, "REJECTS"), bursts, f"REJECTS after a write to {name}")
    await drv.regs.write32(REG["REJECTS"].offset, 0x1234)
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after a write")
    await drv.window.read(0, 1)
    await drv.regs.write(REG["REJECTS"].offset + 3, b"\0")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after a byte write")
    # Accepted accesses do not count.
    expect(await open_by_register(drv, env.shm_name), Status.OK, "OPEN")
    await drv.window.read(0, 64)
    await drv.window.write(1, b"x")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after accepted accesses")
    await drv.window.read(env.shm_size, 4)
    expect(await reg(drv, "REJECTS"), 1, "REJECTS after a read past the object")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE")


@scenario(shm_size=4096)
async def pci_enables(bus, env):
    """Refuse OPEN and window accesses without Bus Master Enable, and decode nothing without MSE."""
    drv = await probe(bus)
    pdev = drv.pdev
    await pci_clear_master(pdev)
    expect(await open_by_register(drv, env.shm_name), Status.EPERM, "OPEN without bus master")
    await expect_status(drv, False, Status.EPERM, "after OPEN without bus master")
    await pci_set_master(pdev)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, env.shm_size)
    await mapping.write(0, b"mastered")
    # Bus mastering off under an open object: the window rejects, the object stays open.
    await pci_clear_master(pdev)
    expect_bytes(await mapping.read(0, 8), b"\xff" * 8, "window read without bus master")
    await mapping.write(0, b"dropped!")
    expect(await reg(drv, "REJECTS"), 2, "REJECTS without bus master")
    await expect_status(drv, True, Status.OK, "open object without bus master")
    await pci_set_master(pdev)
    expect_bytes(await mapping.read(0, 8), b"mastered", "window read with bus master again")
    # Memory decode off: nothing of the device answers memory requests, config still does.
    await pci_disable_device(pdev)
    expect(await reg(drv, "ID"), 0xFFFF_FFFF, "ID with memory decode off")
    expect(bus.records[-1].status, "UR", "status of a register read with memory decode off")
    await drv.window.write(0, b"nowhere!")
    expect(bus.records[-1].status, "UR", "status of a window write with memory decode off")
    expect(await pdev.read_config(0, 2), pdev.vendor, "vendor ID with memory decode off")
    await pci_enable_device(pdev)
    await pci_set_master(pdev)
    expect(await reg(drv, "ID"), DEVICE_ID, "ID with memory decode on again")
    await expect_status(drv, True, Status.OK, "after memory decode was off")
    expect_bytes(await mapping.read(0, 8), b"mastered", "window after memory decode was off")
    await drv.munmap(mapping)
    await drv.close(fd)
    await expect_status(drv, False, Status.OK, "after release")


# -- the PCI function: configuration header, BARs, decode, several devices -----------------------
#
# These check the function against the PCI Local Bus specification's rules (and PCI Express's
# where it tightens them), not only against VMShm's own constants.

#: Size of one configuration header dword.
DWORD = 4
#: The Type-0 header: configuration offsets below this are the spec's, above it capabilities.
HEADER_END = 0x40
#: BAR register offsets, BAR0 to BAR5.
BAR_OFFSETS = tuple(range(P.PCI_BASE_ADDRESS_0, P.PCI_BASE_ADDRESS_5 + 4, 4))
#: The command register's bits VMShm implements; the spec lets the others be hardwired to 0.
COMMAND_BITS = P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER | P.PCI_COMMAND_INTX_DISABLE
#: What each header dword holds, for messages.
HEADER_FIELDS = {
    0x00: "vendor and device ID", 0x04: "command and status", 0x08: "revision and class code",
    0x0C: "cache line size, latency timer, header type and BIST",
    **{off: f"BAR{i}" for i, off in enumerate(BAR_OFFSETS)},
    0x28: "CardBus CIS pointer", 0x2C: "subsystem IDs", 0x30: "expansion ROM BAR",
    0x34: "capability pointer", 0x38: "reserved dword 0x38",
    0x3C: "interrupt line and pin, Min_Gnt, Max_Lat",
}
ONES32 = 0xFFFF_FFFF


def field_name(offset, cap=None):
    """Return what the configuration dword at ``offset`` holds, for an assertion message."""
    if offset in HEADER_FIELDS:
        return f"{HEADER_FIELDS[offset]} (dword {offset:#04x})"
    if cap is not None and cap <= offset < cap + CAP_LEN:
        return f"VMShm capability +{offset - cap:#04x} (dword {offset:#04x})"
    return f"unimplemented dword {offset:#05x}"


def expected_bars(env):
    """Return ``{index: (size, is64, prefetchable)}`` of the BARs the device was built with."""
    name_index = 3 if env.window_64bit else 2
    return {0: (env.regs_size, False, False), 1: (env.window_size, env.window_64bit, True),
            name_index: (env.name_size, False, False)}


def writable_bits(env):
    """Return ``{dword offset: bits software may change}`` for every writable header dword.

    Everything else in the 256-byte space is read-only: writes must leave it as it was.
    """
    rw = {P.PCI_COMMAND: COMMAND_BITS, P.PCI_CACHE_LINE_SIZE: 0xFF,
          P.PCI_INTERRUPT_LINE: 0xFF}
    for index, (size, is64, _) in expected_bars(env).items():
        mask = ((1 << (64 if is64 else 32)) - 1) & ~(size - 1)
        rw[BAR_OFFSETS[index]] = mask & ONES32
        if is64:
            rw[BAR_OFFSETS[index + 1]] = mask >> 32
    return rw


async def find_functions(bus, env):
    """Read the vendor ID of all 32 slots as a PCI core does; return the occupied ones.

    An empty slot must read vendor ID 0xFFFF (the master abort's all ones) with status UR.
    """
    slots = []
    for slot in range(32):
        vendor = await bus.cfg_read_int(slot, P.PCI_VENDOR_ID, 2)
        if vendor == P.PCI_ANY_ID:
            expect(bus.records[-1].status, "UR", f"status of a configuration read of empty "
                                                 f"slot {slot}")
        else:
            slots.append(slot)
    expect(slots, list(range(env.devices)), "slots that answer a configuration read")
    return slots


async def walk_capabilities(bus, slot):
    """Follow ``slot``'s capability list, checking the spec's rules; return ``[(offset, id)]``.

    Status bit 4 must be set exactly when the capability pointer is not 0; every entry sits on
    a dword boundary at 0x40..0xFC, and the list ends (next pointer 0) within 48 entries, the
    bound Linux puts on the walk.
    """
    status = await bus.cfg_read_int(slot, P.PCI_STATUS, 2)
    pos = await bus.cfg_read_int(slot, P.PCI_CAPABILITY_LIST, 1)
    expect(bool(status & P.PCI_STATUS_CAP_LIST), pos != 0,
           f"status bit 4 (capabilities list) set when the capability pointer ({pos:#x}) is "
           f"not 0")
    found = []
    for _ in range(48):
        if pos == 0:
            return found
        if pos % DWORD or not HEADER_END <= pos <= P.PCI_CFG_SPACE_SIZE - DWORD:
            raise AssertionError(f"capability at {pos:#x}: expected a dword-aligned offset "
                                 f"from 0x40 to 0xfc (after {found})")
        if any(pos == p for p, _ in found):
            raise AssertionError(f"capability list loops back to {pos:#x} (after {found})")
        found.append((pos, await bus.cfg_read_int(slot, pos + P.PCI_CAP_LIST_ID, 1)))
        pos = await bus.cfg_read_int(slot, pos + P.PCI_CAP_LIST_NEXT, 1)
    raise AssertionError(f"the capability list does not end within 48 entries: {found}")


async def check_vmshm_capability(bus, slot, env):
    """Find VMShm's vendor-specific capability, check its layout and values; return its offset."""
    caps = await walk_capabilities(bus, slot)
    vendor_caps = [pos for pos, cap_id in caps if cap_id == P.PCI_CAP_ID_VNDR]
    expect(len(vendor_caps), 1, f"vendor-specific capabilities in the list {caps}")
    pos = vendor_caps[0]
    length = await bus.cfg_read_int(slot, pos + P.PCI_CAP_FLAGS, 1)
    if length < 3:
        raise AssertionError(f"vendor capability length byte: expected at least 3 (ID, next, "
                             f"length), got {length}")
    expect(length, CAP_LEN, "vendor capability length byte (regmap CAP_LEN)")
    if pos + length > P.PCI_CFG_SPACE_SIZE:
        raise AssertionError(f"vendor capability at {pos:#x} of {length} bytes runs past 0xff")
    got = {f.name: await bus.cfg_read_int(slot, pos + f.offset, f.size) for f in CAP.values()}
    name_index = 3 if env.window_64bit else 2
    want = {"CAP_ID": P.PCI_CAP_ID_VNDR, "CAP_NEXT": got["CAP_NEXT"], "CAP_LEN": CAP_LEN,
            "CAP_VERSION": CAP_VERSION, "ABI_VERSION": ABI_VERSION,
            "WINDOW_SIZE": env.window_size, "NAME_SIZE": env.name_size, "REGS_BAR": 0,
            "WINDOW_BAR": 1, "NAME_BAR": name_index, "RESERVED": 0}
    expect(got, want, f"VMShm capability fields at {pos:#x}")
    return pos


@scenario(shm_size=4096, name="pci_config_header_64bit_window", window_64bit=True)
@scenario(shm_size=4096)
async def pci_config_header(bus, env):
    """Check every Type-0 header field and its write behaviour against the PCI spec's rules."""
    slot = (await find_functions(bus, env))[0]

    async def read(offset, size=4):
        return await bus.cfg_read_int(slot, offset, size)

    # Identity. 0xFFFF is what an empty slot reads and 0 is no device to Linux either.
    vendor = await read(P.PCI_VENDOR_ID, 2)
    if vendor in (0xFFFF, 0x0000):
        raise AssertionError(f"vendor ID: expected a real vendor, not {vendor:#06x}")
    expect(vendor, PCI_VENDOR_ID, "vendor ID")
    expect(await read(P.PCI_DEVICE_ID, 2), PCI_DEVICE_ID, "device ID")
    class_rev = await read(P.PCI_CLASS_REVISION)
    expect(class_rev & 0xFF, PCI_REVISION, "revision ID")
    expect(class_rev >> 24, 0x05, "base class code (0x05: memory controller)")
    expect(class_rev >> 8, P.PCI_CLASS_MEMORY_RAM << 8, "class code (RAM, programming interface 0)")
    header = await read(P.PCI_HEADER_TYPE, 1)
    expect(header & P.PCI_HEADER_TYPE_MASK, P.PCI_HEADER_TYPE_NORMAL,
           "header type bits 6:0 (0: Type 0, an endpoint)")
    expect(header >> 7, 0, "header type bit 7 (multi-function: VMShm has one function)")
    expect(await read(P.PCI_BIST, 1), 0, "BIST (not BIST-capable, so the register reads 0)")
    expect(await read(P.PCI_LATENCY_TIMER, 1), 0, "latency timer (hardwired to 0, as in PCIe)")
    expect(await read(P.PCI_CACHE_LINE_SIZE, 1), 0, "cache line size at reset")
    expect(await read(P.PCI_COMMAND, 2), 0, "command register at reset (decode and bus "
                                            "mastering off)")
    subsys_vendor = await read(P.PCI_SUBSYSTEM_VENDOR_ID, 2)
    if subsys_vendor == 0xFFFF:
        raise AssertionError("subsystem vendor ID: expected a real vendor, not 0xffff")
    expect(subsys_vendor, PCI_SUBSYSTEM_VENDOR_ID, "subsystem vendor ID")
    expect(await read(P.PCI_SUBSYSTEM_ID, 2), PCI_SUBSYSTEM_ID, "subsystem ID")
    pin = await read(P.PCI_INTERRUPT_PIN, 1)
    if pin > 4:
        raise AssertionError(f"interrupt pin: expected 0 (none) or 1..4 (INTA..INTD), got {pin}")
    expect(pin, 0, "interrupt pin (VMShm raises no INTx)")
    expect(await read(P.PCI_MIN_GNT, 1), 0, "Min_Gnt (hardwired to 0, as in PCIe)")
    expect(await read(P.PCI_MAX_LAT, 1), 0, "Max_Lat (hardwired to 0, as in PCIe)")
    cap = await check_vmshm_capability(bus, slot, env)
    expect(await read(P.PCI_STATUS, 2), P.PCI_STATUS_CAP_LIST,
           "status at reset (capabilities list only, no error bits)")

    # Every dword the function does not implement reads 0, as the spec asks of reserved ones.
    offsets = range(0, P.PCI_CFG_SPACE_SIZE, DWORD)
    state = {off: await read(off) for off in offsets}
    # A PCI Express capability after VMShm's, if any, offers Function Level Reset.
    exp = await read(cap + P.PCI_CAP_LIST_NEXT, 1)
    implemented = {0x00, 0x04, 0x08, 0x0C, *BAR_OFFSETS, 0x2C, 0x34, 0x3C,
                   *range(cap, cap + CAP_LEN, DWORD)}
    if exp:
        expect(state[exp] & 0xFF, P.PCI_CAP_ID_EXP, "the capability after VMShm's")
        implemented |= {exp, exp + P.PCI_EXP_DEVCAP}
    at_reset = dict(state)
    for off in sorted(set(offsets) - implemented):
        expect(state[off], 0, field_name(off, cap))
    rw = writable_bits(env)
    for index, off in enumerate(BAR_OFFSETS):
        if off not in rw:
            expect(state[off], 0, f"unimplemented BAR{index} at reset")

    # Writes: each writable bit takes the value, every other bit keeps its own.

    def model(offset, data):
        # The spec's write rule, byte by byte: read-only bits ignore the write.
        flr = False
        for i, byte in enumerate(data):
            off, lane = (offset + i) & ~3, 8 * ((offset + i) & 3)
            bits = (rw.get(off, 0) >> lane) & 0xFF
            state[off] = (state[off] & ~(bits << lane)) | ((byte & bits) << lane)
            flr |= bool(exp) and off + lane // 8 == exp + P.PCI_EXP_DEVCTL + 1 and byte & 0x80
        if flr:
            # Initiate FLR: the command register and the BARs are back at their reset values.
            state[P.PCI_COMMAND] = at_reset[P.PCI_COMMAND]
            for off in BAR_OFFSETS:
                state[off] = at_reset[off]

    async def check(offs, what):
        for off in offs:
            expect(await read(off), state[off], f"{field_name(off, cap)} after {what}")

    for value in (ONES32, 0):
        for off in offsets:
            await bus.cfg_write_int(slot, off, 4, value)
            model(off, value.to_bytes(4, "little"))
        await check(offsets, f"writing {value:#x} to every dword")
    # The named rules, once more with their own messages.
    await bus.cfg_write_int(slot, P.PCI_COMMAND, 2, 0xFFFF)
    expect(await read(P.PCI_COMMAND, 2), COMMAND_BITS,
           "command after writing 0xffff (only MEMORY, MASTER and INTX_DISABLE are implemented)")
    model(P.PCI_COMMAND, b"\xff\xff")
    for off, value, what in ((P.PCI_CACHE_LINE_SIZE, 0x10, "cache line size"),
                             (P.PCI_INTERRUPT_LINE, 0x0B, "interrupt line")):
        await bus.cfg_write_int(slot, off, 1, value)
        model(off, bytes([value]))
        expect(await read(off, 1), value, f"{what} read back (RW)")
    for off, what in ((P.PCI_ROM_ADDRESS, "expansion ROM BAR"),
                      (P.PCI_CARDBUS_CIS, "CardBus CIS pointer")):
        await bus.cfg_write_int(slot, off, 4, ONES32)
        expect(await read(off), 0, f"{what} after writing all ones (not implemented)")

    # Byte enables: a write of part of a dword touches only the bytes it enables.
    header_and_cap = [*range(0, HEADER_END, DWORD), *range(cap, cap + CAP_LEN, DWORD)]
    partial = [
        (P.PCI_VENDOR_ID + 1, b"\x00", "the vendor ID's high byte"),
        (P.PCI_DEVICE_ID, b"\x00", "the device ID's low byte"),
        (P.PCI_COMMAND, b"\x00", "the command register's low byte"),
        (P.PCI_COMMAND + 1, b"\x00", "the command register's high byte"),
        (P.PCI_COMMAND + 1, b"\xff", "the command register's high byte"),
        (P.PCI_COMMAND, b"\xff", "the command register's low byte"),
        (P.PCI_STATUS, b"\x00\x00", "the status register"),
        (P.PCI_STATUS + 1, b"\xff", "the status register's high byte"),
        (P.PCI_REVISION_ID, b"\xff", "the revision ID"),
        (P.PCI_CLASS_PROG, b"\x00\x00\x00", "the class code"),
        (P.PCI_CACHE_LINE_SIZE, b"\x20", "the cache line size"),
        (P.PCI_LATENCY_TIMER, b"\xff", "the latency timer"),
        (P.PCI_HEADER_TYPE, b"\xff\xff", "the header type and BIST"),
        (P.PCI_BASE_ADDRESS_0 + 2, b"\xab", "byte 2 of BAR0"),
        (P.PCI_BASE_ADDRESS_0, b"\x00", "byte 0 of BAR0"),
        (BAR_OFFSETS[1] + 3, b"\xcd", "byte 3 of BAR1"),
        (BAR_OFFSETS[1] + 1, b"\x00\x00", "bytes 1 and 2 of BAR1"),
        (P.PCI_SUBSYSTEM_VENDOR_ID + 1, b"\x00", "the subsystem vendor ID's high byte"),
        (P.PCI_SUBSYSTEM_ID, b"\x00\x00", "the subsystem ID"),
        (P.PCI_ROM_ADDRESS, b"\x01", "the expansion ROM enable bit"),
        (P.PCI_CAPABILITY_LIST, b"\x00", "the capability pointer"),
        (P.PCI_INTERRUPT_PIN, b"\x02", "the interrupt pin"),
        (P.PCI_INTERRUPT_LINE, b"\x05", "the interrupt line"),
        (P.PCI_MIN_GNT, b"\xff\xff", "Min_Gnt and Max_Lat"),
        (cap + CAP["CAP_LEN"].offset, b"\x00", "the capability's length byte"),
        (cap + CAP["WINDOW_SIZE"].offset + 1, b"\xff", "a byte of the capability's WINDOW_SIZE"),
    ]
    for offset, data, what in partial:
        await bus.cfg_write(slot, offset, data)
        model(offset, data)
        await check(header_and_cap, f"writing {data.hex()} to {what} at {offset:#04x}")

    # Extended configuration space (0x100..0xfff) holds no capabilities and reads 0. Each address
    # bit 8..11 is tried under every header dword that is not 0, so an alias would show.
    nonzero = [off for off in header_and_cap if state[off]]
    for high in (0x100, 0x200, 0x400, 0x800, 0xF00):
        for off in nonzero:
            expect(await read(high + off), 0, f"extended dword {high + off:#05x}")
        await bus.cfg_write_int(slot, high + P.PCI_COMMAND, 4, 0)
        await bus.cfg_write_int(slot, high + P.PCI_INTERRUPT_LINE, 4, 0)
        await bus.cfg_write_int(slot, high + BAR_OFFSETS[0], 4, 0)
    expect(await read(0xFFC), 0, "extended dword 0xffc")
    await check(header_and_cap, "writes to extended configuration space")

    # After all that, a guest still finds, places and binds the device.
    for off in (P.PCI_COMMAND, P.PCI_CACHE_LINE_SIZE, P.PCI_INTERRUPT_LINE):
        await bus.cfg_write_int(slot, off, 1 if off != P.PCI_COMMAND else 2, 0)
    drv = await probe(bus)
    expect(await reg(drv, "ID"), DEVICE_ID, "ID register after probe")
    expect(await reg(drv, "VERSION"), drv.version, "VERSION register and the capability's "
                                                   "ABI_VERSION")
    expect(await read(P.PCI_COMMAND, 2), P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER,
           "command after probe")
    return {"capability": cap, "nonzero_dwords": len(nonzero)}


@scenario(shm_size=4096, name="pci_bar_sizing_64bit_window", window_64bit=True)
@scenario(shm_size=4096, name="pci_bar_sizing_4k_regs", regs_size=4096)
@scenario(shm_size=4096, name="pci_bar_sizing_small", window_size=64 << 10, name_size=256)
@scenario(shm_size=4096)
async def pci_bar_sizing(bus, env):
    """Size every BAR as the spec says: memory type bits, power-of-two masks, base bits writable."""
    slot = (await find_functions(bus, env))[0]
    configured = expected_bars(env)

    async def read(offset):
        return await bus.cfg_read_int(slot, offset, 4)

    async def write(offset, value):
        await bus.cfg_write_int(slot, offset, 4, value)

    found = {}
    index = 0
    while index < 6:
        reg_off, what = BAR_OFFSETS[index], f"BAR{index}"
        reset = await read(reg_off)
        await write(reg_off, ONES32)
        low = await read(reg_off)
        if index not in configured:
            expect(low, 0, f"unimplemented {what} after writing all ones")
            await write(reg_off, 0x5A5A_5A5A)
            expect(await read(reg_off), 0, f"unimplemented {what} after writing 0x5a5a5a5a")
            index += 1
            continue
        expect(low & P.PCI_BASE_ADDRESS_SPACE_IO, 0, f"{what} bit 0 (0: memory space)")
        mem_type = low & P.PCI_BASE_ADDRESS_MEM_TYPE_MASK
        if mem_type not in (P.PCI_BASE_ADDRESS_MEM_TYPE_32, P.PCI_BASE_ADDRESS_MEM_TYPE_64):
            raise AssertionError(f"{what} type bits 2:1: expected 00 (32-bit) or 10 (64-bit), "
                                 f"got {mem_type >> 1:02b}")
        is64 = mem_type == P.PCI_BASE_ADDRESS_MEM_TYPE_64
        prefetch = bool(low & P.PCI_BASE_ADDRESS_MEM_PREFETCH)
        flags = low & 0xF
        expect(reset & 0xF, flags, f"{what} type bits at reset")
        width = 64 if is64 else 32
        mask = low & ~0xF
        if is64:
            if index == 5:
                raise AssertionError("BAR5 claims to be 64-bit: there is no BAR6 for its upper "
                                     "dword")
            await write(reg_off + 4, ONES32)
            high = await read(reg_off + 4)
            expect(high, ONES32, f"upper dword of 64-bit {what} after writing all ones")
            mask |= high << 32
        size = (~mask & ((1 << width) - 1)) + 1
        if size & (size - 1) or size < 16:
            raise AssertionError(f"{what} size ~mask + 1 = {size:#x} from mask {mask:#x}: "
                                 f"expected a power of two of at least 16")
        expect(mask, ((1 << width) - 1) & ~(size - 1),
               f"{what} mask: every bit from log2(size) up writable")
        expect((size, is64, prefetch), configured[index],
               f"{what} (size, 64-bit, prefetchable) against the build parameters")
        if index == 0 and prefetch:
            raise AssertionError("BAR0 holds read-to-trigger registers: reads have side "
                                 "effects, so it must not be prefetchable")
        # Writing zeros clears the base; the type bits are read-only and stay.
        await write(reg_off, 0)
        if is64:
            await write(reg_off + 4, 0)
            expect(await read(reg_off + 4), 0, f"upper dword of {what} after writing 0")
        expect(await read(reg_off), flags, f"{what} after writing 0 (type bits stay)")
        # The base bits are exactly those at and above log2(size): two complementary patterns.
        for pattern in (0xA5A5_A5A5, 0x5A5A_5A5A):
            await write(reg_off, pattern)
            got = await read(reg_off)
            if is64:
                await write(reg_off + 4, pattern)
                got |= await read(reg_off + 4) << 32
                pattern |= pattern << 32
            expect(got, (pattern & mask) | flags,
                   f"{what} after writing {pattern:#x}: bits from {size.bit_length() - 1} up "
                   f"take it, the type bits stay")
        # A base, as a PCI core assigns one, reads back as written.
        base = (0x12 << 32 if is64 else 0xC000_0000) + 3 * size
        await write(reg_off, base & ONES32)
        if is64:
            await write(reg_off + 4, base >> 32)
        got = await read(reg_off) | ((await read(reg_off + 4)) << 32 if is64 else 0)
        expect(got, base | flags, f"{what} base read back")
        await write(reg_off, 0)
        if is64:
            await write(reg_off + 4, 0)
        found[index] = (size, is64, prefetch)
        index += 2 if is64 else 1       # a 64-bit BAR consumes the next index: its upper dword
    expect(found, configured, "BARs found by sizing (index: size, 64-bit, prefetchable)")

    # The PCI core finds the same, places every BAR naturally aligned, and the device decodes.
    drv = await probe(bus)
    resources = {i: (r.size, r.is64, r.prefetch) for i, r in drv.pdev.resources.items()}
    expect(resources, configured, "BARs found by pci_scan_bus")
    for res in drv.pdev.resources.values():
        expect(res.start % res.size, 0, f"BAR{res.index} at {res.start:#x}: aligned to its size")
        if res.is64:
            if res.start < 1 << 32:
                raise AssertionError(f"64-bit BAR{res.index} at {res.start:#x}: expected the "
                                     f"allocator to place it above 4 GiB")
    expect((drv.regs.size, drv.window.size, drv.names.size),
           (env.regs_size, env.window_size, env.name_size), "BARs the driver mapped")
    expect(await reg(drv, "ID"), DEVICE_ID, "ID register through BAR0")
    expect((await reg(drv, "WINDOW_SIZE"), await reg(drv, "NAME_SIZE")),
           (env.window_size, env.name_size), "WINDOW_SIZE and NAME_SIZE registers")
    for bar in (drv.regs, drv.window, drv.names):
        await bar.read(bar.size - 4, 4)
        expect(bus.records[-1].status, "SC", f"status of a read of the last word of the BAR "
                                             f"at {bar.base:#x}")
    return {"bars": [str(r) for r in drv.pdev.resources.values()]}


async def expect_undecoded(bus, resources, what):
    """Check no BAR in ``resources`` decodes: reads all ones with UR, writes answered UR."""
    for res in resources:
        for offset in (0, res.size - 8):
            addr = res.start + offset
            mark = len(bus.records)
            expect_bytes(await bus.mem_read(addr, 8), b"\xff" * 8,
                         f"{what}: read of BAR{res.index} at {addr:#x}")
            expect({r.status for r in bus.records[mark:]}, {"UR"},
                   f"{what}: status of the read of BAR{res.index} at {addr:#x}")
            await bus.mem_write(addr, b"dropped!")
            expect(bus.records[-1].status, "UR",
                   f"{what}: status of a write to BAR{res.index} at {addr:#x}")


@scenario(shm_size=4096)
async def pci_decode_enables(bus, env):
    """Decode nothing before Memory Space Enable or once it is cleared; OPEN needs bus mastering."""
    pdevs = await pci_scan_bus(bus)
    expect(len(pdevs), env.devices, "functions found")
    pdev = pdevs[0]
    await pci_assign_resources(pdev, MemAllocator())
    resources = list(pdev.resources.values())
    expect(await pdev.read_config(P.PCI_COMMAND, 2), 0, "command after placing the BARs")
    # Reads of OPEN and CLOSE are among these: if one reached the core it would trigger.
    await expect_undecoded(bus, resources, "before Memory Space Enable")
    await pci_set_master(pdev)
    await expect_undecoded(bus, resources, "with Bus Master Enable but no Memory Space Enable")
    await pci_clear_master(pdev)

    drv = await VMShmDriver(pdev).probe()
    expect(await pdev.read_config(P.PCI_COMMAND, 2),
           P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER, "command after the driver's probe")
    expect_bytes(await drv.names.read(0, 8), bytes(8), "name buffer: writes before MSE dropped")
    expect_bytes(await drv.names.read(env.name_size - 8, 8), bytes(8),
                 "name buffer's end: writes before MSE dropped")
    await expect_status(drv, False, Status.OK, "after reading OPEN and CLOSE before MSE")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after window accesses before MSE")

    # Without Bus Master Enable the driver's ioctl fails with EPERM and nothing opens.
    await pci_clear_master(pdev)
    fd = await drv.open()
    await expect_errno(drv.ioctl(fd, 0, env.shm_name), errno.EPERM,
                       "ioctl without Bus Master Enable")
    await expect_status(drv, False, Status.EPERM, "after ioctl without Bus Master Enable")
    await expect_errno(drv.mmap(fd, 16), errno.EINVAL, "mmap after the refused ioctl")
    await pci_set_master(pdev)
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, env.shm_size)
    await mapping.write(0, b"decoded!")

    # Memory Space Enable cleared again, Bus Master Enable kept: nothing decodes or triggers.
    await pdev.write_config(P.PCI_COMMAND, 2, P.PCI_COMMAND_MASTER)
    await expect_undecoded(bus, resources, "after Memory Space Enable was cleared")
    expect_bytes(await bus.mem_read(drv.regs.base + REG["CLOSE"].offset, 4), b"\xff" * 4,
                 "read of CLOSE with decode off")
    await pci_enable_device(pdev)
    await expect_status(drv, True, Status.OK, "after reads of OPEN and CLOSE with decode off")
    expect_bytes(await mapping.read(0, 8), b"decoded!", "window: the write with decode off")
    expect_bytes(await drv.names.read(0, len(env.shm_name) + 1),
                 env.shm_name.encode() + b"\0", "name buffer: the write with decode off")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after accesses with decode off")
    with host_object(env) as host:
        expect_bytes(host.read(0, 8), b"decoded!", "object: the write with decode off")
    await drv.munmap(mapping)
    await drv.close(fd)
    await expect_status(drv, False, Status.OK, "after release")


@scenario(shm_size=4096, name="pci_decode_outside_bars_64bit_window", window_64bit=True)
@scenario(shm_size=4096)
async def pci_decode_outside_bars(bus, env):
    """Answer accesses next to, between and aliasing the BARs as unsupported, and never hang."""
    wb = bus.word_bytes
    pattern = random.Random(env.seed).randbytes(env.shm_size)
    with host_object(env) as host:
        host.write(0, pattern)
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, env.shm_size)
    bars = sorted(drv.pdev.resources.values(), key=lambda r: r.start)

    targets = [(0, wb, "address 0"), ((1 << 64) - 2 * wb, 2 * wb, "the top of memory space")]
    for res in bars:
        bar, end = f"BAR{res.index}", res.start + res.size
        targets += [(res.start - wb, wb, f"the word below {bar}"),
                    (res.start - wb, 2 * wb, f"a burst running into {bar}"),
                    (end, wb, f"the word after {bar}"),
                    (end - wb, 2 * wb, f"a burst crossing {bar}'s end"),
                    (end - 3 * wb, 8 * wb, f"a longer burst crossing {bar}'s end")]
        if res.is64:
            targets.append((res.start & ONES32, wb, f"{bar}'s low 32 bits alone"))
            targets.append((res.start ^ 1 << 63, wb, f"{bar} with bit 63 flipped"))
        else:
            # A 32-bit BAR decodes only addresses below 4 GiB: none of these alias it.
            for bit in (32, 40, 63):
                targets.append((res.start + (1 << bit), wb, f"{bar} + 2**{bit}"))
    for lo, hi in zip(bars, bars[1:]):
        gap = hi.start - (lo.start + lo.size)
        if gap >= 2 * wb:
            mid = (lo.start + lo.size + gap // 2) // wb * wb
            targets.append((mid, wb, f"between BAR{lo.index} and BAR{hi.index}"))

    tried = 0
    for addr, n, what in targets:
        if addr < 0 or claimed(drv, addr, n):
            continue    # the allocator put a BAR right there
        tried += 1
        where = f"{what} ({n} bytes at {addr:#x})"
        mark = len(bus.records)
        expect_bytes(await bus.mem_read(addr, n), b"\xff" * n, f"read of {where}")
        expect({r.status for r in bus.records[mark:]}, {"UR"}, f"status of a read of {where}")
        await bus.mem_write(addr, bytes(range(1, n + 1)))
        expect(bus.records[-1].status, "UR", f"status of a write to {where}")
    if tried < 4 * len(bars):
        raise AssertionError(f"only {tried} of {len(targets)} targets were outside every BAR")

    # None of it reached the device or the object, and the device still works.
    await expect_status(drv, True, Status.OK, "after unsupported requests")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after unsupported requests")
    expect_bytes(await drv.names.read(0, len(env.shm_name) + 1),
                 env.shm_name.encode() + b"\0", "name buffer after unsupported requests")
    expect_bytes(await mapping.read(0, env.shm_size), pattern, "window after unsupported requests")
    with host_object(env) as host:
        expect_bytes(host.read(0, env.shm_size), pattern, "object after unsupported requests")
    await drv.munmap(mapping)
    await drv.close(fd)
    return {"tried": tried}


@scenario(shm_size=8192, devices=2)
async def pci_two_devices(bus, env):
    """Probe two functions: distinct aligned BARs, independent files, one shared host object."""
    drivers, pdevs = await vmshm_probe(bus)
    expect(len(pdevs), 2, "functions found on the bus")
    expect([d.path for d in drivers], ["/dev/vmshm0", "/dev/vmshm1"], "device files bound")
    expect([d.pdev.slot for d in drivers], [0, 1], "slots of the two functions")
    placed = []
    for drv in drivers:
        for res in drv.pdev.resources.values():
            what = f"slot {drv.pdev.slot} BAR{res.index} at {res.start:#x}"
            expect(res.start % res.size, 0, f"{what}: aligned to its size {res.size:#x}")
            back = await drv.pdev.read_config(BAR_OFFSETS[res.index], 4) & ~0xF
            if res.is64:
                back |= await drv.pdev.read_config(BAR_OFFSETS[res.index] + 4, 4) << 32
            expect(back, res.start, f"{what}: base in the BAR register")
            for other, start, size in placed:
                if start < res.start + res.size and res.start < start + size:
                    raise AssertionError(f"{what} (size {res.size:#x}) overlaps {other}")
            placed.append((what, res.start, res.size))
    d0, d1 = drivers

    # Configuration writes reach one slot only; so does turning decode off.
    await d0.pdev.write_config(P.PCI_CACHE_LINE_SIZE, 1, 0x10)
    expect(await d1.pdev.read_config(P.PCI_CACHE_LINE_SIZE, 1), 0,
           "slot 1's cache line size after a write to slot 0's")
    await pci_disable_device(d1.pdev)
    expect(await reg(d1, "ID"), ONES32, "device 1's ID with its decode off")
    expect(await reg(d0, "ID"), DEVICE_ID, "device 0's ID with device 1's decode off")
    await pci_enable_device(d1.pdev)
    await pci_set_master(d1.pdev)
    expect(await reg(d1, "ID"), DEVICE_ID, "device 1's ID with its decode on again")

    # Files and objects are per device: one open and mapped leaves the other closed.
    fd0 = await d0.open()
    await d0.ioctl(fd0, 0, env.shm_name)
    m0 = await d0.mmap(fd0, env.shm_size)
    await expect_status(d1, False, Status.OK, "device 1 while device 0 has the object open")
    expect_bytes(await d1.window.read(0, 8), b"\xff" * 8, "device 1's window, nothing opened")
    expect((await reg(d0, "REJECTS"), await reg(d1, "REJECTS")), (0, 1),
           "REJECTS of devices 0 and 1 after device 1's rejected read")
    fd1 = await d1.open()   # not EBUSY: the exclusive open is per device
    await d1.ioctl(fd1, 0, env.shm_name)
    m1 = await d1.mmap(fd1, env.shm_size)

    # Both opened the same host object: each sees the other's stores.
    await m0.write(0x101, b"from device 0")
    expect_bytes(await m1.read(0x101, 13), b"from device 0", "device 1 reads device 0's store")
    await m1.write(env.shm_size - 13, b"from device 1")
    expect_bytes(await m0.read(env.shm_size - 13, 13), b"from device 1",
                 "device 0 reads device 1's store")
    with host_object(env) as host:
        expect_bytes(host.read(0x101, 13), b"from device 0", "object: device 0's store")
        expect_bytes(host.read(env.shm_size - 13, 13), b"from device 1",
                     "object: device 1's store")

    # Releasing device 0 leaves device 1 open and working.
    await d0.munmap(m0)
    await d0.close(fd0)
    await expect_status(d0, False, Status.OK, "device 0 after its release")
    await expect_status(d1, True, Status.OK, "device 1 after device 0's release")
    expect_bytes(await d0.window.read(0x100, 8), b"\xff" * 8, "device 0's window after release")
    await m1.write(0x200, b"still here")
    expect_bytes(await m1.read(0x101, 13), b"from device 0", "device 1 after device 0's release")
    with host_object(env) as host:
        expect_bytes(host.read(0x200, 10), b"still here", "object: device 1's later store")
    fd0 = await d0.open()
    await d0.close(fd0)
    await d1.munmap(m1)
    await d1.close(fd1)
    await expect_status(d1, False, Status.OK, "device 1 after its release")
    return {"bars": [what for what, _, _ in placed]}


#: Sizes of the device the discovery scenario probes: neither is a default.
DISCOVERY_WINDOW = 64 << 10
DISCOVERY_NAMES = 256


@scenario(shm_size=2 * DISCOVERY_WINDOW, window_size=DISCOVERY_WINDOW,
          name_size=DISCOVERY_NAMES)
async def pci_capability_discovery(bus, env):
    """Let a driver that has never seen the device's sizes learn them from the capability."""
    if env.window_size == DEFAULT_WINDOW_SIZE or env.name_size == DEFAULT_NAME_SIZE:
        raise AssertionError("the discovery scenario needs a device with non-default sizes")
    pdevs = await pci_scan_bus(bus)
    pdev = pdevs[0]
    await pci_assign_resources(pdev, MemAllocator())
    drv = VMShmDriver(pdev)
    expect((drv.window_size, drv.name_size), (None, None), "sizes a fresh driver knows")
    await drv.probe()
    expect((drv.window_size, drv.name_size), (env.window_size, env.name_size),
           "window and name sizes the driver read from the capability")
    expect((drv.window.size, drv.names.size), (env.window_size, env.name_size),
           "sizes of the BARs the capability's indices led to")
    expect((await reg(drv, "WINDOW_SIZE"), await reg(drv, "NAME_SIZE")),
           (env.window_size, env.name_size), "WINDOW_SIZE and NAME_SIZE registers")

    # The name buffer's discovered size bounds the names the driver writes.
    fd = await drv.open()
    too_long = "/" + "n" * (env.name_size - 1)
    mark = len(bus.records)
    await expect_errno(drv.ioctl(fd, 0, too_long), errno.ENAMETOOLONG,
                       f"ioctl with a {len(too_long)}-byte name for a {env.name_size}-byte "
                       f"name buffer")
    expect(bus.records[mark:], [], "bus traffic of a name the driver refused")
    await drv.ioctl(fd, 0, env.shm_name)

    # The object is bigger than the window: the window's discovered size bounds mmap.
    await expect_sizes(drv, env.window_size, env.shm_size, "after OPEN")
    await expect_errno(drv.mmap(fd, env.window_size + 1), errno.EINVAL,
                       "mmap one byte past the discovered window")
    await expect_errno(drv.mmap(fd, 16, env.window_size - 8), errno.EINVAL,
                       "mmap running past the discovered window")
    mapping = await drv.mmap(fd, env.window_size)
    await mapping.write(env.window_size - 4, b"end!")
    with host_object(env) as host:
        expect_bytes(host.read(env.window_size - 4, 8), b"end!" + bytes(4),
                     "object at the window's end")
    await drv.munmap(mapping)
    await drv.close(fd)
    return {"window_size": drv.window_size, "name_size": drv.name_size}


# -- names -------------------------------------------------------------------------------------

@scenario(shm_size=4096)
async def names_rejected(bus, env):
    """Refuse malformed and missing names with the right errno; a good name still opens after."""
    drv = await probe(bus)
    long_base = env.shm_name + "-missing-"
    bad = [
        (env.shm_name + "-missing", errno.ENOENT, "a missing object"),
        (env.shm_name[1:], errno.EINVAL, "no leading '/'"),
        (env.shm_name + "/x", errno.EINVAL, "another '/'"),
        ("/dir/" + env.shm_name[1:], errno.EINVAL, "a '/' in the middle"),
        ("", errno.EINVAL, "an empty name"),
        ("/", errno.EINVAL, "'/' alone"),
        ("//", errno.EINVAL, "'//'"),
        (long_base + "m" * (NAME_MAX + 1 - len(long_base)), errno.ENOENT,
         "NAME_MAX characters, missing"),
        (long_base + "m" * (NAME_MAX + 2 - len(long_base)), errno.ENAMETOOLONG,
         "NAME_MAX + 1 characters"),
        (b"/\xff\xfe-not-utf8-missing", errno.ENOENT, "bytes that are not UTF-8, missing"),
    ]
    fd = await drv.open()
    for name, code, what in bad:
        await expect_errno(drv.ioctl(fd, 0, name), code, f"ioctl with {what}")
        await expect_status(drv, False, code, f"after ioctl with {what}")
        # The same file opens a good name right after; release it to try the next bad one.
        await drv.ioctl(fd, 0, env.shm_name)
        await expect_status(drv, True, Status.OK, f"after a good name following {what}")
        await drv.close(fd)
        await expect_status(drv, False, Status.OK, f"after release following {what}")
        fd = await drv.open()
    # As in C, the name ends at its first NUL; bytes work as well as str.
    await drv.ioctl(fd, 0, env.shm_name + "\0/trailing/junk")
    await drv.close(fd)
    fd = await drv.open()
    await drv.ioctl(fd, 0, os.fsencode(env.shm_name))
    await drv.close(fd)


@scenario(shm_size=4096, name="names_buffer_limits_small", name_size=64)
@scenario(shm_size=4096)
async def names_buffer_limits(bus, env):
    """Fill BAR2 to its last byte, refuse names that do not fit, and refuse a BAR2 with no NUL."""
    n = env.name_size
    drv = await probe(bus)
    fd = await drv.open()

    # The longest name that fits with its NUL is written; the host judges it.
    longest = "/" + "n" * (n - 2)
    host_says = errno.ENAMETOOLONG if n - 2 > NAME_MAX else errno.ENOENT
    await expect_errno(drv.ioctl(fd, 0, longest), host_says, f"ioctl with a {n - 1}-byte name")
    expect_bytes(await drv.names.read(0, n), longest.encode() + b"\0",
                 "BAR2 after the longest name")

    # Longer ones are refused by the driver before anything reaches the device.
    for size in (n, n + 1, n + 500):
        mark = len(bus.records)
        await expect_errno(drv.ioctl(fd, 0, "/" + "o" * (size - 1)), errno.ENAMETOOLONG,
                           f"ioctl with a {size}-byte name")
        expect(bus.records[mark:], [], f"bus traffic of an ioctl with a {size}-byte name")
        expect_bytes(await drv.names.read(0, n), longest.encode() + b"\0",
                     f"BAR2 after refusing a {size}-byte name")

    # BAR2 with no NUL at all: the host is given the whole buffer and refuses it.
    await drv.names.write(0, b"x" * n)
    expect(await reg(drv, "OPEN"), Status.ENAMETOOLONG, "OPEN with no NUL in BAR2")
    await expect_status(drv, False, Status.ENAMETOOLONG, "after OPEN with no NUL")
    # The same with a good name in front: still no NUL, still refused.
    await drv.names.write(0, env.shm_name.encode().ljust(n, b"x"))
    expect(await reg(drv, "OPEN"), Status.ENAMETOOLONG, "OPEN of a good name with no NUL")

    # A good name opens, although BAR2 still holds stale bytes after its NUL.
    await drv.ioctl(fd, 0, env.shm_name)
    expect_bytes(await drv.names.read(len(env.shm_name) + 1, 4), b"xxxx",
                 "stale bytes after the NUL")
    await expect_status(drv, True, Status.OK, "after a good name")
    await drv.close(fd)
    await expect_status(drv, False, Status.OK, "after release")


# -- the driver's file semantics ---------------------------------------------------------------

@scenario(shm_size=4096)
async def driver_file_semantics(bus, env):
    """Refuse a second open, bad descriptors, unknown ioctls and mappings past the object."""
    size = env.shm_size
    drv = await probe(bus)
    fd = await drv.open()
    await expect_errno(drv.open(), errno.EBUSY, "second open")
    for bad in (fd + 1, -1, None):
        await expect_errno(drv.ioctl(bad, 0, env.shm_name), errno.EBADF, f"ioctl on fd {bad}")
    mark = len(bus.records)
    await expect_errno(drv.ioctl(fd, 1, env.shm_name), errno.ENOTTY, "ioctl 1")
    expect(bus.records[mark:], [], "bus traffic of an unknown ioctl")
    await expect_errno(drv.mmap(fd, 4096), errno.EINVAL, "mmap before the ioctl")
    await expect_status(drv, False, Status.OK, "after the refused calls")

    await drv.ioctl(fd, 0, env.shm_name)
    await expect_errno(drv.ioctl(fd, 0, env.shm_name), errno.EBUSY, "a second ioctl")
    for length, offset in ((size + 1, 0), (0, 0), (-4, 0), (16, size - 8), (4, -4)):
        await expect_errno(drv.mmap(fd, length, offset), errno.EINVAL,
                           f"mmap of {length} bytes at {offset}")
    await expect_errno(drv.mmap(fd + 1, size), errno.EBADF, "mmap on a bad fd")
    mapping = await drv.mmap(fd, size)
    mark = len(bus.records)
    for offset, n in ((size - 4, 8), (size, 1), (-1, 1), (0, size + 1)):
        await expect_errno(mapping.read(offset, n), errno.EINVAL, f"read {n} at {offset}")
        await expect_errno(mapping.write(offset, b"\0" * n), errno.EINVAL,
                           f"write {n} at {offset}")
    expect(bus.records[mark:], [], "bus traffic of refused loads and stores")
    await mapping.write(size - 4, b"end!")
    expect_bytes(await mapping.read(size - 4, 4), b"end!", "the mapping's last bytes")

    # A mapping at an offset into the window.
    part = await drv.mmap(fd, 64, 128)
    await part.write(0, b"at 128")
    await expect_errno(part.read(60, 8), errno.EINVAL, "read past a 64-byte mapping")
    with host_object(env) as host:
        expect_bytes(host.read(128, 6), b"at 128", "object behind a mapping at offset 128")
        expect_bytes(host.read(size - 4, 4), b"end!", "object's last bytes")

    await drv.munmap(part)
    await expect_errno(drv.munmap(part), errno.EINVAL, "munmap twice")
    await expect_errno(part.read(0, 1), errno.EFAULT, "load from an unmapped mapping")
    await drv.munmap(mapping)
    await drv.close(fd)
    await expect_errno(drv.close(fd), errno.EBADF, "close twice")
    await expect_errno(drv.ioctl(fd, 0, env.shm_name), errno.EBADF, "ioctl after close")
    await expect_errno(drv.mmap(fd, 16), errno.EBADF, "mmap after close")
    await expect_status(drv, False, Status.OK, "after release")
    fd = await drv.open()
    await drv.close(fd)


def close_reads(bus, since, drv):
    """Return how many reads of CLOSE the bus carried since record index ``since``."""
    # On a 64-bit path a read of WINDOW_SIZE has the same word address: no scenario below
    # reads it in between.
    return sum(r.access is Access.READ and r.addr == drv.regs.base + REG["CLOSE"].offset
               for r in records_in(bus, since, drv.regs))


@scenario(shm_size=4096)
async def driver_release_with_live_mapping(bus, env):
    """Keep the object open after close() while a mapping lives; the last munmap releases it."""
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, 1024)
    mark = len(bus.records)
    await drv.close(fd)
    expect(close_reads(bus, mark, drv), 0, "CLOSE reads on close() with a live mapping")
    await expect_status(drv, True, Status.OK, "after close() with a live mapping")
    await mapping.write(100, b"after close")
    with host_object(env) as host:
        expect_bytes(host.read(100, 11), b"after close", "a store after close()")
    await expect_errno(drv.open(), errno.EBUSY, "open while a mapping holds the file")
    await drv.munmap(mapping)
    expect(close_reads(bus, mark, drv), 1, "CLOSE reads after the last munmap")
    await expect_status(drv, False, Status.OK, "after the last munmap")

    # Two mappings: only the last munmap releases.
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    first, second = await drv.mmap(fd, 64), await drv.mmap(fd, 64, 64)
    await drv.close(fd)
    mark = len(bus.records)
    await drv.munmap(second)
    await expect_status(drv, True, Status.OK, "after munmap of one of two mappings")
    expect_bytes(await first.read(0, 4), b"\0" * 4, "the other mapping")
    await drv.munmap(first)
    expect(close_reads(bus, mark, drv), 1, "CLOSE reads after the last of two munmaps")
    await expect_status(drv, False, Status.OK, "after both munmaps")


# -- the window --------------------------------------------------------------------------------

@scenario(shm_size=64 << 10)
async def window_random_integrity(bus, env):
    """Move random unaligned byte ranges both ways and check every byte against a shadow copy."""
    rng = random.Random(env.seed)
    size, wb = env.shm_size, bus.word_bytes
    shadow = bytearray(rng.randbytes(size))
    with host_object(env) as host:
        host.write(0, shadow)
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, size)
    ops = {"guest writes": 0, "host writes": 0, "guest reads": 0, "masked writes": 0}

    def pick(longest):
        n = rng.randint(1, longest)
        return rng.randrange(0, size - n + 1), n

    with host_object(env) as host:
        # Whole bursts at the limits of the burst counter: 256 words, then 257 (two bursts).
        for words in (256, 257):
            offset, data = rng.randrange(0, size // 2, wb), rng.randbytes(words * wb)
            await mapping.write(offset, data)
            shadow[offset:offset + len(data)] = data
            expect_bytes(await mapping.read(offset, len(data)), data,
                         f"{words} words at {offset:#x} read back (seed {env.seed})")
        for step in range(48):
            kind = rng.choice(list(ops))
            ops[kind] += 1
            where = f"step {step} (seed {env.seed})"
            if kind == "guest writes":
                offset, n = pick(300)
                data = rng.randbytes(n)
                await mapping.write(offset, data)
                shadow[offset:offset + n] = data
                lo, hi = max(0, offset - 2 * wb), min(size, offset + n + 2 * wb)
                expect_bytes(host.read(lo, hi - lo), shadow[lo:hi],
                             f"{where}: object around a guest write of {n} at {offset:#x}")
            elif kind == "host writes":
                offset, n = pick(300)
                data = rng.randbytes(n)
                host.write(offset, data)
                shadow[offset:offset + n] = data
                expect_bytes(await mapping.read(offset, n), data,
                             f"{where}: guest read of a host write of {n} at {offset:#x}")
            elif kind == "guest reads":
                offset, n = pick(300)
                expect_bytes(await mapping.read(offset, n), shadow[offset:offset + n],
                             f"{where}: guest read of {n} at {offset:#x}")
            else:
                # One to three bytes inside a word or across two: byte enables at work.
                offset, n = pick(3)
                data = rng.randbytes(n)
                await mapping.write(offset, data)
                shadow[offset:offset + n] = data
                lo = offset // wb * wb
                hi = min(size, word_ceil(offset + n, wb))
                expect_bytes(host.read(lo, hi - lo), shadow[lo:hi],
                             f"{where}: words around a {n}-byte write at {offset:#x}")
                expect_bytes(await mapping.read(lo, hi - lo), shadow[lo:hi],
                             f"{where}: guest read of words around a {n}-byte write")
        expect_bytes(host.read(0, size), shadow, f"whole object at the end (seed {env.seed})")
    await drv.munmap(mapping)
    await drv.close(fd)
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after accesses inside the object")
    return ops


@scenario(shm_size=1003)
async def window_short_object(bus, env):
    """Serve an object whose size is not a multiple of the word up to its end and no further."""
    size, wb = env.shm_size, bus.word_bytes
    limit = word_ceil(size, wb)     # the device decides word by word
    rng = random.Random(env.seed)
    pattern = rng.randbytes(size)
    with host_object(env) as host:
        host.write(0, pattern)
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    await expect_sizes(drv, size, size, "after OPEN")
    await expect_errno(drv.mmap(fd, size + 1), errno.EINVAL, "mmap past the object")
    mapping = await drv.mmap(fd, size)
    expect_bytes(await mapping.read(0, size), pattern, "whole object")
    tail = b"TAIL-0123456"
    await mapping.write(size - len(tail), tail)
    await mapping.write(size - 1, b"!")
    expected = pattern[:size - len(tail)] + tail[:-1] + b"!"
    expect_bytes(await mapping.read(size - 16, 16), expected[-16:], "last bytes read back")
    await expect_errno(mapping.read(size - 1, 2), errno.EINVAL, "mapping read past the object")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after accesses inside the object")

    window = drv.window
    with host_object(env) as host:
        # The rest of the last word is served by the host: it reads as ones and takes no store.
        if limit > size:
            expect_bytes(await window.read(size, limit - size), b"\xff" * (limit - size),
                         "bytes after the object in its last word")
            await window.write(size, b"\0" * (limit - size))
            expect(await reg(drv, "REJECTS"), 0, "REJECTS after the last word")
        # Past the last word the device rejects the access itself.
        rejects = 0
        for offset, n in ((limit, 4), (limit + 1, 1), (limit, 64), (env.window_size - 4, 4),
                          (size - 5, 5 + wb)):      # a burst that starts inside reaches outside
            expect_bytes(await window.read(offset, n), b"\xff" * n,
                         f"read of {n} bytes at {offset:#x}")
            await window.write(offset, b"\0" * n)
            rejects += 2
            expect(await reg(drv, "REJECTS"), rejects, f"REJECTS after accesses at {offset:#x}")
        expect(host.current_size(), size, "object size after stores past its end")
        expect_bytes(host.read(0, size), expected, "object after stores past its end")
    await drv.munmap(mapping)
    await drv.close(fd)


@scenario(shm_size=4096)
async def window_closed(bus, env):
    """Read all ones and drop stores in the window while nothing is open, and count them."""
    pattern = random.Random(env.seed).randbytes(env.shm_size)
    with host_object(env) as host:
        host.write(0, pattern)
    drv = await probe(bus)

    async def rejected(what):
        before = await reg(drv, "REJECTS")
        mark = len(bus.records)
        expect_bytes(await drv.window.read(5, 40), b"\xff" * 40, f"{what}: window read")
        await drv.window.write(0, b"\0" * 64)
        await drv.window.write(3, b"\0")
        bursts = records_in(bus, mark, drv.window)
        expect(await reg(drv, "REJECTS"), before + len(bursts), f"{what}: REJECTS")
        expect({r.status for r in bursts}, {"SC"}, f"{what}: completion status of window accesses")
        with host_object(env) as host:
            expect_bytes(host.read(0, env.shm_size), pattern, f"{what}: object")

    await rejected("nothing opened yet")
    expect(await open_by_register(drv, env.shm_name + "-missing"), Status.ENOENT, "OPEN")
    await rejected("after a failed OPEN")
    expect(await open_by_register(drv, env.shm_name), Status.OK, "OPEN")
    expect_bytes(await drv.window.read(0, 64), pattern[:64], "window while open")
    pattern = b"open" + pattern[4:]
    await drv.window.write(0, b"open")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE")
    await rejected("after CLOSE")


@scenario(shm_size=4096)
async def bad_requests(bus, env):
    """Answer requests no BAR claims as unsupported with all ones, and keep unused BARs at 0."""
    wb = bus.word_bytes
    drv = await probe(bus)
    pdev = drv.pdev
    await drv.names.write(0, env.shm_name.encode() + b"\0")

    # Memory requests no BAR claims: nowhere near, just past a BAR, or running off its end.
    targets = [(0x1000, 8), (0xFFFF_F000, 8), (1 << 32, 8)]
    for bar in (drv.regs, drv.window, drv.names):
        targets += [(bar.base + bar.size, 8), (bar.base + bar.size - wb, 2 * wb)]
    for addr, n in targets:
        if claimed(drv, addr, n):
            continue    # the allocator put another BAR right there
        what = f"address {addr:#x}"
        expect_bytes(await bus.mem_read(addr, n), b"\xff" * n, f"read of {what}")
        expect(bus.records[-1].status, "UR", f"status of a read of {what}")
        await bus.mem_write(addr, b"\0" * n)
        expect(bus.records[-1].status, "UR", f"status of a write to {what}")

    # Configuration requests to empty slots read all ones, so the scan skips them.
    for slot in (pdev.slot + 1, 31):
        expect(await bus.cfg_read_int(slot, 0, 4), 0xFFFF_FFFF, f"ID dword of slot {slot}")
        expect(bus.records[-1].status, "UR", f"status of a configuration read of slot {slot}")
        await bus.cfg_write_int(slot, 0x04, 2, 0x6)
    # BAR registers the device does not implement (BAR3..5, or 4..5 with a 64-bit window) stay 0.
    used = set()
    for res in pdev.resources.values():
        used |= {res.index, res.index + 1} if res.is64 else {res.index}
    for index in sorted(set(range(6)) - used):
        offset = 0x10 + 4 * index
        await pdev.write_config(offset, 4, 0xFFFF_FFFF)
        expect(await pdev.read_config(offset, 4), 0, f"unimplemented BAR{index} after sizing")

    # Nothing of that reached anything: BAR2 and the registers are as they were.
    expect_bytes(await drv.names.read(0, len(env.shm_name) + 1),
                 env.shm_name.encode() + b"\0", "BAR2")
    expect(bus.records[-1].status, "SC", "status of a read of BAR2")
    expect_bytes(await drv.names.read(env.name_size - wb, wb), b"\0" * wb, "BAR2's last word")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS")
    await expect_status(drv, False, Status.OK, "after unsupported requests")
    # The device still works.
    expect(await reg(drv, "OPEN"), Status.OK, "OPEN")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE")


# -- a host that answers late ------------------------------------------------------------------

#: The device's host timeout in the timeout scenarios, and how late their host answers.
SHORT_TIMEOUT = 100
LATE = 4 * SHORT_TIMEOUT


@scenario(shm_size=4096, host_timeout=SHORT_TIMEOUT, timing={"ctl_latency": LATE},
          host_args={"late_ctl": 1})
async def host_timeout_open(bus, env):
    """Time out an OPEN the host answers late; the device closes the late success by itself."""
    drv = await probe(bus)
    fd = await drv.open()
    start = bus.now()
    await expect_errno(drv.ioctl(fd, 0, env.shm_name), errno.ETIMEDOUT, "ioctl, host late")
    took = bus.now() - start
    if took > SHORT_TIMEOUT + 64:
        raise AssertionError(f"the timed-out ioctl took {took} cycles; the device should give "
                             f"up after {SHORT_TIMEOUT}")
    await expect_status(drv, False, Status.ETIMEDOUT, "after the timeout")
    await expect_sizes(drv, 0, 0, "after the timeout")
    expect_bytes(await drv.window.read(0, 4), b"\xff" * 4, "window after the timeout")
    # The late answer arrives while the guest keeps reading registers; none of them may be held
    # up longer than the device's timeout while it deals with it.
    start, slowest = bus.now(), 0
    while bus.now() - start < 2 * LATE:
        t = bus.now()
        await reg(drv, "ID")
        slowest = max(slowest, bus.now() - t)
    if slowest > SHORT_TIMEOUT:
        raise AssertionError(f"a register read took {slowest} cycles while the late answer "
                             f"was handled; the device's timeout is {SHORT_TIMEOUT}")
    await expect_status(drv, False, Status.ETIMEDOUT, "after the late answer")
    await drv.ioctl(fd, 0, env.shm_name)
    await expect_status(drv, True, Status.OK, "after a second ioctl")
    mapping = await drv.mmap(fd, 16)
    await mapping.write(0, b"made it")
    await drv.munmap(mapping)
    await drv.close(fd)
    with host_object(env) as host:
        expect_bytes(host.read(0, 7), b"made it", "object")
    return {"timed_out_after": took, "slowest_read": slowest}


@scenario(shm_size=4096, host_timeout=SHORT_TIMEOUT, timing={"dma_latency": LATE},
          host_args={"late_dma": 2})
async def host_timeout_dma(bus, env):
    """Time out window accesses the host answers late: all ones, then correct data again."""
    wb = bus.word_bytes
    pattern = random.Random(env.seed).randbytes(env.shm_size)
    with host_object(env) as host:
        host.write(0, pattern)
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, env.shm_size)
    start = bus.now()
    expect_bytes(await mapping.read(0, 4 * wb), b"\xff" * 4 * wb, "a read the host answers late")
    took = bus.now() - start
    if took > SHORT_TIMEOUT + 64:
        raise AssertionError(f"the timed-out read took {took} cycles; the device should give "
                             f"up after {SHORT_TIMEOUT}")
    # The host takes no request until it has sent the late read's beats; a write it does not
    # take within the timeout is dropped (tests/test_wedge.py), so give it time to catch up.
    # The write's own answer then comes late too.
    await bus.idle(LATE)
    await mapping.write(512, b"late write")
    await bus.idle(LATE)
    # From here the host answers at once: nothing stale may leak into these reads.
    expect_bytes(await mapping.read(1024, 4 * wb), pattern[1024:1024 + 4 * wb],
                 "the first read after the stale beats")
    expect_bytes(await mapping.read(512, 10), b"late write", "the late write read back")
    expect_bytes(await mapping.read(0, 64), pattern[:64], "offset 0 read again")
    await expect_status(drv, True, Status.OK, "after DMA timeouts")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after DMA timeouts")
    await drv.munmap(mapping)
    await drv.close(fd)
    return {"timed_out_after": took}
