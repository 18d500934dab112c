"""The gateway in front of the real orchestrator and the real services: upload
short_hamilton_clip.mp4 through ``POST /api/v1/jobs`` and follow it over ``/ws`` to completion."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TOKEN

from gateway.app import create_app
from gateway.config import GatewaySettings
from orchestrator.config import OrchestratorSettings
from orchestrator.server import running_orchestrator


def _orchestrator_fixtures() -> Any:
    """The orchestrator tests' ``Stack`` (tests/ is no package: loaded by path)."""
    path = Path(__file__).parent.parent / "orchestrator" / "conftest.py"
    spec = importlib.util.spec_from_file_location("orchestrator_stack_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = _orchestrator_fixtures().Stack(tmp_path_factory.mktemp("stack"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_an_uploaded_clip_is_followed_over_the_websocket_to_completion(
    stack: Any, aiohttp_client: Any, testdata: Any
) -> None:
    root = stack.media_root
    settings = OrchestratorSettings(
        port=0,
        metrics_port=-1,
        media_root=root,
        db_path=root / "gw" / "jobs.sqlite3",
        output_dir="gw/output",
        archives_dir="gw/archives",
        extract_dir="gw/extracted",
        work_dir="gw/work",
        grace_s=1,
        **stack.addresses(),
    )
    async with running_orchestrator(settings) as (_orchestrator, server):
        gateway = GatewaySettings(
            orchestrator_addr=server.address,
            media_root=root,
            tokens=TOKEN,
            archives_dir="gw/archives",
            **stack.addresses(),
        )
        client = await aiohttp_client(create_app(gateway))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ws = await client.ws_connect("/ws")
        await ws.send_json({"type": "auth", "payload": {"token": TOKEN}})
        hello = await ws.receive_json(timeout=10)
        assert hello["type"] == "hello"
        connected = hello["payload"]["orchestrator_connected"]
        while not connected:  # the gateway's subscription may still be starting
            message = await ws.receive_json(timeout=30)
            connected = message == {"type": "orchestrator", "payload": {"connected": True}}

        clip = testdata("video/short_hamilton_clip.mp4")
        form = aiohttp.FormData()
        form.add_field("file", clip.read_bytes(), filename=clip.name)
        form.add_field("label", "gateway e2e")
        response = await client.post("/api/v1/jobs", data=form, headers=auth)
        assert response.status == 201, await response.text()
        job = await response.json()
        job_id = job["job_id"]
        assert (root / job["inputs"][0]).read_bytes() == clip.read_bytes()

        await ws.send_json({"type": "subscribe", "payload": {"job_ids": [job_id], "after": 0}})
        kinds: dict[str, int] = {}
        progress: dict[str, int] = {}
        last_seq = 0
        final = None
        deadline = time.monotonic() + 1000
        while final is None:
            message = await ws.receive_json(timeout=max(1, deadline - time.monotonic()))
            if message["type"] != "event":
                continue
            event = message["payload"]
            assert event["job_id"] in (job_id, "")
            kinds[event["kind"]] = kinds.get(event["kind"], 0) + 1
            if event["kind"] not in ("snapshot", "synced"):
                assert event["seq"] > last_seq  # in order, no duplicates
                last_seq = event["seq"]
            if event["kind"] == "step" and event["step"]["step"]["state"] == "running":
                name = event["step"]["step"]["name"]
                progress[name] = progress.get(name, 0) + 1
            if event["kind"] == "state" and event["state"] not in ("queued", "running"):
                final = event["state"]
        await ws.close()
        assert final == "completed", kinds
        assert kinds["snapshot"] >= 1 and kinds["synced"] == 1 and kinds["step"] > 10
        assert {"scene", "audio", "tracking"} <= set(progress), progress

        done = await (await client.get(f"/api/v1/jobs/{job_id}")).json()
        assert done["state"] == "completed"
        video = f"/api/v1/jobs/{job_id}/videos/0"
        shots = await (await client.get(f"{video}/scenes")).json()
        speakers = await (await client.get(f"{video}/speakers")).json()
        faces = await (await client.get(f"{video}/faces")).json()
        assert shots["shots"] and speakers["segments"]
        assert any(frame["tracked_objects"] for frame in faces["frames"])
        thumbnail = await client.get(f"{video}/thumbnails/1.jpg")
        assert thumbnail.status == 200
        logs = await (await client.get(f"/api/v1/jobs/{job_id}/logs")).json()
        assert logs["lines"]
        print(f"events by kind {kinds}, running progress by step {progress}")
