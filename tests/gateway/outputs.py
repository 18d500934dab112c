"""Output files of one analysed video, written by the orchestrator's own writers (the legacy
formats: scenes CSV, audio JSON, fused tracking JSON and the reductions) from a small synthetic
analysis, for the report and browser tests that run without the models.

Two shots; SPEAKER_00 talks through the second one while the face on the left moves its mouth,
and a second face stays silent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from orchestrator import legacy
from orchestrator.fusion import FaceObservation, SpeakerTurn, fuse

FPS = 25
FRAMES = 100
SHOTS = [(0, 39), (40, 99)]
TURNS = [SpeakerTurn(1.8, 3.9, "SPEAKER_00")]
FRAME_SIZE = (640, 360)


def _face(track: str, x: float, frame: int, talking: bool) -> FaceObservation:
    openness = 0.02 + 0.03 * abs(math.sin(frame / 2)) if talking else 0.01
    return FaceObservation(
        track_id=track,
        x_min=x,
        y_min=60,
        x_max=x + 120,
        y_max=210,
        centroid_x=x + 60,
        centroid_y=135,
        confidence=0.97,
        mouth_openness=openness,
        jaw_open=openness * 2,
    )


def write_outputs(folder: Path, video_path: str, stem: str) -> dict[str, Path]:
    """Writes ``<stem>_scenes.csv``, ``<stem>_audio.json``, ``<stem>_tracking.json`` and the
    ``docs/`` reductions into ``folder``; returns them by kind."""
    frames = []
    for index in range(FRAMES):
        talking = 45 <= index <= 97
        frames.append([_face("t1", 80, index, talking), _face("t2", 420, index, False)])
    fusion = fuse(frames, SHOTS, TURNS, fps=FPS)
    segments = [(t.start_s, t.end_s, t.speaker) for t in TURNS]
    audio_frames = legacy.audio_frames(segments, FRAMES)
    name = video_path.rsplit("/", 1)[-1]
    document = legacy.tracking_document(video_path, fusion, audio_frames)
    files = {
        "scenes": folder / f"{stem}{legacy.SCENES_SUFFIX}",
        "audio": folder / f"{stem}{legacy.AUDIO_SUFFIX}",
        "tracking": folder / f"{stem}{legacy.TRACKING_SUFFIX}",
        "docs_tracking": folder / legacy.DOCS_DIR / f"{stem}.json",
        "docs_audio": folder / legacy.DOCS_DIR / f"{stem}{legacy.AUDIO_SUFFIX}",
    }
    files["docs_tracking"].parent.mkdir(parents=True, exist_ok=True)
    files["scenes"].write_text(legacy.scenes_csv(SHOTS), encoding="utf-8")
    audio_text = legacy.audio_json(name, FRAMES, audio_frames)
    files["audio"].write_text(audio_text, encoding="utf-8")
    files["tracking"].write_text(legacy.tracking_json(document), encoding="utf-8")
    reduced_tracking = legacy.reduce_tracking(document)
    reduced_audio = legacy.reduce_audio(json.loads(audio_text))
    assert reduced_tracking is not None and reduced_audio is not None
    files["docs_tracking"].write_text(legacy.reduced_json(reduced_tracking), encoding="utf-8")
    files["docs_audio"].write_text(legacy.reduced_json(reduced_audio), encoding="utf-8")
    return files
