"""Atomic file writes: the only way the orchestrator puts a file where a user can see it.

A file is written to a hidden temporary name in the destination folder, flushed to disk and then
renamed over the destination, so a reader (or a crash) only ever sees the old file or the complete
new one. The orchestrator is the single writer of job outputs; all its writes go through here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".tmp-"
_CHUNK = 1024 * 1024


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Writes ``data`` (text is UTF-8) to ``path`` atomically; returns ``path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with _replacing(path) as handle:
        handle.write(payload)
    return path


def copy_atomic(source: Path, destination: Path) -> Path:
    """Copies ``source`` to ``destination`` atomically (nothing to do when the bytes are equal)."""
    if destination.exists() and same_content(source, destination):
        return destination
    with _replacing(destination) as out, source.open("rb") as src:
        shutil.copyfileobj(src, out, _CHUNK)
    return destination


def same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return sha256_file(a) == sha256_file(b)


def sha256_file(path: Path) -> str:
    """SHA-256 of the file's bytes as lowercase hex."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def leftover_temp_files(root: Path) -> list[Path]:
    """Temporary files under ``root`` (none should survive a write, even a failed one)."""
    return sorted(p for p in root.rglob(f"{TEMP_PREFIX}*") if p.is_file())


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """A handle on a hidden temporary file beside ``path``; once the block ends, the file is
    flushed to disk and renamed over ``path`` (removed instead when the block raised)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _sync_dir(path.parent)


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
