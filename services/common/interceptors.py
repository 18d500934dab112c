"""Server interceptors, one concern each: request id, Prometheus metrics, last-resort error mapping.

``grpc.aio.ServerInterceptor.intercept_service`` only runs at handler lookup, so each interceptor
wraps the returned ``RpcMethodHandler`` (all four streaming kinds) to act around the call itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.common import metrics
from services.common.errors import ServiceError, status_code_for
from services.common.logs import REQUEST_ID_METADATA_KEY, request_id_var

log = logging.getLogger(__name__)

#: Opens around one RPC; gets the method's full name and the context, yields a per-message hook.
Around = Callable[
    [str, grpc.aio.ServicerContext], contextlib.AbstractAsyncContextManager[Callable[[], None]]
]


def _wrap_handler(
    handler: grpc.RpcMethodHandler, method: str, around: Around
) -> grpc.RpcMethodHandler:
    """Rebuilds ``handler`` so that ``around`` encloses each call of any streaming kind."""

    def unary_response(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(method, context) as on_message:
                response = await behavior(request, context)
                on_message()
                return response

        return call

    def stream_response(
        behavior: Callable[..., AsyncIterator[Any]],
    ) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with around(method, context) as on_message:
                async for response in behavior(request, context):
                    on_message()
                    yield response

        return call

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kwargs)
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **kwargs)


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.unary_unary:
        return "unary"
    if handler.unary_stream:
        return "server_stream"
    if handler.stream_unary:
        return "client_stream"
    return "bidi_stream"


def _split_method(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class _WrappingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        self.on_lookup(handler_call_details, handler)
        return _wrap_handler(handler, handler_call_details.method, self.around)

    def on_lookup(self, details: grpc.HandlerCallDetails, handler: grpc.RpcMethodHandler) -> None:
        """Called once per RPC before the call starts."""

    def around(
        self, method: str, context: grpc.aio.ServicerContext
    ) -> contextlib.AbstractAsyncContextManager[Callable[[], None]]:
        raise NotImplementedError


def _noop() -> None:
    return None


class RequestIdInterceptor(_WrappingInterceptor):
    """Takes ``x-request-id`` from the metadata (or makes one) for logs; echoes it."""

    @contextlib.asynccontextmanager
    async def around(
        self, method: str, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Callable[[], None]]:
        metadata = dict(context.invocation_metadata() or ())
        request_id = str(metadata.get(REQUEST_ID_METADATA_KEY) or uuid.uuid4().hex)
        # grpc.aio runs every RPC in its own task, whose context is a copy: the id cannot leak
        # into other RPCs, so it is never reset (a reset fails when a client cancels a stream,
        # since the handler's generator is then closed from another context).
        request_id_var.set(request_id)
        with contextlib.suppress(Exception):
            await context.send_initial_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
        yield _noop


class MetricsInterceptor(_WrappingInterceptor):
    """Counts started/handled RPCs by code, stream messages, in-flight RPCs and handling time."""

    def on_lookup(self, details: grpc.HandlerCallDetails, handler: grpc.RpcMethodHandler) -> None:
        service, name = _split_method(details.method)
        metrics.GRPC_SERVER_STARTED.labels(service, name, _rpc_type(handler)).inc()

    @contextlib.asynccontextmanager
    async def around(
        self, method: str, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Callable[[], None]]:
        service, name = _split_method(method)
        sent = metrics.GRPC_SERVER_MSG_SENT.labels(service, name)
        in_flight = metrics.GRPC_SERVER_IN_FLIGHT.labels(service)
        in_flight.inc()
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            yield sent.inc
        except BaseException as exc:
            code = _code_after(exc, context)
            raise
        else:
            code = context.code() or grpc.StatusCode.OK  # type: ignore[attr-defined]
        finally:
            in_flight.dec()
            metrics.GRPC_SERVER_HANDLING_SECONDS.labels(service, name).observe(
                time.perf_counter() - started
            )
            metrics.GRPC_SERVER_HANDLED.labels(service, name, _code_name(code)).inc()


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    # Some grpcio versions report the code of an aborted RPC as an int.
    for candidate in grpc.StatusCode:
        if candidate.value[0] == code:
            return candidate.name
    return str(code)


def _code_after(exc: BaseException, context: grpc.aio.ServicerContext) -> Any:
    import asyncio

    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    set_code = context.code()  # type: ignore[attr-defined]
    if set_code not in (None, grpc.StatusCode.OK, 0):
        return set_code
    return status_code_for(exc)[0]


class ErrorMappingInterceptor(_WrappingInterceptor):
    """Last resort: a :class:`ServiceError` that escaped a servicer becomes its status code, and any
    other exception becomes INTERNAL with a generic message (traceback logged)."""

    @contextlib.asynccontextmanager
    async def around(
        self, method: str, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Callable[[], None]]:
        try:
            yield _noop
        except ServiceError as exc:
            code, message = status_code_for(exc)
            await context.abort(code, message)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError) or _is_rpc_error(exc):
                raise
            log.exception("unhandled error in %s", method)
            code, message = status_code_for(exc)
            await context.abort(code, message)


def _is_rpc_error(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError)


def default_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The chain every server uses, outermost first."""
    return [RequestIdInterceptor(), MetricsInterceptor(), ErrorMappingInterceptor()]
