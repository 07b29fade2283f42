"""Study how long VMShm's OPEN, CLOSE and window accesses take: the model, the sweep, the outputs.

``docs/timing.md`` explains the model; this module holds it as functions (:func:`model_phases`
and the per-transaction functions it calls), runs the same transactions on a simulation backend
(:func:`run_point`, :func:`run_sweep`), splits each one into phases at the host BFM's event stamps
(:func:`split_phases`), and writes what ``vmshm timing`` prints: a per-phase table, CSV, JSON, a
PNG plot and, for one run, a VCD and WaveDrom diagrams of one OPEN and one CLOSE.

Every transaction is cut into the same phases, at the edges where beats move:

``name_write``
    OPEN only: the name and its NUL written into BAR2 (one burst, before the OPEN read).
``setup``
    From the guest offering its request to the first beat the device moved on the host side.
``request``
    The rest of the device's host-side request beats (OPEN's name bytes, a window write's data).
``host``
    From the last request beat to the host's first answer beat: the host's latency and more.
``response``
    The rest of the host's answer beats (a window read's data).
``completion``
    From the host's last answer beat to the guest taking the completion.

Nothing here imports matplotlib or wavedrom until a plot or a diagram is asked for, so the demo
and the rest of the CLI run without them.

The study is four modules, each importing only those before it (``vmshm timing`` itself is
:mod:`vmshm.commands.timing`, at the top):

- :mod:`~vmshm.timing.model`: the cycle model (:func:`model_phases`), :class:`TimingParams`,
  sweeps, and what it means for PCIe completion timeouts;
- :mod:`~vmshm.timing.runs`: the transactions on a backend (:func:`measure`, :func:`run_point`,
  :func:`run_sweep`) and the phase splitter (:func:`split_phases`);
- :mod:`~vmshm.timing.report`: the table, CSV, JSON and the PNG plot;
- :mod:`~vmshm.timing.waves`: the WaveDrom diagrams of one OPEN and one CLOSE.

Every public name is importable from ``vmshm.timing`` itself.
"""

from .model import (DEFAULT_NAME_LENGTH, OPS, OP_LABELS, PCIE_MARGIN, PCIE_RANGES, PHASES,
                    PHASE_LABELS, SWEEPABLE, Sweepable, TimingParams, close_in_time, close_phases,
                    close_timeout_cycles, model_phases, name_bytes, name_words, name_write_phases,
                    open_in_time, open_phases, open_read_cycles, open_timeout_cycles, parse_sweep,
                    pcie_flag_text, pcie_flags, read_phases, recommend_host_timeout, total,
                    write_phases, doorbell_write_cycles, doorbell_to_host_cycles,
                    ring_to_intx_cycles, ring_to_msi_cycles)
from .runs import (Point, _Objects, measure, measure_doorbells, measure_host_latency, run_point,
                   run_sweep, split_phases)
from .report import plot, rich_table, table_rows, write_outputs
from .waves import waveform_run, write_waveforms

__all__ = [
    "PHASES", "OPS", "PCIE_RANGES", "SWEEPABLE", "TimingParams", "Point",
    "name_bytes", "name_words", "name_write_phases", "open_phases", "close_phases",
    "read_phases", "write_phases", "model_phases", "total", "open_read_cycles",
    "open_in_time", "close_in_time", "open_timeout_cycles", "close_timeout_cycles",
    "pcie_flags", "pcie_flag_text", "recommend_host_timeout", "measure_host_latency",
    "parse_sweep", "measure", "split_phases", "run_point", "run_sweep", "write_outputs",
    "write_waveforms", "doorbell_write_cycles",
    "doorbell_to_host_cycles", "ring_to_intx_cycles", "ring_to_msi_cycles", "measure_doorbells",
]
