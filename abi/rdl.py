"""The register map as a SystemRDL model, for the PeakRDL exporters hardware teams run.

:func:`build` turns :mod:`vmshm.abi.regmap` into a SystemRDL register model through
``systemrdl-compiler``'s importer API (no ``.rdl`` text in between); :func:`export` hands it to
the PeakRDL exporters (SystemRDL, IP-XACT, HTML, C header) and :func:`python_layer` to
``peakrdl-python`` for a generated register access layer. Nothing here writes a format by hand.

The PeakRDL packages are the ``regs`` extra (``pip install 'vmshm[regs]'``); they are imported
only inside the functions that need them, so :data:`ACCESS_RDL` and :func:`access_markdown`
(part of ``docs/registers.md``) work without them.

The model has one block per address space: BAR0 (``regs``: the registers with their fields),
BAR1 (``window``: a memory), BAR2 (``names``: a memory) and the vendor-specific capability in
configuration space (``vndr_cap``). A SystemRDL address map is one address space, so the blocks
sit :func:`spacing` bytes apart in it; only offsets inside a block mean anything to a guest.
"""

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vmshm.abi import regmap
from vmshm.abi.config_space import CAP_OFFSET
from vmshm.abi.regmap import (ABI_VERSION, BAR0_SIZE, BAR_NAME, BAR_REGS, BAR_WINDOW, CAP_LEN,
                              CAPABILITY, DEFAULT_NAME_SIZE, DEFAULT_WINDOW_SIZE, PCI_DEVICE_ID,
                              PCI_VENDOR_ID, REGISTERS, capability_bytes)

__all__ = ["EXTRA_HINT", "MissingExtra", "RdlAccess", "ACCESS_RDL", "INTERRUPT", "PARAMETERS",
           "WHOLE", "BLOCKS", "EXPORT_FORMATS", "spacing", "block_bases", "locate", "field_access",
           "build", "export", "python_layer", "register_model", "access_markdown"]

#: What to install for everything in this module but :data:`ACCESS_RDL`.
EXTRA_HINT = "pip install 'vmshm[regs]'"


class MissingExtra(RuntimeError):
    """A PeakRDL package is not installed; the message says what to install, in one line."""


@dataclass(frozen=True)
class RdlAccess:
    """How one access type of :data:`vmshm.abi.regmap.ACCESS` is said in SystemRDL and IP-XACT.

    Attributes
    ----------
    properties : dict
        SystemRDL field properties, as ``.rdl`` spells them (``{"sw": "r", "swacc": True}``).
    external : bool
        The register is ``external``: SystemRDL's word for a register whose accesses are handed
        to logic outside the register block, which answers when it is done.
    ipxact : dict
        What peakrdl-ipxact writes for such a field: its ``access``, ``modifiedWriteValue``,
        ``readAction``, ``volatile`` and ``testable`` elements (absent ones left out). The
        round-trip test checks the exported XML says exactly this.
    why : str
        Why these properties, and what SystemRDL cannot say.
    """
    properties: dict
    external: bool
    ipxact: dict
    why: str


