"""SQLite stores: one aiosqlite connection in WAL mode whose schema evolves through numbered
migrations recorded in ``PRAGMA user_version`` (migration ``n`` runs in one transaction and sets
the version to ``n + 1``; a database newer than the code is refused)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aiosqlite


async def schema_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def open_database(
    path: Path, migrations: Sequence[str], *, what: str, busy_timeout_ms: int = 5000
) -> aiosqlite.Connection:
    """A migrated connection to ``path`` (parent folders created) with ``sqlite3.Row`` rows.

    Raises ``RuntimeError`` naming ``what`` ("job database") when the file's schema is newer.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path)
    try:
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        version = await schema_version(db)
        if version > len(migrations):
            raise RuntimeError(
                f"{what} schema {version} is newer than this code ({len(migrations)})"
            )
        for number in range(version, len(migrations)):
            await db.executescript(
                f"BEGIN; {migrations[number]} PRAGMA user_version={number + 1}; COMMIT;"
            )
    except BaseException:
        await db.close()
        raise
    return db
