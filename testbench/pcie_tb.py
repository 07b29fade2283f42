"""The cocotb test module of the UltraScale+ top: a real root complex, and the object in its memory.

The simulator process imports this module (``vmshm.testbench.pcie_tb``); :mod:`.pcie` tells it
what to run through a pickled :class:`~vmshm.testbench.pcie.PcieJob` named by ``VMSHM_JOB``.

cocotbext-pcie's :class:`~cocotbext.pcie.xilinx.us.UltraScalePlusPcieDevice` models the hard IP
around the generated ``vmshm_usp`` (the same flat ports a ``pcie4_uscale_plus`` instance has),
and its :class:`~cocotbext.pcie.core.RootComplex` enumerates it as firmware would. The driver
model then runs unchanged on :class:`RootComplexBus`: configuration and memory requests as TLPs
from the root complex. The host object lives in the root complex's memory space
(:class:`HostObjectRegion`), so the device's DMA is memory TLPs into the real POSIX object.
"""

import os
import pickle
import random
import traceback
import warnings

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, FallingEdge, Lock, RisingEdge, Timer
from cocotbext.axi import AxiStreamBus
from cocotbext.axi.address_space import Region
from cocotbext.pcie.core import RootComplex
from cocotbext.pcie.core.caps import PciExtCap, PciExtCapId
from cocotbext.pcie.core.tlp import CplStatus, Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId
from cocotbext.pcie.xilinx.us import UltraScalePlusPcieDevice

from vmshm.abi.regmap import BAR_WINDOW
from vmshm.driver_model.bus import BusTimeout, GuestBus, Space
from vmshm.harness.bfm import HostBFM
from vmshm.harness.job import release_hosts
from vmshm.rtl.layouts import ctl_req_layout, ctl_rsp_layout, db_layout, ring_layout
from vmshm.rtl.usp import VMShmUSP
from vmshm.rtl.usp.cfg_ext import EXT_RANGE as CFG_EXT_RANGE

from .bfm import CocotbIO, CocotbStream
from .outcome import save
from .pcie_irq import (HardIpIntx, RootComplexInterrupts, configure_interrupts,
                       interrupt_options)
from .pcie_rules import PG213Checker

__all__ = ["CfgExtSpace", "IpExtendedCapability", "HostObjectRegion", "RootComplexBus",
           "PcieTB"]

#: Where the driver model's MemAllocator places BARs (its defaults): the root port's windows
#: must forward these, as firmware opens bridge windows for the kernel's later assignments.
DRIVER_MEM32 = (0xE000_0000, 0xF000_0000)
DRIVER_MEM64 = (0x80_0000_0000, 0x90_0000_0000)
#: Cycles the IP model waits for ``cfg_ext_read_data_valid`` before calling the top hung.
CFG_EXT_LIMIT = 16


#: The top's MSI ports the hard-IP model drives or reads (INTx is :class:`HardIpIntx`'s).
_MODEL_MSI_PORTS = ("cfg_interrupt_msi_enable", "cfg_interrupt_msi_int", "cfg_interrupt_msi_sent",
                    "cfg_interrupt_msi_fail", "cfg_interrupt_msi_function_number",
                    "cfg_interrupt_msi_attr", "cfg_interrupt_msi_select",
                    "cfg_interrupt_msi_data", "cfg_interrupt_msi_pending_status",
                    "cfg_interrupt_msi_pending_status_data_enable",
                    "cfg_interrupt_msi_pending_status_function_num")
#: Of those, the ones the model drives: settled before its first clock edge.
_MODEL_MSI_INPUTS = ("cfg_interrupt_msi_enable", "cfg_interrupt_msi_sent",
                     "cfg_interrupt_msi_fail", "cfg_interrupt_msi_data")


class IpExtendedCapability(PciExtCap):
    """The hard IP's own last PCI Express extended capability, at 0x100: a Device Serial
    Number (ID 0003h, serial 0). Its next pointer is what the IP is configured with
    (``hard_ip_config()["cfg_ext"]["vsec_offset"]``); the model's list sets it from the
    capability registered there, :class:`CfgExtSpace`."""

    def __init__(self):
        super().__init__()
        self.cap_id = PciExtCapId.DSN
        self.cap_ver = 1
        self.length = 3

    async def _read_register(self, reg):
        return 0

    async def _write_register(self, reg, data, mask):
        pass


