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

from . import components

__all__ = ["patched"]

#: The classes each RTL module gives the harnesses.
_CLASSES = {"control": ("ControlChannel",), "window": ("WindowDMA",),
            "doorbell": ("Doorbells",), "registers": ("RC", "RW", "W1C")}


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
    saved = {name: getattr(components, name) for name in _CLASSES[module]}
    try:
        for name in saved:
            setattr(components, name, getattr(broken, name))
        yield broken
    finally:
        for name, cls in saved.items():
            setattr(components, name, cls)
