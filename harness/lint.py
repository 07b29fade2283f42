"""Lint the generated Verilog with Verilator: the waivers it needs, each with its reason.

:data:`VERILATOR_WAIVERS` is the one list used by the plain lint, by ``-Wall``, by
``vmshm generate --lint-config`` and by the Verilator simulations (as ``-Wno-RULE``).
"""

import os
import re
from dataclasses import dataclass

from vmshm.harness.tools import missing_reason, verilator_env

__all__ = ["Waiver", "VERILATOR_WAIVERS", "verilator_config", "verilator_lint"]


@dataclass(frozen=True)
class Waiver:
    """One Verilator warning we let pass in generated Verilog, and why.

    ``scope`` says how far it reaches: ``"file"``, the whole generated file; ``"internal"``, only
    the lines declaring signals that are not ports of their module (so an unused input port
    still warns); ``"zero-width"``, only the lines declaring such a signal as ``[-1:0]``;
    ``"submodules"``, only the lines declaring modules other than the file's own.
    """
    rule: str
    reason: str
    scope: str = "file"

    def __str__(self):
        return self.reason


#: Every Verilator warning generated Verilog may raise, with the reason it is waived: the one list
#: used by the plain lint, by ``-Wall`` and by the Verilator simulations (as ``-Wno-RULE``).
#: :func:`verilator_config` turns it into a configuration file confined to one generated file.
#: Everything else is kept clean, the top module's DECLFILENAME too: name the file after the
#: module (``vmshm_core.v``).
VERILATOR_WAIVERS = {w.rule: w for w in (
    Waiver("WIDTHEXPAND",
           "Amaranth extends operands implicitly where Verilog widths differ; Yosys writes "
           "the operands at their own widths"),
    Waiver("WIDTHTRUNC",
           "Amaranth truncates implicitly on assignment, as its semantics define (e.g. the "
           "carry bit of a counter's increment)"),
    Waiver("CASEINCOMPLETE",
           "Amaranth's FSM and Switch lowering leaves out the cases that cannot occur; the "
           "default is the value held before the case statement"),
    Waiver("PROCASSINIT",
           "(-Wall) every register is declared with its reset value as initial value, which an "
           "FPGA loads at configuration, and is also assigned in its always block"),
    Waiver("DECLFILENAME",
           "(-Wall) Amaranth writes a top's whole hierarchy into one file, naming each submodule "
           "after its path (vmshm_pci.core); the top module itself must match the file name",
           scope="submodules"),
    Waiver("ASCRANGE",
           "a memory one word deep (a name buffer of one data word: 8 bytes at 64 bits) has a "
           "zero-width address, which Yosys declares as [-1:0]; only the unused debug copy of "
           "that address is declared so", scope="zero-width"),
    Waiver("UNUSEDSIGNAL",
           "(-Wall) Amaranth keeps every named signal and every struct field as a wire for the "
           "waveform viewer, and Yosys names intermediate results ($N) wider than their use; "
           "the logic reads the nets those wires copy. Ports are not waived", scope="internal"),
)}


_DECL = re.compile(r"^\s*(input|output|inout|wire|reg)\s+(?:signed\s+)?(?:\[[^\]]*\]\s*)?"
                   r"(\\\S+|[A-Za-z_$][\w$]*)\s*(?:\[[^\]]*\]\s*)?(?:=[^;]*)?;")
_MODULE = re.compile(r"^\s*module\s+(\\\S+|[A-Za-z_$][\w$]*)")


def _submodule_lines(verilog, top):
    """Return the numbers of the lines declaring modules other than ``top``."""
    lines = []
    for number, line in enumerate(verilog.splitlines(), start=1):
        m = _MODULE.match(line)
        if m is not None and m.group(1).lstrip("\\") != top:
            lines.append(number)
    return lines


