"""The ``vmshm`` command: run the seed's example on the simulated device, and generate Verilog."""

import argparse
import errno
import os
import re
import sys

__all__ = ["main", "parse_size"]

_UNITS = {"": 1, "k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mi": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "b": 1}


class UsageError(Exception):
    """A mistake on the command line: reported in one line, exit status 2."""


def parse_size(text):
    """Parse a byte count such as ``4096``, ``0x1000``, ``64K`` or ``1MiB``."""
    m = re.fullmatch(r"\s*(0x[0-9a-fA-F]+|\d+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: use bytes, or a number with K, M or G (e.g. 1M)")
    return int(m.group(1), 0) * _UNITS[m.group(2).lower()]


def _cycles(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of cycles") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cycles must not be negative, not {value}")
    return value


def _add_core_args(p):
    p.add_argument("--window-size", type=parse_size, default=1 << 20, metavar="N",
                   help="size of BAR1, the window (power of two; default 1M)")
    p.add_argument("--name-size", type=parse_size, default=1 << 10, metavar="N",
                   help="size of BAR2, the name buffer (power of two; default 1K)")
    p.add_argument("--data-width", type=int, choices=(32, 64), default=32, metavar="W",
                   help="data path width in bits: 32 or 64 (default 32)")
    p.add_argument("--regs-size", type=parse_size, choices=(256, 4096), default=256,
                   metavar="N", help="size of BAR0, the registers: 256 (default) or 4K")
    p.add_argument("--window-64bit", action="store_true",
                   help="make the window a 64-bit BAR (the name buffer moves to BAR3)")
    p.add_argument("--host-timeout", type=_cycles, default=None, metavar="CYCLES",
                   help="cycles the device waits for the host before it answers ETIMEDOUT "
                        "(default 65535; 0 waits for ever)")


def _hex16(text):
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hexadecimal ID") from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} does not fit 16 bits")
    return value


def _hex_bits(bits):
    def parse(text):
        try:
            value = int(text, 16)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a hexadecimal number") from None
        if not 0 <= value < 1 << bits:
            raise argparse.ArgumentTypeError(f"{text!r} does not fit {bits} bits")
        return value
    return parse


def _add_pci_args(p):
    p.add_argument("--vendor-id", type=_hex16, default=None, metavar="HEX",
                   help="PCI vendor ID (default 1af4, the original VMShm's)")
    p.add_argument("--device-id", type=_hex16, default=None, metavar="HEX",
                   help="PCI device ID (default 6661)")
    p.add_argument("--subsystem-vendor-id", type=_hex16, default=None, metavar="HEX",
                   help="PCI subsystem vendor ID (default 1af4)")
    p.add_argument("--subsystem-id", type=_hex16, default=None, metavar="HEX",
                   help="PCI subsystem ID (default 1100)")
    p.add_argument("--revision", type=_hex_bits(8), default=None, metavar="HEX",
                   help="PCI revision ID (default 01)")
    p.add_argument("--class-code", type=_hex_bits(24), default=None, metavar="HEX",
                   help="PCI class code (default 050000, RAM memory controller)")


#: Options only some tops take (the PCI function's BAR layout and identity), by parameter name.
_TOP_OPTIONS = ("window_64bit", "vendor_id", "device_id", "subsystem_vendor_id", "subsystem_id",
                "revision", "class_code", "axis_width")


def _core_args(args, top="pci", *, strict=True):
    from vmshm.verilog import top_parameters

    out = {"window_size": args.window_size, "name_size": args.name_size,
           "data_width": args.data_width, "regs_size": args.regs_size}
    if args.host_timeout is not None:
        out["host_timeout"] = args.host_timeout
    accepted = top_parameters(top)
    given = {n: getattr(args, n, None) for n in _TOP_OPTIONS}
    given = {n: v for n, v in given.items() if v is not None and v is not False}
    refused = [n for n in given if n not in accepted]
    if refused and strict:
        flags = ", ".join("--" + n.replace("_", "-") for n in refused)
        raise UsageError(f"{flags}: not taken by --top {top}")
    out.update((n, v) for n, v in given.items() if n in accepted)
    return out


