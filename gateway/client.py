"""Typed client of the orchestrator over the gateway's one long-lived channel."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

#: A WatchJobs stream (iterate it; ``cancel()`` to stop).
WatchCall = grpc.aio.UnaryStreamCall[Any, orchestrator_pb2.JobEvent]


class OrchestratorClient:
    """Every unary call carries ``timeout_s``; ``watch`` streams have none (they never end)."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self.channel = channel
        self._stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self._timeout_s = timeout_s

    async def submit(
        self, inputs: Sequence[str], options: orchestrator_pb2.JobOptions, label: str
    ) -> orchestrator_pb2.Job:
        request = orchestrator_pb2.SubmitJobRequest(
            inputs=[common_pb2.MediaRef(path=p) for p in inputs], options=options, label=label
        )
        return await self._stub.SubmitJob(request, timeout=self._timeout_s)

    async def get(self, job_id: str) -> orchestrator_pb2.Job:
        request = orchestrator_pb2.GetJobRequest(job_id=job_id)
        return await self._stub.GetJob(request, timeout=self._timeout_s)

    async def list(
        self, limit: int = 0, states: Sequence[Any] = ()
    ) -> builtins.list[orchestrator_pb2.Job]:
        request = orchestrator_pb2.ListJobsRequest(limit=limit, states=list(states))
        response = await self._stub.ListJobs(request, timeout=self._timeout_s)
        return list(response.jobs)

    async def cancel(self, job_id: str) -> orchestrator_pb2.Job:
        request = orchestrator_pb2.CancelJobRequest(job_id=job_id)
        return await self._stub.CancelJob(request, timeout=self._timeout_s)

    async def logs(
        self, job_id: str, after: int = 0, limit: int = 0
    ) -> builtins.list[orchestrator_pb2.JobEvent]:
        request = orchestrator_pb2.GetJobLogsRequest(
            job_id=job_id, after_sequence=after, limit=limit
        )
        response = await self._stub.GetJobLogs(request, timeout=self._timeout_s)
        return list(response.lines)

    def watch(
        self,
        job_ids: Sequence[str] = (),
        after: int = 0,
        snapshot: bool = False,
        snapshot_limit: int = 0,
    ) -> WatchCall:
        request = orchestrator_pb2.WatchJobsRequest(
            job_ids=list(job_ids),
            after_sequence=after,
            snapshot=snapshot,
            snapshot_limit=snapshot_limit,
        )
        return self._stub.WatchJobs(request)

    async def serving(self) -> bool:
        """Whether the orchestrator answers its liveness check now."""
        return await health_status(self.channel, "", self._timeout_s) == "serving"


async def health_status(channel: grpc.aio.Channel, service: str, timeout_s: float) -> str:
    """``serving``, ``not_serving`` or ``unreachable``: the gRPC health of ``service``."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = await stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
        return "not_serving" if code == grpc.StatusCode.NOT_FOUND else "unreachable"
    if response.status == health_pb2.HealthCheckResponse.SERVING:
        return "serving"
    return "not_serving"
