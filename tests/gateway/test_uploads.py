"""Uploads: streamed to the media root; too large, truncated, malformed or not media -> 4xx and
no file left behind."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_orchestrator import FakeOrchestrator
from synthetic import make_video

from services.common.files import leftover


def form(*files: tuple[str, bytes], label: str | None = None, options: str | None = None):
    data = aiohttp.FormData(default_to_multipart=True)
    for name, content in files:
        data.add_field("file", content, filename=name, content_type="application/octet-stream")
    if label is not None:
        data.add_field("label", label)
    if options is not None:
        data.add_field("options", options)
    return data


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


async def test_upload_of_a_video_submits_a_job(
    gateway, fake: FakeOrchestrator, media_root: Path, auth: dict[str, str], tmp_path: Path
) -> None:
    client = await gateway()
    video = make_video(tmp_path / "clip.mp4", 0.5).read_bytes()
    response = await client.post(
        "/api/v1/jobs",
        data=form(("../../evil/Clip One.mp4", video), label="upload", options='{"max_faces": 2}'),
        headers=auth,
    )
    assert response.status == 201, await response.text()
    job = await response.json()
    [relative] = job["inputs"]
    # uploads/<id>/<stem>/<name>: the folder names the video's project after the file.
    assert relative.startswith("uploads/") and relative.endswith("/Clip One/Clip One.mp4")
    assert (media_root / relative).read_bytes() == video
    from orchestrator.inputs import project_of
    from services.common.media import MediaRoot

    assert project_of(MediaRoot(media_root), media_root / relative) == "Clip One"
    assert job["label"] == "upload" and fake.jobs[job["job_id"]].options.max_faces == 2
    assert leftover(media_root) == []


async def test_two_files_and_an_archive_are_one_job(
    gateway, fake: FakeOrchestrator, media_root: Path, auth: dict[str, str], tmp_path: Path
) -> None:
    import zipfile

    client = await gateway()
    video = make_video(tmp_path / "clip.mp4", 0.5).read_bytes()
    with zipfile.ZipFile(tmp_path / "p.zip", "w") as archive:
        archive.writestr("p/clip.mp4", video)
    data = form(
        ("clip.mp4", video), ("clip.mp4", video), ("p.zip", (tmp_path / "p.zip").read_bytes())
    )
    response = await client.post("/api/v1/jobs", data=data, headers=auth)
    assert response.status == 201, await response.text()
    names = [Path(p).name for p in (await response.json())["inputs"]]
    assert names == ["clip.mp4", "clip_2.mp4", "p.zip"]


@pytest.mark.parametrize(
    ("files", "extra", "status"),
    [
        ([("notes.mp4", b"this is not a video at all" * 100)], {}, 415),
        ([("silence.wav", b"RIFF\x00\x00\x00\x00WAVEfmt ")], {}, 415),
        ([("big.mp4", os.urandom(300_000))], {}, 413),
        ([], {"label": "no file"}, 400),
        ([("ok.zip", b"PK\x03\x04" + b"\x00" * 100)], {"options": "{not json"}, 400),
        ([("ok.zip", b"PK\x03\x04" + b"\x00" * 100)], {"options": '{"nope": 1}'}, 400),
    ],
    ids=["not-media", "audio-only-garbage", "too-large", "no-file", "bad-options", "bad-field"],
)
async def test_refused_uploads_leave_nothing(
    gateway,
    media_root: Path,
    auth: dict[str, str],
    files: list[tuple[str, bytes]],
    extra: dict[str, str],
    status: int,
) -> None:
    client = await gateway(max_upload_bytes=200_000)
    response = await client.post("/api/v1/jobs", data=form(*files, **extra), headers=auth)
    assert response.status == status, await response.text()
    assert (await response.json())["error"]["status"] == status
    assert files_under(media_root) == []


async def test_too_large_by_content_length_is_refused_before_reading(
    gateway, media_root: Path, auth: dict[str, str]
) -> None:
    client = await gateway(max_upload_bytes=1000)
    response = await client.post(
        "/api/v1/jobs", data=form(("big.mp4", b"x" * 500_000)), headers=auth
    )
    assert response.status == 413
    assert files_under(media_root) == []


async def test_a_multipart_body_without_its_end_is_refused(
    gateway, media_root: Path, auth: dict[str, str]
) -> None:
    client = await gateway()
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
        + b"\x00" * 5000
    )
    response = await client.post(
        "/api/v1/jobs",
        data=body,
        headers={**auth, "Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert response.status == 400
    assert files_under(media_root) == []


async def test_a_connection_lost_mid_upload_leaves_nothing(
    gateway, media_root: Path, auth: dict[str, str]
) -> None:
    client = await gateway()
    _reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    head = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
    writer.write(
        b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: {auth['Authorization']}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=XyZ\r\n"
        + f"Content-Length: {10_000_000}\r\n\r\n".encode()
        + head
        + b"\x00" * 2_000_000
    )
    await writer.drain()
    uploads = media_root / "uploads"
    async with asyncio.timeout(10):
        while not files_under(uploads):  # noqa: ASYNC110 (waits for the server's temp file)
            await asyncio.sleep(0.02)
    assert all(p.name.startswith(".tmp-") for p in files_under(uploads))
    writer.close()
    async with asyncio.timeout(10):
        while files_under(uploads):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert files_under(media_root) == []
