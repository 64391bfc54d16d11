"""Content-addressed policy revisions: the effective policy of every digest a log uses,
archived next to it.

A record names its policy by ``name``, ``revision`` and ``digest``; a revision is a label
anyone can reuse, the digest is what the policy said. So before a decision is recorded,
its effective policy (the canonical RFC 8785 bytes that ``policy.digest`` hashes) is
written to ``<log>.policies/<hex>.json``, where ``<hex>`` is the digest without its
``sha256:`` prefix. The archive is written like the log:

- every component is opened relative to a handle on the log's validated folder without
  following symlinks (:mod:`engine.safeopen`); the file is written to a temporary name
  (``O_EXCL|O_NOFOLLOW``), fsynced, renamed into place and the folder fsynced, so a
  reader sees a whole policy or none;
- writers hold ``<log>.policies/.lock`` (0600) while they check and write, so two
  processes cannot both archive a conflicting revision;
- a new digest whose (``metadata.name``, ``metadata.revision``) is already archived
  under another digest is refused (``policy.revision_conflict``, exit 2): one revision,
  one policy text; bump the revision.

Reading (:class:`PolicyArchive`) verifies every file: its canonical digest must equal its
name, or it is a problem (``archive.digest_mismatch``), never trusted. ``audit verify``,
``show`` and ``replay`` resolve a record's policy from the archive when the record does
not carry it, and report archived files that were altered and revisions that conflict.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..canonical import canonical_bytes, digest as canonical_digest
from ..errors import AuditError, Location, PolicyError
from ..safeopen import NotAFile, SymlinkRefused, dir_handle, open_below, relative_parts, write_all

if TYPE_CHECKING:
    from ..policy import Policy
    from .log import AuditLog

__all__ = ["ArchiveProblem", "PolicyArchive", "archive_dir", "archive_policy", "conflict_error",
           "revision_conflicts"]

SUFFIX = ".policies"
_NAME = re.compile(r"^([0-9a-f]{64})\.json$")
_MAX_BYTES = 8 << 20
_FILE_MODE = 0o640
_DIR_MODE = 0o750



def archive_dir(log_path: str | os.PathLike[str]) -> Path:
    """The archive of a log: ``<log>.policies`` next to it."""
    p = Path(log_path)
    return p.with_name(p.name + SUFFIX)


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1] if digest.startswith("sha256:") else digest


def _ident(effective: Mapping[str, Any]) -> tuple[str | None, str | None]:
    meta = effective.get("metadata") if isinstance(effective, Mapping) else None
    if not isinstance(meta, Mapping):
        return None, None
    name, rev = meta.get("name"), meta.get("revision")
    return (name if isinstance(name, str) else None, rev if isinstance(rev, str) else None)


def conflict_error(name: str, revision: str, first: tuple[str, str], second: tuple[str, str],
                   *, path: str = "$.metadata.revision", location: Location | None = None) -> PolicyError:
    """``policy.revision_conflict``: ``first`` and ``second`` are (file, digest) pairs."""
    (file_a, dig_a), (file_b, dig_b) = first, second
    return PolicyError(
        "policy.revision_conflict",
        f"policy {name!r} revision {revision!r} is claimed by two different policies: {file_a} "
        f"({dig_a}) and {file_b} ({dig_b}); a revision must name one policy text, so a reviewer "
        f"can tell what it said: bump metadata.revision in the changed policy ({file_b}; for a "
        "policy changed in code, Policy.replace(revision=...)); an unchanged file also gets a new "
        "effective policy when an engine upgrade changes a default (`ctxbudget policy render` "
        "shows it)",
        path=path, location=location,
        details={"name": name, "revision": revision, "files": [file_a, file_b],
                 "digests": [dig_a, dig_b]})


@dataclass(frozen=True, slots=True)
class ArchiveProblem:
    """An archived file that is not what its name claims, or two archived policies that
    claim one revision. ``code``: ``archive.digest_mismatch``, ``archive.unreadable``,
    ``archive.revision_conflict``."""

    code: str
    file: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "file": self.file, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.file}: {self.message}"


def _read_verified(dfd: int, name: str, shown: str) -> tuple[dict[str, Any] | None, str | None]:
    """(effective policy, None) when the file hashes to its name, else (None, why)."""
    m = _NAME.match(name)
    if m is None:
        return None, "not an archived policy name (<64 hex>.json)"
    try:
        fd = open_below(dfd, name, os.O_RDONLY, shown=shown)
    except (SymlinkRefused, NotAFile) as exc:
        return None, f"{exc.strerror}; archived policies must be regular files"
    except FileNotFoundError:
        return None, f"{shown} is not in the archive"
    except OSError as exc:
        return None, f"cannot open: {exc.strerror or exc}"
    with os.fdopen(fd, "rb") as f:
        data = f.read(_MAX_BYTES + 1)
    if len(data) > _MAX_BYTES:
        return None, f"larger than {_MAX_BYTES} bytes"
    try:
        value = json.loads(data.decode("utf-8"))
        actual = canonical_digest(value)
    except (UnicodeDecodeError, ValueError, RecursionError, TypeError) as exc:
        return None, f"not canonical JSON ({type(exc).__name__})"
    if not isinstance(value, dict):
        return None, "not a JSON object"
    if actual != "sha256:" + m.group(1):
        return None, (f"its content hashes to {actual}, not to its name: the archived policy was "
                      "changed after it was written")
    return value, None


class PolicyArchive:
    """The archive of one log, for readers: ``root`` is the validated folder the log
    lives below (default: the log's folder)."""

    def __init__(self, log_path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> None:
        self.log = Path(log_path)
        self.path = archive_dir(self.log)
        self.root = Path(root) if root is not None else self.log.parent
        self._cache: dict[str, tuple[dict[str, Any] | None, str | None]] = {}

    def _parts(self) -> tuple[str, ...]:
        return relative_parts(os.path.relpath(self.path, self.root))

    @contextmanager
    def _dir(self) -> Iterator[int | None]:
        try:
            with dir_handle(self.root, self._parts()) as dfd:
                yield dfd
        except FileNotFoundError:
            yield None

    def exists(self) -> bool:
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode)

    def get(self, digest: str) -> tuple[dict[str, Any] | None, str | None]:
        """(verified effective policy, None), or (None, why it cannot be used)."""
        if digest in self._cache:
            return self._cache[digest]
        name = f"{_hex(digest)}.json"
        try:
            with self._dir() as dfd:
                found = ((None, f"no archive {self.path}") if dfd is None
                         else _read_verified(dfd, name, str(self.path / name)))
        except (SymlinkRefused, NotAFile) as exc:
            found = None, f"{exc.strerror}; the archive folder must be a real folder"
        except OSError as exc:
            found = None, f"cannot open the archive {self.path}: {exc.strerror or exc}"
        self._cache[digest] = found
        return found

    def check(self) -> tuple[tuple[str, ...], tuple[ArchiveProblem, ...]]:
        """Every archived file verified: (the digests held, the problems found)."""
        held: list[str] = []
        problems: list[ArchiveProblem] = []
        claims: dict[tuple[str, str], tuple[str, str]] = {}
        try:
            with self._dir() as dfd:
                if dfd is None:
                    return (), ()
                for name in sorted(os.listdir(dfd)):
                    if name.startswith("."):
                        continue  # the writers' lock and temporary files
                    shown = str(self.path / name)
                    value, why = _read_verified(dfd, name, shown)
                    code = "archive.digest_mismatch" if why and "hashes to" in why else "archive.unreadable"
                    if value is None:
                        problems.append(ArchiveProblem(code, shown, why or "unreadable"))
                        continue
                    dig = "sha256:" + name[:-5]
                    held.append(dig)
                    self._cache[dig] = (value, None)
                    ident = _ident(value)
                    if ident[0] is None or ident[1] is None:
                        continue
                    key = (ident[0], ident[1])
                    if key in claims:
                        other = claims[key]
                        problems.append(ArchiveProblem(
                            "archive.revision_conflict", shown,
                            conflict_error(key[0], key[1], other, (shown, dig)).message))
                    else:
                        claims[key] = (shown, dig)
        except (SymlinkRefused, NotAFile) as exc:
            problems.append(ArchiveProblem("archive.unreadable", str(self.path),
                                           f"{exc.strerror}; the archive folder must be a real folder"))
        except OSError as exc:
            problems.append(ArchiveProblem("archive.unreadable", str(self.path), exc.strerror or str(exc)))
        return tuple(held), tuple(problems)


def _write_atomic(dfd: int, name: str, data: bytes, shown: str) -> None:
    tmp = f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 _FILE_MODE, dir_fd=dfd)
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise


