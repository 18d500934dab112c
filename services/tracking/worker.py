"""What one worker process does: hold the face graphs and turn a chunk of frames into faces.

A chunk is a run of consecutive frames in a shared buffer. Its first ``preroll`` frames are the
last frames of the previous chunk (the overlap). Two kinds of runs exist:

* a **cold** run processes the overlap and then the chunk's own frames with a fresh graph; the
  overlap lets the graph pick up the faces on screen (by detection), and its last frame's faces
  are reported so the parent can compare them with what the previous chunk was following there;
* a **seeded** run (a repair) starts at the chunk's first own frame with the faces the previous
  chunk was following (landmarks, recent face counts), so it reproduces an uninterrupted run
  exactly; it stops as soon as it agrees with the cold run for a few frames (from there on both
  runs follow the same faces, so the cold results stand).

This module has no multiprocessing in it; :mod:`services.tracking.pool` runs it.
"""

from __future__ import annotations

import mmap
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from services.tracking.geometry import N_FEATURES, iou_matrix, measure, suppress_duplicates
from services.tracking.mesh import FaceMesh, MeshOptions


@dataclass(frozen=True)
class Cadence:
    """When a frame runs face detection (every other frame only follows faces by landmarks).

    Attributes:
        detect_every: detection on every frame whose index is a multiple of this while faces are
            followed. 1 (the default) is MediaPipe's own face-mesh schedule when it has room for
            more faces: a face that the detector and the landmark model accept on a frame or two
            only (a profile behind another head, a face flashing past) is otherwise missed
            whenever those frames fall between detections. Detection is the cheap model (BlazeFace
            on 128×128); the landmark model runs on every followed face anyway.
        recovery_frames: after a face is lost, detect on every frame for this long, so a face
            that the landmark pass dropped for a frame is picked up again at once.
        cut_threshold: mean absolute difference (0-255) between tiny grey thumbnails of
            consecutive frames above which the frame counts as a new shot and runs detection
            (within shots of the test clips it stays under 12; hard cuts give 25 and more).
        idle_detect_every: while no face has been followed for ``dense_frames`` (and from that
            frame of the video on), detection on every frame whose index is a multiple of this
            (and on every cut); closer to a face, or to the start, on every frame.
        dense_frames: see ``idle_detect_every``.
        reuse_duplicates: a frame identical to the one before (a repeated or padded frame) gets
            that frame's faces without running the models.

        rewind_frames: how far back a face found by an idle detection (or a near miss of the
            detector there, see ``mesh.MeshOptions.near_detection_confidence``) sends the run;
            after a near miss alone the run also detects on every frame up to the next idle
            detection, since the detector may accept that face on one frame only, before or
            after the near miss.
        wake_on_proposals: an idle detection whose detector proposal the landmark model rejects
            (a face too small, turned or hidden for it on that frame) counts, for this schedule,
            as a face found there: the run rewinds and detects on the skipped frames, and the
            frames after it detect on every frame, as after a lost face. The landmark model may
            accept that face on one of those frames only (and then follow it by its landmarks,
            where a fresh detection's region does not do).

    A face found by an idle detection after skipped frames sends the run back ``rewind_frames``
    (at least to the first skipped frame), which then detects on every frame until it finds the
    face: a face that came on screen between two idle detections is reported from where it came,
    as by a detection on every frame (only a face on screen for fewer frames than the idle
    cadence can be missed). Frames in its reach that already ran detection, following nothing,
    and found nothing are not run again (they would find nothing again), so where idle
    detections come close together (near misses in a row) no frame is detected twice but the
    one that sent the run back. A chunk's last frame always detects while idle, so that the
    rewind also covers the frames just before a chunk edge.
    """

    detect_every: int = 1
    recovery_frames: int = 10
    cut_threshold: float = 20.0
    idle_detect_every: int = 6
    reuse_duplicates: bool = True
    rewind_frames: int = 8
    dense_frames: int = 25
    wake_on_proposals: bool = False

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.idle_detect_every < 1:
            raise ValueError(f"idle_detect_every must be >= 1, got {self.idle_detect_every}")
        if self.recovery_frames < 0:
            raise ValueError(f"recovery_frames must be >= 0, got {self.recovery_frames}")
        if self.rewind_frames < 0:
            raise ValueError(f"rewind_frames must be >= 0, got {self.rewind_frames}")
        if self.dense_frames < 0:
            raise ValueError(f"dense_frames must be >= 0, got {self.dense_frames}")

    def new_history(self) -> deque[int]:
        """An empty record of a run's last face counts, as long as the schedule looks back."""
        return deque(maxlen=max(1, self.recovery_frames, self.dense_frames))

    @staticmethod
    def recovering(history: Sequence[int]) -> bool:
        """The run follows no face now but remembers one (within the history's length): it
        detects on every frame, where a run that never saw that face detects sparsely."""
        return bool(history) and history[-1] == 0 and any(history)