def _parser():
    from vmshm import board, synth
    from vmshm.verilog import TOPS

    parser = argparse.ArgumentParser(
        prog="vmshm", description="VMShm: a host-to-guest shared-memory PCI device, simulated "
                                  "against real POSIX shared memory.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="run the original userspace example on the simulated device",
        description="Open /dev/vmshm0, ioctl(fd, 0, NAME), mmap the window, print the line at "
                    "offset 0, write 'I was here: <pid>' there, munmap, close; then print the "
                    "cycles each step took. The window is backed by the real POSIX "
                    "shared-memory object NAME on this machine.")
    demo.add_argument("--shm", required=True, metavar="NAME",
                      help="POSIX shared-memory object to open, e.g. /shared-with-qemu")
    demo.add_argument("--create", type=parse_size, metavar="SIZE",
                      help="create the object with this size if it does not exist (an existing "
                           "object is used as it is, never resized)")
    demo.add_argument("--vcd", metavar="FILE",
                      help="write a VCD waveform of the whole run")
    demo.add_argument("--backend", choices=("amaranth", "verilator", "icarus"),
                      default="amaranth",
                      help="simulator: Amaranth's own (default, nothing to install), or the "
                           "generated Verilog under cocotb on Verilator or Icarus")
    demo.add_argument("--host-latency", type=_cycles, default=0, metavar="CYCLES",
                      help="cycles the host takes to answer OPEN and CLOSE (default 0)")
    demo.add_argument("--dma-latency", type=_cycles, default=0, metavar="CYCLES",
                      help="cycles the host takes to answer a window access (default 0)")
    demo.add_argument("--devices", type=int, default=1, metavar="N",
                      help="VMShm functions on the bus, each backed by the same object; the "
                           "example runs on /dev/vmshm0 (default 1)")
    demo.add_argument("-v", "--verbose", action="store_true",
                      help="also list every bus transaction with its cycles")
    _add_core_args(demo)
    _add_pci_args(demo)

    gen = sub.add_parser("generate", help="write the device's Verilog",
                         description="Write one top as a standalone Verilog module: the core "
                                     "(vmshm_core, requests tagged with a BAR) or the PCI "
                                     "function (vmshm_pci, with its configuration space).")
    gen.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    gen.add_argument("--top", choices=tuple(TOPS), default="core",
                     help=f"which top to write: {', '.join(TOPS)} (default core)")
    gen.add_argument("--lint-config", metavar="FILE",
                     help="also write Verilator's waivers for the output (-o) as a .vlt file")
    _add_core_args(gen)
    _add_pci_args(gen)
    gen.add_argument("--axis-width", type=int, choices=(64, 256), default=None, metavar="W",
                     help="the UltraScale+ top's AXI-stream width: 64 (default) or 256")

    regs = sub.add_parser("regs", help="print the register map (Markdown)",
                          description="Print docs/registers.md as rendered from the one "
                                      "register definition, vmshm/regmap.py.")
    regs.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")

    bench = sub.add_parser(
        "bench", help="measure simulation speed on each backend",
        description="Run a fixed workload (probe, open, 64 KiB written and read back through "
                    "the window, close) on each backend and print wall time, simulated cycles "
                    "and cycles per second, beside an empty loop that only awaits the clock for "
                    "the same number of cycles on the same backend.")
    bench.add_argument("--backends", default="amaranth,verilator,icarus", metavar="LIST",
                       help="comma-separated backends (default: all; missing ones are skipped)")
    bench.add_argument("--size", type=parse_size, default=64 << 10, metavar="N",
                       help="bytes written and read back (default 64K)")
    bench.add_argument("--data-width", type=int, choices=(32, 64), default=32, metavar="W",
                       help="data path width in bits (default 32)")

    scn = sub.add_parser(
        "scenario", help="list the scenario suite, or run one scenario on a backend",
        description="Without NAME, list every registered scenario. With NAME, run it against a "
                    "fresh object on the chosen backend and print its transactions; --waves "
                    "writes a waveform named after it.")
    scn.add_argument("name", nargs="?", metavar="NAME", help="scenario to run")
    scn.add_argument("--backend", choices=("amaranth", "verilator", "icarus"),
                     default="amaranth", help="simulator (default amaranth)")
    scn.add_argument("--data-width", type=int, choices=(32, 64), default=32, metavar="W",
                     help="data path width in bits (default 32)")
    scn.add_argument("--seed", type=int, default=1, help="seed of the scenario's random choices")
    scn.add_argument("--waves", nargs="?", const="", metavar="FILE",
                     help="write a VCD waveform (default name: NAME-BACKEND-WIDTH.vcd)")

    # FPGA: the options live in vmshm/synth.py and vmshm/board.py; "resolve" lets synth's --top
    # and --data-width take several values.
    syn = sub.add_parser(
        "synth", conflict_handler="resolve",
        help="synthesize for an ECP5 FPGA and report LUTs, flip-flops, block RAMs and Fmax",
        description="Synthesize, place and route tops out of context for an ECP5 device with "
                    "Yosys and nextpnr from PyPI (pip install 'vmshm[fpga]'), and print their "
                    "utilisation and Fmax. Several --top and --data-width values make one table.")
    _add_core_args(syn)
    _add_pci_args(syn)
    synth.add_arguments(syn)
    bld = sub.add_parser(
        "build", help="build the on-chip self-test for an FPGA board",
        description="Build the self-test (the PCI function, a sequencer playing the driver and "
                    "a block-RAM host; the result on the LEDs) for an amaranth-boards platform: "
                    "a bitstream for an ECP5 board, with the open toolchain from PyPI; the "
                    "vendor tools' build plan for any other.")
    _add_core_args(bld)
    _add_pci_args(bld)
    board.add_arguments(bld)

    from vmshm import timing     # no matplotlib until a plot is drawn
    tim = sub.add_parser(
        "timing", help="study the cycles of OPEN, CLOSE and window accesses, phase by phase",
        description="Run ioctl (name write + OPEN read), a window read and write, and CLOSE on "
                    "the simulated device, cut each into phases at the host's handshakes, and "
                    "print them beside the model of docs/timing.md; --sweep varies one "
                    "parameter. Writes table.txt, timing.csv, timing.json and timing.png into "
                    "--out.")
    _add_core_args(tim)
    timing.add_arguments(tim)
    from vmshm.fuzz.cli import add_parser as add_fuzz_parser    # `vmshm fuzz` (issue 17)
    add_fuzz_parser(sub)
    return parser


