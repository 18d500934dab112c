"""Monitor passes against a real loopback server standing in for the webhook and Dropbox: every
bad answer gets a clear outcome in the history and leaves no file behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from orchestrator.stack import free_port
from services.common.files import leftover
from services.downloads import history as hs
from services.downloads.config import DownloadsSettings
from services.downloads.monitor import Monitor
from services.downloads.server import open_monitor
from services.downloads.urls import normalize_url

FakeRemote = Any  # the ``remote`` fixture of conftest.py


REPO = Path(__file__).resolve().parents[2]
SettingsFor = Callable[..., DownloadsSettings]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def files_in(settings: DownloadsSettings) -> list[str]:
    folder = settings.media_root / settings.download_dir
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


async def one_pass(monitor: Monitor) -> list[hs.DownloadRow]:
    await monitor.run_pass()
    await monitor.idle()
    return [view.row for view in await monitor.list()]


async def test_a_link_is_downloaded_once_through_the_direct_host_and_a_redirect(
    remote: FakeRemote, settings_for: SettingsFor
) -> None:
    body = remote.make_zip()
    # www.dropbox.com answers its HTML preview page: the legacy rewrite goes to the direct host,
    # which redirects to the file.
    remote.add("/s/ok/Projet Camille.zip", "html")
    remote.add("/direct/s/ok/Projet Camille.zip", "redirect", location="/files/x1")
    remote.add("/files/x1", body=body, filename="Projet Camille.zip")
    remote.rows = [remote.dropbox_row("/s/ok/Projet%20Camille.zip", "Projet Camille.zip")]
    settings = settings_for(auto_submit=False)
    completed = sample("videoanalysis_downloads_total", outcome="completed")
    received = sample("videoanalysis_downloads_bytes_total")
    async with open_monitor(settings) as monitor:
        (row,) = await one_pass(monitor)
        assert (row.state, row.outcome, row.error) == (hs.AWAITING_CONFIRMATION, "completed", "")
        assert row.path == "downloads/Projet Camille.zip" and row.size_bytes == len(body)
        assert row.key == "https://www.dropbox.com/s/ok/Projet%20Camille.zip?dl=1"
        assert (settings.media_root / row.path).read_bytes() == body
        history = await monitor._store.history()
        assert list(history) == [row.key] and history[row.key] == row.webhook_timestamp
        # A second pass (and a second listing of the same link) downloads nothing.
        remote.rows.append(remote.dropbox_row("/s/ok/Projet%20Camille.zip", "Projet Camille.zip"))
        assert (await monitor.run_pass()).started == 0
    methods = [(m, p) for m, p, _ in remote.requests if p != "/webhook"]
    assert methods == [
        ("HEAD", "/s/ok/Projet Camille.zip"),
        ("GET", "/direct/s/ok/Projet Camille.zip"),
        ("GET", "/files/x1"),
    ]
    assert sample("videoanalysis_downloads_total", outcome="completed") == completed + 1
    assert sample("videoanalysis_downloads_bytes_total") == received + len(body)
    assert files_in(settings) == ["Projet Camille.zip"]


@pytest.mark.parametrize(
    ("route", "outcome", "attempts"),
    [
        pytest.param({"kind": "html"}, "wrong_content_type", 1, id="html-error-page"),
        pytest.param({"kind": "truncated"}, "truncated", 3, id="truncated"),
        pytest.param({"kind": "stall"}, "timeout", 3, id="slow-server", marks=pytest.mark.slow),
        pytest.param(
            {"kind": "status", "status": 429, "headers": {"Retry-After": "0"}},
            "rate_limited",
            3,
            id="429",
        ),
        pytest.param({"kind": "status", "status": 503}, "server_error", 3, id="503"),
        pytest.param({"kind": "status", "status": 403}, "http_error", 1, id="403"),
        pytest.param({"body": b"<html>not a zip</html>"}, "not_an_archive", 1, id="not-a-zip"),
        pytest.param({"size": 300_000}, "too_large", 1, id="too-large"),
    ],
)
async def test_a_bad_answer_fails_with_its_outcome_and_leaves_no_file(
    remote: FakeRemote,
    settings_for: SettingsFor,
    route: dict[str, Any],
    outcome: str,
    attempts: int,
) -> None:
    fields = {"body": remote.make_zip(route.get("size", 100_000)), **route}
    fields.pop("size", None)
    remote.add("/s/bad/f.zip", **fields)
    remote.add("/direct/s/bad/f.zip", **fields)
    remote.rows = [remote.dropbox_row("/s/bad/f.zip", "f.zip")]
    settings = settings_for(max_download_bytes=200_000)
    before = sample("videoanalysis_downloads_total", outcome=outcome)
    async with open_monitor(settings) as monitor:
        (row,) = await one_pass(monitor)
    assert (row.state, row.outcome, row.attempts) == (hs.FAILED, outcome, attempts), row.error
    assert row.error and row.path == ""
    assert files_in(settings) == []
    assert leftover(settings.media_root) == []
    assert sample("videoanalysis_downloads_total", outcome=outcome) == before + 1


async def test_a_folder_link_that_answers_a_small_page_is_refused(
    remote: FakeRemote, settings_for: SettingsFor
) -> None:
    # Folder links are never rewritten to the direct host; a small answer is an error page.
    remote.add("/scl/fo/abc/xyz", body=remote.make_zip(1000), content_type="application/zip")
    remote.rows = [
        {
            "source_url": "https://www.dropbox.com/scl/fo/abc/xyz?rlkey=KEY&amp;dl=0",
            "original_filename": "Dossier",
            "created_at": "2026-12-01T09:30:00Z",
        }
    ]
    settings = settings_for()
    async with open_monitor(settings) as monitor:
        (row,) = await one_pass(monitor)
    assert (row.state, row.outcome) == (hs.FAILED, "wrong_content_type")
    assert row.error.startswith("Invalid ZIP response (Content-Type='application/zip', Size=")
    assert row.key == "https://www.dropbox.com/scl/fo/abc/xyz?dl=1&rlkey=KEY"
    assert files_in(settings) == [] and leftover(settings.media_root) == []


@pytest.mark.slow  # waits out the Retry-After
async def test_a_429_is_retried_after_its_retry_after(
    remote: FakeRemote, settings_for: SettingsFor
) -> None:
    body = remote.make_zip()
    remote.add("/s/busy/f.zip", body=body, failures=1, status=429, headers={"Retry-After": "1"})
    remote.rows = [remote.dropbox_row("/s/busy/f.zip", "f.zip")]
    settings = settings_for(retry_backoff_s=0.01)
    async with open_monitor(settings) as monitor:
        (row,) = await one_pass(monitor)
    assert (row.state, row.outcome, row.attempts) == (hs.AWAITING_CONFIRMATION, "completed", 2)
    gets = [t for m, p, t in remote.requests if (m, p) == ("GET", "/s/busy/f.zip")]
    assert len(gets) == 2 and gets[1] - gets[0] >= 0.9  # Retry-After, not the 0.01 s backoff
    assert (settings.media_root / row.path).read_bytes() == body


async def test_a_transient_failure_is_requeued_by_later_passes_up_to_max_passes(
    remote: FakeRemote, settings_for: SettingsFor
) -> None:
    for path in ("/s/flaky/f.zip", "/direct/s/flaky/f.zip"):  # HEAD fails: direct host too
        remote.add(path, "status", status=503)
    remote.rows = [remote.dropbox_row("/s/flaky/f.zip", "f.zip")]
    settings = settings_for(download_attempts=1, max_passes=2)
    async with open_monitor(settings) as monitor:
        (first,) = await one_pass(monitor)
        (second,) = await one_pass(monitor)
        (third,) = await one_pass(monitor)
        assert [r.passes for r in (first, second, third)] == [1, 2, 2]
        assert [r.attempts for r in (first, second, third)] == [1, 2, 2]
        assert third.state == hs.FAILED and third.outcome == "server_error"
        # RetryDownload queues it again; now the server is fine.
        remote.add("/s/flaky/f.zip", body=remote.make_zip())
        await monitor.retry(third.download_id)
        await monitor.idle()
        done = (await monitor.get(third.download_id)).row
    assert (done.state, done.attempts, done.download_id) == (
        hs.AWAITING_CONFIRMATION,
        3,
        first.download_id,
    )


async def test_the_fallback_url_is_tried_when_the_main_one_fails(
    remote: FakeRemote, settings_for: SettingsFor
) -> None:
    body = remote.make_zip()
    remote.add("/s/main/f.zip", "status", status=404)
    remote.add("/s/fb/f.zip", body=body)
    remote.rows = [
        {
            "r2_url": "https://www.dropbox.com/s/main/f.zip",
            "source_url": "https://www.dropbox.com/s/fb/f.zip",
            "original_filename": "f.zip",
            "created_at": "2026-12-01 08:00:00",
        }
    ]
    settings = settings_for()
    async with open_monitor(settings) as monitor:
        (row,) = await one_pass(monitor)
        assert (row.state, row.attempts) == (hs.AWAITING_CONFIRMATION, 2)
        assert await monitor._store.history() == {
            "https://www.dropbox.com/s/main/f.zip?dl=1": "2026-12-01 08:00:00",
            "https://www.dropbox.com/s/fb/f.zip?dl=1": "2026-12-01 08:00:00",
        }


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        pytest.param(
            b'[{"source_url": "https://www.dropbox.com/s/a', 200, "bad_json", id="bad-json"
        ),
        pytest.param(b"", 500, "http_error", id="http-500"),
    ],
)
async def test_a_broken_webhook_skips_the_pass_and_records_why(
    remote: FakeRemote, settings_for: SettingsFor, body: bytes, status: int, reason: str
) -> None:
    remote.webhook_body, remote.webhook_status = body, status
    before = sample("videoanalysis_downloads_webhook_poll_errors_total", reason=reason)
    async with open_monitor(settings_for()) as monitor:
        result = await monitor.run_pass()
        assert result.started == 0 and result.error
        assert not monitor.webhook_status.available and monitor.webhook_status.error
        (poll,) = await monitor._store.polls()
        assert (poll.ok, poll.error) == (False, result.error)
        assert await monitor.list() == []
    assert [p for _, p, _ in remote.requests] == ["/webhook"] * 3  # 3 attempts
    after = sample("videoanalysis_downloads_webhook_poll_errors_total", reason=reason)
    assert after == before + 3


async def test_rows_that_are_not_eligible_are_ignored(
    remote: FakeRemote, settings_for: SettingsFor
) -> None:
    remote.rows = [
        {"url": "https://www.dropbox.com/s/legacy/a.zip"},  # legacy schema
        remote.dropbox_row("/s/rar/a.rar", "a.rar"),  # not a zip
        {"source_url": "ftp://www.dropbox.com/s/x/a.zip", "original_filename": "a.zip"},
        {"source_url": "https://example.com/a.zip", "original_filename": "a.zip"},
        {"url": ""},
    ]
    async with open_monitor(settings_for()) as monitor:
        result = await monitor.run_pass()
        assert (result.records, result.started) == (4, 0)
        assert await monitor.list() == [] and await monitor.history_count() == 0


async def test_dry_run_records_what_would_be_downloaded(
    remote: FakeRemote, settings_for: SettingsFor
) -> None:
    remote.add("/s/dry/a.zip", body=remote.make_zip())
    remote.rows = [
        remote.dropbox_row("/s/dry/a.zip", "a.zip"),
        remote.dropbox_row("/s/dry/a.zip", "a.zip"),
        {"url": "https://www.dropbox.com/s/legacy/b.zip"},
    ]
    settings = settings_for(dry_run=True)
    async with open_monitor(settings) as monitor:
        (row,) = await one_pass(monitor)
        assert (row.state, row.outcome, row.path) == (hs.DRY_RUN, "dry_run", "")
        assert await monitor._store.history() == {
            "https://www.dropbox.com/s/dry/a.zip?dl=1": row.webhook_timestamp
        }
        assert (await monitor.run_pass()).started == 0
    assert [p for _, p, _ in remote.requests] == ["/webhook", "/webhook"]
    assert files_in(settings) == []


async def test_a_legacy_history_keeps_deduplicating(
    remote: FakeRemote, settings_for: SettingsFor
) -> None:
    settings = settings_for()
    with sqlite3.connect(settings.db_path) as db:  # a legacy download_history.sqlite3
        db.execute(
            "CREATE TABLE download_history"
            " (url TEXT PRIMARY KEY, timestamp TEXT NOT NULL DEFAULT '')"
        )
        db.execute(
            "INSERT INTO download_history VALUES (?, ?)",
            (
                "https://www.dropbox.com/scl/fo/abc/xyz?%3Bdl=0&dl=1&rlkey=KEY",
                "2024-01-01 00:00:00",
            ),
        )
    remote.rows = [
        {
            "source_url": "https://www.dropbox.com/scl/fo/abc/xyz?rlkey=KEY&amp%3Bdl=0",
            "original_filename": "x.zip",
        }
    ]
    async with open_monitor(settings) as monitor:
        result = await monitor.run_pass()
    assert (result.records, result.started) == (1, 0)
    assert [p for _, p, _ in remote.requests] == ["/webhook"]


@pytest.mark.slow
async def test_a_monitor_killed_mid_download_restarts_it_cleanly(
    remote: FakeRemote, settings_for: SettingsFor, tmp_path: Path
) -> None:
    body = remote.make_zip(2_000_000)
    stalled = remote.add("/s/big/Projet Camille.zip", "stall", body=body)
    remote.rows = [remote.dropbox_row("/s/big/Projet%20Camille.zip", "Projet Camille.zip")]
    settings = settings_for(read_timeout_s=600)
    env = {
        **os.environ,
        "DOWNLOADS_WEBHOOK_URL": settings.webhook_url,
        "DOWNLOADS_DROPBOX_BASE_URL": settings.dropbox_base_url,
        "DOWNLOADS_DROPBOX_DIRECT_BASE_URL": settings.dropbox_direct_base_url,
        "DOWNLOADS_DB_PATH": str(settings.db_path),
        "DOWNLOADS_READ_TIMEOUT_S": "600",
        "DOWNLOADS_AUTO_SUBMIT": "false",
    }
    log = (tmp_path / "monitor.log").open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220 (the loop must keep serving the fake remote)
        [
            sys.executable,
            "-m",
            "services.downloads",
            "--port",
            "0",
            "--metrics-port",
            "-1",
            "--media-root",
            str(settings.media_root),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    folder = settings.media_root / settings.download_dir
    try:
        deadline = time.monotonic() + 60
        while not (folder.is_dir() and leftover(folder)):
            assert process.poll() is None, (tmp_path / "monitor.log").read_text()
            assert time.monotonic() < deadline, "the download never started"
            await asyncio.sleep(0.1)
        partial = leftover(folder)
        assert partial and partial[0].stat().st_size <= len(body)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        log.close()
        stalled.release.set()
    with sqlite3.connect(settings.db_path) as db:
        assert db.execute("SELECT state FROM downloads").fetchall() == [(hs.DOWNLOADING,)]
    assert leftover(folder) and files_in(settings) == [partial[0].name]
    # Next start: the partial file goes and the download starts again (and completes).
    remote.add("/s/big/Projet Camille.zip", body=body)
    async with open_monitor(settings) as monitor:
        assert leftover(folder) == []
        await monitor.idle()
        (view,) = await monitor.list()
        row = view.row
        assert (await monitor.run_pass()).started == 0  # not downloaded again
    assert (row.state, row.outcome) == (hs.AWAITING_CONFIRMATION, "completed")
    assert row.key == normalize_url("https://www.dropbox.com/s/big/Projet%20Camille.zip")
    assert files_in(settings) == ["Projet Camille.zip"]
    assert (folder / "Projet Camille.zip").read_bytes() == body


async def test_a_fresh_webhook_answer_is_reused_and_names_never_collide(
    remote: FakeRemote, settings_for: SettingsFor
) -> None:
    first, second = remote.make_zip(), remote.make_zip()
    remote.add("/s/one/f.zip", body=first)
    remote.add("/s/two/f.zip", body=second)
    remote.rows = [remote.dropbox_row("/s/one/f.zip", "f.zip")]
    settings = settings_for(webhook_cache_ttl_s=60)
    async with open_monitor(settings) as monitor:
        await one_pass(monitor)
        remote.rows.append(remote.dropbox_row("/s/two/f.zip", "f.zip"))
        assert (await monitor.run_pass()).started == 0  # the cached answer: no request
        assert [p for _, p, _ in remote.requests].count("/webhook") == 1
        monitor._webhook._fetched_at -= 61  # type: ignore[union-attr]
        rows = await one_pass(monitor)
    assert sorted(r.path for r in rows) == ["downloads/f.zip", "downloads/f_2.zip"]
    folder = settings.media_root / settings.download_dir
    assert {(folder / "f.zip").read_bytes(), (folder / "f_2.zip").read_bytes()} == {first, second}


@pytest.mark.slow
async def test_the_process_serves_health_and_metrics_and_drains_on_sigterm(
    settings_for: SettingsFor, tmp_path: Path
) -> None:
    settings = settings_for()
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "DOWNLOADS_DB_PATH": str(settings.db_path), "DOWNLOADS_WEBHOOK_URL": ""}
    log = (tmp_path / "monitor.log").open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220
        [
            sys.executable,
            "-m",
            "services.downloads",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--media-root",
            str(settings.media_root),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="videoanalysis.v1.DownloadsService")
            reply = await health.Check(request, wait_for_ready=True, timeout=60)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        assert b"videoanalysis_downloads_active" in text
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.slow  # a server that trickles for seconds
async def test_a_slow_but_steady_server_completes_with_live_progress(
    remote: FakeRemote, settings_for: SettingsFor
) -> None:
    body = remote.make_zip(1_000_000)  # 16 pieces, 0.1 s apart: slower than the 0.25 s throttle
    remote.add("/s/slow/f.zip", "trickle", body=body)
    remote.rows = [remote.dropbox_row("/s/slow/f.zip", "f.zip")]
    async with open_monitor(settings_for(read_timeout_s=1)) as monitor:
        subscription = monitor.subscribe()
        (row,) = await one_pass(monitor)
        events = []
        while not subscription.queue.empty():
            events.append(subscription.queue.get_nowait())
    assert (row.state, row.size_bytes) == (hs.AWAITING_CONFIRMATION, len(body))
    progress = [
        (e.view.done_bytes, e.view.total_bytes)
        for e in events
        if e.view.row.state == hs.DOWNLOADING
    ]
    assert progress[0] == (0, 0) and progress[-1] == (len(body), len(body))
    middle = [done for done, total in progress if 0 < done < total]
    assert len(middle) >= 2 and middle == sorted(middle)
    assert [e.sequence for e in events] == sorted(e.sequence for e in events)
