"""The one writer of job, video, step and input state, and of the events that describe it.

Every change is stored together with its event in one transaction (see
:mod:`orchestrator.transaction`), so the event log never disagrees with the state. Progress is kept
in memory (:class:`LiveProgress`) and stored as a coalesced event at most every
``progress_interval_s`` per step. Progress and retries arrive from synchronous callbacks of the
service clients: their writes are queued per step, and the step's next state change waits for them,
so a step's events are stored in the order they happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import rows
from orchestrator.events import job_event
from orchestrator.rows import JobRow, VideoRow
from orchestrator.store import JobStore
from orchestrator.transaction import Transaction, progress_key
from orchestrator.views import JOB_STATE, LiveProgress, job_proto, step_proto
from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2
from services.common import metrics

log = logging.getLogger(__name__)

StepKey = tuple[str, int, str]


@dataclass
class VideoRef:
    """What the recorder needs to know of a video: its job and its (in-memory) row."""

    job_id: str
    video: VideoRow


class Recorder:
    def __init__(
        self, store: JobStore, *, progress_interval_s: float, media_root: Path | None = None
    ) -> None:
        self.store = store
        self._media_root = media_root
        self._interval = progress_interval_s
        #: Progress of running steps, per job: ``{(video_idx, step): LiveProgress}``.
        self.live: dict[str, dict[tuple[int, str], LiveProgress]] = {}
        self._queued: dict[StepKey, asyncio.Task[None]] = {}

    # Reading (stored rows with live progress laid over them).

    async def snapshots(self, job_ids: Sequence[str]) -> list[orchestrator_pb2.Job]:
        jobs = [
            job_proto(job, self.live.get(job.job_id))
            for job in await self.store.load_jobs(list(job_ids))
        ]
        for video in (v for job in jobs for v in job.videos if v.normalized_path):
            if self._media_root is None or not (self._media_root / video.normalized_path).exists():
                video.normalized_path = ""
        return jobs

    # Jobs.

    async def job_running(self, job_id: str) -> None:
        self.live.setdefault(job_id, {})
        async with self.store.transaction() as tx:
            await tx.set_job_state(job_id, rows.RUNNING)
            await tx.emit(job_event(job_id, state=orchestrator_pb2.JOB_STATE_RUNNING))
            await tx.emit(self._log_event(job_id, "INFO", "job running", ""))

    async def job_finished(
        self, job_id: str, state: str, error: str, *, cancel: bool = False
    ) -> None:
        """The job's final state, its ``state`` event and its final snapshot (one transaction);
        ``cancel`` also marks everything unfinished CANCELLED."""
        async with self.store.transaction() as tx:
            if cancel:
                await tx.cancel_unfinished(job_id, "cancelled")
            await tx.set_job_state(job_id, state, error=error, finished=True)
            await tx.emit(job_event(job_id, state=JOB_STATE[state]))
            severity = "INFO" if state == rows.COMPLETED else "WARNING"
            line = f"job {state}" + (f": {error}" if error else "")
            await tx.emit(self._log_event(job_id, severity, line, ""))
            job = await self.store.get_job(job_id)
            if job is not None:
                await tx.emit(job_event(job_id, snapshot=job_proto(job, self.live.get(job_id))))
        metrics.JOBS.labels(state).inc()
        log.info("job %s %s%s", job_id, state, f": {error}" if error else "")

    def forget(self, job_id: str) -> None:
        self.live.pop(job_id, None)

    async def input_failed(
        self, job_id: str, idx: int, subject: str, reason: str, message: str
    ) -> None:
        async with self.store.transaction() as tx:
            await tx.update_input(job_id, idx, state=rows.FAILED, error=message)
            await tx.add_job_error(job_id, reason, message, subject)
            error = common_pb2.ErrorDetail(reason=reason, message=message, subject=subject)
            await tx.emit(job_event(job_id, error=error))

    async def input_expanded(
        self, job_id: str, idx: int, kind: str, videos: list[dict[str, str]]
    ) -> None:
        await self.store.update_input(
            job_id, idx, kind=kind, state=rows.SUCCEEDED, result={"videos": videos}
        )

    async def videos_found(self, job_id: str, videos: list[VideoRow]) -> JobRow:
        """Records the videos of a job (known ones are kept); each one's ``extract`` step is
        done: SUCCEEDED when it came out of an archive, SKIPPED otherwise."""
        await self.store.add_videos(job_id, videos)
        job = await self.store.get_job(job_id)
        assert job is not None
        for video in job.videos:
            extract = video.steps["extract"]
            if extract.state != rows.PENDING:
                continue
            source = job.inputs[video.input_idx]
            extract.state = rows.SUCCEEDED if source.kind == "archive" else rows.SKIPPED
            extract.result = {"input": source.path}
            await self.store.update_step(
                job_id,
                video.idx,
                "extract",
                state=extract.state,
                finished=True,
                result=extract.result,
            )
        return job

    # Videos.

    async def video(self, ref: VideoRef, **fields: Any) -> None:
        await self.store.update_video(ref.job_id, ref.video.idx, **fields)
        for key, value in fields.items():
            setattr(ref.video, key, value)

    async def video_failed(self, ref: VideoRef, reason: str, message: str) -> None:
        async with self.store.transaction() as tx:
            await tx.update_video(ref.job_id, ref.video.idx, state=rows.FAILED, error=message)
            error = common_pb2.ErrorDetail(reason=reason, message=message, subject=ref.video.path)
            await tx.emit(job_event(ref.job_id, error=error))
        ref.video.state, ref.video.error = rows.FAILED, message

    # Steps.

    async def step_started(self, ref: VideoRef, name: str) -> LiveProgress:
        live = LiveProgress()
        self.live.setdefault(ref.job_id, {})[(ref.video.idx, name)] = live
        await self._step(ref, name, state=rows.RUNNING, error="", add_attempt=True, started=True)
        return live

    def step_progress(self, ref: VideoRef, name: str, progress: common_pb2.Progress) -> None:
        """Called for every Progress a service streams; stored at most every interval."""
        live = self.live.get(ref.job_id, {}).get((ref.video.idx, name))
        if live is None:
            return
        live.update(progress)
        now = time.monotonic()
        finished = progress.total and progress.done >= progress.total
        if not finished and now - live.published < self._interval:
            return
        live.published = now

        async def store_progress(tx: Transaction) -> None:
            row = ref.video.steps[name]
            if row.state != rows.RUNNING:
                return
            event = self._step_event(ref, name)
            await tx.emit(event, progress_of=progress_key(ref.video.path, name))

        self._queue(ref, name, store_progress)

    def step_retry(
        self, ref: VideoRef, name: str, attempt: int, code: str, details: str, delay: float
    ) -> None:
        message = (
            f"{name} of {ref.video.path}: {code} ({details}); retry {attempt} in {delay:.1f} s"
        )
        ref.video.steps[name].attempts += 1

        async def store_retry(tx: Transaction) -> None:
            await tx.update_step(ref.job_id, ref.video.idx, name, add_attempt=True)
            await tx.emit(self._log_event(ref.job_id, "WARNING", message, ref.video.path))

        self._queue(ref, name, store_retry)

    async def step_succeeded(
        self, ref: VideoRef, name: str, result: dict[str, Any], seconds: float
    ) -> None:
        metrics.STEP_SECONDS.labels(name, "succeeded").observe(seconds)
        await self._step(ref, name, state=rows.SUCCEEDED, result=result, finished=True)

    async def step_failed(
        self, ref: VideoRef, name: str, message: str, seconds: float | None = None
    ) -> None:
        if seconds is not None:
            metrics.STEP_SECONDS.labels(name, "failed").observe(seconds)
        await self._step(ref, name, state=rows.FAILED, error=message, finished=True)

    async def step_cancelled(self, ref: VideoRef, name: str) -> None:
        await self._step(ref, name, state=rows.CANCELLED, error="cancelled", finished=True)

    async def step_skipped(self, ref: VideoRef, name: str, why: str) -> None:
        if not ref.video.steps[name].done:
            await self._step(
                ref, name, state=rows.SKIPPED, error="", result={"why": why}, finished=True
            )

    async def step_failed_before_start(self, ref: VideoRef, name: str, message: str) -> None:
        """A step that failed in its preparation: one attempt, started and finished now."""
        await self._step(
            ref,
            name,
            state=rows.FAILED,
            error=message,
            add_attempt=True,
            started=True,
            finished=True,
        )

    def step_ended(self, ref: VideoRef, name: str) -> None:
        self.live.get(ref.job_id, {}).pop((ref.video.idx, name), None)

    # Logs.

    async def log(self, job_id: str, severity: str, message: str, video: str = "") -> None:
        async with self.store.transaction() as tx:
            await tx.emit(self._log_event(job_id, severity, message, video))

    def log_soon(self, job_id: str, severity: str, message: str) -> None:
        """A log line from a synchronous callback."""
        task = asyncio.get_running_loop().create_task(self.log(job_id, severity, message))
        self._queued[(job_id, -1, f"log-{id(task)}")] = task
        task.add_done_callback(lambda _t: self._queued.pop((job_id, -1, f"log-{id(task)}"), None))

    async def drain(self) -> None:
        """Waits for every queued write (before a job is declared finished)."""
        while self._queued:
            await asyncio.gather(*list(self._queued.values()), return_exceptions=True)

    # Internals.

    async def _step(self, ref: VideoRef, name: str, **fields: Any) -> None:
        key = (ref.job_id, ref.video.idx, name)
        queued = self._queued.get(key)
        if queued is not None:
            await asyncio.gather(queued, return_exceptions=True)
        row = ref.video.steps[name]
        now = time.time()
        for field in ("state", "error", "result"):
            if field in fields:
                setattr(row, field, fields[field])
        if fields.get("add_attempt"):
            row.attempts += 1
        if fields.get("started"):
            row.started_at, row.finished_at = now, None
        if fields.get("finished"):
            row.finished_at = now
        async with self.store.transaction() as tx:
            await tx.update_step(ref.job_id, ref.video.idx, name, at=now, **fields)
            await tx.emit(self._step_event(ref, name))

    def _step_event(self, ref: VideoRef, name: str) -> orchestrator_pb2.JobEvent:
        live = self.live.get(ref.job_id, {}).get((ref.video.idx, name))
        step = step_proto(ref.video.steps[name], live)
        return job_event(
            ref.job_id, step=orchestrator_pb2.StepEvent(video=ref.video.path, step=step)
        )

    @staticmethod
    def _log_event(
        job_id: str, severity: str, message: str, video: str
    ) -> orchestrator_pb2.JobEvent:
        line = orchestrator_pb2.LogLine(severity=severity, message=message, video=video)
        return job_event(job_id, log=line)

    def _queue(
        self, ref: VideoRef, name: str, write: Callable[[Transaction], Awaitable[None]]
    ) -> None:
        """Runs ``write`` in its own transaction after the step's earlier queued writes."""
        key = (ref.job_id, ref.video.idx, name)
        before = self._queued.get(key)

        async def run() -> None:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            try:
                async with self.store.transaction() as tx:
                    await write(tx)
            except Exception:
                log.exception("storing an event of %s failed", name)

        task = asyncio.get_running_loop().create_task(run())
        self._queued[key] = task
        task.add_done_callback(
            lambda t: self._queued.pop(key, None) if self._queued.get(key) is t else None
        )
