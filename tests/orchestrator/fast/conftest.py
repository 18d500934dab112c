"""Small in-process fakes of the four analysis services (real gRPC servers on port 0, the real boot
path), for the orchestrator's logic tests: they answer in milliseconds with plausible results,
count their calls, and can be told to fail, or to hold a call until released."""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from orchestrator.config import OrchestratorSettings
from orchestrator.jobs import Orchestrator
from orchestrator.server import open_orchestrator
from protos.videoanalysis.v1 import (
    audio_pb2,
    audio_pb2_grpc,
    common_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    scene_pb2,
    scene_pb2_grpc,
    tracking_pb2,
    tracking_pb2_grpc,
)
from services.common import registry
from services.common.config import ServiceSettings
from services.common.server import RunningServer, ServiceDefinition, start_server

FRAMES = 50  # two seconds at 25 fps


@dataclass
class Behaviour:
    """What the fakes do; tests change it between calls."""

    #: Status codes the next calls of an RPC fail with, in order (then they succeed).
    failures: dict[str, list[grpc.StatusCode]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    #: RPCs that wait for ``release`` (after streaming one progress message).
    hold: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    #: RPCs started, and RPCs whose client went away while held.
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    cancelled: collections.Counter[str] = field(default_factory=collections.Counter)
    progress_messages: int = 5

    async def enter(self, rpc: str, context: grpc.aio.ServicerContext) -> None:
        self.calls[rpc] += 1
        if self.failures[rpc]:
            code = self.failures[rpc].pop(0)
            await context.abort(code, f"fake {rpc} fails with {code.name}")

    async def held(self, rpc: str) -> None:
        if rpc in self.hold:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled[rpc] += 1
                raise


def _progress(done: int, total: int = FRAMES) -> common_pb2.Progress:
    return common_pb2.Progress(done=done, total=total, unit="frames", stage="fake")


def _info() -> common_pb2.VideoInfo:
    return common_pb2.VideoInfo(
        duration_s=FRAMES / 25,
        avg_fps=25,
        real_fps=25,
        frame_count=FRAMES,
        width=320,
        height=240,
        video_codec="h264",
        audio_codec="aac",
        has_audio=True,
    )


class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, behaviour: Behaviour, media_root: Path) -> None:
        self.b, self.root = behaviour, media_root

    async def Probe(self, request, context):  # type: ignore[no-untyped-def]
        await self.b.enter("Probe", context)
        if request.media.path.endswith(".bad.mp4"):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not a readable media file")
        return ingest_pb2.ProbeResponse(info=_info())

    async def NormalizeVideo(
        self, request, context
    ) -> AsyncIterator[ingest_pb2.NormalizeVideoResponse]:  # type: ignore[no-untyped-def]
        await self.b.enter("NormalizeVideo", context)
        yield ingest_pb2.NormalizeVideoResponse(progress=_progress(1))
        await self.b.held("NormalizeVideo")
        target = self.root / request.output_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"normalised")
        result = ingest_pb2.NormalizeVideoResult(
            output=common_pb2.MediaRef(path=request.output_path),
            info=_info(),
            reencoded=True,
            encoder="fake",
        )
        yield ingest_pb2.NormalizeVideoResponse(result=result)

    async def ExtractArchive(self, request, context):  # type: ignore[no-untyped-def]
        await self.b.enter("ExtractArchive", context)
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the fake cannot extract")
        yield  # pragma: no cover


