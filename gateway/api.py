"""REST routes under ``/api/v1``: jobs, logs, per-video results, media, thumbnails, artifacts."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
import threading
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from gateway import auth, openapi, system, uploads
from gateway.convert import JOB_STATE_BY_NAME, event_json, job_json, options_proto
from gateway.errors import ApiError, from_grpc
from gateway.keys import MEDIA, ORCHESTRATOR, SETTINGS
from orchestrator import legacy
from protos.videoanalysis.v1 import orchestrator_pb2
from services.common.ffmpeg import require_binary
from services.common.files import replacing

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
LEGACY_FPS = 25
THUMBNAIL_WIDTH = 240
#: Longest video a thumbnail may be asked of (frames at 25 fps: 24 hours).
MAX_FRAME = 25 * 3600 * 24
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_thumbnail_slots = asyncio.Semaphore(2)

ARTIFACTS = {
    "scenes": legacy.SCENES_SUFFIX,
    "audio": legacy.AUDIO_SUFFIX,
    "tracking": legacy.TRACKING_SUFFIX,
    "docs_tracking": ".json",
    "docs_audio": "_audio.json",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _grpc_errors(handler: Handler) -> Handler:
    """Turns the orchestrator's refusals into HTTP errors."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc) from None

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}")
    return value


async def _job(request: web.Request) -> orchestrator_pb2.Job:
    job_id = request.match_info["job_id"]
    if not _JOB_ID.match(job_id):
        raise ApiError(404, f"no such job: {job_id[:64]}")
    return await request.app[ORCHESTRATOR].get(job_id)


async def _video(request: web.Request) -> tuple[orchestrator_pb2.Job, orchestrator_pb2.VideoStatus]:
    job = await _job(request)
    index = int(request.match_info["index"])
    for video in job.videos:
        if video.index == index:
            return job, video
    raise ApiError(404, f"job {job.job_id} has no video {index}")


def _output(request: web.Request, video: orchestrator_pb2.VideoStatus, name: str) -> Path:
    """A file of the video's output folder, or 404 while it does not exist."""
    if not video.output_dir:
        raise ApiError(404, "this video has no outputs yet")
    path = request.app[MEDIA].resolve(f"{video.output_dir}/{name}", must_exist=False)
    if not path.is_file():
        raise ApiError(404, f"not written (yet): {name}")
    return path


def _stem(video: orchestrator_pb2.VideoStatus) -> str:
    return Path(video.path).stem


# Jobs.


@_grpc_errors
async def submit_job(request: web.Request) -> web.Response:
    settings, media = request.app[SETTINGS], request.app[MEDIA]
    client = request.app[ORCHESTRATOR]
    if request.content_type == "multipart/form-data":
        upload = await uploads.receive(request, settings, media)
        try:
            options = options_proto(upload.options) if upload.options is not None else None
            job = await client.submit(
                upload.inputs, options or orchestrator_pb2.JobOptions(), upload.label[:200]
            )
        except ValueError as exc:
            upload.discard()
            raise ApiError(400, str(exc)) from None
        except BaseException:
            upload.discard()
            raise
        return web.json_response(job_json(job), status=201)
    if request.content_type != "application/json":
        raise ApiError(415, "send multipart/form-data (file parts) or application/json")
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise ApiError(400, "inputs must be a non-empty list of media-root-relative paths")
    for path in inputs:
        media.resolve(path)  # 400 outside the root, 404 missing
    label = body.get("label") or ""
    if not isinstance(label, str):
        raise ApiError(400, "label must be a string")
    try:
        options = options_proto(body.get("options") or {})
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    job = await client.submit(inputs, options, label[:200])
    return web.json_response(job_json(job), status=201)


@_grpc_errors
async def list_jobs(request: web.Request) -> web.Response:
    limit = _int_query(request, "limit", 50, 1, 1000)
    states = []
    for name in request.query.getall("state", []):
        for part in filter(None, name.split(",")):
            if part not in JOB_STATE_BY_NAME:
                raise ApiError(400, f"unknown state {part!r} (one of {sorted(JOB_STATE_BY_NAME)})")
            states.append(JOB_STATE_BY_NAME[part])
    jobs = await request.app[ORCHESTRATOR].list(limit, states)
    return web.json_response({"jobs": [job_json(j) for j in jobs]})


@_grpc_errors
async def get_job(request: web.Request) -> web.Response:
    return web.json_response(job_json(await _job(request)))


