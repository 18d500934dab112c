"""Fusion of face tracks, shots and speaker turns on synthetic but realistic mouth signals:
articulation moves the lips a few times a second; listening and smiling faces barely move them,
and landmark noise is added to every face."""

from __future__ import annotations

import math
import random

import pytest

from orchestrator.fusion import (
    METHOD_FUSION,
    METHOD_NO_AUDIO,
    METHOD_NO_SPEECH,
    METHOD_VISUAL_ONLY,
    FaceObservation,
    SpeakerTurn,
    fuse,
    speech_frames,
)

FPS = 25.0


def _face(track: str, x: float, openness: float) -> FaceObservation:
    return FaceObservation(track, x - 40, 100, x + 40, 200, x, 150, 0.9, openness, openness * 3)


def _talking(frame: int, rng: random.Random) -> float:
    syllables = abs(math.sin(2 * math.pi * 4.0 * frame / FPS + rng.uniform(-0.4, 0.4)))
    return 0.03 + 0.05 * syllables + rng.gauss(0, 0.002)


def _quiet(rng: random.Random, level: float = 0.02) -> float:
    return max(0.0, level + rng.gauss(0, 0.0012))


def _scene() -> tuple[list[list[FaceObservation]], list[tuple[int, int]], list[SpeakerTurn]]:
    """Shot 0 (0-99): A talks (SPEAKER_00, 0.4-3.6 s) while B listens.
    Shot 1 (100-199): an audience (C, D) while SPEAKER_00 goes on off screen.
    Shot 2 (200-299): the tracker carries A's id over the cut onto E; E (SPEAKER_00, 8-10 s) and
    F (SPEAKER_01, 10-12 s) talk in turn."""
    rng = random.Random(7)
    turns = [
        SpeakerTurn(0.4, 3.6, "SPEAKER_00"),
        SpeakerTurn(4.0, 8.0, "SPEAKER_00"),
        SpeakerTurn(8.0, 10.0, "SPEAKER_00"),
        SpeakerTurn(10.0, 12.0, "SPEAKER_01"),
    ]
    frames: list[list[FaceObservation]] = []
    for frame in range(300):
        t = frame / FPS
        if frame < 100:
            a = _talking(frame, rng) if 0.4 <= t < 3.6 else _quiet(rng, 0.025)
            frames.append([_face("obj_1", 200, a), _face("obj_2", 500, _quiet(rng))])
        elif frame < 200:
            frames.append(
                [_face("obj_3", 150, _quiet(rng, 0.04)), _face("obj_4", 350, _quiet(rng, 0.03))]
            )
        else:
            e = _talking(frame, rng) if t < 10 else _quiet(rng)
            f = _talking(frame, rng) if t >= 10 else _quiet(rng)
            frames.append([_face("obj_1", 210, e), _face("obj_5", 450, f)])
    return frames, [(0, 99), (100, 199), (200, 299)], turns


def test_speakers_go_to_the_faces_that_talk_and_to_nobody_off_screen() -> None:
    frames, shots, turns = _scene()
    result = fuse(frames, shots, turns, fps=FPS)

    by_unit = {(a.shot_index, a.speaker): a for a in result.attributions}
    ids = {(f.shot_index, f.source_track_id): f.face_id for row in result.frames for _, f in row}
    assert by_unit[(0, "SPEAKER_00")].face_id == ids[(0, "obj_1")]
    assert by_unit[(1, "SPEAKER_00")].face_id is None
    assert by_unit[(1, "SPEAKER_00")].candidates == 2
    assert by_unit[(2, "SPEAKER_00")].face_id == ids[(2, "obj_1")]
    assert by_unit[(2, "SPEAKER_01")].face_id == ids[(2, "obj_5")]
    # The id the tracker carried over the cut is split into two faces.
    assert ids[(0, "obj_1")] != ids[(2, "obj_1")]
    assert len(set(ids.values())) == 6

    speaking = {
        (i, f.face_id) for i, row in enumerate(result.frames) for _, f in row if f.is_speaking
    }
    heard = speech_frames(turns, len(frames), FPS)  # what the audio JSON says per frame
    legacy_rule = {
        (i, f.face_id) for i, row in enumerate(result.frames) for _, f in row if heard[i]
    }
    assert speaking < legacy_rule
    assert not any(100 <= i < 200 for i, _ in speaking)  # the audience never "speaks"
    assert not any(face == ids[(0, "obj_2")] for _, face in speaking)  # nor the listener
    frame_150 = dict((f.face_id, f) for _, f in result.frames[150])
    assert all(not f.is_speaking and f.method == METHOD_FUSION for f in frame_150.values())
    talker = dict((f.face_id, f) for _, f in result.frames[50])[ids[(0, "obj_1")]]
    assert talker.is_speaking and talker.speaker == "SPEAKER_00" and talker.confidence >= 0.5
    silent = result.frames[2][0][1]
    assert (silent.is_speaking, silent.method, silent.speaker) == (False, METHOD_NO_SPEECH, None)
    assert result.speaker_faces == {
        "SPEAKER_00": [ids[(0, "obj_1")], ids[(2, "obj_1")]],
        "SPEAKER_01": [ids[(2, "obj_5")]],
    }


