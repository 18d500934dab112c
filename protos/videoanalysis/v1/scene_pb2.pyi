from protos.videoanalysis.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DetectScenesRequest(_message.Message):
    __slots__ = ("media", "mode", "threshold", "min_scene_frames", "include_probabilities")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[DetectScenesRequest.Mode]
        MODE_MERGED: _ClassVar[DetectScenesRequest.Mode]
        MODE_LEGACY: _ClassVar[DetectScenesRequest.Mode]
    MODE_UNSPECIFIED: DetectScenesRequest.Mode
    MODE_MERGED: DetectScenesRequest.Mode
    MODE_LEGACY: DetectScenesRequest.Mode
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_SCENE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    media: _common_pb2.MediaRef
    mode: DetectScenesRequest.Mode
    threshold: float
    min_scene_frames: int
    include_probabilities: bool
    def __init__(self, media: _Optional[_Union[_common_pb2.MediaRef, _Mapping]] = ..., mode: _Optional[_Union[DetectScenesRequest.Mode, str]] = ..., threshold: _Optional[float] = ..., min_scene_frames: _Optional[int] = ..., include_probabilities: bool = ...) -> None: ...

class Scene(_message.Message):
    __slots__ = ("start_frame", "end_frame", "start_s", "end_s")
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    END_FRAME_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    def __init__(self, start_frame: _Optional[int] = ..., end_frame: _Optional[int] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ...) -> None: ...

class Boundary(_message.Message):
    __slots__ = ("kind", "start_frame", "end_frame", "cut_frame", "peak_probability")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Boundary.Kind]
        KIND_HARD_CUT: _ClassVar[Boundary.Kind]
        KIND_GRADUAL: _ClassVar[Boundary.Kind]
    KIND_UNSPECIFIED: Boundary.Kind
    KIND_HARD_CUT: Boundary.Kind
    KIND_GRADUAL: Boundary.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    END_FRAME_FIELD_NUMBER: _ClassVar[int]
    CUT_FRAME_FIELD_NUMBER: _ClassVar[int]
    PEAK_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    kind: Boundary.Kind
    start_frame: int
    end_frame: int
    cut_frame: int
    peak_probability: float
    def __init__(self, kind: _Optional[_Union[Boundary.Kind, str]] = ..., start_frame: _Optional[int] = ..., end_frame: _Optional[int] = ..., cut_frame: _Optional[int] = ..., peak_probability: _Optional[float] = ...) -> None: ...

class SceneResult(_message.Message):
    __slots__ = ("scenes", "boundaries", "frame_count", "fps", "single_frame_probabilities", "many_hot_probabilities", "device")
    SCENES_FIELD_NUMBER: _ClassVar[int]
    BOUNDARIES_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    SINGLE_FRAME_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    MANY_HOT_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    scenes: _containers.RepeatedCompositeFieldContainer[Scene]
    boundaries: _containers.RepeatedCompositeFieldContainer[Boundary]
    frame_count: int
    fps: float
    single_frame_probabilities: _containers.RepeatedScalarFieldContainer[float]
    many_hot_probabilities: _containers.RepeatedScalarFieldContainer[float]
    device: str
    def __init__(self, scenes: _Optional[_Iterable[_Union[Scene, _Mapping]]] = ..., boundaries: _Optional[_Iterable[_Union[Boundary, _Mapping]]] = ..., frame_count: _Optional[int] = ..., fps: _Optional[float] = ..., single_frame_probabilities: _Optional[_Iterable[float]] = ..., many_hot_probabilities: _Optional[_Iterable[float]] = ..., device: _Optional[str] = ...) -> None: ...

class DetectScenesResponse(_message.Message):
    __slots__ = ("progress", "boundary", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BOUNDARY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.Progress
    boundary: Boundary
    result: SceneResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., boundary: _Optional[_Union[Boundary, _Mapping]] = ..., result: _Optional[_Union[SceneResult, _Mapping]] = ...) -> None: ...
