"""``vmshm ivshmem-server``, the host peer and the channel, on real sockets, eventfds and objects.

The server is checked message by message against QEMU's ``docs/specs/ivshmem-spec`` with a raw
socket; the channel with a C program built from ``guest/vmshm_channel.h`` on one side and the
Python twin on the other, through a real POSIX object, with the doorbells of two peers of a real
server. QEMU's own devices on this server: tests/test_ivshmem_qemu.py.
"""

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from uuid import uuid4

import pytest

from vmshm.ivshmem import IvshmemPeer, IvshmemServer
from vmshm.ivshmem.channel import HEADER, Channel, ChannelError, PeerDoorbell
from vmshm.ivshmem.protocol import recv_message

ROOT = Path(__file__).resolve().parent.parent
KIB = 1024


@pytest.fixture
def names(tmp_path):
    """A socket path and an object name of this test's own; the object is removed afterwards."""
    name = f"/vmshm-ivs-{os.getpid()}-{uuid4().hex[:8]}"
    yield str(tmp_path / "ivshmem.sock"), name
    try:
        os.unlink(f"/dev/shm{name}")         # made by this test's server or by the test itself
    except FileNotFoundError:
        pass


@pytest.fixture
def server(names):
    sock, name = names
    srv = IvshmemServer(sock, name, size=256 * KIB, vectors=2).start()
    yield srv
    srv.stop()