def _errno_name(code):
    return errno.errorcode.get(code, f"errno {code}")


def _cmd_demo(args, console):
    from rich.table import Table

    from vmshm.backends import backend_missing, run_function
    from vmshm.host_model import HostTiming, ShmRegion

    created = False
    if args.create is not None:
        if args.create <= 0:
            raise UsageError(f"--create needs a positive size, not {args.create}")
        region, created = ShmRegion.open_or_create(args.shm, args.create)
        if not created and region.size != args.create:
            console.print(f"[yellow]note:[/] {args.shm} exists with {region.size} bytes; "
                          f"using it as it is (not resized to {args.create})")
        region.close()
        if created:
            console.print(f"created {args.shm} with {args.create} bytes")

    timing = HostTiming(ctl_latency=args.host_latency, dma_latency=args.dma_latency)
    params = _core_args(args)
    if not 1 <= args.devices <= 32:
        raise UsageError(f"--devices must be from 1 to 32, not {args.devices}")
    reason = backend_missing(args.backend)
    if reason:
        raise UsageError(f"--backend {args.backend} cannot run here: {reason}")
    if args.backend != "amaranth":
        console.print(f"building and running on {args.backend} (the first build of a "
                      f"configuration takes a while)...")

    try:
        result = run_function("vmshm.demo:seed_example", backend=args.backend,
                              kwargs={"name": args.shm}, devices=args.devices, timing=timing,
                              waves=args.vcd, **params)
    except OSError as exc:
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
        console.print(f"  {dev.path}: {dev}", markup=False)
        for res in dev.resources:
            console.print(f"    {res}", markup=False)
        console.print(f"    window {dev.window_size} B, name buffer {dev.name_size} B, "
                      f"ABI {dev.version >> 16}.{dev.version & 0xFFFF}")
    shown = report.found.decode("utf-8", errors="backslashreplace")
    console.print(f"guest mapped {report.mapped} bytes of {args.shm}")
    console.print(f"guest read at offset 0:  {shown!r}" if shown else
                  "guest read at offset 0:  (empty: the first byte is NUL)")
    console.print(f"guest wrote at offset 0: {report.wrote.rstrip(bytes(1)).decode()!r}")

    table = Table(title=f"cycles per step ({args.backend}, {args.data_width}-bit, host latency "
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
            console.print(str(rec), markup=False)
    if args.vcd:
        console.print(f"waveform written to {args.vcd}")
    return 0


def _cmd_generate(args, console):
    from vmshm.tools import verilator_config
    from vmshm.verilog import generate, module_name

    if args.lint_config and not args.output:
        raise UsageError("--lint-config needs -o FILE: the waivers name the file they cover")
    text = generate(args.top, **_core_args(args, args.top))
    module = module_name(args.top)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        console.print(f"wrote {module} to {args.output}", highlight=False)
        if os.path.splitext(os.path.basename(args.output))[0] != module:
            console.print(f"note: verilator -Wall expects the file to be named {module}.v "
                          f"(DECLFILENAME)", highlight=False)
    else:
        sys.stdout.write(text)
    if args.lint_config:
        with open(args.lint_config, "w") as f:
            f.write(verilator_config(text, args.output))
        console.print(f"wrote the lint waivers for {args.output} to {args.lint_config}: "
                      f"verilator --lint-only -Wall {args.lint_config} {args.output}",
                      highlight=False)
    return 0


def _cmd_synth(args, console):
    import rich.markup

    from vmshm import synth
    from vmshm.verilog import top_parameters

    # An option must suit at least one of the tops; each top takes the ones it has.
    for name in _TOP_OPTIONS:
        value = getattr(args, name, None)
        if value not in (None, False) and not any(name in top_parameters(t) for t in args.top):
            raise UsageError(f"--{name.replace('_', '-')}: not taken by --top "
                             f"{' '.join(args.top)}")

    def params_for(top, width):
        return _core_args(argparse.Namespace(**{**vars(args), "data_width": width}), top,
                          strict=False)

    try:
        return synth.run(args, console, params_for)
    except synth.ToolchainMissing as exc:
        # The message holds 'vmshm[fpga]': escaped, or rich takes it for markup.
        raise UsageError(rich.markup.escape(str(exc))) from None


def _cmd_build(args, console):
    import rich.markup

    from vmshm import board, synth

    try:
        return board.run(args, console, _core_args(args, "selftest"))
    except synth.ToolchainMissing as exc:
        raise UsageError(rich.markup.escape(str(exc))) from None


def _cmd_regs(args, console):
    from vmshm.regmap import render_markdown

    text = render_markdown()
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_bench(args, console):
    from rich.table import Table

    from vmshm.backends import BACKENDS, backend_missing
    from vmshm.bench import run_bench

    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in wanted:
        if b not in BACKENDS:
            raise UsageError(f"unknown backend {b!r}: choose from {', '.join(BACKENDS)}")
    runnable = []
    for b in wanted:
        reason = backend_missing(b)
        if reason:
            console.print(f"skipping {b}: {reason}")
        else:
            runnable.append(b)
    with console.status("benchmarking...") as status:
        rows = run_bench(runnable, size=args.size, data_width=args.data_width,
                         progress=lambda text: status.update(text))
    table = Table(title=f"simulation speed: probe, open, {args.size // 1024} KiB written and "
                        f"read back, close ({args.data_width}-bit)")
    for col in ("backend", "build s", "wall s", "cycles", "cycles/s", "transactions",
                "empty loop s", "empty loop cycles/s"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in rows:
        table.add_row(r["backend"], f"{r['build_s']:.2f}", f"{r['wall_s']:.2f}",
                      str(r["cycles"]), f"{r['cycles_per_s']:,.0f}", str(r["transactions"]),
                      f"{r['idle_s']:.2f}", f"{r['idle_cycles_per_s']:,.0f}")
    console.print(table)
    console.print("build s: building the configuration (cached after the first time) and one "
                  "empty run; the empty loop wakes Python at every clock edge and does nothing "
                  "else, so it is the floor for a testbench that polls every cycle.")
    return 0


def _cmd_scenario(args, console):
    from rich.table import Table

    from vmshm.backends import backend_missing
    from vmshm.scenarios import SCENARIOS

    if args.name is None:
        table = Table(title=f"{len(SCENARIOS)} scenarios (vmshm/scenarios.py)")
        table.add_column("name")
        table.add_column("object")
        table.add_column("needs")
        table.add_column("what it checks")
        for scn in SCENARIOS.values():
            needs = ", ".join(f"{k}={v}" for k, v in scn.core_args.items())
            table.add_row(scn.name, f"{scn.shm_size} B", needs, scn.doc)
        console.print(table)
        return 0
    if args.name not in SCENARIOS:
        raise UsageError(f"no scenario named {args.name!r}; `vmshm scenario` lists them")
    reason = backend_missing(args.backend)
    if reason:
        raise UsageError(f"--backend {args.backend} cannot run here: {reason}")
    from vmshm.backends import run_scenario
    waves = args.waves
    if waves == "":
        waves = f"{args.name}-{args.backend}-{args.data_width}.vcd"
    result = run_scenario(args.name, backend=args.backend, data_width=args.data_width,
                          seed=args.seed, waves=waves)
    console.print("   start      end cycles  access where              words status step")
    for rec in result.records:
        console.print(str(rec), markup=False)
    console.print(f"{args.name} passed on {args.backend} ({args.data_width}-bit) in "
                  f"{result.cycles} cycles")
    if waves:
        console.print(f"waveform written to {waves}")
    return 0


def _cmd_timing(args, console):
    from vmshm import timing

    return timing.run_cli(args, console, _core_args(args))


def _fail(console, code, message):
    console.print(f"vmshm: {_errno_name(code)}: {message}", style="red", highlight=False,
                  soft_wrap=True)
    return 1


def main(argv=None):
    """Run the ``vmshm`` command line and return its exit status."""
    from rich.console import Console

    # Piped output (a file, a CI log) gets room for the wide tables instead of 80 columns.
    console = Console(highlight=False, soft_wrap=True,
                      width=None if sys.stdout.isatty() else 132)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    args = _parser().parse_args(argv)
    commands = {"demo": _cmd_demo, "generate": _cmd_generate, "regs": _cmd_regs,
                "bench": _cmd_bench, "scenario": _cmd_scenario, "synth": _cmd_synth,
                "build": _cmd_build, "timing": _cmd_timing}
    from vmshm.fuzz.cli import run as _cmd_fuzz
    commands["fuzz"] = _cmd_fuzz
    try:
        return commands[args.command](args, console)
    except UsageError as exc:
        err.print(f"vmshm {args.command}: {exc}", style="red", soft_wrap=True)
        return 2
    except ValueError as exc:
        # Parameter checks in the RTL and models say what was wrong; no traceback for them.
        err.print(f"vmshm {args.command}: {exc}", style="red", soft_wrap=True)
        return 2
    except OSError as exc:
        name = exc.filename if exc.filename is not None else ""
        return _fail(err, exc.errno or errno.EIO,
                     f"{name}: {exc.strerror}" if name else str(exc.strerror or exc))
    except RuntimeError as exc:
        # A simulator that could not build or run, or a device that hung: say what happened.
        err.print(f"vmshm {args.command}: {exc}", style="red", soft_wrap=True, markup=False)
        return 1
    except KeyboardInterrupt:
        err.print("vmshm: interrupted", style="red")
        return 130


if __name__ == "__main__":
    sys.exit(main())
