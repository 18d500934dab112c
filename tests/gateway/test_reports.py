"""The HTML reports: figures from real-format output files (written by the orchestrator's own
writers), the legacy contents and markers, escaping, and the routes through the gateway."""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.reports import ReportError, Reports, monthly_projects, read_audio, video_report
from protos.videoanalysis.v1 import orchestrator_pb2
from services.common.media import MediaRoot

sys.path.insert(0, str(Path(__file__).parent))
from outputs import FRAMES, write_outputs


def video(index: int, path: str, output_dir: str, **fields: Any) -> dict[str, Any]:
    steps = [
        {
            "name": "finalize",
            "state": "succeeded",
            "attempts": 1,
            "error": None,
            "started_at": "2026-11-30T10:00:00.000Z",
            "finished_at": fields.pop("finished_at", "2026-11-30T10:00:05.000Z"),
            "progress": {"done": 1, "total": 1, "unit": "", "stage": "", "message": ""},
            "eta_s": None,
        }
    ]
    base = {
        "index": index,
        "path": path,
        "sha256": f"{index:064x}",
        "state": "succeeded",
        "error": None,
        "output_dir": output_dir,
        "from_cache": False,
        "normalized_path": None,
        "steps": steps,
    }
    return {**base, **fields}


def job(job_id: str, videos: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    base = {
        "job_id": job_id,
        "state": "completed",
        "label": "",
        "inputs": [v["path"] for v in videos],
        "options": {},
        "output_dir": "output",
        "error": None,
        "errors": [],
        "created_at": "2026-11-30T09:59:00.000Z",
        "updated_at": "2026-11-30T10:00:05.000Z",
        "finished_at": "2026-11-30T10:00:05.000Z",
        "videos": videos,
    }
    return {**base, **fields}


@pytest.fixture
def media(tmp_path: Path) -> MediaRoot:
    return MediaRoot(tmp_path)


def analysed(media: MediaRoot, project: str, name: str, index: int = 0, **fields: Any) -> dict:
    stem = name.rsplit(".", 1)[0]
    folder = media.root / "output" / project
    folder.mkdir(parents=True, exist_ok=True)
    path = f"in/{project}/{name}"
    write_outputs(folder, path, stem)
    return video(index, path, f"output/{project}", **fields)


def cards(page: str) -> dict[str, str]:
    """The report's cards as label -> value."""
    found = re.findall(r'<div class="label">([^<]+)</div><div class="value">([^<]+)</div>', page)
    return {html.unescape(k): html.unescape(v) for k, v in found}


def test_video_report_has_the_legacy_sections_and_figures(media: MediaRoot) -> None:
    clip = analysed(media, "Projet A", "clip.mp4")
    page = Reports(media).video(job("j1", [clip]), 0)
    assert "<title>Rapport d'analyse - clip.mp4</title>" in html.unescape(page)
    for heading in ("Métadonnées", "Scènes", "Audio", "Visages", "Étapes"):
        assert f">{heading}</h2>" in page
    figures = cards(page)
    # Two shots of 40 and 60 frames at 25 fps.
    assert figures["Nombre de scènes"] == "2"
    assert figures["Durée moyenne"] == "2.00 s"
    assert figures["Plus courte"] == "1.60 s"
    assert figures["Plus longue"] == "2.40 s"
    assert figures["Frames"] == str(FRAMES)
    assert figures["FPS"] == "25.00"
    # SPEAKER_00 speaks 1.8-3.9 s: frames 45..97 in the legacy mapping, 1.76 s to 3.88 s.
    assert figures["Segments de parole"] == "1"
    assert figures["Locuteurs"] == "1"
    assert figures["Couverture parole"] == "53.0%"
    # Two faces on every frame; the talking one is attributed to SPEAKER_00.
    assert figures["Visages max. par frame"] == "2"
    assert figures["Frames avec visages"] == str(FRAMES)
    assert figures["Couverture visages"] == "100.0%"
    assert 0 < int(figures["Frames avec parole"]) < FRAMES
    assert "SPEAKER_00" in page
    assert "📦 Données archivées" not in page


def test_cached_video_carries_the_archive_badge(media: MediaRoot) -> None:
    clip = analysed(media, "p", "clip.mp4", from_cache=True)
    page = Reports(media).video(job("j1", [clip]), 0)
    # The header and each section carry the badge.
    assert page.count("📦 Données archivées") == 5


def test_names_are_escaped(media: MediaRoot) -> None:
    name = '<img src=x onerror="alert(1)">.mp4'
    clip = analysed(media, "p", name)
    reports = Reports(media)
    for page in (
        reports.video(job("j1", [clip], label="<b>x</b>"), 0),
        reports.project("p", [job("j1", [clip])]),
        reports.monthly("2026-11", [job("j1", [clip])]),
    ):
        assert "<img" not in page
        assert "&lt;img src=x onerror=" in page


def test_unknown_video_and_missing_files(media: MediaRoot) -> None:
    reports = Reports(media)
    with pytest.raises(ReportError) as caught:
        reports.video(job("j1", []), 3)
    assert caught.value.status == 404
    # A failed video without outputs still gets a report that says so.
    failed = video(0, "in/p/broken.mp4", "output/p", state="failed", error="undecodable")
    page = reports.video(job("j2", [failed], state="failed"), 0)
    assert "Statut : Erreur" in page and "undecodable" in page
    assert ">Scènes</h2>" not in page


def test_outputs_of_two_videos_sharing_a_stem_are_told_apart(media: MediaRoot) -> None:
    folder = media.root / "output" / "p"
    folder.mkdir(parents=True)
    write_outputs(folder, "in/a/clip.mp4", "clip")
    write_outputs(folder, "in/b/clip.mp4", "clip_1")
    (folder / "clip_1_scenes.csv").write_text("No,Timecode In,Timecode Out,Frame In,Frame Out\n")
    first = video_report(media, {}, video(0, "in/a/clip.mp4", "output/p"))
    second = video_report(media, {}, video(1, "in/b/clip.mp4", "output/p"))
    assert first.statistics["scenes"]["total_count"] == 2
    assert second.statistics["scenes"]["total_count"] == 0


def test_output_folder_outside_the_media_root_is_not_read(media: MediaRoot) -> None:
    report = video_report(media, {}, video(0, "x.mp4", "../../etc"))
    assert not report.ok and not report.scenes["available"]


def test_project_report_consolidates_and_marks_errors(media: MediaRoot) -> None:
    one = analysed(media, "Projet A", "one.mp4", index=0)
    two = analysed(media, "Projet A", "two.mp4", index=1)
    broken = video(2, "in/Projet A/three.mp4", "output/Projet A", state="failed", error="x")
    other = analysed(media, "Projet B", "four.mp4")
    jobs = [job("j1", [one, two, broken]), job("j2", [other])]
    page = Reports(media).project("Projet A", jobs)
    figures = cards(page)
    assert figures["Vidéos"] == "3"
    assert figures["Scènes"] == "4"
    assert figures["Frames"] == str(2 * FRAMES)
    assert figures["Durée totale"] == "00:00:08"
    assert figures["Locuteurs uniques"] == "1"
    assert figures["Couverture visages"] == "100.0%"
    rows = re.findall(r"<tr>\s*<td><a href=\"([^\"]+)\">([^<]+)</a>", page)
    assert [name for _, name in rows] == ["one.mp4", "three.mp4", "two.mp4"]
    assert rows[0][0] == "/reports/jobs/j1/videos/0"
    assert page.count(">OK</span>") == 2 and page.count(">Erreur</span>") == 1
    assert "four.mp4" not in page
    with pytest.raises(ReportError) as caught:
        Reports(media).project("Projet C", jobs)
    assert caught.value.status == 404


def test_project_report_keeps_the_newest_analysis_of_a_video(media: MediaRoot) -> None:
    old = analysed(media, "p", "clip.mp4")
    new = dict(old, state="failed")
    jobs = [job("new", [new], created_at="2026-12-01T00:00:00Z"), job("old", [old])]
    page = Reports(media).project("p", jobs)
    assert page.count(">Erreur</span>") == 1 and ">OK</span>" not in page


def test_monthly_report_keeps_the_legacy_markers(media: MediaRoot) -> None:
    november = [
        analysed(media, "Projet A", "One.mp4", index=0),
        analysed(media, "Projet A", "m6+.mov", index=1),  # excluded by name
        video(2, "in/Projet A/bad.mp4", "output/Projet A", state="failed"),
        analysed(media, "Projet B", "two.mp4", index=3),
    ]
    december = analysed(media, "Projet C", "late.mp4", finished_at="2026-12-01T00:00:01Z")
    jobs = [job("j1", november), job("j2", [december])]
    page = Reports(media).monthly("2026-11", jobs)
    assert "<title>Rapport Mensuel Archives - 2026-11</title>" in page
    assert re.search(r"Build [0-9a-f]{12}", page)
    assert "<h2>Répartition des Durées par Projet</h2>" in page
    assert "<strong>Projet A</strong> :" in page
    assert "moins de 2 minutes : 2" in page  # one.mp4 and the failed bad.mp4 (0 s)
    assert "entre 2 et 5 minutes : 0" in page and "plus de 5 minutes : 0" in page
    names = re.findall(r'<div class="video-name">([^<]+)</div>', page)
    assert sorted(names) == ["bad.mp4", "one.mp4", "two.mp4"]
    assert "late.mp4" not in page and "Projet C" not in page
    assert "(1 en erreur)" in page
    with pytest.raises(ReportError) as caught:
        Reports(media).monthly("2026-10", jobs)
    assert caught.value.status == 404


@pytest.mark.parametrize("month", ["abcd-ef", "2026-13", "2026-1", "2026/11", "", "2026-11-01"])
def test_monthly_report_refuses_bad_months(media: MediaRoot, month: str) -> None:
    with pytest.raises(ReportError) as caught:
        Reports(media).monthly(month, [])
    assert caught.value.status == 400


def test_monthly_names_are_normalised_and_deduplicated(media: MediaRoot) -> None:
    clip = analysed(media, "p", "clip.mp4")
    reports = [
        ("2026-11-02T00:00:00Z", video_report(media, {}, clip)),
        ("2026-11-03T00:00:00Z", video_report(media, {}, dict(clip, path="in/x/CLIP.mp4"))),
    ]
    (project,) = monthly_projects("2026-11", reports)
    assert project["duration_names"]["lt_2m"] == ["clip.mp4"]
    assert project["video_count"] == 1
    assert project["archive_timestamp"] == "2026-11-03T00:00:00Z"


def test_audio_segments_follow_the_legacy_viewer(tmp_path: Path) -> None:
    frames = []
    for frame in range(1, 11):
        labels = ["S1"] if frame in (2, 3, 4, 8) else []
        labels += ["S2"] if frame == 4 else []
        info = {
            "is_speech_present": bool(labels),
            "num_distinct_speakers_audio": len(labels),
            "active_speaker_labels": labels,
            "timecode_sec": (frame - 1) / 25,
        }
        frames.append({"frame": frame, "audio_info": info})
    path = tmp_path / "a_audio.json"
    document = {"video_filename": "a.mp4", "total_frames": 10, "fps": 25}
    path.write_text(json.dumps({**document, "frames_analysis": frames}))
    audio = read_audio(path)
    assert [(s["start_frame"], s["end_frame"], s["speakers"]) for s in audio["segments"]] == [
        (2, 4, ["S1", "S2"]),
        (8, 8, ["S1"]),
    ]
    assert audio["segments"][0]["end_time"] == pytest.approx(4 / 25)
    assert audio["speakers"] == ["S1", "S2"]


# The routes, through a real gateway in front of the fake orchestrator.


async def test_report_routes(gateway: Any, fake: Any, media_root: Path, auth: dict) -> None:
    job = fake.add_job(["in/Projet A/clip.mp4"], output_dir="output")
    video = job.videos[0]
    video.state = orchestrator_pb2.STEP_STATE_SUCCEEDED
    video.steps[-1].state = orchestrator_pb2.STEP_STATE_SUCCEEDED
    video.steps[-1].finished_at.GetCurrentTime()
    write_outputs(media_root / video.output_dir, video.path, "clip")
    project = video.output_dir.rsplit("/", 1)[-1]
    month = job.created_at.ToDatetime().strftime("%Y-%m")
    client = await gateway()

    response = await client.get(f"/reports/jobs/{job.job_id}/videos/0")
    assert response.status == 200 and response.content_type == "text/html"
    assert "Nombre de scènes" in await response.text()
    response = await client.get(f"/reports/projects/{project}")
    assert response.status == 200 and "clip.mp4" in await response.text()
    response = await client.get(f"/reports/monthly/{month}")
    page = await response.text()
    assert response.status == 200 and f"Rapport Mensuel Archives - {month}" in page

    for path, status in [
        ("/reports/jobs/nope/videos/0", 404),
        (f"/reports/jobs/{job.job_id}/videos/7", 404),
        (f"/reports/jobs/{job.job_id}/videos/x", 400),
        ("/reports/projects/unknown%20project", 404),
        ("/reports/monthly/2026-13", 400),
        ("/reports/monthly/1999-01", 404),
    ]:
        response = await client.get(path)
        assert response.status == status, path
        assert response.content_type == "text/html"
        assert "Rapport indisponible" in await response.text()

    # The user's input comes back escaped.
    response = await client.get("/reports/projects/%3Cscript%3Ex%3C%2Fscript%3E")
    assert response.status == 404
    assert "<script>" not in await response.text()

    # With auth_reads the reports need the token like every other read.
    protected = await gateway(auth_reads=True)
    assert (await protected.get(f"/reports/projects/{project}")).status == 401
    response = await protected.get(f"/reports/projects/{project}", headers=auth)
    assert response.status == 200


async def test_report_without_orchestrator(gateway: Any, fake: Any) -> None:
    client = await gateway()
    await fake.stop()
    response = await client.get("/reports/monthly/2026-11")
    assert response.status == 503 and "Rapport indisponible" in await response.text()
