"""A simulated VMShm device in an ivshmem group, and the channel's figures on the RTL.

The device (its host model bridged by :class:`~vmshm.ivshmem.IvshmemBridge`) joins a real
``vmshm ivshmem-server`` process; a second host program joins as an :class:`IvshmemPeer`. Guest
DOORBELL writes must reach that peer's eventfd, its rings the device's INTR_STATUS, and IVPOSITION
must read the ID the server gave. The channel rows run the guest's side of ``docs/channel.md``
through the window and check the bytes per simulated cycle against the datapath's limit.
"""

import os
import subprocess
import sys
import threading
import time
from uuid import uuid4

import pytest

from conftest import require_backend
from vmshm.abi.regmap import REG
from vmshm.backends import backend_names, get_backend
from vmshm.benches import channel as bench
from vmshm.driver_model import vmshm_probe
from vmshm.host_model.scratch import scratch_name
from vmshm.host_model import HostModel, ShmRegion
from vmshm.ivshmem import HostDoorbell, IvshmemBridge, IvshmemPeer

NOT_YET = 0xFFFF_FFFF


@pytest.fixture
def group(tmp_path):
    """A ``vmshm ivshmem-server`` process (2 vectors a peer) with an object of this test's own."""
    sock = str(tmp_path / "ivshmem.sock")
    name = f"/vmshm-bridge-{os.getpid()}-{uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, "-m", "vmshm.cli", "ivshmem-server", "-S", sock,
                             "-M", name, "-l", "64K", "-n", "2", "-F"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 30
        while not os.path.exists(sock):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "the server did not listen within 30 s"
            time.sleep(0.05)
        yield sock, name
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        try:
            os.unlink(f"/dev/shm{name}")
        except FileNotFoundError:
            pass


def _object(size=64 << 10):
    name = scratch_name("brobj")
    return name, ShmRegion.create(name, size)


async def _regs(bus):
    drivers, _ = await vmshm_probe(bus)
    return drivers[0].regs


async def _wait_status(bus, regs, bit, seconds=10.0, step=20):
    """Idle until INTR_STATUS has ``bit``: the ring comes from the bridge's thread, in wall time."""
    end = time.monotonic() + seconds
    while True:
        status = await regs.read32(REG["INTR_STATUS"].offset)
        if status & bit or time.monotonic() > end:
            return status
        await bus.idle(step)
        time.sleep(0.001)                  # let the bridge's thread run


def test_a_device_is_a_peer_of_an_ivshmem_group(group):
    sock, _ = group
    host = HostModel()
    logged = []
    with IvshmemBridge.connect(host, sock, vectors=2, log=logged.append) as bridge, \
            IvshmemPeer.connect(sock, vectors=2) as other:
        other.wait_for_peers(1)
        bridge.peer.wait_for_peers(1)
        assert host.peer_id == bridge.id != other.id
        woke = {}
        # The second host program blocks on its eventfd before the guest rings it.
        waiter = threading.Thread(target=lambda: woke.setdefault("n", other.wait(1, 20.0)))
        waiter.start()

        async def guest(bus):
            regs = await _regs(bus)
            out = {"ivposition": await regs.read32(REG["IVPOSITION"].offset)}
            await regs.write32(REG["INTR_MASK"].offset, 0b10)
            await regs.write32(REG["DOORBELL"].offset, other.id << 16 | 1)
            out["forwarded"] = bridge.forwarded
            # Bad doorbells: no such peer, no such vector. Dropped; the device goes on.
            await regs.write32(REG["DOORBELL"].offset, 4321 << 16 | 0)
            await regs.write32(REG["DOORBELL"].offset, other.id << 16 | 7)
            out["before"] = await regs.read32(REG["INTR_STATUS"].offset)
            other.ring(bridge.id, 1)
            out["after"] = await _wait_status(bus, regs, 0b10)
            await regs.write32(REG["INTR_STATUS"].offset, 0b10)
            out["cleared"] = await regs.read32(REG["INTR_STATUS"].offset)
            return out

        got = get_backend("amaranth").simulate(guest, hosts=[host]).value
        waiter.join(timeout=20)
        assert got["ivposition"] == bridge.id
        assert woke.get("n") == 1 and got["forwarded"] == 1
        assert bridge.dropped == 2 and len(logged) == 2
        assert "4321" in logged[0] and "not in the group" in logged[0]
        assert "vectors 0..1, not 7" in logged[1]
        assert got["before"] == 0 and got["after"] == 0b10 and got["cleared"] == 0
        assert host.doorbells[:3] == [(other.id, 1), (4321, 0), (other.id, 7)]
        assert bridge.delivered >= 1

        # A peer that leaves: its doorbells are dropped from then on.
        gone = other.id
        other.close()
        end = time.monotonic() + 10
        while gone in bridge.peer.peers:
            assert time.monotonic() < end, "the server did not say the peer left"
            time.sleep(0.01)

        async def after_leave(bus):
            regs = await _regs(bus)
            await regs.write32(REG["DOORBELL"].offset, gone << 16 | 0)
            return await regs.read32(REG["IVPOSITION"].offset)

        assert get_backend("amaranth").simulate(after_leave, hosts=[host]).value == bridge.id
        assert bridge.dropped == 3 and f"peer {gone} is not in the group" in logged[-1]
    # Closed: the device has no ID again.
    assert host.peer_id is None

    async def ivposition(bus):
        return await (await _regs(bus)).read32(REG["IVPOSITION"].offset)

    assert get_backend("amaranth").simulate(ivposition, hosts=[host]).value == NOT_YET


