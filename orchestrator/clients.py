"""Clients of the downstream services: one long-lived ``round_robin`` channel per service,
a per-service limit of calls in flight, a deadline on every call, and retries with exponential
backoff for UNAVAILABLE / RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED only.

Streaming calls collect the final result and report ``Progress`` through a callback; a retried
stream starts over (what an attempt streamed before failing is dropped). Cancelling the awaiting
task cancels the RPC, so the service stops its work.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from orchestrator.config import OrchestratorSettings
from protos.videoanalysis.v1 import common_pb2, ingest_pb2, tracking_pb2
from services.common import metrics
from services.common.channels import open_channel
from services.common.registry import SERVICES, AnalysisService

log = logging.getLogger(__name__)

RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)

ProgressCallback = Callable[[common_pb2.Progress], None]
#: ``on_retry(attempt, code, details, delay_s)`` is told about each failed attempt to be retried.
RetryCallback = Callable[[int, grpc.StatusCode, str, float], None]


class CallFailed(Exception):
    """A downstream call failed for good (not retryable, or out of attempts)."""

    def __init__(self, service: str, code: grpc.StatusCode, details: str, attempts: int) -> None:
        super().__init__(f"{service}: {code.name}: {details}")
        self.service = service
        self.code = code
        self.details = details
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        """Backoff after failed attempt number ``attempt`` (1-based), with ±20 % jitter."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return base * random.uniform(0.8, 1.2)


def ignore_progress(_progress: common_pb2.Progress) -> None:
    return None


def ignore_retry(_attempt: int, _code: grpc.StatusCode, _details: str, _delay: float) -> None:
    return None


class ServiceClient:
    """One downstream service: its channel and stub, the limit of calls in flight and the retry
    loop, for unary calls and for streams of progress then a result."""

    def __init__(
        self,
        service: AnalysisService,
        channel: grpc.aio.Channel,
        *,
        concurrency: int,
        policy: RetryPolicy,
    ) -> None:
        self.service = service.name
        self.channel = channel
        self.stub: Any = service.stub(channel)
        self._limit = asyncio.Semaphore(max(1, concurrency))
        self._policy = policy

    async def unary(
        self,
        method: Any,
        request: Any,
        *,
        deadline_s: float,
        step: str,
        on_retry: RetryCallback = ignore_retry,
    ) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._limit:
                    return await method(request, timeout=deadline_s)
            except grpc.aio.AioRpcError as err:
                await self._after_failure(err, attempt, step, on_retry)

    async def stream(
        self,
        method: Any,
        request: Any,
        *,
        deadline_s: float,
        step: str,
        on_message: Callable[[Any], None],
        restart: Callable[[], None],
        on_retry: RetryCallback,
        retry: bool = True,
    ) -> None:
        attempt = 0
        while True:
            attempt += 1
            restart()
            try:
                async with self._limit:
                    call = method(request, timeout=deadline_s)
                    try:
                        async for message in call:
                            on_message(message)
                    finally:
                        call.cancel()
                return
            except grpc.aio.AioRpcError as err:
                if not retry:
                    code, details = err.code(), err.details() or ""
                    raise CallFailed(self.service, code, details, attempt) from None
                await self._after_failure(err, attempt, step, on_retry)

    async def result_stream(
        self,
        method: Any,
        request: Any,
        *,
        deadline_s: float,
        step: str,
        on_progress: ProgressCallback = ignore_progress,
        on_retry: RetryCallback = ignore_retry,
        retry: bool = True,
    ) -> Any:
        """A streaming call whose messages carry ``progress`` or the final ``result`` (other
        messages are ignored); returns the result of the attempt that finished."""
        results: list[Any] = []

        def on_message(message: Any) -> None:
            if message.HasField("progress"):
                on_progress(message.progress)
            elif message.HasField("result"):
                results.append(message.result)

        await self.stream(
            method,
            request,
            deadline_s=deadline_s,
            step=step,
            on_message=on_message,
            restart=results.clear,
            on_retry=on_retry,
            retry=retry,
        )
        if not results:
            raise CallFailed(
                self.service, grpc.StatusCode.INTERNAL, "stream ended without a result", 1
            )
        return results[-1]

    async def _after_failure(
        self, err: grpc.aio.AioRpcError, attempt: int, step: str, on_retry: RetryCallback
    ) -> None:
        code = err.code()
        details = err.details() or ""
        if code not in RETRYABLE_CODES or attempt >= self._policy.attempts:
            raise CallFailed(self.service, code, details, attempt) from None
        delay = self._policy.delay(attempt)
        metrics.STEP_RETRIES.labels(step, code.name).inc()
        log.warning(
            "%s failed (%s: %s), attempt %d of %d; retrying in %.1f s",
            step,
            code.name,
            details,
            attempt,
            self._policy.attempts,
            delay,
        )
        on_retry(attempt, code, details, delay)
        await asyncio.sleep(delay)


