"""`vmshm formal` proves or bounds every property of formal/props.py, at the CI depth.

Each property is one SymbiYosys run (YoWASP's tools and Yices from PyPI). The CI depths are the
shortest that still reach past the longest bound they check (see formal/run.py); ``vmshm formal
--full`` goes deeper. A deliberately broken core must give a counterexample.
"""

import os

import pytest

from vmshm.formal import run as F


def require_formal():
    reason = F.missing_tools()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the formal tools must run under CI: {reason}")
        pytest.skip(reason)


@pytest.mark.parametrize("name,top,prop", F.TASKS, ids=[n for n, _, _ in F.TASKS])
def test_property_holds(tmp_path, name, top, prop):
    require_formal()
    outcome = F.check(name, top, prop, depth=F.ci_depth(name), out=tmp_path)
    assert outcome.status in ("proved", "bounded"), outcome.line()


def test_cli_prints_one_line_per_property(tmp_path, capsys):
    require_formal()
    from vmshm.cli import main
    assert main(["formal", "core.reset", "--depth", "6", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["core.reset: bounded to 6 cycles"]


def test_cli_refuses_unknown_properties(capsys):
    from vmshm.cli import main
    assert main(["formal", "no.such"]) == 2
    assert "no property named 'no.such'" in capsys.readouterr().err
