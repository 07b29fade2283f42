"""A real Linux guest in QEMU drives the simulated RTL through vmshm.ko: ``vmshm qemu``.

One guest boots per session and runs every guest-side check (tests/c/vmshm_guest_checks.c, given
with ``--run``); the host side of each check is read from the run's JSON report and from the host
objects. The transport and the device side are also checked without QEMU, over a socket pair.
"""

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from conftest import require_qemu_parts
from vmshm.backends import backend_names
from vmshm.host_model import ShmRegion

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
PAGE = 4096


def _vmshm(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "vmshm.cli", "qemu", *args],
                          capture_output=True, encoding="utf-8", errors="replace",
                          timeout=timeout)


def _pattern(i, seed):
    return (i * 131 + seed + (i >> 8)) & 0xFF


@pytest.fixture(scope="session")
def shm_writer(tmp_path_factory):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler for tests/c/shm_writer.c")
    exe = tmp_path_factory.mktemp("c") / "shm_writer"
    subprocess.run(["cc", "-o", str(exe), str(HERE / "c" / "shm_writer.c"), "-lrt"], check=True)
    return exe


@pytest.fixture(scope="session")
def guest(shm_writer, tmp_path_factory):
    """Boot one guest that runs every guest-side check; yield what the host saw."""
    require_qemu_parts()
    tag = f"{os.getpid()}-{uuid4().hex[:8]}"
    example, pattern = f"/vmshm-qemu-ex-{tag}", f"/vmshm-qemu-pat-{tag}"
    missing = f"/vmshm-qemu-missing-{tag}"
    # The example's object comes from a plain C program on the host, as a user would make it.
    subprocess.run([str(shm_writer), "write", example, str(MIB), "hello from the host"],
                   check=True)
    pat = ShmRegion.create(pattern, MIB)
    report = tmp_path_factory.mktemp("qemu") / "run.json"
    try:
        # The command's own bound (--timeout) ends a hung guest before the test's does.
        r = _vmshm("--shm", example, "--run", str(HERE / "c" / "vmshm_guest_checks.c"),
                   "--json", str(report), "--timeout", "180", "--", example, pattern, missing)
        seen = subprocess.run([str(shm_writer), "read", example], capture_output=True,
                              encoding="utf-8", errors="replace").stdout
        yield {"run": r, "report": json.loads(report.read_text()) if report.exists() else None,
               "example_line": seen.strip(), "example_size": os.stat(f"/dev/shm{example}").st_size,
               "pattern": pat.read(0, MIB), "names": (example, pattern, missing)}
    finally:
        # Both objects are this test's own: the C program made one, ShmRegion the other.
        for path in (f"/dev/shm{example}",):
            if os.path.exists(path):
                os.unlink(path)
        pat.unlink()
        pat.close()


def _checks(guest):
    out = guest["run"].stdout
    return dict(re.findall(r"guest\| CHECK (\S+) (ok|FAIL.*)", out))


def test_guest_ran_every_check(guest):
    r = guest["run"]
    assert r.returncode == 0, r.stdout + r.stderr
    checks = _checks(guest)
    assert checks and all(v == "ok" for v in checks.values()), checks
    assert len(checks) == 18
    # Nothing went wrong in the kernel, not even on removing a function with its file open.
    assert not re.search(r"kernel\| .*(BUG:|Oops|Call Trace)", r.stdout), r.stdout


def test_example_reaches_the_host_object(guest):
    out = guest["run"].stdout
    # The guest printed what the host's C program wrote, and wrote its own line back.
    assert "offset 0 holds: hello from the host" in out
    pid = re.search(r"guest\| wrote: I was here: (\d+)", out).group(1)
    assert guest["example_line"] == f"I was here: {pid}"
    assert guest["example_size"] == MIB


def test_busy_missing_and_long_names(guest):
    checks = _checks(guest)
    for name in ("second_open_ebusy", "missing_enoent", "name_1023_reaches_open",
                 "name_1024_enametoolong", "mmap_past_map_size_einval"):
        assert checks[name] == "ok"
    rep = guest["report"]
    # ENOENT came from the host, which was asked for the missing name.
    assert any("no shared-memory object named" in ln and guest["names"][2] in ln
               for ln in rep["host_log"])
    # The 1023-byte name went through the name BAR and OPEN to the host; the 1024-byte one
    # never left the driver: no 'bbbb' word was written anywhere.
    assert any("is 1022 bytes long after its '/'" in ln for ln in rep["host_log"])
    writes = [a["value"] for a in rep["accesses"] if a["kind"] == "mem_write"]
    assert writes.count(0x61616161) == 1022 // 4 - 1
    assert 0x62626262 not in writes


