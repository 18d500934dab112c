"""HTML reports (spec 04 §4.2): per video, per project and monthly, rendered with Jinja2.

The figures come from the job store (through the orchestrator's ``GetJob``/``ListJobs``) and from
the output files each video left in its output folder (``<stem>_scenes.csv``, ``<stem>_audio.json``,
``<stem>_tracking.json``). The legacy contents and markers are kept (French headings, the monthly
title, ``Build <id>``, the duration section that ``analyze_monthly_report_html`` parsed); its
defects are not: the full tracking file (``frames``) is counted instead of giving zeros, one failed
video no longer breaks the monthly report, and months are validated strictly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import jinja2
from aiohttp import web

from gateway.convert import job_json
from gateway.keys import MEDIA, ORCHESTRATOR
from orchestrator import legacy
from services.common.errors import ServiceError
from services.common.media import MediaRoot

TEMPLATES = Path(__file__).parent / "templates"
#: Names the legacy monthly report never counted (compared case-insensitively).
EXCLUDED_NAMES = frozenset({"m6+.mov", "boucle bug 9-16.mov"})
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class ReportError(Exception):
    """A report that cannot be made; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# Reading one video's output files.


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def output_files(media: MediaRoot, video: Mapping[str, Any]) -> dict[str, Path]:
    """The existing ``scenes``/``audio``/``tracking`` files of a video (contract JSON shape).

    The orchestrator names them after the source's stem, adding ``_<n>`` when two videos of one
    job share a stem in one folder; the tracking file's ``metadata.video_path`` tells which one
    belongs to this video.
    """
    if not video.get("output_dir"):
        return {}
    try:
        folder = media.resolve(str(video["output_dir"]), must_exist=False)
    except ServiceError:
        return {}
    base = PurePosixPath(str(video.get("path", ""))).stem
    chosen = base
    for stem in [base, *(f"{base}_{n}" for n in range(1, 10))]:
        tracking = folder / f"{stem}{legacy.TRACKING_SUFFIX}"
        if not tracking.is_file():
            continue
        document = _json(tracking)
        metadata = document.get("metadata") if isinstance(document, dict) else None
        if isinstance(metadata, dict) and metadata.get("video_path") == video.get("path"):
            chosen = stem
            break
    suffixes = {
        "scenes": legacy.SCENES_SUFFIX,
        "audio": legacy.AUDIO_SUFFIX,
        "tracking": legacy.TRACKING_SUFFIX,
    }
    found = {kind: folder / f"{chosen}{suffix}" for kind, suffix in suffixes.items()}
    return {kind: path for kind, path in found.items() if path.is_file()}


def read_scenes(path: Path | None, fps: float) -> dict[str, Any]:
    if path is None:
        return {"available": False, "count": 0, "scenes": []}
    try:
        frames = legacy.parse_scenes_csv(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError):
        return {"available": False, "count": 0, "scenes": []}
    scenes = [
        {
            "scene_number": number,
            "start_frame": start + 1,
            "end_frame": end + 1,
            "start_timecode": legacy.timecode(start, fps),
            "end_timecode": legacy.timecode(end, fps),
            "start_time_seconds": start / fps,
            "end_time_seconds": (end + 1) / fps,
        }
        for number, (start, end) in enumerate(frames, start=1)
    ]
    return {"available": True, "count": len(scenes), "scenes": scenes}


def read_audio(path: Path | None) -> dict[str, Any]:
    """Speech segments as the legacy viewer built them: consecutive speech frames form one."""
    empty = {"available": False, "fps": 0.0, "total_frames": 0, "segments": [], "speakers": []}
    document = _json(path) if path is not None else None
    if not isinstance(document, dict) or not isinstance(document.get("frames_analysis"), list):
        return empty
    fps = float(document.get("fps") or legacy.LEGACY_FPS)
    total = int(document.get("total_frames") or 0)
    segments: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    last_frame = 0
    for entry in document["frames_analysis"]:
        info = entry.get("audio_info") if isinstance(entry, dict) else None
        if not isinstance(info, dict):
            continue
        frame = int(entry.get("frame") or 0)
        last_frame = max(last_frame, frame)
        labels = [str(label) for label in info.get("active_speaker_labels") or []]
        if info.get("is_speech_present") and labels:
            if current is None:
                current = {"start_frame": frame, "speakers": set()}
            current["end_frame"] = frame
            current["speakers"].update(labels)
        elif current is not None:
            segments.append(_segment(current, frame, fps))
            current = None
    if current is not None:
        segments.append(_segment(current, max(total, last_frame) + 1, fps))
    speakers = sorted({s for segment in segments for s in segment["speakers"]})
    return {
        "available": True,
        "fps": fps,
        "total_frames": total or last_frame,
        "segments": segments,
        "speakers": speakers,
    }


