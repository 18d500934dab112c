"""A job's inputs → the videos it analyses.

Each input (a path relative to the media root) is expanded by the first :class:`InputSource` that
accepts it: a folder is scanned, a video is itself, an archive is extracted by the ingest service.
Another kind of input (a download, say) is one more source. The videos found are then named: their
project, their output folder and a stem that is unique within that folder.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from orchestrator import legacy
from orchestrator.archive import check_project_name
from orchestrator.clients import Clients
from orchestrator.config import OrchestratorSettings
from orchestrator.recorder import Recorder
from orchestrator.rows import SUCCEEDED, InputRow, JobRow, VideoRow
from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2
from services.common.errors import InvalidArgument, MediaNotFound
from services.common.media import MediaRoot

log = logging.getLogger(__name__)

ARCHIVE_EXTENSIONS = (".zip", ".rar", ".7z", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in legacy.VIDEO_EXTENSIONS


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_EXTENSIONS)


def safe_project(name: str) -> str:
    """A project folder name that stays inside the output and archive folders."""
    cleaned = re.sub(r"[/\\\x00]", "_", name).strip().lstrip(".") or "project"
    return check_project_name(cleaned)


@dataclass(frozen=True)
class FoundVideo:
    path: str
    project: str

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "project": self.project}


@dataclass
class InputContext:
    """What a source needs to expand one input."""

    job_id: str
    item: InputRow
    options: orchestrator_pb2.JobOptions
    settings: OrchestratorSettings
    media: MediaRoot
    clients: Clients
    recorder: Recorder


class InputSource(Protocol):
    """One kind of input."""

    #: Stored with the input (``archive`` inputs' videos get a SUCCEEDED extract step).
    kind: str

    def accepts(self, path: Path) -> bool: ...

    async def expand(self, context: InputContext, path: Path) -> list[FoundVideo]: ...


def project_of(media: MediaRoot, video: Path) -> str:
    """A lone video's project: its folder's name, or its stem at the media root."""
    parent = video.parent
    return safe_project(parent.name if parent != media.root else video.stem)


class FolderSource:
    kind = "folder"

    def accepts(self, path: Path) -> bool:
        return path.is_dir()

    async def expand(self, context: InputContext, path: Path) -> list[FoundVideo]:
        videos = await asyncio.to_thread(self._scan, context, path)
        if not videos:
            raise MediaNotFound(f"no video in folder {context.item.path}")
        return videos

    @staticmethod
    def _scan(context: InputContext, folder: Path) -> list[FoundVideo]:
        settings, media = context.settings, context.media
        own = {
            (media.root / name).resolve()
            for name in (settings.output_dir, settings.archives_dir, settings.work_dir)
        }
        videos = []
        for path in sorted(folder.rglob("*")):
            if any(part.startswith(".") for part in path.relative_to(folder).parts):
                continue
            if any(path.is_relative_to(o) for o in own) or not path.is_file() or not is_video(path):
                continue
            project = safe_project(folder.name) if folder != media.root else project_of(media, path)
            videos.append(FoundVideo(media.relative(path), project))
        return videos


class VideoSource:
    kind = "video"

    def accepts(self, path: Path) -> bool:
        return path.is_file() and is_video(path)

    async def expand(self, context: InputContext, path: Path) -> list[FoundVideo]:
        return [FoundVideo(context.media.relative(path), project_of(context.media, path))]


class ArchiveSource:
    kind = "archive"

    def accepts(self, path: Path) -> bool:
        return path.is_file() and is_archive(path)

    async def expand(self, context: InputContext, path: Path) -> list[FoundVideo]:
        item, job_id = context.item, context.job_id

        def on_progress(progress: common_pb2.Progress) -> None:
            context.recorder.log_soon(
                job_id, "INFO", f"extracting {item.path}: {progress.done}/{progress.total}"
            )

        # One folder per job and input: a rerun or a resumed extraction never merges into (and
        # gets "_2" copies from) an earlier extraction of the same archive.
        destination = f"{context.settings.extract_dir}/{job_id}/{item.idx}"
        await asyncio.to_thread(shutil.rmtree, context.media.root / destination, True)
        result = await context.clients.ingest.extract(
            item.path,
            destination,
            delete_source=context.options.delete_archives,
            deadline_s=context.settings.deadline_base_s,
            on_progress=on_progress,
        )
        project = safe_project(result.project_name)
        if result.failed_count or result.skipped_count:
            await context.recorder.log(
                job_id,
                "WARNING",
                f"{item.path}: {result.skipped_count} member(s) skipped, "
                f"{result.failed_count} failed",
            )
        if not result.videos:
            raise MediaNotFound(f"no video in archive {item.path}")
        return [FoundVideo(video, project) for video in result.videos]


DEFAULT_SOURCES: tuple[InputSource, ...] = (FolderSource(), VideoSource(), ArchiveSource())


async def expand(
    context: InputContext, sources: Sequence[InputSource] = DEFAULT_SOURCES
) -> tuple[str, list[FoundVideo]]:
    """The kind of the input and the videos it holds."""
    path = context.media.resolve(context.item.path)
    for source in sources:
        if source.accepts(path):
            return source.kind, await source.expand(context, path)
    raise InvalidArgument(f"not a video, an archive or a folder: {context.item.path}")


def name_videos(
    job: JobRow, found: Sequence[tuple[int, FoundVideo]], work_dir: str
) -> list[VideoRow]:
    """Rows for the videos found (each path once), with stems unique per output folder."""
    rows: list[VideoRow] = []
    seen: set[str] = set()
    stems: set[tuple[str, str]] = set()
    for input_idx, video in found:
        if video.path in seen:
            continue
        seen.add(video.path)
        out_dir = f"{job.output_dir.rstrip('/')}/{video.project}"
        base = PurePosixPath(video.path).stem
        stem, n = base, 1
        while (out_dir, stem) in stems:
            n += 1
            stem = f"{base}_{n}"
        stems.add((out_dir, stem))
        idx = len(rows)
        rows.append(
            VideoRow(
                idx=idx,
                input_idx=input_idx,
                path=video.path,
                project=video.project,
                stem=stem,
                output_dir=out_dir,
                work_dir=f"{work_dir}/{job.job_id}/{idx}-{_slug(stem)}",
            )
        )
    return rows


def stored_videos(item: InputRow) -> list[FoundVideo]:
    """The videos an input expanded to before (it is not expanded again on resume)."""
    if item.state != SUCCEEDED:
        return []
    return [FoundVideo(v["path"], v["project"]) for v in item.result.get("videos", [])]


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]", "_", text)[:60] or "video"
