"""``vmshm formal``: check the formal properties with SymbiYosys and print one line each.

The properties are :mod:`vmshm.formal.props`, the runs :mod:`vmshm.formal.run`; this module
checks the command line and prints each outcome: proved, bounded to N cycles, or FAILED with the
counterexample's VCD.
"""

from vmshm.formal.run import EXPECTED_TO_FAIL, FULL_DEPTH, TASKS, check_all, missing_tools

__all__ = ["add_arguments", "run"]


def add_arguments(p):
    """Add ``vmshm formal``'s options to the parser ``p``."""
    p.add_argument("properties", nargs="*", metavar="NAME",
                   help="checks to run (default: all): " + ", ".join(n for n, _, _ in TASKS))
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="depth in cycles for every check (default: each check's CI depth, "
                        "as the tests use: the liveness depths computed from abi/bounds.py)")
    p.add_argument("--full", action="store_true",
                   help=f"the full depth, {FULL_DEPTH} cycles for every check: tens of minutes "
                        f"each")
    p.add_argument("--prove", action="store_true",
                   help="try k-induction first for the bounded checks too (the components' safety "
                        "checks always use it)")
    p.add_argument("--jobs", "-j", type=int, default=None, metavar="N",
                   help="checks to run at once (default: the machine's cores)")
    p.add_argument("--no-cache", action="store_true",
                   help="check again even what passed before at the same design hash")
    p.add_argument("--out", default="vmshm-formal", metavar="DIR",
                   help="where SymbiYosys works and leaves traces (default ./vmshm-formal)")


def run(args, console):
    """Run ``vmshm formal`` and return its exit status."""
    names = [n for n, _, _ in TASKS]
    for n in args.properties:
        if n not in names:
            raise ValueError(f"no property named {n!r}; choose from {', '.join(names)}")
    depth = args.depth if args.depth is not None else (FULL_DEPTH if args.full else None)
    if depth is not None and depth < 1:
        raise ValueError(f"--depth must be a positive number of cycles, not {depth}")
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be a positive number, not {args.jobs}")
    reason = missing_tools()
    if reason:
        raise ValueError(reason)
    from vmshm.harness.checks import check_output_dir
    check_output_dir(args.out)          # before the first proof, not after it
    failed = 0
    tasks = [t for t in TASKS if not args.properties or t[0] in args.properties]
    for outcome in check_all(tasks, depth=depth, out=args.out, induction=args.prove,
                             jobs=args.jobs, cache=not args.no_cache):
        line = outcome.line()
        known = EXPECTED_TO_FAIL.get(outcome.name)
        if known and outcome.status == "failed":
            # A known RTL bug another branch fixes: reported, not counted against this run.
            line += f" (expected until fixed: {known})"
        elif known:
            line += " (expected to fail, but did not: remove it from EXPECTED_TO_FAIL)"
            failed += 1
        else:
            failed += outcome.status in ("failed", "error")
        console.print(line, markup=False, highlight=False)
    return 1 if failed else 0
