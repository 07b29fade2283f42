"""``vmshm qemu --guests N``: several VMShm guests, one ivshmem group, one host object.

Each guest is its own ``vmshm qemu --ivshmem SOCKET --run FILE`` process (its own QEMU, device
server and RTL instance, served by the backend ``vmshm qemu`` picks), so one guest's simulation
never waits on another's, and a guest that dies takes only its own process with it. This module
is the parent: it serves the group itself when SOCKET does not exist yet (on NAME, which it
removes afterwards if it made it), builds the guest's image once, starts the guests, tells each
its index and every guest's peer ID once all have joined (so a program can ring the others),
prefixes their lines with their index, and ends the others as soon as one fails or the time is
up. The exit status is the worst guest's.
"""

import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import time

from vmshm.console import escaped

__all__ = ["check_guest_args", "run_guests", "await_index", "MAX_GUESTS"]

#: Guests one command boots at once (each is a QEMU and a simulator: a few hundred MB and a core).
MAX_GUESTS = 8
#: Seconds the parent allows beyond --timeout (the guests' own bound starts when QEMU does).
_SLACK = 30
#: Seconds a guest may take to unwind after SIGTERM before it is killed.
_GRACE = 10
_JOINED = re.compile(r"ivshmem: joined .* as peer (\d+) \(IVPOSITION\)$")


def check_guest_args(args):
    """Refuse ``--guests`` combinations that cannot work, before anything is made."""
    if not 1 <= args.guests <= MAX_GUESTS:
        raise ValueError(f"--guests must be 1..{MAX_GUESTS}, not {args.guests}")
    if args.ivshmem is None:
        raise ValueError("--guests needs --ivshmem SOCKET: the guests ring each other through "
                         "that group (served here when nothing is at SOCKET)")
    if args.run is None:
        raise ValueError("--guests runs your program in every guest: give --run FILE.c")
    if args.bench or args.doorbell_bench or args.json:
        raise ValueError("--guests runs --run FILE.c; leave out --bench, --doorbell-bench and "
                         "--json")
    if os.path.lexists(args.ivshmem):
        import stat
        if not stat.S_ISSOCK(os.lstat(args.ivshmem).st_mode):
            raise ValueError(f"--ivshmem {escaped(args.ivshmem)}: not a socket (give the "
                             f"server's -S, or a free path to serve the group there)")


def await_index(args, bridge):
    """In a guest of ``--guests``: read ``INDEX SESSION ID0 ID1 ...`` from the parent; return
    ``/init``'s environment: ``VMSHM_GUEST`` (the index), ``VMSHM_GUESTS``, ``VMSHM_ID`` (its
    own peer ID), ``VMSHM_PEERS`` (every guest's, in index order) and ``VMSHM_SESSION`` (a
    number new each run, the same in every guest: a program can tell this run's data in the
    object from an earlier run's)."""
    line = sys.stdin.readline().split()
    if len(line) != args.guest_of + 2 or not all(w.isdigit() for w in line):
        raise RuntimeError("no guest index from the parent (it ended before every guest "
                           "joined the group)")
    return {"VMSHM_GUEST": line[0], "VMSHM_GUESTS": str(args.guest_of),
            "VMSHM_ID": str(bridge.id), "VMSHM_SESSION": line[1],
            "VMSHM_PEERS": " ".join(line[2:])}


def _die_with_parent():
    # A guest goes when this process goes, even by SIGKILL; SIGTERM lets it end its QEMU.
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)    # PR_SET_PDEATHSIG


def _guest_argv(args, index):
    argv = [sys.executable, "-m", "vmshm.cli", "qemu", "--shm", args.shm, "--ivshmem",
            args.ivshmem, "--run", args.run, "--guest-of", str(args.guests),
            "--timeout", f"{args.timeout:g}", "--window-size", str(args.window_size),
            "--name-size", str(args.name_size), "--data-width", str(args.data_width),
            "--regs-size", str(args.regs_size)]
    for opt, value in (("--backend", args.backend), ("--kernel", args.kernel),
                       ("--headers", args.headers), ("--host-timeout", args.host_timeout)):
        if value is not None:
            argv += [opt, str(value)]
    return argv + ["--", *(args.args or [args.shm])]


class _Guest:
    """One guest's process and what the parent knows of it."""

    def __init__(self, index, proc):
        self.index = index
        self.proc = proc
        self.id = None             # its peer ID, once it joined
        self.open = 2              # pipes not at end of file yet
        self.status = None         # its exit status
        self.ended_by_us = False
        self.partial = {}          # stream -> bytes without a newline yet


