"""The ivshmem server under load: many peers, some that stop reading, a storm of rings.

:func:`measure` starts ``vmshm ivshmem-server`` as its own process (the real command, so its
memory is its own) on a private socket and object, and plays every peer from this process with
one non-blocking loop (a thread per peer would be the bottleneck, and a peer keeps only the
eventfds it rings, so hundreds fit the descriptor limit):

1. ``peers`` peers join one after the other; each join is timed from ``connect`` to the last
   message of its set-up (its own eventfds), while every peer already in reads the announcements.
2. One in ten stops reading its socket (``slow``); the rest keep reading.
3. The storm: each reading peer rings the next ``fanout`` reading peers (in join order, around)
   round after round, while ``churn`` more peers join (timed too) and leave one after the other.
   Their announcements fill the sockets of the peers that stopped reading; the server must
   disconnect those and tell the others, never stalling anyone.
4. It ends once every reading peer has heard that every stopped one left; each reading peer's
   eventfd then holds exactly the rings sent to it.

Everything is local: one UNIX socket, one small object in /dev/shm (removed afterwards), no
network.
"""

import datetime
import os
import platform
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from . import protocol
from .server import STALL_TIMEOUT

__all__ = ["measure", "machine"]

_ONE = (1).to_bytes(8, sys.byteorder)


class _Member:
    """One peer played by this process: its socket, where its set-up is, the eventfds it keeps."""

    def __init__(self, index, sock, ring_indices=()):
        self.index = index
        self.sock = sock
        self.reader = protocol.Reader(sock)
        self.ring_indices = set(ring_indices)
        self.id = None
        self.stage = 0                 # 0 version, 1 ID, 2 object, 3 eventfds
        self.own = None                # its vector 0
        self.targets = {}              # peer ID -> eventfd, for the peers it rings
        self.done_at = None            # when its set-up was complete
        self.left_seen = {}            # peer ID -> when its leave arrived
        self.ended = False

    def close(self):
        for fd in self.targets.values():
            os.close(fd)
        self.targets.clear()
        if self.own is not None:
            os.close(self.own)
            self.own = None
        self.sock.close()


class _Swarm:
    """Every peer of one run, served by one selector."""

    def __init__(self, path):
        self.path = path
        self.sel = selectors.DefaultSelector()
        self.index_of = {}             # peer ID -> join index
        self.unknown = {}              # peer ID not yet known -> [(member, eventfd)]
        self.members = []

    def connect(self, index, ring_indices=()):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        sock.setblocking(False)
        member = _Member(index, sock, ring_indices)
        self.members.append(member)
        self.sel.register(sock, selectors.EVENT_READ, member)
        return member

    def stop_reading(self, member):
        self.sel.unregister(member.sock)

    def pump(self, timeout):
        for key, _ in self.sel.select(timeout):
            self._read(key.data)

    def _read(self, m):
        now = time.perf_counter()
        for value, fd in m.reader.read():
            if m.stage < 3:
                if (fd is None) != (m.stage < 2) or (m.stage == 0 and value != protocol.VERSION):
                    raise RuntimeError(f"peer {m.index}: unexpected set-up message {value}")
                if m.stage == 1:
                    m.id = value
                    self._learn(value, m.index)
                if fd is not None:
                    os.close(fd)       # the object: this run does not map it
                m.stage += 1
            elif fd is None:
                m.left_seen.setdefault(value, now)
                gone = m.targets.pop(value, None)
                if gone is not None:
                    os.close(gone)
            elif value == m.id:
                m.own, m.done_at = fd, now
            else:
                self._announced(m, value, fd)
        if m.reader.ended:
            m.ended = True
            self.sel.unregister(m.sock)

    def _learn(self, peer_id, index):
        self.index_of[peer_id] = index
        for member, fd in self.unknown.pop(peer_id, []):
            self._announced(member, peer_id, fd)

    def _announced(self, m, peer_id, fd):
        index = self.index_of.get(peer_id)
        if index is None:              # its own set-up has not been read yet
            self.unknown.setdefault(peer_id, []).append((m, fd))
        elif index in m.ring_indices:
            m.targets[peer_id] = fd
        else:
            os.close(fd)

    def join(self, index, ring_indices=(), deadline=None):
        """Connect peer `index` and serve everyone until its set-up is complete; return it and
        the seconds its join took."""
        t0 = time.perf_counter()
        member = self.connect(index, ring_indices)
        while member.done_at is None:
            if member.ended:
                raise RuntimeError(f"the server closed peer {index}'s connection in its set-up")
            if deadline is not None and time.perf_counter() > deadline:
                raise RuntimeError(f"peer {index} did not finish joining in time")
            self.pump(0.5)
        return member, member.done_at - t0

    def close(self):
        for m in self.members:
            m.close()
        for waiting in self.unknown.values():
            for _, fd in waiting:
                os.close(fd)
        self.sel.close()


def _memory(pid):
    """Return ``(VmRSS, VmHWM)`` of process `pid` in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def _percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def machine():
    """Return one line naming this machine: CPU model, CPUs, kernel, Python."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = " ".join(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def _start_server(sock, name, out):
    cmd = [sys.executable, "-m", "vmshm.cli", "ivshmem-server", "-F", "-S", sock, "-M", name,
           "-l", "64K"]
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while b"listening on" not in Path(out.name).read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"vmshm ivshmem-server did not start: "
                               f"{Path(out.name).read_text(errors='replace').strip()}")
        time.sleep(0.02)
    return proc


