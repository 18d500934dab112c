"""Completed downloads become jobs through the orchestrator's gRPC API (``SubmitJob``)."""

from __future__ import annotations

import grpc

from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from services.common.channels import open_channel
from services.common.security import SecurityConfig
from services.downloads.monitor import SubmitError


class OrchestratorJobs:
    """One long-lived channel to the orchestrator.

    The call waits (``wait_for_ready``, up to ``timeout_s``) for the orchestrator to be reachable
    and is made once; a failure leaves the download FAILED with ``submit_failed`` for
    RetryDownload. Each download submits with its own ``submit_key``, so a submission repeated
    after a lost reply or a crash (the job made, its id not yet recorded here) returns the same
    job instead of analysing the archive twice.
    """

    def __init__(
        self, address: str, timeout_s: float = 30.0, security: SecurityConfig | None = None
    ) -> None:
        self._channel = open_channel(address, security=security)
        self._stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel)
        self._timeout_s = timeout_s

    async def submit(self, path: str, label: str, key: str = "") -> str:
        try:
            job = await self._stub.SubmitJob(
                orchestrator_pb2.SubmitJobRequest(
                    inputs=[common_pb2.MediaRef(path=path)], label=label, submit_key=key
                ),
                timeout=self._timeout_s,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as err:
            raise SubmitError(f"SubmitJob failed: {err.code().name}: {err.details()}") from err
        return str(job.job_id)

    async def close(self) -> None:
        await self._channel.close(None)
