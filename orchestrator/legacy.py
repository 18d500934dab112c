"""The legacy tool's file formats, exactly: scenes CSV, audio JSON, tracking JSON and the After
Effects reductions (spec 02 §1.4 and §2.2, spec 03 §5, spec 04 §1).

Pure functions from data to text (and back); writing files is :mod:`orchestrator.outputs`' job.
Where the legacy writer was broken, the format is kept and the defect fixed: the video file name
in the audio JSON is escaped (the legacy writer produced invalid JSON for a ``"`` in a name), and a
reduction of an unexpected document returns ``None`` instead of wiping the file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.fusion import (
    FUSION_VERSION,
    FaceObservation,
    FaceSpeaking,
    FusionResult,
    SpeakerTurn,
    speech_frames,
)

SCENES_SUFFIX = "_scenes.csv"
AUDIO_SUFFIX = "_audio.json"
TRACKING_SUFFIX = "_tracking.json"
METADATA_NAME = "metadata.json"
DOCS_DIR = "docs"
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")

#: Frame rate of every legacy file (the pipeline normalises to 25 fps).
LEGACY_FPS = 25
SCENES_HEADER = ("No", "Timecode In", "Timecode Out", "Frame In", "Frame Out")
#: The legacy keys of a tracked object, in the legacy order (spec 03 §10); new fields follow them.
TRACKED_OBJECT_KEYS = (
    "id", "centroid_x", "centroid_y", "bbox_xmin", "bbox_xmax", "source", "label", "confidence",
    "blendshapes", "bbox_ymin", "bbox_ymax", "bbox_width", "bbox_height", "is_speaking",
    "speaking_confidence", "speaking_method", "speaking_sources",
)  # fmt: skip


# Scenes (spec 02 §1.4).


def timecode(frame: int, fps: float = LEGACY_FPS) -> str:
    """PySceneDetect's ``FrameTimecode(frame, fps).get_timecode()``: ``HH:MM:SS.mmm``."""
    millis = round(frame * 1000 / fps)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    seconds, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def scenes_csv(scenes: Iterable[tuple[int, int]], fps: float = LEGACY_FPS) -> str:
    """The legacy ``<stem>_scenes.csv``: 0-based inclusive ``(start, end)`` frames in; timecodes
    of the 0-based frames and 1-based frame columns out, ``\\r\\n`` line endings."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(SCENES_HEADER)
    for number, (start, end) in enumerate(scenes, start=1):
        writer.writerow([number, timecode(start, fps), timecode(end, fps), start + 1, end + 1])
    return buffer.getvalue()


def parse_scenes_csv(text: str) -> list[tuple[int, int]]:
    """0-based inclusive ``(start, end)`` frames from a legacy scenes CSV."""
    rows = csv.DictReader(io.StringIO(text))
    return [(int(row["Frame In"]) - 1, int(row["Frame Out"]) - 1) for row in rows]


# Audio (spec 02 §2.2).


@dataclass(frozen=True)
class AudioFrame:
    """What the audio JSON says about one 1-based frame."""

    frame: int
    labels: tuple[str, ...]

    @property
    def is_speech_present(self) -> bool:
        return bool(self.labels)


def total_frames_for(duration_s: float, fps: float = LEGACY_FPS) -> int:
    """``int(round(duration * 25))``, the legacy frame count of the audio JSON."""
    return round(duration_s * fps)


def audio_frames(
    segments: Iterable[tuple[float, float, str]], total_frames: int, fps: float = LEGACY_FPS
) -> list[AudioFrame]:
    """Speaker labels per 1-based frame with the legacy mapping: a segment covers frames
    ``max(1, int(start*fps))`` .. ``int(end*fps)`` (one frame early relative to ``timecode_sec``,
    kept for compatibility); frames past ``total_frames`` are dropped. The mapping is that of
    :func:`~orchestrator.fusion.speech_frames`: this file and the fusion agree frame by frame."""
    turns = [SpeakerTurn(start_s, end_s, speaker) for start_s, end_s, speaker in segments]
    return [
        AudioFrame(number, tuple(sorted(labels)))
        for number, labels in enumerate(speech_frames(turns, total_frames, fps), start=1)
    ]


def audio_json(
    video_filename: str,
    total_frames: int,
    frames: Sequence[AudioFrame],
    fps: int | float = LEGACY_FPS,
) -> str:
    """The legacy ``<stem>_audio.json`` byte for byte (pyannote writer: keys in order, one frame
    object per line without indent, ``fps`` an int)."""
    lines = []
    for frame in frames:
        info = {
            "is_speech_present": frame.is_speech_present,
            "num_distinct_speakers_audio": len(frame.labels),
            "active_speaker_labels": list(frame.labels),
            "timecode_sec": round((frame.frame - 1) / fps, 3),
        }
        lines.append(json.dumps({"frame": frame.frame, "audio_info": info}))
    header = (
        "{\n"
        f'  "video_filename": {json.dumps(video_filename, ensure_ascii=False)},\n'
        f'  "total_frames": {int(total_frames)},\n'
        f'  "fps": {json.dumps(fps)},\n'
        '  "frames_analysis": [\n'
    )
    return header + ",\n".join(lines) + "\n  ]\n}\n"


def parse_audio_json(text: str) -> tuple[str, int, list[AudioFrame]]:
    """``(video_filename, total_frames, frames)`` of an audio JSON (legacy or ours)."""
    doc = json.loads(text)
    frames = [
        AudioFrame(int(entry["frame"]), tuple(entry["audio_info"]["active_speaker_labels"]))
        for entry in doc["frames_analysis"]
        if isinstance(entry.get("audio_info"), dict)
    ]
    return str(doc["video_filename"]), int(doc["total_frames"]), frames


def audio_evidence(frame: AudioFrame | None) -> dict[str, Any]:
    """``speaking_sources.audio`` of the legacy tracking JSON for one frame."""
    if frame is None:
        return {
            "is_speech_present": False,
            "num_speakers": 0,
            "active_speakers": [],
            "confidence": 0.0,
        }
    count = len(frame.labels)
    return {
        "is_speech_present": frame.is_speech_present,
        "num_speakers": count,
        "active_speakers": list(frame.labels),
        "confidence": round(min(0.8 + 0.1 * count, 1.0), 3) if frame.is_speech_present else 0.0,
    }


def visual_evidence(jaw_open: float, jaw_threshold: float = 0.08) -> dict[str, Any]:
    """``speaking_sources.visual`` with the legacy jawOpen formula (kept as information)."""
    confidence = min(jaw_open / jaw_threshold * 0.7, 1.0) if jaw_open > jaw_threshold else 0.0
    return {
        "jaw_open": round(jaw_open, 4),
        "jaw_threshold": jaw_threshold,
        "mouth_activity": 0.0,
        "confidence": round(confidence, 4),
    }


# Tracking (spec 03 §5).


def tracking_json(document: Mapping[str, Any]) -> str:
    """``json.dump(indent=2, ensure_ascii=False)`` as the legacy worker wrote it."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# After Effects reductions (spec 04 §1).


