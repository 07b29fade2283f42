"""The transport: QEMU 7.2's multi-process PCI proxy protocol (``-device x-pci-proxy-dev,fd=N``).

QEMU sends a 16-byte header (int32 ``cmd``, 4 bytes padding, uint64 ``size``), any file
descriptors as SCM_RIGHTS with it, then ``size`` payload bytes; requests that want an answer get a
``RET`` message (cmd 1, size 8, a uint64). The protocol is QEMU-private (QEMU's
``include/hw/remote/mpqemu-link.h`` and ``hw/remote/proxy.c``); everything about it lives here,
so another transport (QEMU 10.1's vfio-user) can produce the same :class:`Request` objects.
"""

import os
import select
import socket
import struct
from dataclasses import dataclass

__all__ = ["Request", "MpqemuLink", "ProtocolError", "CMD"]

#: Message numbers (QEMU's ``MPQemuCmd``).
CMD = {"SYNC_SYSMEM": 0, "RET": 1, "PCI_CFGWRITE": 2, "PCI_CFGREAD": 3, "BAR_WRITE": 4,
       "BAR_READ": 5, "SET_IRQFD": 6, "DEVICE_RESET": 7}
_NAMES = {v: k for k, v in CMD.items()}
_HEADER = struct.Struct("<i4xQ")
_CONF = struct.Struct("<IIi")       # addr, val, len
_BAR = struct.Struct("<QQIB3x")     # addr, val, size, memory
#: Most file descriptors one message carries (SYNC_SYSMEM: one per RAM region, at most 8).
_MAX_FDS = 8
#: Largest payload QEMU sends (SYNC_SYSMEM's three arrays of 8 u64).
_MAX_PAYLOAD = 4096


class ProtocolError(RuntimeError):
    """QEMU sent something this side of the proxy does not understand."""


@dataclass
class Request:
    """One request from the guest, independent of the transport that carried it.

    ``kind`` is ``"cfg_read"``, ``"cfg_write"``, ``"mem_read"``, ``"mem_write"``, ``"io_read"``,
    ``"io_write"`` or ``"reset"``; ``"wake"`` is no request but :meth:`MpqemuLink.next`'s
    ``wake`` descriptor becoming readable first (nothing to reply). ``addr`` is a configuration
    offset or an absolute bus address, ``size`` the access in bytes, ``value`` what a write
    stores.
    """
    kind: str
    addr: int = 0
    size: int = 0
    value: int = 0


class MpqemuLink:
    """One end of the proxy's socket: :meth:`next` yields requests, :meth:`reply` answers them.

    Messages that need no device (SYNC_SYSMEM's guest-RAM fds, SET_IRQFD's eventfds) are taken
    care of here: VMShm never DMAs into guest RAM and raises no interrupt, so their descriptors
    are closed at once and nothing leaks over a boot.

    Parameters
    ----------
    sock : socket.socket
        A connected ``AF_UNIX`` stream socket whose other end QEMU holds.
    """

    def __init__(self, sock):
        self._sock = sock
        self.counts = {name: 0 for name in CMD}

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise ProtocolError(f"QEMU closed the socket in the middle of a message "
                                    f"({len(buf)} of {n} bytes)")
            buf += chunk
        return bytes(buf)

    def _recv_header(self):
        data, fds, _, _ = socket.recv_fds(self._sock, _HEADER.size, _MAX_FDS)
        if not data:
            for fd in fds:
                os.close(fd)
            return None, []
        if len(data) < _HEADER.size:
            try:
                data += self._recv_exact(_HEADER.size - len(data))
            except ProtocolError:
                for fd in fds:
                    os.close(fd)
                raise
        return _HEADER.unpack(data), fds

    def next(self, wake=None):
        """Block until the next request for the device; return it, or ``None`` at end of file.

        With ``wake`` (a file descriptor), return ``Request("wake")`` instead when it becomes
        readable while no request is waiting: a request always goes first, since a vCPU is
        blocked on it.
        """
        while True:
            if wake is not None:
                ready, _, _ = select.select([self._sock, wake], [], [])
                if self._sock not in ready:
                    return Request("wake")
            header, fds = self._recv_header()
            if header is None:
                return None
            # Nothing here keeps a descriptor: guest RAM and interrupts are not VMShm's business.
            for fd in fds:
                os.close(fd)
            cmd, size = header
            name = _NAMES.get(cmd)
            if name is None or size > _MAX_PAYLOAD:
                raise ProtocolError(f"unknown message from QEMU: cmd {cmd}, {size} bytes")
            self.counts[name] += 1
            payload = self._recv_exact(size) if size else b""
            if name in ("SYNC_SYSMEM", "SET_IRQFD"):
                continue
            if name == "DEVICE_RESET":
                return Request("reset")
            if name in ("PCI_CFGREAD", "PCI_CFGWRITE"):
                addr, val, length = _CONF.unpack(payload[:_CONF.size])
                kind = "cfg_read" if name == "PCI_CFGREAD" else "cfg_write"
                return Request(kind, addr, length, val)
            if name in ("BAR_READ", "BAR_WRITE"):
                addr, val, length, memory = _BAR.unpack(payload[:_BAR.size])
                space = "mem" if memory else "io"
                kind = f"{space}_read" if name == "BAR_READ" else f"{space}_write"
                return Request(kind, addr, length, val)
            raise ProtocolError(f"QEMU sent {name}, which a device never receives")

    def reply(self, request, value=0):
        """Send the ``RET`` that completes ``request``, carrying ``value`` (a u64)."""
        self._sock.sendall(_HEADER.pack(CMD["RET"], 8) + struct.pack("<Q", value & (2**64 - 1)))

    def close(self):
        self._sock.close()
