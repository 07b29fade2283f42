"""The ``vmshm timing`` command: its arguments and :func:`run`."""

import math
from pathlib import Path

from vmshm.backends import backend_names
from vmshm.campaign import add_engine_args, make_engine, run_with_progress
from vmshm.console import escaped, note, plain_text
from vmshm.harness.checks import check_output_dir, check_output_file
from vmshm.options import add_core_args, core_args, integer

from vmshm.timing.model import (DEFAULT_NAME_LENGTH, PCIE_RANGES, SWEEPABLE, TimingParams,
                                _fmt_time, _with, parse_sweep, pcie_flags, recommend_host_timeout,
                                total)
from vmshm.timing.report import _agree, _fmt, rich_table, write_outputs
from vmshm.timing.runs import measure_host_latency, run_sweep
from vmshm.timing.waves import write_waveforms

__all__ = ["add_arguments", "run", "run_cli"]


def _probability(text):
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability must be in (0, 1], not {value}")
    return value


_count = integer(0)


def add_arguments(p):
    """Add ``vmshm timing``'s options to the argparse parser ``p``.

    First the device's build options (``--data-width``, ``--name-size``, ``--host-timeout``, ...),
    the CLI's shared set, then the study's own.
    """
    add_core_args(p)
    p.add_argument("--sweep", metavar="PARAM=START:STOP:STEP",
                   help=f"vary one parameter, stop included: {', '.join(SWEEPABLE)}")
    p.add_argument("--name-length", type=_count, default=DEFAULT_NAME_LENGTH, metavar="N",
                   help=f"bytes of the object's name without its NUL, '/' included "
                        f"(default {DEFAULT_NAME_LENGTH}, as /shared-with-qemu)")
    p.add_argument("--host-latency", type=_count, default=0, metavar="CYCLES",
                   help="cycles the host takes to answer OPEN and CLOSE (default 0)")
    p.add_argument("--dma-latency", type=_count, default=0, metavar="CYCLES",
                   help="cycles the host takes to answer a window access (default 0)")
    p.add_argument("--burst", type=_count, default=16, metavar="BEATS",
                   help="beats of the measured window read and write (default 16)")
    p.add_argument("--ready", type=_probability, metavar="P",
                   help="set --ctl-ready, --dma-ready and --rsp-valid at once")
    p.add_argument("--ctl-ready", type=_probability, metavar="P",
                   help="probability the host's ctl_req.ready is high on a cycle (default 1)")
    p.add_argument("--dma-ready", type=_probability, metavar="P",
                   help="probability the host's dma_req.ready is high on a cycle (default 1)")
    p.add_argument("--rsp-valid", type=_probability, metavar="P",
                   help="probability the host offers an answer beat on a cycle (default 1)")
    p.add_argument("--repeat", type=_count, metavar="N",
                   help="transactions averaged per point (default 1, or 64 with back-pressure)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the host's back-pressure")
    p.add_argument("--backend", choices=backend_names(), default="amaranth",
                   help="simulator (default amaranth; the cocotb ones need their runner to "
                        "pass back the host BFM's event stamps)")
    p.add_argument("--clock", type=float, metavar="MHZ",
                   help="clock frequency: adds nanoseconds, PCIe completion timeout flags and a "
                        "host_timeout recommendation")
    p.add_argument("--measure-host", type=_count, nargs="?", const=101, metavar="N",
                   help="time shm_open+fstat on this machine N times (default 101) and use "
                        "the median, in cycles at --clock, as the host latency")
    p.add_argument("--waveform", action="store_true",
                   help="single run only: also write a VCD and WaveDrom diagrams (JSON, SVG) "
                        "of one OPEN and one CLOSE")
    p.add_argument("--doorbells", action="store_true",
                   help="measure the doorbell's way out and a ring's way in (INTx, MSI) in "
                        "cycles beside the model, print them and write nothing")
    p.add_argument("--out", default="vmshm-timing", metavar="DIR",
                   help="where to write the outputs (default ./vmshm-timing)")
    add_engine_args(p)


