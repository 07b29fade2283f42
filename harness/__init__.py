"""What every simulation backend shares, layer 3: the simulated top, the BFMs, the build cache.

- :mod:`~vmshm.harness.top`: :class:`~vmshm.harness.top.SimTop` (the system under test and the
  cycle counter every record is stamped with), :class:`~vmshm.harness.top.SimResult`, and the
  SimTop's Verilog (:func:`~vmshm.harness.top.generate`);
- :mod:`~vmshm.harness.bfm`: the guest and host bus-functional models, written once over the
  :class:`~vmshm.harness.bfm.StreamIO` each backend supplies;
- :mod:`~vmshm.harness.job`: what one run does as plain data (:class:`~vmshm.harness.job.Job`)
  and the one host lifecycle every backend follows (make the hosts, run, record their state,
  close what is open);
- :mod:`~vmshm.harness.build`: the Verilog build cache (its root, the tools' versions,
  :func:`~vmshm.harness.build.build_once` with its lock);
- :mod:`~vmshm.harness.tools`: finding Verilator and Icarus;
- :mod:`~vmshm.harness.lint`: Verilator's waivers for generated Verilog, each with its reason;
- :mod:`~vmshm.harness.checks`: what a backend checks before it simulates (an output file).

The backends (``sim/``, ``testbench/``, ``native/``) import this package and never each other.
"""
