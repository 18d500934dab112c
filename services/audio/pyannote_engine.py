"""The ``pyannote`` engine: a pyannote.audio 3.x pipeline loaded from a local model folder.

Its production weights (``pyannote/speaker-diarization-3.1``) are gated hub downloads, so this
engine only runs where an operator mounted them (or where the network and a token allow a hub
id). The legacy TV hyper-parameters are applied on top of the pipeline's own
(``segmentation.min_duration_off=0.15``, ``clustering.min_cluster_size=3``), then the device
policy of the legacy step: CUDA when available, AMP on small GPUs, batch size 1 on small GPUs,
and a CPU retry when CUDA runs out of memory.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from services.audio.diarizer import (
    MAX_SPEAKERS,
    SAMPLE_RATE,
    ProgressFn,
    SpeakerCount,
    Step,
    Turn,
    honour_count,
    label_turns,
)
from services.common.blocking import CancelToken
from services.common.errors import Unavailable

log = logging.getLogger(__name__)

LOW_VRAM_GIB = 6.0
_CONFIG_NAME = "config.yaml"


def _resolved_config(model_dir: Path, workdir: Path) -> Path:
    """``config.yaml`` of ``model_dir`` with checkpoint paths relative to the folder made absolute.

    pyannote resolves a non-absolute checkpoint string as a hub id; a mounted model folder is
    easier to move when its config names files beside it, so those are rewritten into a copy.
    """
    import yaml

    source = model_dir / _CONFIG_NAME if model_dir.is_dir() else model_dir
    if not source.is_file():
        raise Unavailable(f"pyannote model config not found: {source}")
    config = yaml.safe_load(source.read_text()) or {}
    params = config.get("pipeline", {}).get("params", {})
    changed = False
    for key, value in list(params.items()):
        if isinstance(value, str) and not Path(value).is_absolute():
            candidate = source.parent / value
            if candidate.exists():
                params[key] = str(candidate.resolve())
                changed = True
    if not changed:
        return source
    target = workdir / _CONFIG_NAME
    target.write_text(yaml.safe_dump(config))
    return target


class PyannoteEngine:
    """A pyannote.audio ``SpeakerDiarization`` pipeline with the legacy policy around it."""

    name = "pyannote"

    def __init__(
        self,
        *,
        model_dir: Path | None = None,
        model_id: str = "",
        hf_token: str = "",
        min_duration_off: float = 0.15,
        min_cluster_size: int = 3,
        device: str = "auto",
        disable_gpu: bool = False,
        enable_amp: bool | None = None,
        batch_size: int | None = None,
    ) -> None:
        if model_dir is None and not model_id:
            raise ValueError("a model folder or a hub id is required")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        if min_duration_off < 0:
            raise ValueError("min_duration_off must be >= 0")
        if min_cluster_size < 1:
            raise ValueError("min_cluster_size must be >= 1")
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model_dir = model_dir
        self.model_id = model_id
        self.hf_token = hf_token
        self.min_duration_off = min_duration_off
        self.min_cluster_size = min_cluster_size
        self.requested_device = device
        self.disable_gpu = disable_gpu
        self.enable_amp = enable_amp
        self.batch_size = batch_size
        self.device = "cpu"
        self.amp = False
        self._pipeline: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    def _pick_device(self) -> tuple[str, bool, int | None]:
        import torch

        cuda = torch.cuda.is_available() and not self.disable_gpu and self.requested_device != "cpu"
        if self.requested_device == "cuda" and not cuda:
            log.warning("CUDA requested but not available: the pyannote engine runs on CPU")
        if not cuda:
            return "cpu", False, self.batch_size
        total_gib = torch.cuda.get_device_properties(0).total_memory / 1024**3
        low_vram = 0 < total_gib <= LOW_VRAM_GIB
        amp = low_vram if self.enable_amp is None else self.enable_amp
        batch = self.batch_size if self.batch_size is not None else (1 if low_vram else None)
        if amp:
            log.info("AMP enabled for pyannote inference (GPU memory ~%.1f GiB)", total_gib)
        return "cuda", amp, batch

    def load(self) -> None:
        """Loads the pipeline, applies the TV hyper-parameters, moves it to the device."""
        import torch
        from pyannote.audio import Pipeline

        with tempfile.TemporaryDirectory(prefix="pyannote-config-") as workdir:
            if self.model_dir is not None:
                source: str = str(_resolved_config(Path(self.model_dir), Path(workdir)))
                token = None
            else:
                source, token = self.model_id, (self.hf_token or None)
            try:
                with torch.serialization.safe_globals(_checkpoint_globals()):
                    pipeline = Pipeline.from_pretrained(source, use_auth_token=token)
            except Exception as exc:
                raise Unavailable(
                    f"cannot load the pyannote pipeline from {source}: {exc}"
                ) from exc
        if pipeline is None:  # pyannote returns None for gated or missing hub models
            raise Unavailable(
                f"cannot load the pyannote pipeline {source} (gated model or no token?)"
            )
        # Only these two change: ``instantiate`` keeps the parameters it is not given.
        pipeline.instantiate(
            {
                "segmentation": {"min_duration_off": self.min_duration_off},
                "clustering": {"min_cluster_size": self.min_cluster_size},
            }
        )
        device, self.amp, batch = self._pick_device()
        if batch is not None:
            pipeline.segmentation_batch_size = batch
            pipeline.embedding_batch_size = batch
        try:
            pipeline.to(torch.device(device))
        except RuntimeError as exc:
            if "CUDA" not in str(exc) and "NVIDIA" not in str(exc):
                raise
            log.warning("cannot move the pyannote pipeline to CUDA (%s): using CPU", exc)
            device, self.amp = "cpu", False
            pipeline.to(torch.device("cpu"))
        self.device = device
        self._pipeline = pipeline
        log.info("pyannote pipeline loaded from %s on %s", source, device)

    # ------------------------------------------------------------------ inference

    def diarize(
        self, waveform: np.ndarray, count: SpeakerCount, token: CancelToken, progress: ProgressFn
    ) -> tuple[list[Turn], str]:
        if self._pipeline is None:
            raise Unavailable("the pyannote engine is not loaded")
        with token.holding(self._lock):
            try:
                return self._run(
                    waveform, count, token, progress, self.device, self.amp
                ), self.device
            except Exception as exc:
                if self.device != "cuda" or not _is_cuda_oom(exc):
                    raise
            log.warning("CUDA out of memory in pyannote: retrying this request on CPU")
            return self._on_cpu(waveform, count, token, progress), "cpu"

    def _on_cpu(
        self, waveform: np.ndarray, count: SpeakerCount, token: CancelToken, progress: ProgressFn
    ) -> list[Turn]:
        import torch

        torch.cuda.empty_cache()
        self._pipeline.to(torch.device("cpu"))
        try:
            return self._run(waveform, count, token, progress, "cpu", False)
        finally:
            self._pipeline.to(torch.device(self.device))

    def _run(
        self,
        waveform: np.ndarray,
        count: SpeakerCount,
        token: CancelToken,
        progress: ProgressFn,
        device: str,
        amp: bool,
    ) -> list[Turn]:
        import torch

        def hook(step: str, _artifact: object, file: object = None, total: int | None = None,
                 completed: int | None = None) -> None:  # fmt: skip
            token.raise_if_cancelled()  # raising here aborts pyannote between batches
            if completed is None:
                completed = total = 1
            progress(Step(step, int(completed), int(total or completed), "batches"))

        options: dict[str, Any] = {"num_speakers": count.num or None}
        if not count.num:
            options["min_speakers"] = count.min or None
            options["max_speakers"] = count.max or None
        audio = {"waveform": torch.from_numpy(waveform).unsqueeze(0), "sample_rate": SAMPLE_RATE}
        if device == "cuda":
            torch.cuda.empty_cache()
        autocast = (
            torch.autocast("cuda", dtype=torch.float16)
            if amp and device == "cuda"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            annotation = self._pipeline(audio, hook=hook, **options)
        if isinstance(annotation, tuple):  # some versions return (annotation, embeddings)
            annotation = annotation[0]
        ids: dict[str, int] = {}
        raw = [
            (seg.start, seg.end, ids.setdefault(label, len(ids)))
            for seg, _track, label in annotation.itertracks(yield_label=True)
        ]
        return label_turns(honour_count(raw, *count.bounds(MAX_SPEAKERS)))


def _checkpoint_globals() -> list[Any]:
    """Classes pyannote 3.x checkpoints pickle, allowed for torch>=2.6's ``weights_only`` load.

    Without them every pyannote checkpoint (the gated production ones included) fails to load
    with "Weights only load failed ... Unsupported global".
    """
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from torch.torch_version import TorchVersion

    return [TorchVersion, Specifications, Problem, Resolution]


def _is_cuda_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(exc)
