"""Open files below a folder handle without following symlinks (no TOCTOU).

A path that was checked ("inside the policy's folder") and then opened by name can be
redirected between the check and the open: swap a symlink in and the write or read goes
elsewhere. Here the folder is opened once as a handle and every name below it is opened
*relative to that handle*, one component at a time, each with ``O_NOFOLLOW`` (folders
also with ``O_DIRECTORY``). A symlink anywhere below the handle is refused with
:class:`SymlinkRefused` (an ``OSError`` with ``errno.ELOOP``); whatever is swapped in
after the check, the kernel opens the real entry or nothing.

Used by the audit log (log, lock and torn-tail files) and by ``extends`` resolution.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["NotAFile", "SymlinkRefused", "dir_handle", "open_below", "relative_parts"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SymlinkRefused(OSError):
    """A component below the folder handle is a symbolic link."""

    def __init__(self, name: str) -> None:
        super().__init__(errno.ELOOP, f"{name} is a symbolic link", name)
        self.name = name


class NotAFile(OSError):
    """The last component is there but is not a regular file (a folder, FIFO, device)."""

    def __init__(self, name: str) -> None:
        super().__init__(errno.EISDIR, f"{name} is not a regular file", name)
        self.name = name


def relative_parts(rel: str) -> tuple[str, ...]:
    """The components of a relative path, ``.`` dropped; ``ValueError`` for an absolute
    path, an empty one, or one that climbs out with ``..`` after normalising."""
    if not rel or os.path.isabs(rel):
        raise ValueError(f"{rel!r} is not a relative path")
    norm = os.path.normpath(rel)
    parts = tuple(p for p in norm.split(os.sep) if p not in ("", "."))
    if not parts or parts[0] == "..":
        raise ValueError(f"{rel!r} leaves its folder")
    return parts


def _open_at(name: str, flags: int, mode: int, dir_fd: int, shown: str) -> int:
    try:
        return os.open(name, flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink
            raise SymlinkRefused(shown) from None
        if exc.errno == errno.ENOTDIR and flags & os.O_DIRECTORY:
            # Linux checks O_DIRECTORY before O_NOFOLLOW: a symlink (even to a folder)
            # fails with ENOTDIR. Only a regular file there is really "not a folder"
            # (a folder now means the link was swapped back meanwhile).
            try:
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            except OSError:
                mode = stat.S_IFLNK
            if not stat.S_ISREG(mode):
                raise SymlinkRefused(shown) from None
        raise


@contextmanager
def dir_handle(path: str | os.PathLike[str], rel_dirs: tuple[str, ...] = (), *,
               create: bool = False, mode: int = 0o750) -> Iterator[int]:
    """A handle (fd) on ``path`` (followed as given: the validated folder), then on each
    of ``rel_dirs`` below it walked without following symlinks; with ``create``, missing
    folders are made (``mkdirat``). Closed on exit."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        shown = os.fspath(path)
        for part in rel_dirs:
            shown = os.path.join(shown, part)
            try:
                nxt = _open_at(part, _DIR_FLAGS, 0, fd, shown)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made by another writer meanwhile (or a symlink: refused below)
                nxt = _open_at(part, _DIR_FLAGS, 0, fd, shown)
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def open_below(dir_fd: int, rel: str, flags: int, mode: int = 0o640, *,
               shown: str | None = None) -> int:
    """Open ``rel`` (a relative path) below ``dir_fd``: each folder component with
    ``O_NOFOLLOW | O_DIRECTORY``, the last with ``O_NOFOLLOW`` and ``flags``. The result
    must be a regular file (``O_NONBLOCK`` is added so that a FIFO cannot block the open;
    it changes nothing for regular files). Raises :class:`SymlinkRefused`, :class:`NotAFile`, ``ValueError``
    for a path that leaves the folder, or the ``OSError`` of the open."""
    parts = relative_parts(rel)
    label = shown or rel
    fd = dir_fd
    try:
        for i, part in enumerate(parts[:-1]):
            nxt = _open_at(part, _DIR_FLAGS, 0, fd, os.path.join(*parts[:i + 1]))
            if fd != dir_fd:
                os.close(fd)
            fd = nxt
        out = _open_at(parts[-1], flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode,
                       fd, label)
    finally:
        if fd != dir_fd:
            os.close(fd)
    try:
        st = os.fstat(out)
        if not stat.S_ISREG(st.st_mode):
            raise NotAFile(label)
    except BaseException:
        os.close(out)
        raise
    return out


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked), then
    ``fsync`` it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)
