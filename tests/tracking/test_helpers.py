"""Small pure helpers: the decode size, settings checks, the overlay's frame lists and colours."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.tracking.config import TrackingSettings, mesh_options_of
from services.tracking.overlay import colour, parse_frames
from services.tracking.pipeline import processing_size


def test_processing_size_only_ever_shrinks_and_keeps_the_aspect() -> None:
    assert processing_size(640, 360, 960) == (640, 360)
    assert processing_size(1126, 661, 1280) == (1126, 660)  # even (I420 frames need it)
    assert processing_size(1920, 1080, 960) == (960, 540)
    assert processing_size(1080, 1920, 960) == (540, 960)
    assert processing_size(4000, 3000, 960) == (960, 720)


def test_videos_up_to_the_native_size_keep_their_pixels() -> None:
    assert processing_size(1280, 720, 960, 1280) == (1280, 720)
    assert processing_size(720, 1280, 960, 1280) == (720, 1280)  # rotated
    assert processing_size(1024, 576, 960, 1280) == (1024, 576)  # anamorphic PAL, displayed
    assert processing_size(1282, 720, 960, 1280) == (960, 540)  # larger: down to max_side
    assert processing_size(1920, 1080, 960, 1280) == (960, 540)


def test_bad_near_miss_settings_stop_the_start_with_a_clear_error() -> None:
    for value in (-0.1, 1.5):
        with pytest.raises(ValidationError, match="near_detection_confidence"):
            TrackingSettings(near_detection_confidence=value)
    with pytest.raises(ValueError, match="below min_detection_confidence"):
        mesh_options_of(TrackingSettings(near_detection_confidence=0.6))
    off = mesh_options_of(TrackingSettings(near_detection_confidence=0))
    assert off.near_detection_confidence is None
    with pytest.raises(ValidationError, match="native_max_side"):
        TrackingSettings(native_max_side=-1)


def test_overlay_frame_lists() -> None:
    assert parse_frames("3,1-2,10-20:5", 100) == [1, 2, 3, 10, 15, 20]
    assert parse_frames("95-105", 100) == [95, 96, 97, 98, 99]
    assert parse_frames("", 10) == []
    assert colour("obj_1") == colour("obj_1") != colour("obj_2")


def test_landmark_wire_bytes_equal_building_the_messages() -> None:
    import numpy as np

    from protos.videoanalysis.v1 import tracking_pb2
    from services.tracking.servicer import landmark_field_bytes

    points = np.array([[1.5, -2.25, 0.0], [640.0, 359.5, -12.125], [0.0, 0.0, 0.0]], np.float32)
    fast = tracking_pb2.TrackedFace(track_id="obj_1")
    fast.MergeFromString(landmark_field_bytes(points))
    slow = tracking_pb2.TrackedFace(
        track_id="obj_1",
        landmarks=[tracking_pb2.Landmark(x=x, y=y, z=z) for x, y, z in points.tolist()],
    )
    assert fast == slow
    assert [[p.x, p.y, p.z] for p in fast.landmarks] == points.tolist()


def test_available_cores_respects_a_cpu_quota(tmp_path) -> None:
    import os

    from services.tracking.config import available_cores

    affinity = len(os.sched_getaffinity(0))
    assert available_cores(tmp_path) == affinity  # no cgroup files: the affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cores(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert available_cores(tmp_path) == min(affinity, 2)
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cores(tmp_path) == 1
