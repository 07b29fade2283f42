"""Campaigns split into shards: local processes and a real Dask cluster on loopback, no mocks.

The merged report must equal the shards run one by one in this process, and a worker that dies
must cost only its shard, run once more and reported.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import require_backend
from vmshm.campaign import _Dask, _Local, merge_counts, run_shards

FUZZ = ["--backend", "native", "--transactions", "500", "--shard-size", "200", "--seed", "5"]


def _vmshm(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "vmshm.cli", *argv], capture_output=True,
                          text=True, env=env, timeout=600)


def _serial_counts():
    """The three shards of FUZZ, run one by one here: their counts and checks, summed."""
    from vmshm.fuzz.host import DEFAULT_BEHAVIOURS
    from vmshm.fuzz.run import run_fuzz
    runs = [run_fuzz(transactions=n, seed=seed, backend="native",
                     behaviours=list(DEFAULT_BEHAVIOURS))
            for seed, n in ((5, 200), (6, 200), (7, 100))]
    return (merge_counts(r["counts"] for r in runs), merge_counts(r["stats"] for r in runs))


@pytest.fixture(scope="module")
def serial():
    require_backend("native")
    return _serial_counts()


def _check_report(report, serial):
    assert [(s["seed"], s["transactions"]) for s in report["shards"]] == [(5, 200), (6, 200),
                                                                          (7, 100)]
    assert all(s["wall"] > 0 and s["error"] is None for s in report["shards"])
    assert (report["counts"], report["stats"]) == serial
    assert sum(s["transactions"] for s in report["shards"]) == report["transactions"] == 500


@pytest.mark.slow
def test_local_processes_merge_to_the_serial_counts(serial, tmp_path):
    out = tmp_path / "fuzz.json"
    r = _vmshm("fuzz", *FUZZ, "--jobs", "2", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "in 3 shards of up to 200 (seeds 5 to 7) on native, on 2 local processes" in r.stdout
    assert "mismatches 0, shards failed 0" in r.stdout
    _check_report(json.loads(out.read_text()), serial)


def test_merge_counts_takes_whatever_keys_each_has():
    assert merge_counts([{"a": 1, "b": 2}, {"b": 3, "c": 4}, {}]) == {"a": 1, "b": 5, "c": 4}


def _double_or_fail(spec):
    if spec["x"] < 0:
        raise ValueError(f"negative x {spec['x']}")
    return {"y": 2 * spec["x"]}


def _die_once(spec):
    """Kill this worker process the first time shard ``x == 1`` runs (a marker file says so)."""
    mark = Path(spec["mark"])
    if spec["x"] == 1 and not mark.exists():
        mark.write_text(str(os.getpid()))
        os._exit(3)
    time.sleep(0.2)
    return {"y": 2 * spec["x"]}


def test_a_failing_shard_is_its_own_failure():
    engine = _Local(None)
    try:
        shards = run_shards(engine, _double_or_fail, [{"x": 1}, {"x": -1}, {"x": 3}])
    finally:
        engine.close()
    assert [s["result"] for s in shards] == [{"y": 2}, None, {"y": 6}]
    assert shards[1]["error"].startswith("ValueError: negative x -1 (")
    assert not any(s["retried"] for s in shards)


def _kill_a_worker(engine, tmp_path):
    """Run four shards on ``engine``, shard 1 killing its worker once; return the shards."""
    specs = [{"x": x, "mark": str(tmp_path / "mark")} for x in range(4)]
    try:
        shards = run_shards(engine, _die_once, specs)
    finally:
        engine.close()
    assert (tmp_path / "mark").exists(), "no worker died"
    assert [s["result"] for s in shards] == [{"y": 2 * x} for x in range(4)]
    # Shard 1 ran again, elsewhere.
    assert shards[1]["retried"] and shards[1]["error"] is None
    assert not shards[1]["worker"].endswith(f":{(tmp_path / 'mark').read_text()}")
    return shards


def test_a_dead_local_worker_loses_only_its_shard(tmp_path):
    _kill_a_worker(_Local(2), tmp_path)


def _always_die(spec):
    if spec["x"] == 1:
        os._exit(3)
    return {"y": 2 * spec["x"]}


def test_a_shard_that_kills_its_worker_twice_is_an_error():
    # One process: the shards beside it only wait in the queue of the pool it breaks.
    engine = _Local(1)
    try:
        shards = run_shards(engine, _always_die, [{"x": x} for x in range(3)])
    finally:
        engine.close()
    assert shards[1]["result"] is None and shards[1]["retried"]
    assert shards[1]["error"] == "its worker died, and again where it was retried"
    assert [s["result"] for s in shards[::2]] == [{"y": 0}, {"y": 4}]


def test_without_dask_the_scheduler_says_what_to_install():
    # Dask hidden from this one process, as on a machine without the cluster extra.
    code = ("import sys; sys.modules['distributed'] = None; from vmshm.cli import main; "
            "sys.exit(main(['fuzz', '--scheduler', 'tcp://127.0.0.1:1']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert "pip install 'vmshm[cluster]'" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    assert len((r.stderr + r.stdout).strip().splitlines()) == 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real Dask cluster on loopback: a scheduler and two worker processes.

    Their scratch space is the test's, not Dask's default /tmp/dask-scratch-space, which would
    stay behind.
    """
    distributed = pytest.importorskip("distributed")
    import cloudpickle
    # The workers cannot import this test file: its shard functions travel by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    import dask
    scratch = tmp_path_factory.mktemp("dask")
    with dask.config.set({"temporary-directory": str(scratch)}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     host="127.0.0.1", dashboard_address=None,
                                     local_directory=scratch) as c:
        yield c


