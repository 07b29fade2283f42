"""VMShm behind a Xilinx UltraScale+ PCIe hard IP (``pcie4_uscale_plus``, PG213)."""

from .irq import INTX_PORTS, MSI_PORTS, USPInterrupts
from .top import VMShmUSP
