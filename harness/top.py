"""The system every backend simulates: :class:`SimTop`, its Verilog, and what a run leaves.

Every backend runs this one top (Amaranth's simulator elaborates it, cocotb and native compile its
Verilog, :func:`generate`), so the cycle numbers in transaction records come from the same counter
everywhere, and every backend hands back a :class:`SimResult`.
"""

from dataclasses import dataclass, field

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from vmshm.rtl import VMShmSystem

__all__ = ["SimTop", "SimResult", "per_device", "TOPLEVEL", "generate"]

#: The Verilog module name of the SimTop, in every simulator build.
TOPLEVEL = "vmshm_simtop"


class SimTop(wiring.Component):
    """Hold the system under test and a free-running cycle counter the BFMs stamp records with.

    Every backend simulates this same top (cocotb runs its Verilog), so the cycle numbers in
    transaction records come from the same counter everywhere.

    Parameters
    ----------
    devices : int
        VMShm functions on the bus.
    **params
        Build parameters of every :class:`~vmshm.rtl.VMShmPCI`.

    Members
    -------
    req, cpl, host0 ..., intx0 ..., msi0 ...
        As for :class:`~vmshm.rtl.VMShmSystem`.
    cycle : ``Out(64)``
        Clock edges since reset.
    """

    def __init__(self, devices=1, **params):
        self._system = VMShmSystem(devices, **params)
        self._devices = devices
        # Driven only by a testbench (simulate's reset hook); 0 in generated Verilog.
        self._reset_request = Signal(name="reset_request")
        super().__init__({
            **{name: member for name, member in self._system.signature.members.items()},
            "cycle": Out(64),
        })

    @property
    def system(self):
        return self._system

    @property
    def devices(self):
        return self._devices

    @property
    def data_width(self):
        return self._system.data_width

    @property
    def host_timeout(self):
        return self._system.functions[0].host_timeout

    @property
    def reset_request(self):
        """Signal that resets the system (not the cycle counter) while high."""
        return self._reset_request

    def host(self, i):
        """Return device ``i``'s host side."""
        return getattr(self, f"host{i}")

    def intx(self, i):
        """Return device ``i``'s INTx line."""
        return getattr(self, f"intx{i}")

    def msi(self, i):
        """Return device ``i``'s MSI message stream."""
        return getattr(self, f"msi{i}")

    def elaborate(self, platform):
        m = Module()
        system = self._system
        m.submodules.system = ResetInserter(self._reset_request)(system)
        wiring.connect(m, wiring.flipped(self.req), system.req)
        wiring.connect(m, system.cpl, wiring.flipped(self.cpl))
        for i in range(self._devices):
            wiring.connect(m, wiring.flipped(self.host(i)), system.host(i))
            m.d.comb += self.intx(i).eq(getattr(system, f"intx{i}"))
            wiring.connect(m, getattr(system, f"msi{i}"), wiring.flipped(self.msi(i)))
        m.d.sync += self.cycle.eq(self.cycle + 1)
        return m


@dataclass
class SimResult:
    """What a simulation run leaves behind."""
    value: object = None                    # what the scenario returned
    records: list = field(default_factory=list)
    cycles: int = 0                         # cycles simulated in all
    # Each device's host-side handshakes (vmshm.harness.bfm.HostEvent), one list per device:
    # where the timing study splits guest transactions into phases.
    events: list = field(default_factory=list)


def per_device(value, count, default, what):
    """Return ``value`` as a list with one entry per device (``default()`` makes missing ones)."""
    if value is None:
        return [default() for _ in range(count)]
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{what} must name one per device ({count}), not {len(value)}")
        return list(value)
    if count != 1 and what == "hosts":
        raise ValueError("hosts must be a list with one HostModel per device")
    return [value] * count


def generate(top):
    """Return the Verilog of ``top`` (a :class:`SimTop`), the module every simulator runs, as
    :data:`TOPLEVEL`."""
    from amaranth.back import verilog
    return verilog.convert(top, name=TOPLEVEL)
