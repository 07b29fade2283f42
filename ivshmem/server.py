"""A server for QEMU's ivshmem doorbell protocol: the group's shared object and its eventfds.

Compatible with QEMU's ``contrib/ivshmem-server`` (``docs/specs/ivshmem-spec``): QEMU's
``ivshmem-doorbell`` devices, QEMU's ``ivshmem-client`` and :class:`~.client.IvshmemPeer` join it
over a UNIX socket. The shared memory is the named POSIX object ``-M NAME`` (``shm_open``). Unlike
QEMU's server, an existing object is never resized: a size only applies to an object this server
creates; and no object is ever unlinked.
"""

import errno
import os
import selectors
import socket
import stat
import threading

import _posixshmem

from . import protocol

__all__ = ["IvshmemServer", "DEFAULT_SIZE", "MAX_VECTORS"]

#: QEMU's server's default size for an object it creates (4 MiB).
DEFAULT_SIZE = 4 << 20
#: A bound on vectors per peer (QEMU's server allows 1024 eventfds each).
MAX_VECTORS = 1024
#: Seconds a send to a client may block before the client is dropped.
SEND_TIMEOUT = 5.0
_MODE = 0o600


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
    def __init__(self, peer_id, sock, vectors):
        self.id = peer_id
        self.sock = sock
        self.fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(vectors)]

    def close(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []
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
        The size of an object this server creates (default 4 MiB). An existing object keeps its
        size whatever this says (:attr:`size_ignored` tells).
    vectors : int
        Eventfds per peer, 1..1024; clients configured for fewer close the rest.
    log : callable or None
        Receives one line per join and leave.
    """

    def __init__(self, socket_path, name, size=None, vectors=1, log=None):
        self.name = shm_name(name)
        if size is not None and (not isinstance(size, int) or size <= 0):
            raise ValueError(f"-l: the object's size must be positive, got {size!r}")
        if not isinstance(vectors, int) or not 1 <= vectors <= MAX_VECTORS:
            raise ValueError(f"-n: vectors must be 1..{MAX_VECTORS}, got {vectors!r}")
        self.socket_path = os.fspath(socket_path)
        if len(os.fsencode(self.socket_path)) > 107:
            raise ValueError(f"-S {self.socket_path}: a UNIX socket path holds at most 107 bytes")
        self.vectors = vectors
        self.log = log or (lambda line: None)
        self.peers = {}               # id -> _Peer, in join order
        self._next_id = 0
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = None
        self._sel = None
        self._listener = None
        self.created = False
        self.size_ignored = False
        self._check_socket_path()
        # The socket first: a path that cannot be bound must not leave a new object behind.
        self._listen()
        try:
            self.shm_fd, self.size = self._open_object(size)
        except BaseException:
            self._listener.close()
            self._listener = None
            os.unlink(self.socket_path)       # ours, bound a moment ago
            raise

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
        try:
            fd = _posixshmem.shm_open(self.name, os.O_CREAT | os.O_EXCL | os.O_RDWR, _MODE)
        except FileExistsError:
            fd = _posixshmem.shm_open(self.name, os.O_RDWR, 0)
            have = os.fstat(fd).st_size
            if have == 0:
                os.close(fd)
                raise ValueError(f"-M {self.name}: the existing object is empty; QEMU cannot map "
                                 f"it, and this server does not resize objects it did not create")
            self.size_ignored = size is not None and size != have
            return fd, have
        self.created = True
        size = DEFAULT_SIZE if size is None else size
        try:
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            _posixshmem.shm_unlink(self.name)     # ours, made a moment ago, never used
            raise
        return fd, size

    def _listen(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.socket_path)
            sock.listen(16)
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

    def _join(self, sock):
        peer_id = self._pick_id()
        if peer_id is None:
            sock.close()
            self.log("refused a client: all 65536 IDs are taken")
            return None
        # A client that stops reading must not stall the group: its sends time out instead.
        sock.settimeout(SEND_TIMEOUT)
        peer = _Peer(peer_id, sock, self.vectors)
        try:
            protocol.send_message(sock, protocol.VERSION)
            protocol.send_message(sock, peer.id)
            protocol.send_message(sock, protocol.SHM_ID, self.shm_fd)
        except OSError as exc:
            self.log(f"peer {peer.id}: could not be set up ({exc.strerror or exc})")
            peer.close()
            return None
        gone = []
        for other in self.peers.values():
            try:
                for fd in peer.fds:
                    protocol.send_message(other.sock, peer.id, fd)
            except OSError:
                gone.append(other)          # not reading: it leaves, and the others hear so
        try:
            for other in self.peers.values():
                for fd in other.fds:
                    protocol.send_message(sock, other.id, fd)
            for fd in peer.fds:
                protocol.send_message(sock, peer.id, fd)
        except OSError as exc:
            self.log(f"peer {peer.id}: could not be set up ({exc.strerror or exc})")
            for other in self.peers.values():
                try:
                    protocol.send_message(other.sock, peer.id)     # it leaves again at once
                except OSError:
                    pass
            peer.close()
            peer = None
        for other in gone:
            self._leave(other)
        if peer is None:
            return None
        self.peers[peer.id] = peer
        self.log(f"peer {peer.id} joined ({len(self.peers)} in the group)")
        return peer

    def _leave(self, peer):
        if self.peers.pop(peer.id, None) is None:
            return
        if self._sel is not None:
            try:
                self._sel.unregister(peer.sock)
            except (KeyError, ValueError):
                pass
        peer.close()
        for other in list(self.peers.values()):
            try:
                protocol.send_message(other.sock, peer.id)
            except OSError:
                pass        # that one is leaving too; its own turn comes
        self.log(f"peer {peer.id} left ({len(self.peers)} in the group)")

    def serve_forever(self):
        """Serve until :meth:`stop` (or until the process ends)."""
        sel = self._sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "listen")
        sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "stop":
                        return
                    if key.data == "listen":
                        conn, _ = self._listener.accept()
                        peer = self._join(conn)
                        if peer is not None:
                            sel.register(conn, selectors.EVENT_READ, peer)
                        continue
                    # Clients never send: readable means closed (or misbehaving: closed by us).
                    self._leave(key.data)
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
        os.close(self.shm_fd)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