class CfgExtSpace(PciExtCap):
    """The IP's user extended configuration space (0x480-0x4FF), served by the top.

    cocotbext-pcie's model leaves ``cfg_ext_*`` undriven, so this plays the IP's side of it as
    PG213 describes: every configuration read of the range, header included, becomes a
    one-cycle ``cfg_ext_read_received`` with the register and function numbers, and the data
    is what the top answers with ``cfg_ext_read_data_valid``; a write becomes a one-cycle
    ``cfg_ext_write_received``. Nothing of VMShm's capability is known here: the driver model
    finds it in what the top answers.
    """

    def __init__(self, dut, start, end):
        super().__init__()
        self.cap_id = PciExtCapId.VSEC
        self.length = (end - start) // 4
        self.dut = dut
        self._lock = Lock()

    async def _request(self, received, reg, data=0, mask=0):
        dut = self.dut
        async with self._lock:
            await RisingEdge(dut.user_clk)
            dut.cfg_ext_register_number.value = self.offset + reg
            dut.cfg_ext_function_number.value = self.parent.function_num
            dut.cfg_ext_write_data.value = data
            dut.cfg_ext_write_byte_enable.value = mask
            received.value = 1
            await RisingEdge(dut.user_clk)
            received.value = 0
            if received is dut.cfg_ext_write_received:
                return 0
            for _ in range(CFG_EXT_LIMIT):
                await RisingEdge(dut.user_clk)
                if int(dut.cfg_ext_read_data_valid.value):
                    return int(dut.cfg_ext_read_data.value)
            raise AssertionError(f"cfg_ext: no read_data_valid within {CFG_EXT_LIMIT} cycles "
                                 f"of the read of register {self.offset + reg:#x}")

    async def read_register(self, reg):
        # The header too comes from the top: the model's own (from cap_id) would hide it.
        return await self._request(self.dut.cfg_ext_read_received, reg)

    async def _write_register(self, reg, data, mask):
        await self._request(self.dut.cfg_ext_write_received, reg, data, mask)


class HostObjectRegion(Region):
    """The host model's open object as a region of the root complex's memory.

    Reads and writes go through :meth:`HostModel.dma_read <vmshm.host_model.HostModel.dma_read>`
    and ``dma_write``, so they land in the real POSIX mapping with the model's checks (never
    past the object's current size; bytes past its end read 0xff). A refused access raises, and
    the root complex answers it with Completer Abort (reads) or drops it (writes).

    Attributes
    ----------
    reads, writes : int
        Memory read and write operations the root complex made on the object.
    delay_ns : int
        How long a read takes: a slow host, for the device's completion timeout.
    """

    def __init__(self, host, size):
        super().__init__(size)
        self.host = host
        self.reads = 0
        self.writes = 0
        self.delay_ns = 0

    async def _read(self, address, length, **kwargs):
        self.reads += 1
        if self.delay_ns:
            await Timer(self.delay_ns, "ns")
        data, ok = self.host.dma_read(address, length)
        if not ok:
            raise OSError(f"host refused a read of {length} bytes at {address:#x}")
        return data

    async def _write(self, address, data, **kwargs):
        self.writes += 1
        if not self.host.dma_write(address, bytes(data)):
            raise OSError(f"host refused a write of {len(data)} bytes at {address:#x}")


