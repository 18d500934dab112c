from protos.videoanalysis.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrackRequest(_message.Message):
    __slots__ = ("media", "include_landmarks", "max_faces", "min_detection_confidence", "workers", "batch_frames")
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    MAX_FACES_FIELD_NUMBER: _ClassVar[int]
    MIN_DETECTION_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FRAMES_FIELD_NUMBER: _ClassVar[int]
    media: _common_pb2.MediaRef
    include_landmarks: bool
    max_faces: int
    min_detection_confidence: float
    workers: int
    batch_frames: int
    def __init__(self, media: _Optional[_Union[_common_pb2.MediaRef, _Mapping]] = ..., include_landmarks: bool = ..., max_faces: _Optional[int] = ..., min_detection_confidence: _Optional[float] = ..., workers: _Optional[int] = ..., batch_frames: _Optional[int] = ...) -> None: ...

class BoundingBox(_message.Message):
    __slots__ = ("x_min", "y_min", "x_max", "y_max")
    X_MIN_FIELD_NUMBER: _ClassVar[int]
    Y_MIN_FIELD_NUMBER: _ClassVar[int]
    X_MAX_FIELD_NUMBER: _ClassVar[int]
    Y_MAX_FIELD_NUMBER: _ClassVar[int]
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    def __init__(self, x_min: _Optional[float] = ..., y_min: _Optional[float] = ..., x_max: _Optional[float] = ..., y_max: _Optional[float] = ...) -> None: ...

class HeadPose(_message.Message):
    __slots__ = ("yaw", "pitch", "roll")
    YAW_FIELD_NUMBER: _ClassVar[int]
    PITCH_FIELD_NUMBER: _ClassVar[int]
    ROLL_FIELD_NUMBER: _ClassVar[int]
    yaw: float
    pitch: float
    roll: float
    def __init__(self, yaw: _Optional[float] = ..., pitch: _Optional[float] = ..., roll: _Optional[float] = ...) -> None: ...

class Landmark(_message.Message):
    __slots__ = ("x", "y", "z")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    z: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., z: _Optional[float] = ...) -> None: ...

class TrackedFace(_message.Message):
    __slots__ = ("track_id", "bbox", "centroid_x", "centroid_y", "confidence", "mouth_openness", "jaw_open", "pose", "landmarks")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    CENTROID_X_FIELD_NUMBER: _ClassVar[int]
    CENTROID_Y_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MOUTH_OPENNESS_FIELD_NUMBER: _ClassVar[int]
    JAW_OPEN_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    bbox: BoundingBox
    centroid_x: float
    centroid_y: float
    confidence: float
    mouth_openness: float
    jaw_open: float
    pose: HeadPose
    landmarks: _containers.RepeatedCompositeFieldContainer[Landmark]
    def __init__(self, track_id: _Optional[str] = ..., bbox: _Optional[_Union[BoundingBox, _Mapping]] = ..., centroid_x: _Optional[float] = ..., centroid_y: _Optional[float] = ..., confidence: _Optional[float] = ..., mouth_openness: _Optional[float] = ..., jaw_open: _Optional[float] = ..., pose: _Optional[_Union[HeadPose, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[Landmark, _Mapping]]] = ...) -> None: ...

class FrameFaces(_message.Message):
    __slots__ = ("frame_index", "time_s", "faces")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    time_s: float
    faces: _containers.RepeatedCompositeFieldContainer[TrackedFace]
    def __init__(self, frame_index: _Optional[int] = ..., time_s: _Optional[float] = ..., faces: _Optional[_Iterable[_Union[TrackedFace, _Mapping]]] = ...) -> None: ...

class FrameBatch(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[FrameFaces]
    def __init__(self, frames: _Optional[_Iterable[_Union[FrameFaces, _Mapping]]] = ...) -> None: ...

class TrackInfo(_message.Message):
    __slots__ = ("track_id", "first_frame", "last_frame", "frames_seen")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    LAST_FRAME_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SEEN_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    first_frame: int
    last_frame: int
    frames_seen: int
    def __init__(self, track_id: _Optional[str] = ..., first_frame: _Optional[int] = ..., last_frame: _Optional[int] = ..., frames_seen: _Optional[int] = ...) -> None: ...

class TrackSummary(_message.Message):
    __slots__ = ("frame_count", "fps", "width", "height", "tracks", "faces_total", "workers")
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    FACES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    frame_count: int
    fps: float
    width: int
    height: int
    tracks: _containers.RepeatedCompositeFieldContainer[TrackInfo]
    faces_total: int
    workers: int
    def __init__(self, frame_count: _Optional[int] = ..., fps: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., tracks: _Optional[_Iterable[_Union[TrackInfo, _Mapping]]] = ..., faces_total: _Optional[int] = ..., workers: _Optional[int] = ...) -> None: ...

class TrackResponse(_message.Message):
    __slots__ = ("progress", "frames", "summary")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.Progress
    frames: FrameBatch
    summary: TrackSummary
    def __init__(self, progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., frames: _Optional[_Union[FrameBatch, _Mapping]] = ..., summary: _Optional[_Union[TrackSummary, _Mapping]] = ...) -> None: ...
