"""Jobs: the persistent per-video DAG and its fan-out to the services.

Per video: extract → normalize → {scene, audio, tracking} concurrently → fuse → reduce → finalize.

- Every step's state, attempts and result (the paths of the files it wrote) are stored before the
  next step starts; a restarted orchestrator resumes unfinished jobs and skips finished steps.
- One video's failure never stops the others; the job ends ``completed``,
  ``completed_with_errors``, ``failed`` or ``cancelled`` with the reasons.
- Cancelling a job cancels its task: the running RPCs are cancelled (the services stop) and every
  unfinished step is recorded CANCELLED. Stopping the orchestrator is not a cancel: running steps
  stay RUNNING in the database and are redone after the restart.
- Nothing reaches the output folder before ``finalize``: the full files and the reductions are
  staged in the video's work folder, archived, then copied into place atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import grpc

from orchestrator import artifacts, legacy
from orchestrator import store as st
from orchestrator.archive import ResultsArchive, check_project_name
from orchestrator.clients import CallFailed, Clients
from orchestrator.config import OrchestratorSettings
from orchestrator.events import EventHub
from orchestrator.fusion import FUSION_VERSION, fuse
from orchestrator.outputs import copy_atomic, sha256_file, write_atomic
from orchestrator.views import (
    JOB_STATE,
    LiveProgress,
    job_proto,
    options_dict,
    options_proto,
    step_proto,
)
from protos.videoanalysis.v1 import (
    audio_pb2,
    common_pb2,
    orchestrator_pb2,
    scene_pb2,
    tracking_pb2,
)
from services.common import metrics
from services.common.errors import (
    InvalidArgument,
    MediaNotFound,
    ServiceError,
    UndecodableMedia,
)
from services.common.logs import request_id_var
from services.common.media import MediaRoot

log = logging.getLogger(__name__)

ARCHIVE_EXTENSIONS = (".zip", ".rar", ".7z", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
#: Bumped whenever the output files would change for the same inputs (invalidates the cache).
OUTPUT_VERSION = 1

_REASONS = {
    grpc.StatusCode.FAILED_PRECONDITION: "undecodable",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "busy",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
    grpc.StatusCode.CANCELLED: "cancelled",
}


class StepFailed(Exception):
    """A step of one video failed; the video fails with this reason, the job goes on."""

    def __init__(self, step: str, reason: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.reason = reason
        self.message = message


def describe_error(exc: BaseException) -> tuple[str, str]:
    """A machine-readable reason and a message for a failure."""
    if isinstance(exc, StepFailed):
        return exc.reason, exc.message
    if isinstance(exc, CallFailed):
        return _REASONS.get(exc.code, "internal"), f"{exc.service} {exc.code.name}: {exc.details}"
    if isinstance(exc, ServiceError):  # the same reason as that error's status from a service
        return _REASONS.get(exc.code, "error"), str(exc)
    if isinstance(exc, OSError):
        return "io_error", f"{exc.__class__.__name__}: {exc}"
    return "internal", f"{exc.__class__.__name__}: {exc}"


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


def is_video(path: Path) -> bool:
    return path.suffix.lower() in legacy.VIDEO_EXTENSIONS


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_EXTENSIONS)


def safe_project(name: str) -> str:
    """A project folder name that stays inside the output and archive folders."""
    cleaned = re.sub(r"[/\\\x00]", "_", name).strip().lstrip(".") or "project"
    return check_project_name(cleaned)


@dataclass
class StepReporter:
    """What a step's work gets to report progress and retries."""

    progress: Callable[[common_pb2.Progress], None]
    retry: Callable[[int, grpc.StatusCode, str, float], None]


@dataclass
class VideoContext:
    job_id: str
    video: st.VideoRow
    options: orchestrator_pb2.JobOptions
    #: Archive folder whose results this video reuses (a cache hit), relative to the media root.
    cache_entry: str = ""
    #: Duration of the source (from the probe), for deadlines.
    duration_s: float = 0.0
    #: Set once the normalised file exists (scene and audio may wait for it).
    normalized: asyncio.Event = field(default_factory=asyncio.Event)

    def step(self, name: str) -> st.StepRow:
        return self.video.steps[name]


