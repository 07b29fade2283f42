"""``vmshm channel``: the message channel's figures (``--bench``)."""

from rich.table import Table

from vmshm.options import UsageError

from . import bench

__all__ = ["add_arguments", "run", "HELP"]

HELP = dict(
    help="measure the message channel (vmshm_channel.h) in messages and bytes per second",
    description="--bench sends --count messages of each --sizes through the channel both ways "
                "between a TCG guest (QEMU's ivshmem-doorbell on vmshm's ivshmem server) and a "
                "host peer, beside the floor: the same loop between two host processes over a "
                "plain shared mapping. The figure on the RTL (bytes per simulated cycle) waits "
                "for the device's doorbell registers (issue 14).")


def add_arguments(parser):
    """Add ``--bench``, ``--count``, ``--sizes``, ``--no-guest`` and ``--timeout``."""
    parser.add_argument("--bench", action="store_true", help="measure and print the tables")
    parser.add_argument("--count", type=int, default=20000, metavar="N",
                        help="messages per size and direction (default 20000)")
    parser.add_argument("--sizes", default="64,4096", metavar="B,B",
                        help="message sizes in bytes, 1..4096, comma-separated (default 64,4096)")
    parser.add_argument("--no-guest", action="store_true",
                        help="only the host floor (no QEMU boot)")
    parser.add_argument("--timeout", type=float, default=300, metavar="S",
                        help="bound on the guest's whole run in seconds (default 300)")


def _sizes(text):
    try:
        sizes = [int(s, 0) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--sizes {text!r}: comma-separated whole numbers of bytes") from None
    if not sizes or any(not 1 <= s <= 4096 for s in sizes) or len(sizes) > 12:
        raise UsageError(f"--sizes {text!r}: 1 to 12 sizes, each 1..4096 bytes")
    return sizes


def run(args, console):
    """Check the arguments, run the floor, then the guest; print one table."""
    if not args.bench:
        raise UsageError("say --bench: it is the only thing `vmshm channel` does so far")
    sizes = _sizes(args.sizes)
    if not 2 <= args.count <= 10_000_000:
        raise UsageError(f"--count {args.count}: 2..10000000 messages")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: must be positive")
    rows = bench.floor(args.count, sizes)
    if not args.no_guest:
        from vmshm.qemu.image import Missing
        try:
            rows += bench.guest(args.count, sizes, timeout=args.timeout)
        except Missing as exc:
            console.print(f"no guest rows: {exc}", markup=False)
    table = Table(title=f"vmshm_channel.h: {args.count} messages a row, the receiver's clock")
    for col in ("direction", "message bytes", "messages/s", "MB/s", "seconds"):
        table.add_column(col, justify="left" if col == "direction" else "right")
    for r in rows:
        table.add_row(r["direction"], str(r["bytes"]), f"{r['messages_per_s']:,.0f}",
                      f"{r['bytes_per_s'] / 1e6:,.1f}", f"{r['seconds']:.3f}")
    console.print(table)
    console.print("The RTL row (bytes per simulated cycle beside one word a cycle) needs the "
                  "device's doorbell registers: issue 14's RTL round.", markup=False)
    return 0
