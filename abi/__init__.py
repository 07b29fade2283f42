"""The ABI, layer 1: what software on either side of the device may rely on, and nothing else.

- :mod:`~vmshm.abi.regmap`: BAR0's registers, their fields and access actions, status codes;
- :mod:`~vmshm.abi.pci_regs`: PCI configuration-space constants, named as in Linux;
- :mod:`~vmshm.abi.bounds`: the most cycles any guest request can take;
- :mod:`~vmshm.abi.cheader`: the register map as the guest driver's C header.

Nothing here imports another folder of the project: every other layer imports this one.
"""
