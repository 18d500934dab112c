"""Settings of the gateway (environment prefix ``GATEWAY_``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings, load_settings
from services.common.registry import NAMES

#: The downstream services whose gRPC health the services page shows, besides the orchestrator.
HEALTH_SERVICES = NAMES


class GatewaySettings(ServiceSettings):
    """REST, websocket and dashboard in front of the orchestrator.

    Auth: ``tokens`` is a comma-separated list of bearer tokens; every mutating endpoint and the
    websocket need one (reads too with ``auth_reads``). ``no_auth`` turns auth off and is only
    accepted when the gateway listens on a loopback address.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="GATEWAY_")

    host: str = "127.0.0.1"
    port: int = 8080
    #: -1: ``/metrics`` is served on the main port only.
    metrics_port: int = -1

    orchestrator_addr: str = "127.0.0.1:50050"
    ingest_addr: str = ""
    scene_addr: str = ""
    audio_addr: str = ""
    tracking_addr: str = ""
    #: The download monitor (its panel in the dashboard); empty: no panel.
    downloads_addr: str = ""

    tokens: str = ""
    auth_reads: bool = False
    no_auth: bool = False
    #: Lifetime of the read cookie of ``POST /api/v1/session`` (media and thumbnails in the
    #: dashboard when ``auth_reads`` is on).
    session_ttl_s: float = 12 * 3600.0

    max_upload_bytes: int = 4 * 1024**3
    #: Upload folder, relative to the media root.
    uploads_dir: str = "uploads"
    #: The orchestrator's results archive, relative to the media root.
    archives_dir: str = "archives"
    #: Thumbnail cache, relative to the media root.
    thumbnails_dir: str = ".thumbnails"

    #: Deadline of unary calls to the orchestrator and of health checks.
    rpc_timeout_s: float = 10.0
    health_timeout_s: float = 1.0
    #: Reconnect backoff after the orchestrator's event stream broke.
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 5.0
    #: Recent events the gateway keeps to replay to reconnecting websockets without asking the
    #: orchestrator.
    replay_events: int = 20_000
    #: Events waiting for one websocket (after coalescing progress) before it is dropped.
    ws_queue_events: int = 2_000
    #: Kernel send buffer of each websocket: what a stalled client can hold besides its queue
    #: (small events need little; the default of the system can be megabytes per client).
    ws_send_buffer_bytes: int = 64 * 1024
    ws_heartbeat_s: float = 15.0
    #: A websocket must authenticate within this time when auth is on.
    ws_auth_timeout_s: float = 5.0
    shutdown_timeout_s: float = 5.0

    @model_validator(mode="after")
    def _check_auth(self) -> GatewaySettings:
        if self.no_auth and not is_loopback(self.host):
            raise ValueError(f"no_auth is only allowed on a loopback bind, not on {self.host!r}")
        if not self.no_auth and not self.token_list:
            raise ValueError("set GATEWAY_TOKENS (or GATEWAY_NO_AUTH=true on a loopback bind)")
        return self

    @property
    def token_list(self) -> list[str]:
        return [t.strip() for t in self.tokens.split(",") if t.strip()]

    @property
    def auth_enabled(self) -> bool:
        return not self.no_auth

    def address_of(self, service: str) -> str:
        return str(getattr(self, f"{service}_addr"))


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``)."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load_gateway_settings(
    argv: Sequence[str] | None = None, **overrides: object
) -> GatewaySettings:
    return load_settings(GatewaySettings, argv, **overrides)
