"""Durable job state in SQLite (aiosqlite, WAL): jobs, their inputs, videos and steps.

Everything a restart needs lives here: which steps of which video finished and where their result
files are, so an interrupted job resumes where it stopped and never repeats a finished step.
Progress counters are not stored (they change many times a second); they live in memory and are
laid over the stored state when a job is shown.

The schema evolves through numbered migrations recorded in ``PRAGMA user_version``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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

_MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema.
    """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        options TEXT NOT NULL DEFAULT '{}',
        output_dir TEXT NOT NULL DEFAULT '',
        error TEXT NOT NULL DEFAULT '',
        errors TEXT NOT NULL DEFAULT '[]',
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX jobs_by_created ON jobs(created_at);
    CREATE TABLE inputs (
        job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT 'pending',
        result TEXT NOT NULL DEFAULT '{}',
        error TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (job_id, idx)
    );
    CREATE TABLE videos (
        job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        input_idx INTEGER NOT NULL,
        path TEXT NOT NULL,
        project TEXT NOT NULL,
        stem TEXT NOT NULL,
        output_dir TEXT NOT NULL,
        work_dir TEXT NOT NULL,
        sha256 TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT 'pending',
        error TEXT NOT NULL DEFAULT '',
        from_cache INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, idx),
        UNIQUE (job_id, path)
    );
    CREATE TABLE steps (
        job_id TEXT NOT NULL,
        video_idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT '',
        result TEXT NOT NULL DEFAULT '{}',
        started_at REAL,
        finished_at REAL,
        PRIMARY KEY (job_id, video_idx, name),
        FOREIGN KEY (job_id, video_idx) REFERENCES videos(job_id, idx) ON DELETE CASCADE
    );
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)


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