def test_frames_keep_every_face_sorted_by_x() -> None:
    frames, shots, turns = _scene()
    result = fuse(frames, shots, turns, fps=FPS)
    assert len(result.frames) == len(frames)
    for row, faces in zip(result.frames, frames, strict=True):
        assert sorted(f.track_id for f in faces) == sorted(face.track_id for face, _ in row)
        xs = [face.centroid_x for face, _ in row]
        assert xs == sorted(xs)


def test_without_audio_nobody_speaks() -> None:
    frames, shots, turns = _scene()
    result = fuse(frames, shots, turns, fps=FPS, has_audio=False)
    verdicts = [f for row in result.frames for _, f in row]
    assert verdicts and all(not f.is_speaking and f.method == METHOD_NO_AUDIO for f in verdicts)
    assert result.attributions == []


def test_a_song_without_speech_goes_to_the_face_that_sings_while_it_sings() -> None:
    """Audio but no diarized speech (a music video): shot 0 shows a singer (singing for 2 s,
    then an instrumental second) beside a still face; shot 1 shows only still faces."""
    rng = random.Random(11)
    frames = []
    for frame in range(200):
        if frame < 100:
            singer = _talking(frame, rng) if frame < 50 else _quiet(rng, 0.03)
            frames.append([_face("obj_1", 200, singer), _face("obj_2", 500, _quiet(rng))])
        else:
            frames.append([_face("obj_3", 300, _quiet(rng, 0.03))])
    result = fuse(frames, [(0, 99), (100, 199)], [], fps=FPS, has_audio=True)

    verdicts = [(i, f) for i, row in enumerate(result.frames) for _, f in row]
    assert all(f.method == METHOD_VISUAL_ONLY and f.speaker is None for _, f in verdicts)
    speaking = {i for i, f in verdicts if f.is_speaking}
    assert {f.source_track_id for _, f in verdicts if f.is_speaking} == {"obj_1"}
    assert set(range(5, 40)) <= speaking  # singing
    assert not speaking & set(range(70, 200))  # instrumental, then nobody sings
    assert [a.face_id is not None for a in result.attributions] == [True, False]
    assert result.speaker_faces == {}


def test_a_single_still_face_is_not_given_the_speaker() -> None:
    rng = random.Random(3)
    frames = [[_face("obj_1", 300, _quiet(rng))] for _ in range(100)]
    result = fuse(frames, [(0, 99)], [SpeakerTurn(0.0, 4.0, "SPEAKER_00")], fps=FPS)
    assert [a.face_id for a in result.attributions] == [None]


def test_bad_hyper_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        fuse([], [], [], min_ratio=0.5)
    with pytest.raises(ValueError):
        fuse([], [], [], fps=0)


def test_speech_frames_follow_the_legacy_audio_mapping() -> None:
    from orchestrator import legacy

    turns = [SpeakerTurn(0.0, 0.1, "A"), SpeakerTurn(0.2, 0.31, "B"), SpeakerTurn(0.3, 9.0, "C")]
    ours = speech_frames(turns, 10, 25.0)
    theirs = legacy.audio_frames([(t.start_s, t.end_s, t.speaker) for t in turns], 10)
    assert [sorted(s) for s in ours] == [list(f.labels) for f in theirs]
