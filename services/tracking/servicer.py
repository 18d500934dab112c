"""gRPC adapter of the tracking service: protos in, domain calls, protos out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import grpc
import numpy as np

from protos.videoanalysis.v1 import tracking_pb2, tracking_pb2_grpc
from services.common import metrics
from services.common.blocking import CancelToken, iterate_in_thread
from services.common.errors import InvalidArgument
from services.common.media import MediaRoot
from services.common.readiness import WarmUp
from services.common.rpc import cancel_token, mapped_errors, progress
from services.tracking.config import TrackingSettings, mesh_options_of, tracking_options_of
from services.tracking.mesh import MAX_FACES
from services.tracking.pipeline import (
    Event,
    FrameFaces,
    Progress,
    Summary,
    TrackingOptions,
    track_video,
)
from services.tracking.pool import WorkerPool

MAX_BATCH_FRAMES = 1000


class TrackingServicer(WarmUp, tracking_pb2_grpc.TrackingServiceServicer):
    loading = "the face models"

    def __init__(self, settings: TrackingSettings) -> None:
        self._settings = settings
        self._media = MediaRoot(settings.media_root)
        self._default_mesh = mesh_options_of(settings)
        self.pool = WorkerPool(
            settings.pool_size,
            self._default_mesh,
            model_root=settings.model_root,
            start_timeout_s=settings.worker_start_timeout_s,
        )

    def warm_up(self) -> None:
        """Starts the worker processes; returns once every one has loaded the face models."""
        self.pool.start()

    def not_ready_reason(self) -> str:
        return self.pool.failure or super().not_ready_reason()

    def close(self) -> None:
        self._ready = False
        self.pool.close()

    def _options(self, request: tracking_pb2.TrackRequest) -> TrackingOptions:
        settings = self._settings
        max_faces = request.max_faces or settings.max_faces
        if not 1 <= max_faces <= MAX_FACES:
            raise InvalidArgument(
                f"max_faces must be between 1 and {MAX_FACES}, got {request.max_faces}"
            )
        confidence = request.min_detection_confidence or settings.min_detection_confidence
        if not 0.0 < confidence < 1.0:
            raise InvalidArgument(
                "min_detection_confidence must be between 0 and 1 (exclusive), "
                f"got {request.min_detection_confidence}"
            )
        if request.workers < 0:
            raise InvalidArgument(f"workers must not be negative, got {request.workers}")
        batch_frames = request.batch_frames or settings.batch_frames
        if not 1 <= batch_frames <= MAX_BATCH_FRAMES:
            raise InvalidArgument(
                f"batch_frames must be between 1 and {MAX_BATCH_FRAMES}, got {request.batch_frames}"
            )
        confidence = round(float(confidence), 4)
        # A near miss scores just under the detection threshold: a request's lower threshold
        # leaves none under it, so that request runs without.
        near = self._default_mesh.near_detection_confidence
        mesh = replace(
            self._default_mesh,
            max_faces=max_faces,
            min_detection_confidence=confidence,
            near_detection_confidence=near if near is not None and near < confidence else None,
        )
        return tracking_options_of(
            settings,
            mesh,
            workers=min(request.workers or self.pool.size, self.pool.size),
            batch_frames=batch_frames,
            include_landmarks=request.include_landmarks,
        )

    async def Track(
        self, request: tracking_pb2.TrackRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tracking_pb2.TrackResponse]:
        async with mapped_errors(context):
            path = self._media.resolve(request.media.path)
            options = self._options(request)
            self.require_ready()

            def produce(token: CancelToken) -> Iterator[tracking_pb2.TrackResponse]:
                return (_response(event) for event in track_video(path, options, self.pool, token))

            frames_done = metrics.FRAMES_PROCESSED.labels("tracking")
            # Up to 8 batches wait for the sender: enough that a momentarily slow client does not
            # stall the workers, bounded (a batch with landmarks holds a few MiB).
            async for response in iterate_in_thread(produce, cancel_token(context), max_pending=16):
                if response.HasField("frames"):
                    frames_done.inc(len(response.frames.frames))
                yield response


def _response(event: Event) -> tracking_pb2.TrackResponse:
    """Domain event → proto (runs in the worker thread: landmark-heavy batches are not cheap)."""
    if isinstance(event, Progress):
        return tracking_pb2.TrackResponse(
            progress=progress(event.done, event.total, "frames", event.stage)
        )
    if isinstance(event, Summary):
        return tracking_pb2.TrackResponse(
            summary=tracking_pb2.TrackSummary(
                frame_count=event.frame_count,
                fps=event.fps,
                width=event.width,
                height=event.height,
                tracks=[
                    tracking_pb2.TrackInfo(
                        track_id=t.track_id,
                        first_frame=t.first_frame,
                        last_frame=t.last_frame,
                        frames_seen=t.frames_seen,
                    )
                    for t in event.tracks
                ],
                faces_total=event.faces_total,
                workers=event.workers,
            )
        )
    return tracking_pb2.TrackResponse(
        frames=tracking_pb2.FrameBatch(frames=[_frame(f) for f in event])
    )


# ``TrackedFace.landmarks`` (field 9) on the wire: per point the field's tag and length, then
# x, y and z as tagged 32-bit floats.
_LANDMARK_FIELD = np.array([0x4A, 0x0F], np.uint8)


def landmark_field_bytes(points: np.ndarray) -> bytes:
    """``N×3`` landmarks as the wire bytes of the repeated ``landmarks`` field of a
    ``TrackedFace`` (merged into the message: hundreds of points a face, built in one go)."""
    count = len(points)
    records = np.empty((count, 17), np.uint8)
    records[:, 0:2] = _LANDMARK_FIELD
    values = np.ascontiguousarray(points, dtype="<f4").view(np.uint8).reshape(count, 3, 4)
    for i, tag in enumerate((0x0D, 0x15, 0x1D)):
        records[:, 2 + 5 * i] = tag
        records[:, 3 + 5 * i : 7 + 5 * i] = values[:, i]
    return records.tobytes()


def _frame(frame: FrameFaces) -> tracking_pb2.FrameFaces:
    faces = []
    for face in frame.faces:
        x_min, y_min, x_max, y_max = face.bbox
        message = tracking_pb2.TrackedFace(
            track_id=face.track_id,
            bbox=tracking_pb2.BoundingBox(x_min=x_min, y_min=y_min, x_max=x_max, y_max=y_max),
            centroid_x=face.centroid[0],
            centroid_y=face.centroid[1],
            confidence=face.confidence,
            mouth_openness=face.mouth_openness,
            jaw_open=face.jaw_open,
            pose=tracking_pb2.HeadPose(
                yaw=face.pose.yaw, pitch=face.pose.pitch, roll=face.pose.roll
            ),
        )
        if face.landmarks is not None:
            message.MergeFromString(landmark_field_bytes(face.landmarks))
        faces.append(message)
    return tracking_pb2.FrameFaces(frame_index=frame.frame_index, time_s=frame.time_s, faces=faces)