#: Every register access type, said in SystemRDL: the table of docs/registers.md.
ACCESS_RDL = {
    "RT": RdlAccess(
        {"sw": "r", "hw": "w", "swacc": True, "donttest": True}, True,
        {"access": "read-only", "volatile": "true", "testable": "false"},
        "The read is the trigger: `swacc` tells the hardware of each read, `external` hands "
        "the read to logic outside the register block that answers when the host has, and "
        "`donttest` keeps generated register tests from reading it. `onread = ruser` would say "
        "\"a read has a side effect\" outright (IP-XACT readAction `modify`), but SystemRDL "
        "requires `ruser` fields to be external and IP-XACT cannot say external, so "
        "peakrdl-ipxact's import of such a file does not elaborate."),
    "R": RdlAccess(
        {"sw": "r", "hw": "w"}, False,
        {"access": "read-only", "volatile": "true"},
        "Status the hardware writes and software reads."),
    "RC": RdlAccess(
        {"sw": "rw", "hw": "na", "onwrite": "wclr", "counter": True}, False,
        {"access": "read-write", "volatile": "true", "modifiedWriteValue": "clear"},
        "A counter (`counter`) that any write clears (`onwrite = wclr`). It saturates, said "
        "in the description only: peakrdl-systemrdl writes `incrsaturate` together with its "
        "alias `saturate`, which systemrdl-compiler then rejects."),
    "C": RdlAccess(
        {"sw": "r", "hw": "na"}, False,
        {"access": "read-only"},
        "A constant: its reset value is its value (for WINDOW_SIZE and NAME_SIZE, the build "
        "parameter of the exported build)."),
    "RW": RdlAccess(
        {"sw": "rw", "hw": "r"}, False,
        {"access": "read-write"},
        "Plain storage the hardware reads."),
    "W1C": RdlAccess(
        {"sw": "rw", "hw": "w", "onwrite": "woclr", "stickybit": True}, False,
        {"access": "read-write", "volatile": "true", "modifiedWriteValue": "oneToClear"},
        "Bits the hardware sets, each kept (`stickybit`) until software writes 1 to it "
        "(`onwrite = woclr`). INTR_STATUS is also `intr`; that INTR_MASK enables it is said in "
        "its description: `enable = INTR_MASK.VALUE` is a reference, which peakrdl-systemrdl "
        "cannot write."),
    "W": RdlAccess(
        {"sw": "w", "hw": "r", "swmod": True, "donttest": True}, False,
        {"access": "write-only", "testable": "false"},
        "The write is the action: `swmod` tells the hardware of each write, and `donttest` "
        "keeps generated register tests from ringing doorbells."),
}

#: The register whose bits raise the device's interrupt: SystemRDL's `intr`.
INTERRUPT = "INTR_STATUS"
#: Registers whose value is a build parameter: the argument of :func:`build` that gives it.
PARAMETERS = {"WINDOW_SIZE": "window_size", "NAME_SIZE": "name_size"}
#: Name of the one field of a register that regmap gives no fields.
WHOLE = "VALUE"
#: The model's blocks in address order, each with what it is.
BLOCKS = {
    "regs": f"BAR{BAR_REGS}: the register file ({BAR0_SIZE} bytes; offsets not listed read 0 "
            "and ignore writes)",
    "window": f"BAR{BAR_WINDOW}: the window; loads and stores reach the host object at the "
              "same offset",
    "names": f"BAR{BAR_NAME}: the name buffer, a NUL-terminated POSIX shared-memory name",
    "vndr_cap": f"the vendor-specific capability, at {CAP_OFFSET:#04x} in PCI configuration "
                "space: where a driver finds the BARs and sizes",
}
#: ``vmshm regs --format`` values this module exports, with the PeakRDL package of each.
EXPORT_FORMATS = {"systemrdl": "peakrdl-systemrdl", "ipxact": "peakrdl-ipxact",
                  "html": "peakrdl-html", "c-header": "peakrdl-cheader"}


def _require(module, package):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{package} is not installed: {EXTRA_HINT}") from None


def spacing(window_size=DEFAULT_WINDOW_SIZE, name_size=DEFAULT_NAME_SIZE):
    """Return how far apart the blocks sit: the largest block's size, rounded up to a power of 2."""
    largest = max(BAR0_SIZE, window_size, name_size, CAP_LEN)
    return 1 << (largest - 1).bit_length()


def block_bases(window_size=DEFAULT_WINDOW_SIZE, name_size=DEFAULT_NAME_SIZE):
    """Return ``{block: base address}`` of :data:`BLOCKS` in the model of that build."""
    step = spacing(window_size, name_size)
    return {name: i * step for i, name in enumerate(BLOCKS)}


def field_access(register, field=None):
    """Return the access type of ``field`` of ``register`` (its own, else the register's)."""
    return (field.access if field is not None else None) or register.access


def _fields(register, reset):
    """Yield ``(name, lsb, width, doc, access, reset)`` of each field of ``register``."""
    if not register.fields:
        yield WHOLE, 0, 32, None, register.access, reset
        return
    covered = 0
    for f in register.fields:
        mask = (1 << f.width) - 1
        covered |= mask << f.offset
        yield f.name, f.offset, f.width, f.doc, field_access(register, f), reset >> f.offset & mask
    if reset & ~covered:
        raise ValueError(f"register {register.name} resets bits {reset & ~covered:#x} that no "
                         f"field holds")


