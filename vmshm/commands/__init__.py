"""The ``vmshm`` subcommands, one module each: ``add_arguments(parser)`` and ``run(args, console)``.

A command checks its arguments and prints; the code it drives stays in its layer below
(``scenarios/``, ``timing/``, ``fpga/``, ``qemu/``, ...). :mod:`vmshm.cli` lists them; a new
command is a module here and one entry there.
"""
