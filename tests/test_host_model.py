"""Tests for vmshm.host_model: real POSIX shared-memory objects, shared with other processes."""

import errno
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from uuid import uuid4

import _posixshmem
import pytest

from vmshm.host_model import HostModel, HostStalls, HostTiming, RegionError, ShmRegion
from vmshm.abi.regmap import NAME_MAX, Status

C_SOURCE = Path(__file__).parent / "c" / "shm_writer.c"


def unique_name(length=None):
    """Return an object name no other test or run uses, padded to `length` bytes after '/'."""
    name = f"/vmshm-test-{os.getpid()}-{uuid4().hex[:8]}"
    if length is not None:
        name += "x" * (length + 1 - len(name))
    return name


class Objects:
    """Create shared-memory objects for one test and remove them all afterwards."""

    def __init__(self):
        self.regions = []
        self.names = []

    def create(self, size, name=None):
        """Create and return a region of `size` bytes (see ShmRegion.create)."""
        region = ShmRegion.create(name or unique_name(), size)
        self.regions.append(region)
        return region

    def name(self, length=None):
        """Return a fresh name that something else will create; it is unlinked at teardown."""
        name = unique_name(length)
        self.names.append(name)
        return name

    def cleanup(self):
        for region in self.regions:
            try:
                region.unlink()
            except FileNotFoundError:
                pass
            region.close()
        for name in self.names:
            try:
                _posixshmem.shm_unlink(name)
            except FileNotFoundError:
                pass


@pytest.fixture
def shm():
    objects = Objects()
    yield objects
    objects.cleanup()


@pytest.fixture
def host():
    model = HostModel()
    yield model
    model.close()


def exists(name):
    """Return whether the object `name` exists, without attaching to it through our code."""
    try:
        fd = _posixshmem.shm_open(name, os.O_RDONLY, 0)
    except FileNotFoundError:
        return False
    os.close(fd)
    return True


def raw_size(name):
    fd = _posixshmem.shm_open(name, os.O_RDONLY, 0)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def run_python(code, *args, check=True):
    """Run `code` in a fresh interpreter that can import vmshm, and return its result."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                          capture_output=True, text=True, check=check, timeout=60)


# Plain _posixshmem and mmap, not our code: another program's view of the object.
PEER_WRITE = """
    import _posixshmem, mmap, os, sys
    name, offset, data = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
    fd = _posixshmem.shm_open(name, os.O_RDWR, 0)
    with mmap.mmap(fd, os.fstat(fd).st_size) as m:
        m[offset:offset + len(data)] = data
    os.close(fd)
"""
PEER_READ = """
    import _posixshmem, mmap, os, sys
    name, offset, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    fd = _posixshmem.shm_open(name, os.O_RDONLY, 0)
    with mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ) as m:
        print(m[offset:offset + n].hex())
    os.close(fd)
