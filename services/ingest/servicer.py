"""gRPC adapter of the ingest service: protos in, domain calls, protos out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc

from protos.videoanalysis.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc
from services.common import ffmpeg, metrics
from services.common.blocking import CancelToken, iterate_in_thread
from services.common.errors import InvalidArgument, UndecodableMedia
from services.common.media import MediaRoot
from services.common.readiness import WarmUp
from services.common.rpc import cancel_token, mapped_errors, progress, video_info_proto
from services.ingest.archive import (
    Event,
    ExtractionLimits,
    ExtractionResult,
    ExtractProgress,
    MemberOutcome,
    MemberStatus,
    extract_archive,
)
from services.ingest.config import IngestSettings
from services.ingest.normalize import (
    EncoderSupport,
    NormalizeOptions,
    NormalizeOutcome,
    NormalizeProgress,
    default_output,
    detect_encoders,
    normalize_video,
)
from services.ingest.probe import describe

_STATUS = {
    MemberStatus.EXTRACTED: ingest_pb2.MemberOutcome.STATUS_EXTRACTED,
    MemberStatus.SKIPPED: ingest_pb2.MemberOutcome.STATUS_SKIPPED,
    MemberStatus.FAILED: ingest_pb2.MemberOutcome.STATUS_FAILED,
}


class IngestServicer(WarmUp, ingest_pb2_grpc.IngestServiceServicer):
    loading = "the ingest service (ffmpeg and its encoders)"

    def __init__(self, settings: IngestSettings) -> None:
        self._settings = settings
        self._media = MediaRoot(settings.media_root)
        self._encoders: EncoderSupport | None = None
        self._encode_slots = asyncio.Semaphore(max(settings.max_concurrent_encodes, 1))

    def warm_up(self) -> None:
        """Readiness needs ffmpeg and ffprobe on the PATH and a working H.264 encoder."""
        ffmpeg.require_binary("ffmpeg")
        ffmpeg.require_binary("ffprobe")
        self._encoders = detect_encoders()

    # -- Probe --

    async def Probe(
        self, request: ingest_pb2.ProbeRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.ProbeResponse:
        async with mapped_errors(context):
            path = self._media.resolve(request.media.path)
            if not path.is_file():
                raise UndecodableMedia(f"not a media file: {request.media.path}")
            info, _timing = await asyncio.to_thread(describe, path)
            return ingest_pb2.ProbeResponse(info=video_info_proto(info))

    # -- ExtractArchive --

    def _limits(self, request: ingest_pb2.ExtractArchiveRequest) -> ExtractionLimits:
        asked = request.limits
        settings = self._settings
        return ExtractionLimits(
            max_total_bytes=asked.max_total_bytes or settings.max_archive_bytes,
            max_members=asked.max_members or settings.max_archive_members,
            max_member_ratio=asked.max_member_ratio or settings.max_member_ratio,
            max_member_bytes=asked.max_member_bytes or settings.max_member_bytes,
        )

    def _member_proto(self, outcome: MemberOutcome) -> ingest_pb2.MemberOutcome:
        metrics.ARCHIVE_MEMBERS.labels(outcome.status.value).inc()
        return ingest_pb2.MemberOutcome(
            member_name=outcome.name,
            status=_STATUS[outcome.status],
            output_path=self._media.relative(outcome.output) if outcome.output else "",
            reason=outcome.reason,
            message=outcome.message,
            size_bytes=outcome.size_bytes,
            renamed=outcome.renamed,
        )

    def _result_proto(self, result: ExtractionResult) -> ingest_pb2.ExtractArchiveResult:
        return ingest_pb2.ExtractArchiveResult(
            project_name=result.project_name,
            project_dir=self._media.relative(result.project_dir),
            videos=[self._media.relative(v) for v in result.videos],
            extracted_count=result.extracted_count,
            skipped_count=result.skipped_count,
            failed_count=result.failed_count,
            source_deleted=result.source_deleted,
            total_bytes=result.total_bytes,
            complete=result.complete,
            errors=[
                common_pb2.ErrorDetail(reason=p.reason, message=p.message, subject=p.subject)
                for p in result.problems
            ],
            archive_format=result.archive_format,
        )

    async def ExtractArchive(
        self, request: ingest_pb2.ExtractArchiveRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ingest_pb2.ExtractArchiveResponse]:
        async with mapped_errors(context):
            archive = self._media.resolve(request.archive.path)
            if request.output_dir:
                output_dir = self._media.resolve(request.output_dir, must_exist=False)
                if output_dir.exists() and not output_dir.is_dir():
                    raise InvalidArgument(f"output_dir is not a folder: {request.output_dir}")
            else:
                output_dir = archive.parent
            limits = self._limits(request)
            token = cancel_token(context)

            def produce(token: CancelToken) -> Iterator[Event]:
                return extract_archive(
                    archive,
                    output_dir,
                    limits=limits,
                    project_name=request.project_name or None,
                    delete_source=request.delete_source_on_success,
                    keyword=self._settings.project_keyword,
                    token=token,
                )

            events = iterate_in_thread(produce, token)
            async with contextlib.aclosing(events):
                async for event in events:
                    if isinstance(event, ExtractProgress):
                        yield ingest_pb2.ExtractArchiveResponse(
                            progress=progress(
                                event.done_bytes,
                                event.total_bytes,
                                "bytes",
                                "extract",
                                event.current,
                            )
                        )
                    elif isinstance(event, MemberOutcome):
                        yield ingest_pb2.ExtractArchiveResponse(member=self._member_proto(event))
                    else:
                        yield ingest_pb2.ExtractArchiveResponse(result=self._result_proto(event))

    # -- NormalizeVideo --

    def _output_path(
        self, request: ingest_pb2.NormalizeVideoRequest, source: Path, fps: float
    ) -> Path:
        if request.output_path:
            return self._media.resolve(request.output_path, must_exist=False)
        return default_output(source, fps)

    async def NormalizeVideo(
        self, request: ingest_pb2.NormalizeVideoRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ingest_pb2.NormalizeVideoResponse]:
        async with mapped_errors(context):
            source = self._media.resolve(request.media.path)
            if not source.is_file():
                raise UndecodableMedia(f"not a media file: {request.media.path}")
            settings = self._settings
            options = NormalizeOptions(
                target_fps=request.target_fps or settings.target_fps,
                encoder=request.encoder or settings.encoder,
                force=request.force,
                x264_preset=settings.x264_preset,
                crf=settings.crf,
                nvenc_preset=settings.nvenc_preset,
                nvenc_cq=settings.nvenc_cq,
                audio_bitrate=settings.audio_bitrate,
            )
            output = self._output_path(request, source, options.target_fps)
            self.require_ready()
            if self._encode_slots.locked():
                yield ingest_pb2.NormalizeVideoResponse(
                    progress=progress(0, 0, "frames", "queued", "waiting for a free encoder")
                )
            async with self._encode_slots:
                events = normalize_video(source, output, options, self._encoders)
                async with contextlib.aclosing(events):
                    async for event in events:
                        if isinstance(event, NormalizeProgress):
                            yield ingest_pb2.NormalizeVideoResponse(
                                progress=progress(
                                    event.frames_done,
                                    event.frames_total,
                                    "frames",
                                    event.stage,
                                    event.message,
                                )
                            )
                        elif isinstance(event, NormalizeOutcome):
                            if event.reencoded:
                                metrics.FRAMES_PROCESSED.labels("ingest").inc(
                                    event.info.frame_count
                                )
                            yield ingest_pb2.NormalizeVideoResponse(
                                result=self._normalize_result(event)
                            )

    def _normalize_result(self, outcome: NormalizeOutcome) -> ingest_pb2.NormalizeVideoResult:
        return ingest_pb2.NormalizeVideoResult(
            output=common_pb2.MediaRef(path=self._media.relative(outcome.output)),
            info=video_info_proto(outcome.info),
            reencoded=outcome.reencoded,
            encoder=outcome.encoder,
            audio_mode=outcome.audio_mode,
        )