class Orchestrator:
    """Owns the jobs: submits, runs, resumes, cancels and shows them."""

    def __init__(
        self, settings: OrchestratorSettings, store: st.JobStore, clients: Clients
    ) -> None:
        self.settings = settings
        self.store = store
        self.clients = clients
        self.media = MediaRoot(settings.media_root)
        self.archive = ResultsArchive(self.media.root / settings.archives_dir)
        self.hub = EventHub()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, dict[tuple[int, str], LiveProgress]] = {}
        self._user_cancelled: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._job_slots = asyncio.Semaphore(max(1, settings.parallel_jobs))

    # Lifecycle.

    async def start(self) -> list[str]:
        """Resumes the jobs an earlier process left unfinished; returns their ids."""
        resumed = []
        for job_id in await self.store.unfinished_jobs():
            job = await self.store.get_job(job_id)
            if job is None:
                continue
            await self.store.reset_interrupted(job_id)
            if job.cancel_requested:
                await self._finish_cancelled(job_id)
                continue
            log.info("resuming job %s", job_id)
            self._schedule(job_id)
            resumed.append(job_id)
        return resumed

    async def resume(self, job_id: str) -> None:
        """Continues an unfinished job (steps left RUNNING by a crash are redone)."""
        if job_id in self._tasks:
            return
        await self.store.reset_interrupted(job_id)
        self._schedule(job_id)

    async def close(self) -> None:
        """Stops running jobs without cancelling them (a restart resumes them)."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # Requests.

    async def submit(
        self,
        inputs: Sequence[str],
        options: orchestrator_pb2.JobOptions | None = None,
        label: str = "",
    ) -> str:
        """Validates and records a job, starts it, and returns its id.

        Raises:
            InvalidArgument: no inputs, a path outside the media root, a bad output folder.
            MediaNotFound: an input does not exist.
        """
        options = options or orchestrator_pb2.JobOptions()
        if not inputs:
            raise InvalidArgument("a job needs at least one input")
        for path in inputs:
            self.media.resolve(path)
        if options.num_speakers < 0 or options.min_speakers < 0 or options.max_speakers < 0:
            raise InvalidArgument("speaker counts cannot be negative")
        if options.max_speakers and options.min_speakers > options.max_speakers:
            raise InvalidArgument("min_speakers is larger than max_speakers")
        if not 0 <= options.scene_threshold < 1:
            raise InvalidArgument("scene_threshold must be in [0, 1)")
        output_dir = options.output_dir or self.settings.output_dir
        self.media.resolve(output_dir, must_exist=False)
        job_id = uuid.uuid4().hex[:16]
        await self.store.create_job(job_id, list(inputs), options_dict(options), label, output_dir)
        log.info("job %s submitted: %s", job_id, ", ".join(inputs))
        self._schedule(job_id)
        return job_id

    async def cancel(self, job_id: str) -> orchestrator_pb2.Job | None:
        """Cancels a job and waits (briefly) until its work has stopped."""
        job = await self.store.get_job(job_id)
        if job is None:
            return None
        if job.state not in st.FINAL_JOB_STATES:
            await self.store.request_cancel(job_id)
            self._user_cancelled.add(job_id)
            task = self._tasks.get(job_id)
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=30)
            else:
                await self._finish_cancelled(job_id)
        return await self.snapshot(job_id)

    async def snapshot(self, job_id: str) -> orchestrator_pb2.Job | None:
        job = await self.store.get_job(job_id)
        if job is None:
            return None
        return job_proto(job, self._live.get(job_id))

    async def list_jobs(self, limit: int, states: Sequence[str]) -> list[orchestrator_pb2.Job]:
        jobs = await self.store.list_jobs(limit or 50, states)
        return [job_proto(job, self._live.get(job.job_id)) for job in jobs]

    async def watch(self, job_id: str) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        """A snapshot, then the job's events, until it ends (then a last snapshot)."""
        with self.hub.subscribe(job_id) as queue:
            first = await self.snapshot(job_id)
            if first is None:
                raise MediaNotFound(f"no such job: {job_id}")
            yield self.hub.event(job_id, snapshot=first)
            if first.state in _FINAL_PROTO_STATES:
                return
            while True:
                event = await queue.get()
                yield event
                if event.HasField("snapshot") and event.snapshot.state in _FINAL_PROTO_STATES:
                    return

    async def wait(self, job_id: str) -> None:
        """Returns when the job's task is over (for the CLI and tests)."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.wait({task})  # cancelling the waiter does not cancel the job

    # Running a job.

    def _schedule(self, job_id: str) -> None:
        task = asyncio.create_task(self._run_job(job_id), name=f"job-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(job_id, None))

    async def _run_job(self, job_id: str) -> None:
        request_id_var.set(job_id)
        self._live[job_id] = {}
        running = False
        try:
            async with self._job_slots:
                job = await self.store.get_job(job_id)
                if job is None or job.state in st.FINAL_JOB_STATES:
                    return
                running = True
                metrics.JOBS_RUNNING.inc()
                await self.store.set_job_state(job_id, st.RUNNING)
                self.hub.publish(job_id, state=orchestrator_pb2.JOB_STATE_RUNNING)
                options = options_proto(job.options)
                videos = await self._discover(job, options)
                slots = asyncio.Semaphore(max(1, self.settings.parallel_videos))
                async with asyncio.TaskGroup() as group:
                    for video in videos:
                        group.create_task(self._run_video(job_id, video, options, slots))
                state, error = await self._final_state(job_id)
                await self._finish(job_id, state, error)
        except asyncio.CancelledError:
            if job_id in self._user_cancelled and not self._closing:
                await self._finish_cancelled(job_id)
                return
            raise
        except Exception as exc:  # a bug: the job fails with the reason, the process lives on
            log.exception("job %s failed", job_id)
            await self._finish(job_id, st.FAILED, f"internal error: {describe_error(exc)[1]}")
        finally:
            if running:
                metrics.JOBS_RUNNING.dec()
            self._live.pop(job_id, None)
            self._cleanup_job_work(job_id)

    async def _finish(self, job_id: str, state: str, error: str) -> None:
        await self.store.set_job_state(job_id, state, error=error, finished=True)
        metrics.JOBS.labels(state).inc()
        log.info("job %s %s%s", job_id, state, f": {error}" if error else "")
        self.hub.publish(job_id, state=JOB_STATE[state])
        snapshot = await self.snapshot(job_id)
        if snapshot is not None:
            self.hub.publish(job_id, snapshot=snapshot)

    async def _finish_cancelled(self, job_id: str) -> None:
        await self.store.cancel_unfinished(job_id, "cancelled")
        await self._finish(job_id, st.CANCELLED, "cancelled by request")
        self._user_cancelled.discard(job_id)

    async def _final_state(self, job_id: str) -> tuple[str, str]:
        job = await self.store.get_job(job_id)
        assert job is not None
        ok = [v for v in job.videos if v.state == st.SUCCEEDED]
        failed = [v for v in job.videos if v.state != st.SUCCEEDED]
        reasons = [f"{v.path}: {v.error}" for v in failed]
        reasons += [f"{e['subject']}: {e['message']}" for e in job.errors]
        if not job.videos:
            return st.FAILED, "; ".join(reasons) or "no video found in the inputs"
        if not reasons:
            return st.COMPLETED, ""
        summary = f"{len(failed)} of {len(job.videos)} videos failed" if failed else "input errors"
        state = st.COMPLETED_WITH_ERRORS if ok else st.FAILED
        return state, f"{summary}: " + "; ".join(reasons)

    def _cleanup_job_work(self, job_id: str) -> None:
        if self.settings.keep_work:
            return
        folder = self.media.root / self.settings.work_dir / job_id
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: failed videos keep their files for inspection

    # Inputs → videos.

    async def _discover(
        self, job: st.JobRow, options: orchestrator_pb2.JobOptions
    ) -> list[st.VideoRow]:
        found: list[tuple[int, str, str]] = []
        for item in job.inputs:
            if item.state == st.SUCCEEDED:
                found.extend(
                    (item.idx, v["path"], v["project"]) for v in item.result.get("videos", [])
                )
                continue
            try:
                kind, videos = await self._expand_input(job.job_id, item, options)
            except Exception as exc:
                reason, message = describe_error(exc)
                if reason == "internal":
                    log.exception("input %s", item.path)
                log.warning("input %s failed: %s", item.path, message)
                await self.store.update_input(job.job_id, item.idx, state=st.FAILED, error=message)
                await self.store.add_job_error(job.job_id, reason, message, item.path)
                self.hub.publish(
                    job.job_id,
                    error=common_pb2.ErrorDetail(reason=reason, message=message, subject=item.path),
                )
                continue
            await self.store.update_input(
                job.job_id, item.idx, kind=kind, state=st.SUCCEEDED, result={"videos": videos}
            )
            found.extend((item.idx, v["path"], v["project"]) for v in videos)

        rows: list[st.VideoRow] = []
        seen: set[str] = set()
        stems: set[tuple[str, str]] = set()
        for input_idx, path, project in found:
            if path in seen:
                continue
            seen.add(path)
            out_dir = f"{job.output_dir.rstrip('/')}/{project}"
            base = PurePosixPath(path).stem
            stem, n = base, 1
            while (out_dir, stem) in stems:
                n += 1
                stem = f"{base}_{n}"
            stems.add((out_dir, stem))
            idx = len(rows)
            rows.append(
                st.VideoRow(
                    idx=idx,
                    input_idx=input_idx,
                    path=path,
                    project=project,
                    stem=stem,
                    output_dir=out_dir,
                    work_dir=f"{self.settings.work_dir}/{job.job_id}/{idx}-{_slug(stem)}",
                )
            )
        await self.store.add_videos(job.job_id, rows)
        refreshed = await self.store.get_job(job.job_id)
        assert refreshed is not None
        for video in refreshed.videos:
            extract = video.steps["extract"]
            if extract.state == st.PENDING:
                from_archive = refreshed.inputs[video.input_idx].kind == "archive"
                state = st.SUCCEEDED if from_archive else st.SKIPPED
                await self.store.update_step(
                    job.job_id,
                    video.idx,
                    "extract",
                    state=state,
                    finished=True,
                    result={"input": refreshed.inputs[video.input_idx].path},
                )
                extract.state = state
        return refreshed.videos

    async def _expand_input(
        self, job_id: str, item: st.InputRow, options: orchestrator_pb2.JobOptions
    ) -> tuple[str, list[dict[str, str]]]:
        path = self.media.resolve(item.path)
        if path.is_dir():
            videos = await asyncio.to_thread(self._scan_folder, path)
            if not videos:
                raise MediaNotFound(f"no video in folder {item.path}")
            return "folder", videos
        if is_video(path):
            return "video", [{"path": self.media.relative(path), "project": self._project_of(path)}]
        if is_archive(path):
            return "archive", await self._extract(job_id, item, options)
        raise InvalidArgument(f"not a video, an archive or a folder: {item.path}")

    def _scan_folder(self, folder: Path) -> list[dict[str, str]]:
        own = {
            (self.media.root / name).resolve()
            for name in (
                self.settings.output_dir,
                self.settings.archives_dir,
                self.settings.work_dir,
            )
        }
        videos = []
        for path in sorted(folder.rglob("*")):
            relative_parts = path.relative_to(folder).parts
            if any(part.startswith(".") for part in relative_parts):
                continue
            if any(path.is_relative_to(o) for o in own) or not path.is_file() or not is_video(path):
                continue
            project = (
                safe_project(folder.name) if folder != self.media.root else self._project_of(path)
            )
            videos.append({"path": self.media.relative(path), "project": project})
        return videos

    def _project_of(self, video: Path) -> str:
        """A lone video's project: its folder's name, or its stem at the media root."""
        parent = video.parent
        return safe_project(parent.name if parent != self.media.root else video.stem)

    async def _extract(
        self, job_id: str, item: st.InputRow, options: orchestrator_pb2.JobOptions
    ) -> list[dict[str, str]]:
        def on_progress(progress: common_pb2.Progress) -> None:
            self._log(job_id, "INFO", f"extracting {item.path}: {progress.done}/{progress.total}")

        # One folder per job and input: a rerun or a resumed extraction never merges into
        # (and gets "_2" copies from) an earlier extraction of the same archive.
        destination = f"{self.settings.extract_dir}/{job_id}/{item.idx}"
        await asyncio.to_thread(shutil.rmtree, self._abs(destination), True)
        result = await self.clients.ingest.extract(
            item.path,
            destination,
            delete_source=options.delete_archives,
            deadline_s=self.settings.deadline_base_s,
            on_progress=on_progress,
        )
        project = safe_project(result.project_name)
        if result.failed_count or result.skipped_count:
            self._log(
                job_id,
                "WARNING",
                f"{item.path}: {result.skipped_count} member(s) skipped, "
                f"{result.failed_count} failed",
            )
        if not result.videos:
            raise MediaNotFound(f"no video in archive {item.path}")
        return [{"path": video, "project": project} for video in result.videos]

    # Running one video.

    async def _run_video(
        self,
        job_id: str,
        video: st.VideoRow,
        options: orchestrator_pb2.JobOptions,
        slots: asyncio.Semaphore,
    ) -> None:
        if video.state == st.SUCCEEDED:
            return
        context = VideoContext(job_id, video, options)
        try:
            async with slots:
                await self._set_video(context, state=st.RUNNING, error="")
                await self._pipeline(context)
                await self._set_video(context, state=st.SUCCEEDED, error="")
                self._cleanup_video_work(video)
        except StepFailed as failure:
            message = f"{failure.step}: {failure.message}"
            await self._set_video(context, state=st.FAILED, error=message)
            self.hub.publish(
                job_id,
                error=common_pb2.ErrorDetail(
                    reason=failure.reason, message=message, subject=video.path
                ),
            )
        except asyncio.CancelledError:
            if not self._closing:
                await self._set_video(context, state=st.CANCELLED, error="cancelled")
            raise

    async def _set_video(self, context: VideoContext, **fields: Any) -> None:
        await self.store.update_video(context.job_id, context.video.idx, **fields)
        for key, value in fields.items():
            setattr(context.video, key, value)

    def _cleanup_video_work(self, video: st.VideoRow) -> None:
        if not self.settings.keep_work:
            shutil.rmtree(self.media.root / video.work_dir, ignore_errors=True)

    async def _pipeline(self, context: VideoContext) -> None:
        if await self._prelude(context):
            for name in ("normalize", "scene", "audio", "tracking"):
                await self._skip(context, name, "results reused from the archive")
        else:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._normalize_then_track(context))
                    group.create_task(self._analyse_after_normalize(context, "scene"))
                    group.create_task(self._analyse_after_normalize(context, "audio"))
            except BaseExceptionGroup as group:
                failures = [e for e in group.exceptions if isinstance(e, StepFailed)]
                if failures:
                    raise failures[0] from None
                raise
        await self._step(context, "fuse", self._fuse)
        await self._step(context, "reduce", self._reduce)
        await self._step(context, "finalize", self._finalize)

    async def _prelude(self, context: VideoContext) -> bool:
        """Hashes the source and looks for cached results (True: reuse them); otherwise probes
        it. Not a step of its own: it is cheap and redone on resume. Failures fail "normalize"."""
        video = context.video
        try:
            source = self.media.resolve(video.path)
            sha = await asyncio.to_thread(sha256_file, source)
            if sha != video.sha256:
                await self._set_video(context, sha256=sha)
            key = options_key(context.options)
            entry = None
            if not context.options.no_cache:
                entry = await asyncio.to_thread(self.archive.find_cached, sha, key)
            if entry is not None:
                metrics.CACHE_HITS.inc()
                context.cache_entry = self.media.relative(entry.directory)
                await self._set_video(context, from_cache=True)
                self._log(
                    context.job_id,
                    "INFO",
                    f"{video.path}: results reused from {context.cache_entry}",
                    video=video.path,
                )
                return True
            if video.from_cache:
                await self._set_video(context, from_cache=False)
            if (
                context.step("normalize").done
                and context.step("scene").done
                and context.step("audio").done
            ):
                context.duration_s = float(context.step("normalize").result["duration_s"])
                return False
            info = await self.clients.ingest.probe(
                video.path, deadline_s=self.settings.probe_deadline_s
            )
            if not info.video_codec:
                raise UndecodableMedia(f"{video.path} has no video stream")
            context.duration_s = info.duration_s
            return False
        except Exception as exc:
            reason, message = describe_error(exc)
            if reason == "internal":
                log.exception("preparing %s failed", video.path)
            await self._set_step(
                context, "normalize", state=st.FAILED, error=message, add_attempt=True, started=True
            )
            await self._set_step(context, "normalize", finished=True)
            raise StepFailed("normalize", reason, message) from exc

    async def _normalize_then_track(self, context: VideoContext) -> None:
        await self._step(context, "normalize", self._normalize)
        context.normalized.set()
        await self._step(context, "tracking", self._tracking)

    async def _analyse_after_normalize(self, context: VideoContext, name: str) -> None:
        """Scene and audio read the source unless configured to wait for the normalised file:
        scene detection decodes at 25 fps itself and diarization works in seconds, so their
        results are the same, and normalisation overlaps them instead of delaying them."""
        if not self.settings.analyse_source:
            await context.normalized.wait()
        work = self._scene if name == "scene" else self._audio
        await self._step(context, name, work)

    def _analysed_media(self, context: VideoContext) -> str:
        if self.settings.analyse_source:
            return context.video.path
        return str(self._normalized(context)["path"])

    async def _step(
        self,
        context: VideoContext,
        name: str,
        work: Callable[[VideoContext, StepReporter], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Runs one step unless it already finished (and its files are still there)."""
        row = context.step(name)
        if row.done and self._files_exist(row.result):
            return row.result
        job_id, idx = context.job_id, context.video.idx
        live = LiveProgress()
        self._live.setdefault(job_id, {})[(idx, name)] = live
        await self._set_step(
            context, name, state=st.RUNNING, error="", add_attempt=True, started=True
        )
        started = time.perf_counter()

        def on_progress(progress: common_pb2.Progress) -> None:
            live.update(progress)
            now = time.monotonic()
            finished = progress.total and progress.done >= progress.total
            if finished or now - live.published >= self.settings.progress_interval_s:
                live.published = now
                self._publish_step(context, name)

        def on_retry(attempt: int, code: grpc.StatusCode, details: str, delay: float) -> None:
            row.attempts += 1
            task = asyncio.get_running_loop().create_task(
                self.store.update_step(job_id, idx, name, add_attempt=True)
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            self._log(
                job_id,
                "WARNING",
                f"{name} of {context.video.path}: {code.name} ({details}); "
                f"retry {attempt} in {delay:.1f} s",
                video=context.video.path,
            )

        try:
            result = await work(context, StepReporter(on_progress, on_retry))
        except asyncio.CancelledError:
            if not self._closing:
                await self._set_step(
                    context, name, state=st.CANCELLED, error="cancelled", finished=True
                )
            raise
        except Exception as exc:
            reason, message = describe_error(exc)
            if reason == "internal":
                log.exception("%s of %s failed", name, context.video.path)
            metrics.STEP_SECONDS.labels(name, "failed").observe(time.perf_counter() - started)
            await self._set_step(context, name, state=st.FAILED, error=message, finished=True)
            raise StepFailed(name, reason, message) from exc
        finally:
            self._live.get(job_id, {}).pop((idx, name), None)
        elapsed = time.perf_counter() - started
        result["seconds"] = round(elapsed, 3)
        metrics.STEP_SECONDS.labels(name, "succeeded").observe(elapsed)
        await self._set_step(context, name, state=st.SUCCEEDED, result=result, finished=True)
        return result

    async def _skip(self, context: VideoContext, name: str, why: str) -> None:
        if not context.step(name).done:
            await self._set_step(
                context, name, state=st.SKIPPED, error="", result={"why": why}, finished=True
            )

    async def _set_step(self, context: VideoContext, name: str, **fields: Any) -> None:
        await self.store.update_step(context.job_id, context.video.idx, name, **fields)
        row = context.step(name)
        now = time.time()
        for key in ("state", "error", "result"):
            if key in fields:
                setattr(row, key, fields[key])
        if fields.get("add_attempt"):
            row.attempts += 1
        if fields.get("started"):
            row.started_at, row.finished_at = now, None
        if fields.get("finished"):
            row.finished_at = now
        self._publish_step(context, name)

    def _publish_step(self, context: VideoContext, name: str) -> None:
        live = self._live.get(context.job_id, {}).get((context.video.idx, name))
        self.hub.publish(
            context.job_id,
            step=orchestrator_pb2.StepEvent(
                video=context.video.path, step=step_proto(context.step(name), live)
            ),
        )

    def _log(self, job_id: str, severity: str, message: str, video: str = "") -> None:
        self.hub.publish(
            job_id, log=orchestrator_pb2.LogLine(severity=severity, message=message, video=video)
        )

    def _files_exist(self, result: dict[str, Any]) -> bool:
        paths = [result[k] for k in ("file", "path") if isinstance(result.get(k), str)]
        files = result.get("files")
        if isinstance(files, dict):
            paths += [p for p in files.values() if isinstance(p, str)]
        return all((self.media.root / p).exists() for p in paths)

    def _call_options(self, context: VideoContext, report: StepReporter) -> dict[str, Any]:
        """A service call's deadline (scaled to the video's length) and where its progress and
        retries are reported."""
        settings = self.settings
        return {
            "deadline_s": settings.deadline_base_s
            + settings.deadline_per_media_s * context.duration_s,
            "on_progress": report.progress,
            "on_retry": report.retry,
        }

    def _abs(self, relative: str) -> Path:
        return self.media.root / relative

    # The steps.

    async def _normalize(self, context: VideoContext, report: StepReporter) -> dict[str, Any]:
        video = context.video
        self._abs(video.work_dir).mkdir(parents=True, exist_ok=True)
        output = f"{video.work_dir}/{video.stem}_25fps.mp4"
        result = await self.clients.ingest.normalize(
            video.path,
            output,
            **self._call_options(context, report),
        )
        return {
            "path": result.output.path or output,
            "duration_s": result.info.duration_s,
            "frame_count": result.info.frame_count,
            "has_audio": result.info.has_audio,
            "reencoded": result.reencoded,
            "encoder": result.encoder,
            "source_duration_s": context.duration_s,
        }

    def _normalized(self, context: VideoContext) -> dict[str, Any]:
        return context.step("normalize").result

    async def _scene(self, context: VideoContext, report: StepReporter) -> dict[str, Any]:
        options = context.options
        request = scene_pb2.DetectScenesRequest(
            media=common_pb2.MediaRef(path=self._analysed_media(context)),
            mode=options.scene_mode,
            threshold=options.scene_threshold,
        )
        result = await self.clients.scene.detect(
            request,
            **self._call_options(context, report),
        )
        path = f"{context.video.work_dir}/scene.pb"
        await asyncio.to_thread(artifacts.write_message, self._abs(path), result)
        return {
            "file": path,
            "scenes": len(result.scenes),
            "frames": result.frame_count,
            "device": result.device,
            "progress_total": result.frame_count,
            "unit": "frames",
        }

    async def _audio(self, context: VideoContext, report: StepReporter) -> dict[str, Any]:
        options = context.options
        request = audio_pb2.DiarizeRequest(
            media=common_pb2.MediaRef(path=self._analysed_media(context)),
            engine=options.audio_engine,
            num_speakers=options.num_speakers,
            min_speakers=options.min_speakers,
            max_speakers=options.max_speakers,
        )
        result = await self.clients.audio.diarize(
            request,
            **self._call_options(context, report),
        )
        path = f"{context.video.work_dir}/audio.pb"
        await asyncio.to_thread(artifacts.write_message, self._abs(path), result)
        return {
            "file": path,
            "speakers": list(result.speakers),
            "segments": len(result.segments),
            "has_audio": result.has_audio,
            "engine": result.engine,
        }

    async def _tracking(self, context: VideoContext, report: StepReporter) -> dict[str, Any]:
        normalized = self._normalized(context)
        request = tracking_pb2.TrackRequest(
            media=common_pb2.MediaRef(path=normalized["path"]),
            max_faces=context.options.max_faces,
        )
        output = await self.clients.tracking.track(
            request,
            **self._call_options(context, report),
        )
        path = f"{context.video.work_dir}/tracking.pbs"
        await asyncio.to_thread(artifacts.write_tracking, self._abs(path), output)
        summary = output.summary
        return {
            "file": path,
            "frames": summary.frame_count if summary else len(output.frames),
            "tracks": len(summary.tracks) if summary else 0,
            "faces": summary.faces_total if summary else 0,
            "progress_total": summary.frame_count if summary else 0,
            "unit": "frames",
        }

    def _staged(self, context: VideoContext) -> dict[str, str]:
        staged = f"{context.video.work_dir}/staged"
        return {kind: f"{staged}/{name}" for kind, name in output_names(context.video.stem).items()}

    async def _fuse(self, context: VideoContext, report: StepReporter) -> dict[str, Any]:
        staged = self._staged(context)
        full = {kind: staged[kind] for kind in ("scenes", "audio", "tracking")}
        entry_dir = context.cache_entry
        if entry_dir:
            summary = await asyncio.to_thread(self._restore, context, entry_dir, full)
            return {"files": full, "from_cache": True, **summary}
        summary = await asyncio.to_thread(self._fuse_blocking, context, full)
        return {"files": full, **summary}

    def _fuse_blocking(self, context: VideoContext, full: dict[str, str]) -> dict[str, Any]:
        video = context.video
        normalized = self._normalized(context)
        scenes = artifacts.read_message(
            self._abs(context.step("scene").result["file"]), scene_pb2.SceneResult
        )
        diarized = artifacts.read_message(
            self._abs(context.step("audio").result["file"]), audio_pb2.DiarizeResult
        )
        tracked = artifacts.read_tracking(self._abs(context.step("tracking").result["file"]))
        shots = [(int(s.start_frame), int(s.end_frame)) for s in scenes.scenes]
        fusion = fuse(
            artifacts.fusion_frames(tracked),
            shots,
            artifacts.speaker_turns(diarized),
            fps=legacy.LEGACY_FPS,
            has_audio=diarized.has_audio,
        )
        total = legacy.total_frames_for(normalized["duration_s"])
        segments = [(s.start_s, s.end_s, s.speaker) for s in diarized.segments]
        audio_frames = legacy.audio_frames(segments, total)
        name = PurePosixPath(video.path).name
        write_atomic(self._abs(full["scenes"]), legacy.scenes_csv(shots))
        write_atomic(self._abs(full["audio"]), legacy.audio_json(name, total, audio_frames))
        document = legacy.tracking_document(video.path, fusion, audio_frames)
        write_atomic(self._abs(full["tracking"]), legacy.tracking_json(document))
        return fusion_summary(document)

    def _restore(
        self, context: VideoContext, entry_dir: str, full: dict[str, str]
    ) -> dict[str, Any]:
        """Cache hit: the archived full files, re-labelled with this video's path and name."""
        video = context.video
        entry = self.archive.read_entry(self._abs(entry_dir))
        if entry is None or not entry.complete:
            raise MediaNotFound(f"archived results vanished: {entry_dir}")
        copy_atomic(entry.files["scenes"], self._abs(full["scenes"]))
        _name, total, frames = legacy.parse_audio_json(entry.files["audio"].read_text("utf-8"))
        name = PurePosixPath(video.path).name
        write_atomic(self._abs(full["audio"]), legacy.audio_json(name, total, frames))
        document = json.loads(entry.files["tracking"].read_text("utf-8"))
        document["metadata"]["video_path"] = video.path
        write_atomic(self._abs(full["tracking"]), legacy.tracking_json(document))
        return fusion_summary(document)

    async def _reduce(self, context: VideoContext, report: StepReporter) -> dict[str, Any]:
        staged = self._staged(context)

        def reduce_files() -> dict[str, Any]:
            tracking = legacy.reduce_tracking(
                json.loads(self._abs(staged["tracking"]).read_text("utf-8"))
            )
            audio = legacy.reduce_audio(json.loads(self._abs(staged["audio"]).read_text("utf-8")))
            if tracking is None or audio is None:
                raise InvalidArgument("the full results do not have the expected shape")
            write_atomic(self._abs(staged["docs_tracking"]), legacy.reduced_json(tracking))
            write_atomic(self._abs(staged["docs_audio"]), legacy.reduced_json(audio))
            return {"frames": len(tracking["frames_analysis"])}

        summary = await asyncio.to_thread(reduce_files)
        files = {k: staged[k] for k in ("docs_tracking", "docs_audio")}
        return {"files": files, **summary}

    async def _finalize(self, context: VideoContext, report: StepReporter) -> dict[str, Any]:
        video = context.video
        staged = self._staged(context)
        out_dir = self._abs(video.output_dir)
        targets = {kind: out_dir / name for kind, name in output_names(video.stem).items()}
        key = options_key(context.options)
        fuse_result = context.step("fuse").result

        def publish() -> str:
            entry = self.archive.store(
                video.project,
                video.sha256,
                video_path=video.path,
                video_stem=video.stem,
                files={kind: self._abs(staged[kind]) for kind in ("scenes", "audio", "tracking")},
                options_key=key,
                extra={
                    "project": video.project,
                    "job_id": context.job_id,
                    "options": options_dict(context.options),
                    "fusion_version": FUSION_VERSION,
                    "summary": {k: v for k, v in fuse_result.items() if k != "files"},
                },
            )
            for kind, target in targets.items():
                copy_atomic(self._abs(staged[kind]), target)
            return self.media.relative(entry)

        archive_dir = await asyncio.to_thread(publish)
        return {
            "outputs": {kind: self.media.relative(path) for kind, path in targets.items()},
            "archive": archive_dir,
        }


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


def fusion_summary(document: dict[str, Any]) -> dict[str, Any]:
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
    return {
        "faces": len(faces),
        "face_frames": face_frames,
        "speaking_face_frames": speaking,
        "legacy_speaking_face_frames": legacy_speaking,
        "speakers_on_screen": fusion.get("speakers", {}),
        "shots": fusion.get("shots", 0),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]", "_", text)[:60] or "video"


_FINAL_PROTO_STATES = frozenset(JOB_STATE[s] for s in st.FINAL_JOB_STATES)
