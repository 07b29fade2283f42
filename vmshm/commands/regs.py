"""``vmshm regs``: print the register map as ``docs/registers.md`` or as the guest's C header."""

import sys

from vmshm.abi.cheader import render_c_header
from vmshm.abi.regmap import render_markdown

__all__ = ["add_arguments", "run"]


def add_arguments(parser):
    """Add ``vmshm regs``'s options to ``parser``."""
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument("--c-header", action="store_true",
                        help="print the guest driver's C header (guest/vmshm_regs.h) instead")


def run(args, console):
    """Run ``vmshm regs`` with parsed ``args`` and return the exit status."""
    text = render_c_header() if args.c_header else render_markdown()
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0
