"""Issue 22's findings on the UltraScale+ shim, each on Amaranth's simulator: what a hard IP and a
real root port would hit on a board.

Each test names the finding it guards; each failed on main before its fix (the docstring says
how). The root complex is the one tests/test_usp_shims.py plays, which checks every RQ TLP's
byte enables against PCIe Base 2.2.5 as it takes it.
"""

import pytest

from vmshm.sim import stream_get, stream_put

from test_usp_shims import HOST_BASE, RootComplex, dwords_at
from usp_harness import LIMIT, RequesterHarness, gate, pg213_rules, run, seeded

#: Writes the core may hand the requester, as each DWORD's byte enables. The first is what the
#: core owes after a window write timed out on its first beat (issue 22, finding 1): that beat
#: with its enables, then the rest of the burst writing nothing with the same data; the others
#: are other beats timing out, and enables a guest may give.
RAGGED_WRITES = [
    [0xF, 0, 0],
    [0xF, 0xF, 0b0011, 0, 0, 0],
    [0b1100, 0xF, 0xF, 0, 0],
    [0xF, 0b0110, 0xF, 0xF],
    [0, 0, 0],
    [0xF] * 20 + [0] * 12,
    [0b0110, 0xF, 0xF, 0b1010],
]


def apply_each(memory, addr, dwords, bes):
    """Write ``dwords`` at ``addr`` of ``memory``, each DWORD with its own byte enables."""
    for i, (dword, be) in enumerate(zip(dwords, bes)):
        for b in range(4):
            if be >> b & 1:
                memory[addr + 4 * i + b] = dword >> (8 * b) & 0xFF


@pytest.mark.parametrize("width", [64, 256])
def test_finding1_owed_write_beats_never_become_a_malformed_tlp(width):
    """Finding 1 (requester side): a write whose later beats write nothing (the core's owed beats
    after a window-write timeout) or whose middle DWORDs are not whole leaves as TLPs PCIe allows
    (Last DW BE non-zero when Length > 1, every DWORD between a TLP's ends whole), and host
    memory changes only where a beat's byte enables say. On main the first write left as MWr of
    3 DWORDs with last BE 0 and beat 0's data at +4 and +8."""
    rng = seeded(width + 22)
    memory = bytearray(rng.getrandbits(8) for _ in range(0x1000))
    model = bytearray(memory)
    dut = RequesterHarness(width)
    rc = RootComplex(dut, width, rng, memory, HOST_BASE, mps=128, mrrs=128)
    acks = []

    async def main(ctx):
        ctx.set(dut.host_base, HOST_BASE)
        for n, bes in enumerate(RAGGED_WRITES):
            addr = 0x100 * n + 4 * n
            data = rng.getrandbits(32)
            # The owed beats repeat the data of the beat on offer, as window.py sends them.
            dwords = [data if be == 0 else rng.getrandbits(32) for be in bes]
            apply_each(model, addr, dwords, bes)
            for dword, be in zip(dwords, bes):
                await stream_put(ctx, dut.dma_req, {"write": 1, "addr": addr,
                                                    "count": len(bes) - 1, "data": dword,
                                                    "be": be, "tag": n},
                                 valid_gate=gate(rng, 0.3), timeout=LIMIT)
            beat = await stream_get(ctx, dut.dma_rsp, timeout=LIMIT)
            acks.append((beat.tag, beat.err))

    run(dut, main, rc.rq_process, rc.rc_process, pg213_rules(dut.rq, "RQ"))
    assert acks == [(n, 0) for n in range(len(RAGGED_WRITES))]
    for desc, first_be, last_be, payload in rc.tlps:
        if desc.dword_count > 1:
            assert last_be, "Last DW BE 0 with Length > 1 (malformed)"
            assert first_be in (0x8, 0xC, 0xE, 0xF) and last_be in (0x1, 0x3, 0x7, 0xF), \
                f"byte enables {first_be:#x}/{last_be:#x} not contiguous across the TLP"
    for n, bes in enumerate(RAGGED_WRITES):
        addr = 0x100 * n + 4 * n
        assert dwords_at(memory, addr, len(bes)) == dwords_at(model, addr, len(bes)), \
            f"write {n}: host memory holds data the guest did not write"
    # DWORDs that write nothing do not go out at all.
    assert sum(t[0].dword_count for t in rc.tlps) == sum(be != 0 for w in RAGGED_WRITES
                                                         for be in w)
