"""Fixtures shared by every test: paths to the real test media and an in-process gRPC server."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import grpc
import pytest

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")

from services.common.config import ServiceSettings
from services.common.server import RunningServer, ServiceDefinition, start_server

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTDATA = REPO_ROOT.parent / "shared" / "testdata"


def testdata_path(relative: str) -> Path:
    """A file of ../shared/testdata, or a clear failure saying where it was expected."""
    path = TESTDATA / relative
    if not path.exists():
        pytest.fail(
            f"test media missing: {path} (the shared test data lives beside the repository)"
        )
    return path


@pytest.fixture
def testdata() -> Callable[[str], Path]:
    """``testdata("audio/conv_dev_1.wav")``: the path of a shared test file."""
    return testdata_path


def child_processes(name: str | None = None) -> set[int]:
    """Pids of this process's live children (read from /proc), only those whose command starts
    with ``name`` when one is given (``ffmpeg`` also finds the static build's
    ``ffmpeg-linux-x86_64-v9.0.2``)."""
    me = str(os.getpid())
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        command = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        if fields[1] == me and fields[0] != "Z" and command.startswith(name or ""):
            children.add(int(stat.parent.name))
    return children


@pytest.fixture
def live_children() -> Callable[[], set[int]]:
    """``live_children()``: pids of this test process's running child processes."""
    return child_processes


@pytest.fixture
def ffmpeg_children() -> Callable[[], list[int]]:
    """``ffmpeg_children()``: pids of this test process's running ffmpeg children, sorted."""
    return lambda: sorted(child_processes("ffmpeg"))


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def put_media(media_root: Path) -> Callable[[str, str | None], str]:
    """Copies a testdata file into the media root; returns its path relative to the root."""

    def put(relative: str, name: str | None = None) -> str:
        source = testdata_path(relative)
        target = media_root / (name or source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return target.relative_to(media_root).as_posix()

    return put


@pytest.fixture
async def grpc_server() -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """``await grpc_server(settings, build)``: a real server on a free loopback port,
    started with the shared boot path and ready (models loaded); stopped after the test."""
    started: list[RunningServer] = []

    async def start(
        settings: ServiceSettings, build: Callable[..., Sequence[ServiceDefinition]]
    ) -> RunningServer:
        running = await start_server(settings, build(settings))
        started.append(running)
        await running.mark_ready()
        return running

    yield start
    for running in started:
        await running.stop(0)


@pytest.fixture
async def channel_to() -> AsyncIterator[Callable[[RunningServer], grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []

    def open_channel(running: RunningServer) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(running.address)
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        await channel.close()


@pytest.fixture(autouse=True)
def no_error_logs(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Fails a test that logged at ERROR or above, unless it is marked ``allow_error_logs``."""
    yield
    if request.node.get_closest_marker("allow_error_logs"):
        return
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, f"unexpected ERROR logs: {[r.getMessage() for r in errors]}"


@pytest.fixture(autouse=True)
def _no_lazy_placeholder_modules() -> None:
    """Hypothesis (the fuzz tests, schemathesis) collects constants from every module in
    ``sys.modules``; speechbrain, imported by the audio tests of the same run, leaves lazy
    placeholders there whose attribute access imports optional packages (k2) and fails. They are
    removed before each test (a later import loads them again)."""
    import sys

    for name, module in list(sys.modules.items()):
        if type(module).__name__ in {"LazyModule", "DeprecatedModuleRedirect"}:
            del sys.modules[name]
