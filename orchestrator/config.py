"""Settings of the orchestrator (environment prefix ``ORCH_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings

#: The downstream services, in the order the stack starts them.
SERVICES = ("ingest", "scene", "audio", "tracking")


class OrchestratorSettings(ServiceSettings):
    """Jobs, fan-out to the analysis services, outputs and the results archive.

    Service addresses are comma-separated ``host:port`` lists (``ORCH_SCENE_ADDR=10.0.0.1:50052,
    10.0.0.2:50052``, or one DNS name that resolves to every replica); each becomes one long-lived
    channel with ``round_robin``. An empty address means "start that service locally" (``run`` and
    ``serve`` do; a bare server refuses to start without it).
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="ORCH_")

    port: int = 50050
    metrics_port: int = 9100

    ingest_addr: str = ""
    scene_addr: str = ""
    audio_addr: str = ""
    tracking_addr: str = ""

    #: Calls in flight from this orchestrator, per service (more replicas → raise these).
    ingest_concurrency: int = 2
    scene_concurrency: int = 2
    audio_concurrency: int = 2
    tracking_concurrency: int = 2
    #: Videos of one job analysed at the same time.
    parallel_videos: int = 2
    #: Jobs running at the same time (others wait QUEUED).
    parallel_jobs: int = 2

    #: Deadline of short calls (Probe).
    probe_deadline_s: float = 60.0
    #: Deadline of long calls: base + per_media_s × media duration (seconds of video).
    deadline_base_s: float = 600.0
    deadline_per_media_s: float = 30.0
    #: Attempts of one call (1 = no retry), and the exponential backoff between them.
    retry_attempts: int = 10
    retry_initial_backoff_s: float = 0.5
    retry_max_backoff_s: float = 8.0

    #: Job database; empty: ``<media_root>/.orchestrator/jobs.sqlite3``.
    db_path: Path | None = None
    #: Folders relative to the media root.
    output_dir: str = "output"
    archives_dir: str = "archives"
    extract_dir: str = "extracted"
    work_dir: str = ".work"
    #: Keep the intermediate files (normalised video, raw results) after a video is finalised.
    keep_work: bool = False
    #: Scene detection and diarization read the source video instead of waiting for the
    #: normalised one (scene decodes at 25 fps itself, diarization works in seconds): the
    #: normalisation then overlaps them instead of delaying them. Tracking always reads the
    #: normalised file (its frame indices must be 25 fps frames).
    analyse_source: bool = True
    #: Shortest interval between two progress events of one step.
    progress_interval_s: float = 0.25

    def address_of(self, service: str) -> str:
        return str(getattr(self, f"{service}_addr"))

    def concurrency_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_concurrency"))

    def database(self) -> Path:
        if self.db_path is not None:
            return self.db_path
        return self.media_root / ".orchestrator" / "jobs.sqlite3"
