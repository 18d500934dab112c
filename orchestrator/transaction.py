"""Writes to the job store, one transaction at a time, with the events that describe them.

A :class:`Transaction` is opened by :meth:`orchestrator.store.JobStore.transaction`: its state
changes and the events emitted with them are committed together (a crash keeps both or neither),
and the events get their global sequence from the ``events`` table.

Events are kept bounded where they would otherwise pile up: a progress event replaces the previous
progress event of the same step (and a step's state change removes them: they are superseded);
log lines are kept per job up to a bound, the oldest going first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import aiosqlite

from orchestrator.rows import CANCELLED, PENDING, QUEUED, RUNNING, STEP_NAMES, VideoRow
from protos.videoanalysis.v1 import orchestrator_pb2


def event_kind(event: orchestrator_pb2.JobEvent) -> str:
    return event.WhichOneof("event") or ""


def progress_key(video: str, step: str) -> str:
    """What progress events of one step are coalesced by."""
    return f"{video}\x1f{step}"


class Transaction:
    """The write half of the job store (obtained from ``JobStore.transaction()``)."""

    def __init__(self, db: aiosqlite.Connection, log_lines_per_job: int) -> None:
        self._db = db
        self._log_lines_per_job = log_lines_per_job
        #: The events emitted so far, with their sequence (published after the commit).
        self.events: list[orchestrator_pb2.JobEvent] = []

    # Events.

    async def emit(
        self, event: orchestrator_pb2.JobEvent, *, progress_of: str = ""
    ) -> orchestrator_pb2.JobEvent:
        """Stores ``event`` (its sequence is assigned here) and returns it.

        ``progress_of`` (a :func:`progress_key`) marks a progress-only step event: it replaces the
        step's previous progress event. A step event without it is a state change, which
        supersedes the step's progress events.
        """
        kind = event_kind(event)
        if not event.HasField("time"):
            event.time.FromNanoseconds(time.time_ns())
        if kind == "step":
            key = progress_of or progress_key(event.step.video, event.step.step.name)
            await self._db.execute(
                "DELETE FROM events WHERE job_id = ? AND coalesce_key = ?", (event.job_id, key)
            )
        event.sequence = 0
        cursor = await self._db.execute(
            "INSERT INTO events (job_id, kind, coalesce_key, time, payload) VALUES (?, ?, ?, ?, ?)",
            (
                event.job_id,
                kind,
                progress_of or None,
                event.time.ToNanoseconds() / 1e9,
                event.SerializeToString(),
            ),
        )
        assert cursor.lastrowid is not None
        event.sequence = cursor.lastrowid
        if kind == "log":
            await self._bound_log_lines(event.job_id)
        self.events.append(event)
        return event

    async def _bound_log_lines(self, job_id: str) -> None:
        await self._db.execute(
            "DELETE FROM events WHERE job_id = ? AND kind = 'log' AND sequence <= ("
            " SELECT sequence FROM events WHERE job_id = ? AND kind = 'log'"
            " ORDER BY sequence DESC LIMIT 1 OFFSET ?)",
            (job_id, job_id, self._log_lines_per_job),
        )

    # Jobs.

    async def create_job(
        self,
        job_id: str,
        inputs: Sequence[str],
        options: dict[str, Any],
        label: str,
        output_dir: str,
        submit_key: str | None = None,
    ) -> None:
        now = time.time()
        await self._db.execute(
            "INSERT INTO jobs (job_id, state, label, options, output_dir, created_at, updated_at,"
            " submit_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, QUEUED, label, json.dumps(options), output_dir, now, now, submit_key),
        )
        await self._db.executemany(
            "INSERT INTO inputs (job_id, idx, path) VALUES (?, ?, ?)",
            [(job_id, idx, path) for idx, path in enumerate(inputs)],
        )

    async def submitted_with(self, submit_key: str) -> tuple[str, list[str]] | None:
        """The job an earlier submission with ``submit_key`` made, and its inputs."""
        async with self._db.execute(
            "SELECT job_id FROM jobs WHERE submit_key = ?", (submit_key,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        async with self._db.execute(
            "SELECT path FROM inputs WHERE job_id = ? ORDER BY idx", (row[0],)
        ) as cursor:
            paths = [path for (path,) in await cursor.fetchall()]
        return str(row[0]), paths

    async def set_job_state(
        self, job_id: str, state: str, *, error: str | None = None, finished: bool = False
    ) -> None:
        now = time.time()
        await self._db.execute(
            "UPDATE jobs SET state = ?, error = COALESCE(?, error), updated_at = ?,"
            " finished_at = CASE WHEN ? THEN ? ELSE finished_at END WHERE job_id = ?",
            (state, error, now, finished, now, job_id),
        )

    async def request_cancel(self, job_id: str) -> None:
        await self._db.execute(
            "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE job_id = ?",
            (time.time(), job_id),
        )

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
        at: float | None = None,
    ) -> None:
        now = time.time() if at is None else at
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

    async def reset_interrupted(self, job_id: str) -> None:
        """Steps and videos left RUNNING by a crash go back to PENDING (their work is redone)."""
        for table in ("steps", "videos", "inputs"):
            await self._db.execute(
                f"UPDATE {table} SET state = ? WHERE job_id = ? AND state = ?",
                (PENDING, job_id, RUNNING),
            )