def _segment(open_segment: Mapping[str, Any], stop_frame: int, fps: float) -> dict[str, Any]:
    speakers = sorted(open_segment["speakers"])
    return {
        "start_frame": open_segment["start_frame"],
        "end_frame": open_segment["end_frame"],
        "start_time": (open_segment["start_frame"] - 1) / fps,
        "end_time": (stop_frame - 1) / fps,
        "speakers": speakers,
        "speaker_count": len(speakers),
    }


def read_tracking(path: Path | None) -> dict[str, Any]:
    """Face counts from a full (``frames``) or reduced (``frames_analysis``) tracking file."""
    empty = {"available": False, "frames": 0, "fps": 0.0, "faces": [], "summary": {}}
    document = _json(path) if path is not None else None
    if not isinstance(document, dict):
        return empty
    frames = document.get("frames")
    if not isinstance(frames, list):
        frames = document.get("frames_analysis")
    if not isinstance(frames, list):
        return empty
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    with_faces = with_speaking = max_faces = 0
    face_ids: set[str] = set()
    speaking_ids: set[str] = set()
    for frame in frames:
        objects = frame.get("tracked_objects") if isinstance(frame, dict) else None
        faces = [
            o
            for o in objects or []
            if isinstance(o, dict) and str(o.get("label", "face")).lower() == "face"
        ]
        if not faces:
            continue
        with_faces += 1
        max_faces = max(max_faces, len(faces))
        face_ids.update(str(o.get("id")) for o in faces)
        speaking = [o for o in faces if o.get("is_speaking") or o.get("active_speakers")]
        if speaking:
            with_speaking += 1
            speaking_ids.update(str(o.get("id")) for o in speaking)
    total = int(metadata.get("total_frames") or len(frames))
    fusion = metadata.get("fusion") if isinstance(metadata.get("fusion"), dict) else {}
    return {
        "available": True,
        "frames": total,
        "fps": float(metadata.get("fps") or 0.0),
        "faces": sorted(face_ids),
        "speaking_faces": sorted(speaking_ids),
        "speakers_on_screen": dict(fusion.get("speakers") or {}),
        "speaking_method": fusion.get("method"),
        "summary": {
            "frames_with_faces": with_faces,
            "frames_with_speaking": with_speaking,
            "max_faces_detected": max_faces,
            "face_coverage_percent": round(with_faces / total * 100, 2) if total else 0.0,
        },
    }


# Statistics.


@dataclass
class VideoReport:
    """What the per-video report shows, and what the project and monthly reports add up."""

    job: Mapping[str, Any]
    video: Mapping[str, Any]
    project: str
    name: str
    metadata: dict[str, Any]
    scenes: dict[str, Any]
    audio: dict[str, Any]
    tracking: dict[str, Any]
    statistics: dict[str, Any]
    ok: bool
    steps: list[dict[str, Any]] = field(default_factory=list)


def project_of(video: Mapping[str, Any]) -> str:
    """A video's project: the last folder of its output folder (``<output>/<project>``)."""
    return PurePosixPath(str(video.get("output_dir") or "")).name


