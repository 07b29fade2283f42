"""Random differential testing of VMShm: a golden model, a traffic generator and ``vmshm fuzz``.

:mod:`.model` predicts, from the register map and the docs, every completion the device gives and
every byte of the host's objects; :mod:`.gen` makes random guest traffic and host decisions from
one seed and checks the device against the model as it goes; :mod:`.host` is the host that
carries out those decisions and the list of host behaviours the generator may draw;
:mod:`.run` runs a campaign on any backend; :mod:`.cli` is ``vmshm fuzz``.
"""

from .host import BEHAVIOURS, FuzzHost
from .model import DeviceModel, FuzzConfig

__all__ = ["BEHAVIOURS", "FuzzHost", "DeviceModel", "FuzzConfig"]