@pytest.mark.slow
def test_a_dask_cluster_merges_to_the_serial_counts(serial, cluster, tmp_path):
    out = tmp_path / "fuzz.json"
    r = _vmshm("fuzz", *FUZZ, "--scheduler", cluster.scheduler_address, "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"on the Dask cluster at {cluster.scheduler_address}" in r.stdout
    report = json.loads(out.read_text())
    _check_report(report, serial)
    workers = {s["worker"] for s in report["shards"]}
    assert all(w.split(":")[1] != str(os.getpid()) for w in workers), "ran in the client"


def test_a_killed_dask_worker_loses_only_its_shard(cluster, tmp_path):
    # Dask also moves the shards that were waiting on the dead worker: reported as retried too.
    _kill_a_worker(_Dask(cluster.scheduler_address), tmp_path)


def test_seed_ranges_read_as_fpga_engineers_write_them():
    from vmshm.commands.synth import parse_seeds
    assert parse_seeds("1-4") == [1, 2, 3, 4]
    assert parse_seeds("1,5,9-10,5") == [1, 5, 9, 10]
    r = _vmshm("synth", "--seeds", "4-x")
    assert r.returncode == 2 and "seeds are A-B or A,B,C, not '4-x'" in r.stderr
    r = _vmshm("synth", "--jobs", "2")
    assert r.returncode == 2 and "--jobs and --scheduler run a --seeds sweep" in r.stderr


@pytest.mark.slow
def test_a_two_seed_synth_on_the_cluster_gives_each_seeds_fmax(cluster, tmp_path):
    from vmshm.commands.synth import seed_shard
    from vmshm.fpga.synth import DEFAULT_TARGET
    from vmshm.rtl.tops import generate
    out = tmp_path / "synth.json"
    r = _vmshm("synth", "--top", "core", "--seeds", "1-2", "--scheduler",
               cluster.scheduler_address, "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out.read_text())
    assert [s["seed"] for s in report["shards"]] == [1, 2]
    # Each seed alone, here, places and routes to the same Fmax: the shards are independent.
    for s in report["shards"]:
        params = s["result"]["params"]
        alone = seed_shard({"top": "core", "params": params, "target": DEFAULT_TARGET,
                            "freq": 125.0, "seed": s["seed"],
                            "verilog": generate("core", **params)})
        assert s["result"]["fmax_mhz"] == alone["fmax_mhz"]
    clock = next(iter(report["shards"][0]["result"]["fmax_mhz"]))
    fmax = sorted(s["result"]["fmax_mhz"][clock] for s in report["shards"])
    row = next(line for line in r.stdout.splitlines() if line.startswith("│ core"))
    assert f"{fmax[0]:.1f}" in row and f"{fmax[-1]:.1f}" in row


TIMING = ["timing", "--sweep", "name-length=8:12:2", "--host-latency", "3"]


def _points(out):
    """The points of a timing.json, without what says where they ran."""
    return [{k: p[k] for k in ("value", "status", "measured", "model", "samples")}
            for p in json.loads((out / "timing.json").read_text())["points"]]


@pytest.fixture(scope="module")
def timing_serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("timing") / "serial"
    r = _vmshm(*TIMING, "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    return _points(out)


def test_timing_sweep_points_as_shards_equal_the_serial_sweep(timing_serial, tmp_path):
    out = tmp_path / "jobs"
    r = _vmshm(*TIMING, "--jobs", "2", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 points of name-length as shards on amaranth, on 2 local processes" in r.stdout
    assert _points(out) == timing_serial
    shards = json.loads((out / "timing.json").read_text())["shards"]
    assert [s["value"] for s in shards] == [8, 10, 12]
    assert all(s["wall"] > 0 and s["error"] is None and not s["retried"] for s in shards)
    assert all(s["worker"].split(":")[1] != str(os.getpid()) for s in shards)


@pytest.mark.slow
def test_timing_sweep_on_the_cluster_equals_the_serial_sweep(timing_serial, cluster, tmp_path):
    out = tmp_path / "dask"
    r = _vmshm(*TIMING, "--scheduler", cluster.scheduler_address, "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"on the Dask cluster at {cluster.scheduler_address}" in r.stdout
    assert _points(out) == timing_serial


def test_a_failed_timing_point_replays_alone(timing_serial, tmp_path, monkeypatch):
    from vmshm.commands.timing import _replay
    monkeypatch.setattr(sys, "argv", ["vmshm", *TIMING, "-j", "2", "--out", str(tmp_path)])
    line = _replay("name-length", 10)
    assert line == (f"vmshm timing --host-latency 3 --out {tmp_path} "
                    f"--sweep name-length=10:10")
    # The line runs that one point, as the sweep ran it.
    r = _vmshm(*line.split()[1:])
    assert r.returncode == 0, r.stdout + r.stderr
    assert _points(tmp_path) == [timing_serial[1]]
    r = _vmshm("timing", "--jobs", "2", "--out", str(tmp_path / "none"))
    assert r.returncode == 2 and "--jobs and --scheduler run the points of a --sweep" in r.stderr
    assert not (tmp_path / "none").exists()