"""


# --- ShmRegion ---------------------------------------------------------------------------------

def test_region_round_trip_is_shared_between_mappings(shm):
    region = shm.create(8192)
    assert (region.size, region.created, region.current_size()) == (8192, True, 8192)
    assert region.read(0, 16) == bytes(16)
    region.write(100, b"hello, host")
    assert region.read(100, 11) == b"hello, host"
    with ShmRegion.attach(region.name) as other:
        assert other.created is False and other.size == 8192
        assert other.read(100, 11) == b"hello, host"
        other.write(8188, b"tail")
    assert region.read(8188, 4) == b"tail"
    assert region.read(8192, 0) == b""


def test_region_accepts_bytes_names(shm):
    region = shm.create(64)
    with ShmRegion.attach(os.fsencode(region.name)) as other:
        assert other.name == region.name


def test_region_handles_names_that_are_not_utf8(shm):
    name = os.fsdecode(unique_name().encode() + b"-\xff\xfe")
    region = shm.create(64, name=name)
    region.write(0, b"raw")
    model = HostModel()
    try:
        assert model.open(os.fsencode(name) + b"\0") == (0, 64)
        assert model.dma_read(0, 3) == (b"raw", True)
    finally:
        model.close()


def test_mask_writes_store_only_enabled_bytes(shm):
    region = shm.create(64)
    region.write(0, b"\xaa" * 8)
    region.write(0, b"ABCDEFGH", mask=[True, False, True, True, False, False, False, True])
    assert region.read(0, 8) == b"A\xaaCD\xaa\xaa\xaaH"
    region.write(0, b"abcdefgh", mask=b"\x00\x01\x00\x00\x00\x00\x01\x00")
    assert region.read(0, 8) == b"AbCD\xaa\xaagH"
    region.write(0, b"zzzz", mask=[0, 0, 0, 0])
    assert region.read(0, 4) == b"AbCD"
    with pytest.raises(ValueError, match="3 enables but there are 4"):
        region.write(0, b"wxyz", mask=[1, 1, 1])


def test_region_refuses_out_of_range_and_negative_accesses(shm):
    region = shm.create(100)
    with pytest.raises(RegionError, match="past the end of the 100 bytes it had when opened") as info:
        region.read(98, 4)
    assert info.value.errno == errno.EFAULT and isinstance(info.value, OSError)
    with pytest.raises(RegionError):
        region.write(100, b"x")
    with pytest.raises(ValueError, match="must not be negative, got -1"):
        region.read(-1, 1)
    with pytest.raises(ValueError, match="must not be negative"):
        region.read(0, -1)


def test_close_is_idempotent_and_keeps_the_object(shm):
    region = shm.create(64)
    with ShmRegion.attach(region.name) as other:
        pass
    assert other.closed
    other.close()
    with pytest.raises(ValueError, match="is closed"):
        other.read(0, 1)
    with pytest.raises(ValueError, match="is closed"):
        other.current_size()
    assert exists(region.name)
    assert "closed" in repr(other)


def test_attach_missing_object_raises_enoent():
    with pytest.raises(FileNotFoundError) as info:
        ShmRegion.attach(unique_name())
    assert info.value.errno == errno.ENOENT


def test_create_refuses_an_existing_name_and_leaves_it_alone(shm):
    region = shm.create(1000)
    region.write(0, b"keep me")
    with pytest.raises(FileExistsError):
        ShmRegion.create(region.name, 5)
    assert raw_size(region.name) == 1000
    assert region.read(0, 7) == b"keep me"


def test_unlink_refuses_on_an_attached_region(shm):
    region = shm.create(64)
    with ShmRegion.attach(region.name) as other:
        with pytest.raises(PermissionError, match="did not create"):
            other.unlink()
    assert exists(region.name)


def test_unlink_removes_a_created_object():
    name = unique_name()
    region = ShmRegion.create(name, 64)
    try:
        region.unlink()
        assert not exists(name)
    finally:
        region.close()


def test_attach_and_open_or_create_never_change_the_size(shm):
    name = shm.name()
    fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, 12345)
    os.close(fd)
    with ShmRegion.attach(name) as region:
        assert region.size == 12345
    region, created = ShmRegion.open_or_create(name, 99999)
    with region:
        assert (created, region.size, region.created) == (False, 12345, False)
    assert raw_size(name) == 12345


def test_open_or_create_creates_a_missing_object(shm):
    name = shm.name()
    region, created = ShmRegion.open_or_create(name, 4096)
    with region:
        assert (created, region.size, region.created) == (True, 4096, True)
    assert raw_size(name) == 4096


def test_create_rejects_bad_sizes_and_names():
    with pytest.raises(ValueError, match="must not be negative, got -5"):
        ShmRegion.create(unique_name(), -5)
    with pytest.raises(TypeError, match="must be str or bytes, not int"):
        ShmRegion.attach(42)
    with pytest.raises(ValueError, match="NUL"):
        ShmRegion.attach("/a\0b")


# --- HostModel: OPEN and CLOSE ------------------------------------------------------------------

def test_open_read_write_close(shm, host):
    region = shm.create(4096)
    region.write(0, b"from the creator")
    assert host.open(region.name.encode() + b"\0") == (Status.OK, 4096)
    assert host.is_open and host.region.name == region.name and host.last_error is None
    assert host.dma_read(0, 16) == (b"from the creator", True)
    assert host.dma_write(32, b"from the device") is True
    assert region.read(32, 15) == b"from the device"
    assert host.close() == Status.OK
    assert not host.is_open and host.region is None
    assert exists(region.name)
    assert host.close() == Status.OK


def test_open_ignores_bytes_after_the_nul(shm, host):
    region = shm.create(64)
    assert host.open(region.name.encode() + b"\0garbage/\xff") == (Status.OK, 64)


def test_open_accepts_a_name_of_exactly_name_max_bytes(shm, host):
    region = shm.create(64, name=unique_name(NAME_MAX))
    assert len(region.name) == NAME_MAX + 1
    assert host.open(region.name.encode() + b"\0") == (Status.OK, 64)


@pytest.mark.parametrize("raw, status, reason", [
    (b"", Status.ENAMETOOLONG, "hold no NUL"),
    (b"/no-terminator", Status.ENAMETOOLONG, "hold no NUL"),
    (b"\0", Status.EINVAL, "empty"),
    (b"\0/after-nul\0", Status.EINVAL, "empty"),
    (b"relative\0", Status.EINVAL, "does not start with '/'"),
    (b"/dir/name\0", Status.EINVAL, "after the leading one"),
    (b"//name\0", Status.EINVAL, "after the leading one"),
    (b"/name/\0", Status.EINVAL, "after the leading one"),
    (b"/\0", Status.EINVAL, "names no object"),
    (b"/..\0", Status.EINVAL, "names no object"),
    (b"/" + b"a" * (NAME_MAX + 1) + b"\0", Status.ENAMETOOLONG, "256 bytes long"),
    (b"/" + b"a" * 5000 + b"\0", Status.ENAMETOOLONG, "more than NAME_MAX"),
], ids=["empty-buffer", "no-nul", "empty", "empty-then-more", "relative", "inner-slash",
        "double-slash", "trailing-slash", "just-slash", "dot-dot", "256-bytes", "5000-bytes"])
def test_open_rejects_malformed_names(host, raw, status, reason):
    assert host.open(raw) == (status, 0)
    assert not host.is_open
    assert reason in host.last_error


def test_open_missing_object_is_enoent(host):
    name = unique_name()
    assert host.open(name.encode() + b"\0") == (Status.ENOENT, 0)
    assert host.last_error == f"no shared-memory object named {name!r} on this host"


def test_open_missing_name_of_name_max_bytes_is_enoent_not_too_long(host):
    name = unique_name(NAME_MAX)
    assert len(name) == NAME_MAX + 1
    assert host.open(name.encode() + b"\0") == (Status.ENOENT, 0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses permission checks, so a mode-0 "
                    "object opens fine and EACCES cannot happen")
def test_open_object_without_permission_is_eacces(shm, host):
    region = shm.create(64)
    fd = _posixshmem.shm_open(region.name, os.O_RDWR, 0)
    os.fchmod(fd, 0o000)
    os.close(fd)
    assert host.open(region.name.encode() + b"\0") == (Status.EACCES, 0)
    assert "may not be opened" in host.last_error


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can drop to another user; the test "
                    "above covers EACCES for everyone else")
def test_open_object_without_permission_is_eacces_for_a_dropped_root(shm):
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user to drop privileges to")
    region = shm.create(64)
    fd = _posixshmem.shm_open(region.name, os.O_RDWR, 0)
    os.fchmod(fd, 0o000)
    os.close(fd)
    # A forked child keeps the loaded modules, so it needs no access to the venv as nobody.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            model = HostModel()
            answer = json.dumps([*model.open(region.name.encode() + b"\0"), model.last_error])
            os.write(write_end, answer.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    status, size, reason = json.loads(answer)
    assert (status, size) == (Status.EACCES, 0)
    assert "may not be opened" in reason


def test_open_empty_object_is_einval_and_releases_it(shm, host):
    region = shm.create(0)
    assert host.open(region.name.encode() + b"\0") == (Status.EINVAL, 0)
    assert not host.is_open and host.region is None
    assert "empty" in host.last_error
    assert raw_size(region.name) == 0


def test_open_while_open_is_ebusy_and_keeps_the_first(shm, host):
    first, second = shm.create(64), shm.create(128)
    assert host.open(first.name.encode() + b"\0") == (Status.OK, 64)
    assert host.open(second.name.encode() + b"\0") == (Status.EBUSY, 0)
    assert first.name in host.last_error
    assert host.region.name == first.name
    assert host.close() == Status.OK
    assert host.open(second.name.encode() + b"\0") == (Status.OK, 128)


def test_open_other_failures_are_eio(shm, host, tmp_path):
    # A directory in the shm file system has a valid name but cannot be opened read-write.
    name = shm.name()
    shm_dir = Path("/dev/shm")
    if not shm_dir.is_dir():
        pytest.skip("no /dev/shm to plant a directory in")
    (shm_dir / name[1:]).mkdir()
    try:
        assert host.open(name.encode() + b"\0") == (Status.EIO, 0)
        assert "cannot open" in host.last_error
    finally:
        (shm_dir / name[1:]).rmdir()


def test_open_rejects_non_bytes(host):
    with pytest.raises(TypeError, match="not str"):
        host.open("/name\0")


def test_log_receives_open_and_close(shm):
    lines = []
    region = shm.create(64)
    model = HostModel(log=lines.append)
    model.open(region.name.encode() + b"\0")
    model.close()
    model.open(b"/\0")
    assert lines[0] == f"host: OPEN {region.name!r}: 64 bytes"
    assert lines[1] == f"host: CLOSE {region.name!r}"
    assert lines[2].startswith("host: OPEN failed: EINVAL")


# --- HostModel: DMA -----------------------------------------------------------------------------

def test_dma_with_nothing_open_is_refused(host):
    assert host.dma_read(0, 8) == (b"\xff" * 8, False)
    assert host.dma_write(0, b"x") is False


def test_dma_clips_at_the_end_of_the_object(shm, host):
    region = shm.create(10)
    region.write(0, bytes(range(10)))
    host.open(region.name.encode() + b"\0")
    assert host.dma_read(8, 4) == (b"\x08\x09\xff\xff", True)
    assert host.dma_read(10, 4) == (b"\xff" * 4, False)
    assert host.dma_read(1 << 40, 4) == (b"\xff" * 4, False)
    assert host.dma_read(-1, 4) == (b"\xff" * 4, False)
    assert host.dma_write(8, b"ABCD") is True
    assert region.read(0, 10) == bytes(range(8)) + b"AB"
    assert host.dma_write(10, b"ABCD") is False
    assert region.current_size() == 10


def test_dma_write_mask(shm, host):
    region = shm.create(16)
    host.open(region.name.encode() + b"\0")
    assert host.dma_write(0, b"abcdefgh", mask=[1, 0, 0, 1, 1, 0, 0, 1]) is True
    assert region.read(0, 8) == b"a\0\0de\0\0h"
    # Enables past the end are dropped together with their bytes.
    assert host.dma_write(12, b"WXYZ0123", mask=b"\x01\x00\x01\x01\x01\x01\x01\x01") is True
    assert region.read(12, 4) == b"W\0YZ"
    assert host.dma_write(0, b"ab", mask=[1]) is False


def test_data_written_by_another_process_is_seen_and_vice_versa(shm, host):
    region = shm.create(4096)
    host.open(region.name.encode() + b"\0")
    run_python(PEER_WRITE, region.name, "1000", b"peer was here".hex())
    assert host.dma_read(1000, 13) == (b"peer was here", True)
    assert host.dma_write(2000, b"model was here") is True
    result = run_python(PEER_READ, region.name, "2000", "14")
    assert bytes.fromhex(result.stdout.strip()) == b"model was here"


def test_object_survives_a_killed_attacher(shm):
    region = shm.create(4096)
    region.write(0, b"before")
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, time
            from vmshm.host_model import ShmRegion
            region = ShmRegion.attach(sys.argv[1])
            region.write(100, b"child")
            print("ready", flush=True)
            time.sleep(60)
        """), region.name],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)),
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert raw_size(region.name) == 4096
    with ShmRegion.attach(region.name) as again:
        assert again.read(0, 6) == b"before" and again.read(100, 5) == b"child"


