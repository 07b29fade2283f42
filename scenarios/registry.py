"""Register scenarios: the environment a run gets, the requirements a scenario states, a late host.

See :mod:`vmshm.scenarios` for what a scenario is; :func:`scenario` puts one into
:data:`SCENARIOS`.
"""

import os
from dataclasses import asdict, dataclass, field

from vmshm.host_model import HostModel, HostTiming
from vmshm.abi.regmap import BAR0_SIZE, DEFAULT_NAME_SIZE, DEFAULT_WINDOW_SIZE

__all__ = ["ScenarioEnv", "Scenario", "SCENARIOS", "scenario", "LateHost", "CORE_ARGS",
           "MAX_DEVICES"]

#: Build parameters of the device a scenario may require; ``data_width`` is the backend's choice.
CORE_ARGS = ("window_size", "name_size", "host_timeout", "regs_size", "window_64bit")
#: Most VMShm functions one bus holds: one per slot.
MAX_DEVICES = 32


@dataclass
class ScenarioEnv:
    """Describe what one run of a scenario works with; plain data, so it can be pickled.

    Attributes
    ----------
    shm_name : str
        Name of the host object the caller created for the run, such as ``/vmshm-scn-1-ab``.
    shm_size : int
        Its size in bytes.
    seed : int
        Seed for the scenario's pseudo-random choices.
    data_width : int
        Width of the device's data path in bits.
    window_size : int
        Size of BAR1 the device was built with.
    name_size : int
        Size of the name buffer (BAR2) the device was built with.
    regs_size : int
        Size of the register BAR (BAR0) the device was built with.
    window_64bit : bool
        Whether the window is a 64-bit BAR.
    devices : int
        How many VMShm functions sit on the bus, in slots 0 to ``devices - 1``.
    pid : int
        The guest program's process ID, as the seed example writes it: the caller's, so a run
        in a simulator process writes the same bytes (and takes the same cycles) as one here.
    """
    shm_name: str
    shm_size: int
    seed: int
    data_width: int
    window_size: int = DEFAULT_WINDOW_SIZE
    name_size: int = DEFAULT_NAME_SIZE
    regs_size: int = BAR0_SIZE
    window_64bit: bool = False
    devices: int = 1
    pid: int = None


@dataclass(frozen=True)
class Scenario:
    """A registered scenario and what it needs from the backend that runs it.

    Attributes
    ----------
    name : str
        Key in :data:`SCENARIOS`.
    fn : async callable
        ``await fn(bus, env)``.
    shm_size : int
        Size of the object the caller must create for it.
    core_args : dict
        Build parameters the device needs (a subset of :data:`CORE_ARGS`).
    timing : dict or None
        :class:`~vmshm.host_model.HostTiming` fields the scenario needs; they override the
        caller's timing. ``None``: any timing gives the same results.
    host_args : dict or None
        Keyword arguments of :class:`LateHost` if the scenario needs a host that answers its
        first requests late; ``None`` for a plain :class:`~vmshm.host_model.HostModel`.
    doc : str
        First line of the function's docstring.
    devices : int
        How many VMShm functions the backend must put on the bus (slots 0, 1, ...), all built
        with :attr:`core_args`; each gets its own host from :meth:`make_host`.
    """
    name: str
    fn: object
    shm_size: int
    core_args: dict = field(default_factory=dict)
    timing: dict = None
    host_args: dict = None
    doc: str = ""
    devices: int = 1

    def core_args_for(self, data_width):
        """Return the device's build parameters for a run at ``data_width`` bits."""
        return {**self.core_args, "data_width": data_width}

    def env(self, shm_name, *, seed, data_width):
        """Return the :class:`ScenarioEnv` of a run on the object ``shm_name``."""
        return ScenarioEnv(shm_name=shm_name, shm_size=self.shm_size, seed=seed,
                           data_width=data_width,
                           window_size=self.core_args.get("window_size", DEFAULT_WINDOW_SIZE),
                           name_size=self.core_args.get("name_size", DEFAULT_NAME_SIZE),
                           regs_size=self.core_args.get("regs_size", BAR0_SIZE),
                           window_64bit=bool(self.core_args.get("window_64bit", False)),
                           devices=self.devices, pid=os.getpid())

    def make_host(self, timing=None):
        """Return a fresh ``(host, timing)`` pair for one device of one run.

        ``timing`` is the caller's choice (a :class:`~vmshm.host_model.HostTiming`, by default
        none), overridden by what the scenario needs. The backend must hand the returned timing
        object itself to its host BFM: a :class:`LateHost` changes its latencies during the run.
        Call it once per device (:attr:`devices`): no two devices share a host or a timing.
        """
        fields = asdict(timing) if timing is not None else {}
        timing = HostTiming(**{**fields, **(self.timing or {})})
        if self.host_args is not None:
            return LateHost(timing, **self.host_args), timing
        return HostModel(timing), timing


