"""``vmshm qemu``: boot a Linux guest in QEMU whose VMShm device is the simulated RTL.

QEMU runs the guest under TCG with an ``x-pci-proxy-dev`` whose socket this process serves: the
device side (:mod:`.device`) answers each request with the simulated :class:`~vmshm.rtl.VMShmPCI`
backed by the real host object. The guest loads ``vmshm.ko`` and runs the example, or the user's
own program, and this command prints what it printed, the device's cycle table, and exits with
the program's exit status.
"""

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path

from rich.table import Table

from vmshm.console import escaped
from vmshm.qemu import image
from vmshm.qemu.boot import boot
from vmshm.qemu.device import bar_bases, proxy_refusal

__all__ = ["HELP", "add_arguments", "run"]

#: Bound of a whole run (boot, program, power-off) in seconds, unless --timeout says otherwise.
DEFAULT_TIMEOUT = 300
#: Guest console lines worth showing besides the program's own output.
_KERNEL_TROUBLE = re.compile(r"vmshm|BUG:|Oops|Kernel panic|Call Trace|segfault")


#: ``vmshm qemu``'s entry in the command table (:func:`vmshm.cli._commands`).
HELP = dict(
    help="run the example (or your C program) in a Linux guest against the RTL",
    description="Boot a Linux guest in QEMU (TCG) whose VMShm device is the simulated RTL, "
                "served through QEMU's PCI proxy; load vmshm.ko and run the seed's example (or "
                "--run FILE.c) in it against the host object NAME. Prints the guest's output and "
                "the device's cycle table; exits with the program's status.")


def add_arguments(p):
    """Add ``vmshm qemu``'s options to the parser ``p``."""
    from vmshm.options import add_core_args, parse_size

    p.add_argument("--shm", required=True, metavar="NAME",
                   help="the host's POSIX shared-memory object, e.g. /shared-with-qemu")
    p.add_argument("--create", type=parse_size, metavar="SIZE",
                   help="create NAME with this size if it does not exist (never resized)")
    p.add_argument("--run", metavar="FILE", help="compile this C program (static, with the "
                   "host's gcc) and run it in the guest instead of the example; ARGS after --")
    p.add_argument("--backend", default=None, metavar="B",
                   help="simulation backend serving the device: native (the default where "
                        "Verilator is installed, else amaranth) or amaranth")
    p.add_argument("--kernel", metavar="PATH", help="the guest kernel (a bzImage); default: "
                   "Debian's linux-image found in /usr/local/lib/vmshm/kernel or /boot")
    p.add_argument("--headers", metavar="DIR", help="kernel headers matching --kernel")
    p.add_argument("--bench", action="store_true",
                   help="measure register and window read latency in the guest, beside a floor "
                        "device with no simulation")
    p.add_argument("--ivshmem", metavar="SOCKET", help="join the ivshmem group served at "
                   "SOCKET (vmshm ivshmem-server, or QEMU's): IVPOSITION is the ID it gives, "
                   "DOORBELL rings its peers, their rings interrupt the guest")
    p.add_argument("--doorbell-bench", action="store_true",
                   help="time doorbell round trips in the guest (ring the host, which rings "
                        "back; the guest's read returns), on the RTL and on a floor device")
    p.add_argument("--guests", type=int, metavar="N",
                   help="boot N guests at once, each with its own device server and RTL, all "
                        "peers of the --ivshmem group (served here when SOCKET does not exist) "
                        "on NAME; the program finds its index and the peers' IDs in "
                        "$VMSHM_GUEST and $VMSHM_PEERS (docs/qemu.md)")
    p.add_argument("--devices", type=int, default=1, metavar="N",
                   help="give the guest N VMShm devices (/dev/vmshm0 .. N-1), each its own "
                        "simulated RTL and host; only the first's interrupts reach the guest "
                        "(default 1)")
    # A guest of --guests: told its index and the group's IDs on stdin once all have joined.
    p.add_argument("--guest-of", type=int, default=None, metavar="N", help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"bound of the whole run in seconds (default {DEFAULT_TIMEOUT})")
    p.add_argument("--json", metavar="FILE",
                   help="also write the run's (or a bench's) report as JSON here; without it "
                        "no JSON is written or printed")
    p.add_argument("args", nargs="*", metavar="ARGS",
                   help="arguments of the program (after --); by default NAME")
    add_core_args(p)


