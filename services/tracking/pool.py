"""A persistent pool of worker processes, each holding its own face graphs.

Frames travel through shared memory, never through pipes: the parent decodes the video once,
reading ffmpeg's output straight into consecutive frames of slots of one buffer (an anonymous
in-memory file whose descriptor each worker receives over its pipe and maps). A slot holds one
chunk and, before it, the last frames of the previous chunk (the overlap, see
:mod:`services.tracking.worker`). A chunk goes to an idle worker as soon as its first frame is
in; the worker follows the decoder through the slot (a small header counts the frames written).
Memory is bounded by the slots: ``workers + 1``.

Results come back out of order and are handed on in order. A chunk's result becomes final once the
chunk before it is final: if the chunk started on the faces the previous one was following (and
nothing was lost just before the edge), it stands; otherwise the chunk is re-run from the previous
chunk's final state, up to where the two runs agree. So chunk edges neither drop a face that only
landmark tracking keeps nor change the ids; the results depend on the chunking, which depends on
the video and the pool size only, never on how many workers a request uses.

The pool serves one job at a time (a job uses all the workers it asks for); other jobs wait their
turn. A worker that cannot load its models, dies, or fails on a chunk fails the job with a clear
error (and a dead worker is replaced before the next job); a cancelled job stops every worker
within a frame.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import mmap
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import recv_handle, send_handle
from pathlib import Path

import numpy as np

from services.common.blocking import CancelToken
from services.common.errors import Unavailable
from services.tracking.mesh import MeshOptions
from services.tracking.worker import (
    Cadence,
    ChunkResult,
    ChunkTask,
    Reference,
    Seed,
    boxes_agree,
    extent,
    i420_shape,
    progress_view,
)

log = logging.getLogger(__name__)

_POLL_S = 0.05
#: Frames decoded per turn of the job loop while a chunk is being filled.
_FILL_STEP = 4
#: Start of the shared buffer: per slot, frames written so far and the final count (-1: open).
_HEADER_BYTES = 4096


def _worker_main(conn: Connection, cancel, model_root: Path | None, default: MeshOptions) -> None:  # type: ignore[no-untyped-def]
    """Body of a worker process: load the graphs once, then run chunks until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from services.tracking.worker import ChunkRunner

        runner = ChunkRunner(default, model_root)
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            kind = message[0]
            if kind == "stop":
                break
            if kind == "buffer":
                runner.map_buffer(message[1], recv_handle(conn), message[2])
                conn.send(("mapped",))
            elif kind == "chunk":
                task: ChunkTask = message[1]
                try:
                    conn.send(("done", runner.run(task, lambda: cancel.value)))
                except InterruptedError:
                    conn.send(("cancelled", task.chunk))
                except Exception as exc:
                    conn.send(("error", task.chunk, f"{type(exc).__name__}: {exc}"))
    finally:
        runner.close()


@dataclass
class _Worker:
    number: int
    process: multiprocessing.process.BaseProcess
    conn: Connection
    pid: int = 0
    #: Number of the frame buffer this worker has mapped (-1: none).
    buffer: int = -1


@dataclass(frozen=True)
class JobPlan:
    """How one video is cut and processed.

    Attributes:
        workers: worker processes to use (at most the pool's size).
        chunk_frames: own frames per chunk.
        overlap_frames: frames of the previous chunk run again before a chunk's own frames.
        frame_size: ``(height, width)`` of the decoded (processing) frames.
        out_size: ``(width, height)`` of the original frames (coordinates are reported in it).
        options: the face graph.
        cadence: the detection schedule.
        include_landmarks: return landmarks.
    """

    workers: int
    chunk_frames: int
    overlap_frames: int
    frame_size: tuple[int, int]
    out_size: tuple[int, int]
    options: MeshOptions
    cadence: Cadence
    include_landmarks: bool


@dataclass
class JobStats:
    """Counters of one job, filled in as it runs."""

    chunks: int = 0
    #: Chunks whose cold run did not continue the previous chunk's faces and were re-run seeded.
    repaired: int = 0
    #: Seconds the workers spent on chunks (summed over workers), and the job's wall time.
    busy_s: float = 0.0
    wall_s: float = 0.0


@dataclass
class _Chunk:
    task: ChunkTask
    slot: int
    cold: ChunkResult | None = None
    final: ChunkResult | None = None
    repairing: bool = False


