"""Settings of the tracking service (environment prefix ``TRACKING_``)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings
from services.tracking.mesh import MeshOptions
from services.tracking.pipeline import TrackingOptions
from services.tracking.worker import Cadence


def _cgroup_cpu_limit(root: Path) -> float | None:
    """CPUs a cgroup quota allows (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process is given: its CPU affinity (a container's cpuset), capped by a CPU
    quota (a Kubernetes CPU limit), at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


class TrackingSettings(ServiceSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="TRACKING_")

    port: int = 50054
    metrics_port: int = 9104
    #: Worker processes (one face graph each); 0 means one per core given (CPU affinity, capped
    #: by a cgroup CPU quota such as a Kubernetes limit).
    workers: int = 0
    #: Folder holding ``mediapipe/modules/...``; empty means the installed mediapipe package.
    model_root: Path | None = None
    #: Most memory the shared frame slots of one request may take.
    buffer_mb: int = 512
    #: Request defaults.
    max_faces: int = 5
    min_detection_confidence: float = 0.5
    batch_frames: int = 50
    #: Landmark-model face-presence score needed to keep (and keep following) a face. Below
    #: MediaPipe's 0.5 (the legacy tool used 0.3 for tracking): faces that are hard to follow
    #: (profile, hand on the chin) are kept through frames where 0.5 would drop them for good,
    #: which also makes results steadier across chunk edges.
    min_presence_confidence: float = 0.4
    #: 478 refined landmarks (lips, eyes, irises) instead of 468; a different, slower model.
    refine_landmarks: bool = False
    #: Longest side of the frames the models see (larger videos are downscaled first).
    max_side: int = 960
    #: Videos whose longest side is at most this are processed at their own size: no scaling
    #: (cheaper to decode), and the models see the very pixels MediaPipe sees on the original,
    #: so a face the detector accepts there only just is not lost to resampling. Larger videos
    #: are scaled to ``max_side`` (at 1280 or 1920, 1080p clips cost speed and moved their misses
    #: rather than losing them).
    native_max_side: int = Field(default=1280, ge=0)
    #: Face detection at least every N frames while faces are followed by their landmarks. 1, as
    #: MediaPipe's own loop: a face the detector accepts on a single frame is not skipped
    #: (see ``worker.Cadence``).
    detect_every: int = 1
    #: While no face has been followed for ``dense_frames`` frames (and from that frame of the
    #: video on), face detection every N frames (and on every cut); a face found so sends the run
    #: back (``rewind_frames``), so faces are reported from where they came. Closer to a face,
    #: or to the start, detection on every frame. Chosen on the tuning half of the dev set
    #: (``benchmarks.devsets.clips``).
    idle_detect_every: int = 6
    dense_frames: int = 25
    #: A face found by an idle detection: detect again on every frame from this many back.
    rewind_frames: int = 8
    #: After a face is lost, detect on every frame for this many frames.
    recovery_frames: int = 10
    #: An idle detection whose proposal the landmark model rejects counts as a face found for the
    #: schedule: rewind, then detect on every frame (see ``worker.Cadence``). Off by default: on
    #: the tuning half it finds no more faces and costs about 4% of the speed (1.49x -> 1.43x the
    #: naive loop); it finds a small face accepted on 1-3 frames of a shot that the idle cadence
    #: skips (a dev-set variant clip, 0.944 -> 1.0).
    wake_on_proposals: bool = False
    #: An idle detection with a detector candidate scoring at least this (a near miss, below
    #: ``min_detection_confidence``) sends the run back ``rewind_frames`` and detects on every
    #: frame up to the next idle detection (see ``worker.Cadence``): the detector may accept
    #: that face on one frame only, which the sparse schedule would skip. 0 turns it off.
    #: Chosen on the dev set's tuning pools (0.3 found no more; 0.45 with an idle cadence of 8
    #: missed more on unseen variants); costs about a fifth more detection frames.
    near_detection_confidence: float = Field(default=0.4, ge=0.0, lt=1.0)
    #: A frame identical to the previous one reuses its faces.
    reuse_duplicates: bool = True
    #: Grey-thumbnail difference (0-255) that counts as a cut and forces detection.
    cut_threshold: float = 20.0
    #: Most own frames per chunk, chunks per worker on short videos, and frames of overlap
    #: (re-run from the previous chunk).
    chunk_frames: int = 96
    chunks_per_worker: int = 2
    overlap_frames: int = 4
    #: Frames a track survives without its face.
    max_missed: int = 12
    #: End every track at a hard cut (the grey-thumbnail test above).
    split_at_cuts: bool = True
    #: Seconds a worker may take to load its models.
    worker_start_timeout_s: float = 120.0

    @property
    def pool_size(self) -> int:
        return self.workers if self.workers > 0 else available_cores()


def cadence_of(settings: TrackingSettings) -> Cadence:
    """The detection schedule the settings describe."""
    return Cadence(
        detect_every=settings.detect_every,
        recovery_frames=settings.recovery_frames,
        cut_threshold=settings.cut_threshold,
        idle_detect_every=settings.idle_detect_every,
        reuse_duplicates=settings.reuse_duplicates,
        rewind_frames=settings.rewind_frames,
        dense_frames=settings.dense_frames,
        wake_on_proposals=settings.wake_on_proposals,
    )


def mesh_options_of(settings: TrackingSettings) -> MeshOptions:
    """The face graph the settings describe (the one every worker builds at start)."""
    return MeshOptions(
        max_faces=settings.max_faces,
        min_detection_confidence=settings.min_detection_confidence,
        min_presence_confidence=settings.min_presence_confidence,
        refine_landmarks=settings.refine_landmarks,
        near_detection_confidence=settings.near_detection_confidence or None,
    )


def tracking_options_of(
    settings: TrackingSettings,
    mesh: MeshOptions,
    *,
    workers: int,
    batch_frames: int,
    include_landmarks: bool = False,
) -> TrackingOptions:
    """The options of one video: the settings' values with what a request chose."""
    return TrackingOptions(
        mesh=mesh,
        cadence=cadence_of(settings),
        include_landmarks=include_landmarks,
        workers=workers,
        batch_frames=batch_frames,
        max_side=settings.max_side,
        native_max_side=settings.native_max_side,
        chunk_frames=settings.chunk_frames,
        chunks_per_worker=settings.chunks_per_worker,
        overlap_frames=settings.overlap_frames,
        buffer_mb=settings.buffer_mb,
        max_missed=settings.max_missed,
        split_at_cuts=settings.split_at_cuts,
    )
