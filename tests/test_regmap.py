"""The register map: one definition, its rules, and the generated document kept fresh."""

import errno
from pathlib import Path

import pytest

from vmshm.abi.regmap import (BAR0_SIZE, REG, REGISTERS, STATUS_TEXT, Field, Register, Status,
                              render_markdown)

DOC = Path(__file__).resolve().parent.parent / "docs" / "registers.md"


def test_docs_registers_md_starts_with_the_register_map():
    # The rest, how each access type is said in SystemRDL, is vmshm.abi.rdl's (tests/test_rdl.py
    # checks the whole file is what `vmshm regs` prints).
    assert DOC.read_text().startswith(render_markdown()), (
        "docs/registers.md is stale: run `vmshm regs -o docs/registers.md`")


def test_field_access_must_be_known():
    with pytest.raises(ValueError, match="field F access must be"):
        Field("F", 0, 1, "a field", "RW1X")
    assert Field("F", 0, 1, "a field").access is None     # its register's


def test_seed_abi_is_fixed():
    # The original driver reads these two offsets and nothing else; they must never move.
    assert REG["OPEN"].offset == 0x00 and REG["OPEN"].access == "RT"
    assert REG["CLOSE"].offset == 0x20 and REG["CLOSE"].access == "RT"


def test_registers_fit_bar0_without_overlap():
    offsets = [r.offset for r in REGISTERS]
    assert len(offsets) == len(set(offsets))
    assert all(0 <= o < BAR0_SIZE and o % 4 == 0 for o in offsets)


def test_status_codes_are_linux_errnos():
    for name, code in Status.all().items():
        if code:
            assert getattr(errno, name) == code
        assert code in STATUS_TEXT


def test_einval_text_names_every_name_the_host_refuses_with_it():
    # The host answers EINVAL for "/", "/." and "/.." too (they name no object): the text a
    # guest reads for the status must say so, not only the empty name and the slashes.
    text = STATUS_TEXT[Status.EINVAL]
    for said in ("empty", "leading '/'", "another '/'", "'/'", "'/.'", "'/..'"):
        assert said in text, said


def test_register_definition_rejects_bad_offsets():
    with pytest.raises(ValueError, match="multiple of 4"):
        Register("BAD", 0x03, "R", 0, "misaligned")
    with pytest.raises(ValueError, match="access must be"):
        Register("BAD", 0x40, "RW1X", 0, "unknown access")
