"""Optional transport security between processes: TLS or mTLS, and a shared bearer token.

Everything is off unless configured (the embedded default runs on loopback in plaintext). From
:class:`~services.common.config.ServiceSettings`:

- ``tls_cert`` + ``tls_key``: the server listens with TLS; a client presents them (mTLS).
- ``tls_ca``: a client verifies servers against it; a server then requires and verifies client
  certificates (mTLS) unless ``tls_require_client_cert`` is false.
- ``tls_server_name``: the name a client expects in the server certificate, when it differs
  from the host of the address (a headless Service resolves to pod IPs).
- ``auth_token``: a server refuses calls without ``authorization: Bearer <token>``
  (UNAUTHENTICATED); a client sends it. Several comma-separated tokens are accepted by a server
  (rotation); a client sends the first. Health and reflection stay open, so probes and
  ``grpcurl list`` work without it.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from services.common.errors import InvalidArgument

AUTHORIZATION_METADATA_KEY = "authorization"
#: Method prefixes callable without a token: kubelet probes and ``grpcurl list`` carry none.
EXEMPT_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
UNAUTHENTICATED_MESSAGE = "missing or wrong bearer token"


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the {what} {path}: {exc.strerror}") from None


def _tokens(value: str) -> list[bytes]:
    return [t.strip().encode() for t in value.split(",") if t.strip()]


@dataclass(frozen=True)
class SecurityConfig:
    """The security settings of one process, files not yet read."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    require_client_cert: bool = True
    server_name: str = ""
    token: str = ""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise InvalidArgument("TLS needs both a certificate and its key (tls_cert, tls_key)")

    @classmethod
    def of(cls, settings: Any) -> SecurityConfig:
        """Reads the ``tls_*`` and ``auth_token`` fields of a settings object."""
        token = settings.auth_token
        return cls(
            cert=settings.tls_cert,
            key=settings.tls_key,
            ca=settings.tls_ca,
            require_client_cert=settings.tls_require_client_cert,
            server_name=settings.tls_server_name,
            token=token.get_secret_value() if hasattr(token, "get_secret_value") else str(token),
        )

    @property
    def server_tls(self) -> bool:
        return self.cert is not None

    @property
    def client_tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for a server port (mTLS when a CA is set), or None for plaintext."""
        if not self.server_tls:
            return None
        cert, key = _read(self.cert, "TLS certificate"), _read(self.key, "TLS key")
        assert cert is not None and key is not None
        ca = _read(self.ca, "TLS CA bundle")
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=ca,
            require_client_auth=ca is not None and self.require_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials for a client (its own certificate when it has one), or None."""
        if not self.client_tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "TLS CA bundle"),
            private_key=_read(self.key, "TLS key"),
            certificate_chain=_read(self.cert, "TLS certificate"),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        if self.client_tls and self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        tokens = _tokens(self.token)
        return [TokenAuthInterceptor(tokens)] if tokens else []

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        tokens = _tokens(self.token)
        return [BearerTokenClientInterceptor(tokens[0].decode())] if tokens else []


def _bearer(metadata: Sequence[Any] | None) -> bytes:
    for item in metadata or ():
        key, value = item[0], item[1]
        if key == AUTHORIZATION_METADATA_KEY:
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            return token.strip().encode() if scheme.lower() == "bearer" else b""
    return b""


def token_matches(presented: bytes, tokens: Sequence[bytes]) -> bool:
    """Constant-time check of ``presented`` against every accepted token (no early exit)."""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented, token)
    return matched and bool(presented)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as ``handler`` that answers UNAUTHENTICATED."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

    async def refuse_stream(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        yield  # pragma: no cover (abort raises)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kwargs)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, **kwargs)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call but health and reflection without an accepted bearer token.

    Chained innermost (after the metrics interceptor), so refused calls are counted with their
    UNAUTHENTICATED code.
    """

    def __init__(self, tokens: Sequence[bytes]) -> None:
        if not tokens:
            raise InvalidArgument("a token interceptor needs at least one token")
        self._tokens = list(tokens)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(EXEMPT_METHOD_PREFIXES):
            return handler
        presented = _bearer(handler_call_details.invocation_metadata)
        if token_matches(presented, self._tokens):
            return handler
        return _refusal(handler)


class BearerTokenClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every outgoing call."""

    def __init__(self, token: str) -> None:
        self._value = f"Bearer {token}"

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata[AUTHORIZATION_METADATA_KEY] = self._value
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
