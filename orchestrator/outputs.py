"""Atomic file writes: the only way the orchestrator puts a file where a user can see it.

Every write goes through :func:`services.common.files.replacing` (a hidden temporary file in the
destination folder, flushed and renamed over the destination), so a reader or a crash only ever
sees the old file or the complete new one. The orchestrator is the single writer of job outputs;
all its writes go through here.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from services.common import files


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Writes ``data`` (text is UTF-8) to ``path`` atomically; returns ``path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with files.replacing(path) as temp:
        temp.write_bytes(payload)
    return path


def copy_atomic(source: Path, destination: Path) -> Path:
    """Copies ``source`` to ``destination`` atomically (nothing to do when the bytes are equal)."""
    if destination.exists() and same_content(source, destination):
        return destination
    with files.replacing(destination) as temp:
        shutil.copyfile(source, temp)
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
    return files.leftover(root)
