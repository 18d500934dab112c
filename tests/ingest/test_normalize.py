"""NormalizeVideo through a real server on the shared test media and synthetic clips."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest

from protos.videoanalysis.v1 import common_pb2, ingest_pb2
from services.common import ffmpeg
from services.ingest.normalize import (
    EncoderSupport,
    NormalizeOptions,
    NormalizeOutcome,
    detect_encoders,
    is_normalized,
    normalize_video,
)
from services.ingest.probe import FrameTiming, describe

pytestmark = pytest.mark.slow


async def normalize(stub, path: str, **fields) -> tuple[list, ingest_pb2.NormalizeVideoResult]:
    request = ingest_pb2.NormalizeVideoRequest(media=common_pb2.MediaRef(path=path), **fields)
    progress, results = [], []
    async for reply in stub.NormalizeVideo(request):
        if reply.HasField("progress"):
            progress.append(reply.progress)
        else:
            results.append(reply.result)
    assert len(results) == 1
    return progress, results[0]


def streams(path: Path) -> dict[str, dict]:
    """ffprobe's view of the first video and audio streams (start, duration, frames, rates)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-count_packets", "-of", "json", str(path)],
        capture_output=True,
        check=True,
    ).stdout
    found: dict[str, dict] = {}
    for stream in json.loads(out)["streams"]:
        found.setdefault(stream["codec_type"], stream)
    return found


