"""``python -m services.downloads import-history FILE --db PATH [--dry-run]``: merges a legacy
``download_history.json`` into the history database (prints one JSON line)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from services.downloads.history import HistoryStore


async def _import(source: Path, db: Path, dry_run: bool) -> dict[str, object]:
    store = await HistoryStore.open(db)
    try:
        report = await store.import_legacy_json(source, dry_run=dry_run)
        return {**asdict(report), "history_count": await store.history_count(), "dry_run": dry_run}
    finally:
        await store.close()


def import_history(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.downloads import-history",
        description="Merge a legacy download_history.json into the SQLite history "
        "(URLs normalised, oldest timestamp kept).",
    )
    parser.add_argument("file", type=Path, help="the legacy download_history.json")
    parser.add_argument("--db", type=Path, required=True, help="the history database")
    parser.add_argument("--dry-run", action="store_true", help="count, write nothing")
    args = parser.parse_args(list(argv))
    if not args.file.is_file():
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_import(args.file, args.db, args.dry_run))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
