"""Settings of the download monitor (environment prefix ``DOWNLOADS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings


class DownloadsSettings(ServiceSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="DOWNLOADS_")

    port: int = 50055
    metrics_port: int = 9105
    #: WatchDownloads streams hold an RPC each for as long as a dashboard is open.
    max_concurrent_rpcs: int = 64
    #: The JSON webhook listing the links (legacy ``WEBHOOK_JSON_URL``); empty disables polling.
    webhook_url: str = ""
    #: Seconds between monitor passes (legacy ``WEBHOOK_MONITOR_INTERVAL``).
    poll_interval_s: float = 15.0
    #: A webhook answer younger than this is reused (legacy ``WEBHOOK_CACHE_TTL``, floored at 0).
    webhook_cache_ttl_s: float = 60.0
    #: Per-request timeout (legacy ``WEBHOOK_TIMEOUT``, floored at 1).
    webhook_timeout_s: float = 10.0
    #: Sleeps between the webhook attempts (legacy: 3 attempts, 1 s then 2 s).
    webhook_retry_delays_s: tuple[float, ...] = (1.0, 2.0)
    #: History and download states (SQLite, WAL); a legacy ``download_history.sqlite3`` works as
    #: is. Empty: ``<media_root>/.downloads/downloads.sqlite3``.
    db_path: Path | None = None
    #: Group given to the database files (legacy ``DOWNLOAD_HISTORY_SHARED_GROUP``); they are
    #: always made 0664.
    history_shared_group: str = ""
    #: Folder for the archives, relative to the media root.
    download_dir: str = "downloads"
    #: Record what would be downloaded (history and a DRY_RUN entry) without downloading.
    dry_run: bool = False
    #: Submit a finished download as a job at once; false waits for ConfirmDownload.
    auto_submit: bool = True
    #: The orchestrator's gRPC address (``host:port``); empty keeps archives unsubmitted.
    orchestrator_addr: str = ""
    orchestrator_timeout_s: float = 30.0
    #: Where Dropbox's hosts are reached: ``www.dropbox.com``/``dropbox.com`` links go to
    #: ``dropbox_base_url`` and the direct-host rewrite to ``dropbox_direct_base_url`` (tests point
    #: both at a loopback server; keys in the history keep the real host).
    dropbox_base_url: str = "https://www.dropbox.com"
    dropbox_direct_base_url: str = "https://dl.dropboxusercontent.com"
    max_concurrent_downloads: int = 2
    #: HTTP attempts per download for retryable failures (network, timeout, truncated, 429, 5xx).
    download_attempts: int = 3
    #: First backoff between attempts, doubled each time; a 429's Retry-After wins (capped).
    retry_backoff_s: float = 1.0
    max_retry_after_s: float = 120.0
    #: Monitor passes that requeue a download that failed for a retryable reason.
    max_passes: int = 3
    head_timeout_s: float = 10.0
    connect_timeout_s: float = 15.0
    #: Longest silence while reading the body (a stalled server fails with ``timeout``).
    read_timeout_s: float = 60.0
    total_timeout_s: float = 3600.0
    max_download_bytes: int = 50 * 1024**3
    #: Folder links (``/scl/fo/``) smaller than this are Dropbox error pages (legacy rule).
    min_folder_zip_bytes: int = 1_000_000
    chunk_bytes: int = 512 * 1024
    user_agent: str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"

    def database(self) -> Path:
        if self.db_path is not None:
            return self.db_path
        return self.media_root / ".downloads" / "downloads.sqlite3"
