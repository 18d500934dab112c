"""Running blocking (CPU, GPU, subprocess) work off the event loop, cancellably.

A cancelled RPC sets a :class:`CancelToken`; worker loops poll it and stop promptly, and the
producer thread is always joined before the RPC handler returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from services.common.errors import Cancelled

T = TypeVar("T")

_DONE = object()


class CancelToken:
    """A thread-safe cancel flag shared between an RPC and the threads doing its work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")

    def wait(self, timeout: float) -> bool:
        """Sleeps up to ``timeout`` seconds; True when cancelled meanwhile."""
        return self._event.wait(timeout)

    def result_of(self, future: concurrent.futures.Future[T], poll_s: float = 0.1) -> T:
        """Waits for work queued on an executor. Cancelled while still queued, the work is
        dropped and :class:`Cancelled` raised at once; once running, the work is expected to poll
        this token itself, so its result (or its Cancelled) is awaited."""
        while True:
            try:
                return future.result(timeout=poll_s)
            except concurrent.futures.TimeoutError:
                if self.cancelled and future.cancel():
                    raise Cancelled("cancelled") from None

    @contextlib.contextmanager
    def holding(self, lock: threading.Lock, poll_s: float = 0.1) -> Iterator[None]:
        """Holds ``lock`` for the block; while waiting for it, raises :class:`Cancelled` as soon
        as this token is cancelled (a queued request must not wait out the one running)."""
        while not lock.acquire(timeout=poll_s):
            self.raise_if_cancelled()
        try:
            yield
        finally:
            lock.release()


async def iterate_in_thread(
    produce: Callable[[CancelToken], Iterator[T]],
    token: CancelToken | None = None,
    *,
    max_pending: int = 64,
) -> AsyncIterator[T]:
    """Runs the generator ``produce(token)`` in a thread and yields its items on the event loop.

    At most ``max_pending`` items wait in between (the producer blocks beyond that). When the
    consumer is cancelled, or closes this generator (wrap it in ``contextlib.aclosing`` to stop
    early with ``break``), the token is cancelled and the thread joined; an exception raised in the
    producer is re-raised here.
    """
    token = token or CancelToken()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    slots = threading.Semaphore(max_pending)
    failure: list[BaseException] = []

    def put(item: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def run() -> None:
        try:
            for item in produce(token):
                while not slots.acquire(timeout=0.1):
                    if token.cancelled:
                        return
                if token.cancelled:
                    return
                put(item)
        except BaseException as exc:
            failure.append(exc)
        finally:
            with contextlib.suppress(RuntimeError):  # loop already closed
                put(_DONE)

    thread = threading.Thread(target=run, name="blocking-producer", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            slots.release()
            yield item  # type: ignore[misc]
        if failure:
            raise failure[0]
    finally:
        token.cancel()
        await asyncio.to_thread(thread.join)


async def run_in_thread(work: Callable[[CancelToken], T], token: CancelToken | None = None) -> T:
    """Runs ``work(token)`` in a thread; cancelling the awaiting task cancels the token and waits
    for the thread to notice, so no work outlives the RPC."""
    token = token or CancelToken()
    future = asyncio.get_running_loop().run_in_executor(None, work, token)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        token.cancel()
        with contextlib.suppress(BaseException):
            await future
        raise
