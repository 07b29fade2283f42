"""``vmshm bench``: simulation speed on each backend, beside an empty loop on the same clock.

The workload and the measuring are :mod:`vmshm.scenarios.bench`; this module checks the
arguments and prints the table.
"""

from vmshm.backends import backend_names
from vmshm.options import UsageError, parse_size

__all__ = ["add_arguments", "run"]


def add_arguments(parser):
    """Add ``vmshm bench``'s options to ``parser``."""
    parser.add_argument("--backends", default=",".join(backend_names()), metavar="LIST",
                        help="comma-separated backends (default: all; missing ones are skipped)")
    parser.add_argument("--size", type=parse_size, default=64 << 10, metavar="N",
                        help="bytes written and read back (default 64K)")
    parser.add_argument("--data-width", type=int, choices=(32, 64), default=32, metavar="W",
                        help="data path width in bits (default 32)")
    parser.add_argument("--pace", action="store_true",
                        help="also print cycles per CPU second in the first and the last tenth "
                             "of the workload, and their ratio (a simulator that slows down as "
                             "it runs)")


def run(args, console):
    """Run ``vmshm bench`` with parsed ``args`` and return the exit status."""
    from rich.table import Table

    from vmshm.abi.regmap import DEFAULT_WINDOW_SIZE
    from vmshm.backends import BACKENDS, get_backend
    from vmshm.checks import check_object_size
    from vmshm.scenarios.bench import run_bench

    check_object_size(args.size, "--size")
    if args.size > DEFAULT_WINDOW_SIZE:
        raise UsageError(f"--size {args.size} does not fit the {DEFAULT_WINDOW_SIZE}-byte "
                         f"window the benchmark maps")
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not wanted:
        raise UsageError(f"--backends {args.backends!r} names no backend: give some of "
                         f"{', '.join(BACKENDS)}")
    for b in wanted:
        if b not in BACKENDS:
            raise UsageError(f"unknown backend {b!r}: choose from {', '.join(BACKENDS)}")
    runnable = []
    for b in wanted:
        reason = get_backend(b).missing()
        if reason:
            console.print(f"skipping {b}: {reason}")
        else:
            runnable.append(b)
    with console.status("benchmarking...") as status:
        rows = run_bench(runnable, size=args.size, data_width=args.data_width,
                         progress=lambda text: status.update(text), paced=args.pace)
    table = Table(title=f"simulation speed: probe, open, {args.size // 1024} KiB written and "
                        f"read back, close ({args.data_width}-bit)")
    for col in ("backend", "build s", "wall s", "cycles", "cycles/s", "in Python",
                "transactions", "empty loop s", "empty loop cycles/s"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in rows:
        table.add_row(r["backend"], f"{r['build_s']:.2f}", f"{r['wall_s']:.2f}",
                      str(r["cycles"]), f"{r['cycles_per_s']:,.0f}",
                      "-" if r["python_share"] is None else f"{r['python_share']:.0%}",
                      str(r["transactions"]),
                      f"{r['idle_s']:.2f}", f"{r['idle_cycles_per_s']:,.0f}")
    console.print(table)
    console.print("build s: building the configuration (cached after the first time) and one "
                  "empty run; the empty loop wakes Python at every clock edge and does nothing "
                  "else, so it is the floor for a testbench that polls every cycle (native: "
                  "one call into C++ runs them all); in Python: the share of the workload's wall "
                  "time outside the simulator (- where it runs in another process).")
    if args.pace:
        for r in rows:
            console.print(_pace_line(r))
    if any(not get_backend(r["backend"]).in_process for r in rows):
        console.print("Why a cocotb backend can be slower than Amaranth's simulator: each cocotb "
                      "run starts the simulator as a new process, which loads Python, cocotb "
                      "and the BFMs before the first cycle (most of its empty-loop time on a "
                      "short run), and every clock edge Python awaits crosses between the "
                      "simulator and Python. Amaranth's simulator runs inside this process. "
                      "Verilator's compiled model gains only when many cycles pass for each "
                      "time Python wakes: large --size, wide data paths, long bursts.")
    return 0


def _pace_line(row):
    # One line per backend: the first and last tenth's cycles/s and the ratio last / first.
    first, last = row["first_tenth"], row["last_tenth"]
    if first is None or last is None:
        return (f"pace {row['backend']}: too few bursts to time a tenth of the run (give a "
                f"larger --size)")
    return (f"pace {row['backend']}: {first:,.0f} cycles per CPU second in the first tenth, "
            f"{last:,.0f} in the last; last / first {last / first:.2f}")
