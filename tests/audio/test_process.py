"""``python -m services.audio`` as a real process: boots, turns ready, drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.audio.server import SERVICE_NAME

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(port: int, media: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "services.audio", "--port", str(port), "--metrics-port", "-1",
           "--media-root", str(media), "--host", "127.0.0.1"]  # fmt: skip
    env = {**os.environ, "AUDIO_THREADS": "1", "PYANNOTE_METRICS_ENABLED": "0"}
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


async def test_module_entry_point_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    process = await asyncio.to_thread(_start, port, tmp_path)
    try:
        deadline = time.monotonic() + 180
        status = None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
                    status = reply.status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
        assert status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
        output = process.stdout.read().decode() if process.stdout else ""
        assert code == 0, output
        assert "videoanalysis.v1.AudioService ready" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