def _report_clock(points, base, clock_hz, console):
    """Print the PCIe verdict for the slowest OPEN read and a host_timeout; return them."""
    from rich import box
    from rich.table import Table

    with_open = [pt for pt in points if "OPEN" in pt.measured]
    if not with_open:
        return {}
    worst = max(with_open, key=lambda pt: total(pt.measured["OPEN"]) -
                pt.measured["OPEN"]["name_write"])
    cycles = total(worst.measured["OPEN"]) - worst.measured["OPEN"]["name_write"]
    seconds = cycles / clock_hz
    flags = pcie_flags(seconds)
    verdict = {"ok": "ok: answered before the earliest timeout",
               "may": "may time out", "will": "times out"}
    table = Table(title=f"PCIe completion timeout ranges against the slowest OPEN read here: "
                        f"{cycles} cycles = {_fmt_time(seconds)} at {clock_hz / 1e6:g} MHz",
                  box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("range", "Device Control 2 values", "from", "to", "verdict"):
        table.add_column(col)
    for name, codes, lo, hi in PCIE_RANGES:
        table.add_row(name, codes, _fmt_time(lo), _fmt_time(hi), verdict[flags[name]])
    console.print(table)
    p = worst.params
    rec = recommend_host_timeout(clock_hz, p.name_length, p.data_width, p.host_latency)
    console.print(f"recommended: {rec['text']}.")
    now_s = (base.host_timeout + 6) / clock_hz
    if not base.host_timeout or now_s >= PCIE_RANGES[0][2]:
        console.print(note(f"host_timeout {base.host_timeout} lets the device wait "
                           f"{'for ever' if not base.host_timeout else _fmt_time(now_s)}: a root "
                           f"port in the default range may give up after 50 µs, first."))
    return {"slowest_open_read": {"cycles": cycles, "seconds": seconds, "pcie": flags},
            "recommendation": rec}


def _doorbells(args, console, core):
    # The latencies of docs/timing.md's "Doorbells and interrupts", measured and modelled.
    from rich.table import Table

    from vmshm.backends import run_function

    from vmshm.timing.model import (doorbell_to_host_cycles, doorbell_write_cycles,
                                    ring_to_intx_cycles, ring_to_msi_cycles)
    with console.status(f"measuring doorbells on {args.backend}..."):
        got = run_function("vmshm.timing.runs:measure_doorbells", backend=args.backend,
                           **core).value
    rows = (("DOORBELL write, offer to completion", "doorbell_write", doorbell_write_cycles()),
            ("DOORBELL write offered -> host takes db", "doorbell_to_host",
             doorbell_to_host_cycles()),
            ("HostModel.ring -> INTx rises", "ring_to_intx", ring_to_intx_cycles()),
            ("HostModel.ring -> MSI message taken", "ring_to_msi", ring_to_msi_cycles()))
    table = Table(title=f"doorbell latencies ({args.backend}, {core['data_width']}-bit)")
    for column in ("path", "measured cycles", "model cycles"):
        table.add_column(column)
    for label, key, model in rows:
        table.add_row(label, str(got[key]), str(model))
    console.print(table)
    return 0 if all(got[key] == model for _, key, model in rows) else 1


def run(args, console):
    """Run ``vmshm timing`` with parsed ``args`` and return the exit status."""
    return run_cli(args, console, core_args(args))


def run_cli(args, console, core):
    """Run ``vmshm timing`` with parsed ``args``; ``core`` holds the device's build parameters.

    Raises ``ValueError`` for a wrong combination of options (the CLI prints it, exit 2).
    """
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from vmshm.backends import get_backend

    sweep, values = parse_sweep(args.sweep) if args.sweep else (None, [None])
    if args.waveform and sweep:
        raise ValueError("--waveform draws a single run: leave out --sweep")
    sharded = bool(getattr(args, "jobs", None) or getattr(args, "scheduler", None))
    if sharded and (not sweep or args.doorbells):
        raise ValueError("--jobs and --scheduler run the points of a --sweep as shards")
    if args.measure_host is not None and not args.clock:
        raise ValueError("--measure-host needs --clock MHZ to turn seconds into cycles")
    if args.measure_host is not None and sweep == "host-latency":
        raise ValueError("--measure-host sets the host latency: do not sweep it as well")
    if args.repeat is not None and args.repeat < 1:
        raise ValueError(f"--repeat must be at least 1, not {args.repeat}")
    if args.clock is not None and not args.clock > 0:
        raise ValueError(f"--clock must be a positive frequency in MHz, not {args.clock}")
    reason = get_backend(args.backend).missing()
    if reason:
        raise ValueError(f"--backend {args.backend} cannot run here: {reason}")
    clock_hz = args.clock * 1e6 if args.clock else None
    if args.doorbells:
        return _doorbells(args, console, core)

    extra = {}
    host_latency = args.host_latency
    if args.measure_host is not None:
        with console.status(f"timing shm_open+fstat {args.measure_host} times..."):
            m = measure_host_latency(args.measure_host)
        host_latency = math.ceil(m["open_s"] * clock_hz)
        extra["measured_host"] = {**m, "host_latency_cycles": host_latency}
        console.print(f"this machine: shm_open+fstat median {_fmt_time(m['open_s'])}, "
                      f"close {_fmt_time(m['close_s'])} over {m['repeat']} runs: host "
                      f"latency {host_latency} cycles at {args.clock:g} MHz")

    probs = {n: (getattr(args, n) if getattr(args, n) is not None else
                 args.ready if args.ready is not None else 1.0)
             for n in ("ctl_ready", "dma_ready", "rsp_valid")}
    core = dict(core)
    data_width = core.pop("data_width")
    host_timeout = core.pop("host_timeout", None)
    base = TimingParams(name_length=args.name_length, data_width=data_width,
                        host_latency=host_latency, dma_latency=args.dma_latency,
                        burst=args.burst, host_timeout=host_timeout, core=core, **probs)
    # Check every point before the first simulation, so a bad value fails at once.
    for v in values:
        if sweep:
            _with(base, sweep, v)
    # And the output folder: made now (like mkdir -p), and written to before anything runs.
    out = Path(args.out)
    check_output_dir(out)
    check_output_file(out / "timing.json")

    if args.waveform:
        with console.status("simulating one OPEN and one CLOSE..."):
            paths, rows = write_waveforms(base, args.out, backend=args.backend, seed=args.seed)
        for r in rows:
            console.print(f"{r['op']}: cycles {r['start']} to {r['end']}: " +
                          ", ".join(f"{k} {_fmt(v)}" for k, v in r["phases"].items()))
        for kind, path in paths.items():
            console.print(f"wrote {path}" if path is not None else
                          note(f"no {kind} diagram: wavedrom is missing "
                               f"(pip install 'vmshm[timing]')"))

    failed = []
    if sharded:
        points, extra["shards"], failed = _run_shards(args, console, base, sweep, values)
    else:
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                      transient=True) as progress:
            task = progress.add_task(f"simulating on {args.backend}", total=len(values))
            points = run_sweep(base, sweep, values, backend=args.backend, repeat=args.repeat,
                               seed=args.seed, progress=lambda v: progress.advance(task))

    title = (f"VMShm timing on {args.backend}: "
             f"{'sweep of ' + SWEEPABLE[sweep].label + ', ' if sweep else ''}"
             f"{base.summary(set(SWEEPABLE[sweep].fields) if sweep else ())}")
    table = rich_table(points, sweep, clock_hz, title)
    console.print(table)
    if clock_hz:
        extra.update(_report_clock(points, base, clock_hz, console))
    paths = write_outputs(points, args.out, sweep=sweep, clock_hz=clock_hz,
                          backend=args.backend, extra=extra, table_text=plain_text(table))
    for kind in ("table", "csv", "json", "png"):
        if paths[kind] is None:
            console.print(note("no timing.png: matplotlib is missing "
                               "(pip install 'vmshm[timing]')"))
        else:
            console.print(f"wrote {paths[kind]}")
    bad = [pt for pt in points if _agree(pt) == "≠"]
    if bad:
        console.print(note(f"{len(bad)} point(s) differ from the model; see docs/timing.md "
                           f"for what it assumes"))
    for shard in failed:
        value = shard["spec"]["value"]
        console.print(f"{sweep} {value}: {escaped(shard['error'])}")
        console.print("replay: " + escaped(_replay(sweep, value)))
    return 1 if failed else 0


