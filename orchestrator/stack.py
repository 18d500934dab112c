"""The embedded default: the platform's processes as local children on loopback ports.

Each runs as ``python -m <package>`` (its own process, its own models and threads: the same
binaries as in Kubernetes, only the addresses differ): the analysis services of the registry, and
the processes in front of the orchestrator (the download monitor, the gateway). The stack waits
until each reports ready: SERVING on ``grpc.health.v1`` (models loaded), or ``/healthz`` for the
gateway. Children get SIGTERM when the
stack stops, and also when the parent dies (``PR_SET_PDEATHSIG``), so a killed orchestrator leaves
no orphan services behind. Their JSON logs go to one file per service.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import registry

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the parent process dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Process:
    """A process the local stack can start."""

    name: str
    package: str
    #: gRPC readiness key; empty when ``http_health`` is used instead.
    health_name: str = ""
    #: An HTTP path answering 200 once the process is ready.
    http_health: str = ""


#: Besides the analysis services: what ``orchestrator serve`` starts in front of the orchestrator.
COMPANIONS = {
    "downloads": Process("downloads", "services.downloads", "videoanalysis.v1.DownloadsService"),
    "gateway": Process("gateway", "gateway", http_health="/healthz"),
}


def process_of(name: str) -> Process:
    if name in COMPANIONS:
        return COMPANIONS[name]
    service = registry.service(name)
    return Process(name, service.package, service.health_name)


@dataclass
class LocalService:
    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ServiceStartError(RuntimeError):
    pass


class LocalStack:
    """Starts, watches and stops local service processes."""

    def __init__(self, media_root: Path, log_dir: Path, *, python: str = sys.executable) -> None:
        self.media_root = media_root
        self.log_dir = log_dir
        self.python = python
        self.services: dict[str, LocalService] = {}

    def spawn(
        self,
        name: str,
        port: int | None = None,
        metrics_port: int = -1,
        env: dict[str, str] | None = None,
    ) -> LocalService:
        """Starts the process ``name`` (a registry service or a companion) on ``port`` (a free one
        by default), without waiting for it.
        ``metrics_port`` -1 (the default) turns its Prometheus endpoint off; ``env`` adds
        settings to the inherited environment."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        log_path = self.log_dir / f"{name}.log"
        env = {
            **os.environ,
            "PYANNOTE_METRICS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [
                    self.python,
                    "-m",
                    process_of(name).package,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--metrics-port",
                    str(metrics_port),
                    "--media-root",
                    str(self.media_root),
                ],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        service = LocalService(name, port, log_path, process)
        self.services[name] = service
        log.info("started %s (pid %d) on port %d", name, process.pid, port)
        return service

    async def start(
        self, names: Sequence[str], timeout_s: float = 600.0, env: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Starts the named services and waits until all are ready; returns their addresses."""
        for name in names:
            self.spawn(name, env=env)
        await asyncio.gather(*(self.wait_ready(name, timeout_s) for name in names))
        return {name: self.services[name].address for name in names}

    async def wait_ready(self, name: str, timeout_s: float = 600.0) -> None:
        service, spec = self.services[name], process_of(name)
        deadline = time.monotonic() + timeout_s
        async with (
            grpc.aio.insecure_channel(service.address) as channel,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
        ):
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if service.process.poll() is not None:
                    raise ServiceStartError(
                        f"{name} exited with code {service.process.returncode} while starting; "
                        f"its log ({service.log_path}) ends with:\n{service.log_tail()}"
                    )
                if spec.http_health:
                    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                        url = f"http://{service.address}{spec.http_health}"
                        async with http.get(url) as response:
                            if response.status == 200:
                                return
                else:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        reply = await stub.Check(
                            health_pb2.HealthCheckRequest(service=spec.health_name), timeout=2
                        )
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            return
                if time.monotonic() > deadline:
                    raise ServiceStartError(
                        f"{name} was not ready after {timeout_s:.0f} s (log: {service.log_path})"
                    )
                await asyncio.sleep(0.25)

    def kill(self, name: str) -> None:
        """SIGKILL (for tests: a crashed replica)."""
        service = self.services[name]
        service.process.kill()
        service.process.wait()

    async def stop(self, grace_s: float = 10.0) -> None:
        for service in self.services.values():
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for service in self.services.values():
            remaining = max(0.0, deadline - time.monotonic())
            try:
                await asyncio.to_thread(service.process.wait, remaining)
            except subprocess.TimeoutExpired:
                service.process.kill()
                await asyncio.to_thread(service.process.wait)
        self.services.clear()
