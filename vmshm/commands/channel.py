"""``vmshm channel``: the message channel's figures (``--bench``)."""

from rich.table import Table

from vmshm.backends import backend_names
from vmshm.benches import channel as bench
from vmshm.options import UsageError

__all__ = ["add_arguments", "run", "HELP"]

HELP = dict(
    help="measure the message channel (vmshm_channel.h): on the RTL in bytes per cycle, in a "
         "QEMU guest in messages and bytes per second",
    description="--bench prints two tables. The RTL table: --rtl-count messages of each --sizes "
                "through the channel both ways between a guest program on the simulated VMShm "
                "device (window bursts, DOORBELL, INTR_STATUS) and a host program on the object, "
                "in bytes per simulated cycle beside the datapath's limit (one data word a "
                "cycle) at each --data-width. The QEMU table: --count messages both ways between "
                "a TCG guest (QEMU's ivshmem-doorbell on vmshm's ivshmem server) and a host "
                "peer, --vmshm-count both ways between a VMShm guest (/dev/vmshm0 on the "
                "simulated RTL) and a host peer and from one VMShm guest to another, beside the "
                "floor: the same loop between two host processes over a plain shared mapping. "
                "A third table times round trips of 64-byte messages, one outstanding, on the "
                "host's clock: --rtt-count between two host processes and with the ivshmem "
                "guest, --vmshm-count with the VMShm guest.")


def add_arguments(parser):
    """Add ``--bench``, ``--count``, ``--sizes``, ``--no-guest``, ``--timeout`` and the RTL
    table's ``--no-rtl``, ``--rtl-count``, ``--data-width`` and ``--backend``."""
    parser.add_argument("--bench", action="store_true", help="measure and print the tables")
    # `vmshm channel` alone prints this help (run() has no parser of its own).
    parser.set_defaults(channel_help=parser.format_help)
    parser.add_argument("--count", type=int, default=20000, metavar="N",
                        help="messages per size and direction (default 20000)")
    parser.add_argument("--sizes", default="64,4096", metavar="N,N",
                        help="message sizes in bytes, 1..4096, comma-separated (default 64,4096)")
    parser.add_argument("--no-guest", action="store_true",
                        help="only the host floor (no QEMU boot)")
    parser.add_argument("--timeout", type=float, default=300, metavar="S",
                        help="bound on the guest's whole run in seconds (default 300)")
    parser.add_argument("--vmshm-count", type=int, default=200, metavar="N",
                        help="messages per size and direction on the VMShm guests' rows, whose "
                             "every window access is a request the simulated RTL answers "
                             "(default 200)")
    parser.add_argument("--rtt-count", type=int, default=2000, metavar="N",
                        help="round trips of 64-byte messages on the floor and with the ivshmem "
                             "guest (default 2000; the VMShm guest's are --vmshm-count)")
    parser.add_argument("--no-vmshm", action="store_true",
                        help="no VMShm guest rows (they boot one VMShm guest, then two)")
    parser.add_argument("--no-rtl", action="store_true",
                        help="no RTL table (no simulation)")
    parser.add_argument("--rtl-count", type=int, default=64, metavar="N",
                        help="messages per size and direction on the RTL (default 64; the "
                             "figures are simulated cycles, the same on every run)")
    parser.add_argument("--data-width", default="32,64", metavar="W,W",
                        help="the device's data widths for the RTL table: 32, 64 or both "
                             "(default 32,64)")
    parser.add_argument("--backend", choices=("auto", *backend_names(in_process=True)),
                        default="auto",
                        help="simulator of the RTL table: native (the Verilog compiled by "
                             "Verilator) where it runs, else amaranth (default auto)")


