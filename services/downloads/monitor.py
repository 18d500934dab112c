"""The monitor pass (legacy ``CSVService._check_csv_for_downloads``, spec 01 §3.3) and the life
of each download: queued → downloading → awaiting confirmation or submitted, or failed.

Differences from the legacy tool, on purpose: a download that failed for a transient reason
(network, stall, truncation, 429, 5xx) is requeued by at most ``max_passes`` later passes, then
stays FAILED until RetryDownload (the legacy tool retried it on every pass, forever); a crash
leaves no partial file (temporary files are removed at start) and its interrupted downloads
start again; the fallback URL is tried when the main one fails. State changes and progress are
published to subscribers (WatchDownloads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from services.common import files, metrics
from services.common.media import MediaRoot
from services.downloads import history as hs
from services.downloads.config import DownloadsSettings
from services.downloads.fetcher import DownloadFailed, Fetcher, FetchResult, ProgressCallback
from services.downloads.history import DownloadRow, HistoryStore, PollRow
from services.downloads.urls import has_web_scheme, is_eligible, normalize_url
from services.downloads.webhook import Webhook, WebhookError, WebhookStatus

log = logging.getLogger(__name__)

#: Failure outcomes a later pass may retry by itself.
TRANSIENT_OUTCOMES = frozenset(
    {"timeout", "truncated", "rate_limited", "network_error", "server_error", "interrupted"}
)
_PROGRESS_EVERY_S = 0.25
_SUBSCRIBER_BACKLOG = 1000


class DownloadNotFound(LookupError):
    """No download has this id."""


class WrongState(ValueError):
    """The download is not in a state that allows the action."""


class SubmitError(Exception):
    """The orchestrator refused or could not take the job (the message says why)."""


class JobSubmitter(Protocol):
    async def submit(self, path: str, label: str, key: str) -> str:
        """Submits the archive at media-root-relative ``path``; returns the job id. A second
        submission with the same ``key`` returns the first one's job (no second job)."""
        ...


@dataclass(frozen=True)
class DownloadView:
    """A stored download with its live progress."""

    row: DownloadRow
    done_bytes: int = 0
    total_bytes: int = 0


@dataclass(frozen=True)
class PassResult:
    records: int
    started: int
    error: str = ""


@dataclass(frozen=True)
class Event:
    sequence: int
    time: float
    view: DownloadView


