"""VMShm's configuration space, described once: the Type-0 header and the capability list.

Three things present it: the soft front end's RTL (:class:`vmshm.rtl.config_regs.ConfigRegisters`
builds its read multiplexer and write logic from the description), the fuzzer's golden model and
QEMU's floor device (both keep their registers in a :class:`ConfigState`). None of them types an
offset or a next pointer: :class:`CapabilityList` places the capabilities and chains them, as
cocotbext-pcie's ``PcieCapList.register`` does, and :func:`vmshm_config_space` turns the header and
the placed capabilities into :class:`ConfigField` records (which bits of which dword, and what a
write does to them).

``docs/config_space.md`` is rendered from here (``vmshm regs --format config-space``).
"""

from dataclasses import dataclass
from typing import NamedTuple

from vmshm.abi import pci_regs as P
from vmshm.abi.regmap import (BAR_NAME, BAR_REGS, BAR_WINDOW, CAPABILITY, CAP_LEN, PCI_DEVICE_ID,
                              PCI_REVISION, PCI_SUBSYSTEM_ID, PCI_SUBSYSTEM_VENDOR_ID,
                              PCI_VENDOR_ID, capability_bytes)

__all__ = ["Capability", "CapabilityList", "ConfigField", "ConfigSpace", "ConfigState", "KINDS",
           "BarSpec", "vmshm_bars", "CAPABILITIES", "CAP_OFFSET", "MSI_CAP_OFFSET",
           "EXP_CAP_OFFSET", "COMMAND_WRITABLE", "CLASS_CODE", "vmshm_config_space",
           "render_markdown"]


# -- the capability list -------------------------------------------------------------------------

@dataclass(frozen=True)
class Capability:
    """A capability to place: its name (for lookups), PCI capability ID and length in bytes.

    The length counts the ID and next-pointer bytes: the capability spans ``length`` bytes from
    its offset, and nothing else may sit there.
    """
    name: str
    cap_id: int
    length: int

    def __post_init__(self):
        if not isinstance(self.cap_id, int) or not 0 < self.cap_id <= 0xFF:
            raise ValueError(f"capability {self.name!r}: cap_id must be an integer from 1 to "
                             f"255, not {self.cap_id!r}")
        if not isinstance(self.length, int) or self.length < 2:
            raise ValueError(f"capability {self.name!r}: length must be an integer of at least "
                             f"2 bytes (ID and next pointer), not {self.length!r}")


