"""Random differential testing (issue 17, item 5): the device against the golden model.

CI depth: a few hundred transactions per configuration on Amaranth's simulator, and a short run on
Verilator, Icarus and native whose records must equal Amaranth's for the same seed. `vmshm fuzz
--transactions 100000` is the full depth.
"""

import contextlib
from dataclasses import asdict

import pytest

from vmshm.cli import main
from vmshm.fuzz.host import BEHAVIOURS, DEFAULT_BEHAVIOURS
from vmshm.fuzz.model import FuzzConfig
from vmshm.fuzz.run import host_timing, run_fuzz
from vmshm.host_model import HostTiming
from vmshm.abi.regmap import Status

from conftest import require_backend

#: 32-bit, a roomy name buffer (names past NAME_MAX fit) and a timeout OPEN fits in.
WIDE = FuzzConfig(data_width=32, window_size=4096, name_size=512, host_timeout=1024)
#: 64-bit with a short timeout: a long burst under a slow host takes many timeouts in all, but
#: never between two beats.
SHORT = FuzzConfig(data_width=64, window_size=1024, name_size=64, host_timeout=128)
SHORT_TIMING = HostTiming(ctl_ready=1.0, dma_ready=0.75, rsp_valid=0.5, seed=11)


def _ok(result):
    assert result["mismatch"] is None, result["mismatch"]


@pytest.fixture(scope="module")
def wide():
    return run_fuzz(transactions=700, seed=19, config=WIDE)


@pytest.fixture(scope="module")
def short():
    return run_fuzz(transactions=500, seed=2, config=SHORT, timing=SHORT_TIMING)


def test_wide_matches_the_model(wide):
    """Names, OPEN and CLOSE, the window, configuration space and resets: no mismatch."""
    _ok(wide)
    stats, counts = wide["stats"], wide["counts"]
    # Every class the issue names is reached, not only drawn.
    assert stats["ETIMEDOUT-drain"] > 0, "no OPEN or CLOSE behind a stale answer"
    assert stats["ETIMEDOUT-late"] > 0
    assert stats["host_base checks"] > 0, "no successful OPEN to check host_base after"
    assert stats["resets"] > 0
    # Function Level Resets through Device Control, some while the host held an exchange.
    assert counts["flr"] == stats["flr"] > 0 and stats["flr-in-flight"] > 0
    assert counts["name_bytes"] > 20 and counts["cfg_bad"] > 5 and counts["mem_bad"] > 5
    statuses = {r[4][0] for r in wide["records"] if r[0] == "R" and r[4] and len(r[4]) == 1}
    for code in (Status.OK, Status.ENOENT, Status.EINVAL, Status.ENAMETOOLONG, Status.EBUSY,
                 Status.ETIMEDOUT):
        assert code in statuses, f"no transaction completed with {code}"
    assert any(r[0] == "CR" and r[2] > 0 and r[3] == "UR" for r in wide["records"]), \
        "no multi-word configuration request"
    assert any(r[0] in ("R", "W") and r[3] == "UR" and r[2] > 0 for r in wide["records"]), \
        "no burst across a BAR's end"


def test_short_timeout_long_bursts(short):
    """Long window bursts under a host slower than the timeout in all, never between beats."""
    _ok(short)
    ones = (1 << 64) - 1
    long_reads = [r for r in short["records"] if r[0] == "R" and r[2] >= 48 and
                  r[3] == "SC" and any(w != ones for w in r[4])]
    assert long_reads, "no long window read came back with data"
    assert any(r[6] - r[5] > SHORT.host_timeout for r in long_reads), \
        "no long read took longer than the host timeout in all"
    assert short["stats"]["ETIMEDOUT-drain"] > 0


def test_host_faults_reached(wide):
    """Every window fault drawn by default happens, and the device matches the model through it:
    all ones, dropped extra answers, the beats taken before a stop or a request not taken in
    time, TIMEOUTS and DMA_ERROR."""
    _ok(wide)
    for fault in ("late", "never-answer", "answer-twice", "unasked", "stop-mid-packet",
                  "never-accept"):
        assert fault in DEFAULT_BEHAVIOURS or fault == "late"
        assert wide["stats"][fault] > 0, f"no window access met a host that does {fault}"
    # OPEN and CLOSE answered twice, or after an answer with a tag no request had.
    assert "ctl-extra-answers" in DEFAULT_BEHAVIOURS
    for fault in ("ctl-double", "ctl-unasked"):
        assert wide["stats"][fault] > 0, f"no OPEN or CLOSE met a host that does {fault}"
    # OPEN or CLOSE never answered or not taken for long, OPEN's name not taken past half-way;
    # resets while the host still held an exchange.
    assert {"ctl-faults", "reset-in-flight"} <= set(DEFAULT_BEHAVIOURS)
    for fault in ("ctl-never-answer", "ctl-stop-mid-name", "ctl-never-taken", "reset-in-flight"):
        assert wide["stats"][fault] > 0, f"no transaction met {fault}"


