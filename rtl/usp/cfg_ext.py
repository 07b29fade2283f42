"""VMShm's capability on the hard IP's configuration extension interface (PG213, ``cfg_ext_*``).

A ``pcie4_uscale_plus`` owns the configuration space, but hands the user logic every read of
the user-implemented ranges it was configured with: legacy 0xB0-0xBF (16 bytes, too few for
VMShm's 20-byte capability) and extended 0x480-0x4FF. This serves the extended range: VMShm's
capability as a Vendor-Specific Extended Capability at 0x480
(:func:`~vmshm.abi.regmap.vsec_bytes`), zeros elsewhere, writes ignored.
"""

from amaranth.hdl import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from vmshm.abi.regmap import VSEC_OFFSET

__all__ = ["CFG_EXT_PORTS", "CfgExtVsec", "EXT_RANGE"]

#: The configuration extension interface, seen from the user logic (PG213, "Configuration
#: Extend Interface Port Descriptions"): ``cfg_ext_register_number`` is a DWORD number.
CFG_EXT_PORTS = {
    "cfg_ext_read_received":     (In, 1),
    "cfg_ext_write_received":    (In, 1),
    "cfg_ext_register_number":   (In, 10),
    "cfg_ext_function_number":   (In, 8),
    "cfg_ext_write_data":        (In, 32),
    "cfg_ext_write_byte_enable": (In, 4),
    "cfg_ext_read_data":         (Out, 32),
    "cfg_ext_read_data_valid":   (Out, 1),
}

#: PG213's user-implemented extended configuration space on a PCIE4 block, in bytes.
EXT_RANGE = (0x480, 0x500)


class CfgExtVsec(wiring.Component):
    """Answer the IP's configuration reads of the user ranges with VMShm's VSEC.

    Every ``cfg_ext_read_received`` is answered exactly once, two cycles later (the request is
    registered on the way in and the answer on the way out, so nothing combinational crosses
    the hard-IP boundary): ``cfg_ext_read_data_valid`` high for one cycle with the DWORD of
    :attr:`image` at that register number for physical function 0, zeros for any other
    register or function. Writes (``cfg_ext_write_received``) change nothing: the capability
    is read-only.

    Parameters
    ----------
    vsec : bytes
        The capability's bytes (:func:`~vmshm.abi.regmap.vsec_bytes`), placed at
        :data:`~vmshm.abi.regmap.VSEC_OFFSET`.
    """

    def __init__(self, vsec):
        vsec = bytes(vsec)
        if len(vsec) % 4 or VSEC_OFFSET + len(vsec) > EXT_RANGE[1]:
            raise ValueError(f"a VSEC of {len(vsec)} bytes does not fit the IP's user "
                             f"extended space {EXT_RANGE[0]:#x}-{EXT_RANGE[1] - 1:#x}")
        self._image = {(VSEC_OFFSET + i) // 4: int.from_bytes(vsec[i:i + 4], "little")
                       for i in range(0, len(vsec), 4)}
        super().__init__({name: d(w) for name, (d, w) in CFG_EXT_PORTS.items()})

    @property
    def image(self):
        """``{register number: DWORD}`` of what is served (every other register reads 0)."""
        return dict(self._image)

    def elaborate(self, platform):
        m = Module()
        read, reg, fn = Signal(), Signal(10), Signal(8)
        m.d.sync += [read.eq(self.cfg_ext_read_received),
                     reg.eq(self.cfg_ext_register_number),
                     fn.eq(self.cfg_ext_function_number)]
        data = Signal(32)
        with m.If(fn == 0):
            with m.Switch(reg):
                for number, word in self._image.items():
                    with m.Case(number):
                        m.d.comb += data.eq(word)
        m.d.sync += [self.cfg_ext_read_data_valid.eq(read),
                     self.cfg_ext_read_data.eq(Mux(read, data, 0))]
        return m
