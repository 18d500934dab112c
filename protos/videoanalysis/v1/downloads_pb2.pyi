from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protos.videoanalysis.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DownloadState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOWNLOAD_STATE_UNSPECIFIED: _ClassVar[DownloadState]
    DOWNLOAD_STATE_QUEUED: _ClassVar[DownloadState]
    DOWNLOAD_STATE_DOWNLOADING: _ClassVar[DownloadState]
    DOWNLOAD_STATE_AWAITING_CONFIRMATION: _ClassVar[DownloadState]
    DOWNLOAD_STATE_SUBMITTED: _ClassVar[DownloadState]
    DOWNLOAD_STATE_FAILED: _ClassVar[DownloadState]
    DOWNLOAD_STATE_DRY_RUN: _ClassVar[DownloadState]
DOWNLOAD_STATE_UNSPECIFIED: DownloadState
DOWNLOAD_STATE_QUEUED: DownloadState
DOWNLOAD_STATE_DOWNLOADING: DownloadState
DOWNLOAD_STATE_AWAITING_CONFIRMATION: DownloadState
DOWNLOAD_STATE_SUBMITTED: DownloadState
DOWNLOAD_STATE_FAILED: DownloadState
DOWNLOAD_STATE_DRY_RUN: DownloadState

class Download(_message.Message):
    __slots__ = ("download_id", "url", "key", "fallback_url", "original_filename", "provider", "url_type", "webhook_timestamp", "state", "progress", "outcome", "error", "path", "size_bytes", "attempts", "job_id", "created_at", "updated_at")
    DOWNLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_FILENAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    URL_TYPE_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    download_id: str
    url: str
    key: str
    fallback_url: str
    original_filename: str
    provider: str
    url_type: str
    webhook_timestamp: str
    state: DownloadState
    progress: _common_pb2.Progress
    outcome: str
    error: str
    path: str
    size_bytes: int
    attempts: int
    job_id: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, download_id: _Optional[str] = ..., url: _Optional[str] = ..., key: _Optional[str] = ..., fallback_url: _Optional[str] = ..., original_filename: _Optional[str] = ..., provider: _Optional[str] = ..., url_type: _Optional[str] = ..., webhook_timestamp: _Optional[str] = ..., state: _Optional[_Union[DownloadState, str]] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., outcome: _Optional[str] = ..., error: _Optional[str] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., attempts: _Optional[int] = ..., job_id: _Optional[str] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListDownloadsRequest(_message.Message):
    __slots__ = ("limit", "states")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    limit: int
    states: _containers.RepeatedScalarFieldContainer[DownloadState]
    def __init__(self, limit: _Optional[int] = ..., states: _Optional[_Iterable[_Union[DownloadState, str]]] = ...) -> None: ...

class ListDownloadsResponse(_message.Message):
    __slots__ = ("downloads",)
    DOWNLOADS_FIELD_NUMBER: _ClassVar[int]
    downloads: _containers.RepeatedCompositeFieldContainer[Download]
    def __init__(self, downloads: _Optional[_Iterable[_Union[Download, _Mapping]]] = ...) -> None: ...

class GetDownloadRequest(_message.Message):
    __slots__ = ("download_id",)
    DOWNLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    download_id: str
    def __init__(self, download_id: _Optional[str] = ...) -> None: ...

class WatchDownloadsRequest(_message.Message):
    __slots__ = ("snapshot", "snapshot_limit")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    snapshot: bool
    snapshot_limit: int
    def __init__(self, snapshot: bool = ..., snapshot_limit: _Optional[int] = ...) -> None: ...

class DownloadEvent(_message.Message):
    __slots__ = ("sequence", "time", "download", "synced", "resync")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    download: Download
    synced: int
    resync: str
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., download: _Optional[_Union[Download, _Mapping]] = ..., synced: _Optional[int] = ..., resync: _Optional[str] = ...) -> None: ...

class ConfirmDownloadRequest(_message.Message):
    __slots__ = ("download_id",)
    DOWNLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    download_id: str
    def __init__(self, download_id: _Optional[str] = ...) -> None: ...

class RetryDownloadRequest(_message.Message):
    __slots__ = ("download_id",)
    DOWNLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    download_id: str
    def __init__(self, download_id: _Optional[str] = ...) -> None: ...

class GetMonitorStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MonitorStatus(_message.Message):
    __slots__ = ("webhook_available", "last_fetch_ts", "webhook_error", "records", "history_count", "dry_run", "auto_submit", "poll_interval_s", "active_downloads", "last_pass_at")
    WEBHOOK_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    LAST_FETCH_TS_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_ERROR_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_COUNT_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    AUTO_SUBMIT_FIELD_NUMBER: _ClassVar[int]
    POLL_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_DOWNLOADS_FIELD_NUMBER: _ClassVar[int]
    LAST_PASS_AT_FIELD_NUMBER: _ClassVar[int]
    webhook_available: bool
    last_fetch_ts: str
    webhook_error: str
    records: int
    history_count: int
    dry_run: bool
    auto_submit: bool
    poll_interval_s: float
    active_downloads: int
    last_pass_at: _timestamp_pb2.Timestamp
    def __init__(self, webhook_available: bool = ..., last_fetch_ts: _Optional[str] = ..., webhook_error: _Optional[str] = ..., records: _Optional[int] = ..., history_count: _Optional[int] = ..., dry_run: bool = ..., auto_submit: bool = ..., poll_interval_s: _Optional[float] = ..., active_downloads: _Optional[int] = ..., last_pass_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PollNowRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PollNowResponse(_message.Message):
    __slots__ = ("records", "started", "error")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    records: int
    started: int
    error: str
    def __init__(self, records: _Optional[int] = ..., started: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...
