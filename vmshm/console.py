"""The one rule for everything ``vmshm`` prints: text is text.

Names, object content, paths, scenario names and exception messages come from a user or from the
host. Rich would read ``[/]`` in them as a closing tag (a ``MarkupError``), ``[bold red]`` as a
style and ``:smile:`` as an emoji, and drop ``[test]`` from ``pip install 'vmshm[test]'``. So
every console the command prints through is made here, with markup and emoji codes off; the
command's own styling is passed as ``style=`` or built with :func:`styled`, never written
inline. Names and paths also go through :func:`escaped`, so the bytes they hold cannot move the
cursor or clear the terminal.
"""

import sys

from rich.console import Console
from rich.text import Text

__all__ = ["make_console", "styled", "note", "escaped"]


def make_console(*, stderr=False, width=None, **kwargs):
    """Return a :class:`rich.console.Console` that prints every string as it is.

    Parameters
    ----------
    stderr : bool
        Print to standard error.
    width : int, optional
        Columns. By default the terminal's, or 132 when the output is not a terminal (a file,
        a CI log), so wide tables are not squeezed into 80.
    **kwargs
        Further :class:`~rich.console.Console` arguments (``record``, ``file``, ...).
    """
    if width is None:
        stream = sys.stderr if stderr else sys.stdout
        width = None if stream.isatty() else 132
    return Console(stderr=stderr, width=width, markup=False, emoji=False, highlight=False,
                   soft_wrap=True, **kwargs)


def styled(*parts):
    """Return a :class:`rich.text.Text` of `parts`: strings as they are, ``(text, style)`` pairs
    styled; nothing in any of them is read as markup."""
    return Text.assemble(*parts)


def note(text):
    """Return ``note: TEXT`` with the word ``note:`` in yellow, `text` as it is."""
    return styled(("note:", "yellow"), " ", text)


def escaped(text):
    r"""Return `text` with every character that is not printable escaped as Python writes it.

    Terminal control bytes (``ESC`` in ``/x\x1b[2J``, a newline, ``DEL``), invisible format
    characters (a right-to-left override) and bytes that were not UTF-8 (decoded with
    ``surrogateescape``) become ``\x1b``, ``\n``, ``\u202e``, ``\xff``; letters of any script and
    spaces stay as they are, so ``/héllo wörld`` prints as typed.
    """
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")     # an undecodable byte, as the byte
        else:
            out.append(repr(ch)[1:-1])
    return "".join(out)
