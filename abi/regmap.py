"""The VMShm register ABI: the one definition of BAR0's registers and the device's status codes.

Everything that needs an offset, a reset value or an errno imports it from here: the RTL register
file (:mod:`vmshm.rtl.core`), the driver model, the testbenches, ``docs/registers.md`` (made by
:func:`render_markdown` and ``vmshm regs``, checked for staleness by the test suite) and the
SystemRDL model the PeakRDL exports come from (:mod:`vmshm.abi.rdl`).

The seed's ABI is fixed: reading ``OPEN`` (0x00) opens the object named in BAR2 and returns 0 or an
errno; reading ``CLOSE`` (0x20) releases it. Everything else lives at other offsets and never
changes what the seed's driver sees. Unknown offsets read 0 and ignore writes.
"""

import errno as _errno
from dataclasses import dataclass, field

__all__ = [
    "ABI_VERSION", "DEVICE_ID", "BAR_REGS", "BAR_WINDOW", "BAR_NAME", "BAR_NAMES",
    "ACCESS", "Field", "Register", "REGISTERS", "REG", "Status", "STATUS_TEXT", "CtlOp",
    "BAR0_SIZE", "DEFAULT_WINDOW_SIZE", "DEFAULT_NAME_SIZE", "NAME_MAX",
    "PCI_VENDOR_ID", "PCI_DEVICE_ID", "PCI_SUBSYSTEM_VENDOR_ID", "PCI_SUBSYSTEM_ID",
    "PCI_REVISION", "CapField", "CAPABILITY", "CAP", "CAP_LEN", "CAP_VERSION",
    "CAP_ID_VNDR", "capability_bytes", "VECTORS", "EXT_CAP_ID_VNDR", "VSEC_OFFSET", "VSEC_ID",
    "VSEC_REV", "VSEC_LEN", "VSEC_FIELDS", "vsec_bytes",
    "render_markdown",
]

#: ``ID`` register value: ASCII "VMSH".
DEVICE_ID = 0x564D5348
#: ABI version: major in bits 31:16, minor in bits 15:0. Bump minor for additions.
ABI_VERSION = (1 << 16) | 2

BAR_REGS = 0    #: BAR0: the register file.
BAR_WINDOW = 1  #: BAR1: the window into the host object.
BAR_NAME = 2    #: BAR2: the name buffer.
BAR_NAMES = {BAR_REGS: "registers", BAR_WINDOW: "window", BAR_NAME: "name buffer"}

BAR0_SIZE = 0x100
DEFAULT_WINDOW_SIZE = 1 << 20
DEFAULT_NAME_SIZE = 1 << 10
#: Longest object name the host accepts, not counting the leading ``/`` (Linux NAME_MAX).
NAME_MAX = 255

# -- PCI identity and the discovery capability ---------------------------------------------------

PCI_VENDOR_ID = 0x1AF4          #: the original VMShm's IDs (Red Hat / Qumranet range)
PCI_DEVICE_ID = 0x6661
PCI_SUBSYSTEM_VENDOR_ID = 0x1AF4
PCI_SUBSYSTEM_ID = 0x1100
PCI_REVISION = 0x01


@dataclass(frozen=True)
class CapField:
    """A field of VMShm's vendor-specific PCI capability, at ``offset`` bytes into it."""
    name: str
    offset: int
    size: int
    doc: str