def _check_args(args):
    from vmshm.backends import BACKENDS, backend_names, get_backend
    from vmshm.checks import check_object_size
    from vmshm.harness.checks import check_output_file
    from vmshm.host_model import check_name, check_not_link

    # The device's own rule for names (and the name buffer's size), before anything is made.
    try:
        check_name(args.shm, args.name_size)
    except OSError as exc:
        raise ValueError(f"--shm must be a name the device accepts: {exc.strerror}") from None
    if args.create is not None:
        check_object_size(args.create, "--create")
    # The same message for a link with and without --create, before QEMU boots.
    check_not_link(args.shm)
    if args.backend is not None and args.backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, not {args.backend!r}")
    serving = backend_names(in_process=True)
    if args.backend not in (None, *serving):
        raise ValueError(f"--backend {args.backend}: only the {' and '.join(serving)} backends "
                         f"serve QEMU so far (the device side is a guest-bus function; the "
                         f"cocotb ones run it in another process, which cannot take QEMU's "
                         f"socket yet)")
    if args.run is not None and not Path(args.run).is_file():
        raise ValueError(f"--run {escaped(args.run)}: no such file")
    if args.run is not None and args.bench:
        raise ValueError("--bench runs its own program in the guest; leave out --run")
    if args.guests is not None:
        from vmshm.commands.qemu_guests import check_guest_args
        check_guest_args(args)
    elif args.ivshmem is not None:
        import stat
        try:
            mode = os.stat(args.ivshmem).st_mode
        except OSError as exc:
            raise ValueError(f"--ivshmem {escaped(args.ivshmem)}: {exc.strerror}") from None
        if not stat.S_ISSOCK(mode):
            raise ValueError(f"--ivshmem {escaped(args.ivshmem)}: not a socket (give the "
                             f"server's -S)")
        if args.bench or args.doorbell_bench:
            raise ValueError("--ivshmem is for the example or --run; the benches have their own "
                             "host side")
    if not 1 <= args.devices <= 4:
        raise ValueError(f"--devices must be 1..4, not {args.devices}")
    if args.devices > 1 and (args.bench or args.doorbell_bench or args.guests is not None):
        raise ValueError("--devices is for the example or --run in one guest")
    if args.doorbell_bench and (args.run is not None or args.bench):
        raise ValueError("--doorbell-bench runs its own program in the guest; leave out --run "
                         "and --bench")
    if not args.timeout > 0:
        raise ValueError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    if args.backend is not None:
        missing = get_backend(args.backend).missing()
        if missing:
            raise ValueError(f"--backend {args.backend}: {missing}")
    if args.json:
        # Before booting: a report that cannot be written must not cost the guest's run.
        check_output_file(args.json)


def unheard_doorbells(doorbells):
    """Return the note for the guest's doorbells (``(peer, vector)`` pairs) when the device is
    in no ivshmem group: a DOORBELL write is posted, so the guest's ioctl returned 0 whatever
    the peer, and this line is where a user learns that nobody heard them."""
    rung = sorted(set(doorbells))
    shown = ", ".join(f"{peer} {vector}" for peer, vector in rung[:8])
    return (f"note: the guest rang {len(doorbells)} doorbell(s) (peer, vector: {shown}"
            f"{', ...' if len(rung) > 8 else ''}) with no ivshmem group to deliver them to "
            f"(join one with --ivshmem SOCKET)")


def choose_backend(args, console):
    """Settle ``args.backend``: native by default, amaranth (with a note) where it cannot run.

    The native backend serves a guest access about a hundred times faster, which is what a
    booted guest waits for; an explicit ``--backend`` is kept as given.
    """
    from vmshm.backends import get_backend

    if args.backend is None:
        missing = get_backend("native").missing()
        args.backend = "amaranth" if missing else "native"
        if missing:
            console.print(f"note: serving with the amaranth backend (native cannot run here: "
                          f"{missing})", highlight=False, markup=False)


