"""The in-process ingest server, builders for the hostile-archive corpus and small synthetic
videos (all made on the fly).

Archives are written with the standard library (zip, tar), libarchive's own writer (7-Zip) or
by hand where no free tool can write the format: a RAR 4 archive of stored members (the format
note is public; no compression is involved) and ZipCrypto-encrypted zip members (the PKWARE
APPNOTE algorithm, checked to decrypt with libarchive and Python's zipfile).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace

import libarchive
import pytest

from protos.videoanalysis.v1 import ingest_pb2_grpc
from services.ingest.config import IngestSettings
from services.ingest.server import build_services


@pytest.fixture
async def stub(grpc_server, channel_to, media_root: Path) -> ingest_pb2_grpc.IngestServiceStub:
    """A client of a real ingest server on the test's media root."""
    settings = IngestSettings(port=0, metrics_port=-1, media_root=media_root)
    return ingest_pb2_grpc.IngestServiceStub(
        channel_to(await grpc_server(settings, build_services))
    )


# --- archives ----------------------------------------------------------------------------------


def write_zip(path: Path, members: Iterable[tuple[str, bytes]], *, compress: bool = True) -> Path:
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members:
            archive.writestr(zipfile.ZipInfo(name) if name.endswith("/") else name, data)
    return path


def zip_symlink(path: Path, link: str, target: str, extra: Iterable[tuple[str, bytes]]) -> Path:
    """A zip holding a Unix symlink (mode 0o120777 in the external attributes)."""
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo(link)
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        archive.writestr(info, target)
        for name, data in extra:
            archive.writestr(name, data)
    return path


def tar_member(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields: object
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def write_tar(
    path: Path, members: Iterable[tuple[tarfile.TarInfo, bytes]], mode: str = "w"
) -> Path:
    with tarfile.open(path, mode) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def write_7z(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    with libarchive.file_writer(str(path), "7zip") as archive:
        for name, data in members:
            archive.add_file_from_memory(name, len(data), data)
    return path


def _rar_block(kind: int, flags: int, body: bytes, data: bytes = b"") -> bytes:
    rest = struct.pack("<BHH", kind, flags, 7 + len(body)) + body
    return struct.pack("<H", zlib.crc32(rest) & 0xFFFF) + rest + data


def write_rar4(path: Path, members: Iterable[tuple[str, bytes, int]]) -> Path:
    """A RAR 4 archive of stored (method 0x30) members: (name, data, unix mode)."""
    out = b"Rar!\x1a\x07\x00" + _rar_block(0x73, 0, b"\0" * 6)
    for name, data, mode in members:
        encoded = name.encode()
        body = struct.pack(
            "<IIBIIBBHI", len(data), len(data), 3, zlib.crc32(data), 0, 20, 0x30, len(encoded), mode
        )
        out += _rar_block(0x74, 0x8000, body + encoded, data)
    path.write_bytes(out + _rar_block(0x7B, 0x4000, b""))
    return path


class _ZipCrypto:
    """Traditional PKWARE encryption (APPNOTE 6.1): three CRC-driven keys."""

    def __init__(self, password: bytes) -> None:
        self.keys = [0x12345678, 0x23456789, 0x34567890]
        for byte in password:
            self._update(byte)

    @staticmethod
    def _crc(value: int, byte: int) -> int:
        return ~zlib.crc32(bytes([byte]), ~value & 0xFFFFFFFF) & 0xFFFFFFFF

    def _update(self, byte: int) -> None:
        k0 = self._crc(self.keys[0], byte)
        k1 = ((self.keys[1] + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        self.keys = [k0, k1, self._crc(self.keys[2], k1 >> 24)]

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            temp = (self.keys[2] | 2) & 0xFFFF
            out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
            self._update(byte)
        return bytes(out)


def write_encrypted_zip(
    path: Path, members: Iterable[tuple[str, bytes, bool]], password: bytes = b"secret"
) -> Path:
    """A zip of stored members, each encrypted with ZipCrypto when its flag is True."""
    out = io.BytesIO()
    central = []
    count = 0
    for name, data, encrypted in members:
        count += 1
        crc = zlib.crc32(data)
        payload = data
        if encrypted:
            header = os.urandom(11) + bytes([crc >> 24])
            payload = _ZipCrypto(password).encrypt(header + data)
        encoded = name.encode()
        flags = 1 if encrypted else 0
        offset = out.tell()
        out.write(
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                20,
                flags,
                0,
                0,
                0,
                crc,
                len(payload),
                len(data),
                len(encoded),
                0,
            )
            + encoded
            + payload
        )
        central.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                flags,
                0,
                0,
                0,
                crc,
                len(payload),
                len(data),
                len(encoded),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + encoded
        )
    directory = b"".join(central)
    start = out.tell()
    out.write(directory)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(directory), start, 0))
    path.write_bytes(out.getvalue())
    return path


def lie_about_size(path: Path, true_size: int, claimed: int) -> Path:
    """Rewrites every uncompressed-size field equal to ``true_size`` to ``claimed``."""
    data = bytearray(path.read_bytes())
    needle = struct.pack("<I", true_size)
    index = data.find(needle)
    while index >= 0:
        data[index : index + 4] = struct.pack("<I", claimed)
        index = data.find(needle, index + 4)
    path.write_bytes(bytes(data))
    return path


# --- containment -------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (links not followed) with its size and mtime."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            stat = full.lstat()
            found[full.relative_to(root).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def assert_contained(root: Path, before: dict[str, tuple[int, int]], dest: Path) -> None:
    """Nothing was created or changed under ``root`` outside ``dest`` (its parent folders may be
    new); no link exists anywhere; no temporary folder is left."""
    after = snapshot(root)
    dest_rel = dest.relative_to(root).as_posix()
    allowed = set(_parents(dest_rel)) | {dest_rel}

    def outside(path: str) -> bool:
        return path not in allowed and not path.startswith(dest_rel + "/")

    created = {p for p in after if p not in before and outside(p)}
    changed = {p for p in after if p in before and before[p] != after[p] and outside(p)}
    assert not created, f"written outside {dest_rel}: {sorted(created)}"
    assert not changed, f"modified outside {dest_rel}: {sorted(changed)}"
    links = [p for p in after if (root / p).is_symlink()]
    assert not links, f"links created: {links}"
    leftovers = [p for p in after if Path(p).name.startswith(".extract-")]
    assert not leftovers, f"temporary folders left: {leftovers}"


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


@pytest.fixture(scope="session")
def corpus() -> SimpleNamespace:
    """The builders above, for test modules (pytest's importlib mode has no conftest imports)."""
    return SimpleNamespace(
        zip=write_zip,
        zip_symlink=zip_symlink,
        tar_member=tar_member,
        tar=write_tar,
        sevenzip=write_7z,
        rar4=write_rar4,
        encrypted_zip=write_encrypted_zip,
        lie_about_size=lie_about_size,
        snapshot=snapshot,
        assert_contained=assert_contained,
    )


# --- videos ------------------------------------------------------------------------------------


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=120,
    )


@pytest.fixture
def make_video(media_root: Path) -> Callable[..., str]:
    """``make_video(name, *ffmpeg_output_args, seconds=, rate=, size=, audio=)``: a synthetic clip
    in the media root; returns its relative path."""

    def make(
        name: str,
        *output_args: str,
        seconds: float = 2.0,
        rate: str = "30",
        size: str = "160x120",
        audio: bool = False,
    ) -> str:
        target = media_root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        inputs = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
        if audio:
            inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
        ffmpeg(*inputs, *output_args, str(target))
        return target.relative_to(media_root).as_posix()

    return make
