"""Measurements of faces from their MediaPipe face-mesh landmarks (numpy, vectorised over faces).

Landmarks come normalised (x, y in 0..1 of the frame, z in units of the frame width); every
measurement here is made in original-resolution pixels, so that z has the same scale as x and y.
Indices are those of MediaPipe's canonical face mesh (468 points; the refined 478-point mesh keeps
the same first 468).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Canonical face-mesh indices.
UPPER_LIP_INNER = 13
LOWER_LIP_INNER = 14
FOREHEAD_TOP = 10
CHIN = 152
RIGHT_EYE_OUTER = 33  # the subject's right eye: image left on a frontal, unmirrored face
LEFT_EYE_OUTER = 263
RIGHT_CHEEK = 234
LEFT_CHEEK = 454

#: Lip gap (over face height) at which the legacy-scale ``jaw_open`` reaches 1.0. A closed mouth
#: sits near 0.0-0.01, speech moves between about 0.02 and 0.10, a wide-open mouth reaches 0.2.
#: The legacy speaking rule called a face speaking above a jawOpen of 0.08, which this scale puts
#: at a lip gap of 2 % of the face height.
JAW_OPEN_FULL_SCALE = 0.25

#: Columns of :func:`measure`'s feature matrix.
FEATURES = (
    "x_min", "y_min", "x_max", "y_max", "centroid_x", "centroid_y",
    "confidence", "mouth_openness", "jaw_open", "yaw", "pitch", "roll",
)  # fmt: skip
N_FEATURES = len(FEATURES)


@dataclass(frozen=True)
class HeadPose:
    """Degrees. yaw > 0: the face turns towards the image's right; pitch > 0: it looks up;
    roll > 0: it tilts clockwise on screen."""

    yaw: float
    pitch: float
    roll: float


def to_pixels(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """``F×N×3`` normalised landmarks → pixels of a ``width``×``height`` frame (z scaled like x)."""
    return landmarks * np.array([width, height, width], dtype=np.float32)


def head_pose(points: np.ndarray) -> np.ndarray:
    """Yaw, pitch and roll in degrees (``F×3``) of faces given in pixels (``F×N×3``).

    The face's own axes are read off the mesh: "right" from the outer eye corners and the cheek
    contour (subject's right to left), "down" from the forehead to the chin, made orthogonal to
    "right"; the nose direction is their cross product (towards the camera for a frontal face).
    The angles decompose the head's rotation as yaw · pitch · roll (roll applied first, about the
    view axis), so a pure in-plane tilt is pure roll and the three are recovered exactly.
    """
    p = points.astype(np.float64)
    rx, ry, rz = (
        (p[:, LEFT_EYE_OUTER] - p[:, RIGHT_EYE_OUTER]) + (p[:, LEFT_CHEEK] - p[:, RIGHT_CHEEK])
    ).T
    norm = np.sqrt(rx * rx + ry * ry + rz * rz) + 1e-12
    rx, ry, rz = rx / norm, ry / norm, rz / norm
    dx, dy, dz = (p[:, CHIN] - p[:, FOREHEAD_TOP]).T
    along = dx * rx + dy * ry + dz * rz
    dx, dy, dz = dx - along * rx, dy - along * ry, dz - along * rz
    norm = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-12
    dx, dy, dz = dx / norm, dy / norm, dz / norm
    # Camera axes: x right, y down, z away from the camera; right × down points away from the
    # camera too, so the nose direction is its opposite.
    nx, ny, nz = -(ry * dz - rz * dy), -(rz * dx - rx * dz), -(rx * dy - ry * dx)
    yaw = np.arctan2(nx, -nz)
    pitch = np.arctan2(-ny, np.hypot(nx, nz))
    # Undo yaw, then pitch, on the "right" axis: what is left is the in-plane roll.
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    roll = np.arctan2(cp * ry - sp * (cy * rz - sy * rx), cy * rx + sy * rz)
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1)).astype(np.float32)


def mouth_openness(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap over face height (forehead to chin), per face; scale-free, 3-D distances."""
    gap = np.linalg.norm(points[:, UPPER_LIP_INNER] - points[:, LOWER_LIP_INNER], axis=-1)
    face = np.linalg.norm(points[:, FOREHEAD_TOP] - points[:, CHIN], axis=-1)
    return (gap / np.maximum(face, 1e-6)).astype(np.float32)