@_grpc_errors
async def cancel_job(request: web.Request) -> web.Response:
    job = await _job(request)
    return web.json_response(job_json(await request.app[ORCHESTRATOR].cancel(job.job_id)))


@_grpc_errors
async def job_logs(request: web.Request) -> web.Response:
    job = await _job(request)
    after = _int_query(request, "after", 0, 0, 2**62)
    limit = _int_query(request, "limit", 1000, 1, 10_000)
    lines = await request.app[ORCHESTRATOR].logs(job.job_id, after, limit)
    return web.json_response({"lines": [event_json(e) for e in lines]})


# Results of one video.


@_grpc_errors
async def video_scenes(request: web.Request) -> web.Response:
    _, video = await _video(request)
    path = _output(request, video, _stem(video) + legacy.SCENES_SUFFIX)
    text = await asyncio.to_thread(path.read_text, "utf-8")
    shots = [
        {
            "no": int(row["No"]),
            "frame_in": int(row["Frame In"]),
            "frame_out": int(row["Frame Out"]),
            "timecode_in": row["Timecode In"],
            "timecode_out": row["Timecode Out"],
        }
        for row in csv.DictReader(io.StringIO(text))
    ]
    return web.json_response({"fps": LEGACY_FPS, "shots": shots})


@_grpc_errors
async def video_speakers(request: web.Request) -> web.Response:
    _, video = await _video(request)
    path = _output(request, video, _stem(video) + legacy.AUDIO_SUFFIX)
    text = await asyncio.to_thread(path.read_text, "utf-8")
    return web.json_response(speaker_segments(json.loads(text)))


def speaker_segments(doc: dict[str, Any]) -> dict[str, Any]:
    """The per-frame audio JSON as runs: ``{speaker, start_frame, end_frame}`` (1-based,
    inclusive), in order of their start."""
    open_runs: dict[str, int] = {}
    last_frame: dict[str, int] = {}
    segments = []
    frames = doc.get("frames_analysis", [])
    for entry in frames:
        frame = int(entry["frame"])
        labels = set(entry.get("audio_info", {}).get("active_speaker_labels", []))
        for speaker in list(open_runs):
            if speaker not in labels:
                segments.append((open_runs.pop(speaker), last_frame[speaker], speaker))
        for speaker in labels:
            open_runs.setdefault(speaker, frame)
            last_frame[speaker] = frame
    for speaker, start in open_runs.items():
        segments.append((start, last_frame[speaker], speaker))
    segments.sort()
    return {
        "fps": doc.get("fps", LEGACY_FPS),
        "total_frames": doc.get("total_frames", len(frames)),
        "speakers": sorted({s for _start, _end, s in segments}),
        "segments": [{"speaker": s, "start_frame": a, "end_frame": b} for a, b, s in segments],
    }


@_grpc_errors
async def video_faces(request: web.Request) -> web.StreamResponse:
    _, video = await _video(request)
    path = _output(request, video, _stem(video) + legacy.TRACKING_SUFFIX)
    return web.FileResponse(path, headers={"Content-Type": "application/json"})


@_grpc_errors
async def video_media(request: web.Request) -> web.StreamResponse:
    _, video = await _video(request)
    media = request.app[MEDIA]
    for relative in (video.normalized_path, video.path):
        if relative:
            path = media.resolve(relative, must_exist=False)
            if path.is_file():
                return web.FileResponse(path)
    raise ApiError(404, "the video file is gone")


@_grpc_errors
async def video_thumbnail(request: web.Request) -> web.StreamResponse:
    job, video = await _video(request)
    frame = int(request.match_info["frame"])
    if not 1 <= frame <= MAX_FRAME:
        raise ApiError(404, f"frame must be between 1 and {MAX_FRAME}")
    settings, media = request.app[SETTINGS], request.app[MEDIA]
    target = media.root / settings.thumbnails_dir / job.job_id / str(video.index) / f"{frame}.jpg"
    if not target.is_file():
        source = next(
            (
                media.resolve(p, must_exist=False)
                for p in (video.normalized_path, video.path)
                if p and media.resolve(p, must_exist=False).is_file()
            ),
            None,
        )
        if source is None:
            raise ApiError(404, "the video file is gone")
        async with _thumbnail_slots:
            await _render_thumbnail(source, frame, target)
    return web.FileResponse(target, headers={"Cache-Control": "max-age=86400"})


