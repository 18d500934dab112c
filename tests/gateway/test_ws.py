"""The websocket: fan-out of the one orchestrator subscription, resume, resync, orchestrator loss
and reconnect, backpressure (coalescing and dropping a lagging client without slowing others)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TOKEN
from fake_orchestrator import FakeOrchestrator
from wsclient import RawWebSocket

from gateway.keys import HUB
from protos.videoanalysis.v1 import orchestrator_pb2

LOG = orchestrator_pb2.LogLine


async def connect(client: TestClient, after: int = 0, job_ids: list[str] | None = None) -> Any:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "payload": {"token": TOKEN}})
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello"
    await ws.send_json({"type": "subscribe", "payload": {"job_ids": job_ids or [], "after": after}})
    return ws


async def receive_until(
    ws: Any, done: Callable[[list[dict[str, Any]]], bool], within_s: float = 10.0
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + within_s
    while not done(messages):
        messages.append(await ws.receive_json(timeout=max(0.01, deadline - time.monotonic())))
    return messages


def events(messages: list[dict[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
    return [
        m["payload"]
        for m in messages
        if m["type"] == "event" and (kind is None or m["payload"]["kind"] == kind)
    ]


def has_seq(seq: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda messages: any(e["seq"] >= seq for e in events(messages, "log"))


def log(fake: FakeOrchestrator, job_id: str, text: str) -> int:
    return fake.emit(job_id, log=LOG(severity="INFO", message=text)).sequence


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def hub_reached(client: TestClient, seq: int) -> None:
    """Waits until the gateway's own subscription has seen ``seq``."""
    hub = client.app[HUB]
    async with asyncio.timeout(5):
        while hub.last_seq < seq:  # noqa: ASYNC110 (the hub has no event per sequence)
            await asyncio.sleep(0.01)


async def synced(ws: Any) -> list[dict[str, Any]]:
    return await receive_until(ws, lambda m: bool(events(m, "synced")))


async def test_fan_out_to_every_client_with_job_filters(gateway, fake: FakeOrchestrator) -> None:
    client = await gateway()
    first = fake.add_job(["p/a.mp4"]).job_id
    second = fake.add_job(["p/b.mp4"]).job_id
    everything = await connect(client)
    only_first = await connect(client, job_ids=[first])
    start = await synced(everything)
    assert {e["job_id"] for e in events(start, "snapshot")} == {first, second}
    assert {e["job_id"] for e in events(await synced(only_first), "snapshot")} == {first}

    sent = [log(fake, job, f"line {n}") for n in range(20) for job in (first, second)]
    got_all = events(await receive_until(everything, has_seq(sent[-1])), "log")
    got_first = events(await receive_until(only_first, has_seq(sent[-2])), "log")

    assert [e["seq"] for e in got_all] == sent
    assert [e["seq"] for e in got_first] == sent[0::2]
    assert {e["job_id"] for e in got_first} == {first}
    assert got_all[0]["log"] == {"severity": "INFO", "message": "line 0", "video": ""}
    # One subscription to the orchestrator serves both clients (plus one catch-up each for
    # their snapshots, which ended once they reached the hub).
    assert fake.watch_calls == 3
    assert len(fake.watchers) == 1


async def test_resume_after_a_sequence_from_the_gateways_buffer(
    gateway, fake: FakeOrchestrator
) -> None:
    client = await gateway()
    job = fake.add_job(["p/a.mp4"]).job_id
    ws = await connect(client)
    await synced(ws)
    seen = [log(fake, job, f"early {n}") for n in range(5)]
    await receive_until(ws, has_seq(seen[-1]))
    await ws.close()
    missed = [log(fake, job, f"missed {n}") for n in range(5)]
    await hub_reached(client, missed[-1])
    calls = fake.watch_calls

    again = await connect(client, after=seen[-1])
    later = log(fake, job, "live")
    got = events(await receive_until(again, has_seq(later)))
    assert [e["seq"] for e in got] == [*missed, later]
    assert fake.watch_calls == calls  # replayed by the gateway, not the orchestrator


