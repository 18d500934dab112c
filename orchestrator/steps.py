"""The bodies of the per-video steps, and their typed results.

Each body takes the video's :class:`StepContext` and a :class:`Report` (where progress and retries
go) and returns a result dataclass. Results are stored as JSON objects (``as_json``) in the step's
row, so a restart knows what each finished step wrote; ``from_json`` reads them back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import grpc

from orchestrator import artifacts, legacy
from orchestrator.archive import ResultsArchive
from orchestrator.clients import Clients, track
from orchestrator.config import OrchestratorSettings
from orchestrator.fusion import FUSION_VERSION, fuse
from orchestrator.outputs import copy_atomic, write_atomic
from orchestrator.results import (
    AudioStepResult,
    FinalizeResult,
    FuseResult,
    NormalizeResult,
    R,
    ReduceResult,
    SceneStepResult,
    StepResult,
    TrackingStepResult,
)
from orchestrator.rows import StepRow, VideoRow
from orchestrator.views import options_dict
from protos.videoanalysis.v1 import audio_pb2, common_pb2, orchestrator_pb2, scene_pb2, tracking_pb2
from services.common.errors import InvalidArgument, MediaNotFound
from services.common.media import MediaRoot

#: Bumped whenever the output files would change for the same inputs (invalidates the cache).
OUTPUT_VERSION = 1


@dataclass
class Report:
    """Where a step's work reports progress and retries."""

    progress: Callable[[common_pb2.Progress], None]
    retry: Callable[[int, grpc.StatusCode, str, float], None]


@dataclass
class StepContext:
    """One video of one job, as the step bodies see it."""

    job_id: str
    video: VideoRow
    options: orchestrator_pb2.JobOptions
    settings: OrchestratorSettings
    media: MediaRoot
    clients: Clients
    archive: ResultsArchive
    #: Duration of the source (from the probe), for deadlines.
    duration_s: float = 0.0
    #: Archive folder whose results this video reuses (a cache hit), relative to the media root.
    cache_entry: str = ""

    def step(self, name: str) -> StepRow:
        return self.video.steps[name]

    def result(self, name: str, kind: type[R]) -> R:
        """The stored result of a finished step."""
        return kind.from_json(self.step(name).result)

    def path(self, relative: str) -> Path:
        return self.media.root / relative

    def call_options(self, report: Report) -> dict[str, Any]:
        """A service call's deadline (scaled to the video's length) and where its progress and
        retries go."""
        return {
            "deadline_s": self.settings.deadline_base_s
            + self.settings.deadline_per_media_s * self.duration_s,
            "on_progress": report.progress,
            "on_retry": report.retry,
        }

    def analysed_media(self) -> str:
        """Scene and audio read the source unless configured to wait for the normalised file."""
        if self.settings.analyse_source:
            return self.video.path
        return self.result("normalize", NormalizeResult).path

    def staged(self) -> dict[str, str]:
        """The video's output files as staged in its work folder, by kind."""
        folder = f"{self.video.work_dir}/staged"
        return {kind: f"{folder}/{name}" for kind, name in output_names(self.video.stem).items()}


