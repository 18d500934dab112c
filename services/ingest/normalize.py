"""Frame-rate normalisation: any video to constant 25 fps H.264, in a new file.

Legacy step 2 replaced the original in place and failed on every file without NVENC or in WebM
(spec 01 §2.1). Here:

* the output is a new file (default ``<stem>_25fps.<ext>`` beside the input), written under a
  temporary name and renamed into place only once ffmpeg succeeded and the result was checked;
* H.264 comes from ``h264_nvenc`` when ffmpeg has it *and* a test encode works, else libx264;
  an NVENC failure in "auto" mode falls back to libx264;
* audio is copied when the output container can hold it, else (or when the copy fails) encoded
  to AAC; a file without audio gets none;
* the container: ``.mp4``, ``.m4v`` and ``.mov`` keep theirs, ``.mkv`` stays Matroska, and
  everything else (``.webm``, ``.avi``, ``.flv``, ``.wmv``, ``.mpg``, ``.mts``…) becomes
  ``.mp4``. WebM cannot hold H.264; re-encoding to VP9 instead would be several times slower on
  CPU, impossible on NVENC, and After Effects does not import WebM: one H.264/MP4 deliverable is
  what every later step and every editor reads;
* an input that already is constant-rate H.264 (yuv420p) at the target rate is only remuxed
  (``reencoded=False``), checked on the packet timestamps rather than on the headers;
* progress comes from ``ffmpeg -progress``; the ffmpeg child is killed whenever the caller stops
  (RPC cancelled, deadline, error), and the temporary file is removed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from services.common import ffmpeg
from services.common.errors import InvalidArgument, Unavailable, UndecodableMedia
from services.common.ffmpeg import MediaInfo
from services.ingest.probe import FrameTiming, describe, is_still_image

log = logging.getLogger(__name__)

ENCODERS = ("auto", "libx264", "h264_nvenc")

#: Output suffix -> ffmpeg muxer.
MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: Audio codecs each muxer takes as they are (None: anything).
_COPYABLE_AUDIO: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"aac", "mp3", "ac3", "eac3", "alac"}),
    "mov": frozenset(
        {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be"}
    ),
    "matroska": None,
}
_SKIP_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p"})
#: Frame rates must match this closely for a remux instead of a re-encode.
_FPS_TOLERANCE = 0.001


@dataclass(frozen=True)
class EncoderSupport:
    """Which H.264 encoders really work here (NVENC is listed by Debian's ffmpeg even without a
    GPU, so a short test encode decides)."""

    libx264: bool
    nvenc: bool


def _encodes(ffmpeg_bin: str, encoder: str, timeout_s: float) -> bool:
    cmd = [
        ffmpeg_bin, "-nostdin", "-hide_banner", "-loglevel", "error",
        "-f", "lavfi", "-i", "color=black:size=256x256:rate=25:duration=0.2",
        "-c:v", encoder, "-f", "null", "-",
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def detect_encoders(timeout_s: float = 30.0) -> EncoderSupport:
    """Blocking: lists ffmpeg's encoders and test-encodes with NVENC when it is listed."""
    ffmpeg_bin = ffmpeg.require_binary("ffmpeg")
    listing = subprocess.run(
        [ffmpeg_bin, "-hide_banner", "-encoders"],
        capture_output=True,
        timeout=timeout_s,
        check=False,
    ).stdout.decode(errors="replace")
    names = {line.split()[1] for line in listing.splitlines() if len(line.split()) > 1}
    nvenc = "h264_nvenc" in names and _encodes(ffmpeg_bin, "h264_nvenc", timeout_s)
    support = EncoderSupport(libx264="libx264" in names, nvenc=nvenc)
    log.info("H.264 encoders: libx264=%s h264_nvenc=%s", support.libx264, support.nvenc)
    return support


@dataclass(frozen=True)
class NormalizeOptions:
    """How to normalise. ``encoder``: "auto" (NVENC when it works, else libx264), "libx264" or
    "h264_nvenc"; ``force`` re-encodes even an input that already matches."""

    target_fps: float = 25.0
    encoder: str = "auto"
    force: bool = False
    x264_preset: str = "veryfast"
    crf: int = 23
    nvenc_preset: str = "p5"
    nvenc_cq: int = 23
    audio_bitrate: str = "192k"

    def __post_init__(self) -> None:
        if not 0 < self.target_fps <= 240:
            raise InvalidArgument(f"target fps must be in (0, 240], got {self.target_fps:g}")
        if self.encoder not in ENCODERS:
            raise InvalidArgument(f"unknown encoder {self.encoder!r}; use one of {ENCODERS}")


@dataclass(frozen=True)
class NormalizeProgress:
    frames_done: int
    frames_total: int
    stage: str = "encode"
    message: str = ""


@dataclass(frozen=True)
class NormalizeOutcome:
    output: Path
    info: MediaInfo
    reencoded: bool
    encoder: str
    audio_mode: str


