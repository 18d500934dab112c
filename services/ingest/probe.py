"""Probing that does not trust container headers.

:func:`services.common.ffmpeg.probe` reads the headers: fine for codecs and sizes, but frame
counts are missing or estimated in Matroska/WebM, and a variable frame rate hides behind equal
``avg_frame_rate``/``r_frame_rate`` values. :func:`frame_timing` reads every video packet's
timestamps (demuxing only, no decoding: a fraction of a second for a few minutes of video) and
:func:`describe` combines both.
"""

from __future__ import annotations

import itertools
import logging
import statistics
import subprocess
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from services.common import ffmpeg
from services.common.ffmpeg import MediaInfo

log = logging.getLogger(__name__)

#: Containers whose "video" is a still picture.
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe")


@dataclass(frozen=True)
class FrameTiming:
    """Timestamps of the first video stream, from its packets.

    Attributes:
        frames: number of video packets (one per frame for every codec we accept).
        start_s: first presentation time, relative to the file's start time.
        end_s: end of the last frame, relative to the file's start time.
        interval_s: the median time between consecutive frames.
        constant: every frame interval equals the median (within timestamp rounding).
    """

    frames: int
    start_s: float
    end_s: float
    interval_s: float
    constant: bool

    @property
    def fps(self) -> float:
        return 1.0 / self.interval_s if self.interval_s > 0 else 0.0


def _ticks(packet: dict, key: str) -> int | None:
    value = packet.get(key)
    return int(value) if isinstance(value, int) else None


def frame_timing(path: Path, *, timeout_s: float = 300.0) -> FrameTiming | None:
    """Reads the packet timestamps of the first (non-cover-art) video stream.

    Returns None when the file has no video stream or no usable timestamps (raw elementary
    streams); raises :class:`UndecodableMedia` when ffprobe cannot read the file.
    """
    try:
        data = ffmpeg.ffprobe_json(
            path,
            [
                "-select_streams", "V:0",
                "-show_entries", "stream=time_base:packet=pts,dts,duration:format=start_time",
            ],
            timeout_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        log.warning("packet scan of %s took over %.0f s; using header values", path.name, timeout_s)
        return None
    streams = data.get("streams") or []
    if not streams:
        return None
    try:
        time_base = Fraction(streams[0].get("time_base", "0/1"))
    except (ValueError, ZeroDivisionError):
        return None
    packets = data.get("packets") or []
    stamps: list[int] = []
    last_end: int | None = None
    for packet in packets:
        stamp = _ticks(packet, "pts")
        if stamp is None:
            stamp = _ticks(packet, "dts")
        if stamp is None:
            continue
        stamps.append(stamp)
        end = stamp + (_ticks(packet, "duration") or 0)
        last_end = end if last_end is None else max(last_end, end)
    if not stamps or time_base <= 0:
        return None
    stamps.sort()
    intervals = [b - a for a, b in itertools.pairwise(stamps) if b > a]
    median = statistics.median(intervals) if intervals else 0
    # Timestamps are rounded to the time base: 29.97 fps in milliseconds is 33, 34, 33 ticks.
    tolerance = max(1.5, 0.005 * median)
    constant = all(abs(step - median) <= tolerance for step in intervals)
    if len(intervals) != len(stamps) - 1:
        constant = False  # two frames share a timestamp
    file_start = float(data.get("format", {}).get("start_time") or 0.0)
    seconds = float(time_base)
    if last_end is None or last_end <= stamps[-1]:
        last_end = stamps[-1] + int(median)
    return FrameTiming(
        frames=len(stamps),
        start_s=stamps[0] * seconds - file_start,
        end_s=last_end * seconds - file_start,
        interval_s=median * seconds,
        constant=constant,
    )


def is_still_image(info: MediaInfo) -> bool:
    formats = info.container.split(",")
    return any(fmt in _IMAGE_FORMATS for fmt in formats) or info.frame_count == 1


def describe(path: Path) -> tuple[MediaInfo, FrameTiming | None]:
    """Header values corrected by the packet timestamps (exact frame count, real VFR flag)."""
    info = ffmpeg.probe(path)
    if not info.has_video:
        return info, None
    timing = frame_timing(path)
    if timing is None:
        return info, None
    avg_fps = info.avg_fps
    span = timing.end_s - timing.start_s
    if avg_fps <= 0 and span > 0:
        avg_fps = timing.frames / span
    info = replace(info, frame_count=timing.frames, is_vfr=not timing.constant, avg_fps=avg_fps)
    return info, timing
