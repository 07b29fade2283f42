"""cocotb backend of the BFMs: streams on the generated Verilog's ports, and a :class:`StreamIO`.

The shared BFM logic (:mod:`vmshm.harness.bfm`) assumes it acts at a *drive point* just after a
rising edge. Here every BFM drives at the falling edge and decides handshakes in the ``ReadOnly``
phase before the next rising edge, when every BFM's drive of that cycle has settled: the values the
DUT is about to sample. Nothing changes between the falling edge and the next rising edge, so each
beat moves on the same edge as in Amaranth's simulator and the records come out identical.
"""

from types import SimpleNamespace

from cocotb.triggers import FallingEdge, ReadOnly

from vmshm.harness.bfm import StreamIO, pack_payload
from vmshm.driver_model.bus import BusTimeout

__all__ = ["CocotbStream", "CocotbIO", "host_port"]


class CocotbStream:
    """A stream on the DUT's flat ports ``{prefix}__valid``, ``__ready`` and ``__payload``.

    Parameters
    ----------
    dut
        The cocotb handle of the top level.
    prefix : str
        The stream's port prefix, e.g. ``req`` or ``host0__ctl_req``.
    layout : StructLayout
        The payload's layout (from :mod:`vmshm.rtl.layouts`): fields are packed and unpacked
        with it, so a field moved there moves here too.
    """

    def __init__(self, dut, prefix, layout):
        self.name = prefix
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.layout = layout
        self._fields = list(layout)   # (name, field) in packing order

    def pack(self, values):
        """Return ``values`` (a dict of field values) packed into one integer."""
        return pack_payload(self.layout, values)

    def unpack(self, raw):
        """Return the payload ``raw`` as an object with one attribute per field."""
        return SimpleNamespace(**{name: (raw >> fld.offset) & ((1 << fld.width) - 1)
                                  for name, fld in self._fields})

    def __repr__(self):
        return f"CocotbStream({self.name!r})"


def host_port(dut, top, index):
    """Return device ``index``'s host side of ``top`` (a SimTop) as cocotb streams."""
    port = top.host(index)
    return SimpleNamespace(**{
        name: CocotbStream(dut, f"host{index}__{name}", getattr(port, name).payload.shape())
        for name in ("ctl_req", "ctl_rsp", "dma_req", "dma_rsp", "db", "ring")},
        peer_valid=getattr(dut, f"host{index}__peer_valid"),
        peer_id=getattr(dut, f"host{index}__peer_id"))


class CocotbIO(StreamIO):
    """Move beats on :class:`CocotbStream` ports, one coroutine's worth.

    Parameters
    ----------
    clk
        The clock handle.
    cycle
        The DUT's cycle counter port.
    """

    def __init__(self, clk, cycle):
        self._clk = clk
        self._cycle = cycle

    async def _settle_until(self, signal, stream, timeout, what):
        # Poll once a cycle in ReadOnly: the settled value is what the next edge samples.
        waited = 0
        while True:
            await ReadOnly()
            if signal.value:
                return True
            await FallingEdge(self._clk)
            waited += 1
            if timeout is not None and waited >= timeout:
                raise BusTimeout(f"the device is hung: {what} for {timeout} cycles")

    async def put(self, stream, payload, *, valid_gate=None, timeout=None):
        stream.payload.value = stream.pack(payload)
        while True:
            offer = valid_gate() if valid_gate is not None else True
            stream.valid.value = int(offer)
            if offer:
                await self._settle_until(stream.ready, stream, timeout,
                                         "it took no request beat")
                taken = True
            else:
                await ReadOnly()
                taken = False
            await FallingEdge(self._clk)
            if taken:
                break
        stream.valid.value = 0

    async def get(self, stream, *, ready_gate=None, timeout=None):
        while True:
            ready = ready_gate() if ready_gate is not None else True
            stream.ready.value = int(ready)
            if ready:
                await self._settle_until(stream.valid, stream, timeout,
                                         "no completion beat came")
                beat = stream.unpack(int(stream.payload.value))
            else:
                await ReadOnly()
                beat = None
            await FallingEdge(self._clk)
            if beat is not None:
                break
        stream.ready.value = 0
        return beat

    async def wait(self, cycles):
        for _ in range(cycles):
            await FallingEdge(self._clk)

    def now(self):
        return int(self._cycle.value)

    def peek(self, signal):
        return int(signal.value)