def test_a_host_program_rings_the_device_without_a_server():
    host = HostModel()
    bell = HostDoorbell(host, vector=3)
    woke = {}
    waiter = threading.Thread(target=lambda: woke.setdefault("got", bell.wait(20.0)))
    waiter.start()

    async def guest(bus):
        regs = await _regs(bus)
        await regs.write32(REG["DOORBELL"].offset, 9 << 16 | 2)
        bell.ring()
        await bus.idle(2)
        return (await regs.read32(REG["INTR_STATUS"].offset),
                await regs.read32(REG["IVPOSITION"].offset))

    status, ivposition = get_backend("amaranth").simulate(guest, hosts=[host]).value
    waiter.join(timeout=20)
    assert woke.get("got") is True and host.doorbells == [(9, 2)]
    assert status == 1 << 3 and ivposition == NOT_YET
    assert not bell.wait(0.01)            # nothing new since the last wait
    bell.close()
    assert host.on_doorbell is None


@pytest.mark.parametrize("backend", backend_names(in_process=True))
def test_channel_rtl_rows_reach_the_datapath_limit(backend):
    """Five messages of 64 B and 4 KiB each way: 4 KiB at 0.8 of a word a cycle or more."""
    require_backend(backend)
    widths = (32,) if backend == "amaranth" else (32, 64)
    for width in widths:
        rows = bench.rtl(5, [64, 4096], data_width=width, backend=backend)
        if backend != "amaranth" and width == 32:
            # Exact cycles: the compiled Verilog and Amaranth's simulator count the same.
            twin = bench.rtl(5, [64, 4096], data_width=width, backend="amaranth")
            assert [r["cycles"] for r in rows] == [r["cycles"] for r in twin]
        assert [(r["direction"], r["bytes"]) for r in rows] == [
            ("guest → host", 64), ("host → guest", 64),
            ("guest → host", 4096), ("host → guest", 4096)]
        for r in rows:
            assert r["limit"] == width // 8 and r["backend"] == backend
            assert r["data"] + r["indices"] + r["registers"] <= r["cycles"]
            if r["bytes"] == 4096:
                assert r["ratio"] >= 0.8, r
        # The guest rang the host for each message it sent (the host sleeps on an empty ring)
        # and the host rang it back when it had filled the ring and slept.
        assert rows[2]["rings"] == 5 and rows[3]["rings"] >= 1