def _fps_text(fps: float) -> str:
    return str(Fraction(fps).limit_denominator(1001))


def output_suffix(source: Path) -> str:
    """The container of the normalised file for this input (see the module docstring)."""
    suffix = source.suffix.lower()
    return suffix if suffix in MUXERS else ".mp4"


def default_output(source: Path, target_fps: float = 25.0) -> Path:
    """``<stem>_25fps.<ext>`` beside the input."""
    return source.with_name(f"{source.stem}_{target_fps:g}fps{output_suffix(source)}")


def check_output_path(source: Path, output: Path) -> str:
    """The muxer for ``output``; rejects writing over the input or into a container that cannot
    hold H.264."""
    if output.resolve() == source.resolve():
        raise InvalidArgument("the output must be a new file: normalisation never works in place")
    if output.is_dir():
        raise InvalidArgument(f"the output path is a folder: {output.name}")
    muxer = MUXERS.get(output.suffix.lower())
    if muxer is None:
        raise InvalidArgument(
            f"cannot write H.264 into {output.suffix or 'a file without extension'}; "
            f"use one of {', '.join(MUXERS)}"
        )
    return muxer


def is_normalized(info: MediaInfo, timing: FrameTiming | None, target_fps: float) -> bool:
    """True when the input already is constant-rate 8-bit 4:2:0 H.264 at ``target_fps``
    (judged on the packet timestamps, not only the header rates)."""
    if info.video_codec != "h264" or info.pixel_format not in _SKIP_PIXEL_FORMATS:
        return False
    if timing is None or not timing.constant or info.is_vfr:
        return False
    return all(
        abs(rate - target_fps) <= _FPS_TOLERANCE * target_fps
        for rate in (timing.fps, info.real_fps, info.avg_fps)
    )


def expected_frames(timing: FrameTiming | None, info: MediaInfo, target_fps: float) -> int:
    """Frames of the CFR output: ffmpeg fills from the file's start to the end of the last frame
    (a video that starts after its audio gets its first frame repeated, which keeps sync)."""
    end = timing.end_s if timing is not None else info.duration_s
    return max(round(end * target_fps), 1)


def _audio_plan(info: MediaInfo, muxer: str) -> str:
    if not info.has_audio:
        return "none"
    copyable = _COPYABLE_AUDIO[muxer]
    return "copy" if copyable is None or info.audio_codec in copyable else "aac"


