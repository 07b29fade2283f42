"""Run a registered scenario on any backend: its object, its hosts, its job.

A backend never imports the suite: :func:`run_scenario` hands the registry
(:mod:`vmshm.backends`) a :class:`~vmshm.harness.job.Job` that names :func:`play` and
:func:`scenario_hosts` as ``"module:name"`` strings with the scenario's name, and the backend
(in this process, or in a cocotb simulator process) imports them from there. The hosts follow the
registry's one lifecycle. :func:`run_pcie_scenario` does the same through the PCIe root complex
on the UltraScale+ top, for the scenarios that hold there (:data:`PCIE_SCENARIOS`).
"""

from dataclasses import asdict

from vmshm.backends import get_backend, run_job
from vmshm.harness.job import Job
from vmshm.host_model import ShmRegion
from vmshm.host_model.scratch import remove_stale, scratch_name

from .registry import SCENARIOS, ScenarioEnv

__all__ = ["run_scenario", "run_pcie_scenario", "play", "scenario_hosts", "PCIE_SCENARIOS",
           "SKIPPED_SCENARIOS"]

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
    "doorbell_msi_enabled_while_pending": "reads the INTx line right after the MSI Enable "
                                          "write, as the soft function's pin follows it; on "
                                          "PCIe the Deassert_INTA message comes later",
    "names_cleared_by_flr": "starts an FLR through Device Control, which the model's "
                            "configuration space does not offer (test_function_level_reset "
                            "plays the IP's FLR and checks BAR2 is cleared)",
    "names_cleared_by_flr_small": "starts an FLR through Device Control, which the model's "
                                  "configuration space does not offer "
                                  "(test_function_level_reset plays the IP's FLR)",
    "doorbell_host_never_takes": "bounds each DOORBELL write to 16 cycles past the timeout, "
                                 "calibrated for a bus without latency; a PCIe write and its "
                                 "flush read take longer",
}


async def play(bus, name, env):
    """Run the scenario ``name`` on ``bus`` with ``env`` (a ScenarioEnv as a dict); the job's
    function."""
    return await SCENARIOS[name].fn(bus, ScenarioEnv(**env))


def scenario_hosts(timings, name):
    """Return ``(hosts, timings)`` the scenario ``name`` needs, one per timing: the job's hosts'
    factory (see :meth:`~vmshm.scenarios.Scenario.make_host`)."""
    pairs = [SCENARIOS[name].make_host(t) for t in timings]
    return [h for h, _ in pairs], [t for _, t in pairs]


def _job_args(name, env):
    """Return the job fields that run the scenario ``name`` with ``env``."""
    return dict(fn=f"{__name__}:play", kwargs={"name": name, "env": asdict(env)},
                hosts=f"{__name__}:scenario_hosts", host_kwargs={"name": name})


def _object(shm_name, scn):
    # A run killed before its `finally` (a timeout's SIGKILL) left its object: remove those.
    remove_stale()
    # Sparse: a scenario tests sizes (one is over 4 GiB), not the memory behind them.
    return ShmRegion.create(shm_name, scn.shm_size, reserve=False)


def run_scenario(name, *, backend="amaranth", data_width=32, seed=1, timing=None, waves=None,
                 shm_name=None):
    """Run the registered scenario ``name`` on ``backend`` and return its result.

    The scenario's object is made fresh (and removed afterwards) unless ``shm_name`` names one
    the caller made. ``timing`` (a HostTiming) is the caller's, overridden by what the scenario
    needs. Raises what the scenario raises.
    """
    reason = get_backend(backend).missing()
    if reason:
        raise RuntimeError(f"backend {backend} cannot run here: {reason}")
    scn = SCENARIOS[name]
    region = None
    if shm_name is None:
        shm_name = scratch_name(name[:20])
        region = _object(shm_name, scn)
    try:
        env = scn.env(shm_name, seed=seed, data_width=data_width)
        job = Job(devices=scn.devices, params=scn.core_args_for(data_width), timing=timing,
                  **_job_args(name, env))
        return run_job(job, backend, waves=waves)
    finally:
        if region is not None:
            region.unlink()
            region.close()


def run_pcie_scenario(name, sim, *, axis_width=64, seed=1, shm_name=None, waves=None,
                      **job_args):
    """Run the registered scenario ``name`` through the root complex and return its result.

    The scenario's object is made fresh (and removed afterwards) unless ``shm_name`` names one
    the caller made. ``waves`` names a VCD of the whole run (Icarus only). ``job_args`` are
    further :class:`~vmshm.testbench.pcie.PcieJob` fields (``pause``, ``mps``, ...).
    """
    from vmshm.testbench.pcie import PcieJob, check_pcie_backend, run_pcie

    check_pcie_backend(sim, waves)
    scn = SCENARIOS[name]
    if scn.devices != 1:
        raise ValueError(f"scenario {name!r} needs {scn.devices} devices; a root port has one")
    region = None
    if shm_name is None:
        shm_name = scratch_name(f"pcie-{name[:20]}")
        region = _object(shm_name, scn)
    try:
        env = scn.env(shm_name, seed=seed, data_width=32)
        # The scenario's BAR layout, not this top's default (a 64-bit window).
        params = {**scn.core_args_for(32), "axis_width": axis_width,
                  "window_64bit": env.window_64bit}
        job = PcieJob(params=params, seed=seed, **_job_args(name, env), **job_args)
        return run_pcie(job, sim, waves=waves)
    finally:
        if region is not None:
            region.unlink()
            region.close()
