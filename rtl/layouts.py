"""Payload layouts of the core's streams, shared by the RTL and every bus-functional model.

Each function returns an :class:`amaranth.lib.data.StructLayout`; BFMs pack and unpack payloads
with the same layout object (``layout.const({...}).as_value().value`` to pack,
``layout(...)`` views in Amaranth's simulator), so a field moved here moves everywhere.
"""

import enum

from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CplStatus", "Space", "MAX_BURST", "TAG_BITS", "guest_req_layout", "cpl_layout",
           "ctl_req_layout", "ctl_rsp_layout", "dma_req_layout", "dma_rsp_layout",
           "pci_req_layout", "bus_req_layout", "db_layout", "ring_layout", "msi_layout",
           "ctl_signature", "dma_signature", "host_signature"]

#: Width of the tags that pair a host's answers with the device's requests (see ``tag`` below).
TAG_BITS = 8

#: Most beats one guest request or one DMA request may carry (``count`` is beats - 1).
MAX_BURST = 256


class CplStatus(enum.IntEnum):
    """Completion status on the guest side, named as in PCIe."""
    SC = 0  #: successful completion
    UR = 1  #: unsupported request: no such BAR, or an offset outside it


class Space(enum.IntEnum):
    """Address space of a request on the PCI side."""
    MEM = 0  #: memory read or write, by address
    CFG = 1  #: configuration read or write, by function


def guest_req_layout(addr_width, data_width):
    """Return the layout of one beat of a guest request.

    A read is one beat: ``count`` + 1 words are returned. A write is ``count`` + 1 beats, each
    with its data and byte enables; the header fields (``bar``, ``addr``, ``write``, ``count``)
    are taken from the first beat. ``addr`` is a byte offset into the BAR, aligned to the data
    width (its low bits are ignored). For a read, ``be`` selects the bytes of every beat a
    read-to-trigger register must see touched.
    """
    return data.StructLayout({
        "bar":   3,
        "addr":  addr_width,
        "write": 1,
        "count": 8,
        "data":  data_width,
        "be":    data_width // 8,
    })


def cpl_layout(data_width):
    """Return the layout of one completion beat: ``count`` + 1 beats for a read, one for a write."""
    return data.StructLayout({
        "data":   data_width,
        "status": CplStatus,
        "last":   1,
    })


def ctl_req_layout():
    """Return the layout of one control-channel beat from the device to the host.

    OPEN streams the name one byte a beat, up to and including its NUL (``last`` on the NUL), or
    the whole name buffer with ``last`` on its final byte if there is no NUL. CLOSE is one beat.
    RESET is one beat, sent after a reset of the device; it also ends (``last``) an OPEN the
    device gave up on half-way, in place of the rest of the name. ``tag`` numbers the packet:
    the host echoes it, with ``op``, in its answer. RESET is never answered.
    """
    return data.StructLayout({
        "op":   2,
        "data": 8,
        "last": 1,
        "tag":  TAG_BITS,
    })


def ctl_rsp_layout():
    """Return the layout of the host's answer to OPEN or CLOSE: an errno and the object's size.

    ``addr`` is the host bus address of the object's first byte, for a device whose DMA goes out
    as bus-addressed requests (the UltraScale+ shim's memory reads and writes); 0 where DMA is
    addressed by offset into the object. Only a successful OPEN's answer is looked at.
    ``op`` and ``tag`` repeat the request's: the device takes an answer only for the request it
    is waiting for, and drops any other (late, doubled or never asked for).
    """
    return data.StructLayout({
        "status": 8,
        "size":   64,
        "addr":   64,
        "op":     2,
        "tag":    TAG_BITS,
    })