#: VMShm's vendor-specific capability (ID 0x09): what a driver needs to find the BARs and sizes
#: without knowing the build parameters.
CAPABILITY = (
    CapField("CAP_ID", 0x00, 1, "0x09, vendor-specific"),
    CapField("CAP_NEXT", 0x01, 1, "next capability (0: end of list)"),
    CapField("CAP_LEN", 0x02, 1, "length of this capability in bytes"),
    CapField("CAP_VERSION", 0x03, 1, "layout version of this capability (1)"),
    CapField("ABI_VERSION", 0x04, 4, "the VERSION register's value"),
    CapField("WINDOW_SIZE", 0x08, 4, "size of the window in bytes"),
    CapField("NAME_SIZE", 0x0C, 4, "size of the name buffer in bytes"),
    CapField("REGS_BAR", 0x10, 1, "BAR index of the registers"),
    CapField("WINDOW_BAR", 0x11, 1, "BAR index of the window"),
    CapField("NAME_BAR", 0x12, 1, "BAR index of the name buffer"),
    CapField("RESERVED", 0x13, 1, "reads 0"),
)
CAP = {f.name: f for f in CAPABILITY}
CAP_LEN = 0x14
CAP_VERSION = 1
#: PCI's capability ID of a vendor-specific capability (PCI_CAP_ID_VNDR).
CAP_ID_VNDR = 0x09
#: Interrupt vectors of the doorbell registers: INTR_MASK and INTR_STATUS have one bit each.
VECTORS = 32


def capability_bytes(*, window_size, name_size, regs_bar, window_bar, name_bar, next_ptr=0):
    """Return VMShm's vendor-specific capability as the bytes a function presents.

    Every front end (the soft one's configuration space, a hard IP's capability list) presents
    these same bytes, built here from :data:`CAPABILITY`.
    """
    values = {
        "CAP_ID": CAP_ID_VNDR, "CAP_NEXT": next_ptr, "CAP_LEN": CAP_LEN,
        "CAP_VERSION": CAP_VERSION, "ABI_VERSION": ABI_VERSION,
        "WINDOW_SIZE": window_size, "NAME_SIZE": name_size,
        "REGS_BAR": regs_bar, "WINDOW_BAR": window_bar, "NAME_BAR": name_bar, "RESERVED": 0,
    }
    raw = bytearray(CAP_LEN)
    for name, value in values.items():
        f = CAP[name]
        raw[f.offset:f.offset + f.size] = value.to_bytes(f.size, "little")
    return bytes(raw)


#: PCIe's extended capability ID of a Vendor-Specific Extended Capability (PCI_EXT_CAP_ID_VNDR).
EXT_CAP_ID_VNDR = 0x000B
#: Where a hard IP presents VMShm's VSEC: the first byte of PG213's user-implemented extended
#: configuration space (0x480-0x4FF on ``pcie4_uscale_plus``), which the IP's own extended
#: capability list is configured to point at.
VSEC_OFFSET = 0x480
#: The VSEC's vendor-defined ID (bits 15:0 of its VSEC header): ASCII "VM".
VSEC_ID = 0x564D
#: The VSEC's revision (bits 19:16 of its VSEC header): the layout of :data:`CAPABILITY`'s fields
#: (the same number as CAP_VERSION).
VSEC_REV = CAP_VERSION
#: Where :data:`CAPABILITY`'s fields sit in the VSEC, relative to their offsets in the legacy
#: capability: the 4-byte legacy header (ID, next, length, version) becomes the VSEC's 8 bytes of
#: headers, so field ``f`` is at ``VSEC_OFFSET + VSEC_FIELDS + f.offset`` (for ``f.offset >= 4``).
VSEC_FIELDS = 4
#: Bytes of the VSEC, headers included (its VSEC Length).
VSEC_LEN = CAP_LEN + VSEC_FIELDS


def vsec_bytes(*, window_size, name_size, regs_bar, window_bar, name_bar, next_offset=0):
    """Return VMShm's capability as a PCIe Vendor-Specific Extended Capability (VSEC).

    A hard IP whose legacy capability list has no room for :data:`CAPABILITY` (PG213 leaves the
    user only 0xB0-0xBF there, 16 bytes) presents this at :data:`VSEC_OFFSET` instead: the
    extended capability header (ID 000Bh, version 1, ``next_offset``), the VSEC header
    (:data:`VSEC_ID`, :data:`VSEC_REV`, :data:`VSEC_LEN`), then the same fields as the legacy
    capability from ABI_VERSION on, built by :func:`capability_bytes`.
    """
    body = capability_bytes(window_size=window_size, name_size=name_size, regs_bar=regs_bar,
                            window_bar=window_bar, name_bar=name_bar)[VSEC_FIELDS:]
    header = EXT_CAP_ID_VNDR | 1 << 16 | next_offset << 20
    vsec_header = VSEC_ID | VSEC_REV << 16 | VSEC_LEN << 20
    return header.to_bytes(4, "little") + vsec_header.to_bytes(4, "little") + body


