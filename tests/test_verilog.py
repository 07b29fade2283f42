"""Generated Verilog: every top and a grid of parameters builds, compiles under Icarus, and lints
clean under Verilator, plainly and with -Wall, with only the waivers of VERILATOR_WAIVERS."""

import os
import re
import subprocess
import sys

import pytest

from vmshm.harness.lint import VERILATOR_WAIVERS, Waiver, verilator_config, verilator_lint
from vmshm.harness.tools import iverilog, missing_reason, verilator_env
from vmshm.rtl.tops import TOPS, generate, module_name, top_parameters

CONFIGS = {
    "core-32": ("core", dict()),
    "core-64": ("core", dict(data_width=64)),
    "core-small": ("core", dict(window_size=4096, name_size=256, data_width=64, host_timeout=0)),
    # A one-word name buffer: its memory has a zero-width address (the ASCRANGE waiver).
    "core-tiny": ("core", dict(window_size=64, name_size=8, data_width=64)),
    "core-big": ("core", dict(window_size=1 << 30, name_size=4096, regs_size=4096,
                              host_timeout=1)),
    "pci-32": ("pci", dict()),
    "pci-64-options": ("pci", dict(data_width=64, window_64bit=True, regs_size=4096,
                                   vendor_id=0x1234, device_id=0x5678, subsystem_vendor_id=0x1,
                                   subsystem_id=0x2, revision=0x3, class_code=0x058000)),
    "pci-small": ("pci", dict(window_size=64, name_size=16, host_timeout=0)),
    "selftest-32": ("selftest", dict()),
    "selftest-64": ("selftest", dict(data_width=64, window_size=4096, name_size=64,
                                     host_size=256, window_64bit=True, shm_name="/x")),
    "usp-64": ("usp", dict()),
    "usp-256-options": ("usp", dict(axis_width=256, window_size=1 << 16, name_size=256,
                                    regs_size=4096, window_64bit=True, cpl_timeout=100)),
}


def _need(reason):
    # CI installs every tool, so there a missing one is a broken set-up, not a reason to skip.
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"must run under CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module", params=list(CONFIGS))
def verilog_file(request, tmp_path_factory):
    top, params = CONFIGS[request.param]
    # Named after its module (DECLFILENAME), one folder per configuration.
    path = tmp_path_factory.mktemp(request.param) / f"{module_name(top)}.v"
    text = generate(top, **params)
    path.write_text(text)
    path.with_suffix(".vlt").write_text(verilator_config(text, path.name))
    return path


def test_every_top_is_covered():
    assert {top for top, _ in CONFIGS.values()} == set(TOPS)


def test_module_and_ports_are_named(verilog_file):
    text = verilog_file.read_text()
    module = verilog_file.stem
    assert f"module {module}(" in text
    if module == "vmshm_selftest":
        ports = ("clk", "rst", "done", "passed", "failed", "step")
    elif module == "vmshm_usp":
        # The hard IP's names (tests/test_pcie.py checks the whole list).
        ports = ("user_clk", "user_reset", "s_axis_cq_tdata", "m_axis_cc_tdata",
                 "m_axis_rq_tdata", "s_axis_rc_tdata", "pcie_cq_np_req", "ctl_req__payload",
                 "ctl_rsp__payload")
    else:
        ports = ("clk", "rst", "req__valid", "req__ready", "req__payload", "cpl__valid",
                 "cpl__ready", "cpl__payload", "host__ctl_req__payload", "host__ctl_rsp__payload",
                 "host__dma_req__payload", "host__dma_rsp__payload")
    header = text[text.index(f"module {module}("):]
    header = header[:header.index(";")]
    for port in ports:
        assert re.search(rf"\b{port}\b", header), f"port {port} missing"


