"""Tests of the package's layout: every module imports, imports point one way, files stay readable.

The folders are mapped into the one ``vmshm`` package by ``[tool.setuptools.package-dir]`` in
pyproject.toml; these tests read that mapping, so a new folder is checked as soon as it is listed
there.
"""

import ast
import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Longest module, in lines, a person reads in one sitting.
MAX_LINES = 700

#: Modules allowed past MAX_LINES, each with the reason it is one indivisible thing.
LONG_MODULES = {
}


def _packages():
    """Return ``{package name: folder}`` as pyproject.toml maps them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = config["package-dir"]
    return {name: ROOT / dirs.get(name, name.replace(".", "/")) for name in config["packages"]}


def _modules():
    """Return ``{module name: file}`` for every module of every package."""
    out = {}
    for package, folder in _packages().items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = path
    return out


MODULES = _modules()


def _imported(name, path):
    """Return the project modules ``name`` (at ``path``) imports, anywhere in its text.

    Imports inside functions count too: a lazy import still ties the two modules together.
    ``from package import name`` counts as an import of the submodule when ``name`` is one.
    """
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` imports the longest prefix that is one of our modules.
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycle():
    """Return one import cycle among the project's modules as a list of names, or ``None``."""
    graph = {name: sorted(_imported(name, path)) for name, path in MODULES.items()}
    state = {}          # name -> "open" while on the current path, "done" once explored
    path = []

    def visit(name):
        state[name] = "open"
        path.append(name)
        for dep in graph[name]:
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[name] = "done"
        return None

    for name in graph:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def test_the_package_map_finds_the_folders():
    names = set(MODULES)
    for expected in ("vmshm.cli", "vmshm.rtl.core", "vmshm.scenarios", "vmshm.scenarios.window",
                     "vmshm.timing.model", "vmshm.fpga.verilog", "vmshm.fpga.synth"):
        assert expected in names


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_sees_a_lazy_import(tmp_path, monkeypatch):
    # The check must catch what issue 10 found: a command importing a helper from the CLI
    # inside a function while the CLI imports the command.
    fake = {"vmshm.cli": tmp_path / "cli.py", "vmshm.fpga.board": tmp_path / "board.py"}
    fake["vmshm.cli"].write_text("from vmshm.fpga import board\n")
    fake["vmshm.fpga.board"].write_text("def f():\n    from vmshm.cli import parse_size\n")
    monkeypatch.setitem(globals(), "MODULES", fake)
    assert _cycle() in (["vmshm.cli", "vmshm.fpga.board", "vmshm.cli"],
                        ["vmshm.fpga.board", "vmshm.cli", "vmshm.fpga.board"])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_length(name):
    lines = MODULES[name].read_text().count("\n")
    if name in LONG_MODULES:
        return
    assert lines <= MAX_LINES, (f"{MODULES[name].relative_to(ROOT)} has {lines} lines: split it "
                                f"along a seam, or list it in LONG_MODULES with the reason")


def test_long_module_list_is_current():
    for name in LONG_MODULES:
        assert name in MODULES, f"LONG_MODULES names {name}, which no longer exists"
        assert MODULES[name].read_text().count("\n") > MAX_LINES, \
            f"{name} is short enough now: take it off LONG_MODULES"


#: Top-level folders that are build output or caches, not part of the layout.
_NOT_LAYOUT = re.compile(r"\.|__pycache__$|.*\.egg-info$|build|dist$|sim_build$")


def _readme_layout():
    """Return ``{folder: whether the row says it is coming}`` from the README's layout table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1]
    table = section[section.index("\n| folder |") + 1:].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([\w.-]+)/` \| ([^|]*)\|", table, re.M)
    return {folder: answer.strip().startswith("coming") for folder, answer in rows}


def test_readme_layout_table_matches_the_tree():
    table = _readme_layout()
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not _NOT_LAYOUT.match(p.name)}
    missing = sorted(folders - set(table))
    assert not missing, f"folders the README's layout table does not explain: {missing}"
    gone = sorted(f for f, coming in table.items() if not coming and f not in folders)
    assert not gone, f"the README's layout table lists folders that do not exist: {gone}"
    mapped = {path.relative_to(ROOT).parts[0] for path in _packages().values()}
    assert mapped <= set(table), f"packages missing from the layout table: {mapped - set(table)}"
