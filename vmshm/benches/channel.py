"""``vmshm channel --bench``: messages and bytes per second through the channel.

The same loop (``ivshmem/channel_peer.c``: ``vmshm_channel.h``, one-value messages, their ends
checked, eventfd doorbells) runs on both ends of each row. The floor row is two host processes
over a plain POSIX mapping, peers of one ivshmem group; the guest rows put one end in a TCG guest
(``ivshmem/ivshmem_peer.c bench`` on QEMU's ``ivshmem-doorbell``) and the other on the host. Each
figure is the receiver's: from its first message to its last, so start-up is not counted.

The round-trip rows (:func:`floor_rtt`, and the guests' after their rows) time ``RTT_BYTES``-byte
messages with one outstanding: the host's ``channel_peer ping`` sends message i, the other end
(``pong``, or the guest program) sends it back, the ping checks it whole and times it on the
host's clock.

The RTL rows (:func:`rtl`) put the guest's end on the simulated device (a guest function through
the window) and the host's end on the object, and count simulated cycles instead of seconds.
"""

import math
import os
import queue
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from vmshm import ivshmem
from vmshm.harness.build import build_file_once
from vmshm.ivshmem.channel import Channel
from vmshm.ivshmem.client import IvshmemPeer
from vmshm.ivshmem.server import IvshmemServer

__all__ = ["host_program", "floor", "floor_rtt", "guest", "lay_out", "rtt_row", "SLOT", "RTT_BYTES"]

#: Where the C programs of both ends live: the ivshmem package's data.
HERE = Path(ivshmem.__file__).resolve().parent
SLOT = 0x10000
DIR_MAGIC = 0x21214F47
#: The round trips' message size.
RTT_BYTES = 64


def host_program():
    """Compile ``channel_peer.c`` for the host once (cached by its sources); return its path."""
    from vmshm.qemu.image import BuildError, GUEST_DIR, Missing, _file_digest, cache_dir
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise Missing("a C compiler is needed for the bench: apt-get install gcc")
    src, header = HERE / "channel_peer.c", GUEST_DIR / "vmshm_channel.h"
    key = (_file_digest(src) + _file_digest(header))[:16]

    def make(tmp):
        r = subprocess.run([cc, "-O2", "-std=c11", "-D_GNU_SOURCE", "-I", str(GUEST_DIR),
                            "-o", str(tmp), str(src), "-lrt"], capture_output=True, text=True)
        if r.returncode:
            raise BuildError(f"compiling {src} failed:\n{r.stderr[-2000:]}")

    return build_file_once(cache_dir() / f"channel_peer-{key}", make)


def _run_end(exe, role, name, offset, count, length, ring_fd, wait_fd):
    return subprocess.Popen([str(exe), role, name, hex(offset), str(SLOT), str(count),
                             str(ring_fd), str(wait_fd), "attach", str(length)],
                            stdout=subprocess.PIPE, text=True, pass_fds=(ring_fd, wait_fd))


def _seconds(proc, what, timeout=120):
    out, _ = proc.communicate(timeout=timeout)
    m = re.search(r"^ok (\d+) (\d+) (\d+) ([\d.]+)$", out, re.M)
    if proc.returncode or not m:
        raise RuntimeError(f"{what}: {out.strip() or f'exit status {proc.returncode}'}")
    return float(m.group(4))


def _rtt_end(exe, role, name, offset, rx_offset, count, ring_fd, wait_fd, bad=None):
    """Start ``channel_peer ping|pong``: send through the ring at ``offset``, receive through
    the one at ``rx_offset``; ``bad`` is the message a pong alters (the tests' break)."""
    return subprocess.Popen([str(exe), role, name, hex(offset), str(SLOT), str(count),
                             str(ring_fd), str(wait_fd), "attach", str(RTT_BYTES),
                             hex(rx_offset), *([str(bad)] if bad is not None else [])],
                            stdout=subprocess.PIPE, text=True, pass_fds=(ring_fd, wait_fd))


def _percentile(ordered, fraction):
    """Return the nearest-rank percentile of the sorted list ``ordered``."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def rtt_row(pair, ping, served_by, timeout=120):
    """Wait for ``channel_peer ping`` and return its round trips' row: median and p99 in µs."""
    out, _ = ping.communicate(timeout=timeout)
    m = re.search(r"^rtt((?: \d+)+)$", out, re.M)
    if ping.returncode or not m:
        raise RuntimeError(f"the round trips of {pair}: "
                           f"{out.strip() or f'exit status {ping.returncode}'}")
    ns = sorted(int(x) for x in m.group(1).split())
    return {"pair": pair, "round_trips": len(ns), "bytes": RTT_BYTES,
            "median_us": statistics.median(ns) / 1e3, "p99_us": _percentile(ns, 0.99) / 1e3,
            "served_by": served_by}


