"""ffprobe and ffmpeg pipes shared by the services.

Decoding runs ffmpeg as a child process writing raw frames (or PCM) to a pipe. stderr is drained by
its own thread into a bounded tail, so a chatty decoder can never fill a pipe and hang us, and the
child is killed whenever the reader stops early.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.common.blocking import CancelToken
from services.common.errors import Cancelled, Unavailable, UndecodableMedia

log = logging.getLogger(__name__)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise Unavailable(f"{name} is not installed (the install step adds Debian's ffmpeg)")
    return path


@functools.cache
def frame_decoder() -> str:
    """The ffmpeg that decodes frames for the models: the static build that ships in the
    ``imageio-ffmpeg`` wheel where it is installed (``IMAGEIO_FFMPEG_EXE`` overrides it), else the
    system's.

    Decoding starts once per request, so its start-up is on every request's critical path: the
    static build starts in about 10 ms, Debian's (linked against 215 libraries) in 80-90 ms, much
    of a short clip's processing. Both give the same bytes for the frames the services read
    (I420 at the display size, scaled, stretched or turned; the scene model's bicubic RGB), a
    test checks it. Probing, normalising and audio stay with the system's ffmpeg.
    """
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return require_binary("ffmpeg")


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a file (mirrors ``videoanalysis.v1.VideoInfo``)."""

    duration_s: float
    avg_fps: float
    real_fps: float
    frame_count: int
    width: int
    height: int
    rotation: int
    container: str
    video_codec: str
    audio_codec: str
    has_audio: bool
    is_vfr: bool
    size_bytes: int
    pixel_format: str
    audio_sample_rate: int
    audio_channels: int
    #: Shape of one stored pixel (width over height): 16/11 for anamorphic PAL 16:9, 1 mostly.
    sample_aspect: Fraction = Fraction(1)

    @property
    def has_video(self) -> bool:
        return bool(self.video_codec)

    @staticmethod
    def display_width(width: int, sample_aspect: Fraction) -> int:
        """A stored width in square pixels (even, as ffmpeg's scaler prefers)."""
        if sample_aspect == 1 or width <= 0:
            return width
        return max(2, round(width * sample_aspect / 2) * 2)

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` of the picture as it is shown, in square pixels: the stored width
        stretched by the sample aspect ratio (to an even number), then turned upright as ffmpeg
        turns rotated video."""
        width = self.display_width(self.width, self.sample_aspect)
        if self.rotation in (90, 270):
            return self.height, width
        return width, self.height


def _rate(text: str | None) -> float:
    if not text or text in ("N/A", "0/0"):
        return 0.0
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(value)


def _aspect(text: str | None) -> Fraction:
    """ffprobe's ``sample_aspect_ratio`` ("16:11"); 1 when absent, unknown ("0:1") or absurd."""
    try:
        num, den = (int(v) for v in (text or "").split(":"))
        value = Fraction(num, den)
    except (ValueError, ZeroDivisionError):
        return Fraction(1)
    return value if Fraction(1, 10) <= value <= 10 else Fraction(1)


def _float(text: object) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _rotation(stream: dict[str, Any]) -> int:
    rotate = stream.get("tags", {}).get("rotate")
    if rotate is not None:
        return int(_float(rotate)) % 360
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(-_float(side["rotation"])) % 360
    return 0


def ffprobe_json(path: Path, args: list[str], timeout_s: float) -> dict[str, Any]:
    """ffprobe's JSON for ``path`` with ``args`` (what to show).

    Raises:
        UndecodableMedia: ffprobe cannot read the file.
        subprocess.TimeoutExpired: it ran longer than ``timeout_s``.
    """
    cmd = [require_binary("ffprobe"), "-v", "error", "-of", "json", *args, str(path)]
    done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        # ffprobe prefixes the reason with the server-side path, which clients need not see.
        reason = lines[-1].replace(f"{path}: ", "") if lines else "ffprobe failed"
        raise UndecodableMedia(f"not a readable media file: {path.name} ({reason})")
    data: dict[str, Any] = json.loads(done.stdout or b"{}")
    return data


def probe(path: Path, timeout_s: float = 60.0) -> MediaInfo:
    """Describes ``path``; raises :class:`UndecodableMedia` when ffprobe cannot read it."""
    try:
        data = ffprobe_json(path, ["-show_format", "-show_streams"], timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise UndecodableMedia(f"ffprobe timed out on {path.name}") from exc
    streams = data.get("streams", [])
    fmt = data.get("format", {})
    video: dict[str, Any] = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
        ),
        {},
    )
    audio: dict[str, Any] = next((s for s in streams if s.get("codec_type") == "audio"), {})
    duration = _float(video.get("duration")) or _float(fmt.get("duration"))
    avg_fps = _rate(video.get("avg_frame_rate"))
    real_fps = _rate(video.get("r_frame_rate"))
    frame_count = int(_float(video.get("nb_frames")))
    if frame_count <= 0 and duration > 0 and avg_fps > 0:
        frame_count = round(duration * avg_fps)
    is_vfr = bool(avg_fps and real_fps and abs(avg_fps - real_fps) > 0.01 * real_fps)
    return MediaInfo(
        duration_s=duration,
        avg_fps=avg_fps,
        real_fps=real_fps,
        frame_count=frame_count,
        width=int(video.get("width", 0) or 0),
        height=int(video.get("height", 0) or 0),
        rotation=_rotation(video) if video else 0,
        container=str(fmt.get("format_name", "")),
        video_codec=str(video.get("codec_name", "")),
        audio_codec=str(audio.get("codec_name", "")),
        has_audio=bool(audio),
        is_vfr=is_vfr,
        size_bytes=int(_float(fmt.get("size"))) or (path.stat().st_size if path.exists() else 0),
        pixel_format=str(video.get("pix_fmt", "")),
        audio_sample_rate=int(_float(audio.get("sample_rate"))),
        audio_channels=int(audio.get("channels", 0) or 0),
        sample_aspect=_aspect(video.get("sample_aspect_ratio")),
    )


def _reason(stderr: str) -> str:
    """What a failed ffmpeg says last (its error), for the message raised."""
    return (stderr.strip().splitlines()[-1:] or ["ffmpeg failed"])[0]


class _StderrTail:
    """Drains a child's stderr on a thread, keeping the last lines for error messages."""

    def __init__(self, stream, keep: int = 20) -> None:  # type: ignore[no-untyped-def]
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream) -> None:  # type: ignore[no-untyped-def]
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip())
        stream.close()

    def join(self) -> str:
        self._thread.join(timeout=5)
        return "\n".join(self.lines)


#: Pipe capacity asked for (Linux's default most for an unprivileged process): with the default
#: 64 KiB, ffmpeg blocks a dozen times on every SD frame until the reader catches up, which on
#: two cores made reading a video take half as long again as decoding it.
_PIPE_BYTES = 1 << 20


class FrameReader:
    """ffmpeg decoding ``path`` to raw frames on a pipe, read one at a time.

    :meth:`read_into` reads the next frame straight into an array of the caller's (shared memory,
    say: no copy in between); iterating yields each frame as a new array. Use it as a context
    manager (or call :meth:`close`): ffmpeg is killed when the reader stops early.

    ``pix_fmt`` "yuv420p" gives planar I420 frames, ``(height·3/2)×width`` (the luma plane, then
    the two quarter-size chroma planes; ``width`` and ``height`` must be even): half the bytes of
    RGB and no colour conversion in ffmpeg, for a consumer that converts only the frames it
    needs. ``threads`` (decoder) and ``filter_threads`` (scaler): 0 lets ffmpeg choose (one per
    core). ``scale_flags`` names swscale's filter; a model that must see exactly its reference's
    pixels passes the one the reference used. ``binary``: the ffmpeg to run (by default
    :func:`frame_decoder`'s).

    A file with no decodable video gives no frames (the caller reports it); a decoder that exits
    with an error raises :class:`UndecodableMedia` when its output ends.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        *,
        fps: float | None = None,
        token: CancelToken | None = None,
        threads: int = 0,
        filter_threads: int = 0,
        pix_fmt: str = "rgb24",
        scale_flags: str = "area",
        binary: str | None = None,
    ) -> None:
        if pix_fmt == "yuv420p":
            if width % 2 or height % 2:
                raise ValueError(f"I420 frames need an even size, got {width}x{height}")
            self.shape: tuple[int, ...] = (height * 3 // 2, width)
        else:
            self.shape = (height, width, 3)
        self.frame_bytes = int(np.prod(self.shape))
        filters = [f"fps={fps:g}"] if fps else []
        filters.append(f"scale={width}:{height}:flags={scale_flags}")
        command = [
            binary or frame_decoder(), "-nostdin", "-hide_banner", "-loglevel", "error",
            *(["-filter_threads", str(filter_threads)] if filter_threads else []),
            "-threads", str(threads), "-i", str(path), "-map", "0:v:0",
            "-vf", ",".join(filters), "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1",
        ]  # fmt: skip
        self._what = path.name
        self._token = token
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            bufsize=0,
        )  # fmt: skip
        self._stdout = self._process.stdout
        self._tail = _StderrTail(self._process.stderr)
        self._closed = False
        with contextlib.suppress(OSError, AttributeError):  # a smaller pipe only costs time
            fcntl.fcntl(self._stdout.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)  # type: ignore[union-attr]

    def read_into(self, out: npt.NDArray[np.uint8]) -> bool:
        """Fills ``out`` (C-contiguous uint8 of :attr:`shape`) with the next frame; False once
        the video has ended (``out`` is then undefined).

        Raises:
            Cancelled: the token was cancelled.
            UndecodableMedia: ffmpeg failed.
        """
        if self._token is not None and self._token.cancelled:
            raise Cancelled("cancelled")
        if self._closed:
            return False
        view = out.data.cast("B")
        if len(view) != self.frame_bytes:
            raise ValueError(f"a frame is {self.frame_bytes} bytes, the buffer {len(view)}")
        filled = 0
        while filled < self.frame_bytes:
            count = self._stdout.readinto(view[filled:])  # type: ignore[union-attr]
            if not count:
                self._finish()
                return False
            filled += count
        return True

    def __iter__(self) -> Iterator[npt.NDArray[np.uint8]]:
        try:
            while True:
                frame = np.empty(self.shape, np.uint8)
                if not self.read_into(frame):
                    return
                yield frame
        finally:
            self.close()

    def _finish(self) -> None:
        """The output ended: ffmpeg's exit status decides whether that was the video's end."""
        self._process.wait()
        stderr = self._tail.join()
        self.close()
        if self._process.returncode != 0:
            raise UndecodableMedia(f"cannot decode {self._what}: {_reason(stderr)}")

    def close(self) -> None:
        """Stops ffmpeg if it is still running (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._tail.join()
        if self._stdout is not None:
            self._stdout.close()

    def __del__(self) -> None:
        # Dropped unclosed (an error before its frames were read): no ffmpeg left behind.
        if getattr(self, "_closed", True) is False:
            self.close()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: ``for frame in iter_frames(path, width, height, ...)``: a :class:`FrameReader` iterated (ffmpeg
#: is stopped when the loop ends, or is left and the iteration collected).
iter_frames = FrameReader


def read_audio(
    path: Path, sample_rate: int = 16000, token: CancelToken | None = None
) -> npt.NDArray[np.float32]:
    """Decodes the first audio stream to mono float32 at ``sample_rate``, in memory."""
    ffmpeg = require_binary("ffmpeg")
    cmd = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path),
        "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    block = sample_rate * 4 * 10  # ten seconds per read
    parts: list[bytes] = []
    process = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    tail = _StderrTail(process.stderr)
    try:
        while True:
            if token is not None and token.cancelled:
                raise Cancelled("cancelled")
            chunk = process.stdout.read(block)  # type: ignore[union-attr]
            if not chunk:
                break
            parts.append(chunk)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        stderr = tail.join()
    if process.returncode != 0:
        raise UndecodableMedia(f"cannot decode the audio of {path.name}: {_reason(stderr)}")
    data = b"".join(parts)
    return np.frombuffer(data[: len(data) // 4 * 4], dtype=np.float32).copy()
