"""Schemathesis over the served OpenAPI description: no request the description allows (or that
breaks it) makes the gateway answer 5xx, and every error is JSON.

The gateway and the fake orchestrator run on their own event loop in a thread, because
schemathesis calls the API synchronously."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given
from schemathesis.checks import not_a_server_error

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TOKEN
from fake_orchestrator import FakeOrchestrator
from synthetic import make_video

from gateway.app import create_app
from gateway.config import GatewaySettings
from services.common.files import leftover
from services.downloads.config import DownloadsSettings
from services.downloads.server import running_monitor

EXAMPLES = 25


class BackgroundGateway:
    """A real gateway, a fake orchestrator and a real download monitor (its webhook unreachable)
    on loopback, served by a thread's own loop."""

    def __init__(self, media_root: Path) -> None:
        self.media_root = media_root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.fake = FakeOrchestrator()
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.monitor = contextlib.AsyncExitStack()

    def __enter__(self) -> BackgroundGateway:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        await self.fake.start(0)
        job = self.fake.add_job(["clips/a.mp4"], label="fuzz")
        self.job_id = job.job_id
        downloads = DownloadsSettings(
            port=0,
            metrics_port=-1,
            media_root=self.media_root,
            db_path=self.media_root.parent / "downloads.sqlite3",
            webhook_url="http://127.0.0.1:1/webhook",
            webhook_retry_delays_s=(0.01,),
            poll_interval_s=3600,
            orchestrator_addr=self.fake.address,
        )
        _monitor, monitor_server = await self.monitor.enter_async_context(
            running_monitor(downloads)
        )
        settings = GatewaySettings(
            orchestrator_addr=self.fake.address,
            downloads_addr=monitor_server.address,
            media_root=self.media_root,
            tokens=TOKEN,
        )
        self.runner = web.AppRunner(create_app(settings))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def _stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        await self.monitor.aclose()
        await self.fake.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def served(media_root: Path) -> Iterator[BackgroundGateway]:
    make_video(media_root / "clips" / "a.mp4", 0.5)
    with BackgroundGateway(media_root) as gateway:
        yield gateway


@pytest.mark.slow
def test_no_request_makes_the_gateway_fail(served: BackgroundGateway) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    headers = {"Authorization": f"Bearer {TOKEN}"}
    seen: dict[str, set[int]] = {}
    calls: list[int] = []

    for operation in operations:
        if operation.path == "/ws":
            continue

        @given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            if "job_id" in (case.path_parameters or {}) and len(repr(case.query)) % 2:
                # Half of the cases aim at the real job, so the deeper branches run too.
                case.path_parameters["job_id"] = served.job_id
            response = case.call(base_url=served.url, headers=headers, timeout=30)
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code >= 400 and not case.operation.path.startswith("/reports/"):
                # (Reports answer errors with an HTML page of the same status.)
                body = response.json()
                assert body["error"]["status"] == response.status_code
            seen.setdefault(case.operation.label, set()).add(response.status_code)
            calls.append(response.status_code)

        fuzz()

    assert len(seen) == len(operations) - 1
    # Something got through to the handlers (not every case was refused at the door).
    assert any(status < 300 for statuses in seen.values() for status in statuses)
    assert leftover(served.media_root) == []
    print(f"{len(calls)} requests over {len(seen)} operations, statuses {sorted(set(calls))}")
