"""Formal properties of VMShm's RTL and ``vmshm formal``, which checks them with SymbiYosys."""
