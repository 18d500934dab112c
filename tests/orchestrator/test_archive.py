"""The SHA-256 results archive: layout, metadata, history, cache lookups, legacy layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from orchestrator.archive import ResultsArchive, check_project_name
from orchestrator.outputs import leftover_temp_files, sha256_file, write_atomic
from services.common.errors import InvalidArgument


def _results(folder: Path, tag: str) -> dict[str, Path]:
    return {
        "scenes": write_atomic(folder / "s.csv", f"No,Timecode In\r\n{tag}\r\n"),
        "audio": write_atomic(folder / "a.json", json.dumps({"tag": tag})),
        "tracking": write_atomic(folder / "t.json", json.dumps({"frames": [], "tag": tag})),
    }


def test_sha256_of_a_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # more than one 1 MiB chunk
    path = write_atomic(tmp_path / "v.mp4", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_store_writes_the_layout_and_metadata(tmp_path: Path) -> None:
    archive = ResultsArchive(tmp_path / "archives")
    sha = "a" * 64
    entry = archive.store(
        "Proj",
        sha,
        video_path="Proj/clip.mp4",
        video_stem="clip",
        files=_results(tmp_path, "1"),
        options_key="k1",
        extra={"job_id": "j"},
    )
    assert entry == tmp_path / "archives" / "Proj" / sha
    assert sorted(p.name for p in entry.iterdir()) == [
        "clip_audio.json",
        "clip_scenes.csv",
        "clip_tracking.json",
        "metadata.json",
    ]
    metadata = json.loads((entry / "metadata.json").read_text())
    assert list(metadata)[:5] == ["video_path", "video_stem", "video_hash", "created_at", "copied"]
    assert metadata["video_hash"] == sha and metadata["options_key"] == "k1"
    assert metadata["copied"]["scenes"] == str(entry / "clip_scenes.csv")
    assert leftover_temp_files(tmp_path) == []


def test_changed_results_keep_the_previous_ones_in_history(tmp_path: Path) -> None:
    archive = ResultsArchive(tmp_path / "archives")
    sha = "b" * 64
    first = tmp_path / "first"
    second = tmp_path / "second"
    archive.store(
        "P", sha, video_path="P/v.mp4", video_stem="v", files=_results(first, "1"), options_key="k1"
    )
    entry = archive.store(
        "P",
        sha,
        video_path="P/v.mp4",
        video_stem="v",
        files=_results(second, "1"),
        options_key="k1",
    )
    assert not (entry / "history").exists()  # same bytes: nothing to keep
    archive.store(
        "P",
        sha,
        video_path="P/v.mp4",
        video_stem="v",
        files=_results(second, "2"),
        options_key="k2",
    )
    kept = list((entry / "history").iterdir())
    assert len(kept) == 1
    assert json.loads((kept[0] / "v_audio.json").read_text()) == {"tag": "1"}
    assert json.loads((entry / "v_audio.json").read_text()) == {"tag": "2"}


def test_cache_lookup_needs_the_same_bytes_and_options(tmp_path: Path) -> None:
    archive = ResultsArchive(tmp_path / "archives")
    sha = "c" * 64
    assert archive.find_cached(sha, "k1") is None
    archive.store(
        "Other",
        sha,
        video_path="Other/x.mp4",
        video_stem="x",
        files=_results(tmp_path, "1"),
        options_key="k1",
    )
    hit = archive.find_cached(sha, "k1")
    assert hit is not None and hit.complete and hit.directory.parent.name == "Other"
    assert set(hit.files) == {"scenes", "audio", "tracking"}
    assert archive.find_cached(sha, "k2") is None
    assert archive.find_cached("d" * 64, "k1") is None
    (hit.directory / "x_tracking.json").unlink()
    assert archive.find_cached(sha, "k1") is None  # incomplete entries are not reused


def test_legacy_timestamped_layout_is_read_newest_first(tmp_path: Path) -> None:
    root = tmp_path / "archives"
    video = write_atomic(tmp_path / "proj" / "clip.mp4", b"video bytes")
    sha = sha256_file(video)
    old = root / "Proj 2024-01-01_10-00-00" / sha
    new = root / "Proj 2025-06-01_10-00-00" / sha
    other = root / "Proj B 2026-01-01_10-00-00" / sha  # another project sharing a prefix
    for folder, tag in ((old, "old"), (new, "new"), (other, "other")):
        write_atomic(folder / "clip_audio.json", tag)
    write_atomic(old / "clip.csv", "legacy scenes name")
    archive = ResultsArchive(root)
    assert [p.name for p in archive.project_dirs("Proj")] == [
        "Proj 2025-06-01_10-00-00",
        "Proj 2024-01-01_10-00-00",
    ]
    assert archive.find_analysis_file("Proj", video, "audio").read_text() == "new"
    assert archive.find_analysis_file("Proj", video, "scenes").name == "clip.csv"
    assert archive.find_analysis_file("Proj", video, "tracking") is None
    assert archive.project_has_analysis("Proj") == (False, True, False)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "..\\x", ".hidden", "a\x00"])
def test_project_names_that_escape_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_project_name(name)
