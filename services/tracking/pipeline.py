"""One video (or still image) in, a stream of progress, tracked frames and a summary out.

The parent decodes once with ffmpeg at the processing size, the worker pool finds the faces chunk
by chunk, and the results are put back in frame order and given track ids here, frame after frame
(association is cheap; doing it in one place over the whole video means chunk edges cannot break or
swap ids: every frame, a chunk's first included, is matched against the tracks as they stand).

Frame numbers are those of ffmpeg's constant-rate output, counted from the container's start: a
video stream that starts after its audio gets copies of its first frame in front (25 of them in
``short_hamilton_clip.mp4``), so ``time_s = frame_index / fps`` is on the same clock as the
audio. (The 25 fps files the ingest service writes start at zero: there, nothing is added.)
A still image is a one-frame video with ``fps`` 0.

Coordinates are display pixels: the picture as it is shown, in square pixels (an anamorphic
video's stored width stretched by its sample aspect ratio, ffprobe's ``sample_aspect_ratio``),
upright (rotation metadata applied). The frames are decoded at that shape (downscaled to
``max_side``) so the models see undistorted faces, and every coordinate is scaled to it; the
tracking JSON and the overlay use the same pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from services.common import ffmpeg
from services.common.blocking import CancelToken
from services.common.errors import UndecodableMedia
from services.tracking.geometry import HeadPose
from services.tracking.mesh import MeshOptions
from services.tracking.pool import JobPlan, JobStats, WorkerPool
from services.tracking.tracker import FaceTracker, TrackStats
from services.tracking.worker import Cadence, ChunkResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackedFace:
    track_id: str
    #: x_min, y_min, x_max, y_max in display pixels (square pixels, upright; see Summary).
    bbox: tuple[float, float, float, float]
    centroid: tuple[float, float]
    confidence: float
    mouth_openness: float
    jaw_open: float
    pose: HeadPose
    #: ``N×3`` pixels, or None when not asked for.
    landmarks: np.ndarray | None = None


@dataclass(frozen=True)
class FrameFaces:
    frame_index: int
    time_s: float
    faces: list[TrackedFace]


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    stage: str


@dataclass(frozen=True)
class Summary:
    frame_count: int
    fps: float
    #: The display size: square pixels (an anamorphic video's stored width stretched by its
    #: sample aspect ratio), rotation applied. Every box and landmark is in these pixels.
    width: int
    height: int
    tracks: list[TrackStats]
    faces_total: int
    workers: int
    #: Frames (overlap included) that ran face detection; the rest only followed faces.
    detection_frames: int = 0
    #: Chunks re-run from the previous chunk's faces (see :mod:`services.tracking.pool`).
    repaired_chunks: int = 0


@dataclass(frozen=True)
class TrackingOptions:
    """Everything a request can choose, already checked and defaulted.

    Attributes:
        mesh: the face graph.
        cadence: the detection schedule.
        include_landmarks: return every face's landmarks.
        workers: worker processes for this video.
        batch_frames: frames per yielded batch.
        max_side: longest side of the processing frames (larger videos are downscaled).
        native_max_side: videos whose longest side is at most this keep their own size.
        chunk_frames: most own frames per chunk (fewer for large frames, see ``buffer_mb``).
        chunks_per_worker: on short videos, smaller chunks so that each pool worker gets about
            this many (load balance); 0 keeps ``chunk_frames``.
        overlap_frames: frames of the previous chunk run again before each chunk.
        buffer_mb: most memory the shared frame slots may take.
        max_missed: frames a track survives without its face.
        split_at_cuts: end every track at a hard cut.
    """

    mesh: MeshOptions = field(default_factory=MeshOptions)
    cadence: Cadence = field(default_factory=Cadence)
    include_landmarks: bool = False
    workers: int = 1
    batch_frames: int = 50
    max_side: int = 960
    native_max_side: int = 0
    chunk_frames: int = 96
    chunks_per_worker: int = 2
    overlap_frames: int = 4
    buffer_mb: int = 512
    max_missed: int = 12
    split_at_cuts: bool = True

    def __post_init__(self) -> None:
        for name in ("workers", "batch_frames", "max_side", "chunk_frames", "buffer_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("overlap_frames", "chunks_per_worker"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def processing_size(
    width: int, height: int, max_side: int, native_max_side: int = 0
) -> tuple[int, int]:
    """The decode size: the original when its longest side is at most ``native_max_side`` or
    ``max_side``, else scaled down so that its longest side fits ``max_side``; even numbers (the
    I420 frames the workers get need them)."""
    longest = max(width, height)
    scale = 1.0 if longest <= native_max_side else min(1.0, max_side / longest)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


Event = Progress | list[FrameFaces] | Summary


@dataclass(frozen=True)
class _Shape:
    """What the decoder and the chunking need to know about a video."""

    width: int
    height: int
    frame_count: int


class _ShapeChanged(Exception):
    def __init__(self, shape: _Shape) -> None:
        super().__init__(f"{shape.width}x{shape.height}")
        self.shape = shape


def _quick_shape(path: Path) -> _Shape | None:
    """The frame size as OpenCV's demuxer sees it (milliseconds, in this process), or None.

    ``ffprobe`` is authoritative but, as a process start, costs about a tenth of a second, which
    is much of a short clip's processing time; it runs alongside and its answer is checked
    before any result leaves (see :func:`track_video`).
    """
    import cv2

    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            return None
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        rotation = int(capture.get(cv2.CAP_PROP_ORIENTATION_META)) % 360
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        sar_num = int(capture.get(cv2.CAP_PROP_SAR_NUM))
        sar_den = int(capture.get(cv2.CAP_PROP_SAR_DEN))
    finally:
        capture.release()
    if width <= 0 or height <= 0:
        return None
    if sar_num > 0 and sar_den > 0 and sar_num != sar_den:
        # Anamorphic storage: the display size in square pixels, as ffprobe's (checked later).
        width = ffmpeg.MediaInfo.display_width(width, Fraction(sar_num, sar_den))
    if rotation in (90, 270):
        width, height = height, width
    return _Shape(width, height, max(frames, 0))


def _probed_shape(info: ffmpeg.MediaInfo, path: Path) -> _Shape:
    if not info.has_video or info.width <= 0 or info.height <= 0:
        raise UndecodableMedia(f"no video stream in {path.name}")
    width, height = info.display_size
    return _Shape(width, height, max(info.frame_count, 0))


def track_video(
    path: Path, options: TrackingOptions, pool: WorkerPool, token: CancelToken
) -> Iterator[Event]:
    """Tracks the faces of ``path``: yields :class:`Progress`, batches of :class:`FrameFaces` (in
    frame order, every frame present, faces without landmarks unless asked) and, last, a
    :class:`Summary`.

    Raises:
        UndecodableMedia: not a readable video or image, or no frame decodes.
        Unavailable: the workers cannot run.
        Cancelled: the token was cancelled.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="probe") as probing:
        probe = probing.submit(ffmpeg.probe, path)
        shape = _quick_shape(path)
        if shape is None:
            shape = _probed_shape(probe.result(), path)
        try:
            yield from _track(path, shape, probe, options, pool, token)
        except _ShapeChanged as changed:
            # OpenCV and ffprobe disagree on the frame size (rotation metadata, say): redo it
            # at ffprobe's size; nothing but progress has left yet.
            log.warning("%s: frame size corrected to %s by ffprobe", path.name, changed)
            yield from _track(path, changed.shape, probe, options, pool, token)


