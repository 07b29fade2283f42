"""Run the UltraScale+ top against cocotbext-pcie's root complex: jobs, builds and results.

:func:`run_pcie` is the PCIe counterpart of :func:`vmshm.testbench.runner.run`: it builds
``vmshm_usp`` once per configuration and simulator (:func:`build_usp`, cached like every cocotb
build), runs a :class:`PcieJob` in the simulator process (:mod:`.pcie_tb`), and returns a
:class:`~vmshm.harness.top.SimResult` with what the root complex found at enumeration
(``result.enumerated``) and the run's counters (``result.stats``).

This module is imported by pytest and never by the simulator's own Python: nothing here needs
cocotb.
"""

import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from vmshm.harness.job import call, make_hosts
from vmshm.host_model import HostTiming

from .outcome import CocotbError, load, to_result
from .runner import _runner, available, build_source

__all__ = ["TOPLEVEL", "DEFAULT_HOST_ADDR", "PCIE_BACKENDS", "PcieJob", "build_usp", "run_pcie",
           "run_pcie_function", "check_pcie_backend"]

#: Simulators the UltraScale+ top runs on: cocotbext-pcie's root complex needs cocotb.
PCIE_BACKENDS = ("icarus", "verilator")

TOPLEVEL = "vmshm_usp"
#: Bus address where the host object is placed: above 4 GiB, so the device's requests need
#: 64-bit addresses.
DEFAULT_HOST_ADDR = 0x40_0000_0000

@dataclass
class PcieJob:
    """What one run against the root complex does: plain data, pickled into the simulator.

    ``fn`` names an ``async def fn(bus, **kwargs)`` as ``"module:name"``; a function that also
    takes ``tb`` gets the :class:`~vmshm.testbench.pcie_tb.PcieTB` (the root complex, the model).
    ``hosts`` names the host's factory as :class:`~vmshm.harness.job.Job` does.

    Attributes
    ----------
    params : dict
        :class:`~vmshm.rtl.VMShmUSP` keyword arguments.
    timing : dict
        :class:`~vmshm.host_model.HostTiming` fields of the host's control channel.
    pause : dict
        Probability, per hard-IP interface (``"cq"``, ``"cc"``, ``"rq"``, ``"rc"``), that the
        model pauses it in a cycle: random ``tvalid`` gaps on CQ and RC, ``tready`` low on CC
        and RQ (cocotbext's pause generators).
    seed : int
        Seed of the pause draws.
    host_addr : int
        Bus address of the host object's first byte; the OPEN answer carries it.
    host_window : int
        Bytes of bus address space the host object is given.
    mps : int
        Max_Payload_Size the root complex sets (bytes; the model supports it).
    mrrs : int or None
        Max_Read_Request_Size to set after enumeration (bytes); ``None`` keeps the default, 512.
    extra_bars : dict
        BAR index -> size of BARs the hard IP is given beyond the top's: no such BAR is known to
        the shim, so every request to one must be refused.
    timeout_ns : int
        How long a request may wait for its completion.
    rc_latency : int
        Cycles the root complex takes to answer each of the device's memory reads: past the
        core's ``host_timeout``, a window read gives up while its completions are still owed.
    rules : str
        ``"fail"``: a breach of PG213's rules (:mod:`.pcie_rules`) fails the run; ``"record"``:
        breaches are only listed in ``result.stats["pg213_violations"]``.
    """
    params: dict = field(default_factory=dict)
    fn: str = None
    kwargs: dict = field(default_factory=dict)
    hosts: str = None
    host_kwargs: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    pause: dict = field(default_factory=dict)
    seed: int = 1
    host_addr: int = DEFAULT_HOST_ADDR
    host_window: int = 1 << 33
    mps: int = 128
    mrrs: int = None
    extra_bars: dict = field(default_factory=dict)
    timeout_ns: int = 2_000_000
    rc_latency: int = 0
    rules: str = "fail"
    result_path: str = None

    def make_hosts(self):
        """Return ``([host], [timing])`` for the run (see :func:`vmshm.harness.job.make_hosts`)."""
        return make_hosts(self.hosts, self.host_kwargs, [HostTiming(**self.timing)])

    async def call(self, bus, tb):
        """Run the job's function on ``bus`` (and ``tb``, if it takes one); return its value."""
        return await call(self.fn, bus, self.kwargs, tb=tb)


