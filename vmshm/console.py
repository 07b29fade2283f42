"""The one rule for everything ``vmshm`` prints: text is text.

Names, object content, paths, scenario names and exception messages come from a user or from the
host. Rich would read ``[/]`` in them as a closing tag (a ``MarkupError``), ``[bold red]`` as a
style and ``:smile:`` as an emoji, and drop ``[test]`` from ``pip install 'vmshm[test]'``. So
every console the command prints through is made here, with markup and emoji codes off; the
command's own styling is passed as ``style=`` or built with :func:`styled`, never written
inline. Names and paths also go through :func:`escaped`, so the bytes they hold cannot move the
cursor or clear the terminal; and as a net under every line a command prints, the console itself
escapes the control characters of the text it writes (only rich's own styles and cursor moves
reach the terminal as codes), so a name printed raw in some message still cannot.
"""

import sys
import unicodedata

from rich.console import Console
from rich.text import Text

__all__ = ["make_console", "styled", "note", "escaped", "plain_text"]


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
    return _TextConsole(stderr=stderr, width=width, markup=False, emoji=False, highlight=False,
                        soft_wrap=True, **kwargs)


#: Unicode categories the console never writes raw: controls, format characters, line and
#: paragraph separators.
_UNSAFE = ("Cc", "Cf", "Zl", "Zp")


def _control_escaped(text):
    """Return `text` with its control and format characters (ESC, BEL, C1's CSI, a right-to-left
    override, ...) escaped, line breaks and tabs kept: the lines rich lays out hold them."""
    if text.isprintable():
        return text
    return "".join(escaped(ch) if unicodedata.category(ch) in _UNSAFE and ch not in "\n\t"
                   else ch for ch in text)


class _TextConsole(Console):
    """A console that escapes the control characters of every piece of text it writes.

    Rich writes a text segment's characters as they are, ESC included; its own styles and cursor
    moves are rendered apart from the text (a style's codes around it, control segments for the
    cursor), so escaping the text segments leaves them working. ``_render_buffer`` is where
    rich turns segments into the characters written: the one place every print passes.
    """

    def _render_buffer(self, buffer):
        return super()._render_buffer(
            seg if seg.control else seg._replace(text=_control_escaped(seg.text))
            for seg in buffer)


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


def plain_text(renderable, width=200):
    """Return ``renderable`` (a table, say) as the plain text a console of ``width`` prints."""
    import os
    with open(os.devnull, "w") as sink:
        console = make_console(record=True, width=width, file=sink)
        console.print(renderable)
    return console.export_text()
