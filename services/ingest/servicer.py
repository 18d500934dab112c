"""gRPC adapter of the ingest service: protos in, domain calls, protos out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from protos.videoanalysis.v1 import ingest_pb2, ingest_pb2_grpc
from services.common import ffmpeg
from services.common.media import MediaRoot
from services.common.rpc import mapped_errors, video_info_proto
from services.ingest.config import IngestSettings


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, settings: IngestSettings) -> None:
        self._settings = settings
        self._media = MediaRoot(settings.media_root)

    def warm_up(self) -> None:
        """Readiness needs ffmpeg and ffprobe on the PATH."""
        ffmpeg.require_binary("ffmpeg")
        ffmpeg.require_binary("ffprobe")

    async def Probe(
        self, request: ingest_pb2.ProbeRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.ProbeResponse:
        async with mapped_errors(context):
            path = self._media.resolve(request.media.path)
            info = await asyncio.to_thread(ffmpeg.probe, path)
            return ingest_pb2.ProbeResponse(info=video_info_proto(info))

    async def ExtractArchive(
        self, request: ingest_pb2.ExtractArchiveRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ingest_pb2.ExtractArchiveResponse]:
        raise NotImplementedError
        yield

    async def NormalizeVideo(
        self, request: ingest_pb2.NormalizeVideoRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ingest_pb2.NormalizeVideoResponse]:
        raise NotImplementedError
        yield
