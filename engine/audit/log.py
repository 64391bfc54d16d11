"""The append-only, hash-chained JSONL audit log: writing, reading, checkpoints.
The line format is :mod:`engine.audit.lineformat`, the verifier :mod:`engine.audit.verify`.

How a record becomes durable (:meth:`AuditLog.append`)::

    folder handle ─▶ <log>.lock (0600, O_NOFOLLOW) ─▶ flock(LOCK_EX)
    ─▶ open <log> below the handle (O_RDWR|O_CREAT|O_NOFOLLOW) ─▶ read the tail backwards
      ├─ a non-empty file with no complete record that is not a torn first record:
      │  refuse (audit.not_a_log): never adopt someone else's file
      ├─ last complete line must be a valid envelope, else refuse (audit.corrupt_tail)
      └─ bytes after the last "\\n" (a torn write) ─▶ copied to <log>.torn-<seq>, fsynced
    lseek(end of last complete line) ─▶ ONE os.write of [recovery line] + record lines
    ─▶ ftruncate what is left of the torn bytes ─▶ fsync ─▶ unlock ─▶ return envelope

- Group commit: threads of one process appending to the same log queue up; the first
  (the leader) writes every queued record in ONE write and ONE fsync under the lock, then
  releases each with its own envelope (or, if the write failed, every one with the
  error). Records that queued meanwhile form the next batch, led by the first of them.
  No caller returns before its record is fsynced; a batch that crosses a rotation limit
  continues in the next segment, as one-by-one appends would. Processes each batch their
  own threads and take turns through the lock.
- The last line is checked before anything chains to it; a line this process wrote or
  checked is known by the SHA-256 of its bytes, so it is not parsed again.
- Every file is opened relative to a handle on the log's folder (``root``, checked once:
  by default the log's own folder; for a policy's log the policy's folder), one
  component at a time with ``O_NOFOLLOW`` (:mod:`engine.safeopen`): a symlink swapped in
  after the check is refused (``audit.symlink``), never followed.
- Writers lock ``<log>.lock``, a separate file created 0600 by the writer, never the log:
  readers open only the log, so a user who may read the log cannot take the writers'
  lock and stall every decision. The lock file must belong to this user and be closed
  to others (``audit.unsafe_lock``).
- ``flock`` belongs to the open file, so the kernel drops it when a writer dies, even by
  SIGKILL; any number of processes and ``AuditLog`` objects may share one log.
- The new lines overwrite the torn bytes (no truncation first), so the torn bytes are
  never gone from the log before a recovery record names their copy.
- On any OSError (ENOSPC, EROFS, EACCES, EIO) the file is cut back to where it was (the
  torn bytes put back) and :class:`AuditError` is raised: a record is either on disk
  and acknowledged, or the caller gets an error. After a failed fsync the bytes may
  still reach the disk; they then show up as a complete, unacknowledged record.
- Readers take no lock: they read up to the last ``"\\n"`` they see. Writers only add
  bytes after the last complete line, so that prefix never changes (a reader racing a
  torn-tail recovery or a failed write may see its last line once; read again).
- A cut at a line boundary leaves a valid, shorter chain: keep exported checkpoints
  elsewhere and pass one to ``verify``. The chain proves order and integrity, not
  authorship: whoever can write the file can append valid records. With a ``signer``
  (:mod:`engine.audit.signing`) each append and :meth:`close` may add an Ed25519-signed
  Merkle checkpoint to ``<log>.checkpoints``, which a rechained forgery cannot match.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import itertools
import json
import os
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; json reads the same values
    orjson = None  # type: ignore[assignment]

from .lineformat import (
    GENESIS_HASH,
    EnvelopeKind,
    LineStatus,
    encode_record,
    encode_record_parsed,
    parse_envelope,
    scan_line,
    seal,
)
from .compact import expand
from .segments import SegmentEnd, SegmentScan, check_segments, header_record, list_segments
from .segments import scan_segment, segment_end, segment_name, segment_number
from .signing import Signer, signer_from_env
from .verify import Checkpoint, VerifyReport, check_chain
from ..policy import Rotate
from ..canonical import canonical_bytes, sha256_hex
from ..errors import AuditError, Location, LogNotIntactError
from ..safeopen import NotAFile, SymlinkRefused, dir_handle, open_below, relative_parts

__all__ = ["AuditLog", "GENESIS_HASH", "load_checkpoint"]

_FILE_MODE = 0o640  # decisions may quote user input: not world-readable
_LOCK_MODE = 0o600  # only the writer may open (and so flock) the lock file
_LOCK_SUFFIX = ".lock"
# A file with no "\n" is a log only if it is the start of a first record cut short.
_RECORD_MARK = b'{"hash":"sha256:'
_TAIL_CHUNK = 4096  # first backwards read; doubles up to _TAIL_CHUNK_MAX
_TAIL_CHUNK_MAX = 1 << 20
_READ_CHUNK = 1 << 20

_HINTS = {
    errno.ENOSPC: "no space left on the device; free space and retry",
    errno.EDQUOT: "disk quota exceeded; free space or raise the quota and retry",
    errno.EROFS: "the file system is read-only; remount it read-write or move the log",
    errno.EACCES: "permission denied; give this user write access to the log and its folder",
    errno.EPERM: "operation not permitted; check the file's attributes (chattr) and owner",
    errno.ENOENT: "the directory does not exist; create it first",
    errno.EIO: "I/O error from the device; check the disk (dmesg) before retrying",
}


_HEADER_BYTES = 600  # a segment's header line, for the rotation estimate
_LINKS_KEPT = 64


#: (seq, hash) of last lines this process wrote or checked, by the SHA-256 of the line's
#: bytes: a pure function of those bytes, so a hit is as good as parsing the line again.
_LINKS: dict[bytes, tuple[int, str]] = {}
_LINKS_MUTEX = threading.Lock()


def _loads(line: bytes) -> Any:
    """One line this process sealed, parsed (orjson: the same values, several times quicker)."""
    return orjson.loads(line) if orjson is not None else json.loads(line)


def _stored_hash(line: bytes) -> str:
    """The ``hash`` of a line :func:`seal` wrote (it begins ``{"hash":"sha256:<hex>"``)."""
    return line[9:80].decode("ascii")


def _remember_link(line: bytes, seq: int) -> None:
    """Remember ``line`` (with its ``\\n``) as a checked last line of sequence ``seq``."""
    key = hashlib.sha256(line[:-1]).digest()
    with _LINKS_MUTEX:
        _LINKS[key] = (seq, _stored_hash(line))
        while len(_LINKS) > _LINKS_KEPT:
            del _LINKS[next(iter(_LINKS))]


class _Encoded(bytes):
    """A record's encoded bytes with the record as parsed from them (what the envelope
    returned for it holds, without parsing the sealed line again)."""

    parsed: Any

    def __new__(cls, data: bytes, parsed: Any) -> _Encoded:
        self = super().__new__(cls, data)
        self.parsed = parsed
        return self


def _envelope(line: bytes, kind: EnvelopeKind, prev: str, seq: int, record: bytes) -> dict[str, Any]:
    """The stored envelope of a line :func:`seal` wrote: parsed, or (a record encoded by
    :meth:`AuditLog.append`) assembled from its parts (the same values)."""
    if isinstance(record, _Encoded):
        return {"hash": _stored_hash(line), "kind": kind.value, "prev_hash": prev,
                "record": record.parsed, "seq": seq}
    out: dict[str, Any] = _loads(line)
    return out


class _Waiter:
    """One record waiting in a group: released once its batch is fsynced (or failed)."""

    __slots__ = ("data", "done", "lead", "envelope", "error")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done = threading.Event()
        self.lead = False
        self.envelope: dict[str, Any] | None = None
        self.error: BaseException | None = None


class _Group:
    """The appends waiting for one log (same file and settings) in this process."""

    __slots__ = ("mutex", "queue", "busy")

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.queue: list[_Waiter] = []
        self.busy = False


_GROUPS: dict[tuple[Any, ...], _Group] = {}
_GROUPS_MUTEX = threading.Lock()


def _reset_after_fork() -> None:  # a child must not wait for its parent's leader
    global _GROUPS_MUTEX, _LINKS_MUTEX
    _GROUPS.clear()
    _GROUPS_MUTEX = threading.Lock()
    _LINKS_MUTEX = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _commit_group(log: AuditLog, data: bytes) -> dict[str, Any]:
    """Group commit: append one encoded record and return its envelope once fsynced.

    Threads appending to the same log meet in one queue. The first becomes the leader:
    it takes the file lock, writes every queued record in one write, fsyncs once, and
    releases each waiter with its own envelope (or the shared error: a batch is durable
    as a whole or not acknowledged at all). Records that arrived meanwhile form the next
    batch, led by the first of them. One fsync is thus shared by every request that was
    waiting for it, and a record is never acknowledged before it is on disk."""
    signer = log.signer if not isinstance(log.signer, Signer) else id(log.signer)
    key = (str(log.path), str(log.root), log.lock_timeout_s, signer, log.rotate, id(log.clock))
    with _GROUPS_MUTEX:
        group = _GROUPS.setdefault(key, _Group())
    me = _Waiter(data)
    with group.mutex:
        group.queue.append(me)
        lead = not group.busy
        group.busy = True
    if not lead:
        me.done.wait()
        if not me.lead:
            if me.error is not None:
                raise me.error
            assert me.envelope is not None
            return me.envelope
    with group.mutex:
        batch, group.queue = group.queue, []
    try:
        written = log._append([w.data for w in batch])  # + any header or recovery line
        records = [e for e in written if e["kind"] == EnvelopeKind.DECISION.value]
        for waiter, envelope in zip(batch, records, strict=True):
            waiter.envelope = envelope
    except BaseException as exc:
        for waiter in batch:
            waiter.error = exc
    finally:
        with group.mutex:
            if group.queue:  # the next batch is led by its first waiter
                group.queue[0].lead = True
                group.queue[0].done.set()
            else:
                group.busy = False
        for waiter in batch:
            if waiter is not me:
                waiter.done.set()
    if me.error is not None:
        raise me.error
    assert me.envelope is not None
    return me.envelope


@functools.lru_cache(maxsize=256)
def _parts_of(path: str, root: str, cwd: str) -> tuple[str, ...]:
    """The components of ``path`` below ``root`` (``cwd``: what relative ones mean; a
    key only), computed once per log rather than on every append."""
    return relative_parts(os.path.relpath(path, root))


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _os_error(code: str, path: Path, doing: str, exc: OSError, **details: Any) -> AuditError:
    hint = _HINTS.get(exc.errno or 0, exc.strerror or str(exc))
    name = errno.errorcode.get(exc.errno or 0, "unknown")
    return AuditError(code, f"could not {doing}: {hint} ({name}: {exc.strerror or exc})",
                      location=Location(file=str(path)),
                      details={"errno": name, "log": str(path), **details})


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    parts, got = [], 0
    while got < size:
        chunk = os.pread(fd, size - got, offset + got)
        if not chunk:
            raise OSError(errno.EIO, "file shrank while being read")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _read_tail(fd: int, size: int) -> tuple[int, bytes | None, bytes]:
    """Scan backwards from ``size``: (offset just after the last "\\n", the last complete
    line without its "\\n" or None, the bytes after the last "\\n")."""
    buf, start, chunk, last_nl = b"", size, _TAIL_CHUNK, -1
    while True:
        if last_nl < 0:
            i = buf.rfind(b"\n")
            last_nl = start + i if i >= 0 else -1
        if last_nl >= 0:
            j = buf.rfind(b"\n", 0, last_nl - start)
            if j >= 0 or start == 0:
                return last_nl + 1, buf[j + 1:last_nl - start], buf[last_nl + 1 - start:]
        elif start == 0:
            return 0, None, buf
        n = min(chunk, start)
        start -= n
        buf = _pread_exact(fd, n, start) + buf
        chunk = min(chunk * 2, _TAIL_CHUNK_MAX)


def _write_all(fd: int, data: bytes) -> None:
    # One write in practice; the loop only matters for a short write (signal, quota).
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_torn_first_record(data: bytes) -> bool:
    """Bytes with no newline that can only be a first record cut short by a crash."""
    head = data[:len(_RECORD_MARK)]
    return _RECORD_MARK.startswith(head) if len(head) < len(_RECORD_MARK) else head == _RECORD_MARK


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a checkpoint file written by :meth:`AuditLog.export_checkpoint`:
    ``{"seq", "hash", "records", "log"}``, or ``audit.bad_checkpoint``."""
    return Checkpoint.load(path).to_dict()


