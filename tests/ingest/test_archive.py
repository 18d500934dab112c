"""The hostile-archive corpus and every supported format, through the extraction domain module.

Each case checks the per-member outcome and reason, and that nothing was written outside
``<output>/<project>/docs`` (no link created, no temporary folder left, nothing else touched).
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

import libarchive
import pytest

from services.common.blocking import CancelToken
from services.common.errors import Cancelled, InvalidArgument, UndecodableMedia
from services.ingest.archive import (
    ExtractionLimits,
    ExtractionResult,
    ExtractProgress,
    MemberOutcome,
    MemberStatus,
    extract_archive,
)

MiB = 1024 * 1024
GENEROUS = ExtractionLimits(
    max_total_bytes=1 << 30, max_members=1000, max_member_ratio=100.0, max_member_bytes=1 << 30
)
EXTRACTED, SKIPPED, FAILED = MemberStatus.EXTRACTED, MemberStatus.SKIPPED, MemberStatus.FAILED


class Run:
    """The events of one extraction, with the containment check already done."""

    def __init__(self, events: list) -> None:
        self.progress = [e for e in events if isinstance(e, ExtractProgress)]
        self.members = [e for e in events if isinstance(e, MemberOutcome)]
        results = [e for e in events if isinstance(e, ExtractionResult)]
        assert len(results) == 1 and events[-1] is results[0]
        self.result: ExtractionResult = results[0]

    def member(self, name: str) -> MemberOutcome:
        found = [m for m in self.members if m.name == name]
        assert len(found) == 1, f"{name!r} in {[m.name for m in self.members]}"
        return found[0]

    @property
    def docs(self) -> Path:
        return self.result.project_dir / "docs"

    def files(self) -> dict[str, bytes]:
        return {
            p.relative_to(self.docs).as_posix(): p.read_bytes()
            for p in sorted(self.docs.rglob("*"))
            if p.is_file()
        }


@pytest.fixture
def extract(tmp_path: Path, corpus):
    """``extract(archive, **kw)``: runs the extraction into ``tmp_path/out`` and checks that
    nothing outside the project's docs folder changed."""

    def run(archive: Path, limits: ExtractionLimits = GENEROUS, **kwargs) -> Run:
        out = tmp_path / "out"
        before = corpus.snapshot(tmp_path)
        events = list(extract_archive(archive, out, limits=limits, **kwargs))
        result = Run(events)
        if not kwargs.get("delete_source"):
            corpus.assert_contained(tmp_path, before, result.docs)
        return result

    return run


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "archives"
    folder.mkdir()
    return folder


# --- every supported format --------------------------------------------------------------------

PROJECT = [
    ("Proj/clip.mp4", b"video" * 1000),
    ("Proj/notes/readme.txt", b"hello\n" * 500),
    ("Proj/.hidden", b"dot"),
    ("__MACOSX/Proj/._clip.mp4", b"resource fork"),
]


def _tar(corpus, path: Path, mode: str) -> Path:
    members = [corpus.tar_member(name, data) for name, data in PROJECT]
    return corpus.tar(path, members, mode)


