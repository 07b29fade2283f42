"""``vmshm channel --bench``'s VMShm rows: the channel through VMShm guests, and their doc.

The doc's sample (docs/channel.md) is checked without a boot: its table and last line are
rendered again by the command's own functions from the figures the doc shows, and must come out
as pasted; its first line must name a date and a machine. The bench itself boots four guests
(an ivshmem one, one VMShm guest, then two), one at a time but the last two: slow, in the QEMU
guests' xdist group.
"""

import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from conftest import require_qemu_parts

from vmshm.commands.channel import guest_table, rtt_table, where_the_time_goes
from vmshm.console import make_console

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "channel.md"
HEADER = re.compile(r"vmshm channel --bench, \d{4}-\d\d-\d\d \d\d:\d\d UTC, .+, \d+ CPUs, "
                    r"Linux \S+, Python \S+")
DIRECTIONS = ["host → host (floor)", "ivshmem guest → host", "host → ivshmem guest",
              "VMShm guest → host", "host → VMShm guest", "VMShm guest → VMShm guest"]
SERVED = {"host → host (floor)": r"plain mapping",
          "ivshmem guest → host": r"QEMU ivshmem-doorbell",
          "host → ivshmem guest": r"QEMU ivshmem-doorbell",
          "VMShm guest → host": r"RTL \((native|amaranth)\)",
          "host → VMShm guest": r"RTL \((native|amaranth)\)",
          "VMShm guest → VMShm guest": r"RTL \((native|amaranth)\) x2"}
PAIRS = {"host ↔ host (floor)": r"plain mapping",
         "host ↔ ivshmem guest": r"QEMU ivshmem-doorbell",
         "host ↔ VMShm guest": r"RTL \((native|amaranth)\)",
         "VMShm guest ↔ VMShm guest": r"RTL \((native|amaranth)\) x2, guest 0's clock"
                                      r"( off \(x[\d.]+ the host's\))?"}
RTT_TITLE = ("round trips: 64-byte messages, one outstanding, the initiator's clock (the host's, "
             "unless the row says otherwise)")
WHERE = re.compile(r"VMShm guest <-> host run: (?P<requests>\d+) window and register requests in "
                   r"(?P<seconds>[\d.]+) s \([\d.]+ µs each\), (?P<cycles>\d+) simulated cycles "
                   r"\([\d.]+ a request\); the device server spent (?P<serve_seconds>[\d.]+) s .*")


def _number(text):
    return None if text == "-" else float(text.replace(",", ""))


def _parse(lines):
    """Return the rows, the round trips' rows and the counters the printed tables and the last
    line show."""
    rows, rtt = [], []
    for line in lines:
        cells = [c.strip() for c in line.strip("│").split("│")]
        if line.startswith("│") and len(cells) == 6:
            rows.append({"direction": cells[0], "bytes": int(cells[1]),
                         "messages_per_s": _number(cells[2]),
                         "bytes_per_s": _number(cells[3]) * 1e6,
                         "seconds": _number(cells[4]), "served_by": cells[5]})
        elif line.startswith("│") and len(cells) == 5:
            rtt.append({"pair": cells[0], "round_trips": int(cells[1]), "bytes": 64,
                        "median_us": _number(cells[2]), "p99_us": _number(cells[3]),
                        "served_by": cells[4]})
    m = WHERE.fullmatch(lines[-1])
    spent = {k: float(v) if "." in v else int(v) for k, v in m.groupdict().items()} if m else None
    return rows, rtt, spent


def _render(rows, rtt, count, vmshm_count, spent):
    """Print the tables and the counters' line as the command does; the line's derived figures
    (µs a request, the share) come from rounded ones here, so only its shape is compared."""
    out = StringIO()
    console = make_console(file=out, width=132)
    console.print(guest_table(rows, count, vmshm_count))
    console.print(rtt_table(rtt))
    console.print(where_the_time_goes(spent), markup=False, highlight=False)
    *table, where = out.getvalue().splitlines()
    assert WHERE.fullmatch(where), where
    return table


def _doc_sample():
    m = re.search(r"^```\n\$ (vmshm channel --bench[^\n]*)\n(.*?)^```$", DOC.read_text(),
                  re.M | re.S)
    assert m, "docs/channel.md has no ```-block starting `$ vmshm channel --bench`"
    return m[1], m[2].splitlines()


