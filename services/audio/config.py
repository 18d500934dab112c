"""Settings of the audio service (environment prefix ``AUDIO_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings

#: The legacy ``AUDIO_PROFILE`` presets: they override the individual GPU settings.
PROFILES: dict[str, dict[str, Any]] = {
    "gpu_optimized": {"disable_gpu": False, "enable_amp": True, "pyannote_batch_size": 1},
    "gpu_fp32": {"disable_gpu": False, "enable_amp": False, "pyannote_batch_size": 1},
    "gpu_no_amp": {"disable_gpu": False, "enable_amp": False, "pyannote_batch_size": 1},
    "cpu_only": {"disable_gpu": True, "enable_amp": False, "pyannote_batch_size": None},
}


class AudioSettings(ServiceSettings):
    """Speaker diarization service."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AUDIO_")

    port: int = 50053
    metrics_port: int = 9103
    #: Engine used when a request leaves it unspecified: "embedded" or "pyannote".
    default_engine: str = "embedded"
    #: torch and BLAS threads for the whole process (0 leaves the libraries' defaults). One is
    #: the fastest on a small, shared CPU: the models and matrices are small, hand-offs dominate.
    threads: int = 1
    #: pyannote pipeline: a local folder with ``config.yaml`` (checkpoint paths in it may be
    #: relative to that folder) or a ``config.yaml`` file; unset disables the pyannote engine.
    pyannote_model_dir: Path | None = None
    #: Hub id (e.g. "pyannote/speaker-diarization-3.1"), used only when no model dir is set and
    #: the network allows; needs ``hf_token``.
    pyannote_model_id: str = ""
    hf_token: str = ""
    #: Legacy TV hyper-parameters (optimal_tv_config.json).
    pyannote_min_duration_off: float = 0.15
    pyannote_min_cluster_size: int = 3
    #: "auto" (CUDA when available), "cpu" or "cuda".
    device: str = "auto"
    disable_gpu: bool = False
    #: AMP on CUDA: unset = on for GPUs with at most 6 GiB, true/false forces it.
    enable_amp: bool | None = None
    #: pyannote segmentation/embedding batch size: unset (or 0) = 1 on small GPUs, else
    #: pyannote's default.
    pyannote_batch_size: int | None = None
    #: Legacy preset (gpu_optimized, gpu_fp32, gpu_no_amp, cpu_only) overriding the three above.
    profile: str = ""

    @field_validator("default_engine")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ("embedded", "pyannote"):
            raise ValueError(f"must be embedded or pyannote, not {value!r}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda"):
            raise ValueError(f"must be auto, cpu or cuda, not {value!r}")
        return value

    @field_validator("pyannote_batch_size")
    @classmethod
    def _batch_size(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError("must be >= 1 (or 0/unset for pyannote's default)")
        return value or None

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("profile"):
            name = str(data["profile"])
            if name not in PROFILES:
                raise ValueError(f"unknown AUDIO_PROFILE {name!r}: one of {', '.join(PROFILES)}")
            data = {**data, **PROFILES[name]}
        return data