def jaw_open(openness: np.ndarray) -> np.ndarray:
    """The lip gap on the legacy 0..1 ``jawOpen`` scale (linear, clipped)."""
    return np.clip(openness / JAW_OPEN_FULL_SCALE, 0.0, 1.0).astype(np.float32)


def measure(
    landmarks: np.ndarray, scores: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every per-face measurement at once.

    Args:
        landmarks: ``F×N×3`` normalised landmarks.
        scores: ``F`` face-presence scores.
        width, height: the original frame size in pixels.

    Returns:
        ``(features, points)``: an ``F×len(FEATURES)`` float32 matrix (columns in
        :data:`FEATURES`; the box is the landmarks' extent clipped to the frame, the centroid
        their mean) and the ``F×N×3`` landmarks in pixels.
    """
    points = to_pixels(landmarks, width, height)
    features = np.zeros((len(points), N_FEATURES), dtype=np.float32)
    if len(points) == 0:
        return features, points
    xy = points[:, :, :2]
    limit = np.array([width, height], dtype=np.float32)
    features[:, 0:2] = np.clip(xy.min(axis=1), 0, limit)
    features[:, 2:4] = np.clip(xy.max(axis=1), 0, limit)
    features[:, 4:6] = xy.mean(axis=1)
    features[:, 6] = scores
    features[:, 7] = mouth_openness(points)
    features[:, 8] = jaw_open(features[:, 7])
    features[:, 9:12] = head_pose(points)
    return features, points


def _intersections(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection area of each box of ``a`` (row) with each box of ``b`` (column), and the
    areas of ``a`` (``A×1``) and of ``b`` (``1×B``), in float64."""
    a = a[:, None, :].astype(np.float64)
    b = b[None, :, :].astype(np.float64)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return iw * ih, area_a, area_b


def _iou(inter: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box of ``a`` (``A×4``: x0 y0 x1 y1) with each box of ``b`` (``B×4``)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    return _iou(*_intersections(a, b))


def duplicate_groups(
    features: np.ndarray, *, max_iou: float = 0.5, max_inside: float = 0.7
) -> list[list[int]]:
    """The faces of one frame grouped by the duplicate rule of :func:`suppress_duplicates`: each
    group is one face, the kept (most confident) index first, then the boxes folded into it."""
    if len(features) < 2:
        return [[i] for i in range(len(features))]
    order = np.argsort(-np.nan_to_num(features[:, 6], nan=0.0), kind="stable")
    inter, area, other_area = _intersections(features[:, :4], features[:, :4])
    overlaps = _iou(inter, area, other_area)
    # Share of each box's area (row) that lies inside each other box (column).
    contained = np.where(area > 0, inter / np.maximum(area, 1e-9), 0.0) > max_inside
    same = (overlaps > max_iou) | contained | contained.T
    groups: list[list[int]] = []
    for index in order:
        owner = next((g for g in groups if same[index, g[0]]), None)
        if owner is None:
            groups.append([int(index)])
        else:
            owner.append(int(index))
    return groups


def suppress_duplicates(
    features: np.ndarray, *, max_iou: float = 0.5, max_inside: float = 0.7
) -> np.ndarray:
    """Indices of the faces to keep when two boxes of one frame are one face: they overlap more
    than ``max_iou``, or one lies mostly (``max_inside`` of its area) inside the other. The more
    confident face wins. The face graph can follow one face twice when a fresh detection and an
    older landmark region drift apart, or fit a loose oversized mesh around a real face."""
    groups = duplicate_groups(features, max_iou=max_iou, max_inside=max_inside)
    return np.array(sorted(g[0] for g in groups), dtype=np.int64)
