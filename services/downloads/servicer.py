"""gRPC adapter of the download monitor: protos in, monitor calls, protos out."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from protos.videoanalysis.v1 import downloads_pb2, downloads_pb2_grpc
from services.common.errors import InvalidArgument
from services.common.rpc import mapped_errors, progress
from services.downloads import history as hs
from services.downloads.monitor import DownloadNotFound, DownloadView, Monitor, WrongState

_STATES: dict[str, int] = {
    hs.QUEUED: downloads_pb2.DOWNLOAD_STATE_QUEUED,
    hs.DOWNLOADING: downloads_pb2.DOWNLOAD_STATE_DOWNLOADING,
    hs.AWAITING_CONFIRMATION: downloads_pb2.DOWNLOAD_STATE_AWAITING_CONFIRMATION,
    hs.SUBMITTED: downloads_pb2.DOWNLOAD_STATE_SUBMITTED,
    hs.FAILED: downloads_pb2.DOWNLOAD_STATE_FAILED,
    hs.DRY_RUN: downloads_pb2.DOWNLOAD_STATE_DRY_RUN,
}
_NAMES: dict[int, str] = {value: key for key, value in _STATES.items()}


def _time(seconds: float) -> Timestamp:
    stamp = Timestamp()
    if seconds:
        stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def download_proto(view: DownloadView) -> downloads_pb2.Download:
    row = view.row
    return downloads_pb2.Download(
        download_id=row.download_id,
        url=row.url,
        key=row.key,
        fallback_url=row.fallback_url,
        original_filename=row.original_filename,
        provider=row.provider,
        url_type=row.url_type,
        webhook_timestamp=row.webhook_timestamp,
        state=_STATES[row.state],  # type: ignore[arg-type]
        progress=progress(view.done_bytes, view.total_bytes, "bytes", "download"),
        outcome=row.outcome,
        error=row.error,
        path=row.path,
        size_bytes=row.size_bytes,
        attempts=row.attempts,
        job_id=row.job_id,
        created_at=_time(row.created_at),
        updated_at=_time(row.updated_at),
    )


@contextlib.asynccontextmanager
async def _monitor_errors(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    async with mapped_errors(context):
        try:
            yield
        except DownloadNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except WrongState as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))


def _required_id(download_id: str) -> str:
    if not download_id.strip():
        raise InvalidArgument("download_id is required")
    return download_id


class DownloadsServicer(downloads_pb2_grpc.DownloadsServiceServicer):
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def _states(self, states: list[int]) -> list[str]:
        unknown = [s for s in states if s not in _NAMES]
        if unknown:
            raise InvalidArgument(f"unknown download states: {unknown}")
        return [_NAMES[s] for s in states]

    async def ListDownloads(
        self, request: downloads_pb2.ListDownloadsRequest, context: grpc.aio.ServicerContext
    ) -> downloads_pb2.ListDownloadsResponse:
        async with _monitor_errors(context):
            if request.limit < 0:
                raise InvalidArgument("limit must not be negative")
            views = await self._monitor.list(
                self._states(list(request.states)), request.limit or 100
            )
            return downloads_pb2.ListDownloadsResponse(downloads=[download_proto(v) for v in views])

    async def GetDownload(
        self, request: downloads_pb2.GetDownloadRequest, context: grpc.aio.ServicerContext
    ) -> downloads_pb2.Download:
        async with _monitor_errors(context):
            return download_proto(await self._monitor.get(_required_id(request.download_id)))

    async def ConfirmDownload(
        self, request: downloads_pb2.ConfirmDownloadRequest, context: grpc.aio.ServicerContext
    ) -> downloads_pb2.Download:
        async with _monitor_errors(context):
            return download_proto(await self._monitor.confirm(_required_id(request.download_id)))

    async def RetryDownload(
        self, request: downloads_pb2.RetryDownloadRequest, context: grpc.aio.ServicerContext
    ) -> downloads_pb2.Download:
        async with _monitor_errors(context):
            return download_proto(await self._monitor.retry(_required_id(request.download_id)))

    async def GetMonitorStatus(
        self, request: downloads_pb2.GetMonitorStatusRequest, context: grpc.aio.ServicerContext
    ) -> downloads_pb2.MonitorStatus:
        async with _monitor_errors(context):
            monitor = self._monitor
            webhook = monitor.webhook_status
            return downloads_pb2.MonitorStatus(
                webhook_available=webhook.available,
                last_fetch_ts=webhook.last_fetch_ts,
                webhook_error=webhook.error,
                records=webhook.records,
                history_count=await monitor.history_count(),
                dry_run=monitor.settings.dry_run,
                auto_submit=monitor.settings.auto_submit,
                poll_interval_s=monitor.settings.poll_interval_s,
                active_downloads=monitor.active,
                last_pass_at=_time(monitor.last_pass_at),
            )

    async def PollNow(
        self, request: downloads_pb2.PollNowRequest, context: grpc.aio.ServicerContext
    ) -> downloads_pb2.PollNowResponse:
        async with _monitor_errors(context):
            result = await self._monitor.run_pass()
            return downloads_pb2.PollNowResponse(
                records=result.records, started=result.started, error=result.error
            )

    async def WatchDownloads(
        self, request: downloads_pb2.WatchDownloadsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[downloads_pb2.DownloadEvent]:
        async with _monitor_errors(context):
            if request.snapshot_limit < 0:
                raise InvalidArgument("snapshot_limit must not be negative")
            limit = request.snapshot_limit or 100
            subscription = self._monitor.subscribe()
            try:
                if request.snapshot:
                    async for snapshot in self._snapshot(limit):
                        yield snapshot
                while True:
                    event = await subscription.queue.get()
                    if subscription.lagged:
                        subscription.lagged = False
                        while not subscription.queue.empty():
                            subscription.queue.get_nowait()
                        yield downloads_pb2.DownloadEvent(
                            sequence=event.sequence, time=_time(event.time), resync="fell behind"
                        )
                        async for snapshot in self._snapshot(limit):
                            yield snapshot
                        continue
                    yield downloads_pb2.DownloadEvent(
                        sequence=event.sequence,
                        time=_time(event.time),
                        download=download_proto(event.view),
                    )
            finally:
                self._monitor.unsubscribe(subscription)

    async def _snapshot(self, limit: int) -> AsyncIterator[downloads_pb2.DownloadEvent]:
        views = await self._monitor.list(limit=limit)
        sequence = self._monitor.sequence
        now = _time(time.time())
        for view in reversed(views):  # oldest first, like live events
            yield downloads_pb2.DownloadEvent(
                sequence=sequence, time=now, download=download_proto(view)
            )
        yield downloads_pb2.DownloadEvent(sequence=sequence, time=now, synced=len(views))
