"""Boot the guest once in QEMU and serve its VMShm device(s) while it runs.

:func:`boot` starts QEMU (TCG, the kernel by PVH, the initramfs, one ``x-pci-proxy-dev`` per
device on a socket pair), serves the simulated RTL in a thread (and a floor device for the bench),
reads the console, and bounds everything: the whole run by ``timeout``, each request by
:data:`REQUEST_LIMIT`. QEMU dies with this process, whatever kills it. The simulated function sits
in slot :data:`SLOT`, so its interrupt's route is known (:mod:`.irq`).
"""

import os
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from . import image
from .device import DeviceHung, FloorDevice, serve, serve_floor
from .irq import IrqError, QtestIrq
from .mpqemu import MpqemuLink

__all__ = ["Boot", "boot", "REQUEST_LIMIT", "SLOT"]

#: The simulated function's slot on q35's root bus (QEMU's ``addr=``); others take free ones.
SLOT = 3

#: Seconds one request may take before the device is called hung (a boot's slowest take ms).
REQUEST_LIMIT = 30


class Boot:
    """What one boot left behind."""

    def __init__(self):
        self.console = []        # every console line
        self.output = []         # the program's lines
        self.status = None       # the program's exit status
        self.boot_seconds = None  # QEMU start to /init
        self.seconds = None
        self.accesses = []       # device.Access, the simulated device
        self.floor = []          # device.Access, the floor device (bench)
        self.more_accesses = []  # a list of device.Access for each further simulated device
        self.host_log = []
        self.cycles = 0
        self.error = None
        self.notes = []          # what the run could not do, for people


def _server_thread(sock, log, host, errors, params, watch, backend, irq, tag="cycles"):
    from vmshm.backends import get_backend
    simulate = get_backend(backend).simulate

    link = MpqemuLink(sock)

    def run():
        try:
            result = simulate(lambda bus: serve(bus, link=link, log=log, watch=watch, host=host,
                                                irq=irq),
                              hosts=[host], **params)
            errors.append((tag, result.cycles))
        except BaseException as exc:     # reported by the main thread
            errors.append(("error", exc))
        finally:
            if host.is_open:
                host.close()
            sock.close()

    t = threading.Thread(target=run, name="vmshm-device", daemon=True)
    t.start()
    return t


def _floor_thread(sock, log, params, dev, irq, errors):
    link = MpqemuLink(sock)
    if dev is None:
        dev = FloorDevice(window_size=params.get("window_size", 1 << 20),
                          name_size=params.get("name_size", 1 << 10))

    def run():
        try:
            serve_floor(dev, link, log, irq)
        except IrqError as exc:       # the guest's interrupts stopped: say so
            errors.append(("error", exc))
        except Exception:
            pass
        finally:
            sock.close()

    t = threading.Thread(target=run, name="vmshm-floor", daemon=True)
    t.start()
    return t


def _die_with_parent():
    # QEMU goes when this process goes, even by SIGKILL: nothing is left running.
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)    # PR_SET_PDEATHSIG


