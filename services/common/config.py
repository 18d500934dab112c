"""Settings: environment variables (with a per-component prefix) overridden by command-line flags.

Every process accepts ``--port``, ``--metrics-port``, ``--media-root`` and ``--log-level``; the
environment is read here and nowhere else.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(BaseSettings):
    """What every gRPC process needs; components subclass it with their own prefix and fields."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="VA_")

    host: str = "[::]"
    port: int = 50051
    #: Port of the Prometheus endpoint; 0 picks a free port, -1 disables it.
    metrics_port: int = 9100
    media_root: Path = Path("media")
    log_level: str = "INFO"
    #: Seconds running RPCs get to finish after SIGTERM.
    grace_s: float = 10.0
    max_concurrent_rpcs: int = 8
    max_message_bytes: int = 64 * 1024 * 1024
    #: Plaintext port serving only ``grpc.health.v1`` (kubelet gRPC probes cannot speak TLS);
    #: -1 disables it. Used when the main port is TLS.
    health_port: int = -1
    #: Transport security (services.common.security); all unset = plaintext, no token. Server:
    #: cert + key turn TLS on, a CA then requires client certificates (mTLS). Client (the
    #: orchestrator's channels): the CA verifies servers, cert + key are presented to them.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_require_client_cert: bool = True
    #: Name expected in server certificates when it differs from the address's host.
    tls_server_name: str = ""
    #: Shared bearer token(s), comma-separated: servers accept any, clients send the first.
    auth_token: SecretStr = SecretStr("")


def load_settings(cls: type[S], argv: Sequence[str] | None = None, **overrides: object) -> S:
    """Builds ``cls`` from the environment, then the flags in ``argv``, then ``overrides``."""
    parser = argparse.ArgumentParser(description=cls.__doc__)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--media-root", type=Path)
    parser.add_argument("--log-level")
    args = parser.parse_args(list(argv) if argv is not None else [])
    flags = {key: value for key, value in vars(args).items() if value is not None}
    return cls(**{**flags, **overrides})
