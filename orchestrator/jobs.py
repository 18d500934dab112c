"""Jobs: the façade the servicer, the CLI and the gateway use (never the store directly).

- Every step's state, attempts and result (the paths of the files it wrote) are stored before the
  next step starts; a restarted orchestrator resumes unfinished jobs and skips finished steps.
- One video's failure never stops the others; the job ends ``completed``,
  ``completed_with_errors``, ``failed`` or ``cancelled`` with the reasons.
- Cancelling a job cancels its task: the running RPCs are cancelled (the services stop) and every
  unfinished step is recorded CANCELLED. Stopping the orchestrator is not a cancel: running steps
  stay RUNNING in the database and are redone after the restart.
- Nothing reaches the output folder before ``finalize``: the full files and the reductions are
  staged in the video's work folder, archived, then copied into place atomically.
- Every change is an event in the job store (one global sequence); watchers read them with
  :meth:`Orchestrator.watch_jobs`, resuming after the last sequence they saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence

from orchestrator import inputs
from orchestrator import rows as st
from orchestrator.archive import ResultsArchive
from orchestrator.clients import Clients
from orchestrator.config import OrchestratorSettings
from orchestrator.events import EventBus, EventWatch
from orchestrator.options import check_job_options
from orchestrator.pipeline import Pipeline, StepFailed, describe_error
from orchestrator.recorder import Recorder, VideoRef
from orchestrator.steps import StepContext
from orchestrator.store import JobStore
from orchestrator.views import JOB_STATE, options_dict, options_proto
from protos.videoanalysis.v1 import orchestrator_pb2
from services.common import metrics
from services.common.errors import InvalidArgument, MediaNotFound
from services.common.logs import request_id_var
from services.common.media import MediaRoot

log = logging.getLogger(__name__)

_FINAL_PROTO_STATES = frozenset(JOB_STATE[s] for s in st.FINAL_JOB_STATES)


class Orchestrator:
    """Owns the jobs: submits, runs, resumes, cancels and shows them."""

    def __init__(self, settings: OrchestratorSettings, store: JobStore, clients: Clients) -> None:
        self.settings = settings
        self.store = store
        self.clients = clients
        self.media = MediaRoot(settings.media_root)
        self.archive = ResultsArchive(self.media.root / settings.archives_dir)
        self.bus = EventBus()
        store.listen(self.bus.publish)
        self.recorder = Recorder(
            store, progress_interval_s=settings.progress_interval_s, media_root=self.media.root
        )
        self.pipeline = Pipeline(self.recorder, closing=lambda: self._closing)
        self.events = EventWatch(store, self.bus, self.recorder.snapshots, settings.watcher_queue)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._user_cancelled: set[str] = set()
        self._closing = False
        self._job_slots = asyncio.Semaphore(max(1, settings.parallel_jobs))
        self._pruner: asyncio.Task[None] | None = None

    # Lifecycle.

    async def start(self) -> list[str]:
        """Resumes the jobs an earlier process left unfinished (returns their ids) and starts
        pruning the event log to its retention."""
        if self._pruner is None:
            self._pruner = asyncio.create_task(self._prune_events(), name="prune-events")
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
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.recorder.drain()

    async def _prune_events(self) -> None:
        settings = self.settings
        while True:
            try:
                removed = await self.store.prune_events(
                    max_rows=settings.event_retention_rows, max_age_s=settings.event_retention_s
                )
                if removed:
                    log.debug("pruned %d events", removed)
            except Exception:  # the next round tries again
                log.exception("pruning the event log failed")
            await asyncio.sleep(settings.event_prune_interval_s)

    # Requests.

    async def submit(
        self,
        paths: Sequence[str],
        options: orchestrator_pb2.JobOptions | None = None,
        label: str = "",
        submit_key: str = "",
    ) -> str:
        """Validates and records a job, starts it, and returns its id; with a ``submit_key`` that
        an earlier submission of the same inputs used, returns that job's id instead.

        Raises:
            InvalidArgument: no inputs, a path outside the media root, a bad option, a
                ``submit_key`` already used for other inputs.
            MediaNotFound: an input does not exist.
        """
        options = options or orchestrator_pb2.JobOptions()
        if not paths:
            raise InvalidArgument("a job needs at least one input")
        for path in paths:
            self.media.resolve(path)
        check_job_options(options, label=label, submit_key=submit_key)
        output_dir = options.output_dir or self.settings.output_dir
        self.media.resolve(output_dir, must_exist=False)
        job_id = uuid.uuid4().hex[:16]
        async with self.store.transaction() as tx:
            earlier = await tx.submitted_with(submit_key) if submit_key else None
            if earlier is None:
                record = options_dict(options)
                await tx.create_job(
                    job_id, list(paths), record, label, output_dir, submit_key or None
                )
        if earlier is not None:
            earlier_id, earlier_paths = earlier
            if earlier_paths != list(paths):
                raise InvalidArgument(
                    f"submit_key {submit_key!r} was used for job {earlier_id} with other inputs"
                )
            log.info("job %s: submitted again with its key, not started twice", earlier_id)
            return earlier_id
        log.info("job %s submitted: %s", job_id, ", ".join(paths))
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
        jobs = await self.recorder.snapshots([job_id])
        return jobs[0] if jobs else None

    async def list_jobs(self, limit: int, states: Sequence[str]) -> list[orchestrator_pb2.Job]:
        return await self.recorder.snapshots(await self.store.job_ids(limit or 50, states))

    async def get_job_row(self, job_id: str) -> st.JobRow | None:
        """The stored job (steps' results included), for summaries."""
        return await self.store.get_job(job_id)

    async def unfinished_job_rows(self) -> list[st.JobRow]:
        return await self.store.load_jobs(await self.store.unfinished_jobs())

    def watch_jobs(
        self,
        job_ids: Sequence[str] = (),
        *,
        after_sequence: int = 0,
        snapshot: bool = False,
        snapshot_limit: int = 50,
    ) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        """Events of some jobs (all when empty), resumable; see :mod:`orchestrator.events`."""
        return self.events.stream(
            job_ids,
            after_sequence=after_sequence,
            snapshot=snapshot,
            snapshot_limit=snapshot_limit or 50,
        )

    async def watch(self, job_id: str) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        """A snapshot, then the job's events until it ends (the last one is its final snapshot)."""
        if await self.store.get_job(job_id) is None:
            raise MediaNotFound(f"no such job: {job_id}")
        async for event in self.watch_jobs([job_id], snapshot=True):
            if event.HasField("synced"):
                continue
            yield event
            if event.HasField("snapshot") and event.snapshot.state in _FINAL_PROTO_STATES:
                return

    async def logs(
        self, job_id: str, after_sequence: int = 0, limit: int = 0
    ) -> list[orchestrator_pb2.JobEvent]:
        if await self.store.get_job(job_id) is None:
            raise MediaNotFound(f"no such job: {job_id}")
        return await self.store.events_after(
            after_sequence, [job_id], limit=limit or 1000, kind="log"
        )

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
        running = False
        try:
            async with self._job_slots:
                job = await self.store.get_job(job_id)
                if job is None or job.state in st.FINAL_JOB_STATES:
                    return
                running = True
                metrics.JOBS_RUNNING.inc()
                await self.recorder.job_running(job_id)
                options = options_proto(job.options)
                videos = await self._discover(job, options)
                slots = asyncio.Semaphore(max(1, self.settings.parallel_videos))
                async with asyncio.TaskGroup() as group:
                    for video in videos:
                        group.create_task(self._run_video(job_id, video, options, slots))
                await self.recorder.drain()
                await self.recorder.job_finished(job_id, *await self._final_state(job_id))
        except asyncio.CancelledError:
            if job_id in self._user_cancelled and not self._closing:
                await self._finish_cancelled(job_id)
                return
            raise
        except Exception as exc:  # a bug: the job fails with the reason, the process lives on
            log.exception("job %s failed", job_id)
            message = f"internal error: {describe_error(exc)[1]}"
            await self.recorder.job_finished(job_id, st.FAILED, message)
        finally:
            if running:
                metrics.JOBS_RUNNING.dec()
            self.recorder.forget(job_id)
            self._cleanup_job_work(job_id)

    async def _finish_cancelled(self, job_id: str) -> None:
        await self.recorder.drain()
        await self.recorder.job_finished(job_id, st.CANCELLED, "cancelled by request", cancel=True)
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

    def _cleanup_video_work(self, context: StepContext) -> None:
        """A finished video's intermediate files go, but for the normalised video while
        ``keep_normalized`` (the dashboard's player shows it)."""
        if self.settings.keep_work:
            return
        folder = self.media.root / context.video.work_dir
        kept = (
            context.step("normalize").result.get("path") if self.settings.keep_normalized else None
        )
        if not kept or not folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            return
        for entry in folder.iterdir():
            if entry != self.media.root / kept:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    async def _discover(
        self, job: st.JobRow, options: orchestrator_pb2.JobOptions
    ) -> list[st.VideoRow]:
        found: list[tuple[int, inputs.FoundVideo]] = []
        for item in job.inputs:
            if item.state == st.SUCCEEDED:
                found += [(item.idx, v) for v in inputs.stored_videos(item)]
                continue
            context = inputs.InputContext(
                job.job_id, item, options, self.settings, self.media, self.clients, self.recorder
            )
            try:
                kind, videos = await inputs.expand(context)
            except Exception as exc:
                reason, message = describe_error(exc)
                if reason == "internal":
                    log.exception("input %s", item.path)
                log.warning("input %s failed: %s", item.path, message)
                await self.recorder.input_failed(job.job_id, item.idx, item.path, reason, message)
                continue
            await self.recorder.input_expanded(
                job.job_id, item.idx, kind, [v.as_json() for v in videos]
            )
            found += [(item.idx, v) for v in videos]
        rows = inputs.name_videos(job, found, self.settings.work_dir)
        refreshed = await self.recorder.videos_found(job.job_id, rows)
        return refreshed.videos

    async def _run_video(
        self,
        job_id: str,
        video: st.VideoRow,
        options: orchestrator_pb2.JobOptions,
        slots: asyncio.Semaphore,
    ) -> None:
        if video.state == st.SUCCEEDED:
            return
        ref = VideoRef(job_id, video)
        context = StepContext(
            job_id, video, options, self.settings, self.media, self.clients, self.archive
        )
        try:
            async with slots:
                await self.recorder.video(ref, state=st.RUNNING, error="")
                await self.pipeline.run(context)
                await self.recorder.video(ref, state=st.SUCCEEDED, error="")
                self._cleanup_video_work(context)
        except StepFailed as failure:
            await self.recorder.video_failed(
                ref, failure.reason, f"{failure.step}: {failure.message}"
            )
        except asyncio.CancelledError:
            if not self._closing:
                await self.recorder.video(ref, state=st.CANCELLED, error="cancelled")
            raise
