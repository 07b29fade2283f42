"""Scenarios of the window (BAR1): integrity, short objects, a closed window, bad requests."""

import errno
import random

from vmshm.abi.regmap import Status

from .checks import (claimed, expect, expect_bytes, expect_errno, expect_sizes, expect_status,
                     host_object, open_by_register, probe, records_in, reg, word_ceil)
from .registry import scenario


@scenario(shm_size=64 << 10)
async def window_random_integrity(bus, env):
    """Move random unaligned byte ranges both ways and check every byte against a shadow copy."""
    rng = random.Random(env.seed)
    size, wb = env.shm_size, bus.word_bytes
    shadow = bytearray(rng.randbytes(size))
    with host_object(env) as host:
        host.write(0, shadow)
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, size)
    ops = {"guest writes": 0, "host writes": 0, "guest reads": 0, "masked writes": 0}

    def pick(longest):
        n = rng.randint(1, longest)
        return rng.randrange(0, size - n + 1), n

    with host_object(env) as host:
        # Whole bursts at the limits of the burst counter: 256 words, then 257 (two bursts).
        for words in (256, 257):
            offset, data = rng.randrange(0, size // 2, wb), rng.randbytes(words * wb)
            await mapping.write(offset, data)
            shadow[offset:offset + len(data)] = data
            expect_bytes(await mapping.read(offset, len(data)), data,
                         f"{words} words at {offset:#x} read back (seed {env.seed})")
        for step in range(48):
            kind = rng.choice(list(ops))
            ops[kind] += 1
            where = f"step {step} (seed {env.seed})"
            if kind == "guest writes":
                offset, n = pick(300)
                data = rng.randbytes(n)
                await mapping.write(offset, data)
                shadow[offset:offset + n] = data
                lo, hi = max(0, offset - 2 * wb), min(size, offset + n + 2 * wb)
                expect_bytes(host.read(lo, hi - lo), shadow[lo:hi],
                             f"{where}: object around a guest write of {n} at {offset:#x}")
            elif kind == "host writes":
                offset, n = pick(300)
                data = rng.randbytes(n)
                host.write(offset, data)
                shadow[offset:offset + n] = data
                expect_bytes(await mapping.read(offset, n), data,
                             f"{where}: guest read of a host write of {n} at {offset:#x}")
            elif kind == "guest reads":
                offset, n = pick(300)
                expect_bytes(await mapping.read(offset, n), shadow[offset:offset + n],
                             f"{where}: guest read of {n} at {offset:#x}")
            else:
                # One to three bytes inside a word or across two: byte enables at work.
                offset, n = pick(3)
                data = rng.randbytes(n)
                await mapping.write(offset, data)
                shadow[offset:offset + n] = data
                lo = offset // wb * wb
                hi = min(size, word_ceil(offset + n, wb))
                expect_bytes(host.read(lo, hi - lo), shadow[lo:hi],
                             f"{where}: words around a {n}-byte write at {offset:#x}")
                expect_bytes(await mapping.read(lo, hi - lo), shadow[lo:hi],
                             f"{where}: guest read of words around a {n}-byte write")
        expect_bytes(host.read(0, size), shadow, f"whole object at the end (seed {env.seed})")
    await drv.munmap(mapping)
    await drv.close(fd)
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after accesses inside the object")
    return ops


@scenario(shm_size=1003)
async def window_short_object(bus, env):
    """Serve an object whose size is not a multiple of the word up to its end and no further."""
    size, wb = env.shm_size, bus.word_bytes
    limit = word_ceil(size, wb)     # the device decides word by word
    rng = random.Random(env.seed)
    pattern = rng.randbytes(size)
    with host_object(env) as host:
        host.write(0, pattern)
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    await expect_sizes(drv, size, size, "after OPEN")
    # mmap maps whole pages: up to the object's last page, not a byte past it.
    await expect_errno(drv.mmap(fd, word_ceil(size, 4096) + 1), errno.EINVAL,
                       "mmap past the object's last page")
    mapping = await drv.mmap(fd, size)
    expect_bytes(await mapping.read(0, size), pattern, "whole object")
    tail = b"TAIL-0123456"
    await mapping.write(size - len(tail), tail)
    await mapping.write(size - 1, b"!")
    expected = pattern[:size - len(tail)] + tail[:-1] + b"!"
    expect_bytes(await mapping.read(size - 16, 16), expected[-16:], "last bytes read back")
    await expect_errno(mapping.read(size - 1, 2), errno.EINVAL, "mapping read past the object")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after accesses inside the object")

    window = drv.window
    with host_object(env) as host:
        # The rest of the last word is served by the host: it reads as ones and takes no store.
        if limit > size:
            expect_bytes(await window.read(size, limit - size), b"\xff" * (limit - size),
                         "bytes after the object in its last word")
            await window.write(size, b"\0" * (limit - size))
            expect(await reg(drv, "REJECTS"), 0, "REJECTS after the last word")
        # Past the last word the device rejects the access itself.
        rejects = 0
        for offset, n in ((limit, 4), (limit + 1, 1), (limit, 64), (env.window_size - 4, 4),
                          (size - 5, 5 + wb)):      # a burst that starts inside reaches outside
            expect_bytes(await window.read(offset, n), b"\xff" * n,
                         f"read of {n} bytes at {offset:#x}")
            await window.write(offset, b"\0" * n)
            rejects += 2
            expect(await reg(drv, "REJECTS"), rejects, f"REJECTS after accesses at {offset:#x}")
        expect(host.current_size(), size, "object size after stores past its end")
        expect_bytes(host.read(0, size), expected, "object after stores past its end")
    await drv.munmap(mapping)
    await drv.close(fd)


@scenario(shm_size=4096)
async def window_closed(bus, env):
    """Read all ones and drop stores in the window while nothing is open, and count them."""
    pattern = random.Random(env.seed).randbytes(env.shm_size)
    with host_object(env) as host:
        host.write(0, pattern)
    drv = await probe(bus)

    async def rejected(what):
        before = await reg(drv, "REJECTS")
        mark = len(bus.records)
        expect_bytes(await drv.window.read(5, 40), b"\xff" * 40, f"{what}: window read")
        await drv.window.write(0, b"\0" * 64)
        await drv.window.write(3, b"\0")
        bursts = records_in(bus, mark, drv.window)
        expect(await reg(drv, "REJECTS"), before + len(bursts), f"{what}: REJECTS")
        expect({r.status for r in bursts}, {"SC"}, f"{what}: completion status of window accesses")
        with host_object(env) as host:
            expect_bytes(host.read(0, env.shm_size), pattern, f"{what}: object")

    await rejected("nothing opened yet")
    expect(await open_by_register(drv, env.shm_name + "-missing"), Status.ENOENT, "OPEN")
    await rejected("after a failed OPEN")
    expect(await open_by_register(drv, env.shm_name), Status.OK, "OPEN")
    expect_bytes(await drv.window.read(0, 64), pattern[:64], "window while open")
    pattern = b"open" + pattern[4:]
    await drv.window.write(0, b"open")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE")
    await rejected("after CLOSE")


@scenario(shm_size=4096)
async def bad_requests(bus, env):
    """Answer requests no BAR claims as unsupported with all ones, and keep unused BARs at 0."""
    wb = bus.word_bytes
    drv = await probe(bus)
    pdev = drv.pdev
    await drv.names.write(0, env.shm_name.encode() + b"\0")

    # Memory requests no BAR claims: nowhere near, just past a BAR, or running off its end.
    targets = [(0x1000, 8), (0xFFFF_F000, 8), (1 << 32, 8)]
    for bar in (drv.regs, drv.window, drv.names):
        targets += [(bar.base + bar.size, 8), (bar.base + bar.size - wb, 2 * wb)]
    for addr, n in targets:
        if claimed(drv, addr, n):
            continue    # the allocator put another BAR right there
        what = f"address {addr:#x}"
        expect_bytes(await bus.mem_read(addr, n), b"\xff" * n, f"read of {what}")
        expect(bus.records[-1].status, "UR", f"status of a read of {what}")
        await bus.mem_write(addr, b"\0" * n)
        expect(bus.records[-1].status, "UR", f"status of a write to {what}")

    # Configuration requests to empty slots read all ones, so the scan skips them.
    for slot in (pdev.slot + 1, 31):
        expect(await bus.cfg_read_int(slot, 0, 4), 0xFFFF_FFFF, f"ID dword of slot {slot}")
        expect(bus.records[-1].status, "UR", f"status of a configuration read of slot {slot}")
        await bus.cfg_write_int(slot, 0x04, 2, 0x6)
    # BAR registers the device does not implement (BAR3..5, or 4..5 with a 64-bit window) stay 0.
    used = set()
    for res in pdev.resources.values():
        used |= {res.index, res.index + 1} if res.is64 else {res.index}
    for index in sorted(set(range(6)) - used):
        offset = 0x10 + 4 * index
        await pdev.write_config(offset, 4, 0xFFFF_FFFF)
        expect(await pdev.read_config(offset, 4), 0, f"unimplemented BAR{index} after sizing")

    # Nothing of that reached anything: BAR2 and the registers are as they were.
    expect_bytes(await drv.names.read(0, len(env.shm_name) + 1),
                 env.shm_name.encode() + b"\0", "BAR2")
    expect(bus.records[-1].status, "SC", "status of a read of BAR2")
    expect_bytes(await drv.names.read(env.name_size - wb, wb), b"\0" * wb, "BAR2's last word")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS")
    await expect_status(drv, False, Status.OK, "after unsupported requests")
    # The device still works.
    expect(await reg(drv, "OPEN"), Status.OK, "OPEN")
    expect(await reg(drv, "CLOSE"), Status.OK, "CLOSE")
