"""Simulation speed: a fixed workload on every backend, beside an empty loop on the same clock.

:func:`run_bench` measures, for each backend, the wall time, the simulated cycles and cycles per
second of the workload (probe, open, 64 KiB written and read back through the window, close), and
of a loop that only awaits the clock for the same number of cycles in the same run: the floor a
testbench that wakes every cycle cannot beat. ``vmshm bench`` (:mod:`vmshm.commands.bench`)
prints them.
"""

import gc
import os
import time
from contextlib import contextmanager

from vmshm.driver_model import vmshm_probe

__all__ = ["workload", "idle_loop", "run_bench", "pace"]


class _Paced(list):
    """A bus's record list that notes ``(end cycle, CPU time)`` of each record appended.

    The traffic is the workload's own: only the moment each burst ends is noted, in the
    process's CPU time, so that other work on the machine does not look like a slowdown.
    """

    def __init__(self, records, marks):
        super().__init__(records)
        self.marks = marks

    def append(self, record):
        super().append(record)
        self.marks.append((record.end, time.process_time()))


async def workload(bus, name, size=64 << 10, seed=1, paced=False):
    """Probe, open ``name``, write ``size`` bytes through the window, read them back, close.

    ``paced``: also return ``marks``, the end cycle and CPU time of every burst (:func:`pace`).
    """
    import random
    marks = []
    if paced:
        bus.records = _Paced(bus.records, marks)
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
    return {"cycles": bus.now(), **({"marks": marks} if paced else {})}


def pace(marks, cycles):
    """Return simulated cycles per CPU second in the first and the last tenth of a run.

    ``marks`` are ``(cycle, CPU time)`` pairs in order (:func:`workload`'s); each tenth is
    measured between the marks nearest its ends. ``None`` for a tenth with fewer than two marks.
    """
    def rate(lo, hi):
        inside = [m for m in marks if lo <= m[0] <= hi]
        if len(inside) < 2 or inside[-1][1] <= inside[0][1]:
            return None
        return (inside[-1][0] - inside[0][0]) / (inside[-1][1] - inside[0][1])
    return rate(0, cycles / 10), rate(cycles * 9 / 10, cycles)


async def idle_loop(bus, cycles):
    """Await the clock ``cycles`` times and nothing else."""
    await bus.idle(cycles)
    return {"cycles": bus.now()}


@contextmanager
def _timed_heap():
    """Keep the collection of objects made before a timed run out of its time.

    A full collection scans every object the process holds (Amaranth, the generated design, the
    host model: a few hundred thousand), and one lands in a run at random when the run's own
    allocations cross the collector's threshold: 80 ms in a 0.13 s native run, once in five.
    Collected beforehand and frozen during the run (:func:`gc.freeze`), those objects are not
    scanned again; what the run itself makes is still collected, so its cost stays in.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run_bench(backends, *, size=64 << 10, data_width=32, progress=None, paced=False):
    """Run the workload and the empty loop on each backend; return one row of figures each.

    The first cocotb run of a configuration builds it; that build is timed apart (``build_s``)
    by running the empty loop once beforehand. ``python_share`` is the share of the workload's
    wall time spent outside the simulator: 1 on Amaranth's, what the native backend measures
    around its C++ calls, ``None`` where the simulator runs in another process. With ``paced``,
    each row also has ``first_tenth`` and ``last_tenth``: cycles per second in the first and
    the last tenth of the workload's cycles (:func:`pace`), to see a simulator slow down.
    Each timed run starts with the process's older objects collected and frozen
    (:func:`_timed_heap`), as :mod:`timeit` keeps the collector out of what it times.
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
            with _timed_heap():
                t0 = time.perf_counter()
                res = run_function(f"{__name__}:workload", backend=backend,
                                   kwargs={"name": name, "size": size, "paced": paced},
                                   data_width=data_width)
                wall = time.perf_counter() - t0
            cycles = res.value["cycles"]
            # Amaranth's simulator is all Python; the native backend says how long its C++ ran;
            # the cocotb ones run Python and the simulator in another process, unmeasured.
            compiled = getattr(res, "compiled_s", 0.0 if backend == "amaranth" else None)
            if progress:
                progress(f"{backend}: empty loop of {cycles} cycles")
            with _timed_heap():
                t0 = time.perf_counter()
                run_function(f"{__name__}:idle_loop", backend=backend, kwargs={"cycles": cycles},
                             data_width=data_width)
                idle = time.perf_counter() - t0
            if paced:
                first, last = pace(res.value["marks"], cycles)
                paced_row = {"first_tenth": first, "last_tenth": last}
            else:
                paced_row = {}
            rows.append({**paced_row, "backend": backend, "build_s": build_s, "wall_s": wall,
                         "cycles": cycles, "cycles_per_s": cycles / wall, "idle_s": idle,
                         "idle_cycles_per_s": cycles / idle, "transactions": len(res.records),
                         "python_share": None if compiled is None else 1 - compiled / wall})
    finally:
        region.unlink()
        region.close()
    return rows
