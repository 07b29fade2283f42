"""The host's side of VMShm: open an object by name and serve the device's window accesses.

:class:`HostModel` is what the host does, with no notion of clocks; simulation back ends (bus
functional models) call it and add the cycles and back-pressure described by :class:`HostTiming`.
"""

import errno
import logging
import os
import random
import threading
from collections import deque
from dataclasses import dataclass

from vmshm.abi.regmap import Status

from .faults import Fault, HostFaults
from .names import name_problem
from .shm import RegionError, ShmRegion

__all__ = ["HostModel", "HostTiming", "HostStalls"]


@dataclass
class HostTiming:
    """Describe how quickly and how reliably a simulated host answers the device.

    Attributes
    ----------
    ctl_latency : int
        Cycles between the end of a control request (OPEN, CLOSE) and the host's answer.
    dma_latency : int
        Cycles between a DMA request and its first response beat.
    ctl_ready : float
        Probability that the host's control-channel ready is high on a given cycle; below 1 it
        applies back-pressure.
    dma_ready : float
        Probability that the host's DMA request ready is high on a given cycle.
    rsp_valid : float
        Probability that the host offers a response beat on a given cycle.
    seed : int
        Seed of the pseudo-random draws, so a run can be repeated exactly.
    faults : HostFaults, optional
        How the host misbehaves (:mod:`vmshm.host_model.faults`); None for a host that does not.
    """

    ctl_latency: int = 0
    dma_latency: int = 0
    ctl_ready: float = 1.0
    dma_ready: float = 1.0
    rsp_valid: float = 1.0
    seed: int = 0
    faults: HostFaults = None

    def __post_init__(self):
        if isinstance(self.faults, dict):
            # dataclasses.asdict() of a HostTiming, as a cocotb job carries it: rebuild.
            self.faults = HostFaults(tuple(Fault(**f) for f in self.faults["faults"]))
        if self.faults is not None and not isinstance(self.faults, HostFaults):
            raise ValueError(f"HostTiming.faults must be a HostFaults, not "
                             f"{type(self.faults).__name__} ({self.faults!r})")
        for name in ("ctl_latency", "dma_latency", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"HostTiming.{name} must be an int, not "
                                 f"{type(value).__name__} ({value!r})")
            if name != "seed" and value < 0:
                raise ValueError(f"HostTiming.{name} must be a non-negative number of cycles, "
                                 f"not {value}")
        for name in ("ctl_ready", "dma_ready", "rsp_valid"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"HostTiming.{name} must be a probability (a float), not "
                                 f"{type(value).__name__} ({value!r})")
            # 0 would stall the handshake forever, so it is refused rather than simulated.
            if not 0.0 < value <= 1.0:
                raise ValueError(f"HostTiming.{name} must be a probability in (0, 1], not "
                                 f"{value!r}")

    def stalls(self):
        """Return a fresh :class:`HostStalls` drawing this timing's handshakes from `seed`."""
        return HostStalls(self)


class HostStalls:
    """Draw, cycle by cycle, whether the host's handshake signals are asserted.

    Each channel has its own pseudo-random stream derived from ``timing.seed``, so how often one
    channel is drawn does not change what another one sees, and equal seeds give equal runs.
    Every call consumes one draw even at probability 1, which keeps the streams aligned when a
    probability is changed.

    Parameters
    ----------
    timing : HostTiming
        Probabilities and seed.
    """

    def __init__(self, timing):
        self.timing = timing
        # String seeds are hashed with SHA-512, so they do not depend on PYTHONHASHSEED.
        self._rng = {ch: random.Random(f"vmshm:{timing.seed}:{ch}")
                     for ch in ("ctl_ready", "dma_ready", "rsp_valid")}

    def _draw(self, channel):
        return self._rng[channel].random() < getattr(self.timing, channel)

    def ctl_ready(self):
        """Return whether the control channel's ready is high this cycle."""
        return self._draw("ctl_ready")

    def dma_ready(self):
        """Return whether the DMA request channel's ready is high this cycle."""
        return self._draw("dma_ready")

    def rsp_valid(self):
        """Return whether a response beat is offered this cycle."""
        return self._draw("rsp_valid")


