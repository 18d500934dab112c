"""What every diarization engine shares: results, options, progress and the media entry point.

No grpc here: the servicer converts :class:`DiarizationResult` to protos.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from services.common import ffmpeg
from services.common.blocking import CancelToken
from services.common.errors import InvalidArgument, UndecodableMedia

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MAX_SPEAKERS = 20


@dataclass(frozen=True)
class Turn:
    """One stretch of speech by one speaker (``speaker`` is ``SPEAKER_00``, ``SPEAKER_01``...)."""

    start_s: float
    end_s: float
    speaker: str


@dataclass(frozen=True)
class DiarizationResult:
    has_audio: bool
    duration_s: float
    engine: str
    device: str
    turns: Sequence[Turn] = field(default_factory=tuple)

    @property
    def speakers(self) -> list[str]:
        return sorted({turn.speaker for turn in self.turns})

    @property
    def speech_coverage(self) -> float:
        """Share of the duration where at least one speaker talks (overlaps counted once)."""
        if self.duration_s <= 0 or not self.turns:
            return 0.0
        spans = sorted((t.start_s, t.end_s) for t in self.turns)
        total, cur_start, cur_end = 0.0, spans[0][0], spans[0][1]
        for start, end in spans[1:]:
            if start > cur_end:
                total += cur_end - cur_start
                cur_start, cur_end = start, end
            else:
                cur_end = max(cur_end, end)
        total += cur_end - cur_start
        return min(1.0, total / self.duration_s)


@dataclass(frozen=True)
class SpeakerCount:
    """Constraints on the number of speakers; 0 means "not set"."""

    num: int = 0
    min: int = 0
    max: int = 0

    def __post_init__(self) -> None:
        for name in ("num", "min", "max"):
            value = getattr(self, name)
            if value < 0 or value > MAX_SPEAKERS:
                raise InvalidArgument(
                    f"{name}_speakers must be between 0 and {MAX_SPEAKERS}, got {value}"
                )
        if self.min and self.max and self.min > self.max:
            raise InvalidArgument(
                f"min_speakers ({self.min}) is larger than max_speakers ({self.max})"
            )
        if self.num and ((self.min and self.num < self.min) or (self.max and self.num > self.max)):
            raise InvalidArgument("num_speakers contradicts min_speakers/max_speakers")

    def bounds(self, default_max: int) -> tuple[int, int]:
        """The (lowest, highest) count allowed, the highest defaulting to ``default_max``."""
        if self.num:
            return self.num, self.num
        low = max(1, self.min)
        high = self.max or max(default_max, low)
        return low, high


@dataclass(frozen=True)
class Step:
    """A progress report from an engine: ``done`` of ``total`` ``unit`` in ``stage``."""

    stage: str
    done: int
    total: int
    unit: str = "steps"


ProgressFn = Callable[[Step], None]


class Engine(Protocol):
    """A loaded diarization engine; ``diarize`` is blocking and polls ``token``."""

    name: str

    def diarize(
        self, waveform: np.ndarray, count: SpeakerCount, token: CancelToken, progress: ProgressFn
    ) -> tuple[list[Turn], str]:
        """Turns (sorted by start) and the device that ran them, for 16 kHz mono float32 audio."""
        ...


def label_turns(raw: Sequence[tuple[float, float, object]]) -> list[Turn]:
    """Renames labels to ``SPEAKER_00``... in order of first appearance; sorts by start."""
    ordered = sorted(raw, key=lambda item: (item[0], item[1]))
    names: dict[object, str] = {}
    turns = []
    for start, end, label in ordered:
        if end <= start:
            continue
        if label not in names:
            names[label] = f"SPEAKER_{len(names):02d}"
        turns.append(Turn(round(float(start), 3), round(float(end), 3), names[label]))
    return turns


def honour_count(
    raw: Sequence[tuple[float, float, int]], low: int, high: int
) -> list[tuple[float, float, int]]:
    """Turns relabelled so that the number of speakers lies within ``[low, high]``.

    The engines aim for the count themselves; this is the last step that makes the request's
    ``num/min/max_speakers`` hold exactly whatever happened before (a speaker lost to a
    minimum turn length, too little speech to cluster into ``num`` groups). Too many: the
    speaker with the least speech takes the label of the speaker talking nearest in time to
    it. Too few: the longest turn is cut in half and its second half gets a new speaker.
    Without any turn (no speech) there is nothing to label and no speaker.
    """
    turns = sorted((float(a), float(b), int(c)) for a, b, c in raw if b > a)
    if not turns:
        return []
    while len({label for *_, label in turns}) > high:
        talk: dict[int, float] = {}
        for start, end, label in turns:
            talk[label] = talk.get(label, 0.0) + end - start
        quiet = min(talk, key=lambda label: (talk[label], label))
        mine = [(a, b) for a, b, c in turns if c == quiet]
        others = [(a, b, c) for a, b, c in turns if c != quiet]
        nearest = min(others, key=lambda t: min(max(0.0, t[0] - b, a - t[1]) for a, b in mine))[2]
        turns = [(a, b, nearest if c == quiet else c) for a, b, c in turns]
    while len({label for *_, label in turns}) < low:
        i = max(range(len(turns)), key=lambda j: turns[j][1] - turns[j][0])
        start, end, label = turns[i]
        middle = (start + end) / 2
        fresh = max(c for *_, c in turns) + 1
        turns[i : i + 1] = [(start, middle, label), (middle, end, fresh)]
    return turns


def diarize_media(
    path: Path, engine: Engine, count: SpeakerCount, token: CancelToken, progress: ProgressFn
) -> DiarizationResult:
    """Decodes the first audio stream of ``path`` to 16 kHz mono in memory and diarizes it.

    A file without an audio stream gives ``has_audio=False`` (an explicit answer, not silence);
    a file ffmpeg cannot read raises :class:`UndecodableMedia`. ffprobe runs only when decoding
    fails, to tell "no audio stream" from "broken file": one process less per request.
    """
    progress(Step("decode", 0, 1))
    try:
        waveform = ffmpeg.read_audio(path, SAMPLE_RATE, token=token)
    except UndecodableMedia:
        info = ffmpeg.probe(path)  # raises UndecodableMedia itself for an unreadable file
        if info.has_audio:
            raise
        log.info("%s has no audio stream", path.name)
        return DiarizationResult(False, info.duration_s, engine.name, "")
    if waveform.size == 0:
        raise UndecodableMedia(f"the audio stream of {path.name} decoded to no samples")
    if not np.isfinite(waveform).all():
        raise UndecodableMedia(f"the audio stream of {path.name} decoded to invalid samples")
    progress(Step("decode", 1, 1))
    token.raise_if_cancelled()
    turns, device = engine.diarize(waveform, count, token, progress)
    duration = waveform.size / SAMPLE_RATE
    turns = clip_turns(turns, duration)
    return DiarizationResult(True, duration, engine.name, device, tuple(turns))


def clip_turns(turns: Sequence[Turn], duration_s: float) -> list[Turn]:
    """Turns cut to ``[0, duration_s]`` (pyannote pads its last chunk past the end)."""
    clipped = []
    for turn in turns:
        start, end = max(0.0, turn.start_s), min(turn.end_s, round(duration_s, 3))
        if end > start:
            clipped.append(Turn(start, end, turn.speaker))
    return clipped
