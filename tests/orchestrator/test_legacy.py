"""The legacy file formats, checked against the examples and rules of the specs."""

from __future__ import annotations

import json

import pytest
from scenedetect import FrameTimecode

from orchestrator import legacy
from orchestrator.fusion import FaceObservation, SpeakerTurn, fuse


@pytest.mark.parametrize("frame", [0, 1, 13, 39, 40, 99, 1499, 89_999, 1_234_567])
def test_timecode_matches_pyscenedetect(frame: int) -> None:
    assert legacy.timecode(frame) == FrameTimecode(frame, 25.0).get_timecode()


def test_scenes_csv_is_the_spec_example_byte_for_byte() -> None:
    text = legacy.scenes_csv([(0, 39), (40, 99)])
    assert text == (
        "No,Timecode In,Timecode Out,Frame In,Frame Out\r\n"
        "1,00:00:00.000,00:00:01.560,1,40\r\n"
        "2,00:00:01.600,00:00:03.960,41,100\r\n"
    )
    assert legacy.parse_scenes_csv(text) == [(0, 39), (40, 99)]


def test_audio_json_is_the_spec_example() -> None:
    frames = [legacy.AudioFrame(1, ()), legacy.AudioFrame(2, ("SPEAKER_00", "SPEAKER_01"))]
    text = legacy.audio_json("clip.mp4", 2, frames)
    expected = (
        '{\n  "video_filename": "clip.mp4",\n  "total_frames": 2,\n  "fps": 25,\n'
        '  "frames_analysis": [\n'
        '{"frame": 1, "audio_info": {"is_speech_present": false, '
        '"num_distinct_speakers_audio": 0, "active_speaker_labels": [], "timecode_sec": 0.0}},\n'
        '{"frame": 2, "audio_info": {"is_speech_present": true, '
        '"num_distinct_speakers_audio": 2, "active_speaker_labels": ["SPEAKER_00", '
        '"SPEAKER_01"], "timecode_sec": 0.04}}\n  ]\n}'
    )
    assert text.rstrip("\n") == expected
    assert list(json.loads(text)) == ["video_filename", "total_frames", "fps", "frames_analysis"]


def test_audio_frames_use_the_legacy_mapping() -> None:
    # A segment covers frames max(1, int(start*25)) .. int(end*25), 1-based; past the end dropped.
    frames = legacy.audio_frames(
        [(0.0, 0.1, "SPEAKER_01"), (0.2, 0.31, "SPEAKER_00"), (0.3, 9.0, "SPEAKER_02")], 10
    )
    labels = {f.frame: f.labels for f in frames}
    assert len(frames) == 10 and [f.frame for f in frames] == list(range(1, 11))
    assert labels[1] == labels[2] == ("SPEAKER_01",)
    assert labels[3] == labels[4] == ()
    assert labels[5] == labels[6] == ("SPEAKER_00",)
    assert labels[7] == ("SPEAKER_00", "SPEAKER_02")
    assert labels[10] == ("SPEAKER_02",)
    assert legacy.total_frames_for(212.091) == 5302


def test_audio_json_escapes_the_file_name() -> None:
    # The legacy writer inserted the name raw and produced invalid JSON for such names.
    text = legacy.audio_json('a "quoted" \\ name é.mp4', 1, [legacy.AudioFrame(1, ())])
    assert json.loads(text)["video_filename"] == 'a "quoted" \\ name é.mp4'
    name, total, frames = legacy.parse_audio_json(text)
    assert (name, total, frames) == ('a "quoted" \\ name é.mp4', 1, [legacy.AudioFrame(1, ())])


def _tracking_document() -> dict:
    face = FaceObservation("obj_7", 100.4, 50.0, 180.6, 150.0, 140.5, 100.0, 0.91, 0.05, 0.3)
    frames = [[face], [], [face]]
    result = fuse(frames, [(0, 2)], [SpeakerTurn(0.0, 0.12, "SPEAKER_00")])
    audio = legacy.audio_frames([(0.0, 0.12, "SPEAKER_00")], 3)
    return legacy.tracking_document("proj/clip.mp4", result, audio)


