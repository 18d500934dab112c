"""Live events: the one orchestrator subscription and its fan-out to websockets.

:class:`EventHub` holds one ``WatchJobs`` stream for all jobs. Every event is converted to JSON
once and offered to each :class:`Watcher` (one per websocket) without waiting: a watcher has its
own bounded queue and sender task, so a slow client only ever delays itself. While a watcher
lags, the progress of a running step replaces the older, still unsent progress of the same
(job, video, step); a watcher whose queue still overflows is closed with 4408 and counted as
dropped, and comes back with ``after`` = the last sequence it saw.

Resume: the hub keeps the most recent events (``replay_events``) and replays them to a watcher
that subscribes after a sequence they cover. Older sequences (and fresh subscriptions, which
start with snapshots) get a short catch-up stream of their own from the orchestrator, which hands
over to the hub's buffer as soon as it reaches it.

When the orchestrator stream breaks, every watcher gets ``orchestrator {connected: false}``; the
hub reconnects with exponential backoff after its last sequence (so nothing is missed) and says
``connected: true`` again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from aiohttp import WSMsgType, web

from gateway.auth import bearer_token, token_valid
from gateway.client import OrchestratorClient, WatchCall
from gateway.config import GatewaySettings
from gateway.convert import event_json
from gateway.keys import HUB, SETTINGS, SOCKETS
from protos.videoanalysis.v1 import orchestrator_pb2
from services.common import metrics

log = logging.getLogger(__name__)

#: Close codes of the websocket protocol of the gateway.
CLOSE_UNAUTHORIZED = 4401
CLOSE_LAGGING = 4408
#: Event kinds that come in bursts sharing one sequence (a catch-up cannot hand over inside one).
_BURST_KINDS = frozenset({"snapshot", "resync"})


@dataclass(slots=True)
class Item:
    """One message ready to send: the JSON text is built once and shared by every watcher."""

    text: str
    seq: int = 0
    job_id: str = ""
    kind: str = ""
    #: (job, video, step) of a RUNNING step's progress: a newer one replaces an unsent older one.
    key: tuple[str, str, str] | None = None


def envelope(kind: str, payload: object) -> str:
    return json.dumps({"type": kind, "payload": payload}, separators=(",", ":"))


def event_item(event: orchestrator_pb2.JobEvent) -> Item:
    kind = event.WhichOneof("event") or ""
    key = None
    if kind == "step" and event.step.step.state == orchestrator_pb2.STEP_STATE_RUNNING:
        key = (event.job_id, event.step.video, event.step.step.name)
    return Item(envelope("event", event_json(event)), event.sequence, event.job_id, kind, key)


#: Queue mark: "send the backlog here".
_REPLAY = Item("")


class _Entry:
    """A queue slot; ``item`` becomes None when a newer progress of the same key replaced it."""

    __slots__ = ("item",)

    def __init__(self, item: Item) -> None:
        self.item: Item | None = item


class Watcher:
    """One websocket's subscription, queue and sender."""

    def __init__(self, ws: web.WebSocketResponse, max_queue: int) -> None:
        self.ws = ws
        self.max_queue = max_queue
        self.job_ids: frozenset[str] = frozenset()
        #: Receives live events from the hub (after any catch-up handed over).
        self.live = False
        self.subscribed = False
        #: Highest event sequence queued (duplicates from a catch-up hand-over are skipped).
        self.high = 0
        self.dropped = False
        self._queue: deque[_Entry] = deque()
        #: Replayed events (references into the hub's buffer), sent before the queue.
        self._backlog: deque[Item] = deque()
        self._room = asyncio.Event()
        self._by_key: dict[tuple[str, str, str], _Entry] = {}
        self._pending = 0
        self._wakeup = asyncio.Event()
        self.sender: asyncio.Task[None] | None = None
        self.catch_up: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None

    def wants(self, job_id: str) -> bool:
        return not self.job_ids or job_id in self.job_ids

    def offer(self, item: Item) -> None:
        """Queues ``item`` without waiting; drops the watcher when its queue overflows."""
        if self.dropped:
            return
        if item.seq and item.kind and item.kind not in _BURST_KINDS and item.kind != "synced":
            if item.seq <= self.high:
                return
            self.high = item.seq
        if item.key is not None:
            older = self._by_key.get(item.key)
            if older is not None and older.item is not None:
                older.item = None
                self._pending -= 1
                metrics.WS_EVENTS_DROPPED.labels("coalesced").inc()
        entry = _Entry(item)
        self._queue.append(entry)
        self._pending += 1
        if item.key is not None:
            self._by_key[item.key] = entry
        if self._pending > self.max_queue:
            self.drop()
            return
        self._wakeup.set()

    def replay(self, items: Iterable[Item]) -> None:
        """Queues buffered events outside the bound: they are the hub's, already in memory."""
        if self.dropped:
            return
        for item in items:
            if self.wants(item.job_id) and item.seq > self.high:
                self._backlog.append(item)
                self.high = item.seq
        # The backlog is sent when the sender reaches this mark (after what is queued now).
        self._queue.append(_Entry(_REPLAY))
        self._wakeup.set()

    async def room(self) -> None:
        """Waits until the queue is at most half full (a catch-up stream paces itself by it)."""
        while self._pending > self.max_queue // 2 and not self.dropped:
            self._room.clear()
            await self._room.wait()

    def drop(self) -> None:
        """Gives up on a client that cannot keep up: 4408, and its queue is freed at once."""
        self.dropped = True
        metrics.WS_EVENTS_DROPPED.labels("lagging").inc(self._pending)
        metrics.WS_CLIENTS_DROPPED.inc()
        self._queue.clear()
        self._backlog.clear()
        self._by_key.clear()
        self._pending = 0
        self._room.set()
        if self.sender is not None:
            self.sender.cancel()
        self._closing = asyncio.ensure_future(
            self._close(CLOSE_LAGGING, b"too slow: reconnect with after")
        )

    async def _close(self, code: int, message: bytes) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message)

    async def send_loop(self) -> None:
        ws = self.ws
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            sent = 0
            try:
                while self._queue:
                    entry = self._queue.popleft()
                    item = entry.item
                    if item is None:
                        continue
                    if item is _REPLAY:
                        while self._backlog:
                            await ws.send_str(self._backlog.popleft().text)
                            sent += 1
                        continue
                    self._pending -= 1
                    if self._pending <= self.max_queue // 2:
                        self._room.set()
                    if item.key is not None and self._by_key.get(item.key) is entry:
                        del self._by_key[item.key]
                    await ws.send_str(item.text)
                    sent += 1
            except ConnectionError:
                return
            finally:
                if sent:
                    metrics.WS_MESSAGES_SENT.inc(sent)


