"""The simulation backends, in one registry: what each is, whether it runs here, how to run on it.

:data:`BACKENDS` holds one :class:`Backend` per way of simulating the device: Amaranth's own
simulator (``amaranth``, embedded, the default), the generated Verilog under cocotb on
``verilator`` and ``icarus``, and ``native`` (that Verilog compiled by Verilator and driven by a
C++ loop in this process). Every ``--backend`` choice list and every "must run in this process"
test reads it; a new backend is one entry here and its own folder.

Every backend runs a :class:`~vmshm.harness.job.Job` (a guest function and its hosts' factory,
named ``"module:name"``) through the one host lifecycle of :mod:`vmshm.harness.job`, and returns
a :class:`~vmshm.harness.top.SimResult` whose ``hosts`` holds each host's final state as plain
data (``is_open``, ``last_error``, ``ops``, ...); the function's own exceptions are raised
unchanged, with that state attached as ``hosts``. :func:`run_function` is the short way to run a
function on any backend.
"""

from dataclasses import dataclass
from typing import Callable

from vmshm.harness.job import Job, run_here

__all__ = ["Backend", "BACKENDS", "get_backend", "backend_names", "run_job", "run_function"]


@dataclass(frozen=True)
class Backend:
    """One way of simulating the device.

    Attributes
    ----------
    name : str
        Its key in :data:`BACKENDS` and its ``--backend`` spelling.
    in_process : bool
        Whether it simulates in this process. Only such a backend can serve a caller that holds
        something a simulator process cannot take (QEMU's socket, a host program's doorbells),
        through :attr:`simulate`.
    pcie : bool
        Whether it also runs the UltraScale+ top behind cocotbext-pcie's root complex.
    summary : str
        One line for ``--help`` and the docs.
    """
    name: str
    in_process: bool
    pcie: bool
    summary: str
    _missing: Callable = None
    _run: Callable = None
    _simulate: Callable = None

    def missing(self):
        """Return ``None`` if this backend can run here, else a one-line reason it cannot."""
        return self._missing()

    @property
    def simulate(self):
        """The in-process ``simulate`` function (:func:`vmshm.sim.simulate`'s arguments)."""
        if not self.in_process:
            raise ValueError(f"the {self.name} backend simulates in another process: it has no "
                             f"simulate() to call here")
        return self._simulate()

    def run(self, job, *, waves=None):
        """Run ``job`` (a :class:`~vmshm.harness.job.Job`) and return its SimResult."""
        if self.in_process:
            return run_here(job, self.simulate, waves=waves)
        return self._run(job, waves=waves)


# The backends are imported when first used: the CLI lists them without loading any simulator.

def _amaranth_simulate():
    from vmshm.sim import simulate
    return simulate


def _native_simulate():
    from vmshm.native.engine import simulate
    return simulate


def _native_missing():
    from vmshm.native.build import available
    return available()


def _cocotb(sim):
    def missing():
        from vmshm.testbench.runner import available
        return available(sim)

    def run(job, *, waves=None):
        from vmshm.testbench.runner import run as run_cocotb
        return run_cocotb(job, sim, waves=waves)
    return missing, run


#: Every backend, by name, in the order ``--help`` and ``vmshm bench`` list them.
BACKENDS = {b.name: b for b in (
    Backend("amaranth", in_process=True, pcie=False,
            summary="Amaranth's own simulator: embedded, nothing to install",
            _missing=lambda: None, _simulate=_amaranth_simulate),
    Backend("verilator", in_process=False, pcie=True,
            summary="the generated Verilog under cocotb on Verilator",
            _missing=_cocotb("verilator")[0], _run=_cocotb("verilator")[1]),
    Backend("icarus", in_process=False, pcie=True,
            summary="the generated Verilog under cocotb on Icarus Verilog",
            _missing=_cocotb("icarus")[0], _run=_cocotb("icarus")[1]),
    Backend("native", in_process=True, pcie=False,
            summary="the generated Verilog compiled by Verilator, driven by a C++ loop here",
            _missing=_native_missing, _simulate=_native_simulate),
)}


def get_backend(name):
    """Return the :class:`Backend` called ``name``; ``ValueError`` naming the choices if none."""
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {name!r}") from None


def backend_names(*, in_process=None, pcie=None):
    """Return the backends' names, in registry order; ``in_process``/``pcie`` filter them."""
    return tuple(b.name for b in BACKENDS.values()
                 if in_process in (None, b.in_process) and pcie in (None, b.pcie))


def run_job(job, backend="amaranth", *, waves=None):
    """Run ``job`` on ``backend`` and return its SimResult; ``RuntimeError`` if it cannot run.

    ``waves`` names a VCD file of the whole run.
    """
    b = get_backend(backend)
    reason = b.missing()
    if reason:
        raise RuntimeError(f"backend {backend} cannot run here: {reason}")
    return b.run(job, waves=waves)


def run_function(fn, *, backend="amaranth", kwargs=None, devices=1, timing=None, waves=None,
                 hosts=None, host_kwargs=None, **params):
    """Run ``await fn(bus, **kwargs)`` against ``devices`` simulated VMShm functions.

    Parameters
    ----------
    fn : str
        ``"module:name"`` of an ``async def name(bus, **kwargs)``.
    backend : str
        A key of :data:`BACKENDS`; ``"amaranth"`` by default.
    timing : HostTiming or list of HostTiming, optional
        Each host's latencies and back-pressure.
    waves : path, optional
        Write a VCD waveform of the run.
    hosts : str, optional
        ``"module:name"`` of the hosts' factory (:func:`vmshm.harness.job.make_hosts`), called
        with ``host_kwargs``; plain host models by default.
    **params
        Build parameters of every :class:`~vmshm.rtl.VMShmPCI`.
    """
    job = Job(devices=devices, params=params, timing=timing, fn=fn, kwargs=dict(kwargs or {}),
              hosts=hosts, host_kwargs=dict(host_kwargs or {}))
    return run_job(job, backend, waves=waves)
