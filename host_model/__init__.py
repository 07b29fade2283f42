"""The VMShm host model: POSIX shared-memory objects and the host's answers to the device.

:class:`ShmRegion` maps one object; :class:`HostModel` implements OPEN, CLOSE and the window's DMA
on top of it; :class:`HostTiming` tells simulation back ends how slowly the host answers, and
:class:`HostFaults` how it misbehaves.
"""

from .faults import Fault, HostFaults
from .host import HostModel, HostStalls, HostTiming
from .shm import RegionError, ShmRegion

__all__ = ["Fault", "HostFaults", "HostModel", "HostStalls", "HostTiming", "RegionError",
           "ShmRegion"]
