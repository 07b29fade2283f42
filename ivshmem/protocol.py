"""The ivshmem client-server protocol: one little-endian signed 64-bit number per message.

Each message may carry one file descriptor (SCM_RIGHTS). The server sends, in order: the protocol
version (0), the client's ID, ``-1`` with the shared memory, a peer's ID once per vector with that
peer's eventfds (a join), the client's own ID once per vector with its own eventfds (interrupt
set-up); later a peer ID without a descriptor is that peer's leave notification.
"""

import socket
import struct

__all__ = ["VERSION", "SHM_ID", "MAX_ID", "pack", "send_message", "recv_message", "Reader"]

#: The protocol version QEMU 2.5 and later speak.
VERSION = 0
#: The number that comes with the shared-memory descriptor.
SHM_ID = -1
#: IDs fit the Doorbell register's 16 bits.
MAX_ID = 0xFFFF

_MSG = struct.Struct("<q")


def pack(value):
    """Return the 8 bytes of the message ``value``."""
    return _MSG.pack(value)


def send_message(sock, value, fd=None):
    """Send one message ``value`` on ``sock``, with the descriptor ``fd`` if given."""
    data = _MSG.pack(value)
    if fd is None:
        sock.sendall(data)
    else:
        sent = socket.send_fds(sock, [data], [fd])
        if sent != len(data):
            sock.sendall(data[sent:])


def recv_message(sock):
    """Receive one message; return ``(value, fd or None)``, or ``None`` at end of stream.

    A short read is completed (the 8 bytes may arrive in parts); a descriptor rides on the first.
    """
    data, fds, _flags, _addr = socket.recv_fds(sock, _MSG.size, 4)
    if not data:
        for fd in fds:
            _close(fd)
        return None
    while len(data) < _MSG.size:
        more = sock.recv(_MSG.size - len(data))
        if not more:
            for fd in fds:
                _close(fd)
            return None
        data += more
    for extra in fds[1:]:
        _close(extra)
    return _MSG.unpack(data)[0], (fds[0] if fds else None)


class Reader:
    """Take the messages a non-blocking socket holds now, completing short reads across calls.

    Parameters
    ----------
    sock : socket.socket
        A non-blocking connected socket.

    Attributes
    ----------
    ended : bool
        Whether the stream has ended (the other side closed it).
    """

    def __init__(self, sock):
        self.sock = sock
        self.ended = False
        self._data = b""
        self._fd = None

    def read(self):
        """Return the ``(value, fd or None)`` messages that have arrived, oldest first."""
        out = []
        while not self.ended:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, _MSG.size - len(self._data),
                                                           4)
            except BlockingIOError:
                break
            except ConnectionResetError:
                data, fds = b"", []
            for extra in fds[1 if self._fd is None else 0:]:
                _close(extra)
            if fds and self._fd is None:
                self._fd = fds[0]
            if not data:
                self.ended = True
                if self._fd is not None:
                    _close(self._fd)          # a message cut short carries nothing usable
                    self._fd = None
                break
            self._data += data
            if len(self._data) == _MSG.size:
                out.append((_MSG.unpack(self._data)[0], self._fd))
                self._data, self._fd = b"", None
        return out


def _close(fd):
    import os
    try:
        os.close(fd)
    except OSError:
        pass