def test_channel_sleeps_and_wakes_between_a_guest_and_a_host_thread():
    """The host program of the README: a thread with Channel and HostDoorbell, no server.

    It starts each way only once the guest's side says it sleeps (its waiting flag: on the full
    ring, then on the empty one), so both sleeps happen and only the host program's rings (through
    INTR_STATUS) can end them.
    """
    import mmap

    from vmshm.ivshmem.channel import OFF_CONS_WAITING, OFF_PROD_WAITING, Channel
    from vmshm.ivshmem.window_channel import GuestDoorbell, WindowChannel
    name, region = _object()
    host = HostModel()
    bell = HostDoorbell(host, vector=0)
    mm = mmap.mmap(region.fileno(), region.size)
    up, down = Channel.init(mm, 0, 0x8000), Channel.init(mm, 0x8000, 0x8000)
    count, length = 6, 4096
    got, errors = [], []

    def message(i):
        return bytes([i]) * length

    def sleeping(ch, flag):
        end = time.monotonic() + 60
        while not ch._w(flag):
            if time.monotonic() > end:
                raise TimeoutError(f"the guest never set the flag at {flag:#x}")
            time.sleep(0.01)
        # The flag is set before the guest's last look at the ring: give that look time to
        # find the ring still full (empty), so the guest is waiting on INTR_STATUS when rung.
        time.sleep(1.0)

    def host_program():
        try:
            sleeping(up, OFF_PROD_WAITING)          # the guest filled the ring and sleeps
            for _ in range(count):
                got.append(up.recv(bell, timeout=60))
            sleeping(down, OFF_CONS_WAITING)        # the guest found this one empty and sleeps
            for i in range(count):
                down.send(message(100 + i), bell, timeout=60)
        except Exception as exc:            # the test thread reports it
            errors.append(exc)

    async def guest(bus):
        drivers, _ = await vmshm_probe(bus)
        drv = drivers[0]
        fd = await drv.open()
        await drv.ioctl(fd, 0, name)
        mapping = await drv.mmap(fd, region.size)
        db = GuestDoorbell(drv, fd, target=0)
        tx = await WindowChannel.attach(mapping, 0)
        rx = await WindowChannel.attach(mapping, 0x8000)
        for i in range(count):
            await tx.send(message(i), db, cycles=50_000)
        waits = db.wakes
        back = [await rx.recv(db, cycles=50_000) for _ in range(count)]
        await drv.munmap(mapping)
        await drv.close(fd)
        return waits, db.wakes - waits, back

    thread = threading.Thread(target=host_program)
    thread.start()
    try:
        full_waits, empty_waits, back = get_backend("amaranth").simulate(guest, hosts=[host]).value
    finally:
        thread.join(timeout=120)
        up.close()
        down.close()
        mm.close()
        region.unlink()
        region.close()
    assert not errors, errors
    assert got == [message(i) for i in range(count)]
    assert back == [message(100 + i) for i in range(count)]
    assert full_waits >= 1 and empty_waits >= 1
    assert bell.wakes >= 1 and bell.rings >= 2


def test_channel_bench_prints_the_rtl_table_and_checks_its_arguments():
    cli = [sys.executable, "-m", "vmshm.cli", "channel", "--bench", "--no-guest"]
    r = subprocess.run([*cli, "--count", "2", "--rtl-count", "3", "--sizes", "64,4096",
                        "--data-width", "32", "--backend", "amaranth"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "vmshm_channel on the RTL (amaranth backend): 3 messages a row" in r.stdout
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in r.stdout.splitlines()
            if line.startswith("│") and ("guest → host" in line or "host → guest" in line)]
    assert [(row[0], row[1], row[2], row[4]) for row in rows] == [
        ("guest → host", "32", "64", "4"), ("host → guest", "32", "64", "4"),
        ("guest → host", "32", "4096", "4"), ("host → guest", "32", "4096", "4")]
    assert all(float(row[5]) >= 0.8 for row in rows[2:])
    assert "host → host (floor)" in r.stdout             # the other table still comes
    for args, words in [(["--data-width", "48"], "--data-width '48': 32, 64 or 32,64"),
                        (["--rtl-count", "0"], "--rtl-count 0: 1..1000000"),
                        (["--backend", "icarus"], "invalid choice: 'icarus'")]:
        r = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert words in r.stderr.strip().splitlines()[-1], r.stderr      # one line says why
