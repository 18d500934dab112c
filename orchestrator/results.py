"""What each step stores: typed results, JSON in the job store's step rows.

A finished step's result says which files it wrote (relative to the media root), so a restart can
tell whether the step is really done (its files are still there) and the next steps can read them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="StepResult")


@dataclass
class StepResult:
    """Base of the step results: JSON in the job store, a dataclass in code."""

    #: Files (relative to the media root) that must still exist for the result to be reused.
    file_fields: ClassVar[tuple[str, ...]] = ()
    #: How long the step took (set when it is stored).
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any]) -> R:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def files(self) -> list[str]:
        found: list[str] = []
        for name in self.file_fields:
            value = getattr(self, name)
            found += list(value.values()) if isinstance(value, dict) else [value]
        return [p for p in found if isinstance(p, str) and p]


@dataclass
class NormalizeResult(StepResult):
    file_fields: ClassVar[tuple[str, ...]] = ("path",)
    path: str = ""
    duration_s: float = 0.0
    frame_count: int = 0
    has_audio: bool = False
    reencoded: bool = False
    encoder: str = ""
    source_duration_s: float = 0.0


@dataclass
class SceneStepResult(StepResult):
    file_fields: ClassVar[tuple[str, ...]] = ("file",)
    file: str = ""
    scenes: int = 0
    frames: int = 0
    device: str = ""
    progress_total: int = 0
    unit: str = "frames"


@dataclass
class AudioStepResult(StepResult):
    file_fields: ClassVar[tuple[str, ...]] = ("file",)
    file: str = ""
    speakers: list[str] = field(default_factory=list)
    segments: int = 0
    has_audio: bool = False
    engine: str = ""


@dataclass
class TrackingStepResult(StepResult):
    file_fields: ClassVar[tuple[str, ...]] = ("file",)
    file: str = ""
    frames: int = 0
    tracks: int = 0
    faces: int = 0
    progress_total: int = 0
    unit: str = "frames"


@dataclass
class FuseResult(StepResult):
    """The full output files (staged) and the counts reports show."""

    file_fields: ClassVar[tuple[str, ...]] = ("files",)
    files: dict[str, str] = field(default_factory=dict)  # type: ignore[assignment]
    faces: int = 0
    face_frames: int = 0
    speaking_face_frames: int = 0
    legacy_speaking_face_frames: int = 0
    speakers_on_screen: dict[str, Any] = field(default_factory=dict)
    shots: int = 0
    from_cache: bool = False

    def as_json(self) -> dict[str, Any]:
        data = super().as_json()
        if not self.from_cache:
            del data["from_cache"]  # as stored before this field existed
        return data

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.as_json().items() if k != "files"}


@dataclass
class ReduceResult(StepResult):
    file_fields: ClassVar[tuple[str, ...]] = ("files",)
    files: dict[str, str] = field(default_factory=dict)  # type: ignore[assignment]
    frames: int = 0


@dataclass
class FinalizeResult(StepResult):
    outputs: dict[str, str] = field(default_factory=dict)
    archive: str = ""
