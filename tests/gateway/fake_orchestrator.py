"""A small in-process OrchestratorService for the gateway's fast tests, its benchmark and the
dashboard's development: jobs in memory, a global event log with a bounded retention, and
``WatchJobs`` with the contract's semantics (snapshots then ``synced``; replay after a sequence;
``resync`` when the sequence is no longer stored or a watcher lags too far).

It serves on a real loopback port through the shared boot path (health included), and can be
stopped and started again on the same port while keeping its jobs and events, like a restarted
orchestrator with its SQLite store.

Run alone (jobs submitted through the gateway then run a quick synthetic pipeline):
``PYTHONPATH=. .venv/bin/python tests/gateway/fake_orchestrator.py --port 50050``
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import grpc

from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from services.common.config import ServiceSettings
from services.common.server import RunningServer, ServiceDefinition, start_server

SERVICE_NAME = "videoanalysis.v1.OrchestratorService"
STEPS = ("extract", "normalize", "scene", "audio", "tracking", "fuse", "reduce", "finalize")
FINISHED = {
    orchestrator_pb2.JOB_STATE_COMPLETED,
    orchestrator_pb2.JOB_STATE_COMPLETED_WITH_ERRORS,
    orchestrator_pb2.JOB_STATE_FAILED,
    orchestrator_pb2.JOB_STATE_CANCELLED,
}


@dataclass(eq=False)
class _Watcher:
    job_ids: frozenset[str]
    queue: asyncio.Queue[orchestrator_pb2.JobEvent]
    lagged: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, job_id: str) -> bool:
        return not self.job_ids or job_id in self.job_ids


class FakeOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Jobs and events in memory.

    Arguments:
        retention: events kept for replay (older ones are gone: a watcher asking after them
            gets a ``resync``).
        watcher_queue: events buffered per watcher before it counts as lagging.
        auto_run: submitted jobs run a synthetic pipeline (``run_job``) by themselves.
    """

    def __init__(
        self, retention: int = 100_000, watcher_queue: int = 50_000, auto_run: bool = False
    ) -> None:
        self.jobs: dict[str, orchestrator_pb2.Job] = {}
        self.events: deque[orchestrator_pb2.JobEvent] = deque(maxlen=retention)
        self.sequence = 0
        self.watchers: set[_Watcher] = set()
        self.watcher_queue = watcher_queue
        self.auto_run = auto_run
        self.watch_calls = 0
        self.running: RunningServer | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # Serving.

    async def start(self, port: int | None = None) -> int:
        """Serves on loopback (``port``, else the previous port, else a free one)."""
        settings = ServiceSettings(
            host="127.0.0.1",
            port=port if port is not None else self.port,
            metrics_port=-1,
            max_concurrent_rpcs=10_000,
        )
        definition = ServiceDefinition(
            SERVICE_NAME,
            lambda server: orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(
                self, server
            ),
        )
        self.running = await start_server(settings, [definition])
        await self.running.mark_ready()
        self.port = self.running.port
        return self.port

    async def stop(self) -> None:
        """Stops serving (open streams break); jobs and events stay for the next ``start``."""
        for task in list(self._tasks):
            task.cancel()
        if self.running is not None:
            await self.running.stop(0)
            self.running = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # Events.

    def emit(self, job_id: str, **event: object) -> orchestrator_pb2.JobEvent:
        """Stores one event (``step=``, ``log=``, ``state=``, ``error=``, ``snapshot=``) with the
        next sequence and hands it to every watcher."""
        self.sequence += 1
        message = orchestrator_pb2.JobEvent(job_id=job_id, sequence=self.sequence, **event)
        message.time.GetCurrentTime()
        self.events.append(message)
        self._publish(message)
        return message

    def _publish(self, message: orchestrator_pb2.JobEvent) -> None:
        for watcher in self.watchers:
            if watcher.lagged or not watcher.wants(message.job_id):
                continue
            try:
                watcher.queue.put_nowait(message)
            except asyncio.QueueFull:
                watcher.lagged = True
                watcher.wakeup.set()

    def emit_step(
        self,
        job_id: str,
        video: str,
        name: str,
        state: int = orchestrator_pb2.STEP_STATE_RUNNING,
        done: int = 0,
        total: int = 100,
    ) -> orchestrator_pb2.JobEvent:
        step = orchestrator_pb2.Step(
            name=name,
            state=state,
            progress=common_pb2.Progress(done=done, total=total, unit="frames", stage=name),
            attempts=1,
        )
        job = self.jobs.get(job_id)
        if job is not None:
            for status in job.videos:
                if status.path == video:
                    for existing in status.steps:
                        if existing.name == name:
                            existing.CopyFrom(step)
        return self.emit(job_id, step=orchestrator_pb2.StepEvent(video=video, step=step))

    def set_state(self, job_id: str, state: int) -> None:
        job = self.jobs[job_id]
        job.state = state
        job.updated_at.GetCurrentTime()
        if state in FINISHED:
            job.finished_at.GetCurrentTime()
        self.emit(job_id, state=state)
        if state in FINISHED:
            # The whole job once more when it ends (the snapshot carries the last sequence).
            snapshot = orchestrator_pb2.JobEvent(
                job_id=job_id, sequence=self.sequence, snapshot=job
            )
            snapshot.time.GetCurrentTime()
            self.events.append(snapshot)
            self._publish(snapshot)

    def add_job(
        self,
        inputs: Iterable[str],
        label: str = "",
        state: int = orchestrator_pb2.JOB_STATE_QUEUED,
        output_dir: str = "output",
        options: orchestrator_pb2.JobOptions | None = None,
    ) -> orchestrator_pb2.Job:
        """A job whose every input is one video (with the usual steps, all pending)."""
        job = orchestrator_pb2.Job(
            job_id=uuid.uuid4().hex[:12],
            state=state,
            label=label,
            output_dir=output_dir,
            options=options or orchestrator_pb2.JobOptions(),
        )
        job.created_at.GetCurrentTime()
        job.updated_at.CopyFrom(job.created_at)
        for index, path in enumerate(inputs):
            job.inputs.append(common_pb2.MediaRef(path=path))
            stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            video = job.videos.add(
                index=index,
                path=path,
                state=orchestrator_pb2.STEP_STATE_PENDING,
                output_dir=f"{output_dir}/{stem}",
            )
            for name in STEPS:
                video.steps.add(name=name, state=orchestrator_pb2.STEP_STATE_PENDING)
        self.jobs[job.job_id] = job
        self.emit(job.job_id, state=state)
        return job

    async def run_job(self, job_id: str, ticks: int = 4, tick_s: float = 0.02) -> None:
        """A synthetic pipeline: every step of every video runs ``ticks`` progress events, logs
        a line, succeeds; the job completes."""
        self.set_state(job_id, orchestrator_pb2.JOB_STATE_RUNNING)
        job = self.jobs[job_id]
        for video in job.videos:
            video.state = orchestrator_pb2.STEP_STATE_RUNNING
            for name in STEPS:
                for done in range(ticks):
                    self.emit_step(job_id, video.path, name, done=done, total=ticks)
                    await asyncio.sleep(tick_s)
                self.emit(
                    job_id,
                    log=orchestrator_pb2.LogLine(
                        severity="INFO", message=f"{name} done", video=video.path
                    ),
                )
                self.emit_step(
                    job_id,
                    video.path,
                    name,
                    state=orchestrator_pb2.STEP_STATE_SUCCEEDED,
                    done=ticks,
                    total=ticks,
                )
            video.state = orchestrator_pb2.STEP_STATE_SUCCEEDED
        self.set_state(job_id, orchestrator_pb2.JOB_STATE_COMPLETED)

    async def pump(self, rate: float, seconds: float, jobs: int = 20) -> int:
        """Synthetic load: RUNNING progress events at ``rate`` per second for ``seconds``,
        spread over ``jobs`` jobs (each its own coalescing key); returns the events emitted."""
        job_ids = [self.add_job([f"bench/{n}.mp4"], label="bench").job_id for n in range(jobs)]
        keys = itertools.cycle(job_ids)
        started = time.perf_counter()
        emitted = 0
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate) - emitted
            for _ in range(max(0, due)):
                job_id = next(keys)
                self.emit_step(job_id, f"bench/{job_id}.mp4", "scene", done=emitted, total=0)
                emitted += 1
            await asyncio.sleep(0.001)
        return emitted

    # OrchestratorService.

    async def SubmitJob(
        self, request: orchestrator_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Job:
        if not request.inputs:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "at least one input is required")
        job = self.add_job(
            [ref.path for ref in request.inputs], request.label, options=request.options
        )
        if self.auto_run:
            task = asyncio.create_task(self.run_job(job.job_id, ticks=10, tick_s=0.2))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return job

    async def GetJob(
        self, request: orchestrator_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Job:
        return await self._job(request.job_id, context)

    async def ListJobs(
        self, request: orchestrator_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.ListJobsResponse:
        if request.limit < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "limit cannot be negative")
        jobs = [j for j in self.jobs.values() if not request.states or j.state in request.states]
        jobs.sort(key=lambda j: (j.created_at.seconds, j.created_at.nanos), reverse=True)
        return orchestrator_pb2.ListJobsResponse(jobs=jobs[: request.limit or 50])

    async def CancelJob(
        self, request: orchestrator_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Job:
        job = await self._job(request.job_id, context)
        if job.state not in FINISHED:
            self.set_state(job.job_id, orchestrator_pb2.JOB_STATE_CANCELLED)
        return job

    async def GetJobLogs(
        self, request: orchestrator_pb2.GetJobLogsRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.GetJobLogsResponse:
        await self._job(request.job_id, context)
        lines = [
            e
            for e in self.events
            if e.job_id == request.job_id
            and e.WhichOneof("event") == "log"
            and e.sequence > request.after_sequence
        ]
        return orchestrator_pb2.GetJobLogsResponse(lines=lines[: request.limit or 1000])

    async def WatchJob(
        self, request: orchestrator_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        await self._job(request.job_id, context)
        watch = orchestrator_pb2.WatchJobsRequest(job_ids=[request.job_id], snapshot=True)
        async for event in self.WatchJobs(watch, context):
            yield event
            if event.WhichOneof("event") == "snapshot" and event.snapshot.state in FINISHED:
                return

    async def WatchJobs(
        self, request: orchestrator_pb2.WatchJobsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        self.watch_calls += 1
        watcher = _Watcher(frozenset(request.job_ids), asyncio.Queue(self.watcher_queue))
        self.watchers.add(watcher)
        try:
            # Registered before anything is read, so nothing falls between replay and live.
            sent = self.sequence
            oldest = self.events[0].sequence if self.events else self.sequence + 1
            if request.snapshot:
                for event in self._sync(watcher, request.snapshot_limit):
                    yield event
            elif request.after_sequence > 0 and request.after_sequence < oldest - 1:
                for event in self._sync(watcher, request.snapshot_limit, "retention", oldest):
                    yield event
            elif request.after_sequence > 0:
                for event in list(self.events):
                    if request.after_sequence < event.sequence <= sent and watcher.wants(
                        event.job_id
                    ):
                        yield event
            while True:
                if watcher.lagged:
                    watcher.lagged = False
                    watcher.queue = asyncio.Queue(self.watcher_queue)
                    oldest = self.events[0].sequence if self.events else self.sequence + 1
                    for event in self._sync(watcher, request.snapshot_limit, "lagging", oldest):
                        yield event
                    sent = self.sequence
                    continue
                getter = asyncio.ensure_future(watcher.queue.get())
                waker = asyncio.ensure_future(watcher.wakeup.wait())
                try:
                    await asyncio.wait({getter, waker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                    if not getter.done():
                        getter.cancel()
                watcher.wakeup.clear()
                if getter.done() and not getter.cancelled():
                    event = getter.result()
                    if event.sequence > sent or event.WhichOneof("event") == "snapshot":
                        yield event
        finally:
            self.watchers.discard(watcher)

    def _sync(
        self, watcher: _Watcher, limit: int, reason: str = "", oldest: int = 0
    ) -> list[orchestrator_pb2.JobEvent]:
        """``resync`` (when ``reason``), a snapshot per watched job, then ``synced``; all with
        the current sequence."""
        events = []
        if reason:
            events.append(
                orchestrator_pb2.JobEvent(
                    sequence=self.sequence,
                    resync=orchestrator_pb2.Resync(reason=reason, oldest_sequence=oldest),
                )
            )
        if watcher.job_ids:
            jobs = [self.jobs[j] for j in watcher.job_ids if j in self.jobs]
        else:
            ordered = sorted(
                self.jobs.values(), key=lambda j: (j.created_at.seconds, j.created_at.nanos)
            )
            recent = ordered[-(limit or 50) :]
            jobs = [j for j in ordered if j.state not in FINISHED or j in recent]
        for job in jobs:
            events.append(
                orchestrator_pb2.JobEvent(job_id=job.job_id, sequence=self.sequence, snapshot=job)
            )
        events.append(
            orchestrator_pb2.JobEvent(
                sequence=self.sequence, synced=orchestrator_pb2.Synced(jobs=len(jobs))
            )
        )
        for event in events:
            event.time.GetCurrentTime()
        return events

    async def _job(self, job_id: str, context: grpc.aio.ServicerContext) -> orchestrator_pb2.Job:
        if not job_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id is required")
        job = self.jobs.get(job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such job: {job_id}")
        assert job is not None
        return job


async def _main(port: int) -> None:
    fake = FakeOrchestrator(auto_run=True)
    await fake.start(port)
    print(f"fake orchestrator on {fake.address}", flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    await fake.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=50050)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args().port))
