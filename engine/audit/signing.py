"""Signed checkpoints of an audit log: the writer side (:class:`Signer`, called by
:class:`~engine.audit.log.AuditLog` after each append and on close) and the reviewer side
(:func:`verify_signed`, :func:`prove`, :func:`check_proof`).

The tree is RFC 6962 over the log's lines in file order (:mod:`engine.audit.merkle`),
leaf data = the 32-byte envelope hash. Checkpoints are C2SP signed notes
(:mod:`engine.audit.note`) appended to the sidecar ``<log>.checkpoints``.

What a valid signed checkpoint proves: the key's holder saw exactly these first ``size``
records. A rechained forgery, a cut at a line boundary, another log or a rewritten
sidecar no longer reproduce a signed root. What it cannot prove: that records after the
last checkpoint (the *unsigned tail*) are genuine, or that an older log together with its
older sidecar is not the newest one; a checkpoint note kept outside the writer's reach
(``verify --checkpoint NOTE``, or the note in any proof bundle) catches that rollback.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from . import merkle
from .lineformat import scan_line
from .note import (
    Checkpoint,
    Rotation,
    SigningKey,
    VerifierKey,
    format_checkpoint,
    load_signing_key,
    log_origin,
    parse_note,
    sign_note,
    split_notes,
)
from ..canonical import sha256_hex
from ..errors import AuditError, Location
from ..safeopen import open_below, write_all

__all__ = ["KEY_ENV", "Signer", "SignedReport", "check_proof", "policy_signer", "prove",
           "sidecar_path", "signer_from_env", "verify_signed"]

KEY_ENV = "CTXBUDGET_AUDIT_KEY"
DEFAULT_EVERY_RECORDS = 1000
DEFAULT_EVERY_S = 60.0
_SIDECAR_MODE = 0o644  # public: checkpoints carry no content
PROOF_FORMAT = "ctxbudget.audit.inclusion/1"


def sidecar_path(log: Path) -> Path:
    """Where the signed checkpoints of ``log`` are kept: ``<log>.checkpoints``."""
    return log.with_name(log.name + ".checkpoints")


def _line_leaf(raw: bytes) -> bytes:
    """Leaf data of one line: the SHA-256 of its envelope without "hash" (what the hash
    should be). A stored hash is never trusted; a line that does not parse contributes
    the hash of its bytes, which no genuine tree contains."""
    entry = scan_line(raw, 0)
    if entry.computed_hash is not None:
        return merkle.leaf_bytes(entry.computed_hash)
    return bytes.fromhex(sha256_hex(raw))


def _stored_leaf(raw: bytes) -> bytes:
    """The writer's fast route: the stored hash at the start of a line it just wrote."""
    if raw.startswith(b'{"hash":"sha256:') and len(raw) > 80:
        return bytes.fromhex(raw[16:80].decode("ascii"))
    return _line_leaf(raw)


@dataclass
class _State:
    ident: tuple[int, int]
    end: int
    compact: merkle.CompactRange
    signed_size: int
    signed_at: float


