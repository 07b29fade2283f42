"""Turn a VMShm configuration into standalone Verilog: the one entry point for every top.

Each top is a :class:`~amaranth.lib.wiring.Component`; :data:`TOPS` names them. A new top (the
UltraScale+ hard-IP shim, say) is one more entry: ``vmshm generate``, ``vmshm synth``, the lint
configuration and the tests pick it up from here, and its parameters are its constructor's
keyword arguments (:func:`top_parameters`).
"""

import inspect

from amaranth.hdl import Elaboratable

from amaranth.back import verilog

from vmshm.rtl import VMShmCore, VMShmPCI
from vmshm.rtl.selftest import VMShmSelfTest
from vmshm.rtl.usp import VMShmUSP
from vmshm.rtl.usp.wrapper import WRAPPERS, pg213_wrapper

__all__ = ["TOPS", "build_top", "check_top", "generate", "module_name", "top_parameters"]

#: Top-level modules by name: (module name in the Verilog, constructor).
TOPS = {
    "core": ("vmshm_core", VMShmCore),
    "pci": ("vmshm_pci", VMShmPCI),
    "selftest": ("vmshm_selftest", VMShmSelfTest),
    "usp": ("vmshm_usp", VMShmUSP),
}


def _check_top(top):
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")


def module_name(top):
    """Return the Verilog module name of ``top``, e.g. ``"vmshm_core"``."""
    _check_top(top)
    return TOPS[top][0]


def top_parameters(top):
    """Return the names of the parameters ``top`` takes, in its constructor's order."""
    _check_top(top)
    params = inspect.signature(TOPS[top][1]).parameters
    return tuple(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)


def build_top(top="core", **params):
    """Return the Amaranth component for ``top`` built with ``params``."""
    accepted = top_parameters(top)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"top {top!r} takes no parameter {', '.join(unknown)}; it takes "
                         f"{', '.join(accepted)}")
    return TOPS[top][1](**params)


def check_top(top="core", **params):
    """Build ``top`` with ``params`` only to check them; raise what the constructor raises.

    The component is dropped unelaborated, so Amaranth is told not to warn about it (nor about
    the components it holds).
    """
    def silence(obj, seen):
        if id(obj) in seen or not isinstance(obj, Elaboratable):
            return
        seen.add(id(obj))
        obj._MustUse__silence = True
        for value in vars(obj).values():
            silence(value, seen)
    silence(build_top(top, **params), set())


def generate(top="core", *, wrapper=None, **params):
    """Return the Verilog text of ``top`` built with ``params``.

    The module is named after the top (:func:`module_name`). Ports are named after the
    component's signature, flattened with ``__``: for the core and the PCI function
    ``req__valid``, ``req__ready``, ``req__payload`` (the payload packed as in
    :mod:`vmshm.rtl.layouts`, first field in the low bits), likewise ``cpl``, and
    ``host__ctl_req``, ``host__ctl_rsp``, ``host__dma_req``, ``host__dma_rsp``; plus ``clk`` and
    ``rst`` (and the core's ``dma_enable``). The self-test has ``clk``, ``rst``, ``done``,
    ``passed``, ``failed`` and ``step``.

    ``wrapper="pg213"`` (``--top usp`` only) appends
    :data:`~vmshm.rtl.usp.wrapper.WRAPPER_MODULE`, a module around the top whose ports carry the
    names and widths of a ``pcie4_uscale_plus`` instance's (:mod:`vmshm.rtl.usp.wrapper`).
    """
    if wrapper is not None and (top, wrapper) != ("usp", "pg213"):
        raise ValueError(f"wrapper {wrapper!r} is for --top usp only, and must be one of "
                         f"{', '.join(WRAPPERS)}")
    component = build_top(top, **params)
    text = verilog.convert(component, name=module_name(top))
    if wrapper is not None:
        text += "\n" + pg213_wrapper(component, module_name(top))
    return text
