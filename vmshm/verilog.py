"""Keep the import path ``vmshm.verilog``: the entry point lives in :mod:`vmshm.fpga.verilog`.

``from vmshm.verilog import generate, TOPS`` keeps working; new code imports
:mod:`vmshm.fpga.verilog`.
"""

from vmshm.fpga.verilog import TOPS, build_top, generate, module_name, top_parameters

__all__ = ["TOPS", "build_top", "generate", "module_name", "top_parameters"]
