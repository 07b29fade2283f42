"""The UltraScale+ PCIe hard IP's user interface as PG213 tables it: descriptors, request types,
``tuser`` widths and bits.

Each is a :class:`~amaranth.lib.data.StructLayout` whose fields carry PG213's names and sit at
its bit positions (DWORD-aligned mode, a descriptor's DWORD 0 in bits 31:0): *Completer Request
Descriptor Format for Memory, I/O, and Atomic Op Requests* (CQ), *Completer Completion
Descriptor Format* (CC), *Requester Request Descriptor Format for Memory, I/O, and Atomic Op
Requests* (RQ) and *Requester Completion Descriptor Format* (RC). Reserved bits are fields named
``reserved*``, so every layout covers its whole descriptor. :class:`ReqType` is the request
type field of the CQ and RQ descriptors; the ``*_USER_WIDTH`` constants and the ``tuser`` bit
positions are those of the interfaces below 512 bits.
"""

import enum

from amaranth.lib import data

__all__ = ["CQ_DESCRIPTOR", "CC_DESCRIPTOR", "RQ_DESCRIPTOR", "RC_DESCRIPTOR", "ReqType",
           "POSTED_TYPES", "CQ_USER_WIDTH", "CC_USER_WIDTH", "RQ_USER_WIDTH", "RC_USER_WIDTH",
           "CQ_FIRST_BE", "CQ_LAST_BE", "CQ_DISCONTINUE", "RC_DISCONTINUE"]

#: ``tuser`` widths of the UltraScale+ (``pcie4_uscale_plus``) interfaces below 512 bits.
CQ_USER_WIDTH = 88
CC_USER_WIDTH = 33
RQ_USER_WIDTH = 62
RC_USER_WIDTH = 75
#: CQ ``tuser`` bits: first and last DWORD byte enables (valid at the first beat), discontinue.
CQ_FIRST_BE, CQ_LAST_BE, CQ_DISCONTINUE = slice(0, 4), slice(4, 8), 41
#: RC ``tuser`` discontinue bit.
RC_DISCONTINUE = 42


class ReqType(enum.IntEnum):
    """Request type field of the CQ and RQ descriptors (PG213)."""
    MEM_READ = 0b0000
    MEM_WRITE = 0b0001
    IO_READ = 0b0010
    IO_WRITE = 0b0011
    FETCH_ADD = 0b0100
    SWAP = 0b0101
    CAS = 0b0110
    MEM_READ_LOCKED = 0b0111
    CFG_READ_0 = 0b1000
    CFG_READ_1 = 0b1001
    CFG_WRITE_0 = 0b1010
    CFG_WRITE_1 = 0b1011
    MSG = 0b1100
    MSG_VENDOR = 0b1101
    MSG_ATS = 0b1110


#: Request types that take no completion: writes and messages. 0b1111 is reserved; it is dropped,
#: since answering a posted request would be the worse mistake of the two.
POSTED_TYPES = (ReqType.MEM_WRITE, ReqType.MSG, ReqType.MSG_VENDOR, ReqType.MSG_ATS, 0b1111)


#: CQ: 4 DWORDs.
CQ_DESCRIPTOR = data.StructLayout({
    "address_type":     2,      # 1:0
    "address":          62,     # 63:2, the DWORD address
    "dword_count":      11,     # 74:64
    "request_type":     4,      # 78:75
    "reserved0":        1,      # 79
    "requester_id":     16,     # 95:80
    "tag":              8,      # 103:96
    "target_function":  8,      # 111:104
    "bar_id":           3,      # 114:112
    "bar_aperture":     6,      # 120:115
    "transaction_class": 3,     # 123:121
    "attributes":       3,      # 126:124
    "reserved1":        1,      # 127
})

#: CC: 3 DWORDs.
CC_DESCRIPTOR = data.StructLayout({
    "lower_address":    7,      # 6:0
    "reserved0":        1,      # 7
    "address_type":     2,      # 9:8
    "reserved1":        6,      # 15:10
    "byte_count":       13,     # 28:16
    "locked_read_completion": 1,  # 29
    "reserved2":        2,      # 31:30
    "dword_count":      11,     # 42:32
    "completion_status": 3,     # 45:43
    "poisoned_completion": 1,   # 46
    "reserved3":        1,      # 47
    "requester_id":     16,     # 63:48
    "tag":              8,      # 71:64
    "completer_id":     16,     # 87:72: target function, then the bus number
    "completer_id_enable": 1,   # 88
    "transaction_class": 3,     # 91:89
    "attributes":       3,      # 94:92
    "force_ecrc":       1,      # 95
})

#: RQ: 4 DWORDs.
RQ_DESCRIPTOR = data.StructLayout({
    "address_type":     2,      # 1:0
    "address":          62,     # 63:2
    "dword_count":      11,     # 74:64
    "request_type":     4,      # 78:75
    "poisoned_request": 1,      # 79
    "requester_id":     16,     # 95:80
    "tag":              8,      # 103:96
    "completer_id":     16,     # 119:104
    "requester_id_enable": 1,   # 120
    "transaction_class": 3,     # 123:121
    "attributes":       3,      # 126:124
    "force_ecrc":       1,      # 127
})

#: RC: 3 DWORDs.
RC_DESCRIPTOR = data.StructLayout({
    "lower_address":    12,     # 11:0
    "error_code":       4,      # 15:12
    "byte_count":       13,     # 28:16
    "locked_read_completion": 1,  # 29
    "request_completed": 1,     # 30
    "reserved0":        1,      # 31
    "dword_count":      11,     # 42:32
    "completion_status": 3,     # 45:43
    "poisoned_completion": 1,   # 46
    "reserved1":        1,      # 47
    "requester_id":     16,     # 63:48
    "tag":              8,      # 71:64
    "completer_id":     16,     # 87:72
    "reserved2":        1,      # 88
    "transaction_class": 3,     # 91:89
    "attributes":       3,      # 94:92
    "reserved3":        1,      # 95
})

for _layout, _bits in ((CQ_DESCRIPTOR, 128), (CC_DESCRIPTOR, 96), (RQ_DESCRIPTOR, 128),
                       (RC_DESCRIPTOR, 96)):
    assert _layout.size == _bits, "a descriptor layout does not cover its DWORDs"