def _where(addr, bases, sizes):
    from vmshm.abi.regmap import REGISTERS
    names = {r.offset: r.name for r in REGISTERS}
    for bar, base in bases.items():
        if base <= addr < base + sizes.get(bar, 0):
            off = addr - base
            name = names.get(off, "") if bar == 0 else ""
            return f"BAR{bar}+{off:#x} {name}".rstrip()
    return ""


def _access_table(accesses, title, bases=None, sizes=None):
    table = Table(title=title, title_justify="left")
    for col in ("start", "end", "cycles", "request", "address", "where", "size", "value"):
        table.add_column(col, justify="left" if col in ("request", "where") else "right")
    for a in accesses:
        table.add_row(str(a.start), str(a.end), str(a.cycles), a.kind, f"{a.addr:#010x}",
                      _where(a.addr, bases or {}, sizes or {}), str(a.size), f"{a.value:#x}")
    return table


def _summary_table(accesses):
    table = Table(title="all requests QEMU sent the device (boot included)", title_justify="left")
    for col in ("request", "count", "min cycles", "median", "max"):
        table.add_column(col, justify="right" if col != "request" else "left")
    kinds = {}
    for a in accesses:
        kinds.setdefault(a.kind, []).append(a.cycles)
    for kind, cyc in sorted(kinds.items()):
        table.add_row(kind, str(len(cyc)), str(min(cyc)), f"{statistics.median(cyc):g}",
                      str(max(cyc)))
    return table


def _report(boot_, args):
    return {"status": boot_.status, "error": boot_.error, "boot_seconds": boot_.boot_seconds,
            "seconds": boot_.seconds, "cycles": boot_.cycles, "output": boot_.output,
            "console": boot_.console, "host_log": boot_.host_log,
            "accesses": [vars(a) for a in boot_.accesses]}


def run(args, console):
    """Run ``vmshm qemu`` with parsed ``args``; return the exit status."""
    from vmshm.options import core_args
    from vmshm.rtl import VMShmPCI

    _check_args(args)
    if args.guests is not None:
        from vmshm.commands.qemu_guests import run_guests
        return run_guests(args, console)
    params = core_args(args)
    function = VMShmPCI(**params)       # checks the parameters before anything is made
    # Only asked for its BARs, never elaborated (the simulation builds its own).
    function._MustUse__silence = function.core._MustUse__silence = True
    refusal = proxy_refusal(function)
    if refusal:
        raise ValueError(refusal)
    choose_backend(args, console)
    try:
        parts = image.find_parts(args.kernel, args.headers)
    except image.Missing as exc:
        print(f"vmshm qemu: {escaped(str(exc))}", file=sys.stderr)
        return 2
    from vmshm.host_model import HostModel
    host_log = []
    host = HostModel(log=host_log.append)
    # Further devices' hosts say which device they serve: the guest names each one's object.
    more_hosts = [HostModel(log=lambda line, i=i: host_log.append(
        line.replace("host:", f"host (vmshm{i}):", 1))) for i in range(1, args.devices)]
    bridge = None
    if args.ivshmem is not None:
        # Joining is the last check of the arguments: nothing is created before it.
        from vmshm.ivshmem import IvshmemBridge
        from vmshm.ivshmem.client import ProtocolError
        try:
            bridge = IvshmemBridge.connect(host, args.ivshmem, log=host_log.append)
        except (OSError, ProtocolError) as exc:
            print(f"vmshm qemu: --ivshmem {escaped(args.ivshmem)}: cannot join the group: "
                  f"{escaped(getattr(exc, 'strerror', None) or exc)}", file=sys.stderr)
            return 2
        console.print(f"ivshmem: joined {args.ivshmem} as peer {bridge.id} (IVPOSITION)",
                      highlight=False, markup=False)
    try:
        env = None
        if args.guest_of is not None:
            from vmshm.commands.qemu_guests import await_index
            env = await_index(args, bridge)
        return _run(args, console, parts, params, function, host, host_log, bridge, env,
                    more_hosts)
    finally:
        if bridge is not None:
            bridge.close()
        for h in (host, *more_hosts):
            h.close_ring_fd()