def video_report(media: MediaRoot, job: Mapping[str, Any], video: Mapping[str, Any]) -> VideoReport:
    """Reads the video's output files (blocking) and computes the legacy statistics."""
    files = output_files(media, video)
    audio = read_audio(files.get("audio"))
    tracking = read_tracking(files.get("tracking"))
    fps = audio["fps"] or tracking["fps"] or float(legacy.LEGACY_FPS)
    total_frames = audio["total_frames"] or tracking["frames"]
    scenes = read_scenes(files.get("scenes"), fps)
    if total_frames:
        duration = total_frames / fps
    elif scenes["scenes"]:
        duration = max(s["end_time_seconds"] for s in scenes["scenes"])
        total_frames = round(duration * fps)
    else:
        duration = 0.0
    metadata = {
        "filename": PurePosixPath(str(video.get("path", ""))).name,
        "fps": fps,
        "total_frames": total_frames,
        "duration_seconds": round(duration, 2),
        "duration_formatted": legacy.timecode(total_frames, fps),
        "has_scenes": scenes["available"],
        "has_audio": audio["available"],
        "has_tracking": tracking["available"],
        "from_cache": bool(video.get("from_cache")),
        "sha256": video.get("sha256") or "",
    }
    return VideoReport(
        job=job,
        video=video,
        project=project_of(video),
        name=metadata["filename"],
        metadata=metadata,
        scenes=scenes,
        audio=audio,
        tracking=tracking,
        statistics=statistics(duration, total_frames, fps, scenes, audio, tracking),
        ok=video.get("state") == "succeeded" and bool(files),
        steps=[dict(step) for step in video.get("steps") or []],
    )


def statistics(
    duration: float,
    total_frames: int,
    fps: float,
    scenes: Mapping[str, Any],
    audio: Mapping[str, Any],
    tracking: Mapping[str, Any],
) -> dict[str, Any]:
    """The legacy ``_compute_statistics`` (speech coverage is not capped, as there)."""
    lengths = [s["end_time_seconds"] - s["start_time_seconds"] for s in scenes["scenes"]]
    speech = sum(s["end_time"] - s["start_time"] for s in audio["segments"])
    summary = tracking.get("summary") or {}
    return {
        "video": {"duration_seconds": duration, "total_frames": total_frames, "fps": fps},
        "scenes": {
            "total_count": len(lengths),
            "average_duration": sum(lengths) / len(lengths) if lengths else 0.0,
            "shortest_duration": min(lengths, default=0.0),
            "longest_duration": max(lengths, default=0.0),
        },
        "audio": {
            "total_segments": len(audio["segments"]),
            "unique_speakers": len(audio["speakers"]),
            "total_speech_duration": speech,
            "speech_coverage_percent": speech / duration * 100 if duration else 0.0,
        },
        "tracking": {
            "frames_with_faces": summary.get("frames_with_faces", 0),
            "frames_with_speaking": summary.get("frames_with_speaking", 0),
            "max_faces_detected": summary.get("max_faces_detected", 0),
            "face_coverage_percent": summary.get("face_coverage_percent", 0.0),
        },
    }


def consolidate(reports: Sequence[VideoReport]) -> dict[str, Any]:
    """The project report's global figures (spec 04 §4.2), over the successful videos."""
    good = [r for r in reports if r.ok]
    stats = [r.statistics for r in good]
    duration = sum(s["video"]["duration_seconds"] for s in stats)
    speech = sum(s["audio"]["total_speech_duration"] for s in stats)
    weighted = [
        (s["video"]["fps"], s["video"]["duration_seconds"])
        for s in stats
        if s["video"]["fps"] > 0 and s["video"]["duration_seconds"] > 0
    ]
    weight = sum(d for _, d in weighted)
    coverage = [s["tracking"]["face_coverage_percent"] for s in stats]
    return {
        "videos": len(reports),
        "videos_ok": len(good),
        "total_duration": duration,
        "total_frames": sum(s["video"]["total_frames"] for s in stats),
        "total_scenes": sum(s["scenes"]["total_count"] for s in stats),
        "total_segments": sum(s["audio"]["total_segments"] for s in stats),
        "total_speech_duration": speech,
        "frames_with_faces": sum(s["tracking"]["frames_with_faces"] for s in stats),
        "frames_with_speaking": sum(s["tracking"]["frames_with_speaking"] for s in stats),
        "max_faces_detected": max((s["tracking"]["max_faces_detected"] for s in stats), default=0),
        "fps": sum(f * d for f, d in weighted) / weight if weight else 0.0,
        "unique_speakers": len({label for r in good for label in r.audio["speakers"]}),
        "speech_coverage_percent": speech / duration * 100 if duration else 0.0,
        "face_coverage_percent": sum(coverage) / len(coverage) if coverage else 0.0,
    }


