"""The benches that boot a QEMU guest, and the tables they print: the top of the layers.

- :mod:`~vmshm.benches.qemu`: ``vmshm qemu --bench``, read latency in the guest, RTL beside a
  floor device;
- :mod:`~vmshm.benches.doorbell`: ``vmshm qemu --doorbell-bench``, doorbell round trips;
- :mod:`~vmshm.benches.channel`: ``vmshm channel --bench``, the message channel's figures.

They sit here because they join the transports (``qemu/``, ``ivshmem/``) and the backends; neither
transport imports the other.
"""
