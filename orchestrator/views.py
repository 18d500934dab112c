"""Stored job rows (plus live progress) → the ``videoanalysis.v1`` Job messages clients see."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf import json_format, timestamp_pb2

from orchestrator import rows as st
from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2

JOB_STATE = {
    st.QUEUED: orchestrator_pb2.JOB_STATE_QUEUED,
    st.RUNNING: orchestrator_pb2.JOB_STATE_RUNNING,
    st.COMPLETED: orchestrator_pb2.JOB_STATE_COMPLETED,
    st.COMPLETED_WITH_ERRORS: orchestrator_pb2.JOB_STATE_COMPLETED_WITH_ERRORS,
    st.FAILED: orchestrator_pb2.JOB_STATE_FAILED,
    st.CANCELLED: orchestrator_pb2.JOB_STATE_CANCELLED,
}
JOB_STATE_NAME = {value: key for key, value in JOB_STATE.items()}

STEP_STATE = {
    st.PENDING: orchestrator_pb2.STEP_STATE_PENDING,
    st.RUNNING: orchestrator_pb2.STEP_STATE_RUNNING,
    st.SUCCEEDED: orchestrator_pb2.STEP_STATE_SUCCEEDED,
    st.FAILED: orchestrator_pb2.STEP_STATE_FAILED,
    st.SKIPPED: orchestrator_pb2.STEP_STATE_SKIPPED,
    st.CANCELLED: orchestrator_pb2.STEP_STATE_CANCELLED,
}


@dataclass
class LiveProgress:
    """Progress of a running step, kept in memory only."""

    #: The latest ``Progress`` the step's service reported.
    last: common_pb2.Progress = field(default_factory=common_pb2.Progress)
    #: When ``done`` first became non-zero (ETA is measured from there: model warm-up and
    #: queueing before the first unit would otherwise inflate it).
    first_progress: float | None = None
    first_done: int = 0
    #: When this progress was last published as an event (events are throttled).
    published: float = 0.0

    def update(self, progress: common_pb2.Progress) -> None:
        if progress.done and self.first_progress is None:
            self.first_progress = time.monotonic()
            self.first_done = progress.done
        self.last = progress

    @property
    def eta_s(self) -> float:
        done, total = self.last.done, self.last.total
        if not total or self.first_progress is None or done <= self.first_done:
            return 0.0
        rate = (done - self.first_done) / max(time.monotonic() - self.first_progress, 1e-6)
        return max(0.0, (total - done) / rate)


def timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def step_proto(row: st.StepRow, live: LiveProgress | None = None) -> orchestrator_pb2.Step:
    step = orchestrator_pb2.Step(
        name=row.name,
        state=STEP_STATE[row.state],
        error=row.error,
        attempts=row.attempts,
    )
    if row.started_at is not None:
        step.started_at.CopyFrom(timestamp(row.started_at))
    if row.finished_at is not None:
        step.finished_at.CopyFrom(timestamp(row.finished_at))
    if live is not None and row.state == st.RUNNING:
        step.progress.CopyFrom(live.last)
        step.eta_s = live.eta_s
    elif row.state == st.SUCCEEDED:
        total = int(row.result.get("progress_total", 1) or 1)
        step.progress.CopyFrom(
            common_pb2.Progress(done=total, total=total, unit=str(row.result.get("unit", "")))
        )
    return step


def options_dict(options: orchestrator_pb2.JobOptions) -> dict[str, object]:
    return json_format.MessageToDict(options, preserving_proto_field_name=True)


def options_proto(data: Mapping[str, object]) -> orchestrator_pb2.JobOptions:
    return json_format.ParseDict(dict(data), orchestrator_pb2.JobOptions())


def job_proto(
    job: st.JobRow, live: Mapping[tuple[int, str], LiveProgress] | None = None
) -> orchestrator_pb2.Job:
    live = live or {}
    message = orchestrator_pb2.Job(
        job_id=job.job_id,
        state=JOB_STATE[job.state],
        inputs=[common_pb2.MediaRef(path=i.path) for i in job.inputs],
        options=options_proto(job.options),
        label=job.label,
        output_dir=job.output_dir,
        error=job.error,
        errors=[
            common_pb2.ErrorDetail(
                reason=e.get("reason", ""),
                message=e.get("message", ""),
                subject=e.get("subject", ""),
            )
            for e in job.errors
        ],
    )
    message.created_at.CopyFrom(timestamp(job.created_at))
    message.updated_at.CopyFrom(timestamp(job.updated_at))
    if job.finished_at is not None:
        message.finished_at.CopyFrom(timestamp(job.finished_at))
    for video in job.videos:
        message.videos.append(video_proto(video, live))
    return message


def video_proto(
    video: st.VideoRow, live: Mapping[tuple[int, str], LiveProgress] | None = None
) -> orchestrator_pb2.VideoStatus:
    live = live or {}
    return orchestrator_pb2.VideoStatus(
        path=video.path,
        sha256=video.sha256,
        state=STEP_STATE[video.state],
        error=video.error,
        output_dir=video.output_dir,
        from_cache=video.from_cache,
        index=video.idx,
        normalized_path=_kept_normalized(video),
        steps=[
            step_proto(video.steps[name], live.get((video.idx, name)))
            for name in st.STEP_NAMES
            if name in video.steps
        ],
    )


def _kept_normalized(video: st.VideoRow) -> str:
    """Where the normalised file was written (whether it is still there is the caller's
    business: see ``Recorder.snapshots``)."""
    step = video.steps.get("normalize")
    return str(step.result.get("path", "")) if step is not None else ""
