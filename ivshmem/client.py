"""The host side of an ivshmem peer: join a server, ring peers, wait for their rings.

:class:`IvshmemPeer` is what QEMU's ``ivshmem-doorbell`` device is to a guest, for a host
program: it gets its ID, the shared object and every peer's eventfds from the server, rings
vector V of peer P by writing 1 to P's V-th eventfd, and waits on its own eventfds.
"""

import mmap
import os
import select
import socket
import sys
import threading
import time

from . import protocol

__all__ = ["IvshmemPeer", "ProtocolError"]

_ONE = (1).to_bytes(8, sys.byteorder)


class ProtocolError(RuntimeError):
    """The server said something the ivshmem protocol does not allow."""


class IvshmemPeer:
    """One peer of an ivshmem group; make it with :meth:`connect`.

    Attributes
    ----------
    id : int
        This peer's ID (what the group's Doorbell writes name it by).
    shm : mmap.mmap
        The group's shared object, all of it, read-write.
    """

    def __init__(self, sock, vectors, timeout):
        self._sock = sock
        self._lock = threading.Condition()
        self._peers = {}          # id -> [eventfd, ...] to ring that peer
        self._own = []            # our eventfds, vector order
        self._vectors = vectors
        self._closed = False
        self.left = []            # IDs whose leave notification came
        deadline = time.monotonic() + timeout
        sock.settimeout(timeout)
        version = self._expect(deadline, fd=False)
        if version != protocol.VERSION:
            raise ProtocolError(f"the server speaks ivshmem protocol version {version}; "
                                f"this client speaks {protocol.VERSION}")
        self.id = self._expect(deadline, fd=False)
        if not 0 <= self.id <= protocol.MAX_ID:
            raise ProtocolError(f"the server gave the ID {self.id}, outside 0..65535")
        value, fd = self._expect(deadline, fd=True)
        if value != protocol.SHM_ID:
            raise ProtocolError(f"expected -1 with the shared memory, got {value}")
        try:
            size = os.fstat(fd).st_size
            self.shm = mmap.mmap(fd, size) if size else None
        finally:
            os.close(fd)
        while len(self._own) < vectors:
            value, fd = self._expect(deadline, fd=None)
            self._handle(value, fd)
        sock.settimeout(None)
        self._pump = threading.Thread(target=self._run, name=f"ivshmem-peer-{self.id}",
                                      daemon=True)
        self._pump.start()

    @classmethod
    def connect(cls, path, vectors=1, timeout=10.0):
        """Join the server listening at ``path``; return the peer once its vectors are set up.

        Parameters
        ----------
        path : str
            The server's UNIX socket.
        vectors : int
            How many of its own vectors to wait for (the server may give more; they are kept).
        timeout : float
            Seconds the set-up may take.
        """
        if not isinstance(vectors, int) or vectors < 1:
            raise ValueError(f"vectors must be a positive int, got {vectors!r}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.fspath(path))
            return cls(sock, vectors, timeout)
        except socket.timeout:
            sock.close()
            raise ProtocolError(f"the server at {path} did not finish the set-up within "
                                f"{timeout:g} s") from None
        except BaseException:
            sock.close()
            raise

    def _expect(self, deadline, fd):
        msg = protocol.recv_message(self._sock)
        if msg is None:
            raise ProtocolError("the server closed the connection during the set-up")
        value, got = msg
        if fd is False:
            if got is not None:
                os.close(got)
                raise ProtocolError(f"unexpected file descriptor with {value}")
            return value
        if fd is True and got is None:
            raise ProtocolError(f"expected a file descriptor with {value}")
        return value, got

    def _handle(self, value, fd):
        if fd is not None:
            # Rings and waits never block, whoever made the eventfd: a peer that never reads
            # its vector cannot stall the one ringing it, and wait() keeps its timeout.
            os.set_blocking(fd, False)
        with self._lock:
            if fd is None:
                # A leave notification.
                for old in self._peers.pop(value, []):
                    os.close(old)
                self.left.append(value)
            elif value == self.id:
                self._own.append(fd)
            elif 0 <= value <= protocol.MAX_ID:
                self._peers.setdefault(value, []).append(fd)
            else:
                os.close(fd)
                raise ProtocolError(f"a join notification for the ID {value}")
            self._lock.notify_all()

    def _run(self):
        try:
            while True:
                msg = protocol.recv_message(self._sock)
                if msg is None:
                    break
                self._handle(*msg)
        except (OSError, ProtocolError):
            pass
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    # --- the API -----------------------------------------------------------------------

    @property
    def peers(self):
        """Return ``{peer ID: vectors connected}`` for every other peer in the group now."""
        with self._lock:
            return {p: len(fds) for p, fds in sorted(self._peers.items())}

    @property
    def vectors(self):
        """Return how many of this peer's own vectors are connected."""
        return len(self._own)

    def wait_for_peers(self, count, timeout=10.0):
        """Wait until ``count`` other peers are in the group; return :attr:`peers`.

        A peer counts once it has as many vectors as this one (a join's eventfds come one
        message each; a server gives every peer the same number).
        """
        end = time.monotonic() + timeout
        with self._lock:
            while sum(len(f) >= len(self._own) for f in self._peers.values()) < count:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._peers)} of {count} peers joined within "
                                       f"{timeout:g} s")
                self._lock.wait(left)
        return self.peers

    def ring(self, peer, vector=0):
        """Ring ``vector`` of ``peer``: write 1 to its eventfd, as a Doorbell write does.

        Never blocks. Returns ``False`` if the ring was merged into those already waiting
        (the peer has let its eventfd's count reach its maximum, 2**64 - 2, without reading
        it: it is signalled, as after any ring), ``True`` otherwise.
        """
        with self._lock:
            fds = self._peers.get(peer)
            if fds is None:
                raise ValueError(f"peer {peer} is not in the group (peers: "
                                 f"{sorted(self._peers) or 'none'})")
            if not 0 <= vector < len(fds):
                raise ValueError(f"peer {peer} has vectors 0..{len(fds) - 1}, not {vector}")
            try:
                os.write(fds[vector], _ONE)
            except BlockingIOError:
                return False
            return True

    def fileno(self, vector=0):
        """Return the eventfd that becomes readable when ``vector`` of this peer is rung."""
        return self._own[vector]

    def peer_fileno(self, peer, vector=0):
        """Return the eventfd a write of 1 to rings ``vector`` of ``peer`` (for a C program)."""
        with self._lock:
            fds = self._peers.get(peer)
            if fds is None or not 0 <= vector < len(fds):
                raise ValueError(f"peer {peer} has no vector {vector} in this group")
            return fds[vector]

    def wait(self, vector=0, timeout=None):
        """Wait until ``vector`` is rung; return how many rings came (0 if ``timeout`` passed).

        The eventfd's count is read and reset, so rings that came since the last wait count
        once each and return at once.
        """
        if not 0 <= vector < len(self._own):
            raise ValueError(f"this peer has vectors 0..{len(self._own) - 1}, not {vector}")
        fd = self._own[vector]
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return int.from_bytes(os.read(fd, 8), sys.byteorder)
            except BlockingIOError:
                pass
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return 0
            select.select([fd], [], [], left)

    def close(self):
        """Leave the group: close the connection (the server tells the others) and the fds."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._pump.join(timeout=5)
        with self._lock:
            for fds in self._peers.values():
                for fd in fds:
                    os.close(fd)
            self._peers.clear()
            for fd in self._own:
                os.close(fd)
            self._own = []
        if self.shm is not None:
            try:
                self.shm.close()
            except BufferError:
                pass          # a view is still exported; the mapping goes with it

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