@dataclass(frozen=True)
class Seed:
    """What a run was following after its last frame, enough to continue it elsewhere.

    Attributes:
        landmarks: ``S×N×3`` normalised landmarks of every face the graph followed.
        history: face counts of the last frames (oldest first), for the detection schedule.
    """

    landmarks: np.ndarray
    history: tuple[int, ...]


@dataclass(frozen=True)
class Reference:
    """The cold run's faces per own frame, that a seeded run stops at when it agrees with them."""

    counts: np.ndarray
    boxes: np.ndarray


@dataclass(frozen=True)
class ChunkTask:
    """One run over one chunk of one job, as sent to a worker.

    Attributes:
        job: the job's number (a worker drops its buffer mappings when it changes).
        chunk: the chunk's number within the job.
        first_frame: the video frame index of the chunk's first own frame (after the preroll).
        buffer: number of the shared frame buffer (the worker has been handed its file).
        slot: the chunk's slot (its progress entry in the buffer's header).
        offset: byte offset of this chunk's slot in the buffer.
        frames: capacity of the slot (preroll + own frames); the header says how many of them
            the decoder has written so far, and how many there are once it knows.
        preroll: leading frames that belong to the previous chunk.
        height, width: processing frame size (the frames in the buffer).
        out_width, out_height: original frame size, the unit of every coordinate returned.
        options: the graph to use.
        cadence: the detection schedule.
        include_landmarks: return the landmarks too.
        seed: for a seeded run: the previous chunk's final state (the run starts after the
            preroll). None for a cold run.
        reference: for a seeded run: the cold run's faces, to stop at.
        converge_frames: consecutive agreeing frames that end a seeded run.
    """

    job: int
    chunk: int
    first_frame: int
    buffer: int
    slot: int
    offset: int
    frames: int
    preroll: int
    height: int
    width: int
    out_width: int
    out_height: int
    options: MeshOptions
    cadence: Cadence
    include_landmarks: bool
    seed: Seed | None = None
    reference: Reference | None = None
    converge_frames: int = 3


@dataclass
class ChunkResult:
    """Faces of a chunk's own frames (all of them, or for a seeded run up to where it stopped).

    Attributes:
        chunk: the chunk's number.
        first_frame: the video frame index of ``counts[0]``.
        counts: faces per own frame.
        features: one row per face, frames in order (columns in ``geometry.FEATURES``).
        landmarks: ``F×N×3`` pixels, or None when not asked for.
        detections: frames that ran face detection.
        cuts: per own frame, True where it starts a new shot (a hard cut from the frame before).
        boundary_boxes: cold run: the faces the graph followed on the last preroll frame
            (boxes in original pixels, before duplicate suppression); None without preroll.
        final: the state after the last frame run.
        converged: seeded run: True when it stopped because it agreed with the cold run (the
            cold run's remaining frames and final state stand).
    """

    chunk: int
    first_frame: int
    counts: np.ndarray
    features: np.ndarray
    landmarks: np.ndarray | None
    detections: int
    cuts: np.ndarray
    boundary_boxes: np.ndarray | None
    final: Seed
    converged: bool = False


def i420_shape(height: int, width: int) -> tuple[int, int]:
    """Array shape of one planar I420 frame: the luma rows, then the two chroma planes."""
    return height * 3 // 2, width