def test_tracking_document_keeps_legacy_keys_in_order() -> None:
    document = json.loads(legacy.tracking_json(_tracking_document()))
    assert list(document) == ["metadata", "frames"]
    assert list(document["metadata"])[:3] == ["video_path", "total_frames", "fps"]
    assert document["metadata"]["total_frames"] == 3
    assert [f["frame"] for f in document["frames"]] == [1, 2, 3]
    obj = document["frames"][0]["tracked_objects"][0]
    assert tuple(obj)[: len(legacy.TRACKED_OBJECT_KEYS)] == legacy.TRACKED_OBJECT_KEYS
    assert obj["id"] == "obj_1" and obj["source_track_id"] == "obj_7"
    assert (obj["bbox_xmin"], obj["bbox_xmax"], obj["bbox_width"]) == (100, 181, 81)
    assert (obj["bbox_ymin"], obj["bbox_ymax"], obj["bbox_height"]) == (50, 150, 100)
    assert obj["source"] == "face_landmarker" and obj["label"] == "face"
    assert set(obj["speaking_sources"]) >= {"audio", "visual", "segment", "fusion"}
    assert obj["speaking_sources"]["audio"]["active_speakers"] == ["SPEAKER_00"]
    assert document["frames"][1]["tracked_objects"] == []


def test_tracking_document_says_its_boxes_are_display_pixels() -> None:
    face = FaceObservation("obj_1", 10.0, 20.0, 60.0, 90.0, 35.0, 55.0, 0.9, 0.05, 0.3)
    result = fuse([[face]], [(0, 0)], [])
    document = legacy.tracking_document(
        "proj/pal.mp4", result, legacy.audio_frames([], 1), frame_size=(1024, 576)
    )
    metadata = json.loads(legacy.tracking_json(document))["metadata"]
    assert (metadata["frame_width"], metadata["frame_height"]) == (1024, 576)
    assert metadata["coordinates"] == "display_pixels"
    assert "frame_width" not in _tracking_document()["metadata"]  # unknown size: not claimed


def test_reduce_tracking_keeps_the_after_effects_keys() -> None:
    reduced = legacy.reduce_tracking(_tracking_document())
    assert reduced is not None and list(reduced) == ["frames_analysis"]
    obj = reduced["frames_analysis"][0]["tracked_objects"][0]
    assert list(obj) == [
        "id",
        "centroid_x",
        "source",
        "label",
        "active_speakers",
        "bbox_width",
        "bbox_height",
    ]
    # One still face during speech is not given the speaker (the legacy rule would have).
    assert obj["active_speakers"] == []
    assert legacy.reduced_json(reduced) == json.dumps(reduced, indent=2)


def test_reduce_tracking_of_a_legacy_file_uses_the_legacy_rule() -> None:
    legacy_obj = {
        "id": "obj_1",
        "centroid_x": 10,
        "source": "face_landmarker",
        "label": "face",
        "bbox_width": None,
        "bbox_height": 5,
        "speaking_sources": {"audio": {"active_speakers": ["SPEAKER_03"]}},
    }
    reduced = legacy.reduce_tracking(
        {"frames": [{"frame": 1, "tracked_objects": [legacy_obj]}, {"frame": 2}]}
    )
    assert reduced == {
        "frames_analysis": [
            {
                "frame": 1,
                "tracked_objects": [
                    {
                        "id": "obj_1",
                        "centroid_x": 10,
                        "source": "face_landmarker",
                        "label": "face",
                        "active_speakers": ["SPEAKER_03"],
                    }
                ],
            },
            {"frame": 2, "tracked_objects": []},
        ]
    }


@pytest.mark.parametrize("document", [[], {"frames_analysis": []}, {"frames": None}, "x"])
def test_reduce_tracking_refuses_unexpected_documents(document: object) -> None:
    # The legacy reducer overwrote such files with an empty result; here nothing is produced.
    assert legacy.reduce_tracking(document) is None


def test_reduce_audio_is_idempotent_and_drops_frames_without_info() -> None:
    full = json.loads(
        legacy.audio_json(
            "c.mp4", 2, [legacy.AudioFrame(1, ()), legacy.AudioFrame(2, ("SPEAKER_00",))]
        )
    )
    full["frames_analysis"].append({"frame": 3, "audio_info": None})
    reduced = legacy.reduce_audio(full)
    assert reduced == {
        "frames_analysis": [
            {"frame": 1, "audio_info": {"is_speech_present": False, "active_speaker_labels": []}},
            {
                "frame": 2,
                "audio_info": {"is_speech_present": True, "active_speaker_labels": ["SPEAKER_00"]},
            },
        ]
    }
    assert legacy.reduce_audio(reduced) == reduced
    assert legacy.reduce_audio({"frames": []}) is None
