"""Fixtures of the gateway tests: the fake orchestrator on a loopback port and a real gateway
(aiohttp test server) in front of it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

sys.path.insert(0, str(Path(__file__).parent))
from fake_orchestrator import FakeOrchestrator

from gateway.app import create_app
from gateway.config import GatewaySettings

TOKEN = "test-token-0123456789"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOrchestrator]:
    orchestrator = FakeOrchestrator()
    await orchestrator.start(0)
    yield orchestrator
    await orchestrator.stop()


@pytest.fixture
def gateway_settings(fake: FakeOrchestrator, media_root: Path) -> Callable[..., GatewaySettings]:
    """``gateway_settings(**overrides)``: settings pointing at the fake, auth on with ``TOKEN``."""

    def make(**overrides: Any) -> GatewaySettings:
        values: dict[str, Any] = {
            "orchestrator_addr": fake.address,
            "media_root": media_root,
            "tokens": TOKEN,
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 0.2,
            **overrides,
        }
        return GatewaySettings(**values)

    return make


@pytest.fixture
def gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    gateway_settings: Callable[..., GatewaySettings],
) -> Callable[..., Awaitable[TestClient]]:
    """``await gateway(**settings)``: a test client of a real gateway app on a loopback port."""

    async def start(**overrides: Any) -> TestClient:
        app: web.Application = create_app(gateway_settings(**overrides))
        return await aiohttp_client(app)

    return start


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