async def _render_thumbnail(source: Path, frame: int, target: Path) -> None:
    with replacing(target) as temp:
        process = await asyncio.create_subprocess_exec(
            require_binary("ffmpeg"),
            "-v",
            "error",
            "-y",
            "-ss",
            f"{(frame - 1) / LEGACY_FPS:.3f}",
            "-i",
            str(source),
            "-frames:v",
            "1",
            "-vf",
            f"scale={THUMBNAIL_WIDTH}:-2",
            "-q:v",
            "5",
            str(temp),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _out, err = await asyncio.wait_for(process.communicate(), timeout=30)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise ApiError(504, "the thumbnail took too long") from None
        if process.returncode != 0 or temp.stat().st_size == 0:
            log.info("no thumbnail of frame %d of %s: %s", frame, source.name, err[-200:])
            raise ApiError(404, f"no frame {frame} in this video")


@_grpc_errors
async def video_artifact(request: web.Request) -> web.StreamResponse:
    _, video = await _video(request)
    kind = request.match_info["kind"]
    stem = _stem(video)
    if kind == "archive":
        return await _archive(request, video)
    if kind not in ARTIFACTS:
        raise ApiError(404, f"unknown artifact {kind!r} (one of {[*ARTIFACTS, 'archive']})")
    name = stem + ARTIFACTS[kind]
    if kind.startswith("docs_"):
        name = f"{legacy.DOCS_DIR}/{name}"
    path = _output(request, video, name)
    disposition = f'attachment; filename="{_ascii(Path(name).name)}"'
    return web.FileResponse(path, headers={"Content-Disposition": disposition})


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)


async def _archive(request: web.Request, video: orchestrator_pb2.VideoStatus) -> web.StreamResponse:
    """A zip of the video's archive folder, written by a thread into the response as it goes."""
    if not video.sha256 or not video.output_dir:
        raise ApiError(404, "this video is not archived yet")
    project = Path(video.output_dir).name
    settings, media = request.app[SETTINGS], request.app[MEDIA]
    folder = media.resolve(f"{settings.archives_dir}/{project}/{video.sha256}", must_exist=False)
    if not folder.is_dir():
        raise ApiError(404, "this video is not archived yet")
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{_ascii(_stem(video))}.zip"',
        }
    )
    await response.prepare(request)
    async for chunk in _zip_chunks(folder):
        await response.write(chunk)
    await response.write_eof()
    return response


async def _zip_chunks(folder: Path) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=8)
    stop = threading.Event()

    class _Sink(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            if stop.is_set():
                raise OSError("the client went away")
            asyncio.run_coroutine_threadsafe(queue.put(bytes(data)), loop).result()
            return len(data)

    def write_zip() -> None:
        try:
            with zipfile.ZipFile(_Sink(), "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(folder.rglob("*")):
                    if path.is_file() and not path.is_symlink():
                        archive.write(path, path.relative_to(folder).as_posix())
            result: BaseException | None = None
        except BaseException as exc:
            result = exc
        if not stop.is_set():
            asyncio.run_coroutine_threadsafe(queue.put(result), loop).result()

    worker = loop.run_in_executor(None, write_zip)
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not queue.empty():
            queue.get_nowait()
        await worker


def setup_routes(app: web.Application) -> None:
    video = PREFIX + r"/jobs/{job_id}/videos/{index:\d{1,6}}"
    app.router.add_post(PREFIX + "/jobs", submit_job)
    app.router.add_get(PREFIX + "/jobs", list_jobs)
    app.router.add_get(PREFIX + "/jobs/{job_id}", get_job)
    app.router.add_post(PREFIX + "/jobs/{job_id}/cancel", cancel_job)
    app.router.add_get(PREFIX + "/jobs/{job_id}/logs", job_logs)
    app.router.add_get(video + "/scenes", video_scenes)
    app.router.add_get(video + "/speakers", video_speakers)
    app.router.add_get(video + "/faces", video_faces)
    app.router.add_get(video + "/media", video_media)
    app.router.add_get(video + r"/thumbnails/{frame:\d{1,9}}.jpg", video_thumbnail)
    app.router.add_get(video + "/artifacts/{kind}", video_artifact)
    app.router.add_post(auth.SESSION_PATH, auth.start_session)
    app.router.add_delete(auth.SESSION_PATH, auth.end_session)
    app.router.add_get(PREFIX + "/services", system.services)
    app.router.add_get(PREFIX + "/system", system.system)
    app.router.add_get(PREFIX + "/openapi.json", openapi.handler)
