"""Bearer tokens: constant-time comparison, never logged.

Every mutating request needs ``Authorization: Bearer <token>``; reads too when ``auth_reads``.
The websocket authenticates itself (see :mod:`gateway.events`): browsers cannot set headers on
one, so it takes the token in its first message.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from gateway.errors import ApiError
from gateway.keys import SETTINGS

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Reads that stay open even with ``auth_reads``: probes, the description, the dashboard shell.
PUBLIC_READS = ("/healthz", "/metrics", "/api/v1/openapi.json", "/static/")
PUBLIC_EXACT = frozenset({"/", "/healthz", "/metrics", "/api/v1/openapi.json", "/ws"})

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


def needs_auth(request: web.Request) -> bool:
    settings = request.app[SETTINGS]
    if not settings.auth_enabled:
        return False
    if request.method not in SAFE_METHODS:
        return True
    if not settings.auth_reads:
        return False
    path = request.path
    return path not in PUBLIC_EXACT and not path.startswith(PUBLIC_READS)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if needs_auth(request) and not token_valid(
        bearer_token(request), request.app[SETTINGS].token_list
    ):
        raise ApiError(
            401,
            "a valid bearer token is required (Authorization: Bearer <token>)",
            {"WWW-Authenticate": 'Bearer realm="videoanalysis"'},
        )
    return await handler(request)
