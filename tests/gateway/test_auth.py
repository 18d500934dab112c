"""Auth over every route of the OpenAPI description, and the description against the router."""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TOKEN
from fake_orchestrator import FakeOrchestrator

from gateway.auth import SESSION_COOKIE, session_cookie, session_valid
from gateway.config import GatewaySettings
from gateway.openapi import describe

MUTATING = {"post", "put", "patch", "delete"}
FORGET_SESSION = ("delete", "/api/v1/session")


def operations() -> list[tuple[str, str]]:
    return [
        (method, path)
        for path, item in describe()["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def concrete(path: str, job_id: str) -> str:
    values = {
        "job_id": job_id,
        "index": "0",
        "frame": "1",
        "kind": "scenes",
        "filename": "app.css",
        "project": "p",
        "month": "2026-01",
        "download_id": "csv_0123abcd",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def test_the_description_lists_exactly_the_routes_of_the_app(
    gateway_settings, media_root: Path
) -> None:
    from gateway.app import create_app

    app = create_app(gateway_settings())
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        canonical = route.resource.canonical if route.resource is not None else ""
        routes.add((route.method.lower(), canonical))
    assert routes == set(operations())


async def test_every_mutating_route_refuses_a_missing_and_a_wrong_token(
    gateway, fake: FakeOrchestrator, auth: dict[str, str]
) -> None:
    client = await gateway()
    job = fake.add_job(["p/a.mp4"]).job_id
    # Forgetting the read cookie is the one mutation open to all (it only clears a cookie).
    mutating = [(m, p) for m, p in operations() if m in MUTATING and (m, p) != FORGET_SESSION]
    assert len(mutating) >= 2
    for method, path in mutating:
        url = concrete(path, job)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = await client.request(method, url, headers=headers, json={"inputs": []})
            assert response.status == 401, (method, url, headers)
            body = await response.json()
            assert body["error"]["status"] == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        # The right token passes auth (what follows is the route's own answer).
        response = await client.request(method, url, headers=auth, json={"inputs": []})
        assert response.status != 401, (method, url)
    # Reads stay open unless auth_reads is set.
    for method, path in operations():
        if method == "get" and path != "/ws":
            response = await client.get(concrete(path, job))
            assert response.status != 401, path


async def test_auth_reads_protects_every_read_of_the_api(
    gateway, fake: FakeOrchestrator, auth: dict[str, str]
) -> None:
    client = await gateway(auth_reads=True)
    job = fake.add_job(["p/a.mp4"]).job_id
    public = {"/healthz", "/metrics", "/api/v1/openapi.json", "/", "/static/{filename}", "/ws"}
    reads = [p for m, p in operations() if m == "get" and p not in public]
    assert any(p.startswith("/reports/") for p in reads)
    for path in reads:
        url = concrete(path, job)
        assert (await client.get(url)).status == 401, url
        assert (await client.get(url, headers={"Authorization": "Bearer x"})).status == 401, url
        assert (await client.get(url, headers=auth)).status != 401, url
    for path in public - {"/ws"}:
        assert (await client.get(concrete(path, job))).status != 401, path


async def test_the_session_cookie_opens_reads_but_never_mutations(
    gateway, fake: FakeOrchestrator, auth: dict[str, str]
) -> None:
    """What ``<video>`` and ``<img>`` in the dashboard rely on when reads need auth."""
    client = await gateway(auth_reads=True)
    job = fake.add_job(["p/a.mp4"]).job_id
    media = concrete("/api/v1/jobs/{job_id}/videos/{index}/media", job)
    assert (await client.get(media)).status == 401
    assert (await client.post("/api/v1/session")).status == 401
    started = await client.post("/api/v1/session", headers=auth)
    assert started.status == 204
    cookie = started.cookies[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    # The test client keeps the cookie, as a browser does: every read passes auth now.
    public = {"/healthz", "/metrics", "/api/v1/openapi.json", "/", "/static/{filename}", "/ws"}
    for path in [p for m, p in operations() if m == "get" and p not in public]:
        assert (await client.get(concrete(path, job))).status != 401, path
    # ... but no mutation does.
    cancel = concrete("/api/v1/jobs/{job_id}/cancel", job)
    assert (await client.post(cancel)).status == 401
    assert (await client.post("/api/v1/jobs", json={"inputs": ["p/a.mp4"]})).status == 401
    # A forged cookie is refused; forgetting the session needs no token and closes reads again.
    forged = f"{int(time.time()) + 3600}.{'0' * 64}"
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: forged}, client.make_url("/"))
    assert (await client.get(media)).status == 401
    assert (await client.post("/api/v1/session", headers=auth)).status == 204
    assert (await client.get(media)).status != 401
    assert (await client.delete("/api/v1/session")).status == 204
    assert (await client.get(media)).status == 401


def test_session_cookies_expire_and_end_with_the_tokens() -> None:
    now = 1_000_000.0
    value = session_cookie(["a", "b"], ttl_s=60, now=now)
    assert session_valid(value, ["b", "a"], now=now + 59)  # order of the tokens does not matter
    assert not session_valid(value, ["a", "b"], now=now + 61)
    assert not session_valid(value, ["a", "c"], now=now)  # rotated tokens end every session
    assert not session_valid(value, [], now=now)
    for broken in ("", "abc", "123", "123.", f"x{value}", value[:-1]):
        assert not session_valid(broken, ["a", "b"], now=now), broken


async def test_tokens_never_reach_the_logs(
    gateway, fake: FakeOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await gateway()
    for token in (TOKEN, "wrong-secret-token"):
        headers = {"Authorization": f"Bearer {token}"}
        await client.post("/api/v1/jobs", json={"inputs": ["missing.mp4"]}, headers=headers)
        ws = await client.ws_connect("/ws")
        await ws.send_json({"type": "auth", "payload": {"token": token}})
        await ws.receive(timeout=5)
        await ws.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in text and "wrong-secret-token" not in text


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "192.168.1.10"])
def test_no_auth_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        GatewaySettings(host=host, no_auth=True)


def test_auth_needs_a_token_or_an_explicit_no_auth() -> None:
    with pytest.raises(ValueError, match="GATEWAY_TOKENS"):
        GatewaySettings(tokens=" , ")
    assert GatewaySettings(host="::1", no_auth=True).auth_enabled is False
    assert GatewaySettings(tokens="a,b").token_list == ["a", "b"]


async def test_no_auth_on_loopback_lets_everything_through(gateway, fake: FakeOrchestrator) -> None:
    client = await gateway(no_auth=True, tokens="")
    job = fake.add_job(["p/a.mp4"]).job_id
    assert (await client.post(f"/api/v1/jobs/{job}/cancel")).status == 200
    ws = await client.ws_connect("/ws")
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    await ws.close()
