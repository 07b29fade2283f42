"""Tests of the package's layout: every module imports, imports point down, files stay readable.

The folders are mapped into the one ``vmshm`` package by ``[tool.setuptools.package-dir]`` in
pyproject.toml; these tests read that mapping, so a new folder is checked as soon as it is listed
there. :data:`MAY_IMPORT` is the layering of docs/architecture.md's layout table, as a table
the tests hold the code to: a folder imports only the folders it lists, lazy imports (inside
functions) included. A backend runs what it is given by name (``"module:name"`` strings, imported
with :mod:`importlib`), which is how the scenario suite runs on backends that never import it.
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
#: Longest function or method outside tests, in lines.
MAX_FUNCTION_LINES = 200

_ABI = ("abi",)
_HARDWARE = _ABI + ("rtl", "host_model", "driver_model")
_SHARED = _HARDWARE + ("harness",)
_BACKENDS = _SHARED + ("sim", "testbench", "native", "backends")
_CONTENT = _BACKENDS + ("scenarios", "timing", "fuzz", "formal", "fpga")

#: Folder -> the folders its modules may import, layer by layer (tools/LAYOUT.md):
#: 1 the ABI; 2 the hardware, the host and the driver, side by side; 3 what every backend shares,
#: the backends (none importing another) and their registry; 4 what is run on them; 5 the
#: transports to the outside; 6 the CLI, its commands and the benches that boot a guest.
MAY_IMPORT = {
    "abi": (),
    "rtl": _ABI,
    "host_model": _ABI,
    "driver_model": _ABI,
    "harness": _HARDWARE,
    "sim": _SHARED,
    "testbench": _SHARED,
    "native": _SHARED,
    "backends": _SHARED + ("sim", "testbench", "native"),
    "scenarios": _BACKENDS,
    "timing": _BACKENDS,
    "fuzz": _BACKENDS,
    "formal": _BACKENDS,
    "fpga": _BACKENDS,
    "guest": (),
    "ivshmem": _CONTENT,
    "qemu": _CONTENT + ("guest",),
    "vmshm": _CONTENT + ("guest", "ivshmem", "qemu"),
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


def _folder(name):
    """Return the repository folder that holds module ``name`` (``"harness"``, ``"vmshm"``)."""
    return MODULES[name].resolve().relative_to(ROOT).parts[0]


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
    return _find_cycle(graph)


def _find_cycle(graph):
    """Return one cycle of ``graph`` (``{node: [nodes it points to]}``) as a list, or ``None``."""
    state = {}          # node -> "open" while on the current path, "done" once explored
    path = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _forbidden_imports(table=MAY_IMPORT):
    """Return ``"module (folder) imports module (folder)"`` for every import ``table`` forbids."""
    bad = []
    for name, path in MODULES.items():
        here = _folder(name)
        for target in sorted(_imported(name, path)):
            there = _folder(target)
            if there != here and there not in table.get(here, ()):
                bad.append(f"{name} ({here}/) imports {target} ({there}/)")
    return bad


def test_the_package_map_finds_the_folders():
    names = set(MODULES)
    for expected in ("vmshm.cli", "vmshm.commands.demo", "vmshm.abi.regmap", "vmshm.rtl.core",
                     "vmshm.rtl.tops", "vmshm.harness.top", "vmshm.backends", "vmshm.scenarios",
                     "vmshm.scenarios.window", "vmshm.timing.model", "vmshm.fpga.synth"):
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


def test_every_folder_has_a_row_in_the_table():
    folders = {_folder(name) for name in MODULES}
    assert folders == set(MAY_IMPORT), (
        f"folders without a row in MAY_IMPORT: {sorted(folders - set(MAY_IMPORT))}; rows "
        f"without a folder: {sorted(set(MAY_IMPORT) - folders)}")
    for folder, allowed in MAY_IMPORT.items():
        assert set(allowed) <= set(MAY_IMPORT), f"{folder} may import unknown {allowed}"


def test_the_table_has_no_cycle():
    # The table itself is layered: a folder never may import one that may import it back.
    cycle = _find_cycle({folder: list(allowed) for folder, allowed in MAY_IMPORT.items()})
    assert cycle is None, "MAY_IMPORT lets folders import in a circle: " + " -> ".join(cycle)


def test_imports_point_down_the_layers():
    bad = _forbidden_imports()
    assert not bad, "imports the layering forbids (tests/test_layout.py MAY_IMPORT):\n" + \
        "\n".join(bad)


def test_the_folder_check_sees_an_upward_lazy_import(tmp_path, monkeypatch):
    # A backend module that reaches up to the scenario suite inside a function: the dependency
    # issue 21 removed from testbench/runner.py. No cycle among modules, still refused.
    harness = tmp_path / "harness"
    scenarios = tmp_path / "scenarios"
    harness.mkdir()
    scenarios.mkdir()
    (harness / "job.py").write_text("def make_hosts(name):\n"
                                    "    from vmshm.scenarios import SCENARIOS\n"
                                    "    return SCENARIOS[name].make_host()\n")
    (scenarios / "__init__.py").write_text("SCENARIOS = {}\n")
    fake = {"vmshm.harness.job": harness / "job.py", "vmshm.scenarios": scenarios / "__init__.py"}
    monkeypatch.setitem(globals(), "MODULES", fake)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert _cycle() is None
    assert _forbidden_imports() == ["vmshm.harness.job (harness/) imports vmshm.scenarios "
                                    "(scenarios/)"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_length(name):
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines: split it " \
                               f"along a seam"


def _long_functions(path):
    """Return ``"name: N lines"`` for every function or method in ``path`` past the limit."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out.append(f"{node.name}: {lines} lines")
    return out


