"""The README is a short guide whose every command runs; the docs' links and tables hold."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_backend, require_qemu_parts
from test_layout import MAY_IMPORT
from vmshm.samples import Sample, documents, produce

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_commands():
    """Return ``[(line number, command)]`` for every line of the README's ```sh blocks."""
    out, inside = [], False
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if line.startswith("```"):
            inside = line == "```sh" if not inside else False
        elif inside and line.strip():
            out.append((number, line.strip()))
    return out


def in_ci(command):
    """Return whether .ci/run runs `command` as one line of its own, word for word."""
    return command in (ROOT / ".ci" / "run").read_text().splitlines()


def need(reason):
    """Skip with ``reason`` (a missing tool), or fail under CI, which installs every tool."""
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"must run under CI: {reason}")
        pytest.skip(reason)


def _formal():
    from vmshm.formal.run import missing_tools
    need(missing_tools())


#: Commands this file runs, with what each needs first, and whether it is slow.
RUN_HERE = {
    "vmshm generate": (None, False),
    "vmshm scenario": (None, False),
    "vmshm scenario window_random_integrity --backend icarus": (lambda: require_backend("icarus"),
                                                                True),
    "vmshm timing": (None, False),
    "vmshm qemu": (require_qemu_parts, True),
    "vmshm fuzz": (None, True),
    "vmshm formal": (_formal, False),
}
#: The first run's command, which installs the package: run in a fresh environment (slow).
FIRST_RUN = "python3 -m pip install . && vmshm demo --shm /vmshm-demo --create 1M"


def _how(command):
    """Return the longest RUN_HERE key the command starts with, or None."""
    keys = [k for k in RUN_HERE if command == k or command.startswith(k + " ")]
    return max(keys, key=len) if keys else None


def test_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail into docs/"
    assert FIRST_RUN in {c for _, c in readme_commands()}


def test_the_readme_test_command_is_what_ci_runs():
    tests = [c for _, c in readme_commands() if "pytest" in c]
    assert tests and all(in_ci(c) for c in tests), (
        f"the README's test command {tests} is not a line of .ci/run")


def test_every_readme_command_is_exercised():
    for number, command in readme_commands():
        assert in_ci(command) or command == FIRST_RUN or _how(command), (
            f"README.md:{number}: `{command}` runs in no test: add it to RUN_HERE in "
            f"tests/test_docs.py (or to .ci/run)")


def _params():
    for number, command in readme_commands():
        how = _how(command)
        if how and not in_ci(command):
            marks = [pytest.mark.slow] if RUN_HERE[how][1] else []
            yield pytest.param(number, command, how, id=f"README:{number}", marks=marks)


@pytest.mark.parametrize("number, command, how", list(_params()))
def test_readme_command_runs(tmp_path, number, command, how):
    need = RUN_HERE[how][0]
    if need:
        need()
    shm = re.search(r"--shm (\S+)", command)
    sample = Sample(README, number, command, "", shm=shm.group(1) if shm else None)
    produce(sample, cwd=tmp_path)       # raises, with the output, unless it exits 0


@pytest.mark.slow
def test_first_run_installs_and_runs_the_demo(tmp_path):
    """The first run's two commands, in a fresh environment on this machine's packages."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    install, demo = FIRST_RUN.split(" && ")
    # From a copy of the checkout, so the build leaves nothing in it; --no-deps: the environment
    # already sees the base Python's dependencies.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".ci", "build", "*.egg-info", "__pycache__", "tests"))
    r = subprocess.run(f"{install} --no-deps -q", shell=True, cwd=src,
                       env=dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (venv / "bin" / "vmshm").exists()
    sample = Sample(README, 0, demo, "", shm="/vmshm-demo")
    out = produce(sample, cwd=tmp_path, bindir=venv / "bin")
    assert "guest wrote at offset 0: 'I was here: " in out and "│ total " in out


def test_dependency_table_is_may_import():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("\n## Folder dependencies\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.*) \|$", section, re.M)
    table = {folder: tuple(re.findall(r"`(\w+)`", cell)) for folder, cell in rows}
    assert table == {k: tuple(v) for k, v in MAY_IMPORT.items()}, (
        "docs/architecture.md's folder dependencies differ from MAY_IMPORT in tests/test_layout.py")


def _links():
    for path in documents(ROOT):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if not re.match(r"[a-z]+:", target):
                yield path, target


def test_links_between_pages_resolve():
    broken = [f"{p.relative_to(ROOT)} -> {t}" for p, t in _links()
              if not (p.parent / t).exists()]
    assert not broken, f"links to nothing: {broken}"
