"""Settings of the scene service (environment prefix ``SCENE_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings
from services.scene.boundaries import DEFAULT_MIN_SCENE_FRAMES, DEFAULT_THRESHOLD


class SceneSettings(ServiceSettings):
    """TransNetV2 shot boundary detection."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="SCENE_")

    port: int = 50052
    metrics_port: int = 9102
    #: "auto" uses CUDA when available, else the CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: float16 autocast on CUDA.
    amp: bool = True
    #: "float32" matches the reference to ~1e-6. "bfloat16" (autocast, for CPUs with AVX512-BF16
    #: or AMX; direct convolutions) ran the service 1.2x faster than float32 with Winograd on the
    #: dev machine but moves probabilities by up to ~1e-2, so it is opt-in.
    cpu_precision: Literal["float32", "bfloat16"] = "float32"
    #: Winograd F(6x6, 3x3) for the CPU spatial convolutions in float32 (the same probabilities to
    #: ~1e-6; those layers 2x faster, the whole service ~1.4x, on the dev machine); needs a C++
    #: compiler once, else the direct convolution is used.
    winograd: bool = True
    #: 100-frame windows per forward pass. On a CPU small batches keep activations in cache (2
    #: measured best on the 2-core dev machine); a GPU wants more (16-64).
    batch_windows: int = Field(default=2, ge=1, le=64)
    #: torch CPU threads for inference; 0 keeps torch's default (one per core).
    torch_threads: int = Field(default=0, ge=0)
    #: ffmpeg decoder (and scaler) threads; 0: one on the CPU, where inference has every core, and
    #: ffmpeg's choice when inference runs on a GPU.
    ffmpeg_threads: int = Field(default=0, ge=0)
    #: Keep freed memory in the process instead of unmapping it (see services.common.allocator):
    #: a CPU forward pass then reuses its heap instead of page-faulting ~300 MB back in.
    retain_freed_memory: bool = True
    #: Decoded frames (3.9 kB each) the decoder may run ahead of inference.
    decode_queue_frames: int = Field(default=5000, ge=1)
    #: Defaults for requests that leave these fields at 0.
    threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0.0, lt=1.0)
    min_scene_frames: int = Field(default=DEFAULT_MIN_SCENE_FRAMES, ge=0)
