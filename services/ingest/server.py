"""Wires the ingest servicer into the shared boot path."""

from __future__ import annotations

from collections.abc import Sequence

from protos.videoanalysis.v1 import ingest_pb2, ingest_pb2_grpc
from services.common.server import ServiceDefinition
from services.ingest.config import IngestSettings
from services.ingest.servicer import IngestServicer

SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


def build_services(settings: IngestSettings) -> Sequence[ServiceDefinition]:
    servicer = IngestServicer(settings)
    return [
        ServiceDefinition(
            name=SERVICE_NAME,
            register=lambda server: ingest_pb2_grpc.add_IngestServiceServicer_to_server(
                servicer, server
            ),
            load=servicer.load,
            model="ffmpeg",
        )
    ]