def test_same_seed_same_run(monkeypatch):
    """A seed replays exactly: the same traffic, the same host decisions, the same records."""
    import uuid

    import vmshm.fuzz.run as run
    # The same object names in both runs: a name buffer read's bytes are in the records.
    monkeypatch.setattr(run, "uuid4", lambda: uuid.UUID(int=0x5eed << 112))
    a = run_fuzz(transactions=150, seed=21, config=SHORT)
    b = run_fuzz(transactions=150, seed=21, config=SHORT)
    _ok(a)
    assert a["records"] == b["records"]
    assert a["timing"] == b["timing"] == asdict(host_timing(21))
    c = run_fuzz(transactions=150, seed=22, config=SHORT)
    assert c["records"] != a["records"]


def test_behaviours_documented():
    """Every behaviour the generator knows is listed, and those off by default say why."""
    assert {"fast", "late-ctl", "late-dma", "refuse", "reset-idle", "reset-open"} <= \
        set(DEFAULT_BEHAVIOURS)
    for b in BEHAVIOURS:
        assert b.enabled or b.needs, f"{b.name} is off without saying what it waits for"


@pytest.mark.parametrize("backend", ["verilator", "icarus"])
def test_cocotb_records_equal_amaranth(backend, monkeypatch):
    """The generated Verilog gives the same records as Amaranth's simulator for one seed."""
    require_backend(backend)
    import uuid

    import vmshm.fuzz.run as run
    # The same object names in both runs: a name buffer read's bytes are in the records.
    monkeypatch.setattr(run, "uuid4", lambda: uuid.UUID(int=0x5eed << 112))
    behaviours = [b for b in DEFAULT_BEHAVIOURS if not b.startswith("reset")]
    ref = run_fuzz(transactions=120, seed=5, config=SHORT, behaviours=behaviours)
    got = run_fuzz(transactions=120, seed=5, config=SHORT, backend=backend)
    _ok(ref)
    _ok(got)
    assert got["records"] == ref["records"]


@pytest.mark.parametrize("config,seed,n", [(SHORT, 76, 450), (WIDE, 28, 300)],
                         ids=["short-64", "wide-32"])
def test_native_records_equal_amaranth(config, seed, n, monkeypatch):
    """The native backend, its C++ host playing the host faults, draws what Amaranth draws
    (resets with nothing and with an object open, and while the host holds an exchange,
    ``host_base`` checks after OPEN, control faults) and gives Amaranth's counts and records."""
    require_backend("native")
    import uuid

    import vmshm.fuzz.run as run
    # The same object names in both runs: the name buffer's bytes are in the records.
    monkeypatch.setattr(run, "uuid4", lambda: uuid.UUID(int=0x5eed << 112))
    ref = run_fuzz(transactions=n, seed=seed, config=config)
    got = run_fuzz(transactions=n, seed=seed, config=config, backend="native")
    _ok(ref)
    _ok(got)
    assert got["behaviours"] == ref["behaviours"] == list(DEFAULT_BEHAVIOURS)
    faulted = sum(got["stats"][k] for k in ("never-answer", "answer-twice", "unasked",
                                              "stop-mid-packet"))
    assert faulted > 0 and got["stats"]["late"] > 0, got["stats"]
    assert got["stats"]["never-accept"] > 0, got["stats"]
    assert got["stats"]["ctl-double"] + got["stats"]["ctl-unasked"] > 0, got["stats"]
    assert got["stats"]["resets"] > 0 and got["stats"]["host_base checks"] > 0, got["stats"]
    # Control faults, a reset that loses a window request the host had not taken yet, and
    # Function Level Resets, idle or open and while the host holds an exchange.
    for kind in ("ctl-never-answer", "ctl-never-taken", "ctl-stop-mid-name", "reset-lost-request",
                 "flr", "flr-in-flight"):
        assert got["stats"][kind] > 0, got["stats"]
    assert got["stats"] == ref["stats"]
    assert got["counts"] == ref["counts"]
    assert got["records"] == ref["records"]


def test_native_resets_in_flight():
    """Resets while the host holds a window write it stopped taking (the write stores nothing:
    every byte is checked after), or a request it has not taken, and OPEN names the host stopped
    taking or OPEN and CLOSE it never took; FLRs that keep such a beat on offer, the access then
    taken whole (a read, or the write's last beat) or ended by the RESET: a fast native run
    reaches each, and the device matches the model through them."""
    require_backend("native")
    got = run_fuzz(transactions=5000, seed=3, config=SHORT, backend="native")
    _ok(got)
    for kind in ("reset-cut-write", "reset-lost-request", "ctl-stop-mid-name", "ctl-never-taken",
                 "flr-kept-whole", "flr-kept-cut"):
        assert got["stats"][kind] > 0, got["stats"]


