"""QEMU's ivshmem doorbell protocol on the host, and a message channel with doorbells on top.

:mod:`.protocol` holds the server-to-client messages of QEMU's ``docs/specs/ivshmem-spec``,
:mod:`.server` a compatible server (``vmshm ivshmem-server``; :mod:`.load` plays hundreds of
peers against it for ``--bench``), :mod:`.client` the host side of a
peer (:class:`IvshmemPeer`), :mod:`.bridge` a simulated device's host model as a peer
(:class:`IvshmemBridge`), and :mod:`.channel` the single-producer single-consumer ring that
``guest/vmshm_channel.h`` implements in C, byte for byte (``docs/channel.md``).
"""

from .bridge import HostDoorbell, IvshmemBridge
from .client import IvshmemPeer, ProtocolError
from .server import IvshmemServer

__all__ = ["HostDoorbell", "IvshmemBridge", "IvshmemPeer", "IvshmemServer", "ProtocolError"]
