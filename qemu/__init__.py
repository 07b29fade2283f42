"""Serve a real QEMU guest with VMShm's simulated RTL: ``vmshm qemu``.

:mod:`.mpqemu` speaks QEMU's multi-process PCI proxy protocol (the transport); :mod:`.device`
answers its requests with the simulated PCI function; :mod:`.image` builds the guest's
initramfs; :mod:`.command` is the command line.
"""
