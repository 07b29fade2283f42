"""The ``vmshm`` command: the table of subcommands, and the one place errors become messages.

Each subcommand is a module of :mod:`vmshm.commands` with ``add_arguments(parser)`` and
``run(args, console)`` (``demo`` is :mod:`vmshm.commands.demo`, ``scenario``
:mod:`vmshm.commands.scenario`, ...); the code it drives stays in its layer below. The options
several commands share (sizes, IDs, the device's build options) and :exc:`UsageError` are in
:mod:`vmshm.options`, below all of them. A new subcommand is one module there and one more entry
in :func:`_commands`.
"""

import argparse
import errno
import os
import signal
import sys
import threading

from vmshm import __version__
from vmshm.options import UsageError, parse_size

__all__ = ["main", "parse_size"]


def _commands():
    """Return ``(name, module, add_parser keywords)`` for every subcommand, in ``--help`` order."""
    # No matplotlib until a plot is drawn, no simulator until a command runs one.
    from vmshm.commands import (bench, build, channel, demo, formal, fuzz, generate,
                                ivshmem_server, mutate, qemu, regs, scenario, synth, timing)

    return [
        ("demo", demo, dict(
            help="run the original userspace example on the simulated device",
            description="Open /dev/vmshm0, ioctl(fd, 0, NAME), mmap the window, print the line "
                        "at offset 0, write 'I was here: <pid>' there, munmap, close; then print "
                        "the cycles each step took. The window is backed by the real POSIX "
                        "shared-memory object NAME on this machine.")),
        ("generate", generate, dict(
            help="write the device's Verilog",
            description="Write one top as a standalone Verilog module: the core (vmshm_core, "
                        "requests tagged with a BAR) or the PCI function (vmshm_pci, with its "
                        "configuration space).")),
        ("regs", regs, dict(
            help="print the register map: Markdown, the guest's C header, SystemRDL, IP-XACT, "
                 "HTML or a PeakRDL C header",
            description="Print the one register definition, abi/regmap.py, as docs/registers.md "
                        "(the default), guest/vmshm_regs.h, or through the PeakRDL exporters from "
                        "a SystemRDL model of it: SystemRDL, IP-XACT, HTML, a C header.")),
        ("bench", bench, dict(
            help="measure simulation speed on each backend",
            description="Run a fixed workload (probe, open, 64 KiB written and read back through "
                        "the window, close) on each backend and print wall time, simulated "
                        "cycles and cycles per second, beside an empty loop that only awaits the "
                        "clock for the same number of cycles on the same backend.")),
        ("scenario", scenario, dict(
            help="list the scenario suite, or run one scenario on a backend",
            description="Without NAME, list every registered scenario. With NAME, run it against "
                        "a fresh object on the chosen backend and print its transactions; "
                        "--waves writes a waveform named after it.")),
        # "resolve" lets synth's --top and --data-width take several values.
        ("synth", synth, dict(
            conflict_handler="resolve",
            help="synthesize for an ECP5 FPGA and report LUTs, flip-flops, block RAMs and Fmax",
            description="Synthesize, place and route tops out of context for an ECP5 device with "
                        "Yosys and nextpnr from PyPI (pip install 'vmshm[fpga]'), and print their "
                        "utilisation and Fmax. Several --top and --data-width values make one "
                        "table.")),
        ("build", build, dict(
            help="build the on-chip self-test for an FPGA board",
            description="Build the self-test (the PCI function, a sequencer playing the driver "
                        "and a block-RAM host; the result on the LEDs) for an amaranth-boards "
                        "platform: a bitstream for an ECP5 board, with the open toolchain from "
                        "PyPI; the vendor tools' build plan for any other.")),
        ("formal", formal, dict(
            help="prove the device's properties with SymbiYosys (never wedges, ...)",
            description="Check the formal properties of formal/props.py and print one line each: "
                        "proved, bounded to N cycles, or FAILED with the counterexample's VCD.")),
        ("mutate", mutate, dict(
            help="run the RTL mutant catalogue against the tests: killed or survived",
            description="Apply each single-expression mutant of formal/mutants.json (found in "
                        "the RTL's syntax tree) in a fresh pytest process, run the module's own "
                        "tests, its formal checks and the daily subset, stopping at the first "
                        "failure, and print which test killed it, or that it survived.")),
        ("timing", timing, dict(
            help="study the cycles of OPEN, CLOSE and window accesses, phase by phase",
            description="Run ioctl (name write + OPEN read), a window read and write, and CLOSE "
                        "on the simulated device, cut each into phases at the host's handshakes, "
                        "and print them beside the model of docs/timing.md; --sweep varies one "
                        "parameter. Writes table.txt, timing.csv, timing.json and timing.png "
                        "into --out.")),
        ("qemu", qemu, qemu.HELP),
        ("ivshmem-server", ivshmem_server, ivshmem_server.HELP),
        ("channel", channel, channel.HELP),
        ("fuzz", fuzz, fuzz.HELP),
    ]