class EventHub:
    """The one orchestrator subscription, the replay buffer and the set of watchers."""

    def __init__(self, client: OrchestratorClient, settings: GatewaySettings) -> None:
        self.client = client
        self.settings = settings
        self.watchers: set[Watcher] = set()
        self.last_seq = 0
        self.connected = False
        #: The buffer holds every event with a sequence above ``floor`` (None: not usable now).
        self.floor: int | None = None
        self._buffer: deque[Item] = deque()
        self._connected_event = asyncio.Event()
        self._catch_up_slots = asyncio.Semaphore(4)
        self._tasks: list[asyncio.Task[None]] = []
        self._call: WatchCall | None = None

    # Lifecycle.

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._subscription(), name="gateway-events"),
            asyncio.create_task(self._heartbeats(), name="gateway-heartbeats"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for watcher in list(self.watchers):
            self.remove(watcher)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_connected(self) -> None:
        await self._connected_event.wait()

    # The subscription.

    async def _subscription(self) -> None:
        backoff = self.settings.reconnect_initial_s
        while True:
            call = self.client.watch(
                after=self.last_seq, snapshot=self.last_seq == 0, snapshot_limit=1
            )
            self._call = call
            first_sync = self.last_seq == 0
            monitor = asyncio.create_task(self._mark_connected_when_serving(call))
            try:
                async for event in call:
                    if first_sync:
                        # The first snapshots only tell the hub where the log stands now.
                        if event.WhichOneof("event") == "synced":
                            self.last_seq = event.sequence
                            self.floor = event.sequence
                            first_sync = False
                        continue
                    if not self.connected:
                        self._set_connected(True)
                    self._dispatch(event)
                    backoff = self.settings.reconnect_initial_s
            except grpc.aio.AioRpcError as exc:
                level = logging.WARNING if self.connected else logging.DEBUG
                log.log(level, "orchestrator event stream lost: %s", exc.code().name)
            finally:
                monitor.cancel()
                call.cancel()
                self._call = None
            self._set_connected(False)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    async def _mark_connected_when_serving(self, call: WatchCall) -> None:
        """The stream carries nothing until an event happens: a health check on the same
        channel tells when the orchestrator is back."""
        while not call.done():
            if await self.client.serving():
                if not call.done():
                    self._set_connected(True)
                return
            await asyncio.sleep(self.settings.reconnect_initial_s)

    def _set_connected(self, connected: bool) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        metrics.GATEWAY_ORCHESTRATOR_CONNECTED.set(1 if connected else 0)
        if connected:
            self._connected_event.set()
        else:
            self._connected_event.clear()
        item = Item(envelope("orchestrator", {"connected": connected}))
        for watcher in list(self.watchers):
            watcher.offer(item)

    def _dispatch(self, event: orchestrator_pb2.JobEvent) -> None:
        item = event_item(event)
        if item.kind == "resync":
            # The hub itself fell behind: its buffer no longer follows the log.
            self._buffer.clear()
            self.floor = None
        elif item.kind == "synced":
            self.floor = event.sequence
        elif self.floor is not None:
            if len(self._buffer) >= self.settings.replay_events:
                self.floor = self._buffer.popleft().seq
            self._buffer.append(item)
        self.last_seq = max(self.last_seq, event.sequence)
        for watcher in self.watchers:
            if watcher.live and (not item.job_id or watcher.wants(item.job_id)):
                watcher.offer(item)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ws_heartbeat_s)
            item = Item(envelope("heartbeat", {}))
            for watcher in list(self.watchers):
                watcher.offer(item)

    # Watchers.

    def add(self, watcher: Watcher) -> None:
        self.watchers.add(watcher)
        watcher.sender = asyncio.create_task(watcher.send_loop())
        watcher.offer(
            Item(
                envelope(
                    "hello",
                    {"orchestrator_connected": self.connected, "last_sequence": self.last_seq},
                )
            )
        )

    def remove(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        for task in (watcher.sender, watcher.catch_up):
            if task is not None:
                task.cancel()

    def subscribe(self, watcher: Watcher, job_ids: Iterable[str], after: int) -> None:
        """(Re)subscribes: replays from the buffer when it covers ``after``, else catches up
        through the orchestrator; then live events."""
        if watcher.catch_up is not None:
            watcher.catch_up.cancel()
            watcher.catch_up = None
        watcher.job_ids = frozenset(job_ids)
        watcher.live = False
        watcher.subscribed = True
        watcher.high = after
        if after > 0 and self._covers(after):
            self._hand_over(watcher, after)
        else:
            watcher.catch_up = asyncio.create_task(self._catch_up(watcher, after))

    def _covers(self, after: int) -> bool:
        return self.floor is not None and self.floor <= after <= self.last_seq

    def _hand_over(self, watcher: Watcher, after: int) -> None:
        """Replays the buffered events after ``after`` and makes the watcher live, with no await
        in between (nothing can slip through)."""
        newer: list[Item] = []
        for item in reversed(self._buffer):
            if item.seq <= after:
                break
            newer.append(item)
        newer.reverse()
        watcher.replay(newer)
        watcher.live = True

    async def _catch_up(self, watcher: Watcher, after: int) -> None:
        """A stream of the watcher's own from the orchestrator until it reaches the buffer."""
        snapshot = after == 0
        while True:
            if not self.connected:
                await self.wait_connected()
            async with self._catch_up_slots:
                call = self.client.watch(sorted(watcher.job_ids), after=after, snapshot=snapshot)
                try:
                    async for event in call:
                        item = event_item(event)
                        watcher.offer(item)
                        await watcher.room()
                        if watcher.dropped:
                            return
                        if item.kind in _BURST_KINDS:
                            continue
                        after = max(after, event.sequence)
                        snapshot = False
                        if self._covers(after) or (
                            self.floor is not None and after > self.last_seq
                        ):
                            self._hand_over(watcher, after)
                            return
                except grpc.aio.AioRpcError as exc:
                    log.info("catch-up stream ended: %s", exc.code().name)
                finally:
                    call.cancel()
            await asyncio.sleep(self.settings.reconnect_initial_s)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """``/ws``: auth (first message, or the header), ``hello``, then ``subscribe`` messages."""
    settings = request.app[SETTINGS]
    hub = request.app[HUB]
    ws = web.WebSocketResponse(heartbeat=30.0, timeout=2.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    _limit_send_buffer(request, settings.ws_send_buffer_bytes)
    request.app[SOCKETS].add(ws)
    metrics.WS_CONNECTIONS.inc()
    watcher = Watcher(ws, settings.ws_queue_events)
    try:
        authorized = not settings.auth_enabled or token_valid(
            bearer_token(request), settings.token_list
        )
        if not authorized and not await _authenticate(ws, settings):
            await ws.close(code=CLOSE_UNAUTHORIZED, message=b"unauthorized")
            return ws
        hub.add(watcher)
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            _handle(hub, watcher, message.data)
    finally:
        hub.remove(watcher)
        metrics.WS_CONNECTIONS.dec()
    return ws


def _limit_send_buffer(request: web.Request, size: int) -> None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and size > 0:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def _authenticate(ws: web.WebSocketResponse, settings: GatewaySettings) -> bool:
    try:
        message = await ws.receive(timeout=settings.ws_auth_timeout_s)
    except TimeoutError:
        return False
    if message.type != WSMsgType.TEXT:
        return False
    try:
        data = json.loads(message.data)
        token = data["payload"]["token"] if data.get("type") == "auth" else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    return isinstance(token, str) and token_valid(token, settings.token_list)


def _handle(hub: EventHub, watcher: Watcher, text: str) -> None:
    data: object = None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a message is a JSON object")
        kind = data.get("type")
        payload = data.get("payload") or {}
        if not isinstance(payload, dict):
            raise ValueError("payload must be an object")
        if kind == "subscribe":
            job_ids = payload.get("job_ids") or []
            after = payload.get("after") or 0
            if not isinstance(job_ids, list) or not all(isinstance(j, str) for j in job_ids):
                raise ValueError("job_ids must be a list of strings")
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                raise ValueError("after must be a sequence number (>= 0)")
            hub.subscribe(watcher, job_ids, after)
        elif kind == "auth":
            pass  # already authenticated (header or first message)
        else:
            raise ValueError(f"unknown message type: {kind!r}")
    except ValueError as exc:
        request_id = data.get("request_id") if isinstance(data, dict) else None
        reply = {"type": "error", "request_id": request_id, "payload": {"message": str(exc)}}
        watcher.offer(Item(json.dumps(reply)))