#: Every registered scenario, by name, in registration order.
SCENARIOS = {}


def scenario(*, shm_size, name=None, timing=None, host_args=None, devices=1, **core_args):
    """Register ``async def fn(bus, env)`` in :data:`SCENARIOS`; use as a decorator.

    Parameters
    ----------
    shm_size : int
        Size of the object the caller must create.
    name : str, optional
        Key to register under; the function's name by default. Stacking the decorator with
        different names registers one function under several requirements.
    timing : dict, optional
        :class:`~vmshm.host_model.HostTiming` fields the scenario needs.
    host_args : dict, optional
        :class:`LateHost` arguments the scenario needs.
    devices : int, optional
        How many VMShm functions the bus must hold (1 by default, at most :data:`MAX_DEVICES`).
    **core_args
        Build parameters of the device the scenario needs (see :data:`CORE_ARGS`).
    """
    if not isinstance(shm_size, int) or shm_size <= 0:
        raise ValueError(f"shm_size must be a positive integer, not {shm_size!r}")
    unknown = set(core_args) - set(CORE_ARGS)
    if unknown:
        raise TypeError(f"unknown core arguments {sorted(unknown)}; a scenario may require "
                        f"{', '.join(CORE_ARGS)} (the backend chooses data_width)")
    if timing is not None:
        HostTiming(**timing)    # refuse a bad requirement now, not in the middle of a run
    if isinstance(devices, bool) or not isinstance(devices, int) or \
            not 1 <= devices <= MAX_DEVICES:
        raise ValueError(f"devices must be an integer from 1 to {MAX_DEVICES}, not {devices!r}")

    def register(fn):
        key = name or fn.__name__
        if key in SCENARIOS:
            raise ValueError(f"scenario {key!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        SCENARIOS[key] = Scenario(key, fn, shm_size, dict(core_args), timing, host_args,
                                  doc[0] if doc else "", devices)
        return fn
    return register


class LateHost(HostModel):
    """Act as a host that answers its first requests late and every later one at once.

    The first ``late_ctl`` control requests (OPEN, CLOSE) and the first ``late_dma`` DMA requests
    are answered after the timing's latencies; then the latency of that channel drops to 0. It
    does so by changing ``timing``, so the host BFM must read the latencies from the same object,
    after calling the model for each request (as :class:`vmshm.sim.HostBFM` does).

    Parameters
    ----------
    timing : HostTiming
        The timing shared with the host BFM; changed during the run.
    late_ctl : int
        How many control requests to answer late.
    late_dma : int
        How many DMA requests to answer late.

    Attributes
    ----------
    ops : list of str
        ``"OPEN"``, ``"CLOSE"``, ``"READ"``, ``"WRITE"``: what the device asked, in order.
    """

    def __init__(self, timing, *, late_ctl=0, late_dma=0, **kwargs):
        super().__init__(timing, **kwargs)
        self.late_ctl = late_ctl
        self.late_dma = late_dma
        self.ops = []

    def _count(self, op, channel):
        self.ops.append(op)
        ctl = sum(o in ("OPEN", "CLOSE") for o in self.ops)
        dma = len(self.ops) - ctl
        if channel == "ctl" and ctl > self.late_ctl:
            self.timing.ctl_latency = 0
        if channel == "dma" and dma > self.late_dma:
            self.timing.dma_latency = 0

    def open(self, name):
        self._count("OPEN", "ctl")
        return super().open(name)

    def close(self):
        self._count("CLOSE", "ctl")
        return super().close()

    def dma_read(self, offset, n):
        self._count("READ", "dma")
        return super().dma_read(offset, n)

    def dma_write(self, offset, data, mask=None):
        self._count("WRITE", "dma")
        return super().dma_write(offset, data, mask)
