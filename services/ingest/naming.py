"""Names on disk: the project folder of an archive and safe paths for its members.

These keep the legacy rules (spec 01 §1.4-1.5) that downstream steps rely on, with its defects
fixed on purpose:

* leading dots are kept (``.DS_Store`` stays ``.DS_Store``; the legacy tool wrote ``DS_Store``);
  only trailing dots and surrounding spaces are removed (Windows cannot store those);
* ``\\`` separates folders like ``/`` (zips made by old Windows tools use it; the legacy tool kept
  ``..\\evil`` as a literal name, a traversal for any Windows client of the share);
* the 255 limit counts UTF-8 bytes, as Linux file systems do (the legacy tool counted characters);
* a Windows device name is recognised before the *first* dot (``nul.tar.gz`` is reserved too);
* ``foo.tar.gz`` names the project ``foo`` (the legacy tool never reached ``.tar.*`` archives);
* collisions are resolved by :func:`unique_name` instead of overwriting.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

MAX_COMPONENT_BYTES = 255
MAX_PATH_CHARS = 4096
FALLBACK_NAME = "sanitized_file"

#: Archive suffixes removed from a file name to get the project name (longest first).
ARCHIVE_SUFFIXES = (
    ".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tgz", ".tbz2", ".tbz", ".txz",
    ".zip", ".zipx", ".rar", ".7z", ".tar",
)  # fmt: skip

_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
_FORBIDDEN = re.compile(r'[<>:"|?*]')
_CONTROL = re.compile(r"[\x00-\x1f]")
# The legacy scan for traversal, run on the raw name before any normalisation.
_TRAVERSAL = (re.compile(r"\.\.[\\/]"), re.compile(r"[\\/]\.\.[\\/]"), re.compile(r"[\\/]\.\.$"))
_ABSOLUTE = re.compile(r"^([\\/]|[A-Za-z]:[\\/])")

# Issue codes, most serious first: the first one present is a member's reported reason.
ISSUE_ORDER = (
    "path_traversal",
    "absolute_path",
    "control_characters",
    "unsafe_characters",
    "reserved_name",
    "name_too_long",
    "empty_name",
    "unicode_normalized",
)


@dataclass(frozen=True)
class SafePath:
    """A member name made safe: ``parts`` are the folder components and the file name."""

    parts: tuple[str, ...]
    issues: tuple[str, ...]

    @property
    def path(self) -> str:
        return "/".join(self.parts)

    @property
    def changed(self) -> bool:
        """True when the name on disk differs from the stored one (beyond ``./`` and ``//``)."""
        return bool(self.issues)

    @property
    def reason(self) -> str:
        """The most serious issue, or "" when the name was kept as is."""
        for code in ISSUE_ORDER:
            if code in self.issues:
                return code
        return ""


def _cut_utf8(text: str, max_bytes: int) -> str:
    """``text`` shortened to at most ``max_bytes`` UTF-8 bytes, never splitting a character."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


def _split_suffix(name: str) -> tuple[str, str]:
    """(stem, suffix) with the last suffix only; a dotfile without another dot has none."""
    pure = PurePosixPath(name)
    suffix = pure.suffix if name not in ("", ".", "..") else ""
    if suffix and len(suffix) == len(name):
        return name, ""
    return name[: len(name) - len(suffix)], suffix


def sanitize_component(name: str, *, max_bytes: int = MAX_COMPONENT_BYTES) -> tuple[str, set[str]]:
    """One file or folder name made safe for Linux, macOS and Windows clients of the share.

    Returns the new name and the issue codes found (empty when nothing had to change).
    """
    issues: set[str] = set()
    if _CONTROL.search(name):
        issues.add("control_characters")
        name = _CONTROL.sub("", name)
    if _FORBIDDEN.search(name):
        issues.add("unsafe_characters")
        name = _FORBIDDEN.sub("_", name)
    stripped = name.strip(" ").rstrip(". ")
    if stripped != name:
        issues.add("unsafe_characters")
        name = stripped
    if name and name.split(".", 1)[0].upper() in _RESERVED:
        issues.add("reserved_name")
        name = "safe_" + name
    if len(name.encode("utf-8")) > max_bytes:
        issues.add("name_too_long")
        stem, suffix = _split_suffix(name)
        room = max_bytes - len(suffix.encode("utf-8"))
        name = _cut_utf8(stem, room) + suffix if room > 0 else _cut_utf8(name, max_bytes)
    if not name:
        issues.add("empty_name")
        name = FALLBACK_NAME
    return name, issues


def sanitize_member_path(raw: str) -> SafePath:
    """The safe relative path for an archive member named ``raw`` (legacy §1.4, defects fixed).

    Traversal (``..``), absolute and drive-letter prefixes are neutralised, never followed; the
    result is always a relative path of at least one component, without ``.`` or ``..``.
    """
    issues: set[str] = set()
    if any(pattern.search(raw) for pattern in _TRAVERSAL) or raw.strip() == "..":
        issues.add("path_traversal")
    if _ABSOLUTE.search(raw):
        issues.add("absolute_path")
    text = unicodedata.normalize("NFKC", raw)
    if text != raw:
        issues.add("unicode_normalized")
    text = text.rstrip("/\\")  # a directory entry's trailing separator is not an empty name
    drive = re.match(r"^([A-Za-z]):(?=[\\/])", text)
    if drive:
        text = text[2:]
    parts: list[str] = []
    for component in re.split(r"[\\/]", text):
        if component == "..":
            issues.add("path_traversal")
            continue
        if component in ("", "."):  # "./a" and "a//b" are harmless spellings of "a", "a/b"
            continue
        clean, found = sanitize_component(component)
        issues |= found
        parts.append(clean)
    if not parts:
        issues.add("empty_name")
        parts = [FALLBACK_NAME]
    joined = "/".join(parts)
    if len(joined) > MAX_PATH_CHARS:
        issues.add("name_too_long")
        cut = len(joined) - MAX_PATH_CHARS + 10
        middle = len(joined) // 2
        joined = joined[: middle - cut // 2] + "..." + joined[middle + (cut - cut // 2) :]
        parts = [sanitize_component(p)[0] for p in joined.split("/") if p not in ("", ".", "..")]
    return SafePath(parts=tuple(parts), issues=tuple(sorted(issues)))


def unique_name(name: str, taken: Callable[[str], bool]) -> str:
    """``name``, or ``<stem>_2<suffix>``, ``<stem>_3<suffix>``… : the first that is not taken."""
    if not taken(name):
        return name
    stem, suffix = _split_suffix(name)
    counter = 2
    while True:
        tag = f"_{counter}"
        room = MAX_COMPONENT_BYTES - len((tag + suffix).encode("utf-8"))
        candidate = _cut_utf8(stem, max(room, 1)) + tag + suffix
        if not taken(candidate):
            return candidate
        counter += 1


def archive_stem(file_name: str) -> str:
    """The name without its archive suffix (``a.tar.gz`` → ``a``; ``a.b.zip`` → ``a.b``)."""
    lower = file_name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)]
    return PurePosixPath(file_name).stem


def project_folder_name(archive_name: str, keyword: str = "camille") -> str:
    """The legacy project folder name of an archive (spec 01 §1.5).

    ``13_Camille_Projet.zip`` → ``13 Camille``; ``Camille_Dupont_2024.zip`` → ``Camille Dupont``;
    ``Camille_2024.zip`` → ``Camille``; ``12_Project_Camille.zip`` → ``12 Project``;
    ``Projet_Camille_final.zip`` → ``Projet Camille final``; ``A&B_camille.rar`` → ``A_B camille``;
    ``__.zip`` → ``projet_sans_nom``.
    """
    keyword = keyword.lower()
    stem = archive_stem(archive_name)
    parts = stem.split("_")
    first = parts[0]
    second = parts[1] if len(parts) > 1 else ""
    if first.isdigit() and len(parts) > 1 and keyword and keyword in second.lower():
        name = f"{first} {second}"
    elif keyword and keyword in first.lower():
        keep_second = len(parts) > 1 and second.isalpha() and second.lower() != keyword
        name = f"{first} {second}" if keep_second else first
    elif first.isdigit() and len(parts) > 1 and second.isalpha():
        name = f"{first} {second}"
    else:
        name = stem.replace("_", " ")
    name = name.strip()
    name = re.sub(r'[<>:"/\\|?*&]', "_", name)
    name = re.sub(r"\s\s+", " ", name)
    name = name.strip("_ .")
    if not name:
        fallback = re.sub(r'[<>:"/\\|?*&\s]', "_", stem).strip("_")
        name = f"projet_{fallback}" if fallback else "projet_sans_nom"
    clean, _ = sanitize_component(name)
    return clean
