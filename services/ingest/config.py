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
    #: Legacy project naming keyword (spec 01 §1.5): "13_Camille_x.zip" → "13 Camille".
    project_keyword: str = "Camille"
    #: Encoder for normalisation: "auto" uses NVENC when a test encode works, else libx264.
    encoder: str = "auto"
    target_fps: float = 25.0
    x264_preset: str = "veryfast"
    crf: int = 23
    nvenc_preset: str = "p5"
    nvenc_cq: int = 23
    audio_bitrate: str = "192k"
    #: Normalisations running at once (x264 uses every core; NVENC limits sessions).
    max_concurrent_encodes: int = 1