@pytest.mark.parametrize("name", sorted(MODULES))
def test_function_length(name):
    long = _long_functions(MODULES[name])
    assert not long, f"{MODULES[name].relative_to(ROOT)}: functions past " \
                     f"{MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_the_function_check_sees_a_long_method(tmp_path):
    # A method one line past the limit (its def line and 200 statements), and a short one.
    body = "".join(f"        x = {i}\n" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "long.py"
    path.write_text("class A:\n    async def f(self):\n" + body +
                    "    def g(self):\n        pass\n")
    assert _long_functions(path) == [f"f: {MAX_FUNCTION_LINES + 1} lines"]


#: Top-level folders that are build output or caches, not part of the layout.
_NOT_LAYOUT = re.compile(r"\.|__pycache__$|.*\.egg-info$|build|dist$|sim_build$")


def _readme_layout():
    """Return ``{folder: layer}`` from the layout table of docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("\n## Layout\n", 1)[1]
    table = section[section.index("\n| layer |") + 1:].split("\n\n", 1)[0]
    rows = re.findall(r"^\| (\d) \| `([\w.-]+)/` \|", table, re.M)
    return {folder: int(layer) for layer, folder in rows}


def test_readme_layout_table_matches_the_tree():
    table = _readme_layout()
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not _NOT_LAYOUT.match(p.name)}
    missing = sorted(folders - set(table) - {"tests", "docs"})
    assert not missing, f"folders docs/architecture.md's layout table does not explain: {missing}"
    gone = sorted(f for f in table if f not in folders)
    assert not gone, f"docs/architecture.md's layout table lists folders that do not exist: {gone}"


def test_readme_layers_agree_with_the_table():
    # What docs/architecture.md calls a lower layer is what MAY_IMPORT lets a folder import.
    layer = _readme_layout()
    for folder, allowed in MAY_IMPORT.items():
        for below in allowed:
            assert layer[below] <= layer[folder], (
                f"{folder}/ (layer {layer[folder]}) may import {below}/, which docs/architecture.md puts "
                f"in layer {layer[below]}")
