"""Amaranth-simulator backend: the guest bus and host BFMs on the core's streams."""

from .bfm import CLOCK_PERIOD, AmaranthGuestBus, HostBFM, stream_get, stream_put, wait_cycles
from .harness import Harness, SimResult, simulate