class RootComplexBus(GuestBus):
    """The guest bus as TLPs from a cocotbext-pcie root complex.

    Slot ``n`` is device ``n`` on the root port's secondary bus. Words are DWORDs. A burst
    becomes memory requests that follow PCIe's rules (writes at most Max_Payload_Size, nothing
    across 4 KiB); the reads of a burst go out together. Reads that fail read all ones and
    record the completion status (``"UR"``, ``"CA"``); posted writes always record ``"SC"``,
    since nobody answers them.

    A write burst ends with a zero-length read of its last DWORD, as a Linux driver flushes
    posted writes with a read: its completion cannot pass the writes, nor the device's DMA they
    caused, so when the burst returns its data has reached the host object. Without it a caller
    that looks at the object right after a store races the store, as a real guest would.

    Parameters
    ----------
    rc : RootComplex
    bus_num : int
        The root port's secondary bus number.
    period_ns : float
        The user clock's period: :meth:`now` counts its cycles.
    timeout_ns : int
        How long a request may wait for its completion before the device is called hung.
    """

    def __init__(self, rc, bus_num, period_ns, timeout_ns):
        super().__init__()
        self.rc = rc
        self.bus_num = bus_num
        self._period = period_ns
        self._timeout = timeout_ns
        #: The root port's :class:`~vmshm.testbench.pcie_irq.RootComplexInterrupts`, which
        #: fills :attr:`interrupts`.
        self.irq = None
        # Through the hard-IP model an INTx message or an MSI reaches the root port 8 cycles
        # after the ring on an idle link (test_pcie.py measures it): room to spare.
        self.interrupt_latency = 64

    @property
    def data_width(self):
        return 32

    def now(self):
        # From simulated time: counting edges would wake Python every cycle.
        return int(get_sim_time("ns") // self._period)

    def intx(self, dev=0):
        """Return slot ``dev``'s INTx level as the root port's messages say (1: asserted)."""
        return int(dev == 0 and self.irq is not None and self.irq.intx_level)

    async def idle(self, cycles):
        """Let ``cycles`` cycles of the user clock pass."""
        if cycles > 0:
            await Timer(round(cycles * self._period), "ns")

    async def wait_interrupt(self, dev, since, timeout=None):
        """Wait until slot ``dev`` raised more than ``since`` interrupts (or ``timeout``
        cycles passed); return the count. Woken by arrivals, not every cycle."""
        def count():
            return sum(1 for i in self.interrupts if i.dev == dev)
        await self.irq.wait_until(lambda: count() > since, timeout)
        return count()

    @property
    def max_payload(self):
        return 128 << self.rc.max_payload_size

    async def _nonposted(self, req):
        cpls = await self.rc.perform_nonposted_operation(req, self._timeout, "ns")
        if not cpls:
            raise BusTimeout(f"no completion for {req!r} within {self._timeout} ns")
        return cpls

    async def _cfg(self, dev, addr, be, data=None):
        req = Tlp()
        req.fmt_type = TlpType.CFG_READ_1 if data is None else TlpType.CFG_WRITE_1
        req.requester_id = PcieId(0, 0, 0)
        req.completer_id = PcieId(self.bus_num, dev, 0)
        req.address = addr & 0xFFC
        req.length = 1
        req.first_be = be
        req.last_be = 0
        if data is not None:
            req.data = bytearray(data.to_bytes(4, "little"))
        cpl = (await self._nonposted(req))[0]
        if cpl.status != CplStatus.SC:
            return 0xFFFF_FFFF, cpl.status.name
        value = int.from_bytes(cpl.get_data()[:4], "little") if data is None else 0
        return value, "SC"

    @staticmethod
    def _tlps(addr, words, limit):
        # DWORD runs of at most `limit` bytes that stay inside one 4 KiB page: all PCIe asks.
        i = 0
        while i < words:
            a = addr + 4 * i
            n = min(words - i, limit // 4, (0x1000 - (a & 0xFFF)) // 4)
            yield i, n
            i += n

    async def _mem_read(self, addr, words, be):
        ops, reqs = [], []
        for i, n in self._tlps(addr, words, 4096):
            req = Tlp()
            a = addr + 4 * i
            req.fmt_type = TlpType.MEM_READ_64 if a > 0xFFFF_FFFF else TlpType.MEM_READ
            req.requester_id = PcieId(0, 0, 0)
            req.address = a
            req.length = n
            req.first_be = be if i == 0 else 0xF
            req.last_be = 0 if n == 1 else 0xF
            reqs.append(req)
            ops.append((n, cocotb.start_soon(self._nonposted(req))))
        out, status = [], "SC"
        for (n, op), req in zip(ops, reqs):
            cpls = await op
            bad = [c.status.name for c in cpls if c.status != CplStatus.SC]
            if not bad:
                self._check_completions(req, cpls)
            raw = b"".join(bytes(c.get_data()) for c in cpls if c.status == CplStatus.SC)
            if bad or len(raw) != 4 * n:
                status = bad[0] if bad else "CA"
                raw = b"\xff" * (4 * n)
            out += [int.from_bytes(raw[4 * k:4 * k + 4], "little") for k in range(n)]
        return out, status

    def _check_completions(self, req, cpls):
        # The completer's side of PCIe (base spec 2.3.1.1, 2.3.1.2): each completion names the
        # bytes still to come and where its first byte sits; none is larger than
        # Max_Payload_Size; all but the last end on a Read Completion Boundary.
        remaining = 1 if req.first_be == 0 and req.length == 1 else req.get_be_byte_count()
        addr = req.address + (0 if req.first_be == 0 else req.get_first_be_offset())
        for i, cpl in enumerate(cpls):
            where = f"completion {i} of {req!r}"
            if cpl.byte_count != remaining:
                raise AssertionError(f"{where}: byte count {cpl.byte_count}, expected {remaining}")
            if cpl.lower_address != addr & 0x7F:
                raise AssertionError(f"{where}: lower address {cpl.lower_address:#x}, expected "
                                     f"{addr & 0x7F:#x}")
            if cpl.length * 4 > self.max_payload:
                raise AssertionError(f"{where}: {cpl.length} DWORDs exceed Max_Payload_Size")
            moved = cpl.length * 4 - (addr & 3)
            remaining -= moved
            addr += moved
            if i < len(cpls) - 1 and addr % 64:
                raise AssertionError(f"{where}: ends at {addr:#x}, not on a 64-byte boundary")

    async def _mem_write(self, addr, beats):
        for i, n in self._tlps(addr, len(beats), self.max_payload):
            req = Tlp()
            a = addr + 4 * i
            req.fmt_type = TlpType.MEM_WRITE_64 if a > 0xFFFF_FFFF else TlpType.MEM_WRITE
            req.requester_id = PcieId(0, 0, 0)
            req.address = a
            part = beats[i:i + n]
            req.set_data(b"".join(w.to_bytes(4, "little") for w, _ in part))
            req.first_be = part[0][1]
            req.last_be = 0 if n == 1 else part[-1][1]
            await self.rc.perform_posted_operation(req)
        flush = Tlp()
        last = addr + 4 * (len(beats) - 1)
        flush.fmt_type = TlpType.MEM_READ_64 if last > 0xFFFF_FFFF else TlpType.MEM_READ
        flush.requester_id = PcieId(0, 0, 0)
        flush.address = last
        flush.length = 1
        flush.first_be = flush.last_be = 0
        await self._nonposted(flush)
        return "SC"

    async def _burst_read(self, space, dev, addr, words, be):
        if space is Space.CFG:
            value, status = await self._cfg(dev, addr, be)
            return [value], status
        return await self._mem_read(addr, words, be)

    async def _burst_write(self, space, dev, addr, beats):
        if space is Space.CFG:
            (value, be), = beats
            return (await self._cfg(dev, addr, be, value))[1]
        return await self._mem_write(addr, beats)


def _pause(probability, rng):
    """Yield, for ever, whether an interface pauses in a cycle."""
    while True:
        yield rng.random() < probability


class PcieTB:
    """Hold the hard-IP model, the root complex, the host and the guest bus of one run.

    Parameters
    ----------
    dut
        The ``vmshm_usp`` top.
    job : PcieJob
    hosts : list of HostModel
        The run's host (one), whose object is placed in the root complex's memory.
    timings : list of HostTiming
    """

    def __init__(self, dut, job, hosts, timings):
        self.dut = dut
        self.job = job
        self.top = top = VMShmUSP(**job.params)
        top._MustUse__silence = True    # built for its configuration, never elaborated here
        self.host, self.timing = hosts[0], timings[0]

        self.rc = RootComplex()
        self.rc.max_payload_size = (job.mps // 128).bit_length() - 1
        self.dev = self.port = None
        # The host object at its bus address: below 2 GiB inside the root complex's own pool,
        # anywhere else directly in its memory space.
        pool = self.rc.mem_pool
        size = job.host_window
        self.region = HostObjectRegion(self.host, size)
        if job.host_addr + size <= pool.size:
            pool.register_region(self.region, job.host_addr)
        else:
            self.rc.mem_address_space.register_region(self.region, job.host_addr)
        self.bus = None
        # A slow host answers each read in its own time, as a root complex does, without holding
        # up what else comes up the link or goes down it (the model's own handler would).
        # Completions then queue behind the posted writes sent down before them: they do not
        # pass them (PCIe ordering without Relaxed Ordering).
        for kind in (TlpType.MEM_READ, TlpType.MEM_READ_64):
            self.rc.register_rx_tlp_handler(kind, self._mem_read)

    async def _mem_read(self, tlp):
        if self.region.delay_ns:
            cocotb.start_soon(self.rc.handle_mem_read_tlp(tlp))
        else:
            await self.rc.handle_mem_read_tlp(tlp)

    def _make_device(self):
        dut, job, cfg = self.dut, self.job, self.top.hard_ip_config()
        self.dev = UltraScalePlusPcieDevice(
            alignment="dword", cq_straddle=False, cc_straddle=False, rq_straddle=False,
            rc_straddle=False, rc_4tlp_straddle=False, max_payload_size=job.mps,
            enable_client_tag=True, enable_extended_tag=False,
            **interrupt_options(cfg["interrupts"]),
            user_clk=dut.user_clk, user_reset=dut.user_reset,
            rq_bus=AxiStreamBus.from_prefix(dut, "m_axis_rq"),
            rc_bus=AxiStreamBus.from_prefix(dut, "s_axis_rc"),
            cq_bus=AxiStreamBus.from_prefix(dut, "s_axis_cq"),
            cc_bus=AxiStreamBus.from_prefix(dut, "m_axis_cc"),
            pcie_cq_np_req=dut.pcie_cq_np_req, pcie_cq_np_req_count=dut.pcie_cq_np_req_count,
            pcie_rq_seq_num0=dut.pcie_rq_seq_num0, pcie_rq_seq_num_vld0=dut.pcie_rq_seq_num_vld0,
            cfg_max_payload=dut.cfg_max_payload, cfg_max_read_req=dut.cfg_max_read_req,
            cfg_function_status=dut.cfg_function_status,
            **{name: getattr(dut, name) for name in _MODEL_MSI_PORTS})
        # The hard IP's configuration, as the top says it must be.
        fn = self.dev.functions[0]
        ids = cfg["ids"]
        fn.vendor_id, fn.device_id = ids["vendor_id"], ids["device_id"]
        fn.subsystem_vendor_id, fn.subsystem_id = ids["subsystem_vendor_id"], ids["subsystem_id"]
        fn.revision_id, fn.class_code = ids["revision"], ids["class_code"]
        for index, bar in cfg["bars"].items():
            fn.configure_bar(index, bar["size"], ext=bar["64bit"], prefetch=bar["prefetchable"])
        for index, size in job.extra_bars.items():
            fn.configure_bar(int(index), size)     # BARs the top does not know: must answer UR
        # VMShm's capability comes from the top through cfg_ext_* (issue 22, finding 9): the
        # IP's extended list ends at the user range, as the IP is configured.
        ext = cfg["cfg_ext"]
        fn.register_extended_capability(IpExtendedCapability(), offset=0x100 // 4)
        fn.register_extended_capability(CfgExtSpace(self.dut, *CFG_EXT_RANGE),
                                        offset=ext["vsec_offset"] // 4)
        configure_interrupts(fn, cfg["interrupts"])
        self.port = self.rc.make_port()
        self.port.connect(self.dev)

    async def start(self):
        """Reset, enumerate as firmware would, open the driver's windows, start the host."""
        dut = self.dut
        # Every input settled before the model's clock makes its first edge: the model samples
        # pcie_cq_np_req from that edge on, before its own reset, and cannot take an X.
        dut.user_clk.value = 0
        dut.user_reset.value = 1
        for name in ("pcie_cq_np_req_count", "pcie_rq_seq_num0", "pcie_rq_seq_num_vld0",
                     "cfg_max_payload", "cfg_max_read_req",
                     "cfg_function_status", "cfg_flr_in_process", "s_axis_cq_tvalid",
                     "cfg_interrupt_sent", *_MODEL_MSI_INPUTS, "db__ready", "ring__valid",
                     "peer_valid", "peer_id", "cfg_ext_read_received",
                     "cfg_ext_write_received", "cfg_ext_register_number",
                     "cfg_ext_function_number", "cfg_ext_write_data",
                     "cfg_ext_write_byte_enable", "s_axis_rc_tvalid",
                     "m_axis_cc_tready", "m_axis_rq_tready", "ctl_req__ready", "ctl_rsp__valid"):
            getattr(dut, name).value = 0
        await Timer(2, "ns")
        self._make_device()
        self.period_ns = 1e9 / self.dev.user_clk_frequency
        self.region.delay_ns = self.job.rc_latency * self.period_ns
        # The model holds user_reset for 100 ns after its first two clock edges.
        await Timer(400, "ns")
        while int(dut.user_reset.value):
            await Timer(10, "ns")
        # PG213's rules on the four streams, from the first cycle after reset to the end.
        window_bar = {b.function: b.index for b in self.top.bars}[BAR_WINDOW]
        self.rules = PG213Checker(dut, self.period_ns, self._object_range,
                                  window_bar=window_bar).start()
        self.intx = HardIpIntx(dut, self.dev.functions[0]).start()
        await self.rc.enumerate()
        self.enumerated = self._enumeration()
        await self._open_windows()
        if self.job.mrrs is not None:
            pdev = self.rc.find_device(self.dev.functions[0].pcie_id)
            await pdev.set_readrq((self.job.mrrs // 128).bit_length() - 1)
        port = _HostPort(CocotbStream(dut, "ctl_req", ctl_req_layout()),
                         CocotbStream(dut, "ctl_rsp", ctl_rsp_layout()),
                         CocotbStream(dut, "db", db_layout()),
                         CocotbStream(dut, "ring", ring_layout()))
        bfm = HostBFM(port, 32, self.host, self.timing, bus_address=self.job.host_addr)
        cocotb.start_soon(bfm.ctl_process(CocotbIO(dut.user_clk, _Cycles(self.period_ns))))
        cocotb.start_soon(bfm.db_process(CocotbIO(dut.user_clk, _Cycles(self.period_ns))))
        rings = Event()
        cocotb.start_soon(self._host_ports(rings))

        async def wake():
            await rings.wait()
            rings.clear()
        cocotb.start_soon(bfm.ring_process(CocotbIO(dut.user_clk, _Cycles(self.period_ns)),
                                           wake))
        self._start_pauses()
        # The root port's secondary bus is known once enumerated.
        self.bus = RootComplexBus(self.rc, self.port.sec_bus_num, self.period_ns,
                                  self.job.timeout_ns)
        self.bus.hosts = [self.host]
        self.interrupts = self.bus.irq = RootComplexInterrupts(self.port, self.period_ns,
                                                               self.bus)

    async def _host_ports(self, rings):
        # Each cycle, at the BFMs' drive point (the falling edge), the host's peer ID onto the
        # ports and the ring process woken if the host queued rings: the root complex's bus has
        # no drive point of its own to do it at, and a ring may come from any coroutine (or
        # thread) at any time.
        dut, host = self.dut, self.host
        edge = FallingEdge(dut.user_clk)
        peer = None
        while True:
            await edge
            if host.peer_id != peer:
                peer = host.peer_id
                dut.peer_valid.value = int(peer is not None)
                dut.peer_id.value = peer or 0
            if host.pending_rings():
                rings.set()

    def _object_range(self):
        # The bus addresses the device may touch: the object the host has mapped, if any.
        if not self.host.is_open:
            return None
        return self.job.host_addr, self.host.region.size

    def _enumeration(self):
        # What the root complex found, as plain data for the test to check.
        pdev = self.rc.find_device(self.dev.functions[0].pcie_id)
        return {
            "pcie_id": str(pdev.pcie_id), "vendor": pdev.vendor_id, "device": pdev.device_id,
            "class_code": pdev.class_code, "revision": pdev.revision_id,
            "subsystem": (pdev.subsystem_vendor_id, pdev.subsystem_id),
            "bars": {i: {"size": pdev.bar_size[i], "raw": pdev.bar_raw[i],
                         "addr": pdev.bar_addr[i]}
                     for i in range(6) if pdev.bar_size[i]},
            "capabilities": [(int(cap_id), off) for cap_id, off in pdev.capabilities],
            "ext_capabilities": [(int(cap_id), off) for cap_id, off in pdev.ext_capabilities],
            "max_payload": 128 << self.dev.functions[0].pcie_cap.max_payload_size,
        }

    async def _open_windows(self):
        # The kernel (here the driver model) re-assigns BARs inside its own windows; firmware
        # leaves the bridges open for it. The root port gets its windows by configuration
        # writes; the root complex's host bridge is an object of the model, set as rc.enumerate
        # sets it.
        lo32, hi32 = min(self.rc.mem_base, DRIVER_MEM32[0]), DRIVER_MEM32[1] - 1
        lo64, hi64 = DRIVER_MEM64[0], DRIVER_MEM64[1] - 1
        rp = self.rc.find_device(self.port.pcie_id)
        await rp.config_write_dword(0x20, (lo32 >> 16) & 0xFFF0 | (hi32 & 0xFFF0_0000))
        await rp.config_write_dword(0x24, (lo64 >> 16) & 0xFFF0 | (hi64 & 0xFFF0_0000) | 0x1)
        await rp.config_write_dword(0x28, lo64 >> 32)
        await rp.config_write_dword(0x2C, hi64 >> 32)
        hb = self.rc.upstream_bridge
        hb.mem_base, hb.mem_limit = lo32, hi32
        hb.prefetchable_mem_base, hb.prefetchable_mem_limit = lo64, hi64

    def _start_pauses(self):
        rng = random.Random(f"vmshm-pcie:{self.job.seed}")
        ends = {"cq": self.dev.cq_source, "cc": self.dev.cc_sink, "rq": self.dev.rq_sink,
                "rc": self.dev.rc_source}
        for name, probability in sorted(self.job.pause.items()):
            if probability:
                child = random.Random(rng.random())
                ends[name].set_pause_generator(_pause(probability, child))

    def stats(self):
        """Return counters of the run as plain data."""
        rules = getattr(self, "rules", None)
        return {"host_reads": self.region.reads, "host_writes": self.region.writes,
                "np_credits_now": int(self.dut.pcie_cq_np_req_count.value),
                "pg213_violations": [str(v) for v in rules.violations] if rules else [],
                "pg213_tlps": dict(rules.counts) if rules else {},
                "intx": list(self.interrupts.intx) if hasattr(self, "interrupts") else [],
                "msi": list(self.interrupts.msi) if hasattr(self, "interrupts") else []}


class _Cycles:
    """A stand-in for a cycle-counter port: the user clock's cycles since time 0."""

    def __init__(self, period_ns):
        self._period = period_ns

    @property
    def value(self):
        return int(get_sim_time("ns") // self._period)


class _HostPort:
    def __init__(self, ctl_req, ctl_rsp, db, ring):
        self.ctl_req = ctl_req
        self.ctl_rsp = ctl_rsp
        self.db = db
        self.ring = ring


@cocotb.test()
async def run_pcie_job(dut):
    """Run the job named by ``VMSHM_JOB`` and pickle its outcome to the job's result file."""
    # cocotbext-pcie 0.2.16 still speaks cocotb 1.x: `Clock(..., units=)` and
    # `handle.setimmediatevalue()`, which cocotb 2.1 accepts with a DeprecationWarning each.
    # Only warnings raised inside cocotbext are silenced; ours still show.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\..*")
    with open(os.environ["VMSHM_JOB"], "rb") as f:
        job = pickle.load(f)
    # Until the job returns, the run counts as cut short (an exception in one of the model's
    # coroutines ends the test without reaching our handlers).
    outcome = {"value": None, "records": [], "cycles": 0, "hosts": [], "enumerated": None,
               "stats": {}, "error": RuntimeError("the simulation ended before the job did; "
                                                  "see the simulator's log")}
    hosts, timings = job.make_hosts()
    tb = None
    try:
        tb = PcieTB(dut, job, hosts, timings)
        await tb.start()
        outcome["enumerated"] = tb.enumerated
        try:
            outcome["value"] = await job.call(tb.bus, tb)
            outcome["error"] = None
            if job.rules == "fail":
                tb.rules.check()
        except Exception as exc:  # noqa: BLE001 -- carried back to the pytest process
            if tb.rules.violations and job.rules == "fail" and \
                    not isinstance(exc, AssertionError):
                # A hang or a model error after a breach: the breach is the news.
                exc = AssertionError(f"{exc}; before it: {tb.rules.violations[0]}")
            # Whatever failed, the breaches travel with it.
            exc.pg213_violations = [str(v) for v in tb.rules.violations]
            outcome["error"] = exc
            outcome["traceback"] = traceback.format_exc()
        tb.rules.stop()
        outcome["records"] = tb.bus.records
        outcome["cycles"] = tb.bus.now()
        outcome["stats"] = tb.stats()
    except Exception as exc:  # noqa: BLE001 -- the set-up failed: say so, not "no result"
        outcome["error"] = exc
        outcome["traceback"] = traceback.format_exc()
    finally:
        outcome["hosts"] = release_hosts(hosts)
        save(job.result_path, outcome)