# The model runs in a child so a regression (touching the vanished pages) kills the child with
# SIGBUS and fails this test, instead of killing pytest and leaking every test's objects.
SHRINK_CHILD = """
    import json, sys
    from vmshm.host_model import HostModel, RegionError
    model = HostModel()
    print(json.dumps(model.open(sys.argv[1].encode() + b"\\0")), flush=True)
    for line in sys.stdin:
        new_size = int(line)
        result = {
            "read_head": model.dma_read(0, 4)[1],
            "read_gone": model.dma_read(8192, 4)[1],
            "read_straddle": model.dma_read(new_size - 2, 4)[1] if new_size else None,
            "write_gone": model.dma_write(12000, b"xxxx"),
            "write_head": model.dma_write(0, b"head") if new_size else None,
        }
        try:
            model.region.read(12000, 4)
            result["region_read"] = "no error"
        except RegionError as exc:
            result["region_read"] = exc.errno
        print(json.dumps(result), flush=True)
"""


def test_object_shrunk_by_another_process_is_refused_not_sigbus(shm):
    region = shm.create(16384)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SHRINK_CHILD), region.name],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(child.stdout.readline()) == [0, 16384]
        results = []
        for new_size in (4097, 0):
            # This process is the "other process": it shrinks the object under the child.
            fd = _posixshmem.shm_open(region.name, os.O_RDWR, 0)
            os.ftruncate(fd, new_size)
            os.close(fd)
            child.stdin.write(f"{new_size}\n")
            child.stdin.flush()
            line = child.stdout.readline()
            assert line, (f"the model's process ended with {child.wait(timeout=30)} (negative: a "
                          f"signal; -7 is SIGBUS) after the object shrank to {new_size} bytes")
            results.append(json.loads(line))
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == 0, f"the model's process ended with {child.returncode}"
    assert results[0] == {"read_head": True, "read_gone": False, "read_straddle": False,
                          "write_gone": False, "write_head": True,
                          "region_read": errno.EFAULT}
    assert results[1] == {"read_head": False, "read_gone": False, "read_straddle": None,
                          "write_gone": False, "write_head": None,
                          "region_read": errno.EFAULT}


