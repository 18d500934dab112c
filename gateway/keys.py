"""Typed keys of the gateway's application state."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.config import GatewaySettings
from services.common.media import MediaRoot

if TYPE_CHECKING:
    from gateway.client import OrchestratorClient
    from gateway.events import EventHub

SETTINGS = web.AppKey("settings", GatewaySettings)
MEDIA = web.AppKey("media", MediaRoot)
#: The typed orchestrator client over the one long-lived channel (set by a cleanup context).
ORCHESTRATOR: web.AppKey[OrchestratorClient] = web.AppKey("orchestrator")
#: The one orchestrator subscription and its websocket fan-out.
HUB: web.AppKey[EventHub] = web.AppKey("hub")
#: The download monitor's stub, when ``downloads_addr`` is set.
DOWNLOADS: web.AppKey[Any] = web.AppKey("downloads")
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