@dataclass
class Signer:
    """Writes a signed checkpoint into the log's sidecar every ``every_records`` records,
    at the first append ``every_s`` seconds or more after the last checkpoint, and on
    close. There is no background timer: a log that receives no append after ``every_s``
    seconds gets its next checkpoint at its next append or when it is closed
    (``AuditLog.close``, which the CLI calls after every recorded decision, infeasible
    ones included). "The last checkpoint" is the last one this signer wrote, or, for a
    new process, the sidecar's modification time.

    The private key stays in memory; its file must be outside the log's folder (checked
    by :meth:`check_outside`) and mode 0600. ``log_name`` (default: the log's file name)
    goes into the origin. One ``Signer`` may serve several logs of one process."""

    key: SigningKey
    every_records: int = DEFAULT_EVERY_RECORDS
    every_s: float = DEFAULT_EVERY_S
    log_name: str | None = None
    clock: Any = field(default=time.time, repr=False)
    #: What named the key, for messages: the environment variable or the policy field.
    named_by: str = field(default=KEY_ENV, repr=False)
    _states: dict[str, _State] = field(default_factory=dict, repr=False)
    _origins: dict[str, str] = field(default_factory=dict, repr=False)
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> Signer:
        return cls(load_signing_key(path), **kwargs)

    def __reduce__(self) -> Any:  # pickled into subprocesses: reload the key there
        return (_reload, (self.key.path, self.every_records, self.every_s, self.log_name,
                          self.named_by))

    def check_outside(self, log: Path) -> None:
        """Refuse a key kept inside the log's folder (``audit.key_in_log_folder``)."""
        folder = log.resolve().parent
        key = Path(self.key.path).resolve() if self.key.path else None
        if key is not None and (key == folder or folder in key.parents):
            raise AuditError("audit.key_in_log_folder", f"the signing key {key} is inside the "
                             f"log's folder {folder}, where whoever writes the log could read "
                             "it; move it elsewhere (e.g. ~/.config/ctxbudget/) and point "
                             f"{self.named_by} at it", location=Location(file=str(log)))

    def origin(self, log: Path, dir_fd: int | None = None) -> str:
        """The log's origin: derived from this key, or, after a rotation to this key,
        the origin named by the rotation note (a log keeps its identity)."""
        cached = self._origins.get(str(log))
        if cached is None:
            cached = log_origin(self.key.verifier, self.log_name or log.name)
            mine = self.key.verifier
            for line, text in split_notes(self._sidecar_text(log, dir_fd)):
                try:
                    note = parse_note(text, line)
                    rot = note.rotation() if note.is_rotation else None
                except ValueError:
                    continue
                if rot is not None and rot.new_key == mine and note.signed_by(mine):
                    cached = rot.origin
            self._origins[str(log)] = cached
        return cached

    def rotate(self, log: Path, fd: int, new: Signer, dir_fd: int | None = None) -> None:
        """Hand the log over to ``new``'s key: sign what is unsigned with this key, then
        append a rotation note (signed by both keys) naming the new key from this tree
        size on. Called by ``AuditLog.rotate_key`` with the log's lock held."""
        with self._mutex:
            st = self._state(log, fd, os.fstat(fd).st_size, dir_fd)
            if st.compact.size > st.signed_size or st.signed_size == 0:
                self._sign(log, st, dir_fd)
            origin = self.origin(log, dir_fd)
            rot = Rotation(origin, st.compact.size, new.key.verifier)
            self._write_note(log, sign_note(rot.body(), self.key, new.key), dir_fd)
        with new._mutex:
            new._origins[str(log)] = origin
            new._states[str(log)] = _State(st.ident, st.end, st.compact.copy(), 0, 0.0)

    # -- writer hooks (called with the log's exclusive lock held) --------------------

    def after_append(self, log: Path, fd: int, start: int, lines: Sequence[bytes],
                     dir_fd: int | None = None) -> None:
        """``lines`` were just written at byte ``start`` of ``log`` (open as ``fd``;
        ``dir_fd``: the handle on the log's folder the sidecar is opened below)."""
        with self._mutex:
            st = self._state(log, fd, start, dir_fd)
            for raw in lines:
                st.compact.append_hash(merkle.leaf_hash(_stored_leaf(raw.rstrip(b"\n"))))
                st.end += len(raw)
            due = (st.compact.size - st.signed_size >= self.every_records
                   or self.clock() - st.signed_at >= self.every_s)
            if due:
                self._sign(log, st, dir_fd)

    def close(self, log: Path, fd: int, dir_fd: int | None = None) -> None:
        """Sign what is not yet signed (called by ``AuditLog.close``)."""
        with self._mutex:
            st = self._state(log, fd, os.fstat(fd).st_size, dir_fd)
            if st.compact.size > st.signed_size:
                self._sign(log, st, dir_fd)

    def _state(self, log: Path, fd: int, end: int, dir_fd: int | None = None) -> _State:
        info = os.fstat(fd)
        ident = (info.st_dev, info.st_ino)
        st = self._states.get(str(log))
        if st is not None and st.ident == ident and st.end == end:
            return st
        st = self._rebuild(log, fd, end, ident, dir_fd)
        self._states[str(log)] = st
        return st

    def _rebuild(self, log: Path, fd: int, end: int, ident: tuple[int, int],
                 dir_fd: int | None = None) -> _State:
        """Hash the log's first ``end`` bytes and check them against the last checkpoint
        in the sidecar: the signer never signs a history that differs from what it
        signed before (``audit.history_rewritten``)."""
        hashes: list[bytes] = []
        with os.fdopen(os.dup(fd), "rb") as f:
            f.seek(0)
            left = end
            for raw in f:
                if left <= 0:
                    break
                left -= len(raw)
                if raw.endswith(b"\n"):
                    hashes.append(merkle.leaf_hash(_stored_leaf(raw[:-1])))
        compact = merkle.CompactRange()
        for h in hashes:
            compact.append_hash(h)
        last = self._last_own_checkpoint(log, dir_fd)
        signed_size, signed_at = 0, 0.0
        if last is not None:
            cp, mtime = last
            if cp.size > len(hashes) or merkle.root_from_leaf_hashes(hashes[:cp.size]) != cp.root:
                raise AuditError(
                    "audit.history_rewritten", f"{log} no longer matches its last signed "
                    f"checkpoint (tree size {cp.size}); refusing to sign a rewritten history. "
                    f"Run `ctxbudget audit verify {log} --key PUB` and restore the log",
                    location=Location(file=str(log)), details={"tree_size": cp.size})
            signed_size, signed_at = cp.size, mtime
        return _State(ident, end, compact, signed_size, signed_at)

    @staticmethod
    def _sidecar_read(log: Path, dir_fd: int | None = None) -> tuple[str, float]:
        """(text, mtime) of the sidecar; ("", 0.0) when there is none. Below ``dir_fd``
        it is opened without following a symlink, like the log."""
        path = sidecar_path(log)
        try:
            if dir_fd is None:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            else:
                fd = open_below(dir_fd, path.name, os.O_RDONLY, shown=str(path))
            with os.fdopen(fd, "rb") as f:
                return f.read().decode("utf-8"), os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return "", 0.0
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditError("audit.bad_checkpoint", f"cannot read {path}: {exc} (a symlink is "
                             "refused: the checkpoints must be a real file next to the log)",
                             location=Location(file=str(path))) from exc

    @classmethod
    def _sidecar_text(cls, log: Path, dir_fd: int | None = None) -> str:
        return cls._sidecar_read(log, dir_fd)[0]

    def _last_own_checkpoint(self, log: Path, dir_fd: int | None = None) -> tuple[Checkpoint, float] | None:
        text, mtime = self._sidecar_read(log, dir_fd)
        if not text:
            return None
        verifier, origin = self.key.verifier, self.origin(log, dir_fd)
        for line, note_text in reversed(split_notes(text)):
            try:
                note = parse_note(note_text, line)
                if note.is_rotation:
                    continue
                cp = note.checkpoint()
            except ValueError:
                continue
            if cp.origin == origin and note.signed_by(verifier):
                return cp, mtime
        return None

    def _sign(self, log: Path, st: _State, dir_fd: int | None = None) -> None:
        cp = Checkpoint(self.origin(log, dir_fd), st.compact.size, st.compact.root())
        self._write_note(log, format_checkpoint(cp, self.key), dir_fd)
        st.signed_size, st.signed_at = st.compact.size, self.clock()

    def _write_note(self, log: Path, note: str, dir_fd: int | None = None) -> None:
        """Append ``note`` to the sidecar. With ``dir_fd`` (the writer's handle on the
        log's validated folder, as ``AuditLog`` passes it) the sidecar is opened below that
        handle without following symlinks, so a folder swapped for a symlink after the
        check cannot send the checkpoint elsewhere."""
        data = (note + "\n").encode()
        path = sidecar_path(log)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            fd = (os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, _SIDECAR_MODE) if dir_fd is None
                  else open_below(dir_fd, path.name, flags, _SIDECAR_MODE, shown=str(path)))
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AuditError("audit.checkpoint_failed", f"the record is stored in {log}, but "
                             f"its signed checkpoint could not be written to {path}: "
                             f"{exc.strerror or exc}; fix that and call close() to sign it",
                             location=Location(file=str(path))) from exc


