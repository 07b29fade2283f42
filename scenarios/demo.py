"""The original VMShm userspace example, as the driver model runs it on any guest bus.

``vmshm demo`` (:mod:`vmshm.commands.demo`) runs :func:`seed_example` on a backend by name
(``"vmshm.scenarios.demo:seed_example"``) and prints its :class:`DemoReport`.
"""

import errno
import os
from dataclasses import dataclass, field

from vmshm.abi.regmap import REG
from vmshm.driver_model import vmshm_probe

__all__ = ["Step", "DeviceInfo", "DemoReport", "seed_example"]

#: How much of offset 0 the demo reads and shows: one line of text.
LINE_BYTES = 128

#: How many bytes the demo writes at offset 0: ``I was here: <pid>`` padded with NULs to the
#: length the largest Linux PID (4194304, seven digits) needs with its NUL. The write is the same
#: size whatever the PID, so its cycles in the demo's table are too (a shorter PID used to make the
#: write one beat shorter).
WRITE_BYTES = len(b"I was here: 4194304\0")


@dataclass
class Step:
    """One step of the example and the cycles it took on the device."""
    name: str
    start: int
    end: int
    transactions: int

    @property
    def cycles(self):
        return self.end - self.start


@dataclass
class DeviceInfo:
    """What the probe found about one bound VMShm device: plain data, so it crosses processes."""
    path: str
    pci_name: str
    vendor: int
    device: int
    revision: int
    class_code: int
    subsystem_vendor: int
    subsystem_device: int
    resources: list
    window_size: int
    name_size: int
    version: int

    @classmethod
    def of(cls, drv):
        p = drv.pdev
        return cls(drv.path, p.name, p.vendor, p.device, p.revision, p.class_code,
                   p.subsystem_vendor, p.subsystem_device, list(p.resources.values()),
                   drv.window_size, drv.name_size, drv.version)

    def __str__(self):
        return (f"{self.pci_name} [{self.vendor:04x}:{self.device:04x}] rev {self.revision:02x} "
                f"class {self.class_code:06x} subsystem "
                f"{self.subsystem_vendor:04x}:{self.subsystem_device:04x}")


@dataclass
class DemoReport:
    """What the example saw and how long each step took."""
    found: bytes = b""          # what the guest read at offset 0 before writing
    meant: bytes = b""          # the line it meant to write there, NUL-padded to WRITE_BYTES
    wrote: bytes = b""          # what it wrote: the line, cut to the mapping if that is shorter
    mapped: int = 0             # bytes mapped
    functions: int = 0          # PCI functions the probe found
    devices: list = field(default_factory=list)     # DeviceInfo of each VMShm device bound
    steps: list = field(default_factory=list)


def _line(raw):
    # Show what is at offset 0 the way the C example's printf("%s") would: up to the first NUL.
    return raw.split(b"\0", 1)[0]


async def seed_example(bus, name, *, pid=None, length=1 << 20):
    """Run the seed's example on ``bus``: probe, then open, ioctl(name), mmap, read, write, munmap,
    close on ``/dev/vmshm0``.

    Parameters
    ----------
    bus : GuestBus
        The bus the device sits on.
    name : str or bytes
        The POSIX shared-memory object to open, e.g. ``/shared-with-qemu``.
    pid : int, optional
        The number in ``I was here: <pid>``; this process's by default. The line is written
        padded with NULs to :data:`WRITE_BYTES`, so the write's cycles do not depend on it.
    length : int
        Bytes to map: 1 MiB as in the example, or the mapped object's size if that is smaller.

    Returns
    -------
    DemoReport
    """
    pid = os.getpid() if pid is None else pid
    report = DemoReport()

    async def step(label, coro):
        bus.label = label
        start, first = bus.now(), len(bus.records)
        try:
            return await coro
        finally:
            report.steps.append(Step(label, start, bus.now(), len(bus.records) - first))
            bus.label = ""

    drivers, pdevs = await step("probe", vmshm_probe(bus))
    report.functions = len(pdevs)
    report.devices = [DeviceInfo.of(d) for d in drivers]
    if not drivers:
        raise OSError(errno.ENODEV, "no VMShm device found on the bus")
    drv = drivers[0]
    fd = await step("open", drv.open())
    release = True
    try:
        await step("ioctl(name)", drv.ioctl(fd, 0, name))
        async def mmap():
            # Map the whole window, or the object if it is smaller, as the demo promises.
            map_size = await drv.regs.read32(REG["MAP_SIZE"].offset)
            report.mapped = min(length, map_size)
            return await drv.mmap(fd, report.mapped)

        mapping = await step("mmap", mmap())
        report.found = _line(await step("read offset 0",
                                        mapping.read(0, min(LINE_BYTES, report.mapped))))
        report.meant = f"I was here: {pid}".encode().ljust(WRITE_BYTES, b"\0")
        report.wrote = report.meant[:report.mapped]
        async def write():
            # A window access the host did not answer in time reads all ones or is dropped; the
            # device counts them, and the example must not report garbage as what it found. The
            # TIMEOUTS read is the write step's: it is how the example learns that its posted
            # write (and the read before it) reached the object, so its cycles belong to the
            # write, and every cycle of the run is inside a step.
            await mapping.write(0, report.wrote)
            return await drv.regs.read32(REG["TIMEOUTS"].offset)

        timeouts = await step("write offset 0", write())
        if timeouts:
            raise OSError(errno.ETIMEDOUT, f"the host did not answer {timeouts} window "
                                           f"access{'es' if timeouts > 1 else ''} in time (the "
                                           f"device's host timeout); the object was not "
                                           f"changed by them")
        await step("munmap", drv.munmap(mapping))
    except GeneratorExit:
        # The simulation was abandoned (Ctrl-C): there is no bus left to close the file on,
        # and awaiting now would only make Python complain that the coroutine ignored it.
        release = False
        raise
    finally:
        if release:
            await step("close", drv.close(fd))
    return report
