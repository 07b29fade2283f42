"""The ``vmshm scenario`` command: list the suite, or run one scenario on a backend."""

from vmshm.backends import backend_names
from vmshm.console import escaped
from vmshm.options import UsageError, cycles
from vmshm.rtl.usp import AXIS_WIDTHS

__all__ = ["add_arguments", "run"]


def add_arguments(parser):
    """Add ``vmshm scenario``'s options to ``parser``."""
    parser.add_argument("name", nargs="?", metavar="NAME", help="scenario to run")
    parser.add_argument("--backend", choices=backend_names(), default="amaranth",
                        help="simulator (default amaranth)")
    parser.add_argument("--data-width", type=int, choices=(32, 64), default=32, metavar="W",
                        help="data path width in bits (default 32)")
    parser.add_argument("--seed", type=int, default=1, metavar="N",
                        help="seed of the scenario's random choices")
    parser.add_argument("--waves", nargs="?", const="", metavar="FILE",
                        help="write a VCD waveform (default name: NAME-BACKEND-WIDTH.vcd)")
    parser.add_argument("--top", choices=("pci", "usp"), default="pci",
                        help=f"the device: the soft PCI function (default), or the UltraScale+ "
                             f"PCIe top behind cocotbext-pcie's root complex "
                             f"({', '.join(sorted(backend_names(pcie=True)))})")
    parser.add_argument("--axis-width", type=int, choices=AXIS_WIDTHS, default=64, metavar="W",
                        help="--top usp: the AXI-stream width, 64 (default), 128 or 256")
    parser.add_argument("--rc-latency", type=cycles, default=0, metavar="CYCLES",
                        help="--top usp: cycles the root complex takes to complete each of the "
                             "device's memory reads (default 0)")


def _run_usp(args, waves):
    from vmshm.scenarios import PCIE_SCENARIOS, SKIPPED_SCENARIOS, run_pcie_scenario
    pcie = " or ".join(sorted(backend_names(pcie=True)))
    if args.backend not in backend_names(pcie=True):
        raise UsageError(f"--top usp runs on --backend {pcie} (cocotbext-pcie's root complex "
                         f"runs under cocotb)")
    if waves and args.backend != "icarus":
        raise UsageError("--waves with --top usp needs --backend icarus")
    if args.data_width != 32:
        raise UsageError("--top usp has a 32-bit data path: --data-width must be 32")
    if args.name not in PCIE_SCENARIOS:
        raise UsageError(f"{args.name} does not run on --top usp: {SKIPPED_SCENARIOS[args.name]}")
    return run_pcie_scenario(args.name, args.backend, axis_width=args.axis_width, seed=args.seed,
                             waves=waves, rc_latency=args.rc_latency)


def run(args, console):
    """Run ``vmshm scenario`` with parsed ``args`` and return the exit status."""
    from rich.table import Table

    from vmshm.backends import get_backend
    from vmshm.scenarios import SCENARIOS

    if args.name is None:
        table = Table(title=f"{len(SCENARIOS)} scenarios (scenarios/)")
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
    reason = get_backend(args.backend).missing()
    if reason:
        raise UsageError(f"--backend {args.backend} cannot run here: {reason}")
    from vmshm.harness.checks import check_output_file
    from vmshm.scenarios import run_scenario
    waves = args.waves
    if waves == "":
        waves = f"{args.name}-{args.backend}-{args.data_width}.vcd"
    if waves:
        check_output_file(waves)
    if args.top == "usp":
        result = _run_usp(args, waves)
    elif args.rc_latency:
        raise UsageError("--rc-latency is the root complex's: it needs --top usp")
    else:
        result = run_scenario(args.name, backend=args.backend, data_width=args.data_width,
                              seed=args.seed, waves=waves)
    console.print("   start      end cycles  access where              words status step")
    for rec in result.records:
        console.print(str(rec))
    console.print(f"{args.name} passed on {args.backend} ({args.data_width}-bit) in "
                  f"{result.cycles} cycles")
    if waves:
        console.print(f"waveform written to {escaped(waves)}")
    return 0
