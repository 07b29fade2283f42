"""The native backend: the generated Verilog compiled by Verilator, run by a C++ loop."""
