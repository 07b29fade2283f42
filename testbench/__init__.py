"""Verilog-level verification under cocotb (Verilator, Icarus): to come."""