class JobStore:
    """The orchestrator's database. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> JobStore:
        """Opens (creating when needed) the database at ``path`` and migrates it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        store = cls(db)
        await store._migrate()
        return store

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        version = await self.schema_version()
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"job database schema {version} is newer than this orchestrator ({SCHEMA_VERSION})"
            )
        for number in range(version, SCHEMA_VERSION):
            await self._db.executescript(
                f"BEGIN; {_MIGRATIONS[number]} PRAGMA user_version={number + 1}; COMMIT;"
            )

    # Jobs.

    async def create_job(
        self,
        job_id: str,
        inputs: Sequence[str],
        options: dict[str, Any],
        label: str,
        output_dir: str,
    ) -> None:
        now = time.time()
        await self._db.execute(
            "INSERT INTO jobs (job_id, state, label, options, output_dir, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job_id, QUEUED, label, json.dumps(options), output_dir, now, now),
        )
        await self._db.executemany(
            "INSERT INTO inputs (job_id, idx, path) VALUES (?, ?, ?)",
            [(job_id, idx, path) for idx, path in enumerate(inputs)],
        )
        await self._db.commit()

    async def set_job_state(
        self, job_id: str, state: str, *, error: str | None = None, finished: bool = False
    ) -> None:
        now = time.time()
        await self._db.execute(
            "UPDATE jobs SET state = ?, error = COALESCE(?, error), updated_at = ?,"
            " finished_at = CASE WHEN ? THEN ? ELSE finished_at END WHERE job_id = ?",
            (state, error, now, finished, now, job_id),
        )
        await self._db.commit()

    async def request_cancel(self, job_id: str) -> None:
        await self._db.execute(
            "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE job_id = ?",
            (time.time(), job_id),
        )
        await self._db.commit()

    async def add_job_error(self, job_id: str, reason: str, message: str, subject: str) -> None:
        async with self._db.execute("SELECT errors FROM jobs WHERE job_id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return
        errors = json.loads(row["errors"])
        entry = {"reason": reason, "message": message, "subject": subject}
        if entry not in errors:
            errors.append(entry)
        await self._db.execute(
            "UPDATE jobs SET errors = ?, updated_at = ? WHERE job_id = ?",
            (json.dumps(errors), time.time(), job_id),
        )
        await self._db.commit()

    async def get_job(self, job_id: str) -> JobRow | None:
        jobs = await self._load_jobs([job_id])
        return jobs[0] if jobs else None

    async def list_jobs(self, limit: int = 50, states: Iterable[str] = ()) -> list[JobRow]:
        wanted = list(states)
        query = "SELECT job_id FROM jobs"
        if wanted:
            query += f" WHERE state IN ({','.join('?' * len(wanted))})"
        query += " ORDER BY created_at DESC, job_id LIMIT ?"
        async with self._db.execute(query, (*wanted, limit)) as cur:
            ids = [r["job_id"] async for r in cur]
        return await self._load_jobs(ids)

    async def _load_jobs(self, job_ids: list[str]) -> list[JobRow]:
        """Jobs with their inputs, videos and steps, in ``job_ids`` order (missing ones left out):
        four queries per 500 jobs (SQLite bounds the parameters of one statement)."""
        jobs: list[JobRow] = []
        for start in range(0, len(job_ids), _MAX_IDS_PER_QUERY):
            jobs += await self._load_job_batch(job_ids[start : start + _MAX_IDS_PER_QUERY])
        return jobs

    async def _load_job_batch(self, job_ids: list[str]) -> list[JobRow]:
        among = f"job_id IN ({','.join('?' * len(job_ids))})"
        async with self._db.execute(f"SELECT * FROM jobs WHERE {among}", job_ids) as cur:
            jobs = {r["job_id"]: _job_row(r) async for r in cur}
        async with self._db.execute(
            f"SELECT * FROM inputs WHERE {among} ORDER BY job_id, idx", job_ids
        ) as cur:
            async for r in cur:
                jobs[r["job_id"]].inputs.append(_input_row(r))
        videos: dict[tuple[str, int], VideoRow] = {}
        async with self._db.execute(
            f"SELECT * FROM videos WHERE {among} ORDER BY job_id, idx", job_ids
        ) as cur:
            async for r in cur:
                videos[r["job_id"], r["idx"]] = _video_row(r)
        async with self._db.execute(f"SELECT * FROM steps WHERE {among}", job_ids) as cur:
            async for r in cur:
                video = videos.get((r["job_id"], r["video_idx"]))
                if video is not None:
                    video.steps[r["name"]] = _step_row(r)
        for (job_id, _idx), video in videos.items():
            video.steps = {name: video.steps.get(name, StepRow(name)) for name in STEP_NAMES}
            jobs[job_id].videos.append(video)
        return [jobs[job_id] for job_id in job_ids if job_id in jobs]

    async def unfinished_jobs(self) -> list[str]:
        """Ids of jobs a restart must pick up again, oldest first."""
        async with self._db.execute(
            "SELECT job_id FROM jobs WHERE state IN (?, ?) ORDER BY created_at, job_id",
            (QUEUED, RUNNING),
        ) as cur:
            return [r["job_id"] async for r in cur]

    # Inputs.

    async def update_input(
        self,
        job_id: str,
        idx: int,
        *,
        kind: str | None = None,
        state: str | None = None,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        await self._db.execute(
            "UPDATE inputs SET kind = COALESCE(?, kind), state = COALESCE(?, state),"
            " result = COALESCE(?, result), error = COALESCE(?, error)"
            " WHERE job_id = ? AND idx = ?",
            (kind, state, None if result is None else json.dumps(result), error, job_id, idx),
        )
        await self._db.commit()

    # Videos.

    async def add_videos(self, job_id: str, videos: Sequence[VideoRow]) -> None:
        """Records videos found for a job (again after a restart: already known ones are kept)."""
        await self._db.executemany(
            "INSERT OR IGNORE INTO videos (job_id, idx, input_idx, path, project, stem,"
            " output_dir, work_dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (job_id, v.idx, v.input_idx, v.path, v.project, v.stem, v.output_dir, v.work_dir)
                for v in videos
            ],
        )
        await self._db.executemany(
            "INSERT OR IGNORE INTO steps (job_id, video_idx, name) VALUES (?, ?, ?)",
            [(job_id, v.idx, name) for v in videos for name in STEP_NAMES],
        )
        await self._db.commit()

    async def update_video(
        self,
        job_id: str,
        idx: int,
        *,
        state: str | None = None,
        error: str | None = None,
        sha256: str | None = None,
        from_cache: bool | None = None,
    ) -> None:
        await self._db.execute(
            "UPDATE videos SET state = COALESCE(?, state), error = COALESCE(?, error),"
            " sha256 = COALESCE(?, sha256), from_cache = COALESCE(?, from_cache)"
            " WHERE job_id = ? AND idx = ?",
            (state, error, sha256, from_cache, job_id, idx),
        )
        await self._db.commit()

    # Steps.

    async def update_step(
        self,
        job_id: str,
        video_idx: int,
        name: str,
        *,
        state: str | None = None,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        add_attempt: bool = False,
        started: bool = False,
        finished: bool = False,
    ) -> None:
        now = time.time()
        await self._db.execute(
            "UPDATE steps SET state = COALESCE(?, state), error = COALESCE(?, error),"
            " result = COALESCE(?, result), attempts = attempts + ?,"
            " started_at = CASE WHEN ? THEN ? ELSE started_at END,"
            " finished_at = CASE WHEN ? THEN ? WHEN ? THEN NULL ELSE finished_at END"
            " WHERE job_id = ? AND video_idx = ? AND name = ?",
            (
                state,
                error,
                None if result is None else json.dumps(result),
                1 if add_attempt else 0,
                started,
                now,
                finished,
                now,
                started,
                job_id,
                video_idx,
                name,
            ),
        )
        await self._db.commit()

    async def cancel_unfinished(self, job_id: str, error: str) -> None:
        """Marks every step, video and input of the job that had not finished as CANCELLED."""
        now = time.time()
        await self._db.execute(
            "UPDATE steps SET state = ?, error = CASE WHEN state = ? THEN ? ELSE error END,"
            " finished_at = CASE WHEN state = ? THEN ? ELSE finished_at END"
            " WHERE job_id = ? AND state IN (?, ?)",
            (CANCELLED, RUNNING, error, RUNNING, now, job_id, PENDING, RUNNING),
        )
        await self._db.execute(
            "UPDATE videos SET state = ?, error = ? WHERE job_id = ? AND state IN (?, ?)",
            (CANCELLED, error, job_id, PENDING, RUNNING),
        )
        await self._db.execute(
            "UPDATE inputs SET state = ? WHERE job_id = ? AND state IN (?, ?)",
            (CANCELLED, job_id, PENDING, RUNNING),
        )
        await self._db.commit()

    async def reset_interrupted(self, job_id: str) -> None:
        """Steps and videos left RUNNING by a crash go back to PENDING (their work is redone)."""
        await self._db.execute(
            "UPDATE steps SET state = ? WHERE job_id = ? AND state = ?", (PENDING, job_id, RUNNING)
        )
        await self._db.execute(
            "UPDATE videos SET state = ? WHERE job_id = ? AND state = ?", (PENDING, job_id, RUNNING)
        )
        await self._db.execute(
            "UPDATE inputs SET state = ? WHERE job_id = ? AND state = ?", (PENDING, job_id, RUNNING)
        )
        await self._db.commit()


_MAX_IDS_PER_QUERY = 500


def _job_row(row: aiosqlite.Row) -> JobRow:
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


def _input_row(row: aiosqlite.Row) -> InputRow:
    return InputRow(
        idx=row["idx"],
        path=row["path"],
        kind=row["kind"],
        state=row["state"],
        result=json.loads(row["result"]),
        error=row["error"],
    )


def _video_row(row: aiosqlite.Row) -> VideoRow:
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


def _step_row(row: aiosqlite.Row) -> StepRow:
    return StepRow(
        name=row["name"],
        state=row["state"],
        attempts=row["attempts"],
        error=row["error"],
        result=json.loads(row["result"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )
