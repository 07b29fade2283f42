"""VMShm: a host-to-guest shared-memory PCI device, as RTL, simulation, host and driver models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vmshm")
except PackageNotFoundError:
    # Imported without being installed (a copied tree): the version is not known, not made up.
    __version__ = "0+unknown"

del PackageNotFoundError, version
