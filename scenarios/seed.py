"""The seed's userspace example as a scenario: open, ioctl, mmap, read, write, close."""

import os

from vmshm.abi.regmap import Status

from .checks import expect, expect_bytes, expect_status, host_object, probe, reg
from .registry import scenario


HOST_LINE = b"Hello from the host side\n\0"


@scenario(shm_size=64 << 10, name="seed_example_64bit_window", window_64bit=True)
@scenario(shm_size=64 << 10)
async def seed_example(bus, env):
    """Run the seed's userspace example: the guest reads the host's line, then leaves its own."""
    with host_object(env) as host:
        host.write(0, HOST_LINE)
    drv = await probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, env.shm_name)
    length = min(1 << 20, await reg(drv, "MAP_SIZE"))
    expect(length, min(1 << 20, env.shm_size, env.window_size), "bytes mapped")
    mapping = await drv.mmap(fd, length)
    found = await mapping.read(0, len(HOST_LINE))
    expect_bytes(found, HOST_LINE, "what the guest found at offset 0")
    wrote = f"I was here: {env.pid if env.pid is not None else os.getpid()}\0".encode()
    await mapping.write(0, wrote)
    await drv.munmap(mapping)
    await drv.close(fd)
    await expect_status(drv, False, Status.OK, "after close")
    with host_object(env) as host:
        expect_bytes(host.read(0, len(wrote)), wrote, "what the host sees at offset 0")
        # The example's write is shorter than the host's line: the rest of the line stays.
        expect_bytes(host.read(len(wrote), len(HOST_LINE) - len(wrote)),
                     HOST_LINE[len(wrote):], "the rest of the host's line")
    return {"found": found.split(b"\0", 1)[0], "wrote": wrote,
            "window_bar": [str(r) for r in drv.pdev.resources.values() if r.prefetch]}