def build_usp(sim, **params):
    """Generate ``vmshm_usp`` with ``params`` and compile it for ``sim``; return the directory.

    Each configuration is generated and compiled once per run and cached on disk by its hash.
    """
    return build_source(sim, _usp_text(params), TOPLEVEL)


def _usp_text(params):
    """The Verilog of ``vmshm_usp`` with ``params``, generated once per process."""
    from vmshm.harness.build import design_text
    from vmshm.rtl.tops import generate
    return design_text(("usp", tuple(sorted(params.items()))), lambda: generate("usp", **params))


def run_pcie(job, sim, *, waves=None):
    """Run ``job`` on ``sim`` and return a :class:`~vmshm.harness.top.SimResult`.

    The job's own failure is raised again here, with ``hosts`` and ``sim_traceback`` attached.
    ``waves`` names a VCD file (Icarus only). With ``VMSHM_PCIE_LOG`` set to a path, the
    simulator's log (every TLP the model saw) is copied there.
    """
    reason = available(sim)
    if reason:
        raise CocotbError(reason)
    build_dir = build_source(sim, _usp_text(job.params), TOPLEVEL,
                             waves=waves is not None and sim == "icarus")
    with tempfile.TemporaryDirectory(prefix="vmshm-pcie-") as tmp:
        tmp = Path(tmp)
        job.result_path = str(tmp / "result.pickle")
        job_path = tmp / "job.pickle"
        job_path.write_bytes(pickle.dumps(job))
        log = tmp / "sim.log"
        plusargs = [f"+vmshm_dump={waves}"] if waves and sim == "icarus" else []
        _runner(sim).test(plusargs=plusargs, test_module="vmshm.testbench.pcie_tb",
                          hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                          build_dir=build_dir, test_dir=tmp,
                          results_xml=str(tmp / "results.xml"),
                          extra_env={"VMSHM_JOB": str(job_path)}, timescale=("1ns", "1ps"),
                          log_file=log)
        keep = os.environ.get("VMSHM_PCIE_LOG")
        if keep and log.exists():
            shutil.copyfile(log, keep)      # the model's TLP log, for a person debugging a run
        outcome = load(job.result_path, sim, log)
    return to_result(outcome, enumerated="enumerated", stats="stats")


def check_pcie_backend(sim, waves=None):
    """Raise ``ValueError`` unless ``sim`` runs the UltraScale+ top (and its ``waves``)."""
    if sim not in PCIE_BACKENDS:
        raise ValueError(f"the UltraScale+ top runs on {' or '.join(PCIE_BACKENDS)} "
                         f"(cocotbext-pcie's root complex runs under cocotb), not {sim}")
    if waves and sim != "icarus":
        raise ValueError("a waveform of the UltraScale+ top needs icarus")


def run_pcie_function(fn, sim, *, kwargs=None, timing=None, waves=None, rc_latency=0,
                      **params):
    """Run ``fn`` (``"module:name"``, an ``async def fn(bus, **kwargs)``) through the root
    complex on the UltraScale+ top built with ``params``; return its result.

    ``timing`` is the host's :class:`~vmshm.host_model.HostTiming`; ``waves`` names a VCD of
    the whole run (Icarus only); ``rc_latency`` delays the root complex's completions
    (:class:`PcieJob`).
    """
    from dataclasses import asdict
    check_pcie_backend(sim, waves)
    job = PcieJob(params=params, fn=fn, kwargs=dict(kwargs or {}),
                  timing=asdict(timing) if timing is not None else {},
                  rc_latency=rc_latency)
    return run_pcie(job, sim, waves=waves)
