"""A server for QEMU's ivshmem doorbell protocol: the group's shared object and its eventfds.

Compatible with QEMU's ``contrib/ivshmem-server`` (``docs/specs/ivshmem-spec``): QEMU's
``ivshmem-doorbell`` devices, QEMU's ``ivshmem-client`` and :class:`~.client.IvshmemPeer` join it
over a UNIX socket. The shared memory is the named POSIX object ``-M NAME`` (``shm_open``). Unlike
QEMU's server, an existing object is never resized: a size only applies to an object this server
creates, whose memory is reserved at once (a full tmpfs is ``ENOSPC`` now, not a peer's SIGBUS
later); and no object is ever unlinked.

One thread serves every peer and never waits for one (``docs/ivshmem-server.md``). Each send is
non-blocking; what a peer's socket buffer cannot take waits in that peer's queue. A peer that
leaves its buffer full for :data:`STALL_TIMEOUT` seconds, or lets more than :data:`QUEUE_LIMIT`
messages pile up beyond its set-up, is disconnected, and the others are told it left. The
eventfds handed out are non-blocking, so a ring to a peer that never reads them never blocks the
peer that rings.
"""

import collections
import errno
import fcntl
import os
import selectors
import socket
import stat
import struct
import termios
import threading
import time

from vmshm.host_model import ShmRegion

from . import protocol

__all__ = ["IvshmemServer", "DEFAULT_SIZE", "MAX_VECTORS", "STALL_TIMEOUT", "QUEUE_LIMIT",
           "SNDBUF", "shm_name"]

#: QEMU's server's default size for an object it creates (4 MiB).
DEFAULT_SIZE = 4 << 20
#: A bound on vectors per peer (QEMU's server allows 64; its device takes more with MSI-X).
MAX_VECTORS = 1024
#: Seconds a peer may leave its socket buffer full (read nothing) before it is disconnected.
STALL_TIMEOUT = 2.0
#: Messages a peer's queue may hold beyond its own set-up before it is disconnected at once.
QUEUE_LIMIT = 1024
#: The socket buffer asked for each peer (Linux doubles it): about 86 messages with a descriptor,
#: so a peer that stops reading shows within a few dozen joins and leaves, not hundreds.
SNDBUF = 32 << 10
#: Seconds the server stops accepting after running out of file descriptors.
_ACCEPT_PAUSE = 0.5
#: Seconds before a send refused for too many descriptors in flight (ETOOMANYREFS) is retried.
_REFS_RETRY = 0.05