class CapabilityList:
    """Place capabilities in configuration space and chain them through their next pointers.

    Modelled on cocotbext-pcie's ``PciCapList.register``: a capability goes to the first offset
    from ``start`` that is a multiple of ``align`` and where its bytes overlap no other's. The
    chain (the capability pointer at 0x34, then each next pointer) runs in the order of
    registration, unless ``after`` names the capability a new one follows; unlike cocotbext's,
    the chain need not run in offset order, because VMShm's does not.

    Parameters
    ----------
    start : int
        First offset a capability may take: 0x40, the end of the Type-0 header.
    end : int
        First offset past the space (256: PCI's configuration space).
    align : int
        Alignment of every capability's offset, a power of two from 4 (the spec's: a pointer's
        bits 1:0 are reserved).
    """

    def __init__(self, *, start=0x40, end=P.PCI_CFG_SPACE_SIZE, align=4):
        if not isinstance(align, int) or align < 4 or align & (align - 1):
            raise ValueError(f"align must be a power of two from 4, not {align!r}")
        if not isinstance(start, int) or start < 0x40 or start % 4:
            raise ValueError(f"start must be a multiple of 4 from 0x40 (past the header), "
                             f"not {start!r}")
        if not isinstance(end, int) or not start < end <= P.PCI_CFG_SPACE_SIZE:
            raise ValueError(f"end must be past start ({start:#x}) and at most "
                             f"{P.PCI_CFG_SPACE_SIZE:#x}, not {end!r}")
        self.start, self.end, self.align = start, end, align
        self._offsets = {}      # name -> offset
        self._caps = {}         # name -> Capability
        self._chain = []        # names, in chain order

    def register(self, cap, *, after=None):
        """Place ``cap`` (a :class:`Capability`) and link it into the chain; return its offset.

        Raises :exc:`ValueError` if its name is taken, ``after`` names no capability, or no
        aligned offset has room for it.
        """
        if not isinstance(cap, Capability):
            raise TypeError(f"cap must be a Capability, not {cap!r}")
        if cap.name in self._caps:
            raise ValueError(f"a capability named {cap.name!r} is registered already")
        if after is not None and after not in self._caps:
            raise ValueError(f"capability {cap.name!r} is to follow {after!r}, which is not "
                             f"registered (registered: {', '.join(self._chain) or 'none'})")
        offset = next((off for off in range(self.start, self.end - cap.length + 1, self.align)
                       if all(off + cap.length <= o or o + self._caps[n].length <= off
                              for n, o in self._offsets.items())), None)
        if offset is None:
            taken = ", ".join(f"{n} {o:#04x}-{o + self._caps[n].length - 1:#04x}"
                              for n, o in sorted(self._offsets.items(), key=lambda kv: kv[1]))
            raise ValueError(f"capability {cap.name!r} ({cap.length} bytes) does not fit in "
                             f"{self.start:#04x}-{self.end - 1:#04x} at a multiple of "
                             f"{self.align}: taken are {taken or 'none'}")
        self._caps[cap.name] = cap
        self._offsets[cap.name] = offset
        self._chain.insert(len(self._chain) if after is None else self._chain.index(after) + 1,
                           cap.name)
        return offset

    def __iter__(self):
        """Yield the capabilities in chain order."""
        return (self._caps[name] for name in self._chain)

    def __len__(self):
        return len(self._chain)

    def offset(self, name):
        """Return where capability ``name`` sits."""
        return self._offsets[self._known(name)]

    def next_pointer(self, name):
        """Return the next pointer of capability ``name``: the next one's offset, 0 at the end."""
        k = self._chain.index(self._known(name))
        return self._offsets[self._chain[k + 1]] if k + 1 < len(self._chain) else 0

    @property
    def head(self):
        """int: The capability pointer (0x34): the first capability's offset, 0 if none."""
        return self._offsets[self._chain[0]] if self._chain else 0

    def _known(self, name):
        if name not in self._caps:
            raise KeyError(f"no capability named {name!r} (registered: "
                           f"{', '.join(self._chain) or 'none'})")
        return name


#: VMShm's capabilities. Each starts on a 16-byte boundary, which puts them where drivers have
#: found them since each was added: the vendor-specific capability (ABI 1.0), the PCI Express
#: capability with Function Level Reset, then the 64-bit MSI capability (ABI 1.2), which did not
#: fit in the gap before the PCI Express one. In the chain MSI follows the vendor capability.
CAPABILITIES = CapabilityList(align=16)
CAPABILITIES.register(Capability("vendor", P.PCI_CAP_ID_VNDR, CAP_LEN))
CAPABILITIES.register(Capability("exp", P.PCI_CAP_ID_EXP, P.PCI_EXP_CAP_SIZEOF))
CAPABILITIES.register(Capability("msi", P.PCI_CAP_ID_MSI, P.PCI_MSI_64_SIZEOF), after="vendor")

#: Where the vendor-specific capability sits (a driver finds the BARs and sizes there).
CAP_OFFSET = CAPABILITIES.offset("vendor")
#: Where the MSI capability sits (one message, 64-bit address, no per-vector masking).
MSI_CAP_OFFSET = CAPABILITIES.offset("msi")
#: Where the PCI Express capability sits: it carries Initiate FLR.
EXP_CAP_OFFSET = CAPABILITIES.offset("exp")


# -- fields --------------------------------------------------------------------------------------

#: What a field does, and what a write does to it.
KINDS = {
    "const": "reads its value; writes are ignored",
    "rw": "read-write: each enabled byte sets the field's writable bits, the rest read 0",
    "rw1c": "read-only state the device sets; writing 1 to a bit clears it",
    "live": "reads a signal of the function; writes are ignored",
    "trigger": "reads 0; writing 1 to it starts an action (one pulse)",
}