def collect(events: Iterable[Event]) -> tuple[list[FrameFaces], Summary]:
    """Every frame and the summary of a :func:`track_video` run, in memory (tools and tests)."""
    frames: list[FrameFaces] = []
    summary: Summary | None = None
    for event in events:
        if isinstance(event, list):
            frames.extend(event)
        elif isinstance(event, Summary):
            summary = event
    if summary is None:
        raise RuntimeError("the run ended without a summary")
    return frames, summary


def _track(
    path: Path,
    shape: _Shape,
    probe: Future[ffmpeg.MediaInfo],
    options: TrackingOptions,
    pool: WorkerPool,
    token: CancelToken,
) -> Iterator[Event]:
    width, height = shape.width, shape.height
    proc_w, proc_h = processing_size(width, height, options.max_side, options.native_max_side)
    frame_bytes = proc_w * proc_h * 3 // 2  # I420
    workers = max(1, min(options.workers, pool.size))
    # The chunking depends on the video and the pool, never on the request's worker count, so
    # a video gives the same faces and ids whatever the parallelism (results are a function of
    # the chunks). About four chunks per pool worker on short videos (load balance), within
    # the memory budget of ``pool.size + 1`` slots.
    budget_frames = max(2, (options.buffer_mb << 20) // (frame_bytes * (pool.size + 1)))
    overlap = min(options.overlap_frames, budget_frames // 2)
    chunk_frames = options.chunk_frames
    if options.chunks_per_worker:
        balanced = math.ceil(max(shape.frame_count, 1) / (options.chunks_per_worker * pool.size))
        chunk_frames = min(chunk_frames, max(balanced, 4 * max(overlap, 4)))
    chunk_frames = max(1, min(chunk_frames, budget_frames - overlap))
    plan = JobPlan(
        workers=workers,
        chunk_frames=chunk_frames,
        overlap_frames=overlap,
        frame_size=(proc_h, proc_w),
        out_size=(width, height),
        options=options.mesh,
        cadence=options.cadence,
        include_landmarks=options.include_landmarks,
    )
    total = shape.frame_count
    log.info(
        "tracking %s: %dx%d (processing %dx%d), ~%d frames, %d workers, chunks of %d+%d",
        path.name, width, height, proc_w, proc_h, total, workers, chunk_frames, overlap,
    )  # fmt: skip
    yield Progress(0, total, "tracking")
    fps: float | None = None

    tracker = FaceTracker(max_missed=options.max_missed)
    # Frame-threaded decoding costs more CPU per frame; the workers need the cores more (one
    # decoding thread keeps up with about two workers; the output is the same either way).
    decoder = ffmpeg.FrameReader(
        path, proc_w, proc_h, token=token, threads=max(1, workers // 2), pix_fmt="yuv420p"
    )
    batch: list[FrameFaces] = []
    done = 0
    faces_total = 0
    detections = 0
    stats = JobStats()
    chunks = pool.run(decoder.read_into, plan, token, stats)
    try:
        for result in chunks:
            if fps is None:
                # Nothing leaves before ffprobe has confirmed the frame size.
                info = probe.result()
                probed = _probed_shape(info, path)
                if (probed.width, probed.height) != (width, height):
                    raise _ShapeChanged(probed)
                still = info.frame_count <= 1 and info.duration_s <= 0
                fps = 0.0 if still else (info.avg_fps or info.real_fps)
            detections += result.detections
            for frame in _frames_of(result, tracker, fps, options):
                batch.append(frame)
                faces_total += len(frame.faces)
                done += 1
                if len(batch) >= options.batch_frames:
                    yield Progress(done, max(total, done), "tracking")
                    yield batch
                    batch = []
    finally:
        # Now, not whenever an exception's traceback lets go of them: stop the workers and
        # release the pool, then kill the decoder.
        chunks.close()
        decoder.close()
    if done == 0:
        _probed_shape(probe.result(), path)  # ffprobe's own complaint, when it has one
        raise UndecodableMedia(f"no frame of {path.name} could be decoded")
    if batch:
        yield Progress(done, done, "tracking")
        yield batch
    declared = probe.result().frame_count
    if done < 0.9 * declared:
        # ffmpeg stops without an error at a cut-off end (a truncated upload): say so.
        log.warning(
            "%s: only %d of the %d frames its container declares could be decoded "
            "(a truncated or damaged file?)", path.name, done, declared,
        )  # fmt: skip
    tracks = tracker.tracks()
    log.info(
        "tracked %s: %d frames, %d faces, %d tracks; %d chunks (%d re-run seeded), "
        "detection on %d frames; workers busy %.0f%% of %.2f s",
        path.name, done, faces_total, len(tracks), stats.chunks, stats.repaired, detections,
        100 * stats.busy_s / max(1e-9, stats.wall_s * workers), stats.wall_s,
    )  # fmt: skip
    yield Summary(
        done, fps or 0.0, width, height, tracks, faces_total, workers, detections, stats.repaired
    )


def _frames_of(
    result: ChunkResult, tracker: FaceTracker, fps: float, options: TrackingOptions
) -> Iterator[FrameFaces]:
    landmarks = result.landmarks if options.include_landmarks else None
    row = 0
    for offset, count in enumerate(result.counts.tolist()):
        index = result.first_frame + offset
        rows = result.features[row : row + count]
        points = landmarks[row : row + count] if landmarks is not None else None
        row += count
        new_shot = options.split_at_cuts and bool(result.cuts[offset])
        ids = tracker.update(index, rows[:, :4], new_shot=new_shot)
        # One conversion to Python floats per frame, not one per value.
        faces = [
            _tracked_face(track_id, values, points[i] if points is not None else None)
            for i, (track_id, values) in enumerate(zip(ids, rows.tolist(), strict=True))
        ]
        faces.sort(key=lambda face: face.centroid[0])
        time_s = index / fps if fps > 0 else 0.0
        yield FrameFaces(index, time_s, faces)


def _tracked_face(track_id: str, values: list[float], landmarks: np.ndarray | None) -> TrackedFace:
    """One row of the feature matrix (columns in ``geometry.FEATURES``) as a face."""
    x_min, y_min, x_max, y_max, centroid_x, centroid_y = values[:6]
    confidence, mouth_openness, jaw_open, yaw, pitch, roll = values[6:]
    return TrackedFace(
        track_id=track_id,
        bbox=(x_min, y_min, x_max, y_max),
        centroid=(centroid_x, centroid_y),
        confidence=0.0 if math.isnan(confidence) else confidence,
        mouth_openness=mouth_openness,
        jaw_open=jaw_open,
        pose=HeadPose(yaw, pitch, roll),
        landmarks=landmarks,
    )
