"""gRPC adapter of the orchestrator: ``OrchestratorService`` requests in, :class:`Orchestrator`
calls, ``Job`` messages out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from orchestrator.jobs import Orchestrator
from orchestrator.views import JOB_STATE_NAME
from protos.videoanalysis.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from services.common.errors import InvalidArgument, MediaNotFound
from services.common.rpc import Context, mapped_errors


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, orchestrator: Orchestrator) -> None:
        self._orchestrator = orchestrator

    async def SubmitJob(
        self, request: orchestrator_pb2.SubmitJobRequest, context: Context
    ) -> orchestrator_pb2.Job:
        async with mapped_errors(context):
            job_id = await self._orchestrator.submit(
                [ref.path for ref in request.inputs],
                request.options,
                request.label,
                submit_key=request.submit_key,
            )
            return await self._job(job_id)

    async def GetJob(
        self, request: orchestrator_pb2.GetJobRequest, context: Context
    ) -> orchestrator_pb2.Job:
        async with mapped_errors(context):
            return await self._job(request.job_id)

    async def ListJobs(
        self, request: orchestrator_pb2.ListJobsRequest, context: Context
    ) -> orchestrator_pb2.ListJobsResponse:
        async with mapped_errors(context):
            if request.limit < 0:
                raise InvalidArgument("limit cannot be negative")
            states = []
            for state in request.states:
                if state not in JOB_STATE_NAME:
                    raise InvalidArgument(f"unknown job state: {state}")
                states.append(JOB_STATE_NAME[state])
            jobs = await self._orchestrator.list_jobs(request.limit, states)
            return orchestrator_pb2.ListJobsResponse(jobs=jobs)

    async def CancelJob(
        self, request: orchestrator_pb2.CancelJobRequest, context: Context
    ) -> orchestrator_pb2.Job:
        async with mapped_errors(context):
            _check_id(request.job_id)
            job = await self._orchestrator.cancel(request.job_id)
            if job is None:
                raise MediaNotFound(f"no such job: {request.job_id}")
            return job

    async def WatchJob(
        self, request: orchestrator_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        async with mapped_errors(context):
            _check_id(request.job_id)
            async for event in self._orchestrator.watch(request.job_id):
                yield event

    async def WatchJobs(
        self, request: orchestrator_pb2.WatchJobsRequest, context: Context
    ) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        async with mapped_errors(context):
            if request.after_sequence < 0 or request.snapshot_limit < 0:
                raise InvalidArgument("after_sequence and snapshot_limit cannot be negative")
            for job_id in request.job_ids:
                _check_id(job_id)
            async for event in self._orchestrator.watch_jobs(
                list(request.job_ids),
                after_sequence=request.after_sequence,
                snapshot=request.snapshot,
                snapshot_limit=request.snapshot_limit,
            ):
                yield event

    async def GetJobLogs(
        self, request: orchestrator_pb2.GetJobLogsRequest, context: Context
    ) -> orchestrator_pb2.GetJobLogsResponse:
        async with mapped_errors(context):
            _check_id(request.job_id)
            if request.after_sequence < 0 or request.limit < 0:
                raise InvalidArgument("after_sequence and limit cannot be negative")
            lines = await self._orchestrator.logs(
                request.job_id, request.after_sequence, request.limit
            )
            return orchestrator_pb2.GetJobLogsResponse(lines=lines)

    async def _job(self, job_id: str) -> orchestrator_pb2.Job:
        _check_id(job_id)
        job = await self._orchestrator.snapshot(job_id)
        if job is None:
            raise MediaNotFound(f"no such job: {job_id}")
        return job


def _check_id(job_id: str) -> None:
    if not job_id:
        raise InvalidArgument("job_id is required")