def _raw(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(5)
    return s


def _readable(fd, timeout=2.0):
    return bool(select.select([fd], [], [], timeout)[0])


def test_server_speaks_the_spec_message_by_message(server, names):
    sock, name = names
    a = _raw(sock)
    assert recv_message(a) == (0, None)              # version
    assert recv_message(a) == (0, None)              # the first client's ID is 0
    value, shm = recv_message(a)
    assert value == -1 and shm is not None
    st = os.fstat(shm)
    assert (st.st_ino, st.st_size) == (os.stat(f"/dev/shm{name}").st_ino, 256 * KIB)
    own_a = [recv_message(a) for _ in range(2)]      # interrupt set-up: own ID, one fd a vector
    assert [v for v, _ in own_a] == [0, 0] and all(fd is not None for _, fd in own_a)

    b = _raw(sock)
    assert recv_message(b)[0] == 0 and recv_message(b) == (1, None)
    value, shm_b = recv_message(b)
    assert value == -1 and os.fstat(shm_b).st_ino == st.st_ino
    peer_a = [recv_message(b) for _ in range(2)]     # the existing peer 0, vectors in order
    own_b = [recv_message(b) for _ in range(2)]
    assert [v for v, _ in peer_a] == [0, 0] and [v for v, _ in own_b] == [1, 1]
    join_b = [recv_message(a) for _ in range(2)]     # peer 0 hears of peer 1
    assert [v for v, _ in join_b] == [1, 1]

    # The descriptors are the same eventfds: b ringing a's vector 1 wakes a's vector 1 only.
    os.write(peer_a[1][1], (1).to_bytes(8, sys.byteorder))
    assert _readable(own_a[1][1]) and not _readable(own_a[0][1], 0.1)
    os.write(join_b[0][1], (3).to_bytes(8, sys.byteorder))
    assert int.from_bytes(os.read(own_b[0][1], 8), sys.byteorder) == 3

    b.close()
    assert recv_message(a) == (1, None)              # leave: the ID without a descriptor
    for fd in [shm, shm_b] + [fd for _, fd in own_a + peer_a + own_b + join_b]:
        os.close(fd)
    a.close()


def test_peers_ring_and_wait(server, names):
    sock, _ = names
    with IvshmemPeer.connect(sock, vectors=2) as a, IvshmemPeer.connect(sock, vectors=2) as b:
        assert (a.id, b.id) == (0, 1)
        assert a.wait_for_peers(1) == {1: 2} and b.peers == {0: 2}
        assert b.wait(1, timeout=0.05) == 0           # nothing rung: the timeout passes
        a.ring(b.id, 1)
        a.ring(b.id, 1)
        assert b.wait(1, timeout=2) == 2              # rings since the last wait, counted
        assert b.wait(0, timeout=0.05) == 0           # the other vector stayed quiet
        b.ring(a.id, 0)
        assert a.wait(0, timeout=2) == 1
        a.shm[100:105] = b"hello"
        assert b.shm[100:105] == b"hello"             # one object
        with pytest.raises(ValueError, match="peer 7 is not in the group"):
            a.ring(7)
        with pytest.raises(ValueError, match="vectors 0..1, not 2"):
            a.ring(b.id, 2)
        c = IvshmemPeer.connect(sock, vectors=2)
        assert c.id == 2 and c.peers == {0: 2, 1: 2}
        assert a.wait_for_peers(2) == {1: 2, 2: 2}
        c.close()
        deadline = time.monotonic() + 5
        while 2 in a.peers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert a.peers == {1: 2} and 2 in a.left


def test_an_existing_object_is_neither_resized_nor_removed(names):
    sock, name = names
    fd = os.open(f"/dev/shm{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, 12345)
    os.close(fd)
    srv = IvshmemServer(sock, name, size=1 << 20).start()
    assert (srv.created, srv.size, srv.size_ignored) == (False, 12345, True)
    with IvshmemPeer.connect(sock) as p:
        assert len(p.shm) == 12345
    srv.stop()
    assert os.stat(f"/dev/shm{name}").st_size == 12345
    assert not os.path.exists(sock)                   # the socket was the server's own


def _cli(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "vmshm.cli", "ivshmem-server", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_cli_refuses_bad_input_with_one_line(names, tmp_path):
    sock, name = names
    taken = tmp_path / "taken"
    taken.write_text("mine")
    for args, code, words in [
            (["-S", str(taken), "-M", name], 1, "is not a socket"),
            (["-S", sock, "-M", "a/b"], 2, "one path component"),
            (["-S", sock, "-M", name, "-n", "0"], 2, "vectors must be 1..1024"),
            (["-S", sock, "-M", name, "-l", "0"], 2, "-l must be positive"),
            (["-S", sock, "-M", name, "-l", "3M"], 2, "the size must be a power of two"),
            (["-S", sock, "-M", name, "-l", "lots"], 2, "is not a size"),
            (["-S", str(tmp_path / "no" / "dir.sock"), "-M", name], 1, "No such file")]:
        r = _cli(*args)
        assert r.returncode == code, (args, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert taken.read_text() == "mine"
    assert not os.path.exists(f"/dev/shm{name}")      # nothing made before the checks passed
    fd = os.open(f"/dev/shm{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)                                      # an empty object: QEMU cannot map it
    r = _cli("-S", sock, "-M", name)
    assert r.returncode == 2 and "the existing object is empty" in r.stderr, r.stderr
    assert not os.path.exists(sock) and os.stat(f"/dev/shm{name}").st_size == 0


def test_cli_serves_in_the_foreground_and_detached(names):
    sock, name = names
    proc = subprocess.Popen([sys.executable, "-m", "vmshm.cli", "ivshmem-server", "-F",
                             "-S", sock, "-M", name, "-l", "64K", "-n", "3"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "listening on" in proc.stdout.readline()
        with IvshmemPeer.connect(sock, vectors=3) as a, \
                IvshmemPeer.connect(sock, vectors=3) as b:
            assert len(a.shm) == 64 * KIB and b.vectors == 3 and a.wait_for_peers(1)
            b.ring(a.id, 2)
            assert a.wait(2, timeout=2) == 1
        assert "peer 1 joined" in proc.stdout.readline() + proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert not os.path.exists(sock) and os.path.exists(f"/dev/shm{name}")
    # Detached, like QEMU's server: the command returns once the socket listens.
    r = _cli("-S", sock, "-M", name, "-l", "1M")
    assert r.returncode == 0, r.stderr
    assert "opened" in r.stdout and "-l 1048576 only sizes an object this server creates" \
        in r.stdout
    pid = int(r.stdout.split("pid")[1].split()[0])
    try:
        with IvshmemPeer.connect(sock) as p:
            assert len(p.shm) == 64 * KIB
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(sock)


# --- the channel ------------------------------------------------------------------------------


def _msg_len(i):
    return 1 if i == 0 else 4096 if i == 1 else 1 + (i * 997) % 4096


def _pattern(i, length):
    return bytes((i * 7 + k * 13 + 1) & 0xFF for k in range(length))


def test_channel_layout_wrap_and_full():
    buf = bytearray(HEADER + 256)
    ch = Channel.init(buf, 0, len(buf))
    assert ch.capacity == 256 and ch.max_message == 252
    assert buf[:4] == b"VMCH" and int.from_bytes(buf[8:12], "little") == 256
    # A 100-byte record (4 + 100) twice, then a third does not fit: the ring is full.
    assert ch.try_send(b"a" * 100) is False and ch.try_send(b"b" * 100) is False
    assert ch.try_send(b"c" * 100) is None
    assert int.from_bytes(buf[0x40:0x44], "little") == 208     # head: bytes ever written
    assert ch.try_recv() == (b"a" * 100, False)
    assert ch.try_send(b"c" * 100) is False                    # wraps past the end
    assert buf[HEADER + 208:HEADER + 212] == (100).to_bytes(4, "little")
    assert bytes(buf[HEADER:HEADER + 56]) == b"c" * 56          # the rest at the start
    assert ch.try_recv()[0] == b"b" * 100 and ch.try_recv()[0] == b"c" * 100
    assert ch.try_recv() is None
    with pytest.raises(ValueError, match="1..252 bytes, not 253"):
        ch.try_send(bytes(253))
    buf[0x40:0x44] = (ch.used() + 8 + int.from_bytes(buf[0x80:0x84], "little")).to_bytes(
        4, "little")                                             # a producer gone mad
    with pytest.raises(ChannelError, match="corrupt"):
        ch.try_recv()
    ch.close()
    with pytest.raises(ChannelError, match="no channel"):
        Channel.attach(bytearray(1024), 0, 1024)


@pytest.fixture(scope="module")
def channel_peer(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("a C compiler must be installed under CI")
        pytest.skip("no C compiler for ivshmem/channel_peer.c")
    exe = tmp_path_factory.mktemp("c") / "channel_peer"
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-std=c11", "-D_GNU_SOURCE",
                    "-I", str(ROOT / "guest"), "-o", str(exe),
                    str(ROOT / "ivshmem" / "channel_peer.c"), "-lrt"], check=True)
    return exe


@pytest.mark.parametrize("c_side", ["send", "recv"])
def test_channel_between_c_and_python(channel_peer, names, c_side):
    """COUNT messages of 1 B..4 KiB through an 8 KiB ring: wrap-around, full ring, doorbells."""
    sock, name = names
    count, offset, size = 600, 0x1000, HEADER + 8 * KIB
    with IvshmemServer(sock, name, size=64 * KIB) as _srv, \
            IvshmemPeer.connect(sock) as py, IvshmemPeer.connect(sock) as c:
        py.wait_for_peers(1)
        # The C program is peer c's host side: it rings py through c's fd, waits on c's own.
        args = [str(channel_peer), c_side, name, hex(offset), str(size), str(count),
                str(c.peer_fileno(py.id)), str(c.fileno())]
        if c_side == "send":
            Channel.init(py.shm, offset, size).close()
        else:
            args.append("init")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                                pass_fds=(c.peer_fileno(py.id), c.fileno()))
        try:
            ch = Channel.attach(py.shm, offset, size, timeout=10)
            assert ch.capacity == 8 * KIB
            db = PeerDoorbell(py, c.id)
            total = 0
            for i in range(count):
                if c_side == "send":
                    got = ch.recv(db, timeout=20)
                    assert got == _pattern(i, _msg_len(i)), f"message {i}"
                else:
                    if i % 50 == 0:
                        time.sleep(0.01)           # let the C consumer empty it and sleep
                    ch.send(_pattern(i, _msg_len(i)), db, timeout=20)
                total += _msg_len(i)
            ch.close()
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, out
    ok = out.split("ok ")[1].split()
    c_bytes, c_rings, c_waits = (int(x) for x in ok[:3])
    assert c_bytes == total == sum(_msg_len(i) for i in range(count))
    assert total > 100 * 8 * KIB                     # the positions wrapped the ring many times
    # The sleeping side was rung: the doorbell, not polling, moved it (the C producer sleeps
    # on a full ring and the Python consumer rings it; the C consumer on an empty one).
    assert c_waits > 0 and db.rings > 0


def test_channel_round_trips_check_every_echo(channel_peer):
    """The round trips' initiator (``channel_peer ping``) checks each echo whole: a responder
    that alters one byte of message 7 fails the run at message 7, naming it."""
    from vmshm.benches.channel import floor_rtt
    row = floor_rtt(300)
    assert row["round_trips"] == 300 and 0 < row["median_us"] <= row["p99_us"], row
    with pytest.raises(RuntimeError, match=r"error echo 7: 64 bytes, first 0x07 last 0x5d; "
                                           r"expected 64 of 0x07"):
        floor_rtt(50, bad=7)


def test_channel_bench_prints_the_floor_and_checks_its_arguments(channel_peer):
    r = subprocess.run([sys.executable, "-m", "vmshm.cli", "channel", "--bench", "--no-guest",
                        "--no-rtl", "--count", "200", "--sizes", "1,4096"], capture_output=True,
                       text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if "host → host (floor)" in line]
    assert len(rows) == 2
    assert [row.split("│")[2].strip() for row in rows] == ["1", "4096"]     # message bytes
    for args, words in [(["--sizes", "0"], "each 1..4096 bytes"), (["--count", "1"], "2..10000000"),
                        (["--rtt-count", "0"], "1..1000000 round trips"),
                        ([], "say --bench")]:
        r = subprocess.run([sys.executable, "-m", "vmshm.cli", "channel", *(["--bench"] if args
                            else []), *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