@dataclass(frozen=True, slots=True)
class AuditLog:
    """A handle on one log file. Every call opens, locks and closes the file, so a
    handle is safe to share between threads and to pickle into subprocesses.

    Args:
        path: the ``.jsonl`` file; created (mode 0640) by the first append.
        lock_timeout_s: how long to wait for another writer; None waits for ever.
        clock: UTC timestamp for recovery records (injected so tests can fix it).
        signer: writes signed checkpoints to ``<log>.checkpoints`` after appends and on
            :meth:`close` (:mod:`engine.audit.signing`); ``"env"`` (default): the key
            named by ``CTXBUDGET_AUDIT_KEY``, if set; None: unsigned.
        root: the validated folder the log lives below (default: the log's folder).
            Every component below it is opened without following symlinks, so a symlink
            swapped in after validation cannot redirect a write; missing folders below
            it are created by the first append.
        rotate: close the active segment and begin the next one when an append would
            take it past ``max_bytes`` or ``max_records`` (:mod:`engine.audit.segments`);
            None: one file. Readers always read every segment.
    """

    path: Path
    lock_timeout_s: float | None = 30.0
    clock: Callable[[], str] = field(default=_utc_now, compare=False)
    signer: Signer | Literal["env"] | None = field(default="env", compare=False)
    root: Path | None = None
    rotate: Rotate | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        path = Path(self.path)
        root = path.parent if self.root is None else Path(self.root)
        try:
            relative_parts(os.path.relpath(path, root))
        except ValueError:
            raise AuditError("audit.path_outside", f"audit log {path} is not below its folder "
                             f"{root}; use a path inside it", location=Location(file=str(path)),
                             details={"log": str(path), "root": str(root)}) from None
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "root", root)
        if isinstance(self.signer, Signer):
            self.signer.check_outside(self.path)

    @property
    def lock_path(self) -> Path:
        """The writers' lock file, ``<log>.lock`` next to the log (never opened by readers)."""
        return self.path.with_name(self.path.name + _LOCK_SUFFIX)

    def _parts(self) -> tuple[str, ...]:
        assert self.root is not None
        both_absolute = self.path.is_absolute() and self.root.is_absolute()
        return _parts_of(str(self.path), str(self.root), "" if both_absolute else os.getcwd())

    def active_signer(self) -> Signer | None:
        """The signer appends use: the one given, or (``"env"``, the default) the key
        named by ``CTXBUDGET_AUDIT_KEY`` when it is set, resolved at write time so that
        readers never load a key."""
        if self.signer != "env":
            return self.signer if isinstance(self.signer, Signer) else None
        signer = signer_from_env()
        if signer is not None:
            signer.check_outside(self.path)
        return signer

    def close(self) -> None:
        """Sign the records not yet covered by a signed checkpoint (no-op unsigned)."""
        signer = self.active_signer()
        if signer is not None:
            with self._locked(write=True) as (fd, dir_fd, name):
                signer.close(self.path.with_name(name), fd, dir_fd)

    def rotate_key(self, new: Signer) -> AuditLog:
        """Sign what is unsigned, record a rotation note (signed by the old and the new
        key) and return a handle that signs with ``new`` from here on."""
        signer = self.active_signer()
        if signer is None:
            raise AuditError("audit.no_key", f"{self.path} has no signing key to rotate from; "
                             "set CTXBUDGET_AUDIT_KEY to the current key",
                             location=Location(file=str(self.path)))
        new.check_outside(self.path)
        with self._locked(write=True) as (fd, dir_fd, name):
            signer.rotate(self.path.with_name(name), fd, new, dir_fd)
        return AuditLog(self.path, self.lock_timeout_s, self.clock, new, root=self.root,
                        rotate=self.rotate)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Append one decision record and return its stored envelope
        ``{"seq", "prev_hash", "kind", "record", "hash"}`` only once it is fsynced.

        ``record`` must be a JSON-ready mapping (str keys; str, int, float, bool, None,
        lists, mappings; no NaN/inf). Raises :class:`AuditError`: ``audit.bad_record``
        (path of the bad value), ``audit.open_failed``, ``audit.locked``,
        ``audit.write_failed``, ``audit.corrupt_tail``."""
        data, parsed = encode_record_parsed(record)  # encoded before taking the lock
        return _commit_group(self, data if parsed is None else _Encoded(data, parsed))

    def recover(self) -> dict[str, Any] | None:
        """Move a torn last line aside and record that, without appending a decision.
        Returns the recovery envelope, or None when the tail was clean."""
        written = self._append([])
        return written[0] if written else None

    def _append(self, records: Sequence[bytes]) -> list[dict[str, Any]]:
        """Write ``records`` (encoded) under one lock: one write and one fsync per segment
        they land in. Returns every envelope written (headers, recovery, records), in
        order; the records' are the last ``len(records)``."""
        with self._locked(write=True) as (fd, dir_fd, name):
            size = os.fstat(fd).st_size
            end, last, torn = _read_tail(fd, size)
            if last is None and torn and not _is_torn_first_record(torn):
                raise AuditError(
                    "audit.not_a_log",
                    f"{self.path} is not empty ({size} bytes) but holds no audit record; "
                    "refusing to adopt it as an audit log (its content would be moved "
                    "aside). Point --audit-log / audit.log at a new file, or move this "
                    "file away if it is not needed", location=Location(file=str(self.path)),
                    details={"log": str(self.path), "size_bytes": size})
            number = segment_number(self.path.name, name) or 0
            todo = list(records)
            written: list[dict[str, Any]] = []
            fit = len(todo)
            if todo and self.rotate is not None:
                if last is None:  # an empty segment (after a header if it is not the first)
                    lines = 0 if number == 0 else 1
                else:
                    seq = self._last_link(last, end)[0]
                    lines = seq - (1 if number == 0 else self._first_seq(fd)) + 1
                fit = self._room(number, lines + (1 if torn else 0), size, todo)
            if fit or not todo:
                previous = None
                if last is None and number > 0:  # a segment begun by a writer that died
                    previous = segment_end(dir_fd, segment_name(self.path.name, number - 1),
                                           number - 1)
                written += self._write_lines(fd, dir_fd, name, end, size, last, torn,
                                             todo[:fit], previous)
                del todo[:fit]
            current = fd  # _locked closes fd; the segments begun here are closed below
            try:
                while todo:  # the active segment is full: close it, begin the next one
                    signer = self.active_signer()
                    if signer is not None:  # the closed segment ends signed
                        signer.close(self.path.with_name(name), current, dir_fd)
                    previous = segment_end(dir_fd, name, number)
                    assert previous is not None
                    number += 1
                    name = segment_name(self.path.name, number)
                    new_fd = open_below(dir_fd, name, os.O_RDWR | os.O_CREAT | os.O_EXCL,
                                        _FILE_MODE, shown=str(self.path.with_name(name)))
                    if current != fd:
                        os.close(current)
                    current = new_fd
                    # after its header a segment always takes one record
                    fit = max(1, self._room(number, 1, _HEADER_BYTES, todo))
                    written += self._write_lines(current, dir_fd, name, 0, 0, None, b"",
                                                 todo[:fit], previous)
                    del todo[:fit]
            finally:
                if current != fd:
                    os.close(current)
            return written

    def _room(self, number: int, lines: int, size: int, records: Sequence[bytes]) -> int:
        """How many of ``records`` fit in a segment that holds ``lines`` lines and
        ``size`` bytes before it is past ``self.rotate`` (a segment keeps at least one
        record besides its header)."""
        if self.rotate is None:
            return len(records)
        for i, record in enumerate(records):
            if lines > (0 if number == 0 else 1):
                too_many = (self.rotate.max_records is not None
                            and lines + 1 > self.rotate.max_records)
                # the envelope adds its hash, prev_hash, kind and seq: under 200 bytes
                too_big = (self.rotate.max_bytes is not None
                           and size + len(record) + 200 > self.rotate.max_bytes)
                if too_many or too_big:
                    return i
            lines += 1
            size += len(record) + 200
        return len(records)

    @staticmethod
    def _first_seq(fd: int) -> int:
        """The seq of a segment's first line (its header: short)."""
        head = os.pread(fd, 65536, 0)
        entry = scan_line(head.split(b"\n", 1)[0], 1)
        return entry.seq if entry.seq is not None else 1

    def _write_lines(self, fd: int, dir_fd: int, name: str, end: int, size: int,
                     last: bytes | None, torn: bytes, record: bytes | Sequence[bytes] | None,
                     previous: SegmentEnd | None,
                     kind: EnvelopeKind = EnvelopeKind.DECISION) -> list[dict[str, Any]]:
        """Write [segment header] + [recovery] + records (``record``: one, several or
        none) at ``end`` of segment ``name``: one write, one fsync."""
        records = [] if record is None else [record] if isinstance(record, bytes) else record
        number = segment_number(self.path.name, name) or 0
        if previous is not None:
            seq, prev = previous.last_seq, previous.last_hash
        else:
            seq, prev = self._last_link(last, end)
        lines: list[bytes] = []
        if previous is not None:
            lines.append(seal(seq + 1, prev, EnvelopeKind.SEGMENT,
                              header_record(number, previous, self.clock())))
            prev = _stored_hash(lines[-1])
        if torn:
            moved = self._move_aside(torn, seq + 1, dir_fd)
            lines.append(seal(seq + len(lines) + 1, prev, EnvelopeKind.RECOVERY, {
                "reason": "torn_tail", "torn_offset": end, "torn_bytes": len(torn),
                "torn_sha256": "sha256:" + sha256_hex(torn), "moved_to": moved,
                "detected_at": self.clock()}))
        link = _stored_hash(lines[-1]) if lines else prev
        envelopes = [_loads(line) for line in lines]  # the header and recovery lines
        for one in records:
            lines.append(seal(seq + len(lines) + 1, link, kind, one))
            envelopes.append(_envelope(lines[-1], kind, link, seq + len(lines), one))
            link = _stored_hash(lines[-1])
        if lines:
            signer = self.active_signer()  # a bad key fails before the write
            self._commit(fd, b"".join(lines), end, size, torn,
                         seq if previous is None else 0, dir_fd)
            if signer is not None:  # still under the lock: notes in log order
                signer.after_append(self.path.with_name(name), fd, end, lines, dir_fd)
            _remember_link(lines[-1], seq + len(lines))
        return envelopes

    def _last_link(self, last: bytes | None, end: int) -> tuple[int, str]:
        """(seq, hash) of the last complete line, checked before anything chains to it
        (a line this process wrote or checked is known by its bytes' digest)."""
        if last is None:
            return 0, GENESIS_HASH
        known = _LINKS.get(hashlib.sha256(last).digest())
        if known is not None:
            return known
        entry = scan_line(last, 0)
        if entry.status is not LineStatus.OK or entry.seq is None:
            raise AuditError(
                "audit.corrupt_tail",
                f"the last complete line of {self.path} (ending at byte {end}) is not a "
                f"valid audit record ({entry.message}); refusing to append, because the new "
                "record would chain to a hash that cannot be trusted. Run verify, then "
                "restore the log from a copy or move it aside and start a new one",
                location=Location(file=str(self.path)), details={"end_offset": end})
        assert entry.stored_hash is not None
        _remember_link(last + b"\n", entry.seq)
        return entry.seq, entry.stored_hash

    def _move_aside(self, torn: bytes, seq: int, dir_fd: int) -> str:
        """Copy torn bytes to a new ``<log>.torn-<seq>[.<n>]`` file, durably; its name."""
        doing = f"move the torn tail of {self.path} aside"
        for n in itertools.count():
            name = f"{self.path.name}.torn-{seq}" + (f".{n}" if n else "")
            target = self.path.parent / name
            try:  # O_EXCL never follows a symlink: a planted name is skipped, not written
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, _FILE_MODE, dir_fd=dir_fd)
            except FileExistsError:  # from a recovery that crashed before its record
                continue
            except OSError as exc:
                raise _os_error("audit.write_failed", target, doing, exc) from exc
            try:
                try:
                    _write_all(fd, torn)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.fsync(dir_fd)
            except OSError as exc:
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except OSError:
                    pass
                raise _os_error("audit.write_failed", target, doing, exc) from exc
            return name
        raise AssertionError("unreachable: itertools.count() is endless")

    def _commit(self, fd: int, data: bytes, end: int, size: int, torn: bytes,
                seq: int, dir_fd: int) -> None:
        """Write ``data`` over the torn bytes in one write and fsync; on any OSError put
        the file back as it was (torn bytes included) and raise ``audit.write_failed``."""
        try:
            os.lseek(fd, end, os.SEEK_SET)
            _write_all(fd, data)
            if size > end + len(data):  # torn bytes longer than what replaced them
                os.ftruncate(fd, end + len(data))
            os.fsync(fd)
            if seq == 0:  # the first line may have created the file: make its name durable
                os.fsync(dir_fd)
            return
        except OSError as exc:
            failure = exc
        try:
            os.ftruncate(fd, end)
            if torn:
                os.lseek(fd, end, os.SEEK_SET)
                _write_all(fd, torn)
            os.fsync(fd)
            restored, note = True, ""
        except OSError:
            restored, note = False, ("; the log could not be cut back and may end in a "
                                     "partial line, which the next append moves aside")
        err = _os_error("audit.write_failed", self.path, f"append to {self.path}", failure,
                        last_seq=seq, restored=restored)
        raise AuditError(err.code, err.message + note, location=err.location,
                         details=err.details) from failure

    def _refused(self, exc: SymlinkRefused | NotAFile) -> AuditError:
        what = "a symbolic link" if isinstance(exc, SymlinkRefused) else "not a regular file"
        return AuditError(
            "audit.symlink" if isinstance(exc, SymlinkRefused) else "audit.not_a_file",
            f"{exc.name} is {what}; the audit log, its lock file and their folders below "
            f"{self.root} must be real files and folders, so that nothing can redirect a "
            "record or a read. Replace it with the real file or folder (or point "
            "--audit-log / audit.log at the real path)",
            location=Location(file=str(self.path)),
            details={"log": str(self.path), "entry": exc.name})

    @contextmanager
    def _locked(self, *, write: bool, segment: str | None = None
                ) -> Iterator[tuple[int, int, str]]:
        """(segment fd, folder fd, segment file name): the active segment for writers
        (who first take ``<log>.lock``, one lock for all segments), ``segment`` (default:
        the log's own file) for readers, who take nothing."""
        parts = self._parts()
        base = parts[-1]
        doing = f"open {self.path} for {'appending' if write else 'reading'}"
        opened = False
        try:
            with dir_handle(self.root or self.path.parent, parts[:-1], create=write) as dir_fd:
                lock_fd = self._open_lock(dir_fd, base) if write else -1
                try:
                    if write:
                        self._lock(lock_fd, fcntl.LOCK_EX)
                    name = segment or (self._active(dir_fd) if write else base)
                    flags = (os.O_RDWR | os.O_CREAT) if write else os.O_RDONLY
                    fd = open_below(dir_fd, name, flags, _FILE_MODE,
                                    shown=str(self.path.with_name(name)))
                    opened = True
                    try:
                        yield fd, dir_fd, name
                    finally:
                        os.close(fd)
                finally:
                    if lock_fd >= 0:
                        os.close(lock_fd)  # also releases the flock
        except AuditError:  # an OSError too, but already explained
            raise
        except (SymlinkRefused, NotAFile) as exc:
            raise self._refused(exc) from None
        except FileNotFoundError as exc:
            if write:
                raise _os_error("audit.open_failed", self.path, f"create {self.path}",
                                exc) from exc
            raise AuditError("audit.not_found", f"no audit log at {self.path}",
                             location=Location(file=str(self.path))) from exc
        except OSError as exc:
            if opened:
                raise _os_error("audit.read_failed", self.path, f"read {self.path}",
                                exc) from exc
            raise _os_error("audit.open_failed", self.path, doing, exc) from exc

    def _active(self, dir_fd: int) -> str:
        """The file name of the active (highest-numbered) segment."""
        found = list_segments(os.listdir(dir_fd), self.path.name)
        return found[-1][1] if found else self.path.name

    def segments(self) -> list[str]:
        """The file names of the log's segments, oldest first (``[<log's name>]`` for a
        log that was never rotated, and for one that does not exist yet)."""
        parts = self._parts()
        try:
            with dir_handle(self.root or self.path.parent, parts[:-1], create=False) as dir_fd:
                found = list_segments(os.listdir(dir_fd), self.path.name)
        except (SymlinkRefused, NotAFile) as exc:
            raise self._refused(exc) from None
        except OSError:
            found = []  # opening the segment says what is wrong
        return [n for _, n in found] or [self.path.name]

    def _open_lock(self, dir_fd: int, name: str) -> int:
        lock = self.lock_path
        try:
            fd = open_below(dir_fd, name + _LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, _LOCK_MODE,
                            shown=str(lock))
        except (SymlinkRefused, NotAFile):
            raise
        except OSError as exc:
            raise _os_error("audit.open_failed", lock, f"open the lock file {lock}",
                            exc) from exc
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            os.close(fd)
            raise AuditError(
                "audit.unsafe_lock",
                f"the lock file {lock} belongs to uid {st.st_uid} with mode "
                f"{stat.S_IMODE(st.st_mode):04o}; it must belong to the writer (uid "
                f"{os.geteuid()}) with mode 0600, or another user could hold it and stall "
                f"every decision. Remove it (the next writer recreates it) or run "
                f"`chmod 600 {lock}` as its owner", location=Location(file=str(lock)),
                details={"lock": str(lock), "uid": st.st_uid,
                         "mode": f"{stat.S_IMODE(st.st_mode):04o}"})
        return fd

    def _lock(self, fd: int, op: int) -> None:
        if self.lock_timeout_s is None:
            fcntl.flock(fd, op)
            return
        deadline, delay = time.monotonic() + self.lock_timeout_s, 0.0002
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AuditError(
                        "audit.locked", f"{self.path} stayed locked by another writer for "
                        f"{self.lock_timeout_s} s; a dead writer releases its lock at once, "
                        f"so look for a live but stuck one (fuser {self.lock_path})",
                        location=Location(file=str(self.path))) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.005)

    @contextmanager
    def _snapshot(self, segment: str | None = None
                  ) -> Iterator[tuple[Any, int, bytes | None, bytes]]:
        """(binary file at offset 0, end of complete lines, last line, torn bytes) of
        ``segment`` (default: the log's own file). No lock: no writer changes a byte
        before ``end``."""
        with self._locked(write=False, segment=segment) as (fd, _dir_fd, _name):
            end, last, torn = _read_tail(fd, os.fstat(fd).st_size)
            with os.fdopen(os.dup(fd), "rb") as f:
                yield f, end, last, torn

    @staticmethod
    def _lines(f: Any, end: int) -> Iterator[tuple[int, bytes]]:
        pos = 0
        for number, raw in enumerate(f, 1):
            if pos >= end:
                return
            pos += len(raw)
            yield number, raw[:-1]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every stored envelope in file order. Raises :class:`LogNotIntactError` on a
        line that is not a JSON envelope (``audit.corrupt_line``) and, after the last
        complete record, :class:`AuditError` on a torn tail (``audit.torn_tail``):
        nothing is skipped silently. Iteration only reads; :meth:`verify` checks hashes
        and order."""
        for number, env, why in self.scan(torn_tail_error=True):
            if env is None:
                raise LogNotIntactError("audit.corrupt_line", f"{self.path}: {why}; run verify",
                                        location=Location(file=str(self.path), line=number))
            yield env

    def find(self, decision_id: str) -> dict[str, Any] | None:
        """The first decision envelope whose ``record["decision_id"]`` equals
        ``decision_id``, or None. Reads the whole log."""
        return next((env for env in self if env.get("kind") == EnvelopeKind.DECISION.value
                     and env["record"].get("decision_id") == decision_id), None)

    def scan(self, *, torn_tail_error: bool = False
             ) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        """Every complete line as ``(line number, envelope, None)``, or ``(line number,
        None, why)`` for a line that is not an envelope (bad UTF-8 or JSON, nesting beyond
        :data:`~engine.audit.lineformat.MAX_DEPTH`, no record, kind or seq) — for readers
        that report a bad line and go on (``audit replay``, record checks): hostile bytes
        never raise. A torn tail is not a line (with ``torn_tail_error``, it raises
        ``audit.torn_tail`` after the last line). Hashes and order are :meth:`verify`'s.
        Decision records are given in full: a compact one (schema version 2,
        :mod:`engine.audit.compact`) is expanded; the line's bytes are what was hashed.
        Every segment is read, oldest first; line numbers run on across segments."""
        names = self.segments()
        offset = 0  # line numbers run on across segments
        for name in names:
            with self._snapshot(name) as (f, end, _last, torn):
                count = 0
                for count, raw in self._lines(f, end):
                    env, why = parse_envelope(raw)
                    if env is not None and env["kind"] == EnvelopeKind.DECISION.value:
                        env["record"] = expand(env["record"])  # compact records in full
                    where = f"{name} line {count}" if len(names) > 1 else f"line {offset + count}"
                    yield offset + count, env, None if env is not None else f"{where} is {why}"
                offset += count
                if torn and torn_tail_error:
                    path = self.path.with_name(name)
                    raise AuditError("audit.torn_tail", f"{path} ends in {len(torn)} bytes "
                                     "of an unfinished write; call recover() (or append) to "
                                     "move them aside", location=Location(file=str(path)))

    def verify(self, checkpoint: Mapping[str, Any] | None = None, *, from_seq: int = 1,
               to_seq: int | None = None) -> VerifyReport:
        """Re-hash every line and check the chain (see :mod:`engine.audit.verify`); with a
        ``checkpoint`` (``{"seq", "hash", ...}``), also that the log still reaches it
        unchanged. The whole file is read so that records before ``from_seq`` anchor
        the chain; problems are reported for ``from_seq..to_seq`` only."""
        cp = None if checkpoint is None else Checkpoint.from_dict(checkpoint)
        names = self.segments()
        if names != [self.path.name]:
            scans: list[SegmentScan] = []
            for name in names:
                with self._snapshot(name) as (f, end, _last, torn):
                    scans.append(scan_segment(self.path.name, name, (raw for _, raw in
                                                                    self._lines(f, end)),
                                              torn, sum(len(s.entries) for s in scans)))
            return check_segments(scans, log=str(self.path), checkpoint=cp,
                                  from_seq=from_seq, to_seq=to_seq)
        with self._snapshot() as (f, _end, _last, torn):
            entries = [scan_line(raw, n) for n, raw in self._lines(f, _end)]
        if torn:
            entries.append(scan_line(torn, len(entries) + 1, terminated=False))
        return check_chain(entries, log=str(self.path), checkpoint=cp,
                           from_seq=from_seq, to_seq=to_seq)

    def checkpoint(self) -> dict[str, Any]:
        """``{"seq", "hash", "records", "log"}`` of the last complete record (seq 0 and
        the genesis hash for an empty log). Anchors what is there now: verify first if
        you want to anchor a verified state."""
        seq, digest_, records = 0, GENESIS_HASH, 0
        for name in self.segments():  # the last segment with a line has the last link
            with self._snapshot(name) as (f, end, last, _torn):
                if last is not None:
                    seq, digest_ = self._last_link(last, end)
                left = end
                while left > 0:
                    chunk = f.read(min(_READ_CHUNK, left))
                    records += chunk.count(b"\n")
                    left -= len(chunk)
        return {"seq": seq, "hash": digest_, "records": records, "log": str(self.path)}

    def export_checkpoint(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write :meth:`checkpoint` to ``path`` atomically (temp file, fsync, rename,
        fsync directory) and return it. Keep the file somewhere the log's writers
        cannot rewrite."""
        data = self.checkpoint()
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, canonical_bytes(data) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _os_error("audit.write_failed", target, f"write checkpoint {target}",
                            exc) from exc
        return data

    load_checkpoint = staticmethod(load_checkpoint)
