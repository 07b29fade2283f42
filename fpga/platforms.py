"""Name FPGA boards: short names for amaranth-boards platforms, and which ones build here."""

import importlib
import inspect
import pkgutil

from .toolchain import require_toolchain

__all__ = ["BOARDS", "resolve_board", "list_boards"]

#: Short names for the boards we name in the docs; any amaranth-boards platform also works by
#: its class name (``ULX3S_85F_Platform``) or ``module.Class`` (``ulx3s.ULX3S_85F_Platform``).
BOARDS = {
    "ulx3s-12f": "ulx3s.ULX3S_12F_Platform",
    "ulx3s-25f": "ulx3s.ULX3S_25F_Platform",
    "ulx3s-45f": "ulx3s.ULX3S_45F_Platform",
    "ulx3s-85f": "ulx3s.ULX3S_85F_Platform",
    "versa-ecp5": "versa_ecp5.VersaECP5Platform",
    "versa-ecp5-5g": "versa_ecp5_5g.VersaECP55GPlatform",
    "ecpix5-45": "ecpix5.ECPIX545Platform",
    "ecpix5-85": "ecpix5.ECPIX585Platform",
    "orangecrab-25f": "orangecrab_r0_2.OrangeCrabR0_2_25FPlatform",
    "orangecrab-85f": "orangecrab_r0_2.OrangeCrabR0_2_85FPlatform",
    "colorlight-5a75b": "colorlight_5a75b_r7_0.Colorlight_5A75B_R70Platform",
    "logicbone-85f": "logicbone.Logicbone85FPlatform",
    "nitefury": "nitefury.NitefuryIIPlatform",
    "litefury": "nitefury.LitefuryPlatform",
    "kcu105": "kcu105.KCU105Platform",
    "kc705": "kc705.KC705Platform",
}

#: The name of the design in every build.
BUILD_NAME = "vmshm_selftest"


def _platform_classes():
    from amaranth.build import Platform
    import amaranth_boards

    for info in pkgutil.iter_modules(amaranth_boards.__path__):
        if info.name in ("resources", "extensions", "test"):
            continue
        try:
            module = importlib.import_module(f"amaranth_boards.{info.name}")
        except Exception:       # a board module whose vendor package is missing: not offered
            continue
        for name, cls in vars(module).items():
            if (inspect.isclass(cls) and cls.__module__ == module.__name__
                    and issubclass(cls, Platform) and not name.startswith("_")
                    and not inspect.isabstract(cls)):
                yield info.name, cls


def resolve_board(name):
    """Return the amaranth-boards platform class ``name`` stands for.

    Parameters
    ----------
    name : str
        A short name from :data:`BOARDS` (``ulx3s-85f``), a platform class name
        (``ULX3S_85F_Platform``, case does not matter, ``Platform`` may be left out) or
        ``module.Class`` (``ulx3s.ULX3S_85F_Platform``).
    """
    require_toolchain(tools=False, boards=True)
    if not isinstance(name, str) or not name:
        raise ValueError(f"board must be a name such as ulx3s-85f, not {name!r}")
    spec = BOARDS.get(name.lower(), name)
    if "." in spec:
        module, _, cls_name = spec.rpartition(".")
        try:
            cls = getattr(importlib.import_module(f"amaranth_boards.{module}"), cls_name)
        except (ImportError, AttributeError):
            raise ValueError(f"no board {name!r}: amaranth_boards.{module} has no "
                             f"{cls_name}") from None
        return cls
    key = name.lower().replace("-", "_")
    for _, cls in _platform_classes():
        cls_key = cls.__name__.lower()
        if key in (cls_key, cls_key.removesuffix("platform").rstrip("_")):
            return cls
    raise ValueError(f"no board {name!r}: use one of {', '.join(BOARDS)}, or any "
                     f"amaranth-boards platform class (vmshm build --list-boards)")


def _builds_bitstream(platform):
    # Only ECP5 through Yosys and nextpnr runs here; everything else needs the vendor's tools.
    return getattr(platform, "family", None) == "ecp5" and platform.toolchain == "Trellis"


def list_boards():
    """Return ``(name, class name, device, package, speed, what vmshm build makes)`` per board."""
    require_toolchain(tools=False, boards=True)
    short = {spec.rpartition(".")[2]: alias for alias, spec in BOARDS.items()}
    rows = []
    for module, cls in _platform_classes():
        try:
            platform = cls()
            device = platform.device
        except Exception:       # a platform that needs arguments or lacks a device: not listed
            continue
        name = short.get(cls.__name__, f"{module}.{cls.__name__}")
        rows.append((name, cls.__name__, str(device), str(getattr(platform, "package", "")),
                     str(getattr(platform, "speed", "")),
                     "bitstream" if _builds_bitstream(platform) else "plan"))
    return sorted(rows, key=lambda r: (r[5], r[0] not in BOARDS, r[0]))
