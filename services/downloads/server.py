"""Wires the monitor and its servicer into the shared boot path.

The process owns one ``aiohttp.ClientSession`` (webhook and downloads), one SQLite connection and
one channel to the orchestrator, all opened by :func:`running_monitor` and closed after the gRPC
server drained. Readiness turns SERVING once the crash clean-up ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import aiohttp

from protos.videoanalysis.v1 import downloads_pb2, downloads_pb2_grpc
from services.common.media import MediaRoot
from services.common.security import SecurityConfig
from services.common.server import RunningServer, ServiceDefinition, start_server, stop_on_signals
from services.downloads.config import DownloadsSettings
from services.downloads.fetcher import Fetcher
from services.downloads.history import HistoryStore
from services.downloads.jobs import OrchestratorJobs
from services.downloads.monitor import Monitor
from services.downloads.servicer import DownloadsServicer
from services.downloads.webhook import Webhook

log = logging.getLogger(__name__)

SERVICE_NAME = downloads_pb2.DESCRIPTOR.services_by_name["DownloadsService"].full_name


def build_services(monitor: Monitor) -> Sequence[ServiceDefinition]:
    servicer = DownloadsServicer(monitor)
    return [
        ServiceDefinition(
            name=SERVICE_NAME,
            register=lambda server: downloads_pb2_grpc.add_DownloadsServiceServicer_to_server(
                servicer, server
            ),
        )
    ]


@contextlib.asynccontextmanager
async def open_monitor(settings: DownloadsSettings) -> AsyncIterator[Monitor]:
    """A started monitor (crash clean-up done, queued downloads running), closed on exit."""
    store = await HistoryStore.open(settings.database(), settings.history_shared_group)
    jobs = (
        OrchestratorJobs(
            settings.orchestrator_addr,
            settings.orchestrator_timeout_s,
            security=SecurityConfig.of(settings),
        )
        if settings.orchestrator_addr
        else None
    )
    try:
        async with aiohttp.ClientSession() as session:
            webhook = (
                Webhook(
                    session,
                    settings.webhook_url,
                    cache_ttl_s=settings.webhook_cache_ttl_s,
                    timeout_s=settings.webhook_timeout_s,
                    retry_delays_s=settings.webhook_retry_delays_s,
                )
                if settings.webhook_url
                else None
            )
            folder = MediaRoot(settings.media_root).resolve(settings.download_dir, must_exist=False)
            monitor = Monitor(settings, store, Fetcher(session, settings, folder), webhook, jobs)
            try:
                await monitor.start()
                yield monitor
            finally:
                await monitor.close()
    finally:
        if jobs is not None:
            await jobs.close()
        await store.close()


@contextlib.asynccontextmanager
async def running_monitor(
    settings: DownloadsSettings,
) -> AsyncIterator[tuple[Monitor, RunningServer]]:
    """The monitor serving gRPC on ``settings.port`` and polling the webhook every interval."""
    async with open_monitor(settings) as monitor:
        running = await start_server(settings, build_services(monitor))
        stop = asyncio.Event()
        poller = asyncio.create_task(monitor.run_forever(stop), name="download-monitor")
        try:
            await running.mark_ready()
            yield monitor, running
        finally:
            stop.set()
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await running.stop(settings.grace_s)


async def serve(settings: DownloadsSettings) -> None:
    """Serves until SIGTERM or SIGINT."""
    stop = stop_on_signals()
    async with running_monitor(settings):
        await stop.wait()
        log.info("shutting down")