class Status:
    """Status codes: what ``OPEN`` and ``CLOSE`` return. They are Linux errno numbers.

    The driver model raises them unchanged as ``OSError(code, ...)``.
    """
    OK           = 0
    ENOENT       = _errno.ENOENT        # no object of that name
    EIO          = _errno.EIO           # the host failed in a way that has no better code
    EACCES       = _errno.EACCES        # the object exists but may not be opened read-write
    EBUSY        = _errno.EBUSY         # OPEN while an object is already open
    EINVAL       = _errno.EINVAL        # malformed name, or an empty object
    ENAMETOOLONG = _errno.ENAMETOOLONG  # name longer than NAME_MAX, or no NUL in BAR2
    EPERM        = _errno.EPERM         # OPEN with Bus Master Enable clear: the window cannot DMA
    ETIMEDOUT    = _errno.ETIMEDOUT     # the host did not answer within the device's timeout

    @classmethod
    def all(cls):
        """Return ``{name: code}`` for every status code."""
        return {k: v for k, v in vars(cls).items() if k.isupper()}


STATUS_TEXT = {
    Status.OK:           "success",
    Status.ENOENT:       "no shared-memory object of that name exists on the host",
    Status.EIO:          "the host failed to open or map the object",
    Status.EACCES:       "the host may not open the object for reading and writing",
    Status.EBUSY:        "an object is already open; read CLOSE first",
    Status.EINVAL:       "the name is empty, lacks a leading '/', holds another '/', "
                         "is '/', '/.' or '/..', or the object is empty",
    Status.ENAMETOOLONG: "the name is longer than NAME_MAX (255) or is not NUL-terminated in BAR2",
    Status.ETIMEDOUT:    "the host did not answer in time",
    Status.EPERM:        "bus mastering is disabled: set Bus Master Enable in the command "
                         "register before OPEN",
}


class CtlOp:
    """Operations on the host control channel.

    ``RESET`` tells the host that the device was reset, or that it gave up on the packet it was
    sending: the host drops the packet it was receiving, releases any open object and answers
    nothing (see docs/timing.md, "What the device does when the host misbehaves").
    """
    OPEN = 1
    CLOSE = 2
    RESET = 3


@dataclass(frozen=True)
class Field:
    """A bit field inside a register; ``access`` (see :data:`ACCESS`) when not its register's.

    A register whose fields all act as the register does is built as one piece; where a field
    names an access of its own (STATUS: a write-1-clear bit beside read-only ones), the hardware
    builds the register field by field (:meth:`Register.parts`).
    """
    name: str
    offset: int
    width: int
    doc: str
    access: str = None

    def __post_init__(self):
        if self.access is not None and self.access not in ACCESS:
            raise ValueError(f"field {self.name} access must be one of {', '.join(ACCESS)}, "
                             f"not {self.access!r}")


#: Access types of a register, and what each means (docs/registers.md lists them).
ACCESS = {
    "RT": "read-to-trigger (the completion is held until the action is done)",
    "R": "read-only",
    "RC": "read-only and any write clears it",
    "C": "constant",
    "RW": "read-write (each byte enable writes its byte)",
    "W1C": "read-only, and writing 1 to a bit clears it; reading has no side effect",
    "W": "write-only: a write acts, a read returns 0",
}


