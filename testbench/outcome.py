"""The hand-off of a job's outcome from the simulator process back to the caller.

The cocotb test module fills a dict (``value``, ``records``, ``cycles``, ``error`` and what else
its bench measures) and :func:`save` pickles it; the caller's :func:`load` reads it back and
:func:`to_result` turns it into a :class:`~vmshm.harness.top.SimResult`, raising the job's own
exception as :func:`vmshm.sim.simulate` would. Every cocotb bench here shares these three.
"""

import pickle
from pathlib import Path

__all__ = ["CocotbError", "save", "load", "to_result"]


class CocotbError(RuntimeError):
    """The simulator did not run the job to the end (a crash, not a failed assertion)."""


def save(path, outcome):
    """Pickle ``outcome`` to ``path``; an unpicklable value or error is kept as its text."""
    with open(path, "wb") as f:
        try:
            pickle.dump(outcome, f)
        except Exception:
            outcome["value"] = repr(outcome["value"])
            if outcome["error"] is not None:
                outcome["error"] = RuntimeError(repr(outcome["error"]))
            f.seek(0)
            f.truncate()
            pickle.dump(outcome, f)


def load(path, sim, log):
    """Return the outcome pickled at ``path``, or raise :exc:`CocotbError` with the log's tail."""
    path, log = Path(path), Path(log)
    if not path.exists():
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        raise CocotbError(f"{sim} ended without a result; its log ends:\n{tail}")
    return pickle.loads(path.read_bytes())


def to_result(outcome, **extra):
    """Return ``outcome`` as a SimResult (``extra`` names outcome keys to attach as attributes).

    Raises the job's exception, carrying the hosts' final state (``hosts``) and the simulator
    side's traceback (``sim_traceback``).
    """
    from vmshm.harness.top import SimResult
    result = SimResult(value=outcome["value"], records=outcome["records"],
                       cycles=outcome["cycles"], events=outcome.get("events", []))
    result.hosts = outcome["hosts"]
    for attr, key in extra.items():
        setattr(result, attr, outcome.get(key))
    if outcome["error"] is not None:
        err = outcome["error"]
        if not isinstance(err, BaseException):
            err = CocotbError(str(err))
        err.sim_traceback = outcome.get("traceback")
        err.hosts = outcome["hosts"]
        raise err
    return result
