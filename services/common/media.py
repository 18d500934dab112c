"""Confines client-given media paths to the shared media root."""

from __future__ import annotations

import os
from pathlib import Path, PurePath, PurePosixPath

from services.common.errors import InvalidArgument, MediaNotFound

#: Longest name of one path component, and of a whole path, in encoded bytes (Linux's NAME_MAX
#: and PATH_MAX); longer ones fail every file call with ENAMETOOLONG.
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096


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
        pure = check_relative(relative)
        _check_lengths(self.root / pure, relative)
        try:
            candidate = (self.root / pure).resolve()
            if candidate != self.root and self.root not in candidate.parents:
                raise InvalidArgument(f"media path leaves the media root: {_shown(relative)}")
            _check_lengths(candidate, relative)  # symbolic links may lengthen it
            exists = candidate.exists()
        except OSError as exc:  # a loop of links, a component that is a file, no permission
            raise InvalidArgument(
                f"media path cannot be resolved ({exc.strerror or exc}): {_shown(relative)}"
            ) from exc
        if must_exist and not exists:
            raise MediaNotFound(f"no such media: {_shown(relative, quote=False)}")
        return candidate

    def relative(self, path: Path) -> str:
        """``path`` (under the root) as the relative string clients use."""
        return path.resolve().relative_to(self.root).as_posix()


def check_relative(relative: str, what: str = "media path") -> PurePosixPath:
    """``relative`` as a path, once it is one a client may give: not empty, no NUL byte, relative,
    no ``..``, and no name the file system would refuse as too long (the checks that need no
    file system; :meth:`MediaRoot.resolve` adds the ones that do)."""
    if not relative or not relative.strip():
        raise InvalidArgument(f"a {what} is required")
    if "\x00" in relative:
        raise InvalidArgument(f"{what} contains a NUL byte")
    pure = PurePosixPath(relative)
    drive = len(relative) > 1 and relative[1] == ":"
    if pure.is_absolute() or relative.startswith("\\") or drive:
        raise InvalidArgument(f"{what} must be relative to the media root: {_shown(relative)}")
    if ".." in pure.parts:
        raise InvalidArgument(f"{what} may not contain '..': {_shown(relative)}")
    _check_lengths(pure, relative, what)
    return pure


def _shown(relative: str, *, quote: bool = True) -> str:
    """The path for a message, shortened when it is long."""
    if len(relative) <= 200:
        return repr(relative) if quote else relative
    return f"{relative[:100]!r}... ({len(relative)} characters)"


def _check_lengths(path: PurePath, relative: str, what: str = "media path") -> None:
    """Refuses a path the file system would refuse with ENAMETOOLONG."""
    encoded = os.fsencode(path)
    if len(encoded) >= PATH_MAX_BYTES:
        raise InvalidArgument(
            f"{what} is too long ({len(encoded)} bytes, the limit is {PATH_MAX_BYTES - 1}): "
            f"{_shown(relative)}"
        )
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX_BYTES:
            raise InvalidArgument(
                f"a name in the {what} is longer than {NAME_MAX_BYTES} bytes: {_shown(relative)}"
            )
