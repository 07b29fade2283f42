"""Make a VMShm device's host a peer of an ivshmem group: its doorbells ring the group's eventfds.

:class:`IvshmemBridge` joins a :class:`~vmshm.host_model.HostModel` (the host side of one
simulated VMShm device) and an :class:`~.client.IvshmemPeer` (a member of a group served by
``vmshm ivshmem-server`` or QEMU's server):

- the device's peer ID is the one the server gave (``host.peer_id``, what IVPOSITION reads);
- a guest's DOORBELL write (``peer << 16 | vector``; the backend calls ``host.doorbell``) writes
  1 to that peer's ``vector``-th eventfd, as QEMU's ``ivshmem-doorbell`` does; a doorbell to a
  peer that is not in the group (or left it) or to a vector it does not have is dropped, logged
  and counted in :attr:`IvshmemBridge.dropped`, never raised into the simulation;
- a ring from any peer on one of our eventfds becomes ``host.ring(vector)``: INTR_STATUS bit
  ``vector`` (vectors 32 and up are ignored by the device).

Without a server, a host program talks to the device through the host model itself:
``host.ring(vector)`` rings the device (thread-safe), and ``host.on_doorbell = callback`` (or the
list ``host.doorbells``) sees the guest's DOORBELL writes; :class:`HostDoorbell` wraps both as a
channel doorbell with ``ring()`` and a blocking ``wait(timeout)``.
"""

import logging
import os
import selectors
import sys
import threading

from .client import IvshmemPeer

__all__ = ["IvshmemBridge", "HostDoorbell"]

_ONE = (1).to_bytes(8, sys.byteorder)
_logger = logging.getLogger(__name__)


