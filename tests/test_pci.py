"""The soft PCI front end on its own (Amaranth only): what cannot be a scenario.

Parameter checks of :class:`~vmshm.rtl.VMShmPCI`, :class:`~vmshm.rtl.PciBus` and
:class:`~vmshm.rtl.VMShmSystem`, and identity parameters other than the defaults, which the
scenario suite (built with the default IDs) never sees.
"""

import gc
import warnings

import pytest
from amaranth.hdl import Fragment

from vmshm.abi import pci_regs as P
from vmshm.driver_model import vmshm_probe
from vmshm.abi.regmap import DEVICE_ID, REG
from vmshm.rtl import PciBus, VMShmPCI, VMShmSystem
from vmshm.sim import simulate


@pytest.mark.parametrize("kwargs, message", [
    (dict(vendor_id=0xFFFF), "vendor_id 0xffff is what an empty slot reads"),
    (dict(vendor_id=0x0000), "vendor_id 0x0000 is not a valid vendor"),
    (dict(vendor_id=-1), "vendor_id must be an integer of 16 bits, not -1"),
    (dict(vendor_id=0x1_0000), "vendor_id must be an integer of 16 bits, not 65536"),
    (dict(vendor_id="1af4"), "vendor_id must be an integer of 16 bits, not '1af4'"),
    (dict(device_id=0x1_0000), "device_id must be an integer of 16 bits"),
    (dict(subsystem_vendor_id=1.5), "subsystem_vendor_id must be an integer of 16 bits"),
    (dict(subsystem_id=-2), "subsystem_id must be an integer of 16 bits"),
    (dict(revision=0x100), "revision must be an integer of 8 bits, not 256"),
    (dict(class_code=1 << 24), "class_code must be an integer of 24 bits"),
    (dict(regs_size=512), "regs_size must be 256 or 4096, not 512"),
    (dict(regs_size=8192), "regs_size must be 256 or 4096, not 8192"),
    (dict(name_size=8, window_size=64), "name_size must be at least 16, the smallest memory BAR"),
    (dict(window_size=1 << 32), "window_size must be at most 2 GiB"),
    (dict(window_size=1 << 32, window_64bit=True), "32-bit WINDOW_SIZE field"),
    (dict(window_size=3000), "window_size must be a power of two"),
    (dict(data_width=16), "data_width must be 32 or 64"),
])
def test_vmshm_pci_refuses_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VMShmPCI(**kwargs)


def test_refused_function_leaves_no_unused_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError):
            VMShmPCI(vendor_id=0)
        with pytest.raises(ValueError):
            VMShmPCI(name_size=8, window_size=64)
        with pytest.raises(ValueError):
            PciBus(0, 32)
        with pytest.raises(ValueError):
            VMShmSystem(33)
        gc.collect()
    unused = [w for w in caught if "never used" in str(w.message)]
    assert not unused, f"expected no UnusedElaboratable warning, got {unused}"


def test_limits_accepted():
    # The smallest name buffer and the largest window (in a 32-bit or a 64-bit BAR) elaborate.
    for kwargs in (dict(name_size=16, window_size=64), dict(window_size=1 << 31),
                   dict(window_size=1 << 31, window_64bit=True)):
        fn = VMShmPCI(**kwargs)
        sizes = {b.index: b.size for b in fn.bars}
        assert sizes[1] == fn.window_size and min(sizes.values()) >= 16, kwargs
        Fragment.get(fn, None)


def test_bar_layout():
    fn = VMShmPCI(window_64bit=True, regs_size=4096)
    got = [(b.index, b.size, b.is64, b.prefetch, b.flags) for b in fn.bars]
    assert got == [(0, 4096, False, False, 0x0), (1, 1 << 20, True, True, 0xC),
                   (3, 1024, False, False, 0x0)], "expected BAR0, a 64-bit BAR1 and BAR3"
    Fragment.get(fn, None)


@pytest.mark.parametrize("count", [0, 33, -1, "2", 2.0, None])
def test_pci_bus_refuses_bad_count(count):
    with pytest.raises(ValueError, match=f"count must be an integer from 1 to 32, not "
                                         f"{count!r}"):
        PciBus(count, 32)


