"""Wires the tracking servicer into the shared boot path."""

from __future__ import annotations

from collections.abc import Sequence

from protos.videoanalysis.v1 import tracking_pb2, tracking_pb2_grpc
from services.common.server import ServiceDefinition
from services.tracking.config import TrackingSettings
from services.tracking.servicer import TrackingServicer

SERVICE_NAME = tracking_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name


def build_services(
    settings: TrackingSettings, servicer: TrackingServicer | None = None
) -> Sequence[ServiceDefinition]:
    """The tracking service; readiness waits until every worker process has loaded its models."""
    servicer = servicer or TrackingServicer(settings)
    return [
        ServiceDefinition(
            name=SERVICE_NAME,
            register=lambda server: tracking_pb2_grpc.add_TrackingServiceServicer_to_server(
                servicer, server
            ),
            load=servicer.load,
            model="mediapipe-face-mesh",
            close=servicer.close,
        )
    ]
