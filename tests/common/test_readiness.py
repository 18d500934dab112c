"""Before warm-up has finished, every analysis service refuses work with the same UNAVAILABLE.

Real servers on port 0, started through the shared boot path but not yet marked ready (no model is
loaded), called over the wire as the orchestrator calls them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos.videoanalysis.v1 import (
    audio_pb2,
    common_pb2,
    ingest_pb2,
    scene_pb2,
    tracking_pb2,
)
from services.audio.config import AudioSettings
from services.audio.server import build_services as audio_services
from services.common import registry
from services.common.config import ServiceSettings
from services.common.server import ServiceDefinition, start_server
from services.ingest.config import IngestSettings
from services.ingest.server import build_services as ingest_services
from services.scene.config import SceneSettings
from services.scene.server import build_services as scene_services
from services.tracking.config import TrackingSettings
from services.tracking.server import build_services as tracking_services

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
MEDIA = common_pb2.MediaRef(path="clip.mp4")

Build = Callable[[Any], list[ServiceDefinition]]

CASES: list[tuple[registry.AnalysisService, type[ServiceSettings], Build, str, Any, str]] = [
    (registry.INGEST, IngestSettings, ingest_services, "NormalizeVideo",
     ingest_pb2.NormalizeVideoRequest(media=MEDIA), "the ingest service (ffmpeg and its encoders)"),
    (registry.SCENE, SceneSettings, scene_services, "DetectScenes",
     scene_pb2.DetectScenesRequest(media=MEDIA), "the TransNetV2 model"),
    (registry.AUDIO, AudioSettings, audio_services, "Diarize",
     audio_pb2.DiarizeRequest(media=MEDIA), "the diarization models"),
    (registry.TRACKING, TrackingSettings, tracking_services, "Track",
     tracking_pb2.TrackRequest(media=MEDIA), "the face models"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("service", "settings_cls", "build", "method", "request_", "what"),
    CASES,
    ids=[case[0].name for case in CASES],
)
async def test_refused_until_warm(
    tmp_path: Path,
    service: registry.AnalysisService,
    settings_cls: type[ServiceSettings],
    build: Build,
    method: str,
    request_: Any,
    what: str,
) -> None:
    shutil.copy2(TESTDATA / "video" / "counter.mp4", tmp_path / "clip.mp4")
    settings = settings_cls(port=0, metrics_port=-1, media_root=tmp_path)
    running = await start_server(settings, build(settings))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            call = getattr(service.stub(channel), method)(request_)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in call:
                    pass
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == f"{what} is still loading; retry shortly"
    finally:
        await running.stop(0)
