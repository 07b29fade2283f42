"""Turn a VMShm configuration into standalone Verilog: the one entry point for every top."""

from amaranth.back import verilog

from vmshm.rtl import VMShmCore, VMShmPCI

__all__ = ["TOPS", "build_top", "generate"]

#: Top-level modules by name: (module name in the Verilog, constructor).
TOPS = {
    "core": ("vmshm_core", VMShmCore),
    "pci": ("vmshm_pci", VMShmPCI),
}


def build_top(top="core", **params):
    """Return the Amaranth component for ``top`` built with ``params``."""
    try:
        _, cls = TOPS[top]
    except KeyError:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}") from None
    return cls(**params)


def generate(top="core", **params):
    """Return the Verilog text of ``top`` built with ``params``.

    Ports are named after the component's signature, flattened with ``__``: ``req__valid``,
    ``req__ready``, ``req__payload`` (the payload packed as in :mod:`vmshm.rtl.layouts`, first
    field in the low bits), likewise ``cpl``, and ``host__ctl_req``, ``host__ctl_rsp``,
    ``host__dma_req``, ``host__dma_rsp``; plus ``clk`` and ``rst`` (and the core's
    ``dma_enable``).
    """
    component = build_top(top, **params)
    name, _ = TOPS[top]
    return verilog.convert(component, name=name)
