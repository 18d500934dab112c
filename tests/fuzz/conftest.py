"""One real fleet for the edge tests: ingest, scene, audio and tracking servers (real models, the
services' own ``build_services``) and the orchestrator over them, all in this process on loopback
port 0, with tiny synthetic media so that a request that is valid runs the real models quickly."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator import server as orchestrator_server
from orchestrator.config import OrchestratorSettings
from services.audio.config import AudioSettings
from services.audio.server import build_services as audio_services
from services.common.config import ServiceSettings
from services.common.server import RunningServer, ServiceDefinition, start_server
from services.ingest.config import IngestSettings
from services.ingest.server import build_services as ingest_services
from services.scene.config import SceneSettings
from services.scene.server import build_services as scene_services
from services.tracking.config import TrackingSettings
from services.tracking.server import build_services as tracking_services

#: Media-root-relative paths of the synthetic media every fleet has.
CLIP = "in/clip.mp4"  # 1 s, 64x48, 25 fps, with a tone
SHORT = "in/short.mp4"  # 0.4 s, no audio
ARCHIVE = "in/project.zip"  # holds clip.mp4
NOT_MEDIA = "in/notes.txt"
FOLDER = "in"
EXISTING = (CLIP, SHORT, ARCHIVE, NOT_MEDIA, FOLDER)


def _make_media(root: Path) -> None:
    folder = root / "in"
    folder.mkdir(parents=True)
    ffmpeg = [shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-v", "error", "-y"]
    subprocess.run(
        [*ffmpeg, "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=1",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-shortest",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
         str(root / CLIP)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [*ffmpeg, "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=0.4",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(root / SHORT)],
        check=True,
    )  # fmt: skip
    with zipfile.ZipFile(root / ARCHIVE, "w") as archive:
        archive.write(root / CLIP, "clip.mp4")
    (root / NOT_MEDIA).write_text("not a video\n")


@dataclass
class Fleet:
    """The running servers (by short name), a channel to each, and the media root."""

    media_root: Path
    servers: dict[str, RunningServer] = field(default_factory=dict)
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    #: Full health name of each server's service.
    health_names: dict[str, str] = field(default_factory=dict)
    orchestrator: Any = None

    async def call(
        self, server: str, method: str, payload: bytes, streaming: bool, deadline_s: float = 60
    ) -> tuple[grpc.StatusCode, str]:
        """Sends ``payload`` as the request bytes of ``/videoanalysis.v1.<method>`` to ``server``
        (identity serializers: any bytes go out as they are) and reads the whole answer; returns
        the final status code and its details."""
        full = f"/videoanalysis.v1.{method}"
        channel = self.channels[server]
        try:
            if streaming:
                async for _response in channel.unary_stream(full)(payload, timeout=deadline_s):
                    pass
            else:
                await channel.unary_unary(full)(payload, timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""

    async def health(self) -> dict[str, int]:
        """The health status of every server's own service (and of ``""``)."""
        statuses = {}
        for name, channel in self.channels.items():
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", self.health_names[name]):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                statuses[f"{name}:{service}"] = reply.status
        return statuses


async def _start(settings: ServiceSettings, services: Sequence[ServiceDefinition]) -> RunningServer:
    running = await start_server(settings, services)
    await running.mark_ready()
    return running


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp("media")
    _make_media(root)
    common: dict[str, Any] = {"port": 0, "metrics_port": -1, "media_root": root, "host": "[::]"}
    fleet = Fleet(root)
    builders: dict[str, Callable[[], tuple[ServiceSettings, Sequence[ServiceDefinition]]]] = {
        "ingest": lambda: (s := IngestSettings(**common), ingest_services(s)),
        "scene": lambda: (s := SceneSettings(**common, batch_windows=1), scene_services(s)),
        "audio": lambda: (s := AudioSettings(**common), audio_services(s)),
        "tracking": lambda: (s := TrackingSettings(**common, workers=1), tracking_services(s)),
    }
    try:
        for name, build in builders.items():
            settings, services = build()
            fleet.servers[name] = await _start(settings, services)
            fleet.health_names[name] = services[0].name
        orch_settings = OrchestratorSettings(
            **common,
            db_path=root / "jobs.sqlite3",
            parallel_jobs=1,
            parallel_videos=1,
            retry_attempts=2,
            retry_initial_backoff_s=0.1,
            **{f"{name}_addr": running.address for name, running in fleet.servers.items()},
        )
        async with orchestrator_server.running_orchestrator(orch_settings) as (orch, running):
            fleet.orchestrator = orch
            fleet.servers["orchestrator"] = running
            fleet.health_names["orchestrator"] = orchestrator_server.SERVICE_NAME
            for name, running_server in fleet.servers.items():
                fleet.channels[name] = grpc.aio.insecure_channel(running_server.address)
            try:
                yield fleet
            finally:
                for channel in fleet.channels.values():
                    await channel.close()
                for job in await orch.list_jobs(1000, []):
                    await orch.cancel(job.job_id)
    finally:
        for name, running_server in fleet.servers.items():
            if name != "orchestrator":
                await running_server.stop(0)