def _run(args, console, parts, params, function, host, host_log, bridge, env=None,
         more_hosts=()):
    """Make the object if asked, then run a bench or boot the guest against ``host``."""
    from vmshm.host_model import ShmRegion

    if args.create is not None:
        region, created = ShmRegion.open_or_create(args.shm, args.create)
        if not created and region.size != args.create:
            console.print(f"{args.shm} exists with {region.size} bytes: using it as it "
                          f"is (not resized to {args.create})")
        region.close()

    if args.bench:
        from vmshm.benches.qemu import run_bench
        return run_bench(args, console, parts, params)
    if args.doorbell_bench:
        from vmshm.benches.doorbell import run_bench
        return run_bench(args, console, parts, params)

    if args.run:
        program, src = "program", Path(args.run)
    else:
        program, src = "vmshm_example", image.GUEST_DIR / "vmshm_example.c"
    argv = args.args or [args.shm]
    programs = {"vmshm_example": image.GUEST_DIR / "vmshm_example.c", program: src}
    try:
        initrd = image.build_image(parts, programs)
    except image.BuildError as exc:
        console.print(f"vmshm qemu: {exc}", style="red")
        return 1
    console.print(f"booting Linux {parts.release} in QEMU (TCG); the device is the "
                  f"simulated RTL ({args.backend})")
    result = boot(parts, initrd, image.init_archive(program, argv, env=env), timeout=args.timeout,
                  params=params, backend=args.backend, host=host, more_hosts=more_hosts,
                  echo=lambda line: console.print(f"guest| {line}", highlight=False,
                                                  markup=False))
    result.host_log = host_log + result.host_log
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    for line in result.host_log:
        console.print(line, highlight=False, markup=False)
    if bridge is not None:
        console.print(f"ivshmem: {bridge.forwarded} doorbell(s) forwarded to peers, "
                      f"{bridge.delivered} ring(s) delivered, {bridge.dropped} dropped",
                      highlight=False, markup=False)
    elif host.doorbells:
        console.print(unheard_doorbells(host.doorbells), highlight=False, markup=False)
    if result.status is None:
        for line in result.console[-15:]:
            console.print(f"console| {line}", highlight=False, markup=False)
    else:
        trouble = [ln for ln in result.console if _KERNEL_TROUBLE.search(ln)
                   and not ln.startswith(image.MARK) and ln not in result.output]
        for line in trouble[:20]:
            console.print(f"kernel| {line}", highlight=False, markup=False)
    bar = [a for a in result.accesses if a.kind.startswith(("mem_", "io_"))]
    if bar:
        sizes = {b.index: b.size for b in function.bars}
        shown = bar[-60:]
        console.print(_access_table(shown, f"BAR accesses of the guest ({len(bar)}"
                                           f"{', last 60 shown' if len(bar) > 60 else ''})",
                                    bar_bases(result.accesses), sizes))
    if result.accesses:
        console.print(_summary_table(result.accesses))
    for i, more in enumerate(result.more_accesses, start=1):
        console.print(f"vmshm{i}: {sum(a.kind.startswith('mem_') for a in more)} BAR accesses, "
                      f"{len(more)} requests in all", highlight=False, markup=False)
    boot_s = f"{result.boot_seconds:.1f} s" if result.boot_seconds else "-"
    console.print(f"boot (QEMU start to /init): {boot_s}; whole run {result.seconds:.1f} s; "
                  f"{result.cycles} cycles simulated")
    if args.json:
        Path(args.json).write_text(json.dumps(_report(result, args), indent=1))
    if result.error:
        print(f"vmshm qemu: {escaped(result.error)}", file=sys.stderr)
        return 1
    if result.status is None:
        print("vmshm qemu: the guest stopped before the program finished", file=sys.stderr)
        return 1
    return result.status
