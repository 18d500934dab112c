"""Settings of the audio service (environment prefix ``AUDIO_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings


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
    #: pyannote segmentation/embedding batch size: unset = 1 on small GPUs, else pyannote's default.
    pyannote_batch_size: int | None = None
