"""Wires the orchestrator into the shared boot path, and runs it as a server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from orchestrator.clients import Clients
from orchestrator.config import SERVICES, OrchestratorSettings
from orchestrator.jobs import Orchestrator
from orchestrator.servicer import OrchestratorServicer
from orchestrator.store import JobStore
from protos.videoanalysis.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from services.common.errors import InvalidArgument
from services.common.server import (
    RunningServer,
    ServiceDefinition,
    start_server,
    stop_on_signals,
)

log = logging.getLogger(__name__)

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name


def build_services(orchestrator: Orchestrator) -> Sequence[ServiceDefinition]:
    servicer = OrchestratorServicer(orchestrator)
    return [
        ServiceDefinition(
            name=SERVICE_NAME,
            register=lambda server: orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(
                servicer, server
            ),
        )
    ]


@asynccontextmanager
async def open_orchestrator(settings: OrchestratorSettings) -> AsyncIterator[Orchestrator]:
    """The job store, the service channels and the orchestrator over them; closed on exit
    (running jobs stay resumable)."""
    missing = [s for s in SERVICES if not settings.address_of(s)]
    if missing:
        raise InvalidArgument(
            "no address for " + ", ".join(missing) + " (set ORCH_<SERVICE>_ADDR, or use "
            "`python -m orchestrator serve`, which starts missing services locally)"
        )
    store = await JobStore.open(settings.database(), log_lines_per_job=settings.log_lines_per_job)
    clients = Clients.open(settings)
    orchestrator = Orchestrator(settings, store, clients)
    try:
        yield orchestrator
    finally:
        await orchestrator.close()
        await clients.close()
        await store.close()


@asynccontextmanager
async def running_orchestrator(
    settings: OrchestratorSettings,
) -> AsyncIterator[tuple[Orchestrator, RunningServer]]:
    """The orchestrator serving gRPC on ``settings.port``, unfinished jobs resumed."""
    async with open_orchestrator(settings) as orchestrator:
        running = await start_server(settings, build_services(orchestrator))
        try:
            resumed = await orchestrator.start()
            if resumed:
                log.info("resumed %d unfinished job(s)", len(resumed))
            await running.mark_ready()
            yield orchestrator, running
        finally:
            await running.stop(settings.grace_s)


async def serve(settings: OrchestratorSettings) -> None:
    """Serves until SIGTERM or SIGINT."""
    stop = stop_on_signals()
    async with running_orchestrator(settings):
        await stop.wait()
        log.info("shutting down")
