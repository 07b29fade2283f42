"""The hardware: VMShm's core, its PCI front ends, and the layouts of their streams."""

from .bars import BarDef
from .core import DEFAULT_HOST_TIMEOUT, VMShmCore
from .layouts import *  # noqa: F401,F403
from .pci import PciBus, VMShmPCI, VMShmSystem
from .usp import VMShmUSP
