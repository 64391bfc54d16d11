"""Privacy by default: keyed digests and masked metadata in audit records.

A plain SHA-256 of content that is not stored is no protection: a short secret, a
customer id or a yes/no answer is recovered from its hash by trying candidates (the
issue's 8 ms). So when ``audit.store_content`` is false every digest of content in a
record is an HMAC-SHA256 under a per-log secret, written ``hmac-sha256:<hex>``: the
per-item content digests, the input digest, the assembled context's digest, and the
metadata that is content too (:data:`CONTENT_METADATA`: headings, matched query words,
written as ``{"masked": "hmac-sha256:<hex>"}``). Metadata fields the policy names in
``audit.mask`` (globs over top-level metadata keys) are masked the same way, whether or
not content is stored. The record's ``privacy`` part names the scheme, the key id and
the masked fields, so a verifier holding the secret recomputes every digest
(:mod:`engine.audit.records`), and one without it is told the digests are "not checkable
without the secret" instead of seeing a false failure.

The secret is 32 random bytes in a file of its own, outside the log: named by the
environment variable ``CTXBUDGET_AUDIT_SECRET`` or the policy's ``audit.secret_file``, else
the per-user ``~/.config/ctxbudget/audit.secret`` if it exists, created only on request (``ctxbudget audit secret --out FILE``: mode 0600, never
overwritten) and refused when group- or world-accessible or a symlink. A log written
with content not stored and no secret configured is an error that says how to create
one (``audit.secret_missing``): a secret generated on the fly would sit wherever the
process happened to write, be copied with the logs and backed up with them, and a
reviewer could not tell which file it was; the error costs one command, once. A record
that is only returned (``decide`` without a log) and never written uses a per-process
ephemeral key (``key_id`` ``"ephemeral"``): its digests hide the content and are
checkable by no one.

The key id is the first 8 bytes of SHA-256 of the secret (``sha256:<16 hex>``): it names
the secret without revealing it (a 256-bit random secret cannot be recovered from it).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from ..canonical import canonical_bytes
from ..errors import AuditError, UsageError

SECRET_ENV = "CTXBUDGET_AUDIT_SECRET"
SCHEME = "hmac-sha256"
PREFIX = SCHEME + ":"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16
EPHEMERAL = "ephemeral"
KEYED_PATTERN = re.compile(r"^hmac-sha256:[0-9a-f]{64}$")

#: Candidate metadata that is content: section headings (``title``) and the query words
#: a node matched (``matched_terms``), which :mod:`engine.retrieval.search` and
#: :mod:`engine.retrieval.pack` put into every row. With ``store_content: false`` they
#: are masked like content. The one list of pack's content-bearing metadata fields.
CONTENT_METADATA: tuple[str, ...] = ("title", "matched_terms")


@dataclass(frozen=True, slots=True, repr=False)
class AuditSecret:
    """The per-log HMAC secret (``key``) and its public id. ``repr`` never shows the key."""

    key: bytes
    key_id: str
    source: str | None = None

    @classmethod
    def from_bytes(cls, key: bytes, source: str | None = None) -> AuditSecret:
        return cls(key, key_id_of(key), source)

    def digest(self, data: bytes | str) -> str:
        """``hmac-sha256:<hex>`` of ``data`` (a str is taken as UTF-8)."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        return PREFIX + hmac.digest(self.key, raw, "sha256").hex()  # one C call (hmac.new(...).hexdigest())

    def digest_json(self, value: Any) -> str:
        """The keyed digest of ``value``'s canonical JSON (RFC 8785)."""
        return self.digest(canonical_bytes(value))

    def __repr__(self) -> str:
        return f"AuditSecret(key_id={self.key_id!r}, source={self.source!r})"


def key_id_of(key: bytes) -> str:
    return "sha256:" + hashlib.sha256(key).hexdigest()[:16]


_EPHEMERAL: AuditSecret | None = None


def ephemeral() -> AuditSecret:
    """This process's throw-away secret, for records that are never written."""
    global _EPHEMERAL
    if _EPHEMERAL is None:
        _EPHEMERAL = AuditSecret(secrets.token_bytes(SECRET_BYTES), EPHEMERAL, None)
    return _EPHEMERAL


