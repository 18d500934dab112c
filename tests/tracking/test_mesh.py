"""The MediaPipe face graph in this process: same faces as MediaPipe's FaceMesh, exact seeding,
resets that forget everything, landmark parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.common import ffmpeg
from services.tracking.mesh import FaceMesh, MeshOptions, _landmark_array

pytestmark = pytest.mark.slow

CLIP = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "testdata"
    / "video"
    / "short_hamilton_clip.mp4"
)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Frames 220-279 of the clip: the speaker, a cut at 236, the audience (a face that only
    landmark tracking keeps)."""
    decoded = []
    for index, frame in enumerate(ffmpeg.iter_frames(CLIP, 640, 360)):
        if index >= 220:
            decoded.append(frame.copy())
        if index == 279:
            break
    return np.stack(decoded)


@pytest.fixture(scope="module")
def mesh():  # type: ignore[no-untyped-def]
    graph = FaceMesh(MeshOptions(min_presence_confidence=0.5))
    yield graph
    graph.close()


def _run(mesh: FaceMesh, frames: np.ndarray, seeds=None) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    out = []
    for i, frame in enumerate(frames):
        landmarks, _ = mesh.process(frame, detect=True, seeds=seeds if i == 0 else None)
        out.append(landmarks)
    return out


def test_detecting_on_every_frame_matches_mediapipe_face_mesh(mesh, frames) -> None:
    import mediapipe as mp

    mesh.reset(seedable=True)
    ours = _run(mesh, frames)
    with mp.solutions.face_mesh.FaceMesh(max_num_faces=5) as reference:
        for landmarks, frame in zip(ours, frames, strict=True):
            theirs = reference.process(frame).multi_face_landmarks or []
            assert len(landmarks) == len(theirs)
            for face, other in zip(landmarks, theirs, strict=True):
                expected = np.array([(p.x, p.y, p.z) for p in other.landmark], np.float32)
                np.testing.assert_array_equal(face, expected)


def test_near_misses_are_counted_beside_an_unchanged_graph(mesh, frames) -> None:
    """The lower-threshold reading of the detector is a side output: the faces are the same to
    the bit, and a frame with a face has candidates at the lower threshold, a blank one none.
    Only frames that ask for it are read."""
    mesh.reset(seedable=True)
    plain = _run(mesh, frames[:20])
    near = FaceMesh(MeshOptions(min_presence_confidence=0.5, near_detection_confidence=0.3))
    try:
        counted = []
        for i, frame in enumerate(frames[:20]):
            look = i % 2 == 0
            landmarks, _ = near.process(frame, detect=True, look_near=look)
            np.testing.assert_array_equal(landmarks, plain[i])
            counted.append(near.near_misses if look else None)
            if not look:
                assert near.near_misses == 0  # not asked for on this frame
        with_faces = [c for c, faces in zip(counted, plain, strict=True) if len(faces) and c]
        assert len(with_faces) >= 5 and min(with_faces) >= 1
        near.process(np.zeros_like(frames[0]), detect=True, look_near=True)
        assert near.near_misses == 0
        near.process(frames[0], detect=False, look_near=True)  # no detection: nothing to count
        assert near.near_misses == 0
    finally:
        near.close()
    assert mesh.near_misses == 0  # not asked for
    with pytest.raises(ValueError, match="below min_detection_confidence"):
        MeshOptions(near_detection_confidence=0.5)


def test_a_seeded_graph_continues_another_run_exactly(mesh, frames) -> None:
    mesh.reset(seedable=True)
    whole = _run(mesh, frames)
    split = 30  # in the audience shot
    mesh.reset(seedable=True)
    seeded = _run(mesh, frames[split:], seeds=whole[split - 1])
    mesh.reset(seedable=True)
    cold = _run(mesh, frames[split:])
    for a, b in zip(whole[split:], seeded, strict=True):
        np.testing.assert_array_equal(a, b)
    # Without the seed the face that detection misses is gone: seeding is what carries it.
    assert sum(map(len, cold)) < sum(map(len, whole[split:]))


def test_a_soft_reset_forgets_like_a_restart(mesh, frames) -> None:
    mesh.reset(seedable=True)
    _run(mesh, frames[:20])
    mesh.reset()  # soft: one blank frame
    soft = _run(mesh, frames[20:40])
    mesh.reset(seedable=True)  # a real restart
    fresh = _run(mesh, frames[20:40])
    for a, b in zip(soft, fresh, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="first frame"):
        mesh.process(frames[0], detect=True, seeds=np.zeros((1, 468, 3), np.float32))


def test_landmarks_are_read_from_the_wire_format_or_field_by_field() -> None:
    from mediapipe.framework.formats import landmark_pb2

    plain = landmark_pb2.NormalizedLandmarkList()
    for i in range(5):
        point = plain.landmark.add()
        point.x, point.y, point.z = 0.1 * i, -0.5 + i, 0.0
    np.testing.assert_allclose(_landmark_array(plain)[:, 1], [-0.5, 0.5, 1.5, 2.5, 3.5])
    extra = landmark_pb2.NormalizedLandmarkList()
    point = extra.landmark.add()
    point.x, point.y, point.z, point.visibility = 0.25, 0.5, -0.125, 0.9
    assert _landmark_array(extra).tolist() == [[0.25, 0.5, -0.125]]
