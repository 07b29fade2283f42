"""Interop with QEMU's own ivshmem: two guests' ``ivshmem-doorbell`` devices and a host peer.

One session boots two TCG guests at once (the kernel and busybox initramfs of ``vmshm.qemu``),
each with QEMU's ``ivshmem-doorbell`` device on OUR server (``vmshm.ivshmem.IvshmemServer``), and
joins the group as a host :class:`~vmshm.ivshmem.IvshmemPeer`. The guests' program is
``ivshmem/ivshmem_peer.c`` (user space, sysfs BARs, the MSI-X message pointed at a mailbox word;
see its header). The host rings each guest and is rung back, the guests ring each other, and
everyone exchanges messages through ``vmshm_channel.h`` rings in the one POSIX object.
"""

import os
import queue
import re
import threading
import time
from pathlib import Path
from uuid import uuid4

import pytest

from conftest import require_qemu_parts
from vmshm.ivshmem import IvshmemPeer, IvshmemServer
from vmshm.ivshmem.channel import Channel, SharedVector

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "ivshmem" / "ivshmem_peer.c"
SLOT = 0x10000
DIR_MAGIC = 0x21214F47
COUNT = 64          # bulk messages each way between the host and each guest


def _chan(src, dst, n):
    return SLOT * (1 + src * n + dst)


def _msg_len(i):
    return 1 + (i * 997) % 4096


def _pattern(i, length):
    return bytes((i * 7 + k * 13 + 1) & 0xFF for k in range(length))


def _lines_until(q, pattern, deadline, seen):
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no line matching {pattern!r}; saw {seen[-10:]}")
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            continue
        seen.append(line)
        m = re.fullmatch(pattern, line.strip())
        if m:
            return m


@pytest.fixture(scope="session")
def group(tmp_path_factory):
    """Boot two ivshmem-doorbell guests on our server, play the host peer; yield what happened."""
    from vmshm.qemu import image
    from vmshm.qemu.boot import boot
    parts = require_qemu_parts("the ivshmem interop test")
    initrd = image.build_image(parts, {"ivshmem_peer": PROGRAM})
    init = image.init_archive("ivshmem_peer", [str(COUNT)], load_module=False)
    tag = uuid4().hex[:8]
    sock = str(tmp_path_factory.mktemp("ivshmem") / "ivshmem.sock")
    name = f"/vmshm-ivshmem-{os.getpid()}-{tag}"
    server = IvshmemServer(sock, name, size=2 << 20, vectors=1).start()
    host = IvshmemPeer.connect(sock)
    guests = {}
    queues = {k: queue.Queue() for k in "ab"}
    args = ["-chardev", f"socket,path={sock},id=ivs",
            "-device", "ivshmem-doorbell,chardev=ivs,vectors=1"]

    def run(key):
        guests[key] = boot(parts, initrd, init, timeout=110, device=False, qemu_args=args,
                           echo=queues[key].put)

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in "ab"]
    for t in threads:
        t.start()
    result = {"host_id": host.id, "errors": [], "host_got": {}, "host_rings": 0}
    shared = None
    try:
        deadline = time.monotonic() + 100
        ids, seen = {}, {k: [] for k in "ab"}
        for k in "ab":
            ids[k] = int(_lines_until(queues[k], r"id (\d+)", deadline, seen[k]).group(1))
            _lines_until(queues[k], r"ready", deadline, seen[k])
        result["guest_ids"] = ids
        result["peers_seen_by_host"] = host.wait_for_peers(2, timeout=10)
        order = [host.id] + sorted(ids.values())
        n = len(order)
        for s in range(n):
            for d in range(n):
                if s != d:
                    Channel.init(host.shm, _chan(s, d, n), SLOT).close()
        words = memoryview(host.shm)[:64].cast("I")
        words[1] = n
        for i, peer in enumerate(order):
            words[2 + i] = peer
        words[0] = DIR_MAGIC           # last: the guests start on it
        words.release()
        # Phase 1: the host rings each guest; each rings back once rung.
        t0 = time.monotonic()
        for peer in order[1:]:
            host.ring(peer)
        rings = 0
        while rings < 2 and time.monotonic() < deadline:
            rings += host.wait(0, timeout=1)
        result["host_rings"] = rings
        result["ring_round_trip_s"] = time.monotonic() - t0
        # Phase 3: the channels, both ways at once with each guest.
        shared = SharedVector(host, 0)

        def send(idx, peer):
            ch = Channel.attach(host.shm, _chan(0, idx, n), SLOT)
            db = shared.doorbell(peer)
            try:
                ch.send(f"hello from {host.id} to {peer}".encode(), db, timeout=60)
                for i in range(COUNT):
                    ch.send(_pattern(i, _msg_len(i)), db, timeout=60)
            except Exception as exc:
                result["errors"].append(f"send to {peer}: {exc!r}")
            finally:
                ch.close()

        def recv(idx, peer):
            ch = Channel.attach(host.shm, _chan(idx, 0, n), SLOT)
            db = shared.doorbell(peer)
            try:
                got = [ch.recv(db, timeout=60).decode()]
                ok = 0
                for i in range(COUNT):
                    ok += ch.recv(db, timeout=60) == _pattern(i, _msg_len(i))
                result["host_got"][peer] = (got[0], ok, db.wakes)
            except Exception as exc:
                result["errors"].append(f"receive from {peer}: {exc!r}")
            finally:
                ch.close()

        workers = [threading.Thread(target=f, args=(i, p), daemon=True)
                   for i, p in enumerate(order) if i for f in (send, recv)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=90)
        for t in threads:
            t.join(timeout=120)
        result["guests"] = guests
        yield result
    finally:
        if shared:
            shared.close()
        host.close()
        server.stop()
        # The object is this test's own: the server created it for this session.
        os.unlink(f"/dev/shm{name}")


def _out(group, key):
    g = group["guests"][key]
    assert g.error is None, g.error
    assert g.status == 0, "\n".join(g.console[-30:])
    return g.output


def test_guests_join_our_server(group):
    """Both QEMU devices got IDs from our server and the host saw them join."""
    ids = group["guest_ids"]
    assert len(set(ids.values()) | {group["host_id"]}) == 3
    assert set(group["peers_seen_by_host"]) == set(ids.values())
    for key in "ab":
        out = _out(group, key)
        assert f"id {ids[key]}" in out
        assert f"shm {2 << 20}" in out           # BAR2 is our object, all of it


def test_host_rings_guests_and_is_rung(group):
    """The host's eventfd write reaches each guest; each guest's Doorbell write reaches the host."""
    for key in "ab":
        assert "rung-by-host" in _out(group, key)
    assert group["host_rings"] >= 2


def test_guests_ring_each_other(group):
    ids = group["guest_ids"]
    assert f"rung-by-guest {ids['b']}" in _out(group, "a")
    assert f"rung-by-guest {ids['a']}" in _out(group, "b")


def test_channels_carry_data_every_way(group):
    ids, host = group["guest_ids"], group["host_id"]
    assert group["errors"] == []
    for key, other in (("a", "b"), ("b", "a")):
        out = _out(group, key)
        assert f"got {host} hello from {host} to {ids[key]}" in out
        assert f"got {ids[other]} hello from {ids[other]} to {ids[key]}" in out
        assert any(line.startswith(f"received {COUNT} ") for line in out), out
        assert any(line.startswith(f"sent {COUNT} ") for line in out), out
        greeting, ok, _ = group["host_got"][ids[key]]
        assert greeting == f"hello from {ids[key]} to {host}"
        assert ok == COUNT

