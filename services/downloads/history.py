"""The download history and download states in SQLite (aiosqlite, WAL).

``download_history(url, timestamp)`` is the legacy table, unchanged (spec 01 §3.5): keys are
legacy normalised URLs and an upsert keeps the **oldest** timestamp, so a legacy
``download_history.sqlite3`` can be opened as is and keeps deduplicating. ``downloads`` holds one
row per download this monitor started (its state, outcome and job), ``polls`` the recent webhook
passes with their errors. The schema evolves through numbered migrations in ``PRAGMA user_version``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from services.common.sqlite import open_database, schema_version
from services.downloads.urls import normalize_url

# Download states (mirror ``DownloadState`` without the prefix, lower case).
QUEUED = "queued"
DOWNLOADING = "downloading"
AWAITING_CONFIRMATION = "awaiting_confirmation"
SUBMITTED = "submitted"
FAILED = "failed"
DRY_RUN = "dry_run"
STATES = (QUEUED, DOWNLOADING, AWAITING_CONFIRMATION, SUBMITTED, FAILED, DRY_RUN)

log = logging.getLogger(__name__)

LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"
_KEPT_POLLS = 200

_MIGRATIONS: tuple[str, ...] = (
    # 1: the legacy history table (kept when it exists), downloads and webhook polls.
    """
    CREATE TABLE IF NOT EXISTS download_history (
        url TEXT PRIMARY KEY,
        timestamp TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE downloads (
        download_id TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        url TEXT NOT NULL,
        fallback_url TEXT NOT NULL DEFAULT '',
        original_filename TEXT NOT NULL DEFAULT '',
        provider TEXT NOT NULL DEFAULT '',
        url_type TEXT NOT NULL DEFAULT '',
        webhook_timestamp TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        outcome TEXT NOT NULL DEFAULT '',
        error TEXT NOT NULL DEFAULT '',
        path TEXT NOT NULL DEFAULT '',
        size_bytes INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        passes INTEGER NOT NULL DEFAULT 0,
        job_id TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX downloads_by_key ON downloads(key);
    CREATE INDEX downloads_by_created ON downloads(created_at);
    CREATE TABLE polls (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at REAL NOT NULL,
        ok INTEGER NOT NULL,
        records INTEGER NOT NULL DEFAULT 0,
        started INTEGER NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT ''
    );
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)

# Keep-oldest upsert (legacy): an empty side loses; otherwise the lexicographic minimum, which is
# the oldest for the uniform "YYYY-MM-DD HH:MM:SS" format.
_UPSERT = """
    INSERT INTO download_history (url, timestamp) VALUES (?, ?)
    ON CONFLICT(url) DO UPDATE SET timestamp = CASE
        WHEN download_history.timestamp IS NULL OR download_history.timestamp = ''
            THEN excluded.timestamp
        WHEN excluded.timestamp IS NULL OR excluded.timestamp = ''
            THEN download_history.timestamp
        ELSE MIN(download_history.timestamp, excluded.timestamp)
    END
"""


def local_now() -> str:
    return datetime.now().strftime(LOCAL_FORMAT)


def local_timestamp(value: str) -> str:
    """A tz-aware ISO time as local ``YYYY-MM-DD HH:MM:SS``; anything else unchanged (legacy)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return value
    if parsed.tzinfo is None:
        return value
    return parsed.astimezone().strftime(LOCAL_FORMAT)


@dataclass(frozen=True)
class DownloadRow:
    download_id: str
    key: str
    url: str
    state: str
    fallback_url: str = ""
    original_filename: str = ""
    provider: str = ""
    url_type: str = ""
    webhook_timestamp: str = ""
    outcome: str = ""
    error: str = ""
    path: str = ""
    size_bytes: int = 0
    attempts: int = 0
    passes: int = 0
    job_id: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


_COLUMNS = tuple(f.name for f in fields(DownloadRow))


@dataclass(frozen=True)
class PollRow:
    started_at: float
    ok: bool
    records: int
    started: int
    error: str


@dataclass(frozen=True)
class ImportReport:
    """A legacy JSON import: entries read, new keys, keys already known, entries skipped."""

    read: int
    added: int
    known: int
    skipped: int


class HistoryStore:
    """One connection for the process (open with :meth:`open`, close with :meth:`close`)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path, shared_group: str = "") -> HistoryStore:
        """Opens (and migrates) ``path``. Like the legacy tool, the database and its ``-wal`` and
        ``-shm`` files are made ``0664`` and, with ``shared_group``, given to that group, so
        other tools of the group can share the history; failures only warn."""
        # The legacy busy timeout (30 s): the legacy tool may still share the file.
        db = await open_database(
            path, _MIGRATIONS, what="download database", busy_timeout_ms=30_000
        )
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                if file.exists():
                    file.chmod(0o664)
                    if shared_group:
                        shutil.chown(file, group=shared_group)
            except (OSError, LookupError) as exc:
                log.warning("cannot share %s (group %r): %s", file, shared_group, exc)
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        return await schema_version(self._db)

    # History (legacy table).

    async def remember(self, keys: Iterable[str], timestamp: str) -> None:
        """Adds normalised ``keys`` (empty ones ignored) keeping the oldest timestamp."""
        rows = [(key, timestamp) for key in dict.fromkeys(keys) if key]
        if rows:
            await self._db.executemany(_UPSERT, rows)
            await self._db.commit()

    async def history_keys(self) -> set[str]:
        async with self._db.execute("SELECT url FROM download_history") as cursor:
            return {row[0] async for row in cursor}

    async def history(self) -> dict[str, str]:
        async with self._db.execute(
            "SELECT url, timestamp FROM download_history ORDER BY timestamp, url"
        ) as cursor:
            return {row[0]: row[1] async for row in cursor}

    async def history_count(self) -> int:
        async with self._db.execute("SELECT COUNT(*) FROM download_history") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def import_legacy_json(self, path: Path, *, dry_run: bool = False) -> ImportReport:
        """Merges a legacy ``download_history.json`` (``["url", …]`` or
        ``[{"url", "timestamp"}, …]``) into the history: URLs normalised, tz-aware times made
        local, other times kept raw, the oldest timestamp kept on conflict.

        Unlike the legacy auto-migration this also merges into a non-empty history (the
        keep-oldest upsert makes that safe). Raises ``ValueError`` for a file that is not a JSON
        list.
        """
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, list):
            raise ValueError(f"{path} must hold a JSON list, not {type(data).__name__}")
        entries: dict[str, str] = {}
        skipped = 0
        for item in data:
            if isinstance(item, str):
                url, stamp = item, ""
            elif isinstance(item, dict) and isinstance(item.get("url"), str):
                url, raw = item["url"], item.get("timestamp")
                stamp = local_timestamp(raw) if isinstance(raw, str) else ""
            else:
                skipped += 1
                continue
            key = normalize_url(url)
            if not key:
                skipped += 1
                continue
            old = entries.get(key)
            entries[key] = _oldest(old, stamp) if old is not None else stamp
        known = await self.history_keys()
        added = sum(1 for key in entries if key not in known)
        if not dry_run and entries:
            await self._db.executemany(_UPSERT, list(entries.items()))
            await self._db.commit()
        return ImportReport(
            read=len(data), added=added, known=len(entries) - added, skipped=skipped
        )

    # Downloads.

    async def add_download(self, row: DownloadRow) -> DownloadRow:
        now = time.time()
        row = replace(row, created_at=row.created_at or now, updated_at=now)
        await self._db.execute(
            f"INSERT INTO downloads ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
            [getattr(row, c) for c in _COLUMNS],
        )
        await self._db.commit()
        return row

    async def update_download(self, download_id: str, **changes: Any) -> DownloadRow:
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown download fields: {sorted(unknown)}")
        changes["updated_at"] = time.time()
        await self._db.execute(
            f"UPDATE downloads SET {', '.join(f'{c} = ?' for c in changes)} WHERE download_id = ?",
            [*changes.values(), download_id],
        )
        await self._db.commit()
        row = await self.get_download(download_id)
        if row is None:
            raise KeyError(download_id)
        return row

    async def get_download(self, download_id: str) -> DownloadRow | None:
        async with self._db.execute(
            "SELECT * FROM downloads WHERE download_id = ?", (download_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return _download(row) if row else None

    async def downloads(self, *, states: Sequence[str] = (), limit: int = 100) -> list[DownloadRow]:
        """Newest first."""
        where = f"WHERE state IN ({', '.join('?' for _ in states)})" if states else ""
        async with self._db.execute(
            f"SELECT * FROM downloads {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            [*states, limit],
        ) as cursor:
            return [_download(row) async for row in cursor]

    async def downloads_by_key(self) -> dict[str, DownloadRow]:
        """The latest download of every key."""
        async with self._db.execute("SELECT * FROM downloads ORDER BY created_at, rowid") as cursor:
            return {row["key"]: _download(row) async for row in cursor}

    async def reset_interrupted(self) -> list[DownloadRow]:
        """Downloads a crash left DOWNLOADING go back to QUEUED (they restart from zero)."""
        interrupted = await self.downloads(states=[DOWNLOADING], limit=1_000_000)
        for row in interrupted:
            await self.update_download(
                row.download_id,
                state=QUEUED,
                outcome="interrupted",
                error="restarted after a crash",
            )
        return interrupted

    # Webhook polls.

    async def record_poll(self, poll: PollRow) -> None:
        await self._db.execute(
            "INSERT INTO polls (started_at, ok, records, started, error) VALUES (?, ?, ?, ?, ?)",
            (poll.started_at, int(poll.ok), poll.records, poll.started, poll.error),
        )
        await self._db.execute(
            "DELETE FROM polls WHERE id <= (SELECT MAX(id) FROM polls) - ?", (_KEPT_POLLS,)
        )
        await self._db.commit()

    async def polls(self, limit: int = 20) -> list[PollRow]:
        """Newest first."""
        async with self._db.execute(
            "SELECT * FROM polls ORDER BY id DESC LIMIT ?", (limit,)
        ) as cursor:
            return [
                PollRow(r["started_at"], bool(r["ok"]), r["records"], r["started"], r["error"])
                async for r in cursor
            ]


def _oldest(a: str, b: str) -> str:
    if not a:
        return b
    if not b:
        return a
    return min(a, b)


def _download(row: aiosqlite.Row) -> DownloadRow:
    return DownloadRow(**{c: row[c] for c in _COLUMNS})
