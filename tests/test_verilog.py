"""Generated Verilog: every configuration builds once per run, compiles under Icarus, lints
under Verilator."""

import subprocess

import pytest

from vmshm.tools import VERILATOR_WAIVERS, iverilog, missing_reason, verilator_env
from vmshm.verilog import generate

CONFIGS = {
    "default-32": dict(),
    "64bit": dict(data_width=64),
    "small": dict(window_size=4096, name_size=256, data_width=64, host_timeout=0),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def verilog_file(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("verilog") / f"vmshm_core_{request.param}.v"
    path.write_text(generate("core", **CONFIGS[request.param]))
    return path


def test_module_and_ports_are_named(verilog_file):
    text = verilog_file.read_text()
    assert "module vmshm_core(" in text
    for port in ("clk", "rst", "req__valid", "req__ready", "req__payload", "cpl__payload",
                 "ctl_req__payload", "ctl_rsp__payload", "dma_req__payload", "dma_rsp__payload"):
        assert port in text, f"port {port} missing"


def test_icarus_compiles(verilog_file, tmp_path):
    if iverilog() is None:
        pytest.skip(missing_reason("iverilog"))
    r = subprocess.run([iverilog(), "-g2012", "-o", str(tmp_path / "a.out"), str(verilog_file)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_verilator_lints(verilog_file):
    env = verilator_env()
    if env is None:
        pytest.skip(missing_reason("verilator"))
    waivers = [f"-Wno-{w}" for w in VERILATOR_WAIVERS]
    r = subprocess.run(["verilator", "--lint-only", "--top-module", "vmshm_core", *waivers,
                        str(verilog_file)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="window_size must be a power of two"):
        generate("core", window_size=1000)
    with pytest.raises(ValueError, match="data_width must be 32 or 64"):
        generate("core", data_width=16)
    with pytest.raises(ValueError, match="top must be one of"):
        generate("nonesuch")