def run_guests(args, console):
    """Run ``vmshm qemu --guests N``; return the worst guest's exit status."""
    from vmshm.qemu import image

    try:
        parts = image.find_parts(args.kernel, args.headers)
    except image.Missing as exc:
        print(f"vmshm qemu: {escaped(str(exc))}", file=sys.stderr)
        return 2
    server = None
    if not os.path.lexists(args.ivshmem):
        from vmshm.ivshmem import IvshmemServer
        server = IvshmemServer(args.ivshmem, args.shm, size=args.create).start()
        console.print(f"ivshmem: serving {args.ivshmem} on {args.shm} ({server.size} bytes"
                      f"{', created' if server.created else ''})", highlight=False,
                      markup=False)
    elif args.create is not None:
        from vmshm.host_model import ShmRegion
        region, _ = ShmRegion.open_or_create(args.shm, args.create)
        region.close()
    guests = []
    try:
        # Built once here, not N times at once in the cache by the guests.
        try:
            image.build_image(parts, {"vmshm_example": image.GUEST_DIR / "vmshm_example.c",
                                      "program": args.run})
        except image.BuildError as exc:
            console.print(f"vmshm qemu: {exc}", style="red", highlight=False, markup=False)
            return 1
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for index in range(args.guests):
            guests.append(_Guest(index, subprocess.Popen(
                _guest_argv(args, index), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, preexec_fn=_die_with_parent)))
        return _supervise(args, console, guests)
    finally:
        _end(guests)
        if server is not None:
            server.stop()
            if server.created:
                # Made for this run: it goes with it (an object that was there stays).
                try:
                    os.unlink(f"/dev/shm/{args.shm.lstrip('/')}")
                except FileNotFoundError:
                    pass


def _end(guests):
    """SIGTERM every guest still running (it ends its QEMU and unwinds), then SIGKILL."""
    for g in guests:
        if g.proc.poll() is None:
            g.proc.terminate()
    for g in guests:
        try:
            g.proc.wait(timeout=_GRACE)
        except subprocess.TimeoutExpired:
            g.proc.kill()
            g.proc.wait()
        for f in (g.proc.stdin, g.proc.stdout, g.proc.stderr):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass


def _supervise(args, console, guests):
    sel = selectors.DefaultSelector()
    for g in guests:
        sel.register(g.proc.stdout, selectors.EVENT_READ, (g, "out"))
        sel.register(g.proc.stderr, selectors.EVENT_READ, (g, "err"))
    started = time.monotonic()
    deadline = started + args.timeout + _SLACK
    told = False
    failed = None
    while any(g.open for g in guests):
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"vmshm qemu: the guests did not finish within {args.timeout:g} s: ending "
                  f"guest(s) {_names(g for g in guests if g.proc.poll() is None)}",
                  file=sys.stderr)
            _stop_others(guests, None)
            failed = failed or "timeout"
            deadline = float("inf")
            continue
        for key, _ in sel.select(timeout=min(left, 1.0)):
            g, stream = key.data
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                g.open -= 1
                _flush(console, g, stream, final=True)
                continue
            g.partial[stream] = g.partial.get(stream, b"") + chunk
            _flush(console, g, stream)
        if not told and all(g.id is not None for g in guests):
            # Every guest is in the group: each learns its index and everyone's ID.
            told = True
            ids = " ".join(str(g.id) for g in guests)
            session = secrets.randbits(31)
            for g in guests:
                try:
                    g.proc.stdin.write(f"{g.index} {session} {ids}\n".encode())
                    g.proc.stdin.close()
                except OSError:
                    pass
        for g in guests:
            if g.status is None and not g.open:
                g.status = g.proc.wait()
                if g.status != 0 and failed is None and not g.ended_by_us:
                    failed = g
                    others = [o for o in guests if o.proc.poll() is None]
                    if others:
                        print(f"vmshm qemu: guest {g.index} ended with status {g.status}: "
                              f"ending guest(s) {_names(others)}", file=sys.stderr)
                    _stop_others(guests, g)
    own = [g.status for g in guests if not g.ended_by_us]
    worst = max(own, default=0)
    if failed is not None and worst == 0:
        worst = 1
    # The host's clock: a guest's own under TCG may run fast (its TSC calibrated under load).
    console.print(f"guests: {', '.join(f'{g.index} exit {g.status}' for g in guests)}"
                  f"{'' if failed is None else ' (ended early: see above)'}; "
                  f"{time.monotonic() - started:.1f} s from the first start to the last exit",
                  highlight=False, markup=False)
    return worst


def _names(guests):
    return ", ".join(str(g.index) for g in guests)


def _stop_others(guests, failed):
    for g in guests:
        if g is not failed and g.proc.poll() is None:
            g.ended_by_us = True
            g.proc.terminate()


def _flush(console, g, stream, final=False):
    *lines, rest = g.partial.get(stream, b"").split(b"\n")
    if final and rest:
        lines.append(rest)
        rest = b""
    g.partial[stream] = rest
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if stream == "out" and g.id is None:
            m = _JOINED.search(line)
            if m:
                g.id = int(m.group(1))
        if stream == "out":
            console.print(f"[{g.index}] {line}", highlight=False, markup=False)
            # Lines as they come, also into a pipe: a reader waits for a guest's progress.
            console.file.flush()
        else:
            # Already made printable by the guest's own console helpers.
            print(f"[{g.index}] {line}", file=sys.stderr, flush=True)