class Subscription:
    """Events for one watcher; ``lagged`` turns on when it fell behind and events were lost."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(_SUBSCRIBER_BACKLOG)
        self.lagged = False


class Monitor:
    def __init__(
        self,
        settings: DownloadsSettings,
        store: HistoryStore,
        fetcher: Fetcher,
        webhook: Webhook | None,
        submitter: JobSubmitter | None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._fetcher = fetcher
        self._webhook = webhook
        self._submitter = submitter
        self._media = MediaRoot(settings.media_root)
        self._slots = asyncio.Semaphore(max(1, settings.max_concurrent_downloads))
        self._pass_lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, tuple[int, int]] = {}
        self._subscribers: set[Subscription] = set()
        self._sequence = 0
        self._last_history: set[str] = set()
        self._submitting: set[str] = set()
        self.last_pass_at = 0.0

    @property
    def folder(self) -> Path:
        return self._media.resolve(self.settings.download_dir, must_exist=False)

    @property
    def webhook_status(self) -> WebhookStatus:
        return self._webhook.status if self._webhook else WebhookStatus(error="no webhook set")

    @property
    def sequence(self) -> int:
        """The sequence of the last published event."""
        return self._sequence

    @property
    def active(self) -> int:
        return sum(1 for task in self._tasks.values() if not task.done())

    # Life cycle.

    async def start(self) -> None:
        """Cleans up after a crash: temporary files of unfinished downloads are removed and
        the downloads they belonged to are queued again; then queued downloads start."""
        for temp in files.leftover(self.folder) if self.folder.is_dir() else []:
            log.warning("removing the partial file of an interrupted download: %s", temp)
            temp.unlink(missing_ok=True)
        for row in await self._store.reset_interrupted():
            log.warning("download %s was interrupted; starting it again", row.download_id)
        if self.settings.auto_submit and self._submitter is not None:
            # Downloaded but not submitted (a crash between the two, or confirm mode before).
            for row in await self._store.downloads(
                states=[hs.AWAITING_CONFIRMATION], limit=1_000_000
            ):
                self._tasks[row.download_id] = asyncio.create_task(
                    self._submit_later(row), name=f"submit-{row.download_id}"
                )
        await self._start_queued()

    async def _submit_later(self, row: DownloadRow) -> None:
        with contextlib.suppress(WrongState):  # already confirmed by a user
            await self._submit(row)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """A pass every ``poll_interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.run_pass()
            except Exception:
                log.exception("monitor pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.poll_interval_s)

    async def idle(self) -> None:
        """Waits until no download is running (tests, shutdown)."""
        while running := [t for t in self._tasks.values() if not t.done()]:
            await asyncio.wait(running)

    async def close(self) -> None:
        """Cancels running downloads: their temporary files go, their rows stay DOWNLOADING so
        the next start queues them again."""
        for task in self._tasks.values():
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # The monitor pass.

    async def run_pass(self) -> PassResult:
        async with self._pass_lock:
            self.last_pass_at = time.time()
            result = await self._pass()
            await self._store.record_poll(
                PollRow(
                    self.last_pass_at,
                    not result.error,
                    result.records,
                    result.started,
                    result.error,
                )
            )
            return result

    async def _pass(self) -> PassResult:
        if self._webhook is None:
            return PassResult(0, 0, "no webhook set (DOWNLOADS_WEBHOOK_URL)")
        try:
            rows = await self._webhook.fetch()
        except WebhookError as exc:
            log.warning("Could not fetch data from WEBHOOK: %s", exc)
            return PassResult(0, 0, str(exc))
        try:
            history = await self._store.history_keys()
            self._last_history = history
        except sqlite3.Error as exc:  # a transient DB error must not start a re-download burst
            log.warning("history unreadable (%s); using the last known set", exc)
            history = self._last_history
        tracked = await self._store.downloads_by_key()
        handled: set[str] = set()
        started = missing = known = 0
        for row in rows:
            key, fallback = normalize_url(row.url), normalize_url(row.fallback_url)
            if key in handled or (fallback and fallback in handled):
                continue
            if not key:
                missing += 1
                continue
            existing = tracked.get(key) or (tracked.get(fallback) if fallback else None)
            if existing is not None:
                handled |= {key, fallback}
                if self._may_requeue(existing):
                    await self._requeue(existing)
                    started += 1
                else:
                    known += 1
                continue
            if key in history or (fallback and fallback in history):
                known += 1
                continue
            if not has_web_scheme(row.url):
                handled.add(key)
                continue
            if not is_eligible(row):
                continue
            handled |= {key, fallback}
            log.info(
                "WEBHOOK MONITOR: New eligible URL detected: %s (timestamp: %s) [type=%s]",
                row.url,
                row.timestamp,
                row.kind,
            )
            download = DownloadRow(
                download_id=f"csv_{uuid.uuid4().hex[:8]}",
                key=key,
                url=row.url,
                state=hs.DRY_RUN if self.settings.dry_run else hs.QUEUED,
                fallback_url=row.fallback_url,
                original_filename=row.original_filename,
                provider=row.provider,
                url_type=row.kind,
                webhook_timestamp=row.timestamp,
                outcome="dry_run" if self.settings.dry_run else "",
                passes=1,
            )
            download = await self._store.add_download(download)
            tracked[key] = download
            if self.settings.dry_run:
                log.info("[DRY RUN] Would start Dropbox download for URL: %s", row.url)
                await self._store.remember([key, fallback], row.timestamp or hs.local_now())
                metrics.DOWNLOADS.labels("dry_run").inc()
            self._publish(download)
            started += 1
        if started:
            log.info("WEBHOOK MONITOR: %d new download(s) started", started)
        else:
            log.debug("WEBHOOK MONITOR: nothing new (%d known, %d without URL)", known, missing)
        await self._start_queued()
        return PassResult(len(rows), started)

    def _may_requeue(self, row: DownloadRow) -> bool:
        return (
            row.state == hs.FAILED
            and row.outcome in TRANSIENT_OUTCOMES
            and row.passes < self.settings.max_passes
        )

    async def _requeue(self, row: DownloadRow) -> None:
        log.info("requeueing %s after %s (pass %d)", row.download_id, row.outcome, row.passes + 1)
        self._publish(
            await self._store.update_download(
                row.download_id, state=hs.QUEUED, passes=row.passes + 1
            )
        )

    def _prune(self) -> None:
        """Forgets finished tasks, logging any that died of an unexpected error."""
        for download_id, task in list(self._tasks.items()):
            if task.done():
                del self._tasks[download_id]
                if not task.cancelled() and task.exception() is not None:
                    log.error(
                        "download %s stopped on an unexpected error",
                        download_id,
                        exc_info=task.exception(),
                    )

    async def _start_queued(self) -> None:
        self._prune()
        for row in await self._store.downloads(states=[hs.QUEUED], limit=1_000_000):
            task = self._tasks.get(row.download_id)
            if task is None or task.done():
                self._tasks[row.download_id] = asyncio.create_task(
                    self._run(row.download_id), name=f"download-{row.download_id}"
                )

    # One download.

    async def _run(self, download_id: str) -> None:
        async with self._slots:
            row = await self._store.update_download(
                download_id, state=hs.DOWNLOADING, outcome="", error=""
            )
            self._progress[download_id] = (0, 0)
            self._publish(row)
            started = time.perf_counter()
            metrics.DOWNLOADS_ACTIVE.inc()
            try:
                result = await self._fetch(row)
            except DownloadFailed as failure:
                elapsed = time.perf_counter() - started
                metrics.DOWNLOADS.labels(failure.outcome).inc()
                metrics.DOWNLOADS_SECONDS.labels(failure.outcome).observe(elapsed)
                log.warning("download %s failed (%s): %s", download_id, failure.outcome, failure)
                self._publish(
                    await self._store.update_download(
                        download_id,
                        state=hs.FAILED,
                        outcome=failure.outcome,
                        error=str(failure),
                        attempts=row.attempts + failure.attempts,
                    )
                )
                return
            finally:
                metrics.DOWNLOADS_ACTIVE.dec()
                self._progress.pop(download_id, None)
            metrics.DOWNLOADS.labels("completed").inc()
            metrics.DOWNLOADS_SECONDS.labels("completed").observe(time.perf_counter() - started)
            await self._store.remember(
                [row.key, normalize_url(row.fallback_url)], row.webhook_timestamp or hs.local_now()
            )
            row = await self._store.update_download(
                download_id,
                state=hs.AWAITING_CONFIRMATION,
                outcome="completed",
                path=self._media.relative(result.path),
                size_bytes=result.size_bytes,
                attempts=row.attempts + result.attempts,
            )
            log.info("downloaded %s: %s (%d bytes)", download_id, row.path, row.size_bytes)
            self._publish(row)
        if self.settings.auto_submit and self._submitter is not None:
            await self._submit_later(row)

    async def _fetch(self, row: DownloadRow) -> FetchResult:
        """The main URL, then the fallback URL; ``attempts`` (of the result or the failure)
        counts the HTTP attempts on both."""
        used = 0
        candidates = [u for u in (row.url, row.fallback_url) if u]
        for index, url in enumerate(candidates):
            try:
                result = await self._fetcher.download(
                    url,
                    timestamp=row.webhook_timestamp,
                    forced_filename=row.original_filename,
                    on_progress=self._progress_callback(row),
                )
            except DownloadFailed as failure:
                used += failure.attempts
                if index == len(candidates) - 1:
                    failure.attempts = used
                    raise
                log.warning("%s failed (%s); trying the fallback URL", url, failure.outcome)
            else:
                return replace(result, attempts=used + result.attempts)
        raise AssertionError("unreachable")

    def _progress_callback(self, row: DownloadRow) -> ProgressCallback:
        last = [0.0]

        def on_progress(done: int, total: int) -> None:
            self._progress[row.download_id] = (done, total)
            now = time.monotonic()
            if now - last[0] >= _PROGRESS_EVERY_S or (total and done >= total):
                last[0] = now
                self._publish(row)

        return on_progress

    async def _submit(self, row: DownloadRow) -> DownloadRow:
        """SubmitJob once per download at a time (a confirmation racing the automatic
        submission, or a double click, is refused with :class:`WrongState`)."""
        assert self._submitter is not None
        if row.download_id in self._submitting:
            raise WrongState(f"download {row.download_id} is being submitted")
        self._submitting.add(row.download_id)
        name = Path(row.path).name
        try:
            job_id = await self._submitter.submit(
                row.path, f"download {row.download_id}: {name}", key=f"download:{row.download_id}"
            )
        except SubmitError as exc:
            metrics.DOWNLOADS_JOBS_SUBMITTED.labels("failed").inc()
            log.warning("submitting %s failed: %s", row.download_id, exc)
            row = await self._store.update_download(
                row.download_id, state=hs.FAILED, outcome="submit_failed", error=str(exc)
            )
        else:
            metrics.DOWNLOADS_JOBS_SUBMITTED.labels("submitted").inc()
            log.info("download %s became job %s", row.download_id, job_id)
            row = await self._store.update_download(
                row.download_id, state=hs.SUBMITTED, outcome="completed", error="", job_id=job_id
            )
        finally:
            self._submitting.discard(row.download_id)
        self._publish(row)
        return row

    # Actions (RPCs).

    async def get(self, download_id: str) -> DownloadView:
        row = await self._store.get_download(download_id)
        if row is None:
            raise DownloadNotFound(f"no download {download_id!r}")
        return self.view(row)

    async def list(self, states: Sequence[str] = (), limit: int = 100) -> list[DownloadView]:
        return [self.view(row) for row in await self._store.downloads(states=states, limit=limit)]

    async def confirm(self, download_id: str) -> DownloadView:
        row = (await self.get(download_id)).row
        if row.state != hs.AWAITING_CONFIRMATION:
            raise WrongState(f"download {download_id} is {row.state}, not awaiting confirmation")
        if self._submitter is None:
            raise WrongState("no orchestrator is set (DOWNLOADS_ORCHESTRATOR_ADDR)")
        return self.view(await self._submit(row))

    async def retry(self, download_id: str) -> DownloadView:
        row = (await self.get(download_id)).row
        if row.state != hs.FAILED:
            raise WrongState(f"download {download_id} is {row.state}, not failed")
        if row.outcome == "submit_failed" and row.path and self._submitter is not None:
            return self.view(await self._submit(row))
        row = await self._store.update_download(download_id, state=hs.QUEUED, passes=0)
        self._publish(row)
        await self._start_queued()
        return self.view(row)

    async def history_count(self) -> int:
        return await self._store.history_count()

    # Events.

    def view(self, row: DownloadRow) -> DownloadView:
        done, total = self._progress.get(row.download_id, (row.size_bytes, row.size_bytes))
        return DownloadView(row, done, total)

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def _publish(self, row: DownloadRow) -> None:
        self._sequence += 1
        event = Event(self._sequence, time.time(), self.view(row))
        for subscription in self._subscribers:
            try:
                subscription.queue.put_nowait(event)
            except asyncio.QueueFull:
                subscription.lagged = True
