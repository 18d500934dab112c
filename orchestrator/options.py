"""Checks of a job's options at submit time: a bad option is refused with INVALID_ARGUMENT before
anything runs, instead of failing the job later inside a service.

The rules are the services' own (speaker counts from the audio domain, the face limit from the
tracking domain), so a submitted job never asks a service for something it refuses.
"""

from __future__ import annotations

import math

from protos.videoanalysis.v1 import orchestrator_pb2
from services.audio.diarizer import SpeakerCount
from services.common.errors import InvalidArgument
from services.common.media import check_relative
from services.tracking.mesh import MAX_FACES

#: Longest ``SubmitJobRequest.submit_key``.
MAX_SUBMIT_KEY_CHARS = 200
#: Longest job label (free text shown in lists).
MAX_LABEL_CHARS = 1000


def check_job_options(
    options: orchestrator_pb2.JobOptions, *, label: str = "", submit_key: str = ""
) -> None:
    """Raises :class:`InvalidArgument` for an option (or a label, or a submit key) no job could
    run with.

    Zero (the proto default) always means "the service's default" and is accepted.
    """
    for field, value in options.ListFields():
        enum = field.enum_type
        if enum is not None and value not in enum.values_by_number:
            choices = ", ".join(v.name for v in enum.values)
            raise InvalidArgument(f"unknown {field.name} {value} (one of {choices})")
    threshold = options.scene_threshold
    if math.isnan(threshold) or not 0 <= threshold < 1:
        raise InvalidArgument(f"scene_threshold must be in [0, 1) (0 = default), got {threshold}")
    SpeakerCount(options.num_speakers, options.min_speakers, options.max_speakers)
    if not 0 <= options.max_faces <= MAX_FACES:
        raise InvalidArgument(
            f"max_faces must be between 1 and {MAX_FACES} (0 = default), got {options.max_faces}"
        )
    if options.output_dir:
        check_relative(options.output_dir, "output_dir")
    if len(label) > MAX_LABEL_CHARS:
        raise InvalidArgument(f"label is longer than {MAX_LABEL_CHARS} characters ({len(label)})")
    if len(submit_key) > MAX_SUBMIT_KEY_CHARS or not submit_key.isprintable():
        raise InvalidArgument(
            f"submit_key must be at most {MAX_SUBMIT_KEY_CHARS} printable characters"
        )
