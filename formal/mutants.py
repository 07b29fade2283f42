"""Single-expression breaks of the RTL, applied in memory for the formal harnesses.

:func:`patched` rebuilds one RTL module from its source with one expression replaced and puts
its classes in place of the real ones in :mod:`vmshm.formal.components` for the span of a
``with`` block: the deliberate breaks of ``tests/test_formal.py`` and docs/formal.md run on the
real harnesses without touching a file, so they may run in parallel with anything else.
"""

import contextlib
import importlib
import inspect
import types

from . import components, props, usp

__all__ = ["patched"]

#: The classes each RTL module gives the harnesses.
_CLASSES = {"core": ("VMShmCore",), "control": ("ControlChannel",), "window": ("WindowDMA",),
            "doorbell": ("Doorbells",), "registers": ("RC", "RW", "W1C", "RegisterFile"),
            "usp.streams": ("PacketFifo", "SkidBuffer", "DwordsToAxis"),
            "usp.completer": ("CqBuffer", "NpCredits"), "usp.irq": ("USPInterrupts",),
            "usp.requester": ("USPRequester",), "usp.completions": ("RcReceiver",),
            "pci": ("VMShmPCI",), "flr_hold": ("FlrHold",)}
#: The modules that take those classes: the harnesses, the core for its components (the
#: core-level checks of :mod:`.props`), the soft function for its core and its FLR holds (the
#: ``pci.*`` checks) and the requester for its receiver.
_HARNESSES = (components, props, usp, importlib.import_module("vmshm.rtl.core"),
              importlib.import_module("vmshm.rtl.pci"),
              importlib.import_module("vmshm.rtl.usp.requester"))


@contextlib.contextmanager
def patched(module, old, new):
    """Within the block, the harnesses use ``vmshm.rtl.<module>`` with ``old`` (which must occur
    exactly once in its source) replaced by ``new``."""
    if module not in _CLASSES:
        raise ValueError(f"module must be one of {', '.join(_CLASSES)}, not {module!r}")
    real = importlib.import_module(f"vmshm.rtl.{module}")
    source = inspect.getsource(real)
    if source.count(old) != 1:
        raise ValueError(f"{old!r} occurs {source.count(old)} times in {real.__name__}, not once")
    broken = types.ModuleType(real.__name__)
    broken.__package__ = real.__package__
    broken.__file__ = real.__file__
    exec(compile(source.replace(old, new), real.__file__, "exec"), broken.__dict__)
    saved = {(h, name): getattr(h, name) for h in _HARNESSES for name in _CLASSES[module]
             if hasattr(h, name)}
    try:
        for h, name in saved:
            setattr(h, name, getattr(broken, name))
        yield broken
    finally:
        for (h, name), cls in saved.items():
            setattr(h, name, cls)
