"""Durable job state in SQLite (aiosqlite, WAL): jobs, inputs, videos, steps and their events.

Everything a restart needs lives here: which steps of which video finished and where their result
files are, so an interrupted job resumes where it stopped and never repeats a finished step; and
every event that described a change, numbered by one global sequence, so a watcher that
reconnects (even to a restarted orchestrator) gets exactly what it missed.

Writes go through :meth:`JobStore.transaction` (one at a time); the events of a transaction are
handed to the ``listener`` right after its commit, in sequence order. Reads may run at any time.
Old events go by :meth:`JobStore.prune_events` (retention); the highest sequence pruned is kept
so that a watcher resuming before it is told that it missed events.

The schema evolves through numbered migrations recorded in ``PRAGMA user_version``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from orchestrator.rows import (
    CANCELLED,
    COMPLETED,
    COMPLETED_WITH_ERRORS,
    DONE_STEP_STATES,
    FAILED,
    FINAL_JOB_STATES,
    PENDING,
    QUEUED,
    RUNNING,
    SKIPPED,
    STEP_NAMES,
    SUCCEEDED,
    InputRow,
    JobRow,
    StepRow,
    VideoRow,
    input_row,
    job_row,
    step_row,
    video_row,
)
from orchestrator.transaction import Transaction
from protos.videoanalysis.v1 import orchestrator_pb2
from services.common.sqlite import open_database, schema_version

#: The store's vocabulary (states and rows) is re-exported: ``store.RUNNING``, ``store.JobRow``.
__all__ = [
    "CANCELLED",
    "COMPLETED",
    "COMPLETED_WITH_ERRORS",
    "DONE_STEP_STATES",
    "FAILED",
    "FINAL_JOB_STATES",
    "PENDING",
    "QUEUED",
    "RUNNING",
    "SCHEMA_VERSION",
    "SKIPPED",
    "STEP_NAMES",
    "SUCCEEDED",
    "EventLogStats",
    "InputRow",
    "JobRow",
    "JobStore",
    "StepRow",
    "VideoRow",
]

EventListener = Callable[[Sequence[orchestrator_pb2.JobEvent]], None]

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
    # 2: the event log (one global sequence that is never reused) and store-wide values.
    """
    CREATE TABLE events (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        coalesce_key TEXT,
        time REAL NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE INDEX events_by_job ON events(job_id, kind, sequence);
    CREATE INDEX events_by_key ON events(coalesce_key) WHERE coalesce_key IS NOT NULL;
    CREATE INDEX events_by_time ON events(time);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    """,
    # 3: idempotent submission (SubmitJobRequest.submit_key).
    """
    ALTER TABLE jobs ADD COLUMN submit_key TEXT;
    CREATE UNIQUE INDEX jobs_by_submit_key ON jobs(submit_key) WHERE submit_key IS NOT NULL;
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)
_MAX_IDS_PER_QUERY = 500


@dataclass(frozen=True)
class EventLogStats:
    rows: int
    first_sequence: int
    last_sequence: int
    #: Events up to this sequence may have been pruned.
    floor: int


