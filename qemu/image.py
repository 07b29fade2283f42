"""Find the guest's parts (QEMU, kernel, headers, busybox) and build its initramfs, cached.

The image is an uncompressed ``newc`` cpio archive: busybox, ``vmshm.ko`` built against headers
that match the kernel, the example and the user's program compiled static. It is built once per
content (its inputs' hashes name the cache entry). The ``/init`` script, which carries the
program's arguments, is a second small archive the kernel unpacks on top, so new arguments do not
rebuild anything.
"""

import glob
import hashlib
import lzma
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vmshm.harness.build import build_file_once

__all__ = ["GuestParts", "Missing", "BuildError", "find_parts", "kernel_release", "build_image",
           "init_archive", "cpio_newc", "GUEST_DIR", "cache_dir"]

#: The C sources shipped with the package (``guest/`` in the repository).
GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
if not (GUEST_DIR / "vmshm.c").exists():
    import vmshm.guest
    GUEST_DIR = Path(vmshm.guest.__file__).resolve().parent

#: Where ``.ci/run`` (and the README's set-up) put the Debian kernel image it extracted.
KERNEL_DIRS = ("/usr/local/lib/vmshm/kernel", "/boot")
MODULE_SOURCES = ("vmshm.c", "vmshm_regs.h", "vmshm_ioctl.h", "Kbuild", "Makefile")


class Missing(RuntimeError):
    """Something the guest needs is not installed; the message says what to install."""


class BuildError(RuntimeError):
    """The module or a program did not compile; the message holds the compiler's words."""


def cache_dir():
    """Return ``~/.cache/vmshm/guest`` (or under ``$XDG_CACHE_HOME``), created."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = root / "vmshm" / "guest"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class GuestParts:
    """Everything a boot needs from the machine."""
    qemu: str
    kernel: Path         # a bzImage (vmlinuz)
    headers: Path        # the kernel's build tree or headers package
    release: str
    busybox: Path
    cc: str


def kernel_release(kernel):
    """Return the release string (``6.1.0-57-amd64``) a bzImage's header carries, or ``None``."""
    with open(kernel, "rb") as f:
        head = f.read(0x10000)
    if head[0x202:0x206] != b"HdrS":
        return None
    off = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    text = head[off:off + 256].split(b"\0", 1)[0].decode("ascii", "replace")
    return text.split(" ", 1)[0] or None


def _headers_release(headers):
    """Return the release a module built against ``headers`` would carry in its vermagic."""
    uts = Path(headers) / "include/generated/utsrelease.h"
    if uts.exists():
        m = re.search(r'UTS_RELEASE\s+"([^"]+)"', uts.read_text())
        if m:
            return m.group(1)
    rel = Path(headers) / "include/config/kernel.release"
    return rel.read_text().strip() if rel.exists() else None


