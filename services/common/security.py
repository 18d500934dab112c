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

import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc

from services.common.errors import InvalidArgument
from services.common.interceptors import _noop, _WrappingInterceptor

_Handler = Any  # grpc.RpcMethodHandler (its stub generics are not subscriptable at run time)

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

    def server_interceptors(self) -> list[Any]:
        tokens = _tokens(self.token)
        return [TokenAuthInterceptor(tokens)] if tokens else []

    def call_metadata(self) -> list[tuple[str, str]]:
        """Metadata a client adds to every call: the bearer token, when there is one."""
        tokens = _tokens(self.token)
        return [(AUTHORIZATION_METADATA_KEY, f"Bearer {tokens[0].decode()}")] if tokens else []


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


class TokenAuthInterceptor(_WrappingInterceptor):
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
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        if handler_call_details.method.startswith(EXEMPT_METHOD_PREFIXES):
            return await continuation(handler_call_details)
        return await super().intercept_service(continuation, handler_call_details)

    @contextlib.asynccontextmanager
    async def around(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Callable[[], None]]:
        if not token_matches(_bearer(cast(Any, context.invocation_metadata())), self._tokens):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        yield _noop
