"""The original VMShm userspace example, as the driver model runs it on any guest bus, and the
``vmshm demo`` command that runs it."""

import os
from dataclasses import dataclass, field

import errno

from vmshm.console import note
from vmshm.driver_model import vmshm_probe
from vmshm.options import UsageError, add_core_args, add_pci_args, core_args, cycles, parse_size
from vmshm.abi.regmap import REG

__all__ = ["Step", "DeviceInfo", "DemoReport", "seed_example", "add_arguments", "run"]

#: How much of offset 0 the demo reads and shows: one line of text.
LINE_BYTES = 128


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
    meant: bytes = b""          # the line it meant to write there, with its NUL
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
        The number in ``I was here: <pid>``; this process's by default.
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
        report.meant = f"I was here: {pid}".encode() + b"\0"
        report.wrote = report.meant[:report.mapped]
        await step("write offset 0", mapping.write(0, report.wrote))
        # A window access the host did not answer in time reads all ones or is dropped; the
        # device counts them, and the example must not report garbage as what it found.
        timeouts = await drv.regs.read32(REG["TIMEOUTS"].offset)
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


# -- the command line ---------------------------------------------------------------------------

def add_arguments(parser):
    """Add ``vmshm demo``'s options to ``parser``."""
    parser.add_argument("--shm", required=True, metavar="NAME",
                        help="POSIX shared-memory object to open, e.g. /shared-with-qemu")
    parser.add_argument("--create", type=parse_size, metavar="SIZE",
                        help="create the object with this size if it does not exist (an existing "
                             "object is used as it is, never resized)")
    parser.add_argument("--vcd", metavar="FILE",
                        help="write a VCD waveform of the whole run")
    parser.add_argument("--backend", choices=("amaranth", "verilator", "icarus", "native"),
                        default="amaranth",
                        help="simulator: Amaranth's own (default, nothing to install), or the "
                             "generated Verilog under cocotb on Verilator or Icarus")
    parser.add_argument("--host-latency", type=cycles, default=0, metavar="CYCLES",
                        help="cycles the host takes to answer OPEN and CLOSE (default 0)")
    parser.add_argument("--dma-latency", type=cycles, default=0, metavar="CYCLES",
                        help="cycles the host takes to answer a window access (default 0)")
    parser.add_argument("--devices", type=int, default=1, metavar="N",
                        help="VMShm functions on the bus, each backed by the same object; the "
                             "example runs on /dev/vmshm0 (default 1)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also list every bus transaction with its cycles")
    parser.add_argument("--top", choices=("pci", "usp"), default="pci",
                        help="the device: the soft PCI function (default), or the UltraScale+ "
                             "PCIe top behind cocotbext-pcie's root complex and hard-IP model "
                             "(--backend icarus or verilator)")
    parser.add_argument("--axis-width", type=int, choices=(64, 256), default=None, metavar="W",
                        help="--top usp: the AXI-stream width, 64 (default) or 256")
    add_core_args(parser)
    add_pci_args(parser)


def _check_usp(args):
    # The UltraScale+ top runs only behind cocotbext-pcie's root complex, one function per port.
    if args.backend not in ("icarus", "verilator"):
        raise UsageError("--top usp runs on --backend icarus or verilator (cocotbext-pcie's "
                         "root complex runs under cocotb)")
    if args.vcd and args.backend != "icarus":
        raise UsageError("--vcd with --top usp needs --backend icarus")
    if args.devices != 1:
        raise UsageError("--top usp is one function behind a root port: --devices must be 1")
    if args.data_width != 32:
        raise UsageError("--top usp has a 32-bit data path (one DWORD a beat): --data-width "
                         "must be 32")


def check(args):
    """Check every argument of ``vmshm demo`` before anything is created or simulated.

    Raises
    ------
    OSError
        For a name the device would refuse (``EINVAL``, ``ENAMETOOLONG``), or a ``--vcd`` file
        that cannot be written (with that file's name).
    UsageError, ValueError
        For anything else on the command line, including build parameters the device refuses.

    Returns
    -------
    dict
        The PCI function's build parameters.
    """
    from vmshm.backends import backend_missing
    from vmshm.checks import check_object_size, check_output_file
    from vmshm.rtl.tops import check_top
    from vmshm.host_model import HostTiming, check_name

    if not 1 <= args.devices <= 32:
        raise UsageError(f"--devices must be from 1 to 32, not {args.devices}")
    if args.create is not None:
        check_object_size(args.create, "--create")
    HostTiming(ctl_latency=args.host_latency, dma_latency=args.dma_latency)
    if args.top == "usp":
        _check_usp(args)
    params = core_args(args, args.top)
    # Building the top checks every parameter (sizes, widths, IDs); it is elaborated only later.
    check_top(args.top, **params)
    check_name(args.shm, args.name_size)
    if args.vcd:
        check_output_file(args.vcd)
    reason = backend_missing(args.backend)
    if reason:
        raise UsageError(f"--backend {args.backend} cannot run here: {reason}")
    return params


