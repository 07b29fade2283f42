"""The cocotb test module: run one job (a scenario, or any async function) on the generated Verilog.

The simulator process imports this module (``vmshm.testbench.tb``); :mod:`vmshm.testbench.runner`
tells it what to run through a pickled :class:`~vmshm.harness.job.Job` named by the
``VMSHM_JOB`` environment variable, and reads the pickled result back from the file the job names.
"""

import os
import pickle
import traceback

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, FallingEdge, ReadOnly, RisingEdge

from vmshm.driver_model.bus import Interrupt
from vmshm.harness.bfm import HostBFM, StreamGuestBus, bus_timeout
from vmshm.harness.job import release_hosts
from vmshm.harness.top import SimTop
from vmshm.rtl.layouts import msi_layout

from .bfm import CocotbIO, CocotbStream, host_port
from .outcome import save

#: Clock period in ns; cycle counts do not depend on it.
PERIOD_NS = 10
RESET_CYCLES = 3


class TB:
    """Hold the clock, the reset and the BFMs of one run."""

    def __init__(self, dut, job):
        self.dut = dut
        self.top = SimTop(job.devices, **job.params)
        self.top._MustUse__silence = True   # built only for its layouts, never elaborated here
        self.io = CocotbIO(dut.clk, dut.cycle)
        self.req = CocotbStream(dut, "req", self.top.req.payload.shape())
        self.cpl = CocotbStream(dut, "cpl", self.top.cpl.payload.shape())
        self.intx = [getattr(dut, f"intx{i}") for i in range(job.devices)]
        self.msi = [CocotbStream(dut, f"msi{i}", msi_layout()) for i in range(job.devices)]
        self.bus = StreamGuestBus(self.io, self.req, self.cpl, self.top.data_width,
                                  timeout=bus_timeout(self.top.host_timeout), intx=self.intx)

    async def reset(self):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
        dut.rst.value = 1
        for s in (self.req,):
            s.valid.value = 0
        self.cpl.ready.value = 0
        for msi in self.msi:
            msi.ready.value = 0
        for i in range(self.top.devices):
            port = host_port(dut, self.top, i)
            port.ctl_req.ready.value = 0
            port.dma_req.ready.value = 0
            port.ctl_rsp.valid.value = 0
            port.dma_rsp.valid.value = 0
            port.db.ready.value = 0
            port.ring.valid.value = 0
            port.peer_valid.value = 0
            port.peer_id.value = 0
        for _ in range(RESET_CYCLES):
            await FallingEdge(dut.clk)
        # Released at a falling edge: the cycle counter reads 0 here, as at the start of an
        # Amaranth simulation, and every BFM starts from this drive point.
        dut.rst.value = 0

    def start_interrupts(self):
        """Watch every slot's INTx line and take its MSI messages, into ``bus.interrupts``."""
        async def intx_watch(i):
            level = 0
            while True:
                await RisingEdge(self.intx[i])
                # Settled: a glitch of the combinational line within a time step is no edge.
                await ReadOnly()
                now = int(self.intx[i].value)
                if now and not level:
                    self.bus.interrupts.append(Interrupt(self.io.now(), i, "intx"))
                level = now
                while level:
                    await FallingEdge(self.intx[i])
                    await ReadOnly()
                    level = int(self.intx[i].value)

        async def msi_take(i):
            io = CocotbIO(self.dut.clk, self.dut.cycle)
            while True:
                beat = await io.get(self.msi[i])
                self.bus.interrupts.append(Interrupt(io.now(), i, "msi", beat.addr, beat.data))

        for i in range(len(self.intx)):
            cocotb.start_soon(intx_watch(i))
            cocotb.start_soon(msi_take(i))

    def start_hosts(self, hosts, timings):
        self.events = []
        ports = [host_port(self.dut, self.top, i) for i in range(len(hosts))]
        kicks = [Event() for _ in hosts]
        peers = [None] * len(hosts)

        def host_ports_now():
            # As the Amaranth harness: peer IDs onto the ports and the ring processes woken, at
            # the guest's drive point before it runs the clock.
            for i, host in enumerate(hosts):
                if host.peer_id != peers[i]:
                    peers[i] = host.peer_id
                    ports[i].peer_valid.value = int(host.peer_id is not None)
                    ports[i].peer_id.value = host.peer_id or 0
                if host.pending_rings():
                    kicks[i].set()

        def waker(kick):
            async def wake():
                await kick.wait()
                kick.clear()
            return wake

        self.bus.hosts = hosts
        self.bus.before_clock = host_ports_now
        for i, (host, timing) in enumerate(zip(hosts, timings)):
            bfm = HostBFM(ports[i], self.top.data_width, host, timing)
            self.events.append(bfm.events)
            # Each process has its own IO, as each Amaranth testbench has its own context.
            cocotb.start_soon(bfm.ctl_process(CocotbIO(self.dut.clk, self.dut.cycle)))
            cocotb.start_soon(bfm.dma_process(CocotbIO(self.dut.clk, self.dut.cycle)))
            cocotb.start_soon(bfm.db_process(CocotbIO(self.dut.clk, self.dut.cycle)))
            cocotb.start_soon(bfm.ring_process(CocotbIO(self.dut.clk, self.dut.cycle),
                                               waker(kicks[i])))


@cocotb.test()
async def run_job(dut):
    """Run the job named by ``VMSHM_JOB`` and pickle its outcome to the job's result file."""
    with open(os.environ["VMSHM_JOB"], "rb") as f:
        job = pickle.load(f)
    outcome = {"value": None, "records": [], "cycles": 0, "error": None, "hosts": [],
               "events": []}
    hosts, timings = job.make_hosts()
    try:
        tb = TB(dut, job)
        await tb.reset()
        tb.start_hosts(hosts, timings)
        tb.start_interrupts()
        try:
            outcome["value"] = await job.call(tb.bus)
        except Exception as exc:  # noqa: BLE001 -- carried back to the pytest process
            outcome["error"] = exc
            outcome["traceback"] = traceback.format_exc()
        outcome["records"] = tb.bus.records
        outcome["cycles"] = tb.io.now()
        outcome["events"] = [list(e) for e in tb.events]
    finally:
        outcome["hosts"] = release_hosts(hosts)
        save(job.result_path, outcome)
