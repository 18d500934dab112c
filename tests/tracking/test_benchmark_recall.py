"""How ``benchmarks.tracking`` counts the naive loop's faces: two meshes of one face are one face,
found by either of its boxes; two overlapping faces stay two faces."""

from __future__ import annotations

import numpy as np

from benchmarks.tracking import compare
from services.tracking.geometry import duplicate_groups, suppress_duplicates

# One face followed twice by the naive loop (a whole-face mesh and, mostly inside it, a mesh
# slid down onto the lower face), from a 320x180 clip; MediaPipe lists the whole-face one first.
WHOLE = [102.0, 36.0, 151.0, 102.0]
SLID = [115.0, 69.0, 150.0, 110.0]
# Two people side by side, one head partly in front of the other (IoU about 0.2).
FRONT = [946.0, 140.0, 1174.0, 422.0]
BEHIND = [1023.0, 268.0, 1267.0, 535.0]


def _features(boxes: list[list[float]], confidence: list[float]) -> np.ndarray:
    features = np.zeros((len(boxes), 12), np.float32)
    features[:, :4] = boxes
    features[:, 6] = confidence
    return features


def test_duplicate_groups_fold_each_duplicate_into_the_face_kept() -> None:
    features = _features([WHOLE, SLID, FRONT], [0.6, 0.9, 0.8])
    assert duplicate_groups(features) == [[1, 0], [2]]
    assert suppress_duplicates(features).tolist() == [1, 2]


def test_a_face_the_naive_loop_follows_twice_is_found_by_either_box() -> None:
    naive = {0: np.array([WHOLE, SLID]), 1: np.array([WHOLE, SLID])}
    service = {0: [("obj_1", np.array(SLID))], 1: [("obj_1", np.array(WHOLE))]}
    recall, service_only = compare(naive, service)
    assert recall == 1.0
    assert service_only == []
    # Matching only the naive loop's first box (the rule before) calls frame 0 a miss.
    first_box, _ = compare(naive, service, any_duplicate=False)
    assert first_box == 0.5


def test_two_overlapping_faces_stay_two_faces() -> None:
    naive = {0: np.array([FRONT, BEHIND])}
    recall, _ = compare(naive, {0: [("obj_1", np.array(FRONT))]})
    assert recall == 0.5
    recall, _ = compare(naive, {0: [("obj_1", np.array(FRONT)), ("obj_2", np.array(BEHIND))]})
    assert recall == 1.0
