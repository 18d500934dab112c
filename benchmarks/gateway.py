"""Websocket fan-out through the real gateway, with and without one deliberately slow client.

``python -m benchmarks.gateway [--clients 100] [--rate 150] [--seconds 10]`` starts the fake
orchestrator of the gateway tests (``tests/gateway/fake_orchestrator.py``: a real gRPC server on
loopback, its ``WatchJobs`` stream fed as fast as asked), the gateway as its own process
(``python -m gateway``, so its memory is its own), and ``--clients`` websocket clients that
subscribe to every job. The source emits RUNNING-step progress at ``--rate`` events/s spread over
20 jobs; each event carries its emission time, so a client measures the latency from the
orchestrator to itself.

Two phases of ``--seconds`` each, side by side: the clients alone (the reference), then the same
plus one slow client (a raw socket with a 4 KiB receive buffer that reads one frame every
``--slow-read-ms``). Prints one JSON line:

- per phase: ``delivered_per_s`` (events received by all the normal clients together, per
  second), ``received_fraction`` (of what was emitted, per client), ``p50_ms``/``p99_ms``/
  ``max_ms`` latency;
- ``slow_client``: what it received, whether the gateway dropped it, the progress the gateway
  coalesced for it;
- ``slow_over_reference``: the normal clients' figures with the slow client over without;
- ``gateway_rss_mb``: idle and peak resident memory of the gateway process (psutil, sampled
  every 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests" / "gateway"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TESTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fake_orchestrator = _load("fake_orchestrator")
wsclient = _load("wsclient")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Source:
    """Progress events at a steady rate, each stamped with its emission time."""

    def __init__(self, fake: Any, jobs: int = 20) -> None:
        self.fake = fake
        self.jobs = [fake.add_job([f"bench/{n}.mp4"], label="bench").job_id for n in range(jobs)]
        self.emitted = 0

    async def run(self, rate: float, seconds: float) -> int:
        from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2

        started = time.perf_counter()
        emitted = 0
        while (elapsed := time.perf_counter() - started) < seconds:
            for _ in range(int(elapsed * rate) - emitted):
                job_id = self.jobs[emitted % len(self.jobs)]
                step = orchestrator_pb2.Step(
                    name="scene",
                    state=orchestrator_pb2.STEP_STATE_RUNNING,
                    progress=common_pb2.Progress(
                        done=emitted, unit="frames", stage="inference", message=repr(time.time())
                    ),
                )
                self.fake.emit(
                    job_id,
                    step=orchestrator_pb2.StepEvent(video=f"bench/{job_id}.mp4", step=step),
                )
                emitted += 1
            await asyncio.sleep(0.002)
        self.emitted += emitted
        return emitted


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received = 0
        self.latencies: list[float] = []
        self.task = asyncio.create_task(self._read())
        self.recording = False

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.time()
            data = json.loads(message.data)
            if data["type"] != "event" or data["payload"]["kind"] != "step":
                continue
            if self.recording:
                self.received += 1
                stamp = float(data["payload"]["step"]["step"]["progress"]["message"])
                self.latencies.append(now - stamp)


async def slow_reader(ws: Any, pause_s: float, result: dict[str, Any]) -> None:
    try:
        while True:
            message = await ws.receive_json()
            if message["type"] == "event":
                result["received"] += 1
            await asyncio.sleep(pause_s)
    except ConnectionResetError as exc:
        result["dropped"] = True
        result["close_code"] = exc.args[1] if len(exc.args) > 1 else None
    except (asyncio.IncompleteReadError, ConnectionError):
        result["dropped"] = True


async def metric(session: aiohttp.ClientSession, base: str, name: str) -> float:
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def phase(
    session: aiohttp.ClientSession,
    base: str,
    source: Source,
    args: argparse.Namespace,
    slow: bool,
) -> dict[str, Any]:
    clients = []
    for _ in range(args.clients):
        ws = await session.ws_connect(f"{base}/ws", max_msg_size=0)
        hello = await ws.receive_json()
        await ws.send_json(
            {"type": "subscribe", "payload": {"after": hello["payload"]["last_sequence"]}}
        )
        clients.append(Client(ws))
    slow_result: dict[str, Any] = {"received": 0, "dropped": False}
    slow_task = None
    if slow:
        host, port = base.removeprefix("http://").split(":")
        raw = await wsclient.RawWebSocket.connect(host, int(port))
        hello = await raw.receive_json()
        await raw.send_json(
            {"type": "subscribe", "payload": {"after": hello["payload"]["last_sequence"]}}
        )
        slow_task = asyncio.create_task(slow_reader(raw, args.slow_read_ms / 1000, slow_result))
    coalesced_before = await metric(
        session, base, 'videoanalysis_gateway_websocket_events_dropped_total{reason="coalesced"}'
    )
    await source.run(args.rate, 1.0)  # warm-up: every client is live and reading
    await asyncio.sleep(0.5)
    for client in clients:
        client.recording = True
    started = time.perf_counter()
    emitted = await source.run(args.rate, args.seconds)
    await asyncio.sleep(1.0)  # the tail in flight
    elapsed = time.perf_counter() - started
    for client in clients:
        client.recording = False
    coalesced = (
        await metric(
            session,
            base,
            'videoanalysis_gateway_websocket_events_dropped_total{reason="coalesced"}',
        )
        - coalesced_before
    )
    latencies = np.array([x for c in clients for x in c.latencies]) * 1000
    received = sum(c.received for c in clients)
    for client in clients:
        await client.ws.close()
        client.task.cancel()
    if slow_task is not None:
        slow_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow_task
        raw.close()
    result = {
        "emitted": emitted,
        "delivered_per_s": round(received / (elapsed - 1.0), 1),
        "received_fraction": round(received / (emitted * len(clients)), 4),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "max_ms": round(float(latencies.max()), 2),
        "coalesced": int(coalesced),
    }
    if slow:
        result["slow_client"] = {**slow_result, "emitted": emitted}
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fake = fake_orchestrator.FakeOrchestrator()
    await fake.start(0)
    source = Source(fake)
    port = free_port()
    media = tempfile.mkdtemp(prefix="gateway-bench-")
    env = {
        **os.environ,
        "GATEWAY_ORCHESTRATOR_ADDR": fake.address,
        "GATEWAY_NO_AUTH": "true",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_MEDIA_ROOT": media,
    }
    process = subprocess.Popen(  # noqa: ASYNC220 (started once, before any timing)
        [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        info = psutil.Process(process.pid)
        while not stop.is_set():
            with contextlib.suppress(psutil.Error):
                peak = max(peak, info.memory_info().rss)
            await asyncio.sleep(0.02)

    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # its subscription is up
            idle = psutil.Process(process.pid).memory_info().rss
            sampler = asyncio.create_task(sample())
            reference = await phase(session, base, source, args, slow=False)
            with_slow = await phase(session, base, source, args, slow=True)
            stop.set()
            await sampler
    finally:
        process.terminate()
        process.wait(10)
        await fake.stop()
    slow_client = with_slow.pop("slow_client")
    return {
        "benchmark": "gateway",
        "clients": args.clients,
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "reference_without_slow": reference,
        "with_slow": with_slow,
        "slow_client": {**slow_client, "read_pause_ms": args.slow_read_ms},
        "slow_over_reference": {
            key: round(with_slow[key] / reference[key], 3) if reference[key] else None
            for key in ("delivered_per_s", "received_fraction", "p50_ms", "p99_ms")
        },
        "gateway_rss_mb": {"idle": round(idle / 2**20, 1), "peak": round(peak / 2**20, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=150.0, help="events/s from the source")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--slow-read-ms", type=float, default=20.0)
    print(json.dumps(asyncio.run(run(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
