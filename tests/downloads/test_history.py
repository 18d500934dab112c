"""The SQLite history: the legacy table and its keep-oldest upsert, migrations, a legacy database
opened as is, and the legacy ``download_history.json`` import (library and CLI)."""

from __future__ import annotations

import grp
import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from services.downloads import history as hs
from services.downloads.config import DownloadsSettings
from services.downloads.history import DownloadRow, HistoryStore

REPO = Path(__file__).resolve().parents[2]


async def test_the_oldest_timestamp_wins_and_empty_ones_lose(tmp_path: Path) -> None:
    store = await HistoryStore.open(tmp_path / "h.sqlite3")
    try:
        await store.remember(["k1"], "2026-01-02 00:00:00")
        await store.remember(["k1"], "2026-01-01 00:00:00")
        await store.remember(["k1"], "2026-03-01 00:00:00")
        await store.remember(["k1"], "")
        await store.remember(["k2", "", "k2"], "")
        await store.remember(["k2"], "2026-05-05 05:05:05")
        assert await store.history() == {"k1": "2026-01-01 00:00:00", "k2": "2026-05-05 05:05:05"}
        assert await store.schema_version() == hs.SCHEMA_VERSION
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "h.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "h.sqlite3").stat().st_mode & 0o777 == 0o664


async def test_the_database_files_go_to_the_shared_group(tmp_path: Path) -> None:
    other = [g for g in grp.getgrall() if g.gr_gid != os.getgid()]
    if os.geteuid() != 0 or not other:
        pytest.skip("needs root and a second group to give the files away")
    path = tmp_path / "shared.sqlite3"
    store = await HistoryStore.open(path)
    try:
        await store.remember(["k"], "")  # the -wal file exists from now on
    finally:
        await store.close()
    store = await HistoryStore.open(path, shared_group=other[0].gr_name)
    try:
        for name in ("shared.sqlite3", "shared.sqlite3-wal"):
            assert (tmp_path / name).stat().st_gid == other[0].gr_gid, name
    finally:
        await store.close()
    store = await HistoryStore.open(path, shared_group="no-such-group-here")  # warns only
    await store.close()


async def test_a_legacy_database_keeps_its_rows_and_deduplicates(tmp_path: Path) -> None:
    path = tmp_path / "download_history.sqlite3"
    with sqlite3.connect(path) as db:  # what the legacy tool created
        db.execute(
            "CREATE TABLE IF NOT EXISTS download_history "
            "(url TEXT PRIMARY KEY, timestamp TEXT NOT NULL DEFAULT '')"
        )
        db.execute(
            "INSERT INTO download_history VALUES (?, ?)",
            ("https://www.dropbox.com/s/abc/file.zip?dl=1", "2025-01-01 08:00:00"),
        )
    store = await HistoryStore.open(path)
    try:
        assert await store.history() == {
            "https://www.dropbox.com/s/abc/file.zip?dl=1": "2025-01-01 08:00:00"
        }
        row = await store.add_download(
            DownloadRow(download_id="csv_00000001", key="k", url="u", state=hs.QUEUED)
        )
        assert (await store.get_download("csv_00000001")) == row
    finally:
        await store.close()
    # Opening again runs no migration twice.
    store = await HistoryStore.open(path)
    try:
        assert await store.history_count() == 1
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={hs.SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        await HistoryStore.open(path)


def legacy_json(tmp_path: Path) -> Path:
    path = tmp_path / "download_history.json"
    path.write_text(
        json.dumps(
            [
                {
                    "url": "https://www.dropbox.com/s/abc/file.zip?dl=0",
                    "timestamp": "2025-02-01 10:00:00",
                },
                # the same key again, older, with a zone: made local, and it wins
                {
                    "url": "HTTPS://WWW.Dropbox.com/s/abc/file.zip",
                    "timestamp": "2025-01-01T10:00:00Z",
                },
                "https://www.dropbox.com/scl/fo/abc/xyz?rlkey=KEY&amp;dl=0",
                {"url": "https://example.com/raw", "timestamp": "not a date"},
                {"no": "url"},
                42,
            ]
        ),
        encoding="utf-8",
    )
    return path


async def test_the_legacy_json_is_merged_with_normalised_keys(tmp_path: Path) -> None:
    store = await HistoryStore.open(tmp_path / "h.sqlite3")
    try:
        await store.remember(["https://example.com/raw"], "2020-01-01 00:00:00")
        source = legacy_json(tmp_path)
        dry = await store.import_legacy_json(source, dry_run=True)
        assert await store.history_count() == 1
        report = await store.import_legacy_json(source)
        assert report == dry == hs.ImportReport(read=6, added=2, known=1, skipped=2)
        local = (
            datetime.fromisoformat("2025-01-01T10:00:00+00:00")
            .astimezone()
            .strftime("%Y-%m-%d %H:%M:%S")
        )
        assert await store.history() == {
            "https://www.dropbox.com/s/abc/file.zip?dl=1": min(local, "2025-02-01 10:00:00"),
            "https://www.dropbox.com/scl/fo/abc/xyz?dl=1&rlkey=KEY": "",
            # a raw timestamp is compared as text: "2020-…" sorts before "not a date"
            "https://example.com/raw": "2020-01-01 00:00:00",
        }
        bad = tmp_path / "bad.json"
        bad.write_text('{"url": "x"}')
        with pytest.raises(ValueError, match="JSON list"):
            await store.import_legacy_json(bad)
    finally:
        await store.close()


def test_the_import_history_command(tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite3"
    command = [sys.executable, "-m", "services.downloads", "import-history"]
    done = subprocess.run(
        [*command, str(legacy_json(tmp_path)), "--db", str(db)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    assert (result["added"], result["history_count"], result["skipped"]) == (3, 3, 2)
    broken = tmp_path / "broken.json"
    broken.write_text("[not json")
    failed = subprocess.run(
        [*command, str(broken), "--db", str(db)], cwd=REPO, capture_output=True, text=True
    )
    assert failed.returncode == 1 and "not valid JSON" in failed.stderr
    missing = subprocess.run(
        [*command, str(tmp_path / "nope.json"), "--db", str(db)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_the_database_defaults_to_the_media_root(tmp_path: Path) -> None:
    assert DownloadsSettings(media_root=tmp_path).database() == (
        tmp_path / ".downloads" / "downloads.sqlite3"
    )
    assert DownloadsSettings(db_path=tmp_path / "x.db").database() == tmp_path / "x.db"