@dataclass(frozen=True)
class Register:
    """A 32-bit register in BAR0.

    ``access`` is one of ``"R"`` (read-only), ``"RT"`` (read-to-trigger: the read starts an action
    and its completion is held until the action is done), ``"RC"`` (read-only, any write clears
    it), ``"C"`` (a constant), ``"RW"`` (read-write, byte by byte), ``"W1C"`` (read-only, writing
    1 to a bit clears it) or ``"W"`` (write-only: a write acts, a read returns 0).
    """
    name: str
    offset: int
    access: str
    reset: int
    doc: str
    fields: tuple = field(default=())

    def __post_init__(self):
        if self.offset % 4 or not 0 <= self.offset < BAR0_SIZE:
            raise ValueError(f"register {self.name} offset must be a multiple of 4 below "
                             f"{BAR0_SIZE:#x}, not {self.offset:#x}")
        if self.access not in ACCESS:
            raise ValueError(f"register {self.name} access must be one of "
                             f"{', '.join(ACCESS)}, not {self.access!r}")
        bits = 0
        for f in self.fields:
            mask = ((1 << f.width) - 1) << f.offset
            if f.width < 1 or f.offset < 0 or f.offset + f.width > 32 or bits & mask:
                raise ValueError(f"field {self.name}.{f.name} must lie inside the 32-bit "
                                 f"register without overlapping another field")
            bits |= mask

    def placement(self, data_width):
        """Return ``(word, lane)``: the register's word on a ``data_width``-bit bus and its
        32-bit lane in that word."""
        wb = data_width // 8
        return self.offset // wb, (self.offset % wb) // 4

    def parts(self):
        """Return what the hardware builds the register from, as ``(field name, offset, width,
        access, reset)``: the whole register (field name ``None``; reset ``None`` where it is a
        build parameter), or each field where one names an access of its own.
        """
        if any(f.access not in (None, self.access) for f in self.fields):
            reset = self.reset or 0
            return tuple((f.name, f.offset, f.width, f.access or self.access,
                          reset >> f.offset & ((1 << f.width) - 1)) for f in self.fields)
        return ((None, 0, 32, self.access, self.reset),)


REGISTERS = (
    Register("OPEN", 0x00, "RT", 0,
             "Read to open the object named in BAR2 and map it into BAR1. Returns 0 once the "
             "object is mapped, or an errno (see the status codes). Held until the host answers."),
    Register("ID", 0x04, "C", DEVICE_ID, "Device identification: ASCII \"VMSH\"."),
    Register("VERSION", 0x08, "C", ABI_VERSION,
             "ABI version of this register map.",
             (Field("MINOR", 0, 16, "additions only"), Field("MAJOR", 16, 16, "incompatible changes"))),
    Register("STATUS", 0x0C, "R", 0, "Device state. Read-only but for DMA_ERROR, which a "
             "write with bit 2 set clears.",
             (Field("OPEN", 0, 1, "an object is mapped into BAR1"),
              Field("BUSY", 1, 1, "an OPEN or CLOSE is in progress"),
              Field("DMA_ERROR", 2, 1, "sticky: a window access failed at the host (an error "
                    "answer, or none in time); the guest read all ones, or a PCIe front end "
                    "answered Completer Abort. Write 1 to clear", "W1C"),
              Field("LAST_ERROR", 8, 8, "status code of the last OPEN or CLOSE"))),
    Register("MAP_SIZE", 0x10, "R", 0,
             "Bytes of BAR1 backed by the object: min(object size, window size); 0 when closed. "
             "Accesses to words at or past this offset (rounded up to the data width) are "
             "rejected; within the last word, bytes past the object read 0xff and ignore writes."),
    Register("OBJ_SIZE_LO", 0x14, "R", 0, "Size of the open object in bytes, bits 31:0."),
    Register("OBJ_SIZE_HI", 0x18, "R", 0, "Size of the open object in bytes, bits 63:32."),
    Register("REJECTS", 0x1C, "RC", 0,
             "Window accesses rejected (nothing open, or past MAP_SIZE) or refused by the "
             "host (an error answer to the DMA: a read then returns all ones, a write is lost); "
             "saturates. "
             "Writing any value clears it."),
    Register("CLOSE", 0x20, "RT", 0,
             "Read to unmap and release the object. Returns 0 (also when nothing was open). "
             "Held until the host answers."),
    Register("WINDOW_SIZE", 0x24, "C", None, "Size of BAR1 in bytes (a build parameter)."),
    Register("NAME_SIZE", 0x28, "C", None, "Size of BAR2 in bytes (a build parameter)."),
    Register("TIMEOUTS", 0x2C, "RC", 0,
             "Waits on the host that timed out (an OPEN or CLOSE answered ETIMEDOUT, a window "
             "read answered all ones, a window write dropped); saturates. Writing any value "
             "clears it. Added in ABI 1.1; in ABI 1.2 also a DOORBELL write dropped because "
             "the host had not taken the previous one within the host timeout."),
    Register("INTR_MASK", 0x30, "RW", 0,
             "Bit v enables the interrupt of vector v (v < 32): INTx, or one MSI message each "
             "time INTR_STATUS & INTR_MASK gains a bit. ivshmem's Interrupt Mask. Added in "
             "ABI 1.2."),
    Register("INTR_STATUS", 0x34, "W1C", 0,
             "Bit v is set when the host rings vector v (rings of vectors >= 32 are ignored); "
             "write 1s to clear. Unlike ivshmem's Interrupt Status, a read does not clear it. "
             "The interrupt (INTx level) is asserted while INTR_STATUS & INTR_MASK is non-zero. "
             "Added in ABI 1.2."),
    Register("IVPOSITION", 0x38, "R", 0xFFFF_FFFF,
             "This device's peer ID in its ivshmem group (0 to 65535), or 0xffffffff while the "
             "host has given it none. ivshmem's IVPosition. Added in ABI 1.2.",
             (Field("PEER", 0, 16, "the peer ID"),
              Field("NONE", 16, 16, "0xffff while there is no peer ID, else 0"))),
    Register("DOORBELL", 0x3C, "W", 0,
             "Write `peer << 16 | vector` to ring vector `vector` of peer `peer` (ivshmem's "
             "Doorbell); the host takes it on its `db` port. Reads 0. The write completes at "
             "once; while the host has not taken the previous doorbell it waits for it, at most "
             "the host timeout, and is then dropped and counted in TIMEOUTS. Added in ABI 1.2.",
             (Field("VECTOR", 0, 16, "the vector to ring"),
              Field("PEER", 16, 16, "the peer to ring"))),
)