# --- A C program as the peer --------------------------------------------------------------------

@pytest.fixture(scope="module")
def shm_writer(tmp_path_factory):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler 'cc' on PATH to build tests/c/shm_writer.c")
    exe = tmp_path_factory.mktemp("c") / "shm_writer"
    subprocess.run([cc, "-Wall", "-Wextra", "-o", str(exe), str(C_SOURCE), "-lrt"], check=True,
                   timeout=120)
    return exe


def test_c_program_and_model_see_each_others_data(shm, host, shm_writer):
    name = shm.name()
    subprocess.run([shm_writer, "write", name, "4096", "hello from C"], check=True, timeout=30)
    assert raw_size(name) == 4096
    assert host.open(name.encode() + b"\0") == (Status.OK, 4096)
    assert host.dma_read(0, 13) == (b"hello from C\0", True)
    assert host.dma_write(0, b"hello from Python\0") is True
    out = subprocess.run([shm_writer, "read", name], check=True, capture_output=True, text=True,
                         timeout=30).stdout
    assert out == "hello from Python\n"
    # The C writer grows objects but never shrinks them.
    subprocess.run([shm_writer, "write", name, "16", "again"], check=True, timeout=30)
    assert raw_size(name) == 4096


# --- HostTiming ---------------------------------------------------------------------------------

