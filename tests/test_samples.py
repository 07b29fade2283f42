"""Every sample output in README.md and docs/ is what its command prints (vmshm.samples)."""

from pathlib import Path

import pytest

from conftest import require_backend, require_qemu_parts
from test_docs import need
from vmshm.samples import Sample, documents, find_samples, matches, produce, refresh

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = [s for path in documents(ROOT) for s in find_samples(path)]


def _fpga():
    from vmshm.fpga.toolchain import toolchain_missing
    need(toolchain_missing())


#: What a sample's command needs on this machine, by how the command starts: skipped without it
#: (failed under CI, which installs everything).
NEEDS = {
    "vmshm qemu": require_qemu_parts,
    "vmshm channel": lambda: require_backend("native"),
    "vmshm bench": lambda: require_backend("native"),
    "vmshm synth": _fpga,
}


@pytest.mark.parametrize("sample", [pytest.param(s, id=s.where,
                                                 marks=[pytest.mark.slow] if s.slow else [])
                                    for s in SAMPLES])
def test_sample_matches_its_command(sample):
    for start, need in NEEDS.items():
        if sample.command.startswith(start):
            need()
    produced = produce(sample)
    assert matches(sample, produced), (
        f"{sample.where}: `{sample.command}` now prints\n{produced}\nrefresh the docs with "
        f"`python -m vmshm.samples {sample.path.relative_to(ROOT)}`")


def test_the_docs_have_samples():
    # The demo's table is the README's promise; losing its marker would silence the check.
    assert any(s.path.name == "demo.md" and "cycles per step" in s.body for s in SAMPLES)


def test_shape_ignores_figures_but_not_words(tmp_path):
    sample = Sample(tmp_path / "x.md", 1, "true", "│ amaranth │  3.31 │\n", date="2026-01-01")
    assert matches(sample, "│ amaranth │ 12.75 │\n")
    assert not matches(sample, "│ icarus │ 12.75 │\n")
    assert not matches(sample, "│ amaranth │ 12.75 │\nmore\n")
    exact = Sample(tmp_path / "x.md", 1, "true", "cycles 262\n")
    assert not matches(exact, "cycles 263\n")


def test_refresh_rewrites_a_stale_block_and_check_does_not(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- produced by: printf 'a\\nb\\nc\\n'; lines 1:; show -->\n```\n"
                   "stale\n```\nafter\n")
    assert refresh(doc, check=True, log=lambda _: None) == ["doc.md:2"]
    assert "stale" in doc.read_text()
    assert refresh(doc, log=lambda _: None) == ["doc.md:2"]
    assert doc.read_text() == ("before\n<!-- produced by: printf 'a\\nb\\nc\\n'; lines 1:; show "
                               "-->\n```\n$ printf 'a\\nb\\nc\\n'\nb\nc\n```\nafter\n")
    assert refresh(doc, check=True, log=lambda _: None) == []


def test_a_shape_block_gets_the_date_it_was_produced(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- produced by: echo 5 apples; shape 2000-01-01 -->\n```\n4 apples\n```\n")
    assert refresh(doc, check=True, log=lambda _: None) == []
    refresh(doc, log=lambda _: None)
    assert "shape 2000-01-01" not in doc.read_text() and "5 apples" in doc.read_text()


def test_a_failing_command_is_an_error(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- produced by: exit 3 -->\n```\n\n```\n")
    with pytest.raises(RuntimeError, match="exited 3"):
        produce(find_samples(doc)[0])