def make(*args: str) -> None:
    """Runs ffmpeg to make a test input."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_cfr(path: Path, fps: float = 25.0) -> FrameTiming:
    info, timing = describe(path)
    assert timing is not None and timing.constant, timing
    assert timing.fps == pytest.approx(fps, abs=1e-6)
    assert info.video_codec == "h264" and info.pixel_format == "yuv420p"
    return timing


async def test_testvideo_becomes_exactly_25_fps_cfr(stub, put_media, media_root) -> None:
    source = put_media("video/testvideo.mp4")
    before = sha256(media_root / source)
    progress, result = await normalize(stub, source)
    assert result.output.path == "testvideo_25fps.mp4"
    output = media_root / result.output.path
    assert sha256(media_root / source) == before  # the original stays as it was
    assert result.reencoded and result.encoder in ("libx264", "h264_nvenc")
    assert result.audio_mode == "none"
    source_video = streams(media_root / source)["video"]
    duration = float(source_video["duration"])  # 24.023 s at 29.97 fps
    video = streams(output)["video"]
    assert video["r_frame_rate"] == video["avg_frame_rate"] == "25/1"
    assert abs(int(video["nb_read_packets"]) - round(duration * 25)) <= 1
    assert float(video["duration"]) == pytest.approx(duration, abs=0.04)
    timing = assert_cfr(output)
    assert result.info.frame_count == timing.frames
    frames = [p for p in progress if p.unit == "frames" and p.stage == "encode"]
    done = [p.done for p in frames]
    assert done == sorted(done) and done[-1] == frames[-1].total == round(duration * 25)
    assert not list(media_root.glob(".*.partial"))


async def test_clip_with_audio_stays_in_sync(stub, put_media, media_root) -> None:
    source = put_media("video/short_hamilton_clip.mp4")
    _, result = await normalize(stub, source)
    assert result.audio_mode == "copy" and result.info.has_audio
    before, after = streams(media_root / source), streams(media_root / result.output.path)
    assert_cfr(media_root / result.output.path)

    def end(stream: dict) -> float:
        return float(stream["start_time"]) + float(stream["duration"])

    # The audio is copied untouched; the video ends where the audio ends, as in the source.
    assert after["audio"]["nb_read_packets"] == before["audio"]["nb_read_packets"]
    gap_before = end(before["video"]) - end(before["audio"])
    gap_after = end(after["video"]) - end(after["audio"])
    assert abs(gap_after - gap_before) <= 0.04
    # The source's video starts 0.84 s after its audio: the CFR output keeps that offset by
    # repeating the first frame, so frame count = (end of video since file start) × 25.
    start = float(before["audio"]["start_time"])
    assert (
        abs(int(after["video"]["nb_read_packets"]) - round((end(before["video"]) - start) * 25))
        <= 1
    )


async def test_flash_and_beep_stay_together(stub, make_video, media_root) -> None:
    """A white flash and a beep at the same instant, in a 29.97 fps video that starts 0.5 s after
    its audio: after normalisation both still happen together."""
    make(
        "-itsoffset",
        "0.5",
        "-f",
        "lavfi",
        "-i",
        "color=black:size=64x48:rate=30000/1001:duration=3,"
        "drawbox=color=white:t=fill:enable='between(t,1.5,1.6)'",
        "-f",
        "lavfi",
        "-i",
        "aevalsrc='if(between(t,2,2.1),sin(2*PI*1000*t),0)':s=48000:d=4",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        str(media_root / "sync.mp4"),
    )
    _, result = await normalize(stub, "sync.mp4")
    output = media_root / result.output.path
    starts = {kind: float(s["start_time"]) for kind, s in streams(output).items()}
    brightness = [frame.mean() for frame in ffmpeg.iter_frames(output, 16, 12)]
    flash = starts["video"] + next(i for i, b in enumerate(brightness) if b > 128) / 25
    samples = ffmpeg.read_audio(output, 16000)
    beep = starts["audio"] + int(np.argmax(np.abs(samples) > 0.1)) / 16000
    assert flash == pytest.approx(2.0, abs=0.05)
    assert abs(flash - beep) <= 0.05  # one output frame; the offset alone would be 0.5 s


async def test_mpeg4_and_webm_inputs(stub, put_media, make_video, media_root) -> None:
    _, result = await normalize(stub, put_media("video/fades.mp4"))
    assert result.reencoded and result.info.video_codec == "h264"  # 25 fps already, but mpeg4
    assert result.info.frame_count == 250
    assert_cfr(media_root / result.output.path)
    webm = make_video(
        "clip.webm",
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "libopus",
        seconds=2,
        audio=True,
    )
    _, result = await normalize(stub, webm)
    # WebM cannot hold H.264: the normalised file is an MP4, its Opus audio becomes AAC.
    assert result.output.path == "clip_25fps.mp4"
    assert (result.info.audio_codec, result.audio_mode) == ("aac", "aac")
    assert abs(result.info.frame_count - 50) <= 1
    assert_cfr(media_root / result.output.path)


async def test_already_normalised_input_is_only_remuxed(stub, make_video, media_root) -> None:
    path = make_video(
        "ready.mp4",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        rate="25",
        seconds=2,
        audio=True,
    )
    _, result = await normalize(stub, path, output_path="out/ready.mkv")
    assert (result.reencoded, result.encoder, result.audio_mode) == (False, "copy", "copy")
    assert result.output.path == "out/ready.mkv"
    assert result.info.container.startswith("matroska")
    assert result.info.frame_count == 50
    _, forced = await normalize(stub, path, output_path="out/forced.mp4", force=True)
    assert forced.reencoded and forced.info.frame_count == 50
    # Headers can claim 25 fps CFR while the timestamps are irregular: that is re-encoded.
    info, timing = describe(media_root / path)
    assert is_normalized(info, timing, 25.0)
    irregular = FrameTiming(timing.frames, timing.start_s, timing.end_s, 0.04, constant=False)
    assert not is_normalized(info, irregular, 25.0)


async def test_odd_sizes_and_other_rates(stub, make_video, media_root) -> None:
    path = make_video("odd.avi", "-c:v", "mpeg4", size="161x121", rate="50", seconds=1)
    _, result = await normalize(stub, path, target_fps=30)
    assert result.output.path == "odd_30fps.mp4"
    assert (result.info.width, result.info.height) == (160, 120)
    assert_cfr(media_root / result.output.path, fps=30)


async def test_cancelling_kills_ffmpeg_and_leaves_nothing(
    stub, put_media, media_root, live_children, ffmpeg_children
) -> None:
    source = put_media("video/testvideo.mp4")
    request = ingest_pb2.NormalizeVideoRequest(media=common_pb2.MediaRef(path=source))
    call = stub.NormalizeVideo(request)
    async for reply in call:
        if reply.HasField("progress") and reply.progress.done > 0:
            break
    encoders = set(ffmpeg_children())
    assert encoders, "ffmpeg should be running mid-encode"
    call.cancel()
    for _ in range(100):
        if not encoders & live_children():
            break
        await asyncio.sleep(0.05)
    assert not encoders & live_children(), "ffmpeg outlived the cancelled RPC"
    for _ in range(40):  # the handler's cleanup runs right after the child is gone
        if not list(media_root.glob(".*partial")):
            break
        await asyncio.sleep(0.05)
    assert sorted(p.name for p in media_root.iterdir()) == ["testvideo.mp4"]


@pytest.mark.parametrize(
    ("path", "fields", "code"),
    [
        ("missing.mp4", {}, grpc.StatusCode.NOT_FOUND),
        ("../outside.mp4", {}, grpc.StatusCode.INVALID_ARGUMENT),
        ("/etc/hostname", {}, grpc.StatusCode.INVALID_ARGUMENT),
        ("notes.txt", {}, grpc.StatusCode.FAILED_PRECONDITION),
        ("tone.wav", {}, grpc.StatusCode.FAILED_PRECONDITION),
        ("still.png", {}, grpc.StatusCode.FAILED_PRECONDITION),
        ("clip.mp4", {"output_path": "clip.mp4"}, grpc.StatusCode.INVALID_ARGUMENT),
        ("clip.mp4", {"output_path": "clip.webm"}, grpc.StatusCode.INVALID_ARGUMENT),
        ("clip.mp4", {"output_path": "../x.mp4"}, grpc.StatusCode.INVALID_ARGUMENT),
        ("clip.mp4", {"target_fps": 500}, grpc.StatusCode.INVALID_ARGUMENT),
        ("clip.mp4", {"encoder": "vp9"}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_bad_requests_get_precise_codes(
    stub, media_root, make_video, path, fields, code
) -> None:
    (media_root / "notes.txt").write_text("not a video")
    make_video("clip.mp4", "-c:v", "libx264", seconds=0.2)
    make("-f", "lavfi", "-i", "sine=d=0.5", str(media_root / "tone.wav"))
    make("-f", "lavfi", "-i", "testsrc2=s=64x48", "-frames:v", "1", str(media_root / "still.png"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await normalize(stub, path, **fields)
    assert info.value.code() == code, info.value.details()
    assert not list(media_root.glob("*_25fps*")) and not list(media_root.glob(".*partial"))


async def test_nvenc_without_a_gpu_is_unavailable(stub, make_video) -> None:
    if detect_encoders().nvenc:
        pytest.skip("this machine has a working NVENC")
    path = make_video("clip.mp4", "-c:v", "libx264", seconds=0.2)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await normalize(stub, path, encoder="h264_nvenc")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_failed_nvenc_falls_back_to_libx264(make_video, media_root) -> None:
    """In "auto" mode an NVENC that fails mid-job (here: claimed present, no GPU) is replaced."""
    if detect_encoders().nvenc:
        pytest.skip("this machine has a working NVENC")
    path = media_root / make_video("clip.mp4", "-c:v", "libx264", seconds=0.5)
    claimed = EncoderSupport(libx264=True, nvenc=True)
    events = [
        e async for e in normalize_video(path, media_root / "out.mp4", NormalizeOptions(), claimed)
    ]
    outcome = events[-1]
    assert isinstance(outcome, NormalizeOutcome) and outcome.encoder == "libx264"
    assert [e.message for e in events[:-1] if getattr(e, "message", "")][:2] == [
        "video h264_nvenc, audio none",
        "video libx264, audio none",
    ]
    assert_cfr(media_root / "out.mp4")
