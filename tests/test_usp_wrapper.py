"""The PG213-named wrapper (issue 22): ``vmshm generate --top usp --wrapper pg213``.

The wrapper's ports must connect to a ``pcie4_uscale_plus`` instance by name. The table below is
written from PG213 (UltraScale+ Devices Integrated Block for PCI Express, v1.3), chapter "Port
Descriptions", for the 64/128/256-bit interface (DW = the AXI-stream width), with each port's
direction as the IP has it (O: the IP drives it, so the wrapper takes it in):

- Table "Completer Request Interface Port Descriptions": ``m_axis_cq_*``, tuser 88 bits,
  ``m_axis_cq_tready`` I 1 bit; ``pcie_cq_np_req`` I 2, ``pcie_cq_np_req_count`` O 6.
- Table "Completer Completion Interface Port Descriptions": ``s_axis_cc_*``, tuser 33 bits,
  ``s_axis_cc_tready`` O 4 bits.
- Table "Requester Request Interface Port Descriptions": ``s_axis_rq_*``, tuser 62 bits,
  ``s_axis_rq_tready`` O 4 bits; ``pcie_rq_seq_num0`` O 6, ``pcie_rq_seq_num_vld0`` O 1.
- Table "Requester Completion Interface Port Descriptions": ``m_axis_rc_*``, tuser 75 bits,
  ``m_axis_rc_tready`` I 1 bit.
- Tables "Configuration Status Interface Port Descriptions" (``cfg_max_payload`` O 2,
  ``cfg_max_read_req`` O 3, ``cfg_function_status`` O 16), "Configuration Control Interface
  Port Descriptions" (``cfg_flr_in_process`` O 4, ``cfg_flr_done`` I 4), "Legacy Interrupt
  Interface Port Descriptions" (``cfg_interrupt_int`` I 4, ``cfg_interrupt_pending`` I 4,
  ``cfg_interrupt_sent`` O 1), "MSI Interrupt Interface Port Descriptions" (the
  ``cfg_interrupt_msi_*`` rows below, TPH ones included), "Configuration Extend Interface Port
  Descriptions" (the ``cfg_ext_*`` rows).
"""

import json
import re
import subprocess
import sys

import pytest

from vmshm.fpga.toolchain import toolchain_missing
from vmshm.rtl.tops import generate
from vmshm.rtl.usp.wrapper import WRAPPER_MODULE

#: PG213's ports the wrapper carries: name -> (direction on the IP, width); "DW" and "DW/32"
#: stand for the stream width and its DWORD count.
PG213_PORTS = {
    "user_clk": ("O", 1), "user_reset": ("O", 1),
    # Completer Request
    "m_axis_cq_tdata": ("O", "DW"), "m_axis_cq_tuser": ("O", 88), "m_axis_cq_tlast": ("O", 1),
    "m_axis_cq_tkeep": ("O", "DW/32"), "m_axis_cq_tvalid": ("O", 1),
    "m_axis_cq_tready": ("I", 1),
    "pcie_cq_np_req": ("I", 2), "pcie_cq_np_req_count": ("O", 6),
    # Completer Completion
    "s_axis_cc_tdata": ("I", "DW"), "s_axis_cc_tuser": ("I", 33), "s_axis_cc_tlast": ("I", 1),
    "s_axis_cc_tkeep": ("I", "DW/32"), "s_axis_cc_tvalid": ("I", 1),
    "s_axis_cc_tready": ("O", 4),
    # Requester Request
    "s_axis_rq_tdata": ("I", "DW"), "s_axis_rq_tuser": ("I", 62), "s_axis_rq_tlast": ("I", 1),
    "s_axis_rq_tkeep": ("I", "DW/32"), "s_axis_rq_tvalid": ("I", 1),
    "s_axis_rq_tready": ("O", 4),
    "pcie_rq_seq_num0": ("O", 6), "pcie_rq_seq_num_vld0": ("O", 1),
    # Requester Completion
    "m_axis_rc_tdata": ("O", "DW"), "m_axis_rc_tuser": ("O", 75), "m_axis_rc_tlast": ("O", 1),
    "m_axis_rc_tkeep": ("O", "DW/32"), "m_axis_rc_tvalid": ("O", 1),
    "m_axis_rc_tready": ("I", 1),
    # Configuration status and control
    "cfg_max_payload": ("O", 2), "cfg_max_read_req": ("O", 3),
    "cfg_function_status": ("O", 16),
    "cfg_flr_in_process": ("O", 4), "cfg_flr_done": ("I", 4),
    # Legacy interrupts
    "cfg_interrupt_int": ("I", 4), "cfg_interrupt_pending": ("I", 4),
    "cfg_interrupt_sent": ("O", 1),
    # MSI
    "cfg_interrupt_msi_enable": ("O", 4), "cfg_interrupt_msi_int": ("I", 32),
    "cfg_interrupt_msi_sent": ("O", 1), "cfg_interrupt_msi_fail": ("O", 1),
    "cfg_interrupt_msi_function_number": ("I", 8), "cfg_interrupt_msi_attr": ("I", 3),
    "cfg_interrupt_msi_select": ("I", 2), "cfg_interrupt_msi_data": ("O", 32),
    "cfg_interrupt_msi_pending_status": ("I", 32),
    "cfg_interrupt_msi_pending_status_data_enable": ("I", 1),
    "cfg_interrupt_msi_pending_status_function_num": ("I", 2),
    "cfg_interrupt_msi_tph_present": ("I", 1), "cfg_interrupt_msi_tph_type": ("I", 2),
    "cfg_interrupt_msi_tph_st_tag": ("I", 8),
    # Configuration extend
    "cfg_ext_read_received": ("O", 1), "cfg_ext_write_received": ("O", 1),
    "cfg_ext_register_number": ("O", 10), "cfg_ext_function_number": ("O", 8),
    "cfg_ext_write_data": ("O", 32), "cfg_ext_write_byte_enable": ("O", 4),
    "cfg_ext_read_data": ("I", 32), "cfg_ext_read_data_valid": ("I", 1),
}

