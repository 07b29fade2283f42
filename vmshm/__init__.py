"""VMShm: a host-to-guest shared-memory PCI device, as RTL, simulation, host and driver models."""

__version__ = "0.1.0"

import os as _os

# In a source checkout the subpackages are the sibling folders rtl/, sim/, host_model/, ...: let
# `import vmshm.rtl` find them there too when the checkout's vmshm/ shadows an installed copy
# (say, `python -m pytest` run from the repository root after a non-editable install).
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "rtl", "core.py")) and _root not in __path__:
    __path__.append(_root)
