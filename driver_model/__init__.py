"""The Linux driver's behaviour over an abstract guest bus: the PCI core and /dev/vmshmN."""

from .bus import (Access, BarWindow, BusTimeout, GuestBus, Interrupt, Space, Transaction,
                  split_bursts)
from .driver import (VMSHM_IDS, VMSHM_IOCTL_IVPOSITION, VMSHM_IOCTL_OPEN, VMSHM_IOCTL_RING,
                     Mapping, VMShmDriver, vmshm_probe)
from .pci import (MemAllocator, PciDev, Resource, pci_assign_resources, pci_clear_master,
                  pci_disable_device, pci_enable_device, pci_find_capability, pci_iomap,
                  pci_scan_bus, pci_set_master)
