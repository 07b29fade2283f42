"""Run an async guest function on any backend: Amaranth's simulator, Verilator or Icarus.

The function is named ``"module:name"`` (``async def name(bus, **kwargs)``) so a backend that
simulates in another process can import it there. Every backend returns a
:class:`~vmshm.sim.harness.SimResult` whose ``hosts`` holds each host's final state as plain data
(``is_open``, ``last_error``, ``ops``), and raises the function's own exceptions unchanged.
"""

import importlib
from dataclasses import asdict

__all__ = ["BACKENDS", "run_function", "run_scenario", "backend_missing"]

BACKENDS = ("amaranth", "verilator", "icarus")


def backend_missing(backend):
    """Return ``None`` if ``backend`` can run here, else a one-line reason it cannot."""
    if backend == "amaranth":
        return None
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    from vmshm.testbench.runner import available
    return available(backend)


def run_function(fn, *, backend="amaranth", kwargs=None, devices=1, timing=None, waves=None,
                 **params):
    """Run ``await fn(bus, **kwargs)`` against ``devices`` simulated VMShm functions.

    Parameters
    ----------
    fn : str
        ``"module:name"`` of an ``async def name(bus, **kwargs)``.
    backend : str
        ``"amaranth"`` (embedded, the default), ``"verilator"`` or ``"icarus"``.
    timing : HostTiming or list of HostTiming, optional
        Each host's latencies and back-pressure.
    waves : path, optional
        Write a VCD waveform of the run.
    **params
        Build parameters of every :class:`~vmshm.rtl.VMShmPCI`.
    """
    kwargs = kwargs or {}
    reason = backend_missing(backend)
    if reason:
        raise RuntimeError(f"backend {backend} cannot run here: {reason}")
    if backend == "amaranth":
        from vmshm.host_model import HostModel, HostTiming
        from vmshm.sim.harness import per_device, simulate
        module, _, name = fn.partition(":")
        func = getattr(importlib.import_module(module), name)
        timings = per_device(timing, devices, HostTiming, "timing")
        hosts = [HostModel(t) for t in timings]
        try:
            result = simulate(lambda bus: func(bus, **kwargs), devices=devices, hosts=hosts,
                              timing=timings, vcd=waves, **params)
        except BaseException as exc:
            exc.hosts = [h.state() for h in hosts]
            raise
        finally:
            for h in hosts:
                if h.is_open:
                    h.close()
        result.hosts = [h.state() for h in hosts]
        return result
    from vmshm.testbench.runner import Job, job_timing, run
    job = Job(devices=devices, params=params, timing=job_timing(timing, devices), fn=fn,
              kwargs=kwargs)
    return run(job, backend, waves=waves)


def run_scenario(name, *, backend="amaranth", data_width=32, seed=1, timing=None, waves=None,
                 shm_name=None):
    """Run the registered scenario ``name`` on ``backend`` and return its result.

    The scenario's object is made fresh (and removed afterwards) unless ``shm_name`` names one
    the caller made. ``timing`` (a HostTiming) is the caller's, overridden by what the scenario
    needs. Raises what the scenario raises.
    """
    import os
    from uuid import uuid4

    from vmshm.host_model import ShmRegion
    from vmshm.scenarios import SCENARIOS

    reason = backend_missing(backend)
    if reason:
        raise RuntimeError(f"backend {backend} cannot run here: {reason}")
    scn = SCENARIOS[name]
    devices = getattr(scn, "devices", 1)
    region = None
    if shm_name is None:
        shm_name = f"/vmshm-{name[:20]}-{os.getpid()}-{uuid4().hex[:8]}"
        # Sparse: a scenario tests sizes (one is over 4 GiB), not the memory behind them.
        region = ShmRegion.create(shm_name, scn.shm_size, reserve=False)
    try:
        env = scn.env(shm_name, seed=seed, data_width=data_width)
        params = scn.core_args_for(data_width)
        if backend == "amaranth":
            from vmshm.sim.harness import simulate
            pairs = [scn.make_host(timing) for _ in range(devices)]
            hosts = [h for h, _ in pairs]
            try:
                result = simulate(lambda bus: scn.fn(bus, env), devices=devices, hosts=hosts,
                                  timing=[t for _, t in pairs], vcd=waves, **params)
            except BaseException as exc:
                exc.hosts = [h.state() for h in hosts]
                raise
            finally:
                states = [h.state() for h in hosts]
                for h in hosts:
                    if h.is_open:
                        h.close()
            result.hosts = states
            return result
        from vmshm.testbench.runner import Job, job_timing, run
        job = Job(devices=devices, params=params, timing=job_timing(timing, devices),
                  scenario=name, env=asdict(env))
        return run(job, backend, waves=waves)
    finally:
        if region is not None:
            region.unlink()
            region.close()
