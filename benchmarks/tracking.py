"""Tracking service vs the naive MediaPipe loop, in one run.

``python -m benchmarks.tracking --video PATH [--workers N] [--repeat N] [--landmarks]``
``python -m benchmarks.tracking --set FOLDER|INDEX [--half tuning|checking] [--only WORDS]``

With ``--set`` (a dev set of :mod:`benchmarks.devsets.clips`) it prints one JSON line per clip,
then one summary line per half (worst and pooled recall, speed over the whole half and the worst
clip's, track-id switches on the synthetic faces, and which bars are met). Only the tuning half
may be used to choose anything.

Every box is in display pixels: the picture as shown, square pixels (an anamorphic clip's stored
width stretched by its sample aspect ratio), rotation applied; both naive loops are fed such
frames too.

Starts the real service (``python -m services.tracking``) as a child process on a free port, waits
for readiness (models loaded), and streams ``Track`` over gRPC. In the same run it times the naive
reference: one process decoding with OpenCV and running MediaPipe's ``FaceMesh`` in video mode on
every full-resolution frame, at most 5 faces. The same loop is also fed the very pixels the service
sees (ffmpeg's I420 pipe, decoding in a child process alongside, converted to RGB by OpenCV as
the workers convert it): another decoder's colour conversion differs by a level here and there,
enough to change which borderline faces MediaPipe keeps, so recall is measured against that run
(like with like); recall against the OpenCV-decoded run is reported too. Frames
are numbered like the service's (ffmpeg's constant-rate output from the container's start). Prints
one JSON line:

* ``service_fps`` and ``naive_fps`` (best of the repeats; wall clock, decoding included) and
  their ``ratio``; ``ratio_median_paired``, the median over repeats of each repeat's ratio;
  ``naive_ffmpeg_fed_fps`` and ``ratio_vs_ffmpeg_fed`` for the second loop;
* ``faces_per_frame`` and ``faces`` of the service and the naive loop, ``tracks`` (the service's
  track count);
* ``recall``: the share of the naive loop's faces that the service also reports in the same frame
  (boxes paired by the Hungarian method, IoU >= 0.5). A face the naive loop follows twice in one
  frame (two overlapping or nested boxes, ``naive_duplicates``) counts once: the same duplicate
  rule the service applies to its own faces (``geometry.duplicate_groups``) is applied to the
  naive boxes, so both sides are counted alike, and it is found when a service box matches either
  of its boxes (the service keeps the more confident of two meshes, the naive loop's order is
  arbitrary). ``recall_first_box`` matches only the naive loop's first box of such a face (the
  rule before); ``recall_raw`` counts every naive box;
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
from services.tracking.geometry import FEATURES, duplicate_groups, iou_matrix
from services.tracking.pipeline import processing_size


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
    """OpenCV's frames in display pixels: turned upright, anamorphic ones stretched square."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise RuntimeError(f"OpenCV cannot open {path}")
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    display = ffmpeg.probe(path).display_size
    offset = _frame_offset(path, capture.get(cv2.CAP_PROP_FPS) or 0.0)
    index = offset
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            if (bgr.shape[1], bgr.shape[0]) != display:
                bgr = cv2.resize(bgr, display, interpolation=cv2.INTER_AREA)
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def _ffmpeg_frames(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """Display-size frames decoded as the service decodes them: ffmpeg's I420 (even size, so
    an odd display size is rounded by a pixel as the service rounds it), then OpenCV's colour
    conversion, as in the workers."""
    import cv2

    width, height = processing_size(*ffmpeg.probe(path).display_size, max_side=1 << 30)
    for index, frame in enumerate(ffmpeg.iter_frames(path, width, height, pix_fmt="yuv420p")):
        yield index, cv2.cvtColor(frame, cv2.COLOR_YUV2RGB_I420)


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


def _duplicate_groups(boxes: np.ndarray) -> list[list[int]]:
    """The naive boxes of one frame grouped into faces by the service's own duplicate rule
    (overlapping or nested boxes are one face); the naive loop gives no confidences, so each
    group's first box is simply MediaPipe's first."""
    features = np.zeros((len(boxes), len(FEATURES)), np.float32)
    features[:, :4] = boxes
    features[:, 6] = 1.0
    return duplicate_groups(features)


def _deduplicated(boxes: np.ndarray) -> np.ndarray:
    """One box per face (each group's first), by the service's own rule."""
    return boxes[sorted(group[0] for group in _duplicate_groups(boxes))]


def compare(
    naive: dict[int, np.ndarray],
    service: dict[int, list[tuple[str, np.ndarray]]],
    min_iou: float = 0.5,
    *,
    any_duplicate: bool = True,
) -> tuple[float, list[list]]:
    """Recall of the naive faces and the faces only the service reports (on the naive's frames).

    The naive boxes of a frame are first grouped into faces by the duplicate rule: a face is
    found when one service box overlaps (IoU >= ``min_iou``) any of its boxes (with
    ``any_duplicate``; else only its first box counts). When the naive loop follows one face
    twice, which of its two boxes is "the" face is arbitrary (the service keeps the more confident
    one, the naive loop gives no confidence), so either may be matched. Faces and service boxes
    are paired one to one (Hungarian method on the best overlap of each group).
    """
    total = matched = 0
    service_only: list[list] = []
    for index, reference in sorted(naive.items()):
        ours = service.get(index, [])
        groups = _duplicate_groups(reference) if len(reference) else []
        if not any_duplicate:
            groups = [group[:1] for group in groups]
        total += len(groups)
        used: set[int] = set()
        if groups and ours:
            overlap = iou_matrix(reference, np.array([box for _, box in ours]))
            best = np.stack([overlap[group].max(axis=0) for group in groups])
            rows, cols = linear_sum_assignment(-best)
            for row, col in zip(rows, cols, strict=True):
                if best[row, col] >= min_iou:
                    matched += 1
                    used.add(int(col))
        service_only += [[index, track_id] for i, (track_id, _) in enumerate(ours) if i not in used]
    return (matched / total if total else 1.0), service_only


def _raw_recall(
    naive: dict[int, np.ndarray], service: dict[int, list[tuple[str, np.ndarray]]]
) -> float:
    """Recall counting every naive box as a face of its own (duplicates included)."""
    total = matched = 0
    for index, reference in naive.items():
        ours = service.get(index, [])
        total += len(reference)
        if len(reference) and ours:
            overlap = iou_matrix(reference, np.array([box for _, box in ours]))
            rows, cols = linear_sum_assignment(-overlap)
            matched += int((overlap[rows, cols] >= 0.5).sum())
    return matched / total if total else 1.0


def id_switches(
    synthetic: list[dict], service: dict[int, list[tuple[str, np.ndarray]]]
) -> tuple[int, float]:
    """Track-id switches on the synthetic faces (the composer's known boxes) and the share of
    their frames the service found. A face is the synthetic one when its box centre lies inside
    the known box; a switch is a change of the id found there from one found frame to the next."""
    switches = found = total = 0
    for track in synthetic:
        previous: str | None = None
        for frame, box in sorted((int(k), v) for k, v in track["boxes"].items()):
            total += 1
            x0, y0, x1, y1 = box
            inside = [
                track_id for track_id, b in service.get(frame, [])
                if x0 <= (b[0] + b[2]) / 2 <= x1 and y0 <= (b[1] + b[3]) / 2 <= y1
            ]  # fmt: skip
            if not inside:
                continue
            found += 1
            if previous is not None and inside[0] != previous:
                switches += 1
            previous = inside[0]
    return switches, (found / total if total else 1.0)


def clip_figures(
    video: Path,
    runs: dict[str, list[float]],
    opencv_boxes: dict[int, np.ndarray],
    ffmpeg_boxes: dict[int, np.ndarray],
    faces: dict[int, list[tuple[str, np.ndarray]]],
    summary: tracking_pb2.TrackSummary,
    synthetic: list[dict] | None = None,
) -> dict:
    """One clip's figures from its runs (frames per second of each side, per repeat)."""
    best = {name: max(values) for name, values in runs.items()}
    deduplicated = {i: _deduplicated(b) for i, b in ffmpeg_boxes.items()}
    recall, service_only = compare(ffmpeg_boxes, faces)
    recall_first_box, _ = compare(ffmpeg_boxes, faces, any_duplicate=False)
    recall_raw = _raw_recall(ffmpeg_boxes, faces)
    recall_opencv, _ = compare(opencv_boxes, faces)
    naive_faces = sum(len(b) for b in deduplicated.values())
    service_faces = sum(len(f) for f in faces.values())
    figures = {
        "video": video.name,
        "frames": len(faces),
        "size": [summary.width, summary.height],
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
        # The naive loop sometimes follows one face twice (two overlapping meshes); the service
        # reports such a face once. Both sides counted by the service's duplicate rule:
        "recall": round(recall, 4),
        "naive_duplicates": sum(len(ffmpeg_boxes[i]) - len(deduplicated[i]) for i in deduplicated),
        # Each naive face matched by its first box only (the previous rule).
        "recall_first_box": round(recall_first_box, 4),
        "recall_raw": round(recall_raw, 4),
        "recall_vs_opencv_decoded": round(recall_opencv, 4),
        "extra_faces": len(service_only),
        "service_only": service_only,
    }
    if synthetic:
        switches, found = id_switches(synthetic, faces)
        figures["synthetic"] = {"id_switches": switches, "found": round(found, 4)}
    return figures


def measure_clip(
    address: str,
    video: Path,
    relative: str,
    args: argparse.Namespace,
    synthetic: list[dict] | None = None,
) -> dict:
    """Both sides on one clip, ``args.repeat`` times, interleaved."""
    runs: dict[str, list[float]] = {"service": [], "naive": [], "naive_ffmpeg_fed": []}
    for _ in range(args.repeat):
        fps, opencv_boxes = naive_loop(video, "opencv")
        runs["naive"].append(fps)
        fps, faces, summary = asyncio.run(
            service_run(address, relative, args.workers, args.landmarks)
        )
        runs["service"].append(fps)
        fps, ffmpeg_boxes = naive_loop(video, "ffmpeg")
        runs["naive_ffmpeg_fed"].append(fps)
    return clip_figures(video, runs, opencv_boxes, ffmpeg_boxes, faces, summary, synthetic)


def summarise(rows: list[dict]) -> dict:
    """One half's summary: recall per clip (worst) and over every naive face, speed over the
    whole half (total frames over total time, each side) and per clip (worst), id switches."""
    naive_faces = sum(r["faces"]["naive"] for r in rows)
    matched = sum(r["recall"] * r["faces"]["naive"] for r in rows)
    frames = sum(r["frames"] for r in rows)
    service_s = sum(r["frames"] / r["service_fps"] for r in rows)
    naive_s = sum(r["frames"] / r["naive_fps"] for r in rows)
    fed_s = sum(r["frames"] / r["naive_ffmpeg_fed_fps"] for r in rows)
    switches = sum(r.get("synthetic", {}).get("id_switches", 0) for r in rows)
    return {
        "clips": len(rows),
        "frames": frames,
        "recall_min": min(r["recall"] for r in rows),
        "recall_min_clip": min(rows, key=lambda r: r["recall"])["video"],
        "recall_pooled": round(matched / naive_faces, 4) if naive_faces else 1.0,
        "recall_first_box_min": min(r.get("recall_first_box", r["recall"]) for r in rows),
        "recall_raw_min": min(r["recall_raw"] for r in rows),
        "ratio_overall": round(naive_s / service_s, 2),
        "ratio_overall_vs_ffmpeg_fed": round(fed_s / service_s, 2),
        "ratio_min": min(r["ratio"] for r in rows),
        "ratio_min_clip": min(rows, key=lambda r: r["ratio"])["video"],
        "extra_faces": sum(r["extra_faces"] for r in rows),
        "id_switches": switches,
        "bars_met": {
            "recall_every_clip_0.98": all(r["recall"] >= 0.98 for r in rows),
            "ratio_overall_1.5": naive_s / service_s >= 1.5,
            "ratio_every_clip_1.0": all(r["ratio"] >= 1.0 for r in rows),
            "no_id_switch": switches == 0,
        },
    }


def load_set(where: Path) -> tuple[Path, list[dict]]:
    """A dev set's folder and clips, from the folder or its ``index.json``."""
    index = where / "index.json" if where.is_dir() else where
    document = json.loads(index.read_text())
    return index.parent, document["clips"]


def run_set(args: argparse.Namespace) -> None:
    """Every clip of a set (or of ``--half``): one JSON line per clip, then one per half."""
    folder, clips = load_set(Path(args.set).resolve())
    if args.half != "both":
        clips = [c for c in clips if c["half"] == args.half]
    if args.only:
        clips = [c for c in clips if any(word in c["name"] for word in args.only.split(","))]
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as logs:
        stack = LocalStack(folder, Path(logs))
        try:
            address = asyncio.run(stack.start(["tracking"], timeout_s=180))["tracking"]
            for clip in clips:
                figures = measure_clip(
                    address, folder / clip["file"], clip["file"], args, clip["synthetic_faces"]
                )
                figures = {"clip": clip["name"], "half": clip["half"], **figures}
                if not args.verbose:
                    figures.pop("service_only")
                print(json.dumps(figures), flush=True)
                rows.setdefault(clip["half"], []).append(figures)
        finally:
            asyncio.run(stack.stop(30))
    for half, half_rows in rows.items():
        line = {"summary": half, **summarise(half_rows)}
        line["load_avg"] = [round(v, 2) for v in os.getloadavg()]
        line["cores"] = os.cpu_count()
        print(json.dumps(line), flush=True)


def run_benchmark(args: argparse.Namespace) -> dict:
    video = Path(args.video).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as logs:
        stack = LocalStack(video.parent, Path(logs))
        try:
            address = asyncio.run(stack.start(["tracking"], timeout_s=180))["tracking"]
            figures = measure_clip(address, video, video.name, args)
        finally:
            asyncio.run(stack.stop(30))
    figures["load_avg"] = [round(v, 2) for v in os.getloadavg()]
    figures["cores"] = os.cpu_count()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="a video or image file")
    source.add_argument(
        "--set", help="a dev set: its folder or index.json (python -m benchmarks.devsets.clips)"
    )
    parser.add_argument("--half", choices=("tuning", "checking", "unseen", "both"), default="both")
    parser.add_argument(
        "--only",
        default="",
        help="with --set: clips whose name has any of these comma-separated words",
    )
    parser.add_argument("--verbose", action="store_true", help="with --set: list service_only")
    parser.add_argument("--workers", type=int, default=0, help="service workers (0: every core)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side; the best counts")
    parser.add_argument(
        "--landmarks", action="store_true", help="ask the service for landmarks too"
    )
    args = parser.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    if args.set:
        run_set(args)
    else:
        print(json.dumps(run_benchmark(args)))


if __name__ == "__main__":
    main()