def test_timing_defaults_and_validation():
    timing = HostTiming()
    assert (timing.ctl_latency, timing.dma_latency, timing.ctl_ready, timing.dma_ready,
            timing.rsp_valid, timing.seed) == (0, 0, 1.0, 1.0, 1.0, 0)
    with pytest.raises(ValueError, match="ctl_latency must be a non-negative number of "
                                         "cycles, not -1"):
        HostTiming(ctl_latency=-1)
    with pytest.raises(ValueError, match="dma_latency must be an int, not float"):
        HostTiming(dma_latency=1.5)
    with pytest.raises(ValueError, match=r"dma_ready must be a probability in \(0, 1\], not 0"):
        HostTiming(dma_ready=0)
    with pytest.raises(ValueError, match=r"rsp_valid must be a probability in \(0, 1\], not 1.5"):
        HostTiming(rsp_valid=1.5)
    with pytest.raises(ValueError, match="ctl_ready must be a probability"):
        HostTiming(ctl_ready="high")
    with pytest.raises(ValueError, match="seed must be an int"):
        HostTiming(seed=None)


def test_stalls_are_deterministic_and_follow_the_probabilities():
    timing = HostTiming(ctl_ready=0.25, dma_ready=0.5, rsp_valid=1.0, seed=7)
    a, b = timing.stalls(), timing.stalls()
    assert isinstance(a, HostStalls)
    draws_a = [a.dma_ready() for _ in range(4000)]
    assert draws_a == [b.dma_ready() for _ in range(4000)]
    assert 0.45 < sum(draws_a) / 4000 < 0.55
    assert 0.2 < sum(a.ctl_ready() for _ in range(4000)) / 4000 < 0.3
    assert all(a.rsp_valid() for _ in range(1000))
    other = HostTiming(dma_ready=0.5, seed=8).stalls()
    assert [other.dma_ready() for _ in range(4000)] != draws_a


