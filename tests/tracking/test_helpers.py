"""Small pure helpers: the decode size, the overlay's frame lists and colours."""

from __future__ import annotations

from services.tracking.overlay import colour, parse_frames
from services.tracking.pipeline import processing_size


def test_processing_size_only_ever_shrinks_and_keeps_the_aspect() -> None:
    assert processing_size(640, 360, 960) == (640, 360)
    assert processing_size(1126, 661, 1280) == (1126, 661)  # odd sizes are kept when not scaled
    assert processing_size(1920, 1080, 960) == (960, 540)
    assert processing_size(1080, 1920, 960) == (540, 960)
    assert processing_size(4000, 3000, 960) == (960, 720)


def test_overlay_frame_lists() -> None:
    assert parse_frames("3,1-2,10-20:5", 100) == [1, 2, 3, 10, 15, 20]
    assert parse_frames("95-105", 100) == [95, 96, 97, 98, 99]
    assert parse_frames("", 10) == []
    assert colour("obj_1") == colour("obj_1") != colour("obj_2")