def build_command(
    source: Path,
    target: Path,
    *,
    muxer: str,
    info: MediaInfo,
    options: NormalizeOptions,
    encoder: str,
    audio_mode: str,
) -> list[str]:
    """The ffmpeg command line (``encoder`` "copy" remuxes the video)."""
    cmd = [
        ffmpeg.require_binary("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-nostats", "-y", "-i", str(source),
        "-map", "0:V:0", "-map", "0:a?", "-dn", "-sn", "-map_metadata", "0",
    ]  # fmt: skip
    if encoder == "copy":
        cmd += ["-c:v", "copy"]
    else:
        filters = [f"fps={_fps_text(options.target_fps)}"]
        if info.width % 2 or info.height % 2:  # 4:2:0 needs even sizes
            filters.append("scale=trunc(iw/2)*2:trunc(ih/2)*2")
        cmd += ["-vf", ",".join(filters), "-fps_mode", "cfr", "-pix_fmt", "yuv420p"]
        if encoder == "h264_nvenc":
            cmd += [
                "-c:v", "h264_nvenc", "-preset", options.nvenc_preset, "-tune", "hq",
                "-rc", "vbr", "-cq", str(options.nvenc_cq), "-b:v", "0",
            ]  # fmt: skip
        else:
            cmd += ["-c:v", "libx264", "-preset", options.x264_preset, "-crf", str(options.crf)]
    if audio_mode == "copy":
        cmd += ["-c:a", "copy"]
    elif audio_mode == "aac":
        cmd += ["-c:a", "aac", "-b:a", options.audio_bitrate]
    if muxer in ("mp4", "mov"):
        cmd += ["-movflags", "+faststart"]
    cmd += ["-f", muxer, "-progress", "pipe:1", str(target)]
    return cmd


class _FfmpegFailed(Exception):
    pass


async def _drain_lines(stream: asyncio.StreamReader, tail: collections.deque[str]) -> None:
    async for raw in stream:
        tail.append(raw.decode(errors="replace").rstrip())


async def run_ffmpeg(cmd: Sequence[str], total_frames: int, fps: float) -> AsyncIterator[int]:
    """Runs ffmpeg and yields the output frame count as ``-progress`` reports it.

    The child is killed if the caller stops iterating early, is cancelled or fails; raises
    :class:`_FfmpegFailed` with ffmpeg's last error lines when it exits non-zero.
    """
    process = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    tail: collections.deque[str] = collections.deque(maxlen=20)
    stderr_task = asyncio.create_task(_drain_lines(process.stderr, tail))
    try:
        frame = 0
        out_time_us = 0
        last = -1
        async for raw in process.stdout:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            if key == "frame" and value.isdigit():
                frame = int(value)
            elif key == "out_time_us" and value.lstrip("-").isdigit():
                out_time_us = max(int(value), 0)
            elif key == "progress":
                # Stream copies report no frames; their output time stands in.
                done = max(frame, round(out_time_us * fps / 1e6))
                done = min(done, total_frames)
                if done != last:
                    last = done
                    yield done
        returncode = await process.wait()
        await stderr_task
        if returncode != 0:
            raise _FfmpegFailed("; ".join(line for line in tail if line) or f"exit {returncode}")
    finally:
        if process.returncode is None:
            process.kill()
            with contextlib.suppress(BaseException):
                await asyncio.shield(process.wait())
        if not stderr_task.done():
            stderr_task.cancel()
            with contextlib.suppress(BaseException):
                await stderr_task


def _attempts(video: str, audio: str, *, auto: bool) -> list[tuple[str, str]]:
    """(video encoder, audio mode) pairs to try in order: the plan, then AAC instead of a copy
    the muxer refused, then libx264 if NVENC failed in auto mode."""
    attempts = [(video, audio)]
    if audio == "copy":
        attempts.append((video, "aac"))
    if video == "h264_nvenc" and auto:
        attempts.append(("libx264", "aac" if audio == "copy" else audio))
    return attempts


def choose_encoder(requested: str, support: EncoderSupport) -> str:
    if requested == "h264_nvenc":
        if not support.nvenc:
            raise Unavailable("h264_nvenc is not usable on this server (no working NVIDIA encoder)")
        return "h264_nvenc"
    if requested == "libx264" or not support.nvenc:
        if not support.libx264:
            raise Unavailable("this ffmpeg has no libx264 encoder")
        return "libx264"
    return "h264_nvenc"


async def normalize_video(
    source: Path,
    output: Path,
    options: NormalizeOptions,
    support: EncoderSupport,
) -> AsyncIterator[NormalizeProgress | NormalizeOutcome]:
    """Converts ``source`` into ``output`` at ``options.target_fps`` constant frame rate.

    Yields :class:`NormalizeProgress` (frames written of the frames expected), then one
    :class:`NormalizeOutcome`. ``output`` appears only complete (temporary name, then rename).

    Raises:
        InvalidArgument: bad output path or options.
        UndecodableMedia: the input is not a video, or ffmpeg cannot convert it.
        Unavailable: the requested encoder does not work here.
    """
    muxer = check_output_path(source, output)
    info, timing = await asyncio.to_thread(describe, source)
    if not info.has_video:
        raise UndecodableMedia(f"not a video: {source.name} has no video stream")
    if is_still_image(info):
        raise UndecodableMedia(f"not a video: {source.name} is a still image")
    fps = options.target_fps
    copy_video = not options.force and is_normalized(info, timing, fps)
    video = "copy" if copy_video else choose_encoder(options.encoder, support)
    total = expected_frames(timing, info, fps) if not copy_video else info.frame_count
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.partial")
    failures: list[str] = []
    try:
        for video_mode, audio_mode in _attempts(
            video, _audio_plan(info, muxer), auto=options.encoder == "auto"
        ):
            cmd = build_command(
                source, temporary, muxer=muxer, info=info, options=options,
                encoder=video_mode, audio_mode=audio_mode,
            )  # fmt: skip
            yield NormalizeProgress(0, total, message=f"video {video_mode}, audio {audio_mode}")
            try:
                async for done in run_ffmpeg(cmd, total, fps):
                    yield NormalizeProgress(done, total)
            except _FfmpegFailed as exc:
                failures.append(f"{video_mode}/{audio_mode}: {exc}")
                log.warning("ffmpeg failed on %s with %s/%s: %s", source.name, video_mode,
                            audio_mode, exc)  # fmt: skip
                continue
            result, result_timing = await asyncio.to_thread(describe, temporary)
            _check_result(result, result_timing, fps, source.name)
            await asyncio.to_thread(_commit, temporary, output)
            yield NormalizeProgress(total, total, stage="done")
            yield NormalizeOutcome(
                output=output,
                info=result,
                reencoded=video_mode != "copy",
                encoder=video_mode,
                audio_mode=audio_mode,
            )
            return
        raise UndecodableMedia(f"ffmpeg could not convert {source.name}: {failures[-1]}")
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()


def _check_result(info: MediaInfo, timing: FrameTiming | None, fps: float, name: str) -> None:
    """A conversion that 'succeeded' but is not what we promise is a bug, not a client error."""
    constant = timing is not None and timing.constant
    if info.video_codec != "h264" or not constant or abs(timing.fps - fps) > 0.01 * fps:
        raise RuntimeError(
            f"normalised {name} is not {fps:g} fps CFR H.264: codec={info.video_codec} "
            f"fps={timing.fps if timing else 0:.3f} constant={constant}"
        )


def _commit(temporary: Path, output: Path) -> None:
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, output)
