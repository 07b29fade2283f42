"""cocotb backend: the generated Verilog under Verilator and Icarus, with the shared BFMs."""

from .outcome import CocotbError
from .runner import SIMULATORS, available, build, run
