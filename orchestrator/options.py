"""Checks of a job's options at submit time (a bad option is refused before anything runs)."""

from __future__ import annotations

from protos.videoanalysis.v1 import orchestrator_pb2
from services.common.errors import InvalidArgument


def check_job_options(options: orchestrator_pb2.JobOptions) -> None:
    """Raises :class:`InvalidArgument` for an option no job could run with."""
    if options.num_speakers < 0 or options.min_speakers < 0 or options.max_speakers < 0:
        raise InvalidArgument("speaker counts cannot be negative")
    if options.max_speakers and options.min_speakers > options.max_speakers:
        raise InvalidArgument("min_speakers is larger than max_speakers")
    if not 0 <= options.scene_threshold < 1:
        raise InvalidArgument("scene_threshold must be in [0, 1)")
