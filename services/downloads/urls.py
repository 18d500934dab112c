"""Webhook URLs: the legacy normalised key, classification and auto-download eligibility.

:func:`normalize_url` must give byte-identical keys to the legacy tool (spec 01 §3.2), quirks
included, so an existing history keeps deduplicating: an ``&amp%3B`` left in a link makes a stray
``;dl`` key, and the whole-URL unquote breaks an encoded ``%26``. Do not "fix" it without
migrating the history.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

#: Hosts the legacy tool calls Dropbox for eligibility (exact names).
DROPBOX_HOSTS = frozenset({"dropbox.com", "www.dropbox.com", "dl.dropboxusercontent.com"})
DIRECT_HOST = "dl.dropboxusercontent.com"
_SLASHES = re.compile(r"/+")


def normalize_url(url: str | None) -> str:
    """The legacy history key of ``url`` (``""`` for an empty one)."""
    if not url:
        return ""
    try:
        return _normalize(url)
    except Exception:  # the legacy key of anything unparsable (a bad port) is the stripped text
        return url.strip()


def _normalize(url: str) -> str:
    text = html.unescape(url.strip())
    for _ in range(3):
        before = text
        text = text.replace("amp%3B", "&").replace("amp%3b", "&")
        if "%3B" in text or "%3b" in text:
            unquoted = unquote(text)
            if "://" in unquoted:
                text = unquoted
        if text == before:
            break
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = f"[{host}]" if ":" in host else host
    if parts.username is not None:
        userinfo = quote(unquote(parts.username), safe="")
        if parts.password is not None:
            userinfo += ":" + quote(unquote(parts.password), safe="")
        netloc = f"{userinfo}@{netloc}"
    if port is not None and not (
        (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
    ):
        netloc = f"{netloc}:{port}"
    path = _SLASHES.sub("/", unquote(parts.path))
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    path = quote(path, safe="/-._~")
    pairs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        pair = (key.strip(), value.strip())
        if pair[0] and pair not in pairs:
            pairs.append(pair)
    if host.endswith("dropbox.com") or host == DIRECT_HOST:  # [Q] also "notdropbox.com"
        pairs = [p for p in pairs if p[0] != "dl"] + [("dl", "1")]
    pairs.sort(key=lambda p: (p[0].lower(), p[1]))
    return urlunsplit((scheme, netloc, path, urlencode(pairs), ""))


def is_dropbox_url(url: str) -> bool:
    """The host is exactly one of Dropbox's (eligibility; not the normaliser's suffix test)."""
    try:
        return (urlsplit(url.strip()).hostname or "").lower() in DROPBOX_HOSTS
    except ValueError:
        return False


def is_proxy_url(url: str) -> bool:
    """An R2/Worker proxy of a Dropbox link (``…workers.dev/dropbox/…``)."""
    lower = url.lower()
    return "/dropbox/" in lower and ("workers.dev" in lower or "worker" in lower)


def classify(url: str) -> str:
    """The legacy ``url_type`` of a URL (lowercase substring tests, first match wins)."""
    lower = url.lower()
    if "fromsmash.com" in lower:
        return "fromsmash"
    if "swisstransfer.com" in lower:
        return "swisstransfer"
    if "dropbox.com" in lower or DIRECT_HOST in lower or is_proxy_url(url):
        return "dropbox"
    return "external"


def is_folder_link(url: str) -> bool:
    return "/scl/fo/" in url


@dataclass(frozen=True)
class Row:
    """One webhook record (both legacy schemas give this shape)."""

    url: str
    timestamp: str = ""
    fallback_url: str = ""
    original_filename: str = ""
    provider: str = ""
    url_type: str = ""
    source: str = "webhook"

    @property
    def kind(self) -> str:
        """``url_type`` as eligibility reads it (the row's own value first)."""
        if self.url_type:
            return self.url_type.lower()
        if "fromsmash" in self.url.lower():
            return "fromsmash"
        if "swisstransfer" in self.url.lower():
            return "swisstransfer"
        if is_dropbox_url(self.url) or is_proxy_url(self.url) or self.provider.lower() == "dropbox":
            return "dropbox"
        return "external"


def has_web_scheme(url: str) -> bool:
    """False only for an explicit non-http(s) scheme; an empty scheme passes (legacy §3.3 e)."""
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return True
    return scheme in ("", "http", "https")


def is_eligible(row: Row) -> bool:
    """Auto-download needs a Dropbox-like link to a zip from a new-schema row (legacy §3.3 4)."""
    url_lower = row.url.lower()
    dropbox_like = (
        row.kind == "dropbox"
        or row.provider.lower() == "dropbox"
        or is_dropbox_url(row.url)
        or is_proxy_url(row.url)
    )
    archive_like = (
        row.original_filename.lower().endswith(".zip")
        or "/scl/fo/" in url_lower
        or url_lower.endswith(".zip")
        or ".zip?" in url_lower
    )
    new_schema = bool(row.original_filename or row.fallback_url or is_proxy_url(row.url))
    return dropbox_like and archive_like and new_schema
