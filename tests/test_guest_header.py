"""The guest's C register header: generated from the one register map, and kept fresh."""

import shutil
import subprocess
from pathlib import Path

import pytest

from vmshm.cheader import render_c_header
from vmshm.cli import main
from vmshm.regmap import REG, Status

HEADER = Path(__file__).resolve().parent.parent / "guest" / "vmshm_regs.h"


def test_guest_header_is_fresh():
    assert HEADER.read_text() == render_c_header(), (
        "guest/vmshm_regs.h is stale: run `vmshm regs --format guest-header -o guest/vmshm_regs.h`")


def test_regs_c_header_option_writes_the_header(tmp_path, capsys):
    assert main(["regs", "--format", "guest-header", "-o", str(tmp_path / "h.h")]) == 0
    assert (tmp_path / "h.h").read_text() == HEADER.read_text()


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_header_values_compile_to_the_register_map(tmp_path):
    # What a C program sees through the header is what the Python map says.
    src = tmp_path / "t.c"
    src.write_text('#include <stdio.h>\n#include "vmshm_regs.h"\nint main(void) {\n'
                   'printf("%d %d %d %d %#x\\n", VMSHM_REG_OPEN, VMSHM_REG_CLOSE, '
                   'VMSHM_REG_MAP_SIZE, VMSHM_CODE_ENAMETOOLONG, VMSHM_DEVICE_ID);\n'
                   'return 0;\n}\n')
    subprocess.run(["cc", "-Wall", "-Werror", "-I", str(HEADER.parent), "-o",
                    str(tmp_path / "t"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "t")], capture_output=True, text=True).stdout.split()
    assert out == [str(REG["OPEN"].offset), str(REG["CLOSE"].offset),
                   str(REG["MAP_SIZE"].offset), str(Status.ENAMETOOLONG), "0x564d5348"]
