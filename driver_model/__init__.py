"""The Linux driver's behaviour over an abstract guest bus."""

from .bus import Access, BusTimeout, GuestBus, Transaction, split_bursts
from .driver import VMSHM_IOCTL_OPEN, Mapping, VMShmDriver
