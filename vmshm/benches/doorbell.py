"""``vmshm qemu --doorbell-bench``: doorbell round trips timed in a real guest, RTL and floor.

Each row is one boot of the doorbell program (:func:`vmshm.qemu.doorbell.run_doorbell_guest`):
the simulated device with INTx, then with MSI, then the floor device with no simulation.
"""

import json
from pathlib import Path

from rich.table import Table

from vmshm.console import escaped
from vmshm.host_model import HostModel
from vmshm.qemu import image
from vmshm.qemu.device import FloorDevice
from vmshm.qemu.doorbell import doorbell_write_cycles, median, ring_cycles, run_doorbell_guest

__all__ = ["BENCH_ROUNDS", "run_bench"]

#: Round trips timed per device by ``vmshm qemu --doorbell-bench``.
BENCH_ROUNDS = 200


def run_bench(args, console, parts, params, rounds=BENCH_ROUNDS):
    """Time doorbell round trips in the guest on the RTL and on the floor; print the table.

    Three boots: the simulated device (``args.backend``) with INTx, then with MSI, then a
    :class:`~vmshm.qemu.device.FloorDevice` with the same registers and INTx, and no simulation.
    Returns the exit status.
    """
    console.print(f"doorbell bench: {rounds} round trips in the guest (ring the host through "
                  f"DOORBELL, the host rings back, the guest's read returns), on the simulated "
                  f"RTL ({args.backend}) and on a floor device (no simulation)")
    rows, status = [], 0
    for name, msi in ((f"RTL ({args.backend}), INTx", False), (f"RTL ({args.backend}), MSI", True),
                      ("floor (plain bytes), INTx", False)):
        host = floor = None
        if name.startswith("RTL"):
            host = HostModel()
        else:
            floor = FloorDevice(window_size=params.get("window_size", 1 << 20),
                                name_size=params.get("name_size", 1 << 10))
        try:
            run = run_doorbell_guest(parts, rounds=rounds, timeout=args.timeout, host=host,
                                     floor=floor, backend=args.backend, params=params, msi=msi)
        except image.BuildError as exc:
            console.print(f"vmshm qemu: {exc}", style="red")
            return 1
        finally:
            if host is not None:
                host.close_ring_fd()
        ok = run.boot.error is None and run.boot.status == 0 and run.rtt_us
        if not ok:
            status = 1
            why = run.boot.error or f"status {run.boot.status}: " + ", ".join(
                f"{k} {v}" for k, v in run.checks.items() if v != "ok")
            console.print(f"vmshm qemu: {name}: the doorbell program failed: {why}",
                          style="red", highlight=False, markup=False)
        for line in run.trouble[:5]:
            console.print(f"kernel| {line}", highlight=False, markup=False)
        sim = host is not None
        rows.append({"device": name, "rounds": rounds, **run.rtt_us,
                     "ring_to_interrupt_cycles": median(ring_cycles(run.boot.accesses)) if sim
                     else None,
                     "doorbell_write_cycles": median(doorbell_write_cycles(run.boot.accesses))
                     if sim else None})
    table = Table(title=f"doorbell round trip in the guest ({rounds} each, TCG): ioctl RING "
                        f"→ host → ring back → read returns", title_justify="left")
    for col in ("device", "min µs", "median µs", "p90 µs", "max µs",
                "host ring → interrupt (cycles)", "DOORBELL write (cycles)"):
        table.add_column(col, justify="left" if col == "device" else "right")
    for row in rows:
        table.add_row(row["device"], *(f"{row[k]:.0f}" if k in row else "-"
                                       for k in ("min", "median", "p90", "max")),
                      *("-" if row[k] is None else f"{row[k]:g}"
                        for k in ("ring_to_interrupt_cycles", "doorbell_write_cycles")))
    console.print(table)
    report = {"rounds": rounds, "backend": args.backend, "rows": rows}
    if args.json:
        # The JSON goes only where it was asked for (--json, checked before booting); the
        # terminal has the table.
        Path(args.json).write_text(json.dumps(report, indent=1))
        console.print(f"report written to {escaped(args.json)}")
    return status
