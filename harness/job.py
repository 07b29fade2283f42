"""What one run does, as plain data, and the one host lifecycle every backend follows.

A :class:`Job` names its guest function and its hosts' factory as ``"module:name"`` strings, so
a backend that simulates in another process (cocotb) imports them there, and no backend imports
what it runs (the scenario suite, the fuzzer, the demo sit above the backends). Every backend
then follows one lifecycle: make the hosts (:meth:`Job.make_hosts`), run the function, record
each host's final state and close what is still open, also when the run raised
(:func:`release_hosts`; :func:`run_here` for the backends that simulate in this process).
"""

import importlib
import inspect
from dataclasses import dataclass, field

from vmshm.host_model import HostModel, HostTiming

from .top import per_device

__all__ = ["Job", "resolve", "make_hosts", "call", "release_hosts", "run_here"]


def resolve(spec):
    """Return the object ``spec`` (``"module:name"``) names, importing its module."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"a function is named as 'module:name', not {spec!r}")
    return getattr(importlib.import_module(module), name)


def make_hosts(factory, factory_kwargs, timings):
    """Return ``(hosts, timings)``, one each per entry of ``timings`` (HostTiming objects).

    ``factory`` names (``"module:name"``) a ``make(timings, **factory_kwargs)`` that returns
    them, and may hand back other timing objects than it was given (a scenario's requirements
    override the caller's; a host that changes its latencies during the run shares its timing
    with its BFM). ``None`` makes a plain :class:`~vmshm.host_model.HostModel` per timing.
    """
    if factory is None:
        return [HostModel(t) for t in timings], list(timings)
    hosts, timings = resolve(factory)(list(timings), **factory_kwargs)
    return list(hosts), list(timings)


async def call(fn, bus, kwargs, **context):
    """Run ``await fn(bus, **kwargs)`` (``fn`` a ``"module:name"``) and return its value.

    ``context`` holds what a backend offers beyond the bus (the PCIe testbench offers ``tb``):
    each item goes to a function that has a parameter of that name.
    """
    func = resolve(fn)
    params = inspect.signature(func).parameters
    extra = {k: v for k, v in context.items() if k in params}
    return await func(bus, **extra, **kwargs)


@dataclass
class Job:
    """What one simulator run does: plain data, pickled into a simulator process if need be.

    Attributes
    ----------
    devices : int
        VMShm functions on the bus.
    params : dict
        Build parameters of every function.
    timing : list of HostTiming
        One per device.
    fn : str
        ``"module:name"`` of an ``async def fn(bus, **kwargs)``.
    kwargs : dict
        Its keyword arguments.
    hosts : str or None
        ``"module:name"`` of the hosts' factory (see :func:`make_hosts`); ``None`` for plain
        host models.
    host_kwargs : dict
        The factory's keyword arguments.
    result_path : str or None
        Where a simulator process pickles the outcome.
    """
    devices: int = 1
    params: dict = field(default_factory=dict)
    timing: list = field(default_factory=list)
    fn: str = None
    kwargs: dict = field(default_factory=dict)
    hosts: str = None
    host_kwargs: dict = field(default_factory=dict)
    result_path: str = None

    def __post_init__(self):
        self.timing = per_device(self.timing or None, self.devices, HostTiming, "timing")

    def make_hosts(self):
        """Return ``(hosts, timings)``, one each per device."""
        return make_hosts(self.hosts, self.host_kwargs, self.timing)

    async def call(self, bus, **context):
        """Run the job's function on ``bus`` and return its value."""
        return await call(self.fn, bus, self.kwargs, **context)


def release_hosts(hosts):
    """Return each host's final state (``HostModel.state()``) and close what is still open.

    The state is taken before closing, so it says whether the run left an object open.
    """
    states = [h.state() for h in hosts]
    for h in hosts:
        if h.is_open:
            h.close()
    return states


def run_here(job, simulate, *, waves=None):
    """Run ``job`` in this process with a backend's ``simulate``; return its SimResult.

    ``simulate`` takes :func:`vmshm.sim.simulate`'s arguments. The result (or the exception
    the function raised) carries each host's final state as ``hosts``.
    """
    hosts, timings = job.make_hosts()
    try:
        result = simulate(job.call, devices=job.devices, hosts=hosts, timing=timings, vcd=waves,
                          **job.params)
    except BaseException as exc:
        exc.hosts = release_hosts(hosts)
        raise
    result.hosts = release_hosts(hosts)
    return result
