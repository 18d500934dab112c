"""The tracker alone: stable ids, short misses, new people, neighbours, cuts."""

from __future__ import annotations

import numpy as np
import pytest

from services.tracking.tracker import FaceTracker


def box(cx: float, cy: float, size: float = 80.0) -> list[float]:
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def test_two_people_keep_their_ids_while_moving() -> None:
    tracker = FaceTracker()
    first = tracker.update(0, np.array([box(100, 200), box(400, 200)]))
    assert first == ["obj_1", "obj_2"]
    for frame in range(1, 40):
        # Both drift right, listed in either order.
        faces = [box(100 + 3 * frame, 200), box(400 + 3 * frame, 200)]
        order = [1, 0] if frame % 2 else [0, 1]
        ids = tracker.update(frame, np.array([faces[i] for i in order]))
        assert [ids[order.index(0)], ids[order.index(1)]] == ["obj_1", "obj_2"]
    assert [(t.track_id, t.first_frame, t.last_frame, t.frames_seen) for t in tracker.tracks()] == [
        ("obj_1", 0, 39, 40),
        ("obj_2", 0, 39, 40),
    ]


def test_neighbours_passing_close_do_not_swap_ids() -> None:
    tracker = FaceTracker()
    tracker.update(0, np.array([box(200, 200), box(300, 200)]))
    # They walk towards each other and stop 60 px apart (boxes overlap), then part again.
    positions = [(200 + 4 * f, 300 - 4 * f) for f in range(1, 11)]
    positions += [(240 - 4 * f, 260 + 4 * f) for f in range(1, 11)]
    for frame, (left, right) in enumerate(positions, start=1):
        ids = tracker.update(frame, np.array([box(right, 200), box(left, 200)]))
        assert ids == ["obj_2", "obj_1"]


def test_a_short_miss_keeps_the_id_a_long_one_starts_a_new_track() -> None:
    tracker = FaceTracker(max_missed=5)
    for frame in range(10):
        assert tracker.update(frame, np.array([box(100 + 5 * frame, 100)])) == ["obj_1"]
    # Missing for 5 frames (10..14) while moving on: predicted forward, found again.
    assert tracker.update(15, np.array([box(175, 100)])) == ["obj_1"]
    # Missing for 6 frames: the track has ended.
    assert tracker.update(22, np.array([box(180, 100)])) == ["obj_2"]
    tracks = {t.track_id: t for t in tracker.tracks()}
    assert tracks["obj_1"].last_frame == 15 and tracks["obj_1"].frames_seen == 11


def test_a_new_person_gets_a_new_id_and_ids_are_never_reused() -> None:
    tracker = FaceTracker(max_missed=0)
    assert tracker.update(0, np.array([box(100, 100)])) == ["obj_1"]
    assert tracker.update(1, np.array([box(100, 100), box(500, 300)])) == ["obj_1", "obj_2"]
    assert tracker.update(2, np.zeros((0, 4))) == []
    assert tracker.update(3, np.array([box(500, 300)])) == ["obj_3"]


def test_fast_motion_without_overlap_is_followed_but_a_far_jump_is_not() -> None:
    tracker = FaceTracker()
    tracker.update(0, np.array([box(100, 100)]))
    # 50 px in one frame: no overlap left for an 80 px face, but well within its size.
    assert tracker.update(1, np.array([box(150, 100)])) == ["obj_1"]
    # Three face sizes away: another person.
    assert tracker.update(2, np.array([box(400, 100)])) == ["obj_2"]
    # A much smaller face at the same place is not the same track either.
    tracker = FaceTracker()
    tracker.update(0, np.array([box(100, 100, size=120)]))
    assert tracker.update(1, np.array([box(100, 100, size=40)])) == ["obj_2"]


def test_a_cut_ends_every_track() -> None:
    tracker = FaceTracker()
    tracker.update(0, np.array([box(100, 100)]))
    assert tracker.update(1, np.array([box(102, 100)])) == ["obj_1"]
    assert tracker.update(2, np.array([box(104, 100)]), new_shot=True) == ["obj_2"]
    assert [t.track_id for t in tracker.tracks()] == ["obj_1", "obj_2"]


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_missed"):
        FaceTracker(max_missed=-1)
    with pytest.raises(ValueError, match="min_iou"):
        FaceTracker(min_iou=0)
    tracker = FaceTracker()
    tracker.update(5, np.zeros((0, 4)))
    with pytest.raises(ValueError, match="after frame 5"):
        tracker.update(5, np.zeros((0, 4)))