def _grey(frame: np.ndarray, yuv: bool) -> np.ndarray:
    """A frame's brightness plane: I420's luma, or an RGB frame's green."""
    return frame[: frame.shape[0] * 2 // 3] if yuv else frame[:, :, 1]


def _rgb(frame: np.ndarray, yuv: bool) -> np.ndarray:
    """The frame as the models take it (RGB); I420 is converted here, only for frames that run
    a model, so the decoder ships half the bytes and converts nothing."""
    if not yuv:
        return frame
    import cv2

    return cv2.cvtColor(frame, cv2.COLOR_YUV2RGB_I420)


class _Thumbnails:
    """Detects hard cuts cheaply: 18×32 grey thumbnails (2×2 means of a 36×64 grid of samples of
    the brightness plane) of consecutive frames, compared by mean absolute difference."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        #: The last comparison's difference (-1 when there was nothing to compare with).
        self.last_difference = -1.0

    def is_cut(self, grey: np.ndarray, threshold: float) -> bool:
        height, width = grey.shape[:2]
        step_y, step_x = max(1, height // 36), max(1, width // 64)
        grid = grey[step_y // 2 :: step_y, step_x // 2 :: step_x][:36, :64].astype(np.float32)
        rows, cols = grid.shape[0] // 2 * 2, grid.shape[1] // 2 * 2
        small = grid[:rows, :cols].reshape(rows // 2, 2, cols // 2, 2).mean(axis=(1, 3))
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape:
            self.last_difference = -1.0
            return False
        self.last_difference = float(np.abs(small - previous).mean())
        return self.last_difference > threshold


#: Slots the buffer header has room for (16 bytes each in a 4 KiB page).
MAX_SLOTS = 256


def progress_view(buffer: Any) -> np.ndarray:
    """The shared buffer's header: per slot, ``(frames written, final count or -1)`` (int64;
    the parent writes a frame before counting it, and aligned 8-byte stores are atomic)."""
    return np.ndarray((MAX_SLOTS, 2), dtype=np.int64, buffer=buffer, offset=0)


def boxes_agree(a: np.ndarray, b: np.ndarray, min_iou: float = 0.9) -> bool:
    """Same number of faces, paired one to one with at least ``min_iou`` overlap."""
    if len(a) != len(b):
        return False
    if len(a) == 0:
        return True
    overlap = iou_matrix(a, b)
    rows, cols = linear_sum_assignment(-overlap)
    return bool(np.all(overlap[rows, cols] >= min_iou))


def extent(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes (x0 y0 x1 y1, pixels) of ``F×N×3`` normalised landmarks, unclipped."""
    if len(landmarks) == 0:
        return np.zeros((0, 4), np.float32)
    lo = landmarks[:, :, :2].min(axis=1) * (width, height)
    hi = landmarks[:, :, :2].max(axis=1) * (width, height)
    return np.concatenate([lo, hi], axis=1).astype(np.float32)