@dataclass(frozen=True)
class ConfigField:
    """Bits ``lsb`` to ``lsb + width - 1`` of the configuration dword at ``offset``.

    ``value`` is a ``const`` field's value; ``mask`` the bits of an ``rw`` field software may set
    (the others stay 0). With ``flr`` a Function Level Reset returns the field to 0; every
    stateful field (``rw``, ``rw1c``) resets to 0 with the function. A field without ``flr`` is
    sticky across an FLR: PCIe Base 6.6.2 allows only sticky, HwInit and a short list of link
    fields (none of which this function has), so every stateful field here has ``flr``.
    """
    name: str
    offset: int
    lsb: int
    width: int
    kind: str
    value: int = 0
    mask: int = None
    flr: bool = False
    doc: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name}: kind must be one of {', '.join(KINDS)}, "
                             f"not {self.kind!r}")
        if self.offset % 4 or not 0 <= self.offset < P.PCI_CFG_SPACE_SIZE:
            raise ValueError(f"field {self.name}: offset must be a multiple of 4 below "
                             f"{P.PCI_CFG_SPACE_SIZE:#x}, not {self.offset:#x}")
        if self.width < 1 or not 0 <= self.lsb < self.lsb + self.width <= 32:
            raise ValueError(f"field {self.name}: bits {self.lsb}..{self.lsb + self.width - 1} "
                             f"do not fit in a dword")
        if not 0 <= self.value < 1 << self.width:
            raise ValueError(f"field {self.name}: value {self.value:#x} does not fit in "
                             f"{self.width} bits")
        if self.mask is None:
            object.__setattr__(self, "mask", (1 << self.width) - 1)

    @property
    def stateful(self):
        """bool: Whether the field holds state (``rw``, ``rw1c``)."""
        return self.kind in ("rw", "rw1c")

    @property
    def bits(self):
        """int: The dword bits the field occupies (an ``rw`` field's writable ones only)."""
        return (self.mask if self.kind == "rw" else (1 << self.width) - 1) << self.lsb

    def lanes(self):
        """Yield ``(byte, lo, hi)``: the field's bits ``lo`` to ``hi - 1`` sit in dword byte ``byte``.

        A write acts on a byte's bits only when its byte enable is set.
        """
        for byte in range(self.lsb // 8, (self.lsb + self.width - 1) // 8 + 1):
            lo = max(8 * byte, self.lsb) - self.lsb
            hi = min(8 * byte + 8, self.lsb + self.width) - self.lsb
            yield byte, lo, hi


class ConfigSpace:
    """A function's configuration space: :class:`ConfigField` records, at most one per bit.

    Dwords without a field read 0 and ignore writes.
    """

    def __init__(self, fields, capabilities=None):
        self.fields = tuple(fields)
        self.capabilities = capabilities
        self._by_name = {}
        self.dwords = {}
        for f in self.fields:
            if f.name in self._by_name:
                raise ValueError(f"two fields are named {f.name!r}")
            self._by_name[f.name] = f
            for other in self.dwords.get(f.offset, ()):
                if other.bits & f.bits:
                    raise ValueError(f"fields {other.name} and {f.name} overlap in dword "
                                     f"{f.offset:#04x}")
            self.dwords.setdefault(f.offset, []).append(f)

    def field(self, name):
        """Return the field named ``name``."""
        return self._by_name[name]

    def __contains__(self, name):
        return name in self._by_name

    def of_kind(self, *kinds):
        """Return the fields of the given kinds, in order."""
        return [f for f in self.fields if f.kind in kinds]

    def reset_bytes(self, offset, length):
        """Return the ``length`` bytes at ``offset`` as they read out of reset, live fields 0."""
        state = ConfigState(self)
        live = {f.name: 0 for f in self.of_kind("live")}
        start = offset & ~3
        raw = b"".join(state.read(d, live).to_bytes(4, "little")
                       for d in range(start, offset + length, 4))
        return raw[offset - start:offset - start + length]


class ConfigState:
    """The registers of a :class:`ConfigSpace` in Python: what a model of the function keeps.

    Reads and writes go by dword, with byte enables, as configuration requests do; ``live``
    fields are read from the values the caller passes.
    """

    def __init__(self, space):
        self.space = space
        self.values = {f.name: 0 for f in space.fields if f.stateful}

    def __getitem__(self, name):
        return self.values[name]

    def __setitem__(self, name, value):
        self.values[name] = value

    def reset(self, *, flr=False):
        """Return every stateful field to 0; with ``flr``, only those a Function Level Reset does."""
        for f in self.space.fields:
            if f.stateful and (f.flr or not flr):
                self.values[f.name] = 0

    def read(self, offset, live=None):
        """Return the dword at ``offset`` (a multiple of 4); ``live`` maps live fields to values."""
        word = 0
        for f in self.space.dwords.get(offset, ()):
            if f.kind == "const":
                word |= f.value << f.lsb
            elif f.kind == "live":
                word |= (live[f.name] & ((1 << f.width) - 1)) << f.lsb
            elif f.stateful:
                word |= self.values[f.name] << f.lsb
        return word

    def write(self, offset, data, be):
        """Write dword ``data`` at ``offset`` with byte enables ``be``; return the triggers fired."""
        fired = []
        for f in self.space.dwords.get(offset, ()):
            if f.kind in ("const", "live"):
                continue
            value = data >> f.lsb & ((1 << f.width) - 1)
            for byte, lo, hi in f.lanes():
                if not be >> byte & 1:
                    continue
                bits = ((1 << hi) - 1) & ~((1 << lo) - 1)
                if f.kind == "rw":
                    keep = bits & f.mask
                    self.values[f.name] = self.values[f.name] & ~keep | value & keep
                elif f.kind == "rw1c":
                    self.values[f.name] &= ~(value & bits)
                elif value & bits and f.name not in fired:
                    fired.append(f.name)
        return fired


# -- VMShm's function ----------------------------------------------------------------------------

#: Writable bits of the command register: Memory Space, Bus Master, INTx Disable.
COMMAND_WRITABLE = P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER | P.PCI_COMMAND_INTX_DISABLE
#: The class code: memory controller, RAM, programming interface 0.
CLASS_CODE = P.PCI_CLASS_MEMORY_RAM << 8


class BarSpec(NamedTuple):
    """One memory BAR: which of the function's BARs it carries, its register index and type."""
    function: int       # BAR_REGS, BAR_WINDOW or BAR_NAME
    index: int          # BAR register 0..5 (a 64-bit BAR also takes index + 1)
    size: int
    is64: bool = False
    prefetch: bool = False


def vmshm_bars(*, regs_size, window_size, name_size, window_64bit=False):
    """Return VMShm's BARs: registers in BAR0, the window in BAR1 (prefetchable), then the names.

    The name buffer takes the next free register: BAR2, or BAR3 when the window is a 64-bit BAR.
    """
    return (BarSpec(BAR_REGS, 0, regs_size),
            BarSpec(BAR_WINDOW, 1, window_size, is64=window_64bit, prefetch=True),
            BarSpec(BAR_NAME, 3 if window_64bit else 2, name_size))


def _at(name, byte, width, kind, *, bit=0, **kw):
    # A field at configuration byte ``byte`` (pci_regs' offsets), from its bit ``bit``.
    return ConfigField(name, byte & ~3, 8 * (byte % 4) + bit, width, kind, **kw)


def _const(name, byte, width, value, doc="", *, bit=0):
    return _at(name, byte, width, "const", bit=bit, value=value, doc=doc)


def _bit(mask):
    # The position of a one-bit mask such as PCI_STATUS_INTERRUPT.
    return mask.bit_length() - 1


def _header(ids, bars, capabilities):
    f = [_const("vendor_id", P.PCI_VENDOR_ID, 16, ids["vendor_id"]),
         _const("device_id", P.PCI_DEVICE_ID, 16, ids["device_id"]),
         _at("command", P.PCI_COMMAND, 16, "rw", mask=COMMAND_WRITABLE, flr=True,
             doc="Memory Space, Bus Master, INTx Disable"),
         _at("status_interrupt", P.PCI_STATUS, 1, "live", bit=_bit(P.PCI_STATUS_INTERRUPT),
             doc="Interrupt Status: the function's interrupt is pending"),
         _const("status_cap_list", P.PCI_STATUS, 1, 1, "a capability list is present",
                bit=_bit(P.PCI_STATUS_CAP_LIST)),
         _at("status_sig_target_abort", P.PCI_STATUS, 1, "rw1c", flr=True,
             bit=_bit(P.PCI_STATUS_SIG_TARGET_ABORT),
             doc="Signaled Target Abort: a window read the host failed answered all ones"),
         _const("revision", P.PCI_REVISION_ID, 8, ids["revision"]),
         _const("class_code", P.PCI_CLASS_PROG, 24, ids["class_code"]),
         _at("cache_line_size", P.PCI_CACHE_LINE_SIZE, 8, "rw", flr=True),
         _const("header_type", P.PCI_HEADER_TYPE, 8, P.PCI_HEADER_TYPE_NORMAL)]
    for b in bars:
        # The register keeps only the base bits the BAR's size lets software set.
        mask = ((1 << (64 if b.is64 else 32)) - 1) & ~(b.size - 1)
        flags = ((P.PCI_BASE_ADDRESS_MEM_TYPE_64 if b.is64 else P.PCI_BASE_ADDRESS_MEM_TYPE_32) |
                 (P.PCI_BASE_ADDRESS_MEM_PREFETCH if b.prefetch else 0))
        off = P.PCI_BASE_ADDRESS_0 + 4 * b.index
        f.append(_at(f"bar{b.index}", off, 32, "rw", mask=mask & 0xFFFF_FFFF, flr=True,
                     doc=f"BAR{b.index}: base address"))
        f.append(_const(f"bar{b.index}_flags", off, 4, flags, "memory BAR type"))
        if b.is64:
            f.append(_at(f"bar{b.index + 1}", off + 4, 32, "rw", mask=mask >> 32, flr=True,
                         doc=f"BAR{b.index}: upper half of the base address"))
    f += [_const("subsystem_vendor_id", P.PCI_SUBSYSTEM_VENDOR_ID, 16,
                 ids["subsystem_vendor_id"]),
          _const("subsystem_id", P.PCI_SUBSYSTEM_ID, 16, ids["subsystem_id"]),
          _const("capability_pointer", P.PCI_CAPABILITY_LIST, 8, capabilities.head),
          _at("interrupt_line", P.PCI_INTERRUPT_LINE, 8, "rw", flr=True),
          _const("interrupt_pin", P.PCI_INTERRUPT_PIN, 8, 1, "INTA#")]
    return f


def _vendor(base, *, bars, window_size, name_size):
    # VMShm's own capability, from the register map's field table (its ID and next pointer
    # are the list's).
    index = {b.function: b.index for b in bars}
    raw = capability_bytes(window_size=window_size, name_size=name_size,
                           regs_bar=index[BAR_REGS], window_bar=index[BAR_WINDOW],
                           name_bar=index[BAR_NAME])
    return [_const(f"vendor_{c.name.lower()}", base + c.offset, 8 * c.size,
                   int.from_bytes(raw[c.offset:c.offset + c.size], "little"), c.doc)
            for c in CAPABILITY if c.name not in ("CAP_ID", "CAP_NEXT")]


def _msi(base):
    return [_at("msi_enable", base + P.PCI_MSI_FLAGS, 1, "rw", flr=True,
                bit=_bit(P.PCI_MSI_FLAGS_ENABLE),
                doc="Message Control: MSI Enable (one message, no per-vector masking)"),
            _const("msi_64bit", base + P.PCI_MSI_FLAGS, 1, 1,
                   "Message Control: 64-bit address capable", bit=_bit(P.PCI_MSI_FLAGS_64BIT)),
            _at("msi_address_lo", base + P.PCI_MSI_ADDRESS_LO, 32, "rw", mask=0xFFFF_FFFC,
                flr=True, doc="Message Address, bits 31:2"),
            _at("msi_address_hi", base + P.PCI_MSI_ADDRESS_HI, 32, "rw", flr=True,
                doc="Message Upper Address"),
            _at("msi_data", base + P.PCI_MSI_DATA_64, 16, "rw", flr=True, doc="Message Data")]


def _exp(base):
    # Only what a driver needs to reset the function: version 2, FLR capable, and a Root
    # Complex Integrated Endpoint (issue 22, finding 7). The soft function has no link: it sits
    # on the root bus, as QEMU's proxy puts it, so 1001b with the link registers reserved (0) is
    # what it is. A PCI Express Endpoint (0000b) would need valid Link Capabilities and every
    # prefetchable BAR 64-bit, and QEMU's proxy carries 32-bit BARs only (the window's default).
    return [_const("exp_flags", base + P.PCI_EXP_FLAGS, 16,
                   P.PCI_EXP_FLAGS_VERS2 | P.PCI_EXP_TYPE_RC_END << 4,
                   "PCI Express Capabilities: version 2, Device/Port Type 1001b (Root Complex "
                   "Integrated Endpoint: no link registers)"),
            _const("exp_devcap", base + P.PCI_EXP_DEVCAP, 32, P.PCI_EXP_DEVCAP_FLR,
                   "Device Capabilities: Function Level Reset capable"),
            _at("exp_initiate_flr", base + P.PCI_EXP_DEVCTL, 1, "trigger",
                bit=_bit(P.PCI_EXP_DEVCTL_BCR_FLR),
                doc="Device Control: Initiate Function Level Reset")]


def vmshm_config_space(*, bars, window_size, name_size, vendor_id=PCI_VENDOR_ID,
                       device_id=PCI_DEVICE_ID, subsystem_vendor_id=PCI_SUBSYSTEM_VENDOR_ID,
                       subsystem_id=PCI_SUBSYSTEM_ID, revision=PCI_REVISION,
                       class_code=CLASS_CODE):
    """Return the :class:`ConfigSpace` of a VMShm function.

    Parameters
    ----------
    bars
        The function's memory BARs: records with ``function``, ``index``, ``size``, ``is64``
        and ``prefetch`` (a :class:`BarSpec`, or the RTL's ``BarDef``).
    window_size, name_size : int
        What the vendor-specific capability tells.
    vendor_id, device_id, subsystem_vendor_id, subsystem_id, revision, class_code : int
        The identity in the header.
    """
    ids = dict(vendor_id=vendor_id, device_id=device_id, revision=revision,
               subsystem_vendor_id=subsystem_vendor_id, subsystem_id=subsystem_id,
               class_code=class_code)
    bars = tuple(bars)
    body = {"vendor": lambda base: _vendor(base, bars=bars, window_size=window_size,
                                           name_size=name_size),
            "msi": _msi, "exp": _exp}
    fields = _header(ids, bars, CAPABILITIES)
    for cap in CAPABILITIES:
        base = CAPABILITIES.offset(cap.name)
        fields += [_const(f"{cap.name}_cap_id", base + P.PCI_CAP_LIST_ID, 8, cap.cap_id,
                          "capability ID"),
                   _const(f"{cap.name}_cap_next", base + P.PCI_CAP_LIST_NEXT, 8,
                          CAPABILITIES.next_pointer(cap.name), "next capability (0: the end)")]
        fields += body[cap.name](base)
    return ConfigSpace(fields, CAPABILITIES)


def render_markdown():
    """Return ``docs/config_space.md`` as text, rendered from the default function's description."""
    space = vmshm_config_space(bars=vmshm_bars(regs_size=0x100, window_size=1 << 20,
                                               name_size=1 << 10),
                               window_size=1 << 20, name_size=1 << 10)
    out = ["# VMShm's configuration space", "",
           "<!-- Generated by `vmshm regs --format config-space -o docs/config_space.md` from "
           "abi/config_space.py. Do not edit. -->", "",
           "The soft PCI front end's Type-0 header and capabilities, for the default build "
           "(BAR sizes and the vendor capability's values follow the build parameters). "
           "Dwords not listed read 0 and ignore writes.", "",
           "The PCI Express capability gives Device/Port Type 1001b, a Root Complex Integrated "
           "Endpoint: the soft function has no link of its own and sits on the root bus (QEMU's "
           "proxy puts it there), so its link registers are reserved and read 0. A PCI Express "
           "Endpoint (0000b) would need valid link fields and a 64-bit prefetchable window, and "
           "QEMU's proxy carries 32-bit BARs only. The UltraScale+ top is a real Endpoint: its "
           "configuration space is the hard IP's.", "",
           "A Function Level Reset returns every register here to 0 (none is sticky) and the "
           "core clears the name buffer (docs/timing.md).", "",
           "## The capability list", "",
           f"The capability pointer (0x34) holds {CAPABILITIES.head:#04x}. Each capability "
           f"starts on a {CAPABILITIES.align}-byte boundary; the chain runs:", "",
           "| offset | capability | ID | bytes | next |", "|---|---|---|---|---|"]
    for cap in CAPABILITIES:
        out.append(f"| {CAPABILITIES.offset(cap.name):#04x} | {cap.name} | {cap.cap_id:#04x} | "
                   f"{cap.length} | {CAPABILITIES.next_pointer(cap.name):#04x} |")
    out += ["", "## Fields", "", "| kind | what it does |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in KINDS.items()]
    out += ["", "FLR: a Function Level Reset returns the field to 0.", "",
            "| dword | bits | field | kind | value or writable bits | FLR | meaning |",
            "|---|---|---|---|---|---|---|"]
    for off in sorted(space.dwords):
        for f in sorted(space.dwords[off], key=lambda f: (f.lsb, f.width)):
            hi = f.lsb + f.width - 1
            bits = f"{hi}:{f.lsb}" if f.width > 1 else f"{f.lsb}"
            what = (f"{f.value:#x}" if f.kind == "const" else
                    f"{f.mask:#x}" if f.kind == "rw" else "")
            out.append(f"| {off:#04x} | {bits} | {f.name} | {f.kind} | {what} | "
                       f"{'yes' if f.flr else ''} | {f.doc} |")
    return "\n".join(out) + "\n"
