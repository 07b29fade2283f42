"""Fixtures shared by the test suite: POSIX shared-memory objects that tests create and remove.

Also what makes ``pytest -n auto`` (pytest-xdist) safe and quick: tests sharing an expensive
module- or session-scoped fixture (a booted guest, a synthesis run) go to one worker, and objects
left in /dev/shm by a run that was killed are removed.
"""

import os
import signal
from pathlib import Path

import pytest

from vmshm.host_model import ShmRegion
from vmshm.host_model.scratch import remove_stale, scratch_name


class ShmObjects:
    """Create uniquely named shared-memory objects and remove exactly those at teardown."""

    def __init__(self):
        self._regions = []

    def create(self, size, tag="scn"):
        """Create a zero-filled object of ``size`` bytes and return its name.

        Parameters
        ----------
        size : int
            Its size in bytes (sparse: a big object costs only the pages touched).
        tag : str
            A word in the name, so a leftover object says which test made it.
        """
        name = scratch_name(tag, digits=10)
        self._regions.append(ShmRegion.create(name, size, reserve=False))
        return name

    def cleanup(self):
        # Only objects this fixture created are unlinked; the model and scenarios never unlink.
        for region in self._regions:
            try:
                region.unlink()
            except FileNotFoundError:
                pass
            finally:
                region.close()
        self._regions.clear()


@pytest.fixture
def shm_objects():
    """Yield a :class:`ShmObjects`; every object it created is unlinked afterwards."""
    objects = ShmObjects()
    yield objects
    objects.cleanup()


def require_backend(backend):
    """Skip a test whose simulator is missing here, with the reason; under CI, fail instead.

    CI (``CI=true``) installs every simulator, so a missing one there is a broken set-up, not
    something to step around.
    """
    from vmshm.backends import get_backend
    reason = get_backend(backend).missing()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{backend} must run under CI: {reason}")
        pytest.skip(reason)


def require_qemu_parts(what="vmshm qemu"):
    """Return the guest's parts (:func:`vmshm.qemu.image.find_parts`), or skip saying what to
    install; under CI, fail instead."""
    from vmshm.qemu.image import Missing, find_parts
    try:
        return find_parts()
    except Missing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{what} must run under CI: {exc}")
        pytest.skip(str(exc))


#: Test files that are slow as a whole: the PCIe model (cocotbext-pcie, hundreds of TLPs), the
#: FPGA flow (synthesis, place and route) and a Linux guest booted in QEMU.
SLOW_FILES = {"test_pcie.py", "test_fpga.py", "test_qemu.py", "test_ivshmem_qemu.py",
              "test_qemu_doorbell.py", "test_vmshm_ivshmem_qemu.py",
              "test_qemu_guests.py"}
#: Words in a test function's name that mean it runs an external tool on generated Verilog.
SLOW_WORDS = ("verilator", "icarus", "wall_without_waivers", "bench")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` what builds or runs Verilog, synthesizes, runs the PCIe model or boots QEMU.

    Then tests that share an expensive fixture are grouped for xdist (:func:`_group_shared_fixtures`);
    first, so xdist's own hook sees the groups. ``pytest -m "not slow"`` is then the daily subset: the RTL on Amaranth's simulator, the
    models, the CLI and the fault catalogue. A test parametrized with a backend that simulates
    in another process (cocotb's ``"verilator"``, ``"icarus"``) is slow on that backend only.
    """
    from vmshm.backends import backend_names
    elsewhere = backend_names(in_process=False)
    slow = pytest.mark.slow
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (item.path.name in SLOW_FILES
                or any(word in item.originalname for word in SLOW_WORDS)
                or any(v in elsewhere for v in params.values() if isinstance(v, str))):
            item.add_marker(slow)
    # The slow tests first (a stable sort: each kind keeps its order): xdist hands out tests in
    # this order (after the groups, largest first), so the short ones come last and fill the
    # workers' ends instead of a long test holding one worker while the other waits.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    _group_shared_fixtures(items)


def _group_shared_fixtures(items):
    """Put the tests that share a module- or session-scoped fixture of a test file in one group.

    Under ``--dist loadgroup`` (what ``-n`` means here: :func:`pytest_cmdline_main`) a group runs on one worker, so a guest is
    booted, or a design synthesized, once per session rather than once per worker. A fixture
    parametrized per session (the doorbell guest's INTx and MSI) makes a group per parameter,
    which may run on two workers at once.
    """
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group"):
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        for name in sorted(info.name2fixturedefs):
            fixturedef = info.name2fixturedefs[name][-1]
            if (fixturedef.scope in ("module", "session")
                    and Path(fixturedef.func.__code__.co_filename).name.startswith("test_")):
                group = f"{fixturedef.baseid}::{name}"
                if name in params:
                    # xdist reads a name ending in "]" as no group at all (a parametrized
                    # test's id), and "@" ends the test's id: such values go by index.
                    value = params[name]
                    plain = isinstance(value, (str, int)) and not set(str(value)) & set("[]@")
                    group += f"={value if plain else item.callspec.indices[name]}"
                item.add_marker(pytest.mark.xdist_group(group))
                break


def _interrupt_on_sigterm():
    """Turn SIGTERM (``timeout``, CI cancelling a job) into KeyboardInterrupt in this process.

    pytest then runs every fixture's teardown, so the objects a test made are removed; by
    default SIGTERM ends the process at once and leaves them in /dev/shm. A child forked from
    here (multiprocessing) gets the default back, so its own ending is unchanged.
    """
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config):
    # `-n N` alone distributes with loadgroup, so the groups above hold: a wrapper, to come
    # before xdist's own hook, which would make it "load". A worker parses the bare command
    # line again, so it learns it from its workerinput (pytest_configure_node). Not in
    # addopts: without -n, pytest-benchmark would take --dist for xdist at work.
    if getattr(config.option, "numprocesses", None) and config.option.dist == "no":
        config.option.dist = "loadgroup"
    if getattr(config, "workerinput", {}).get("vmshm_loadgroup"):
        config.option.loadgroup = True
    return (yield)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Tell an xdist worker whether tests are distributed by group."""
    node.workerinput["vmshm_loadgroup"] = node.config.option.dist == "loadgroup"


def pytest_configure(config):
    _interrupt_on_sigterm()
    # CI's log lists the slowest tests (.ci/run sets VMSHM_DURATIONS), so the suite's time can be
    # followed from run to run; taken out of the environment here, so the pytest runs that tests
    # start themselves print nothing extra.
    durations = os.environ.pop("VMSHM_DURATIONS", "")
    if durations.isdigit() and not hasattr(config, "workerinput"):
        config.option.durations = int(durations)


def pytest_sessionstart(session):
    # Once per run, in the controller (an xdist worker has workerinput): the objects of a run
    # killed without warning (SIGKILL skips every teardown) are removed now.
    if not hasattr(session.config, "workerinput"):
        remove_stale()


def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        remove_stale()
