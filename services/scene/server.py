"""Wires the scene servicer into the shared boot path."""

from __future__ import annotations

from collections.abc import Sequence

from protos.videoanalysis.v1 import scene_pb2, scene_pb2_grpc
from services.common.allocator import retain_freed_memory
from services.common.server import ServiceDefinition
from services.scene.config import SceneSettings
from services.scene.servicer import SceneServicer

SERVICE_NAME = scene_pb2.DESCRIPTOR.services_by_name["SceneService"].full_name


def build_services(settings: SceneSettings) -> Sequence[ServiceDefinition]:
    if settings.retain_freed_memory:
        retain_freed_memory()  # before the server's threads start allocating
    servicer = SceneServicer(settings)
    return [
        ServiceDefinition(
            name=SERVICE_NAME,
            register=lambda server: scene_pb2_grpc.add_SceneServiceServicer_to_server(
                servicer, server
            ),
            load=servicer.load,
            model="transnetv2",
        )
    ]
