"""Simulation speed: a fixed workload on every backend, beside an empty loop on the same clock.

``vmshm bench`` prints, for each backend, the wall time, the simulated cycles and cycles per
second of the workload (probe, open, 64 KiB written and read back through the window, close), and
of a loop that only awaits the clock for the same number of cycles in the same run: the floor a
testbench that wakes every cycle cannot beat.
"""

import os
import time

from vmshm.driver_model import vmshm_probe
from vmshm.options import UsageError, parse_size

__all__ = ["workload", "idle_loop", "run_bench", "add_arguments", "run"]


async def workload(bus, name, size=64 << 10, seed=1):
    """Probe, open ``name``, write ``size`` bytes through the window, read them back, close."""
    import random
    drivers, _ = await vmshm_probe(bus)
    drv = drivers[0]
    fd = await drv.open()
    await drv.ioctl(fd, 0, name)
    mapping = await drv.mmap(fd, size)
    data = random.Random(seed).randbytes(size)
    await mapping.write(0, data)
    back = await mapping.read(0, size)
    await drv.munmap(mapping)
    await drv.close(fd)
    if back != data:
        raise AssertionError("the window read back different data")
    return {"cycles": bus.now()}


async def idle_loop(bus, cycles):
    """Await the clock ``cycles`` times and nothing else."""
    await bus.idle(cycles)
    return {"cycles": bus.now()}


def run_bench(backends, *, size=64 << 10, data_width=32, progress=None):
    """Run the workload and the empty loop on each backend; return one row of figures each.

    The first cocotb run of a configuration builds it; that build is timed apart (``build_s``)
    by running the empty loop once beforehand. ``python_share`` is the share of the workload's
    wall time spent outside the simulator: 1 on Amaranth's, what the native backend measures
    around its C++ calls, ``None`` where the simulator runs in another process.
    """
    from vmshm.backends import run_function
    from vmshm.host_model import ShmRegion

    name = f"/vmshm-bench-{os.getpid()}"
    region = ShmRegion.create(name, size)
    rows = []
    try:
        for backend in backends:
            if progress:
                progress(f"{backend}: building")
            t0 = time.perf_counter()
            run_function("vmshm.bench:idle_loop", backend=backend, kwargs={"cycles": 1},
                         data_width=data_width)
            build_s = time.perf_counter() - t0
            if progress:
                progress(f"{backend}: workload")
            t0 = time.perf_counter()
            res = run_function("vmshm.bench:workload", backend=backend,
                               kwargs={"name": name, "size": size}, data_width=data_width)
            wall = time.perf_counter() - t0
            cycles = res.value["cycles"]
            # Amaranth's simulator is all Python; the native backend says how long its C++ ran;
            # the cocotb ones run Python and the simulator in another process, unmeasured.
            compiled = getattr(res, "compiled_s", 0.0 if backend == "amaranth" else None)
            if progress:
                progress(f"{backend}: empty loop of {cycles} cycles")
            t0 = time.perf_counter()
            run_function("vmshm.bench:idle_loop", backend=backend, kwargs={"cycles": cycles},
                         data_width=data_width)
            idle = time.perf_counter() - t0
            rows.append({"backend": backend, "build_s": build_s, "wall_s": wall,
                         "cycles": cycles, "cycles_per_s": cycles / wall, "idle_s": idle,
                         "idle_cycles_per_s": cycles / idle, "transactions": len(res.records),
                         "python_share": None if compiled is None else 1 - compiled / wall})
    finally:
        region.unlink()
        region.close()
    return rows


# -- the command line ---------------------------------------------------------------------------

def add_arguments(parser):
    """Add ``vmshm bench``'s options to ``parser``."""
    parser.add_argument("--backends", default="amaranth,verilator,icarus,native", metavar="LIST",
                        help="comma-separated backends (default: all; missing ones are skipped)")
    parser.add_argument("--size", type=parse_size, default=64 << 10, metavar="N",
                        help="bytes written and read back (default 64K)")
    parser.add_argument("--data-width", type=int, choices=(32, 64), default=32, metavar="W",
                        help="data path width in bits (default 32)")


def run(args, console):
    """Run ``vmshm bench`` with parsed ``args`` and return the exit status."""
    from rich.table import Table

    from vmshm.backends import BACKENDS, backend_missing
    from vmshm.bench import run_bench
    from vmshm.checks import check_object_size
    from vmshm.abi.regmap import DEFAULT_WINDOW_SIZE

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
    if any(r["backend"] in ("verilator", "icarus") for r in rows):
        console.print("Why a cocotb backend can be slower than Amaranth's simulator: each cocotb "
                      "run starts the simulator as a new process, which loads Python, cocotb "
                      "and the BFMs before the first cycle (most of its empty-loop time on a "
                      "short run), and every clock edge Python awaits crosses between the "
                      "simulator and Python. Amaranth's simulator runs inside this process. "
                      "Verilator's compiled model gains only when many cycles pass for each "
                      "time Python wakes: large --size, wide data paths, long bursts.")
    return 0
