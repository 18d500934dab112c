"""Tracking service vs the naive MediaPipe loop, in one run.

``python -m benchmarks.tracking --video PATH [--workers N] [--repeat N] [--landmarks]``

Starts the real service (``python -m services.tracking``) as a child process on a free port, waits
for readiness (models loaded), and streams ``Track`` over gRPC. In the same run it times the naive
reference: one process decoding with OpenCV and running MediaPipe's ``FaceMesh`` in video mode on
every full-resolution frame, at most 5 faces. The same loop is also fed the very pixels the service
sees (ffmpeg's pipe, decoding in a child process alongside): OpenCV's colour conversion differs by
a level here and there, enough to change which borderline faces MediaPipe keeps, so recall is
measured against that run (like with like); recall against the OpenCV run is reported too. Frames
are numbered like the service's (ffmpeg's constant-rate output from the container's start). Prints
one JSON line:

* ``service_fps`` and ``naive_fps`` (best of the repeats; wall clock, decoding included) and
  their ``ratio``; ``ratio_median_paired``, the median over repeats of each repeat's ratio;
  ``naive_ffmpeg_fed_fps`` and ``ratio_vs_ffmpeg_fed`` for the second loop;
* ``faces_per_frame`` and ``faces`` of the service and the naive loop, ``tracks`` (the service's
  track count);
* ``recall``: the share of the naive loop's faces that the service also reports in the same frame
  (boxes paired by the Hungarian method, IoU >= 0.5); ``recall_vs_deduplicated_naive`` counts a
  face the naive loop follows twice (``naive_duplicates``) once, as the service reports it;
* ``service_only``: the service's faces the naive loop does not have, as ``[frame, track_id]``
  (check them with ``python -m services.tracking.overlay --frames ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
from scipy.optimize import linear_sum_assignment

from orchestrator.stack import LocalStack
from protos.videoanalysis.v1 import common_pb2, tracking_pb2, tracking_pb2_grpc
from services.common import ffmpeg
from services.tracking.geometry import FEATURES, iou_matrix, suppress_duplicates


def _frame_offset(path: Path, fps: float) -> int:
    """How many frames ffmpeg's constant-rate output (the service's frame numbering) puts before
    the first decoded frame: the video stream may start after the container (audio first)."""
    command = [
        "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
        "stream=start_time:format=start_time", "-of", "json", str(path),
    ]  # fmt: skip
    data = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    stream = float((data.get("streams") or [{}])[0].get("start_time", 0) or 0)
    container = float(data.get("format", {}).get("start_time", 0) or 0)
    return max(0, round((stream - container) * fps))


def _opencv_frames(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise RuntimeError(f"OpenCV cannot open {path}")
    offset = _frame_offset(path, capture.get(cv2.CAP_PROP_FPS) or 0.0)
    index = offset
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def _ffmpeg_frames(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    info = ffmpeg.probe(path)
    width, height = info.display_size
    yield from enumerate(ffmpeg.iter_frames(path, width, height))


def naive_loop(path: Path, decoder: str) -> tuple[float, dict[int, np.ndarray]]:
    """The reference: MediaPipe's FaceMesh (video mode, 5 faces) on every full-resolution frame,
    in this process. Returns frames per second (decoding included) and each frame's face boxes
    (landmark extents, like the service), keyed by the service's frame numbers.

    ``decoder`` "ffmpeg" feeds it the very pixels the service sees (ffmpeg's pipe, a child
    process decoding alongside); "opencv" decodes in this process, whose colour conversion differs
    slightly, enough to change which borderline faces either side keeps.
    """
    import mediapipe as mp

    frames = _ffmpeg_frames(path) if decoder == "ffmpeg" else _opencv_frames(path)
    boxes: dict[int, np.ndarray] = {}
    started = time.perf_counter()
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=5) as mesh:
        for index, frame in frames:
            height, width = frame.shape[:2]
            result = mesh.process(frame)
            frame_boxes = []
            for face in result.multi_face_landmarks or []:
                xy = np.array([(p.x * width, p.y * height) for p in face.landmark])
                lo = np.clip(xy.min(axis=0), 0, [width, height])
                hi = np.clip(xy.max(axis=0), 0, [width, height])
                frame_boxes.append([lo[0], lo[1], hi[0], hi[1]])
            boxes[index] = np.array(frame_boxes, dtype=np.float64).reshape(-1, 4)
    elapsed = time.perf_counter() - started
    return len(boxes) / elapsed, boxes


async def service_run(
    address: str, media_path: str, workers: int, landmarks: bool
) -> tuple[float, dict[int, list[tuple[str, np.ndarray]]], tracking_pb2.TrackSummary]:
    faces: dict[int, list[tuple[str, np.ndarray]]] = {}
    summary = tracking_pb2.TrackSummary()
    frames = 0
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    ) as channel:
        stub = tracking_pb2_grpc.TrackingServiceStub(channel)
        request = tracking_pb2.TrackRequest(
            media=common_pb2.MediaRef(path=media_path), workers=workers, include_landmarks=landmarks
        )
        started = time.perf_counter()
        async for response in stub.Track(request):
            if response.HasField("frames"):
                for frame in response.frames.frames:
                    frames += 1
                    faces[frame.frame_index] = [
                        (
                            f.track_id,
                            np.array([f.bbox.x_min, f.bbox.y_min, f.bbox.x_max, f.bbox.y_max]),
                        )
                        for f in frame.faces
                    ]
            elif response.HasField("summary"):
                summary = response.summary
        elapsed = time.perf_counter() - started
    return frames / elapsed, faces, summary


def _deduplicated(boxes: np.ndarray) -> np.ndarray:
    """One box per face, by the service's own rule (overlapping or nested boxes of a frame)."""
    features = np.zeros((len(boxes), len(FEATURES)), np.float32)
    features[:, :4] = boxes
    features[:, 6] = 1.0
    return boxes[suppress_duplicates(features)]


