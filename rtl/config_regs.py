"""The registers of a configuration space, built from its description.

:class:`ConfigRegisters` turns a :class:`~vmshm.config_space.ConfigSpace` into hardware: one
register per stateful field, a read multiplexer over the 256-byte space and the write rules of
each field's kind. The soft front end (:class:`~vmshm.rtl.pci.VMShmPCI`) decides when a
configuration request reads or writes; what the bits are is the description's.
"""

from amaranth.hdl import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from vmshm import pci_regs as P

__all__ = ["ConfigRegisters"]


class ConfigRegisters(wiring.Component):
    """Hold a configuration space's registers; read them by word, write them by byte enable.

    Parameters
    ----------
    space : ConfigSpace
        The fields: which bits of which dword, and their kinds.
    data_width : int
        Width of a read or write word: 32 or 64 (two dwords).

    Members
    -------
    rd_addr : ``In(12 - log2(data_width // 8))``
        Word address (byte address over the word's bytes) of the word ``rd_data`` shows; words
        past the 256-byte space read 0.
    rd_data : ``Out(data_width)``
    we : ``In(1)``
        Write ``wr_data`` under byte enables ``wr_be`` to the word at ``wr_addr`` on this edge.
    wr_addr : ``In(12 - log2(data_width // 8))``
    wr_data : ``In(data_width)``
    wr_be : ``In(data_width // 8)``
    flr : ``In(1)``
        A Function Level Reset: the fields marked ``flr`` return to 0 on this edge.
    <field> : ``Out(width)``
        The register of each ``rw`` and ``rw1c`` field.
    <field>_set : ``In(width)``
        Bits to set in each ``rw1c`` field on this edge (a write of 1 on the same edge wins).
    <field> : ``In(width)``
        What each ``live`` field reads.
    <field> : ``Out(1)``
        Each ``trigger`` field: high in the cycle a write sets one of its bits.
    """

    def __init__(self, space, data_width):
        self._space = space
        self._data_width = data_width
        # Configuration requests address 4 KiB; a word address drops the bytes within the word.
        aw = 12 - exact_log2(data_width // 8)
        members = {
            "rd_addr": In(aw), "rd_data": Out(data_width),
            "we": In(1), "wr_addr": In(aw), "wr_data": In(data_width),
            "wr_be": In(data_width // 8), "flr": In(1),
        }
        for f in space.fields:
            if f.stateful:
                members[f.name] = Out(f.width)
            if f.kind == "rw1c":
                members[f"{f.name}_set"] = In(f.width)
            elif f.kind == "live":
                members[f.name] = In(f.width)
            elif f.kind == "trigger":
                members[f.name] = Out(1)
        super().__init__(members)

    def _dword(self, offset):
        # The dword's value: the constants' bits with every register and live signal OR'ed in.
        value = C(0, 32)
        for f in self._space.dwords.get(offset, ()):
            if f.kind == "const":
                value = value | C(f.value << f.lsb, 32)
            elif f.kind != "trigger":
                value = value | (getattr(self, f.name) << f.lsb)
        return value[:32]

    def elaborate(self, platform):
        m = Module()
        space = self._space
        wb = self._data_width // 8
        wshift = exact_log2(wb)

        with m.Switch(self.rd_addr):
            for word in range(P.PCI_CFG_SPACE_SIZE // wb):
                with m.Case(word):
                    m.d.comb += self.rd_data.eq(Cat(*(self._dword(word * wb + 4 * lane)
                                                      for lane in range(wb // 4))))

        # A field a write also touches takes the write's statement, which comes later and
        # clears what it sets after the set (see _write).
        for f in space.of_kind("rw1c"):
            reg = getattr(self, f.name)
            m.d.sync += reg.eq(reg | getattr(self, f"{f.name}_set"))
        with m.If(self.flr):
            m.d.sync += [getattr(self, f.name).eq(0) for f in space.fields
                         if f.stateful and f.flr]

        for lane in range(wb // 4):
            off = Signal(12, name=f"wr_off{lane}")
            m.d.comb += off.eq((self.wr_addr << wshift) + 4 * lane)
            d = self.wr_data.word_select(lane, 32)
            e = self.wr_be.word_select(lane, 4)
            for offset, fields in space.dwords.items():
                acting = [f for f in fields if f.kind in ("rw", "rw1c", "trigger")]
                if not acting:
                    continue
                with m.If(self.we & (off == offset)):
                    for f in acting:
                        self._write(m, f, d, e)
        return m

    def _write(self, m, f, d, e):
        # Each byte the write enables acts on the field's bits in that byte, as its kind says.
        target = getattr(self, f.name)
        for byte, lo, hi in f.lanes():
            data = d[f.lsb + lo:f.lsb + hi]
            if f.kind == "rw":
                keep = f.mask >> lo & ((1 << (hi - lo)) - 1)
                if keep:
                    with m.If(e[byte]):
                        m.d.sync += target[lo:hi].eq(data & keep)
            elif f.kind == "rw1c":
                bits = target[lo:hi] | getattr(self, f"{f.name}_set")[lo:hi]
                with m.If(e[byte]):
                    m.d.sync += target[lo:hi].eq(bits & ~data)
            else:
                with m.If(e[byte] & data.any()):
                    m.d.comb += target.eq(1)
