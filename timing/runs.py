"""Run the timed transactions on a simulation backend and cut them into phases.

:func:`measure` runs on the guest bus of any backend; :func:`split_phases` cuts its records at
the host BFM's event stamps; :func:`run_point` and :func:`run_sweep` run one configuration or a
sweep of them; :func:`measure_host_latency` times this machine's ``shm_open`` + ``fstat``.
"""

import errno
import math
import os
import random
import statistics
import string
import time
from dataclasses import dataclass

from .model import OPS, TimingParams, _with, model_phases, total

# -- measurement ------------------------------------------------------------------------------

async def measure(bus, *, name=None, burst=16, repeat=1, gap=16, plan=None):
    """Probe, then time ``repeat`` rounds of ioctl(name), window read, window write, close.

    Each transaction is labelled for :func:`split_phases` with its step's number; the window
    accesses are bursts of ``burst`` beats. Runs on any backend as
    ``"vmshm.timing.runs:measure"``.
    ``plan``, a list of ``[name, burst]``, replaces ``name``, ``burst`` and ``repeat`` with one
    step each (a grid in one simulation).
    ``gap`` idle cycles come before each measured transaction, so a host that stalls at random
    has drawn ready again by then (the model assumes a host that was idle). An OPEN that fails
    skips the window; one that times out ends the run, since the device then deals with the late
    answer first.

    Returns
    -------
    dict
        ``{"status": [errno of each step's OPEN, 0 for success]}``.
    """
    from vmshm.driver_model import vmshm_probe
    from vmshm.abi.regmap import REG

    drivers, _ = await vmshm_probe(bus)
    drv = drivers[0]
    statuses = []
    if plan is None:
        plan = [(name, burst)] * repeat

    async def timed(label, coro):
        await bus.idle(gap)
        bus.label = label
        try:
            return await coro
        finally:
            bus.label = ""

    for i, (step_name, step_burst) in enumerate(plan):
        nbytes = step_burst * bus.word_bytes
        fd = await drv.open()
        try:
            await timed(f"OPEN {i}", drv.ioctl(fd, 0, step_name))
            statuses.append(0)
        except OSError as exc:
            statuses.append(exc.errno)
        if statuses[-1] == 0:
            if await drv.regs.read32(REG["MAP_SIZE"].offset) < nbytes:
                raise ValueError(f"{step_name} is smaller than a burst of {nbytes} bytes")
            mapping = await drv.mmap(fd, nbytes)
            await timed(f"READ {i}", mapping.read(0, nbytes))
            pattern = bytes((i + k * 7 + 1) & 0xFF for k in range(nbytes))
            await timed(f"WRITE {i}", mapping.write(0, pattern))
            await drv.munmap(mapping)
        if statuses[-1] == errno.ETIMEDOUT:
            await drv.close(fd)
            break
        await timed(f"CLOSE {i}", drv.close(fd))
    return {"status": statuses}


_STAMPS = {"OPEN": ("ctl_req_first", "ctl_req_last", "ctl_rsp", "ctl_rsp"),
           "CLOSE": ("ctl_req_first", "ctl_req_last", "ctl_rsp", "ctl_rsp"),
           "READ": ("dma_req_first", "dma_req_last", "dma_rsp_first", "dma_rsp_last"),
           "WRITE": ("dma_req_first", "dma_req_last", "dma_rsp_first", "dma_rsp_last")}


def split_phases(records, events):
    """Cut each labelled transaction of a :func:`measure` run into phases.

    Parameters
    ----------
    records : list of Transaction
        The guest bus's records (``SimResult.records``).
    events : list of HostEvent
        Device 0's host-side stamps (``SimResult.events[0]``).

    Returns
    -------
    list of dict
        ``{"op", "rep", "start", "end", "phases"}`` per transaction, in order. A host-side
        stamp that falls outside the transaction (the host answered after the device gave up)
        leaves the time until the device gave up in ``host`` and 1 in ``completion``.
    """
    from vmshm.driver_model import Access

    groups = {}
    for rec in records:
        if rec.label:
            groups.setdefault(rec.label, []).append(rec)
    out = []
    for label, recs in groups.items():
        op, _, rep = label.partition(" ")
        phases = {}
        if op == "OPEN":
            writes = [r for r in recs if r.access is Access.WRITE]
            phases["name_write"] = sum(r.cycles for r in writes)
            recs = [r for r in recs if r.access is Access.READ]
        if len(recs) != 1:
            raise ValueError(f"{label}: expected one {op} burst, found {len(recs)}")
        rec = recs[0]
        mine = [e for e in events if e.op == op and rec.start < e.cycle <= rec.end]
        first = {}
        last = {}
        for e in mine:
            first.setdefault(e.kind, e.cycle)
            last[e.kind] = e.cycle
        req_first, req_last, rsp_first, rsp_last = _STAMPS[op]
        a = first.get(req_first)
        b = last.get(req_last)
        if a is None or b is None:
            raise ValueError(f"{label}: the host saw no request between cycles {rec.start} and "
                             f"{rec.end}")
        c = first.get(rsp_first)
        d = last.get(rsp_last)
        phases["setup"] = a - rec.start
        phases["request"] = b - a
        if c is None:
            # Timed out: the core completed one cycle after it stopped waiting.
            phases.update(host=rec.end - 1 - b, response=0, completion=1)
        else:
            phases.update(host=c - b, response=d - c, completion=rec.end - d)
        start = rec.start - phases.get("name_write", 0)
        out.append({"op": op, "rep": int(rep), "start": start, "end": rec.end,
                    "phases": phases})
    return out