def measure(peers=256, slow_every=10, churn=64, fanout=4, timeout=50.0):
    """Run the load and return its figures (a dict; the keys are :func:`render`'s fields).

    Parameters
    ----------
    peers : int
        Peers in the group at the start of the storm.
    slow_every : int
        Every `slow_every`-th peer (in join order) stops reading.
    churn : int
        Peers that join and leave one after the other during the storm.
    fanout : int
        Reading peers each reading peer rings per round.
    timeout : float
        Seconds the whole run may take; past them it stops with ``RuntimeError``.
    """
    if peers < 3 or slow_every < 2 or churn < 0 or fanout < 1:
        raise ValueError("measure needs at least 3 peers, slow_every >= 2, churn >= 0, "
                         "fanout >= 1")
    start = time.perf_counter()
    deadline = start + timeout
    slow = [j for j in range(peers) if j % slow_every == slow_every // 2]
    live = [j for j in range(peers) if j % slow_every != slow_every // 2]
    fanout = min(fanout, len(live) - 1)
    rings_of = {j: [live[(k + d) % len(live)] for d in range(1, fanout + 1)]
                for k, j in enumerate(live)}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Each reading peer keeps a socket, its own eventfd and `fanout` others'.
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.TemporaryDirectory(prefix="vmshm-ivs-load-")
    sock = str(Path(tmp.name) / "s")
    name = f"/vmshm-ivs-load-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log = open(Path(tmp.name) / "server.log", "wb")
    swarm = proc = None
    try:
        proc = _start_server(sock, name, log)
        rss_start, _ = _memory(proc.pid)
        swarm = _Swarm(sock)
        latencies = []
        for j in range(peers):
            _, seconds = swarm.join(j, rings_of.get(j, ()), deadline)
            latencies.append(seconds)
        rss_joined, _ = _memory(proc.pid)
        members = {m.index: m for m in swarm.members}
        readers = [members[j] for j in live]
        stopped = [members[j] for j in slow]
        # The last joins' announcements may still wait in their sockets.
        while any(len(m.targets) < fanout for m in readers):
            if time.perf_counter() > deadline:
                short = next(m for m in readers if len(m.targets) < fanout)
                raise RuntimeError(f"peer {short.index} got {len(short.targets)} of the "
                                   f"{fanout} eventfds it rings")
            swarm.pump(0.1)
        for m in stopped:
            swarm.stop_reading(m)
        t_stop = time.perf_counter()
        stopped_ids = {m.id for m in stopped}
        sent = dict.fromkeys((m.id for m in readers), 0)
        rounds = joined = 0
        churn_s = 0.0
        churner = None
        while True:
            for m in readers:
                for peer_id, fd in m.targets.items():
                    os.write(fd, _ONE)
                    sent[peer_id] += 1
            rounds += 1
            swarm.pump(0)
            if churner is None and joined < churn:
                churner = swarm.connect(peers + joined)
                churn_t0 = time.perf_counter()
            if churner is not None and churner.done_at is not None:
                latencies.append(churner.done_at - churn_t0)
                swarm.stop_reading(churner)
                churner.close()            # it leaves at once
                churner = None
                joined += 1
                churn_s = time.perf_counter() - t_stop
            if joined == churn and rounds % 16 == 0 and all(
                    stopped_ids <= m.left_seen.keys() for m in readers):
                break
            if time.perf_counter() > deadline:
                missing = sum(len(stopped_ids - m.left_seen.keys()) for m in readers)
                raise RuntimeError(f"the load did not finish within {timeout:g} s: {joined} of "
                                   f"{churn} churn joins, {missing} leave notices of stopped "
                                   f"peers not yet seen")
        storm = time.perf_counter() - t_stop
        rss_end, rss_peak = _memory(proc.pid)
        got = {}
        for m in readers:
            try:
                got[m.id] = int.from_bytes(os.read(m.own, 8), sys.byteorder)
            except BlockingIOError:
                got[m.id] = 0
        reading_ids = {m.id for m in readers}
        wrongly = sorted(i for m in readers for i in m.left_seen if i in reading_ids)
        wrongly += sorted(m.index for m in readers if m.ended)
        gone_after = [min(m.left_seen[i] for m in readers) - t_stop for i in stopped_ids]
        server_said = sum(b"disconnected: it read nothing" in line
                          for line in Path(log.name).read_bytes().splitlines())
        return dict(
            date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            machine=machine(), peers=peers, reading=len(readers), slow=len(stopped),
            churn=churn, joins=len(latencies),
            join_p50_ms=_percentile(latencies, 50) * 1e3,
            join_p99_ms=_percentile(latencies, 99) * 1e3,
            join_max_ms=max(latencies) * 1e3,
            rings=sum(sent.values()), delivered=sum(min(got[i], sent[i]) for i in sent),
            exact=sum(got[i] == sent[i] for i in sent), fanout=fanout, rounds=rounds,
            rings_per_s=sum(got.values()) / storm, storm_s=storm,
            disconnected=len(gone_after), disconnected_by_server=server_said, churn_s=churn_s,
            stall_timeout=STALL_TIMEOUT,
            wrongly=len(wrongly), slow_gone_max_s=max(gone_after, default=0.0),
            rss_start_mib=rss_start / 2**20, rss_joined_mib=rss_joined / 2**20,
            rss_end_mib=rss_end / 2**20, rss_peak_mib=rss_peak / 2**20,
            wall_s=time.perf_counter() - start)
    finally:
        if swarm is not None:
            swarm.close()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        try:
            os.unlink(f"/dev/shm{name}")      # this run's own object
        except FileNotFoundError:
            pass
        tmp.cleanup()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