def find_parts(kernel=None, headers=None):
    """Find QEMU, a kernel with matching headers, busybox and a C compiler, or raise Missing."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise Missing("QEMU is not installed: apt-get install qemu-system-x86")
    busybox = next((Path(p) for p in ("/bin/busybox", "/usr/bin/busybox")
                    if Path(p).exists() and _is_static(p)), None)
    if busybox is None:
        raise Missing("a static busybox is not installed: apt-get install busybox-static")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None or shutil.which("make") is None:
        raise Missing("gcc and make are needed to build the guest: apt-get install gcc make")
    if (kernel is None) != (headers is None):
        raise Missing("--kernel and --headers go together: give both, or neither to use "
                      "Debian's linux-image and linux-headers packages")
    if kernel is None:
        found = sorted(p for d in KERNEL_DIRS for p in glob.glob(f"{d}/vmlinuz-*-amd64"))
        for k in reversed(found):
            release = kernel_release(k)
            for h in (f"/usr/src/linux-headers-{release}", f"/lib/modules/{release}/build"):
                if release and Path(h, "Makefile").exists():
                    return GuestParts(qemu, Path(k), Path(h), release, busybox, cc)
        if not found:
            raise Missing("no Debian guest kernel found in /usr/local/lib/vmshm/kernel or /boot: "
                          "apt-get download linux-image-6.1.0-NN-amd64 (NN from apt-cache depends "
                          "linux-image-amd64) and dpkg-deb -x it, then copy its boot/vmlinuz-* to "
                          "/usr/local/lib/vmshm/kernel")
        release = kernel_release(found[-1])
        raise Missing(f"no headers for the guest kernel {release}: "
                      f"apt-get install linux-headers-{release}")
    kernel, headers = Path(kernel), Path(headers)
    if not kernel.is_file():
        raise Missing(f"--kernel {kernel}: no such file")
    if not (headers / "Makefile").exists():
        raise Missing(f"--headers {headers}: not a kernel build tree (no Makefile)")
    release = kernel_release(kernel)
    if release is None:
        raise Missing(f"--kernel {kernel}: not a bzImage (no Linux boot header)")
    theirs = _headers_release(headers)
    if theirs is not None and theirs != release:
        raise Missing(f"--headers {headers} are for {theirs}, but --kernel {kernel} is "
                      f"{release}: the module would not load")
    return GuestParts(qemu, kernel, headers, release, busybox, cc)


def _is_static(path):
    with open(path, "rb") as f:
        head = f.read(4096)
    return head[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in head


def _digest(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def vmlinux(kernel):
    """Return the uncompressed ELF ``vmlinux`` inside the bzImage ``kernel``, cached, or None.

    QEMU boots an ELF kernel by PVH, skipping the firmware's real-mode loader and the
    decompressor (about a third of a TCG boot). Debian compresses with XZ; anything else keeps
    the bzImage.
    """
    out = cache_dir() / f"vmlinux-{_file_digest(kernel)[:16]}"
    if out.exists():
        return out
    data = Path(kernel).read_bytes()
    at = data.find(b"\xfd7zXZ\x00")
    if at < 0:
        return None
    try:
        elf = lzma.LZMADecompressor().decompress(data[at:])
    except lzma.LZMAError:
        return None
    if elf[:4] != b"\x7fELF":
        return None
    return build_file_once(out, lambda tmp: tmp.write_bytes(elf))


def cpio_newc(entries):
    """Return a ``newc`` cpio archive of ``entries``: ``(path, mode, data)``, data None for a dir.

    Paths are relative (``bin/busybox``); symbolic links have mode 0o120777 and their target
    as data. Owners and times are 0, so the same inputs give the same bytes.
    """
    out = bytearray()

    def add(name, mode, data, ino):
        name_b = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0)
        out.extend(b"070701" + b"".join(b"%08X" % v for v in fields))
        out.extend(name_b)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (path, mode, data) in enumerate(entries, start=1):
        add(path, mode, data if data is not None else b"", ino)
    add("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def _run(cmd, what, cwd=None):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise BuildError(f"{what} failed:\n{tail}")


def build_image(parts, programs):
    """Build (or find cached) the initramfs: busybox, vmshm.ko and ``programs`` compiled static.

    Parameters
    ----------
    parts : GuestParts
    programs : dict
        ``{name in /bin: path of a C source}``.

    Returns
    -------
    Path
        The cpio archive.
    """
    sources = [GUEST_DIR / n for n in MODULE_SOURCES]
    # The programs are compiled with -I guest/: every header there is part of what they are.
    headers = sorted(set(GUEST_DIR.glob("*.h")) - set(sources))
    key = _digest(parts.release, parts.headers, _file_digest(parts.busybox), parts.cc,
                  *(_file_digest(p) for p in sources),
                  *(f"{p.name}={_file_digest(p)}" for p in headers),
                  *(f"{n}={_file_digest(p)}" for n, p in sorted(programs.items())))
    return build_file_once(cache_dir() / f"initramfs-{key}.cpio",
                           lambda tmp: _make_image(tmp, parts, programs, sources))


def _make_image(out, parts, programs, sources):
    """Compile the module and ``programs``; write the cpio archive to ``out``."""
    with tempfile.TemporaryDirectory(prefix="vmshm-guest-") as tmp:
        tmp = Path(tmp)
        mod = tmp / "module"
        mod.mkdir()
        for p in sources:
            shutil.copy(p, mod / p.name)
        _run(["make", "-C", str(parts.headers), f"M={mod}", "modules"],
             f"building vmshm.ko against {parts.headers}")
        entries = [("bin", 0o40755, None), ("dev", 0o40755, None), ("proc", 0o40755, None),
                   ("sys", 0o40755, None), ("tmp", 0o41777, None),
                   ("bin/busybox", 0o100755, Path(parts.busybox).read_bytes()),
                   ("vmshm.ko", 0o100644, (mod / "vmshm.ko").read_bytes())]
        for name, src in sorted(programs.items()):
            exe = tmp / name
            _run([parts.cc, "-O2", "-Wall", "-static", "-I", str(GUEST_DIR), "-o", str(exe),
                  str(src)], f"compiling {src} for the guest")
            entries.append((f"bin/{name}", 0o100755, exe.read_bytes()))
        Path(out).write_bytes(cpio_newc(entries))


#: Lines /init prints around the program, so the host knows where its output begins and ends.
MARK = "VMSHM-GUEST:"


def init_archive(program, args, *, load_module=True, before=(), msi=False, env=None):
    """Return the small cpio archive holding ``/init``: load the driver, run ``program``.

    ``before`` are shell lines run first (the bench's, before the driver binds); ``env`` maps
    names to values exported to the program (a guest of ``vmshm qemu --guests`` learns its
    index and its peers' IDs from them). The driver
    takes INTx unless ``msi``: QEMU's proxy carries no MSI, and the server forwards MSI messages
    only where the backend hands them over (:mod:`.irq`).
    """
    argv = " ".join(shlex.quote(a) for a in [f"/bin/{program}", *args])
    lines = ["#!/bin/busybox sh",
             "/bin/busybox mount -t proc proc /proc",
             "/bin/busybox --install -s /bin",
             "mount -t sysfs sys /sys",
             "mount -t devtmpfs dev /dev",
             f"echo '{MARK} init'",
             *(f"export {k}={shlex.quote(str(v))}" for k, v in (env or {}).items()),
             *before]
    if load_module:
        lines += [f"insmod /vmshm.ko msi={int(msi)} || echo '{MARK} insmod failed'",
                  # devtmpfs makes the node asynchronously: wait a moment for it.
                  "i=0; while [ ! -e /dev/vmshm0 ] && [ $i -lt 50 ]; do sleep 0.1; "
                  "i=$((i+1)); done"]
    lines += [f"echo '{MARK} run'",
              f"{argv}",
              "rc=$?",
              f"echo '{MARK} exit' $rc",
              "poweroff -f"]
    script = ("\n".join(lines) + "\n").encode()
    return cpio_newc([("init", 0o100755, script)])
