"""Server interceptors, one concern each: request id, Prometheus metrics, last-resort error mapping,
requests that do not decode.

``grpc.aio.ServerInterceptor.intercept_service`` only runs at handler lookup, so each interceptor
wraps the returned ``RpcMethodHandler`` (all four streaming kinds) to act around the call itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from services.common import metrics
from services.common.errors import ServiceError, status_code_for
from services.common.logs import REQUEST_ID_METADATA_KEY, request_id_var

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the stubs' generics are not subscriptable at run time
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    _Interceptor: TypeAlias = grpc.aio.ServerInterceptor[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor
Deserializer: TypeAlias = Callable[[bytes], Any]

#: Opens around one RPC; gets the method's full name and the context, yields a per-message hook.
Around: TypeAlias = Callable[
    [str, Context], contextlib.AbstractAsyncContextManager[Callable[[], None]]
]
#: Runs before the servicer's behaviour with its request (for streaming requests: each one).
Check: TypeAlias = Callable[[Any, Context], Awaitable[None]]


async def _no_check(request: Any, context: Context) -> None:
    return None


def _wrap_handler(
    handler: Handler,
    method: str,
    around: Around,
    *,
    check: Check = _no_check,
    deserializer: Deserializer | None = None,
) -> Handler:
    """Rebuilds ``handler`` so that ``around`` encloses each call of any streaming kind, ``check``
    sees every request before the servicer does, and ``deserializer`` (when given) replaces the
    handler's own."""

    async def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for request in requests:
            await check(request, context)
            yield request

    def unary_response(
        behavior: Callable[..., Awaitable[Any]], streaming: bool
    ) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: Context) -> Any:
            async with around(method, context) as on_message:
                if streaming:
                    request = checked(request, context)
                else:
                    await check(request, context)
                response = await behavior(request, context)
                on_message()
                return response

        return call

    def stream_response(
        behavior: Callable[..., AsyncIterator[Any]], streaming: bool
    ) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: Any, context: Context) -> AsyncIterator[Any]:
            async with around(method, context) as on_message:
                if streaming:
                    request = checked(request, context)
                else:
                    await check(request, context)
                async for response in behavior(request, context):
                    on_message()
                    yield response

        return call

    kwargs: dict[str, Any] = {
        "request_deserializer": deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    # The stubs type the behaviours as synchronous; in grpc.aio they are coroutines/generators.
    behaviors: Any = handler
    if behaviors.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            unary_response(behaviors.unary_unary, False), **kwargs
        )
    if behaviors.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            unary_response(behaviors.stream_unary, True), **kwargs
        )
    if behaviors.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            stream_response(behaviors.unary_stream, False), **kwargs
        )
    return grpc.stream_stream_rpc_method_handler(
        stream_response(behaviors.stream_stream, True), **kwargs
    )


def _rpc_type(handler: Handler) -> str:
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


class _WrappingInterceptor(_Interceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        self.on_lookup(handler_call_details, handler)
        return self.wrap(handler, handler_call_details.method)

    def wrap(self, handler: Handler, method: str) -> Handler:
        return _wrap_handler(handler, method, self.around)

    def on_lookup(self, details: grpc.HandlerCallDetails, handler: Handler) -> None:
        """Called once per RPC before the call starts."""

    def around(
        self, method: str, context: Context
    ) -> contextlib.AbstractAsyncContextManager[Callable[[], None]]:
        return _nothing_around()


def _noop() -> None:
    return None


@contextlib.asynccontextmanager
async def _nothing_around() -> AsyncIterator[Callable[[], None]]:
    yield _noop


class RequestIdInterceptor(_WrappingInterceptor):
    """Takes ``x-request-id`` from the metadata (or makes one) for logs; echoes it."""

    @contextlib.asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[Callable[[], None]]:
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

    def on_lookup(self, details: grpc.HandlerCallDetails, handler: Handler) -> None:
        service, name = _split_method(details.method)
        metrics.GRPC_SERVER_STARTED.labels(service, name, _rpc_type(handler)).inc()

    @contextlib.asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[Callable[[], None]]:
        service, name = _split_method(method)
        sent = metrics.GRPC_SERVER_MSG_SENT.labels(service, name)
        in_flight = metrics.GRPC_SERVER_IN_FLIGHT.labels(service)
        in_flight.inc()
        started = time.perf_counter()
        code: Any = grpc.StatusCode.OK
        try:
            yield sent.inc
        except BaseException as exc:
            code = _code_after(exc, context)
            raise
        else:
            code = context.code() or grpc.StatusCode.OK
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


def _code_after(exc: BaseException, context: Context) -> Any:
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    set_code: Any = context.code()
    if set_code not in (None, grpc.StatusCode.OK, 0):
        return set_code
    return status_code_for(exc)[0]


class ErrorMappingInterceptor(_WrappingInterceptor):
    """Last resort: a :class:`ServiceError` that escaped a servicer becomes its status code, and any
    other exception becomes INTERNAL with a generic message (traceback logged)."""

    @contextlib.asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[Callable[[], None]]:
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


class Undecodable:
    """What the tolerant deserializer hands on for bytes that are not a valid message."""

    __slots__ = ("error", "message_type")

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type = message_type
        self.error = error


def tolerant(deserializer: Deserializer) -> Deserializer:
    """``deserializer`` that returns :class:`Undecodable` instead of raising.

    grpc.aio turns an exception raised by a request deserializer into UNKNOWN (and logs it at
    ERROR); a request that does not decode is the client's fault, so the behaviour gets this
    marker and the call is aborted with INVALID_ARGUMENT instead.
    """
    owner = getattr(deserializer, "__self__", None)  # ``SomeRequest.FromString``
    descriptor = getattr(owner, "DESCRIPTOR", None)
    message_type = getattr(descriptor, "full_name", "") or "the request message"

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return Undecodable(message_type, exc)

    return deserialize


async def _refuse_undecodable(request: Any, context: Context) -> None:
    if isinstance(request, Undecodable):
        log.info("undecodable %s: %s", request.message_type, request.error)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid {request.message_type}: {request.error}",
        )


class UndecodableRequestInterceptor(_WrappingInterceptor):
    """Request bytes that do not parse as the method's message (truncated, wrong type, invalid
    UTF-8 in a string field) give INVALID_ARGUMENT instead of grpc.aio's UNKNOWN. Innermost, so
    that the metrics see the code."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        if handler.request_deserializer is None:
            return handler
        return _wrap_handler(
            handler,
            method,
            self.around,
            check=_refuse_undecodable,
            deserializer=tolerant(handler.request_deserializer),
        )


def default_interceptors() -> list[_Interceptor]:
    """The chain every server uses, outermost first."""
    return [
        RequestIdInterceptor(),
        MetricsInterceptor(),
        ErrorMappingInterceptor(),
        UndecodableRequestInterceptor(),
    ]