# Monthly archive report.


def check_month(month: str) -> str:
    """``YYYY-MM`` with a real month (the legacy check let ``abcd-ef`` through)."""
    if not _MONTH.match(month):
        raise ReportError(400, f"Invalid month format: '{month}'. Expected YYYY-MM.")
    return month


def finished_at(job: Mapping[str, Any], video: Mapping[str, Any]) -> str | None:
    """When a video's results were published: its ``finalize`` step's end, else the job's."""
    for step in video.get("steps") or []:
        if step.get("name") == "finalize" and step.get("finished_at"):
            return str(step["finished_at"])
    value = job.get("finished_at")
    return str(value) if value else None


def normalise_name(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).split()).lower()


def duration_bucket(seconds: float) -> str:
    if seconds < 120:
        return "lt_2m"
    if seconds <= 300:
        return "between_2_5m"
    return "gt_5m"


def monthly_projects(
    month: str, reports: Iterable[tuple[str, VideoReport]]
) -> list[dict[str, Any]]:
    """Per project, the videos published in ``month`` (``(finished_at, report)`` pairs in)."""
    projects: dict[str, dict[str, Any]] = {}
    for stamp, report in reports:
        if not stamp.startswith(month) or normalise_name(report.name) in EXCLUDED_NAMES:
            continue
        entry = projects.setdefault(
            report.project,
            {
                "name": report.project,
                "archive_timestamp": stamp,
                "reports": [],
                "duration_names": {"lt_2m": [], "between_2_5m": [], "gt_5m": []},
            },
        )
        entry["archive_timestamp"] = max(entry["archive_timestamp"], stamp)
        entry["reports"].append(report)
        names = entry["duration_names"][duration_bucket(report.metadata["duration_seconds"])]
        name = normalise_name(report.name)
        if name not in names:
            names.append(name)
    result = []
    for name in sorted(projects):
        entry = projects[name]
        counts = {bucket: len(names) for bucket, names in entry["duration_names"].items()}
        good = [r for r in entry["reports"] if r.ok]
        entry.update(
            duration_counts=counts,
            video_count=sum(counts.values()),
            scenes=sum(r.statistics["scenes"]["total_count"] for r in good),
            speech=sum(r.statistics["audio"]["total_speech_duration"] for r in good),
            face_frames=sum(r.statistics["tracking"]["frames_with_faces"] for r in good),
            errors=len(entry["reports"]) - len(good),
        )
        result.append(entry)
    return result


def build_id(month: str, generated_at: str, projects: int, videos: int, listed: int) -> str:
    text = f"{month}|{generated_at}|{projects}|{videos}|{listed}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# Rendering.


def format_duration(seconds: float | None) -> str:
    """Seconds as ``HH:MM:SS`` (falsy: ``00:00:00``)."""
    total = int(seconds or 0)
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def format_percentage(value: float | None) -> str:
    return f"{(value or 0.0):.1f}%"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["format_duration"] = format_duration
    env.filters["format_percentage"] = format_percentage
    return env


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