def test_the_doc_shows_the_table_the_bench_prints():
    command, lines = _doc_sample()
    assert "--no-rtl" in command
    assert HEADER.fullmatch(lines[0]), lines[0]
    title = re.fullmatch(r"vmshm_channel\.h: (\d+) messages a row \((\d+) on the VMShm rows\), "
                         r"the receiver's clock", lines[1])
    assert title, lines[1]
    rows, rtt, spent = _parse(lines[1:])
    assert spent is not None, f"the sample's last line is not the counters' line: {lines[-1]}"
    # Every direction at every size, each served by what the command names.
    assert sorted({r["direction"] for r in rows}, key=DIRECTIONS.index) == DIRECTIONS
    for r in rows:
        assert re.fullmatch(SERVED[r["direction"]], r["served_by"]), r
    # The round trips: the floor, the ivshmem guest and the VMShm guest, in that order.
    assert RTT_TITLE in lines
    assert [r["pair"] for r in rtt] == list(PAIRS)
    for r in rtt:
        assert re.fullmatch(PAIRS[r["pair"]], r["served_by"]), r
        assert r["median_us"] is None or 0 < r["median_us"] <= r["p99_us"], r
    # The VMShm guests': --vmshm-count.
    assert rtt[-2]["round_trips"] == rtt[-1]["round_trips"] == int(title[2])
    # The command's own functions print those figures exactly as the doc shows them.
    assert _render(rows, rtt, int(title[1]), int(title[2]), spent) == lines[1:-1], (
        "docs/channel.md's sample is not what `vmshm channel --bench` prints: run it and paste "
        "its output")


def test_the_shape_check_catches_a_changed_table():
    _, lines = _doc_sample()
    rows, rtt, spent = _parse(lines[1:])
    assert _render(rows, rtt, 20000, 200, spent) != _render(rows[:-1], rtt, 20000, 200, spent)
    assert _render(rows, rtt, 20000, 200, spent) != _render(rows, rtt[:-1], 20000, 200, spent)
    changed = [dict(r, served_by="RTL (verilator)") for r in rows]
    assert not all(re.fullmatch(SERVED[r["direction"]], r["served_by"]) for r in changed)


def test_round_trips_on_a_guest_clock_are_checked_against_the_hosts():
    from vmshm.benches.channel_vmshm import guest_rtt_row
    ns = [2_000_000] * 98 + [3_000_000, 9_000_000]          # 0.208 s of round trips
    row = guest_rtt_row("VMShm guest ↔ VMShm guest", ns, 0.21, "RTL (native) x2")
    assert (row["round_trips"], row["median_us"], row["p99_us"]) == (100, 2000, 3000)
    assert row["served_by"] == "RTL (native) x2, guest 0's clock"
    # A guest clock running fast against the host's: the count stays, the figures go.
    fast = guest_rtt_row("VMShm guest ↔ VMShm guest", ns, 0.05, "RTL (native) x2")
    assert fast["median_us"] is None and fast["p99_us"] is None
    assert fast["served_by"] == "RTL (native) x2, guest 0's clock off (x4.16 the host's)"
    assert re.fullmatch(PAIRS["VMShm guest ↔ VMShm guest"], fast["served_by"])


pytestmark = pytest.mark.xdist_group("qemu_guests")


def test_channel_bench_has_the_vmshm_rows_beside_ivshmem_and_the_floor():
    """One run, small counts: every row of the table, data checked by both ends on the way."""
    require_qemu_parts("vmshm channel --bench")
    r = subprocess.run([sys.executable, "-m", "vmshm.cli", "channel", "--bench", "--no-rtl",
                        "--count", "500", "--vmshm-count", "20", "--rtt-count", "300",
                        "--sizes", "64,4096",
                        "--timeout", "200"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    lines = r.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if HEADER.fullmatch(ln))
    rows, rtt, spent = _parse(lines[start + 1:])
    floor, ig_h, h_ig, vg_h, h_vg, vg_vg = DIRECTIONS
    # Per size, the guest's send before its receive, as the bench runs them.
    assert [(x["direction"], x["bytes"]) for x in rows] == [
        (floor, 64), (floor, 4096), (ig_h, 64), (h_ig, 64), (ig_h, 4096), (h_ig, 4096),
        (vg_h, 64), (h_vg, 64), (vg_h, 4096), (h_vg, 4096), (vg_vg, 64), (vg_vg, 4096)], r.stdout
    for x in rows:
        assert re.fullmatch(SERVED[x["direction"]], x["served_by"]), x
        assert x["messages_per_s"] > 0
    assert "RTL (native)" in r.stdout or "RTL (amaranth)" in r.stdout
    # The counters saw the VMShm guest's window traffic: at least a request per 8 bytes moved.
    assert spent["requests"] >= 2 * 20 * (64 + 4096) // 8
    assert 0 < spent["serve_seconds"] < spent["seconds"]
    # The round trips, each echoed and checked whole: 300 on the floor and the ivshmem guest,
    # --vmshm-count on the VMShm guests. (Which is faster is the bench's to print, not a test's
    # to assert: on a loaded machine the floor's two processes lost to the ivshmem guest once.)
    assert [(x["pair"], x["round_trips"]) for x in rtt] == list(zip(PAIRS, (300, 300, 20, 20)))
    for x in rtt:
        assert re.fullmatch(PAIRS[x["pair"]], x["served_by"]), x
        assert x["median_us"] is None or 0 < x["median_us"] <= x["p99_us"]
    assert _render(rows, rtt, 500, 20, spent) == lines[start + 1:-1], "the printed shape changed"

