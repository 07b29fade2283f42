"""Campaigns: a sweep split into independent shards, run on an existing engine, merged as it goes.

A shard is a picklable call, ``fn(spec)`` with ``spec`` a dict, that returns a dict. Where it runs
is the caller's choice: in this process (one at a time, the default), ``--jobs N`` local processes
(:class:`concurrent.futures.ProcessPoolExecutor`), or ``--scheduler ADDRESS``, an existing
Dask cluster (``dask scheduler`` and ``dask worker`` on other machines; ``dask.distributed``
is the ``cluster`` extra). Nothing here schedules: the engines do.

A worker that dies loses only its shard: a broken local pool is replaced and the shards it held
are run once more; on Dask the scheduler itself moves a dead worker's shard to another worker,
and the task's story tells which shards that happened to. Either way the retry is reported.
"""

import concurrent.futures
import os
import shutil
import socket
import tempfile
import time
import traceback
from multiprocessing import get_context
from pathlib import Path

from vmshm.options import UsageError

__all__ = ["Shard", "make_engine", "run_shards", "run_with_progress", "add_engine_args",
           "merge_counts"]

#: What to install for ``--scheduler``.
INSTALL_DASK = "--scheduler needs dask.distributed: pip install 'vmshm[cluster]'"


def add_engine_args(p):
    """Add ``--jobs`` and ``--scheduler`` to the parser ``p``."""
    from vmshm.options import integer
    g = p.add_mutually_exclusive_group()
    g.add_argument("--jobs", "-j", type=integer(1), default=None, metavar="N",
                   help="run the shards in N local processes (default: one at a time, here)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the shards on the Dask cluster whose scheduler is at ADDRESS "
                        "(tcp://HOST:8786); needs the cluster extra")


class Shard(dict):
    """What one shard reports: its spec, its outcome, where and how long it ran.

    Keys: ``index``, ``spec``, ``result`` (the call's dict, or None), ``error`` (a one-line
    text, or None), ``wall`` (seconds), ``worker`` (``host:pid``) and ``retried`` (bool).
    """


def _call(fn, spec):
    """Run one shard where the engine put it; never raise, so a failure is the shard's own."""
    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        result, error = fn(spec), None
    except Exception as exc:                  # the shard failed, not the campaign
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
        result, error = None, f"{type(exc).__name__}: {exc}{where}"
    return {"result": result, "error": error, "wall": time.perf_counter() - t0,
            "worker": worker}


def _call_marked(fn, spec, mark):
    """Run :func:`_call` with the file ``mark`` present while it runs."""
    Path(mark).touch()
    out = _call(fn, spec)
    os.unlink(mark)
    return out


class _Local:
    """This process (a one-thread pool) or ``jobs`` fresh Python processes."""

    #: A dead worker's shard is submitted again here (the scheduler does it on Dask).
    resubmits = True

    def __init__(self, jobs):
        self.jobs = jobs
        self.pool = self._pool()
        # A file per running shard: when a process dies the whole pool breaks, and these say
        # which shards were running (one killed it) and which only waited in its queue.
        self.marks = tempfile.mkdtemp(prefix="vmshm-shards-")

    def _pool(self):
        if self.jobs is None:
            return concurrent.futures.ThreadPoolExecutor(max_workers=1)
        # spawn: a fork of a process running simulator threads may inherit a held lock.
        return concurrent.futures.ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn"))

    def submit(self, fn, spec, index):
        return self.pool.submit(_call_marked, fn, spec, os.path.join(self.marks, str(index)))

    def was_running(self, index):
        mark = Path(self.marks, str(index))
        running = mark.exists()
        mark.unlink(missing_ok=True)
        return running

    def as_completed(self, futures):
        return concurrent.futures.as_completed(futures)

    def died(self, exc):
        return isinstance(exc, concurrent.futures.process.BrokenProcessPool)

    def renew(self):
        # A dead process breaks the whole pool: the shards it held go to a new one.
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._pool()

    def retried(self, future):
        return False

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.marks, ignore_errors=True)


class _Dask:
    """An existing Dask cluster, through a client."""

    resubmits = False

    def __init__(self, address):
        try:
            import distributed
        except ImportError:
            raise UsageError(INSTALL_DASK) from None
        self.distributed = distributed
        try:
            self.client = distributed.Client(address, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise RuntimeError(f"cannot reach the Dask scheduler at {address}: {exc}") from None

    def submit(self, fn, spec, index):
        return self.client.submit(_call, fn, spec, pure=False)

    def was_running(self, index):
        return True

    def as_completed(self, futures):
        return self.distributed.as_completed(futures)

    def died(self, exc):
        # The scheduler gave up: the shard killed every worker it was allowed to try
        # (distributed.scheduler.allowed-failures).
        return isinstance(exc, self.distributed.KilledWorker)

    def renew(self):
        pass

    def retried(self, future):
        # The scheduler moved the shard on when its worker died (the one it ran on, or the one
        # it was queued at): it was processing twice.
        story = self.client.story(future.key)
        return sum(1 for event in story if len(event) > 2 and event[2] == "processing") > 1

    def close(self):
        self.client.close()


def make_engine(jobs=None, scheduler=None):
    """Return the engine ``--jobs``/``--scheduler`` ask for (close it when done)."""
    return _Dask(scheduler) if scheduler else _Local(jobs)


def run_shards(engine, fn, specs, *, progress=None):
    """Run ``fn(spec)`` for every spec on ``engine``; return the shards in spec order.

    ``progress(shard)`` is called as each one comes back. A shard whose worker died is run
    once more (``retried``); if it dies again, its ``error`` says so.
    """
    shards = [Shard(index=i, spec=spec, result=None, error=None, wall=0.0, worker=None,
                    retried=False) for i, spec in enumerate(specs)]
    pending = {engine.submit(fn, spec, i): i for i, spec in enumerate(specs)}
    while pending:
        lost, waiting = [], []
        for future in engine.as_completed(list(pending)):
            i = pending.pop(future)
            try:
                shards[i].update(future.result())
                shards[i]["retried"] = shards[i]["retried"] or engine.retried(future)
            except Exception as exc:
                if not engine.died(exc):
                    raise
                if not engine.was_running(i):
                    waiting.append(i)         # queued in a pool another shard broke
                    continue
                if shards[i]["retried"] or not engine.resubmits:
                    shards[i]["error"] = "its worker died, and again where it was retried"
                else:
                    lost.append(i)
                    continue
            if progress:
                progress(shards[i])
        if lost or waiting:
            engine.renew()
            for i in lost:
                shards[i]["retried"] = True
            for i in lost + waiting:
                pending[engine.submit(fn, specs[i], i)] = i
    return shards


def run_with_progress(engine, fn, specs, console, what):
    """Run :func:`run_shards` under a progress bar of ``what`` on ``console``; close ``engine``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn
    try:
        with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task(what, total=len(specs))
            return run_shards(engine, fn, specs, progress=lambda s: progress.advance(task))
    finally:
        engine.close()


def merge_counts(dicts):
    """Return the sum of dicts of counts, key by key, whatever keys each has."""
    out = {}
    for d in dicts:
        for key, value in d.items():
            out[key] = out.get(key, 0) + value
    return dict(sorted(out.items()))