def test_pattern_read_back_by_the_host(guest):
    data = guest["pattern"]
    assert data[:PAGE] == bytes(_pattern(i, 1) for i in range(PAGE))
    assert data[MIB - PAGE:] == bytes(_pattern(i, 2) for i in range(PAGE))
    assert data[PAGE:MIB - PAGE] == bytes(MIB - 2 * PAGE)


def test_accesses_of_every_size_reach_the_device(guest):
    sizes = {a["size"] for a in guest["report"]["accesses"] if a["kind"] == "mem_write"}
    assert sizes == {1, 2, 4, 8}
    for a in guest["report"]["accesses"]:
        assert a["end"] >= a["start"]


def test_killed_process_releases_the_device(guest):
    checks = _checks(guest)
    assert checks["child_opened"] == "ok" and checks["open_after_kill"] == "ok"
    pattern = guest["names"][1]
    ops = [ln.split(":")[1].split()[0] for ln in guest["report"]["host_log"]
           if pattern in ln and ("OPEN '" in ln or "CLOSE" in ln)]
    # ioctl/close, the killed child's open and its release, the open after it: host saw each.
    assert ops == ["OPEN", "CLOSE"] * 3


def test_failing_program_gives_its_exit_status(tmp_path, shm_objects):
    require_qemu_parts()
    src = tmp_path / "fail.c"
    src.write_text('#include <stdio.h>\nint main(int c, char **v) {\n'
                   'printf("args %s %s\\n", v[1], v[2]);\nreturn 7;\n}\n')
    name = shm_objects.create(4096, "qemu")
    r = _vmshm("--shm", name, "--run", str(src), "--timeout", "180", "--", "one", "two words")
    assert r.returncode == 7, r.stdout + r.stderr
    assert "guest| args one two words" in r.stdout


