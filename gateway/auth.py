"""Bearer tokens: constant-time comparison, never logged.

Every mutating request needs ``Authorization: Bearer <token>``; reads too when ``auth_reads``.
The websocket authenticates itself (see :mod:`gateway.events`): browsers cannot set headers on
one, so it takes the token in its first message.

Nor can ``<video>`` and ``<img>`` elements: for them, a read may instead carry the session
cookie that ``POST /api/v1/session`` (with a bearer token) sets. The cookie holds an expiry and
an HMAC of it keyed by the configured tokens, so every replica accepts it, and rotating the
tokens ends every session. It never authorises a mutation.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from gateway.errors import ApiError
from gateway.keys import SETTINGS

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Reads that stay open even with ``auth_reads``: probes, the description, the dashboard shell.
PUBLIC_READS = ("/healthz", "/metrics", "/api/v1/openapi.json", "/static/")
PUBLIC_EXACT = frozenset({"/", "/healthz", "/metrics", "/api/v1/openapi.json", "/ws"})

SESSION_COOKIE = "gateway_session"
SESSION_PATH = "/api/v1/session"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_valid(token: str | None, tokens: Sequence[str]) -> bool:
    """Compares against every configured token (no early exit, constant time per token)."""
    if not token:
        return False
    given = token.encode()
    matched = False
    for candidate in tokens:
        matched |= hmac.compare_digest(given, candidate.encode())
    return matched


def bearer_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _session_mac(tokens: Sequence[str], expires: int) -> str:
    key = hashlib.sha256("\0".join(sorted(tokens)).encode()).digest()
    return hmac.new(key, f"session:{expires}".encode(), hashlib.sha256).hexdigest()


def session_cookie(tokens: Sequence[str], ttl_s: float, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl_s)
    return f"{expires}.{_session_mac(tokens, expires)}"


def session_valid(value: str | None, tokens: Sequence[str], now: float | None = None) -> bool:
    expires_text, _, mac = (value or "").partition(".")
    if not expires_text.isdigit() or not tokens:
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(mac.encode(), _session_mac(tokens, expires).encode())


def needs_auth(request: web.Request) -> bool:
    settings = request.app[SETTINGS]
    if not settings.auth_enabled:
        return False
    if request.method == "DELETE" and request.path == SESSION_PATH:
        return False  # forgetting the cookie needs no token
    if request.method not in SAFE_METHODS:
        return True
    if not settings.auth_reads:
        return False
    path = request.path
    return path not in PUBLIC_EXACT and not path.startswith(PUBLIC_READS)


def authorised(request: web.Request) -> bool:
    tokens = request.app[SETTINGS].token_list
    if token_valid(bearer_token(request), tokens):
        return True
    return request.method in SAFE_METHODS and session_valid(
        request.cookies.get(SESSION_COOKIE), tokens
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if needs_auth(request) and not authorised(request):
        raise ApiError(
            401,
            "a valid bearer token is required (Authorization: Bearer <token>)",
            {"WWW-Authenticate": 'Bearer realm="videoanalysis"'},
        )
    return await handler(request)


async def start_session(request: web.Request) -> web.Response:
    """``POST /api/v1/session`` (bearer token checked by the middleware): sets the read cookie."""
    settings = request.app[SETTINGS]
    response = web.Response(status=204)
    if settings.auth_enabled:
        response.set_cookie(
            SESSION_COOKIE,
            session_cookie(settings.token_list, settings.session_ttl_s),
            max_age=int(settings.session_ttl_s),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
    return response


async def end_session(request: web.Request) -> web.Response:
    """``DELETE /api/v1/session``: forgets the read cookie."""
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response