def run_frames(
    mesh: FaceMesh,
    frames: np.ndarray,
    *,
    first_frame: int,
    preroll: int,
    out_width: int,
    out_height: int,
    cadence: Cadence,
    include_landmarks: bool,
    seed: Seed | None = None,
    reference: Reference | None = None,
    converge_frames: int = 3,
    cancelled: Any = None,
    chunk: int = 0,
    frame_ready: Any = None,
    yuv: bool = False,
) -> ChunkResult:
    """Runs a slot of frames (``T×H×W×3`` RGB, or ``T×(3H/2)×W`` I420 with ``yuv``) through a
    freshly reset graph.

    Args:
        mesh: the graph.
        frames: the slot: ``preroll`` frames of the previous chunk, then the chunk's own.
        first_frame: video index of the first own frame (cadence is on absolute indices).
        preroll, out_width, out_height, cadence, include_landmarks: see :class:`ChunkTask`.
        seed: start after the preroll, continuing these faces (a seeded run).
        reference: with ``seed``: stop once ``converge_frames`` consecutive frames agree with it.
        cancelled: polled before every frame; when it returns true the run stops with
            :class:`InterruptedError`.
        chunk: the chunk's number, copied into the result.
        frame_ready: ``frame_ready(i)`` waits until frame ``i`` of the slot is there and says
            whether it exists (False past the slot's last frame); by default all of ``frames``
            are there.
    """
    if frame_ready is None:

        def frame_ready(i: int) -> bool:
            return i < len(frames)

    mesh.reset(seedable=seed is not None)
    thumbnails = _Thumbnails()
    history = cadence.new_history()
    start = 0
    if seed is not None:
        start = preroll
        history.extend(seed.history)
        if start > 0:
            thumbnails.is_cut(_grey(frames[start - 1], yuv), cadence.cut_threshold)
    detections = 0
    counts: list[int] = []
    cuts: list[bool] = []
    features: list[np.ndarray] = []
    points: list[np.ndarray] = []
    boundary: np.ndarray | None = None
    landmarks = np.zeros((0, mesh.options.landmark_count, 3), np.float32)
    scores = np.zeros((0,), np.float32)
    agreeing = 0
    converged = False
    # Per slot index: (cut, thumbnail difference), kept so that frames run again after a rewind
    # see the same cut decisions.
    changes: dict[int, tuple[bool, float]] = {}
    # The last frame that ran detection, and (during a rewind) the frame up to which every frame
    # runs it. A seeded run starts on followed faces: nothing before its start to look back at.
    last_detection = start if seed is not None else start - 1
    rewind_to = -1
    # Frames that ran detection while the graph followed nothing and that found nothing: run
    # again after a reset they find nothing again, so a rewind does not repeat them.
    looked_empty: set[int] = set()
    index = start - 1
    while frame_ready(index + 1):
        index += 1
        if cancelled is not None and cancelled():
            raise InterruptedError("chunk cancelled")
        frame = frames[index]
        frame_index = first_frame - preroll + index
        if index not in changes:
            cut = thumbnails.is_cut(_grey(frame, yuv), cadence.cut_threshold)
            changes[index] = (cut, thumbnails.last_difference)
        cut, difference = changes[index]
        previous = history[-1] if history else 0
        if (
            cadence.reuse_duplicates
            and index > start
            and difference == 0.0
            and np.array_equal(frame, frames[index - 1])
        ):
            # The same picture again (a padded or repeated frame): the same faces.
            history.append(len(landmarks))
        else:
            recent = list(history)[-cadence.recovery_frames :] if cadence.recovery_frames else []
            recently_lost = previous < max(recent, default=0)
            idle = previous == 0 and not recently_lost
            if idle:
                # Sparse only far from faces: a face lately (or the video's start) makes more
                # likely, and the detector may catch a face on one frame only.
                sparse = frame_index >= cadence.dense_frames and not cadence.recovering(history)
                every = cadence.idle_detect_every if sparse else 1
                detect = (
                    (index == start and seed is None)
                    or cut
                    or frame_index % every == 0
                    or index <= rewind_to
                    # The slot's last frame: the next idle detection (and its rewind) would fall
                    # in the next chunk, whose overlap frames are not reported, so a face coming
                    # on screen here would start late. Detect now; a face rewinds within the slot.
                    or (index > last_detection and not frame_ready(index + 1))
                )
            else:
                detect = cut or recently_lost or frame_index % cadence.detect_every == 0
            seeds = seed.landmarks if seed is not None and index == start else None
            detections += detect
            followed = len(landmarks)
            # Only an idle detection after skipped frames (and past a rewind) can send the run
            # back: only there are the detector's near misses worth decoding.
            can_wake = idle and index > last_detection + 1 and index > rewind_to
            if detect or previous or seeds is not None:
                landmarks, scores = mesh.process(
                    _rgb(frame, yuv), detect=detect, seeds=seeds, look_near=can_wake
                )
            else:
                # Nothing followed and no detection: the graph would find nothing and stay empty.
                landmarks, scores = landmarks[:0], scores[:0]
            # An idle detection that kept no face may still have seen something: a candidate
            # scoring just under the detection threshold (a near miss), or a proposal that the
            # landmark model rejected (Cadence.wake_on_proposals).
            empty_look = idle and detect and not len(landmarks)
            near_miss = can_wake and empty_look and mesh.near_misses > 0
            proposal = empty_look and cadence.wake_on_proposals and mesh.rejected > 0
            # ``can_wake``'s ``index > rewind_to``: once per appearance (repeated frames skip
            # detection).
            if detect and can_wake and (len(landmarks) or proposal or near_miss):
                # A face (or a sign of one) appeared at a sparse idle detection: it may have been
                # on screen (and detectable, or accepted) on the frames skipped since the last
                # one, or even before (the detector is unsure of a face coming on screen). Forget
                # it, go back ``rewind_frames`` and detect on every frame up to this one; after a
                # near miss alone, on to the next idle detection too (the detector may accept
                # that face on a single frame, before or after this one).
                mesh.reset()
                rewind_from = max(
                    start if seed is None else start + 1,
                    min(last_detection + 1, index - cadence.rewind_frames),
                )
                while rewind_from in looked_empty and rewind_from < last_detection + 1:
                    rewind_from += 1
                for _ in range(index - rewind_from):
                    if history:
                        history.pop()
                drop = index - max(rewind_from, preroll)
                if drop > 0:
                    del counts[-drop:], cuts[-drop:], features[-drop:]
                    if include_landmarks:
                        del points[-drop:]
                landmarks, scores = landmarks[:0], scores[:0]
                closer = cadence.idle_detect_every - 1 if near_miss and not proposal else 0
                last_detection, rewind_to, agreeing = rewind_from - 1, index + closer, 0
                index = rewind_from - 1
                continue
            if detect:
                last_detection = index
                if not followed and not len(landmarks) and seeds is None:
                    looked_empty.add(index)
            history.append(1 if proposal else len(landmarks))
        if index < preroll:
            if index == preroll - 1:
                boundary = extent(landmarks, out_width, out_height)
            continue
        rows, pixels = measure(landmarks, scores, out_width, out_height)
        keep = suppress_duplicates(rows)
        counts.append(len(keep))
        cuts.append(cut)
        features.append(rows[keep])
        if include_landmarks:
            points.append(pixels[keep])
        if reference is not None:
            own = index - preroll
            row = int(reference.counts[:own].sum())
            expected = reference.boxes[row : row + int(reference.counts[own])]
            agreeing = agreeing + 1 if boxes_agree(rows[keep][:, :4], expected) else 0
            # Agreeing on no face is not enough while this run is still recovering a face that
            # the cold run never saw: the cold run may have skipped a face's only frame.
            if agreeing >= converge_frames and not cadence.recovering(history):
                converged = True
                break
    feature_matrix = np.concatenate(features) if features else np.zeros((0, N_FEATURES), np.float32)
    landmark_array = None
    if include_landmarks:
        n_points = mesh.options.landmark_count
        landmark_array = (
            np.concatenate(points) if points else np.zeros((0, n_points, 3), np.float32)
        )
    return ChunkResult(
        chunk=chunk,
        first_frame=first_frame,
        counts=np.asarray(counts, dtype=np.int32),
        features=feature_matrix,
        landmarks=landmark_array,
        detections=detections,
        cuts=np.asarray(cuts, dtype=bool),
        boundary_boxes=boundary,
        final=Seed(landmarks.copy(), tuple(history)),
        converged=converged,
    )


