"""Frames decoded for the models: read in place, through a large pipe, by the fast-starting static
ffmpeg, which gives the system ffmpeg's bytes for every kind of frame the services read."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.common import ffmpeg
from services.common.errors import UndecodableMedia


def test_frames_read_into_a_buffer_of_the_callers_are_the_iterated_frames(testdata) -> None:
    """``FrameReader.read_into`` fills shared-memory slots in place: the same frames as iterating,
    through a pipe big enough for a frame (ffmpeg does not wait on the reader a dozen times a
    frame), and a buffer of the wrong size is refused."""
    video = testdata("video/counter.mp4")
    expected = np.stack(list(ffmpeg.iter_frames(video, 64, 36, pix_fmt="yuv420p")))
    slots = np.zeros((len(expected) + 1, 54, 64), np.uint8)
    with ffmpeg.FrameReader(video, 64, 36, pix_fmt="yuv420p") as reader:
        assert fcntl.fcntl(reader._stdout.fileno(), fcntl.F_GETPIPE_SZ) >= 1 << 20
        with pytest.raises(ValueError, match="bytes"):
            reader.read_into(np.zeros((36, 64), np.uint8))
        count = 0
        while reader.read_into(slots[count]):
            count += 1
        assert not reader.read_into(slots[count])  # and stays at the end
    assert count == len(expected)
    np.testing.assert_array_equal(slots[:count], expected)


def test_a_reader_dropped_unread_leaves_no_ffmpeg_behind(testdata, ffmpeg_children) -> None:
    import gc

    before = ffmpeg_children()
    reader = ffmpeg.FrameReader(testdata("video/short_hamilton_clip.mp4"), 640, 360)
    assert len(ffmpeg_children()) == len(before) + 1
    del reader
    gc.collect()
    assert ffmpeg_children() == before


def test_a_decoder_error_is_raised_with_ffmpegs_reason(tmp_path, testdata) -> None:
    """A truncated file (its index lost) is no empty video: ffmpeg's own error is raised."""
    whole = testdata("video/counter.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UndecodableMedia, match=r"cut\.mp4.*Invalid data"):
        for _frame in ffmpeg.iter_frames(cut, 48, 27):
            pass


def test_the_frames_come_from_the_static_build_in_the_imageio_ffmpeg_wheel() -> None:
    import imageio_ffmpeg

    assert ffmpeg.frame_decoder() == imageio_ffmpeg.get_ffmpeg_exe()
    assert ffmpeg.frame_decoder() != ffmpeg.require_binary("ffmpeg")


@pytest.fixture
def turned(tmp_path, testdata) -> Path:
    """The hamilton clip's first seconds with rotation metadata (as a phone stores a picture held
    upright): decoding turns it."""
    path = tmp_path / "turned.mp4"
    command = [
        ffmpeg.require_binary("ffmpeg"), "-nostdin", "-loglevel", "error",
        "-i", str(testdata("video/short_hamilton_clip.mp4")), "-t", "4", "-map", "0:v:0",
        "-c", "copy", "-metadata:s:v:0", "rotate=90", str(path),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return path


@pytest.mark.parametrize(
    ("video", "size", "options"),
    [
        # The tracking workers' frames: I420 at the display size, area-scaled down (640×360)...
        ("short_hamilton_clip.mp4", (480, 270), {"pix_fmt": "yuv420p"}),
        # ...stretched (as an anamorphic picture is: 480×320 shown 640 wide)...
        ("fades.mp4", (640, 320), {"pix_fmt": "yuv420p"}),
        # ...and turned upright.
        ("turned", (360, 640), {"pix_fmt": "yuv420p"}),
        # The scene model's frames: 25 fps, bicubic, RGB.
        ("fades.mp4", (48, 27), {"fps": 25, "scale_flags": "bicubic"}),
    ],
)
def test_the_static_build_decodes_the_system_ffmpegs_bytes(
    video, size, options, testdata, turned
) -> None:
    path = turned if video == "turned" else testdata(f"video/{video}")
    system = ffmpeg.FrameReader(path, *size, binary=ffmpeg.require_binary("ffmpeg"), **options)
    with system, ffmpeg.FrameReader(path, *size, **options) as static:
        count = 0
        for ours, theirs in zip(static, system, strict=True):
            np.testing.assert_array_equal(ours, theirs)
            count += 1
    assert count >= 25
