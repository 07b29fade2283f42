"""The cocotb backend beyond the scenario suite: demo, waveforms, benchmark, errors."""

import pytest

from vmshm.backends import BACKENDS, run_function, run_scenario
from vmshm.bench import run_bench

from conftest import require_backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_waveform_named_and_valid(backend, tmp_path):
    require_backend(backend)
    waves = tmp_path / f"window_closed-{backend}.vcd"
    run_scenario("window_closed", backend=backend, waves=waves)
    text = waves.read_text(errors="replace")
    assert "$enddefinitions" in text and "clk" in text, "not a VCD with the clock in it"
    assert "req__valid" in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_demo_on_backend_sees_host_data(backend, shm_objects):
    require_backend(backend)
    from vmshm.host_model import ShmRegion
    name = shm_objects.create(4096, tag="demo")
    with ShmRegion.attach(name) as region:
        region.write(0, b"from the host\0")
    result = run_function("vmshm.demo:seed_example", backend=backend,
                          kwargs={"name": name, "pid": 4242})
    assert result.value.found == b"from the host"
    with ShmRegion.attach(name) as region:
        assert region.read(0, 16) == b"I was here: 4242"
    assert [h["is_open"] for h in result.hosts] == [False]


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_cross_the_process_boundary(backend):
    require_backend(backend)
    with pytest.raises(FileNotFoundError) as info:
        run_function("vmshm.demo:seed_example", backend=backend,
                     kwargs={"name": "/vmshm-no-such-object-anywhere"})
    assert "no shared-memory object" in info.value.hosts[0]["last_error"]


def test_bench_prints_figures_for_each_backend():
    backends = [b for b in BACKENDS if b == "amaranth"]
    rows = run_bench(backends, size=1024)
    assert [r["backend"] for r in rows] == backends
    for r in rows:
        assert r["cycles"] > 0 and r["wall_s"] > 0 and r["idle_s"] > 0