def _show(name):
    """Return `name` (bytes) as a quoted string for messages, escaping undecodable bytes."""
    return repr(name.decode("utf-8", errors="backslashreplace"))


class HostModel:
    """Act as the host: open shared-memory objects by name and serve the device's DMA.

    At most one object is open at a time. The model never creates and never unlinks objects:
    they belong to whoever made them and outlive the simulation.

    Parameters
    ----------
    timing : HostTiming, optional
        Timing for simulation back ends to apply; the model itself ignores it.
    log : callable or logging.Logger, optional
        Receives one human-readable line per OPEN and CLOSE.

    Attributes
    ----------
    timing : HostTiming
        The timing given, or the default (no delay, no back-pressure).
    last_error : str or None
        Why the last :meth:`open` failed, for people; ``None`` after a successful one.
    dma_errors : int
        DMA reads and writes the host refused since the model was made (nothing open, past
        the object's end, or the object could not be stored): each was an error answer.
    last_dma_error : str or None
        Why the last one was refused, for people.
    peer_id : int or None
        This device's peer ID in its ivshmem group (0 to 65535), what IVPOSITION reads; None
        while it has none (IVPOSITION reads 0xffffffff). Backends drive the host port's
        ``peer_valid``/``peer_id`` from it when they next run the clock.
    doorbells : list of (int, int)
        ``(peer, vector)`` of every doorbell the device rang (a guest's DOORBELL write), in order.
    on_doorbell : callable or None
        Called as ``on_doorbell(peer, vector)`` for each doorbell, after it is recorded.
    """

    def __init__(self, timing=None, *, log=None):
        self.timing = HostTiming() if timing is None else timing
        if not isinstance(self.timing, HostTiming):
            raise TypeError(f"timing must be a HostTiming, not {type(timing).__name__}")
        if isinstance(log, logging.Logger):
            log = log.info
        if log is not None and not callable(log):
            raise TypeError(f"log must be callable or a logging.Logger, not {log!r}")
        self._log = log
        self._region = None
        self.last_error = None
        self.dma_errors = 0
        self.last_dma_error = None
        self.peer_id = None
        self.doorbells = []
        self.on_doorbell = None
        # Rings may come from another thread (a server's peer connection); the lock covers the
        # queue and the eventfd together, so a reader never sees one without the other.
        self._rings = deque()
        self._ring_lock = threading.Lock()
        self._ring_fd = None

    # -- doorbells -----------------------------------------------------------------------------

    def doorbell(self, peer, vector):
        """Take a doorbell the device rang: record ``(peer, vector)`` and call :attr:`on_doorbell`.

        Backends call it for each beat they take from the host port's ``db``.
        """
        self.doorbells.append((int(peer), int(vector)))
        if self.on_doorbell is not None:
            self.on_doorbell(int(peer), int(vector))

    def ring(self, vector):
        """Queue a ring of the device's ``vector``; thread-safe.

        Backends deliver queued rings on the host port's ``ring`` (one a cycle) when they next
        run the clock. A vector of 32 or more reaches the device, which ignores it.

        Raises
        ------
        ValueError
            ``vector`` is not an integer from 0 to 65535 (the port's width).
        """
        if isinstance(vector, bool) or not isinstance(vector, int) or not 0 <= vector < 1 << 16:
            raise ValueError(f"vector must be an integer from 0 to 65535, not {vector!r}")
        with self._ring_lock:
            self._rings.append(vector)
            if self._ring_fd is not None:
                os.eventfd_write(self._ring_fd, 1)

    def pending_rings(self):
        """Return whether rings are queued that no backend has taken yet."""
        return bool(self._rings)

    def take_rings(self):
        """Return the queued rings, oldest first, and forget them: a backend's call.

        :attr:`ring_fd` reads as not ready again afterwards.
        """
        with self._ring_lock:
            rings = list(self._rings)
            self._rings.clear()
            if self._ring_fd is not None and rings:
                try:
                    os.eventfd_read(self._ring_fd)
                except BlockingIOError:
                    pass
        return rings

    @property
    def ring_fd(self):
        """int: An eventfd that is readable while rings are queued (made at the first use).

        A server that blocks between guest requests selects on it, then runs the clock so the
        rings are delivered. The model owns it: :meth:`close_ring_fd` closes it.
        """
        with self._ring_lock:
            if self._ring_fd is None:
                self._ring_fd = os.eventfd(len(self._rings),
                                           os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            return self._ring_fd

    def close_ring_fd(self):
        """Close :attr:`ring_fd` if it was made; a later use makes a new one."""
        with self._ring_lock:
            if self._ring_fd is not None:
                os.close(self._ring_fd)
                self._ring_fd = None

    def __getstate__(self):
        # A host crosses to a simulator process as its settings; a lock and an fd do not.
        state = dict(self.__dict__)
        state["_ring_lock"] = None
        state["_ring_fd"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._ring_lock = threading.Lock()

    @property
    def is_open(self):
        """bool: Whether an object is open."""
        return self._region is not None

    @property
    def region(self):
        """ShmRegion or None: The open object's region."""
        return self._region

    def _say(self, text):
        if self._log is not None:
            self._log(text)

    def _fail(self, status, reason):
        self.last_error = reason
        self._say(f"host: OPEN failed: {errno.errorcode.get(status, status)}: {reason}")
        return status, 0

    def open(self, name):
        """Open the object named by the bytes the device streamed out of its name buffer.

        Parameters
        ----------
        name : bytes
            The buffer's bytes up to and including the first NUL, or the whole buffer if it
            holds none. Anything after the first NUL is ignored.

        Returns
        -------
        status : int
            0, or a :class:`~vmshm.abi.regmap.Status` errno: ``ENAMETOOLONG`` (no NUL, or longer
            than ``NAME_MAX`` after the ``/``), ``EINVAL`` (empty, no leading ``/``, another
            ``/``, just ``/``, ``/.`` or ``/..``, or an empty object), ``EBUSY`` (an object is
            already open), ``ENOENT``, ``EACCES``, or ``EIO`` for any other failure.
            :attr:`last_error` says why.
        size : int
            The object's size in bytes on success, else 0.
        """
        if not isinstance(name, (bytes, bytearray, memoryview)):
            raise TypeError(f"open() takes the name buffer's bytes, not "
                            f"{type(name).__name__} ({name!r})")
        raw = bytes(name)
        self.last_error = None
        if self._region is not None:
            return self._fail(Status.EBUSY, f"{self._region.name!r} is already open; CLOSE it "
                              f"before opening another object")
        nul = raw.find(b"\0")
        if nul < 0:
            return self._fail(Status.ENAMETOOLONG, f"the name buffer's {len(raw)} bytes hold no "
                              f"NUL, so the name has no end")
        raw = raw[:nul]
        problem = name_problem(raw)
        if problem is not None:
            return self._fail(*problem)
        shown = _show(raw)
        try:
            region = ShmRegion.attach(raw)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return self._fail(Status.ENOENT,
                                  f"no shared-memory object named {shown} on this host")
            if exc.errno == errno.EACCES:
                return self._fail(Status.EACCES, f"the shared-memory object {shown} may not be "
                                  f"opened for reading and writing by this user")
            return self._fail(Status.EIO, f"cannot open the shared-memory object {shown}: "
                              f"{exc.strerror or exc}")
        except (ValueError, TypeError) as exc:
            return self._fail(Status.EIO, f"cannot open the shared-memory object {shown}: {exc}")
        if region.size == 0:
            region.close()
            return self._fail(Status.EINVAL, f"the shared-memory object {shown} is empty "
                              f"(0 bytes), so there is nothing to map")
        self._region = region
        self._say(f"host: OPEN {shown}: {region.size} bytes")
        return Status.OK, region.size

    def state(self):
        """Return what a caller may ask of this host after a run, as plain data.

        ``is_open``, ``last_error``, ``dma_errors``, ``last_dma_error``, ``doorbells`` and
        ``ops`` (the requests a subclass that counts them saw, else empty): picklable, so it
        crosses from a simulator process back to the caller.
        """
        return {"is_open": self.is_open, "last_error": self.last_error,
                "dma_errors": self.dma_errors, "last_dma_error": self.last_dma_error,
                "ops": list(getattr(self, "ops", [])), "doorbells": list(self.doorbells)}

    def close(self):
        """Release the open object, if any, without unlinking it.

        Returns
        -------
        int
            Always 0 (``Status.OK``), also when nothing was open.
        """
        region, self._region = self._region, None
        if region is not None:
            region.close()
            self._say(f"host: CLOSE {region.name!r}")
        return Status.OK

    def reset(self):
        """Forget everything the device asked before it was reset: release the open object.

        Called when the device says it was reset (a RESET on the control channel). Like
        :meth:`close`, never unlinks; unlike it, it is not a request of the guest.
        """
        region, self._region = self._region, None
        if region is not None:
            region.close()
            self._say(f"host: RESET released {region.name!r}")

    def _clip(self, offset, n):
        """Return the end of the real bytes of ``[offset, offset + n)``, or None if refused."""
        region = self._region
        if region is None or offset < 0 or n < 0 or offset >= region.size:
            return None
        end = min(offset + n, region.size)
        try:
            current = region.current_size()
        except OSError:
            return None
        # The object shrank under us: touching the vanished part would raise SIGBUS.
        if end > current:
            return None
        return end

    def _why_clipped(self):
        if self._region is None:
            return "nothing is open"
        return (f"past the end of the object ({self._region.size} bytes at OPEN, "
                f"{self._current_or_gone()} now)")

    def _current_or_gone(self):
        try:
            return self._region.current_size()
        except OSError:
            return "unknown"

    def _refuse(self, what, offset, n, why):
        self.dma_errors += 1
        self.last_dma_error = f"DMA {what} of {n} bytes at {offset:#x} refused: {why}"
        self._say(f"host: {self.last_dma_error}")

    def dma_read(self, offset, n):
        """Read `n` bytes of the open object at `offset` for the device; never raise.

        Parameters
        ----------
        offset : int
            Byte offset into the object.
        n : int
            Number of bytes.

        Returns
        -------
        data : bytes
            `n` bytes. Bytes past the object's end read as 0xff; everything does when refused.
        ok : bool
            False if nothing is open, `offset` is at or past the object's end, or another
            process shrank the object below the bytes requested.
        """
        end = self._clip(offset, n)
        if end is None:
            self._refuse("read", offset, n, self._why_clipped())
            return b"\xff" * max(n, 0), False
        try:
            data = self._region.read(offset, end - offset)
        except OSError as exc:
            # The object shrank between the check and the read, or the host cannot read it.
            self._refuse("read", offset, n, exc.strerror or str(exc))
            return b"\xff" * n, False
        return data + b"\xff" * (offset + n - end), True

    def dma_write(self, offset, data, mask=None):
        """Write `data` into the open object at `offset` for the device; never raise.

        Parameters
        ----------
        offset : int
            Byte offset into the object.
        data : bytes-like
            Bytes to store; those past the object's end are dropped.
        mask : sequence, optional
            One enable per byte of `data`; only enabled bytes are stored.

        Returns
        -------
        bool
            False, with nothing stored, if nothing is open, `offset` is at or past the object's
            end, another process shrank the object below the bytes written, or `mask` does not
            hold one enable per byte of `data`. Also False if the host cannot store the bytes
            (``ENOSPC``: an object someone else made sparse on a full tmpfs); then a leading
            part of them may have been stored. Every refusal counts in :attr:`dma_errors`.
        """
        data = bytes(data)
        n = len(data)
        if mask is not None and len(mask) != n:
            self._refuse("write", offset, n, f"{len(mask)} byte enables for {n} bytes")
            return False
        end = self._clip(offset, n)
        if end is None:
            self._refuse("write", offset, n, self._why_clipped())
            return False
        keep = end - offset
        try:
            self._region.write(offset, data[:keep], None if mask is None else list(mask)[:keep])
        except OSError as exc:
            # RegionError: the object shrank meanwhile. ENOSPC: someone else made it sparse on a
            # full tmpfs, so the page cannot be stored. The bytes before it may have been.
            self._refuse("write", offset, n, exc.strerror or str(exc))
            return False
        return True
