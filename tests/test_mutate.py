"""`vmshm mutate`: the catalogue is found in the RTL's syntax tree and still applies; a mutant
runs in its own pytest process through the import hook and is killed by its first failing test.
"""

import ast

import pytest

from vmshm.formal import mutate as M


def test_the_catalogue_applies_to_the_rtl_and_pins_the_escapes():
    mutants = M.load()
    assert len(mutants) >= 40
    assert {m.module for m in mutants} >= {"vmshm.rtl.doorbell", "vmshm.rtl.window",
                                           "vmshm.rtl.control", "vmshm.rtl.config_regs",
                                           "vmshm.rtl.usp.streams", "vmshm.rtl.usp.irq"}
    assert set(M.ESCAPES) <= set(mutants)
    for m in mutants:
        source = M.apply(m)
        ast.parse(source)                       # still Python
        assert source != M._path(m.module).read_text()


def test_a_mutant_is_found_by_its_expression_not_its_line(tmp_path, monkeypatch):
    m = M.ESCAPES[3]
    moved = "# a new first line\n" + M._path(m.module).read_text()
    fake = tmp_path / "doorbell.py"
    fake.write_text(moved)
    monkeypatch.setattr(M, "_path", lambda module: fake)
    assert "with m.If((self.ring.valid)):" in M.apply(m)
    gone = M.Mutant(m.module, m.scope, "no_such_expression", 0, "(1)")
    with pytest.raises(LookupError, match="no longer"):
        M.apply(gone)


def test_an_escape_is_killed_and_the_real_rtl_survives_the_same_tests():
    # The vector-32 escape: the hook gives the tests the mutant, so its formal check fails.
    killed, by = M.run_one(M.ESCAPES[3], deep=False, timeout=600)
    assert killed, by
    assert "doorbell" in by or "registers" in by


def test_cli_refuses_bad_input(capsys):
    from vmshm.cli import main
    assert main(["mutate", "--limit", "0"]) == 2
    assert "--limit must be a positive number" in capsys.readouterr().err
    assert main(["mutate", "no such mutant text"]) == 2
    assert "no mutant of the catalogue matches" in capsys.readouterr().err


#: CI's fixed sample of UltraScale+ mutants (about 40 s together): one its unit tests kill, one
#: only its formal harness kills (the RC receiver freeing at a completion's end a tag that
#: completion's descriptor had already freed).
USP_SAMPLE = ("completer:CqBuffer.elaborate: synced | i.first -> (synced & i.first)",
              "completions:RcReceiver.elaborate: known & completed -> (completed)")


@pytest.mark.parametrize("name", USP_SAMPLE)
def test_a_fixed_sample_of_ultrascale_mutants_is_killed(name):
    mutant = next(m for m in M.load() if m.name == name)
    killed, by = M.run_one(mutant, deep=False, timeout=600)
    assert killed, by
