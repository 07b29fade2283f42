"""Scenarios of the driver's file semantics: one open object per file, release with live maps."""

import errno

from vmshm.driver_model.bus import Access
from vmshm.abi.regmap import REG, Status

from .checks import (expect, expect_bytes, expect_errno, expect_status, host_object, probe,
                     records_in)
from .registry import scenario


@scenario(shm_size=8192)
async def driver_file_semantics(bus, env):
    """Refuse a second open, bad descriptors, unknown ioctls and unaligned or oversized mmaps."""
    size = env.shm_size
    drv = await probe(bus)
    fd = await drv.open()
    await expect_errno(drv.open(), errno.EBUSY, "second open")
    for bad in (fd + 1, -1, None):
        await expect_errno(drv.ioctl(bad, 0, env.shm_name), errno.EBADF, f"ioctl on fd {bad}")
    mark = len(bus.records)
    # 0 opens, 1 rings a peer, 2 reads IVPOSITION (ABI 1.2); 3 is unknown.
    await expect_errno(drv.ioctl(fd, 3, env.shm_name), errno.ENOTTY, "ioctl 3")
    expect(bus.records[mark:], [], "bus traffic of an unknown ioctl")
    await expect_errno(drv.mmap(fd, 4096), errno.EINVAL, "mmap before the ioctl")
    await expect_status(drv, False, Status.OK, "after the refused calls")

    await drv.ioctl(fd, 0, env.shm_name)
    await expect_errno(drv.ioctl(fd, 0, env.shm_name), errno.EBUSY, "a second ioctl")
    for length, offset in ((size + 1, 0), (0, 0), (-4, 0), (16, size - 8), (4, -4), (64, 128),
                           (16, size)):
        await expect_errno(drv.mmap(fd, length, offset), errno.EINVAL,
                           f"mmap of {length} bytes at {offset}")
    await expect_errno(drv.mmap(fd + 1, size), errno.EBADF, "mmap on a bad fd")
    mapping = await drv.mmap(fd, size)
    mark = len(bus.records)
    for offset, n in ((size - 4, 8), (size, 1), (-1, 1), (0, size + 1)):
        await expect_errno(mapping.read(offset, n), errno.EINVAL, f"read {n} at {offset}")
        await expect_errno(mapping.write(offset, b"\0" * n), errno.EINVAL,
                           f"write {n} at {offset}")
    expect(bus.records[mark:], [], "bus traffic of refused loads and stores")
    await mapping.write(size - 4, b"end!")
    expect_bytes(await mapping.read(size - 4, 4), b"end!", "the mapping's last bytes")

    # A mapping at an offset into the window: a page into it, as mmap's offset must be.
    part = await drv.mmap(fd, 64, 4096)
    await part.write(0, b"at 4096")
    await expect_errno(part.read(60, 8), errno.EINVAL, "read past a 64-byte mapping")
    with host_object(env) as host:
        expect_bytes(host.read(4096, 7), b"at 4096", "object behind a mapping at offset 4096")
        expect_bytes(host.read(size - 4, 4), b"end!", "object's last bytes")

    await drv.munmap(part)
    await expect_errno(drv.munmap(part), errno.EINVAL, "munmap twice")
    await expect_errno(part.read(0, 1), errno.EFAULT, "load from an unmapped mapping")
    await drv.munmap(mapping)
    await drv.close(fd)
    await expect_errno(drv.close(fd), errno.EBADF, "close twice")
    await expect_errno(drv.ioctl(fd, 0, env.shm_name), errno.EBADF, "ioctl after close")
    await expect_errno(drv.mmap(fd, 16), errno.EBADF, "mmap after close")
    await expect_status(drv, False, Status.OK, "after release")
    fd = await drv.open()
    await drv.close(fd)


def close_reads(bus, since, drv):
    """Return how many reads of CLOSE the bus carried since record index ``since``."""
    # On a 64-bit path a read of WINDOW_SIZE has the same word address: no scenario below
    # reads it in between.
    return sum(r.access is Access.READ and r.addr == drv.regs.base + REG["CLOSE"].offset
               for r in records_in(bus, since, drv.regs))


@scenario(shm_size=4096)
async def driver_release_with_live_mapping(bus, env):
    """Keep the object open after close() while a mapping lives; the last munmap releases it."""
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, 1024)
    mark = len(bus.records)
    await drv.close(fd)
    expect(close_reads(bus, mark, drv), 0, "CLOSE reads on close() with a live mapping")
    await expect_status(drv, True, Status.OK, "after close() with a live mapping")
    await mapping.write(100, b"after close")
    with host_object(env) as host:
        expect_bytes(host.read(100, 11), b"after close", "a store after close()")
    await expect_errno(drv.open(), errno.EBUSY, "open while a mapping holds the file")
    await drv.munmap(mapping)
    expect(close_reads(bus, mark, drv), 1, "CLOSE reads after the last munmap")
    await expect_status(drv, False, Status.OK, "after the last munmap")

    # Two mappings: only the last munmap releases.
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    # Of the same page, as two mmap calls of one process may be.
    first, second = await drv.mmap(fd, 64), await drv.mmap(fd, 64)
    await drv.close(fd)
    mark = len(bus.records)
    await drv.munmap(second)
    await expect_status(drv, True, Status.OK, "after munmap of one of two mappings")
    expect_bytes(await first.read(0, 4), b"\0" * 4, "the other mapping")
    await drv.munmap(first)
    expect(close_reads(bus, mark, drv), 1, "CLOSE reads after the last of two munmaps")
    await expect_status(drv, False, Status.OK, "after both munmaps")
