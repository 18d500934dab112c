"""``python -m services.downloads --port 50055 --metrics-port 9105`` (the monitor), or
``python -m services.downloads import-history FILE --db PATH [--dry-run]`` (legacy history
import; it loads neither gRPC nor the server)."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["import-history"]:
        from services.downloads.cli import import_history

        sys.exit(import_history(sys.argv[2:]))

    import asyncio

    from services.common.config import load_settings
    from services.common.logs import configure_logging
    from services.downloads.config import DownloadsSettings
    from services.downloads.server import serve

    settings = load_settings(DownloadsSettings, sys.argv[1:])
    configure_logging("downloads", settings.log_level)
    asyncio.run(serve(settings))