async def test_resume_older_than_the_buffer_replays_from_the_orchestrator(
    gateway, fake: FakeOrchestrator
) -> None:
    client = await gateway(replay_events=3)
    job = fake.add_job(["p/a.mp4"]).job_id
    ws = await connect(client)
    await synced(ws)
    first = log(fake, job, "first")
    await receive_until(ws, has_seq(first))
    await ws.close()
    missed = [log(fake, job, f"missed {n}") for n in range(10)]
    await hub_reached(client, missed[-1])
    calls = fake.watch_calls

    again = await connect(client, after=first)
    got = events(await receive_until(again, has_seq(missed[-1])))
    later = log(fake, job, "live")
    got += events(await receive_until(again, has_seq(later)))
    assert [e["seq"] for e in got] == [*missed, later]  # no gap, no duplicate at the hand-over
    assert fake.watch_calls == calls + 1


async def test_resync_when_the_orchestrator_no_longer_has_the_events(
    gateway, media_root: Path
) -> None:
    fake = FakeOrchestrator(retention=5)
    await fake.start(0)
    try:
        client = await gateway(orchestrator_addr=fake.address, replay_events=2)
        job = fake.add_job(["p/a.mp4"]).job_id
        old = [log(fake, job, f"old {n}") for n in range(20)]
        ws = await connect(client, after=old[0])
        got = await receive_until(ws, lambda m: bool(events(m, "synced")))
        kinds = [e["kind"] for e in events(got)]
        assert kinds == ["resync", "snapshot", "synced"]
        assert events(got, "resync")[0]["resync"]["reason"] == "retention"
        assert events(got, "snapshot")[0]["job"]["job_id"] == job
        later = log(fake, job, "live")
        assert events(await receive_until(ws, has_seq(later)))[-1]["seq"] == later
    finally:
        await fake.stop()


async def test_orchestrator_loss_and_reconnect_from_the_last_sequence(
    gateway, fake: FakeOrchestrator
) -> None:
    client = await gateway()
    job = fake.add_job(["p/a.mp4"]).job_id
    ws = await connect(client)
    await synced(ws)
    before = log(fake, job, "before")
    await receive_until(ws, has_seq(before))

    await fake.stop()
    lost = await receive_until(ws, lambda m: any(x["type"] == "orchestrator" for x in m))
    assert lost[-1]["payload"] == {"connected": False}
    response = await client.get("/api/v1/jobs")
    assert response.status == 503
    assert (await response.json())["error"]["message"] == "the orchestrator is unavailable"

    # Events stored while the gateway could not see them (the orchestrator's log is durable).
    during = [log(fake, job, f"while away {n}") for n in range(3)]
    await fake.start()
    got = await receive_until(ws, has_seq(during[-1]))
    assert {"type": "orchestrator", "payload": {"connected": True}} in got
    assert [e["seq"] for e in events(got, "log")] == during
    assert metric("videoanalysis_gateway_orchestrator_connected") == 1