@pytest.mark.parametrize(
    ("file_name", "expected_format"),
    [
        ("13_Camille_Projet.zip", "ZIP"),
        ("13_Camille_Projet.tar", "tar"),
        ("13_Camille_Projet.tar.gz", "gzip"),
        ("13_Camille_Projet.tgz", "gzip"),
        ("13_Camille_Projet.tar.bz2", "bzip2"),
        ("13_Camille_Projet.tar.xz", "xz"),
        ("13_Camille_Projet.7z", "7-Zip"),
        ("13_Camille_Projet.rar", "RAR"),
    ],
)
def test_every_format_extracts_with_the_legacy_layout(
    extract, corpus, src: Path, file_name: str, expected_format: str
) -> None:
    path = src / file_name
    if file_name.endswith(".zip"):
        corpus.zip(path, PROJECT)
    elif file_name.endswith(".7z"):
        corpus.sevenzip(path, PROJECT)
    elif file_name.endswith(".rar"):
        corpus.rar4(path, [(name, data, 0o100644) for name, data in PROJECT])
    else:
        mode = {".tar": "w", ".gz": "w:gz", ".tgz": "w:gz", ".bz2": "w:bz2", ".xz": "w:xz"}
        _tar(corpus, path, mode[path.suffix])
    run = extract(path)
    result = run.result
    assert expected_format in result.archive_format
    assert result.project_name == "13 Camille"
    # __MACOSX dropped, then the single root folder "Proj" flattened into docs/.
    assert run.files() == {
        "clip.mp4": b"video" * 1000,
        "notes/readme.txt": b"hello\n" * 500,
        ".hidden": b"dot",  # leading dot kept (the legacy tool wrote "hidden")
    }
    assert run.member("__MACOSX/Proj/._clip.mp4").reason == "macos_metadata"
    assert result.videos == [run.docs / "clip.mp4"]
    assert result.complete and not result.problems
    assert run.member("Proj/clip.mp4").output == run.docs / "clip.mp4"
    assert path.exists()  # kept: deletion was not asked for
    assert run.docs.stat().st_mode & 0o755 == 0o755  # not the 0700 of a temporary folder
    assert run.progress and run.progress[-1].done_bytes == path.stat().st_size


# --- hostile names -----------------------------------------------------------------------------


def test_zip_slip_is_neutralised_inside_the_destination(extract, corpus, src: Path) -> None:
    path = corpus.zip(
        src / "slip.zip",
        [
            ("../../evil.txt", b"evil"),
            ("ok/../../../../tmp/evil2.txt", b"evil2"),
            ("..\\..\\win.txt", b"win"),
            ("ok/clip.mp4", b"v"),
        ],
    )
    run = extract(path)
    # libarchive already reads zip backslashes as separators; in a tar they are literal
    # characters, which the sanitiser treats as separators too (see the tar case below).
    for name in ("../../evil.txt", "ok/../../../../tmp/evil2.txt", "../../win.txt"):
        member = run.member(name)
        assert (member.status, member.reason, member.renamed) == (EXTRACTED, "path_traversal", True)
        assert run.docs in member.output.parents
    assert run.files() == {
        "evil.txt": b"evil",
        "ok/tmp/evil2.txt": b"evil2",
        "win.txt": b"win",
        "ok/clip.mp4": b"v",
    }
    assert run.result.complete  # neutralised names are not a loss
    assert run.docs.stat().st_mode & 0o777 != 0o700  # docs/ was the temporary folder itself
    tarred = corpus.tar(
        src / "slip2.tar",
        [corpus.tar_member("..\\..\\tar.txt", b"t"), corpus.tar_member("../sibling/x.txt", b"x")],
    )
    run = extract(tarred)
    assert run.member("..\\..\\tar.txt").reason == "path_traversal"
    assert run.files() == {"tar.txt": b"t", "sibling/x.txt": b"x"}


def test_absolute_paths_become_relative(extract, corpus, src: Path) -> None:
    zipped = corpus.zip(
        src / "abs.zip", [("/etc/cron.d/evil", b"x"), ("C:\\Windows\\evil.txt", b"y")]
    )
    run = extract(zipped)
    assert run.member("/etc/cron.d/evil").reason == "absolute_path"
    assert run.member("C:/Windows/evil.txt").reason == "absolute_path"  # libarchive's spelling
    assert run.files() == {"etc/cron.d/evil": b"x", "Windows/evil.txt": b"y"}
    tarred = corpus.tar(src / "abs2.tar", [corpus.tar_member("/abs/clip.mp4", b"z")])
    run = extract(tarred)
    assert run.member("/abs/clip.mp4").output == run.docs / "clip.mp4"  # "abs" flattened


