"""A real aiohttp server on loopback standing in for the webhook and for Dropbox.

``www.dropbox.com`` links are fetched from ``<server>/`` and the direct host
(``dl.dropboxusercontent.com``) from ``<server>/direct/`` through the monitor's
``dropbox_base_url`` / ``dropbox_direct_base_url`` settings, so the history keys keep the real
hosts and nothing leaves the machine. Each test sets what the webhook lists and what each path
answers.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from protos.videoanalysis.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from services.common.config import ServiceSettings
from services.common.server import RunningServer, ServiceDefinition, start_server
from services.downloads.config import DownloadsSettings


def make_zip(size: int = 200_000, member: str = "Projet Camille/clip.bin") -> bytes:
    """A real zip whose size is about ``size`` (one stored member of random bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr(member, os.urandom(size))
    return buffer.getvalue()


@dataclass
class Route:
    """What one path answers. ``kind``: ``file`` (the body, honest headers), ``html`` (an error
    page), ``redirect`` (302 to ``location``), ``truncated`` (half the body, then the connection
    closes), ``stall`` (part of the body, then silence until ``release`` is set), ``trickle``
    (64 KiB every 0.1 s), ``status`` (an error status with ``headers``)."""

    kind: str = "file"
    body: bytes = b""
    content_type: str = "application/zip"
    filename: str = ""
    location: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: Answer ``status`` this many times first (a 429 storm), then the file.
    failures: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)


class FakeRemote:
    """The state behind the loopback server: the webhook's answer, the routes, the requests."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.webhook_body: bytes | None = None
        self.webhook_status = 200
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str, float]] = []
        self.server: TestServer | None = None

    make_zip = staticmethod(make_zip)

    def add(self, path: str, kind: str = "file", **fields: Any) -> Route:
        """Makes ``path`` answer as ``Route(kind, **fields)`` describes."""
        self.routes[path] = Route(kind, **fields)
        return self.routes[path]

    @staticmethod
    def dropbox_row(path: str, filename: str = "", **extra: Any) -> dict[str, Any]:
        """A new-schema webhook row for ``https://www.dropbox.com<path>?dl=0``."""
        return {
            "source_url": f"https://www.dropbox.com{path}?dl=0",
            "original_filename": filename,
            "provider": "dropbox",
            "created_at": "2026-12-01T09:30:00Z",
            **extra,
        }

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/webhook", self._webhook)
        app.router.add_route("*", "/{tail:.*}", self._file)
        return app

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(("GET", "/webhook", asyncio.get_running_loop().time()))
        if self.webhook_status != 200:
            return web.Response(status=self.webhook_status, text="down")
        body = self.webhook_body if self.webhook_body is not None else json.dumps(self.rows)
        return web.Response(
            body=body.encode() if isinstance(body, str) else body, content_type="application/json"
        )

    async def _file(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append((request.method, path, asyncio.get_running_loop().time()))
        route = self.routes.get(path)
        if route is None:
            return web.Response(status=404, text="no such file", content_type="text/plain")
        if route.kind == "html":
            return web.Response(
                text="<html><body>Error: this link is not available</body></html>",
                content_type="text/html",
            )
        if route.kind == "redirect":
            raise web.HTTPFound(route.location)
        if route.kind == "status" or (route.failures and request.method == "GET"):
            if route.kind != "status":
                route.failures -= 1
            return web.Response(
                status=route.status,
                headers=route.headers,
                text="slow down",
                content_type="text/plain",
            )
        headers = {"Content-Type": route.content_type, "Content-Length": str(len(route.body))}
        if route.filename:
            headers["Content-Disposition"] = f'attachment; filename="{route.filename}"'
        if request.method == "HEAD":
            return web.Response(headers=headers)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        if route.kind == "truncated":
            await response.write(route.body[: len(route.body) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        if route.kind == "stall":
            await response.write(route.body[: len(route.body) // 3])
            await route.release.wait()
            await response.write(route.body[len(route.body) // 3 :])
            return response
        for start in range(0, len(route.body), 64 * 1024):
            await response.write(route.body[start : start + 64 * 1024])
            if route.kind == "trickle":
                await asyncio.sleep(0.1)
        await response.write_eof()
        return response


@pytest.fixture
async def remote(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> AsyncIterator[FakeRemote]:
    fake = FakeRemote()
    fake.server = await aiohttp_server(fake.app())
    yield fake
    for route in fake.routes.values():
        route.release.set()


@pytest.fixture
def settings_for(remote: FakeRemote, tmp_path: Path) -> Callable[..., DownloadsSettings]:
    """``settings_for(**overrides)``: monitor settings pointing at the loopback server."""

    def make(**overrides: Any) -> DownloadsSettings:
        values: dict[str, Any] = {
            "port": 0,
            "metrics_port": -1,
            "media_root": tmp_path / "media",
            "db_path": tmp_path / "downloads.sqlite3",
            "webhook_url": remote.url("/webhook"),
            "webhook_cache_ttl_s": 0,
            "webhook_retry_delays_s": (0.01, 0.01),
            "dropbox_base_url": remote.url("/").rstrip("/"),
            "dropbox_direct_base_url": remote.url("/direct"),
            "retry_backoff_s": 0.05,
            "read_timeout_s": 0.5,
            "poll_interval_s": 3600,
            "grace_s": 1,
            **overrides,
        }
        (tmp_path / "media").mkdir(exist_ok=True)
        return DownloadsSettings(**values)

    return make


class FakeOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """A small in-process stand-in for the orchestrator's SubmitJob (the real one: test_e2e)."""

    def __init__(self) -> None:
        self.requests: list[orchestrator_pb2.SubmitJobRequest] = []
        self.refuse = False
        self.delay_s = 0.0

    async def SubmitJob(
        self, request: orchestrator_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Job:
        self.requests.append(request)
        await asyncio.sleep(self.delay_s)
        if self.refuse:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused for the test")
        return orchestrator_pb2.Job(job_id=f"job-{len(self.requests)}")


@pytest.fixture
async def orchestrator() -> AsyncIterator[tuple[FakeOrchestrator, RunningServer]]:
    fake = FakeOrchestrator()
    running = await start_server(
        ServiceSettings(port=0, metrics_port=-1),
        [
            ServiceDefinition(
                name="videoanalysis.v1.OrchestratorService",
                register=lambda s: orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(
                    fake, s
                ),
            )
        ],
    )
    yield fake, running
    await running.stop(0)
