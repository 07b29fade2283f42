"""Arithmetic on TLP fields that the completer and the requester share.

Byte enables to byte offsets (a completion's byte count and lower address, PCIe Base 2.3.1.1),
PCIe's 3-bit size codes (Max_Payload_Size, Max_Read_Request_Size) to masks, and the distance to
the next such boundary, where a TLP must end.
"""

from amaranth.hdl import *

__all__ = ["trailing_zeros", "leading_zeros", "size_mask", "to_boundary"]


def trailing_zeros(be):
    """Return the offset of the first enabled byte of a DWORD's byte enables (3 if none)."""
    return Mux(be[0], 0, Mux(be[1], 1, Mux(be[2], 2, 3)))


def leading_zeros(be):
    """Return how many bytes after the last enabled one a DWORD's byte enables leave out."""
    return Mux(be[3], 0, Mux(be[2], 1, Mux(be[1], 2, 3)))


def size_mask(m, code, sizes, name):
    """Return ``size - 1`` for the 3-bit size ``code`` (128 << code bytes), 128 if reserved."""
    mask = Signal(12, name=name)
    with m.Switch(code):
        for value, size in enumerate(sizes):
            with m.Case(value):
                m.d.comb += mask.eq(size - 1)
        with m.Default():
            m.d.comb += mask.eq(127)
    return mask


def to_boundary(addr_lo, mask):
    """Return the DWORDs from the DWORD address ``addr_lo`` to the next ``mask + 1`` boundary."""
    return ((~addr_lo & mask) >> 2) + 1