class FakeScene(scene_pb2_grpc.SceneServiceServicer):
    def __init__(self, behaviour: Behaviour) -> None:
        self.b = behaviour

    async def DetectScenes(self, request, context):  # type: ignore[no-untyped-def]
        await self.b.enter("DetectScenes", context)
        for n in range(1, self.b.progress_messages + 1):
            yield scene_pb2.DetectScenesResponse(progress=_progress(n * FRAMES // 10))
        await self.b.held("DetectScenes")
        scenes = [
            scene_pb2.Scene(start_frame=1, end_frame=25, start_s=0, end_s=1),
            scene_pb2.Scene(start_frame=26, end_frame=FRAMES, start_s=1, end_s=2),
        ]
        result = scene_pb2.SceneResult(scenes=scenes, frame_count=FRAMES, fps=25, device="fake")
        yield scene_pb2.DetectScenesResponse(result=result)


class FakeAudio(audio_pb2_grpc.AudioServiceServicer):
    def __init__(self, behaviour: Behaviour) -> None:
        self.b = behaviour

    async def Diarize(self, request, context):  # type: ignore[no-untyped-def]
        await self.b.enter("Diarize", context)
        yield audio_pb2.DiarizeResponse(progress=_progress(1, 2))
        await self.b.held("Diarize")
        segment = audio_pb2.SpeechSegment(start_s=0.2, end_s=1.6, speaker="SPEAKER_00")
        result = audio_pb2.DiarizeResult(
            has_audio=True,
            segments=[segment],
            num_speakers=1,
            speakers=["SPEAKER_00"],
            duration_s=2,
            engine="fake",
        )
        yield audio_pb2.DiarizeResponse(result=result)


class FakeTracking(tracking_pb2_grpc.TrackingServiceServicer):
    def __init__(self, behaviour: Behaviour) -> None:
        self.b = behaviour

    async def Track(self, request, context):  # type: ignore[no-untyped-def]
        await self.b.enter("Track", context)
        yield tracking_pb2.TrackResponse(progress=_progress(10))
        await self.b.held("Track")
        frames = []
        for index in range(FRAMES):
            opening = 0.5 + 0.5 * math.sin(index / 2) if 5 <= index <= 40 else 0.0
            face = tracking_pb2.TrackedFace(
                track_id="1",
                centroid_x=160,
                centroid_y=120,
                confidence=0.9,
                mouth_openness=opening,
                jaw_open=opening,
                bbox=tracking_pb2.BoundingBox(x_min=120, y_min=80, x_max=200, y_max=160),
            )
            frames.append(
                tracking_pb2.FrameFaces(frame_index=index, time_s=index / 25, faces=[face])
            )
        yield tracking_pb2.TrackResponse(frames=tracking_pb2.FrameBatch(frames=frames))
        summary = tracking_pb2.TrackSummary(
            frame_count=FRAMES,
            fps=25,
            width=320,
            height=240,
            faces_total=FRAMES,
            tracks=[
                tracking_pb2.TrackInfo(
                    track_id="1", first_frame=0, last_frame=FRAMES - 1, frames_seen=FRAMES
                )
            ],
        )
        yield tracking_pb2.TrackResponse(summary=summary)


@dataclass
class FakeServices:
    behaviour: Behaviour
    servers: dict[str, RunningServer]

    def addresses(self) -> dict[str, str]:
        return {name: server.address for name, server in self.servers.items()}


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[FakeServices]:
    behaviour = Behaviour()
    media_root = tmp_path / "media"
    media_root.mkdir()
    servicers = {
        "ingest": (
            FakeIngest(behaviour, media_root),
            ingest_pb2_grpc.add_IngestServiceServicer_to_server,
        ),
        "scene": (FakeScene(behaviour), scene_pb2_grpc.add_SceneServiceServicer_to_server),
        "audio": (FakeAudio(behaviour), audio_pb2_grpc.add_AudioServiceServicer_to_server),
        "tracking": (
            FakeTracking(behaviour),
            tracking_pb2_grpc.add_TrackingServiceServicer_to_server,
        ),
    }
    servers = {}
    for name, (servicer, add) in servicers.items():
        definition = ServiceDefinition(
            name=registry.service(name).health_name,
            register=lambda server, s=servicer, a=add: a(s, server),
        )
        settings = ServiceSettings(host="127.0.0.1", port=0, metrics_port=-1, media_root=media_root)
        running = await start_server(settings, [definition])
        await running.mark_ready()
        servers[name] = running
    try:
        yield FakeServices(behaviour, servers)
    finally:
        behaviour.release.set()
        for server in servers.values():
            await server.stop(0)


@pytest.fixture
def fast_settings(fakes: FakeServices, tmp_path: Path) -> OrchestratorSettings:
    root = tmp_path / "media"
    return OrchestratorSettings(
        port=0,
        metrics_port=-1,
        media_root=root,
        db_path=tmp_path / "jobs.sqlite3",
        retry_initial_backoff_s=0.01,
        retry_max_backoff_s=0.02,
        progress_interval_s=0.0,
        **{f"{name}_addr": address for name, address in fakes.addresses().items()},
    )


@pytest.fixture
def clip(fast_settings: OrchestratorSettings) -> Callable[[str], str]:
    """``clip(name)``: a (fake) video under the media root; returns its relative path."""

    def make(name: str) -> str:
        path = fast_settings.media_root / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode() * 100)
        return f"in/{name}"

    return make


@pytest.fixture
async def orch(fast_settings: OrchestratorSettings) -> AsyncIterator[Orchestrator]:
    async with open_orchestrator(fast_settings) as running:
        await running.start()
        yield running
