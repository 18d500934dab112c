"""The job store's rows as dataclasses, and the state names they use.

States mirror the proto enums without their prefix, lower case (``running``, ``succeeded``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

# Job states (mirrors ``JobState`` without the prefix, lower case).
QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
COMPLETED_WITH_ERRORS = "completed_with_errors"
FAILED = "failed"
CANCELLED = "cancelled"
FINAL_JOB_STATES = frozenset({COMPLETED, COMPLETED_WITH_ERRORS, FAILED, CANCELLED})

# Step and video states (mirrors ``StepState``).
PENDING = "pending"
SUCCEEDED = "succeeded"
SKIPPED = "skipped"
DONE_STEP_STATES = frozenset({SUCCEEDED, SKIPPED})

#: The per-video DAG, in display order.
STEP_NAMES = ("extract", "normalize", "scene", "audio", "tracking", "fuse", "reduce", "finalize")


@dataclass
class StepRow:
    name: str
    state: str = PENDING
    attempts: int = 0
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def done(self) -> bool:
        return self.state in DONE_STEP_STATES


@dataclass
class VideoRow:
    idx: int
    input_idx: int
    path: str
    project: str
    stem: str
    output_dir: str
    work_dir: str
    sha256: str = ""
    state: str = PENDING
    error: str = ""
    from_cache: bool = False
    steps: dict[str, StepRow] = field(default_factory=dict)


@dataclass
class InputRow:
    idx: int
    path: str
    kind: str = ""
    state: str = PENDING
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class JobRow:
    job_id: str
    state: str
    label: str
    options: dict[str, Any]
    output_dir: str
    created_at: float
    updated_at: float
    finished_at: float | None = None
    error: str = ""
    errors: list[dict[str, str]] = field(default_factory=list)
    cancel_requested: bool = False
    inputs: list[InputRow] = field(default_factory=list)
    videos: list[VideoRow] = field(default_factory=list)


def job_row(row: aiosqlite.Row) -> JobRow:
    return JobRow(
        job_id=row["job_id"],
        state=row["state"],
        label=row["label"],
        options=json.loads(row["options"]),
        output_dir=row["output_dir"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        errors=json.loads(row["errors"]),
        cancel_requested=bool(row["cancel_requested"]),
    )


def input_row(row: aiosqlite.Row) -> InputRow:
    return InputRow(
        idx=row["idx"],
        path=row["path"],
        kind=row["kind"],
        state=row["state"],
        result=json.loads(row["result"]),
        error=row["error"],
    )


def video_row(row: aiosqlite.Row) -> VideoRow:
    return VideoRow(
        idx=row["idx"],
        input_idx=row["input_idx"],
        path=row["path"],
        project=row["project"],
        stem=row["stem"],
        output_dir=row["output_dir"],
        work_dir=row["work_dir"],
        sha256=row["sha256"],
        state=row["state"],
        error=row["error"],
        from_cache=bool(row["from_cache"]),
    )


def step_row(row: aiosqlite.Row) -> StepRow:
    return StepRow(
        name=row["name"],
        state=row["state"],
        attempts=row["attempts"],
        error=row["error"],
        result=json.loads(row["result"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )
