"""Wires the audio servicer into the shared boot path."""

from __future__ import annotations

from collections.abc import Sequence

from protos.videoanalysis.v1 import audio_pb2, audio_pb2_grpc
from services.audio.config import AudioSettings
from services.audio.servicer import AudioServicer
from services.common.server import ServiceDefinition

SERVICE_NAME = audio_pb2.DESCRIPTOR.services_by_name["AudioService"].full_name


def build_services(settings: AudioSettings) -> Sequence[ServiceDefinition]:
    servicer = AudioServicer(settings)
    return [
        ServiceDefinition(
            name=SERVICE_NAME,
            register=lambda server: audio_pb2_grpc.add_AudioServiceServicer_to_server(
                servicer, server
            ),
            load=servicer.load,
            model="silero-vad+resemblyzer",
        )
    ]
