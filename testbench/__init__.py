"""cocotb backend: the generated Verilog under Verilator and Icarus, with the shared BFMs."""

from .runner import SIMULATORS, CocotbError, Job, available, build, run
