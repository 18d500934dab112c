"""Settings of the orchestrator (environment prefix ``ORCH_``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from services.common.config import ServiceSettings
from services.common.registry import NAMES

#: The downstream services, in the order the stack starts them.
SERVICES = NAMES
_ENV_PREFIX = "ORCH_"
_LINK_KEYS = ("addr", "concurrency")


class ServiceLink(BaseModel):
    """How the orchestrator reaches one service."""

    model_config = ConfigDict(frozen=True)

    #: Comma-separated ``host:port`` list, or one DNS name; empty: start the service locally.
    addr: str = ""
    #: Calls in flight from this orchestrator (more replicas: raise it).
    concurrency: int = Field(default=2, ge=1)


class _ServiceLinkEnvironment(PydanticBaseSettingsSource):
    """Reads ``ORCH_<SERVICE>_ADDR`` and ``ORCH_<SERVICE>_CONCURRENCY`` for every service of the
    registry (flat names, as deployments set them)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name in NAMES:
            for key in _LINK_KEYS:
                value = os.environ.get(f"{_ENV_PREFIX}{name}_{key}".upper())
                if value is not None:
                    found[f"{name}_{key}"] = value
        return found


class OrchestratorSettings(ServiceSettings):
    """Jobs, fan-out to the analysis services, outputs and the results archive.

    Service addresses are comma-separated ``host:port`` lists (``ORCH_SCENE_ADDR=10.0.0.1:50052,
    10.0.0.2:50052``, or one DNS name that resolves to every replica); each becomes one long-lived
    channel with ``round_robin``. An empty address means "start that service locally" (``run`` and
    ``serve`` do; a bare server refuses to start without it).
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix=_ENV_PREFIX)

    port: int = 50050
    metrics_port: int = 9100

    #: Per service of the registry; ``scene_addr=``/``scene_concurrency=`` (keywords, or
    #: ``ORCH_SCENE_ADDR`` in the environment) fill it.
    services: dict[str, ServiceLink] = Field(default_factory=dict)
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
    #: Keep the normalised video after a video is finalised (the dashboard plays it).
    keep_normalized: bool = True
    #: Scene detection and diarization read the source video instead of waiting for the
    #: normalised one (scene decodes at 25 fps itself, diarization works in seconds): the
    #: normalisation then overlaps them instead of delaying them. Tracking always reads the
    #: normalised file (its frame indices must be 25 fps frames).
    analyse_source: bool = True
    #: Shortest interval between two progress events of one step.
    progress_interval_s: float = 0.25

    #: Events kept in the job store: at most this many rows, none older than this.
    event_retention_rows: int = Field(default=200_000, ge=1_000)
    event_retention_s: float = Field(default=30 * 86_400, gt=0)
    event_prune_interval_s: float = Field(default=10.0, gt=0)
    #: Log lines kept per job (the oldest go first).
    log_lines_per_job: int = Field(default=2_000, ge=10)
    #: Live events one watcher may have pending before it is told to resync.
    watcher_queue: int = Field(default=10_000, ge=10)

    @model_validator(mode="before")
    @classmethod
    def _collect_service_links(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        links = {name: dict(data.get("services", {}).get(name, {})) for name in NAMES}
        for name in NAMES:
            for key in _LINK_KEYS:
                flat = data.pop(f"{name}_{key}", None)
                if flat is not None:
                    links[name][key] = flat
        data["services"] = links
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _ServiceLinkEnvironment(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    def link(self, service: str) -> ServiceLink:
        return self.services.get(service, ServiceLink())

    def address_of(self, service: str) -> str:
        return self.link(service).addr

    def with_addresses(self, addresses: Mapping[str, str]) -> OrchestratorSettings:
        """A copy whose services listed in ``addresses`` are reached there."""
        services = dict(self.services)
        for name, address in addresses.items():
            services[name] = self.link(name).model_copy(update={"addr": address})
        return self.model_copy(update={"services": services})

    def database(self) -> Path:
        if self.db_path is not None:
            return self.db_path
        return self.media_root / ".orchestrator" / "jobs.sqlite3"
