"""The scenario suite: what VMShm must do, written once and run on every simulation backend.

A scenario is ``async def fn(bus, env)``. It talks to the device only through the guest bus
(:class:`~vmshm.driver_model.bus.GuestBus`) and the driver model: it boots the bus with
:func:`~vmshm.driver_model.vmshm_probe` like a guest kernel, then uses the
:class:`~vmshm.driver_model.VMShmDriver` of ``/dev/vmshm0`` and, for register-level checks, that
driver's mapped BARs (``regs``, ``window``, ``names``). When it has to play another process on the
host (put
data into the object for the guest to find, or check that the guest's data landed) it attaches to
the object with :meth:`ShmRegion.attach <vmshm.host_model.ShmRegion.attach>` and closes that
region again; it never unlinks it. It raises :exc:`AssertionError` with a message saying what was
expected, and returns nothing or a small dict.

Everything a backend needs to run one is plain data: the scenario's name, a
:class:`ScenarioEnv`, and the scenario's requirements (:attr:`Scenario.shm_size`,
:attr:`Scenario.core_args`, :attr:`Scenario.timing`, :attr:`Scenario.host_args`,
:attr:`Scenario.devices`). :func:`run_scenario` (:mod:`~vmshm.scenarios.run`) hands a backend a
job that names the scenario's runner as ``"module:name"``; a backend that runs the simulator in
another process (cocotb on Verilator or Icarus) imports it there and looks the function up in
:data:`SCENARIOS` by name. No backend imports this package.

The caller creates the object (``env.shm_name``, :attr:`Scenario.shm_size` zero bytes) before
the run and removes it afterwards. It puts :attr:`Scenario.devices` VMShm functions on the bus
(device ``i`` in slot ``i``), each with its own host model from :meth:`Scenario.make_host`; every
host can open the same object, which is how two devices share it.

The suite is one module per topic, each registering its scenarios when imported; this package
imports them in a fixed order, which is the order of :data:`SCENARIOS` and of ``vmshm scenario``:

- :mod:`~vmshm.scenarios.registry`: :class:`ScenarioEnv`, :class:`Scenario`, :data:`SCENARIOS`,
  the :func:`scenario` decorator and :class:`LateHost`;
- :mod:`~vmshm.scenarios.checks`: the assertions and small probes every topic shares;
- :mod:`~vmshm.scenarios.seed`: the seed's userspace example;
- :mod:`~vmshm.scenarios.registers`: the register file (BAR0);
- :mod:`~vmshm.scenarios.pci_config`: the configuration header, enables and BAR sizing;
- :mod:`~vmshm.scenarios.pci_decode`: decoding, several devices, capability discovery;
- :mod:`~vmshm.scenarios.names`: object names and the name buffer (BAR2);
- :mod:`~vmshm.scenarios.driver`: the driver's file semantics;
- :mod:`~vmshm.scenarios.window`: the window (BAR1) and requests no BAR claims;
- :mod:`~vmshm.scenarios.host_faults`: a host that answers late, and the device's timeout;
- :mod:`~vmshm.scenarios.doorbells`: doorbells to the host, rings, INTx and MSI;
- :mod:`~vmshm.scenarios.run`: :func:`run_scenario` on any backend, :func:`run_pcie_scenario`
  through the PCIe root complex.

Beside the suite, content the backends run by name: :mod:`~vmshm.scenarios.demo` (the seed's
userspace example as ``vmshm demo`` runs it), :mod:`~vmshm.scenarios.bench` (``vmshm bench``'s
workload) and the PCIe-level checks of the UltraScale+ top (:mod:`~vmshm.scenarios.pcie_checks`,
:mod:`~vmshm.scenarios.pcie_irq_checks`).

A new scenario goes into the module of its topic (a new topic: a new module, imported below).
"""

from .checks import (claimed, expect, expect_bytes, expect_errno, expect_sizes, expect_status,
                     host_object, open_by_register, probe, records_in, reg, status, word_ceil)
from .registry import CORE_ARGS, MAX_DEVICES, SCENARIOS, LateHost, Scenario, ScenarioEnv, scenario

# Importing a topic registers its scenarios: this order is the order of SCENARIOS.
from . import (seed, registers, pci_config, pci_decode, names, driver, window,  # noqa
               host_faults, doorbells)
from .host_faults import LATE, SHORT_TIMEOUT
from .seed import HOST_LINE
from .run import PCIE_SCENARIOS, SKIPPED_SCENARIOS, run_pcie_scenario, run_scenario

__all__ = ["ScenarioEnv", "Scenario", "SCENARIOS", "scenario", "LateHost", "CORE_ARGS",
           "MAX_DEVICES", "run_scenario", "run_pcie_scenario", "PCIE_SCENARIOS",
           "SKIPPED_SCENARIOS"]
