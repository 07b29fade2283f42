"""What makes ``pytest -n auto`` safe: shared fixtures set up once, caches built once, no objects
left in /dev/shm by a run that is killed.

Each case runs a real pytest (or real processes) on a small test file of its own, with this
suite's conftest loaded as a plugin.
"""

import os
import signal
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from uuid import uuid4

import pytest

from vmshm.harness.build import build_file_once, build_once, design_text, evict
from vmshm.host_model import ShmRegion
from vmshm.host_model.scratch import remove_stale

TESTS = Path(__file__).resolve().parent


def _pytest(tmp_path, *args, **popen):
    """Start pytest on ``tmp_path`` with tests/conftest.py as a plugin; return the process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-p", "conftest", "--rootdir", str(tmp_path), *args, str(tmp_path)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def test_a_shared_fixture_is_set_up_once_across_workers(tmp_path):
    # Four tests share a session fixture that appends a line per set-up (a guest boot, say).
    log = tmp_path / "setups.log"
    (tmp_path / "test_shared.py").write_text(f"""
import pytest

@pytest.fixture(scope="session")
def guest():
    with open({str(log)!r}, "a") as f:
        f.write("boot\\n")

@pytest.mark.parametrize("n", range(4))
def test_uses_guest(guest, n):
    pass

@pytest.fixture(scope="session", params=["intx", ("msi", 2)])
def kind(request):
    with open({str(log)!r}, "a") as f:
        f.write(f"{{request.param}}\\n")

@pytest.mark.parametrize("n", range(3))
def test_uses_kind(kind, n):
    pass

@pytest.mark.parametrize("n", range(4))
def test_alone(n):
    pass
""")
    proc = _pytest(tmp_path, "-n", "2")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "14 passed" in out
    # One set-up per fixture and parameter, whichever worker ran each test.
    assert sorted(log.read_text().splitlines()) == ["('msi', 2)", "boot", "intx"], \
        "a worker set up a shared fixture again"


def test_a_terminated_run_removes_its_objects(tmp_path):
    # `timeout` and CI cancelling a job send SIGTERM: the fixture's teardown must still run.
    named = tmp_path / "name"
    (tmp_path / "test_hangs.py").write_text(f"""
import time
from pathlib import Path

def test_hangs(shm_objects):
    name = shm_objects.create(4096, tag="sigterm")
    # Whole or not at all: the test reads it as soon as it appears.
    Path({str(named)!r} + ".tmp").write_text(name)
    Path({str(named)!r} + ".tmp").replace({str(named)!r})
    time.sleep(120)
""")
    proc = _pytest(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not named.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert named.exists(), proc.communicate()[0]
        name = named.read_text()
        assert os.path.exists(f"/dev/shm{name}")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert not os.path.exists(f"/dev/shm{name}"), f"left in /dev/shm after SIGTERM:\n{out}"


def test_objects_of_dead_processes_are_removed():
    # A SIGKILL leaves no chance to tidy up: the next session removes what a dead process made.
    dead = _dead_pid()
    names = {"dead": f"/vmshm-orphan-{dead}-{uuid4().hex[:10]}",
             "alive": f"/vmshm-orphan-{os.getpid()}-{uuid4().hex[:10]}",
             "other": f"/vmshm-orphan-kept-{uuid4().hex[:6]}"}
    regions = [ShmRegion.create(n, 4096, reserve=False) for n in names.values()]
    try:
        removed = remove_stale()
        assert names["dead"].lstrip("/") in removed
        assert not os.path.exists(f"/dev/shm{names['dead']}")
        assert os.path.exists(f"/dev/shm{names['alive']}"), "a live process's object went"
        assert os.path.exists(f"/dev/shm{names['other']}"), "an object of no process went"
    finally:
        for region in regions:
            try:
                region.unlink()
            except FileNotFoundError:
                pass
            region.close()


def _dead_pid():
    """Return the pid of a process that has ended and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _build_slowly(path, log):
    def make(tmp):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        tmp.write_bytes(b"half")
        time.sleep(0.5)
        with open(tmp, "ab") as f:
            f.write(b" and whole")
    return build_file_once(path, make).read_bytes()


def test_a_cached_file_is_built_once_by_concurrent_processes(tmp_path):
    out, log = tmp_path / "cache" / "thing.bin", tmp_path / "builds.log"
    with get_context("spawn").Pool(3) as pool:
        got = pool.starmap(_build_slowly, [(out, log)] * 3)
    assert got == [b"half and whole"] * 3
    assert len(log.read_text().splitlines()) == 1, "built more than once"
    assert sorted(p.name for p in out.parent.iterdir()) == ["thing.bin", "thing.bin.lock"]


def test_a_failed_build_leaves_no_file(tmp_path):
    def make(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("compiler said no")

    with pytest.raises(RuntimeError, match="compiler said no"):
        build_file_once(tmp_path / "x.bin", make)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin.lock"]


def test_a_finished_build_keeps_only_what_runs_it(tmp_path):
    # A Verilator build's precompiled headers and objects are nine tenths of its size and are
    # not needed to run it: they go once it is built; the program and its sources stay.
    def make():
        obj = tmp_path / "b1" / "obj"
        obj.mkdir(parents=True)
        for name in ("V__pch.h.fast.gch", "V__ALL.a", "V__0.o", "V__0.d", "V__0.cpp", "sim"):
            (obj / name).write_text(name)

    build_once(tmp_path / "b1", make)
    assert sorted(p.name for p in (tmp_path / "b1" / "obj").iterdir()) == ["V__0.cpp", "sim"]
    assert (tmp_path / "b1" / ".built").exists()


def test_the_build_cache_evicts_the_least_recently_used(tmp_path):
    now = time.time()
    for i in range(6):
        build_once(tmp_path / f"b{i}", lambda i=i: (tmp_path / f"b{i}").mkdir(parents=True))
        # b0 was used longest ago, b5 last; b3 is used again: it becomes the most recent.
        os.utime(tmp_path / f"b{i}" / ".built", (now - 7200 * (6 - i),) * 2)
    build_once(tmp_path / "b3", lambda: pytest.fail("rebuilt a finished build"))
    (tmp_path / "not-a-build").mkdir()
    gone = evict(tmp_path, keep=3)
    assert sorted(p.name for p in gone) == ["b0", "b1", "b2"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "b3", "b4", "b5", "not-a-build"]
    # A build used within the hour stays whatever the count: another process may run it.
    os.utime(tmp_path / "b4" / ".built", (now - 60,) * 2)
    assert [p.name for p in evict(tmp_path, keep=1)] == ["b5"]


def test_a_design_is_generated_once_per_process_unless_its_rtl_changes(monkeypatch):
    # Generating a top takes seconds and a session runs each configuration many times; but a
    # test that patches the RTL (a broken shim) must get Verilog of the patched design.
    from vmshm.rtl.usp import completer
    made = []

    def make():
        made.append(completer.trailing_zeros)
        return f"verilog {len(made)}"

    key = ("test-top", (("axis_width", 64),))
    assert design_text(key, make) == design_text(key, make) == "verilog 1"
    monkeypatch.setattr(completer, "trailing_zeros", lambda be: 0)
    assert design_text(key, make) == "verilog 2"
    monkeypatch.undo()
    assert design_text(key, make) == "verilog 1"
    assert design_text((*key, "other"), make) == "verilog 3"
