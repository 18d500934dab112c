"""Downloads one Dropbox archive (legacy ``DownloadService``, spec 01 §3.4, defects fixed).

Kept: the normalised URL with ``dl=1``, the HEAD probe and the direct-host rewrite
(``dl.dropboxusercontent.com``, never for ``/scl/fo/`` folder links), the filename rules and the
folder-link size check. Fixed: the body is streamed to a hidden temporary file beside the target
and renamed only once it is complete and checked (``services.common.files.replacing``), so no
partial or invalid file is ever left; a body that is an HTML page, shorter than its
Content-Length, larger than the limit or not a zip is refused with a precise outcome; retryable
failures (network, stalled reads, truncation, 429 with its Retry-After, 5xx) are retried with
exponential backoff; a name collision gets ``_2``, ``_3``… and never overwrites.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from services.common import metrics
from services.common.files import replacing
from services.downloads.config import DownloadsSettings
from services.downloads.urls import DIRECT_HOST, is_folder_link, normalize_url
from services.ingest.naming import ARCHIVE_SUFFIXES, sanitize_component, unique_name

log = logging.getLogger(__name__)

MAX_NAME_BYTES = 230
_CD_UTF8 = re.compile(r"filename\*=UTF-8''([^;\n\r]+)", re.IGNORECASE)
_CD_QUOTED = re.compile(r'filename="([^"]+)"', re.IGNORECASE)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_FOLDER_SUFFIXES = (".zip", ".rar", ".7z", ".tar", ".gz", ".bz2")

#: ``on_progress(done_bytes, total_bytes)``; total is 0 when the server sent no length.
ProgressCallback = Callable[[int, int], None]


class DownloadFailed(Exception):
    """A download that did not produce a file; ``outcome`` is the machine-readable reason."""

    def __init__(
        self, outcome: str, message: str, *, retryable: bool = False, retry_after_s: float = 0.0
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.attempts = 0


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size_bytes: int
    content_type: str
    attempts: int


def looks_like_zip(content_type: str, disposition: str) -> bool:
    """The legacy HEAD test: a zip or octet-stream type, or a Content-Disposition filename."""
    return (
        "zip" in content_type.lower()
        or "octet-stream" in content_type.lower()
        or "filename" in disposition.lower()
    )


def label(timestamp: str) -> str:
    """The legacy log label part: ``2024-05-01 10:00:00`` → ``2024-05-01_100000``."""
    return timestamp.replace("/", "").replace(":", "").replace(" ", "_")


def choose_filename(
    url: str, timestamp: str, disposition: str, forced: str = "", default_suffix: str = ".zip"
) -> str:
    """The legacy file name rules; a name without an archive suffix gets ``default_suffix``
    (every eligible link is a zip; the legacy ``download_<ts>`` had no suffix at all)."""
    name = ""
    if forced:
        name = Path(forced.replace("\\", "/")).name
    elif match := _CD_UTF8.search(disposition):
        name = unquote(match.group(1).strip())
    elif match := _CD_QUOTED.search(disposition):
        name = match.group(1)
        name = unquote(name) if "%" in name else name
        name = Path(name.replace("\\", "/")).name
    if not name:
        name = f"download_{label(timestamp) or time.strftime('%Y-%m-%d_%H%M%S')}"
    if is_folder_link(url) and not name.lower().endswith(_FOLDER_SUFFIXES):
        name = str(Path(name).with_suffix(".zip")) if Path(name).suffix else name + ".zip"
    if not name.lower().endswith(ARCHIVE_SUFFIXES):
        name += default_suffix
    clean, _issues = sanitize_component(name, max_bytes=MAX_NAME_BYTES)
    return clean


def retry_after_seconds(value: str | None) -> float:
    """Retry-After as seconds (a number or an HTTP date); 0 when absent or unreadable."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


