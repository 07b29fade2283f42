"""The hardware: VMShm's core and the layouts of its streams."""

from .core import DEFAULT_HOST_TIMEOUT, VMShmCore
from .layouts import *  # noqa: F401,F403
