"""Run the UltraScale+ top against cocotbext-pcie's root complex: jobs, builds and results.

:func:`run_pcie` is the PCIe counterpart of :func:`vmshm.testbench.runner.run`: it builds
``vmshm_usp`` once per configuration and simulator (:func:`build_usp`, cached like every cocotb
build), runs a :class:`PcieJob` in the simulator process (:mod:`.pcie_tb`), and returns a
:class:`~vmshm.sim.harness.SimResult` with what the root complex found at enumeration
(``result.enumerated``) and the run's counters (``result.stats``).

This module is imported by pytest and never by the simulator's own Python: nothing here needs
cocotb.
"""

import importlib
import inspect
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from vmshm.host_model import HostModel, HostTiming
from .outcome import CocotbError, load, to_result
from .runner import _runner, available, build_source

__all__ = ["TOPLEVEL", "DEFAULT_HOST_ADDR", "PCIE_BACKENDS", "PcieJob", "build_usp", "run_pcie",
           "run_pcie_function", "run_pcie_scenario", "PCIE_SCENARIOS", "SKIPPED_SCENARIOS"]

#: Simulators the UltraScale+ top runs on: cocotbext-pcie's root complex needs cocotb.
PCIE_BACKENDS = ("icarus", "verilator")

TOPLEVEL = "vmshm_usp"
#: Bus address where the host object is placed: above 4 GiB, so the device's requests need
#: 64-bit addresses.
DEFAULT_HOST_ADDR = 0x40_0000_0000

#: The scenario suite's scenarios that hold on a hard IP that owns the configuration space.
PCIE_SCENARIOS = (
    "seed_example", "seed_example_64bit_window", "regs_constants", "regs_status_and_sizes",
    "regs_object_over_4gib", "regs_unknown_offsets",
    "regs_unknown_offsets_4k", "regs_reads_do_not_trigger", "regs_rejects",
    "pci_capability_discovery", "names_rejected", "names_buffer_limits",
    "names_buffer_limits_small", "driver_file_semantics", "driver_release_with_live_mapping",
    "window_random_integrity", "window_short_object", "window_closed",
    "doorbell_guest_rings", "doorbell_msi", "doorbell_wait_interrupt", "doorbell_ivposition",
)
#: The others, and why they do not apply here.
SKIPPED_SCENARIOS = {
    "pci_enables": "expects UR status for a posted write, which PCIe never returns",
    "pci_config_header": "checks the soft front end's configuration header; the IP owns it",
    "pci_config_header_64bit_window": "checks the soft front end's configuration header; the IP "
                                      "owns it",
    "pci_bar_sizing": "checks the soft front end's BAR registers; the IP owns them",
    "pci_bar_sizing_small": "checks the soft front end's BAR registers; the IP owns them",
    "pci_bar_sizing_4k_regs": "checks the soft front end's BAR registers; the IP owns them",
    "pci_bar_sizing_64bit_window": "checks the soft front end's BAR registers; the IP owns them",
    "pci_decode_enables": "expects UR status for posted writes, which PCIe never returns",
    "pci_decode_outside_bars": "expects UR status for posted writes, which PCIe never returns",
    "pci_decode_outside_bars_64bit_window": "expects UR status for posted writes, which PCIe "
                                            "never returns",
    "pci_two_devices": "one endpoint per root port here",
    "bad_requests": "expects UR status for posted writes, which PCIe never returns",
    "host_timeout_dma": "the root complex serves DMA, not the host model's timing",
    "host_timeout_open": "bounds the ioctl to the timeout + 64 cycles, calibrated for a bus "
                         "without latency; PCIe round trips and the write flush take longer",
    "regs_object_bigger_than_window": "its burst across the window's end crosses a 4 KiB "
                                      "boundary, which PCIe splits into two valid requests",
    "doorbell_host_rings_intx": "reads the INTx line right after a Command register write, as "
                                "the soft function's pin follows it; on PCIe the Deassert_INTA "
                                "message comes after the write's completion (test_pcie.py's "
                                "INTx checks wait for it)",
    "doorbell_reset": "turns MSI off at the soft function's MSI capability offset (0xa0; the "
                      "IP has its own) and starts an FLR the model does not carry out "
                      "(test_function_level_reset plays the IP's FLR)",
    "doorbell_host_never_takes": "bounds each DOORBELL write to 16 cycles past the timeout, "
                                 "calibrated for a bus without latency; a PCIe write and its "
                                 "flush read take longer",
}