def reduce_tracking(document: Any) -> dict[str, Any] | None:
    """The reduced tracking document, or ``None`` when ``document`` is not a full tracking file.

    The legacy reducer overwrote such files with an empty result; here the caller simply skips them.
    ``active_speakers`` is the speaker attributed to this very face when the file carries our
    fusion fields (``speaker_label``); for a legacy file it falls back to the legacy rule (every
    speaker of the frame, from ``speaking_sources.audio``).
    """
    if not isinstance(document, dict) or not isinstance(document.get("frames"), list):
        return None
    reduced = []
    for frame in document["frames"]:
        if not isinstance(frame, dict):
            continue
        objects = []
        for obj in frame.get("tracked_objects") or []:
            if not isinstance(obj, dict):
                continue
            item: dict[str, Any] = {
                "id": obj.get("id"),
                "centroid_x": obj.get("centroid_x"),
                "source": obj.get("source"),
                "label": obj.get("label"),
                "active_speakers": _active_speakers(obj),
            }
            if obj.get("bbox_width") is not None and obj.get("bbox_height") is not None:
                item["bbox_width"] = obj["bbox_width"]
                item["bbox_height"] = obj["bbox_height"]
            objects.append(item)
        reduced.append({"frame": frame.get("frame"), "tracked_objects": objects})
    return {"frames_analysis": reduced}


def _active_speakers(obj: Mapping[str, Any]) -> list[str]:
    if "speaker_label" in obj:
        label = obj.get("speaker_label")
        return [label] if obj.get("is_speaking") and label else []
    sources = obj.get("speaking_sources")
    if isinstance(sources, dict) and isinstance(sources.get("audio"), dict):
        return list(sources["audio"].get("active_speakers") or [])
    return []


def reduce_audio(document: Any) -> dict[str, Any] | None:
    """The reduced audio document (idempotent), or ``None`` for an unexpected document."""
    if not isinstance(document, dict) or not isinstance(document.get("frames_analysis"), list):
        return None
    reduced = []
    for frame in document["frames_analysis"]:
        if not isinstance(frame, dict) or not isinstance(frame.get("audio_info"), dict):
            continue
        info = frame["audio_info"]
        reduced.append(
            {
                "frame": frame.get("frame"),
                "audio_info": {
                    "is_speech_present": info.get("is_speech_present", False),
                    "active_speaker_labels": info.get("active_speaker_labels", []),
                },
            }
        )
    return {"frames_analysis": reduced}