class JobStore:
    """The orchestrator's database. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, db: aiosqlite.Connection, *, log_lines_per_job: int = 2_000) -> None:
        self._db = db
        self._write = asyncio.Lock()
        self._log_lines_per_job = log_lines_per_job
        self._listeners: list[EventListener] = []

    @classmethod
    async def open(cls, path: Path, *, log_lines_per_job: int = 2_000) -> JobStore:
        """Opens (creating when needed) the database at ``path`` and migrates it."""
        db = await open_database(path, _MIGRATIONS, what="job database")
        return cls(db, log_lines_per_job=log_lines_per_job)

    async def close(self) -> None:
        await self._db.close()

    def listen(self, listener: EventListener) -> None:
        """``listener(events)`` is called after each commit that stored events, in order."""
        self._listeners.append(listener)

    async def schema_version(self) -> int:
        return await schema_version(self._db)

    # Writing.

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One write transaction: committed on exit (then its events are published), rolled back
        on an exception. Transactions run one at a time."""
        async with self._write:
            tx = Transaction(self._db, self._log_lines_per_job)
            try:
                yield tx
            except BaseException:
                await asyncio.shield(self._db.rollback())
                raise
            # Shielded: a cancelled caller must not leave a committed event unpublished.
            await asyncio.shield(self._commit(tx))

    async def _commit(self, tx: Transaction) -> None:
        await self._db.commit()
        if tx.events:
            for listener in self._listeners:
                listener(tx.events)

    @asynccontextmanager
    async def consistent_read(self) -> AsyncIterator[None]:
        """Holds writes back while reading, so what is read matches :meth:`last_sequence`."""
        async with self._write:
            yield

    # One-statement writes (each its own transaction).

    async def create_job(self, *args: Any, **kwargs: Any) -> None:
        async with self.transaction() as tx:
            await tx.create_job(*args, **kwargs)

    async def set_job_state(self, *args: Any, **kwargs: Any) -> None:
        async with self.transaction() as tx:
            await tx.set_job_state(*args, **kwargs)

    async def request_cancel(self, job_id: str) -> None:
        async with self.transaction() as tx:
            await tx.request_cancel(job_id)

    async def add_job_error(self, *args: Any, **kwargs: Any) -> None:
        async with self.transaction() as tx:
            await tx.add_job_error(*args, **kwargs)

    async def update_input(self, *args: Any, **kwargs: Any) -> None:
        async with self.transaction() as tx:
            await tx.update_input(*args, **kwargs)

    async def add_videos(self, *args: Any, **kwargs: Any) -> None:
        async with self.transaction() as tx:
            await tx.add_videos(*args, **kwargs)

    async def update_video(self, *args: Any, **kwargs: Any) -> None:
        async with self.transaction() as tx:
            await tx.update_video(*args, **kwargs)

    async def update_step(self, *args: Any, **kwargs: Any) -> None:
        async with self.transaction() as tx:
            await tx.update_step(*args, **kwargs)

    async def cancel_unfinished(self, job_id: str, error: str) -> None:
        async with self.transaction() as tx:
            await tx.cancel_unfinished(job_id, error)

    async def reset_interrupted(self, job_id: str) -> None:
        async with self.transaction() as tx:
            await tx.reset_interrupted(job_id)

    # Reading jobs.

    async def get_job(self, job_id: str) -> JobRow | None:
        jobs = await self.load_jobs([job_id])
        return jobs[0] if jobs else None

    async def list_jobs(self, limit: int = 50, states: Iterable[str] = ()) -> list[JobRow]:
        return await self.load_jobs(await self.job_ids(limit, states))

    async def job_ids(self, limit: int = 50, states: Iterable[str] = ()) -> list[str]:
        """Ids of the newest jobs (in ``states`` when given), newest first."""
        wanted = list(states)
        query = "SELECT job_id FROM jobs"
        if wanted:
            query += f" WHERE state IN ({','.join('?' * len(wanted))})"
        query += " ORDER BY created_at DESC, job_id LIMIT ?"
        async with self._db.execute(query, (*wanted, limit)) as cur:
            return [r["job_id"] async for r in cur]

    async def load_jobs(self, job_ids: Sequence[str]) -> list[JobRow]:
        """Jobs with their inputs, videos and steps, in ``job_ids`` order (missing ones left out):
        four queries per 500 jobs (SQLite bounds the parameters of one statement)."""
        jobs: list[JobRow] = []
        for start in range(0, len(job_ids), _MAX_IDS_PER_QUERY):
            jobs += await self._load_job_batch(list(job_ids[start : start + _MAX_IDS_PER_QUERY]))
        return jobs

    async def _load_job_batch(self, job_ids: list[str]) -> list[JobRow]:
        among = f"job_id IN ({','.join('?' * len(job_ids))})"
        async with self._db.execute(f"SELECT * FROM jobs WHERE {among}", job_ids) as cur:
            jobs = {r["job_id"]: job_row(r) async for r in cur}
        async with self._db.execute(
            f"SELECT * FROM inputs WHERE {among} ORDER BY job_id, idx", job_ids
        ) as cur:
            async for r in cur:
                jobs[r["job_id"]].inputs.append(input_row(r))
        videos = {}
        async with self._db.execute(
            f"SELECT * FROM videos WHERE {among} ORDER BY job_id, idx", job_ids
        ) as cur:
            async for r in cur:
                videos[r["job_id"], r["idx"]] = video_row(r)
        async with self._db.execute(f"SELECT * FROM steps WHERE {among}", job_ids) as cur:
            async for r in cur:
                video = videos.get((r["job_id"], r["video_idx"]))
                if video is not None:
                    video.steps[r["name"]] = step_row(r)
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

    # Reading events.

    async def events_after(
        self, sequence: int, job_ids: Sequence[str] = (), *, limit: int = 500, kind: str = ""
    ) -> list[orchestrator_pb2.JobEvent]:
        """Stored events with a larger sequence (of ``job_ids`` when given; of ``kind`` when
        given), oldest first, at most ``limit``."""
        query = "SELECT sequence, payload FROM events WHERE sequence > ?"
        params: list[Any] = [sequence]
        if job_ids:
            query += f" AND job_id IN ({','.join('?' * len(job_ids))})"
            params += job_ids
        if kind:
            query += " AND kind = ?"
            params.append(kind)
        query += " ORDER BY sequence LIMIT ?"
        params.append(limit)
        events = []
        async with self._db.execute(query, params) as cur:
            async for row in cur:
                event = orchestrator_pb2.JobEvent.FromString(row["payload"])
                event.sequence = row["sequence"]
                events.append(event)
        return events

    async def last_sequence(self) -> int:
        """The highest sequence ever given (pruned or coalesced events included)."""
        async with self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def event_floor(self) -> int:
        """Events up to this sequence may have been pruned by retention."""
        async with self._db.execute("SELECT value FROM meta WHERE key = 'event_floor'") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def event_stats(self) -> EventLogStats:
        async with self._db.execute(
            "SELECT COUNT(*), COALESCE(MIN(sequence), 0) FROM events"
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return EventLogStats(
            rows=int(row[0]),
            first_sequence=int(row[1]),
            last_sequence=await self.last_sequence(),
            floor=await self.event_floor(),
        )

    async def prune_events(self, *, max_rows: int, max_age_s: float) -> int:
        """Deletes the events beyond the retention (older than ``max_age_s``, or all but the
        newest ``max_rows``); returns how many went."""
        async with self._write:
            horizon = time.time() - max_age_s
            async with self._db.execute(
                "SELECT MAX(sequence) FROM ("
                " SELECT sequence FROM events WHERE time < ?"
                " UNION ALL"
                " SELECT sequence FROM (SELECT sequence FROM events"
                "  ORDER BY sequence DESC LIMIT -1 OFFSET ?))",
                (horizon, max_rows),
            ) as cur:
                row = await cur.fetchone()
            cutoff = int(row[0]) if row and row[0] is not None else 0
            if not cutoff:
                return 0
            cursor = await self._db.execute("DELETE FROM events WHERE sequence <= ?", (cutoff,))
            await self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('event_floor', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
                (cutoff,),
            )
            await self._db.commit()
            return int(cursor.rowcount)
