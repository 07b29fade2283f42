"""An on-chip self-test: the PCI function driven by a sequencer and answered by a block-RAM host.

A board without a PCIe link cannot talk to a real guest or a real host, but it can still show that
the device works at speed on real silicon. :class:`VMShmSelfTest` puts a :class:`VMShmPCI` between
two small pieces of logic:

- a *sequencer* that plays the Linux driver and the seed's example from a ROM (read the IDs, assign
  the BARs, enable memory space and bus mastering, write the name into the name buffer, read OPEN,
  write ``I was here: ...`` into the window and read it back, read CLOSE, check that the window
  is shut again) and checks every completion;
- an *on-chip host* (:class:`OnChipHost`) that answers OPEN for one name only, reports a block RAM
  as the object and serves the DMA master's reads and writes from it.

``passed`` or ``failed`` rises when the sequence ends; :class:`SelfTestBoard` shows them on LEDs.
"""

from amaranth.build import ResourceError
from amaranth.hdl import *
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from vmshm.abi import pci_regs as P
from vmshm.abi.regmap import (BAR0_SIZE, BAR_NAME, BAR_REGS, BAR_WINDOW, DEFAULT_NAME_SIZE,
                              DEFAULT_WINDOW_SIZE, DEVICE_ID, PCI_DEVICE_ID, PCI_VENDOR_ID, REG,
                              CtlOp, Status)

from .core import DEFAULT_HOST_TIMEOUT
from .layouts import CplStatus, Space, host_signature
from .pci import VMShmPCI

__all__ = ["OnChipHost", "VMShmSelfTest", "SelfTestBoard", "DEFAULT_SHM_NAME"]

#: The name the self-test opens: the one the original example used.
DEFAULT_SHM_NAME = b"/shared-with-qemu"
#: Cycles one step may take before the self-test gives up on it.
STEP_TIMEOUT = (1 << 16) - 1


def _as_bytes(name, value):
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray)) or not value or 0 in value:
        raise ValueError(f"{name} must be a non-empty str or bytes without NUL, not {value!r}")
    return bytes(value)