class Fetcher:
    """Downloads into ``folder`` through the process's one ``aiohttp.ClientSession``."""

    def __init__(
        self, session: aiohttp.ClientSession, settings: DownloadsSettings, folder: Path
    ) -> None:
        self._session = session
        self._settings = settings
        self._folder = folder
        self._reserved: set[str] = set()

    def route(self, url: str) -> str:
        """Where a Dropbox URL is really fetched (``dropbox_*base_url``); others unchanged."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host in ("dropbox.com", "www.dropbox.com"):
            base = self._settings.dropbox_base_url
        elif host == DIRECT_HOST:
            base = self._settings.dropbox_direct_base_url
        else:
            return url
        return base.rstrip("/") + urlunsplit(("", "", parts.path, parts.query, ""))

    def direct(self, url: str) -> str:
        """The legacy direct-host rewrite of a ``*dropbox.com`` link (not folder links)."""
        parts = urlsplit(url)
        if not (parts.hostname or "").lower().endswith("dropbox.com") or is_folder_link(url):
            return self.route(url)
        return self.route(urlunsplit(("https", DIRECT_HOST, parts.path, parts.query, "")))

    async def download(
        self,
        url: str,
        *,
        timestamp: str = "",
        forced_filename: str = "",
        on_progress: ProgressCallback | None = None,
        on_attempt: Callable[[int], None] | None = None,
    ) -> FetchResult:
        """Downloads ``url``; raises :class:`DownloadFailed` after the last attempt."""
        settings = self._settings
        target = normalize_url(url).replace("dl=0", "dl=1")
        request_url = await self._probe(target)
        attempts = max(1, settings.download_attempts)
        backoff = settings.retry_backoff_s
        for attempt in range(1, attempts + 1):
            if on_attempt is not None:
                on_attempt(attempt)
            try:
                return await self._get(
                    target, request_url, timestamp, forced_filename, on_progress, attempt
                )
            except DownloadFailed as failure:
                failure.attempts = attempt
                if not failure.retryable or attempt == attempts:
                    raise
                wait = failure.retry_after_s or backoff
                wait = min(wait, settings.max_retry_after_s)
                log.warning(
                    "download attempt %d/%d failed (%s): %s; retrying in %.1f s",
                    attempt,
                    attempts,
                    failure.outcome,
                    failure,
                    wait,
                )
                await asyncio.sleep(wait)
                backoff *= 2
        raise AssertionError("unreachable")

    async def _probe(self, url: str) -> str:
        """HEAD (redirects followed): a response that does not look like a zip sends the GET to
        the direct host. A failed HEAD only logs."""
        routed = self.route(url)
        try:
            async with self._session.head(
                routed,
                allow_redirects=True,
                timeout=aiohttp.ClientTimeout(total=self._settings.head_timeout_s),
                headers={"User-Agent": self._settings.user_agent},
            ) as response:
                content_type = response.headers.get("Content-Type", "")
                disposition = response.headers.get("Content-Disposition", "")
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning(
                "HEAD %s failed (%s); downloading anyway", routed, exc or type(exc).__name__
            )
            return routed
        if looks_like_zip(content_type, disposition):
            return routed
        return self.direct(url)

    async def _get(
        self,
        url: str,
        request_url: str,
        timestamp: str,
        forced_filename: str,
        on_progress: ProgressCallback | None,
        attempt: int,
    ) -> FetchResult:
        settings = self._settings
        timeout = aiohttp.ClientTimeout(
            total=settings.total_timeout_s,
            sock_connect=settings.connect_timeout_s,
            sock_read=settings.read_timeout_s,
        )
        try:
            async with self._session.get(
                request_url,
                allow_redirects=True,
                timeout=timeout,
                headers={"User-Agent": settings.user_agent},
            ) as response:
                self._check_response(url, response)
                name = choose_filename(
                    url,
                    timestamp,
                    response.headers.get("Content-Disposition", ""),
                    forced_filename,
                )
                return await self._save(url, response, name, on_progress, attempt)
        except TimeoutError as exc:
            raise DownloadFailed(
                "timeout", "the server stopped sending (read timeout)", retryable=True
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise DownloadFailed(
                "truncated", f"the body ended early: {exc}", retryable=True
            ) from exc
        except aiohttp.TooManyRedirects as exc:
            raise DownloadFailed("http_error", f"too many redirects: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise DownloadFailed("network_error", f"network error: {exc}", retryable=True) from exc

    def _check_response(self, url: str, response: aiohttp.ClientResponse) -> None:
        status = response.status
        if status == 429:
            raise DownloadFailed(
                "rate_limited",
                "the server answered 429 Too Many Requests",
                retryable=True,
                retry_after_s=retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status >= 400:
            raise DownloadFailed(
                "server_error" if status >= 500 else "http_error",
                f"the server answered HTTP {status}",
                retryable=status >= 500,
            )
        content_type = response.headers.get("Content-Type", "")
        lowered = content_type.lower()
        if lowered.startswith(("text/html", "application/xhtml")) or (
            is_folder_link(url) and "zip" not in lowered and "octet-stream" not in lowered
        ):
            raise DownloadFailed(
                "wrong_content_type",
                f"the server sent {content_type or 'no content type'}, not an archive"
                " (an error or login page?)",
            )
        length = response.content_length
        if length is not None and length > self._settings.max_download_bytes:
            raise DownloadFailed(
                "too_large",
                f"{length} bytes is over the limit of {self._settings.max_download_bytes}",
            )

    async def _save(
        self,
        url: str,
        response: aiohttp.ClientResponse,
        name: str,
        on_progress: ProgressCallback | None,
        attempt: int,
    ) -> FetchResult:
        settings = self._settings
        self._folder.mkdir(parents=True, exist_ok=True)
        final_name = unique_name(name, lambda n: n in self._reserved or (self._folder / n).exists())
        self._reserved.add(final_name)
        total = response.content_length or 0
        done = 0
        head = b""
        try:
            with replacing(self._folder / final_name) as temp:
                handle = await asyncio.to_thread(temp.open, "wb")
                try:
                    if on_progress is not None:
                        on_progress(0, total)
                    async for chunk in response.content.iter_chunked(settings.chunk_bytes):
                        done += len(chunk)
                        metrics.DOWNLOADS_BYTES.inc(len(chunk))
                        if done > settings.max_download_bytes:
                            raise DownloadFailed(
                                "too_large",
                                f"over the limit of {settings.max_download_bytes} bytes",
                            )
                        if len(head) < 4:
                            head += chunk[: 4 - len(head)]
                        await asyncio.to_thread(handle.write, chunk)
                        if on_progress is not None:
                            on_progress(done, total)
                    await asyncio.to_thread(_flush, handle)
                finally:
                    await asyncio.to_thread(handle.close)
                if total and done != total:
                    raise DownloadFailed(
                        "truncated", f"received {done} of {total} bytes", retryable=True
                    )
                if final_name.lower().endswith(".zip") and not head.startswith(_ZIP_MAGIC):
                    raise DownloadFailed(
                        "not_an_archive", f"the body is not a zip archive (starts {head!r})"
                    )
                if is_folder_link(url) and done < settings.min_folder_zip_bytes:
                    raise DownloadFailed(
                        "wrong_content_type",
                        f"Invalid ZIP response (Content-Type="
                        f"'{response.headers.get('Content-Type', '')}', Size={done} bytes)",
                    )
        finally:
            self._reserved.discard(final_name)
        return FetchResult(
            path=self._folder / final_name,
            size_bytes=done,
            content_type=response.headers.get("Content-Type", ""),
            attempts=attempt,
        )


def _flush(handle: BinaryIO) -> None:
    """Data on disk before the rename (so the rename's own fsync finds nothing left to write)."""
    handle.flush()
    os.fsync(handle.fileno())
