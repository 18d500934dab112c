from protos.videoanalysis.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DiarizeRequest(_message.Message):
    __slots__ = ("media", "engine", "num_speakers", "min_speakers", "max_speakers")
    class Engine(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ENGINE_UNSPECIFIED: _ClassVar[DiarizeRequest.Engine]
        ENGINE_EMBEDDED: _ClassVar[DiarizeRequest.Engine]
        ENGINE_PYANNOTE: _ClassVar[DiarizeRequest.Engine]
    ENGINE_UNSPECIFIED: DiarizeRequest.Engine
    ENGINE_EMBEDDED: DiarizeRequest.Engine
    ENGINE_PYANNOTE: DiarizeRequest.Engine
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    NUM_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    MIN_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    media: _common_pb2.MediaRef
    engine: DiarizeRequest.Engine
    num_speakers: int
    min_speakers: int
    max_speakers: int
    def __init__(self, media: _Optional[_Union[_common_pb2.MediaRef, _Mapping]] = ..., engine: _Optional[_Union[DiarizeRequest.Engine, str]] = ..., num_speakers: _Optional[int] = ..., min_speakers: _Optional[int] = ..., max_speakers: _Optional[int] = ...) -> None: ...

class SpeechSegment(_message.Message):
    __slots__ = ("start_s", "end_s", "speaker")
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    end_s: float
    speaker: str
    def __init__(self, start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., speaker: _Optional[str] = ...) -> None: ...

class DiarizeResult(_message.Message):
    __slots__ = ("has_audio", "segments", "num_speakers", "speakers", "speech_coverage", "duration_s", "engine", "device")
    HAS_AUDIO_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    NUM_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    SPEECH_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    has_audio: bool
    segments: _containers.RepeatedCompositeFieldContainer[SpeechSegment]
    num_speakers: int
    speakers: _containers.RepeatedScalarFieldContainer[str]
    speech_coverage: float
    duration_s: float
    engine: str
    device: str
    def __init__(self, has_audio: bool = ..., segments: _Optional[_Iterable[_Union[SpeechSegment, _Mapping]]] = ..., num_speakers: _Optional[int] = ..., speakers: _Optional[_Iterable[str]] = ..., speech_coverage: _Optional[float] = ..., duration_s: _Optional[float] = ..., engine: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class DiarizeResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.Progress
    result: DiarizeResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., result: _Optional[_Union[DiarizeResult, _Mapping]] = ...) -> None: ...
