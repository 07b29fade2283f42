"""``vmshm build``: build the on-chip self-test for an FPGA board and print what it came to.

The build itself is :func:`vmshm.fpga.board.build`; this module checks the command line, lists
the boards and prints the utilisation, Fmax and where the bitstream went.
"""

from vmshm.fpga.board import build
from vmshm.fpga.paths import describe, sets_fmax
from vmshm.fpga.platforms import list_boards
from vmshm.fpga.toolchain import ToolchainMissing
from vmshm.console import escaped
from vmshm.options import UsageError, add_core_args, add_pci_args, core_args, parse_size

__all__ = ["add_arguments", "run", "build_command"]


def add_arguments(parser):
    """Add ``vmshm build``'s options to ``parser``: the core's, the PCI function's, its own."""
    add_core_args(parser)
    add_pci_args(parser)
    parser.add_argument("--board", metavar="NAME",
                        help="amaranth-boards platform: a short name (ulx3s-85f, versa-ecp5, "
                             "nitefury, ...), a class name, or module.Class")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="build folder (default build-NAME)")
    parser.add_argument("--plan-only", action="store_true",
                        help="write the build plan without running it, also for an ECP5 board")
    parser.add_argument("--list-boards", action="store_true",
                        help="list the boards and what vmshm build makes for each")
    parser.add_argument("--shm-name", default=None, metavar="NAME",
                        help="the name the self-test opens (default /shared-with-qemu)")
    parser.add_argument("--host-size", type=parse_size, default=None, metavar="N",
                        help="bytes of block RAM standing in for the object (default 1K)")


def run(args, console):
    """Run ``vmshm build`` with parsed ``args`` and return the exit status."""
    try:
        return build_command(args, console, core_args(args, "selftest"))
    except ToolchainMissing as exc:
        raise UsageError(str(exc)) from None


def build_command(args, console, params):
    """Run ``vmshm build`` with parsed ``args`` and the self-test's ``params``; return the exit
    status."""
    from rich.table import Table

    if args.list_boards:
        # Plain columns: the long module.Class names do not fit a table in 80 columns.
        rows = [("NAME", "DEVICE", "PACKAGE", "SPEED", "MAKES")]
        rows += [(name, *rest) for name, _, *rest in list_boards()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            console.print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4])
        return 0
    if not args.board:
        raise ValueError("choose a board with --board NAME (--list-boards lists them)")
    params = dict(params)
    if args.shm_name is not None:
        from vmshm.host_model import check_name
        # The device's own rule for names, and its name buffer's size: the self-test's OPEN
        # of a name the device refuses would fail on the board, after an hour's build.
        try:
            check_name(args.shm_name, params.get("name_size"))
        except OSError as exc:
            raise UsageError(f"--shm-name must be a name the device accepts: "
                             f"{exc.strerror}") from None
        params["shm_name"] = args.shm_name
    if args.host_size is not None:
        params["host_size"] = args.host_size
    if args.output:
        from vmshm.harness.checks import check_output_dir
        check_output_dir(args.output)   # before anything is elaborated or built
    with console.status("starting") as status:
        result = build(args.board, params, args.output, plan_only=args.plan_only,
                       progress=status.update)
    if result.kind == "plan":
        console.print(f"wrote the build plan for {result.board} ({result.device}) to "
                      f"{escaped(result.build_dir)}: run `sh {result.script.name}` there with the "
                      f"vendor's tools installed")
        return 0
    table = Table(title=f"{result.board} ({result.device}): the self-test, built in "
                        f"{result.seconds:.0f} s")
    for col in ("LUT4", "FF", "DP16KD", *(f"Fmax {c} MHz" for c in result.fmax_mhz),
                "board clock MHz", "met"):
        table.add_column(col, justify="right")
    res = result.resources
    met = result.timing_met
    table.add_row(*(str(res.get(k, {}).get("used", "-")) for k in ("LUT4", "FF", "DP16KD")),
                  *(f"{f:.1f}" for f in result.fmax_mhz.values()),
                  "-" if result.clock_mhz is None else f"{result.clock_mhz:g}",
                  {True: "yes", False: "no", None: "-"}[met])
    console.print(table)
    if met is None:
        console.print("timing: not checked (no board clock or no timing report)")
    else:
        fmax = ", ".join(f"{c} {f:.1f} MHz" for c, f in result.fmax_mhz.items())
        if met:
            console.print(f"timing: met ({fmax} against the {result.clock_mhz:g} MHz board "
                          f"clock)", style="green", markup=False)
        else:
            console.print(f"timing: NOT met ({fmax} against the {result.clock_mhz:g} MHz board "
                          f"clock): the bitstream may not work on the board", style="red",
                          markup=False)
    for path in filter(sets_fmax, result.critical_paths):
        console.print(f"critical path, {describe(path)}", markup=False)
    console.print(f"bitstream: {escaped(result.bitstream)}")
    console.print("After loading it: LED 0 (green) lights when the self-test passed, LED 1 "
                  "(red) when it failed, LED 2 (blue) blinks while the clock runs.")
    return 0