def lay_out(host, sizes, guest_id):
    """Lay out the host end's rings (two a size, from slot 1) and then the directory at 0 that
    the guest waits for (``ivshmem_peer.c``'s layout): magic last, so a guest reading it reads
    the rest."""
    for k in range(len(sizes)):
        Channel.init(host.shm, SLOT * (1 + 2 * k), SLOT).close()
        Channel.init(host.shm, SLOT * (2 + 2 * k), SLOT).close()
    words = memoryview(host.shm)[:16].cast("I")
    words[1], words[2], words[3] = 2, host.id, guest_id
    words[0] = DIR_MAGIC
    words.release()


class _Group:
    """A temporary ivshmem group: its own server, socket and object (removed afterwards)."""

    def __init__(self, size):
        self.dir = tempfile.TemporaryDirectory(prefix="vmshm-channel-")
        self.sock = str(Path(self.dir.name) / "ivshmem.sock")
        self.name = f"/vmshm-channel-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.server = IvshmemServer(self.sock, self.name, size=size).start()

    def close(self):
        self.server.stop()
        if self.server.created:
            os.unlink(f"/dev/shm{self.name}")     # the bench's own object, made for this run
        self.dir.cleanup()


def _row(direction, length, count, seconds):
    per = (count - 1) / seconds if seconds > 0 else float("inf")
    return {"direction": direction, "bytes": length, "count": count, "seconds": seconds,
            "messages_per_s": per, "bytes_per_s": per * length}


def floor(count, sizes):
    """Return rows for host process to host process over a plain shared mapping."""
    exe = host_program()
    group = _Group(SLOT * (1 + len(sizes)))
    rows = []
    try:
        with IvshmemPeer.connect(group.sock) as a, IvshmemPeer.connect(group.sock) as b:
            a.wait_for_peers(1)
            b.wait_for_peers(1)
            for k, length in enumerate(sizes):
                offset = SLOT * (1 + k)
                Channel.init(a.shm, offset, SLOT).close()
                rx = _run_end(exe, "recv", group.name, offset, count, length,
                              b.peer_fileno(a.id), b.fileno())
                tx = _run_end(exe, "send", group.name, offset, count, length,
                              a.peer_fileno(b.id), a.fileno())
                _seconds(tx, "the floor's sender")
                rows.append(_row("host → host (floor)", length, count,
                                 _seconds(rx, "the floor's receiver")))
    finally:
        group.close()
    return rows


def floor_rtt(count, bad=None):
    """Return the round-trip row of two host processes over a plain shared mapping.

    ``bad``: the message the responder alters, to see the initiator fail (tests).
    """
    exe = host_program()
    group = _Group(SLOT * 4)
    try:
        with IvshmemPeer.connect(group.sock) as a, IvshmemPeer.connect(group.sock) as b:
            a.wait_for_peers(1)
            b.wait_for_peers(1)
            for offset in (SLOT, 2 * SLOT):
                Channel.init(a.shm, offset, SLOT).close()
            pong = _rtt_end(exe, "pong", group.name, SLOT, 2 * SLOT, count,
                            b.peer_fileno(a.id), b.fileno(), bad)
            ping = _rtt_end(exe, "ping", group.name, 2 * SLOT, SLOT, count,
                            a.peer_fileno(b.id), a.fileno())
            try:
                row = rtt_row("host ↔ host (floor)", ping, "plain mapping")
            except BaseException:
                pong.kill()                      # it waits for a message that will not come
                pong.wait()
                raise
            out, _ = pong.communicate(timeout=60)
            if pong.returncode:
                raise RuntimeError(f"the floor's responder: {out.strip()}")
            return row
    finally:
        group.close()


