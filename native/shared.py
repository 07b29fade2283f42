"""What the native engine and its C++ harness agree on, defined once.

The Shared block (the memory Python reads and writes in place), the codes ``vm_run`` returns,
the event, channel, fault and interrupt numberings and the longest burst: :func:`header_lines`
renders them into the header :mod:`vmshm.native.build` generates for ``harness.cpp``, and
:mod:`vmshm.native.engine` takes its word indices and codes from the same tuples, so neither side
can move a word or renumber a code without the other.
"""

from vmshm.abi.regmap import CtlOp
from vmshm.host_model.faults import FAULT_KINDS as _KINDS

__all__ = ["SHARED", "word", "RUN_STATUS", "CHANNELS", "EVENT_KINDS", "EVENT_OPS", "IRQ_KINDS",
           "FAULT_CHANNELS", "FAULT_KINDS", "MAX_BURST", "header_lines"]

#: The Shared block, 64-bit words in order: a one-word access hands its request over and takes
#: its answer here, so it costs one call with no argument conversions.
SHARED = (
    ("cycle", "the current cycle"),
    ("start", "the cycle the last burst was submitted on"),
    ("data", "the last completed burst's first data word"),
    ("status", "and its worst completion status"),
    ("space", "vm_word's one-beat request: its space"),
    ("dev", "its device"),
    ("addr", "its address"),
    ("write", "1 for a write"),
    ("wdata", "the word written"),
    ("be", "its byte enables"),
    ("timeout", "cycles without progress before it gives up (0: never)"),
)


def word(name):
    """Return the index of the Shared block's 64-bit word ``name``."""
    return [n for n, _ in SHARED].index(name)


#: What vm_run, vm_go and vm_word return: the burst is done, or what Python must do first.
RUN_STATUS = ("DONE", "CTL", "DMA", "DRAWS", "TIMEOUT", "DB", "IRQ")
#: Back-pressure channels of one device, in the order HostBFM's two processes draw them: the
#: control process's ctl_ready and rsp_valid, the DMA process's dma_ready and rsp_valid.
CHANNELS = ("CTL_READY", "CTL_RSP", "DMA_READY", "DMA_RSP")
#: The host-side handshakes the harness stamps (HostEvent kinds).
EVENT_KINDS = ("ctl_req_first", "ctl_req_last", "ctl_rsp", "dma_req_first", "dma_req_last",
               "dma_rsp_first", "dma_rsp_last", "reset", "db", "ring")
#: An event's op: a control op's own value (CtlOp), or these for DMA, doorbells and rings.
EVENT_OPS = {"READ": 100, "WRITE": 101, "DOORBELL": 102, "RING": 103}
#: Interrupts the guest saw (GuestBus.interrupts): an INTx rising edge, an MSI message.
IRQ_KINDS = ("intx", "msi")
#: HostFaults as the harness takes them: the channel and the kind of each fault.
FAULT_CHANNELS = ("ctl", "dma")
#: The kinds of host_model.faults, in its order: a new kind gets its C enum value with no edit here.
FAULT_KINDS = tuple(_KINDS)
#: Most beats in one burst, either way.
MAX_BURST = 256


def _enum(name, prefix, names, *, count=None):
    # A C++ enum numbering ``names`` from 0; ``count`` names one more enumerator for how many.
    body = [f"{prefix}{n.upper()} = {i}" for i, n in enumerate(names)]
    if count:
        body.append(f"{count} = {len(names)}")
    return f"enum {name + ' ' if name else ''}{{ {', '.join(body)} }};"


def header_lines():
    """Return the C++ declarations of this module's definitions, a line each."""
    lines = ["struct Shared {"]
    lines += [f"    uint64_t {name};  // {doc}" for name, doc in SHARED]
    lines += ["};",
              f"static_assert(sizeof(Shared) == {8 * len(SHARED)}, \"Shared: 64-bit words\");",
              _enum("Status", "ST_", RUN_STATUS),
              _enum("Channel", "CH_", CHANNELS, count="CHANNELS"),
              _enum("Kind", "EV_", EVENT_KINDS),
              "enum { " + ", ".join(f"OP_{n} = {v}" for n, v in EVENT_OPS.items()) + " };",
              _enum("", "IRQ_", IRQ_KINDS),
              f"enum {{ OP_RESET = {CtlOp.RESET} }};",
              _enum("FaultChannel", "FC_", FAULT_CHANNELS, count="FAULT_CHANNELS"),
              _enum("FaultKind", "F_", FAULT_KINDS),
              f"#define VMSHM_MAX_BURST {MAX_BURST}"]
    return lines
