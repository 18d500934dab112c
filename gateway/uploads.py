"""Multipart uploads streamed to ``<media_root>/<uploads_dir>/<id>/<name>``.

Each file is written in chunks to a hidden temporary name beside its target and renamed only once
complete; a request that is too large, truncated, malformed or not media leaves nothing behind
(its whole upload folder is removed).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import unicodedata
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.config import GatewaySettings
from gateway.errors import ApiError
from services.common.errors import UndecodableMedia
from services.common.ffmpeg import probe
from services.common.files import replacing
from services.common.media import MediaRoot

_CHUNK = 256 * 1024
_FIELD_LIMIT = 64 * 1024
_ARCHIVE_MAGIC = (
    (0, b"PK\x03\x04"),  # zip
    (0, b"Rar!\x1a\x07"),  # rar
    (0, b"7z\xbc\xaf\x27\x1c"),  # 7z
    (0, b"\x1f\x8b"),  # gzip (tar.gz)
    (0, b"BZh"),  # bzip2 (tar.bz2)
    (0, b"\xfd7zXZ\x00"),  # xz (tar.xz)
    (257, b"ustar"),  # tar
)


@dataclass
class Upload:
    """What one multipart request carried."""

    folder: Path
    #: Absolute paths of the saved files.
    files: list[Path] = field(default_factory=list)
    #: The same, relative to the media root (what the job is submitted with).
    inputs: list[str] = field(default_factory=list)
    label: str = ""
    options: Any = None

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def safe_name(filename: str | None) -> str:
    """The last component of a client's file name, without control characters or leading dots
    (percent-escapes are decoded first: browsers escape quotes, aiohttp's client everything)."""
    name = urllib.parse.unquote(filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip().lstrip(".")
    if not name:
        raise ApiError(400, "every file part needs a file name")
    if len(name.encode()) > 200:
        stem, dot, suffix = name.rpartition(".")
        name = (stem[:150] + dot + suffix[-20:]) if dot else name[:180]
    return name


async def receive(request: web.Request, settings: GatewaySettings, media: MediaRoot) -> Upload:
    """Streams every ``file`` part to disk and reads the ``label`` and ``options`` parts."""
    limit = settings.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + _FIELD_LIMIT * 4:
        raise ApiError(413, f"upload larger than the limit of {limit} bytes")
    upload = Upload(media.root / settings.uploads_dir / uuid.uuid4().hex)
    try:
        await _read_parts(request, upload, limit)
        if not upload.files:
            raise ApiError(400, "no file part in the upload (field name 'file')")
        for path in upload.files:
            await asyncio.to_thread(check_media, path)
        upload.inputs = [media.relative(path) for path in upload.files]
        return upload
    except ApiError:
        upload.discard()
        raise
    except (ValueError, ConnectionError, asyncio.IncompleteReadError, HttpProcessingError) as exc:
        upload.discard()
        raise ApiError(400, f"malformed or truncated upload ({type(exc).__name__})") from None
    except BaseException:
        upload.discard()
        raise


async def _read_parts(request: web.Request, upload: Upload, limit: int) -> None:
    reader = await request.multipart()
    total = 0
    while True:
        part = await reader.next()
        if part is None:
            return
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "nested multipart bodies are not accepted")
        if part.name == "file":
            total += await _save(part, upload, limit - total)
        elif part.name == "label":
            upload.label = (await _field(part)).strip()
        elif part.name == "options":
            try:
                upload.options = json.loads(await _field(part))
            except ValueError:
                raise ApiError(400, "the options part must be JSON") from None
        else:
            raise ApiError(400, f"unknown form field: {part.name!r}")


async def _field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        data += chunk
        if len(data) > _FIELD_LIMIT:
            raise ApiError(413, f"form field {part.name!r} is too large")
    try:
        return data.decode(part.get_charset("utf-8"))
    except (UnicodeDecodeError, LookupError):
        raise ApiError(400, f"form field {part.name!r} is not text") from None


async def _save(part: BodyPartReader, upload: Upload, allowed: int) -> int:
    """Saves a file as ``<upload>/<stem>/<name>``: the orchestrator names a lone video's project
    after its folder, so an uploaded ``Interview.mp4`` becomes project ``Interview`` (as the CLI's
    imports do), not the upload's random id."""
    name = safe_name(part.filename)
    folder = upload.folder / (Path(name).stem or name)
    target = folder / name
    number = 1
    while target.exists():
        number += 1
        target = folder / f"{Path(name).stem}_{number}{Path(name).suffix}"
    written = 0
    with replacing(target) as temp, temp.open("wb") as handle:
        while chunk := await part.read_chunk(_CHUNK):
            written += len(chunk)
            if written > allowed:
                raise ApiError(413, "upload larger than the size limit")
            await asyncio.to_thread(handle.write, chunk)
    upload.files.append(target)
    return written


def check_media(path: Path) -> None:
    """Accepts archives (by their magic bytes) and files ffprobe finds a video stream in."""
    with path.open("rb") as handle:
        head = handle.read(512)
    if any(head[offset : offset + len(magic)] == magic for offset, magic in _ARCHIVE_MAGIC):
        return
    try:
        info = probe(path, timeout_s=30.0)
    except UndecodableMedia:
        raise ApiError(415, f"not a video or an archive: {path.name}") from None
    if not info.has_video:
        raise ApiError(415, f"no video stream in {path.name}")
