"""``vmshm ivshmem-server``: serve an ivshmem doorbell group, compatible with QEMU's server."""

import os
import signal
import sys

from vmshm.options import UsageError, parse_size

from vmshm.ivshmem.server import DEFAULT_SIZE, MAX_VECTORS, IvshmemServer

__all__ = ["add_arguments", "run"]


def add_arguments(parser):
    """Add the options of QEMU's ``ivshmem-server`` that this server honours."""
    parser.add_argument("-S", dest="socket", metavar="SOCKET", default="/tmp/ivshmem_socket",
                        help="the UNIX socket to listen on (default /tmp/ivshmem_socket, as "
                             "QEMU's); an existing file there is refused, never removed")
    parser.add_argument("-M", dest="name", metavar="NAME", default="ivshmem",
                        help="the POSIX shared-memory object (shm_open name), opened if it "
                             "exists, else created (default ivshmem); never unlinked")
    parser.add_argument("-l", dest="size", metavar="SIZE", default=None, type=parse_size,
                        help=f"size of an object this server creates (default "
                             f"{DEFAULT_SIZE >> 20} MiB; K/M/G suffixes); an existing object "
                             f"keeps its size: unlike QEMU's server, this one never resizes it")
    parser.add_argument("-n", dest="vectors", metavar="VECTORS", type=int, default=1,
                        help=f"eventfds (interrupt vectors) per peer, 1..{MAX_VECTORS} "
                             f"(default 1)")
    parser.add_argument("-F", dest="foreground", action="store_true",
                        help="stay in the foreground and log joins and leaves (default: "
                             "detach once listening, as QEMU's server does)")
    parser.add_argument("-v", dest="verbose", action="store_true",
                        help="log joins and leaves (in the foreground)")


def run(args, console):
    """Check every argument, open the object, listen; serve in the foreground or detached."""
    size = args.size
    if size is not None and (size <= 0 or size & (size - 1)):
        raise UsageError(f"-l {size}: the size must be a power of two (QEMU's ivshmem maps the "
                         f"object as a BAR, and aborts on any other size)")
    if not 1 <= args.vectors <= MAX_VECTORS:
        raise UsageError(f"-n {args.vectors}: vectors must be 1..{MAX_VECTORS}")
    log = None
    if args.foreground or args.verbose:
        def log(line):
            console.print(line, markup=False, highlight=False)
            console.file.flush()
    server = IvshmemServer(args.socket, args.name, size=size, vectors=args.vectors, log=log)
    what = "created" if server.created else "opened"
    console.print(f"ivshmem server: {what} {server.name} ({server.size} bytes), "
                  f"{args.vectors} vector(s) a peer, listening on {server.socket_path}",
                  markup=False, highlight=False)
    if server.size_ignored:
        console.print(f"note: {server.name} exists with {server.size} bytes; -l {args.size} "
                      f"only sizes an object this server creates, so it was left as it is",
                      markup=False, highlight=False)
    if server.size & (server.size - 1):
        console.print(f"warning: {server.name} has {server.size} bytes, not a power of two: "
                      f"QEMU's ivshmem devices cannot map it", markup=False, highlight=False)
    if not args.foreground:
        console.file.flush()
        if os.fork():
            os._exit(0)                  # the parent returns once the socket listens
        os.setsid()
        if os.fork():
            os._exit(0)
        console.print(f"ivshmem server: pid {os.getpid()}", markup=False, highlight=False)
        console.file.flush()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
    console.file.flush()
    # SIGTERM ends the server like ^C: peers are disconnected and the socket removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        server.stop()
    return 0


HELP = dict(
    help="serve an ivshmem doorbell group (QEMU's ivshmem-server protocol)",
    description="Listen on a UNIX socket and serve QEMU's ivshmem client-server protocol "
                "(docs/specs/ivshmem-spec): each client (a QEMU ivshmem-doorbell device, QEMU's "
                "ivshmem-client, or vmshm.ivshmem.IvshmemPeer) gets the protocol version, its ID, "
                "the shared-memory object NAME and the eventfds of every peer; the others hear "
                "of its joining and leaving. The object is opened with shm_open, created if "
                "missing; it is never resized or unlinked.")
