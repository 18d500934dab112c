"""Atomic replacement: the old file or the complete new one, never a partial or wiped file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.common import files


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.json"
    with files.replacing(target) as temp:
        temp.write_text("old")
    with pytest.raises(RuntimeError), files.replacing(target) as temp:
        temp.write_text("half of the new")
        raise RuntimeError("the writer died")
    assert target.read_text() == "old"
    assert files.leftover(tmp_path) == []


def test_the_new_file_replaces_the_old_one_readable_with_its_suffix(tmp_path: Path) -> None:
    target = tmp_path / "sheet.png"
    target.write_text("old")
    with files.replacing(target) as temp:
        assert temp.parent == tmp_path and temp.suffix == ".png"
        assert temp.name.startswith(files.TEMP_PREFIX)
        assert files.leftover(tmp_path) == [temp]
        temp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert files.leftover(tmp_path) == []
