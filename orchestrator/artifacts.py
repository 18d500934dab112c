"""Intermediate results of one video (the services' raw answers) as files in its work folder.

Each analysis step stores its result before it is marked done, so a restarted orchestrator can
fuse without asking the services again. Protobuf binary keeps them exact and small; the tracking
result (many frames) is a sequence of length-prefixed ``TrackResponse`` messages.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import Message

from orchestrator.clients import TrackingOutput
from orchestrator.fusion import FaceObservation, SpeakerTurn
from orchestrator.outputs import write_atomic
from protos.videoanalysis.v1 import audio_pb2, tracking_pb2

M = TypeVar("M", bound=Message)

_LENGTH = struct.Struct("<I")
_FRAMES_PER_RECORD = 500


def write_message(path: Path, message: Message) -> None:
    write_atomic(path, message.SerializeToString())


def read_message(path: Path, cls: type[M]) -> M:
    message = cls()
    message.ParseFromString(path.read_bytes())
    return message


def write_tracking(path: Path, output: TrackingOutput) -> None:
    chunks = []
    for start in range(0, len(output.frames), _FRAMES_PER_RECORD):
        batch = tracking_pb2.FrameBatch(frames=output.frames[start : start + _FRAMES_PER_RECORD])
        chunks.append(tracking_pb2.TrackResponse(frames=batch).SerializeToString())
    if output.summary is not None:
        chunks.append(tracking_pb2.TrackResponse(summary=output.summary).SerializeToString())
    write_atomic(path, b"".join(_LENGTH.pack(len(c)) + c for c in chunks))


def read_tracking(path: Path) -> TrackingOutput:
    output = TrackingOutput()
    for record in _records(path.read_bytes()):
        message = tracking_pb2.TrackResponse()
        message.ParseFromString(record)
        output.add(message)
    return output


def _records(data: bytes) -> Iterator[bytes]:
    offset = 0
    while offset < len(data):
        if offset + _LENGTH.size > len(data):
            raise ValueError("truncated tracking file")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + length > len(data):
            raise ValueError("truncated tracking file")
        yield data[offset : offset + length]
        offset += length


def fusion_frames(output: TrackingOutput) -> list[list[FaceObservation]]:
    """Dense per-frame face lists (0-based, ``summary.frame_count`` long) for :func:`fuse`."""
    count = output.summary.frame_count if output.summary is not None else 0
    if output.frames:
        count = max(count, max(f.frame_index for f in output.frames) + 1)
    frames: list[list[FaceObservation]] = [[] for _ in range(count)]
    for frame in output.frames:
        frames[frame.frame_index] = [
            FaceObservation(
                track_id=face.track_id,
                x_min=face.bbox.x_min,
                y_min=face.bbox.y_min,
                x_max=face.bbox.x_max,
                y_max=face.bbox.y_max,
                centroid_x=face.centroid_x,
                centroid_y=face.centroid_y,
                confidence=face.confidence,
                mouth_openness=face.mouth_openness,
                jaw_open=face.jaw_open,
            )
            for face in frame.faces
        ]
    return frames


def speaker_turns(result: audio_pb2.DiarizeResult) -> list[SpeakerTurn]:
    return [SpeakerTurn(s.start_s, s.end_s, s.speaker) for s in result.segments]
