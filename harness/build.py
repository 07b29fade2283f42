"""The Verilog build cache every compiling backend shares: where builds live, and building once.

A build (a cocotb simulator's, or the native model's) is a folder named after a hash of all that
went into it, the versions of the tools included (:func:`tool_versions`), under
:func:`cache_root`. :func:`build_once` fills such a folder under a file lock, so pytest-xdist
workers (or two ``vmshm`` commands) that need one configuration at once compile it once: one
builds, the others wait and reuse it. :func:`build_file_once` does the same for a single file
(the guest's initramfs, a host program), which appears whole or not at all.

The cache stays bounded: a finished build keeps only what running it needs (a Verilator build's
precompiled headers and object files, nine tenths of its size, are deleted once it is linked),
each use marks the build as used, and after a new build the least recently used ones beyond
:data:`KEEP` of its kind (``$VMSHM_CACHE_KEEP``) are deleted, unless used in the last hour.
"""

import fcntl
import hashlib
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["KEEP", "cache_root", "cache_key", "tool_versions", "build_once", "build_file_once",
           "evict", "design_text"]

#: How many builds of one kind the cache keeps (``$VMSHM_CACHE_KEEP`` overrides): the suite
#: needs about 40 Verilog configurations; a build is about 10 MB once trimmed.
KEEP = 96
#: A build used this recently (seconds) is never evicted: another process may be running it.
_IN_USE = 3600
#: What a linked Verilator build no longer needs: precompiled headers, objects, archives.
_SCRAP = ("*.gch", "*.o", "*.a", "*.d")

#: Where each kind of build lives under ``~/.cache/vmshm`` (``$VMSHM_BUILD_DIR`` replaces the
#: cocotb folder itself, and holds the native one).
_KINDS = ("cocotb", "native")


def cache_root(kind="cocotb"):
    """Return the folder that holds the builds of ``kind`` (``"cocotb"`` or ``"native"``).

    ``$VMSHM_BUILD_DIR`` is the cocotb builds' folder, and the native builds go into its
    ``native/``; by default they are ``~/.cache/vmshm/cocotb`` and ``~/.cache/vmshm/native``.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}, not {kind!r}")
    root = os.environ.get("VMSHM_BUILD_DIR")
    if kind == "cocotb":
        return Path(root) if root else Path.home() / ".cache" / "vmshm" / "cocotb"
    return (Path(root) if root else Path.home() / ".cache" / "vmshm") / kind


def cache_key(text):
    """Return the 16 hex digits that name the build of everything in ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tool_versions():
    """Return the versions of the tools a build depends on, for its cache key."""
    # A build is only reusable by the same cocotb and simulator that made it.
    from importlib.metadata import PackageNotFoundError, version
    out = []
    for dist in ("cocotb", "verilator"):
        try:
            out.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist}=none")
    out.append(f"iverilog={shutil.which('iverilog')}")
    return " ".join(out)


#: The modules whose state makes a design: what :func:`design_text` watches.
_DESIGN_MODULES = ("vmshm.rtl", "vmshm.abi", "vmshm.harness.top")
#: Verilog made by this process, by what it was made of and the state of the design's modules.
_texts = {}


def design_text(key, make):
    """Return ``make()``, the Verilog of the configuration ``key`` names, made once per process.

    Generating a top's Verilog (Amaranth's elaboration, then Yosys) takes a second or two, and a
    test session runs each configuration many times. The text is reused only while the design's
    modules are as they were when it was made: the key includes which object every name in
    them (and in their classes) is bound to, so a test that patches the RTL (a broken shim, a
    changed layout) gets Verilog made from the patched design, and the original's again after.
    """
    state = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(_DESIGN_MODULES):
            continue
        for attr, value in list(vars(module).items()):
            state.append((name, attr, id(value)))
            if isinstance(value, type) and value.__module__ == name:
                state.extend((name, attr, a, id(v)) for a, v in list(vars(value).items()))
    memo = (key, frozenset(state))
    try:
        hash(memo)
    except TypeError:       # a parameter that cannot be a key (a list): made every time
        return make()
    if memo not in _texts:
        _texts[memo] = make()
    return _texts[memo]


@contextmanager
def _locked(target):
    """Hold the exclusive lock of ``target`` (a file beside it) for the ``with`` block."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_once(build_dir, make):
    """Call ``make()`` to fill ``build_dir`` unless a finished build is there already.

    Several processes may build one configuration at once: one builds, the others wait and reuse
    it, instead of deleting each other's half-built directory. ``make`` starts from scratch; the
    directory counts as built once it returns.
    """
    build_dir = Path(build_dir)
    done = build_dir / ".built"
    with _locked(build_dir):
        if done.exists():
            done.touch()        # used now: the last to be evicted
            return
        make()
        _trim(build_dir)
        done.write_text("ok\n")
    evict(build_dir.parent)


def _trim(build_dir):
    """Delete what a linked build does not need to run (:data:`_SCRAP`)."""
    for pattern in _SCRAP:
        for path in build_dir.rglob(pattern):
            if path.is_file():
                path.unlink()


def _keep():
    raw = os.environ.get("VMSHM_CACHE_KEEP", "")
    try:
        return max(1, int(raw)) if raw else KEEP
    except ValueError:
        return KEEP


def evict(root, keep=None, now=None):
    """Delete the least recently used builds under ``root`` beyond ``keep`` (:data:`KEEP`).

    A build's last use is its ``.built`` marker's time; builds used in the last hour stay
    whatever their number, as do folders that are not finished builds. Returns the deleted
    folders.
    """
    keep = _keep() if keep is None else keep
    now = time.time() if now is None else now
    builds = []
    for marker in Path(root).glob("*/.built"):
        try:
            builds.append((marker.stat().st_mtime, marker.parent))
        except FileNotFoundError:       # evicted by another process meanwhile
            continue
    builds.sort(reverse=True)
    gone = []
    for used, folder in builds[keep:]:
        if now - used < _IN_USE:
            continue
        with _locked(folder):
            marker = folder / ".built"
            if marker.exists() and now - marker.stat().st_mtime >= _IN_USE:
                marker.unlink()
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(folder)
    return gone


def build_file_once(path, make):
    """Return ``path``, calling ``make(tmp)`` to write it first unless it exists already.

    ``make`` writes the file ``tmp`` (a path of this process's own beside ``path``), which is
    then renamed into place: a reader never sees half a file, and of several processes that need
    it at once one builds while the others wait and reuse it.
    """
    path = Path(path)
    if path.exists():
        return path
    with _locked(path):
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                make(tmp)
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
    return path
