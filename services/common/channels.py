"""Client side: one long-lived, load-balanced channel per downstream, carrying the request id."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

from services.common.errors import InvalidArgument
from services.common.logs import REQUEST_ID_METADATA_KEY, request_id_var
from services.common.security import SecurityConfig

_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def channel_target(addresses: str | Sequence[str]) -> str:
    """The gRPC target for one or more ``host:port`` addresses.

    Several IP addresses become one ``ipv4:``/``ipv6:`` target that ``round_robin`` spreads calls
    over; a single host name becomes ``dns:///host:port``, which in Kubernetes (a headless Service)
    resolves to every ready pod.
    """
    items = [a.strip() for a in (addresses.split(",") if isinstance(addresses, str) else addresses)]
    items = [a for a in items if a]
    if not items:
        raise InvalidArgument("no address given")
    if len(items) == 1 and "://" in items[0]:
        return items[0]
    hosts = [_host(a) for a in items]
    if all(_is_ip(h, 4) for h in hosts):
        return "ipv4:" + ",".join(items)
    if all(_is_ip(h, 6) for h in hosts):
        return "ipv6:" + ",".join(items)
    if len(items) == 1:
        return f"dns:///{items[0]}"
    raise InvalidArgument(
        f"several addresses must all be IP literals (or use one DNS name): {items}"
    )


def _host(address: str) -> str:
    host, _, _port = address.rpartition(":")
    return host.strip("[]")


def _is_ip(host: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(host).version == version
    except ValueError:
        return False


if TYPE_CHECKING:  # the stubs' generics are not subscriptable at run time
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor
    _StreamStream = grpc.aio.StreamStreamClientInterceptor


class _MetadataClientInterceptor(_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream):
    """Adds the current request id (so logs can follow a job across hops) and ``fixed`` items
    (the bearer token) to every outgoing call."""

    def __init__(self, fixed: Sequence[tuple[str, str]] = ()) -> None:
        self._fixed = list(fixed)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        request_id = request_id_var.get()
        if not request_id and not self._fixed:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if request_id and REQUEST_ID_METADATA_KEY not in metadata:
            metadata.add(REQUEST_ID_METADATA_KEY, request_id)
        for key, value in self._fixed:
            metadata[key] = value
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def open_channel(
    addresses: str | Sequence[str],
    max_message_bytes: int = 64 * 1024 * 1024,
    extra_options: Sequence[tuple[str, Any]] = (),
    security: SecurityConfig | None = None,
) -> grpc.aio.Channel:
    """A channel with ``round_robin`` over ``addresses`` and request-id propagation; TLS/mTLS
    and a bearer token when ``security`` configures them (else plaintext)."""
    security = security or SecurityConfig()
    options = [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        *security.channel_options(),
        *extra_options,
    ]
    interceptors: list[Any] = [_MetadataClientInterceptor(security.call_metadata())]
    credentials = security.channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(
            channel_target(addresses), options=options, interceptors=interceptors
        )
    return grpc.aio.secure_channel(
        channel_target(addresses), credentials, options=options, interceptors=interceptors
    )