class OnChipHost(wiring.Component):
    """Answer a VMShm device's host side from on-chip memory: one name, one block RAM.

    OPEN succeeds for ``name`` only (any other name gets ``ENOENT``) and reports ``size`` bytes;
    CLOSE always succeeds. DMA reads and writes go to a block RAM of ``size`` bytes, which starts
    zeroed. A burst that reaches past ``size`` (the device should never send one) is answered with
    ``err`` on every read beat, and its writes are dropped.

    Parameters
    ----------
    addr_width, data_width : int
        As the device's host side (:func:`~vmshm.rtl.layouts.host_signature`).
    name : bytes or str
        The only object name that exists, e.g. ``b"/shared-with-qemu"``.
    size : int
        Bytes of block RAM that stand in for the object: a power of two of at least two words.

    Members
    -------
    dev : ``In(host_signature(addr_width, data_width))``
        The device's host side, seen from the host.
    """

    def __init__(self, addr_width, data_width, *, name=DEFAULT_SHM_NAME, size=1024):
        try:
            self._name = _as_bytes("name", name)
            wb = data_width // 8
            if not isinstance(size, int) or size < 2 * wb or size & (size - 1):
                raise ValueError(f"size must be a power of two of at least {2 * wb} bytes, "
                                 f"not {size!r}")
        except ValueError:
            self._MustUse__silence = True       # refused: never meant to be elaborated
            raise
        self._size = size
        self._data_width = data_width
        super().__init__({"dev": In(host_signature(addr_width, data_width))})

    @property
    def size(self):
        return self._size

    @property
    def name(self):
        return self._name

    def elaborate(self, platform):
        m = Module()
        W = self._data_width
        wb = W // 8
        wshift = exact_log2(wb)
        depth = self._size // wb
        ctl_req, ctl_rsp = self.dev.ctl_req, self.dev.ctl_rsp
        dma_req, dma_rsp = self.dev.dma_req, self.dev.dma_rsp

        # -- control channel: compare the streamed name with the one that exists ---------------
        expected = list(self._name) + [0]
        idx = Signal(range(len(expected) + 1))
        match = Signal(init=1)
        exp_byte = Signal(8)
        with m.Switch(idx):
            for i, byte in enumerate(expected):
                with m.Case(i):
                    m.d.comb += exp_byte.eq(byte)
        byte_ok = (idx < len(expected)) & (ctl_req.payload.data == exp_byte)
        status = Signal(8)
        size = Signal(64)
        # The block RAM has no host bus address: DMA reaches it by offset, so an answer's `addr`
        # (where the layout has one) is 0. Held in a register like the rest of the answer: an
        # output bit driven by a bare constant makes Yosys write an `always @*` with nothing to
        # wake it (Verilator's ALWNEVER).
        base = Signal(64)

        # The answer echoes the request's op and tag; a RESET packet is dropped, unanswered.
        rsp_op = Signal(2)
        rsp_tag = Signal(len(ctl_req.payload.tag))

        with m.FSM(name="ctl_fsm"):
            with m.State("IDLE"):
                m.d.comb += ctl_req.ready.eq(1)
                with m.If(ctl_req.valid):
                    m.d.sync += [rsp_op.eq(ctl_req.payload.op), rsp_tag.eq(ctl_req.payload.tag)]
                    with m.If(ctl_req.payload.op == CtlOp.RESET):
                        with m.If(ctl_req.payload.last):
                            m.d.sync += [idx.eq(0), match.eq(1)]
                    with m.Elif(ctl_req.payload.op == CtlOp.OPEN):
                        m.d.sync += [idx.eq(Mux(idx == len(expected), idx, idx + 1)),
                                     match.eq(match & byte_ok)]
                        with m.If(ctl_req.payload.last):
                            found = match & byte_ok & (idx == len(expected) - 1)
                            m.d.sync += [
                                status.eq(Mux(found, Status.OK, Status.ENOENT)),
                                size.eq(Mux(found, self._size, 0)),
                                base.eq(0),
                                idx.eq(0), match.eq(1),
                            ]
                            m.next = "ANSWER"
                    with m.Else():
                        m.d.sync += [status.eq(Status.OK), size.eq(0)]
                        m.next = "ANSWER"
            with m.State("ANSWER"):
                m.d.comb += [
                    ctl_rsp.valid.eq(1),
                    ctl_rsp.payload.status.eq(status),
                    ctl_rsp.payload.size.eq(size),
                    ctl_rsp.payload.op.eq(rsp_op),
                    ctl_rsp.payload.tag.eq(rsp_tag),
                ]
                if "addr" in dict(iter(ctl_rsp.payload.shape())):
                    m.d.comb += ctl_rsp.payload.addr.eq(base)
                with m.If(ctl_rsp.ready):
                    m.next = "IDLE"

        # -- DMA: the block RAM is the object ----------------------------------------------------
        m.submodules.mem = mem = Memory(shape=W, depth=depth, init=[])
        wr = mem.write_port(granularity=8)
        rd = mem.read_port()
        ptr = Signal(range(depth))
        left = Signal(8)
        primed = Signal()       # the read port holds the word at ptr
        oob = Signal()          # the burst reaches past the object
        req = dma_req.payload
        tag = Signal(len(req.tag))
        m.d.comb += dma_rsp.payload.tag.eq(tag)

        # Whether the burst reaches past the object: its first word past the end, or its last
        # word's index (the word-aligned offset plus count: one narrow adder) past the last.
        obj_bits = exact_log2(self._size)
        past_end = Signal()
        m.d.comb += past_end.eq(req.addr[obj_bits:].any() |
                                ((req.addr[wshift:obj_bits] + req.count) >> (obj_bits - wshift))
                                .any())

        with m.FSM(name="dma_fsm"):
            with m.State("IDLE"):
                # The header is latched every idle cycle, not only with `valid`: the enables
                # then do not hang on the device's request handshake.
                m.d.sync += [tag.eq(req.tag),
                             ptr.eq(req.addr[wshift:wshift + ceil_log2(depth)]),
                             left.eq(req.count),
                             oob.eq(past_end)]
                with m.If(dma_req.valid):
                    with m.If(req.write):
                        # The first beat carries data too: WRITE takes it.
                        m.next = "WRITE"
                    with m.Else():
                        m.d.comb += dma_req.ready.eq(1)
                        m.d.sync += primed.eq(0)
                        m.next = "READ"
            with m.State("WRITE"):
                m.d.comb += dma_req.ready.eq(1)
                with m.If(dma_req.valid):
                    m.d.comb += [wr.addr.eq(ptr), wr.data.eq(req.data),
                                 wr.en.eq(Mux(oob, 0, req.be))]
                    m.d.sync += [ptr.eq(ptr + 1), left.eq(left - 1)]
                    with m.If(left == 0):
                        m.next = "WRITE-ACK"
            with m.State("WRITE-ACK"):
                m.d.comb += [dma_rsp.valid.eq(1), dma_rsp.payload.last.eq(1)]
                with m.If(dma_rsp.ready):
                    m.next = "IDLE"
            with m.State("READ"):
                # The read port is synchronous: a word is valid the cycle after its address.
                m.d.comb += rd.addr.eq(ptr)
                m.d.sync += primed.eq(1)
                with m.If(primed):
                    m.d.comb += [
                        dma_rsp.valid.eq(1),
                        dma_rsp.payload.data.eq(rd.data),
                        dma_rsp.payload.err.eq(oob),
                        dma_rsp.payload.last.eq(left == 0),
                    ]
                    with m.If(dma_rsp.ready):
                        m.d.sync += [ptr.eq(ptr + 1), left.eq(left - 1), primed.eq(0)]
                        with m.If(left == 0):
                            m.next = "IDLE"
        return m


