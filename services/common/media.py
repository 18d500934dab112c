"""Confines client-given media paths to the shared media root."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from services.common.errors import InvalidArgument, MediaNotFound


class MediaRoot:
    """The folder every service shares (a ReadWriteMany volume in Kubernetes).

    Clients name files by a path relative to it. Absolute paths, ``..`` components and symlinks that
    lead outside are rejected with :class:`InvalidArgument`; missing files with
    :class:`MediaNotFound`.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def resolve(self, relative: str, *, must_exist: bool = True) -> Path:
        """The real path of ``relative`` under the root."""
        if not relative or not relative.strip():
            raise InvalidArgument("a media path is required")
        if "\x00" in relative:
            raise InvalidArgument("media path contains a NUL byte")
        pure = PurePosixPath(relative)
        if (
            pure.is_absolute()
            or relative.startswith("\\")
            or (len(relative) > 1 and relative[1] == ":")
        ):
            raise InvalidArgument(f"media path must be relative to the media root: {relative!r}")
        if ".." in pure.parts:
            raise InvalidArgument(f"media path may not contain '..': {relative!r}")
        candidate = (self.root / pure).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise InvalidArgument(f"media path leaves the media root: {relative!r}")
        if must_exist and not candidate.exists():
            raise MediaNotFound(f"no such media: {relative}")
        return candidate

    def relative(self, path: Path) -> str:
        """``path`` (under the root) as the relative string clients use."""
        return path.resolve().relative_to(self.root).as_posix()