@dataclass
class Point:
    """One run's result: the measured phases (means over repetitions) beside the model's.

    Attributes
    ----------
    value : int or float
        The swept parameter's value (``None`` for a single run).
    params : TimingParams
    status : str
        ``"OK"`` or the errno name the OPEN returned.
    measured : dict
        ``{op: {phase: mean cycles}}`` for each transaction that ran.
    samples : dict
        ``{op: how many transactions the mean is over}``.
    model : dict
        ``{op: {phase: cycles}}`` from :func:`model_phases`.
    """
    value: object
    params: TimingParams
    status: str
    measured: dict
    samples: dict
    model: dict

    def matches(self, tolerance=0.0):
        """Return whether every measured total is within ``tolerance`` (relative) of the model."""
        for op, phases in self.measured.items():
            want = total(self.model[op])
            if abs(total(phases) - want) > tolerance * max(want, 1) + 1e-9:
                return False
        return True


class _Objects:
    """Create shared-memory objects whose names have an exact length; unlink only those."""

    def __init__(self, size):
        self._size = size
        self._made = {}
        self._regions = []

    def name(self, length):
        """Return the name of an object of ``length`` name bytes, made on first use.

        Lengths that no object can have (``/`` alone, or past NAME_MAX) get a name anyway: the
        host refuses it (EINVAL, ENAMETOOLONG) after the same cycles, and the window is skipped.
        """
        from vmshm.host_model import ShmRegion
        from vmshm.abi.regmap import NAME_MAX

        if length in self._made:
            return self._made[length]
        rng = random.Random()
        alphabet = string.ascii_letters + string.digits
        prefix = f"/vmshm-t{os.getpid()}-"
        name = "/" + "x" * (length - 1)
        if 2 <= length <= NAME_MAX + 1:
            for _ in range(64):
                head = prefix if length > len(prefix) + 6 else "/"
                name = head + "".join(rng.choice(alphabet) for _ in range(length - len(head)))
                try:
                    self._regions.append(ShmRegion.create(name, self._size))
                    break
                except FileExistsError:
                    continue    # someone else's object: never touch it, pick another name
        self._made[length] = name
        return name

    def cleanup(self):
        for region in self._regions:
            try:
                region.unlink()
            except FileNotFoundError:
                pass
            finally:
                region.close()
        self._regions.clear()
        self._made.clear()


def _gap(params):
    # Idle cycles before each measured transaction: enough that a host drawing ready with the
    # smallest probability has been ready for a while (miss chance about e^-16).
    p = min(params.ctl_ready, params.dma_ready, params.rsp_valid)
    return max(16, math.ceil(16 / p))