def test_symlinks_are_skipped_and_never_written_through(extract, corpus, src: Path) -> None:
    path = corpus.tar(
        src / "links.tar",
        [
            corpus.tar_member("p/link", kind=tarfile.SYMTYPE, linkname="/etc"),
            corpus.tar_member("p/link/passwd", b"owned"),  # tries to write through the link
            corpus.tar_member("p/up", kind=tarfile.SYMTYPE, linkname="../../.."),
            corpus.tar_member("p/clip.mp4", b"v"),
        ],
    )
    run = extract(path)
    link = run.member("p/link")
    assert (link.status, link.reason) == (SKIPPED, "symlink")
    assert "/etc" in link.message
    assert run.member("p/up").reason == "symlink"
    # The later member lands in a real folder of the destination.
    assert run.files() == {"link/passwd": b"owned", "clip.mp4": b"v"}
    assert not run.result.complete
    zipped = corpus.zip_symlink(src / "link.zip", "evil", "/etc/passwd", [("ok.txt", b"ok")])
    run = extract(zipped)
    assert (run.member("evil").status, run.member("evil").reason) == (SKIPPED, "symlink")
    assert run.files() == {"ok.txt": b"ok"}
    rar = corpus.rar4(
        src / "link2.rar", [("evil", b"/etc/passwd", 0o120777), ("ok", b"1", 0o100644)]
    )
    run = extract(rar)
    assert run.member("evil").reason == "symlink"
    assert run.files() == {"ok": b"1"}


def test_hardlinks_and_devices_are_skipped(extract, corpus, src: Path) -> None:
    path = corpus.tar(
        src / "special.tar.gz",
        [
            corpus.tar_member("p/real.txt", b"real"),
            corpus.tar_member("p/hard", kind=tarfile.LNKTYPE, linkname="/etc/passwd"),
            corpus.tar_member("p/hard_inside", kind=tarfile.LNKTYPE, linkname="p/real.txt"),
            corpus.tar_member("p/null", kind=tarfile.CHRTYPE, devmajor=1, devminor=3),
            corpus.tar_member("p/disk", kind=tarfile.BLKTYPE, devmajor=8, devminor=0),
            corpus.tar_member("p/pipe", kind=tarfile.FIFOTYPE),
        ],
        "w:gz",
    )
    run = extract(path)
    assert [(m.name, m.status, m.reason) for m in run.members] == [
        ("p/real.txt", EXTRACTED, ""),
        ("p/hard", SKIPPED, "hardlink"),
        ("p/hard_inside", SKIPPED, "hardlink"),
        ("p/null", SKIPPED, "device"),
        ("p/disk", SKIPPED, "device"),
        ("p/pipe", SKIPPED, "fifo"),
    ]
    assert run.files() == {"real.txt": b"real"}
    assert run.result.skipped_count == 5 and not run.result.complete


def test_names_that_sanitise_alike_are_all_kept(extract, corpus, src: Path) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = corpus.zip(
            src / "dups.zip",
            [
                ("a_b.txt", b"1"),
                ("a:b.txt", b"2"),
                ("a?b.txt", b"3"),
                ("dup.txt", b"first"),
                ("dup.txt", b"second"),  # zip allows the same name twice
                ("x", b"file x"),
                ("x/inside.txt", b"needs a folder named x"),
                ("x/other.txt", b"same folder"),
            ],
        )
    run = extract(path)
    files = run.files()
    assert sorted(files.values()) == sorted(
        [
            b"1",
            b"2",
            b"3",
            b"first",
            b"second",
            b"file x",
            b"needs a folder named x",
            b"same folder",
        ]
    )
    assert files["a_b.txt"] == b"1" and files["dup.txt"] == b"first"
    renamed = [m for m in run.members if m.renamed]
    assert {m.name for m in renamed} == {
        "a:b.txt",
        "a?b.txt",
        "dup.txt",
        "x/inside.txt",
        "x/other.txt",
    }
    second_dup = [m for m in run.members if m.name == "dup.txt"][1]
    assert second_dup.reason == "duplicate_name" and second_dup.output.name == "dup_2.txt"
    inside = run.member("x/inside.txt").output
    assert inside.parent == run.member("x/other.txt").output.parent == run.docs / "x_2"
    assert run.result.complete


