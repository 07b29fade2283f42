"""Fixtures shared by the test suite: POSIX shared-memory objects that tests create and remove."""

import os
from uuid import uuid4

import pytest

from vmshm.host_model import ShmRegion
from vmshm.host_model.scratch import remove_stale


def pytest_sessionstart(session):
    # Objects of a run killed by a timeout (SIGKILL skips every teardown): theirs to remove now.
    remove_stale()


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
        name = f"/vmshm-{tag}-{os.getpid()}-{uuid4().hex[:10]}"
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
              "test_qemu_doorbell.py", "test_vmshm_ivshmem_qemu.py"}
#: Words in a test function's name that mean it runs an external tool on generated Verilog.
SLOW_WORDS = ("verilator", "icarus", "wall_without_waivers", "bench")


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` what builds or runs Verilog, synthesizes, runs the PCIe model or boots QEMU.

    ``pytest -m "not slow"`` is then the daily subset: the RTL on Amaranth's simulator, the
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