def _reload(path: str, every_records: int, every_s: float, log_name: str | None,
            named_by: str = KEY_ENV) -> Signer:
    return Signer.from_file(path, every_records=every_records, every_s=every_s,
                            log_name=log_name, named_by=named_by)


_ENV_SIGNERS: dict[str, Signer] = {}


def signer_from_env() -> Signer | None:
    """The :class:`Signer` for the key named by ``CTXBUDGET_AUDIT_KEY``, or None. One per
    key file and process, so its cadence state lasts across ``AuditLog`` handles."""
    path = os.environ.get(KEY_ENV)
    if not path:
        return None
    signer = _ENV_SIGNERS.get(path)
    if signer is None:
        signer = _ENV_SIGNERS[path] = Signer.from_file(path)
    return signer


POLICY_FIELD = "the policy's audit.signing_key"


def policy_signer(signing_key: str | None, policy_file: str | None) -> Signer | Literal["env"]:
    """The signer a policy's log uses: ``"env"`` (the key ``CTXBUDGET_AUDIT_KEY`` names,
    which wins, or none) unless the variable is unset and the policy names a key file in
    ``audit.signing_key`` (relative to the policy's folder). One :class:`Signer` per key
    file and process, like :func:`signer_from_env`, so the cadence state lasts."""
    if os.environ.get(KEY_ENV) or not signing_key:
        return "env"
    p = Path(signing_key).expanduser()
    if not p.is_absolute() and policy_file:
        p = Path(policy_file).resolve().parent / p
    path = str(p)
    signer = _ENV_SIGNERS.get(path)
    if signer is None or signer.named_by != POLICY_FIELD:
        signer = _ENV_SIGNERS[path] = Signer.from_file(path, named_by=POLICY_FIELD)
    return signer
