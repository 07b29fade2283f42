"""``vmshm fuzz``: a random differential campaign against the golden model, on any backend."""

from vmshm.backends import backend_names
from vmshm.fuzz.host import BEHAVIOURS, DEFAULT_BEHAVIOURS
from vmshm.options import UsageError, integer

__all__ = ["HELP", "add_arguments", "run"]

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
        console.print(f"replay: vmshm fuzz --seed {args.seed} --transactions "
                      f"{args.transactions} --backend {args.backend} --data-width "
                      f"{args.data_width} --window-size {args.window_size} --name-size "
                      f"{args.name_size} --host-timeout {args.host_timeout} --behaviours "
                      f"{','.join(behaviours)}")
        return 1
    console.print("mismatches 0")
    return 0
