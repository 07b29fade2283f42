"""``vmshm fuzz``: a random differential campaign against the golden model, on any backend."""

import argparse
import sys

from vmshm.backends import BACKENDS

from .host import BEHAVIOURS, DEFAULT_BEHAVIOURS

__all__ = ["add_parser", "run"]


def _positive(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def _nonneg(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, not {value}")
    return value


def add_parser(sub):
    """Add the ``fuzz`` subcommand to ``sub`` (an argparse subparsers object)."""
    names = ", ".join(f"{b.name}{'' if b.enabled else ' (off)'}" for b in BEHAVIOURS
                      if b.implemented)
    p = sub.add_parser(
        "fuzz", help="random guest traffic and host decisions, checked against a golden model",
        description="Draw random guest transactions and host behaviours from SEED, run them on "
                    "the device and compare every completion and every byte of the host's "
                    "objects with a model written from the register map and the docs. Prints "
                    "the seed and the counts; on a mismatch, the first one with the "
                    "transactions before it, and exits 1. The same seed replays exactly.")
    p.add_argument("--transactions", "-n", type=_positive, default=1000, metavar="N",
                   help="guest transactions to draw (default 1000)")
    p.add_argument("--seed", type=_nonneg, default=1, metavar="S", help="seed (default 1)")
    p.add_argument("--backend", choices=BACKENDS, default="amaranth")
    p.add_argument("--data-width", type=int, choices=(32, 64), default=32)
    p.add_argument("--window-size", type=_positive, default=4096, metavar="BYTES",
                   help="BAR1 size (default 4096; the host objects are sized from it)")
    p.add_argument("--name-size", type=_positive, default=512, metavar="BYTES",
                   help="BAR2 size (default 512)")
    p.add_argument("--host-timeout", type=_positive, default=1024, metavar="CYCLES",
                   help="the device's host timeout (default 1024)")
    p.add_argument("--behaviours", default=",".join(DEFAULT_BEHAVIOURS), metavar="LIST",
                   help=f"comma-separated host behaviours to draw, of: {names} "
                        f"(default: those not marked off)")
    p.add_argument("--history", type=_positive, default=20, metavar="K",
                   help="transactions shown before a mismatch (default 20)")
    p.add_argument("--vcd", metavar="FILE", help="write the run as a VCD waveform")
    return p


def run(args, console=None):
    """Run ``vmshm fuzz`` with parsed ``args``; return the exit status."""
    from vmshm.rtl import VMShmPCI

    from .model import FuzzConfig
    from .run import run_fuzz

    out = sys.stdout
    known = {b.name for b in BEHAVIOURS}
    behaviours = [b.strip() for b in args.behaviours.split(",") if b.strip()]
    unknown = [b for b in behaviours if b not in known]
    if unknown:
        print(f"vmshm fuzz: unknown behaviour {unknown[0]!r}; choose from "
              f"{', '.join(sorted(known))}", file=sys.stderr)
        return 2
    for b in BEHAVIOURS:
        if b.name in behaviours and not b.implemented:
            print(f"vmshm fuzz: behaviour {b.name!r} is not drawn yet: it needs {b.needs}",
                  file=sys.stderr)
            return 2
    config = FuzzConfig(data_width=args.data_width, window_size=args.window_size,
                        name_size=args.name_size, host_timeout=args.host_timeout)
    try:
        # Refuse a configuration the RTL refuses before anything is created.
        pci = VMShmPCI(**config.params())
        pci._MustUse__silence = pci.core._MustUse__silence = True
    except ValueError as exc:
        print(f"vmshm fuzz: {exc}", file=sys.stderr)
        return 2
    if args.name_size < 64 or args.window_size < 256:
        print("vmshm fuzz: --name-size must be at least 64 and --window-size at least 256 "
              "(the host objects' names and sizes need them)", file=sys.stderr)
        return 2
    print(f"vmshm fuzz: seed {args.seed}, {args.transactions} transactions on {args.backend}, "
          f"{args.data_width}-bit, window {args.window_size}, name buffer {args.name_size}, "
          f"host timeout {args.host_timeout}", file=out, flush=True)
    try:
        result = run_fuzz(transactions=args.transactions, seed=args.seed, backend=args.backend,
                          config=config, behaviours=behaviours, history=args.history,
                          waves=args.vcd, progress=args.transactions >= 5000)
    except RuntimeError as exc:
        print(f"vmshm fuzz: {exc}", file=sys.stderr)
        return 2
    t = result["timing"]
    print(f"host: ctl_ready {t['ctl_ready']}, dma_ready {t['dma_ready']}, rsp_valid "
          f"{t['rsp_valid']}; behaviours: {', '.join(result['behaviours'])}", file=out)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result["counts"].items()))
    stats = ", ".join(f"{k} {v}" for k, v in result["stats"].items())
    wall = result["wall"]
    print(f"transactions {result['transactions']}, bus requests {result['requests']}, cycles "
          f"{result['cycles']}, wall {wall:.1f} s, {result['transactions'] / wall:.0f} "
          f"transactions/s", file=out)
    print(f"kinds: {counts}", file=out)
    print(f"checks: {stats}", file=out)
    if result["mismatch"]:
        print(f"mismatches 1 (the run stops at the first)\n{result['mismatch']}", file=out)
        print(f"replay: vmshm fuzz --seed {args.seed} --transactions {args.transactions} "
              f"--backend {args.backend} --data-width {args.data_width} --window-size "
              f"{args.window_size} --name-size {args.name_size} --host-timeout "
              f"{args.host_timeout} --behaviours {','.join(behaviours)}", file=out)
        return 1
    print("mismatches 0", file=out)
    return 0
