"""Fixtures of the tracking tests: test media, one real tracking server (two workers) per module."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from protos.videoanalysis.v1 import common_pb2, tracking_pb2, tracking_pb2_grpc
from services.common.server import RunningServer, start_server
from services.tracking.config import TrackingSettings
from services.tracking.server import build_services
from services.tracking.servicer import TrackingServicer

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
MEDIA = (
    "images/two_people.jpg",
    "images/obama.jpg",
    "video/short_hamilton_clip.mp4",
    "scenes/cuts_dev_1.mp4",
    "audio/conv_dev_1.wav",
)


def testdata(relative: str) -> Path:
    path = TESTDATA / relative
    if not path.exists():
        pytest.fail(f"test media missing: {path}")
    return path


@pytest.fixture(scope="module")
def tracking_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    for relative in MEDIA:
        shutil.copy2(testdata(relative), root / Path(relative).name)
    (root / "notes.txt").write_text("not a video\n")
    # two_people.jpg turned on its side, with rotation metadata that turns it upright again
    # (like a phone video): 5 frames, coded 330x562, displayed 562x330.
    ffmpeg = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    sideways = root / "sideways.mp4"
    subprocess.run(
        [*ffmpeg, "-loop", "1", "-i", str(testdata("images/two_people.jpg")), "-t", "1",
         "-r", "5", "-vf", "transpose=1,scale=330:562", "-c:v", "libx264", "-pix_fmt",
         "yuv420p", str(sideways)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [*ffmpeg, "-i", str(sideways), "-c", "copy", "-metadata:s:v:0", "rotate=90",
         str(root / "rotated.mp4")],
        check=True,
    )  # fmt: skip
    sideways.unlink()
    # The hamilton clip with its index first (as a web upload is) and its second half cut off:
    # the first half still decodes.
    indexed = root / "indexed.mp4"
    subprocess.run(
        [*ffmpeg, "-i", str(testdata("video/short_hamilton_clip.mp4")), "-c", "copy",
         "-movflags", "+faststart", str(indexed)],
        check=True,
    )  # fmt: skip
    whole = indexed.read_bytes()
    (root / "cut_short.mp4").write_bytes(whole[: len(whole) // 2])
    indexed.unlink()
    # The first 200 kB of an mp4 whose index (moov) is at the end: unreadable.
    (root / "truncated.mp4").write_bytes(
        testdata("video/short_hamilton_clip.mp4").read_bytes()[:200_000]
    )
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tracking_server(tracking_media: Path) -> AsyncIterator[RunningServer]:
    """A real tracking server whose two worker processes have loaded the face models."""
    settings = TrackingSettings(port=0, metrics_port=-1, media_root=tracking_media, workers=2)
    servicer = TrackingServicer(settings)
    running = await start_server(settings, build_services(settings, servicer))
    try:
        await running.mark_ready()
        running.servicer = servicer  # type: ignore[attr-defined]
        yield running
    finally:
        await running.stop(0)
        servicer.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tracking_stub(
    tracking_server: RunningServer,
) -> AsyncIterator[tracking_pb2_grpc.TrackingServiceStub]:
    async with grpc.aio.insecure_channel(
        tracking_server.address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    ) as channel:
        yield tracking_pb2_grpc.TrackingServiceStub(channel)


async def track(
    stub: tracking_pb2_grpc.TrackingServiceStub, path: str, **fields: object
) -> tuple[list[common_pb2.Progress], list[tracking_pb2.FrameFaces], tracking_pb2.TrackSummary]:
    """One Track call run to the end: its progress, every frame (in stream order), the summary."""
    steps: list[common_pb2.Progress] = []
    frames: list[tracking_pb2.FrameFaces] = []
    summaries: list[tracking_pb2.TrackSummary] = []
    request = tracking_pb2.TrackRequest(media=common_pb2.MediaRef(path=path), **fields)
    async for reply in stub.Track(request):
        assert not summaries, "nothing may follow the summary"
        if reply.HasField("progress"):
            steps.append(reply.progress)
        elif reply.HasField("frames"):
            frames.extend(reply.frames.frames)
        else:
            summaries.append(reply.summary)
    assert len(summaries) == 1
    return steps, frames, summaries[0]


@pytest.fixture(scope="module")
def run_track():  # type: ignore[no-untyped-def]
    """The :func:`track` helper, as a fixture (test modules cannot import conftest)."""
    return track