def dma_req_layout(addr_width, data_width):
    """Return the layout of one DMA request beat from the device to the host.

    A read is one beat asking for ``count`` + 1 words at byte offset ``addr`` of the object. A
    write is ``count`` + 1 beats with data and byte enables; the header repeats on every beat.
    ``tag`` numbers the request; the host echoes it on every answer beat. A write the device gave
    up on is still finished: its remaining beats go out with no byte enabled and data 0 (the
    contract in :mod:`~vmshm.rtl.window`).
    """
    return data.StructLayout({
        "write": 1,
        "addr":  addr_width,
        "count": 8,
        "data":  data_width,
        "be":    data_width // 8,
        "tag":   TAG_BITS,
    })


def dma_rsp_layout(data_width):
    """Return the layout of one DMA response beat: ``count`` + 1 beats for a read, one for a write.

    ``err`` marks a beat the host could not serve (the object shrank, or nothing is open).
    ``tag`` is the request's: beats of any other tag are dropped by the device.
    """
    return data.StructLayout({
        "data": data_width,
        "err":  1,
        "last": 1,
        "tag":  TAG_BITS,
    })


def pci_req_layout(data_width):
    """Return the layout of one request beat reaching a PCI function.

    Like :func:`guest_req_layout`, but by bus address instead of BAR: ``addr`` is a 64-bit memory
    address, or for ``space == CFG`` the configuration-space byte offset. ``sel`` is the
    function's IDSEL: only a selected function answers a configuration request.
    """
    return data.StructLayout({
        "space": Space,
        "write": 1,
        "sel":   1,
        "addr":  64,
        "count": 8,
        "data":  data_width,
        "be":    data_width // 8,
    })


def bus_req_layout(data_width):
    """Return the layout of one request beat on the shared bus: a device number instead of IDSEL."""
    return data.StructLayout({
        "space": Space,
        "write": 1,
        "dev":   5,
        "addr":  64,
        "count": 8,
        "data":  data_width,
        "be":    data_width // 8,
    })


def db_layout():
    """Return the layout of one doorbell beat to the host: a guest's DOORBELL write.

    ``peer`` and ``vector`` are the written value's high and low halves (ivshmem's layout).
    """
    return data.StructLayout({"peer": 16, "vector": 16})


def ring_layout():
    """Return the layout of one ring from the host: the vector to raise (>= 32 is ignored)."""
    return data.StructLayout({"vector": 16})


def msi_layout():
    """Return the layout of one MSI message a PCI function sends: a 32-bit write of ``data``
    to bus address ``addr``."""
    return data.StructLayout({"addr": 64, "data": 32})


def ctl_signature():
    """Return the control-channel part of a device's host side, from the device's point of view:
    ``ctl_req`` carries OPEN and CLOSE, ``ctl_rsp`` the host's answers."""
    return wiring.Signature({
        "ctl_req": Out(stream.Signature(ctl_req_layout())),
        "ctl_rsp": In(stream.Signature(ctl_rsp_layout())),
    })


def dma_signature(addr_width, data_width):
    """Return the DMA part of a device's host side, from the device's point of view:
    ``dma_req`` carries window reads and writes, ``dma_rsp`` read data and acknowledgements."""
    return wiring.Signature({
        "dma_req": Out(stream.Signature(dma_req_layout(addr_width, data_width))),
        "dma_rsp": In(stream.Signature(dma_rsp_layout(data_width))),
    })


def host_signature(addr_width, data_width):
    """Return the signature of a device's host side, from the device's point of view.

    ``ctl_req``/``ctl_rsp`` carry OPEN and CLOSE (:func:`ctl_signature`); ``dma_req``/``dma_rsp``
    carry window data (:func:`dma_signature`). ``db`` carries the guest's doorbells to the host,
    one beat per DOORBELL write; ``ring`` carries the host's rings to the device, which is always
    ready. ``peer_valid`` and ``peer_id`` are what IVPOSITION reads (0xffffffff while
    ``peer_valid`` is low).
    """
    return wiring.Signature({
        **ctl_signature().members,
        **dma_signature(addr_width, data_width).members,
        "db": Out(stream.Signature(db_layout())),
        "ring": In(stream.Signature(ring_layout())),
        "peer_valid": In(1),
        "peer_id": In(16),
    })
