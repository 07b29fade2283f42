"""VMShm behind a Xilinx UltraScale+ PCIe hard IP (``pcie4_uscale_plus``, PG213).

The hard IP owns the configuration space and hands the user logic whole TLPs on four AXI streams,
named here from the user logic's side: CQ in (requests to the device), CC out (their completions),
RQ out (the device's own requests) and RC in (their completions). Each TLP is a descriptor
followed by its payload, DWORD-aligned, one TLP per packet (no straddling).

:class:`~.completer.USPCompleter` turns memory requests on CQ into the core's guest requests
(the BAR id in the descriptor picks the core's BAR) and the core's completions into CC
completions; :class:`~.requester.USPRequester` turns the core's DMA into memory reads and writes
at the host bus address the host gave in its OPEN answer, and reassembles the completions.
:class:`~.top.VMShmUSP` is the top: the core, both shims and flat ports named like the hard IP's
user interface.

Ordering matters where PCIe's rules cannot see: a DMA write is acknowledged to the core only once
the hard IP reports it sent (its RQ sequence number), so no later CC completion can pass it; and
OPEN and CLOSE, which go to the host on VMShm's own control channel, wait for a zero-length read
to flush the writes before them into host memory.

Inside, every stream is handled one DWORD a cycle (:class:`~.streams.AxisToDwords`,
:class:`~.streams.DwordsToAxis`): TLP fields are DWORD-based, the core's data path is 32 bits,
and the simulated root complex is far slower than that anyway. PG213 is stricter than a plain
AXI stream: CC and RQ hold each TLP until its last DWORD is in, then send it back to back
(``tvalid`` never drops inside a packet); CQ takes whole TLPs into a buffer
(:class:`~.completer.CqBuffer`), so a TLP marked discontinued is dropped whole; posted window
writes pass a window read that waits for the host (:mod:`.passing`; issue 22, finding 2). ``testbench/pcie_rules.py`` checks these rules on
every simulated run; ``tests/test_usp_streams.py`` and ``tests/test_usp_shims.py`` check the
parts on Amaranth's simulator.

The modules, bottom up:

- ``descriptors``: PG213's descriptor layouts, request types, ``tuser`` widths and bits;
- ``streams``: the stream utilities, which know nothing of TLPs (gearboxes, packet FIFO);
- ``tlp``: byte-enable and size arithmetic the completer and the requester share;
- ``passing``: the completer's lane for posted writes taken while a read waits;
- ``completer``: CQ buffer, request decoder, non-posted credits, the completer;
- ``requester``: tag table, completion receiver, the requester;
- ``irq``: the interrupt block (INTx and MSI handshakes);
- ``top``: :class:`~.top.VMShmUSP`.
"""

from .irq import INTX_PORTS, MSI_PORTS, USPInterrupts
from .top import AXIS_WIDTHS, VMShmUSP

__all__ = ["VMShmUSP", "AXIS_WIDTHS", "USPInterrupts", "INTX_PORTS", "MSI_PORTS"]
