from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protos.videoanalysis.v1 import common_pb2 as _common_pb2
from protos.videoanalysis.v1 import scene_pb2 as _scene_pb2
from protos.videoanalysis.v1 import audio_pb2 as _audio_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_COMPLETED: _ClassVar[JobState]
    JOB_STATE_COMPLETED_WITH_ERRORS: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class StepState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_STATE_UNSPECIFIED: _ClassVar[StepState]
    STEP_STATE_PENDING: _ClassVar[StepState]
    STEP_STATE_RUNNING: _ClassVar[StepState]
    STEP_STATE_SUCCEEDED: _ClassVar[StepState]
    STEP_STATE_FAILED: _ClassVar[StepState]
    STEP_STATE_SKIPPED: _ClassVar[StepState]
    STEP_STATE_CANCELLED: _ClassVar[StepState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_COMPLETED: JobState
JOB_STATE_COMPLETED_WITH_ERRORS: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
STEP_STATE_UNSPECIFIED: StepState
STEP_STATE_PENDING: StepState
STEP_STATE_RUNNING: StepState
STEP_STATE_SUCCEEDED: StepState
STEP_STATE_FAILED: StepState
STEP_STATE_SKIPPED: StepState
STEP_STATE_CANCELLED: StepState

class JobOptions(_message.Message):
    __slots__ = ("scene_mode", "scene_threshold", "audio_engine", "num_speakers", "min_speakers", "max_speakers", "max_faces", "delete_archives", "output_dir", "no_cache")
    SCENE_MODE_FIELD_NUMBER: _ClassVar[int]
    SCENE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    AUDIO_ENGINE_FIELD_NUMBER: _ClassVar[int]
    NUM_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    MIN_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_FACES_FIELD_NUMBER: _ClassVar[int]
    DELETE_ARCHIVES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    scene_mode: _scene_pb2.DetectScenesRequest.Mode
    scene_threshold: float
    audio_engine: _audio_pb2.DiarizeRequest.Engine
    num_speakers: int
    min_speakers: int
    max_speakers: int
    max_faces: int
    delete_archives: bool
    output_dir: str
    no_cache: bool
    def __init__(self, scene_mode: _Optional[_Union[_scene_pb2.DetectScenesRequest.Mode, str]] = ..., scene_threshold: _Optional[float] = ..., audio_engine: _Optional[_Union[_audio_pb2.DiarizeRequest.Engine, str]] = ..., num_speakers: _Optional[int] = ..., min_speakers: _Optional[int] = ..., max_speakers: _Optional[int] = ..., max_faces: _Optional[int] = ..., delete_archives: bool = ..., output_dir: _Optional[str] = ..., no_cache: bool = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("inputs", "options", "label", "submit_key")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_KEY_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[_common_pb2.MediaRef]
    options: JobOptions
    label: str
    submit_key: str
    def __init__(self, inputs: _Optional[_Iterable[_Union[_common_pb2.MediaRef, _Mapping]]] = ..., options: _Optional[_Union[JobOptions, _Mapping]] = ..., label: _Optional[str] = ..., submit_key: _Optional[str] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("name", "state", "progress", "error", "attempts", "started_at", "finished_at", "eta_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: StepState
    progress: _common_pb2.Progress
    error: str
    attempts: int
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    eta_s: float
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[StepState, str]] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., started_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., eta_s: _Optional[float] = ...) -> None: ...

class VideoStatus(_message.Message):
    __slots__ = ("path", "sha256", "state", "error", "steps", "output_dir", "from_cache", "index", "normalized_path")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    sha256: str
    state: StepState
    error: str
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    output_dir: str
    from_cache: bool
    index: int
    normalized_path: str
    def __init__(self, path: _Optional[str] = ..., sha256: _Optional[str] = ..., state: _Optional[_Union[StepState, str]] = ..., error: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., output_dir: _Optional[str] = ..., from_cache: bool = ..., index: _Optional[int] = ..., normalized_path: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "inputs", "options", "videos", "errors", "label", "output_dir", "created_at", "updated_at", "finished_at", "error")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    VIDEOS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    inputs: _containers.RepeatedCompositeFieldContainer[_common_pb2.MediaRef]
    options: JobOptions
    videos: _containers.RepeatedCompositeFieldContainer[VideoStatus]
    errors: _containers.RepeatedCompositeFieldContainer[_common_pb2.ErrorDetail]
    label: str
    output_dir: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., inputs: _Optional[_Iterable[_Union[_common_pb2.MediaRef, _Mapping]]] = ..., options: _Optional[_Union[JobOptions, _Mapping]] = ..., videos: _Optional[_Iterable[_Union[VideoStatus, _Mapping]]] = ..., errors: _Optional[_Iterable[_Union[_common_pb2.ErrorDetail, _Mapping]]] = ..., label: _Optional[str] = ..., output_dir: _Optional[str] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("limit", "states")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    limit: int
    states: _containers.RepeatedScalarFieldContainer[JobState]
    def __init__(self, limit: _Optional[int] = ..., states: _Optional[_Iterable[_Union[JobState, str]]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobsRequest(_message.Message):
    __slots__ = ("job_ids", "after_sequence", "snapshot", "snapshot_limit")
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    after_sequence: int
    snapshot: bool
    snapshot_limit: int
    def __init__(self, job_ids: _Optional[_Iterable[str]] = ..., after_sequence: _Optional[int] = ..., snapshot: bool = ..., snapshot_limit: _Optional[int] = ...) -> None: ...

class GetJobLogsRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence", "limit")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    limit: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class GetJobLogsResponse(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[JobEvent]
    def __init__(self, lines: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ...) -> None: ...

class Resync(_message.Message):
    __slots__ = ("reason", "oldest_sequence")
    REASON_FIELD_NUMBER: _ClassVar[int]
    OLDEST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    oldest_sequence: int
    def __init__(self, reason: _Optional[str] = ..., oldest_sequence: _Optional[int] = ...) -> None: ...

class Synced(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: int
    def __init__(self, jobs: _Optional[int] = ...) -> None: ...

class StepEvent(_message.Message):
    __slots__ = ("video", "step")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    video: str
    step: Step
    def __init__(self, video: _Optional[str] = ..., step: _Optional[_Union[Step, _Mapping]] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("severity", "message", "video")
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    severity: str
    message: str
    video: str
    def __init__(self, severity: _Optional[str] = ..., message: _Optional[str] = ..., video: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "sequence", "time", "snapshot", "step", "error", "log", "state", "resync", "synced")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sequence: int
    time: _timestamp_pb2.Timestamp
    snapshot: Job
    step: StepEvent
    error: _common_pb2.ErrorDetail
    log: LogLine
    state: JobState
    resync: Resync
    synced: Synced
    def __init__(self, job_id: _Optional[str] = ..., sequence: _Optional[int] = ..., time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot: _Optional[_Union[Job, _Mapping]] = ..., step: _Optional[_Union[StepEvent, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., log: _Optional[_Union[LogLine, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., resync: _Optional[_Union[Resync, _Mapping]] = ..., synced: _Optional[_Union[Synced, _Mapping]] = ...) -> None: ...