def create_secret(path: str | os.PathLike[str]) -> AuditSecret:
    """Write a new random secret to ``path`` (mode 0600; never overwrites, never follows
    a symlink). Raises ``UsageError`` ``audit.secret_exists`` if the file exists."""
    key = secrets.token_bytes(SECRET_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UsageError("audit.secret_exists", f"{path} exists; a secret is never overwritten (the "
                         "records keyed under it would become uncheckable): choose another --out",
                         path="$.out") from None
    except OSError as exc:
        raise AuditError("audit.secret_write", f"could not create {path}: {exc.strerror or exc}; "
                         "choose a writable folder outside every log folder", path="$.out") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return AuditSecret.from_bytes(key, str(path))


def load_secret(path: str | os.PathLike[str], *, origin: str = SECRET_ENV) -> AuditSecret:
    """Read the secret at ``path``: a regular file, not a symlink, readable by its owner
    only, of at least 16 bytes. Raises ``AuditError`` (``audit.secret_*``) saying what to fix."""
    where = f"{path} (named by {origin})"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise AuditError("audit.secret_not_found", f"{where} does not exist; create it with "
                         f"`ctxbudget audit secret --out {path}`", path="$.spec.audit.secret_file") from None
    except OSError as exc:
        raise AuditError("audit.secret_unreadable", f"cannot open {where}: {exc.strerror or exc} "
                         "(a symlink is refused); name the secret file itself",
                         path="$.spec.audit.secret_file") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise AuditError("audit.secret_unreadable", f"{where} is not a regular file",
                             path="$.spec.audit.secret_file")
        if st.st_mode & 0o077:
            raise AuditError("audit.secret_permissions",
                             f"{where} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                             f"anyone who reads it can test guesses against the log: chmod 600 {path}",
                             path="$.spec.audit.secret_file")
        key = f.read(1 << 16)
    if len(key) < MIN_SECRET_BYTES:
        raise AuditError("audit.secret_short", f"{where} holds {len(key)} bytes, fewer than "
                         f"{MIN_SECRET_BYTES}; create a proper one with `ctxbudget audit secret --out FILE`",
                         path="$.spec.audit.secret_file")
    return AuditSecret.from_bytes(key, str(path))


def default_secret_path(env: Mapping[str, str] | None = None) -> Path:
    """The per-user secret file used when nothing names one:
    ``$XDG_CONFIG_HOME/ctxbudget/audit.secret`` (``~/.config/ctxbudget/audit.secret``)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ctxbudget" / "audit.secret"


def configured_secret(secret_file: str | None, policy_file: str | None,
                      env: Mapping[str, str] | None = None) -> AuditSecret | None:
    """The secret named by ``CTXBUDGET_AUDIT_SECRET`` (first) or the policy's
    ``audit.secret_file`` (relative to the policy's folder), else the per-user default
    file if it exists (:func:`default_secret_path`); ``None`` if there is none."""
    env = os.environ if env is None else env
    named = env.get(SECRET_ENV)
    if named:
        return load_secret(named)
    if secret_file:
        p = Path(secret_file)
        if not p.is_absolute() and policy_file:
            p = Path(policy_file).resolve().parent / p
        return load_secret(p, origin="the policy's audit.secret_file")
    default = default_secret_path(env)
    if os.path.lexists(default):
        return load_secret(default, origin="the per-user default location")
    return None


def missing_secret_error(log_path: str | os.PathLike[str] | None, *, what: str | None = None) -> AuditError:
    """``audit.secret_missing``; ``what`` says why the record needs one (default: content
    not stored)."""
    why = what or f"audit.store_content is false, so the record written to {log_path} keys its content digests"
    return AuditError(
        "audit.secret_missing",
        f"{why} with a secret, and none is configured: create one outside the log's folder with "
        "`ctxbudget audit secret --out ~/.config/ctxbudget/audit.secret` (the default location), "
        f"or name another file with {SECRET_ENV} or the policy's audit.secret_file",
        path="$.spec.audit.secret_file")


def mask_matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(key, p) for p in patterns)


def mask_metadata(metadata: Mapping[str, Any], patterns: Sequence[str],
                  secret: AuditSecret) -> tuple[dict[str, Any], list[str]]:
    """``metadata`` with every top-level key matching one of ``patterns`` replaced by
    ``{"masked": "hmac-sha256:<hex>"}`` (of the value's canonical JSON), and the sorted
    list of the keys masked."""
    out: dict[str, Any] = {}
    masked: list[str] = []
    for key, value in metadata.items():
        if mask_matches(key, patterns):
            out[key] = {"masked": secret.digest_json(value)}
            masked.append(key)
        else:
            out[key] = value
    return out, sorted(masked)



def check_outside(secret: AuditSecret, log_path: str | os.PathLike[str]) -> None:
    """Refuse a secret kept in the log's folder (``audit.secret_in_log_folder``): whoever
    is handed the logs would hold the key to test guesses against them."""
    if secret.source is None:
        return
    folder = Path(log_path).resolve().parent
    where = Path(secret.source).resolve()
    if folder == where or folder in where.parents:
        raise AuditError("audit.secret_in_log_folder", f"the audit secret {where} is inside the log's "
                         f"folder {folder}, so it travels with the logs; move it elsewhere (e.g. "
                         f"~/.config/ctxbudget/) and point {SECRET_ENV} at it",
                         path="$.spec.audit.secret_file")