#: The PG213 configurations the wrapper is for: (link, AXI-stream width).
CONFIGURATIONS = [("gen3x8", 256), ("gen3x4", 128)]


def expected_ports(width):
    """PG213_PORTS as the wrapper must declare them: direction from the user logic's side."""
    sizes = {"DW": width, "DW/32": width // 32}
    return {name: ("input" if d == "O" else "output", sizes.get(w, w))
            for name, (d, w) in PG213_PORTS.items()}


_PORT = re.compile(r"^\s*(input|output) wire (?:\[(\d+):0\] )?(\w+),?$")


def wrapper_ports_by_regex(text):
    """The wrapper module's ANSI port list, read from the generated text."""
    body = text[text.index(f"module {WRAPPER_MODULE} ("):]
    body = body[:body.index(");")]
    ports = {}
    for line in body.splitlines()[1:]:
        m = _PORT.match(line)
        assert m, f"unparsed port line {line!r}"
        ports[m[3]] = (m[1], int(m[2]) + 1 if m[2] else 1)
    return ports


def pg213_part(ports):
    """The ports of ``ports`` that are the IP's (VMShm's own control and doorbell ports pass
    through under their own names)."""
    own = ("ctl_req__", "ctl_rsp__", "db__", "ring__", "peer_")
    return {n: p for n, p in ports.items() if not n.startswith(own)}


@pytest.mark.parametrize("link,width", CONFIGURATIONS)
def test_wrapper_ports_are_pg213s(link, width):
    """Every port of the wrapper that is not VMShm's own is a PG213 port with PG213's width and
    the direction that connects to it, and every PG213 port VMShm uses is there."""
    text = generate("usp", wrapper="pg213", axis_width=width)
    assert pg213_part(wrapper_ports_by_regex(text)) == expected_ports(width)


@pytest.mark.slow     # Yosys elaborates the whole top: about 15 s
@pytest.mark.skipif(toolchain_missing() is not None, reason="needs Yosys (vmshm[fpga])")
def test_yosys_elaborates_the_wrapper_with_the_same_ports(tmp_path):
    """Yosys reads the generated file, elaborates the wrapper around vmshm_usp (so every
    connection's width agrees) and reports the same ports as the table."""
    from vmshm.fpga.toolchain import _tool_command

    width = 256
    (tmp_path / "w.v").write_text(generate("usp", wrapper="pg213", axis_width=width))
    r = subprocess.run(_tool_command("yosys") + [
        "-q", "-p", f"read_verilog w.v; hierarchy -check -top {WRAPPER_MODULE}; proc; opt_clean; "
                    f"write_json -noscopeinfo w.json"],
        cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr, r.stderr
    module = json.loads((tmp_path / "w.json").read_text())["modules"][WRAPPER_MODULE]
    ports = {n: (p["direction"], len(p["bits"])) for n, p in module["ports"].items()}
    assert pg213_part(ports) == expected_ports(width)
    # Yosys sees the tie-offs driven by constants, not left floating.
    tph = module["ports"]["cfg_interrupt_msi_tph_st_tag"]["bits"]
    assert all(b == "0" for b in tph), tph


def test_cli_writes_the_wrapper_and_refuses_it_for_other_tops(tmp_path):
    out = tmp_path / "vmshm_usp.v"
    r = subprocess.run([sys.executable, "-m", "vmshm.cli", "generate", "--top", "usp",
                        "--axis-width", "128", "--wrapper", "pg213", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "module vmshm_usp(" in text and f"module {WRAPPER_MODULE} (" in text
    assert wrapper_ports_by_regex(text)["m_axis_cq_tdata"] == ("input", 128)
    r = subprocess.run([sys.executable, "-m", "vmshm.cli", "generate", "--top", "pci",
                        "--wrapper", "pg213"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "--wrapper pg213 needs --top usp" in r.stderr


def test_verilator_lints_the_wrapper_clean(tmp_path):
    """The wrapper with its top, under -Wall and the generated waivers: clean (the unused bits
    3:1 of CC and RQ tready are waived in the wrapper itself)."""
    from vmshm.harness.lint import verilator_config, verilator_lint
    from vmshm.harness.tools import missing_reason, verilator_env

    if not verilator_env() and missing_reason("verilator"):
        pytest.skip(missing_reason("verilator"))
    out = tmp_path / "vmshm_usp.v"
    text = generate("usp", wrapper="pg213", axis_width=128)
    out.write_text(text)
    config = tmp_path / "vmshm_usp.vlt"
    config.write_text(verilator_config(text, str(out)))
    r = verilator_lint(out, WRAPPER_MODULE, wall=True, config=config)
    assert r.returncode == 0, r.stderr