class ChunkRunner:
    """A worker's state: the face graphs (one per :class:`MeshOptions`) and the frame buffer."""

    def __init__(self, default: MeshOptions, model_root: Path | None, max_graphs: int = 4) -> None:
        self._model_root = model_root
        self._max_graphs = max_graphs
        self._graphs: dict[MeshOptions, FaceMesh] = {default: FaceMesh(default, model_root)}
        self._default = default
        self._buffer_number = -1
        self._buffer: mmap.mmap | None = None
        # One blank frame through the graph: the models are really loaded and runnable.
        self._graphs[default].process(np.zeros((64, 64, 3), np.uint8), detect=True)

    def _graph(self, options: MeshOptions) -> FaceMesh:
        graph = self._graphs.get(options)
        if graph is None:
            if len(self._graphs) >= self._max_graphs:
                for key in [k for k in self._graphs if k != self._default][:1]:
                    self._graphs.pop(key).close()
            graph = self._graphs[options] = FaceMesh(options, self._model_root)
        return graph

    def map_buffer(self, number: int, fd: int, size: int) -> None:
        """Maps the parent's frame buffer (an open file handed over), replacing the last one."""
        self.unmap_buffer()
        try:
            self._buffer = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._buffer_number = number

    def unmap_buffer(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
        self._buffer = None
        self._buffer_number = -1

    def run(self, task: ChunkTask, cancelled: Any = None) -> ChunkResult:
        if self._buffer is None or task.buffer != self._buffer_number:
            raise RuntimeError(f"frame buffer {task.buffer} was not handed to this worker")
        frames = np.ndarray(
            (task.frames, *i420_shape(task.height, task.width)),
            dtype=np.uint8,
            buffer=self._buffer,
            offset=task.offset,
        )
        progress = progress_view(self._buffer)[task.slot]

        def frame_ready(index: int) -> bool:
            """Waits for the decoder to write frame ``index`` of the slot (or to finish)."""
            while True:
                written, total = int(progress[0]), int(progress[1])
                if index < written:
                    return True
                if 0 <= total <= index or index >= task.frames:
                    return False
                if cancelled is not None and cancelled():
                    raise InterruptedError("chunk cancelled")
                time.sleep(0.002)  # the decoder is behind: wake up seldom

        try:
            return run_frames(
                self._graph(task.options),
                frames,
                first_frame=task.first_frame,
                preroll=task.preroll,
                out_width=task.out_width,
                out_height=task.out_height,
                cadence=task.cadence,
                include_landmarks=task.include_landmarks,
                seed=task.seed,
                reference=task.reference,
                converge_frames=task.converge_frames,
                cancelled=cancelled,
                chunk=task.chunk,
                frame_ready=frame_ready,
                yuv=True,
            )
        finally:
            del frames  # no view may outlive the mapping (the progress view goes with frame_ready)

    def close(self) -> None:
        self.unmap_buffer()
        for graph in self._graphs.values():
            graph.close()
        self._graphs.clear()
