"""REST routes against the fake orchestrator: jobs, logs, per-video results written by the
orchestrator's own writers, media with Range, thumbnails by ffmpeg, artifacts and the archive."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_orchestrator import FakeOrchestrator
from outputs import FRAMES, SHOTS, write_outputs
from synthetic import make_video

from protos.videoanalysis.v1 import orchestrator_pb2


@pytest.fixture
def analysed(fake: FakeOrchestrator, media_root: Path) -> orchestrator_pb2.Job:
    """A completed job of one real video whose outputs and archive folder exist."""
    make_video(media_root / "clips" / "talk.mp4")
    job = fake.add_job(["clips/talk.mp4"], label="talk", state=orchestrator_pb2.JOB_STATE_COMPLETED)
    video = job.videos[0]
    video.output_dir = "output/clips"
    video.sha256 = "ab" * 32
    write_outputs(media_root / "output" / "clips", "clips/talk.mp4", "talk")
    archive = media_root / "archives" / "clips" / video.sha256
    archive.mkdir(parents=True)
    (archive / "metadata.json").write_text(json.dumps({"sha256": video.sha256}))
    (archive / "talk_scenes.csv").write_bytes(
        (media_root / "output" / "clips" / "talk_scenes.csv").read_bytes()
    )
    return job


async def test_job_json_shape_and_listing(gateway, fake: FakeOrchestrator, analysed) -> None:
    client = await gateway()
    queued = fake.add_job(["clips/other.mp4"])
    response = await client.get(f"/api/v1/jobs/{analysed.job_id}")
    assert response.status == 200
    job = await response.json()
    assert job["state"] == "completed"
    assert job["label"] == "talk"
    assert job["inputs"] == ["clips/talk.mp4"]
    assert job["created_at"].endswith("Z") and job["finished_at"] is None
    video = job["videos"][0]
    assert video["index"] == 0 and video["sha256"] == "ab" * 32
    assert video["normalized_path"] is None
    assert [s["name"] for s in video["steps"]][:2] == ["extract", "normalize"]
    assert video["steps"][0]["progress"] == {
        "done": 0, "total": 0, "unit": "", "stage": "", "message": ""
    }  # fmt: skip

    listed = await (await client.get("/api/v1/jobs?state=queued")).json()
    assert [j["job_id"] for j in listed["jobs"]] == [queued.job_id]
    both = await (await client.get("/api/v1/jobs?limit=10")).json()
    assert {j["job_id"] for j in both["jobs"]} == {queued.job_id, analysed.job_id}
    for bad in ("state=done", "limit=0", "limit=x"):
        response = await client.get(f"/api/v1/jobs?{bad}")
        assert response.status == 400
        assert (await response.json())["error"]["status"] == 400
    assert (await client.get("/api/v1/jobs/nope")).status == 404
    assert (await client.get("/api/v1/jobs/../../etc")).status == 404


async def test_submit_by_path_cancel_and_logs(
    gateway, fake: FakeOrchestrator, media_root: Path, auth: dict[str, str]
) -> None:
    client = await gateway()
    make_video(media_root / "in" / "a.mp4", 0.5)
    body = {"inputs": ["in/a.mp4"], "label": "mine", "options": {"max_faces": 3}}
    response = await client.post("/api/v1/jobs", json=body, headers=auth)
    assert response.status == 201
    job = await response.json()
    assert job["label"] == "mine" and job["options"] == {"max_faces": 3}
    assert fake.jobs[job["job_id"]].options.max_faces == 3

    for bad, status in (
        ({"inputs": ["../etc/passwd"]}, 400),
        ({"inputs": ["/etc/passwd"]}, 400),
        ({"inputs": ["in/missing.mp4"]}, 404),
        ({"inputs": []}, 400),
        ({"inputs": ["in/a.mp4"], "options": {"max_faces": "many"}}, 400),
        ({"inputs": ["in/a.mp4"], "options": {"nope": 1}}, 400),
        ({"inputs": ["in/a.mp4"], "label": 3}, 400),
        ([1, 2], 400),
    ):
        response = await client.post("/api/v1/jobs", json=bad, headers=auth)
        assert response.status == status, bad
        assert "message" in (await response.json())["error"]
    response = await client.post(
        "/api/v1/jobs", data="not json", headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status == 400
    response = await client.post("/api/v1/jobs", data="x", headers=auth)
    assert response.status == 415

    job_id = job["job_id"]
    first = fake.emit(job_id, log=orchestrator_pb2.LogLine(severity="INFO", message="one")).sequence
    fake.emit(job_id, log=orchestrator_pb2.LogLine(severity="WARNING", message="two", video="v"))
    logs = await (await client.get(f"/api/v1/jobs/{job_id}/logs")).json()
    assert [(e["log"]["severity"], e["log"]["message"]) for e in logs["lines"]] == [
        ("INFO", "one"),
        ("WARNING", "two"),
    ]
    after = await (await client.get(f"/api/v1/jobs/{job_id}/logs?after={first}")).json()
    assert [e["log"]["message"] for e in after["lines"]] == ["two"]

    cancelled = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth)
    assert (await cancelled.json())["state"] == "cancelled"
    missing = await client.post("/api/v1/jobs/nope/cancel", headers=auth)
    assert missing.status == 404


async def test_results_of_a_video(gateway, analysed) -> None:
    client = await gateway()
    base = f"/api/v1/jobs/{analysed.job_id}/videos/0"
    scenes = await (await client.get(f"{base}/scenes")).json()
    assert scenes["fps"] == 25
    assert [(s["frame_in"], s["frame_out"]) for s in scenes["shots"]] == [
        (a + 1, b + 1) for a, b in SHOTS
    ]
    assert scenes["shots"][0]["timecode_in"] == "00:00:00.000"

    speakers = await (await client.get(f"{base}/speakers")).json()
    assert speakers["total_frames"] == FRAMES
    assert speakers["speakers"] == ["SPEAKER_00"]
    assert speakers["segments"] == [{"speaker": "SPEAKER_00", "start_frame": 45, "end_frame": 97}]

    faces = await (await client.get(f"{base}/faces")).json()
    assert len(faces["frames"]) == FRAMES
    boxes = faces["frames"][60]["tracked_objects"]
    assert {"bbox_xmin", "speaker_label", "is_speaking"} <= set(boxes[0])

    assert (await client.get(f"/api/v1/jobs/{analysed.job_id}/videos/1/scenes")).status == 404


async def test_media_range_and_thumbnails(gateway, analysed, media_root: Path) -> None:
    client = await gateway()
    base = f"/api/v1/jobs/{analysed.job_id}/videos/0"
    size = (media_root / "clips" / "talk.mp4").stat().st_size
    whole = await client.get(f"{base}/media")
    assert whole.status == 200 and len(await whole.read()) == size
    part = await client.get(f"{base}/media", headers={"Range": "bytes=100-199"})
    assert part.status == 206 and len(await part.read()) == 100

    thumbnail = await client.get(f"{base}/thumbnails/10.jpg")
    assert thumbnail.status == 200
    data = await thumbnail.read()
    assert data[:2] == b"\xff\xd8" and len(data) < 30_000
    cached = media_root / ".thumbnails" / analysed.job_id / "0" / "10.jpg"
    assert cached.read_bytes() == data
    beyond = await client.get(f"{base}/thumbnails/5000.jpg")
    assert beyond.status == 404
    assert not list((media_root / ".thumbnails").rglob(".tmp-*"))
    assert (await client.get(f"{base}/thumbnails/0.jpg")).status == 404


async def test_artifacts_and_the_archive_zip(gateway, analysed, media_root: Path) -> None:
    client = await gateway()
    base = f"/api/v1/jobs/{analysed.job_id}/videos/0/artifacts"
    folder = media_root / "output" / "clips"
    expected = {
        "scenes": folder / "talk_scenes.csv",
        "audio": folder / "talk_audio.json",
        "tracking": folder / "talk_tracking.json",
        "docs_tracking": folder / "docs" / "talk.json",
        "docs_audio": folder / "docs" / "talk_audio.json",
    }
    for kind, path in expected.items():
        response = await client.get(f"{base}/{kind}")
        assert response.status == 200, kind
        assert await response.read() == path.read_bytes()
        assert path.name in response.headers["Content-Disposition"]
    archive = await client.get(f"{base}/archive")
    assert archive.status == 200
    with zipfile.ZipFile(io.BytesIO(await archive.read())) as zipped:
        assert sorted(zipped.namelist()) == ["metadata.json", "talk_scenes.csv"]
    unknown = await client.get(f"{base}/passwd")
    assert unknown.status == 404
    assert "one of" in (await unknown.json())["error"]["message"]


async def test_services_system_healthz_and_metrics(gateway) -> None:
    client = await gateway()
    services = (await (await client.get("/api/v1/services")).json())["services"]
    assert [s["name"] for s in services] == ["orchestrator", "ingest", "scene", "audio", "tracking"]
    assert services[0]["status"] == "serving"
    assert {s["status"] for s in services[1:]} == {"unreachable"}
    figures = await (await client.get("/api/v1/system")).json()
    assert 0 < figures["memory"]["used"] < figures["memory"]["total"]
    assert 0 < figures["disk"]["used"] < figures["disk"]["total"]
    assert isinstance(figures["gpu"], list)
    assert await (await client.get("/healthz")).json() == {"status": "ok"}
    await client.get("/api/v1/jobs/nope")
    text = await (await client.get("/metrics")).text()
    assert (
        'videoanalysis_gateway_http_requests_total{route="/api/v1/jobs/{job_id}",status="404"}'
        in text
    )
