"""The FPGA flow: the device as Verilog, its lint, ECP5 synthesis and board builds.

- :mod:`~vmshm.commands.generate`: the ``vmshm generate`` command;
- :mod:`~vmshm.harness.lint`: Verilator's waivers for the generated Verilog, each with its reason;
- :mod:`~vmshm.fpga.toolchain`: the open ECP5 toolchain from PyPI (YoWASP);
- :mod:`~vmshm.fpga.platforms`: board names (amaranth-boards platforms);
- :mod:`~vmshm.fpga.synth`: ``vmshm synth``, size and speed out of context;
- :mod:`~vmshm.fpga.paths`: the critical path of each clock, from nextpnr's report;
- :mod:`~vmshm.fpga.xilinx`: the UltraScale+ top's size, from Yosys' ``synth_xilinx``;
- :mod:`~vmshm.fpga.board`: ``vmshm build``, the on-chip self-test for a board.
"""
