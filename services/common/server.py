"""The one boot path of every gRPC process.

Order: settings and logging; the aio server with the shared interceptors; servicers, health and
reflection; the port; ``/metrics``; start; load models off the loop and only then flip readiness to
SERVING; wait for SIGTERM/SIGINT; NOT_SERVING everywhere; ``server.stop(grace)``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import metrics
from services.common.config import ServiceSettings
from services.common.interceptors import default_interceptors
from services.common.logs import configure_logging
from services.common.security import SecurityConfig

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    HealthServicer = Any  # grpc_health's stubs do not describe its asyncio servicer
else:
    HealthServicer = health.aio.HealthServicer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ServiceDefinition:
    """One gRPC service a process serves.

    Attributes:
        name: full proto name (``videoanalysis.v1.SceneService``), the readiness key in health.
        register: adds the servicer to a server.
        load: blocking warm-up (model loading) run in a thread before readiness turns SERVING.
        model: label for the model-load metric.
        close: blocking clean-up (worker pools, child processes) run after the server stopped.
    """

    name: str
    register: Callable[[grpc.aio.Server], None]
    load: Callable[[], None] | None = None
    model: str = ""
    close: Callable[[], None] | None = None


@dataclass
class RunningServer:
    server: grpc.aio.Server
    health: HealthServicer
    port: int
    metrics_port: int
    services: Sequence[ServiceDefinition] = field(default_factory=list)
    #: The plaintext health-only server (``health_port``), if any.
    health_server: grpc.aio.Server | None = None
    health_port: int = -1

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def mark_ready(self) -> None:
        """Loads every service's model (off the loop), then reports it SERVING."""
        for service in self.services:
            if service.load is not None:
                started = time.perf_counter()
                await asyncio.to_thread(service.load)
                elapsed = time.perf_counter() - started
                metrics.MODEL_LOAD_SECONDS.labels(service.name, service.model or "default").observe(
                    elapsed
                )
                log.info("%s ready (model loaded in %.1f s)", service.name, elapsed)
            await self.health.set(service.name, SERVING)

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING everywhere, drain in-flight RPCs for ``grace_s``, then release resources."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self.health_server is not None:
            await self.health_server.stop(0)
        for service in self.services:
            if service.close is not None:
                await asyncio.to_thread(service.close)


async def start_server(
    settings: ServiceSettings, services: Sequence[ServiceDefinition]
) -> RunningServer:
    """Builds and starts a server on ``settings.port`` (0 picks a free one); services stay
    NOT_SERVING until :meth:`RunningServer.mark_ready`."""
    security = SecurityConfig.of(settings)
    server = grpc.aio.server(
        interceptors=[*default_interceptors(), *security.server_interceptors()],
        options=[
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            # Clients keep their channels alive with a ping every 30 s (services.common.channels);
            # the default policy answers that with GOAWAY "too_many_pings".
            ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    for service in services:
        service.register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*(s.name for s in services), health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    address = f"{settings.host}:{settings.port}"
    credentials = security.server_credentials()
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise RuntimeError(f"cannot bind {address}")
    health_server, health_port = None, -1
    if settings.health_port >= 0:
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_port = health_server.add_insecure_port(f"{settings.host}:{settings.health_port}")
        if health_port == 0:
            raise RuntimeError(f"cannot bind {settings.host}:{settings.health_port}")
        await health_server.start()
    metrics_port = metrics.serve_metrics(settings.metrics_port)
    await server.start()
    await health_servicer.set("", SERVING)
    for service in services:
        await health_servicer.set(service.name, NOT_SERVING)
    log.info(
        "listening on port %d (%s%s, metrics on %d): %s",
        port,
        "plaintext" if credentials is None else "TLS",
        f", health on {health_port}" if health_server is not None else "",
        metrics_port,
        ", ".join(s.name for s in services),
    )
    return RunningServer(
        server, health_servicer, port, metrics_port, list(services), health_server, health_port
    )


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (call from the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(settings: ServiceSettings, services: Sequence[ServiceDefinition]) -> None:
    """Runs until SIGTERM or SIGINT, then drains gracefully."""
    running = await start_server(settings, services)
    stop = stop_on_signals()
    ready = asyncio.create_task(running.mark_ready())
    await stop.wait()
    log.info("shutting down (grace %.0f s)", settings.grace_s)
    ready.cancel()
    await running.stop(settings.grace_s)


def run(
    component: str,
    settings: ServiceSettings,
    build: Callable[[ServiceSettings], Sequence[ServiceDefinition]],
) -> None:
    """Entry point of ``python -m <component>``."""
    configure_logging(component, settings.log_level)
    asyncio.run(serve(settings, build(settings)))
