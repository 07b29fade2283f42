"""``vmshm channel --bench``'s VMShm rows: the channel through VMShm's own device in a guest.

The guest's end is ``guest/vmshm_channel_bench.c`` on ``/dev/vmshm0`` (the window mmap'd, RING,
a blocking read), each guest a ``vmshm qemu`` process serving its device with the simulated RTL:

- :func:`host_rows`: one VMShm guest and a host peer (``ivshmem/channel_peer.c``, as the
  ivshmem rows' host end) in a group of their own, both ways, on the layout of
  ``ivshmem/ivshmem_peer.c``'s bench (the host writes the directory and lays out the rings);
- :func:`pair_rows`: two VMShm guests by ``vmshm qemu --guests 2``, guest 0 sending to guest 1.

Every message is checked whole by its receiver. A row's time runs from the receiver's first
message to its last, as in the other rows, but on the host's clock: when a guest's lines saying
so arrive (a TCG guest's own clock runs fast on a loaded machine). The device server's own
counters (requests, simulated cycles, the wall time it spent answering) say where the time went
(:func:`cost`).
"""

import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import statistics
import threading
import time
from pathlib import Path

from vmshm.ivshmem.client import IvshmemPeer

from .channel import (RTT_BYTES, SLOT, _Group, _percentile, _row, _rtt_end, _run_end, _seconds,
                      host_program, lay_out, rtt_row)

__all__ = ["host_rows", "pair_rows", "cost", "PROGRAM", "MAX_SIZES"]

#: The guest's end (the vmshm.guest package's data).
PROGRAM = "vmshm_channel_bench.c"
#: Sizes one run takes: two 64 KiB rings each and the directory fill the default 1 MiB window.
MAX_SIZES = 7


def _program():
    from vmshm.qemu.image import GUEST_DIR
    return str(GUEST_DIR / PROGRAM)


def _object_size(sizes):
    # ivshmem_peer.c's layout: the directory's slot, then two rings a size; a power of two.
    return 1 << (SLOT * (1 + 2 * len(sizes)) - 1).bit_length()


class _Lines:
    """A ``vmshm qemu`` process's stdout, line by line from a thread, with a deadline."""

    def __init__(self, proc, timeout, echo=None):
        self.proc, self.end, self.echo = proc, time.monotonic() + timeout, echo
        self.q = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.q.put((line.rstrip("\n"), time.monotonic()))
        self.q.put((None, None))

    def expect(self, pattern):
        """Return the match of the first line from here that matches ``pattern`` in full;
        :attr:`at` is when it arrived (the host's clock)."""
        while True:
            try:
                line, self.at = self.q.get(timeout=max(0.1, self.end - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                tail = " | ".join(self.seen[-4:]) or "no output"
                raise RuntimeError(f"the VMShm guest stopped before {pattern!r}: {tail}")
            self.seen.append(line)
            if self.echo:
                self.echo(line)
            if re.search(r"guest\| error", line):
                raise RuntimeError(f"the VMShm guest: {line}")
            m = re.fullmatch(pattern, line.strip())
            if m:
                return m


def _vmshm_qemu(args, tail):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "vmshm.cli", "qemu", *args, "--", *tail],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc, what, timeout):
    # Its stdout is _Lines' (a thread reads it to the end); only its stderr is left here.
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=30)
        raise RuntimeError(f"{what} did not end") from None
    if proc.returncode:
        raise RuntimeError(f"{what} exited {proc.returncode}: "
                           f"{proc.stderr.read().strip()[-500:]}")


def cost(accesses, seconds):
    """Return where a run's guest time went, from the device server's own records.

    ``accesses`` are its BAR requests (``qemu.device.Access`` as dicts, from ``--json``);
    ``seconds`` the wall time of the part measured. Returns the number of window and register
    requests, their simulated cycles, and the wall time the server spent answering them
    (simulation and Python); the rest of ``seconds`` is QEMU's (the exit to its proxy, the
    socket) and the guest's own.
    """
    bar = [a for a in accesses if a["kind"].startswith("mem_")]
    return {"requests": len(bar), "cycles": sum(a["end"] - a["start"] for a in bar),
            "serve_seconds": sum(a.get("seconds", 0.0) for a in bar), "seconds": seconds}