def guest(count, sizes, timeout=180, echo=None, rtt_count=None):
    """Return rows for a TCG guest on QEMU's ivshmem-doorbell and a host peer, both ways.

    With ``rtt_count``, the last row is the round trips' (:func:`rtt_row`): the guest echoes
    them through the first size's rings once its rows are done.
    """
    from vmshm.qemu import image
    from vmshm.qemu.boot import boot
    parts = image.find_parts()
    exe = host_program()
    initrd = image.build_image(parts, {"ivshmem_peer": HERE / "ivshmem_peer.c"})
    init = image.init_archive("ivshmem_peer", ["bench", str(count), str(rtt_count or 0),
                                               *map(str, sizes)],
                              load_module=False)
    # The program checks 5 slots for 2 peers; QEMU's BAR2 must be a power of two.
    group = _Group(1 << (SLOT * (6 + 2 * len(sizes)) - 1).bit_length())
    lines = queue.Queue()
    result = {}
    rows = []
    try:
        host = IvshmemPeer.connect(group.sock)
        args = ["-chardev", f"socket,path={group.sock},id=ivs",
                "-device", "ivshmem-doorbell,chardev=ivs,vectors=1"]

        def run():
            # Each line with when it arrived: the host's clock times the host → guest rows.
            result["boot"] = boot(parts, initrd, init, timeout=timeout, device=False,
                                  qemu_args=args,
                                  echo=lambda line: lines.put((line, time.monotonic())))
            lines.put((None, None))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        end = time.monotonic() + timeout

        def expect(pattern):
            while True:
                try:
                    line, arrived = lines.get(timeout=max(0.1, end - time.monotonic()))
                except queue.Empty:
                    line = None
                if line is None:
                    b = result.get("boot")
                    last = b.console[-1] if b and b.console else "no more output"
                    raise RuntimeError(f"the guest stopped before {pattern!r}: "
                                       f"{(b.error if b else None) or last}")
                if echo:
                    echo(line)
                if line.startswith("error"):
                    raise RuntimeError(f"the guest: {line}")
                m = re.fullmatch(pattern, line.strip())
                if m:
                    return m, arrived

        guest_id = int(expect(r"id (\d+)")[0].group(1))
        expect("ready")
        host.wait_for_peers(1)
        lay_out(host, sizes, guest_id)
        for k, length in enumerate(sizes):
            rx = _run_end(exe, "recv", group.name, SLOT * (1 + 2 * k), count, length,
                          host.peer_fileno(guest_id), host.fileno())
            rows.append({**_row("ivshmem guest → host", length, count,
                                _seconds(rx, "the host's receiver")),
                         "served_by": "QEMU ivshmem-doorbell"})
            expect(rf"tx {length} {count} [\d.]+")
            tx = _run_end(exe, "send", group.name, SLOT * (2 + 2 * k), count, length,
                          host.peer_fileno(guest_id), host.fileno())
            _, first = expect(rf"first {length}")
            _seconds(tx, "the host's sender")
            _, last = expect(rf"rx {length} {count} [\d.]+")
            rows.append({**_row("host → ivshmem guest", length, count, last - first),
                         "served_by": "QEMU ivshmem-doorbell"})
        if rtt_count:
            expect(rf"echo {rtt_count}")
            ping = _rtt_end(exe, "ping", group.name, SLOT * 2, SLOT, rtt_count,
                            host.peer_fileno(guest_id), host.fileno())
            rows.append(rtt_row("host ↔ ivshmem guest", ping, "QEMU ivshmem-doorbell", timeout))
            expect(rf"echoed {rtt_count}")
        expect("done")
        thread.join(timeout=30)
        host.close()
    finally:
        group.close()
    return rows


# --- the RTL rows: the channel over the simulated device, in simulated cycles -------------------

#: Each RTL channel's share of the object: a 16 KiB ring (three 4 KiB messages) and its header.
RTL_SLOT = 0x8000
_PATTERN = bytes(range(256)) * 17


def _message(i, length):
    """Return message ``i`` of ``length`` bytes: different for each ``i``, cheap to make."""
    return _PATTERN[i % 256:i % 256 + length]


class _HostEnd:
    """The host program's end of one RTL channel, woken by every guest doorbell.

    The host program runs between clock edges, inside the backend's call to ``host.doorbell``
    (and once before the run): it costs no simulated cycles, so the figures are the device's.
    A consumer drains its ring and checks each message; a producer fills its ring. Each sleeps
    as ``docs/channel.md`` says (its waiting flag, a fence, a last look) and rings the device's
    ``vector`` when the guest's side sleeps.
    """

    def __init__(self, host, channel, role, length, count, vector):
        self.host, self.ch, self.role = host, channel, role
        self.length, self.count, self.vector = length, count, vector
        self.done = self.rings = 0
        self.error = None

    def pump(self):
        from vmshm.ivshmem.channel import OFF_CONS_WAITING, OFF_PROD_WAITING, _fence, _record
        ch = self.ch
        flag = OFF_CONS_WAITING if self.role == "recv" else OFF_PROD_WAITING
        ch._set(flag, 0)
        while self.done < self.count and self.error is None:
            if self.role == "recv":
                got = ch.try_recv()
                moved = got is not None
                if moved:
                    message, ring = got
                    if message != _message(self.done, self.length):
                        self.error = (f"the host received message {self.done} altered "
                                      f"({len(message)} bytes)")
            else:
                ring = ch.try_send(_message(self.done, self.length))
                moved = ring is not None
            if moved:
                self.done += 1
                if ring:
                    self.rings += 1
                    self.host.ring(self.vector)
                continue
            ch._set(flag, 1)
            _fence()
            if (ch.used() == 0 if self.role == "recv"
                    else ch.capacity - ch.used() < _record(self.length)):
                return                           # sleep until the next doorbell
            ch._set(flag, 0)