@dataclass
class _JobState:
    idle: deque[_Worker]
    free_slots: deque[int]
    chunks: list[_Chunk] = field(default_factory=list)
    ready: deque[ChunkTask] = field(default_factory=deque)
    repairs: deque[ChunkTask] = field(default_factory=deque)
    running: dict[int, tuple[_Worker, ChunkTask]] = field(default_factory=dict)
    started: dict[int, float] = field(default_factory=dict)
    next_final: int = 0
    last_final: Seed | None = None
    stats: JobStats = field(default_factory=JobStats)


def _splice(seeded: ChunkResult, cold: ChunkResult) -> ChunkResult:
    """The seeded run's frames, then (if it stopped on agreement) the cold run's remaining ones."""
    if not seeded.converged:
        return replace(
            seeded,
            detections=seeded.detections + cold.detections,
            boundary_boxes=cold.boundary_boxes,
        )
    frames = len(seeded.counts)
    skip = int(cold.counts[:frames].sum())
    landmarks = None
    if seeded.landmarks is not None and cold.landmarks is not None:
        landmarks = np.concatenate([seeded.landmarks, cold.landmarks[skip:]])
    return ChunkResult(
        chunk=cold.chunk,
        first_frame=cold.first_frame,
        counts=np.concatenate([seeded.counts, cold.counts[frames:]]),
        features=np.concatenate([seeded.features, cold.features[skip:]]),
        landmarks=landmarks,
        detections=seeded.detections + cold.detections,
        cuts=cold.cuts,
        boundary_boxes=cold.boundary_boxes,
        final=cold.final,
        converged=True,
    )


class _FrameBuffer:
    """Shared memory for frames: an anonymous in-memory file (``memfd``), mapped here and, through
    its descriptor, in every worker. It has no name anywhere, so it cannot leak, and it does not
    count against a container's small ``/dev/shm``.

    It is kept between jobs (allocating and zeroing hundreds of MiB per request costs more than a
    short video's decoding) and only replaced when a job needs more room.
    """

    _numbers = itertools.count()

    def __init__(self, size: int) -> None:
        self.number = next(self._numbers)
        self.size = size
        self.fd = self._create(size)
        try:
            self._map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise

    @staticmethod
    def _create(size: int) -> int:
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("va-tracking-frames", os.MFD_CLOEXEC)
        else:  # not Linux: an unlinked temporary file
            with tempfile.TemporaryFile(prefix="va-tracking-") as handle:
                fd = os.dup(handle.fileno())
        try:
            os.ftruncate(fd, size)
            os.posix_fallocate(fd, 0, size)  # commit it now rather than fault later
        except OSError as exc:
            os.close(fd)
            raise Unavailable(f"cannot allocate the {size >> 20} MiB frame buffer: {exc}") from exc
        return fd

    def slots(self, count: int, frames: int, height: int, width: int) -> np.ndarray:
        """A ``count×frames×(height·3/2)×width`` view (I420 frames) of the buffer after its
        header."""
        shape = (count, frames, *i420_shape(height, width))
        if _HEADER_BYTES + int(np.prod(shape)) > self.size:
            raise ValueError("the frame buffer is too small for these slots")
        return np.ndarray(shape, dtype=np.uint8, buffer=self._map, offset=_HEADER_BYTES)

    def progress(self) -> np.ndarray:
        """The header: per slot, ``(frames written, final frame count or -1)``."""
        return progress_view(self._map)

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