def reduced_json(document: Mapping[str, Any]) -> str:
    """``json.dump(indent=2)`` with ASCII escaping, as the legacy reducer wrote."""
    return json.dumps(document, indent=2)


def tracking_document(
    video_path: str,
    fusion: FusionResult,
    audio: Sequence[AudioFrame],
    *,
    fps: float = LEGACY_FPS,
    jaw_threshold: float = 0.08,
    frame_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The full ``<stem>_tracking.json`` document: legacy keys in the legacy order, then the
    fusion fields (``speaker_label``, ``source_track_id``, ``mouth_openness`` per object,
    ``speaking_sources.fusion``, and ``metadata.fusion``).

    Every box and point is in display pixels: the picture as shown, square pixels (an anamorphic
    video's stored width stretched by its sample aspect ratio), rotation applied; with
    ``frame_size`` (that picture's width and height) the metadata says so."""
    audio_by_frame = {frame.frame: frame for frame in audio}
    frames = []
    for index, faces in enumerate(fusion.frames):
        number = index + 1
        objects = []
        for face, verdict in faces:
            objects.append(
                _tracked_object(
                    face, verdict, audio_by_frame.get(number), fusion, index, jaw_threshold
                )
            )
        frames.append({"frame": number, "tracked_objects": objects})
    metadata: dict[str, Any] = {
        "video_path": video_path,
        "total_frames": len(fusion.frames),
        "fps": float(fps),
        "tracking_engine": "mediapipe_face_mesh",
        **(
            {
                "frame_width": frame_size[0],
                "frame_height": frame_size[1],
                "coordinates": "display_pixels",
            }
            if frame_size
            else {}
        ),
        "fusion": {
            "version": FUSION_VERSION,
            "method": fusion.method,
            "shots": len(fusion.shots),
            "baseline_mouth_activity": round(fusion.baseline_activity, 5),
            "speakers": {k: list(v) for k, v in sorted(fusion.speaker_faces.items())},
            "attributions": [
                {
                    "segment_id": a.shot_index + 1,
                    "speaker": a.speaker,
                    "face_id": a.face_id,
                    "confidence": a.confidence,
                    "evidence": a.evidence,
                    "speech_frames": a.speech_frames,
                    "candidates": a.candidates,
                }
                for a in fusion.attributions
            ],
        },
    }
    return {"metadata": metadata, "frames": frames}


def _tracked_object(
    face: FaceObservation,
    verdict: FaceSpeaking,
    audio: AudioFrame | None,
    fusion: FusionResult,
    frame_index: int,
    jaw_threshold: float,
) -> dict[str, Any]:
    x = round(face.x_min)
    y = round(face.y_min)
    width = max(0, round(face.x_max) - x)
    height = max(0, round(face.y_max) - y)
    visual = visual_evidence(face.jaw_open, jaw_threshold)
    visual["mouth_activity"] = round(verdict.mouth_activity, 5)
    sources: dict[str, Any] = {"audio": audio_evidence(audio), "visual": visual}
    if verdict.shot_index < len(fusion.shots):
        start, end = fusion.shots[verdict.shot_index]
        duration = end - start + 1
        sources["segment"] = {
            "segment_id": verdict.shot_index + 1,
            "frame_position": round((frame_index - start) / (duration - 1), 4)
            if duration > 1
            else 0.0,
            "segment_duration": duration,
            "is_zero_duration": duration <= 0,
        }
    sources["fusion"] = {
        "speaker": verdict.speaker,
        "confidence": verdict.confidence,
        "method": verdict.method,
    }
    return {
        "id": verdict.face_id,
        "centroid_x": round(face.centroid_x),
        "centroid_y": round(face.centroid_y),
        "bbox_xmin": x,
        "bbox_xmax": x + width,
        "source": "face_landmarker",
        "label": "face",
        "confidence": round(face.confidence, 3),
        "blendshapes": {"jawOpen": round(face.jaw_open, 4)},
        "bbox_ymin": y,
        "bbox_ymax": y + height,
        "bbox_width": width,
        "bbox_height": height,
        "is_speaking": verdict.is_speaking,
        "speaking_confidence": verdict.confidence,
        "speaking_method": verdict.method,
        "speaking_sources": sources,
        "speaker_label": verdict.speaker,
        "source_track_id": verdict.source_track_id,
        "mouth_openness": round(face.mouth_openness, 5),
    }
