"""The memory BARs of a VMShm function, as both PCI front ends lay them out.

The soft function (:mod:`vmshm.rtl.pci`) sizes and decodes them in its own configuration space;
the UltraScale+ shim (:mod:`vmshm.rtl.usp`) maps the hard IP's BAR ids onto them and tells the
IP how to configure them. One record, so the two agree on what a BAR is.
"""

from dataclasses import dataclass

from vmshm import pci_regs as P

__all__ = ["BarDef"]


@dataclass(frozen=True)
class BarDef:
    """One memory BAR: which core BAR it carries, where its register sits and its type."""
    function: int      # the core's BAR number (BAR_REGS, BAR_WINDOW, BAR_NAME)
    index: int         # BAR register index 0..5 (a 64-bit BAR also takes index + 1)
    size: int
    is64: bool = False
    prefetch: bool = False

    @property
    def flags(self):
        """Return the read-only low bits of the BAR register."""
        return ((P.PCI_BASE_ADDRESS_MEM_TYPE_64 if self.is64 else P.PCI_BASE_ADDRESS_MEM_TYPE_32) |
                (P.PCI_BASE_ADDRESS_MEM_PREFETCH if self.prefetch else 0))
