"""The Track RPC end to end: a real server, MediaPipe models in worker processes, real media."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.videoanalysis.v1 import common_pb2, tracking_pb2, tracking_pb2_grpc
from services.common import ffmpeg, metrics
from services.common.blocking import CancelToken
from services.common.server import start_server
from services.tracking.config import TrackingSettings
from services.tracking.mesh import FaceMesh, MeshOptions
from services.tracking.pipeline import Summary, TrackingOptions, collect, track_video
from services.tracking.server import SERVICE_NAME, build_services
from services.tracking.servicer import TrackingServicer
from services.tracking.tracker import FaceTracker
from services.tracking.worker import Cadence, run_frames

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

# short_hamilton_clip.mp4 in ffmpeg's constant-rate numbering (the stream starts 25 frames after
# the container): the speaker on stage fills frames 107-235, the audience follows.
SPEAKER_SHOT = range(110, 233)


def _area(face: tracking_pb2.TrackedFace) -> float:
    return (face.bbox.x_max - face.bbox.x_min) * (face.bbox.y_max - face.bbox.y_min)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_ready_means_every_worker_loaded_its_models(tracking_server) -> None:
    async with grpc.aio.insecure_channel(tracking_server.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    pids = tracking_server.servicer.pool.pids()
    assert len(pids) == 2 and os.getpid() not in pids


@pytest.mark.parametrize(("image", "faces"), [("two_people.jpg", 2), ("obama.jpg", 1)])
async def test_a_still_image_is_a_one_frame_video(
    tracking_stub, run_track, tracking_media: Path, image: str, faces: int
) -> None:
    import cv2

    height, width = cv2.imread(str(tracking_media / image)).shape[:2]
    _, frames, summary = await run_track(tracking_stub, image, include_landmarks=True)
    assert [f.frame_index for f in frames] == [0]
    assert frames[0].time_s == 0.0
    assert (summary.frame_count, summary.width, summary.height) == (1, width, height)
    found = frames[0].faces
    assert len(found) == faces == summary.faces_total == len(summary.tracks)
    assert len({f.track_id for f in found}) == faces
    for face in found:
        box = face.bbox
        assert 0 <= box.x_min < box.x_max <= width and 0 <= box.y_min < box.y_max <= height
        assert box.x_min < face.centroid_x < box.x_max and box.y_min < face.centroid_y < box.y_max
        assert face.confidence > 0.9
        assert abs(face.pose.yaw) < 25 and abs(face.pose.pitch) < 25 and abs(face.pose.roll) < 25
        assert 0.0 <= face.jaw_open <= 1.0 and face.mouth_openness >= 0.0
        points = np.array([(p.x, p.y, p.z) for p in face.landmarks])
        assert points.shape == (468, 3)
        # The box is the landmarks' extent (within the frame).
        assert points[:, 0].min() == pytest.approx(box.x_min, abs=0.5)
        assert points[:, 1].max() == pytest.approx(box.y_max, abs=0.5)
    if faces == 2:
        # Faces come left to right.
        assert found[0].centroid_x < found[1].centroid_x


async def test_a_rotated_video_is_tracked_upright(tracking_stub, run_track) -> None:
    _, frames, summary = await run_track(tracking_stub, "rotated.mp4")
    assert (summary.width, summary.height, summary.frame_count) == (562, 330, 5)
    assert summary.fps == pytest.approx(5.0)
    # Sideways faces are not found: two faces on every frame means the frames were upright.
    assert [len(f.faces) for f in frames] == [2] * 5
    assert all(
        0 <= f.bbox.x_max <= 562 and 0 <= f.bbox.y_max <= 330 for x in frames for f in x.faces
    )


async def test_a_real_clip_streams_every_frame_and_the_speaker_keeps_one_id(
    tracking_stub, run_track
) -> None:
    counter = metrics.FRAMES_PROCESSED.labels("tracking")
    before = counter._value.get()
    steps, frames, summary = await run_track(
        tracking_stub, "short_hamilton_clip.mp4", batch_frames=64
    )
    assert [f.frame_index for f in frames] == list(range(300))
    assert summary.frame_count == 300 and summary.workers == 2
    assert (summary.width, summary.height) == (640, 360)
    assert summary.fps == pytest.approx(29.97, abs=0.01)
    assert frames[150].time_s == pytest.approx(150 / summary.fps)
    done = [p.done for p in steps]
    assert done == sorted(done) and done[-1] == 300 and all(p.unit == "frames" for p in steps)
    assert counter._value.get() - before == 300

    speaker_ids = set()
    for index in SPEAKER_SHOT:
        faces = frames[index].faces
        assert faces, f"no face on frame {index}"
        speaker_ids.add(max(faces, key=_area).track_id)
    assert len(speaker_ids) == 1, speaker_ids
    (speaker,) = speaker_ids
    info = {t.track_id: t for t in summary.tracks}[speaker]
    assert info.first_frame <= SPEAKER_SHOT[0] and info.last_frame >= SPEAKER_SHOT[-1]
    # The summary agrees with the frames.
    seen: dict[str, list[int]] = {}
    for frame in frames:
        for face in frame.faces:
            seen.setdefault(face.track_id, []).append(frame.frame_index)
    assert summary.faces_total == sum(len(v) for v in seen.values())
    assert {t.track_id: (t.first_frame, t.last_frame, t.frames_seen) for t in summary.tracks} == {
        k: (v[0], v[-1], len(v)) for k, v in seen.items()
    }
    # He raps: his lips move.
    openness = [
        f.mouth_openness for i in SPEAKER_SHOT for f in frames[i].faces if f.track_id == speaker
    ]
    assert float(np.std(openness)) > 0.005 and max(openness) < 0.5
    # No landmarks unless asked.
    assert all(not f.landmarks for frame in frames for f in frame.faces)


async def test_one_or_two_workers_give_the_same_faces_and_ids(tracking_stub, run_track) -> None:
    _, one, summary_one = await run_track(tracking_stub, "short_hamilton_clip.mp4", workers=1)
    _, two, summary_two = await run_track(tracking_stub, "short_hamilton_clip.mp4", workers=2)
    assert (summary_one.workers, summary_two.workers) == (1, 2)
    # Chunks do not depend on the worker count, and results only on the chunks.
    assert list(summary_one.tracks) == list(summary_two.tracks)
    assert [list(f.faces) for f in one] == [list(f.faces) for f in two]


def _track_in_chunks(pool, path: Path, chunk_frames: int) -> tuple[list, Summary]:
    options = TrackingOptions(
        workers=2, chunk_frames=chunk_frames, chunks_per_worker=0, overlap_frames=2
    )
    return collect(track_video(path, options, pool, CancelToken()))


def _track_uninterrupted(path: Path) -> list[list[str]]:
    """The reference: every frame through one graph in this process, then the tracker (the
    frames decoded as the service decodes them: I420, converted to RGB by the worker code)."""
    decoded = np.stack(list(ffmpeg.iter_frames(path, 640, 360, pix_fmt="yuv420p")))
    mesh = FaceMesh(MeshOptions())
    try:
        result = run_frames(
            mesh, decoded, first_frame=0, preroll=0, out_width=640, out_height=360,
            cadence=Cadence(), include_landmarks=False, yuv=True,
        )  # fmt: skip
    finally:
        mesh.close()
    tracker = FaceTracker()
    ids, row = [], 0
    for index, count in enumerate(result.counts.tolist()):
        boxes = result.features[row : row + count, :4]
        row += count
        found = tracker.update(index, boxes, new_shot=bool(result.cuts[index]))
        # Faces come left to right, as the service lists them.
        order = np.argsort(result.features[row - count : row, 4], kind="stable")
        ids.append([found[i] for i in order])
    return ids


async def test_chunk_edges_keep_faces_and_ids(tracking_server, tracking_media: Path) -> None:
    """Cut into 16-frame chunks (18 edges, several inside the speaker's shot and inside the
    audience shot, where a face is only followed, never detected), the clip gives the faces and
    ids of one uninterrupted run over all frames."""
    path = tracking_media / "short_hamilton_clip.mp4"
    reference = await asyncio.to_thread(_track_uninterrupted, path)
    chunked, summary = await asyncio.to_thread(
        _track_in_chunks, tracking_server.servicer.pool, path, 16
    )
    assert summary.repaired_chunks >= 1  # some edges needed the previous chunk's faces
    assert len(chunked) == len(reference) == 300
    same = sum(
        [f.track_id for f in frame.faces] == ids
        for frame, ids in zip(chunked, reference, strict=True)
    )
    assert same >= 0.98 * len(reference)
    assert abs(summary.faces_total - sum(len(ids) for ids in reference)) <= 3
    speaker = {
        max(
            chunked[i].faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])
        ).track_id
        for i in SPEAKER_SHOT
    }
    assert len(speaker) == 1


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("notes.txt", grpc.StatusCode.FAILED_PRECONDITION, "not a readable media file"),
        ("truncated.mp4", grpc.StatusCode.FAILED_PRECONDITION, "not a readable media file"),
        ("conv_dev_1.wav", grpc.StatusCode.FAILED_PRECONDITION, "no video stream"),
        ("missing.mp4", grpc.StatusCode.NOT_FOUND, "no such media"),
        ("../outside.mp4", grpc.StatusCode.INVALID_ARGUMENT, ".."),
    ],
)
async def test_bad_media_is_refused_precisely(tracking_stub, run_track, path, code, words) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_track(tracking_stub, path)
    assert info.value.code() == code
    assert words in info.value.details()


async def test_a_file_cut_short_gives_its_frames_and_a_warning(
    tracking_stub, run_track, caplog
) -> None:
    """ffmpeg ends a truncated file without an error: the frames that decode are tracked, and
    the log says how many of the declared ones were missing."""
    with caplog.at_level(logging.WARNING, logger="services.tracking.pipeline"):
        _, frames, summary = await run_track(tracking_stub, "cut_short.mp4")
    assert 100 < summary.frame_count == len(frames) < 250
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cut_short.mp4: only" in w and "truncated" in w for w in warnings), warnings


@pytest.mark.parametrize(
    "fields",
    [{"max_faces": 99}, {"min_detection_confidence": 1.5}, {"workers": -1}, {"batch_frames": 5000}],
)
async def test_bad_request_values_are_invalid_arguments(tracking_stub, run_track, fields) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_track(tracking_stub, "obama.jpg", **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert next(iter(fields)) in info.value.details()


async def test_a_detection_threshold_below_the_near_miss_score_is_served(
    tracking_stub, run_track
) -> None:
    """A request's lower detection threshold leaves no room for near misses under it: they are
    off for that request, which runs as asked."""
    _, frames, summary = await run_track(tracking_stub, "obama.jpg", min_detection_confidence=0.3)
    assert summary.frame_count == 1 and len(frames[0].faces) == 1


async def test_cancelling_stops_the_workers_and_the_decoder(
    tracking_server, tracking_stub, run_track, ffmpeg_children
) -> None:
    """A client reading a long video (1825 frames, several seconds of work) cancels: within a
    second both worker processes are idle and the ffmpeg decoder is gone."""
    pids = tracking_server.servicer.pool.pids()
    call = tracking_stub.Track(
        tracking_pb2.TrackRequest(media=common_pb2.MediaRef(path="cuts_dev_1.mp4"))
    )
    received = 0
    midway = asyncio.Event()

    async def read() -> None:
        nonlocal received
        async for reply in call:
            if reply.HasField("frames"):
                received += len(reply.frames.frames)
                if received >= 100:
                    midway.set()

    reader = asyncio.create_task(read())
    await asyncio.wait_for(midway.wait(), timeout=60)
    start = sum(_cpu_seconds(p) for p in pids)
    await asyncio.sleep(1.0)
    working = sum(_cpu_seconds(p) for p in pids) - start
    assert working > 0.1, "the workers should be busy mid-video"
    assert ffmpeg_children(), "ffmpeg should be decoding mid-video"
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await asyncio.sleep(1.0)
    idle_from = sum(_cpu_seconds(p) for p in pids)
    await asyncio.sleep(1.0)
    assert sum(_cpu_seconds(p) for p in pids) - idle_from < 0.03
    assert ffmpeg_children() == []
    assert received < 1825
    # The pool serves the next request normally.
    _, frames, _ = await run_track(tracking_stub, "obama.jpg")
    assert len(frames[0].faces) == 1


async def test_a_dead_worker_fails_the_request_and_is_replaced(
    tracking_server, tracking_stub, run_track
) -> None:
    pool = tracking_server.servicer.pool
    victim = pool.pids()[0]
    call = tracking_stub.Track(
        tracking_pb2.TrackRequest(media=common_pb2.MediaRef(path="cuts_dev_1.mp4"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for reply in call:
            if reply.HasField("frames") and victim in pool.pids():
                os.kill(victim, signal.SIGKILL)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "worker died" in info.value.details()
    _, frames, summary = await run_track(tracking_stub, "two_people.jpg")
    assert len(frames[0].faces) == 2 and summary.workers == 2
    assert victim not in pool.pids() and len(pool.pids()) == 2


@pytest.mark.allow_error_logs
async def test_workers_that_cannot_load_the_models_fail_requests(
    tracking_media: Path, tmp_path: Path
) -> None:
    settings = TrackingSettings(
        port=0, metrics_port=-1, media_root=tracking_media, workers=1, model_root=tmp_path
    )
    servicer = TrackingServicer(settings)
    running = await start_server(settings, build_services(settings, servicer))
    try:
        with pytest.raises(Exception, match="could not load the face models"):
            await running.mark_ready()
        async with grpc.aio.insecure_channel(running.address) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            )
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = tracking_pb2_grpc.TrackingServiceStub(channel)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.Track(
                    tracking_pb2.TrackRequest(media=common_pb2.MediaRef(path="obama.jpg"))
                ):
                    pass
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "could not load the face models" in info.value.details()
        assert str(tmp_path) in info.value.details()
        assert time.monotonic() - started < 5
    finally:
        await running.stop(0)
        servicer.close()