class IvshmemBridge:
    """Connect a host model to an ivshmem peer; :meth:`close` undoes it.

    Parameters
    ----------
    host : HostModel
        The device's host: anything with ``peer_id``, ``on_doorbell`` and a thread-safe
        ``ring(vector)``.
    peer : IvshmemPeer
        A connected peer. The bridge reads its own eventfds from now on: do not call
        ``peer.wait`` meanwhile.
    own_peer : bool
        Close ``peer`` (leave the group) in :meth:`close`; :meth:`connect` sets it.
    log : callable or logging.Logger, optional
        Receives one line per dropped doorbell and per join of the bridge; by default this
        module's logger.

    Attributes
    ----------
    peer : IvshmemPeer
    forwarded : int
        Guest doorbells written to a peer's eventfd.
    delivered : int
        Rings from the group handed to ``host.ring``.
    dropped : int
        Guest doorbells that named no peer or vector of the group.
    last_drop : str or None
        Why the last one was dropped, for people.
    """

    def __init__(self, host, peer, *, own_peer=False, log=None):
        if not isinstance(peer, IvshmemPeer):
            raise TypeError(f"peer must be an IvshmemPeer, not {type(peer).__name__}")
        for attr in ("peer_id", "on_doorbell", "ring"):
            if not hasattr(host, attr):
                raise TypeError(f"host must be a HostModel with doorbells (it has no "
                                f"{attr!r}), not {type(host).__name__}")
        if isinstance(log, logging.Logger):
            log = log.warning
        if log is not None and not callable(log):
            raise TypeError(f"log must be callable or a logging.Logger, not {log!r}")
        self._log = log or _logger.warning
        self.host = host
        self.peer = peer
        self._own_peer = own_peer
        self.forwarded = self.delivered = self.dropped = 0
        self.last_drop = None
        self._lock = threading.Lock()
        self._closed = False
        self._chained = host.on_doorbell
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake, selectors.EVENT_READ, None)
        for vector in range(peer.vectors):
            self._selector.register(peer.fileno(vector), selectors.EVENT_READ, vector)
        host.peer_id = peer.id
        host.on_doorbell = self._doorbell
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"ivshmem-bridge-{peer.id}")
        self._thread.start()

    @classmethod
    def connect(cls, host, path, *, vectors=1, timeout=10.0, log=None):
        """Join the server at ``path`` as a new peer and bridge ``host`` to it.

        Parameters
        ----------
        host : HostModel
        path : str
            The server's UNIX socket.
        vectors : int
            Own vectors to wait for (:meth:`IvshmemPeer.connect`).
        timeout : float
            Seconds the join may take.
        log : callable or logging.Logger, optional
        """
        peer = IvshmemPeer.connect(path, vectors=vectors, timeout=timeout)
        try:
            return cls(host, peer, own_peer=True, log=log)
        except BaseException:
            peer.close()
            raise

    @property
    def id(self):
        """int: The peer ID the server gave this device (what IVPOSITION reads)."""
        return self.peer.id

    def _drop(self, why):
        with self._lock:
            self.dropped += 1
            self.last_drop = why
        try:
            self._log(f"ivshmem bridge {self.peer.id}: {why}")
        except Exception:                            # a log that fails must not stop the device
            pass

    def _doorbell(self, peer, vector):
        # Called by the simulation backend for each DOORBELL write: never raise into it.
        try:
            if self._closed:
                self._drop(f"doorbell to peer {peer} vector {vector} dropped: the bridge is "
                           f"closed")
            elif peer == self.peer.id:
                # QEMU's device rings itself through its own eventfd; so does this one.
                if 0 <= vector < self.peer.vectors:
                    os.write(self.peer.fileno(vector), _ONE)
                    with self._lock:
                        self.forwarded += 1
                else:
                    self._drop(f"doorbell to itself (peer {peer}) dropped: it has vectors "
                               f"0..{self.peer.vectors - 1}, not {vector}")
            else:
                try:
                    self.peer.ring(peer, vector)
                except ValueError as exc:
                    self._drop(f"doorbell to peer {peer} vector {vector} dropped: {exc}")
                else:
                    with self._lock:
                        self.forwarded += 1
        except OSError as exc:
            self._drop(f"doorbell to peer {peer} vector {vector} dropped: "
                       f"{exc.strerror or exc}")
        if self._chained is not None:
            self._chained(peer, vector)

    def _run(self):
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return
                try:
                    count = int.from_bytes(os.read(key.fd, 8), sys.byteorder)
                except BlockingIOError:
                    continue
                except OSError:
                    return                  # the peer's fds were closed under us
                if count:
                    # Any number of rings since the last read set the one status bit.
                    self.host.ring(key.data)
                    with self._lock:
                        self.delivered += 1

    def close(self):
        """Stop forwarding: the device has no peer ID again; leave the group if it was ours."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake, _ONE)
        self._thread.join(timeout=5)
        self._selector.close()
        os.close(self._wake)
        if self.host.on_doorbell == self._doorbell:
            self.host.on_doorbell = self._chained
        self.host.peer_id = None
        if self._own_peer:
            self.peer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HostDoorbell:
    """A channel doorbell for a host program on the device's own host model, with no server.

    ``ring()`` raises ``vector`` on the device (``host.ring``); ``wait(timeout)`` returns once
    the guest has written the DOORBELL register (any peer and vector) since the last wait, or
    after ``timeout`` seconds. It chains to any ``on_doorbell`` callback already set.

    Parameters
    ----------
    host : HostModel
    vector : int
        The device's vector (INTR_STATUS bit) :meth:`ring` raises.
    """

    def __init__(self, host, vector=0):
        self.host, self.vector = host, vector
        self.rings = self.wakes = 0
        self._cond = threading.Condition()
        self._count = 0
        self._chained = host.on_doorbell
        host.on_doorbell = self._doorbell

    def _doorbell(self, peer, vector):
        with self._cond:
            self._count += 1
            self._cond.notify_all()
        if self._chained is not None:
            self._chained(peer, vector)

    def ring(self):
        """Ring the device: set its INTR_STATUS bit :attr:`vector`."""
        self.rings += 1
        self.host.ring(self.vector)

    def wait(self, timeout=None):
        """Wait for a guest doorbell; return whether one came (counts since the last wait)."""
        with self._cond:
            if not self._count:
                self._cond.wait(timeout)
            got, self._count = self._count, 0
        self.wakes += bool(got)
        return bool(got)

    def close(self):
        """Give ``on_doorbell`` back to what it was."""
        if self.host.on_doorbell == self._doorbell:
            self.host.on_doorbell = self._chained