def run(args, console):
    """Run ``vmshm demo`` with parsed ``args`` and return the exit status."""
    from rich.table import Table

    from vmshm.backends import run_function
    from vmshm.host_model import HostTiming, ShmRegion

    params = check(args)
    timing = HostTiming(ctl_latency=args.host_latency, dma_latency=args.dma_latency)
    if args.create is not None:
        region, created = ShmRegion.open_or_create(args.shm, args.create)
        if not created and region.size != args.create:
            console.print(note(f"{args.shm} exists with {region.size} bytes; using it as it is "
                               f"(not resized to {args.create})"))
        region.close()
        if created:
            console.print(f"created {args.shm} with {args.create} bytes")
    if args.backend != "amaranth":
        console.print(f"building and running on {args.backend} (the first build of a "
                      f"configuration takes a while)...")

    try:
        if args.top == "usp":
            from vmshm.testbench.pcie import run_pcie_function
            result = run_pcie_function("vmshm.demo:seed_example", args.backend,
                                       kwargs={"name": args.shm}, timing=timing,
                                       waves=args.vcd, **params)
        else:
            result = run_function("vmshm.demo:seed_example", backend=args.backend,
                                  kwargs={"name": args.shm}, devices=args.devices,
                                  timing=timing, waves=args.vcd, **params)
    except OSError as exc:
        if exc.filename not in (None, args.shm):
            raise       # another file's own error (the waveform's), already named
        # The driver's errno; the host says why in words.
        hosts = getattr(exc, "hosts", None) or [{}]
        why = hosts[0].get("last_error") or exc.strerror
        hint = ""
        if exc.errno == errno.ENOENT:
            hint = " (create it first, or pass --create SIZE)"
        raise OSError(exc.errno, f"{why}{hint}", args.shm) from None
    report = result.value

    console.print(f"probe found {report.functions} PCI function(s), "
                  f"bound {len(report.devices)} VMShm device(s):")
    for dev in report.devices:
        console.print(f"  {dev.path}: {dev}")
        for res in dev.resources:
            console.print(f"    {res}")
        console.print(f"    window {dev.window_size} B, name buffer {dev.name_size} B, "
                      f"ABI {dev.version >> 16}.{dev.version & 0xFFFF}")
    shown = report.found.decode("utf-8", errors="backslashreplace")
    console.print(f"guest mapped {report.mapped} bytes of {args.shm}")
    console.print(f"guest read at offset 0:  {shown!r}" if shown else
                  "guest read at offset 0:  (empty: the first byte is NUL)")
    wrote = report.wrote.rstrip(bytes(1)).decode("utf-8", errors="backslashreplace")
    if report.wrote == report.meant:
        console.print(f"guest wrote at offset 0: {wrote!r}")
    else:
        meant = report.meant.rstrip(bytes(1)).decode()
        console.print(f"guest wrote at offset 0: {wrote!r} (cut to the object's "
                      f"{report.mapped} bytes: it meant {meant!r})")

    table = Table(title=f"cycles per step ({args.top}, {args.backend}, {args.data_width}-bit, "
                        f"host latency "
                        f"{args.host_latency}, DMA latency {args.dma_latency})")
    table.add_column("step")
    table.add_column("cycles", justify="right")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    table.add_column("bus transactions", justify="right")
    for s in report.steps:
        table.add_row(s.name, str(s.cycles), str(s.start), str(s.end), str(s.transactions))
    table.add_row("total", str(result.cycles), "0", str(result.cycles), str(len(result.records)),
                  style="bold")
    console.print(table)
    if args.verbose:
        console.print("   start      end cycles  access where              words status step")
        for rec in result.records:
            console.print(str(rec))
    if args.vcd:
        console.print(f"waveform written to {args.vcd}")
    host = result.hosts[0] if getattr(result, "hosts", None) else {}
    if host.get("dma_errors"):
        # A posted write the host could not store never fails in the guest: say so here.
        raise OSError(errno.EIO, f"the host refused {host['dma_errors']} of the guest's window "
                      f"accesses, so what is printed above did not all reach the object: "
                      f"{host.get('last_dma_error')}")
    return 0
