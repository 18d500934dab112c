from protos.videoanalysis.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExtractionLimits(_message.Message):
    __slots__ = ("max_total_bytes", "max_members", "max_member_ratio", "max_member_bytes")
    MAX_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMBER_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMBER_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_total_bytes: int
    max_members: int
    max_member_ratio: float
    max_member_bytes: int
    def __init__(self, max_total_bytes: _Optional[int] = ..., max_members: _Optional[int] = ..., max_member_ratio: _Optional[float] = ..., max_member_bytes: _Optional[int] = ...) -> None: ...

class ExtractArchiveRequest(_message.Message):
    __slots__ = ("archive", "output_dir", "delete_source_on_success", "limits", "project_name")
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    DELETE_SOURCE_ON_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    archive: _common_pb2.MediaRef
    output_dir: str
    delete_source_on_success: bool
    limits: ExtractionLimits
    project_name: str
    def __init__(self, archive: _Optional[_Union[_common_pb2.MediaRef, _Mapping]] = ..., output_dir: _Optional[str] = ..., delete_source_on_success: bool = ..., limits: _Optional[_Union[ExtractionLimits, _Mapping]] = ..., project_name: _Optional[str] = ...) -> None: ...

class MemberOutcome(_message.Message):
    __slots__ = ("member_name", "status", "output_path", "reason", "message", "size_bytes", "renamed")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[MemberOutcome.Status]
        STATUS_EXTRACTED: _ClassVar[MemberOutcome.Status]
        STATUS_SKIPPED: _ClassVar[MemberOutcome.Status]
        STATUS_FAILED: _ClassVar[MemberOutcome.Status]
    STATUS_UNSPECIFIED: MemberOutcome.Status
    STATUS_EXTRACTED: MemberOutcome.Status
    STATUS_SKIPPED: MemberOutcome.Status
    STATUS_FAILED: MemberOutcome.Status
    MEMBER_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RENAMED_FIELD_NUMBER: _ClassVar[int]
    member_name: str
    status: MemberOutcome.Status
    output_path: str
    reason: str
    message: str
    size_bytes: int
    renamed: bool
    def __init__(self, member_name: _Optional[str] = ..., status: _Optional[_Union[MemberOutcome.Status, str]] = ..., output_path: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., size_bytes: _Optional[int] = ..., renamed: bool = ...) -> None: ...

class ExtractArchiveResult(_message.Message):
    __slots__ = ("project_name", "project_dir", "videos", "extracted_count", "skipped_count", "failed_count", "source_deleted", "total_bytes", "complete", "errors", "archive_format")
    PROJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROJECT_DIR_FIELD_NUMBER: _ClassVar[int]
    VIDEOS_FIELD_NUMBER: _ClassVar[int]
    EXTRACTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DELETED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    project_name: str
    project_dir: str
    videos: _containers.RepeatedScalarFieldContainer[str]
    extracted_count: int
    skipped_count: int
    failed_count: int
    source_deleted: bool
    total_bytes: int
    complete: bool
    errors: _containers.RepeatedCompositeFieldContainer[_common_pb2.ErrorDetail]
    archive_format: str
    def __init__(self, project_name: _Optional[str] = ..., project_dir: _Optional[str] = ..., videos: _Optional[_Iterable[str]] = ..., extracted_count: _Optional[int] = ..., skipped_count: _Optional[int] = ..., failed_count: _Optional[int] = ..., source_deleted: bool = ..., total_bytes: _Optional[int] = ..., complete: bool = ..., errors: _Optional[_Iterable[_Union[_common_pb2.ErrorDetail, _Mapping]]] = ..., archive_format: _Optional[str] = ...) -> None: ...

class ExtractArchiveResponse(_message.Message):
    __slots__ = ("progress", "member", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.Progress
    member: MemberOutcome
    result: ExtractArchiveResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., member: _Optional[_Union[MemberOutcome, _Mapping]] = ..., result: _Optional[_Union[ExtractArchiveResult, _Mapping]] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("media",)
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    media: _common_pb2.MediaRef
    def __init__(self, media: _Optional[_Union[_common_pb2.MediaRef, _Mapping]] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: _common_pb2.VideoInfo
    def __init__(self, info: _Optional[_Union[_common_pb2.VideoInfo, _Mapping]] = ...) -> None: ...

class NormalizeVideoRequest(_message.Message):
    __slots__ = ("media", "output_path", "target_fps", "encoder", "force")
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    TARGET_FPS_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    media: _common_pb2.MediaRef
    output_path: str
    target_fps: float
    encoder: str
    force: bool
    def __init__(self, media: _Optional[_Union[_common_pb2.MediaRef, _Mapping]] = ..., output_path: _Optional[str] = ..., target_fps: _Optional[float] = ..., encoder: _Optional[str] = ..., force: bool = ...) -> None: ...

class NormalizeVideoResult(_message.Message):
    __slots__ = ("output", "info", "reencoded", "encoder", "audio_mode")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    REENCODED_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MODE_FIELD_NUMBER: _ClassVar[int]
    output: _common_pb2.MediaRef
    info: _common_pb2.VideoInfo
    reencoded: bool
    encoder: str
    audio_mode: str
    def __init__(self, output: _Optional[_Union[_common_pb2.MediaRef, _Mapping]] = ..., info: _Optional[_Union[_common_pb2.VideoInfo, _Mapping]] = ..., reencoded: bool = ..., encoder: _Optional[str] = ..., audio_mode: _Optional[str] = ...) -> None: ...

class NormalizeVideoResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.Progress
    result: NormalizeVideoResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., result: _Optional[_Union[NormalizeVideoResult, _Mapping]] = ...) -> None: ...
