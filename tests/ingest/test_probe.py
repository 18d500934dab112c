"""Probe through a real server: header values checked against the packet timestamps."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from protos.videoanalysis.v1 import common_pb2, ingest_pb2
from services.common import ffmpeg
from services.ingest.probe import describe

pytestmark = pytest.mark.slow


async def probe(stub, path: str) -> common_pb2.VideoInfo:
    reply = await stub.Probe(ingest_pb2.ProbeRequest(media=common_pb2.MediaRef(path=path)))
    return reply.info


async def test_probe_describes_the_test_videos(stub, put_media) -> None:
    info = await probe(stub, put_media("video/testvideo.mp4"))
    assert (info.width, info.height, info.video_codec) == (1280, 720, "h264")
    assert info.avg_fps == pytest.approx(29.97, abs=0.01)
    assert info.frame_count == 720
    assert info.duration_s == pytest.approx(24.02, abs=0.01)
    assert not info.is_vfr and not info.has_audio
    info = await probe(stub, put_media("video/short_hamilton_clip.mp4"))
    assert info.has_audio and info.audio_codec == "aac" and info.audio_channels == 2
    assert info.frame_count == 275 and not info.is_vfr
    info = await probe(stub, put_media("video/fades.mp4"))
    assert (info.video_codec, info.frame_count, info.avg_fps) == ("mpeg4", 250, 25.0)


async def test_frame_count_is_exact_where_headers_have_none(stub, make_video) -> None:
    # 61 frames over 2 s: Matroska headers carry no frame count (ffprobe's nb_frames is N/A).
    path = make_video(
        "clip.webm",
        "-frames:v",
        "61",
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-pix_fmt",
        "yuv420p",
        seconds=3,
    )
    info = await probe(stub, path)
    assert info.frame_count == 61
    assert info.video_codec == "vp9" and not info.is_vfr


async def test_variable_frame_rate_is_found_in_the_timestamps(stub, make_video, media_root) -> None:
    # Frames 30 ms and 50 ms apart: Matroska headers then say 25.25 fps for both rates, which
    # the header-only probe reads as constant.
    path = make_video(
        "vfr.mkv",
        "-vf",
        "select='eq(mod(n,8),0)+eq(mod(n,8),3)'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        rate="100",
        seconds=4,
    )
    headers_only = ffmpeg.probe(media_root / path)
    assert headers_only.avg_fps == headers_only.real_fps and not headers_only.is_vfr
    info = await probe(stub, path)
    assert info.is_vfr
    assert info.frame_count == 100
    _, timing = describe(media_root / path)
    assert timing is not None and not timing.constant


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("missing.mp4", grpc.StatusCode.NOT_FOUND),
        ("../outside.mp4", grpc.StatusCode.INVALID_ARGUMENT),
        ("/etc/hostname", grpc.StatusCode.INVALID_ARGUMENT),
        ("notes.txt", grpc.StatusCode.FAILED_PRECONDITION),
        ("folder", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_bad_probe_requests(stub, media_root: Path, path: str, code) -> None:
    (media_root / "notes.txt").write_text("not a video")
    (media_root / "folder").mkdir()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await probe(stub, path)
    assert info.value.code() == code, info.value.details()
