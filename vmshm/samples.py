"""Sample outputs in the README and docs/, produced by the command that prints them.

No figure in the documentation is typed by hand. A sample is a fenced block right after a marker
naming the command that produced it::

    <!-- produced by: vmshm demo --shm /vmshm-demo --create 1M; lines 1:7; shm /vmshm-demo -->
    ```
    ...what the command printed...
    ```

The options after the command, separated by ``;``:

``lines A:B``
    keep this slice of the output's lines (Python's slice: ``9:``, ``:7``, ``-3:``).
``keep REGEX``
    then keep only the lines that match (``re.search``).
``shm NAME``
    a POSIX shared-memory object the command creates: each run uses a fresh random name of the
    same length in its place (so runs never meet) and removes it after; the output shows ``NAME``.
``shape DATE``
    the figures vary with the machine: the block shows what the command printed on ``DATE``, and a
    check compares only the shape (every number, and the width of table rules, ignored).
    Without it the check is exact.
The command runs in the checkout's top folder (the one holding pyproject.toml).

``show``
    the block starts with ``$ COMMAND``, so a reader sees what printed it.
``tmp``
    the command runs in a fresh temporary folder, removed after (for one that writes files).
``slow``
    the check runs in the slow part of the test suite (the command takes many seconds).

``python -m vmshm.samples`` re-runs every marked block of README.md and docs/*.md and rewrites the
blocks (and the dates of ``shape`` blocks) with what the commands print now;
``python -m vmshm.samples --check`` says which blocks no longer match, exit status 1.
``tests/test_samples.py`` checks every block the same way.
"""

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Sample", "find_samples", "produce", "matches", "refresh", "main"]

_MARKER = re.compile(r"^<!-- produced by: (?P<spec>.*?) -->\n```[\w-]*\n(?P<body>.*?)^```$",
                     re.M | re.S)
#: A number as commands print them: 172, 1,086, 0.967, 3.1e5, 0xe0000000.
_NUMBER = re.compile(r"0x[0-9a-f]+|\d[\d,]*(\.\d+)?(e[+-]?\d+)?", re.I)
#: A run of one table-drawing or space character: its length follows the widest cell.
_RULE = re.compile(r"([─━═ ])\1+")


@dataclass
class Sample:
    """One marked block: where it is, how to produce it and what it shows now."""
    path: Path
    line: int               # 1-based line of the marker
    command: str
    body: str               # the block's text, without the fences
    lines: slice = field(default_factory=lambda: slice(None))
    keep: str = None
    shm: str = None
    date: str = None        # set: compare the shape only
    show: bool = False
    tmp: bool = False
    slow: bool = False
    span: tuple = (0, 0)    # character span of the body in the file

    @property
    def where(self):
        return f"{self.path.name}:{self.line}"


def _parse_slice(text):
    parts = [int(p) if p.strip() else None for p in text.split(":")]
    if len(parts) != 2:
        raise ValueError(f"lines {text!r}: give A:B")
    return slice(*parts)


def _parse(path, match, text):
    command, *options = [part.strip() for part in match["spec"].split(";")]
    sample = Sample(path, text.count("\n", 0, match.start()) + 1, command, match["body"],
                    span=match.span("body"))
    for option in options:
        word, _, value = option.partition(" ")
        if word == "lines":
            sample.lines = _parse_slice(value)
        elif word == "keep":
            sample.keep = value
        elif word == "shm":
            sample.shm = value
        elif word == "shape":
            sample.date = value
        elif word in ("show", "slow", "tmp"):
            setattr(sample, word, True)
        else:
            raise ValueError(f"{sample.where}: unknown option {option!r} in the produced-by "
                             f"marker")
    return sample


def find_samples(path):
    """Return the :class:`Sample` blocks of the Markdown file `path`, in order."""
    path = Path(path)
    text = path.read_text()
    return [_parse(path, m, text) for m in _MARKER.finditer(text)]


def _cleanup(name):
    try:
        os.unlink(f"/dev/shm{name}")
    except FileNotFoundError:
        pass


def _root(path):
    # Commands run where a user types them: the checkout's top, beside pyproject.toml.
    for folder in path.resolve().parents:
        if (folder / "pyproject.toml").exists():
            return folder
    return path.parent