@pytest.mark.parametrize("count", [0, 33, "2"])
def test_system_refuses_bad_count(count):
    with pytest.raises(ValueError, match="count must be an integer from 1 to 32"):
        VMShmSystem(count)


def test_system_passes_parameters_to_every_function():
    system = VMShmSystem(3, vendor_id=0x1234, window_size=4096)
    Fragment.get(system, None)     # elaborated, as a build would
    fns = system.functions
    assert len(fns) == 3 and len({id(f) for f in fns}) == 3, "expected three distinct functions"
    for fn in fns:
        assert fn.ids["vendor_id"] == 0x1234 and fn.window_size == 4096


CUSTOM = dict(vendor_id=0x1234, device_id=0x5678, subsystem_vendor_id=0x9ABC,
              subsystem_id=0xDEF0, revision=0x42, class_code=0x058000)


@pytest.mark.parametrize("data_width", [32, 64])
def test_identity_parameters_reach_the_header(data_width):
    """Read non-default IDs from the header; a driver binds by its ID table only."""

    async def guest(bus):
        header = {
            "vendor_id": await bus.cfg_read_int(0, P.PCI_VENDOR_ID, 2),
            "device_id": await bus.cfg_read_int(0, P.PCI_DEVICE_ID, 2),
            "subsystem_vendor_id": await bus.cfg_read_int(0, P.PCI_SUBSYSTEM_VENDOR_ID, 2),
            "subsystem_id": await bus.cfg_read_int(0, P.PCI_SUBSYSTEM_ID, 2),
            "revision": await bus.cfg_read_int(0, P.PCI_REVISION_ID, 1),
            "class_code": await bus.cfg_read_int(0, P.PCI_CLASS_REVISION, 4) >> 8,
        }
        # The default ID table does not match these IDs; one naming them does.
        default, pdevs = await vmshm_probe(bus)
        custom, _ = await vmshm_probe(bus, ids=((0x1234, 0x5678),))
        ident = await custom[0].regs.read32(REG["ID"].offset)
        return header, len(default), len(pdevs), len(custom), ident

    result = simulate(guest, data_width=data_width, **CUSTOM)
    header, default, found, custom, ident = result.value
    assert header == CUSTOM, "expected the header to carry the identity parameters"
    assert (default, found, custom) == (0, 1, 1), \
        "expected one function, bound only by a driver whose table names its IDs"
    assert ident == DEVICE_ID, "expected the ID register through the custom function's BAR0"


def test_failed_window_read_sets_signaled_target_abort(shm_objects):
    """A window read the host fails sets Status' Signaled Target Abort and STATUS.DMA_ERROR;
    writing 1 clears each."""
    import os

    name = shm_objects.create(4096, tag="sta")

    async def guest(bus):
        drvs, _ = await vmshm_probe(bus)
        drv = drvs[0]
        fd = await drv.open()
        await drv.ioctl(fd, 0, name)
        before = await bus.cfg_read_int(0, P.PCI_STATUS, 2)
        fd_obj = os.open(f"/dev/shm{name}", os.O_RDWR)
        try:
            os.ftruncate(fd_obj, 1024)      # another process shrinks it: the host refuses
            data = await drv.window.read(2048, 4)
        finally:
            os.ftruncate(fd_obj, 4096)
            os.close(fd_obj)
        after = await bus.cfg_read_int(0, P.PCI_STATUS, 2)
        dma_error = await drv.regs.read32(REG["STATUS"].offset) >> 2 & 1
        await bus.cfg_write_int(0, P.PCI_STATUS, 2, P.PCI_STATUS_SIG_TARGET_ABORT)
        await drv.regs.write32(REG["STATUS"].offset, 1 << 2)
        cleared = (await bus.cfg_read_int(0, P.PCI_STATUS, 2),
                   await drv.regs.read32(REG["STATUS"].offset) >> 2 & 1)
        await drv.close(fd)
        return before, data, after, dma_error, cleared

    before, data, after, dma_error, cleared = simulate(guest).value
    assert data == b"\xff" * 4
    assert before == P.PCI_STATUS_CAP_LIST
    assert after == P.PCI_STATUS_CAP_LIST | P.PCI_STATUS_SIG_TARGET_ABORT
    assert dma_error == 1
    assert cleared == (P.PCI_STATUS_CAP_LIST, 0)