def test_bad_arguments_and_missing_parts_say_so(tmp_path):
    r = _vmshm("--shm", "no-slash")
    assert r.returncode == 2 and "--shm must be" in r.stderr
    r = _vmshm("--shm", "/x", "--run", str(tmp_path / "nope.c"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = _vmshm("--shm", "/x", "--kernel", str(tmp_path / "k"), "--headers", str(tmp_path))
    assert r.returncode == 2 and "--kernel" in r.stderr and "Traceback" not in r.stderr
    r = _vmshm("--shm", "/x", "--window-64bit")
    assert r.returncode == 2 and "64-bit BAR" in r.stderr
    # Without QEMU on the PATH: one line saying what to install.
    r = subprocess.run([sys.executable, "-m", "vmshm.cli", "qemu", "--shm", "/x"],
                       capture_output=True, text=True, env={**os.environ, "PATH": "/nonexistent"})
    assert r.returncode == 2
    assert r.stderr.strip() == ("vmshm qemu: QEMU is not installed: "
                                "apt-get install qemu-system-x86")


# -- the transport and the device side, without QEMU --------------------------------------------

class FakeQemu:
    """QEMU's end of the proxy socket: send requests as QEMU 7.2 frames them, read the RETs."""

    def __init__(self, sock):
        self.sock = sock

    def send(self, cmd, payload=b"", fds=()):
        header = struct.pack("<i4xQ", cmd, len(payload))
        socket.send_fds(self.sock, [header], list(fds))
        self.sock.sendall(payload)

    def ret(self):
        raw = b""
        while len(raw) < 24:
            raw += self.sock.recv(24 - len(raw))
        cmd, size, value = struct.unpack("<i4xQQ", raw)
        assert (cmd, size) == (1, 8)
        return value

    def cfg_read(self, addr, size):
        self.send(3, struct.pack("<IIi", addr, 0, size))
        return self.ret()

    def cfg_write(self, addr, size, value):
        self.send(2, struct.pack("<IIi", addr, value, size))
        self.ret()

    def mem_read(self, addr, size):
        self.send(5, struct.pack("<QQIB3x", addr, 0, size, 1))
        return self.ret()

    def mem_write(self, addr, size, value):
        self.send(4, struct.pack("<QQIB3x", addr, value, size, 1))
        self.ret()


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("backend", backend_names(in_process=True))
def test_device_server_speaks_the_proxy_protocol(shm_objects, backend):
    import threading

    from vmshm.backends import get_backend
    from vmshm.host_model import HostModel
    from vmshm.qemu.device import serve
    from vmshm.qemu.mpqemu import MpqemuLink

    from conftest import require_backend
    require_backend(backend)
    simulate = get_backend(backend).simulate

    name = shm_objects.create(MIB, "proxy")
    ours, theirs = socket.socketpair()
    log, host_log, box = [], [], {}
    host = HostModel(log=host_log.append)
    link = MpqemuLink(ours)
    fds_before = _open_fds()
    t = threading.Thread(target=lambda: box.setdefault("r", simulate(
        lambda bus: serve(bus, link=link, log=log), hosts=[host])))
    t.start()
    q = FakeQemu(theirs)
    r, w = os.pipe()
    q.send(0, bytes(192), [r, w])             # SYNC_SYSMEM: its fds must be closed at once
    os.close(r), os.close(w)
    assert q.cfg_read(0, 4) == 0x66611AF4
    assert q.cfg_read(2, 2) == 0x6661
    q.cfg_write(0x10, 4, 0xFFFFFFFF)
    assert q.cfg_read(0x10, 4) == 0xFFFFFF00  # BAR0 sizing: 256 bytes
    for bar, base in ((0, 0xFE000000), (1, 0xFD000000), (2, 0xFE001000)):
        q.cfg_write(0x10 + 4 * bar, 4, base)
    q.cfg_write(4, 2, 0x6)                    # memory space and bus master
    assert q.mem_read(0xFE000004, 4) == 0x564D5348
    raw = name.encode() + b"\0"
    raw += bytes(-len(raw) % 8)
    for i in range(0, len(raw), 8):           # 8-byte writes: two beats on the 32-bit device
        q.mem_write(0xFE001000 + i, 8, int.from_bytes(raw[i:i + 8], "little"))
    assert q.mem_read(0xFE000000, 4) == 0     # OPEN
    q.mem_write(0xFD000010, 8, 0x1122334455667788)
    q.mem_write(0xFD000021, 1, 0xAB)
    assert q.mem_read(0xFD000010, 8) == 0x1122334455667788
    assert q.mem_read(0xFD000012, 2) == 0x5566
    with ShmRegion.attach(name) as region:
        assert region.read(0x10, 0x12) == bytes.fromhex("8877665544332211") + bytes(9) + b"\xab"
    assert host.is_open
    q.send(7)                                 # DEVICE_RESET: device and host side
    q.ret()
    assert not host.is_open and host_log[-1].startswith("host: CLOSE")
    assert q.cfg_read(4, 2) == 0              # the command register is back to reset
    theirs.close()
    t.join(timeout=30)
    assert not t.is_alive()
    assert _open_fds() <= fds_before
    assert {a.size for a in log if a.kind == "mem_write"} == {1, 8}
    assert all(a.end > a.start for a in log if a.kind.startswith("mem"))


def test_a_hung_guest_ends_the_run(tmp_path, shm_objects):
    require_qemu_parts()
    src = tmp_path / "hang.c"
    src.write_text("#include <unistd.h>\nint main(void) { for (;;) pause(); }\n")
    name = shm_objects.create(4096, "qemu")
    r = _vmshm("--shm", name, "--run", str(src), "--timeout", "25")
    assert r.returncode == 1
    assert "did not finish within 25 s" in r.stderr
    alive = subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*{name}"], capture_output=True)
    assert alive.returncode == 1


def test_kernel_and_headers_must_match(tmp_path):
    from vmshm.qemu.image import Missing, find_parts
    parts = require_qemu_parts()
    # The found pair, given explicitly, is accepted: the module's vermagic will match.
    assert find_parts(parts.kernel, parts.headers).release == parts.release
    other = tmp_path / "headers"
    (other / "include" / "generated").mkdir(parents=True)
    (other / "Makefile").write_text("")
    (other / "include" / "generated" / "utsrelease.h").write_text(
        '#define UTS_RELEASE "9.9.9-other"\n')
    with pytest.raises(Missing, match="are for 9.9.9-other.*the module would not load"):
        find_parts(parts.kernel, other)
