"""The per-video DAG, declared, and how it runs.

    normalize ─┬─ tracking ─┐
    scene ─────┼────────────┼─ fuse ─ reduce ─ finalize
    audio ─────┘────────────┘

Before the DAG, :meth:`Pipeline.prepare` decides which DAG runs: it hashes the source and looks
for cached results of the same content and options (then only ``fuse`` — restoring the archived
files — ``reduce`` and ``finalize`` run, the analysis steps are SKIPPED), else it probes the source
(its duration sets the deadlines). Preparation is not a step of its own (it is cheap and redone
on resume); its failure is recorded as the failure of ``normalize``, the first step it stands for.

Every step whose ``needs`` are done runs at once; a step that already finished (its files still
there) is not run again. The first failure cancels the video's other running steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from orchestrator import results, steps
from orchestrator.clients import CallFailed
from orchestrator.outputs import sha256_file
from orchestrator.recorder import Recorder, VideoRef
from orchestrator.results import StepResult
from orchestrator.steps import Report, StepContext
from protos.videoanalysis.v1 import common_pb2
from services.common import metrics
from services.common.errors import ServiceError, UndecodableMedia

log = logging.getLogger(__name__)

StepBody = Callable[[StepContext, Report], Awaitable[StepResult]]

_REASONS = {
    grpc.StatusCode.FAILED_PRECONDITION: "undecodable",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "busy",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
    grpc.StatusCode.CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class StepSpec:
    name: str
    run: StepBody
    #: Steps that must be done before this one starts.
    needs: tuple[str, ...] = ()
    #: Result type stored for it (read back on resume).
    result: type[StepResult] = StepResult


def analysis_dag(analyse_source: bool) -> tuple[StepSpec, ...]:
    """Scene and audio read the source unless ``analyse_source`` is off (then they wait for the
    normalised file): scene detection decodes at 25 fps itself and diarization works in seconds,
    so their results are the same, and normalisation overlaps them instead of delaying them.
    Tracking always reads the normalised file (its frame indices must be 25 fps frames)."""
    source_needs = () if analyse_source else ("normalize",)
    return (
        StepSpec("normalize", steps.normalize, result=results.NormalizeResult),
        StepSpec("scene", steps.scene, source_needs, results.SceneStepResult),
        StepSpec("audio", steps.audio, source_needs, results.AudioStepResult),
        StepSpec("tracking", steps.tracking, ("normalize",), results.TrackingStepResult),
        StepSpec("fuse", steps.fuse_results, ("scene", "audio", "tracking"), results.FuseResult),
        *_OUTPUT_STEPS,
    )


_OUTPUT_STEPS = (
    StepSpec("reduce", steps.reduce, ("fuse",), results.ReduceResult),
    StepSpec("finalize", steps.finalize, ("reduce",), results.FinalizeResult),
)
#: A cache hit: the archived full files instead of the analyses.
CACHED_DAG = (StepSpec("fuse", steps.restore_results, (), results.FuseResult), *_OUTPUT_STEPS)
ANALYSIS_STEPS = ("normalize", "scene", "audio", "tracking")


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


class Pipeline:
    """Runs the DAG of one video at a time (many at once), recording every step."""

    def __init__(self, recorder: Recorder, *, closing: Callable[[], bool]) -> None:
        self.recorder = recorder
        self._closing = closing

    async def run(self, context: StepContext) -> None:
        """Raises :class:`StepFailed` when a step failed."""
        dag = await self.prepare(context)
        if dag is CACHED_DAG:
            for name in ANALYSIS_STEPS:
                await self.recorder.step_skipped(
                    self._ref(context), name, "results reused from the archive"
                )
        await self.execute(context, dag)

    async def prepare(self, context: StepContext) -> Sequence[StepSpec]:
        """The cache decision (and the probe when analysing); see the module docstring."""
        video, ref = context.video, self._ref(context)
        try:
            sha = await asyncio.to_thread(sha256_file, context.media.resolve(video.path))
            if sha != video.sha256:
                await self.recorder.video(ref, sha256=sha)
            entry = None
            if not context.options.no_cache:
                key = steps.options_key(context.options)
                entry = await asyncio.to_thread(context.archive.find_cached, sha, key)
            if entry is not None:
                metrics.CACHE_HITS.inc()
                context.cache_entry = context.media.relative(entry.directory)
                await self.recorder.video(ref, from_cache=True)
                await self.recorder.log(
                    context.job_id,
                    "INFO",
                    f"{video.path}: results reused from {context.cache_entry}",
                    video.path,
                )
                return CACHED_DAG
            if video.from_cache:
                await self.recorder.video(ref, from_cache=False)
            dag = analysis_dag(context.settings.analyse_source)
            if all(context.step(n).done for n in ("normalize", "scene", "audio")):
                context.duration_s = context.result("normalize", results.NormalizeResult).duration_s
                return dag
            info = await context.clients.ingest.probe(
                video.path, deadline_s=context.settings.probe_deadline_s
            )
            if not info.video_codec:
                raise UndecodableMedia(f"{video.path} has no video stream")
            context.duration_s = info.duration_s
            return dag
        except Exception as exc:
            reason, message = describe_error(exc)
            if reason == "internal":
                log.exception("preparing %s failed", video.path)
            await self.recorder.step_failed_before_start(ref, "normalize", message)
            raise StepFailed("normalize", reason, message) from exc

    async def execute(self, context: StepContext, dag: Sequence[StepSpec]) -> None:
        done = {spec.name: asyncio.Event() for spec in dag}

        async def run_when_ready(spec: StepSpec) -> None:
            for need in spec.needs:
                await done[need].wait()
            await self.run_step(context, spec)
            done[spec.name].set()

        try:
            async with asyncio.TaskGroup() as group:
                for spec in dag:
                    group.create_task(run_when_ready(spec), name=spec.name)
        except BaseExceptionGroup as group:
            failures = [e for e in group.exceptions if isinstance(e, StepFailed)]
            if failures:
                raise failures[0] from None
            raise

    async def run_step(self, context: StepContext, spec: StepSpec) -> StepResult:
        """Runs one step unless it already finished (and its files are still there)."""
        row, ref = context.step(spec.name), self._ref(context)
        if row.done:
            stored = spec.result.from_json(row.result)
            if steps.result_files_exist(context, stored):
                return stored
        name = spec.name
        await self.recorder.step_started(ref, name)
        started = time.perf_counter()

        def on_retry(attempt: int, code: grpc.StatusCode, details: str, delay: float) -> None:
            self.recorder.step_retry(ref, name, attempt, code.name, details, delay)

        def on_progress(progress: common_pb2.Progress) -> None:
            self.recorder.step_progress(ref, name, progress)

        try:
            result = await spec.run(context, Report(on_progress, on_retry))
        except asyncio.CancelledError:
            if not self._closing():
                await self.recorder.step_cancelled(ref, name)
            raise
        except Exception as exc:
            reason, message = describe_error(exc)
            if reason == "internal":
                log.exception("%s of %s failed", name, context.video.path)
            await self.recorder.step_failed(ref, name, message, time.perf_counter() - started)
            raise StepFailed(name, reason, message) from exc
        finally:
            self.recorder.step_ended(ref, name)
        result.seconds = round(time.perf_counter() - started, 3)
        await self.recorder.step_succeeded(ref, name, result.as_json(), result.seconds)
        return result

    @staticmethod
    def _ref(context: StepContext) -> VideoRef:
        return VideoRef(context.job_id, context.video)
