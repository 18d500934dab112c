"""gRPC adapter of the scene service: protos in, domain calls, protos out."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from protos.videoanalysis.v1 import scene_pb2, scene_pb2_grpc
from services.common import ffmpeg, metrics
from services.common.blocking import CancelToken, iterate_in_thread
from services.common.errors import InvalidArgument, UndecodableMedia
from services.common.media import MediaRoot
from services.common.readiness import WarmUp
from services.common.rpc import cancel_token, mapped_errors, progress
from services.scene.boundaries import (
    Boundary,
    BoundaryTracker,
    Kind,
    MergedRule,
    scenes_from_boundaries,
)
from services.scene.config import SceneSettings
from services.scene.detector import FPS, ProbabilityChunk, SceneDetector

log = logging.getLogger(__name__)

Request = scene_pb2.DetectScenesRequest

_KINDS = {
    Kind.HARD_CUT: scene_pb2.Boundary.KIND_HARD_CUT,
    Kind.GRADUAL: scene_pb2.Boundary.KIND_GRADUAL,
}
_UNIT = "frames"
_STAGE = "inference"


@dataclass(frozen=True)
class _Params:
    legacy: bool
    threshold: float
    rule: MergedRule


def boundary_proto(boundary: Boundary) -> scene_pb2.Boundary:
    return scene_pb2.Boundary(
        kind=_KINDS[boundary.kind],
        start_frame=boundary.start_frame,
        end_frame=boundary.end_frame,
        cut_frame=boundary.cut_frame,
        peak_probability=boundary.peak,
    )


class SceneServicer(WarmUp, scene_pb2_grpc.SceneServiceServicer):
    loading = "the TransNetV2 model"

    def __init__(self, settings: SceneSettings) -> None:
        self._settings = settings
        self._media = MediaRoot(settings.media_root)
        self._detector = SceneDetector(
            device=settings.device,
            batch_windows=settings.batch_windows,
            torch_threads=settings.torch_threads,
            amp=settings.amp,
            cpu_precision=settings.cpu_precision,
            winograd=settings.winograd,
            ffmpeg_threads=settings.ffmpeg_threads,
            decode_queue_frames=settings.decode_queue_frames,
        )

    def warm_up(self) -> None:
        """Loads TransNetV2 once per process (readiness turns SERVING after this)."""
        ffmpeg.require_binary("ffmpeg")
        ffmpeg.require_binary("ffprobe")
        self._detector.load()

    def _params(self, request: Request) -> _Params:
        threshold = float(request.threshold)
        if math.isnan(threshold) or not 0.0 <= threshold < 1.0:
            raise InvalidArgument(
                f"threshold must be in (0, 1) (0 = default), got {request.threshold}"
            )
        # The field is a float32: recover the decimal the client meant (0.3, not 0.30000001).
        threshold = round(threshold, 6) or self._settings.threshold
        if request.min_scene_frames > 0:
            min_scene_frames = request.min_scene_frames
        elif request.min_scene_frames == 0:
            min_scene_frames = self._settings.min_scene_frames
        else:
            min_scene_frames = 0
        if request.mode not in (Request.MODE_UNSPECIFIED, Request.MODE_MERGED, Request.MODE_LEGACY):
            raise InvalidArgument(f"unknown mode {request.mode}")
        return _Params(
            legacy=request.mode == Request.MODE_LEGACY,
            threshold=threshold,
            rule=MergedRule.with_threshold(threshold, min_scene_frames),
        )

    async def DetectScenes(
        self, request: Request, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[scene_pb2.DetectScenesResponse]:
        """Streams progress (frames done / estimated total), each boundary once it is final, then
        the result. FAILED_PRECONDITION when the media has no decodable video frame."""
        async with mapped_errors(context):
            params = self._params(request)
            path = self._media.resolve(request.media.path)
            self.require_ready()
            info = await asyncio.to_thread(ffmpeg.probe, path)
            if not info.has_video:
                raise UndecodableMedia(f"no video stream in {path.name}")
            total = round(info.duration_s * FPS) if info.duration_s > 0 else 0
            token = cancel_token(context)
            started = time.perf_counter()
            tracker = BoundaryTracker(
                legacy=params.legacy, threshold=params.threshold, rule=params.rule
            )
            yield scene_pb2.DetectScenesResponse(progress=progress(0, total, _UNIT, _STAGE))

            def produce(token: CancelToken) -> Iterator[ProbabilityChunk]:
                return self._detector.iter_probabilities(path, token)

            frames_metric = metrics.FRAMES_PROCESSED.labels("scene")
            async for chunk in iterate_in_thread(produce, token, max_pending=4):
                frames_metric.inc(len(chunk.single_frame))
                for boundary in tracker.update(chunk.single_frame, chunk.many_hot):
                    yield scene_pb2.DetectScenesResponse(boundary=boundary_proto(boundary))
                total = max(total, chunk.end)
                yield scene_pb2.DetectScenesResponse(
                    progress=progress(chunk.end, total, _UNIT, _STAGE)
                )
            boundaries, fresh = tracker.finish()
            for boundary in fresh:
                yield scene_pb2.DetectScenesResponse(boundary=boundary_proto(boundary))
            frame_count = tracker.frames
            elapsed = time.perf_counter() - started
            log.info(
                "%s: %d frames, %d boundaries (%s) in %.1f s (%.1f frames/s)",
                path.name, frame_count, len(boundaries), "legacy" if params.legacy else "merged",
                elapsed, frame_count / elapsed if elapsed else 0.0,
            )  # fmt: skip
            if frame_count != total:
                # The estimate from the container's duration was off: the last word is exact.
                yield scene_pb2.DetectScenesResponse(
                    progress=progress(frame_count, frame_count, _UNIT, _STAGE)
                )
            yield scene_pb2.DetectScenesResponse(
                result=self._result(tracker, boundaries, frame_count, request.include_probabilities)
            )

    def _result(
        self,
        tracker: BoundaryTracker,
        boundaries: Sequence[Boundary],
        frame_count: int,
        include_probabilities: bool,
    ) -> scene_pb2.SceneResult:
        # Both modes split at their boundaries' cut frames (the legacy boundaries are the starts
        # of the legacy scenes, so this gives exactly ``legacy_scenes``).
        scenes = [
            scene_pb2.Scene(
                start_frame=s.start_frame, end_frame=s.end_frame, start_s=s.start_s, end_s=s.end_s
            )
            for s in scenes_from_boundaries(boundaries, frame_count, FPS)
        ]
        result = scene_pb2.SceneResult(
            scenes=scenes,
            boundaries=[boundary_proto(b) for b in boundaries],
            frame_count=frame_count,
            fps=FPS,
            device=self._detector.device_label,
        )
        if include_probabilities:
            single, many = tracker.probabilities()
            result.single_frame_probabilities.extend(np.asarray(single, dtype=np.float32).tolist())
            result.many_hot_probabilities.extend(np.asarray(many, dtype=np.float32).tolist())
        return result
