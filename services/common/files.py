"""Atomic file replacement: a reader (or a crash) sees the old file or the complete new one.

The new content is written under a hidden temporary name in the destination folder, flushed to
disk and renamed over the destination; when the writer fails, the temporary file is removed and
the destination is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Prefix of every temporary file (hidden; ``leftover`` finds those a crash left behind).
TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write (with ``path``'s suffix, so tools
    that pick a format by extension still work); when the block ends it is flushed to disk and
    renamed over ``path``, or removed when the block raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{path.stem}.", suffix=path.suffix, dir=path.parent
    )
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
        temp.chmod(0o644)
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def leftover(root: Path) -> list[Path]:
    """Temporary files under ``root`` (none should survive a write, even a failed one)."""
    return sorted(p for p in root.rglob(f"{TEMP_PREFIX}*") if p.is_file())


def _sync_dir(folder: Path) -> None:
    """Makes the rename itself durable."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