def _sizes(text):
    try:
        sizes = [int(s, 0) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--sizes {text!r}: comma-separated whole numbers of bytes") from None
    if not sizes or any(not 1 <= s <= 4096 for s in sizes) or len(sizes) > 12:
        raise UsageError(f"--sizes {text!r}: 1 to 12 sizes, each 1..4096 bytes")
    return sizes


def _widths(text):
    try:
        widths = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        widths = []
    if not widths or any(w not in (32, 64) for w in widths) or len(set(widths)) != len(widths):
        raise UsageError(f"--data-width {text!r}: 32, 64 or 32,64")
    return widths


def rtl_table(rows):
    """Return the RTL rows as a table: bytes per cycle beside the limit, and where cycles went."""
    table = Table(title=f"vmshm_channel on the RTL ({rows[0]['backend']} backend): "
                        f"{rows[0]['count']} messages a row, simulated cycles")
    for col in ("direction", "bits", "message bytes", "bytes/cycle", "limit", "ratio", "cycles",
                "data", "indices", "registers", "rings", "waits"):
        table.add_column(col, justify="left" if col == "direction" else "right")
    for r in rows:
        table.add_row(r["direction"], str(r["data_width"]), str(r["bytes"]),
                      f"{r['bytes_per_cycle']:.2f}", str(r["limit"]), f"{r['ratio']:.3f}",
                      str(r["cycles"]), str(r["data"]), str(r["indices"]), str(r["registers"]),
                      str(r["rings"]), str(r["waits"]))
    return table


def run(args, console):
    """Check the arguments; print the RTL table, then run the floor and the guest."""
    if not args.bench:
        # Nothing asked for: what the command can do, then why nothing ran.
        console.print(args.channel_help(), markup=False, highlight=False)
        raise UsageError("say --bench: it is the only thing `vmshm channel` does so far")
    sizes = _sizes(args.sizes)
    if not 2 <= args.count <= 10_000_000:
        raise UsageError(f"--count {args.count}: 2..10000000 messages")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: must be positive")
    widths = _widths(args.data_width)
    if not 1 <= args.rtl_count <= 1_000_000:
        raise UsageError(f"--rtl-count {args.rtl_count}: 1..1000000 messages")
    if not 1 <= args.rtt_count <= 1_000_000:
        raise UsageError(f"--rtt-count {args.rtt_count}: 1..1000000 round trips")
    if not 2 <= args.vmshm_count <= 1_000_000:
        raise UsageError(f"--vmshm-count {args.vmshm_count}: 2..1000000 messages")
    from vmshm.benches.channel_vmshm import MAX_SIZES
    vmshm_rows = not (args.no_guest or args.no_vmshm)
    if vmshm_rows and len(sizes) > MAX_SIZES:
        raise UsageError(f"--sizes: at most {MAX_SIZES} sizes with the VMShm rows (their rings "
                         f"fill the device's 1 MiB window); or --no-vmshm")
    backend = None if args.backend == "auto" else args.backend
    if not args.no_rtl:
        try:
            backend = bench.rtl_backend(backend)
        except RuntimeError as exc:
            raise UsageError(f"--backend {args.backend}: {exc}") from None
        rows = []
        for width in widths:
            rows += bench.rtl(args.rtl_count, sizes, data_width=width, backend=backend)
        console.print(rtl_table(rows))
        console.print("bytes/cycle: message bytes over the guest's cycles from its first send "
                      "or receive to its last; limit: one data word a cycle; data, indices, "
                      "registers: cycles in window bursts of records, in the ring's header "
                      "words, in BAR0 (DOORBELL, INTR_STATUS).", markup=False, highlight=False)
    rows = bench.floor(args.count, sizes) + [bench.floor_rtt(args.rtt_count)]
    spent = None
    if not args.no_guest:
        from vmshm.qemu.image import Missing
        try:
            rows += bench.guest(args.count, sizes, timeout=args.timeout,
                                rtt_count=args.rtt_count)
            if vmshm_rows:
                more, spent = _vmshm_rows(args, sizes, backend)
                rows += more
        except Missing as exc:
            console.print(f"no guest rows: {exc}", markup=False)
    if not args.no_guest:
        # Guest figures depend on the machine and its load: say which and when.
        import datetime

        from vmshm.ivshmem.load import machine
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        console.print(f"vmshm channel --bench, {now}, {machine()}", markup=False,
                      highlight=False)
    rtt = [r for r in rows if "round_trips" in r]
    rows = [r for r in rows if "round_trips" not in r]
    console.print(guest_table(rows, args.count, args.vmshm_count if spent else None))
    console.print(rtt_table(rtt))
    if spent:
        console.print(where_the_time_goes(spent), markup=False, highlight=False)
    return 0


def _vmshm_rows(args, sizes, backend):
    """Boot one VMShm guest against a host peer, then two VMShm guests; return their rows and
    where the first run's time went. The RTL is served as the RTL table's is (native where it
    runs, else amaranth; ``--backend``)."""
    from vmshm.benches import channel_vmshm
    serving = bench.rtl_backend(backend)
    rows, spent = channel_vmshm.host_rows(args.vmshm_count, sizes, backend=serving,
                                          timeout=args.timeout)
    rows += channel_vmshm.pair_rows(args.vmshm_count, sizes, backend=serving,
                                    timeout=args.timeout)
    return rows, spent


def guest_table(rows, count, vmshm_count=None):
    """Return the rows of the floor and the guests as one table, each naming what served it."""
    title = f"vmshm_channel.h: {count} messages a row"
    if vmshm_count is not None:
        title += f" ({vmshm_count} on the VMShm rows)"
    table = Table(title=f"{title}, the receiver's clock")
    for col in ("direction", "message bytes", "messages/s", "MB/s", "seconds", "served by"):
        table.add_column(col, justify="left" if col in ("direction", "served by") else "right")
    for r in rows:
        table.add_row(r["direction"], str(r["bytes"]), f"{r['messages_per_s']:,.0f}",
                      _mb(r["bytes_per_s"] / 1e6), f"{r['seconds']:.3f}",
                      r.get("served_by", "plain mapping"))
    return table


def rtt_table(rows):
    """Return the round trips as a table: median and p99 in microseconds, on the host's clock."""
    table = Table(title=f"round trips: {rows[0]['bytes']}-byte messages, one outstanding, the "
                        f"initiator's clock (the host's, unless the row says otherwise)")
    for col in ("between", "round trips", "median µs", "p99 µs", "served by"):
        table.add_column(col, justify="left" if col in ("between", "served by") else "right")
    for r in rows:
        table.add_row(r["pair"], str(r["round_trips"]), _us(r["median_us"]), _us(r["p99_us"]),
                      r["served_by"])
    return table


def _us(value):
    # Three figures: the floor's few microseconds beside the VMShm guest's thousands; "-" where
    # the clock that timed them was not trusted.
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _mb(value):
    # Three figures below 1 MB/s: the VMShm rows move a fraction of one.
    return f"{value:,.1f}" if value >= 1 else f"{value:.3g}"


def where_the_time_goes(spent):
    """Return the line that splits the VMShm guest/host run's time by the device's counters."""
    per = spent["seconds"] / spent["requests"] * 1e6 if spent["requests"] else 0.0
    share = spent["serve_seconds"] / spent["seconds"] if spent["seconds"] else 0.0
    return (f"VMShm guest <-> host run: {spent['requests']} window and register requests in "
            f"{spent['seconds']:.2f} s ({per:.1f} µs each), {spent['cycles']} simulated cycles "
            f"({spent['cycles'] / max(1, spent['requests']):.1f} a request); the device server "
            f"spent {spent['serve_seconds']:.2f} s answering them ({share:.0%}: simulation and "
            f"Python), the rest is QEMU's exits through the proxy and the guest's own work")