class WorkerPool:
    """Worker processes that keep their face models loaded between requests.

    Args:
        size: number of worker processes.
        default_options: the graph every worker builds (and warms up) at start.
        model_root: folder holding ``mediapipe/modules/...`` (None: the installed package).
        start_timeout_s: how long a worker may take to load its models.
    """

    def __init__(
        self,
        size: int,
        default_options: MeshOptions,
        *,
        model_root: Path | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one worker, got {size}")
        self.size = size
        self.default_options = default_options
        self._model_root = model_root
        self._start_timeout_s = start_timeout_s
        self._context = multiprocessing.get_context("spawn")
        # A bare shared flag (no lock, no named semaphore): workers poll it before every frame.
        self._cancel = self._context.RawValue(ctypes.c_bool, False)
        self._workers: list[_Worker | None] = [None] * size
        self._job_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._jobs = 0
        self._closed = False
        self._buffer: _FrameBuffer | None = None
        self.failure: str | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Starts every worker and waits until each has loaded its models.

        Raises:
            Unavailable: a worker could not load its models or start (the message says why).
        """
        with self._state_lock:
            self._fill_pool()

    def _fill_pool(self) -> None:
        if self._closed:
            raise Unavailable("the tracking worker pool is shut down")
        missing = [i for i, w in enumerate(self._workers) if w is None or not w.process.is_alive()]
        if not missing:
            return
        for i in missing:
            self._discard(i)
        started = []
        for i in missing:
            parent_conn, child_conn = self._context.Pipe()
            process = self._context.Process(
                target=_worker_main,
                args=(child_conn, self._cancel, self._model_root, self.default_options),
                name=f"tracking-worker-{i}",
                daemon=True,
            )
            process.start()
            child_conn.close()
            started.append(_Worker(i, process, parent_conn))
        problems = []
        deadline = time.monotonic() + self._start_timeout_s
        for worker in started:
            message = self._receive(worker, deadline)
            if message is not None and message[0] == "ready":
                worker.pid = int(message[1])
                self._workers[worker.number] = worker
            else:
                problems.append(message[1] if message else "no answer")
                self._stop(worker)
        if problems:
            self.failure = f"a tracking worker could not load the face models: {problems[0]}"
            log.error("%s", self.failure)
            raise Unavailable(self.failure)
        self.failure = None
        log.info("tracking workers ready: pids %s", [w.pid for w in self._workers if w])

    @staticmethod
    def _receive(worker: _Worker, deadline: float) -> tuple | None:
        """The worker's first message (None when its pipe broke), or a ``failed`` one saying why
        none came before ``deadline``."""
        ready = wait([worker.conn, worker.process.sentinel], max(0.0, deadline - time.monotonic()))
        if worker.conn in ready or (ready and worker.conn.poll()):
            try:
                return worker.conn.recv()
            except (EOFError, OSError):
                return None
        if ready:
            return ("failed", f"the worker exited with code {worker.process.exitcode}")
        return ("failed", "timed out loading the models")

    def _discard(self, index: int) -> None:
        worker = self._workers[index]
        if worker is not None:
            self._stop(worker)
            self._workers[index] = None

    @staticmethod
    def _stop(worker: _Worker, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            worker.conn.send(("stop",))
        worker.process.join(timeout_s)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout_s)
        worker.conn.close()

    def close(self) -> None:
        """Stops every worker (idempotent)."""
        with self._state_lock:
            self._closed = True
            for i in range(self.size):
                self._discard(i)
            if self._buffer is not None:
                self._buffer.close()
                self._buffer = None

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [w.pid for w in self._workers if w is not None and w.process.is_alive()]

    # -- jobs --------------------------------------------------------------------------------

    def run(
        self,
        read_frame: Callable[[np.ndarray], bool],
        plan: JobPlan,
        token: CancelToken,
        stats: JobStats | None = None,
    ) -> Iterator[ChunkResult]:
        """Runs a video's frames through the workers; yields each chunk's result in frame order.

        Args:
            read_frame: writes the next decoded frame, I420 (``(height·3/2)×width``,
                ``plan.frame_size``), into the array it is given (a frame of a shared slot), and
                says whether there was one (``ffmpeg.FrameReader.read_into``).
            plan: how to cut and process them.
            token: cancels the job (every worker stops within a frame).

        Raises:
            Unavailable: workers cannot be started or one died.
            Cancelled: the token was cancelled.
            RuntimeError: a worker failed on a chunk.
        """
        with token.holding(self._job_lock, _POLL_S):
            with self._state_lock:
                self._fill_pool()
            workers = [w for w in self._workers if w is not None][
                : max(1, min(plan.workers, self.size))
            ]
            self._jobs += 1
            yield from self._run_job(
                self._jobs, workers, read_frame, plan, token, stats or JobStats()
            )

    def _run_job(
        self,
        job: int,
        workers: list[_Worker],
        read_frame: Callable[[np.ndarray], bool],
        plan: JobPlan,
        token: CancelToken,
        stats: JobStats,
    ) -> Iterator[ChunkResult]:
        height, width = plan.frame_size
        overlap = plan.overlap_frames
        capacity = plan.chunk_frames + overlap
        count = len(workers) + 1
        frame_bytes = int(np.prod(i420_shape(height, width)))
        buffer = self._frame_buffer(workers, _HEADER_BYTES + count * capacity * frame_bytes)
        slots = buffer.slots(count, capacity, height, width)
        progress = buffer.progress()
        slot_bytes = int(np.prod(slots.shape[1:]))
        self._cancel.value = False
        template = ChunkTask(
            job=job, chunk=0, first_frame=0, buffer=buffer.number, slot=0, offset=0,
            frames=capacity, preroll=0, height=height, width=width,
            out_width=plan.out_size[0], out_height=plan.out_size[1], options=plan.options,
            cadence=plan.cadence, include_landmarks=plan.include_landmarks,
        )  # fmt: skip
        state = _JobState(idle=deque(workers), free_slots=deque(range(count)), stats=stats)
        began = time.monotonic()
        tail: deque[np.ndarray] = deque(maxlen=overlap)
        next_frame = 0
        exhausted = False
        # The chunk being decoded into its slot: (slot, frames written so far, preroll).
        filling: tuple[int, int, int] | None = None
        try:
            while True:
                token.raise_if_cancelled()
                if state.idle and (state.repairs or state.ready):
                    task = state.repairs.popleft() if state.repairs else state.ready.popleft()
                    worker = state.idle.popleft()
                    self._send(worker, ("chunk", task))
                    state.running[worker.number] = (worker, task)
                    state.started[worker.number] = time.monotonic()
                    continue
                final = self._settle(state, plan)
                if final is not None:
                    yield final
                    continue
                if state.repairs and state.idle:
                    continue
                if filling is None and not exhausted and state.free_slots:
                    # The next chunk's first frame, read straight into a free slot (no worker
                    # reads a slot before its header counts the frame).
                    slot = state.free_slots[0]
                    view = slots[slot]
                    preroll = len(tail)
                    exhausted = not read_frame(view[preroll])
                    token.raise_if_cancelled()
                    if exhausted:
                        continue
                    # A chunk is handed out as soon as its first frame is in: the worker follows
                    # the decoder through the slot (see ``ChunkRunner.run``).
                    state.free_slots.popleft()
                    for i, previous in enumerate(tail):
                        view[i] = previous
                    progress[slot] = (preroll + 1, -1)
                    task = replace(
                        template, chunk=len(state.chunks), first_frame=next_frame, slot=slot,
                        offset=_HEADER_BYTES + slot * slot_bytes, preroll=preroll,
                    )  # fmt: skip
                    state.chunks.append(_Chunk(task, slot))
                    state.stats.chunks += 1
                    state.ready.append(task)
                    filling = (slot, preroll + 1, preroll)
                    continue
                if filling is not None:
                    slot, written, preroll = filling
                    view = slots[slot]
                    for _ in range(_FILL_STEP):
                        if written == capacity:
                            break
                        if not read_frame(view[written]):
                            exhausted = True
                            break
                        written += 1
                        progress[slot, 0] = written
                    token.raise_if_cancelled()
                    if written == capacity or exhausted:
                        progress[slot, 1] = written
                        tail.extend(view[max(preroll, written - overlap) : written].copy())
                        next_frame += written - preroll
                        filling = None
                    else:
                        filling = (slot, written, preroll)
                    self._collect(state, timeout=0.0)
                    continue
                if (
                    exhausted
                    and not state.ready
                    and not state.running
                    and state.next_final == len(state.chunks)
                ):
                    break
                self._collect(state)
        finally:
            stats.wall_s = time.monotonic() - began
            self._finish_job(state.running)

    @staticmethod
    def _settle(state: _JobState, plan: JobPlan) -> ChunkResult | None:
        """Makes the next chunk in order final if it can; returns it when it is.

        A chunk's cold result stands when its overlap ended on the faces the chunk before was
        following at that same frame, and that chunk had lost no face in its last frames;
        otherwise a seeded run (from the previous chunk's final state) is queued, and its result
        replaces the cold one up to where the two agree.
        """
        if state.next_final >= len(state.chunks):
            return None
        chunk = state.chunks[state.next_final]
        if chunk.cold is None or chunk.repairing:
            return None
        previous = state.last_final
        if chunk.final is None:
            if previous is None:
                chunk.final = chunk.cold
            else:
                width, height = plan.out_size
                followed = extent(previous.landmarks, width, height)
                boundary = chunk.cold.boundary_boxes
                agree = len(followed) == 0 if boundary is None else boxes_agree(followed, boundary)
                # A face lost shortly before the edge changes the detection schedule of the
                # frames after it (see ``Cadence.recovery_frames``), which the cold run cannot
                # know: only a steady edge lets the cold run stand.
                agree = agree and len(set(previous.history)) <= 1
                if agree:
                    chunk.final = chunk.cold
                else:
                    cold = chunk.cold
                    state.repairs.append(
                        replace(
                            chunk.task,
                            seed=previous,
                            reference=Reference(cold.counts, cold.features[:, :4].copy()),
                        )
                    )
                    chunk.repairing = True
                    state.stats.repaired += 1
                    return None
        final = chunk.final
        state.last_final = final.final
        state.next_final += 1
        state.free_slots.append(chunk.slot)
        chunk.cold = chunk.final = None  # the parent keeps no results it has handed on
        return final

    def _collect(self, state: _JobState, timeout: float = _POLL_S) -> None:
        """Waits up to ``timeout`` for running chunks; records results, raises on failures."""
        by_handle: dict[object, tuple[_Worker, ChunkTask]] = {}
        for worker, task in state.running.values():
            by_handle[worker.conn] = by_handle[worker.process.sentinel] = (worker, task)
        handled: set[int] = set()
        for handle in wait(list(by_handle), timeout=timeout):
            worker, task = by_handle[handle]
            if worker.number in handled:
                continue
            handled.add(worker.number)
            try:
                if not worker.conn.poll():
                    raise EOFError
                message = worker.conn.recv()
            except (EOFError, OSError):
                raise self._died(worker) from None
            del state.running[worker.number]
            state.stats.busy_s += time.monotonic() - state.started.pop(worker.number)
            state.idle.append(worker)
            if message[0] == "error":
                raise RuntimeError(
                    f"tracking worker {worker.pid} failed on chunk {task.chunk}: {message[2]}"
                )
            if message[0] != "done":
                raise RuntimeError(
                    f"unexpected answer from tracking worker {worker.pid}: {message[0]}"
                )
            result: ChunkResult = message[1]
            chunk = state.chunks[task.chunk]
            if task.seed is None:
                chunk.cold = result
            else:
                chunk.final = _splice(result, chunk.cold) if chunk.cold is not None else result
                chunk.repairing = False

    @staticmethod
    def _died(worker: _Worker) -> Unavailable:
        worker.process.join(1.0)
        return Unavailable(
            f"a tracking worker died (pid {worker.pid}, exit code {worker.process.exitcode});"
            " it is restarted for the next request"
        )

    def _send(self, worker: _Worker, message: tuple) -> None:
        try:
            worker.conn.send(message)
        except OSError:  # broken pipe: the worker is gone
            raise self._died(worker) from None

    def _frame_buffer(self, workers: list[_Worker], size: int) -> _FrameBuffer:
        """The shared buffer (replaced by a larger one when ``size`` bytes do not fit), mapped by
        every worker of the job."""
        if self._buffer is None or self._buffer.size < size:
            if self._buffer is not None:
                self._buffer.close()
                self._buffer = None
            self._buffer = _FrameBuffer(size)
        buffer = self._buffer
        for worker in workers:
            if worker.buffer == buffer.number:
                continue
            try:
                worker.conn.send(("buffer", buffer.number, buffer.size))
                send_handle(worker.conn, buffer.fd, worker.process.pid or 0)
                answer = worker.conn.recv() if worker.conn.poll(30.0) else None
            except (EOFError, OSError):
                raise self._died(worker) from None
            if answer is None or answer[0] != "mapped":
                raise Unavailable(f"tracking worker {worker.pid} could not map the frame buffer")
            worker.buffer = buffer.number
        return buffer

    def _finish_job(self, running: dict[int, tuple[_Worker, ChunkTask]]) -> None:
        """Stops the job's running chunks (the cancel flag reaches them within a frame)."""
        if not running:
            return
        self._cancel.value = True
        deadline = time.monotonic() + 10.0
        for worker, _task in running.values():
            timeout = max(0.0, deadline - time.monotonic())
            if worker.process.is_alive() and worker.conn in wait(
                [worker.conn, worker.process.sentinel], timeout
            ):
                with contextlib.suppress(EOFError, OSError):
                    worker.conn.recv()
            else:
                log.warning("tracking worker %d did not stop; killing it", worker.pid)
                worker.process.kill()
        self._cancel.value = False
