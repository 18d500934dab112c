"""Job events for watchers: stored first (see :mod:`orchestrator.store`), then fanned out live.

A watcher asks for some jobs (or all), optionally a snapshot, and optionally the events after a
sequence it already saw. It gets stored events in order, then live ones, and never a silent gap:
a watcher whose live queue overflows, or that asks for events retention already removed, gets a
``resync`` event followed by fresh snapshots and a ``synced`` event, and goes on from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

from orchestrator.store import JobStore
from protos.videoanalysis.v1 import orchestrator_pb2

#: Builds the snapshots of jobs (stored rows plus live progress).
SnapshotSource = Callable[[Sequence[str]], Awaitable[list[orchestrator_pb2.Job]]]
_REPLAY_BATCH = 500


def job_event(job_id: str, sequence: int = 0, **event: object) -> orchestrator_pb2.JobEvent:
    """``JobEvent(job_id, sequence, time=now, **event)``."""
    message = orchestrator_pb2.JobEvent(job_id=job_id, sequence=sequence, **event)  # type: ignore[arg-type]
    message.time.FromNanoseconds(time.time_ns())
    return message


class Subscription:
    """Live events of some jobs (all when ``job_ids`` is empty), in sequence order, bounded."""

    def __init__(self, job_ids: Sequence[str], capacity: int) -> None:
        self.job_ids = frozenset(job_ids)
        self._capacity = capacity
        self._queue: deque[orchestrator_pb2.JobEvent] = deque()
        self._ready = asyncio.Event()
        #: Set when events had to be dropped: the watcher must resync.
        self.lagged = False

    def offer(self, event: orchestrator_pb2.JobEvent) -> None:
        if self.job_ids and event.job_id not in self.job_ids:
            return
        if len(self._queue) >= self._capacity:
            self._queue.clear()
            self.lagged = True
        else:
            self._queue.append(event)
        self._ready.set()

    async def next(self) -> orchestrator_pb2.JobEvent | None:
        """The next live event, or None once events were dropped (then the queue starts
        afresh)."""
        while not self._queue and not self.lagged:
            self._ready.clear()
            await self._ready.wait()
        if self.lagged:
            self.lagged = False
            return None
        return self._queue.popleft()


class EventBus:
    """Hands committed events to every live subscription."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def publish(self, events: Sequence[orchestrator_pb2.JobEvent]) -> None:
        for subscription in list(self._subscriptions):
            for event in events:
                subscription.offer(event)

    @contextlib.contextmanager
    def subscribe(self, job_ids: Sequence[str], capacity: int) -> Iterator[Subscription]:
        subscription = Subscription(job_ids, capacity)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    @property
    def watchers(self) -> int:
        return len(self._subscriptions)


class EventWatch:
    """Streams of stored and live events (WatchJobs, WatchJob, the CLI's progress bars)."""

    def __init__(
        self, store: JobStore, bus: EventBus, snapshots: SnapshotSource, capacity: int
    ) -> None:
        self._store = store
        self._bus = bus
        self._snapshots = snapshots
        self._capacity = capacity

    async def stream(
        self,
        job_ids: Sequence[str] = (),
        *,
        after_sequence: int = 0,
        snapshot: bool = False,
        snapshot_limit: int = 50,
    ) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        """Stored events after ``after_sequence`` (when > 0), snapshots (when asked), then live
        events, forever."""
        with self._bus.subscribe(job_ids, self._capacity) as live:
            last = after_sequence
            resync_reason = ""
            if after_sequence > 0:
                floor = await self._store.event_floor()
                if after_sequence < floor:
                    resync_reason = f"events up to {floor} are no longer stored"
                else:
                    async for event in self._replay(after_sequence, job_ids):
                        last = event.sequence
                        yield event
            if resync_reason or snapshot:
                async for event in self._snapshot_events(job_ids, snapshot_limit, resync_reason):
                    last = max(last, event.sequence)
                    yield event
            while True:
                event = await live.next()
                if event is None:
                    reason = "the watcher fell behind the live events"
                    async for resynced in self._snapshot_events(job_ids, snapshot_limit, reason):
                        last = max(last, resynced.sequence)
                        yield resynced
                    continue
                if event.sequence <= last:
                    continue
                last = event.sequence
                yield event

    async def _replay(
        self, after: int, job_ids: Sequence[str]
    ) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        while True:
            batch = await self._store.events_after(after, job_ids, limit=_REPLAY_BATCH)
            if not batch:
                return
            for event in batch:
                yield event
            after = batch[-1].sequence

    async def _snapshot_events(
        self, job_ids: Sequence[str], limit: int, resync_reason: str
    ) -> AsyncIterator[orchestrator_pb2.JobEvent]:
        if resync_reason:
            floor = await self._store.event_floor()
            yield job_event(
                "",
                await self._store.last_sequence(),
                resync=orchestrator_pb2.Resync(reason=resync_reason, oldest_sequence=floor + 1),
            )
        async with self._store.consistent_read():
            sequence = await self._store.last_sequence()
            wanted = list(job_ids) or await self._recent_and_unfinished(limit)
            jobs = await self._snapshots(wanted)
        for job in jobs:
            yield job_event(job.job_id, sequence, snapshot=job)
        yield job_event("", sequence, synced=orchestrator_pb2.Synced(jobs=len(jobs)))

    async def _recent_and_unfinished(self, limit: int) -> list[str]:
        unfinished = await self._store.unfinished_jobs()
        recent = await self._store.job_ids(limit)
        return list(dict.fromkeys([*unfinished, *recent]))
