"""Fixtures shared by the test suite: POSIX shared-memory objects that tests create and remove."""

import os
from uuid import uuid4

import pytest

from vmshm.host_model import ShmRegion


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
    from vmshm.backends import backend_missing
    reason = backend_missing(backend)
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{backend} must run under CI: {reason}")
        pytest.skip(reason)
