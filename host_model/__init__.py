"""The VMShm host model: POSIX shared-memory objects and the host's answers to the device.

:class:`ShmRegion` serves one object; :class:`HostModel` implements OPEN, CLOSE and the window's
DMA on top of it; :class:`HostTiming` tells simulation back ends how slowly the host answers;
:class:`HostFaults` how it misbehaves; :func:`check_name` says whether the host would accept a name.
"""

from .faults import Fault, HostFaults
from .host import HostModel, HostStalls, HostTiming
from .names import check_name, name_problem
from .shm import LINK_REFUSED, RegionError, ShmRegion, check_not_link

__all__ = ["Fault", "HostFaults", "HostModel", "HostStalls", "HostTiming", "RegionError",
           "ShmRegion", "check_name", "name_problem", "LINK_REFUSED", "check_not_link"]