def host_rows(count, sizes, *, backend, timeout=300, echo=None):
    """Return rows for one VMShm guest and a host peer, both ways, and the run's :func:`cost`.

    The last row is ``count`` round trips (:func:`~.channel.rtt_row`), timed by the host as
    the initiator; the guest echoes them through the first size's rings after its rows.
    """
    exe = host_program()
    group = _Group(_object_size(sizes))
    rows, host, proc = [], None, None
    with tempfile.TemporaryDirectory(prefix="vmshm-chbench-") as tmp:
        report = Path(tmp) / "run.json"
        try:
            host = IvshmemPeer.connect(group.sock)
            proc = _vmshm_qemu(["--shm", group.name, "--ivshmem", group.sock, "--run",
                                _program(), "--backend", backend, "--timeout", f"{timeout:g}",
                                "--json", str(report)],
                               ["host", group.name, str(count), *map(str, sizes)])
            lines = _Lines(proc, timeout, echo)
            guest_id = int(lines.expect(r"guest\| id (\d+)")[1])
            lines.expect(r"guest\| ready")
            host.wait_for_peers(1)
            lay_out(host, sizes, guest_id)
            t0 = time.monotonic()
            for k, length in enumerate(sizes):
                rx = _run_end(exe, "recv", group.name, SLOT * (1 + 2 * k), count, length,
                              host.peer_fileno(guest_id), host.fileno())
                rows.append(_row("VMShm guest → host", length, count,
                                 _seconds(rx, "the host's receiver", timeout)))
                lines.expect(rf"guest\| tx {length} {count} [\d.]+")
                tx = _run_end(exe, "send", group.name, SLOT * (2 + 2 * k), count, length,
                              host.peer_fileno(guest_id), host.fileno())
                lines.expect(rf"guest\| first {length}")
                first = lines.at
                _seconds(tx, "the host's sender", timeout)
                lines.expect(rf"guest\| rx {length} {count} [\d.]+")
                rows.append(_row("host → VMShm guest", length, count, lines.at - first))
            lines.expect(rf"guest\| echo {count}")
            ping = _rtt_end(exe, "ping", group.name, SLOT * 2, SLOT, count,
                            host.peer_fileno(guest_id), host.fileno())
            rows.append(rtt_row("host ↔ VMShm guest", ping, None, timeout))
            lines.expect(rf"guest\| echoed {count}")
            lines.expect(r"guest\| done")
            seconds = time.monotonic() - t0
            _finish(proc, "vmshm qemu (the VMShm guest)", 60)
            spent = cost(json.loads(report.read_text())["accesses"], seconds)
        finally:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
            if host is not None:
                host.close()
            group.close()
    for r in rows:
        r["served_by"] = f"RTL ({backend})"
    return rows, spent


#: How far the sum of guest 0's round trips may be from the host's time between its "ping"
#: and "rtt" lines (a fraction): outside it, the guest's clock is not trusted.
CLOCK_SLACK = 0.25


def guest_rtt_row(pair, ns, host_seconds, served_by):
    """Return the row of round trips timed on a guest's clock, ``ns`` nanoseconds each.

    A TCG guest's clock may run fast on a loaded machine: the round trips' sum is checked
    against ``host_seconds``, the host's time for the same loop (from when the guest's lines
    before and after it arrived). Off by more than :data:`CLOCK_SLACK`, the row keeps its count
    but no figures, and says why.
    """
    ordered = sorted(ns)
    ratio = sum(ns) / 1e9 / host_seconds if host_seconds > 0 else float("inf")
    row = {"pair": pair, "round_trips": len(ns), "bytes": RTT_BYTES,
           "median_us": statistics.median(ordered) / 1e3,
           "p99_us": _percentile(ordered, 0.99) / 1e3, "clock_ratio": ratio,
           "served_by": f"{served_by}, guest 0's clock"}
    if abs(ratio - 1) > CLOCK_SLACK:
        row.update(median_us=None, p99_us=None,
                   served_by=f"{served_by}, guest 0's clock off (x{ratio:.2f} the host's)")
    return row


def pair_rows(count, sizes, *, backend, timeout=300, echo=None):
    """Return rows for VMShm guest 0 sending to VMShm guest 1 (``vmshm qemu --guests 2``), and
    their round trips (guest 0 the initiator, on its own clock checked against the host's)."""
    group = _Group(_object_size(sizes))
    rows, proc = [], None
    try:
        proc = _vmshm_qemu(["--guests", "2", "--shm", group.name, "--ivshmem", group.sock,
                            "--run", _program(), "--backend", backend, "--timeout",
                            f"{timeout:g}"], ["pair", group.name, str(count), *map(str, sizes)])
        lines = _Lines(proc, timeout, echo)
        for length in sizes:
            lines.expect(rf"\[1\] guest\| first {length}")
            first = lines.at
            lines.expect(rf"\[1\] guest\| rx {length} {count} [\d.]+")
            rows.append({**_row("VMShm guest → VMShm guest", length, count, lines.at - first),
                         "served_by": f"RTL ({backend}) x2"})
        lines.expect(rf"\[0\] guest\| ping {count}")
        start = lines.at
        ns = [int(x) for x in lines.expect(r"\[0\] guest\| rtt((?: \d+)+)")[1].split()]
        rows.append(guest_rtt_row("VMShm guest ↔ VMShm guest", ns, lines.at - start,
                                  f"RTL ({backend}) x2"))
        _finish(proc, "vmshm qemu --guests 2", 120)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        group.close()
    return rows
