"""ExtractArchive through a real server: the stream, paths relative to the media root, limits
from the request, source deletion, and status codes of bad requests."""

from __future__ import annotations

import tarfile
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from protos.videoanalysis.v1 import common_pb2, ingest_pb2

Outcome = ingest_pb2.MemberOutcome


async def extract(
    stub, archive: str, **fields
) -> tuple[list, list, ingest_pb2.ExtractArchiveResult]:
    request = ingest_pb2.ExtractArchiveRequest(archive=common_pb2.MediaRef(path=archive), **fields)
    replies = [reply async for reply in stub.ExtractArchive(request)]
    kinds = [reply.WhichOneof("event") for reply in replies]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    # Progress first, then one outcome per member, then the result.
    assert kinds == sorted(kinds, key=["progress", "member", "result"].index)
    progress = [r.progress for r in replies if r.HasField("progress")]
    members = [r.member for r in replies if r.HasField("member")]
    return progress, members, replies[-1].result


def members_skipped() -> float:
    value = REGISTRY.get_sample_value(
        "videoanalysis_ingest_archive_members_total", {"outcome": "skipped"}
    )
    return value or 0.0


async def test_extraction_stream(stub, media_root: Path, corpus) -> None:
    (media_root / "downloads").mkdir()
    archive = corpus.tar(
        media_root / "downloads" / "13_Camille_Projet.tar.gz",
        [
            corpus.tar_member("Projet/rushes/a.MP4", b"a" * 50_000),
            corpus.tar_member("Projet/rushes/b.mov", b"b" * 50_000),
            corpus.tar_member("Projet/../../escape.txt", b"e"),
            corpus.tar_member("Projet/link", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
        ],
        "w:gz",
    )
    skipped_before = members_skipped()
    before = corpus.snapshot(media_root)
    progress, members, result = await extract(
        stub, "downloads/13_Camille_Projet.tar.gz", output_dir="projets_extraits"
    )
    docs = media_root / "projets_extraits" / "13 Camille" / "docs"
    corpus.assert_contained(media_root, before, docs)
    assert result.project_name == "13 Camille"
    assert result.project_dir == "projets_extraits/13 Camille"
    assert list(result.videos) == [
        "projets_extraits/13 Camille/docs/rushes/a.MP4",
        "projets_extraits/13 Camille/docs/rushes/b.mov",
    ]
    assert [(m.member_name, m.status, m.reason) for m in members] == [
        ("Projet/rushes/a.MP4", Outcome.STATUS_EXTRACTED, ""),
        ("Projet/rushes/b.mov", Outcome.STATUS_EXTRACTED, ""),
        ("Projet/../../escape.txt", Outcome.STATUS_EXTRACTED, "path_traversal"),
        ("Projet/link", Outcome.STATUS_SKIPPED, "symlink"),
    ]
    assert members[2].output_path == "projets_extraits/13 Camille/docs/escape.txt"
    assert members[2].renamed and members[0].size_bytes == 50_000
    assert (result.extracted_count, result.skipped_count, result.failed_count) == (3, 1, 0)
    assert not result.complete and result.archive_format.startswith("gzip")
    assert result.total_bytes == 100_001
    done = [p.done for p in progress]
    assert (
        done == sorted(done) and progress[-1].done == progress[-1].total == archive.stat().st_size
    )
    assert {p.unit for p in progress} == {"bytes"}
    assert members_skipped() == skipped_before + 1
    assert archive.exists()


async def test_request_limits_and_source_deletion(stub, media_root: Path, corpus) -> None:
    bomb = corpus.zip(media_root / "bomb.zip", [("zeros.bin", bytes(32 << 20)), ("ok.txt", b"ok")])
    limits = ingest_pb2.ExtractionLimits(max_member_ratio=10)
    _, members, result = await extract(
        stub, "bomb.zip", limits=limits, delete_source_on_success=True
    )
    assert (
        members[0].reason == "decompression_bomb" and members[1].status == Outcome.STATUS_EXTRACTED
    )
    assert not result.complete and not result.source_deleted and bomb.exists()
    _, _, result = await extract(
        stub, "bomb.zip", limits=ingest_pb2.ExtractionLimits(max_members=1)
    )
    assert [e.reason for e in result.errors] == ["too_many_members"]
    (media_root / "in").mkdir()
    good = corpus.zip(media_root / "in" / "good.zip", [("clip.mp4", b"v")])
    _, members, result = await extract(stub, "in/good.zip", delete_source_on_success=True)
    assert result.complete and result.source_deleted and not good.exists()
    # Without output_dir the project lands beside the archive.
    assert members[0].output_path == "in/good/docs/clip.mp4"


async def test_damaged_archive_reports_what_was_saved(stub, media_root: Path, corpus) -> None:
    path = corpus.zip(
        media_root / "cut.zip",
        [("a.txt", b"a" * 100_000), ("b.txt", b"b" * 100_000)],
        compress=False,
    )
    path.write_bytes(path.read_bytes()[:150_000])
    _, members, result = await extract(stub, "cut.zip", output_dir="out")
    assert [(m.status, m.reason) for m in members] == [
        (Outcome.STATUS_EXTRACTED, ""),
        (Outcome.STATUS_FAILED, "corrupt"),
    ]
    assert [e.reason for e in result.errors] == ["corrupt_archive"]
    assert "truncated" in result.errors[0].message.lower()
    assert not result.complete and result.extracted_count == 1


@pytest.mark.parametrize(
    ("archive", "fields", "code"),
    [
        ("missing.zip", {}, grpc.StatusCode.NOT_FOUND),
        ("../outside.zip", {}, grpc.StatusCode.INVALID_ARGUMENT),
        ("/etc/passwd", {}, grpc.StatusCode.INVALID_ARGUMENT),
        ("ok.zip", {"output_dir": "../elsewhere"}, grpc.StatusCode.INVALID_ARGUMENT),
        ("ok.zip", {"output_dir": "/tmp"}, grpc.StatusCode.INVALID_ARGUMENT),
        ("ok.zip", {"output_dir": "file.txt"}, grpc.StatusCode.INVALID_ARGUMENT),
        ("ok.zip", {"project_name": "../up"}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            "ok.zip",
            {"limits": ingest_pb2.ExtractionLimits(max_members=-1)},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ("junk.zip", {}, grpc.StatusCode.FAILED_PRECONDITION),
        ("empty.zip", {}, grpc.StatusCode.FAILED_PRECONDITION),
        ("folder", {}, grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_bad_requests_get_precise_codes(
    stub, media_root: Path, corpus, archive, fields, code
) -> None:
    corpus.zip(media_root / "ok.zip", [("a.txt", b"a")])
    (media_root / "junk.zip").write_bytes(b"this is not an archive\n" * 100)
    (media_root / "empty.zip").write_bytes(b"")
    (media_root / "file.txt").write_text("x")
    (media_root / "folder").mkdir()
    before = corpus.snapshot(media_root)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await extract(stub, archive, **fields)
    assert info.value.code() == code, info.value.details()
    assert corpus.snapshot(media_root) == before  # nothing created, not even a temp folder