def test_a_second_archive_of_the_project_never_overwrites(extract, corpus, src: Path) -> None:
    first = corpus.zip(src / "Camille_Dupont_1.zip", [("clip.mp4", b"one"), ("a/b.txt", b"b1")])
    second = corpus.zip(
        src / "Camille_Dupont_2.zip", [("clip.mp4", b"two"), ("a/b.txt", b"b2"), ("a/c.txt", b"c")]
    )
    extract(first)
    run = extract(second)
    assert run.result.project_name == "Camille Dupont"
    assert run.files() == {
        "clip.mp4": b"one",
        "clip_2.mp4": b"two",
        "a/b.txt": b"b1",
        "a/b_2.txt": b"b2",
        "a/c.txt": b"c",
    }
    clip = run.member("clip.mp4")
    assert clip.renamed and clip.reason == "duplicate_name"
    assert clip.output == run.docs / "clip_2.mp4"
    assert not run.member("a/c.txt").renamed


# --- encryption, damage ------------------------------------------------------------------------


def test_encrypted_members_are_skipped(extract, corpus, src: Path) -> None:
    path = corpus.encrypted_zip(
        src / "enc.zip", [("secret.mp4", b"S" * 5000, True), ("plain.txt", b"plain", False)]
    )
    # The encryption is real: both libarchive and Python decrypt it with the password.
    assert zipfile.ZipFile(path).read("secret.mp4", pwd=b"secret") == b"S" * 5000
    with libarchive.file_reader(str(path), passphrase="secret") as reader:
        assert next(b"".join(e.get_blocks()) for e in reader) == b"S" * 5000
    run = extract(path)
    secret = run.member("secret.mp4")
    assert (secret.status, secret.reason, secret.output) == (SKIPPED, "encrypted", None)
    assert run.files() == {"plain.txt": b"plain"}
    assert not run.result.complete


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_truncated_archives_keep_what_came_before(extract, corpus, src: Path, kind) -> None:
    members = [("p/a.mp4", b"A" * 100_000), ("p/b.bin", os.urandom(300_000)), ("p/c.txt", b"c")]
    path = src / f"cut.{kind}"
    if kind == "zip":
        corpus.zip(path, members, compress=False)
    else:
        corpus.tar(path, [corpus.tar_member(n, d) for n, d in members], "w:gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    run = extract(path)
    assert run.member("p/a.mp4").status is EXTRACTED
    broken = run.member("p/b.bin")
    assert (broken.status, broken.reason) == (FAILED, "corrupt")
    assert [p.reason for p in run.result.problems] == ["corrupt_archive"]
    assert not run.result.complete
    assert run.files() == {"a.mp4": b"A" * 100_000}  # no partial file of b.bin


@pytest.mark.parametrize("content", [b"", b"this is not an archive\n" * 50, os.urandom(4096)])
def test_unreadable_archives_are_errors(extract, src: Path, content: bytes, tmp_path) -> None:
    path = src / "bad.zip"
    path.write_bytes(content)
    with pytest.raises(UndecodableMedia):
        list(extract_archive(path, tmp_path / "out", limits=GENEROUS))
    assert not (tmp_path / "out").exists()  # the folder it created is removed again


# --- decompression bombs -----------------------------------------------------------------------


def test_ratio_bomb_in_a_zip_is_stopped_and_the_rest_extracted(extract, corpus, src) -> None:
    path = corpus.zip(src / "bomb.zip", [("bomb.bin", bytes(48 * MiB)), ("after.txt", b"ok")])
    assert path.stat().st_size < 200_000
    limits = ExtractionLimits(1 << 30, 1000, max_member_ratio=20.0, max_member_bytes=1 << 30)
    run = extract(path, limits=limits)
    bomb = run.member("bomb.bin")
    assert (bomb.status, bomb.reason) == (SKIPPED, "decompression_bomb")
    assert run.files() == {"after.txt": b"ok"}
    assert run.result.total_bytes == 2


def test_ratio_bomb_in_a_compressed_tar_is_drained_within_budget(extract, corpus, src) -> None:
    members = [corpus.tar_member("bomb.bin", bytes(48 * MiB)), corpus.tar_member("after", b"ok")]
    path = corpus.tar(src / "bomb.tar.gz", members, "w:gz")
    ratio = ExtractionLimits(1 << 30, 1000, max_member_ratio=20.0, max_member_bytes=1 << 30)
    run = extract(path, limits=ratio)
    assert run.member("bomb.bin").reason == "decompression_bomb"
    assert run.files() == {"after": b"ok"}
    # Reaching "after" means decompressing the whole bomb: with a 30 MiB budget we stop instead.
    tight = ExtractionLimits(30 * MiB, 1000, max_member_ratio=20.0, max_member_bytes=1 << 30)
    run = extract(corpus.tar(src / "bomb2.tar.bz2", members, "w:bz2"), limits=tight)
    assert run.member("bomb.bin").reason == "decompression_bomb"
    assert [p.reason for p in run.result.problems] == ["total_size_limit"]
    assert [m.name for m in run.members] == ["bomb.bin"]  # "after" was never reached
    assert not run.result.complete


def test_total_bytes_limit_stops_the_archive(extract, corpus, src: Path) -> None:
    members = [(f"part{i}.bin", bytes(8 * MiB)) for i in range(5)]
    path = corpus.zip(src / "big.zip", members, compress=False)
    limits = ExtractionLimits(20 * MiB, 1000, 100.0, 1 << 30)
    run = extract(path, limits=limits)
    assert [(m.name, m.status, m.reason) for m in run.members] == [
        ("part0.bin", EXTRACTED, ""),
        ("part1.bin", EXTRACTED, ""),
        ("part2.bin", SKIPPED, "total_size_limit"),
    ]
    assert [p.reason for p in run.result.problems] == ["total_size_limit"]
    assert run.result.total_bytes == 16 * MiB
    assert sorted(run.files()) == ["part0.bin", "part1.bin"]


def test_member_size_limit_does_not_trust_the_header(extract, corpus, src: Path) -> None:
    honest = corpus.zip(src / "honest.zip", [("big.bin", bytes(3 * MiB)), ("ok.txt", b"ok")])
    limits = ExtractionLimits(1 << 30, 1000, 10_000.0, max_member_bytes=1 * MiB)
    run = extract(honest, limits=limits)
    assert run.member("big.bin").reason == "member_too_large"
    assert "declares" in run.member("big.bin").message
    liar = corpus.zip(src / "liar.zip", [("liar.bin", bytes(20 * MiB)), ("ok.txt", b"ok")])
    corpus.lie_about_size(liar, 20 * MiB, 1000)  # claims 1000 bytes
    run = extract(liar, limits=limits)
    member = run.member("liar.bin")
    assert (member.status, member.reason) == (SKIPPED, "member_too_large")
    assert "once decompressed" in member.message
    assert run.files() == {"ok.txt": b"ok"}


def test_member_count_limit(extract, corpus, src: Path) -> None:
    path = corpus.zip(src / "many.zip", [(f"f{i:02}.txt", b"x") for i in range(30)])
    run = extract(path, limits=ExtractionLimits(1 << 30, 10, 100.0, 1 << 30))
    assert [m.status for m in run.members] == [EXTRACTED] * 10 + [SKIPPED]
    assert run.members[-1].reason == "too_many_members"
    assert [p.reason for p in run.result.problems] == ["too_many_members"]
    assert len(run.files()) == 10


# --- source deletion and arguments -------------------------------------------------------------


def test_source_is_deleted_only_after_a_complete_extraction(extract, corpus, src) -> None:
    good = corpus.zip(src / "good.zip", [("a.mp4", b"a")])
    run = extract(good, delete_source=True)
    assert run.result.source_deleted and not good.exists()
    partial = corpus.zip_symlink(src / "partial.zip", "l", "/etc", [("b.mp4", b"b")])
    run = extract(partial, delete_source=True)
    assert not run.result.complete and not run.result.source_deleted and partial.exists()
    kept = corpus.zip(src / "kept.zip", [("c.mp4", b"c")])
    run = extract(kept)
    assert run.result.complete and not run.result.source_deleted and kept.exists()


def test_project_name_override_is_sanitised(extract, corpus, src: Path, tmp_path) -> None:
    path = corpus.zip(src / "x.zip", [("a.txt", b"a")])
    assert extract(path, project_name="My: Project").result.project_name == "My_ Project"
    for bad in ("..", ".", "../escape", "a/b", "a\\b"):
        with pytest.raises(InvalidArgument):
            list(extract_archive(path, tmp_path / "out", limits=GENEROUS, project_name=bad))
    with pytest.raises(InvalidArgument):
        ExtractionLimits(0, 1, 1.0, 1)


def test_cancelling_stops_and_cleans_up(corpus, src: Path, tmp_path: Path) -> None:
    path = corpus.zip(src / "many.zip", [(f"f{i}.bin", bytes(1024)) for i in range(50)])
    token = CancelToken()
    events = extract_archive(path, tmp_path / "out", limits=GENEROUS, token=token)
    first = next(events)
    assert isinstance(first, ExtractProgress)
    token.cancel()
    with pytest.raises(Cancelled):
        list(events)
    assert not (tmp_path / "out").exists()  # temporary folder removed, nothing placed


def test_paths_too_long_for_the_file_system_fail_alone(extract, corpus, src: Path) -> None:
    deep = "/".join(["d" * 250] * 20) + "/deep.txt"  # 5 kB: more than PATH_MAX once placed
    path = corpus.tar(
        src / "deep.tar", [corpus.tar_member(deep, b"x"), corpus.tar_member("ok.txt", b"ok")]
    )
    run = extract(path)
    member = run.member(deep)
    assert member.status is FAILED and member.reason == "write_error"
    assert run.files() == {"ok.txt": b"ok"}


def test_links_planted_in_the_destination_are_not_followed(corpus, src: Path, tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_bytes(b"precious")
    docs = tmp_path / "out" / "proj" / "docs"
    docs.mkdir(parents=True)
    (docs / "clip.mp4").symlink_to(outside / "target.txt")
    (docs / "rushes").symlink_to(outside)
    path = corpus.zip(src / "proj.zip", [("clip.mp4", b"new"), ("rushes/a.mp4", b"a")])
    run = Run(list(extract_archive(path, tmp_path / "out", limits=GENEROUS)))
    assert (outside / "target.txt").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["target.txt"]
    assert run.member("clip.mp4").output == docs / "clip_2.mp4"
    assert run.member("rushes/a.mp4").output == docs / "rushes_2" / "a.mp4"
    (tmp_path / "out" / "linked").symlink_to(outside)
    with pytest.raises(InvalidArgument):
        list(extract_archive(path, tmp_path / "out", limits=GENEROUS, project_name="linked"))
    assert sorted(p.name for p in outside.iterdir()) == ["target.txt"]


def test_unsupported_compression_fails_one_member(extract, corpus, src: Path) -> None:
    path = corpus.zip(src / "odd.zip", [("weird.bin", b"x" * 1000), ("ok.txt", b"ok")])
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02")
    data[8:10] = data[central + 10 : central + 12] = (97).to_bytes(2, "little")  # "WavPack"
    path.write_bytes(bytes(data))
    run = extract(path)
    weird = run.member("weird.bin")
    assert (weird.status, weird.reason) == (FAILED, "unsupported")
    assert "compression method" in weird.message
    assert run.files() == {"ok.txt": b"ok"}
    assert not run.result.problems and not run.result.complete
