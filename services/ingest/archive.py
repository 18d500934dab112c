"""Safe extraction of project archives (zip, rar, 7z, tar and compressed tars) with libarchive.

One code path reads every format. Members are streamed one at a time into a temporary folder
beside the destination, then the folder is renamed into ``<output_dir>/<project>/docs/`` (legacy
layout: top-level ``__MACOSX`` dropped, a single root folder flattened).

Hostile input is contained member by member and never fatal to the rest of the archive:

* names are sanitised (:mod:`services.ingest.naming`): ``..``, absolute and drive paths are
  neutralised, never followed; links, hard links and devices are skipped; nothing is written
  through a link because none is ever created, and files are opened with ``O_EXCL|O_NOFOLLOW``;
* names that sanitise to the same path, or that exist already in the destination, get a ``_2``
  suffix instead of overwriting anything;
* encrypted members are skipped (no passphrase is ever tried);
* decompression bombs are stopped while the data streams, whatever the headers claim: limits on
  the bytes of one member, of the whole archive, on a member's expansion ratio (output bytes per
  input byte actually consumed) and on the number of members;
* a corrupt or truncated archive keeps what was extracted before the damage and says it is
  incomplete; only an archive that cannot be read at all is an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from libarchive import ffi
from libarchive.entry import ArchiveEntry
from libarchive.exception import ArchiveError
from libarchive.read import new_archive_read

from services.common.blocking import CancelToken
from services.common.errors import InvalidArgument, UndecodableMedia
from services.ingest.naming import (
    project_folder_name,
    sanitize_component,
    sanitize_member_path,
    unique_name,
)

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4", ".mov", ".avi", ".mkv", ".webm", ".flv", ".wmv", ".m4v", ".mpg", ".mpeg",
        ".mts", ".m2ts", ".ts", ".3gp", ".mxf", ".ogv", ".vob", ".dv",
    }
)  # fmt: skip

#: Expansion ratios are only judged once a member has produced this many bytes per input byte
#: window: libarchive reads compressed input in blocks (bzip2 up to 900 kB ahead), so the input
#: consumed by a small member can read as 0 and its ratio as infinite.
RATIO_MIN_INPUT_BYTES = 1024 * 1024
_BLOCK = 256 * 1024
_PROGRESS_EVERY_S = 0.25
_MAX_HEADER_FAILURES = 8

_lib = ffi.libarchive
_entry_is_encrypted = _lib.archive_entry_is_encrypted
_entry_is_encrypted.argtypes = [ctypes.c_void_p]
_entry_is_encrypted.restype = ctypes.c_int


class MemberStatus(enum.Enum):
    EXTRACTED = "extracted"
    SKIPPED = "skipped"
    FAILED = "failed"


#: Skips that are the intended legacy behaviour, not a loss: they leave the archive "complete".
POLICY_SKIPS = frozenset({"macos_metadata"})


@dataclass(frozen=True)
class ExtractionLimits:
    """Safety limits of one extraction (bytes are uncompressed bytes)."""

    max_total_bytes: int
    max_members: int
    max_member_ratio: float
    max_member_bytes: int

    def __post_init__(self) -> None:
        for name in ("max_total_bytes", "max_members", "max_member_ratio", "max_member_bytes"):
            if not getattr(self, name) > 0:  # NaN too
                raise InvalidArgument(f"limit {name} must be positive, got {getattr(self, name)}")


@dataclass
class MemberOutcome:
    """What happened to one archive member.

    Attributes:
        name: the member's name as stored in the archive.
        output: where it was written (None unless extracted).
        reason: machine-readable reason for a skip, failure or rename ("" when none).
        renamed: the name on disk differs from the stored one (sanitised or de-duplicated).
    """

    name: str
    status: MemberStatus
    output: Path | None = None
    reason: str = ""
    message: str = ""
    size_bytes: int = 0
    renamed: bool = False
    is_dir: bool = False


@dataclass(frozen=True)
class ExtractProgress:
    done_bytes: int
    total_bytes: int
    members: int
    current: str


@dataclass(frozen=True)
class ArchiveProblem:
    """A problem with the archive as a whole (damage, a limit reached) that ended reading early."""

    reason: str
    message: str
    subject: str = ""


@dataclass
class ExtractionResult:
    project_name: str
    project_dir: Path
    videos: list[Path]
    extracted_count: int
    skipped_count: int
    failed_count: int
    source_deleted: bool
    total_bytes: int
    complete: bool
    archive_format: str
    problems: list[ArchiveProblem] = field(default_factory=list)


Event = ExtractProgress | MemberOutcome | ExtractionResult


class _StopExtraction(Exception):
    """Reading cannot go on (archive damaged, a global limit reached)."""

    def __init__(self, problem: ArchiveProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _MemberRejected(Exception):
    """This member is skipped or failed; reading goes on with the next one."""

    def __init__(self, status: MemberStatus, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


# --- layout of the temporary tree --------------------------------------------------------------


class _Tree:
    """Chooses where each member goes in the temporary tree, so nothing is ever overwritten.

    Folders map consistently (every ``a/…`` member lands in the same folder, even when ``a`` had
    to be renamed because a file took the name first).
    """

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {}  # relative path -> "file" | "dir"
        self._folder_alias: dict[tuple[str, str], str] = {}

    @staticmethod
    def _join(parent: str, name: str) -> str:
        return f"{parent}/{name}" if parent else name

    def _free(self, parent: str, name: str) -> str:
        return unique_name(name, lambda n: self._join(parent, n) in self._kinds)

    def place(self, parts: tuple[str, ...], *, is_dir: bool) -> tuple[str, bool]:
        """The relative path for a member and whether a collision renamed it."""
        parent = ""
        collided = False
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if not last or is_dir:
                key = (parent, part)
                name = self._folder_alias.get(key)
                if name is None:
                    name = part
                    if self._kinds.get(self._join(parent, name)) == "file":
                        name = self._free(parent, part)
                        collided = True
                    self._folder_alias[key] = name
                    self._kinds[self._join(parent, name)] = "dir"
                elif name != part:
                    collided = True
            else:
                name = part
                if self._join(parent, name) in self._kinds:
                    name = self._free(parent, part)
                    collided = True
                self._kinds[self._join(parent, name)] = "file"
            parent = self._join(parent, name)
        return parent, collided


# --- placing the finished tree -----------------------------------------------------------------

_placement_locks: dict[Path, threading.Lock] = {}
_placement_guard = threading.Lock()


def _placement_lock(target: Path) -> threading.Lock:
    with _placement_guard:
        return _placement_locks.setdefault(target, threading.Lock())


def _move_file_no_replace(source: Path, target: Path) -> bool:
    """Moves a file only if ``target`` does not exist (atomically where hard links work)."""
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system: check, then rename
        if target.exists() or target.is_symlink():
            return False
        os.rename(source, target)
        return True
    source.unlink()
    return True


def _merge(source: Path, target: Path, rel: str, renames: dict[str, str]) -> None:
    """Moves the content of ``source`` into the existing folder ``target`` without replacing
    anything; renamed entries are recorded in ``renames`` (old relative path -> new)."""
    for child in sorted(source.iterdir()):
        child_rel = f"{rel}/{child.name}" if rel else child.name
        dest = target / child.name
        if child.is_dir() and dest.is_dir() and not dest.is_symlink():
            _merge(child, dest, child_rel, renames)
            continue
        if child.is_dir():
            if not dest.exists() and not dest.is_symlink():
                with contextlib.suppress(OSError):
                    os.rename(child, dest)  # fails if another writer created dest meanwhile
                    continue
        elif _move_file_no_replace(child, dest):
            continue

        def taken(name: str) -> bool:
            return (target / name).exists() or (target / name).is_symlink()

        while True:
            name = unique_name(child.name, taken)
            new = target / name
            if child.is_dir():
                try:
                    os.mkdir(new)
                except FileExistsError:
                    continue
                _merge(child, new, child_rel, {})
                renames[child_rel] = f"{rel}/{name}" if rel else name
                break
            if _move_file_no_replace(child, new):
                renames[child_rel] = f"{rel}/{name}" if rel else name
                break


def _apply_renames(rel: str, renames: dict[str, str]) -> tuple[str, bool]:
    parts = rel.split("/")
    for cut in range(len(parts), 0, -1):
        prefix = "/".join(parts[:cut])
        if prefix in renames:
            return "/".join([renames[prefix], *parts[cut:]]), True
    return rel, False


# --- reading -----------------------------------------------------------------------------------


def _member_name(entry: ArchiveEntry) -> str:
    name = entry.pathname
    if isinstance(name, bytes):  # not valid in the header's encoding
        return name.decode("utf-8", errors="replace")
    return name or ""


def _link_kind(entry: ArchiveEntry) -> str:
    if entry.issym:
        return "symlink"
    if entry.islnk:
        return "hardlink"
    if entry.ischr or entry.isblk:
        return "device"
    if entry.isfifo:
        return "fifo"
    if entry.issock:
        return "socket"
    return ""


def _data_error_reason(exc: ArchiveError) -> str:
    """libarchive reports these only in its message text."""
    text = str(exc.msg or "").lower()
    if "passphrase" in text or "encrypt" in text:
        return "encrypted"
    if "unsupported" in text:
        return "unsupported"  # e.g. a .zipx compression method libarchive lacks
    return "corrupt"


class _Extractor:
    """Reads every member of one archive into the work folder; collects outcomes and problems."""

    def __init__(
        self, archive: Path, work: Path, limits: ExtractionLimits, token: CancelToken
    ) -> None:
        self.archive = archive
        self.work = work
        self.limits = limits
        self.token = token
        self.archive_size = archive.stat().st_size
        self.tree = _Tree()
        self.outcomes: list[MemberOutcome] = []
        #: Index of an extracted outcome -> its path relative to the work folder.
        self.work_paths: dict[int, str] = {}
        self.problems: list[ArchiveProblem] = []
        self.members = 0
        #: Bytes written to disk.
        self.written = 0
        #: Bytes decompressed, written or discarded (bounded by the total limit too).
        self.decompressed = 0
        self.format_name = ""
        self._buffer = ctypes.create_string_buffer(_BLOCK)
        self._archive_p: int = 0
        self._last_progress = 0.0

    # -- libarchive state (through libarchive-c's ffi, pinned in constraints.txt) --

    def _bytes_read(self) -> int:
        """Raw archive bytes consumed so far (what the decompressor really ate, not a header)."""
        return int(ffi.filter_bytes(self._archive_p, -1))

    def _describe_format(self) -> str:
        archive_p = self._archive_p
        fmt = (ffi.format_name(archive_p) or b"").decode(errors="replace")
        filters = [
            (ffi.filter_name(archive_p, i) or b"").decode(errors="replace")
            for i in range(ffi.filter_count(archive_p) - 1)
        ]
        return " + ".join([*[f for f in filters if f], fmt])

    def _seekable_skip(self) -> bool:
        """Whether libarchive skips the rest of a member by seeking (no decompression)."""
        if ffi.filter_count(self._archive_p) > 1:
            return False
        fmt = (ffi.format_name(self._archive_p) or b"").decode(errors="replace").lower()
        return fmt.startswith("zip") or "tar" in fmt

    def _read_block(self) -> int:
        self.token.raise_if_cancelled()
        count = int(ffi.read_data(self._archive_p, self._buffer, _BLOCK))
        if count > 0:
            self.decompressed += count
        return count

    def _progress(self, current: str, *, force: bool = False) -> Iterator[ExtractProgress]:
        now = time.monotonic()
        if force or now - self._last_progress >= _PROGRESS_EVERY_S:
            self._last_progress = now
            done = min(self._bytes_read(), self.archive_size)
            yield ExtractProgress(done, self.archive_size, self.members, current)

    def _record(self, outcome: MemberOutcome, work_rel: str | None = None) -> None:
        if work_rel is not None:
            self.work_paths[len(self.outcomes)] = work_rel
        self.outcomes.append(outcome)

    def _skip(
        self, name: str, reason: str, message: str, status: MemberStatus = MemberStatus.SKIPPED
    ) -> None:
        """Records a member that is not extracted, and leaves its data unread."""
        self._record(MemberOutcome(name, status, reason=reason, message=message))
        self._skip_rest()

    def _damaged(self, exc: ArchiveError, subject: str = "") -> _StopExtraction:
        message = f"archive is damaged or truncated: {exc.msg}"
        return _StopExtraction(ArchiveProblem("corrupt_archive", message, subject))

    # -- reading --

    def run(self) -> Iterator[ExtractProgress]:
        with new_archive_read("all", "all") as archive_p:
            self._archive_p = archive_p
            try:
                ffi.read_open_filename_w(archive_p, str(self.archive), 64 * 1024)
            except ArchiveError as exc:
                message = f"cannot open archive {self.archive.name}: {exc.msg}"
                raise UndecodableMedia(message) from exc
            header_failures = 0
            while True:
                self.token.raise_if_cancelled()
                entry = ArchiveEntry(archive_p, "utf-8")
                try:
                    status = ffi.read_next_header2(archive_p, entry._entry_p)
                except ArchiveError as exc:
                    if self.members == 0:
                        raise UndecodableMedia(
                            f"not a readable archive: {self.archive.name} ({exc.msg})"
                        ) from exc
                    if exc.retcode == ffi.ARCHIVE_FAILED and header_failures < _MAX_HEADER_FAILURES:
                        header_failures += 1  # this member is lost, the next may be readable
                        self.members += 1
                        self._record(
                            MemberOutcome(
                                _member_name(entry) or f"<member {self.members}>",
                                MemberStatus.FAILED,
                                reason="corrupt",
                                message=f"unreadable member header: {exc.msg}",
                            )
                        )
                        continue
                    raise self._damaged(exc) from exc
                if status == ffi.ARCHIVE_EOF:
                    return
                if not self.format_name:
                    self.format_name = self._describe_format()
                self.members += 1
                name = _member_name(entry)
                if self.members > self.limits.max_members:
                    problem = ArchiveProblem(
                        "too_many_members",
                        f"more than {self.limits.max_members} members; the rest were not read",
                        name,
                    )
                    self._record(
                        MemberOutcome(name, MemberStatus.SKIPPED, reason=problem.reason,
                                      message=problem.message)
                    )  # fmt: skip
                    raise _StopExtraction(problem)
                yield from self._progress(name, force=True)
                yield from self._member(entry, name)

    def _member(self, entry: ArchiveEntry, name: str) -> Iterator[ExtractProgress]:
        kind = _link_kind(entry)
        if kind:
            points_to = entry.linkpath if kind in ("symlink", "hardlink") else ""
            message = f"{kind} not extracted" + (f" (points to {points_to!r})" if points_to else "")
            self._record(MemberOutcome(name, MemberStatus.SKIPPED, reason=kind, message=message))
            return
        safe = sanitize_member_path(name)
        if safe.parts[0] == "__MACOSX":
            self._skip(name, "macos_metadata", "macOS resource-fork folder dropped")
            return
        is_dir = entry.isdir
        if not is_dir and _entry_is_encrypted(entry._entry_p):
            self._skip(name, "encrypted", "encrypted member (no passphrase is tried)")
            return
        declared = 0 if is_dir else int(entry.size or 0)
        if declared > self.limits.max_member_bytes:
            self._skip(
                name,
                "member_too_large",
                f"declares {declared} bytes; the limit is {self.limits.max_member_bytes}",
            )
            return
        rel, collided = self.tree.place(safe.parts, is_dir=is_dir)
        renamed = safe.changed or collided
        reason = safe.reason or ("duplicate_name" if collided else "")
        notes = []
        if safe.changed:
            notes.append(f"sanitised ({', '.join(safe.issues)})")
        if collided:
            notes.append("another member already had this name")
        message = f"stored as {rel!r}: {'; '.join(notes)}" if renamed else ""
        target = self.work / rel
        try:
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                self._record(
                    MemberOutcome(name, MemberStatus.EXTRACTED, target, reason, message, 0,
                                  renamed, is_dir=True),
                    rel,
                )  # fmt: skip
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            size = yield from self._write(target, name)
        except _MemberRejected as rejected:
            self._skip(name, rejected.reason, rejected.message, rejected.status)
            return
        except _StopExtraction as stop:
            self._record(
                MemberOutcome(name, MemberStatus.SKIPPED, reason=stop.problem.reason,
                              message=stop.problem.message)
            )  # fmt: skip
            raise
        except ArchiveError as exc:
            self._record(
                MemberOutcome(name, MemberStatus.FAILED, reason=_data_error_reason(exc),
                              message=f"cannot read the data: {exc.msg}")
            )  # fmt: skip
            if exc.retcode is None or exc.retcode <= ffi.ARCHIVE_FATAL:
                raise self._damaged(exc, name) from exc
            return
        except OSError as exc:
            self._record(
                MemberOutcome(name, MemberStatus.FAILED, reason="write_error",
                              message=f"cannot write: {exc.strerror or exc}")
            )  # fmt: skip
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _StopExtraction(ArchiveProblem("disk_full", str(exc), name)) from exc
            if not is_dir:
                self._skip_rest()
            return
        self.written += size
        self._record(
            MemberOutcome(name, MemberStatus.EXTRACTED, target, reason, message, size, renamed),
            rel,
        )

    def _write(self, target: Path, name: str) -> Iterator[ExtractProgress]:
        """Streams the current member into ``target`` (created exclusively), enforcing the limits
        on what really comes out of the decompressor. Returns the byte count."""
        limits = self.limits
        start_input = self._bytes_read()
        written = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        done = False
        with open(os.open(target, flags, 0o644), "wb", closefd=True) as out:
            try:
                while (count := self._read_block()) > 0:
                    written += count
                    if written > limits.max_member_bytes:
                        raise _MemberRejected(
                            MemberStatus.SKIPPED,
                            "member_too_large",
                            f"more than {limits.max_member_bytes} bytes once decompressed",
                        )
                    if self.written + written > limits.max_total_bytes:
                        raise _StopExtraction(
                            ArchiveProblem(
                                "total_size_limit",
                                f"the archive expands to more than {limits.max_total_bytes} "
                                "bytes; later members were not read",
                                name,
                            )
                        )
                    consumed = max(self._bytes_read() - start_input, 0)
                    if written / max(consumed, RATIO_MIN_INPUT_BYTES) > limits.max_member_ratio:
                        raise _MemberRejected(
                            MemberStatus.SKIPPED,
                            "decompression_bomb",
                            f"expands more than {limits.max_member_ratio:g}x: {written} bytes "
                            f"from about {consumed} compressed bytes",
                        )
                    out.write(self._buffer.raw[:count])
                    yield from self._progress(name)
                out.flush()
                os.fsync(out.fileno())
                done = True
            finally:
                if not done:
                    out.close()
                    with contextlib.suppress(OSError):
                        target.unlink()
        return written

    def _skip_rest(self) -> None:
        """Leaves the current member unread. In a compressed stream the data must still be
        decompressed to reach the next member; that work counts against the total limit, so a
        bomb cannot keep us spinning."""
        if self._seekable_skip():
            return  # libarchive seeks past the data when the next header is read
        try:
            while self._read_block() > 0:
                if self.decompressed > self.limits.max_total_bytes:
                    raise _StopExtraction(
                        ArchiveProblem(
                            "total_size_limit",
                            "stopped: skipping a rejected member would decompress more than "
                            f"{self.limits.max_total_bytes} bytes",
                        )
                    )
        except ArchiveError as exc:
            raise self._damaged(exc) from exc


def _project_name(archive: Path, override: str | None, keyword: str) -> str:
    if override is None or not override.strip():
        return project_folder_name(archive.name, keyword)
    text = override.strip()
    if "/" in text or "\\" in text or text in (".", ".."):
        raise InvalidArgument(f"the project name must be one folder name: {override!r}")
    name, _issues = sanitize_component(text)
    return name


def _place(extractor: _Extractor, docs: Path) -> None:
    """Moves the work folder's content into ``docs`` and points each outcome at its final path.

    A single root folder is flattened (one level). A new ``docs`` is one rename; an existing one
    (a second archive of the same project) is merged into without replacing anything.
    """
    work = extractor.work
    entries = list(work.iterdir())
    if not entries:
        return
    root, prefix = work, ""
    if len(entries) == 1 and entries[0].is_dir():
        root, prefix = entries[0], entries[0].name
    renames: dict[str, str] = {}
    with _placement_lock(docs):
        docs.parent.mkdir(parents=True, exist_ok=True)
        placed = False
        if not docs.exists() and not docs.is_symlink():
            try:
                os.rename(root, docs)
                placed = True
            except OSError:  # created meanwhile: merge instead
                placed = False
        if not placed:
            if docs.is_symlink() or not docs.is_dir():
                raise InvalidArgument(f"{docs.name} exists in the project folder and is no folder")
            _merge(root, docs, "", renames)
    for index, rel in extractor.work_paths.items():
        outcome = extractor.outcomes[index]
        inner = rel
        if prefix:
            inner = "" if rel == prefix else rel[len(prefix) + 1 :]
        final_rel, moved = _apply_renames(inner, renames) if inner else ("", False)
        outcome.output = docs / final_rel if final_rel else docs
        if moved:
            outcome.renamed = True
            outcome.reason = outcome.reason or "duplicate_name"
            note = f"the project already had a file of that name; stored as {final_rel!r}"
            outcome.message = f"{outcome.message}; {note}" if outcome.message else note


def is_video(path: Path) -> bool:
    """By extension; AppleDouble companions (``._clip.mov``) are metadata, not videos."""
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith("._")


def extract_archive(
    archive: Path,
    output_dir: Path,
    *,
    limits: ExtractionLimits,
    project_name: str | None = None,
    delete_source: bool = False,
    keyword: str = "camille",
    token: CancelToken | None = None,
) -> Iterator[Event]:
    """Extracts ``archive`` into ``output_dir/<project>/docs/``.

    Yields progress while reading, then one :class:`MemberOutcome` per member (in archive order,
    with final paths), then the :class:`ExtractionResult`.

    Raises:
        UndecodableMedia: the file is not a readable archive or holds no member at all.
        InvalidArgument: the project name or the destination is unusable.
    """
    token = token or CancelToken()
    if not archive.is_file():
        raise UndecodableMedia(f"not an archive file: {archive.name}")
    project = _project_name(archive, project_name, keyword)
    project_dir = output_dir / project
    if project_dir.is_symlink():
        raise InvalidArgument(f"the project folder {project!r} is a symbolic link")
    created_output = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".extract-", dir=output_dir))
    work.chmod(0o755)  # it may become docs/ itself: readable like any folder, not mkdtemp's 0700
    finished = False
    try:
        extractor = _Extractor(archive, work, limits, token)
        try:
            yield from extractor.run()
        except _StopExtraction as stop:
            extractor.problems.append(stop.problem)
        if extractor.members == 0:
            raise UndecodableMedia(f"{archive.name} holds no member (empty, or not an archive)")
        for problem in extractor.problems:
            log.warning("archive %s: %s: %s", archive.name, problem.reason, problem.message)
        token.raise_if_cancelled()
        _place(extractor, project_dir / "docs")
        yield ExtractProgress(
            extractor.archive_size, extractor.archive_size, extractor.members, "placed"
        )
        counts = dict.fromkeys(MemberStatus, 0)
        videos = []
        for outcome in extractor.outcomes:
            counts[outcome.status] += 1
            if outcome.status is not MemberStatus.EXTRACTED and outcome.reason not in POLICY_SKIPS:
                log.info("member %r %s: %s", outcome.name, outcome.status.value, outcome.reason)
            extracted_file = outcome.status is MemberStatus.EXTRACTED and not outcome.is_dir
            if extracted_file and outcome.output and is_video(outcome.output):
                videos.append(outcome.output)
            yield outcome
        complete = not extractor.problems and all(
            o.status is MemberStatus.EXTRACTED or o.reason in POLICY_SKIPS
            for o in extractor.outcomes
        )
        deleted = False
        if delete_source and complete:
            try:
                archive.unlink()
                deleted = True
            except OSError as exc:
                log.warning("could not delete %s after extraction: %s", archive.name, exc)
        yield ExtractionResult(
            project_name=project,
            project_dir=project_dir,
            videos=videos,
            extracted_count=counts[MemberStatus.EXTRACTED],
            skipped_count=counts[MemberStatus.SKIPPED],
            failed_count=counts[MemberStatus.FAILED],
            source_deleted=deleted,
            total_bytes=extractor.written,
            complete=complete,
            archive_format=extractor.format_name,
            problems=list(extractor.problems),
        )
        finished = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created_output and not finished:
            with contextlib.suppress(OSError):
                output_dir.rmdir()  # only if still empty