def compare(
    naive: dict[int, np.ndarray],
    service: dict[int, list[tuple[str, np.ndarray]]],
    min_iou: float = 0.5,
) -> tuple[float, list[list]]:
    """Recall of the naive faces and the faces only the service reports (on the naive's frames)."""
    total = matched = 0
    service_only: list[list] = []
    for index, reference in sorted(naive.items()):
        ours = service.get(index, [])
        total += len(reference)
        used: set[int] = set()
        if len(reference) and ours:
            overlap = iou_matrix(reference, np.array([box for _, box in ours]))
            rows, cols = linear_sum_assignment(-overlap)
            for row, col in zip(rows, cols, strict=True):
                if overlap[row, col] >= min_iou:
                    matched += 1
                    used.add(int(col))
        service_only += [[index, track_id] for i, (track_id, _) in enumerate(ours) if i not in used]
    return (matched / total if total else 1.0), service_only


def run_benchmark(args: argparse.Namespace) -> dict:
    video = Path(args.video).resolve()
    runs: dict[str, list[float]] = {"service": [], "naive": [], "naive_ffmpeg_fed": []}
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as logs:
        stack = LocalStack(video.parent, Path(logs))
        try:
            address = asyncio.run(stack.start(["tracking"], timeout_s=180))["tracking"]
            for _ in range(args.repeat):
                fps, opencv_boxes = naive_loop(video, "opencv")
                runs["naive"].append(fps)
                fps, ffmpeg_boxes = naive_loop(video, "ffmpeg")
                runs["naive_ffmpeg_fed"].append(fps)
                fps, faces, summary = asyncio.run(
                    service_run(address, video.name, args.workers, args.landmarks)
                )
                runs["service"].append(fps)
        finally:
            asyncio.run(stack.stop(30))
    best = {name: max(values) for name, values in runs.items()}
    recall, service_only = compare(ffmpeg_boxes, faces)
    deduplicated = {i: _deduplicated(b) for i, b in ffmpeg_boxes.items()}
    recall_deduplicated, _ = compare(deduplicated, faces)
    recall_opencv, _ = compare(opencv_boxes, faces)
    naive_faces = sum(len(b) for b in ffmpeg_boxes.values())
    service_faces = sum(len(f) for f in faces.values())
    return {
        "video": video.name,
        "frames": len(faces),
        "workers": summary.workers,
        "service_fps": round(best["service"], 1),
        "naive_fps": round(best["naive"], 1),
        "ratio": round(best["service"] / best["naive"], 2),
        # Each repeat runs both sides back to back: the median of those ratios is less
        # sensitive to other load on the machine than the ratio of the bests.
        "ratio_median_paired": round(
            float(np.median([a / b for a, b in zip(runs["service"], runs["naive"], strict=True)])),
            2,
        ),
        "naive_ffmpeg_fed_fps": round(best["naive_ffmpeg_fed"], 1),
        "ratio_vs_ffmpeg_fed": round(best["service"] / best["naive_ffmpeg_fed"], 2),
        "runs_fps": {name: [round(v, 1) for v in values] for name, values in runs.items()},
        "faces_per_frame": {
            "service": round(service_faces / max(1, len(faces)), 3),
            "naive": round(naive_faces / max(1, len(ffmpeg_boxes)), 3),
        },
        "faces": {"service": service_faces, "naive": naive_faces},
        "tracks": len(summary.tracks),
        "recall": round(recall, 4),
        # The naive loop sometimes follows one face twice (two overlapping meshes); the service
        # reports such a face once. Recall against the naive faces counted once:
        "naive_duplicates": sum(len(ffmpeg_boxes[i]) - len(deduplicated[i]) for i in deduplicated),
        "recall_vs_deduplicated_naive": round(recall_deduplicated, 4),
        "recall_vs_opencv_decoded": round(recall_opencv, 4),
        "service_only": service_only,
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "cores": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, help="a video or image file")
    parser.add_argument("--workers", type=int, default=0, help="service workers (0: every core)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side; the best counts")
    parser.add_argument(
        "--landmarks", action="store_true", help="ask the service for landmarks too"
    )
    args = parser.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    print(json.dumps(run_benchmark(args)))


if __name__ == "__main__":
    main()
