"""``python -m gateway``: settings from the environment and flags, then serve until SIGTERM."""

from __future__ import annotations

import sys

from aiohttp import web

from gateway.app import ACCESS_LOG_FORMAT, create_app
from gateway.config import load_gateway_settings
from services.common.logs import configure_logging
from services.common.metrics import serve_metrics


def main(argv: list[str] | None = None) -> None:
    settings = load_gateway_settings(sys.argv[1:] if argv is None else argv)
    configure_logging("gateway", settings.log_level)
    if settings.metrics_port >= 0:
        serve_metrics(settings.metrics_port)
    web.run_app(
        create_app(settings),
        host=settings.host.strip("[]"),
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout_s,
        access_log_format=ACCESS_LOG_FORMAT,
        print=None,
    )


if __name__ == "__main__":
    main()
