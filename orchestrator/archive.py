"""The SHA-256 results archive and the content-hash cache (spec 04 §3).

Layout written: ``<archives>/<project>/<sha256>/`` holding ``<stem>_scenes.csv``,
``<stem>_audio.json``, ``<stem>_tracking.json`` (the full, unreduced files) and ``metadata.json``.
Also read: the legacy timestamped layout ``<archives>/<project> YYYY-MM-DD_HH-MM-SS/<sha256>/``
(newest first) and the legacy artifact names ``<stem>.csv`` / ``<stem>.json``.

Nothing is ever deleted: when an entry is written again with different content, the previous
files move to ``<sha256>/history/<created_at>/`` first. ``metadata.json`` also records the
analysis options (``options_key``), which is what makes an entry reusable as a cache hit for the
same video bytes analysed with the same options.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import legacy
from orchestrator.outputs import copy_atomic, same_content, sha256_file, write_atomic
from services.common.errors import InvalidArgument

log = logging.getLogger(__name__)

KINDS = {
    "scenes": legacy.SCENES_SUFFIX,
    "audio": legacy.AUDIO_SUFFIX,
    "tracking": legacy.TRACKING_SUFFIX,
}
_LEGACY_NAMES = {"scenes": ".csv", "tracking": ".json"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMPED = re.compile(r"^(.*) (\d{4}-\d{2}-\d{2})_(\d{2}-\d{2}-\d{2})$")


def check_project_name(project: str) -> str:
    """Rejects names that would leave the archive folder (``..``, separators, absolute paths)."""
    if (
        not project
        or project in (".", "..")
        or "/" in project
        or "\\" in project
        or "\x00" in project
        or project.startswith(".")
    ):
        raise InvalidArgument(f"invalid project name: {project!r}")
    return project


@dataclass(frozen=True)
class ArchiveEntry:
    """One archived video: its folder, the files it has and its metadata."""

    directory: Path
    metadata: dict[str, Any]
    files: dict[str, Path]

    @property
    def sha256(self) -> str:
        return self.directory.name

    @property
    def options_key(self) -> str:
        return str(self.metadata.get("options_key", ""))

    @property
    def complete(self) -> bool:
        return all(kind in self.files for kind in KINDS)


class ResultsArchive:
    """The archive folder (``<media_root>/archives`` by default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry_dir(self, project: str, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise InvalidArgument(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / check_project_name(project) / sha256

    def store(
        self,
        project: str,
        sha256: str,
        *,
        video_path: str,
        video_stem: str,
        files: Mapping[str, Path],
        options_key: str,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Archives the full result files of one video (blocking; run it in a thread).

        ``files`` maps ``scenes``/``audio``/``tracking`` to the files to copy; they are stored
        under the video's stem. Returns the entry folder.
        """
        directory = self.entry_dir(project, sha256)
        directory.mkdir(parents=True, exist_ok=True)
        copied: dict[str, str | None] = {}
        self._keep_history(directory, video_stem, files)
        for kind, suffix in KINDS.items():
            source = files.get(kind)
            if source is None:
                copied[kind] = None
                continue
            target = directory / f"{video_stem}{suffix}"
            copy_atomic(source, target)
            copied[kind] = str(target)
        metadata = {
            "video_path": video_path,
            "video_stem": video_stem,
            "video_hash": sha256,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "copied": copied,
            "options_key": options_key,
            **(extra or {}),
        }
        write_atomic(directory / legacy.METADATA_NAME, json.dumps(metadata, indent=2) + "\n")
        return directory

    def _keep_history(self, directory: Path, stem: str, files: Mapping[str, Path]) -> None:
        """Moves the entry's current files aside when they are about to change."""
        changed = []
        for kind, suffix in KINDS.items():
            current = directory / f"{stem}{suffix}"
            source = files.get(kind)
            if current.exists() and (source is None or not same_content(source, current)):
                changed.append(current)
        if not changed:
            return
        metadata = _read_json(directory / legacy.METADATA_NAME) or {}
        stamp = str(metadata.get("created_at") or dt.datetime.now(dt.UTC).isoformat())
        history = directory / "history" / re.sub(r"[^0-9A-Za-z]", "-", stamp)
        history.mkdir(parents=True, exist_ok=True)
        for current in [*changed, directory / legacy.METADATA_NAME]:
            if current.exists():
                shutil.copy2(current, history / current.name)
        log.info("archive %s: previous results kept in %s", directory, history)

    def read_entry(self, directory: Path) -> ArchiveEntry | None:
        metadata = _read_json(directory / legacy.METADATA_NAME)
        if metadata is None:
            return None
        stem = str(metadata.get("video_stem", ""))
        files = {}
        for kind, suffix in KINDS.items():
            path = directory / f"{stem}{suffix}"
            if stem and path.is_file():
                files[kind] = path
        return ArchiveEntry(directory, metadata, files)

    def find_cached(self, sha256: str, options_key: str) -> ArchiveEntry | None:
        """A complete entry for these video bytes analysed with these options, in any project."""
        if not _SHA256.match(sha256) or not self.root.is_dir():
            return None
        for directory in sorted(self.root.glob(f"*/{sha256}"), reverse=True):
            entry = self.read_entry(directory)
            if entry is not None and entry.complete and entry.options_key == options_key:
                return entry
        return None

    # Reading, including the legacy timestamped layout.

    def project_dirs(self, project: str) -> list[Path]:
        """Archive folders of ``project``: legacy timestamped runs (newest first), then the
        plain ``<project>`` folder."""
        check_project_name(project)
        if not self.root.is_dir():
            return []
        stamped = []
        for candidate in self.root.iterdir():
            match = _TIMESTAMPED.match(candidate.name)
            # An exact base-name match: "<project> <stamp>" of another project never captures.
            if candidate.is_dir() and match and match.group(1) == project:
                stamped.append(candidate)
        stamped.sort(key=lambda p: p.name, reverse=True)
        plain = self.root / project
        return [*stamped, *([plain] if plain.is_dir() else [])]

    def find_analysis_file(self, project: str, video: Path, kind: str) -> Path | None:
        """The archived ``kind`` file of ``video`` (read by hash, then by stem as the legacy
        reader did; the stem fallback only matches files of that exact stem)."""
        suffix = KINDS[kind]
        directories = self.project_dirs(project)
        sha = sha256_file(video) if video.is_file() else ""
        names = [f"{video.stem}{suffix}"]
        if kind in _LEGACY_NAMES:
            names.append(f"{video.stem}{_LEGACY_NAMES[kind]}")
        if sha:
            for directory in directories:
                for name in names:
                    candidate = directory / sha / name
                    if candidate.is_file():
                        return candidate
        for directory in directories:
            for hashed in sorted(directory.iterdir()):
                for name in names:
                    candidate = hashed / name
                    if hashed.is_dir() and candidate.is_file():
                        return candidate
        return None

    def project_has_analysis(self, project: str) -> tuple[bool, bool, bool]:
        found = dict.fromkeys(KINDS, False)
        for directory in self.project_dirs(project):
            for kind, suffix in KINDS.items():
                if any(directory.glob(f"*/*{suffix}")):
                    found[kind] = True
        return found["scenes"], found["audio"], found["tracking"]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
