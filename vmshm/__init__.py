"""VMShm: a host-to-guest shared-memory PCI device, as RTL, simulation, host and driver models."""

__version__ = "0.1.0"