def boot(parts, initrd, init, *, timeout, params=None, floor=False, echo=None, device=True,
         qemu_args=(), backend="amaranth", host=None, more_hosts=()):
    """Boot the guest once and serve its device; return a :class:`Boot`.

    ``echo(line)`` receives the program's lines as they come. ``device=False`` boots without
    the simulated VMShm device; ``qemu_args`` are added to QEMU's command line (other devices).
    ``host`` is the device's :class:`~vmshm.host_model.HostModel` (one that logs into
    ``Boot.host_log`` by default): a caller that rings the guest or takes its doorbells passes
    its own. ``floor`` is True or a :class:`FloorDevice` to serve; without the simulated device
    the floor takes its slot and its interrupt. Each of ``more_hosts`` is the host of one more
    simulated device (its own server thread and RTL instance, in the slots after :data:`SLOT`,
    its requests in ``Boot.more_accesses``); their interrupts are not forwarded (one qtest
    socket routes one line), so the guest's driver finds them but never hears them ring.
    """
    from vmshm.host_model import HostModel
    params = params or {}
    result = Boot()
    errors = []
    kernel = image.vmlinux(parts.kernel) or parts.kernel
    with tempfile.TemporaryDirectory(prefix="vmshm-qemu-") as tmp:
        init_path = Path(tmp) / "init.cpio"
        # The kernel unpacks concatenated archives in order: /init lands on top of the image.
        init_path.write_bytes(Path(initrd).read_bytes() + init)
        fds, devices, irq = [], [], None
        if device:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            fds = [theirs.fileno()]
            devices = [f"x-pci-proxy-dev,id=vmshm0,fd={theirs.fileno()},addr={SLOT:#x}"]
            if host is None:
                host = HostModel(log=result.host_log.append)
            irq = QtestIrq(SLOT)
        more = []
        for i, _ in enumerate(more_hosts if device else (), start=1):
            pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            more.append(pair)
            fds.append(pair[1].fileno())
            devices.append(f"x-pci-proxy-dev,id=vmshm{i},fd={pair[1].fileno()},"
                           f"addr={SLOT + i:#x}")
            result.more_accesses.append([])
        floor_pair = floor_irq = None
        if floor:
            floor_pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            fds.append(floor_pair[1].fileno())
            spec = f"x-pci-proxy-dev,id=floor0,fd={floor_pair[1].fileno()}"
            if not device:
                spec += f",addr={SLOT:#x}"
                irq = floor_irq = QtestIrq(SLOT)
            devices.append(spec)
        cmd = [parts.qemu, "-nodefaults", "-no-user-config", "-display", "none",
               "-accel", "tcg", "-smp", "1", "-m", "256M",
               "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
               "-machine", "q35,memory-backend=mem",
               "-serial", "stdio", "-no-reboot",
               "-kernel", str(kernel), "-initrd", str(init_path),
               "-append", "console=ttyS0 loglevel=4 panic=-1 tsc=reliable"]
        for d in devices:
            cmd += ["-device", d]
        cmd += list(qemu_args)
        if irq is not None:
            cmd += irq.qemu_args()
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, pass_fds=fds,
                                preexec_fn=_die_with_parent)
        watch = {"in_flight": None}
        server = None
        if irq is not None:
            try:
                irq.accept()
            except IrqError as exc:
                errors.append(("error", exc))
        if device:
            theirs.close()
            server = _server_thread(ours, result.accesses, host, errors, params, watch,
                                    backend, irq)
        floor_server = (_floor_thread(floor_pair[0], result.floor, params,
                                      None if floor is True else floor, floor_irq, errors)
                        if floor else None)
        if floor_pair:
            floor_pair[1].close()
        more_servers = []
        for (mine, theirs_i), more_host, log in zip(more, more_hosts, result.more_accesses):
            theirs_i.close()
            more_servers.append(_server_thread(mine, log, more_host, errors, params, {},
                                               backend, None, tag="more cycles"))
        in_program = False
        buf = b""
        try:
            deadline = t0 + timeout
            while True:
                if any(kind == "error" for kind, _ in errors):
                    break
                busy = watch["in_flight"]
                if busy and time.monotonic() - busy[2] > REQUEST_LIMIT:
                    result.error = (f"the simulated device did not answer the guest's {busy[0]} "
                                    f"at {busy[1]:#x} within {REQUEST_LIMIT} s")
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    result.error = (f"the guest did not finish within {timeout:g} s "
                                    f"(a hung guest, or a device that stopped answering)")
                    break
                ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
                if not ready:
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    result.console.append(line)
                    if line.startswith(image.MARK):
                        word = line[len(image.MARK):].split()
                        if word[:1] == ["init"]:
                            result.boot_seconds = time.monotonic() - t0
                        elif word[:1] == ["run"]:
                            in_program = True
                        elif word[:1] == ["exit"] and len(word) > 1:
                            in_program = False
                            result.status = int(word[1])
                    elif in_program:
                        result.output.append(line)
                        if echo:
                            echo(line)
        finally:
            killed_here = False
            if proc.poll() is None:
                try:
                    proc.wait(timeout=5 if result.status is not None else 0.1)
                except (subprocess.TimeoutExpired, KeyboardInterrupt):
                    killed_here = True
                    proc.kill()
                    proc.wait()
            proc.stdout.close()
            if server:
                server.join(timeout=10)
            for t in more_servers:
                t.join(timeout=10)
            if irq is not None:
                irq.close()
            if floor_server:
                floor_server.join(timeout=5)
        result.seconds = time.monotonic() - t0
        if proc.returncode < 0 and not killed_here and result.status is None:
            # Someone else ended QEMU (kill, the OOM killer): that, not the device's socket
            # closing under it, is what the user needs to read.
            result.error = (f"QEMU was killed by {signal.Signals(-proc.returncode).name} "
                            f"before the program finished")
        if watch.get("no_interrupts"):
            result.notes.append(watch["no_interrupts"])
    for kind, value in errors:
        if kind == "cycles":
            result.cycles = value
        elif kind == "error" and result.error is None:
            exc = value
            result.error = (str(exc) if isinstance(exc, DeviceHung)
                            else f"the device server failed: {type(exc).__name__}: {exc}")
    return result
