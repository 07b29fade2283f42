"""``vmshm ivshmem-server``: serve an ivshmem doorbell group, compatible with QEMU's server;
``--bench`` measures one under load (:mod:`.load`) and prints :data:`BENCH_LINES`."""

import os
import re
import resource
import signal
import sys

from vmshm.checks import check_object_size
from vmshm.console import escaped
from vmshm.options import UsageError, integer, parse_size

from .server import DEFAULT_SIZE, MAX_VECTORS, QUEUE_LIMIT, STALL_TIMEOUT, IvshmemServer

__all__ = ["add_arguments", "run", "render_bench", "BENCH_LINES"]


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
    parser.add_argument("--bench", action="store_true",
                        help="instead of serving, measure a server under load on a private "
                             "socket and object: peers join, one in ten stops reading, the rest "
                             "ring each other; print join latency, rings/s, how soon the silent "
                             "peers are disconnected and the server's memory")
    parser.add_argument("--peers", type=integer(3), default=None, metavar="N",
                        help="peers in the --bench group, 3..4096 (default 256)")


#: What ``--bench`` prints, line by line: ``{field}`` is a figure of :func:`.load.measure`.
BENCH_LINES = (
    "vmshm ivshmem-server --bench, {date}, {machine}",
    "peers                {peers} joined ({reading} reading, {slow} stopped reading), then "
    "{churn} joined and left one by one during the storm",
    "join latency         p50 {join_p50_ms:.1f} ms, p99 {join_p99_ms:.1f} ms, max "
    "{join_max_ms:.1f} ms ({joins} joins, connect to the last eventfd of the set-up)",
    "rings delivered      {delivered} of {rings} ({exact} of {reading} reading peers got exactly "
    "the {fanout} x {rounds} rings sent to them)",
    "rings/s delivered    {rings_per_s:.0f} over the {storm_s:.2f} s storm",
    "slow peers           {disconnected} of {slow} disconnected, the last {slow_gone_max_s:.2f} s "
    "after they stopped reading (bound: the {churn_s:.2f} s churn that fills their socket "
    "buffers + {stall_timeout:g} s); {wrongly} reading peers disconnected",
    "server RSS           {rss_start_mib:.1f} MiB listening, {rss_joined_mib:.1f} MiB with "
    "{peers} peers, {rss_end_mib:.1f} MiB after the storm, peak {rss_peak_mib:.1f} MiB",
    "wall time            {wall_s:.1f} s",
)


def render_bench(figures):
    """Return ``--bench``'s output for `figures` (a dict from :func:`.load.measure`)."""
    return "\n".join(line.format(**figures) for line in BENCH_LINES)


def bench_pattern():
    """Return a regular expression that matches what :func:`render_bench` prints, any figures
    (each printed as its format says: ``.2f`` two decimals, no format a whole number)."""
    def field(name, spec):
        if name in ("date", "machine"):
            return r".+"
        decimals = re.fullmatch(r"\.(\d+)f", spec)
        if decimals:
            n = int(decimals.group(1))
            return r"-?[0-9]+" + (rf"\.[0-9]{{{n}}}" if n else "")
        return r"-?[0-9]+(?:\.[0-9]+)?" if spec == "g" else r"-?[0-9]+"

    def line(template):
        out, pos = [], 0
        for m in re.finditer(r"\{(\w+)(?::([^}]*))?\}", template):
            out += [re.escape(template[pos:m.start()]), field(m.group(1), m.group(2) or "")]
            pos = m.end()
        return "".join(out) + re.escape(template[pos:])
    return "\n".join(line(t) for t in BENCH_LINES)


def _bench(args, console):
    from .load import measure
    peers = 256 if args.peers is None else args.peers
    if peers > 4096:
        raise UsageError(f"--peers {peers}: at most 4096 (this process holds a socket and "
                         f"eventfds for each)")
    console.print(f"measuring: {peers} peers join, one in ten stops reading, the rest ring "
                  f"each other while more join and leave (a peer that reads nothing for "
                  f"{STALL_TIMEOUT:g} s with its socket buffer full, or lets {QUEUE_LIMIT} "
                  f"messages pile up beyond it, is disconnected)", markup=False, highlight=False)
    console.file.flush()
    console.print(render_bench(measure(peers=peers)), markup=False, highlight=False)
    return 0


def run(args, console):
    """Check every argument, open the object, listen; serve in the foreground or detached."""
    if args.bench:
        return _bench(args, console)
    if args.peers is not None:
        raise UsageError("--peers goes with --bench")
    size = args.size
    if size is not None:
        check_object_size(size, "-l")
    if size is not None and size & (size - 1):
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
    name, path = escaped(server.name), escaped(server.socket_path)
    console.print(f"ivshmem server: {what} {name} ({server.size} bytes), "
                  f"{args.vectors} vector(s) a peer, listening on {path}",
                  markup=False, highlight=False)
    if server.size_ignored:
        console.print(f"note: {name} exists with {server.size} bytes; -l {args.size} "
                      f"only sizes an object this server creates, so it was left as it is",
                      markup=False, highlight=False)
    if server.size & (server.size - 1):
        console.print(f"warning: {name} has {server.size} bytes, not a power of two: "
                      f"QEMU's ivshmem devices cannot map it", markup=False, highlight=False)
    # Each peer costs 1 + vectors descriptors: allow as many peers as the hard limit lets.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
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
                "missing (its memory reserved at once); it is never resized or unlinked. No peer "
                "waits for another: a peer that reads nothing for "
                f"{STALL_TIMEOUT:g} s with its socket buffer full, or lets {QUEUE_LIMIT} "
                "messages pile up beyond it, is disconnected and the others are told it left. "
                "--bench measures that under load.")
