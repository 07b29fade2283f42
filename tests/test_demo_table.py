"""The demo's cycle table accounts for every cycle and every bus transaction of the run."""

import pytest

from vmshm.backends import run_function
from vmshm.host_model import HostTiming

EXAMPLE = "vmshm.scenarios.demo:seed_example"


@pytest.mark.parametrize("ctl, dma", [(0, 0), (7, 11)])
def test_steps_add_up_to_the_total(shm_objects, ctl, dma):
    """The rows are back to back from cycle 0 and sum to the run's cycles and records."""
    name = shm_objects.create(1 << 20, tag="demo")
    result = run_function(EXAMPLE, backend="amaranth", kwargs={"name": name},
                          timing=HostTiming(ctl_latency=ctl, dma_latency=dma))
    steps = result.value.steps
    assert [s.name for s in steps] == ["probe", "open", "ioctl(name)", "mmap", "read offset 0",
                                       "write offset 0", "munmap", "close"]
    assert steps[0].start == 0
    for before, after in zip(steps, steps[1:]):
        assert after.start == before.end, f"cycles {before.end}..{after.start} are in no step"
    assert steps[-1].end == result.cycles
    assert sum(s.cycles for s in steps) == result.cycles
    assert sum(s.transactions for s in steps) == len(result.records)
    # Every record carries the label of the step that made it.
    assert all(r.label for r in result.records)


def test_cycles_do_not_depend_on_the_pid(shm_objects):
    """The demo writes ``I was here: <pid>``; the table a user compares with docs/demo.md must not
    change with how many digits the PID has (a fresh machine's small PIDs made the write a beat
    shorter)."""
    name = shm_objects.create(1 << 20, tag="demo")
    tables = {}
    for pid in (7, 4194304):
        result = run_function(EXAMPLE, backend="amaranth", kwargs={"name": name, "pid": pid})
        tables[pid] = [(s.name, s.start, s.end, s.transactions) for s in result.value.steps]
    assert tables[7] == tables[4194304]
