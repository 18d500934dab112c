"""``/api/v1/services`` (gRPC health of the stack) and ``/api/v1/system`` (this machine)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from typing import Any

import psutil
from aiohttp import web

from gateway.client import health_status
from gateway.config import HEALTH_SERVICES
from gateway.keys import ORCHESTRATOR, SETTINGS
from services.common.channels import open_channel
from services.common.security import SecurityConfig

#: The readiness name each service reports SERVING once its model is loaded.
SERVICE_NAMES = {
    "orchestrator": "videoanalysis.v1.OrchestratorService",
    "ingest": "videoanalysis.v1.IngestService",
    "scene": "videoanalysis.v1.SceneService",
    "audio": "videoanalysis.v1.AudioService",
    "tracking": "videoanalysis.v1.TrackingService",
}


async def services(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    timeout = settings.health_timeout_s

    async def check(name: str, address: str) -> dict[str, Any]:
        if not address:
            return {"name": name, "address": "", "status": "unreachable"}
        if name == "orchestrator":
            status = await health_status(request.app[ORCHESTRATOR].channel, "", timeout)
        else:
            channel = open_channel(address, security=SecurityConfig.of(settings))
            try:
                status = await health_status(channel, SERVICE_NAMES[name], timeout)
            finally:
                await channel.close(None)
        return {"name": name, "address": address, "status": status}

    targets = [("orchestrator", settings.orchestrator_addr)]
    targets += [(name, settings.address_of(name)) for name in HEALTH_SERVICES]
    results = await asyncio.gather(*(check(name, address) for name, address in targets))
    return web.json_response({"services": list(results)})


# psutil measures CPU use between two calls and answers 0.0 to the first: start the interval at
# import, so that the dashboard's first poll shows the use since the gateway started.
psutil.cpu_percent(interval=None)


async def system(request: web.Request) -> web.Response:
    media_root = request.app[SETTINGS].media_root
    return web.json_response(await asyncio.to_thread(figures, str(media_root)))


def figures(media_root: str) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    try:
        disk = psutil.disk_usage(media_root)
        disk_figures: dict[str, int | None] = {"used": disk.used, "total": disk.total}
    except OSError:
        disk_figures = {"used": None, "total": None}
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory": {"used": memory.total - memory.available, "total": memory.total},
        "disk": disk_figures,
        "gpu": gpus(),
    }


def gpus() -> list[dict[str, Any]]:
    """One entry per GPU that ``nvidia-smi`` reports; ``[]`` without one."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    query = "name,utilization.gpu,memory.used,memory.total"
    try:
        done = subprocess.run(
            [binary, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    result = []
    for line in done.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        name, utilization, used, total = parts
        result.append(
            {
                "name": name,
                "utilization_percent": _number(utilization),
                "memory": {"used": _mib(used), "total": _mib(total)},
            }
        )
    return result


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _mib(text: str) -> int | None:
    value = _number(text)
    return None if value is None else int(value * 1024 * 1024)
