"""HTTP errors as JSON (``{"error": {"status", "message"}}``) and the gRPC status to HTTP map."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from aiohttp import web

from services.common.errors import ServiceError

_HTTP_FOR_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class ApiError(Exception):
    """An error the client sees as ``status`` with ``message`` (safe to show)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": {"status": status, "message": message}}, status=status, headers=headers
    )


def from_grpc(exc: grpc.aio.AioRpcError, peer: str = "orchestrator") -> ApiError:
    """A service's refusal as an HTTP error (its details are client-safe messages)."""
    code = exc.code()
    status = _HTTP_FOR_GRPC.get(code, 502)
    if status == 503:
        return ApiError(503, f"the {peer} is unavailable")
    if status >= 500:
        return ApiError(status, f"the {peer} failed ({code.name.lower()})")
    return ApiError(status, exc.details() or code.name.lower())


def from_service_error(exc: ServiceError) -> ApiError:
    code = exc.code
    return ApiError(_HTTP_FOR_GRPC.get(code, 500), str(exc) or exc.__class__.__name__)