def options_key(options: orchestrator_pb2.JobOptions) -> str:
    """Fingerprint of everything that changes the results of one video (the cache key)."""
    relevant = {
        "scene_mode": options.scene_mode,
        "scene_threshold": round(options.scene_threshold, 6),
        "audio_engine": options.audio_engine,
        "num_speakers": options.num_speakers,
        "min_speakers": options.min_speakers,
        "max_speakers": options.max_speakers,
        "max_faces": options.max_faces,
        "fusion": FUSION_VERSION,
        "outputs": OUTPUT_VERSION,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def output_names(stem: str) -> dict[str, str]:
    """A video's output files by kind, relative to its output folder (the staged copies in its
    work folder use the same names)."""
    return {
        "scenes": f"{stem}{legacy.SCENES_SUFFIX}",
        "audio": f"{stem}{legacy.AUDIO_SUFFIX}",
        "tracking": f"{stem}{legacy.TRACKING_SUFFIX}",
        "docs_tracking": f"{legacy.DOCS_DIR}/{stem}.json",
        "docs_audio": f"{legacy.DOCS_DIR}/{stem}{legacy.AUDIO_SUFFIX}",
    }


def result_files_exist(context: StepContext, result: StepResult) -> bool:
    return all(context.path(p).exists() for p in result.files())


# The analysis steps.


async def normalize(context: StepContext, report: Report) -> NormalizeResult:
    video = context.video
    context.path(video.work_dir).mkdir(parents=True, exist_ok=True)
    output = f"{video.work_dir}/{video.stem}_25fps.mp4"
    result = await context.clients.ingest.normalize(
        video.path, output, **context.call_options(report)
    )
    return NormalizeResult(
        path=result.output.path or output,
        duration_s=result.info.duration_s,
        frame_count=result.info.frame_count,
        has_audio=result.info.has_audio,
        reencoded=result.reencoded,
        encoder=result.encoder,
        source_duration_s=context.duration_s,
    )


async def scene(context: StepContext, report: Report) -> SceneStepResult:
    options = context.options
    request = scene_pb2.DetectScenesRequest(
        media=common_pb2.MediaRef(path=context.analysed_media()),
        mode=options.scene_mode,
        threshold=options.scene_threshold,
    )
    result = await context.clients.scene.result_stream(
        context.clients.scene.stub.DetectScenes,
        request,
        step="scene",
        **context.call_options(report),
    )
    path = f"{context.video.work_dir}/scene.pb"
    await asyncio.to_thread(artifacts.write_message, context.path(path), result)
    return SceneStepResult(
        file=path,
        scenes=len(result.scenes),
        frames=result.frame_count,
        device=result.device,
        progress_total=result.frame_count,
    )


async def audio(context: StepContext, report: Report) -> AudioStepResult:
    options = context.options
    request = audio_pb2.DiarizeRequest(
        media=common_pb2.MediaRef(path=context.analysed_media()),
        engine=options.audio_engine,
        num_speakers=options.num_speakers,
        min_speakers=options.min_speakers,
        max_speakers=options.max_speakers,
    )
    result = await context.clients.audio.result_stream(
        context.clients.audio.stub.Diarize, request, step="audio", **context.call_options(report)
    )
    path = f"{context.video.work_dir}/audio.pb"
    await asyncio.to_thread(artifacts.write_message, context.path(path), result)
    return AudioStepResult(
        file=path,
        speakers=list(result.speakers),
        segments=len(result.segments),
        has_audio=result.has_audio,
        engine=result.engine,
    )


async def tracking(context: StepContext, report: Report) -> TrackingStepResult:
    request = tracking_pb2.TrackRequest(
        media=common_pb2.MediaRef(path=context.result("normalize", NormalizeResult).path),
        max_faces=context.options.max_faces,
    )
    output = await track(context.clients.tracking, request, **context.call_options(report))
    path = f"{context.video.work_dir}/tracking.pbs"
    await asyncio.to_thread(artifacts.write_tracking, context.path(path), output)
    summary = output.summary
    return TrackingStepResult(
        file=path,
        frames=summary.frame_count if summary else len(output.frames),
        tracks=len(summary.tracks) if summary else 0,
        faces=summary.faces_total if summary else 0,
        progress_total=summary.frame_count if summary else 0,
    )


# Fusion (or, on a cache hit, restoring the archived full files), reduction, finalisation.


def _full_files(context: StepContext) -> dict[str, str]:
    staged = context.staged()
    return {kind: staged[kind] for kind in ("scenes", "audio", "tracking")}


async def fuse_results(context: StepContext, report: Report) -> FuseResult:
    """Fuses the three analyses into the legacy full files (staged in the work folder)."""
    return await asyncio.to_thread(_fuse_blocking, context, _full_files(context))


def _fuse_blocking(context: StepContext, full: dict[str, str]) -> FuseResult:
    video = context.video
    normalized = context.result("normalize", NormalizeResult)
    scenes = artifacts.read_message(
        context.path(context.result("scene", SceneStepResult).file), scene_pb2.SceneResult
    )
    diarized = artifacts.read_message(
        context.path(context.result("audio", AudioStepResult).file), audio_pb2.DiarizeResult
    )
    tracked = artifacts.read_tracking(
        context.path(context.result("tracking", TrackingStepResult).file)
    )
    shots = [(int(s.start_frame), int(s.end_frame)) for s in scenes.scenes]
    fusion = fuse(
        artifacts.fusion_frames(tracked),
        shots,
        artifacts.speaker_turns(diarized),
        fps=legacy.LEGACY_FPS,
        has_audio=diarized.has_audio,
    )
    total = legacy.total_frames_for(normalized.duration_s)
    segments = [(s.start_s, s.end_s, s.speaker) for s in diarized.segments]
    audio_frames = legacy.audio_frames(segments, total)
    name = PurePosixPath(video.path).name
    write_atomic(context.path(full["scenes"]), legacy.scenes_csv(shots))
    write_atomic(context.path(full["audio"]), legacy.audio_json(name, total, audio_frames))
    size = (tracked.summary.width, tracked.summary.height) if tracked.summary else None
    document = legacy.tracking_document(video.path, fusion, audio_frames, frame_size=size)
    write_atomic(context.path(full["tracking"]), legacy.tracking_json(document))
    return fusion_summary(document, full)


async def restore_results(context: StepContext, report: Report) -> FuseResult:
    """Cache hit: the archived full files, re-labelled with this video's path and name."""
    return await asyncio.to_thread(_restore_blocking, context, _full_files(context))


def _restore_blocking(context: StepContext, full: dict[str, str]) -> FuseResult:
    video = context.video
    entry = context.archive.read_entry(context.path(context.cache_entry))
    if entry is None or not entry.complete:
        raise MediaNotFound(f"archived results vanished: {context.cache_entry}")
    copy_atomic(entry.files["scenes"], context.path(full["scenes"]))
    _name, total, frames = legacy.parse_audio_json(entry.files["audio"].read_text("utf-8"))
    name = PurePosixPath(video.path).name
    write_atomic(context.path(full["audio"]), legacy.audio_json(name, total, frames))
    document = json.loads(entry.files["tracking"].read_text("utf-8"))
    document["metadata"]["video_path"] = video.path
    write_atomic(context.path(full["tracking"]), legacy.tracking_json(document))
    result = fusion_summary(document, full)
    result.from_cache = True
    return result


async def reduce(context: StepContext, report: Report) -> ReduceResult:
    staged = context.staged()

    def reduce_files() -> int:
        tracking = legacy.reduce_tracking(json.loads(context.path(staged["tracking"]).read_text()))
        audio = legacy.reduce_audio(json.loads(context.path(staged["audio"]).read_text()))
        if tracking is None or audio is None:
            raise InvalidArgument("the full results do not have the expected shape")
        write_atomic(context.path(staged["docs_tracking"]), legacy.reduced_json(tracking))
        write_atomic(context.path(staged["docs_audio"]), legacy.reduced_json(audio))
        return len(tracking["frames_analysis"])

    frames = await asyncio.to_thread(reduce_files)
    files = {k: staged[k] for k in ("docs_tracking", "docs_audio")}
    return ReduceResult(files=files, frames=frames)


async def finalize(context: StepContext, report: Report) -> FinalizeResult:
    """Archives the full files by content hash, then copies every output into place."""
    video = context.video
    staged = context.staged()
    out_dir = context.path(video.output_dir)
    targets = {kind: out_dir / name for kind, name in output_names(video.stem).items()}
    fused = context.result("fuse", FuseResult)

    def publish() -> str:
        entry = context.archive.store(
            video.project,
            video.sha256,
            video_path=video.path,
            video_stem=video.stem,
            files={kind: context.path(staged[kind]) for kind in ("scenes", "audio", "tracking")},
            options_key=options_key(context.options),
            extra={
                "project": video.project,
                "job_id": context.job_id,
                "options": options_dict(context.options),
                "fusion_version": FUSION_VERSION,
                "summary": fused.summary(),
            },
        )
        for kind, target in targets.items():
            copy_atomic(context.path(staged[kind]), target)
        return context.media.relative(entry)

    archive_dir = await asyncio.to_thread(publish)
    return FinalizeResult(
        outputs={kind: context.media.relative(path) for kind, path in targets.items()},
        archive=archive_dir,
    )


def fusion_summary(document: dict[str, Any], files: dict[str, str]) -> FuseResult:
    """Counts for reports: faces, speakers, and speaking face-frames fused vs the legacy rule."""
    face_frames = speaking = legacy_speaking = 0
    faces: set[str] = set()
    for frame in document.get("frames", []):
        for obj in frame.get("tracked_objects", []):
            face_frames += 1
            faces.add(str(obj.get("id")))
            speaking += bool(obj.get("is_speaking"))
            audio = obj.get("speaking_sources", {}).get("audio", {})
            legacy_speaking += bool(audio.get("is_speech_present"))
    fusion = document.get("metadata", {}).get("fusion", {})
    return FuseResult(
        files=files,
        faces=len(faces),
        face_frames=face_frames,
        speaking_face_frames=speaking,
        legacy_speaking_face_frames=legacy_speaking,
        speakers_on_screen=fusion.get("speakers", {}),
        shots=fusion.get("shots", 0),
    )
