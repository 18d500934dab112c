"""End to end: the monitor reads a link from the loopback webhook, downloads a real zip holding
short_hamilton_clip.mp4 from the loopback "Dropbox", submits it to a real orchestrator in front
of the real services (processes on loopback ports, real models), and the job completes with
every legacy output."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator import legacy
from orchestrator.config import SERVICES, OrchestratorSettings
from orchestrator.server import running_orchestrator
from orchestrator.stack import LocalStack
from protos.videoanalysis.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from services.common.files import leftover
from services.downloads import history as hs
from services.downloads.config import DownloadsSettings
from services.downloads.server import open_monitor

HAMILTON = Path(__file__).resolve().parents[3] / "shared/testdata/video/short_hamilton_clip.mp4"
FINAL = {
    orchestrator_pb2.JOB_STATE_COMPLETED,
    orchestrator_pb2.JOB_STATE_COMPLETED_WITH_ERRORS,
    orchestrator_pb2.JOB_STATE_FAILED,
    orchestrator_pb2.JOB_STATE_CANCELLED,
}


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """ingest, scene, audio and tracking as processes on loopback ports (real models)."""
    stack = LocalStack(tmp_path / "media", tmp_path / "logs")
    try:
        yield await stack.start(list(SERVICES), timeout_s=600)
    finally:
        await stack.stop()


@pytest.mark.slow
async def test_a_webhook_link_becomes_a_completed_job(
    remote: Any,
    settings_for: Callable[..., DownloadsSettings],
    services: dict[str, str],
    tmp_path: Path,
) -> None:
    if not HAMILTON.is_file():
        pytest.fail(f"test media missing: {HAMILTON}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.write(HAMILTON, "Projet Camille/rushes/short_hamilton_clip.mp4")
    archive = buffer.getvalue()
    # Dropbox's www host sends its preview page; the file comes from the direct host.
    remote.add("/s/e2e/Projet Camille.zip", "html")
    remote.add("/direct/s/e2e/Projet Camille.zip", body=archive, filename="Projet Camille.zip")
    remote.rows = [remote.dropbox_row("/s/e2e/Projet%20Camille.zip", "Projet Camille.zip")]

    media = tmp_path / "media"
    orchestrator_settings = OrchestratorSettings(
        port=0,
        metrics_port=-1,
        media_root=media,
        db_path=tmp_path / "jobs.sqlite3",
        **{f"{name}_addr": address for name, address in services.items()},
    )
    async with running_orchestrator(orchestrator_settings) as (_orchestrator, server):
        settings = settings_for(media_root=media, orchestrator_addr=server.address)
        async with open_monitor(settings) as monitor:
            await monitor.run_pass()
            await monitor.idle()
            (view,) = await monitor.list()
        row = view.row
        assert (row.state, row.outcome, row.error) == (hs.SUBMITTED, "completed", "")
        assert row.path == "downloads/Projet Camille.zip" and row.job_id
        assert (media / row.path).read_bytes() == archive

        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            for _ in range(6000):
                job = await stub.GetJob(orchestrator_pb2.GetJobRequest(job_id=row.job_id))
                if job.state in FINAL:
                    break
                await asyncio.sleep(0.1)
    assert job.state == orchestrator_pb2.JOB_STATE_COMPLETED, (job.error, list(job.errors))
    assert [i.path for i in job.inputs] == [row.path]
    (video,) = job.videos
    assert video.path.endswith("/rushes/short_hamilton_clip.mp4")
    assert all(
        s.state in (orchestrator_pb2.STEP_STATE_SUCCEEDED, orchestrator_pb2.STEP_STATE_SKIPPED)
        for s in video.steps
    )
    out = media / video.output_dir
    assert out.name == "Projet Camille"
    stem = "short_hamilton_clip"
    scenes = list(csv.reader(io.StringIO((out / f"{stem}{legacy.SCENES_SUFFIX}").read_text())))
    assert scenes[0] == ["No", "Timecode In", "Timecode Out", "Frame In", "Frame Out"]
    assert len(scenes) > 1
    audio = json.loads((out / f"{stem}{legacy.AUDIO_SUFFIX}").read_text())
    assert list(audio) == ["video_filename", "total_frames", "fps", "frames_analysis"]
    assert audio["video_filename"] == "short_hamilton_clip.mp4" and audio["total_frames"] > 0
    tracking = json.loads((out / f"{stem}{legacy.TRACKING_SUFFIX}").read_text())
    assert tracking["metadata"]["total_frames"] == len(tracking["frames"]) > 0
    assert any(f["tracked_objects"] for f in tracking["frames"]), "no face tracked"
    docs = out / legacy.DOCS_DIR
    assert json.loads((docs / f"{stem}.json").read_text())["frames_analysis"]
    assert json.loads((docs / f"{stem}{legacy.AUDIO_SUFFIX}").read_text())
    archived = media / orchestrator_settings.archives_dir / "Projet Camille" / video.sha256
    assert (archived / legacy.METADATA_NAME).is_file()
    assert leftover(media / settings.download_dir) == []
