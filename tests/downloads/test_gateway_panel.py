"""The gateway's downloads panel API against the real download monitor (loopback webhook and
file server, the SubmitJob stand-in): list, poll, confirm, retry, and the errors a user meets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.config import GatewaySettings
from services.downloads.server import running_monitor

TOKEN = "panel-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def gateway_settings(media_root: Path, **fields: Any) -> GatewaySettings:
    return GatewaySettings(tokens=TOKEN, metrics_port=-1, media_root=media_root, **fields)


async def test_list_poll_confirm_and_refusals(
    remote: Any, settings_for: Any, orchestrator: Any, aiohttp_client: Any
) -> None:
    fake, fake_server = orchestrator
    remote.add("/s/p/Projet Lune.zip", body=remote.make_zip(300_000), filename="Projet Lune.zip")
    settings = settings_for(auto_submit=False, orchestrator_addr=fake_server.address)
    async with running_monitor(settings) as (_monitor, running):
        client = await aiohttp_client(
            create_app(
                gateway_settings(
                    settings.media_root,
                    orchestrator_addr="127.0.0.1:1",  # the panel needs only the monitor
                    downloads_addr=running.address,
                )
            )
        )
        empty = await (await client.get("/api/v1/downloads")).json()
        assert empty["downloads"] == [] and empty["monitor"]["auto_submit"] is False

        remote.rows = [remote.dropbox_row("/s/p/Projet%20Lune.zip", "Projet Lune.zip")]
        assert (await client.post("/api/v1/downloads/poll")).status == 401
        polled = await client.post("/api/v1/downloads/poll", headers=AUTH)
        assert await polled.json() == {"records": 1, "started": 1, "error": None}
        for _ in range(200):
            body = await (await client.get("/api/v1/downloads")).json()
            [download] = body["downloads"]
            if download["state"] == "awaiting_confirmation":
                break
            await asyncio.sleep(0.05)
        assert download["state"] == "awaiting_confirmation", download
        assert download["filename"] == "Projet Lune.zip" and download["provider"] == "dropbox"
        assert "url" not in download and "key" not in download  # share links stay private
        assert body["monitor"]["records"] == 1 and body["monitor"]["webhook_available"]

        confirm = f"/api/v1/downloads/{download['download_id']}/confirm"
        assert (await client.post(confirm)).status == 401
        confirmed = await (await client.post(confirm, headers=AUTH)).json()
        assert (confirmed["state"], confirmed["job_id"]) == ("submitted", "job-1")
        assert [i.path for i in fake.requests[0].inputs] == ["downloads/Projet Lune.zip"]

        for method, path, status in [
            ("post", confirm, 409),  # already submitted
            ("post", f"/api/v1/downloads/{download['download_id']}/retry", 409),
            ("post", "/api/v1/downloads/csv_00000000/retry", 404),
            ("post", "/api/v1/downloads/a.b/confirm", 400),
            ("get", "/api/v1/downloads?limit=0", 400),
            ("get", "/api/v1/downloads?limit=x", 400),
        ]:
            response = await client.request(method, path, headers=AUTH)
            assert response.status == status, (path, await response.text())
            assert (await response.json())["error"]["message"]


async def test_without_a_monitor_the_panel_says_so(tmp_path: Path, aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(gateway_settings(tmp_path)))
    response = await client.get("/api/v1/downloads")
    assert response.status == 503
    assert "GATEWAY_DOWNLOADS_ADDR" in (await response.json())["error"]["message"]
    # Configured but down: 503 that names the download monitor.
    down = await aiohttp_client(
        create_app(gateway_settings(tmp_path, downloads_addr="127.0.0.1:1", rpc_timeout_s=1))
    )
    response = await down.get("/api/v1/downloads")
    assert response.status == 503
    assert (await response.json())["error"]["message"] == "the download monitor is unavailable"