def _access_props(access, rdltypes):
    """Return :data:`ACCESS_RDL`'s properties for ``access`` as systemrdl-compiler values."""
    enums = {"sw": rdltypes.AccessType, "hw": rdltypes.AccessType,
             "onwrite": rdltypes.OnWriteType, "onread": rdltypes.OnReadType}
    return {k: enums[k][v] if k in enums else v for k, v in ACCESS_RDL[access].properties.items()}


def _register(imp, rdltypes, r, reset):
    """Return the definition of the BAR0 register ``r`` with its fields."""
    rd = imp.create_reg_definition()
    imp.assign_property(rd, "desc", r.doc)
    for name, lsb, width, doc, access, value in _fields(r, reset):
        fd = imp.create_field_definition()
        for prop, v in _access_props(access, rdltypes).items():
            imp.assign_property(fd, prop, v)
        if r.name == INTERRUPT:
            imp.assign_property(fd, "intr", True)
        if doc:
            imp.assign_property(fd, "desc", doc)
        imp.assign_property(fd, "reset", value)
        imp.add_child(rd, imp.instantiate_field(fd, name, lsb, width))
    return rd


def _memory(imp, rdltypes, size, desc):
    md = imp.create_mem_definition()
    imp.assign_property(md, "mementries", size // 4)
    imp.assign_property(md, "memwidth", 32)
    imp.assign_property(md, "sw", rdltypes.AccessType.rw)
    imp.assign_property(md, "desc", desc)
    return md


def build(window_size=DEFAULT_WINDOW_SIZE, name_size=DEFAULT_NAME_SIZE):
    """Return the register map as an elaborated SystemRDL model (its ``RootNode``).

    Parameters
    ----------
    window_size, name_size : int
        The build's BAR1 and BAR2 sizes: the memories' sizes and the WINDOW_SIZE, NAME_SIZE
        registers' values.

    Raises
    ------
    MissingExtra
        systemrdl-compiler is not installed.
    """
    systemrdl = _require("systemrdl", "systemrdl-compiler")
    from systemrdl import rdltypes
    from systemrdl.source_ref import FileSourceRef

    rdlc = systemrdl.RDLCompiler()
    imp = systemrdl.RDLImporter(rdlc)
    # Messages about the model point at the register map it came from.
    imp.default_src_ref = FileSourceRef(regmap.__file__)
    params = {"window_size": window_size, "name_size": name_size}
    major, minor = ABI_VERSION >> 16, ABI_VERSION & 0xFFFF
    bases = block_bases(window_size, name_size)

    top = imp.create_addrmap_definition("vmshm")
    imp.assign_property(top, "name", "VMShm")
    imp.assign_property(top, "desc", (
        f"VMShm, a host-to-guest shared-memory PCI device ({PCI_VENDOR_ID:04x}:"
        f"{PCI_DEVICE_ID:04x}), register ABI {major}.{minor} (ABI_VERSION {ABI_VERSION:#010x}). "
        f"Each block is an address space of its own: "
        + "; ".join(f"{name}, {what}" for name, what in BLOCKS.items())
        + f". They sit {spacing(window_size, name_size):#x} bytes apart here only because one "
        "SystemRDL address map is one address space; the host places each BAR, and only "
        "offsets inside a block mean anything to a guest."))

    regs = imp.create_addrmap_definition("vmshm_regs")
    imp.assign_property(regs, "desc", BLOCKS["regs"])
    for r in REGISTERS:
        reset = r.reset if r.reset is not None else params[PARAMETERS[r.name]]
        inst = imp.instantiate_reg(_register(imp, rdltypes, r, reset), r.name, r.offset)
        inst.external = ACCESS_RDL[r.access].external
        imp.add_child(regs, inst)

    cap = imp.create_addrmap_definition("vmshm_cap")
    imp.assign_property(cap, "desc", BLOCKS["vndr_cap"])
    raw = capability_bytes(window_size=window_size, name_size=name_size, regs_bar=BAR_REGS,
                           window_bar=BAR_WINDOW, name_bar=BAR_NAME)
    for f in CAPABILITY:
        rd = imp.create_reg_definition()
        imp.assign_property(rd, "regwidth", 8 * f.size)
        imp.assign_property(rd, "desc", f.doc)
        fd = imp.create_field_definition()
        for prop, v in _access_props("C", rdltypes).items():
            imp.assign_property(fd, prop, v)
        imp.assign_property(fd, "reset", int.from_bytes(raw[f.offset:f.offset + f.size],
                                                        "little"))
        imp.add_child(rd, imp.instantiate_field(fd, WHOLE, 0, 8 * f.size))
        imp.add_child(cap, imp.instantiate_reg(rd, f.name, f.offset))

    imp.add_child(top, imp.instantiate_addrmap(regs, "regs", bases["regs"]))
    imp.add_child(top, imp.instantiate_mem(_memory(imp, rdltypes, window_size, BLOCKS["window"]),
                                           "window", bases["window"]))
    imp.add_child(top, imp.instantiate_mem(_memory(imp, rdltypes, name_size, BLOCKS["names"]),
                                           "names", bases["names"]))
    imp.add_child(top, imp.instantiate_addrmap(cap, "vndr_cap", bases["vndr_cap"]))
    imp.register_root_component(top)
    return rdlc.elaborate("vmshm")


def export(fmt, path, **sizes):
    """Write the model in ``fmt`` (one of :data:`EXPORT_FORMATS`) to ``path`` with PeakRDL.

    ``path`` is a file, or for ``html`` a directory. ``sizes`` go to :func:`build`.

    Raises
    ------
    MissingExtra
        The format's exporter (or systemrdl-compiler) is not installed.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    _require("systemrdl", "systemrdl-compiler")
    package = EXPORT_FORMATS[fmt]
    module = _require(package.replace("-", "_"), package)
    top = build(**sizes).top
    path = os.fspath(path)
    major, minor = ABI_VERSION >> 16, ABI_VERSION & 0xFFFF
    if fmt == "systemrdl":
        module.SystemRDLExporter().export(top, path)
    elif fmt == "ipxact":
        # The component's VLNV carries the ABI version, as vendor tools show it.
        module.IPXACTExporter(vendor="vmshm", library="vmshm",
                              version=f"{major}.{minor}").export(top, path)
    elif fmt == "html":
        module.HTMLExporter().export(top, path, title=f"VMShm registers, ABI {major}.{minor}")
    else:
        # Hierarchical names (VMSHM__REGS__STATUS__OPEN_bm): the model's registers are
        # anonymous types, whose lexical names would all start with "xtern__".
        from peakrdl_cheader.exporter import CHeaderExporter
        CHeaderExporter().export(top, path, reuse_typedefs=False)


def _cache_root():
    root = os.environ.get("VMSHM_BUILD_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "vmshm") / "ral"


_layers = {}


def python_layer(window_size=DEFAULT_WINDOW_SIZE, name_size=DEFAULT_NAME_SIZE):
    """Return the register access layer peakrdl-python generates from the model, as a module.

    The layer is async (``await model.regs.STATUS.read()``); its ``vmshm_cls(callbacks=...)``
    takes a ``peakrdl_python.lib.AsyncCallbackSet`` whose addresses are the model's
    (:func:`block_bases`). It is generated, never committed: into ``$VMSHM_BUILD_DIR/ral``
    (default ``~/.cache/vmshm/ral``), under a hash of the model's SystemRDL text and the PeakRDL
    versions, so it is never stale; each process imports it once.

    Raises
    ------
    MissingExtra
        peakrdl-python, peakrdl-systemrdl or systemrdl-compiler is not installed.
    """
    peakrdl_python = _require("peakrdl_python", "peakrdl-python")
    rdl_exporter = _require("peakrdl_systemrdl", "peakrdl-systemrdl")
    from peakrdl_python.__about__ import __version__ as python_version
    from systemrdl.__about__ import __version__ as compiler_version

    top = build(window_size, name_size).top
    with tempfile.TemporaryDirectory() as tmp:
        rdl_exporter.SystemRDLExporter().export(top, os.path.join(tmp, "vmshm.rdl"))
        text = Path(tmp, "vmshm.rdl").read_text()
    key = hashlib.sha256(f"{python_version} {compiler_version}\n{text}".encode()).hexdigest()[:16]
    final = _cache_root() / key
    if final in _layers:        # by folder: another $VMSHM_BUILD_DIR gets a build of its own
        return _layers[final]
    if not (final / "vmshm" / "__init__.py").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}-"))
        peakrdl_python.PythonExporter().export(
            top, str(staging), asyncoutput=True, skip_test_case_generation=True,
            # The generated code imports peakrdl-python's runtime instead of carrying a copy
            # of that LGPL library; the sha256 names are the same in every process.
            skip_library_copy=True,
            hashing_method=peakrdl_python.exporter.NodeHashingMethod.SHA256)
        try:
            # Whole or not at all: another process may be generating the same layer.
            staging.rename(final)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not final.exists():
                raise
    # A name of its own, so the generated package named "vmshm" never shadows this one.
    name = f"vmshm_ral_{key}"
    spec = importlib.util.spec_from_file_location(
        name, final / "vmshm" / "__init__.py",
        submodule_search_locations=[str(final / "vmshm")])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _layers[final] = importlib.import_module(f"{name}.reg_model.vmshm")
    return _layers[final]


def locate(address, window_size=DEFAULT_WINDOW_SIZE, name_size=DEFAULT_NAME_SIZE):
    """Return ``(block, offset)``: which block of :data:`BLOCKS` a model address is in, and where."""
    step = spacing(window_size, name_size)
    index, offset = divmod(address, step)
    if not 0 <= index < len(BLOCKS):
        raise ValueError(f"address {address:#x} is in no block of the model")
    return list(BLOCKS)[index], offset


def register_model(read, write, window_size=DEFAULT_WINDOW_SIZE, name_size=DEFAULT_NAME_SIZE):
    """Return the device as the generated layer (:func:`python_layer`) sees it, on your accesses.

    Parameters
    ----------
    read : async callable
        ``await read(block, offset, size)`` returns the ``size``-byte value at ``offset`` in
        ``block`` (a key of :data:`BLOCKS`).
    write : async callable
        ``await write(block, offset, size, value)`` writes it.

    Returns
    -------
    The layer's model of the whole device: ``await model.regs.STATUS.OPEN.read()``,
    ``await model.regs.REJECTS.write(0)``, ``await model.vndr_cap.WINDOW_SIZE.read()``.
    """
    layer = python_layer(window_size, name_size)
    from peakrdl_python.lib import AsyncCallbackSet

    async def read_callback(addr, width, accesswidth):
        return await read(*locate(addr, window_size, name_size), width // 8)

    async def write_callback(addr, width, accesswidth, data):
        await write(*locate(addr, window_size, name_size), width // 8, data)

    return layer.vmshm_cls(callbacks=AsyncCallbackSet(read_callback=read_callback,
                                                      write_callback=write_callback))


def access_markdown():
    """Return the section of ``docs/registers.md`` that says how each access type is in SystemRDL."""
    out = ["", "## In SystemRDL and IP-XACT", "",
           "`vmshm regs --format systemrdl|ipxact|html|c-header` exports the map through the "
           f"PeakRDL tools ({EXTRA_HINT}), from a SystemRDL model built from abi/regmap.py "
           "(abi/rdl.py). Blocks: "
           + "; ".join(f"`{name}`, {what}" for name, what in BLOCKS.items())
           + ". A register without fields here has one field, `" + WHOLE + "`, of 32 bits. "
           "The ABI version is the VERSION register's reset value, the top map's description "
           "and the IP-XACT component's version; it is no user-defined property, since "
           "peakrdl-systemrdl writes none of their declarations and every tool reading the "
           f"file would need them. {INTERRUPT}'s field is also `intr`. How each access type is "
           "said:", "",
           "| access | SystemRDL field properties | IP-XACT (peakrdl-ipxact) | why |",
           "|---|---|---|---|"]
    for code, a in ACCESS_RDL.items():
        props = "`" + "; ".join(f"{k} = {str(v).lower()}" for k, v in a.properties.items()) + "`"
        if a.external:
            props += ", register `external`"
        ipxact = ", ".join(f"{k} `{v}`" for k, v in a.ipxact.items())
        out.append(f"| {code} | {props} | {ipxact} | {a.why} |")
    return "\n".join(out) + "\n"