async def fast_and_slow(
    client: TestClient, fake: FakeOrchestrator
) -> tuple[str, Any, RawWebSocket]:
    """A job, a client that reads everything at once and one (a raw socket with a tiny receive
    buffer) that reads nothing until the test says so; both subscribed to every job."""
    job = fake.add_job(["p/a.mp4"]).job_id
    fast = await connect(client)
    await synced(fast)
    slow = await RawWebSocket.connect(
        client.server.host, client.server.port, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert (await slow.receive_json())["type"] == "hello"
    await slow.send_json({"type": "subscribe", "payload": {"after": fake.sequence}})
    await asyncio.sleep(0.2)
    return job, fast, slow


@pytest.mark.slow  # seconds of deliberate lag
async def test_a_lagging_client_gets_coalesced_progress_and_others_everything(
    gateway, fake: FakeOrchestrator
) -> None:
    client = await gateway(ws_queue_events=5_000)
    job, fast, slow = await fast_and_slow(client, fake)
    coalesced = metric("videoanalysis_gateway_websocket_events_dropped_total", reason="coalesced")

    total = 3_000
    for n in range(total):
        fake.emit_step(job, "p/a.mp4", "scene", done=n + 1, total=total)
        if n % 100 == 0:
            await asyncio.sleep(0)
    last = fake.sequence
    got = events(await receive_until(fast, lambda m: any(e["seq"] == last for e in events(m))))
    assert [e["step"]["step"]["progress"]["done"] for e in got] == list(range(1, total + 1))

    # The slow client now reads what is left: a short tail ending at the latest progress.
    received: list[dict[str, Any]] = []
    while not received or received[-1]["payload"]["seq"] != last:
        message = await asyncio.wait_for(slow.receive_json(), 10)
        if message["type"] == "event":
            received.append(message)
    slow.close()
    progress = [m["payload"]["step"]["step"]["progress"]["done"] for m in received]
    assert progress[-1] == total
    assert progress == sorted(progress)
    assert len(progress) < total / 2
    dropped = metric("videoanalysis_gateway_websocket_events_dropped_total", reason="coalesced")
    assert dropped - coalesced == total - len(progress)


@pytest.mark.slow  # seconds of deliberate lag
async def test_a_client_that_cannot_keep_up_is_dropped_and_others_are_not_slowed(
    gateway, fake: FakeOrchestrator
) -> None:
    client = await gateway(ws_queue_events=50)
    job, fast, slow = await fast_and_slow(client, fake)
    clients_dropped = metric("videoanalysis_gateway_websocket_clients_dropped_total")

    sent = []
    for n in range(2_000):  # log lines are never coalesced
        sent.append(log(fake, job, f"line {n} " + "x" * 400))
        if n % 100 == 0:
            await asyncio.sleep(0)
    got = events(await receive_until(fast, has_seq(sent[-1]), within_s=20))
    assert [e["seq"] for e in got] == sent

    with pytest.raises(ConnectionResetError) as closed:
        while True:
            await asyncio.wait_for(slow.receive_json(), 10)
    slow.close()
    assert closed.value.args[1] == 4408
    assert metric("videoanalysis_gateway_websocket_clients_dropped_total") == clients_dropped + 1

    # It comes back with the last sequence it saw and misses nothing.
    back = await connect(client, after=sent[-100])
    assert [e["seq"] for e in events(await receive_until(back, has_seq(sent[-1])))] == sent[-99:]


async def test_websocket_refuses_a_missing_or_wrong_token(gateway) -> None:
    client = await gateway(ws_auth_timeout_s=0.3)
    for first in (None, {"type": "auth", "payload": {"token": "wrong"}}, {"type": "subscribe"}):
        ws = await client.ws_connect("/ws")
        if first is not None:
            await ws.send_json(first)
        message = await ws.receive(timeout=5)
        assert message.type == WSMsgType.CLOSE
        assert ws.close_code == 4401
    wrong_header = await client.ws_connect("/ws", headers={"Authorization": "Bearer wrong"})
    assert (await wrong_header.receive(timeout=5)).type == WSMsgType.CLOSE
    assert wrong_header.close_code == 4401


async def test_heartbeats_and_errors_on_bad_messages(gateway) -> None:
    client = await gateway(ws_heartbeat_s=0.1)
    ws = await connect(client)
    await ws.send_json({"type": "subscribe", "request_id": "r1", "payload": {"after": -1}})
    got = await receive_until(ws, lambda m: {"heartbeat", "error"} <= {x["type"] for x in m})
    error = next(m for m in got if m["type"] == "error")
    assert error["request_id"] == "r1"
    assert "after" in error["payload"]["message"]
