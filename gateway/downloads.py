"""The download monitor's panel: its downloads and status, and the two actions a user takes on
a download (confirm one awaiting confirmation, retry a failed one), over gRPC to
``services.downloads``.

Download URLs are not shown: share links often are their own credential. The file name,
provider, state, outcome and the job a download became are.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
from aiohttp import web

from gateway.convert import time_json
from gateway.errors import ApiError, from_grpc
from gateway.keys import DOWNLOADS, SETTINGS
from protos.videoanalysis.v1 import downloads_pb2, downloads_pb2_grpc
from services.common.channels import open_channel
from services.common.security import SecurityConfig

PREFIX = "/api/v1/downloads"
_STATE_PREFIX = "DOWNLOAD_STATE_"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Short state names (``awaiting_confirmation``) as the dashboard shows them.
STATES = [
    value.name.removeprefix(_STATE_PREFIX).lower()
    for value in downloads_pb2.DownloadState.DESCRIPTOR.values
    if value.number != downloads_pb2.DOWNLOAD_STATE_UNSPECIFIED
]


def download_json(download: downloads_pb2.Download) -> dict[str, Any]:
    state = downloads_pb2.DownloadState.Name(download.state)
    return {
        "download_id": download.download_id,
        "filename": download.original_filename or None,
        "provider": download.provider or None,
        "url_type": download.url_type or None,
        "state": state.removeprefix(_STATE_PREFIX).lower(),
        "progress": {"done": download.progress.done, "total": download.progress.total},
        "outcome": download.outcome or None,
        "error": download.error or None,
        "size_bytes": download.size_bytes,
        "attempts": download.attempts,
        "job_id": download.job_id or None,
        "webhook_timestamp": download.webhook_timestamp or None,
        "created_at": time_json(download.created_at),
        "updated_at": time_json(download.updated_at),
    }


def status_json(status: downloads_pb2.MonitorStatus) -> dict[str, Any]:
    return {
        "webhook_available": status.webhook_available,
        "webhook_error": status.webhook_error or None,
        "last_fetch_ts": status.last_fetch_ts or None,
        "last_pass_at": time_json(status.last_pass_at),
        "records": status.records,
        "history_count": status.history_count,
        "active_downloads": status.active_downloads,
        "dry_run": status.dry_run,
        "auto_submit": status.auto_submit,
        "poll_interval_s": status.poll_interval_s,
    }


def _stub(request: web.Request) -> downloads_pb2_grpc.DownloadsServiceStub:
    stub = request.app.get(DOWNLOADS)
    if stub is None:
        raise ApiError(503, "the download monitor is not configured (GATEWAY_DOWNLOADS_ADDR)")
    return stub


def _download_id(request: web.Request) -> str:
    download_id = request.match_info["download_id"]
    if not _ID.match(download_id):
        raise ApiError(400, "malformed download id")
    return download_id


async def _call(request: web.Request, method: str, message: Any) -> Any:
    try:
        rpc = getattr(_stub(request), method)
        return await rpc(message, timeout=request.app[SETTINGS].rpc_timeout_s)
    except grpc.aio.AioRpcError as exc:
        raise from_grpc(exc, peer="download monitor") from None


async def list_downloads(request: web.Request) -> web.Response:
    text = request.query.get("limit") or "200"
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise ApiError(400, "limit must be an integer from 1 to 1000")
    listed = await _call(
        request, "ListDownloads", downloads_pb2.ListDownloadsRequest(limit=int(text))
    )
    status = await _call(request, "GetMonitorStatus", downloads_pb2.GetMonitorStatusRequest())
    return web.json_response(
        {
            "monitor": status_json(status),
            "downloads": [download_json(d) for d in listed.downloads],
        }
    )


async def confirm_download(request: web.Request) -> web.Response:
    message = downloads_pb2.ConfirmDownloadRequest(download_id=_download_id(request))
    return web.json_response(download_json(await _call(request, "ConfirmDownload", message)))


async def retry_download(request: web.Request) -> web.Response:
    message = downloads_pb2.RetryDownloadRequest(download_id=_download_id(request))
    return web.json_response(download_json(await _call(request, "RetryDownload", message)))


async def poll_now(request: web.Request) -> web.Response:
    done = await _call(request, "PollNow", downloads_pb2.PollNowRequest())
    return web.json_response(
        {"records": done.records, "started": done.started, "error": done.error or None}
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get(PREFIX, list_downloads)
    app.router.add_post(PREFIX + "/poll", poll_now)
    app.router.add_post(PREFIX + "/{download_id}/confirm", confirm_download)
    app.router.add_post(PREFIX + "/{download_id}/retry", retry_download)


async def downloads_ctx(app: web.Application) -> AsyncIterator[None]:
    """The channel to the download monitor, when one is configured."""
    settings = app[SETTINGS]
    if not settings.downloads_addr:
        yield
        return
    channel = open_channel(settings.downloads_addr, security=SecurityConfig.of(settings))
    app[DOWNLOADS] = downloads_pb2_grpc.DownloadsServiceStub(channel)
    try:
        yield
    finally:
        await channel.close(None)