def produce(sample, *, timeout=900, cwd=None, bindir=None):
    """Run the sample's command and return the block it should show (no fences, ending in a
    newline).

    Raises
    ------
    RuntimeError
        If the command fails, with its output.

    ``cwd`` runs the command elsewhere than the checkout's top (where it would leave files);
    ``bindir`` is where its commands come from (this Python's by default).
    """
    command = sample.command
    unique = None
    if sample.shm:
        # As long as the name it stands for: OPEN streams the name a byte a cycle, so a longer
        # name would change the cycles the sample shows.
        unique = "/" + (uuid.uuid4().hex * 2)[:len(sample.shm) - 1]
        command = command.replace(sample.shm, unique)
    # The commands of this installation, not whatever `vmshm` a PATH finds first.
    bindir = bindir or Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
               NO_COLOR="1", TERM="dumb")
    try:
        with tempfile.TemporaryDirectory(prefix="vmshm-sample-") as scratch:
            where = cwd or (scratch if sample.tmp else _root(sample.path))
            r = subprocess.run(command, shell=True, capture_output=True, text=True, env=env,
                               timeout=timeout, cwd=where)
    finally:
        if unique:
            _cleanup(unique)
    out = r.stdout if not unique else r.stdout.replace(unique, sample.shm)
    if r.returncode:
        raise RuntimeError(f"{sample.where}: `{sample.command}` exited {r.returncode}:\n"
                           f"{out}{r.stderr}")
    lines = [line.rstrip() for line in out.splitlines()][sample.lines]
    if sample.keep:
        lines = [line for line in lines if re.search(sample.keep, line)]
    if sample.show:
        lines.insert(0, f"$ {sample.command}")
    return "".join(f"{line}\n" for line in lines)


def _shape(text):
    return [_RULE.sub(r"\1", _NUMBER.sub("9", line.rstrip())) for line in text.splitlines()]


def matches(sample, produced):
    """Return whether `produced` (from :func:`produce`) is what the sample's block shows: the
    same text, or for a ``shape`` sample the same lines up to numbers and rule widths."""
    if sample.date:
        return _shape(sample.body) == _shape(produced)
    return [line.rstrip() for line in sample.body.splitlines()] == produced.splitlines()


def refresh(path, *, check=False, only_fast=False, log=print):
    """Re-run every sample of `path`; rewrite the file with the new output unless `check`.

    Returns
    -------
    list of str
        The samples that did not match (``file:line``).
    """
    path = Path(path)
    text = path.read_text()
    stale, pieces, last = [], [], 0
    today = datetime.date.today().isoformat()
    for sample in find_samples(path):
        if only_fast and sample.slow:
            continue
        log(f"{sample.where}: {sample.command}")
        produced = produce(sample)
        if not matches(sample, produced):
            stale.append(sample.where)
        start, end = sample.span
        pieces.append(text[last:start])
        pieces.append(produced)
        last = end
        if sample.date and produced != sample.body:
            # The marker's date says when the figures below it were printed.
            pieces[-2] = _redate(pieces[-2], sample.date, today)
    pieces.append(text[last:])
    if not check:
        path.write_text("".join(pieces))
    return stale


def _redate(before, old, new):
    # Only the last marker before the block is this sample's.
    head, sep, tail = before.rpartition("<!-- produced by:")
    return head + sep + tail.replace(f"shape {old}", f"shape {new}", 1)


def documents(root):
    """Return README.md and docs/*.md under the repository `root`."""
    root = Path(root)
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main(argv=None):
    """``python -m vmshm.samples [--check] [--fast] [FILE...]``: refresh or check the samples."""
    parser = argparse.ArgumentParser(prog="python -m vmshm.samples", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path,
                        help="Markdown files (default: README.md and docs/*.md here)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; list the samples that no longer match")
    parser.add_argument("--fast", action="store_true", help="leave out the samples marked slow")
    args = parser.parse_args(argv)
    files = args.files or documents(Path.cwd())
    stale = []
    try:
        for path in files:
            stale += refresh(path, check=args.check, only_fast=args.fast,
                             log=lambda line: print(line, file=sys.stderr))
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if stale:
        verb = "do not match" if args.check else "were rewritten"
        print(f"{len(stale)} sample(s) {verb}: {', '.join(stale)}")
        return 1 if args.check else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