#: Registers by name.
REG = {r.name: r for r in REGISTERS}
assert len({r.offset for r in REGISTERS}) == len(REGISTERS), "register offsets overlap"


def render_markdown():
    """Return ``docs/registers.md`` as text, rendered from :data:`REGISTERS`."""
    out = ["# VMShm register map", "",
           "<!-- Generated by `vmshm regs -o docs/registers.md` from abi/regmap.py."
           " Do not edit. -->", "",
           "## BARs", "",
           "| BAR | default size | holds |", "|---|---|---|",
           f"| BAR0 | {BAR0_SIZE} B | the registers below, 32 bits each |",
           f"| BAR1 | {DEFAULT_WINDOW_SIZE // 1024} KiB | the window: loads and stores reach "
           "the host object at the same offset |",
           f"| BAR2 | {DEFAULT_NAME_SIZE} B | the name buffer: a NUL-terminated POSIX shm name "
           "such as `/shared-with-qemu` |", "",
           "## BAR0 registers", "",
           "Access: " + ", ".join(f"`{k}` {v}" for k, v in ACCESS.items()) + ". Offsets not "
           "listed read 0 and ignore writes. With a 64-bit data path one access covers two "
           "registers; a read triggers OPEN or CLOSE when its byte enables touch that register, "
           "and a write acts on a register when its byte enables touch it.",
           "",
           "| offset | name | access | reset | meaning |", "|---|---|---|---|---|"]
    for r in REGISTERS:
        reset = "parameter" if r.reset is None else f"{r.reset:#010x}"
        out.append(f"| {r.offset:#04x} | {r.name} | {r.access} | {reset} | {r.doc} |")
    for r in REGISTERS:
        if r.fields:
            out += ["", f"### {r.name} fields", "", "| bits | field | access | meaning |",
                    "|---|---|---|---|"]
            for f in r.fields:
                hi = f.offset + f.width - 1
                bits = f"{hi}:{f.offset}" if f.width > 1 else f"{f.offset}"
                out.append(f"| {bits} | {f.name} | {f.access or r.access} | {f.doc} |")
    out += ["", "## PCI identity and the discovery capability", "",
            f"Vendor:device {PCI_VENDOR_ID:04x}:{PCI_DEVICE_ID:04x} (the original VMShm's), "
            f"subsystem {PCI_SUBSYSTEM_VENDOR_ID:04x}:{PCI_SUBSYSTEM_ID:04x}, revision "
            f"{PCI_REVISION}, class 0x050000 (memory controller, RAM). All are build "
            f"parameters of the soft PCI front end. A vendor-specific capability (ID 0x09) in "
            f"configuration space tells a driver where everything is (where it sits: "
            f"[config_space.md](config_space.md)):", "",
            "| offset | size | field | meaning |", "|---|---|---|---|"]
    for f in CAPABILITY:
        out.append(f"| +{f.offset:#04x} | {f.size} | {f.name} | {f.doc} |")
    out += ["", f"A hard IP whose legacy capability list has no room for it (the UltraScale+ "
            f"top, [usp.md](usp.md)) presents the same fields as a PCIe Vendor-Specific "
            f"Extended Capability at {VSEC_OFFSET:#x}: extended capability ID "
            f"{EXT_CAP_ID_VNDR:#06x}, version 1; VSEC ID {VSEC_ID:#06x}, revision {VSEC_REV}, "
            f"length {VSEC_LEN}; each field above from ABI_VERSION on {VSEC_FIELDS} bytes "
            f"further on. A driver looks for the legacy capability first, then for this one."]
    out += ["", "## Interrupts", "",
            "The host rings a vector on the device's host port (`ring`); that sets its bit in "
            "INTR_STATUS. While INTR_STATUS & INTR_MASK is non-zero the core's `irq` is high, "
            "and each time it gains a bit (a ring of an unmasked vector not already pending, "
            "or an unmask of a pending one) `irq_msg` pulses for one cycle. The soft PCI "
            "function presents them as the PCI specification has it:", "",
            "| where | what |", "|---|---|",
            "| Interrupt Pin (0x3D) | 1: INTA# |",
            "| Interrupt Line (0x3C) | read-write, for the guest's bookkeeping; reset 0 |",
            "| Command bit 10 (Interrupt Disable) | set: INTx is not asserted |",
            "| Status bit 3 (Interrupt Status) | `irq`, whatever Interrupt Disable says |",
            "| INTx (the function's `intx` output) | `irq` and not Interrupt Disable and not "
            "MSI Enable |",
            "| MSI capability | ID 0x05, single message, 64-bit address, no per-vector "
            "masking; in the capability list between the vendor capability and the PCI "
            "Express capability ([config_space.md](config_space.md) has the offsets) |",
            "| MSI message (the function's `msi` output) | one write of Message Data to Message "
            "Address per `irq_msg` pulse while MSI Enable and Bus Master Enable are set |", "",
            "The MSI capability's registers, as offsets from its start:", "",
            "| offset | size | register | access |", "|---|---|---|---|",
            "| +0x00 | 1 | Capability ID (0x05) | constant |",
            "| +0x01 | 1 | Next pointer (the PCI Express capability's offset) | constant |",
            "| +0x02 | 2 | Message Control: bit 0 MSI Enable (RW), bits 3:1 Multiple Message "
            "Capable (0: one), bits 6:4 Multiple Message Enable (reads 0), bit 7 64-bit "
            "capable (1) | RW bit 0 |",
            "| +0x04 | 4 | Message Address, bits 31:2 (bits 1:0 read 0) | RW |",
            "| +0x08 | 4 | Message Upper Address | RW |",
            "| +0x0C | 2 | Message Data | RW |"]
    out += ["", "## Status codes", "",
            "`OPEN` and `CLOSE` return Linux errno numbers; the driver model raises them as "
            "`OSError(errno, ...)`.", "",
            "| value | name | meaning |", "|---|---|---|"]
    for name, code in sorted(Status.all().items(), key=lambda kv: kv[1]):
        out.append(f"| {code} | {name} | {STATUS_TEXT[code]} |")
    return "\n".join(out) + "\n"

