"""``vmshm fuzz``: a random differential campaign against the golden model, on any backend."""

import json
from dataclasses import asdict

from vmshm.backends import backend_names
from vmshm.campaign import add_engine_args, make_engine, merge_counts, run_with_progress
from vmshm.console import escaped
from vmshm.fuzz.host import BEHAVIOURS, DEFAULT_BEHAVIOURS
from vmshm.options import UsageError, integer

__all__ = ["HELP", "add_arguments", "run", "shard"]

HELP = dict(
    help="random guest traffic and host decisions, checked against a golden model",
    description="Draw random guest transactions and host behaviours from SEED, run them on the "
                "device and compare every completion and every byte of the host's objects with "
                "a model written from the register map and the docs. Prints the seed and the "
                "counts; on a mismatch, the first one with the transactions before it, and "
                "exits 1. The same seed replays exactly.")


_positive = integer(1)
_nonneg = integer(0)


def add_arguments(p):
    """Add ``vmshm fuzz``'s arguments to the parser `p`."""
    drawn = ", ".join(b.name for b in BEHAVIOURS if b.enabled)
    also = ", ".join(b.name for b in BEHAVIOURS if b.implemented and not b.enabled)
    off = "; ".join(f"{b.name} ({'not drawn yet' if not b.implemented else 'off'}: it needs "
                    f"{b.needs})" for b in BEHAVIOURS if not b.enabled)
    p.add_argument("--transactions", "-n", type=_positive, default=1000, metavar="N",
                   help="guest transactions to draw (default 1000)")
    p.add_argument("--seed", type=_nonneg, default=1, metavar="N", help="seed (default 1)")
    p.add_argument("--backend", choices=backend_names(), default="amaranth",
                   help="simulator to run the device on (default amaranth)")
    p.add_argument("--data-width", type=int, choices=(32, 64), default=32, metavar="W",
                   help="data path width in bits: 32 (default) or 64")
    p.add_argument("--window-size", type=_positive, default=4096, metavar="N",
                   help="BAR1 size in bytes (default 4096; the host objects are sized from it)")
    p.add_argument("--name-size", type=_positive, default=512, metavar="N",
                   help="BAR2 size in bytes (default 512)")
    p.add_argument("--host-timeout", type=_positive, default=1024, metavar="CYCLES",
                   help="the device's host timeout (default 1024)")
    p.add_argument("--behaviours", default=",".join(DEFAULT_BEHAVIOURS), metavar="LIST",
                   help=f"comma-separated host behaviours to draw (default: {drawn}"
                        f"{'; may also draw: ' + also if also else ''}). Off by default, "
                        f"with why: {off or 'none'}")
    p.add_argument("--history", type=_positive, default=20, metavar="N",
                   help="transactions shown before a mismatch (default 20)")
    p.add_argument("--vcd", metavar="FILE", help="write the run as a VCD waveform")
    p.add_argument("--shard-size", type=_positive, default=None, metavar="N",
                   help="split the campaign into shards of N transactions, shard i on seed "
                        "SEED+i (default with --jobs or --scheduler: 10000)")
    p.add_argument("--json", metavar="FILE",
                   help="with shards: write every shard's seed, counts and wall time to FILE")
    add_engine_args(p)