def _internal_lines(verilog, zero_width=False):
    """Return ``(first, last)`` line ranges holding only declarations of non-port signals (with
    ``zero_width``, only those declared ``[-1:0]``)."""
    decls = []      # (line, module index, name, is a port declaration)
    ports = [set()]
    for number, line in enumerate(verilog.splitlines(), start=1):
        if _MODULE.match(line):
            ports.append(set())
            continue
        m = _DECL.match(line)
        if m is not None:
            kind, name = m.groups()
            is_port = kind in ("input", "output", "inout")
            if is_port:
                ports[-1].add(name)
            decls.append((number, len(ports) - 1, name, is_port,
                          zero_width and "[-1:0]" not in line))
    ranges = []
    for number, module, name, is_port, skip in decls:
        if is_port or name in ports[module] or skip:
            ranges.append(None)         # a port ends the run: it stays checked
        elif ranges and ranges[-1] is not None:
            ranges[-1] = (ranges[-1][0], number)
        else:
            ranges.append((number, number))
    return [r for r in ranges if r is not None]


def verilator_config(verilog, filename, waivers=None):
    """Return a Verilator configuration file (``.vlt``) waiving ``waivers`` in one generated file.

    Parameters
    ----------
    verilog : str
        The generated Verilog, as :func:`vmshm.rtl.tops.generate` returned it: waivers scoped to
        internal signals are confined to the lines that declare them, so the file and its
        configuration must come from the same generation.
    filename : str
        The name the Verilog is saved under; the waivers apply to that file only.
    waivers : iterable of Waiver, optional
        Default: :data:`VERILATOR_WAIVERS`.

    Pass the configuration file before the Verilog: ``verilator --lint-only -Wall
    vmshm_core.vlt vmshm_core.v``.
    """
    waivers = list(VERILATOR_WAIVERS.values() if waivers is None else waivers)
    base = os.path.basename(str(filename))
    if not base or any(c in base for c in '"*?'):
        raise ValueError(f"filename must name a file without quotes or wildcards, not "
                         f"{filename!r}")
    pattern = f"*{base}"
    out = ["`verilator_config",
           # (A comment must not start with the word "verilator": that makes it a directive.)
           f"// Lint waivers for {base}, made by vmshm together with it: regenerate both",
           "// together. The reasons are VERILATOR_WAIVERS in vmshm.harness.lint.", ""]
    for w in waivers:
        out.append(f"// {w.rule}: {w.reason}")
        if w.scope == "file":
            out.append(f'lint_off -rule {w.rule} -file "{pattern}"')
        elif w.scope in ("internal", "zero-width"):
            for first, last in _internal_lines(verilog, zero_width=w.scope == "zero-width"):
                lines = f"{first}" if first == last else f"{first}-{last}"
                out.append(f'lint_off -rule {w.rule} -file "{pattern}" -lines {lines}')
        elif w.scope == "submodules":
            for number in _submodule_lines(verilog, os.path.splitext(base)[0]):
                out.append(f'lint_off -rule {w.rule} -file "{pattern}" -lines {number}')
        else:
            raise ValueError(f"waiver scope must be 'file', 'internal', 'zero-width' or "
                             f"'submodules', not {w.scope!r}")
    return "\n".join(out) + "\n"


def verilator_lint(verilog_file, top, *, wall=False, config=None, env=None):
    """Lint one Verilog file with Verilator and return the :class:`subprocess.CompletedProcess`.

    Parameters
    ----------
    verilog_file : str or Path
        The Verilog to lint.
    top : str
        Its top module.
    wall : bool
        Add ``-Wall`` (style and unused-signal warnings too).
    config : str or Path, optional
        A configuration file from :func:`verilator_config`; without one, every rule in
        :data:`VERILATOR_WAIVERS` is switched off with ``-Wno-RULE`` instead.
    env : dict, optional
        Environment; by default :func:`verilator_env`'s.

    Raises
    ------
    FileNotFoundError
        Verilator is not installed.
    """
    import subprocess

    env = verilator_env() if env is None else env
    if env is None:
        raise FileNotFoundError(missing_reason("verilator"))
    args = ["verilator", "--lint-only", "--top-module", top]
    if wall:
        args.append("-Wall")
    if config is None:
        args += [f"-Wno-{rule}" for rule in VERILATOR_WAIVERS]
    else:
        args.append(str(config))
    args.append(str(verilog_file))
    return subprocess.run(args, capture_output=True, text=True, env=env)
