"""Small helpers servicers share: error mapping, cancel tokens tied to an RPC, proto conversions."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import grpc

from protos.videoanalysis.v1 import common_pb2
from services.common.blocking import CancelToken
from services.common.errors import ServiceError, status_code_for
from services.common.ffmpeg import MediaInfo

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the stubs' generics are not subscriptable at run time
    Context = grpc.aio.ServicerContext[Any, Any]
else:
    Context = grpc.aio.ServicerContext


@contextlib.asynccontextmanager
async def mapped_errors(context: Context) -> AsyncIterator[None]:
    """Turns domain errors into ``await context.abort(code, message)``."""
    try:
        yield
    except ServiceError as exc:
        code, message = status_code_for(exc)
        log.info("request failed: %s: %s", code.name, message)
        await context.abort(code, message)


def cancel_token(context: Context) -> CancelToken:
    """A token that is cancelled when the RPC ends (cancel, deadline or done)."""
    token = CancelToken()

    def on_done(_context: Context) -> None:
        token.cancel()

    context.add_done_callback(cast(Any, on_done))  # the stubs want a DoneCallback instance
    return token


def progress(
    done: int, total: int, unit: str, stage: str, message: str = ""
) -> common_pb2.Progress:
    return common_pb2.Progress(done=done, total=total, unit=unit, stage=stage, message=message)


def video_info_proto(info: MediaInfo) -> common_pb2.VideoInfo:
    return common_pb2.VideoInfo(
        duration_s=info.duration_s,
        avg_fps=info.avg_fps,
        real_fps=info.real_fps,
        frame_count=info.frame_count,
        width=info.width,
        height=info.height,
        rotation=info.rotation,
        container=info.container,
        video_codec=info.video_codec,
        audio_codec=info.audio_codec,
        has_audio=info.has_audio,
        is_vfr=info.is_vfr,
        size_bytes=info.size_bytes,
        pixel_format=info.pixel_format,
        audio_sample_rate=info.audio_sample_rate,
        audio_channels=info.audio_channels,
    )