def _parser(commands=None):
    parser = argparse.ArgumentParser(
        prog="vmshm", description="VMShm: a host-to-guest shared-memory PCI device, simulated "
                                  "against real POSIX shared memory.")
    parser.add_argument("--version", action="version", version=f"vmshm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, kwargs in commands or _commands():
        module.add_arguments(sub.add_parser(name, **kwargs))
    return parser


def _errno_name(code):
    return errno.errorcode.get(code, f"errno {code}")


def _fail(console, code, message):
    console.print(f"vmshm: {_errno_name(code)}: {message}", style="red")
    return 1


def main(argv=None):
    """Run the ``vmshm`` command line and return its exit status."""
    from vmshm.console import escaped, make_console

    # Names, object content, paths and messages are printed as they are: see vmshm.console.
    console = make_console()
    err = make_console(stderr=True)
    commands = _commands()
    args = _parser(commands).parse_args(argv)
    run = {name: module.run for name, module, _ in commands}[args.command]
    previous = _stop_on_sigterm()
    try:
        return run(args, console)
    except UsageError as exc:
        err.print(f"vmshm {args.command}: {exc}", style="red")
        return 2
    except ValueError as exc:
        # Parameter checks in the RTL and models say what was wrong; no traceback for them.
        err.print(f"vmshm {args.command}: {exc}", style="red")
        return 2
    except OSError as exc:
        # A name or path may hold terminal escape bytes: printed escaped, never executed.
        name = escaped(exc.filename) if exc.filename is not None else ""
        return _fail(err, exc.errno or errno.EIO,
                     f"{name}: {exc.strerror}" if name else str(exc.strerror or exc))
    except AssertionError as exc:
        # A scenario's or the demo's check of the device failed: what it expected, in words.
        err.print(f"vmshm {args.command}: a check failed: {exc}", style="red")
        return 1
    except RuntimeError as exc:
        # A simulator that could not build or run, or a device that hung: say what happened.
        err.print(f"vmshm {args.command}: {exc}", style="red")
        return 1
    except KeyboardInterrupt as exc:
        # The simulation's coroutines are left suspended; closing them at exit is not news.
        sys.unraisablehook = lambda unraisable: None
        if isinstance(exc, _Terminated):
            err.print("vmshm: terminated", style="red")
            return 128 + signal.SIGTERM
        err.print("vmshm: interrupted", style="red")
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``timeout``, ``kill``): unwound like Ctrl-C, so scratch objects go."""


def _stop_on_sigterm():
    """Make SIGTERM unwind the command as Ctrl-C does, running every ``finally`` on the way.

    By default SIGTERM ends the process at once and leaves the run's scratch objects in
    /dev/shm. A child forked from here gets the default back. Returns the handler it replaced,
    or ``None`` where Python lets no handler be set (outside the main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise _Terminated()

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
