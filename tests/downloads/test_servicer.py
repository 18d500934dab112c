"""The DownloadsService over real gRPC: live events, confirmation, retry and status codes, with a
small in-process stand-in for the orchestrator's SubmitJob (the real one is in test_e2e.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.videoanalysis.v1 import (
    downloads_pb2,
    downloads_pb2_grpc,
)
from services.common.server import RunningServer
from services.downloads import history as hs
from services.downloads.config import DownloadsSettings
from services.downloads.monitor import DownloadView, WrongState
from services.downloads.server import SERVICE_NAME, open_monitor, running_monitor
from services.downloads.servicer import DownloadsServicer

SettingsFor = Callable[..., DownloadsSettings]
State = downloads_pb2.DownloadState


async def wait_for(
    stub: downloads_pb2_grpc.DownloadsServiceStub, download_id: str, state: int
) -> downloads_pb2.Download:
    for _ in range(200):
        download = await stub.GetDownload(downloads_pb2.GetDownloadRequest(download_id=download_id))
        if download.state == state:
            return download
        await asyncio.sleep(0.05)
    raise AssertionError(f"{download_id} never reached {State.Name(state)}: {download}")


async def test_confirm_mode_streams_events_and_submits_on_confirmation(
    remote: Any, settings_for: SettingsFor, orchestrator: tuple[Any, RunningServer]
) -> None:
    fake, fake_server = orchestrator
    body = remote.make_zip(1_500_000)
    remote.add("/s/c/Projet Camille.zip", body=body, filename="Projet Camille.zip")
    settings = settings_for(auto_submit=False, orchestrator_addr=fake_server.address)
    async with (
        running_monitor(settings) as (_monitor, running),
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        ready = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert ready.status == health_pb2.HealthCheckResponse.SERVING
        stub = downloads_pb2_grpc.DownloadsServiceStub(channel)
        events: list[downloads_pb2.DownloadEvent] = []
        synced = asyncio.Event()

        async def watch() -> None:
            request = downloads_pb2.WatchDownloadsRequest(snapshot=True)
            async for event in stub.WatchDownloads(request):
                events.append(event)
                if event.HasField("synced"):
                    synced.set()

        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(synced.wait(), 10)
        remote.rows = [remote.dropbox_row("/s/c/Projet%20Camille.zip", "Projet Camille.zip")]
        polled = await stub.PollNow(downloads_pb2.PollNowRequest())
        assert (polled.records, polled.started, polled.error) == (1, 1, "")
        (listed,) = (await stub.ListDownloads(downloads_pb2.ListDownloadsRequest())).downloads
        waiting = await wait_for(
            stub, listed.download_id, State.DOWNLOAD_STATE_AWAITING_CONFIRMATION
        )
        assert waiting.path == "downloads/Projet Camille.zip"
        assert (waiting.size_bytes, waiting.progress.done, waiting.progress.total) == (
            len(body),
            len(body),
            len(body),
        )
        assert fake.requests == []

        confirmed = await stub.ConfirmDownload(
            downloads_pb2.ConfirmDownloadRequest(download_id=waiting.download_id)
        )
        assert (confirmed.state, confirmed.job_id) == (State.DOWNLOAD_STATE_SUBMITTED, "job-1")
        (submitted,) = fake.requests
        assert [i.path for i in submitted.inputs] == ["downloads/Projet Camille.zip"]
        assert waiting.download_id in submitted.label

        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stub.ConfirmDownload(
                downloads_pb2.ConfirmDownloadRequest(download_id=waiting.download_id)
            )
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        for call, code in [
            (
                stub.GetDownload(downloads_pb2.GetDownloadRequest(download_id="nope")),
                "NOT_FOUND",
            ),
            (stub.GetDownload(downloads_pb2.GetDownloadRequest()), "INVALID_ARGUMENT"),
            (
                stub.RetryDownload(
                    downloads_pb2.RetryDownloadRequest(download_id=waiting.download_id)
                ),
                "FAILED_PRECONDITION",
            ),
            (
                stub.ListDownloads(downloads_pb2.ListDownloadsRequest(states=[42])),
                "INVALID_ARGUMENT",
            ),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code().name == code
        only = await stub.ListDownloads(
            downloads_pb2.ListDownloadsRequest(states=[State.DOWNLOAD_STATE_SUBMITTED])
        )
        assert [d.download_id for d in only.downloads] == [waiting.download_id]
        status = await stub.GetMonitorStatus(downloads_pb2.GetMonitorStatusRequest())
        assert status.webhook_available and status.records == 1
        assert (status.history_count, status.auto_submit, status.dry_run) == (1, False, False)
        await asyncio.sleep(0.1)
        watcher.cancel()

    assert events[0].HasField("synced") and events[0].synced == 0
    states = [e.download.state for e in events if e.HasField("download")]
    assert states[0] == State.DOWNLOAD_STATE_QUEUED
    assert states[-1] == State.DOWNLOAD_STATE_SUBMITTED
    order = [State.Name(s) for s in dict.fromkeys(states)]
    assert order == [
        "DOWNLOAD_STATE_QUEUED",
        "DOWNLOAD_STATE_DOWNLOADING",
        "DOWNLOAD_STATE_AWAITING_CONFIRMATION",
        "DOWNLOAD_STATE_SUBMITTED",
    ]
    progress = [
        e.download.progress.done
        for e in events
        if e.HasField("download") and e.download.state == State.DOWNLOAD_STATE_DOWNLOADING
    ]
    assert progress[0] == 0 and progress[-1] == len(body)
    sequences = [e.sequence for e in events[1:]]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


async def test_a_refused_submission_can_be_retried(
    remote: Any, settings_for: SettingsFor, orchestrator: tuple[Any, RunningServer]
) -> None:
    fake, fake_server = orchestrator
    fake.refuse = True
    remote.add("/s/r/f.zip", body=remote.make_zip())
    remote.rows = [remote.dropbox_row("/s/r/f.zip", "f.zip")]
    settings = settings_for(orchestrator_addr=fake_server.address)
    async with (
        running_monitor(settings) as (monitor, running),
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = downloads_pb2_grpc.DownloadsServiceStub(channel)
        await stub.PollNow(downloads_pb2.PollNowRequest())
        await monitor.idle()
        (failed,) = (await stub.ListDownloads(downloads_pb2.ListDownloadsRequest())).downloads
        assert (failed.state, failed.outcome) == (State.DOWNLOAD_STATE_FAILED, "submit_failed")
        assert "refused for the test" in failed.error and failed.path
        fake.refuse = False
        retried = await stub.RetryDownload(
            downloads_pb2.RetryDownloadRequest(download_id=failed.download_id)
        )
        assert (retried.state, retried.job_id) == (State.DOWNLOAD_STATE_SUBMITTED, "job-2")
    # The archive was not downloaded twice.
    assert [p for m, p, _ in remote.requests if m == "GET" and p != "/webhook"] == ["/s/r/f.zip"]


async def test_a_download_left_unsubmitted_is_submitted_at_the_next_start(
    remote: Any, settings_for: SettingsFor, orchestrator: tuple[Any, RunningServer]
) -> None:
    """Downloaded, then the process stopped before SubmitJob (or it ran in confirm mode): an
    auto-submitting monitor submits it when it starts."""
    fake, fake_server = orchestrator
    remote.add("/s/later/f.zip", body=remote.make_zip())
    remote.rows = [remote.dropbox_row("/s/later/f.zip", "f.zip")]
    async with open_monitor(settings_for(auto_submit=False)) as monitor:
        await monitor.run_pass()
        await monitor.idle()
        (waiting,) = await monitor.list()
        assert waiting.row.state == hs.AWAITING_CONFIRMATION
    settings = settings_for(orchestrator_addr=fake_server.address)
    async with open_monitor(settings) as monitor:
        await monitor.idle()
        (view,) = await monitor.list()
    assert (view.row.state, view.row.job_id) == (hs.SUBMITTED, "job-1")
    assert [i.path for i in fake.requests[0].inputs] == [waiting.row.path]
    # Its own key: were this a second submission after a crash, the orchestrator would return
    # the first one's job (tests/orchestrator/fast: test_a_submit_key_makes_...).
    assert fake.requests[0].submit_key == f"download:{waiting.row.download_id}"


async def test_two_confirmations_at_once_submit_one_job(
    remote: Any, settings_for: SettingsFor, orchestrator: tuple[Any, RunningServer]
) -> None:
    fake, fake_server = orchestrator
    fake.delay_s = 0.3
    remote.add("/s/twice/f.zip", body=remote.make_zip())
    remote.rows = [remote.dropbox_row("/s/twice/f.zip", "f.zip")]
    settings = settings_for(auto_submit=False, orchestrator_addr=fake_server.address)
    async with open_monitor(settings) as monitor:
        await monitor.run_pass()
        await monitor.idle()
        (view,) = await monitor.list()
        first, second = await asyncio.gather(
            monitor.confirm(view.row.download_id),
            monitor.confirm(view.row.download_id),
            return_exceptions=True,
        )
    assert isinstance(first, DownloadView) and first.row.state == hs.SUBMITTED
    assert isinstance(second, WrongState)
    assert len(fake.requests) == 1


async def test_a_watcher_that_falls_behind_gets_a_resync_and_fresh_snapshots(
    remote: Any, settings_for: SettingsFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.downloads.monitor._SUBSCRIBER_BACKLOG", 2)
    remote.add("/s/lag/f.zip", body=remote.make_zip())
    remote.rows = [remote.dropbox_row("/s/lag/f.zip", "f.zip")]
    async with open_monitor(settings_for(dry_run=False)) as monitor:
        servicer = DownloadsServicer(monitor)
        stream = servicer.WatchDownloads(
            downloads_pb2.WatchDownloadsRequest(snapshot=True),
            None,  # type: ignore[arg-type]
        )
        first = await anext(stream)
        assert first.HasField("synced") and first.synced == 0
        await monitor.run_pass()  # queued, downloading, progress, done: more than 2 events
        await monitor.idle()
        resync = await anext(stream)
        assert resync.HasField("resync")
        again = await anext(stream)
        assert again.download.state == State.DOWNLOAD_STATE_AWAITING_CONFIRMATION
        synced = await anext(stream)
        assert synced.HasField("synced") and synced.synced == 1
        await stream.aclose()
