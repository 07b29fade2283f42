"""Generated Verilog: every configuration builds once per run, compiles under Icarus, lints
under Verilator."""

import subprocess

import pytest

from conftest import require_backend

from vmshm.tools import VERILATOR_WAIVERS, iverilog, verilator_env
from vmshm.verilog import generate

CONFIGS = {
    "core-32": ("core", dict()),
    "core-64": ("core", dict(data_width=64)),
    "core-small": ("core", dict(window_size=4096, name_size=256, data_width=64, host_timeout=0)),
    "pci-32": ("pci", dict()),
    "pci-64-options": ("pci", dict(data_width=64, window_64bit=True, regs_size=4096,
                                   vendor_id=0x1234, device_id=0x5678)),
}
MODULES = {"core": "vmshm_core", "pci": "vmshm_pci"}


@pytest.fixture(scope="module", params=list(CONFIGS))
def verilog_file(request, tmp_path_factory):
    top, params = CONFIGS[request.param]
    path = tmp_path_factory.mktemp("verilog") / f"{MODULES[top]}_{request.param}.v"
    path.write_text(generate(top, **params))
    return path


def _module(verilog_file):
    return "vmshm_core" if "vmshm_core" in verilog_file.name else "vmshm_pci"


def test_module_and_ports_are_named(verilog_file):
    text = verilog_file.read_text()
    assert f"module {_module(verilog_file)}(" in text
    for port in ("clk", "rst", "req__valid", "req__ready", "req__payload", "cpl__payload",
                 "host__ctl_req__payload", "host__ctl_rsp__payload", "host__dma_req__payload",
                 "host__dma_rsp__payload"):
        assert port in text, f"port {port} missing"


def test_icarus_compiles(verilog_file, tmp_path):
    require_backend("icarus")
    r = subprocess.run([iverilog(), "-g2012", "-o", str(tmp_path / "a.out"), str(verilog_file)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_verilator_lints(verilog_file):
    require_backend("verilator")
    env = verilator_env()
    waivers = [f"-Wno-{w}" for w in VERILATOR_WAIVERS]
    r = subprocess.run(["verilator", "--lint-only", "--top-module", _module(verilog_file), *waivers,
                        str(verilog_file)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="window_size must be a power of two"):
        generate("core", window_size=1000)
    with pytest.raises(ValueError, match="data_width must be 32 or 64"):
        generate("core", data_width=16)
    with pytest.raises(ValueError, match="top must be one of"):
        generate("nonesuch")
