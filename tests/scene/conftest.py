"""Helpers shared by the scene tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


def _ffmpeg_children() -> list[int]:
    """Pids of ffmpeg processes whose parent is this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if name == "ffmpeg" and parent == os.getpid():
            found.append(int(entry.name))
    return found


@pytest.fixture
def ffmpeg_children() -> Callable[[], list[int]]:
    return _ffmpeg_children