def test_cli_prints_seed_counts_and_result(capsys):
    assert main(["fuzz", "-n", "60", "--seed", "4", "--data-width", "64", "--window-size",
                 "1024", "--name-size", "64", "--host-timeout", "128"]) == 0
    out = capsys.readouterr().out
    assert "seed 4, 60 transactions on amaranth" in out
    assert "transactions 60," in out and "mismatches 0" in out


def test_cli_refuses_bad_arguments(capsys, monkeypatch):
    assert main(["fuzz", "--behaviours", "fast,wedge-me"]) == 2
    assert "unknown behaviour 'wedge-me'" in capsys.readouterr().err
    # Every behaviour is drawn today; one that is not yet is refused with what it needs.
    import vmshm.commands.fuzz as cmd
    from vmshm.fuzz.host import Behaviour
    monkeypatch.setattr(cmd, "BEHAVIOURS", BEHAVIOURS + (
        Behaviour("wedge-later", "x", False, "a model of it", implemented=False),))
    assert main(["fuzz", "--behaviours", "fast,wedge-later"]) == 2
    assert "'wedge-later' is not drawn yet: it needs a model of it" in capsys.readouterr().err
    # The user's text is printed as it is, never read as console markup.
    assert main(["fuzz", "--behaviours", "[/]x"]) == 2
    assert "unknown behaviour '[/]x'" in capsys.readouterr().err
    assert main(["fuzz", "--window-size", "1000"]) == 2
    assert "window_size must be a power of two" in capsys.readouterr().err


def test_amaranth_host_takes_doorbells(monkeypatch):
    """The model's host takes every doorbell at once on Amaranth's simulator too: a seed whose
    register writes ring DOORBELL twice gives native's records (a host that never took the first
    would make the second wait the host timeout)."""
    require_backend("native")
    import uuid

    import vmshm.fuzz.run as run
    from vmshm.fuzz.host import FuzzHost
    monkeypatch.setattr(run, "uuid4", lambda: uuid.UUID(int=0x5eed << 112))
    taken = {"amaranth": 0, "native": 0}
    backend = "amaranth"
    doorbell = FuzzHost.doorbell

    def counted(self, *args):
        taken[backend] += 1
        return doorbell(self, *args)

    monkeypatch.setattr(FuzzHost, "doorbell", counted)
    ref = run_fuzz(transactions=300, seed=178, config=WIDE)
    backend = "native"
    got = run_fuzz(transactions=300, seed=178, config=WIDE, backend="native")
    _ok(ref)
    _ok(got)
    assert taken == {"amaranth": 2, "native": 2}
    assert got["records"] == ref["records"]


#: A seed whose short run draws Function Level Resets idle, with an object open and while the
#: host holds an exchange, within a few hundred transactions.
FLR_SEED = 76


@contextlib.contextmanager
def _broken_flr(monkeypatch, what):
    """Within the block, the soft function's FLR is wrong for the fuzzer's Amaranth top:
    ``"name-ram"``, the FLR leaves the name RAM alone (the core's ``flr_start`` tied to 0, with
    the deliberate breaks' :func:`~vmshm.formal.mutants.patched`); ``"no-reset"``, the core's
    first control beat after an FLR (its RESET) never reaches the host (a hold on ``ctl_req``
    that takes it without offering it)."""
    import vmshm.fuzz.run as run
    from vmshm.rtl import pci
    from amaranth.hdl import Signal

    if what == "name-ram":
        from vmshm.formal.mutants import patched
        with patched("pci", "core.flr_start.eq(flr)", "core.flr_start.eq(0)") as broken:
            monkeypatch.setattr(run, "VMShmSystem", broken.VMShmSystem)
            yield
        return

    class SwallowReset(pci.FlrHold):
        def elaborate(self, platform):
            m = super().elaborate(platform)
            eat = Signal()
            with m.If(self.flr):
                m.d.sync += eat.eq(1)
            with m.If(eat & ~self.busy):
                m.d.comb += [self.o.valid.eq(0), self.i.ready.eq(1)]
                with m.If(self.i.valid):
                    m.d.sync += eat.eq(0)
            return m

    real = pci.FlrHold
    monkeypatch.setattr(pci, "FlrHold", lambda layout: (SwallowReset if "op" in layout.members
                                                        else real)(layout))
    yield


@pytest.mark.parametrize("what", ["name-ram", "no-reset"])
def test_a_broken_flr_is_a_mismatch(what, monkeypatch):
    """The fuzzer's FLRs check what an FLR must do: the same seed that matches the model on the
    real RTL reports a mismatch where the FLR leaves the name buffer alone, or where its RESET
    never reaches the host (which keeps the object open)."""
    ok = run_fuzz(transactions=300, seed=FLR_SEED, config=SHORT)
    _ok(ok)
    assert ok["stats"]["flr"] > 0 and ok["stats"]["flr-in-flight"] > 0, ok["stats"]
    with _broken_flr(monkeypatch, what):
        broken = run_fuzz(transactions=300, seed=FLR_SEED, config=SHORT)
    assert broken["mismatch"] is not None, f"the FLR broken ({what}) went unnoticed"
