"""A VMShm guest and a QEMU ``ivshmem-doorbell`` guest ring each other on one server and object.

One session boots both at once on ``vmshm ivshmem-server``'s Python server: the VMShm guest by
``vmshm qemu --ivshmem SOCKET --run tests/c/vmshm_interop.c`` (the simulated RTL, vmshm.ko, the
host model bridged into the group), the other with QEMU's own device and
``ivshmem/ivshmem_peer.c interop`` (its MSI-X message aimed at a mailbox word; see its header).
Each publishes its peer ID in the object; the VMShm guest writes a greeting and rings, the other
wakes, reads it, writes one back and rings; the VMShm guest wakes from ``read()`` and reads it.
Then they exchange :data:`COUNT` checked messages each way through two channels
(``guest/vmshm_channel_pump.h``): through the RTL's window and DOORBELL on one side, BAR2 and
ivshmem's Doorbell on the other.
"""

import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path
from uuid import uuid4

import pytest
from conftest import require_qemu_parts

from vmshm.ivshmem import IvshmemServer

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "ivshmem" / "ivshmem_peer.c"
INTEROP = ROOT / "tests" / "c" / "vmshm_interop.c"
#: Messages each way between the two guests (the VMShm side is served by Amaranth's simulator).
COUNT = 200


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """Boot the two guests on one server; yield both outputs and what the server saw."""
    from vmshm.qemu import image
    from vmshm.qemu.boot import boot
    parts = require_qemu_parts("the VMShm-ivshmem interop test")
    initrd = image.build_image(parts, {"ivshmem_peer": PEER})
    init = image.init_archive("ivshmem_peer", ["interop", str(COUNT)], load_module=False)
    sock = str(tmp_path_factory.mktemp("interop") / "ivshmem.sock")
    name = f"/vmshm-interop-{os.getpid()}-{uuid4().hex[:8]}"
    joins = []
    server = IvshmemServer(sock, name, size=2 << 20, vectors=1, log=joins.append).start()
    box, lines = {}, queue.Queue()
    args = ["-chardev", f"socket,path={sock},id=ivs",
            "-device", "ivshmem-doorbell,chardev=ivs,vectors=1"]

    def run_ivshmem_guest():
        box["ivshmem"] = boot(parts, initrd, init, timeout=200, device=False, qemu_args=args,
                              echo=lines.put)

    t = threading.Thread(target=run_ivshmem_guest, daemon=True)
    t.start()
    try:
        vmshm = subprocess.run(
            [sys.executable, "-m", "vmshm.cli", "qemu", "--shm", name, "--ivshmem", sock,
             "--backend", "amaranth", "--run", str(INTEROP), "--timeout", "200", "--", name,
             str(COUNT)],
            capture_output=True, encoding="utf-8", errors="replace", timeout=260)
        t.join(timeout=230)
        yield {"vmshm": vmshm, "ivshmem": box.get("ivshmem"), "joins": joins}
    finally:
        server.stop()
        # The object is this test's own: the server created it for this session.
        os.unlink(f"/dev/shm{name}")


def _guest_lines(pair):
    out = pair["vmshm"].stdout
    return [ln[len("guest| "):] for ln in out.splitlines() if ln.startswith("guest| ")]


def test_both_guests_finish(pair):
    r = pair["vmshm"]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    g = pair["ivshmem"]
    assert g is not None and g.error is None and g.status == 0, "\n".join(g.console[-30:])


def test_the_vmshm_guest_is_a_peer_with_the_id_the_server_gave(pair):
    joined = re.search(r"ivshmem: joined .* as peer (\d+)", pair["vmshm"].stdout)
    assert joined, pair["vmshm"].stdout
    vmshm_id = int(joined.group(1))
    # IVPOSITION in the guest is the server's ID, and the ivshmem guest found it in the object.
    assert f"id {vmshm_id}" in _guest_lines(pair)
    assert f"partner {vmshm_id}" in pair["ivshmem"].output


def test_each_rings_the_other_and_reads_what_it_wrote(pair):
    ivshmem_id = int(next(ln.split()[1] for ln in pair["ivshmem"].output
                          if ln.startswith("id ")))
    vmshm_id = int(next(ln.split()[1] for ln in _guest_lines(pair) if ln.startswith("id ")))
    lines = _guest_lines(pair)
    assert f"partner {ivshmem_id}" in lines and f"rang {ivshmem_id}" in lines
    # The VMShm guest slept in read() until the ivshmem guest's ring interrupted it.
    assert any(re.fullmatch(r"interrupted [1-9]\d*", ln) for ln in lines), lines
    assert f"got hello from ivshmem {ivshmem_id}" in lines
    # The ivshmem guest woke on the VMShm guest's doorbell and read its greeting.
    assert f"got-from-vmshm hello from vmshm {vmshm_id}" in pair["ivshmem"].output
    assert f"rang {vmshm_id}" in pair["ivshmem"].output
    # The bridge forwarded every doorbell the guest rang and dropped none.
    m = re.search(r"ivshmem: (\d+) doorbell\(s\) forwarded to peers, (\d+) ring\(s\) "
                  r"delivered, 0 dropped", pair["vmshm"].stdout)
    assert m and int(m[1]) >= 1 and int(m[2]) >= 1, pair["vmshm"].stdout


def test_they_exchange_checked_channel_messages_both_ways(pair):
    # Each side checked every message the other sent (length, sequence, sender, every byte).
    done = f"sent {COUNT} received {COUNT} checked; "
    assert any(ln.startswith(done) for ln in _guest_lines(pair)), _guest_lines(pair)
    assert any(ln.startswith(done) for ln in pair["ivshmem"].output), pair["ivshmem"].output
    assert not any(ln.startswith("error") for ln in _guest_lines(pair) + pair["ivshmem"].output)
    # The VMShm guest's rings went out through the bridge: one per doorbell it rang.
    rang = int(re.search(r"; rings (\d+) waits", "\n".join(_guest_lines(pair)))[1])
    forwarded = int(re.search(r"(\d+) doorbell\(s\) forwarded", pair["vmshm"].stdout)[1])
    assert forwarded == rang + 1        # and the greeting's ring


def test_ivshmem_option_is_checked_before_anything_starts(tmp_path):
    def vmshm_qemu(*args):
        return subprocess.run([sys.executable, "-m", "vmshm.cli", "qemu", "--shm", "/x", *args],
                              capture_output=True, text=True, timeout=60)

    r = vmshm_qemu("--ivshmem", str(tmp_path / "nope.sock"))
    assert r.returncode == 2 and "--ivshmem" in r.stderr and "No such file" in r.stderr
    plain = tmp_path / "file"
    plain.write_text("")
    r = vmshm_qemu("--ivshmem", str(plain))
    assert r.returncode == 2 and "not a socket" in r.stderr
    assert "Traceback" not in r.stderr
    # A socket nobody serves: one line, no traceback, nothing left running.
    import socket
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(dead))
    s.close()
    require_qemu_parts("vmshm qemu --ivshmem")
    r = vmshm_qemu("--ivshmem", str(dead))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cannot join the group" in r.stderr and "Traceback" not in r.stderr