@dataclass
class TrackingOutput:
    """Everything one Track call streamed: the frames (in order) and the summary."""

    frames: list[tracking_pb2.FrameFaces] = field(default_factory=list)
    summary: tracking_pb2.TrackSummary | None = None

    def add(self, message: tracking_pb2.TrackResponse) -> None:
        """Takes in one streamed (or stored) message's frames or summary."""
        if message.HasField("frames"):
            self.frames.extend(message.frames.frames)
        elif message.HasField("summary"):
            self.summary = message.summary


class IngestCalls:
    """The ingest service's three calls, typed (the other services have one call each)."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def probe(
        self, path: str, *, deadline_s: float, on_retry: RetryCallback = ignore_retry
    ) -> common_pb2.VideoInfo:
        response = await self.client.unary(
            self.client.stub.Probe,
            ingest_pb2.ProbeRequest(media=common_pb2.MediaRef(path=path)),
            deadline_s=deadline_s,
            step="probe",
            on_retry=on_retry,
        )
        return response.info  # type: ignore[no-any-return]

    async def normalize(
        self,
        path: str,
        output_path: str,
        *,
        deadline_s: float,
        on_progress: ProgressCallback = ignore_progress,
        on_retry: RetryCallback = ignore_retry,
    ) -> ingest_pb2.NormalizeVideoResult:
        """Re-encodes ``path`` to 25 fps CFR at ``output_path`` (idempotent: same output path)."""
        result: ingest_pb2.NormalizeVideoResult = await self.client.result_stream(
            self.client.stub.NormalizeVideo,
            ingest_pb2.NormalizeVideoRequest(
                media=common_pb2.MediaRef(path=path), output_path=output_path
            ),
            deadline_s=deadline_s,
            step="normalize",
            on_progress=on_progress,
            on_retry=on_retry,
        )
        return result

    async def extract(
        self,
        archive: str,
        output_dir: str,
        *,
        delete_source: bool,
        deadline_s: float,
        on_progress: ProgressCallback = ignore_progress,
    ) -> ingest_pb2.ExtractArchiveResult:
        """Extracts an archive. Not retried: a second extraction could rename members that the
        first one already wrote."""
        result: ingest_pb2.ExtractArchiveResult = await self.client.result_stream(
            self.client.stub.ExtractArchive,
            ingest_pb2.ExtractArchiveRequest(
                archive=common_pb2.MediaRef(path=archive),
                output_dir=output_dir,
                delete_source_on_success=delete_source,
            ),
            deadline_s=deadline_s,
            step="extract",
            on_progress=on_progress,
            retry=False,
        )
        return result


async def track(
    client: ServiceClient,
    request: tracking_pb2.TrackRequest,
    *,
    deadline_s: float,
    on_progress: ProgressCallback = ignore_progress,
    on_retry: RetryCallback = ignore_retry,
) -> TrackingOutput:
    """A Track call: its frames (sorted) and its summary, from the attempt that finished."""
    output = TrackingOutput()

    def restart() -> None:
        output.frames.clear()
        output.summary = None

    def on_message(message: tracking_pb2.TrackResponse) -> None:
        if message.HasField("progress"):
            on_progress(message.progress)
        else:
            output.add(message)

    await client.stream(
        client.stub.Track,
        request,
        deadline_s=deadline_s,
        step="tracking",
        on_message=on_message,
        restart=restart,
        on_retry=on_retry,
    )
    if output.summary is None:
        raise CallFailed(
            client.service, grpc.StatusCode.INTERNAL, "stream ended without a summary", 1
        )
    output.frames.sort(key=lambda f: f.frame_index)
    return output


#: gRPC's default reconnect backoff grows to 120 s; a replica that restarts (crash, rollout) would
#: then stay unused long after it is back. Capped at 2 s here, a retried call finds it.
_FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


def open_service_channel(addresses: str, max_message_bytes: int) -> grpc.aio.Channel:
    """``services.common.channels.open_channel`` plus a short reconnect backoff."""
    return open_channel(addresses, max_message_bytes, extra_options=_FAST_RECONNECT)


class Clients:
    """One client per service of the registry (``clients.scene``), sharing the retry policy."""

    def __init__(self, clients: dict[str, ServiceClient]) -> None:
        self._clients = clients

    def __getitem__(self, name: str) -> ServiceClient:
        return self._clients[name]

    @property
    def ingest(self) -> IngestCalls:
        return IngestCalls(self._clients["ingest"])

    @property
    def scene(self) -> ServiceClient:
        return self._clients["scene"]

    @property
    def audio(self) -> ServiceClient:
        return self._clients["audio"]

    @property
    def tracking(self) -> ServiceClient:
        return self._clients["tracking"]

    @classmethod
    def open(cls, settings: OrchestratorSettings) -> Clients:
        policy = RetryPolicy(
            attempts=settings.retry_attempts,
            initial_backoff_s=settings.retry_initial_backoff_s,
            max_backoff_s=settings.retry_max_backoff_s,
        )
        return cls(
            {
                service.name: ServiceClient(
                    service,
                    open_service_channel(
                        settings.address_of(service.name), settings.max_message_bytes
                    ),
                    concurrency=settings.link(service.name).concurrency,
                    policy=policy,
                )
                for service in SERVICES
            }
        )

    async def close(self) -> None:
        for client in self._clients.values():
            await client.channel.close()
