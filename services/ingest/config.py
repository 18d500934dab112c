"""Settings of the ingest service (environment prefix ``INGEST_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="INGEST_")

    port: int = 50051
    metrics_port: int = 9101
    #: Default extraction limits (a request may lower or raise them).
    max_archive_bytes: int = 50 * 1024**3
    max_archive_members: int = 100_000
    max_member_ratio: float = 200.0
    max_member_bytes: int = 20 * 1024**3
    #: Encoder for normalisation: "auto" uses NVENC when ffmpeg has it, else libx264.
    encoder: str = "auto"
    x264_preset: str = "veryfast"
    crf: int = 23