async def _rtl_guest(bus, *, name, size, plan, target, vector):
    """The guest program of the RTL rows: open the object, then each row's channel in turn."""
    from vmshm.driver_model import vmshm_probe

    from vmshm.ivshmem.window_channel import GuestDoorbell, WindowChannel
    drivers, _ = await vmshm_probe(bus)
    drv = drivers[0]
    fd = await drv.open()
    await drv.ioctl(fd, 0, name)
    mapping = await drv.mmap(fd, size)
    doorbell = GuestDoorbell(drv, fd, target, vector)
    base = drv.window.base
    rows = []
    for direction, offset, length, count in plan:
        ch = await WindowChannel.attach(mapping, offset)
        first, start = len(bus.records), bus.now()
        rings, wakes = doorbell.rings, doorbell.wakes
        for i in range(count):
            if direction == "guest → host":
                await ch.send(_message(i, length), doorbell)
            else:
                got = await ch.recv(doorbell)
                if got != _message(i, length):
                    raise AssertionError(f"the guest received message {i} altered "
                                         f"({len(got)} bytes)")
        cycles = bus.now() - start
        parts = {"data": 0, "indices": 0, "registers": 0}
        for t in bus.records[first:]:
            at = t.addr - base - offset
            kind = ("registers" if not 0 <= t.addr - base < drv.window_size
                    else "data" if at >= 0x100 else "indices")
            parts[kind] += t.cycles
        rows.append({"direction": direction, "offset": offset, "cycles": cycles,
                     "transactions": len(bus.records) - first,
                     "rings": doorbell.rings - rings, "waits": doorbell.wakes - wakes, **parts})
    await drv.munmap(mapping)
    await drv.close(fd)
    return rows


def rtl_backend(backend=None):
    """Return the backend the RTL rows run on: ``backend``, else native if it runs, else amaranth.

    Both give exact cycles; native runs the same Verilog compiled (about 100x faster).
    """
    from vmshm.backends import backend_names, get_backend
    if backend is not None:
        here = backend_names(in_process=True)
        if backend not in here:
            raise ValueError(f"the RTL rows run in this process: {' or '.join(here)}, not "
                             f"{backend!r}")
        reason = get_backend(backend).missing()
        if reason:
            raise RuntimeError(f"backend {backend} cannot run here: {reason}")
        return backend
    return "native" if get_backend("native").missing() is None else "amaranth"


def rtl(count, sizes, *, data_width=32, backend=None):
    """Return rows of the channel on the simulated device, both ways, in simulated cycles.

    The guest side (:class:`~.window_channel.WindowChannel` through the window, the driver
    model's ring ioctl and blocking read) is a guest function on ``backend``; the host side is
    :class:`~.channel.Channel` on the host's own mapping of the object, run when the guest rings
    (``host.on_doorbell``) and ringing back with ``host.ring``. Each row's figure is the guest's:
    from the start of its first send or receive to the end of its last.
    """
    import mmap

    from vmshm.backends import get_backend
    from vmshm.host_model import HostModel, ShmRegion

    backend = rtl_backend(backend)
    size = RTL_SLOT * 2 * len(sizes)
    name = f"/vmshm-chrtl-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    region = ShmRegion.create(name, size)
    host = HostModel()
    vector = 0
    mm = mmap.mmap(region.fileno(), size)
    ends, plan = [], []
    try:
        for k, length in enumerate(sizes):
            for j, (direction, role) in enumerate((("guest → host", "recv"),
                                                    ("host → guest", "send"))):
                offset = RTL_SLOT * (2 * k + j)
                ends.append(_HostEnd(host, Channel.init(mm, offset, RTL_SLOT), role, length,
                                     count, vector))
                plan.append((direction, offset, length, count))
        for end in ends:
            end.pump()

        def doorbell(peer, vec):
            for end in ends:
                end.pump()

        host.on_doorbell = doorbell
        # The default window (1 MiB) holds 12 sizes' rings; a native build of it is shared.
        result = get_backend(backend).simulate(
            lambda bus: _rtl_guest(bus, name=name, size=size, plan=plan, target=0,
                                   vector=vector),
            hosts=[host], data_width=data_width)
        for end in ends:
            if end.error:
                raise AssertionError(end.error)
            if end.done != count:
                raise AssertionError(f"the host's {end.role} end moved {end.done} of {count} "
                                     f"messages")
    finally:
        host.on_doorbell = None
        if host.is_open:
            host.close()
        for end in ends:
            end.ch.close()
        mm.close()
        region.unlink()
        region.close()
    rows = []
    wb = data_width // 8
    for (direction, _, length, _), got in zip(plan, result.value):
        per_cycle = count * length / got["cycles"]
        rows.append({**got, "direction": direction, "bytes": length, "count": count,
                     "data_width": data_width, "backend": backend,
                     "bytes_per_cycle": per_cycle, "limit": wb, "ratio": per_cycle / wb})
    return rows
