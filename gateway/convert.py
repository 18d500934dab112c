"""Orchestrator protos to the gateway's JSON shapes (lower-case state names, ISO-8601 UTC times,
``null`` when unset)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from orchestrator import views
from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2

#: Proto enum values to the lower-case names the orchestrator's store uses too.
JOB_STATES = dict(views.JOB_STATE_NAME)
JOB_STATE_BY_NAME = dict(views.JOB_STATE)
STEP_STATES = {value: name for name, value in views.STEP_STATE.items()}
EVENT_KINDS = ("snapshot", "step", "error", "log", "state", "resync", "synced")


def time_json(stamp: timestamp_pb2.Timestamp) -> str | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    moment = dt.datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: str) -> str | None:
    return value or None


def error_json(error: common_pb2.ErrorDetail) -> dict[str, Any]:
    return {"reason": error.reason, "message": error.message, "subject": error.subject}


def step_json(step: orchestrator_pb2.Step) -> dict[str, Any]:
    progress = step.progress
    return {
        "name": step.name,
        "state": STEP_STATES.get(step.state, "pending"),
        "progress": {
            "done": progress.done,
            "total": progress.total,
            "unit": progress.unit,
            "stage": progress.stage,
            "message": progress.message,
        },
        "eta_s": step.eta_s if step.eta_s > 0 else None,
        "attempts": step.attempts,
        "error": _text(step.error),
        "started_at": time_json(step.started_at),
        "finished_at": time_json(step.finished_at),
    }


def video_json(video: orchestrator_pb2.VideoStatus) -> dict[str, Any]:
    return {
        "index": video.index,
        "path": video.path,
        "sha256": _text(video.sha256),
        "state": STEP_STATES.get(video.state, "pending"),
        "error": _text(video.error),
        "output_dir": _text(video.output_dir),
        "from_cache": video.from_cache,
        "normalized_path": _text(video.normalized_path),
        "steps": [step_json(s) for s in video.steps],
    }


def options_json(options: orchestrator_pb2.JobOptions) -> dict[str, Any]:
    return views.options_dict(options)


def options_proto(data: object) -> orchestrator_pb2.JobOptions:
    """Job options from their JSON form; raises ``ValueError`` with a readable message."""
    if not isinstance(data, dict):
        raise ValueError("options must be a JSON object")
    try:
        return views.options_proto(data)
    except json_format.ParseError as exc:
        raise ValueError(f"bad options: {exc}") from None


def job_json(job: orchestrator_pb2.Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "state": JOB_STATES.get(job.state, "queued"),
        "label": job.label,
        "inputs": [ref.path for ref in job.inputs],
        "options": options_json(job.options),
        "output_dir": _text(job.output_dir),
        "error": _text(job.error),
        "errors": [error_json(e) for e in job.errors],
        "created_at": time_json(job.created_at),
        "updated_at": time_json(job.updated_at),
        "finished_at": time_json(job.finished_at),
        "videos": [video_json(v) for v in job.videos],
    }


def event_json(event: orchestrator_pb2.JobEvent) -> dict[str, Any]:
    kind = event.WhichOneof("event") or "state"
    data: dict[str, Any] = {
        "seq": event.sequence,
        "job_id": event.job_id,
        "time": time_json(event.time),
        "kind": kind,
    }
    if kind == "snapshot":
        data["job"] = job_json(event.snapshot)
    elif kind == "step":
        data["step"] = {"video": event.step.video, "step": step_json(event.step.step)}
    elif kind == "log":
        data["log"] = {
            "severity": event.log.severity,
            "message": event.log.message,
            "video": event.log.video,
        }
    elif kind == "error":
        data["error"] = error_json(event.error)
    elif kind == "state":
        data["state"] = JOB_STATES.get(event.state, "queued")
    elif kind == "resync":
        data["resync"] = {
            "reason": event.resync.reason,
            "oldest_sequence": event.resync.oldest_sequence,
        }
    elif kind == "synced":
        data["synced"] = {"jobs": event.synced.jobs}
    return data
