from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class MediaRef(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class VideoInfo(_message.Message):
    __slots__ = ("duration_s", "avg_fps", "real_fps", "frame_count", "width", "height", "rotation", "container", "video_codec", "audio_codec", "has_audio", "is_vfr", "size_bytes", "pixel_format", "audio_sample_rate", "audio_channels")
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    AVG_FPS_FIELD_NUMBER: _ClassVar[int]
    REAL_FPS_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    VIDEO_CODEC_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CODEC_FIELD_NUMBER: _ClassVar[int]
    HAS_AUDIO_FIELD_NUMBER: _ClassVar[int]
    IS_VFR_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHANNELS_FIELD_NUMBER: _ClassVar[int]
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
    def __init__(self, duration_s: _Optional[float] = ..., avg_fps: _Optional[float] = ..., real_fps: _Optional[float] = ..., frame_count: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., rotation: _Optional[int] = ..., container: _Optional[str] = ..., video_codec: _Optional[str] = ..., audio_codec: _Optional[str] = ..., has_audio: bool = ..., is_vfr: bool = ..., size_bytes: _Optional[int] = ..., pixel_format: _Optional[str] = ..., audio_sample_rate: _Optional[int] = ..., audio_channels: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("done", "total", "unit", "stage", "message")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    unit: str
    stage: str
    message: str
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., unit: _Optional[str] = ..., stage: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("reason", "message", "subject")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    subject: str
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...
