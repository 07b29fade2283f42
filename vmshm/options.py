"""The command line's shared vocabulary: sizes, cycle counts, IDs and the device's build options.

Every ``vmshm`` command that builds a device takes the same options (:func:`add_core_args`,
:func:`add_pci_args`) and turns them into a top's parameters with :func:`core_args`; a mistake
on the command line is a :exc:`UsageError` (one line, exit status 2). Commands import this
module; it imports none of them.
"""

import argparse
import re

__all__ = ["UsageError", "parse_size", "integer", "cycles", "hex16", "hex_bits", "add_core_args",
           "add_pci_args", "TOP_OPTIONS", "core_args"]

_UNITS = {"": 1, "k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mi": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "b": 1}


class UsageError(Exception):
    """A mistake on the command line: reported in one line, exit status 2."""


def parse_size(text):
    """Parse a byte count such as ``4096``, ``0x1000``, ``64K`` or ``1MiB``."""
    m = re.fullmatch(r"\s*(0x[0-9a-fA-F]+|\d+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: use bytes, or a number with K, M or G (e.g. 1M)")
    return int(m.group(1), 0) * _UNITS[m.group(2).lower()]


def integer(minimum=0):
    """Return an argparse type taking a whole number (decimal, or ``0x`` hex) of at least
    ``minimum``."""
    def parse(text):
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value
    return parse


def cycles(text):
    """Parse a non-negative whole number of clock cycles (decimal, or ``0x`` hexadecimal)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of cycles") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cycles must not be negative, not {value}")
    return value


def add_core_args(p):
    """Add the core's build options (BAR sizes, data width, host timeout) to the parser ``p``."""
    p.add_argument("--window-size", type=parse_size, default=1 << 20, metavar="N",
                   help="size of BAR1, the window (power of two; default 1M)")
    p.add_argument("--name-size", type=parse_size, default=1 << 10, metavar="N",
                   help="size of BAR2, the name buffer (power of two; default 1K)")
    p.add_argument("--data-width", type=int, choices=(32, 64), default=32, metavar="W",
                   help="data path width in bits: 32 or 64 (default 32)")
    p.add_argument("--regs-size", type=parse_size, choices=(256, 4096), default=256,
                   metavar="N", help="size of BAR0, the registers: 256 (default) or 4K")
    p.add_argument("--window-64bit", action="store_true",
                   help="make the window a 64-bit BAR (the name buffer moves to BAR3)")
    p.add_argument("--host-timeout", type=cycles, default=None, metavar="CYCLES",
                   help="cycles the device waits for the host before it answers ETIMEDOUT "
                        "(default 5619: 45 µs at 125 MHz, inside PCIe's 50 µs completion "
                        "timeout; 0 waits for ever)")


def hex16(text):
    """Parse a 16-bit hexadecimal ID such as ``1af4``."""
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hexadecimal ID") from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} does not fit 16 bits")
    return value


def hex_bits(bits):
    """Return a parser of hexadecimal numbers that fit ``bits`` bits."""
    def parse(text):
        try:
            value = int(text, 16)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a hexadecimal number") from None
        if not 0 <= value < 1 << bits:
            raise argparse.ArgumentTypeError(f"{text!r} does not fit {bits} bits")
        return value
    return parse


def add_pci_args(p):
    """Add the PCI function's identity options (vendor, device, class, ...) to the parser ``p``."""
    p.add_argument("--vendor-id", type=hex16, default=None, metavar="HEX",
                   help="PCI vendor ID (default 1af4, the original VMShm's)")
    p.add_argument("--device-id", type=hex16, default=None, metavar="HEX",
                   help="PCI device ID (default 6661)")
    p.add_argument("--subsystem-vendor-id", type=hex16, default=None, metavar="HEX",
                   help="PCI subsystem vendor ID (default 1af4)")
    p.add_argument("--subsystem-id", type=hex16, default=None, metavar="HEX",
                   help="PCI subsystem ID (default 1100)")
    p.add_argument("--revision", type=hex_bits(8), default=None, metavar="HEX",
                   help="PCI revision ID (default 01)")
    p.add_argument("--class-code", type=hex_bits(24), default=None, metavar="HEX",
                   help="PCI class code (default 050000, RAM memory controller)")


#: Options only some tops take (the PCI function's BAR layout and identity), by parameter name.
TOP_OPTIONS = ("window_64bit", "vendor_id", "device_id", "subsystem_vendor_id", "subsystem_id",
               "revision", "class_code", "axis_width")


def core_args(args, top="pci", *, strict=True):
    """Return the parameters of ``top`` the parsed ``args`` give.

    With ``strict``, an option the top does not take is a :exc:`UsageError`; without, it is
    left out (``vmshm synth`` builds several tops from one command line).
    """
    from vmshm.rtl.tops import top_parameters

    out = {"window_size": args.window_size, "name_size": args.name_size,
           "data_width": args.data_width, "regs_size": args.regs_size}
    if args.host_timeout is not None:
        out["host_timeout"] = args.host_timeout
    accepted = top_parameters(top)
    given = {n: getattr(args, n, None) for n in TOP_OPTIONS}
    given = {n: v for n, v in given.items() if v is not None and v is not False}
    refused = [n for n in given if n not in accepted]
    if refused and strict:
        flags = ", ".join("--" + n.replace("_", "-") for n in refused)
        raise UsageError(f"{flags}: not taken by --top {top}")
    out.update((n, v) for n, v in given.items() if n in accepted)
    return out
