"""Scenarios of object names: what the host rejects, and the name buffer's limits (BAR2)."""

import errno
import os

from vmshm.abi import pci_regs as P
from vmshm.abi.regmap import NAME_MAX, Status
from vmshm.driver_model.pci import pcie_flr

from .checks import expect, expect_bytes, expect_errno, expect_status, probe, reg
from .registry import scenario


@scenario(shm_size=4096)
async def names_rejected(bus, env):
    """Refuse malformed and missing names with the right errno; a good name still opens after."""
    drv = await probe(bus)
    long_base = env.shm_name + "-missing-"
    bad = [
        (env.shm_name + "-missing", errno.ENOENT, "a missing object"),
        (env.shm_name[1:], errno.EINVAL, "no leading '/'"),
        (env.shm_name + "/x", errno.EINVAL, "another '/'"),
        ("/dir/" + env.shm_name[1:], errno.EINVAL, "a '/' in the middle"),
        ("", errno.EINVAL, "an empty name"),
        ("/", errno.EINVAL, "'/' alone"),
        ("//", errno.EINVAL, "'//'"),
        (long_base + "m" * (NAME_MAX + 1 - len(long_base)), errno.ENOENT,
         "NAME_MAX characters, missing"),
        (long_base + "m" * (NAME_MAX + 2 - len(long_base)), errno.ENAMETOOLONG,
         "NAME_MAX + 1 characters"),
        (b"/\xff\xfe-not-utf8-missing", errno.ENOENT, "bytes that are not UTF-8, missing"),
    ]
    fd = await drv.open()
    for name, code, what in bad:
        await expect_errno(drv.ioctl(fd, 0, name), code, f"ioctl with {what}")
        await expect_status(drv, False, code, f"after ioctl with {what}")
        # The same file opens a good name right after; release it to try the next bad one.
        await drv.ioctl(fd, 0, env.shm_name)
        await expect_status(drv, True, Status.OK, f"after a good name following {what}")
        await drv.close(fd)
        await expect_status(drv, False, Status.OK, f"after release following {what}")
        fd = await drv.open()
    # As in C, the name ends at its first NUL; bytes work as well as str.
    await drv.ioctl(fd, 0, env.shm_name + "\0/trailing/junk")
    await drv.close(fd)
    fd = await drv.open()
    await drv.ioctl(fd, 0, os.fsencode(env.shm_name))
    await drv.close(fd)


@scenario(shm_size=4096, name="names_buffer_limits_small", name_size=64)
@scenario(shm_size=4096)
async def names_buffer_limits(bus, env):
    """Fill BAR2 to its last byte, refuse names that do not fit, and refuse a BAR2 with no NUL."""
    n = env.name_size
    drv = await probe(bus)
    fd = await drv.open()

    # The longest name that fits with its NUL is written; the host judges it.
    longest = "/" + "n" * (n - 2)
    host_says = errno.ENAMETOOLONG if n - 2 > NAME_MAX else errno.ENOENT
    await expect_errno(drv.ioctl(fd, 0, longest), host_says, f"ioctl with a {n - 1}-byte name")
    expect_bytes(await drv.names.read(0, n), longest.encode() + b"\0",
                 "BAR2 after the longest name")

    # Longer ones are refused by the driver before anything reaches the device.
    for size in (n, n + 1, n + 500):
        mark = len(bus.records)
        await expect_errno(drv.ioctl(fd, 0, "/" + "o" * (size - 1)), errno.ENAMETOOLONG,
                           f"ioctl with a {size}-byte name")
        expect(bus.records[mark:], [], f"bus traffic of an ioctl with a {size}-byte name")
        expect_bytes(await drv.names.read(0, n), longest.encode() + b"\0",
                     f"BAR2 after refusing a {size}-byte name")

    # BAR2 with no NUL at all: the host is given the whole buffer and refuses it.
    await drv.names.write(0, b"x" * n)
    expect(await reg(drv, "OPEN"), Status.ENAMETOOLONG, "OPEN with no NUL in BAR2")
    await expect_status(drv, False, Status.ENAMETOOLONG, "after OPEN with no NUL")
    # The same with a good name in front: still no NUL, still refused.
    await drv.names.write(0, env.shm_name.encode().ljust(n, b"x"))
    expect(await reg(drv, "OPEN"), Status.ENAMETOOLONG, "OPEN of a good name with no NUL")

    # A good name opens, although BAR2 still holds stale bytes after its NUL.
    await drv.ioctl(fd, 0, env.shm_name)
    expect_bytes(await drv.names.read(len(env.shm_name) + 1, 4), b"xxxx",
                 "stale bytes after the NUL")
    await expect_status(drv, True, Status.OK, "after a good name")
    await drv.close(fd)
    await expect_status(drv, False, Status.OK, "after release")


@scenario(shm_size=4096, name="names_cleared_by_flr_small", name_size=64)
@scenario(shm_size=4096)
async def names_cleared_by_flr(bus, env):
    """A Function Level Reset leaves nothing of the last user readable (issue 22, finding 5).

    BAR2, which no reset clears, reads all zeros, and so do Cache Line Size and Interrupt Line.
    """
    n = env.name_size
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    await drv.names.write(len(env.shm_name) + 1, b"s" * (n - len(env.shm_name) - 1))
    await bus.cfg_write_int(0, P.PCI_CACHE_LINE_SIZE, 1, 0x10)
    await bus.cfg_write_int(0, P.PCI_INTERRUPT_LINE, 1, 0x0B)
    expect(await bus.cfg_read_int(0, P.PCI_CACHE_LINE_SIZE, 1), 0x10, "Cache Line Size before")
    await pcie_flr(drv.pdev)
    expect(await bus.cfg_read_int(0, P.PCI_CACHE_LINE_SIZE, 1), 0, "Cache Line Size after FLR")
    expect(await bus.cfg_read_int(0, P.PCI_INTERRUPT_LINE, 1), 0, "Interrupt Line after FLR")
    drv = await probe(bus)
    expect_bytes(await drv.names.read(0, n), bytes(n), "BAR2 after an FLR")
    await expect_status(drv, False, Status.OK, "after an FLR")
    # The buffer works as before: a name written after the FLR opens.
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    await expect_status(drv, True, Status.OK, "a name written after the FLR")
    await drv.close(fd)