def test_icarus_compiles(verilog_file, tmp_path):
    _need(missing_reason("iverilog"))
    r = subprocess.run([iverilog(), "-g2012", "-o", str(tmp_path / "a.out"), str(verilog_file)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("wall", [False, True], ids=["plain", "Wall"])
def test_verilator_lints_clean(verilog_file, wall):
    _need(None if verilator_env() else missing_reason("verilator"))
    r = verilator_lint(verilog_file, verilog_file.stem, wall=wall,
                       config=verilog_file.with_suffix(".vlt"))
    assert r.returncode == 0, r.stderr


def test_verilator_lints_with_plain_flags(verilog_file):
    # The simulations pass the same list as -Wno-RULE flags; that must be enough too.
    _need(None if verilator_env() else missing_reason("verilator"))
    r = verilator_lint(verilog_file, verilog_file.stem)
    assert r.returncode == 0, r.stderr


def test_wall_without_waivers_warns(verilog_file):
    # The waivers are needed: a Verilator that stopped warning would make them stale.
    _need(None if verilator_env() else missing_reason("verilator"))
    r = verilator_lint(verilog_file, verilog_file.stem, wall=True, config=os.devnull)
    assert r.returncode != 0
    seen = set(re.findall(r"%Warning-(\w+)", r.stderr))
    assert seen <= set(VERILATOR_WAIVERS), f"warnings not in the waiver list: {seen}"


def test_waivers_have_reasons_and_valid_scopes():
    for rule, w in VERILATOR_WAIVERS.items():
        assert isinstance(w, Waiver) and w.rule == rule
        assert len(w.reason) > 30, f"{rule} needs a reason"
        assert w.scope in ("file", "internal", "zero-width", "submodules")


def test_unused_signal_waiver_spares_the_ports():
    text = generate("core")
    config = verilator_config(text, "vmshm_core.v")
    lines = text.splitlines()
    waived = set()
    for first, last in re.findall(r"UNUSEDSIGNAL .* -lines (\d+)(?:-(\d+))?", config):
        waived.update(range(int(first), int(last or first) + 1))
    ports = [n for n, line in enumerate(lines, start=1)
             if re.match(r"\s*(input|output)\b", line)]
    assert ports and not waived.intersection(ports)
    # ...and each port's own wire declaration, e.g. `input dma_enable; wire dma_enable;`.
    assert not any(re.match(r"\s*wire\s+dma_enable;", lines[n - 1]) for n in waived)
    assert waived, "expected internal signals to be waived"


def test_verilator_config_refuses_wildcards():
    with pytest.raises(ValueError, match="without quotes or wildcards"):
        verilator_config("", "*.v")


def test_top_parameters_come_from_the_constructors():
    assert "vendor_id" in top_parameters("pci") and "vendor_id" not in top_parameters("core")
    assert {"shm_name", "host_size", "data_width"} <= set(top_parameters("selftest"))


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="window_size must be a power of two"):
        generate("core", window_size=1000)
    with pytest.raises(ValueError, match="data_width must be 32 or 64"):
        generate("core", data_width=16)
    with pytest.raises(ValueError, match="top must be one of"):
        generate("nonesuch")
    with pytest.raises(ValueError, match="takes no parameter vendor_id"):
        generate("core", vendor_id=0x1234)


def _vmshm(*args, cwd=None):
    r = subprocess.run([sys.executable, "-m", "vmshm.cli", *args], capture_output=True,
                       text=True, timeout=300, cwd=cwd)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    return r


def test_cli_generate_writes_lint_config(tmp_path):
    r = _vmshm("generate", "--top", "pci", "--data-width", "64", "--subsystem-id", "abcd",
               "-o", "vmshm_pci.v", "--lint-config", "vmshm_pci.vlt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "module vmshm_pci(" in (tmp_path / "vmshm_pci.v").read_text()
    assert (tmp_path / "vmshm_pci.vlt").read_text().startswith("`verilator_config")
    if verilator_env():
        lint = verilator_lint(tmp_path / "vmshm_pci.v", "vmshm_pci", wall=True,
                              config=tmp_path / "vmshm_pci.vlt")
        assert lint.returncode == 0, lint.stderr


def test_cli_generate_refuses_options_a_top_does_not_take(tmp_path):
    r = _vmshm("generate", "--top", "core", "--vendor-id", "1234", cwd=tmp_path)
    assert r.returncode == 2 and "--vendor-id: not taken by --top core" in r.stderr
    r = _vmshm("generate", "--lint-config", "x.vlt", cwd=tmp_path)
    assert r.returncode == 2 and "needs -o FILE" in r.stderr
