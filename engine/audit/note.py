"""Ed25519 keys and C2SP signed notes (https://c2sp.org/signed-note) carrying C2SP
checkpoints (https://c2sp.org/tlog-checkpoint). Pure but for :func:`load_signing_key`.

A checkpoint note::

    <origin>\\n<tree size, decimal>\\n<base64 root hash>\\n
    \\n
    — <key name> <base64(key hash (4 bytes) || Ed25519 signature (64 bytes))>\\n

- The signature is over the body (the text before the blank line, with its last ``\\n``).
- Key hash (Ed25519): the first 4 bytes of ``SHA-256(name || 0x0A || 0x01 || public key)``.
- Verifier key (what a reviewer holds): ``<name>+<key hash hex>+<base64(0x01 || public key)>``.
- Origin: ``ctxbudget.audit/<key name>/<log name>/<log id>``, the log id being the first 8
  bytes (hex) of SHA-256(public key || 0x0A || log name): one key signing two logs gives
  them different origins, so one log's checkpoints never vouch for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..errors import AuditError, Location

__all__ = [
    "Checkpoint", "Rotation", "SigningKey", "VerifierKey", "format_checkpoint", "load_signing_key",
    "log_origin", "origin_log_name", "parse_note", "sign_note", "split_notes",
]

ALG_ED25519 = 0x01
DASH = "\u2014"  # the em dash that starts a signature line
_NAME_RE = re.compile(r"[^\s+]+\Z")
_KEY_HEADER = "# ctxbudget audit signing key; name: "


def _key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


def check_key_name(name: str) -> str:
    """A key name is non-empty, without whitespace or '+' (the signed-note rule)."""
    if not _NAME_RE.match(name):
        raise AuditError("audit.bad_key_name", f"key name {name!r} must be non-empty and "
                         "contain no whitespace and no '+'; e.g. 'acme-audit'")
    return name


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A public key with its name, as a reviewer holds it."""

    name: str
    public: bytes  # 32 bytes

    @property
    def key_hash(self) -> bytes:
        return _key_hash(self.name, self.public)

    def encode(self) -> str:
        """``<name>+<key hash hex>+<base64(0x01 || public key)>``."""
        return (f"{self.name}+{self.key_hash.hex()}+"
                + base64.b64encode(bytes([ALG_ED25519]) + self.public).decode())

    @classmethod
    def parse(cls, text: str, *, source: str = "<key>") -> VerifierKey:
        """Parse the verifier-key format; ``audit.bad_key`` says what is wrong."""
        def bad(why: str) -> AuditError:
            return AuditError("audit.bad_key", f"not a verifier key ({why}); "
                              "expected <name>+<8 hex>+<base64>, as `ctxbudget audit keygen` "
                              "writes it to <name>.pub", location=Location(file=source))

        parts = text.strip().split("+", 2)  # base64 may contain '+' itself
        if len(parts) != 3:
            raise bad("it has no two '+'")
        name, hash_hex, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise bad("the key is not base64") from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise bad("not an Ed25519 key (algorithm byte 0x01 and 32 bytes)")
        key = cls(check_key_name(name), raw[1:])
        if key.key_hash.hex() != hash_hex.lower():
            raise bad(f"its key hash {hash_hex} does not match the name and key")
        return key

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VerifierKey:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditError("audit.bad_key", f"cannot read verifier key {path}: {exc}",
                             location=Location(file=str(path))) from exc
        return cls.parse(text, source=str(path))

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key with its name (loaded from a file outside the log's folder)."""

    name: str
    private: Ed25519PrivateKey
    path: str = ""

    @property
    def verifier(self) -> VerifierKey:
        public = self.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                        serialization.PublicFormat.Raw)
        return VerifierKey(self.name, public)

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        return cls(check_key_name(name), Ed25519PrivateKey.generate())

    def pem(self) -> bytes:
        """The private key as PKCS#8 PEM after one comment line naming the key."""
        body = self.private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
        return (_KEY_HEADER + self.name + "\n").encode() + body

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read a private key written by ``ctxbudget audit keygen``. Refuses a key file that
    others can read (``audit.key_permissions``: it must be mode 0600 or stricter)."""
    p = Path(path)
    where = Location(file=str(p))
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise AuditError("audit.bad_key", f"cannot open signing key {p}: {exc.strerror or exc}; "
                         "create one with `ctxbudget audit keygen --out DIR` (not a symlink)",
                         location=where) from exc
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode) or mode & 0o077:
            raise AuditError("audit.key_permissions", f"signing key {p} has mode "
                             f"{stat.S_IMODE(mode):04o}; it must be readable by its owner only: "
                             f"chmod 600 {p}", location=where)
        data = f.read()
    name = p.name.split(".")[0]
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    if first.startswith(_KEY_HEADER):
        name = first[len(_KEY_HEADER):].strip()
        data = data.split(b"\n", 1)[1]
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AuditError("audit.bad_key", f"{p} is not an unencrypted PEM private key: {exc}",
                         location=where) from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise AuditError("audit.bad_key", f"{p} holds a {type(private).__name__}; audit "
                         "signing uses Ed25519 keys (`ctxbudget audit keygen`)", location=where)
    return SigningKey(check_key_name(name), private, str(p))


def log_origin(key: VerifierKey, log_name: str) -> str:
    """The checkpoint origin of the log named ``log_name`` signed by ``key``. The name is
    percent-encoded: an origin holds no spaces, '+' or further '/' (tlog-checkpoint)."""
    log_id = hashlib.sha256(key.public + b"\n" + log_name.encode()).hexdigest()[:16]
    return f"ctxbudget.audit/{key.name}/{quote(log_name, safe='')}/{log_id}"


def origin_log_name(origin: str) -> str | None:
    """The log name inside an origin made by :func:`log_origin`, or None."""
    parts = origin.split("/")
    if len(parts) != 4 or parts[0] != "ctxbudget.audit":
        return None
    return unquote(parts[2])


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tlog checkpoint: origin, tree size, root hash."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


ROTATION_HEADER = "ctxbudget.audit.rotate/1"


@dataclass(frozen=True, slots=True)
class Rotation:
    """From tree size ``size`` on, checkpoints of ``origin`` are signed by ``new_key``.
    The note is signed by the key it retires and by the new one."""

    origin: str
    size: int
    new_key: VerifierKey

    def body(self) -> str:
        return f"{ROTATION_HEADER}\n{self.origin}\n{self.size}\n{self.new_key.encode()}\n"


def format_checkpoint(cp: Checkpoint, key: SigningKey) -> str:
    """The signed note of ``cp`` (body, blank line, one signature line)."""
    return sign_note(cp.body(), key)


def sign_note(body: str, *keys: SigningKey) -> str:
    """``body``, a blank line and one signature line per key."""
    lines = []
    for key in keys:
        blob = base64.b64encode(key.verifier.key_hash + key.sign(body.encode())).decode()
        lines.append(f"{DASH} {key.name} {blob}\n")
    return f"{body}\n" + "".join(lines)


@dataclass(frozen=True, slots=True)
class ParsedNote:
    """A note split into its body and signatures ``(name, key hash, signature)``."""

    body: str
    signatures: tuple[tuple[str, bytes, bytes], ...]
    line: int  # 1-based line of its first line in the file it came from

    def signed_by(self, key: VerifierKey) -> bool:
        """True when one signature line is by ``key`` and verifies over the body."""
        return any(name == key.name and kh == key.key_hash
                   and key.verify(self.body.encode(), sig)
                   for name, kh, sig in self.signatures)

    @property
    def is_rotation(self) -> bool:
        return self.body.startswith(ROTATION_HEADER + "\n")

    def rotation(self) -> Rotation:
        """The body as a key rotation, or ValueError saying what is wrong."""
        lines = self.body.split("\n")
        if len(lines) != 5 or lines[0] != ROTATION_HEADER or lines[4] != "":
            raise ValueError("a rotation body has a header, origin, size and new key line")
        if not lines[1] or not re.fullmatch(r"0|[1-9][0-9]{0,18}", lines[2]):
            raise ValueError(f"bad origin or tree size line {lines[2]!r}")
        try:
            key = VerifierKey.parse(lines[3])
        except AuditError as exc:
            raise ValueError(exc.message) from None
        return Rotation(lines[1], int(lines[2]), key)

    def checkpoint(self) -> Checkpoint:
        """The body as a checkpoint, or ValueError saying what is wrong."""
        if self.is_rotation:
            raise ValueError("a key rotation note, not a checkpoint")
        lines = self.body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise ValueError("a checkpoint body has an origin, a size and a root line")
        origin, size, root = lines[0], lines[1], lines[2]
        if not origin or not re.fullmatch(r"0|[1-9][0-9]{0,18}", size):
            raise ValueError(f"bad origin or tree size line {size!r}")
        try:
            raw = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise ValueError("the root hash line is not base64") from None
        if len(raw) != 32:
            raise ValueError("the root hash is not 32 bytes")
        return Checkpoint(origin, int(size), raw)


def parse_note(text: str, line: int = 1) -> ParsedNote:
    """One signed note; ValueError on anything that is not one."""
    if "\n\n" not in text:
        raise ValueError("no blank line between the body and the signatures")
    body, _, rest = text.partition("\n\n")
    sigs = []
    for raw in rest.split("\n"):
        if raw == "":
            continue
        if not raw.startswith(DASH + " "):
            raise ValueError(f"signature line does not start with '{DASH} ': {raw[:40]!r}")
        fields = raw[2:].split(" ")
        if len(fields) != 2:
            raise ValueError("a signature line is '— <name> <base64>'")
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except binascii.Error:
            raise ValueError("the signature is not base64") from None
        if len(blob) != 68:
            raise ValueError("an Ed25519 signature is a 4-byte key hash and 64 bytes")
        sigs.append((fields[0], blob[:4], blob[4:]))
    if not sigs:
        raise ValueError("a signed note has at least one signature line")
    return ParsedNote(body + "\n", tuple(sigs), line)


def split_notes(text: str) -> list[tuple[int, str]]:
    """Cut a file of notes (each: body, blank line, signature lines, blank line) into
    ``(first line, note text)`` pairs, in file order."""
    out: list[tuple[int, str]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i] == "":
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i] != "":  # body
            i += 1
        i += 1  # the blank line
        while i < len(lines) and lines[i].startswith(DASH):
            i += 1
        out.append((start + 1, "\n".join(lines[start:i]) + "\n"))
    return out
