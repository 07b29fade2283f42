"""``vmshm mutate``: run the RTL mutant catalogue against the tests; print killed or survived.

The catalogue and the runs are :mod:`vmshm.formal.mutate`; this module checks the command line,
runs the mutants one after another (each in its own pytest process, stopping at its first
failing test) and prints one line each, then the score.
"""

from vmshm.formal import mutate as M

__all__ = ["add_arguments", "run"]


def add_arguments(p):
    """Add ``vmshm mutate``'s options to the parser ``p``."""
    p.add_argument("names", nargs="*", metavar="TEXT",
                   help="run only the mutants whose name contains one of these texts")
    p.add_argument("--quick", action="store_true",
                   help="only each module's own tests and formal checks, not the daily subset")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="run at most N mutants (the first N selected)")
    p.add_argument("--generate", type=int, default=None, metavar="N",
                   help="write the catalogue anew (formal/mutants.json): up to N mutants of "
                        "each RTL module, spread over its expressions; run none")
    p.add_argument("--timeout", type=int, default=1800, metavar="S",
                   help="seconds one stage of one mutant may take before it counts as killed "
                        "(a hang)")


def run(args, console):
    """Run ``vmshm mutate`` and return its exit status."""
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive number, not {args.limit}")
    if args.timeout < 1:
        raise ValueError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    if args.generate is not None:
        if args.generate < 1:
            raise ValueError(f"--generate must be a positive number, not {args.generate}")
        mutants = M.sample(M.generate(), args.generate)
        M.save(mutants)
        console.print(f"{len(mutants)} mutants written to {M.CATALOGUE}", markup=False,
                      highlight=False)
        return 0
    mutants = [m for m in M.load() if not args.names or any(t in m.name for t in args.names)]
    if not mutants:
        raise ValueError("no mutant of the catalogue matches " + " ".join(args.names))
    mutants = mutants[:args.limit]
    killed = survived = 0
    for m in mutants:
        verdict, why = M.run_one(m, deep=not args.quick, timeout=args.timeout)
        if verdict is None:
            line = f"STALE     {m.name}: {why}"
            survived += 1
        elif verdict:
            killed += 1
            line = f"killed    {m.name}  by {why}"
        else:
            survived += 1
            line = f"SURVIVED  {m.name}"
        console.print(line, markup=False, highlight=False)
    total = killed + survived
    console.print(f"{killed} of {total} mutants killed ({100 * killed / total:.1f} %)",
                  markup=False, highlight=False)
    return 0 if survived == 0 else 1
