"""The guest's side of VMShm, in C: the ``vmshm.ko`` driver, the example, the register header.

Shipped as package data so ``vmshm qemu`` can build them for its guest after a plain
``pip install``; ``guest/vmshm_regs.h`` is generated (``vmshm regs --format guest-header``).
"""
