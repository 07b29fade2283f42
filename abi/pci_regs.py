"""PCI configuration-space constants, named as in Linux's ``include/uapi/linux/pci_regs.h``.

These are the PCI Local Bus specification's offsets and bits, not VMShm's choices; VMShm's own
vendor-specific capability is described in :mod:`vmshm.abi.regmap`.
"""

PCI_CFG_SPACE_SIZE = 256

PCI_VENDOR_ID = 0x00            # 16 bits
PCI_DEVICE_ID = 0x02            # 16 bits
PCI_COMMAND = 0x04              # 16 bits
PCI_COMMAND_IO = 0x1            # respond to I/O space
PCI_COMMAND_MEMORY = 0x2        # respond to memory space
PCI_COMMAND_MASTER = 0x4        # bus mastering
PCI_COMMAND_PARITY = 0x40
PCI_COMMAND_SERR = 0x100
PCI_COMMAND_INTX_DISABLE = 0x400
PCI_STATUS = 0x06               # 16 bits
PCI_STATUS_INTERRUPT = 0x08
PCI_STATUS_CAP_LIST = 0x10      # a capability list is present
PCI_STATUS_SIG_TARGET_ABORT = 0x800     # the function answered a request with an abort
PCI_CLASS_REVISION = 0x08       # high 24 bits are class, low 8 revision
PCI_REVISION_ID = 0x08
PCI_CLASS_PROG = 0x09
PCI_CLASS_DEVICE = 0x0A         # 16 bits: base class and sub-class
PCI_CACHE_LINE_SIZE = 0x0C
PCI_LATENCY_TIMER = 0x0D
PCI_HEADER_TYPE = 0x0E
PCI_HEADER_TYPE_MASK = 0x7F
PCI_HEADER_TYPE_NORMAL = 0
PCI_BIST = 0x0F
PCI_BASE_ADDRESS_0 = 0x10
PCI_BASE_ADDRESS_5 = 0x24
PCI_BASE_ADDRESS_SPACE_IO = 0x01
PCI_BASE_ADDRESS_MEM_TYPE_MASK = 0x06
PCI_BASE_ADDRESS_MEM_TYPE_32 = 0x00
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x08
PCI_BASE_ADDRESS_MEM_MASK = ~0x0F
PCI_CARDBUS_CIS = 0x28
PCI_SUBSYSTEM_VENDOR_ID = 0x2C
PCI_SUBSYSTEM_ID = 0x2E
PCI_ROM_ADDRESS = 0x30
PCI_CAPABILITY_LIST = 0x34
PCI_INTERRUPT_LINE = 0x3C
PCI_INTERRUPT_PIN = 0x3D
PCI_MIN_GNT = 0x3E
PCI_MAX_LAT = 0x3F

PCI_CAP_LIST_ID = 0
PCI_CAP_LIST_NEXT = 1
PCI_CAP_FLAGS = 2
PCI_CAP_ID_VNDR = 0x09          # vendor-specific capability
PCI_CAP_ID_MSI = 0x05           # Message Signalled Interrupts
PCI_MSI_FLAGS = 2               # Message Control (16 bits)
PCI_MSI_FLAGS_ENABLE = 0x0001   # MSI Enable
PCI_MSI_FLAGS_QMASK = 0x000E    # Multiple Message Capable (log2 of the vectors)
PCI_MSI_FLAGS_QSIZE = 0x0070    # Multiple Message Enable
PCI_MSI_FLAGS_64BIT = 0x0080    # 64-bit addresses
PCI_MSI_ADDRESS_LO = 4          # Message Address, bits 31:2
PCI_MSI_ADDRESS_HI = 8          # Message Upper Address (64-bit capability only)
PCI_MSI_DATA_64 = 12            # Message Data (16 bits) of a 64-bit capability
PCI_MSI_64_SIZEOF = 14          # a 64-bit capability without per-vector masking
PCI_CAP_ID_EXP = 0x10           # PCI Express capability
PCI_EXP_FLAGS = 2               # PCI Express Capabilities register (version, port type)
PCI_EXP_FLAGS_VERS2 = 0x0002    # capability version 2
PCI_EXP_FLAGS_TYPE = 0x00F0     # Device/Port Type
PCI_EXP_TYPE_ENDPOINT = 0x0     # Device/Port Type 0000b: PCI Express Endpoint
PCI_EXP_TYPE_RC_END = 0x9       # Device/Port Type 1001b: Root Complex Integrated Endpoint
PCI_EXP_LNKCAP = 0x0C           # Link Capabilities (reserved, 0, in an RCiEP)
PCI_EXP_LNKCTL = 0x10           # Link Control; Link Status at 0x12 (both reserved in an RCiEP)
PCI_EXP_DEVCAP = 4              # Device Capabilities
PCI_EXP_DEVCAP_FLR = 0x10000000  # Function Level Reset capable
PCI_EXP_DEVCTL = 8              # Device Control
PCI_EXP_DEVCTL_BCR_FLR = 0x8000  # Initiate Function Level Reset (reads 0)
PCI_EXP_CAP_SIZEOF = 0x3C       # a version 2 capability for an endpoint

PCI_EXT_CAP_ID_VNDR = 0x000B    # Vendor-Specific Extended Capability (PCIe extended space)
PCI_VNDR_HEADER = 4             # a VSEC's vendor header: ID 15:0, revision 19:16, length 31:20


def PCI_EXT_CAP_ID(header):     # noqa: N802 -- Linux's macro names
    """Return an extended capability header's capability ID."""
    return header & 0xFFFF


def PCI_EXT_CAP_NEXT(header):   # noqa: N802
    """Return an extended capability header's next offset (DWORD-aligned)."""
    return header >> 20 & 0xFFC


PCI_CLASS_MEMORY_RAM = 0x0500   # base class 0x05 (memory controller), sub-class 0x00 (RAM)

PCI_ANY_ID = 0xFFFF             # what a read of an empty slot's vendor ID returns
