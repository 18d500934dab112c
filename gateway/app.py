"""The aiohttp application: middlewares, routes, the orchestrator channel and the event hub.

``create_app(settings)`` builds everything; the cleanup context opens the one orchestrator
channel and starts the one event subscription at startup and closes them at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import uuid
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSCloseCode, web
from prometheus_client.aiohttp import make_aiohttp_handler

from gateway import api, downloads, events
from gateway.auth import Handler, auth_middleware
from gateway.client import OrchestratorClient
from gateway.config import GatewaySettings
from gateway.errors import ApiError, from_service_error, json_error
from gateway.keys import HUB, MEDIA, ORCHESTRATOR, SETTINGS, SOCKETS
from services.common import metrics
from services.common.channels import open_channel
from services.common.errors import ServiceError
from services.common.logs import request_id_var
from services.common.media import MediaRoot
from services.common.security import SecurityConfig

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
#: The access log names the request line and status, never a header (tokens stay out of it).
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'
REQUEST_ID_HEADER = "X-Request-Id"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON with its status; a bug is a generic 500 (traceback logged)."""
    request_id = request.headers.get(REQUEST_ID_HEADER, "")[:64] or uuid.uuid4().hex[:16]
    request_id_var.set(request_id)
    try:
        response = await handler(request)
    except ApiError as exc:
        response = json_error(exc.status, exc.message, exc.headers)
    except ServiceError as exc:
        error = from_service_error(exc)
        response = json_error(error.status, error.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text.split(": ", 1)[-1] if exc.text else exc.reason
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        response = json_error(exc.status, message or exc.reason, headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.rel_url.path)
        response = json_error(500, "internal error (see the gateway log)")
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests by route template (never the concrete path: ids stay out of the labels)."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.HTTP_REQUESTS.labels(route, str(status)).inc()


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def index(_request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise ApiError(404, "the dashboard is not installed")
    return web.FileResponse(page)


async def static_file(request: web.Request) -> web.StreamResponse:
    """A dashboard file; anything that is not a file inside ``static/`` is a JSON 404."""
    relative = request.match_info["filename"]
    path = STATIC_DIR / relative.replace("\x00", "")
    with contextlib.suppress(OSError, ValueError):
        path = path.resolve()
    if STATIC_DIR not in path.parents or not path.is_file():
        raise ApiError(404, "no such file")
    return web.FileResponse(path)


async def _orchestrator_ctx(app: web.Application) -> AsyncIterator[None]:
    """The one orchestrator channel, its client and the event hub's subscription."""
    settings = app[SETTINGS]
    channel = open_channel(settings.orchestrator_addr, security=SecurityConfig.of(settings))
    client = OrchestratorClient(channel, settings.rpc_timeout_s)
    hub = events.EventHub(client, settings)
    app[ORCHESTRATOR] = client
    app[HUB] = hub
    hub.start()
    try:
        yield
    finally:
        await hub.stop()
        await channel.close(None)


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[SOCKETS]):
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"gateway shutting down")


def create_app(settings: GatewaySettings) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, auth_middleware],
        client_max_size=1024**2,
    )
    app[SETTINGS] = settings
    app[MEDIA] = MediaRoot(settings.media_root)
    sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
    app[SOCKETS] = sockets
    app.cleanup_ctx.append(contextlib.asynccontextmanager(_orchestrator_ctx))
    app.cleanup_ctx.append(contextlib.asynccontextmanager(downloads.downloads_ctx))
    app.on_shutdown.append(_close_sockets)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", make_aiohttp_handler())
    app.router.add_get("/ws", events.websocket_handler)
    api.setup_routes(app)
    downloads.setup_routes(app)
    app.router.add_get("/", index)
    app.router.add_get("/static/{filename:.+}", static_file, name="static")
    if importlib.util.find_spec("gateway.reports") is not None:
        from gateway import reports

        setup = getattr(reports, "setup", None)
        if setup is not None:
            setup(app)
    return app
