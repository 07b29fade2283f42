"""BAR0's registers built from the one register map: field actions and the register file.

Each register of :data:`~vmshm.abi.regmap.REGISTERS` is built from the parts
:meth:`~vmshm.abi.regmap.Register.parts` names: the whole register, or one part per field where the
fields name their own access (STATUS). Each part is a field action, a small component chosen by
its access (amaranth-soc's ``csr.action`` is the model): its ``port`` is driven by the register
file, its other members face the component that owns the value. :class:`RegisterFile` decodes
each guest beat into the ports once (word, 32-bit lane, byte enables) and builds the word a read
returns from the parts' positions, so no register's offset or bit is decoded anywhere else.

Adding a register takes three files, plus the generated ``docs/registers.md`` and
``guest/vmshm_regs.h``: its line in ``abi/regmap.py`` (offset, access, reset, meaning); the
component that drives or uses its value (an ``Out`` or ``In`` port); and ``rtl/core.py``, one line
joining the two (``f.NAME.r_data.eq(part.value)`` for a read-only register, ``part.value.eq(
f.NAME.data)`` for a read-write one). Where the core itself is that component, two files.
"""

from amaranth.hdl import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from vmshm.abi.regmap import ACCESS, BAR0_SIZE, REGISTERS

from .refuse import check_data_width, refuse

__all__ = ["field_port_signature", "register_bus_signature", "R", "Constant", "RW", "W1C", "RC",
           "W", "RT", "ACTIONS", "RegisterFile"]


def field_port_signature(width):
    """Return the signature of a field action's port, from the register file's side.

    Members
    -------
    sel : ``Out(1)``
        The beat at hand is in the field's register word (a write may wait on it).
    r_stb : ``Out(1)``
        A read takes the register: the first beat's byte enables touch its lane, or a later
        beat of a burst covers it.
    r_data : ``In(width)``
        What the field reads.
    w_stb : ``Out(1)``
        A write beat to the register's word (its byte enables in the lane may all be clear).
    w_mask : ``Out(width)``
        The field's bits under the beat's byte enables.
    w_data : ``Out(width)``
        The field's bits of the beat's data.
    """
    return wiring.Signature({
        "sel": Out(1),
        "r_stb": Out(1),
        "r_data": In(width),
        "w_stb": Out(1),
        "w_mask": Out(width),
        "w_data": Out(width),
    })


class _Action(wiring.Component):
    def __init__(self, width, members=None):
        if not isinstance(width, int) or not 1 <= width <= 32:
            refuse(self, f"width must be an integer from 1 to 32, not {width!r}")
        self._width = width
        super().__init__({"port": In(field_port_signature(width)), **(members or {})})

    @property
    def width(self):
        return self._width