def run(args, console):
    """Run ``vmshm fuzz`` with parsed ``args``, printing through `console`; return the exit
    status."""
    from vmshm.rtl import VMShmPCI

    from vmshm.fuzz.model import FuzzConfig
    from vmshm.fuzz.run import run_fuzz
    from vmshm.harness.checks import check_output_file

    known = {b.name for b in BEHAVIOURS}
    behaviours = [b.strip() for b in args.behaviours.split(",") if b.strip()]
    if not behaviours:
        raise UsageError(f"--behaviours names no behaviour; choose from "
                         f"{', '.join(sorted(known))}")
    unknown = [b for b in behaviours if b not in known]
    if unknown:
        raise UsageError(f"unknown behaviour {unknown[0]!r}; choose from "
                         f"{', '.join(sorted(known))}")
    for b in BEHAVIOURS:
        if b.name in behaviours and not b.implemented:
            raise UsageError(f"behaviour {b.name!r} is not drawn yet: it needs {b.needs}")
    if args.name_size < 64 or args.window_size < 256:
        raise UsageError("--name-size must be at least 64 and --window-size at least 256 (the "
                         "host objects' names and sizes need them)")
    config = FuzzConfig(data_width=args.data_width, window_size=args.window_size,
                        name_size=args.name_size, host_timeout=args.host_timeout)
    # Refuse a configuration the RTL refuses (a ValueError: one line) before anything is created.
    pci = VMShmPCI(**config.params())
    pci._MustUse__silence = pci.core._MustUse__silence = True
    if args.shard_size or args.jobs or args.scheduler:
        if args.vcd:
            raise UsageError("--vcd draws a single run: leave out --jobs, --scheduler and "
                             "--shard-size")
        return _campaign(args, config, behaviours, console)
    if args.vcd:
        check_output_file(args.vcd)
    console.print(f"vmshm fuzz: seed {args.seed}, {args.transactions} transactions on "
                  f"{args.backend}, {args.data_width}-bit, window {args.window_size}, name "
                  f"buffer {args.name_size}, host timeout {args.host_timeout}")
    result = run_fuzz(transactions=args.transactions, seed=args.seed, backend=args.backend,
                      config=config, behaviours=behaviours, history=args.history,
                      waves=args.vcd, progress=args.transactions >= 5000)
    t = result["timing"]
    console.print(f"host: ctl_ready {t['ctl_ready']}, dma_ready {t['dma_ready']}, rsp_valid "
                  f"{t['rsp_valid']}; behaviours: {', '.join(result['behaviours'])}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result["counts"].items()))
    stats = ", ".join(f"{k} {v}" for k, v in result["stats"].items())
    wall = result["wall"]
    console.print(f"transactions {result['transactions']}, bus requests {result['requests']}, "
                  f"cycles {result['cycles']}, wall {wall:.1f} s, "
                  f"{result['transactions'] / wall:.0f} transactions/s")
    console.print(f"kinds: {counts}")
    console.print(f"checks: {stats}")
    if result["mismatch"]:
        console.print(f"mismatches 1 (the run stops at the first)\n{result['mismatch']}")
        console.print("replay: " + _replay(args, args.seed, args.transactions, behaviours))
        return 1
    console.print("mismatches 0")
    return 0


def _replay(args, seed, transactions, behaviours):
    """Return the command that runs one campaign (or one shard) alone, here."""
    return (f"vmshm fuzz --seed {seed} --transactions {transactions} --backend {args.backend} "
            f"--data-width {args.data_width} --window-size {args.window_size} --name-size "
            f"{args.name_size} --host-timeout {args.host_timeout} --behaviours "
            f"{','.join(behaviours)}")


def shard(spec):
    """Run one shard of a campaign: ``spec`` holds run_fuzz's arguments, the config as a dict.

    Returns the counts, the checks' figures, the sizes and the mismatch (or None): plain data,
    so it travels back from another process or machine.
    """
    from vmshm.fuzz.model import FuzzConfig
    from vmshm.fuzz.run import run_fuzz
    result = run_fuzz(**{**spec, "config": FuzzConfig(**spec["config"])})
    return {key: result[key] for key in ("counts", "stats", "transactions", "requests",
                                         "cycles", "mismatch")}


def _campaign(args, config, behaviours, console):
    """Run ``vmshm fuzz`` as shards on the engine ``--jobs``/``--scheduler`` choose."""
    from rich.table import Table

    size = args.shard_size or 10000
    specs = []
    for i, start in enumerate(range(0, args.transactions, size)):
        specs.append({"transactions": min(size, args.transactions - start),
                      "seed": args.seed + i, "backend": args.backend, "config": asdict(config),
                      "behaviours": behaviours, "history": args.history})
    # First, so a missing Dask or an unreachable scheduler is the one line printed.
    engine = make_engine(args.jobs, args.scheduler)
    where = (f"the Dask cluster at {escaped(args.scheduler)}" if args.scheduler else
             f"{args.jobs} local processes" if args.jobs else "this process")
    shards = f"{len(specs)} shard{'s' if len(specs) > 1 else ''}"
    console.print(f"vmshm fuzz: {args.transactions} transactions in {shards} of "
                  f"up to {size} (seeds {args.seed} to {args.seed + len(specs) - 1}) on "
                  f"{args.backend}, on {where}")
    shards = run_with_progress(engine, shard, specs, console, "shards")
    table = Table(title="shards")
    for column in ("shard", "seed", "transactions", "wall s", "worker", "outcome"):
        table.add_column(column, justify="right" if column != "outcome" else "left")
    failed = []
    for s in shards:
        r = s["result"]
        bad = s["error"] or (r and r["mismatch"])
        outcome = ("error" if s["error"] else "mismatch" if bad else "ok") + \
            (", retried" if s["retried"] else "")
        if bad:
            failed.append(s)
        table.add_row(str(s["index"]), str(s["spec"]["seed"]), str(s["spec"]["transactions"]),
                      f"{s['wall']:.1f}", escaped(s["worker"] or "-"), outcome)
    console.print(table)
    done = [s["result"] for s in shards if s["result"]]
    counts = merge_counts(r["counts"] for r in done)
    stats = merge_counts(r["stats"] for r in done)
    console.print(f"merged: transactions {sum(r['transactions'] for r in done)}, bus requests "
                  f"{sum(r['requests'] for r in done)}, cycles {sum(r['cycles'] for r in done)}")
    console.print("kinds: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    console.print("checks: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    retried = [s["index"] for s in shards if s["retried"]]
    if retried:
        console.print(f"retried after their worker died: shards {', '.join(map(str, retried))}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"transactions": args.transactions, "counts": counts, "stats": stats,
                       "shards": [{"index": s["index"], "seed": s["spec"]["seed"],
                                   "transactions": s["spec"]["transactions"],
                                   "wall": s["wall"], "worker": s["worker"],
                                   "retried": s["retried"], "error": s["error"],
                                   **(s["result"] or {})} for s in shards]}, f, indent=1)
        console.print(f"wrote {escaped(args.json)}")
    console.print(f"mismatches {sum(1 for s in failed if not s['error'])}, shards failed "
                  f"{len(failed)}")
    for s in failed:
        console.print(f"shard {s['index']}: {escaped(s['error'] or s['result']['mismatch'])}")
        console.print("replay: " + _replay(args, s["spec"]["seed"], s["spec"]["transactions"],
                                           behaviours))
    return 1 if failed else 0