def _run_shards(args, console, base, sweep, values):
    """Run each point of the sweep as a shard on ``--jobs``/``--scheduler``'s engine.

    Returns the points that ran (in sweep order), each shard's record for timing.json (value,
    wall time, worker, retried, error) and the failed shards.
    """
    from vmshm.timing.runs import point_shard

    specs = [{"params": _with(base, sweep, v), "value": v, "backend": args.backend,
              "repeat": args.repeat, "seed": args.seed} for v in values]
    engine = make_engine(args.jobs, args.scheduler)
    where = (f"the Dask cluster at {args.scheduler}" if args.scheduler
             else f"{args.jobs} local processes")
    console.print(f"{len(specs)} points of {sweep} as shards on {args.backend}, on "
                  f"{escaped(where)}")
    shards = run_with_progress(engine, point_shard, specs, console,
                               f"simulating on {args.backend}")
    retried = [s for s in shards if s["retried"]]
    if retried:
        console.print("retried after their worker died: " + ", ".join(
            f"{sweep} {s['spec']['value']}" for s in retried))
    record = [{"value": s["spec"]["value"], "wall": s["wall"], "worker": s["worker"],
               "retried": s["retried"], "error": s["error"]} for s in shards]
    return ([s["result"]["point"] for s in shards if s["result"]], record,
            [s for s in shards if s["error"]])


def _replay(sweep, value):
    """The command that runs one failed point alone here: this command with that one point."""
    import shlex
    import sys

    argv, skip = [], False
    for word in sys.argv[1:]:
        if skip:
            skip = False
            continue
        name = word.partition("=")[0]
        if name in ("--sweep", "--jobs", "-j", "--scheduler"):
            skip = "=" not in word
            continue
        argv.append(word)
    return shlex.join(["vmshm", *argv, "--sweep", f"{sweep}={value}:{value}"])