def _step_layout(data_width):
    return data.StructLayout({
        "space": Space,
        "write": 1,
        "addr":  32,
        "data":  data_width,        # write data, or the value a read must return
        "be":    data_width // 8,
        "mask":  data_width,        # bits of a read that are checked
    })


class VMShmSelfTest(wiring.Component):
    """Run the seed's example on a VMShm PCI function on chip, and say whether it worked.

    The sequence, one single-word request at a time, each completion checked for status SC and,
    for a read, its expected value: read the vendor and device ID; assign every BAR and enable
    memory space and bus mastering (as Linux's probe does); read ``ID`` and ``WINDOW_SIZE``;
    write the name (with its NUL) into the name buffer and read its first word back; read
    ``OPEN`` (expect 0) and ``MAP_SIZE``; write the message into the window at offset 0 and read
    it back; read ``CLOSE`` (expect 0) and ``STATUS``; read the window once more and expect all
    ones, since nothing is open. A step that takes longer than 65535 cycles fails.

    Parameters
    ----------
    window_size, name_size, data_width, regs_size, host_timeout, window_64bit, vendor_id, device_id
        As for :class:`~vmshm.rtl.VMShmPCI`.
    shm_name : bytes or str
        The name written into the name buffer; the on-chip host knows only this one.
    host_size : int
        Bytes of block RAM behind the window (the object's size).
    message : bytes or str
        What is written at offset 0 of the window.

    Members
    -------
    done : ``Out(1)``
        The sequence has ended.
    passed : ``Out(1)``
        It ended and every step was as expected.
    failed : ``Out(1)``
        A step was not as expected, or timed out.
    step : ``Out(8)``
        The step running, or the one that failed.
    """

    def __init__(self, *, window_size=DEFAULT_WINDOW_SIZE, name_size=DEFAULT_NAME_SIZE,
                 data_width=32, regs_size=BAR0_SIZE, host_timeout=DEFAULT_HOST_TIMEOUT,
                 window_64bit=False, vendor_id=PCI_VENDOR_ID, device_id=PCI_DEVICE_ID,
                 shm_name=DEFAULT_SHM_NAME, host_size=1024, message=b"I was here: FPGA"):
        self._pci = VMShmPCI(window_size=window_size, name_size=name_size, data_width=data_width,
                             regs_size=regs_size, host_timeout=host_timeout,
                             window_64bit=window_64bit, vendor_id=vendor_id, device_id=device_id)
        self._host = None
        try:
            self._host = OnChipHost(self._pci.core.addr_width, data_width, name=shm_name,
                                    size=host_size)
            self._message = _as_bytes("message", message)
            if len(self._host.name) + 1 > name_size:
                raise ValueError(f"shm_name ({len(self._host.name)} bytes and its NUL) must fit "
                                 f"the name buffer ({name_size} bytes)")
            if len(self._message) + 1 > min(host_size, window_size):
                raise ValueError(f"message ({len(self._message)} bytes and its NUL) must fit "
                                 f"the object ({min(host_size, window_size)} bytes)")
            self._steps = self._sequence()
            if len(self._steps) > 255:
                raise ValueError(f"the sequence has {len(self._steps)} steps; at most 255 fit "
                                 f"`step`: use a shorter shm_name or message")
        except ValueError:
            # Parts of a self-test refused at construction were never meant to be elaborated.
            for part in (self, self._pci, self._pci.core, self._host):
                if part is not None:
                    part._MustUse__silence = True
            raise
        super().__init__({
            "done":   Out(1),
            "passed": Out(1),
            "failed": Out(1),
            "step":   Out(8),
        })

    @property
    def pci(self):
        return self._pci

    @property
    def host(self):
        return self._host

    @property
    def steps(self):
        """The sequence as a list of dicts (``space``, ``write``, ``addr``, ``data``, ``be``,
        ``mask``), for the docs and the tests."""
        return [dict(s) for s in self._steps]

    def _sequence(self):
        pci = self._pci
        W = pci.data_width
        wb = W // 8
        ones = (1 << W) - 1
        ids = pci.ids
        steps = []

        def lane(byte_addr, value, bytes_=4):
            # Place a 32-bit value at its lane of the data word holding byte_addr.
            sh = byte_addr % wb
            return byte_addr - sh, value << (8 * sh), ((1 << bytes_) - 1) << sh

        def cfg_write(off, value):
            addr, d, be = lane(off, value)
            steps.append(dict(space=Space.CFG, write=1, addr=addr, data=d, be=be, mask=0))

        def cfg_read(off, value, mask=0xFFFF_FFFF):
            addr, d, be = lane(off, value)
            steps.append(dict(space=Space.CFG, write=0, addr=addr, data=d, be=be,
                              mask=lane(off, mask)[1]))

        def mem_read(addr, value, mask=0xFFFF_FFFF):
            a, d, be = lane(addr, value)
            steps.append(dict(space=Space.MEM, write=0, addr=a, data=d, be=be,
                              mask=lane(addr, mask)[1]))

        def mem_write_bytes(addr, payload):
            for i in range(0, len(payload), wb):
                chunk = payload[i:i + wb]
                steps.append(dict(space=Space.MEM, write=1, addr=addr + i,
                                  data=int.from_bytes(chunk.ljust(wb, b"\0"), "little"),
                                  be=(1 << len(chunk)) - 1, mask=0))

        def mem_read_bytes(addr, payload):
            for i in range(0, len(payload), wb):
                chunk = payload[i:i + wb]
                steps.append(dict(space=Space.MEM, write=0, addr=addr + i,
                                  data=int.from_bytes(chunk.ljust(wb, b"\0"), "little"),
                                  be=(1 << wb) - 1, mask=(1 << 8 * len(chunk)) - 1))

        # Assign BARs the way Linux does: largest first, each aligned to its size.
        base, bases = 0x8000_0000, {}
        for b in sorted(pci.bars, key=lambda b: -b.size):
            base = (base + b.size - 1) & ~(b.size - 1)
            bases[b.function] = base
            base += b.size
        if base > 1 << 32:
            raise ValueError("the BARs do not fit below 4 GiB; use a smaller window_size")

        cfg_read(P.PCI_VENDOR_ID, ids["vendor_id"] | ids["device_id"] << 16)
        for b in pci.bars:
            cfg_write(P.PCI_BASE_ADDRESS_0 + 4 * b.index, bases[b.function])
            if b.is64:
                cfg_write(P.PCI_BASE_ADDRESS_0 + 4 * (b.index + 1), 0)
        command = P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER
        cfg_write(P.PCI_COMMAND, command)
        cfg_read(P.PCI_COMMAND, command, mask=command)
        regs, window, names = bases[BAR_REGS], bases[BAR_WINDOW], bases[BAR_NAME]
        mem_read(regs + REG["ID"].offset, DEVICE_ID)
        mem_read(regs + REG["WINDOW_SIZE"].offset, pci.window_size)
        name = self._host.name + b"\0"
        mem_write_bytes(names, name)
        mem_read_bytes(names, name[:wb])
        mem_read(regs + REG["OPEN"].offset, Status.OK)
        mem_read(regs + REG["MAP_SIZE"].offset, min(self._host.size, pci.window_size))
        message = self._message + b"\0"
        mem_write_bytes(window, message)
        mem_read_bytes(window, message)
        mem_read(regs + REG["CLOSE"].offset, Status.OK)
        mem_read(regs + REG["STATUS"].offset, 0, mask=1)
        # Nothing is open: the window must answer all ones without asking the host.
        steps.append(dict(space=Space.MEM, write=0, addr=window, data=ones,
                          be=(1 << wb) - 1, mask=ones))
        return steps

    def elaborate(self, platform):
        m = Module()
        m.submodules.pci = pci = self._pci
        m.submodules.host = host = self._host
        wiring.connect(m, pci.host, host.dev)

        layout = _step_layout(pci.data_width)
        m.submodules.rom = rom = Memory(shape=layout, depth=len(self._steps),
                                        init=[layout.const(s) for s in self._steps])
        rom_rd = rom.read_port()
        pc = Signal(range(len(self._steps)))
        step = rom_rd.data
        m.d.comb += [rom_rd.addr.eq(pc), self.step.eq(pc)]

        watchdog = Signal(range(STEP_TIMEOUT + 1))
        # Each completion is registered before it is checked: its data may come straight from
        # a block RAM (the on-chip host's), whose slow output would otherwise run on through
        # the comparison into the sequencer's state. The register takes the completion every
        # cycle, with no enable and no reset: nothing but the completion muxes stands between
        # it and the block RAM. CHECK, the cycle after the beat was taken, reads it.
        got_data = Signal(pci.data_width, reset_less=True)
        got_ok = Signal(reset_less=True)
        m.d.sync += [got_data.eq(pci.cpl.payload.data),
                     got_ok.eq(pci.cpl.payload.status == CplStatus.SC)]
        wrong = ~got_ok | (~step.write & ((got_data ^ step.data) & step.mask).any())

        def watch():
            # A device that never answers must not leave the LEDs dark for ever.
            m.d.sync += watchdog.eq(watchdog + 1)
            with m.If(watchdog == STEP_TIMEOUT):
                m.d.sync += self.failed.eq(1)
                m.next = "DONE"

        # The request is the step, whatever the state: only `valid` waits for ISSUE, so this
        # state machine is not in front of the function's address decode.
        m.d.comb += [
            pci.req.payload.space.eq(step.space),
            pci.req.payload.write.eq(step.write),
            pci.req.payload.sel.eq(1),
            pci.req.payload.addr.eq(step.addr),
            pci.req.payload.count.eq(0),
            pci.req.payload.data.eq(step.data),
            pci.req.payload.be.eq(step.be),
        ]

        with m.FSM(name="seq_fsm"):
            with m.State("FETCH"):
                # The ROM's read port is synchronous: the step is valid in ISSUE.
                m.d.sync += watchdog.eq(0)
                m.next = "ISSUE"
            with m.State("ISSUE"):
                watch()
                m.d.comb += pci.req.valid.eq(1)
                with m.If(pci.req.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                watch()
                m.d.comb += pci.cpl.ready.eq(1)
                with m.If(pci.cpl.valid):
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(wrong):
                    m.d.sync += self.failed.eq(1)
                    m.next = "DONE"
                with m.Elif(pc == len(self._steps) - 1):
                    m.d.sync += self.passed.eq(1)
                    m.next = "DONE"
                with m.Else():
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
        return m


class SelfTestBoard(Elaboratable):
    """Put :class:`VMShmSelfTest` on a board and show its result on the board's LEDs.

    With three LEDs or more (or an RGB LED): LED 0 (green) lights when the self-test passed,
    LED 1 (red) when it failed, LED 2 (blue) blinks about once a second to show that the clock
    runs. With fewer, LED 0 alone tells: steady on for passed, fast blinking for failed, slow
    blinking while it runs. The self-test runs once after configuration, and again after each
    reset.

    Parameters
    ----------
    **params
        Passed to :class:`VMShmSelfTest`.
    """

    def __init__(self, **params):
        self._selftest = VMShmSelfTest(**params)

    @property
    def selftest(self):
        return self._selftest

    @staticmethod
    def _leds(platform):
        leds = []
        for i in range(3):
            try:
                leds.append(platform.request("led", i).o)
            except ResourceError:
                break
        if not leds:
            try:
                rgb = platform.request("rgb_led", 0)
                leds = [rgb.g.o, rgb.r.o, rgb.b.o]
            except ResourceError:
                pass
        if not leds:
            raise ValueError(f"{type(platform).__name__} has no `led` or `rgb_led` resource to "
                             f"show the result on")
        return leds

    def elaborate(self, platform):
        leds = self._leds(platform)
        m = Module()
        m.submodules.selftest = st = self._selftest
        freq = getattr(platform, "default_clk_frequency", None) or 25e6
        half_second = max(int(freq // 2), 2)
        counter = Signal(range(half_second * 2))
        m.d.sync += counter.eq(Mux(counter == half_second * 2 - 1, 0, counter + 1))
        slow = counter >= half_second
        fast = counter[max(len(counter) - 3, 0)]
        if len(leds) >= 3:
            m.d.comb += [leds[0].eq(st.passed), leds[1].eq(st.failed), leds[2].eq(slow)]
        else:
            m.d.comb += leds[0].eq(Mux(st.passed, 1, Mux(st.failed, fast, slow)))
            if len(leds) == 2:
                m.d.comb += leds[1].eq(st.failed)
        return m
