"""Face tracks with stable ids: per-frame boxes in, ids out.

Association is global per frame (Hungarian assignment with
:func:`scipy.optimize.linear_sum_assignment`), never greedy nearest-centroid: a cost mixes box
overlap with the predicted box and the centre distance relative to the face size, and pairs that
are neither overlapping nor close for their size are not allowed at all, so an id cannot jump to a
neighbour. A track survives ``max_missed`` frames without a face (a short occlusion, a missed
landmark pass) and its box is predicted forwards by its smoothed velocity meanwhile; an unmatched
face starts a new id ``obj_<n>`` (numbers are never reused within a video).

At a hard cut (``new_shot``) every track ends: the face at the same place in the next shot is
rarely the same person. (The orchestrator also splits tracks at the scene service's cuts, which
include the gradual transitions this cheap check does not see.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from services.tracking.geometry import iou_matrix

_FORBIDDEN = 1e6


@dataclass
class TrackStats:
    """What the summary reports for one track."""

    track_id: str
    first_frame: int
    last_frame: int
    frames_seen: int


@dataclass
class _Track:
    stats: TrackStats
    box: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))

    def predicted(self, frame_index: int, max_extrapolation: int) -> np.ndarray:
        steps = min(frame_index - self.stats.last_frame, max_extrapolation)
        shift = np.tile(self.velocity * steps, 2)
        return self.box + shift


class FaceTracker:
    """Assigns ids to the faces of consecutive frames of one video.

    Args:
        max_missed: frames a track may go without a face before it ends.
        min_iou: overlap with the predicted box that allows a match.
        max_center_shift: centre distance, in face sizes (square root of the predicted box
            area), that allows a match without that overlap (fast motion).
        max_scale_change: largest ratio between the two box sizes for any match.
        velocity_smoothing: weight of the newest displacement in the velocity estimate.
        max_extrapolation: most frames a missing face's box is moved by its velocity.
    """

    def __init__(
        self,
        *,
        max_missed: int = 12,
        min_iou: float = 0.1,
        max_center_shift: float = 0.75,
        max_scale_change: float = 1.6,
        velocity_smoothing: float = 0.5,
        max_extrapolation: int = 5,
    ) -> None:
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        if not 0.0 < min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
        if max_center_shift <= 0:
            raise ValueError(f"max_center_shift must be > 0, got {max_center_shift}")
        if max_scale_change < 1.0:
            raise ValueError(f"max_scale_change must be >= 1, got {max_scale_change}")
        if not 0.0 < velocity_smoothing <= 1.0:
            raise ValueError(f"velocity_smoothing must be in (0, 1], got {velocity_smoothing}")
        self.max_missed = max_missed
        self.min_iou = min_iou
        self.max_center_shift = max_center_shift
        self.max_scale_change = max_scale_change
        self.velocity_smoothing = velocity_smoothing
        self.max_extrapolation = max(0, max_extrapolation)
        self._active: list[_Track] = []
        self._finished: list[TrackStats] = []
        self._next_number = 1
        self._last_frame = -1

    def _costs(self, frame_index: int, boxes: np.ndarray) -> np.ndarray:
        predicted = np.array(
            [t.predicted(frame_index, self.max_extrapolation) for t in self._active]
        )
        overlap = iou_matrix(predicted, boxes)
        p_centre = (predicted[:, None, :2] + predicted[:, None, 2:]) / 2
        d_centre = (boxes[None, :, :2] + boxes[None, :, 2:]) / 2
        p_size = np.sqrt(np.prod(np.maximum(predicted[:, 2:] - predicted[:, :2], 1e-3), axis=1))[
            :, None
        ]
        d_size = np.sqrt(np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-3), axis=1))[None, :]
        shift = np.linalg.norm(d_centre - p_centre, axis=-1) / p_size
        scale = np.maximum(p_size / d_size, d_size / p_size)
        allowed = ((overlap >= self.min_iou) | (shift <= self.max_center_shift)) & (
            scale <= self.max_scale_change
        )
        missed = np.array([frame_index - t.stats.last_frame - 1 for t in self._active])[:, None]
        cost = (1.0 - overlap) + 0.5 * shift + 0.02 * missed
        return np.where(allowed, cost, _FORBIDDEN)

    def update(self, frame_index: int, boxes: np.ndarray, *, new_shot: bool = False) -> list[str]:
        """Ids for the faces of ``frame_index`` (``F×4`` boxes x0 y0 x1 y1), in the same order.

        Frames must come in increasing order; frames without faces may be skipped, except those
        that start a new shot (``new_shot``: every track ends before this frame).
        """
        if frame_index <= self._last_frame:
            raise ValueError(f"frame {frame_index} after frame {self._last_frame}")
        self._last_frame = frame_index
        if new_shot:
            self._finished.extend(t.stats for t in self._active)
            self._active = []
        self._expire(frame_index)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids: list[str | None] = [None] * len(boxes)
        if len(boxes) and self._active:
            costs = self._costs(frame_index, boxes)
            rows, cols = linear_sum_assignment(costs)
            for row, col in zip(rows, cols, strict=True):
                if costs[row, col] >= _FORBIDDEN:
                    continue
                self._extend(self._active[row], frame_index, boxes[col])
                ids[col] = self._active[row].stats.track_id
        for index, box in enumerate(boxes):
            if ids[index] is None:
                ids[index] = self._start(frame_index, box)
        return [i for i in ids if i is not None]

    def _expire(self, frame_index: int) -> None:
        alive = []
        for track in self._active:
            if frame_index - track.stats.last_frame > self.max_missed + 1:
                self._finished.append(track.stats)
            else:
                alive.append(track)
        self._active = alive

    def _extend(self, track: _Track, frame_index: int, box: np.ndarray) -> None:
        steps = frame_index - track.stats.last_frame
        displacement = ((box[:2] + box[2:]) - (track.box[:2] + track.box[2:])) / 2 / steps
        a = self.velocity_smoothing
        track.velocity = a * displacement + (1 - a) * track.velocity
        track.box = box.copy()
        track.stats.last_frame = frame_index
        track.stats.frames_seen += 1

    def _start(self, frame_index: int, box: np.ndarray) -> str:
        track_id = f"obj_{self._next_number}"
        self._next_number += 1
        self._active.append(_Track(TrackStats(track_id, frame_index, frame_index, 1), box.copy()))
        return track_id

    def tracks(self) -> list[TrackStats]:
        """Every track so far (ended and active), by first frame then id number."""
        every = self._finished + [t.stats for t in self._active]
        return sorted(every, key=lambda s: (s.first_frame, int(s.track_id.split("_")[1])))
