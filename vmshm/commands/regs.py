"""``vmshm regs``: the register map as docs/registers.md, the guest's C header, or through PeakRDL.

Also docs/config_space.md, the soft function's configuration space.
"""

import os
import sys
import tempfile

from vmshm.abi import config_space
from vmshm.abi.cheader import render_c_header
from vmshm.harness.checks import check_output_file
from vmshm.options import UsageError
from vmshm.abi.rdl import EXPORT_FORMATS, access_markdown, export
from vmshm.abi.regmap import render_markdown

__all__ = ["FORMATS", "add_arguments", "run", "render"]

#: ``--format`` values: the three the project renders itself, then the PeakRDL exports.
FORMATS = ("markdown", "guest-header", "config-space", *EXPORT_FORMATS)


def add_arguments(parser):
    """Add ``vmshm regs``'s options to ``parser``."""
    parser.add_argument("--format", choices=FORMATS, default="markdown",
                        help="markdown: docs/registers.md (the default); guest-header: "
                             "guest/vmshm_regs.h; config-space: docs/config_space.md; systemrdl, ipxact (IEEE 1685-2014), html (a "
                             "directory: needs -o), c-header: exported by the PeakRDL tools "
                             "(pip install 'vmshm[regs]')")
    parser.add_argument("-o", "--output", metavar="PATH",
                        help="write here instead of stdout (for html, the directory to write)")


def render(fmt):
    """Return the register map in ``fmt`` as text (any format but ``html``)."""
    if fmt == "markdown":
        return render_markdown() + access_markdown()
    if fmt == "guest-header":
        return render_c_header()
    if fmt == "config-space":
        return config_space.render_markdown()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out")
        export(fmt, path)
        with open(path) as f:
            return f.read()


def run(args, console):
    """Run ``vmshm regs`` with parsed ``args`` and return the exit status."""
    if args.format == "html":
        if not args.output:
            raise UsageError("--format html writes a directory: give it with -o DIR")
        export("html", args.output)
        return 0
    if args.output:
        check_output_file(args.output)
    text = render(args.format)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0