def _archive_error(log: AuditLog, doing: str, exc: OSError) -> AuditError:
    where = archive_dir(log.path)
    kind = "a symbolic link or not a regular file" if isinstance(exc, (SymlinkRefused, NotAFile)) \
        else (exc.strerror or str(exc))
    return AuditError("audit.archive_failed", f"could not {doing} in {where}: {kind}; the policy "
                      "archive must be a real folder next to the log, writable by the log's writers "
                      "(no decision is recorded under a policy that is not archived)",
                      location=Location(file=str(where)))


#: Archived files this process has verified, by (folder, name, inode, size, mtime): the
#: next decision under the same policy costs one ``fstatat``, not a read and a re-hash.
#: (A writer-side shortcut only: ``audit verify`` re-reads and re-hashes every file.)
_VERIFIED: set[tuple[str, str, int, int, int]] = set()


def _archived(dfd: int, where: Path, name: str) -> bool:
    """Whether ``name`` is in the archive and hashes to its name."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    key = (str(where), name, st.st_ino, st.st_size, st.st_mtime_ns)
    if stat.S_ISREG(st.st_mode) and key in _VERIFIED:
        return True
    if _read_verified(dfd, name, str(where / name))[0] is None:
        return False
    _VERIFIED.add(key)
    return True


def archive_policy(log: AuditLog, policy: Policy) -> None:
    """Make sure ``policy``'s effective mapping is archived next to ``log`` (written
    once per digest). Raises ``PolicyError`` ``policy.revision_conflict`` when another
    archived policy claims the same name and revision, ``AuditError``
    ``audit.archive_failed`` when the archive cannot be written."""
    assert log.root is not None
    where = archive_dir(log.path)
    name = f"{_hex(policy.digest)}.json"
    parts = relative_parts(os.path.relpath(where, log.root))
    try:
        with dir_handle(log.root, parts, create=True, mode=_DIR_MODE) as dfd:
            if _archived(dfd, where, name):
                return  # archived before (a conflict would have been refused then)
            lock = open_below(dfd, ".lock", os.O_RDWR | os.O_CREAT, 0o600, shown=str(where / ".lock"))
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                _check_and_write(dfd, where, name, policy)
            finally:
                os.close(lock)
    except (PolicyError, AuditError):
        raise
    except OSError as exc:
        raise _archive_error(log, "archive the policy", exc) from None


def _check_and_write(dfd: int, where: Path, name: str, policy: Policy) -> None:
    value, why = _read_verified(dfd, name, str(where / name))
    if value is not None:
        return  # written by another process while this one waited for the lock
    if why is not None and "is not in the archive" not in why:
        # an altered copy is evidence: never overwritten
        raise AuditError("audit.archive_tampered", f"{where / name}: {why}; run `ctxbudget audit "
                         "verify` on the log, keep the file for the investigation and move it out "
                         "of the archive (the next decision writes the true policy again)",
                         location=Location(file=str(where / name)))
    mine = policy.file or "<policy given in code>"
    for other in sorted(os.listdir(dfd)):
        if other.startswith(".") or other == name:
            continue
        value, why = _read_verified(dfd, other, str(where / other))
        if value is None:
            continue  # not trusted either way; audit verify reports it
        if _ident(value) == (policy.name, policy.revision):
            raise conflict_error(policy.name, policy.revision,
                                 (str(where / other), "sha256:" + other[:-5]), (mine, policy.digest),
                                 location=policy.location_of("$.metadata.revision"))
    _write_atomic(dfd, name, canonical_bytes(policy.to_dict()), str(where / name))


def revision_conflicts(policies: Sequence[Policy]) -> list[PolicyError]:
    """``policy.revision_conflict`` for each policy that claims the (name, revision) of
    an earlier one in ``policies`` with another digest (a policies folder validated
    together, ``ctxbudget policy validate DIR``). The same text twice is no conflict."""
    first: dict[tuple[str, str], Policy] = {}
    out: list[PolicyError] = []
    for p in policies:
        seen = first.setdefault((p.name, p.revision), p)
        if seen.digest != p.digest:
            out.append(conflict_error(p.name, p.revision, (seen.file or "<in code>", seen.digest),
                                      (p.file or "<in code>", p.digest),
                                      location=p.location_of("$.metadata.revision")))
    return out
