"""Checks a command makes before it creates or simulates anything: validate, then act.

Each raises what the command reports in one line: ``ValueError`` for a size out of range. (An
output file that cannot be written is checked by the backends too, so that check is
:func:`vmshm.harness.checks.check_output_file`, below every command.)
"""

__all__ = ["MAX_OBJECT_SIZE", "check_object_size"]

#: The largest size a POSIX object can have: ``off_t`` is a signed 64-bit number on Linux.
MAX_OBJECT_SIZE = (1 << 63) - 1


def check_object_size(size, what="size"):
    """Return `size` if a shared-memory object can have it, else raise ``ValueError``."""
    if size <= 0:
        raise ValueError(f"{what} must be positive, not {size}")
    if size > MAX_OBJECT_SIZE:
        raise ValueError(f"{what} {size} is too large: an object holds at most "
                         f"{MAX_OBJECT_SIZE} bytes (8 EiB)")
    return size
