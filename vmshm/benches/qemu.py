"""``vmshm qemu --bench``: read latency seen from inside the guest, RTL beside a floor device.

One boot carries two proxy devices: the simulated RTL and a :class:`~.device.FloorDevice` that
answers from plain bytes over the same protocol. ``guest/vmshm_bench.c`` times 32-bit reads of
BAR0's ID register and of the window on each, one by one with ``clock_gettime``; the difference
is what simulating the RTL costs. The simulated cycles per access come from the device's log.
"""

import json
import statistics
from pathlib import Path

from rich.table import Table

from vmshm.console import escaped
from vmshm.qemu import image
from vmshm.qemu.boot import boot
from vmshm.qemu.device import FloorDevice

__all__ = ["COUNT", "run_bench"]

#: Reads timed per access kind and device.
COUNT = 10_000


def _parse(lines):
    rows = []
    for line in lines:
        parts = line.split()
        if len(parts) == 7 and parts[0] == "BENCH":
            _, dev, sub, what, base, med, p99 = parts
            rows.append({"pci": dev, "floor": int(sub, 16) == FloorDevice.SUBSYSTEM_ID,
                         "access": what, "address": int(base, 16),
                         "median_us": int(med) / 1000, "p99_us": int(p99) / 1000})
    return rows


def run_bench(args, console, parts, params, count=COUNT):
    """Boot the bench guest once, print the latency table and JSON; return the exit status."""
    try:
        initrd = image.build_image(parts, {"vmshm_bench": image.GUEST_DIR / "vmshm_bench.c"})
    except image.BuildError as exc:
        console.print(f"vmshm qemu: {exc}", style="red")
        return 1
    console.print(f"bench: {count} 32-bit reads of BAR0's ID register and of the window, on "
                  f"the simulated RTL and on a floor device (plain bytes, no simulation)")
    init = image.init_archive("vmshm_bench", [args.shm, str(count)], load_module=False)
    result = boot(parts, initrd, init, timeout=args.timeout, params=params, floor=True,
                  backend=args.backend)
    rows = _parse(result.output)
    for row in rows:
        if row["floor"]:
            row["cycles"] = None
            continue
        cyc = [a.cycles for a in result.accesses
               if a.kind == "mem_read" and a.addr == row["address"]]
        row["cycles"] = statistics.median(cyc) if cyc else None
    table = Table(title=f"read latency in the guest ({count} reads each, TCG)",
                  title_justify="left")
    for col in ("device", "access", "median µs", "p99 µs", "simulated cycles/access"):
        table.add_column(col, justify="left" if col in ("device", "access") else "right")
    for row in rows:
        table.add_row("floor (plain bytes)" if row["floor"] else f"RTL ({args.backend})",
                      "BAR0 ID register" if row["access"] == "regs" else "window offset 0",
                      f"{row['median_us']:.1f}", f"{row['p99_us']:.1f}",
                      "-" if row["cycles"] is None else f"{row['cycles']:g}")
    console.print(table)
    report = {"count": count, "backend": args.backend, "boot_seconds": result.boot_seconds,
              "rows": rows}
    if args.json:
        # The JSON goes only where it was asked for (--json, checked before booting); the
        # terminal has the table.
        Path(args.json).write_text(json.dumps(report, indent=1))
        console.print(f"report written to {escaped(args.json)}")
    errors = [ln for ln in result.output if ln.startswith("vmshm_bench:")]
    for line in errors:
        console.print(line, style="red")
    if result.error:
        console.print(f"vmshm qemu: {result.error}", style="red")
        return 1
    if len(rows) != 4 or result.status != 0:
        console.print(f"vmshm qemu: the bench did not finish (status {result.status})",
                      style="red")
        return 1
    return 0
