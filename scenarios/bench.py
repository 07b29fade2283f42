"""Simulation speed: a fixed workload on every backend, beside an empty loop on the same clock.

:func:`run_bench` measures, for each backend, the wall time, the simulated cycles and cycles per
second of the workload (probe, open, 64 KiB written and read back through the window, close), and
of a loop that only awaits the clock for the same number of cycles in the same run: the floor a
testbench that wakes every cycle cannot beat. ``vmshm bench`` (:mod:`vmshm.commands.bench`)
prints them.
"""

import os
import time

from vmshm.driver_model import vmshm_probe

__all__ = ["workload", "idle_loop", "run_bench"]


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
            run_function(f"{__name__}:idle_loop", backend=backend, kwargs={"cycles": 1},
                         data_width=data_width)
            build_s = time.perf_counter() - t0
            if progress:
                progress(f"{backend}: workload")
            t0 = time.perf_counter()
            res = run_function(f"{__name__}:workload", backend=backend,
                               kwargs={"name": name, "size": size}, data_width=data_width)
            wall = time.perf_counter() - t0
            cycles = res.value["cycles"]
            # Amaranth's simulator is all Python; the native backend says how long its C++ ran;
            # the cocotb ones run Python and the simulator in another process, unmeasured.
            compiled = getattr(res, "compiled_s", 0.0 if backend == "amaranth" else None)
            if progress:
                progress(f"{backend}: empty loop of {cycles} cycles")
            t0 = time.perf_counter()
            run_function(f"{__name__}:idle_loop", backend=backend, kwargs={"cycles": cycles},
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