def _unread(sock):
    """Return the bytes sent on `sock` that its peer has not read yet, or ``None`` if unknown."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)))[0]
    except OSError:
        return None


def shm_name(name):
    """Return ``name`` as ``shm_open`` takes it (one leading slash), or raise ValueError."""
    if not isinstance(name, str) or not name.strip("/"):
        raise ValueError(f"-M: a shared-memory object needs a name, got {name!r}")
    bare = name.lstrip("/")
    if "/" in bare or "\0" in bare or len(bare) > 255:
        raise ValueError(f"-M {name!r}: a POSIX shared-memory name is one path component "
                         f"(no '/' after the first, no NUL, at most 255 bytes)")
    return "/" + bare


class _Peer:
    """One connected client: its socket, its eventfds, and what it has not been sent yet."""

    def __init__(self, peer_id, sock, fds):
        self.id = peer_id
        self.sock = sock
        self.fds = fds
        self.queue = collections.deque()     # (value, fd or None), oldest first
        self.partial = b""                   # the rest of a message the socket took in part
        self.setup = 0                       # set-up messages still in the queue (they lead it)
        self.stalled_since = None            # when its buffer was found full (no read since)
        self.outq = 0                        # the bytes it had not read then (SIOCOUTQ)
        self.retry_at = None                 # a send refused for descriptors in flight: when
        self.writing = False                 # registered for EVENT_WRITE

    @property
    def backlog(self):
        return len(self.queue) + bool(self.partial)

    def forget(self, gone):
        """Drop the unsent announcements of `gone`; return whether this peer heard of it."""
        if not self.queue:
            return True
        kept = collections.deque()
        dropped = setup_dropped = 0
        for i, (value, fd) in enumerate(self.queue):
            if value == gone.id and fd is not None:
                dropped += 1
                setup_dropped += i < self.setup
            else:
                kept.append((value, fd))
        self.queue = kept
        self.setup -= setup_dropped
        return dropped < len(gone.fds)

    def close(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.queue.clear()
        self.sock.close()


class IvshmemServer:
    """Serve one ivshmem group: a listening UNIX socket, a named shared object, N vectors a peer.

    Parameters
    ----------
    socket_path : str
        Where to listen. An existing file there is refused, not removed.
    name : str
        The POSIX shared-memory object (``shm_open`` name), opened or created.
    size : int or None
        The size of an object this server creates (default 4 MiB); its memory is reserved at
        once. An existing object keeps its size whatever this says (:attr:`size_ignored`).
    vectors : int
        Eventfds per peer, 1..1024; clients configured for fewer close the rest.
    log : callable or None
        Receives one line per join and leave.
    stall_timeout : float
        Seconds a peer may leave its socket buffer full before it is disconnected.
    queue_limit : int
        Messages a peer's queue may hold beyond its set-up before it is disconnected.

    Attributes
    ----------
    disconnected : list of dict
        One entry per peer disconnected for not reading: ``id``, ``why`` (``"stalled"`` or
        ``"queue"``), ``held`` (messages waiting for it) and ``seconds`` (since its buffer was
        first found full).
    """

    def __init__(self, socket_path, name, size=None, vectors=1, log=None, *,
                 stall_timeout=STALL_TIMEOUT, queue_limit=QUEUE_LIMIT):
        self.name = shm_name(name)
        if size is not None and (not isinstance(size, int) or size <= 0):
            raise ValueError(f"-l: the object's size must be positive, got {size!r}")
        if not isinstance(vectors, int) or not 1 <= vectors <= MAX_VECTORS:
            raise ValueError(f"-n: vectors must be 1..{MAX_VECTORS}, got {vectors!r}")
        if not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be positive, got {stall_timeout!r}")
        if not isinstance(queue_limit, int) or queue_limit < 1:
            raise ValueError(f"queue_limit must be a positive int, got {queue_limit!r}")
        self.socket_path = os.fspath(socket_path)
        if len(os.fsencode(self.socket_path)) > 107:
            raise ValueError(f"-S {self.socket_path!r}: a UNIX socket path holds at most 107 "
                             f"bytes")
        self.vectors = vectors
        self.log = log or (lambda line: None)
        self.stall_timeout = stall_timeout
        self.queue_limit = queue_limit
        self.peers = {}               # id -> _Peer, in join order
        self.disconnected = []
        self._next_id = 0
        self._doomed = []             # (peer, why): to disconnect once the current step is done
        self._watched = set()         # peers with a backlog, or whose buffer was found full
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = None
        self._sel = None
        self._listener = None
        self._accept_paused_until = None
        self.created = False
        self.size_ignored = False
        self._check_socket_path()
        # The socket first: a path that cannot be bound must not leave a new object behind.
        self._listen()
        try:
            self._region = self._open_object(size)
        except BaseException:
            self._listener.close()
            self._listener = None
            os.unlink(self.socket_path)       # ours, bound a moment ago
            raise
        self.shm_fd = self._region.fileno()
        self.size = self._region.size

    def _check_socket_path(self):
        try:
            st = os.lstat(self.socket_path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(errno.EEXIST, "exists and is not a socket; not touching it",
                                  self.socket_path)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.socket_path)
        except OSError:
            raise FileExistsError(errno.EEXIST, "a stale socket (nothing listens there); "
                                  "remove it to start a server", self.socket_path) from None
        finally:
            probe.close()
        raise FileExistsError(errno.EADDRINUSE, "another server listens there", self.socket_path)

    def _open_object(self, size):
        # The host model's creation reserves the object's memory (posix_fallocate), refuses a
        # size beyond the file system's free space with ENOSPC and one beyond off_t with EFBIG,
        # and removes what it made when it fails.
        region, self.created = ShmRegion.open_or_create(
            self.name, DEFAULT_SIZE if size is None else size)
        if not self.created:
            if region.size == 0:
                region.close()
                raise ValueError(f"-M {self.name!r}: the existing object is empty; QEMU cannot "
                                 f"map it, and this server does not resize objects it did not "
                                 f"create")
            self.size_ignored = size is not None and size != region.size
        return region

    def _listen(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.socket_path)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen there: {exc.strerror}",
                          self.socket_path) from None
        except BaseException:
            sock.close()
            raise
        self._listener = sock

    # --- the protocol --------------------------------------------------------------------

    def _pick_id(self):
        for _ in range(protocol.MAX_ID + 1):
            candidate = self._next_id
            self._next_id = (self._next_id + 1) % (protocol.MAX_ID + 1)
            if candidate not in self.peers:
                return candidate
        return None

    def _accept(self):
        """Take every waiting connection; pause accepting while descriptors run out."""
        while True:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                # The listener stays readable: without a pause the loop would spin on it.
                self.log(f"cannot accept a client now ({exc.strerror}); pausing "
                         f"{_ACCEPT_PAUSE:g} s")
                self._sel.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE
                return
            self._join(conn)

    def _join(self, sock):
        peer_id = self._pick_id()
        if peer_id is None:
            sock.close()
            self.log("refused a client: all 65536 IDs are taken")
            return None
        fds = []
        try:
            for _ in range(self.vectors):
                fds.append(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            sock.close()
            self.log(f"refused a client: no eventfd for it ({exc.strerror})")
            return None
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        peer = _Peer(peer_id, sock, fds)
        others = list(self.peers.values())
        self.peers[peer.id] = peer
        self._sel.register(sock, selectors.EVENT_READ, peer)
        setup = [(protocol.VERSION, None), (peer.id, None), (protocol.SHM_ID, self.shm_fd)]
        setup += [(other.id, fd) for other in others for fd in other.fds]
        setup += [(peer.id, fd) for fd in peer.fds]
        peer.setup = len(setup)
        self._send(peer, setup)
        joined = [(peer.id, fd) for fd in peer.fds]
        for other in others:
            self._send(other, joined)
        self.log(f"peer {peer.id} joined ({len(self.peers)} in the group)")
        return peer

    def _send(self, peer, messages):
        """Queue `messages` for `peer` and send what its socket takes now; never wait."""
        if peer.id not in self.peers:
            return
        peer.queue.extend(messages)
        if len(peer.queue) - peer.setup > self.queue_limit:
            self._doomed.append((peer, "queue"))
            return
        self._flush(peer)

    def _flush(self, peer, now=None):
        """Send what `peer`'s socket takes; start its stall clock when its buffer is full."""
        sent = full = False
        try:
            while True:
                if peer.partial:
                    n = peer.sock.send(peer.partial)
                    peer.partial = peer.partial[n:]
                    sent = True
                    if peer.partial:
                        continue
                if not peer.queue:
                    break
                value, fd = peer.queue[0]
                data = protocol.pack(value)
                n = (peer.sock.send(data) if fd is None
                     else socket.send_fds(peer.sock, [data], [fd]))
                peer.queue.popleft()
                peer.setup = max(0, peer.setup - 1)
                peer.partial = data[n:]           # the descriptor went with the first byte
                sent = True
        except BlockingIOError:
            full = True
        except OSError as exc:
            if exc.errno != errno.ETOOMANYREFS:
                self._doomed.append((peer, "closed"))      # it hung up or reset
                return
            # Too many descriptors in flight for this user (others' unread messages hold them):
            # not this peer's fault; retry shortly, its stall clock running.
            peer.retry_at = time.monotonic() + _REFS_RETRY
        now = now or time.monotonic()
        if sent:
            # It read since its buffer was last found full (or it never was).
            peer.stalled_since = None
        if full and peer.stalled_since is None:
            peer.stalled_since = now
            peer.outq = _unread(peer.sock) or 0
        if peer.stalled_since is None and not peer.backlog:
            peer.retry_at = None
            self._watched.discard(peer)
        else:
            self._watched.add(peer)
        self._want_write(peer, bool(peer.backlog) and peer.retry_at is None)

    def _want_write(self, peer, on):
        if peer.writing != on:
            peer.writing = on
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
            self._sel.modify(peer.sock, events, peer)

    def _reap(self):
        """Disconnect every doomed peer; telling the others may doom more."""
        while self._doomed:
            peer, why = self._doomed.pop()
            if self.peers.get(peer.id) is not peer:
                continue
            held = peer.backlog
            waited = (0.0 if peer.stalled_since is None
                      else time.monotonic() - peer.stalled_since)
            del self.peers[peer.id]
            self._watched.discard(peer)
            self._sel.unregister(peer.sock)
            for other in self.peers.values():
                # One that never got the announcement does not hear of the leave either.
                if other.forget(peer):
                    self._send(other, [(peer.id, None)])
            peer.close()
            if why == "closed":
                self.log(f"peer {peer.id} left ({len(self.peers)} in the group)")
                continue
            self.disconnected.append(dict(id=peer.id, why=why, held=held, seconds=waited))
            reason = (f"it read nothing for {waited:.2f} s" if why == "stalled" else
                      f"more than {self.queue_limit} messages waited for it")
            self.log(f"peer {peer.id} disconnected: {reason} ({held} messages held); "
                     f"{len(self.peers)} in the group")

    def _tick(self, now):
        """Retry refused sends, doom stalled peers, resume accepting; return the next timeout."""
        wake = []
        if self._accept_paused_until is not None:
            if now >= self._accept_paused_until:
                self._accept_paused_until = None
                self._sel.register(self._listener, selectors.EVENT_READ, "listen")
            else:
                wake.append(self._accept_paused_until)
        for peer in list(self._watched):
            if peer.retry_at is not None and now >= peer.retry_at:
                peer.retry_at = None
                self._flush(peer, now)
            if peer.stalled_since is not None and now >= peer.stalled_since + self.stall_timeout:
                self._recheck(peer, now)
            if peer.stalled_since is not None:
                wake.append(peer.stalled_since + self.stall_timeout)
            if peer.retry_at is not None:
                wake.append(peer.retry_at)
        self._reap()
        return max(0.0, min(wake) - now) if wake else None

    def _recheck(self, peer, now):
        """Doom `peer` unless it read something since its buffer was found full."""
        # One last send: the kernel reports a socket writable only once 3/4 of its buffer is
        # read, but a peer that read even one message is not stalled.
        self._flush(peer, now)
        if peer.stalled_since in (None, now) or any(p is peer for p, _ in self._doomed):
            return
        # Nothing more to send (its announcements were withdrawn when their peers left): the
        # kernel's count of bytes not yet read says whether it read any.
        unread = _unread(peer.sock)
        if unread is not None and unread < peer.outq:
            peer.stalled_since, peer.outq = (now, unread) if unread else (None, 0)
            if peer.stalled_since is None and not peer.backlog:
                self._watched.discard(peer)
            return
        self._doomed.append((peer, "stalled"))

    def serve_forever(self):
        """Serve until :meth:`stop` (or until the process ends)."""
        sel = self._sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "listen")
        sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        timeout = None
        try:
            while True:
                for key, events in sel.select(timeout):
                    if key.data == "stop":
                        return
                    if key.data == "listen":
                        self._accept()
                    elif events & selectors.EVENT_READ:
                        # Clients never send: readable means closed (or misbehaving: closed by
                        # us).
                        self._doomed.append((key.data, "closed"))
                    elif self.peers.get(key.data.id) is key.data:
                        self._flush(key.data)
                    self._reap()
                timeout = self._tick(time.monotonic())
        finally:
            self._sel = None
            sel.close()
            self._shutdown()

    def start(self):
        """Serve in a background thread; return self."""
        self._thread = threading.Thread(target=self.serve_forever, name="ivshmem-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving: disconnect every peer, remove the socket this server made."""
        if self._thread is not None:
            self._stop_w.send(b"x")
            self._thread.join(timeout=10)
            self._thread = None
        else:
            self._shutdown()

    def _shutdown(self):
        if self._listener is None:
            return
        for peer in list(self.peers.values()):
            peer.close()
        self.peers.clear()
        self._listener.close()
        self._listener = None
        try:
            os.unlink(self.socket_path)       # the socket is ours; the object is not removed
        except FileNotFoundError:
            pass
        self._region.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
