"""Refusing a component's parameters in its constructor."""

__all__ = ["refuse", "check_data_width"]


def refuse(component, message):
    """Raise ``ValueError(message)`` from ``component``'s constructor.

    A component refused while being built is never elaborated, so Amaranth is told not to warn
    that it was dropped unelaborated.
    """
    component._MustUse__silence = True
    raise ValueError(message)


def check_data_width(component, data_width):
    """Refuse a guest data path other than 32 or 64 bits."""
    if data_width not in (32, 64):
        refuse(component, f"data_width must be 32 or 64, not {data_width!r}")
