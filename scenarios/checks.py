"""Check what the device did: the assertions and the small probes every scenario topic shares."""

import contextlib
import errno
import os

from vmshm.driver_model import vmshm_probe
from vmshm.driver_model.bus import Space
from vmshm.host_model import ShmRegion
from vmshm.abi.regmap import REG


def expect(actual, expected, what):
    """Raise :exc:`AssertionError` naming ``what`` unless ``actual == expected``."""
    if actual != expected:
        if isinstance(actual, int) and isinstance(expected, int):
            raise AssertionError(f"{what}: expected {expected:#x}, got {actual:#x}")
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def expect_bytes(actual, expected, what):
    """Raise :exc:`AssertionError` at the first byte where ``actual`` and ``expected`` differ."""
    actual, expected = bytes(actual), bytes(expected)
    if actual == expected:
        return
    if len(actual) != len(expected):
        raise AssertionError(f"{what}: expected {len(expected)} bytes, got {len(actual)}")
    i = next(i for i in range(len(actual)) if actual[i] != expected[i])
    raise AssertionError(f"{what}: first difference at byte {i:#x}: expected "
                         f"{expected[i:i + 16].hex()}, got {actual[i:i + 16].hex()}")


async def expect_errno(awaitable, code, what):
    """Await ``awaitable`` and raise :exc:`AssertionError` unless it raises ``OSError(code)``."""
    try:
        result = await awaitable
    except OSError as exc:
        if exc.errno != code:
            raise AssertionError(f"{what}: expected {errno.errorcode[code]}, got "
                                 f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc})") from exc
        return exc
    raise AssertionError(f"{what}: expected {errno.errorcode[code]}, but it succeeded "
                         f"and returned {result!r}")


async def probe(bus):
    """Boot the bus as a guest kernel would and return the driver of ``/dev/vmshm0``."""
    drivers, pdevs = await vmshm_probe(bus)
    if not drivers:
        raise AssertionError(f"no VMShm function among the {len(pdevs)} found on the bus")
    return drivers[0]


async def reg(drv, name):
    """Return the value of the register ``name``, read with one 32-bit read."""
    return await drv.regs.read32(REG[name].offset)


async def status(drv):
    """Return the STATUS register as ``(open, busy, last_error)``."""
    value = await reg(drv, "STATUS")
    return value & 1, value >> 1 & 1, value >> 8 & 0xFF


async def expect_status(drv, is_open, last_error, what):
    """Check STATUS: the OPEN bit, BUSY clear (nothing in flight), LAST_ERROR."""
    expect(await status(drv), (int(is_open), 0, last_error),
           f"{what}: STATUS (open, busy, last_error)")


async def expect_sizes(drv, map_size, obj_size, what):
    """Check MAP_SIZE, OBJ_SIZE_LO and OBJ_SIZE_HI."""
    expect(await reg(drv, "MAP_SIZE"), map_size, f"{what}: MAP_SIZE")
    expect(await reg(drv, "OBJ_SIZE_LO"), obj_size & 0xFFFF_FFFF, f"{what}: OBJ_SIZE_LO")
    expect(await reg(drv, "OBJ_SIZE_HI"), obj_size >> 32, f"{what}: OBJ_SIZE_HI")


async def open_by_register(drv, name):
    """Write ``name`` and its NUL into the name buffer, read OPEN and return its value."""
    await drv.names.write(0, os.fsencode(name) + b"\0")
    return await reg(drv, "OPEN")


@contextlib.contextmanager
def host_object(env):
    """Attach to the run's object as another host process would; close it (never unlink)."""
    region = ShmRegion.attach(env.shm_name)
    try:
        yield region
    finally:
        region.close()


def records_in(bus, since, bar):
    """Return the memory bursts since record index ``since`` that started inside ``bar``."""
    return [r for r in bus.records[since:]
            if r.space is Space.MEM and bar.base <= r.addr < bar.base + bar.size]


def claimed(drv, addr, n):
    """Return whether one of the device's BARs holds all of ``[addr, addr + n)``."""
    return any(res.start <= addr and addr + n <= res.start + res.size
               for res in drv.pdev.resources.values())


def word_ceil(n, wb):
    """Return ``n`` rounded up to a multiple of ``wb``."""
    return -(-n // wb) * wb
