"""The JSON webhook that lists the links (legacy ``webhook_service``, spec 01 §3.1).

A fresh answer is reused for ``cache_ttl_s``; otherwise up to ``len(retry_delays_s) + 1``
attempts, and after the last failure :meth:`Webhook.fetch` raises :class:`WebhookError` (a stale
cache is never served). The body must be a JSON list (anything else gives no rows); items that are
not objects or lack a URL are skipped one by one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from services.common import metrics
from services.downloads.history import LOCAL_FORMAT, local_timestamp
from services.downloads.urls import Row, classify

log = logging.getLogger(__name__)


class WebhookError(Exception):
    """The webhook could not be read; ``reason`` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class WebhookStatus:
    """The legacy status dict ``{available, last_fetch_ts, error, records}``."""

    available: bool = False
    last_fetch_ts: str = ""
    error: str = ""
    records: int = 0


def parse_rows(data: Any) -> list[Row]:
    """Rows of a webhook body (new schema when ``r2_url`` or ``source_url`` is set, else legacy)."""
    if not isinstance(data, list):
        return []
    rows = []
    for item in data:
        try:
            row = _row(item)
        except (TypeError, ValueError, AttributeError) as exc:
            log.debug("skipping webhook item %r: %s", item, exc)
            continue
        if row is not None:
            rows.append(row)
    return rows


def _text(item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{name} is not a string")
    return value.strip()


def _row(item: Any) -> Row | None:
    if not isinstance(item, dict):
        return None
    r2_url, source_url = _text(item, "r2_url"), _text(item, "source_url")
    if r2_url or source_url:
        url = r2_url or source_url
        provider = _text(item, "provider")
        return Row(
            url=url,
            fallback_url=source_url if r2_url and source_url and r2_url != source_url else "",
            original_filename=_text(item, "original_filename"),
            provider=provider,
            timestamp=local_timestamp(_text(item, "created_at")),
            url_type=provider.lower() if provider else classify(url),
        )
    url = _text(item, "url")
    if not url:
        return None
    return Row(
        url=url,
        timestamp=local_timestamp(_text(item, "timestamp")),
        source=_text(item, "source") or "webhook",
        url_type=_text(item, "url_type") or classify(url),
    )


class Webhook:
    """Reads the webhook through the process's one ``aiohttp.ClientSession``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        cache_ttl_s: float = 60.0,
        timeout_s: float = 10.0,
        retry_delays_s: Sequence[float] = (1.0, 2.0),
    ) -> None:
        self._session = session
        self._url = url
        self._ttl = max(0.0, cache_ttl_s)
        self._timeout = aiohttp.ClientTimeout(total=max(1.0, timeout_s))
        self._delays = tuple(retry_delays_s)
        self._cache: list[Row] | None = None
        self._fetched_at = 0.0
        self.status = WebhookStatus()

    async def fetch(self) -> list[Row]:
        if self._cache is not None and time.monotonic() - self._fetched_at < self._ttl:
            return self._cache
        started = time.monotonic()
        started_ts = time.strftime(LOCAL_FORMAT)
        error: WebhookError | None = None
        for attempt, delay in enumerate((*self._delays, None)):
            try:
                data = await self._get()
            except WebhookError as exc:
                error = exc
                metrics.DOWNLOADS_WEBHOOK_POLL_ERRORS.labels(exc.reason).inc()
                log.warning("webhook attempt %d failed: %s", attempt + 1, exc)
                if delay is not None:
                    await asyncio.sleep(delay)
                continue
            rows = parse_rows(data)
            self._cache, self._fetched_at = rows, started
            self.status = WebhookStatus(True, started_ts, "", len(rows))
            return rows
        assert error is not None
        self.status = WebhookStatus(False, started_ts, str(error), self.status.records)
        raise error

    async def _get(self) -> Any:
        try:
            async with self._session.get(self._url, timeout=self._timeout) as response:
                if response.status >= 400:
                    raise WebhookError("http_error", f"webhook answered HTTP {response.status}")
                body = await response.read()
        except TimeoutError as exc:
            raise WebhookError("timeout", "webhook timed out") from exc
        except aiohttp.ClientError as exc:
            raise WebhookError("network_error", f"webhook unreachable: {exc}") from exc
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WebhookError("bad_json", f"webhook answer is not JSON: {exc}") from exc