@dataclass
class PcieJob:
    """What one run against the root complex does: plain data, pickled into the simulator.

    Either ``scenario`` names a registered scenario (run with ``env``), or ``fn`` names an
    ``async def fn(bus, **kwargs)`` as ``"module:name"``; a function that also takes ``tb``
    gets the :class:`~vmshm.testbench.pcie_tb.PcieTB` (the root complex, the model).

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
    rules : str
        ``"fail"``: a breach of PG213's rules (:mod:`.pcie_rules`) fails the run; ``"record"``:
        breaches are only listed in ``result.stats["pg213_violations"]``.
    """
    params: dict = field(default_factory=dict)
    scenario: str = None
    env: dict = None
    fn: str = None
    kwargs: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    pause: dict = field(default_factory=dict)
    seed: int = 1
    host_addr: int = DEFAULT_HOST_ADDR
    host_window: int = 1 << 33
    mps: int = 128
    mrrs: int = None
    extra_bars: dict = field(default_factory=dict)
    timeout_ns: int = 2_000_000
    rules: str = "fail"
    result_path: str = None

    def make_hosts(self):
        """Return ``([host], [timing])`` for the run."""
        timing = HostTiming(**self.timing)
        if self.scenario is not None:
            from vmshm.scenarios import SCENARIOS
            host, timing = SCENARIOS[self.scenario].make_host(timing)
            return [host], [timing]
        return [HostModel(timing)], [timing]

    async def call(self, bus, tb):
        """Run the job's function on ``bus`` and return its value."""
        if self.scenario is not None:
            from vmshm.scenarios import SCENARIOS, ScenarioEnv
            return await SCENARIOS[self.scenario].fn(bus, ScenarioEnv(**self.env))
        module, _, name = self.fn.partition(":")
        fn = getattr(importlib.import_module(module), name)
        if "tb" in inspect.signature(fn).parameters:
            return await fn(bus, tb=tb, **self.kwargs)
        return await fn(bus, **self.kwargs)


def build_usp(sim, **params):
    """Generate ``vmshm_usp`` with ``params`` and compile it for ``sim``; return the directory.

    Each configuration is generated and compiled once per run and cached on disk by its hash.
    """
    from vmshm.rtl.tops import generate
    return build_source(sim, generate("usp", **params), TOPLEVEL)


def run_pcie(job, sim, *, waves=None):
    """Run ``job`` on ``sim`` and return a :class:`~vmshm.sim.harness.SimResult`.

    The job's own failure is raised again here, with ``hosts`` and ``sim_traceback`` attached.
    ``waves`` names a VCD file (Icarus only). With ``VMSHM_PCIE_LOG`` set to a path, the
    simulator's log (every TLP the model saw) is copied there.
    """
    reason = available(sim)
    if reason:
        raise CocotbError(reason)
    from vmshm.rtl.tops import generate
    build_dir = build_source(sim, generate("usp", **job.params), TOPLEVEL,
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


def _check_backend(sim, waves):
    if sim not in PCIE_BACKENDS:
        raise ValueError(f"the UltraScale+ top runs on {' or '.join(PCIE_BACKENDS)} "
                         f"(cocotbext-pcie's root complex runs under cocotb), not {sim}")
    if waves and sim != "icarus":
        raise ValueError("a waveform of the UltraScale+ top needs icarus")


def run_pcie_function(fn, sim, *, kwargs=None, timing=None, waves=None, **params):
    """Run ``fn`` (``"module:name"``, an ``async def fn(bus, **kwargs)``) through the root
    complex on the UltraScale+ top built with ``params``; return its result.

    ``timing`` is the host's :class:`~vmshm.host_model.HostTiming`; ``waves`` names a VCD of
    the whole run (Icarus only).
    """
    from dataclasses import asdict
    _check_backend(sim, waves)
    job = PcieJob(params=params, fn=fn, kwargs=dict(kwargs or {}),
                  timing=asdict(timing) if timing is not None else {})
    return run_pcie(job, sim, waves=waves)


def run_pcie_scenario(name, sim, *, axis_width=64, seed=1, shm_name=None, waves=None,
                      **job_args):
    """Run the registered scenario ``name`` through the root complex and return its result.

    The scenario's object is made fresh (and removed afterwards) unless ``shm_name`` names one
    the caller made. ``waves`` names a VCD of the whole run (Icarus only). ``job_args`` are
    further :class:`PcieJob` fields (``pause``, ``mps``, ...).
    """
    from dataclasses import asdict
    from uuid import uuid4

    from vmshm.host_model import ShmRegion
    from vmshm.scenarios import SCENARIOS

    _check_backend(sim, waves)
    scn = SCENARIOS[name]
    if scn.devices != 1:
        raise ValueError(f"scenario {name!r} needs {scn.devices} devices; a root port has one")
    region = None
    if shm_name is None:
        shm_name = f"/vmshm-pcie-{name[:20]}-{os.getpid()}-{uuid4().hex[:8]}"
        # Sparse: a scenario tests sizes (one is over 4 GiB), not the memory behind them.
        region = ShmRegion.create(shm_name, scn.shm_size, reserve=False)
    try:
        env = scn.env(shm_name, seed=seed, data_width=32)
        # The scenario's BAR layout, not this top's default (a 64-bit window).
        params = {**scn.core_args_for(32), "axis_width": axis_width,
                  "window_64bit": env.window_64bit}
        job = PcieJob(params=params, scenario=name, env=asdict(env), seed=seed, **job_args)
        return run_pcie(job, sim, waves=waves)
    finally:
        if region is not None:
            region.unlink()
            region.close()