class R(_Action):
    """A read-only field: it reads ``r_data``, what its owner drives; writes do nothing.

    Members
    -------
    r_data : ``In(width)``
    """

    def __init__(self, width):
        super().__init__(width, {"r_data": In(width)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.port.r_data.eq(self.r_data)
        return m


class Constant(_Action):
    """A constant field: it reads ``value``; writes do nothing."""

    def __init__(self, width, value):
        if not isinstance(value, int) or not 0 <= value < 1 << width:
            refuse(self, f"value must be an integer that fits {width} bits, not {value!r}")
        self._value = value
        super().__init__(width)

    @property
    def value(self):
        return self._value

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.port.r_data.eq(self._value)
        return m


class RW(_Action):
    """A read-write field with its storage: each byte enable writes its byte.

    Members
    -------
    data : ``Out(width)``
        The storage, ``init`` out of reset; a write lands on the next edge.
    """

    def __init__(self, width, *, init=0):
        super().__init__(width, {"data": Out(width, init=init)})

    def elaborate(self, platform):
        m = Module()
        port = self.port
        with m.If(port.w_stb):
            m.d.sync += self.data.eq(self.data & ~port.w_mask | port.w_data & port.w_mask)
        m.d.comb += port.r_data.eq(self.data)
        return m


class W1C(_Action):
    """A write-1-to-clear field with its storage: hardware sets bits, the guest clears them.

    A bit set and cleared on the same edge stays set: the set is news the guest has not seen.

    Members
    -------
    set : ``In(width)``
        Bits to set on the next edge.
    clear : ``Out(width)``
        The bits a write clears on the next edge (for an owner that must tell news from what
        was pending).
    data : ``Out(width)``
        The storage, ``init`` out of reset.
    """

    def __init__(self, width, *, init=0):
        super().__init__(width, {"set": In(width), "clear": Out(width),
                                 "data": Out(width, init=init)})

    def elaborate(self, platform):
        m = Module()
        port = self.port
        m.d.comb += [self.clear.eq(Mux(port.w_stb, port.w_data & port.w_mask, 0)),
                     port.r_data.eq(self.data)]
        m.d.sync += self.data.eq(self.data & ~self.clear | self.set)
        return m


class RC(_Action):
    """A read-only count of events that saturates; any write to the register clears it.

    An event is counted the cycle after ``inc``, from a flip-flop, so the counter's enables
    start at a register and not at whatever logic decides the event. A clear on the same edge
    as a count wins.

    Members
    -------
    inc : ``In(1)``
        One event this cycle.
    data : ``Out(width)``
        The count.
    """

    def __init__(self, width):
        super().__init__(width, {"inc": In(1), "data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        port = self.port
        pending = Signal()
        m.d.sync += pending.eq(self.inc)
        with m.If(pending):
            m.d.sync += self.data.eq(self.data + (self.data != (1 << self.width) - 1))
        with m.If(port.w_stb & port.w_mask.any()):
            m.d.sync += self.data.eq(0)
        m.d.comb += port.r_data.eq(self.data)
        return m


class W(_Action):
    """A write-only field: a write with any byte enabled acts; a read returns 0.

    Members
    -------
    stb : ``Out(1)``
        A write with any of the register's bytes enabled, this cycle.
    data : ``Out(width)``
        Its value, with the bytes not enabled as 0.
    sel : ``Out(1)``
        The beat at hand is in the register's word: a write its owner cannot take yet can be
        held on it.
    """

    def __init__(self, width):
        super().__init__(width, {"stb": Out(1), "data": Out(width), "sel": Out(1)})

    def elaborate(self, platform):
        m = Module()
        port = self.port
        m.d.comb += [self.stb.eq(port.w_stb & port.w_mask.any()),
                     self.data.eq(port.w_data & port.w_mask),
                     self.sel.eq(port.sel)]
        return m


class RT(_Action):
    """A read-to-trigger field: a read starts an action (whose owner completes the read);
    it reads 0 here and writes do nothing.

    Members
    -------
    trigger : ``Out(1)``
        A read takes the register this cycle.
    """

    def __init__(self, width):
        super().__init__(width, {"trigger": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.trigger.eq(self.port.r_stb)
        return m


#: The action of each access type of :data:`~vmshm.abi.regmap.ACCESS`.
ACTIONS = {"R": R, "C": Constant, "RW": RW, "W1C": W1C, "RC": RC, "W": W, "RT": RT}
assert set(ACTIONS) == set(ACCESS), "an access type without its action, or the reverse"


def _make_action(access, width, reset):
    if access == "C":
        return Constant(width, reset)
    if access in ("RW", "W1C"):
        return ACTIONS[access](width, init=reset)
    return ACTIONS[access](width)


def register_bus_signature(addr_width, data_width):
    """Return the signature of a register file's bus, from the side that serves the guest.

    Members
    -------
    addr : ``Out(addr_width)``
        The word address of the beat at hand (in words of ``data_width`` bits).
    sel : ``Out(1)``
        The request at hand lies inside the register BAR: without it no register acts.
    r_stb : ``Out(1)``
        Read the word at ``addr``: its read-to-trigger registers fire.
    r_be : ``Out(data_width // 8)``
        The byte enables a read touches (all of them past a burst's first beat).
    r_data : ``In(data_width)``
        The word at ``addr``, every cycle; offsets no register holds read 0.
    w_stb : ``Out(1)``
        Write ``w_data`` under ``w_be`` to the word at ``addr``.
    w_be : ``Out(data_width // 8)``
    w_data : ``Out(data_width)``
    """
    return wiring.Signature({
        "addr": Out(addr_width),
        "sel": Out(1),
        "r_stb": Out(1),
        "r_be": Out(data_width // 8),
        "r_data": In(data_width),
        "w_stb": Out(1),
        "w_be": Out(data_width // 8),
        "w_data": Out(data_width),
    })


class _Parts:
    """The actions of one register's fields, by field name (``f.STATUS.DMA_ERROR``)."""

    def __init__(self, actions):
        self._actions = dict(actions)

    def __getattr__(self, name):
        try:
            return self._actions[name]
        except KeyError:
            raise AttributeError(f"no field {name!r}") from None

    __getitem__ = __getattr__

    def __iter__(self):
        return iter(self._actions.items())


class RegisterFile(wiring.Component):
    """Decode the guest's beats into BAR0's field actions and return the word a read asks for.

    Parameters
    ----------
    addr_width : int
        Bits of ``bus.addr``, a word address.
    data_width : int
        32 or 64: a 64-bit word holds two registers, one per 32-bit lane.
    values : dict
        ``{register name: value}`` of the constant registers whose value is a build parameter
        (their reset in the register map is ``None``).

    Members
    -------
    bus : ``In(register_bus_signature(addr_width, data_width))``
    f : namespace
        The field actions: ``f.NAME`` for a register acting as a whole, ``f.NAME.FIELD`` for
        a register whose fields name their access (their members: see :data:`ACTIONS`).
    """

    def __init__(self, *, addr_width, data_width, values=None):
        check_data_width(self, data_width)
        values = dict(values or {})
        needed = {r.name for r in REGISTERS if r.reset is None}
        if set(values) != needed:
            refuse(self, f"values must give exactly {sorted(needed)}, not {sorted(values)}")
        if addr_width < ceil_log2(BAR0_SIZE * 8 // data_width):
            refuse(self, f"addr_width must cover BAR0's {BAR0_SIZE} bytes, not {addr_width!r}")
        self._data_width = data_width
        self._parts = {}        # register name -> [(offset, width, action, submodule name)]
        names = {}
        for r in REGISTERS:
            parts = []
            for field, offset, width, access, reset in r.parts():
                reset = values[r.name] if reset is None else reset
                name = r.name.lower() + ("" if field is None else f"_{field.lower()}")
                action = _make_action(access, width, reset)
                parts.append((offset, width, action, name))
                if field is not None:
                    names.setdefault(r.name, {})[field] = action
                else:
                    names[r.name] = action
            self._parts[r.name] = parts
        self.f = _Parts({k: _Parts(v) if isinstance(v, dict) else v for k, v in names.items()})
        super().__init__({"bus": In(register_bus_signature(addr_width, data_width))})

    @property
    def data_width(self):
        return self._data_width

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        words = {}              # word -> {lane: 32-bit value}
        for r in REGISTERS:
            word, lane = r.placement(self._data_width)
            hit = Signal(name=f"{r.name.lower()}_hit")
            m.d.comb += hit.eq(bus.sel & (bus.addr == word))
            be = bus.w_be.word_select(lane, 4)
            mask = Cat(*[be[i].replicate(8) for i in range(4)])
            data = bus.w_data.word_select(lane, 32)
            taken = bus.r_stb & hit & bus.r_be.word_select(lane, 4).any()
            value = []
            bit = 0
            for offset, width, action, name in self._parts[r.name]:
                m.submodules[name] = action
                m.d.comb += [
                    action.port.sel.eq(hit),
                    action.port.r_stb.eq(taken),
                    action.port.w_stb.eq(bus.w_stb & hit),
                    action.port.w_mask.eq(mask[offset:offset + width]),
                    action.port.w_data.eq(data[offset:offset + width]),
                ]
                # Bits between the parts read 0.
                value += [C(0, offset - bit), action.port.r_data]
                bit = offset + width
            value.append(C(0, 32 - bit))
            words.setdefault(word, {})[lane] = Cat(*value)
        with m.Switch(bus.addr):
            for word, lanes in sorted(words.items()):
                with m.Case(word):
                    m.d.comb += bus.r_data.eq(Cat(*[lanes.get(lane, C(0, 32))
                                                   for lane in range(self._data_width // 32)]))
        return m