def run_point(params, *, backend="amaranth", repeat=None, seed=0, objects=None, value=None,
              waves=None):
    """Run :func:`measure` with ``params`` on ``backend`` and return a :class:`Point`.

    Parameters
    ----------
    params : TimingParams
    backend : str
        ``"amaranth"``; ``"verilator"`` and ``"icarus"`` once their runner passes back the host
        BFM's events (``SimResult.events``).
    repeat : int, optional
        Transactions of each kind to average over: 1 without back-pressure (the result is
        exact), else 64.
    seed : int
        Seed of the host's random back-pressure.
    objects : _Objects, optional
        Where to make the object; by default one made and removed here.
    value : object
        The swept parameter's value, kept in the point.
    waves : path, optional
        Write a VCD of the run there.
    """
    from vmshm.backends import run_function

    if repeat is None:
        repeat = 1 if params.deterministic else 64
    own = objects is None
    if own:
        objects = _Objects(max(4096, params.burst * params.data_width // 8))
    try:
        name = objects.name(params.name_length)
        result = run_function("vmshm.timing.runs:measure", backend=backend,
                              kwargs={"name": name, "burst": params.burst, "repeat": repeat,
                                      "gap": _gap(params)},
                              timing=params.host_timing(seed), waves=waves,
                              **params.build_params())
    finally:
        if own:
            objects.cleanup()
    events = getattr(result, "events", None)
    if not events:
        raise RuntimeError(f"the {backend} backend returned no host-side event stamps "
                           f"(SimResult.events), so its transactions cannot be cut into phases")
    rows = split_phases(result.records, events[0])
    status = result.value["status"][0]
    measured, samples = {}, {}
    for op in OPS:
        mine = [r["phases"] for r in rows if r["op"] == op]
        if mine:
            samples[op] = len(mine)
            measured[op] = {ph: _mean([m[ph] for m in mine]) for ph in mine[0]}
    return Point(value=value, params=params,
                 status="OK" if status == 0 else errno.errorcode.get(status, str(status)),
                 measured=measured, samples=samples, model=model_phases(params))


def _mean(values):
    m = statistics.fmean(values)
    return int(m) if m == int(m) else m


def run_sweep(base, sweep, values, *, backend="amaranth", repeat=None, seed=0, progress=None):
    """Run :func:`run_point` for each value of the parameter ``sweep`` and return the points.

    ``progress``, if given, is called with each point's value after the point ran.
    """
    params = [_with(base, sweep, v) for v in values] if sweep else [base]
    size = max(4096, max(p.burst * p.data_width // 8 for p in params))
    objects = _Objects(size)
    points = []
    try:
        for p, v in zip(params, values if sweep else [None]):
            points.append(run_point(p, backend=backend, repeat=repeat, seed=seed,
                                    objects=objects, value=v))
            if progress:
                progress(v)
    finally:
        objects.cleanup()
    return points



def point_shard(spec):
    """Run one sweep point as a campaign shard (:mod:`vmshm.campaign`); return ``{"point": Point}``.

    ``spec`` holds ``params`` (a :class:`~.model.TimingParams`), ``value``, ``backend``,
    ``repeat`` and ``seed``, as :func:`run_sweep` passes them to :func:`run_point`; the shard
    makes and removes its own object, so points can run on any machine.
    """
    return {"point": run_point(spec["params"], backend=spec["backend"], repeat=spec["repeat"],
                               seed=spec["seed"], value=spec["value"])}


def measure_host_latency(repeat=101, size=1 << 20):
    """Time ``shm_open`` + ``fstat`` (and ``close``) on this machine: the host model's OPEN.

    Creates a fresh object of ``size`` bytes, attaches to it ``repeat`` times as the host model's
    OPEN does (:meth:`~vmshm.host_model.ShmRegion.attach`), closes each, then unlinks it.

    Returns
    -------
    dict
        ``open_s`` and ``close_s``: the medians in seconds; ``repeat``.
    """
    from vmshm.host_model import ShmRegion

    if not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"--measure-host needs a positive number of repetitions, not {repeat!r}")
    name = f"/vmshm-hostlat-{os.getpid()}-{random.getrandbits(32):08x}"
    owner = ShmRegion.create(name, size)
    opens, closes = [], []
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            region = ShmRegion.attach(name)
            t1 = time.perf_counter()
            region.close()
            t2 = time.perf_counter()
            opens.append(t1 - t0)
            closes.append(t2 - t1)
    finally:
        owner.unlink()
        owner.close()
    return {"open_s": statistics.median(opens), "close_s": statistics.median(closes),
            "repeat": repeat}


async def measure_doorbells(bus):
    """Measure a doorbell and a ring each way on ``bus``'s device 0; return the cycle counts.

    Keys: ``doorbell_write`` (the DOORBELL write, offer to completion), ``doorbell_to_host``
    (its offer to the edge the host took the ``db`` beat), ``ring_to_intx`` and ``ring_to_msi``
    (``HostModel.ring`` at a drive point to the INTx rising edge, to the MSI message taken).
    The model's figures are :func:`~vmshm.timing.model.doorbell_write_cycles` and its siblings.
    """
    from vmshm.driver_model import vmshm_probe
    from vmshm.abi.regmap import REG

    drivers, _ = await vmshm_probe(bus)
    drv, host = drivers[0], bus.hosts[0]
    taken = []
    host.on_doorbell = lambda peer, vector: taken.append(bus.now())
    out = {}
    start = bus.now()
    await drv.regs.write32(REG["DOORBELL"].offset, 1 << 16 | 2)
    out["doorbell_write"] = bus.now() - start
    await bus.idle(4)
    out["doorbell_to_host"] = taken[0] - start
    await drv.regs.write32(REG["INTR_MASK"].offset, 1)
    start = bus.now()
    host.ring(0)
    await bus.idle(8)
    out["ring_to_intx"] = bus.interrupts[-1].cycle - start
    await drv.regs.write32(REG["INTR_STATUS"].offset, 1)
    await drv.enable_msi()
    start = bus.now()
    host.ring(0)
    await bus.idle(8)
    out["ring_to_msi"] = bus.interrupts[-1].cycle - start
    return out
