"""Amaranth-simulator backend: stream helpers, the StreamIO the shared BFMs run on, simulate()."""

from .bfm import CLOCK_PERIOD, AmaranthIO, stream_get, stream_put, wait_cycles
from .engine import simulate