class Reports:
    """Renders the three reports from contract-shaped job dicts and the media root."""

    def __init__(self, media: MediaRoot) -> None:
        self.media = media
        self.env = environment()

    def _render(self, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(generated_at=now_iso(), **context)

    def error_page(self, error: ReportError) -> str:
        return self._render("error.html", status=error.status, message=error.message)

    def video(self, job: Mapping[str, Any], index: int) -> str:
        videos = {int(v.get("index", i)): v for i, v in enumerate(job.get("videos") or [])}
        if index not in videos:
            raise ReportError(404, f"job {job.get('job_id')} has no video {index}")
        report = video_report(self.media, job, videos[index])
        return self._render("video_report.html", r=report)

    def project(self, project: str, jobs: Sequence[Mapping[str, Any]]) -> str:
        reports = self.project_reports(project, jobs)
        if not reports:
            raise ReportError(404, f"Project '{project}' not found")
        return self._render(
            "project_report.html",
            project_name=project,
            reports=reports,
            consolidated=consolidate(reports),
        )

    def project_reports(self, project: str, jobs: Sequence[Mapping[str, Any]]) -> list[VideoReport]:
        """The newest analysis of each video of ``project`` (one row per content hash)."""
        latest: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
        for job in sorted(jobs, key=lambda j: str(j.get("created_at") or "")):
            for video in job.get("videos") or []:
                if project_of(video) == project:
                    latest[str(video.get("sha256") or video.get("path"))] = (job, video)
        reports = [video_report(self.media, j, v) for j, v in latest.values()]
        return sorted(reports, key=lambda r: r.name)

    def monthly(self, month: str, jobs: Sequence[Mapping[str, Any]]) -> str:
        check_month(month)
        pairs = []
        for job in jobs:
            for video in job.get("videos") or []:
                stamp = finished_at(job, video)
                if stamp and stamp.startswith(month):
                    pairs.append((stamp, video_report(self.media, job, video)))
        projects = monthly_projects(month, pairs)
        if not projects:
            raise ReportError(404, f"No archived projects found for month '{month}'")
        generated_at = now_iso()
        videos = sum(p["video_count"] for p in projects)
        listed = sum(len(p["reports"]) for p in projects)
        return self.env.get_template("monthly_report.html").render(
            month=month,
            generated_at=generated_at,
            build_id=build_id(month, generated_at, len(projects), videos, listed),
            projects=projects,
            video_count=videos,
        )


#: Jobs read for the project and monthly reports (the newest first).
JOBS_SCANNED = 1000
REPORTS = web.AppKey("reports", Reports)


def setup(app: web.Application) -> None:
    """Adds the report routes (HTML; errors are HTML pages with the matching status too)."""
    app[REPORTS] = Reports(app[MEDIA])
    app.router.add_get("/reports/jobs/{job_id}/videos/{index}", video_page)
    app.router.add_get("/reports/projects/{project}", project_page)
    app.router.add_get("/reports/monthly/{month}", monthly_page)


async def _page(request: web.Request, call: Any, *args: Any) -> web.Response:
    reports = request.app[REPORTS]
    try:
        html = await asyncio.to_thread(call, *args)
    except ReportError as error:
        return web.Response(
            text=reports.error_page(error), status=error.status, content_type="text/html"
        )
    return web.Response(text=html, content_type="text/html")


async def _jobs(request: web.Request) -> list[dict[str, Any]]:
    try:
        jobs = await request.app[ORCHESTRATOR].list(limit=JOBS_SCANNED)
    except grpc.aio.AioRpcError as exc:
        message = f"the orchestrator is unavailable ({exc.code().name.lower()})"
        raise ReportError(503, message) from None
    return [job_json(job) for job in jobs]


async def video_page(request: web.Request) -> web.Response:
    reports = request.app[REPORTS]
    try:
        index = int(request.match_info["index"])
        job = await request.app[ORCHESTRATOR].get(request.match_info["job_id"])
    except ValueError:
        return await _page(request, _fail, 400, "the video index must be an integer")
    except grpc.aio.AioRpcError as exc:
        status = 404 if exc.code() == grpc.StatusCode.NOT_FOUND else 503
        return await _page(request, _fail, status, exc.details() or "the job cannot be read")
    return await _page(request, reports.video, job_json(job), index)


async def project_page(request: web.Request) -> web.Response:
    try:
        jobs = await _jobs(request)
    except ReportError as error:
        return await _page(request, _fail, error.status, error.message)
    return await _page(request, request.app[REPORTS].project, request.match_info["project"], jobs)


async def monthly_page(request: web.Request) -> web.Response:
    month = request.match_info["month"]
    try:
        check_month(month)
        jobs = await _jobs(request)
    except ReportError as error:
        return await _page(request, _fail, error.status, error.message)
    return await _page(request, request.app[REPORTS].monthly, month, jobs)


def _fail(status: int, message: str) -> str:
    raise ReportError(status, message)
