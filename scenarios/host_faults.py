"""Scenarios of a host that answers late: the device's host timeout on OPEN and on DMA."""

import errno
import random

from vmshm.abi.regmap import Status

from .checks import (expect, expect_bytes, expect_errno, expect_sizes, expect_status, host_object,
                     probe, reg)
from .registry import scenario


#: The device's host timeout in the timeout scenarios, and how late their host answers.
SHORT_TIMEOUT = 100
LATE = 4 * SHORT_TIMEOUT


@scenario(shm_size=4096, host_timeout=SHORT_TIMEOUT, timing={"ctl_latency": LATE},
          host_args={"late_ctl": 1})
async def host_timeout_open(bus, env):
    """Time out an OPEN the host answers late; the device closes the late success by itself."""
    drv = await probe(bus)
    fd = await drv.open()
    start = bus.now()
    await expect_errno(drv.ioctl(fd, 0, env.shm_name), errno.ETIMEDOUT, "ioctl, host late")
    took = bus.now() - start
    if took > SHORT_TIMEOUT + 64:
        raise AssertionError(f"the timed-out ioctl took {took} cycles; the device should give "
                             f"up after {SHORT_TIMEOUT}")
    await expect_status(drv, False, Status.ETIMEDOUT, "after the timeout")
    await expect_sizes(drv, 0, 0, "after the timeout")
    expect_bytes(await drv.window.read(0, 4), b"\xff" * 4, "window after the timeout")
    # The late answer arrives while the guest keeps reading registers; none of them may be held
    # up longer than the device's timeout while it deals with it.
    start, slowest = bus.now(), 0
    while bus.now() - start < 2 * LATE:
        t = bus.now()
        await reg(drv, "ID")
        slowest = max(slowest, bus.now() - t)
    if slowest > SHORT_TIMEOUT:
        raise AssertionError(f"a register read took {slowest} cycles while the late answer "
                             f"was handled; the device's timeout is {SHORT_TIMEOUT}")
    await expect_status(drv, False, Status.ETIMEDOUT, "after the late answer")
    await drv.ioctl(fd, 0, env.shm_name)
    await expect_status(drv, True, Status.OK, "after a second ioctl")
    mapping = await drv.mmap(fd, 16)
    await mapping.write(0, b"made it")
    await drv.munmap(mapping)
    await drv.close(fd)
    with host_object(env) as host:
        expect_bytes(host.read(0, 7), b"made it", "object")
    return {"timed_out_after": took, "slowest_read": slowest}


@scenario(shm_size=4096, host_timeout=SHORT_TIMEOUT, timing={"dma_latency": LATE},
          host_args={"late_dma": 2})
async def host_timeout_dma(bus, env):
    """Time out window accesses the host answers late: all ones, then correct data again."""
    wb = bus.word_bytes
    pattern = random.Random(env.seed).randbytes(env.shm_size)
    with host_object(env) as host:
        host.write(0, pattern)
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    mapping = await drv.mmap(fd, env.shm_size)
    start = bus.now()
    expect_bytes(await mapping.read(0, 4 * wb), b"\xff" * 4 * wb, "a read the host answers late")
    took = bus.now() - start
    if took > SHORT_TIMEOUT + 64:
        raise AssertionError(f"the timed-out read took {took} cycles; the device should give "
                             f"up after {SHORT_TIMEOUT}")
    # The host takes no request until it has sent the late read's beats; a write it does not
    # take within the timeout is dropped (tests/test_wedge.py), so give it time to catch up.
    # The write's own answer then comes late too.
    await bus.idle(LATE)
    await mapping.write(512, b"late write")
    await bus.idle(LATE)
    # From here the host answers at once: nothing stale may leak into these reads.
    expect_bytes(await mapping.read(1024, 4 * wb), pattern[1024:1024 + 4 * wb],
                 "the first read after the stale beats")
    expect_bytes(await mapping.read(512, 10), b"late write", "the late write read back")
    expect_bytes(await mapping.read(0, 64), pattern[:64], "offset 0 read again")
    await expect_status(drv, True, Status.OK, "after DMA timeouts")
    expect(await reg(drv, "REJECTS"), 0, "REJECTS after DMA timeouts")
    await drv.munmap(mapping)
    await drv.close(fd)
    return {"timed_out_after": took}
