"""``vmshm demo``: the original userspace example on the simulated device, and its cycle table.

The example itself is :func:`vmshm.scenarios.demo.seed_example`; this module checks the command
line, makes the object if asked, runs the example on the chosen backend and prints what it saw.
"""

import errno

from vmshm.backends import backend_names
from vmshm.console import escaped, note
from vmshm.options import UsageError, add_core_args, add_pci_args, core_args, cycles, parse_size
from vmshm.rtl.usp import AXIS_WIDTHS

__all__ = ["add_arguments", "check", "run"]

#: The guest function the demo runs, by name: a backend in another process imports it there.
EXAMPLE = "vmshm.scenarios.demo:seed_example"


def add_arguments(parser):
    """Add ``vmshm demo``'s options to ``parser``."""
    parser.add_argument("--shm", required=True, metavar="NAME",
                        help="POSIX shared-memory object to open, e.g. /shared-with-qemu")
    parser.add_argument("--create", type=parse_size, metavar="SIZE",
                        help="create the object with this size if it does not exist (an existing "
                             "object is used as it is, never resized)")
    parser.add_argument("--vcd", metavar="FILE",
                        help="write a VCD waveform of the whole run")
    parser.add_argument("--backend", choices=backend_names(), default="amaranth",
                        help="simulator: Amaranth's own (default, nothing to install), or the "
                             "generated Verilog under cocotb on Verilator or Icarus")
    parser.add_argument("--host-latency", type=cycles, default=0, metavar="CYCLES",
                        help="cycles the host takes to answer OPEN and CLOSE (default 0)")
    parser.add_argument("--dma-latency", type=cycles, default=0, metavar="CYCLES",
                        help="cycles the host takes to answer a window access (default 0)")
    parser.add_argument("--rc-latency", type=cycles, default=0, metavar="CYCLES",
                        help="--top usp: cycles the root complex takes to complete each of the "
                             "device's memory reads (default 0); past --host-timeout the "
                             "guest's window access times out")
    parser.add_argument("--devices", type=int, default=1, metavar="N",
                        help="VMShm functions on the bus, each backed by the same object; the "
                             "example runs on /dev/vmshm0 (default 1)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also list every bus transaction with its cycles")
    parser.add_argument("--top", choices=("pci", "usp"), default="pci",
                        help=f"the device: the soft PCI function (default), or the UltraScale+ "
                             f"PCIe top behind cocotbext-pcie's root complex and hard-IP model "
                             f"(--backend {_pcie_backends()})")
    parser.add_argument("--axis-width", type=int, choices=AXIS_WIDTHS, default=None, metavar="W",
                        help="--top usp: the AXI-stream width, 64 (default), 128 or 256")
    add_core_args(parser)
    add_pci_args(parser)


def _pcie_backends():
    return " or ".join(sorted(backend_names(pcie=True)))


def _check_usp(args):
    # The UltraScale+ top runs only behind cocotbext-pcie's root complex, one function per port.
    if args.backend not in backend_names(pcie=True):
        raise UsageError(f"--top usp runs on --backend {_pcie_backends()} (cocotbext-pcie's "
                         f"root complex runs under cocotb)")
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
    from vmshm.backends import get_backend
    from vmshm.checks import check_object_size
    from vmshm.harness.checks import check_output_file
    from vmshm.host_model import HostTiming, check_name, check_not_link
    from vmshm.rtl.tops import check_top

    if not 1 <= args.devices <= 32:
        raise UsageError(f"--devices must be from 1 to 32, not {args.devices}")
    if args.create is not None:
        check_object_size(args.create, "--create")
    HostTiming(ctl_latency=args.host_latency, dma_latency=args.dma_latency)
    if args.top == "usp":
        _check_usp(args)
    elif args.rc_latency:
        raise UsageError("--rc-latency is the root complex's: it needs --top usp")
    params = core_args(args, args.top)
    # Building the top checks every parameter (sizes, widths, IDs); it is elaborated only later.
    check_top(args.top, **params)
    check_name(args.shm, args.name_size)
    # The same message for a link with and without --create, before anything is simulated.
    check_not_link(args.shm)
    if args.vcd:
        check_output_file(args.vcd)
    reason = get_backend(args.backend).missing()
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
            console.print(note(f"{escaped(args.shm)} exists with {region.size} bytes; using it "
                               f"as it is (not resized to {args.create})"))
        region.close()
        if created:
            console.print(f"created {escaped(args.shm)} with {args.create} bytes")
    if args.backend != "amaranth":
        console.print(f"building and running on {args.backend} (the first build of a "
                      f"configuration takes a while)...")

    try:
        if args.top == "usp":
            from vmshm.testbench.pcie import run_pcie_function
            result = run_pcie_function(EXAMPLE, args.backend,
                                       kwargs={"name": args.shm}, timing=timing,
                                       waves=args.vcd, rc_latency=args.rc_latency, **params)
        else:
            result = run_function(EXAMPLE, backend=args.backend,
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
    console.print(f"guest mapped {report.mapped} bytes of {escaped(args.shm)}")
    console.print(f"guest read at offset 0:  {shown!r}" if shown else
                  "guest read at offset 0:  (empty: the first byte is NUL)")
    wrote = report.wrote.rstrip(bytes(1)).decode("utf-8", errors="backslashreplace")
    # The line is padded with NULs; it was cut only if its text or the NUL that ends it was.
    if len(report.wrote) > len(report.meant.rstrip(bytes(1))):
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
        console.print(f"waveform written to {escaped(args.vcd)}")
    host = result.hosts[0] if getattr(result, "hosts", None) else {}
    if host.get("dma_errors"):
        # A posted write the host could not store never fails in the guest: say so here.
        raise OSError(errno.EIO, f"the host refused {host['dma_errors']} of the guest's window "
                      f"accesses, so what is printed above did not all reach the object: "
                      f"{host.get('last_dma_error')}")
    return 0
