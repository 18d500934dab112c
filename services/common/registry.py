"""The analysis services the orchestrator calls, described once.

Settings (addresses and concurrency per service), the local stack launcher (which package to start,
which health name means "ready"), the orchestrator's clients (which stub) and the tests all read
this table instead of listing the services themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protos.videoanalysis.v1 import (
    audio_pb2,
    audio_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    scene_pb2,
    scene_pb2_grpc,
    tracking_pb2,
    tracking_pb2_grpc,
)


@dataclass(frozen=True)
class AnalysisService:
    """One downstream service.

    Attributes:
        name: short name, used in settings (``ORCH_<NAME>_ADDR``), logs and metrics labels.
        package: what ``python -m`` starts.
        health_name: full proto service name, the readiness key in ``grpc.health.v1``.
        stub: the generated client stub class.
        env_prefix: prefix of the service's own settings (``SCENE_PORT``).
        default_port: its gRPC port when nothing else is configured.
        default_metrics_port: its Prometheus port when nothing else is configured.
    """

    name: str
    package: str
    health_name: str
    stub: Callable[[Any], Any]
    env_prefix: str
    default_port: int
    default_metrics_port: int


def _full_name(module: Any, service: str) -> str:
    return str(module.DESCRIPTOR.services_by_name[service].full_name)


INGEST = AnalysisService(
    name="ingest",
    package="services.ingest",
    health_name=_full_name(ingest_pb2, "IngestService"),
    stub=ingest_pb2_grpc.IngestServiceStub,
    env_prefix="INGEST_",
    default_port=50051,
    default_metrics_port=9101,
)
SCENE = AnalysisService(
    name="scene",
    package="services.scene",
    health_name=_full_name(scene_pb2, "SceneService"),
    stub=scene_pb2_grpc.SceneServiceStub,
    env_prefix="SCENE_",
    default_port=50052,
    default_metrics_port=9102,
)
AUDIO = AnalysisService(
    name="audio",
    package="services.audio",
    health_name=_full_name(audio_pb2, "AudioService"),
    stub=audio_pb2_grpc.AudioServiceStub,
    env_prefix="AUDIO_",
    default_port=50053,
    default_metrics_port=9103,
)
TRACKING = AnalysisService(
    name="tracking",
    package="services.tracking",
    health_name=_full_name(tracking_pb2, "TrackingService"),
    stub=tracking_pb2_grpc.TrackingServiceStub,
    env_prefix="TRACKING_",
    default_port=50054,
    default_metrics_port=9104,
)

#: In the order the local stack starts them.
SERVICES: tuple[AnalysisService, ...] = (INGEST, SCENE, AUDIO, TRACKING)
BY_NAME: dict[str, AnalysisService] = {service.name: service for service in SERVICES}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def service(name: str) -> AnalysisService:
    """The service called ``name``; a clear error for an unknown one."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r} (known: {', '.join(NAMES)})") from None
