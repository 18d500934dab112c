"""In-memory fan-out of job events to watchers (WatchJob streams, the CLI's progress bars)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

from orchestrator.views import timestamp
from protos.videoanalysis.v1 import orchestrator_pb2

#: Events a slow watcher may fall behind by before the oldest are dropped (progress is
#: superseded by newer progress anyway; state changes also arrive in the final snapshot).
MAX_PENDING = 1000


class EventHub:
    """Numbers each job's events and hands them to every current subscriber of that job."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[orchestrator_pb2.JobEvent]]] = defaultdict(
            set
        )
        self._sequence: dict[str, int] = defaultdict(int)

    def event(self, job_id: str, **event: object) -> orchestrator_pb2.JobEvent:
        """``JobEvent(job_id, sequence, time, **event)`` numbered like the last published one,
        for one watcher only (its first snapshot)."""
        message = orchestrator_pb2.JobEvent(
            job_id=job_id,
            sequence=self._sequence[job_id],
            **event,  # type: ignore[arg-type]
        )
        message.time.CopyFrom(timestamp(time.time()))
        return message

    def publish(self, job_id: str, **event: object) -> orchestrator_pb2.JobEvent:
        """Sends ``JobEvent(job_id, sequence, time, **event)`` to the job's subscribers."""
        self._sequence[job_id] += 1
        message = self.event(job_id, **event)
        for queue in list(self._subscribers.get(job_id, ())):
            if queue.qsize() >= MAX_PENDING:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(message)
        return message

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Queue[orchestrator_pb2.JobEvent]]:
        queue: asyncio.Queue[orchestrator_pb2.JobEvent] = asyncio.Queue()
        self._subscribers[job_id].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[job_id].discard(queue)
            if not self._subscribers[job_id]:
                del self._subscribers[job_id]
