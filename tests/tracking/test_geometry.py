"""Face measurements from landmarks: head pose, mouth openness, boxes (synthetic meshes, exact)."""

from __future__ import annotations

import numpy as np
import pytest

from services.tracking import geometry
from services.tracking.geometry import (
    CHIN,
    FOREHEAD_TOP,
    LEFT_CHEEK,
    LEFT_EYE_OUTER,
    LOWER_LIP_INNER,
    RIGHT_CHEEK,
    RIGHT_EYE_OUTER,
    UPPER_LIP_INNER,
)

# A frontal face in its own frame (x right on screen, y down, z away from the camera), pixels.
_KEYPOINTS = {
    RIGHT_EYE_OUTER: (-40.0, -20.0, 10.0),
    LEFT_EYE_OUTER: (40.0, -20.0, 10.0),
    RIGHT_CHEEK: (-60.0, 10.0, 30.0),
    LEFT_CHEEK: (60.0, 10.0, 30.0),
    FOREHEAD_TOP: (0.0, -90.0, 5.0),
    CHIN: (0.0, 90.0, 5.0),
    UPPER_LIP_INNER: (0.0, 45.0, -5.0),
    LOWER_LIP_INNER: (0.0, 54.0, -5.0),
}


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-frame rotation: roll about the view axis, then pitch, then yaw (degrees)."""
    y, p, r = np.radians([yaw, pitch, roll])
    # yaw > 0 turns the nose towards +x: rotation about the vertical axis.
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    # pitch > 0 lifts the nose (towards -y): rotation about the horizontal axis.
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def _face(
    yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, centre=(320.0, 180.0)
) -> np.ndarray:
    """A 468-point mesh (pixels) whose key points form a face posed as asked."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-50, 50, size=(468, 3))
    for index, xyz in _KEYPOINTS.items():
        points[index] = xyz
    posed = points @ _rotation(yaw, pitch, roll).T
    posed[:, 0] += centre[0]
    posed[:, 1] += centre[1]
    return posed[None].astype(np.float32)


@pytest.mark.parametrize(
    ("yaw", "pitch", "roll"),
    [
        (0, 0, 0),
        (30, 0, 0),
        (-25, 0, 0),
        (0, 20, 0),
        (0, -15, 0),
        (0, 0, 25),
        (0, 0, -40),
        (20, 10, 15),
    ],
)
def test_head_pose_recovers_the_rotation(yaw: float, pitch: float, roll: float) -> None:
    got = geometry.head_pose(_face(yaw, pitch, roll))[0]
    np.testing.assert_allclose(got, [yaw, pitch, roll], atol=1.0)


def test_mirroring_negates_yaw_and_roll() -> None:
    face = _face(25, 10, 12)
    mirrored = face.copy()
    mirrored[..., 0] = 640 - mirrored[..., 0]
    # In a mirror image the subject's right eye is on the other side: swap the left/right indices.
    for right, left in ((RIGHT_EYE_OUTER, LEFT_EYE_OUTER), (RIGHT_CHEEK, LEFT_CHEEK)):
        mirrored[0, [right, left]] = mirrored[0, [left, right]]
    yaw, pitch, roll = geometry.head_pose(face)[0]
    m_yaw, m_pitch, m_roll = geometry.head_pose(mirrored)[0]
    assert m_yaw == pytest.approx(-yaw, abs=0.5)
    assert m_pitch == pytest.approx(pitch, abs=0.5)
    assert m_roll == pytest.approx(-roll, abs=0.5)


def test_mouth_openness_is_lip_gap_over_face_height_whatever_the_scale_and_pose() -> None:
    expected = 9.0 / 180.0
    for face in (_face(), _face(20, -10, 30), _face() * 2.5):
        assert geometry.mouth_openness(face)[0] == pytest.approx(expected, rel=1e-5)
    closed = _face()
    closed[0, LOWER_LIP_INNER] = closed[0, UPPER_LIP_INNER]
    assert geometry.mouth_openness(closed)[0] == 0.0
    assert geometry.jaw_open(np.array([0.0, 0.05, 1.0])).tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_measure_gives_boxes_in_pixels_clipped_to_the_frame() -> None:
    face = _face(centre=(30.0, 180.0))  # partly left of the frame
    normalised = face / np.array([640, 360, 640], dtype=np.float32)
    features, points = geometry.measure(normalised, np.array([0.9], np.float32), 640, 360)
    row = dict(zip(geometry.FEATURES, features[0], strict=True))
    assert row["x_min"] == 0.0
    assert row["x_max"] == pytest.approx(face[0, :, 0].max(), abs=1e-3)
    assert row["y_min"] == pytest.approx(face[0, :, 1].min(), abs=1e-3)
    assert row["centroid_x"] == pytest.approx(face[0, :, 0].mean(), abs=1e-3)
    assert row["confidence"] == pytest.approx(0.9)
    np.testing.assert_allclose(points, face, atol=1e-3)
    empty, no_points = geometry.measure(np.zeros((0, 468, 3), np.float32), np.zeros(0), 640, 360)
    assert empty.shape == (0, len(geometry.FEATURES)) and no_points.shape == (0, 468, 3)


def test_iou_and_duplicate_suppression() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]], dtype=np.float64)
    iou = geometry.iou_matrix(boxes, boxes)
    assert iou[0, 0] == 1.0 and iou[0, 1] == pytest.approx(50 / 150) and iou[0, 2] == 0.0
    features = np.zeros((3, len(geometry.FEATURES)), np.float32)
    features[:, :4] = [[0, 0, 10, 10], [1, 0, 11, 10], [100, 100, 110, 110]]
    features[:, 6] = [0.6, 0.9, 0.7]
    assert geometry.suppress_duplicates(features).tolist() == [1, 2]
    # A loose, less confident box around a real face is the same face; neighbours are not.
    features[:, :4] = [[0, 0, 100, 100], [30, 30, 70, 70], [100, 0, 160, 60]]
    features[:, 6] = [0.45, 0.99, 0.98]
    assert geometry.suppress_duplicates(features).tolist() == [1, 2]
