"""Amaranth-simulator backend: stream helpers and the StreamIO the shared BFMs run on."""

from .bfm import CLOCK_PERIOD, AmaranthIO, stream_get, stream_put, wait_cycles
from .harness import SimResult, SimTop, simulate