def test_stall_channels_are_independent():
    timing = HostTiming(ctl_ready=0.5, dma_ready=0.5, seed=3)
    a, b = timing.stalls(), timing.stalls()
    for _ in range(10):
        a.ctl_ready()
    assert [a.dma_ready() for _ in range(100)] == [b.dma_ready() for _ in range(100)]


def test_host_model_takes_timing_and_rejects_junk():
    timing = HostTiming(ctl_latency=3)
    assert HostModel(timing).timing is timing
    assert HostModel().timing == HostTiming()
    with pytest.raises(TypeError, match="timing must be a HostTiming"):
        HostModel({"ctl_latency": 3})


def test_doorbells_are_recorded_and_passed_on():
    host = HostModel()
    seen = []
    host.doorbell(3, 1)
    host.on_doorbell = lambda peer, vector: seen.append((peer, vector))
    host.doorbell(0xFFFF, 31)
    assert host.doorbells == [(3, 1), (0xFFFF, 31)]
    assert seen == [(0xFFFF, 31)]
    assert host.state()["doorbells"] == [(3, 1), (0xFFFF, 31)]


def test_rings_queue_in_order_and_wake_the_eventfd():
    import select
    host = HostModel()
    host.ring(5)
    fd = host.ring_fd           # made after a ring: readable at once
    assert select.select([fd], [], [], 0)[0] == [fd]
    host.ring(0)
    assert host.pending_rings()
    assert host.take_rings() == [5, 0]
    assert not host.pending_rings()
    assert select.select([fd], [], [], 0)[0] == []
    host.ring(65535)
    assert select.select([fd], [], [], 0)[0] == [fd]
    host.close_ring_fd()
    assert host.take_rings() == [65535]


def test_rings_from_threads_are_all_delivered():
    import threading
    host = HostModel()
    threads = [threading.Thread(target=lambda k=k: [host.ring(k) for _ in range(200)])
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rings = host.take_rings()
    assert sorted(rings) == sorted([k for k in range(4) for _ in range(200)])


@pytest.mark.parametrize("vector", [-1, 1 << 16, 1.0, "1", True, None])
def test_ring_refuses_what_the_port_cannot_carry(vector):
    with pytest.raises(ValueError, match="vector must be an integer from 0 to 65535"):
        HostModel().ring(vector)


def test_a_doorbell_fault_is_a_stall_only():
    from vmshm.host_model.faults import Fault
    Fault("db", "stall", exchange=2, cycles=10)
    with pytest.raises(ValueError, match="can only be a 'stall'"):
        Fault("db", "drop")
