"""The monitor's download path vs a bare aiohttp stream-to-file, side by side in one run.

``python -m benchmarks.downloads [--mb N] [--repeat N]``

A loopback aiohttp server sends an ``--mb`` MiB zip-looking body. The reference reads it with
``iter_chunked(512 KiB)`` and writes each chunk straight to a file on the event loop (what the
legacy ``requests`` loop did, without its leaks). The monitor's :class:`Fetcher` adds the HEAD
probe, file writes in a thread (the loop stays free for other downloads and RPCs), the
content checks, fsync and the atomic rename. Best of ``--repeat`` each, interleaved. Prints one
JSON line: MiB/s of each and ``ratio`` (fetcher / reference; below 1 is slower).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from services.downloads.config import DownloadsSettings
from services.downloads.fetcher import Fetcher

CHUNK = 512 * 1024


def _app(body: bytes) -> web.Application:
    async def serve(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "application/zip", "Content-Length": str(len(body))}
        if request.method == "HEAD":
            return web.Response(headers=headers)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        view = memoryview(body)
        for start in range(0, len(body), CHUNK):
            await response.write(view[start : start + CHUNK])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/s/bench/f.zip", serve)
    return app


async def _reference(session: aiohttp.ClientSession, url: str, target: Path) -> None:
    async with session.get(url) as response:
        response.raise_for_status()
        with target.open("wb") as handle:
            async for chunk in response.content.iter_chunked(CHUNK):
                handle.write(chunk)


async def main(mb: int, repeat: int) -> dict[str, object]:
    body = b"PK\x03\x04" + os.urandom(mb * 1024 * 1024 - 4)
    runner = web.AppRunner(_app(body))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    times: dict[str, list[float]] = {"reference": [], "fetcher": []}
    try:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            settings = DownloadsSettings(
                media_root=root, dropbox_base_url=base, max_download_bytes=len(body) + 1
            )
            async with aiohttp.ClientSession() as session:
                fetcher = Fetcher(session, settings, root / "downloads")
                for _ in range(repeat):
                    started = time.perf_counter()
                    await _reference(session, f"{base}/s/bench/f.zip", root / "reference.zip")
                    times["reference"].append(time.perf_counter() - started)
                    (root / "reference.zip").unlink()
                    started = time.perf_counter()
                    result = await fetcher.download(
                        "https://www.dropbox.com/s/bench/f.zip", forced_filename="f.zip"
                    )
                    times["fetcher"].append(time.perf_counter() - started)
                    assert result.size_bytes == len(body)
                    result.path.unlink()
    finally:
        await runner.cleanup()
    rates = {name: mb / min(values) for name, values in times.items()}
    return {
        "benchmark": "downloads",
        "mib": mb,
        "repeat": repeat,
        "reference_mib_s": round(rates["reference"], 1),
        "fetcher_mib_s": round(rates["fetcher"], 1),
        "ratio": round(rates["fetcher"] / rates["reference"], 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.mb, args.repeat))))
