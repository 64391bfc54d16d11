"""The reviewer's side of signed checkpoints: verify a log against its signed
checkpoints (:func:`verify_signed`), build an inclusion proof bundle for one decision
(:func:`prove`) and check such a bundle with the public key alone (:func:`check_proof`).
Reads files; computes nothing the writer could have chosen (every hash is recomputed).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import merkle
from .lineformat import LineStatus, scan_line
from .note import (
    Checkpoint,
    ParsedNote,
    VerifierKey,
    log_origin,
    origin_log_name,
    parse_note,
    split_notes,
)
from .signing import PROOF_FORMAT, _line_leaf, sidecar_path
from ..errors import AuditError, Location

__all__ = ["CheckedNote", "ProofResult", "SignedReport", "check_proof", "load_notes",
           "prove", "verify_signed"]


@dataclass(frozen=True, slots=True)
class CheckedNote:
    """One checkpoint note and what was found about it."""

    source: str  # "<sidecar>:<line>" or the external file
    size: int | None
    root: str | None  # base64
    signature_ok: bool
    reproduced: bool  # the log's first ``size`` records hash to ``root``

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "tree_size": self.size, "root": self.root,
                "signature_ok": self.signature_ok, "reproduced": self.reproduced}


@dataclass(frozen=True, slots=True)
class SignedReport:
    """The outcome of :func:`verify_signed`; ``ok`` only when every signed checkpoint
    checks out and the unsigned tail is within what the caller allowed."""

    log: str
    status: str  # "signed", "unsigned" (no key given) or "failed"
    problems: tuple[tuple[str, str], ...]  # (code, message)
    records: int
    signed_size: int
    checkpoints: tuple[CheckedNote, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unsigned_tail(self) -> int:
        return self.records - self.signed_size

    def to_dict(self) -> dict[str, Any]:
        return {"log": self.log, "status": self.status, "ok": self.ok,
                "problems": [{"code": c, "message": m} for c, m in self.problems],
                "records": self.records, "signed_size": self.signed_size,
                "unsigned_tail": {"records": self.unsigned_tail,
                                  "from_seq": self.signed_size + 1 if self.unsigned_tail else None,
                                  "to_seq": self.records if self.unsigned_tail else None},
                "checkpoints": [c.to_dict() for c in self.checkpoints]}

    def summary(self) -> str:
        if self.status == "unsigned":
            return (f"signatures: unsigned: no --key given; {self.records} records are "
                    "protected by the hash chain only")
        head = (f"signatures: {'OK' if self.ok else 'FAILED'}: {len(self.checkpoints)} "
                f"checkpoint(s) checked, records 1..{self.signed_size} signed")
        tail = (f"unsigned tail: {self.unsigned_tail} record(s), seq {self.signed_size + 1}.."
                f"{self.records} (after the last signed checkpoint)" if self.unsigned_tail
                else "unsigned tail: none")
        return "\n".join([head, tail, *(f"  {c}: {m}" for c, m in self.problems)])


def _read_lines(log: Path) -> list[bytes]:
    try:
        data = log.read_bytes()
    except OSError as exc:
        raise AuditError("audit.not_found" if isinstance(exc, FileNotFoundError)
                         else "audit.read_failed", f"cannot read {log}: {exc.strerror or exc}",
                         location=Location(file=str(log))) from exc
    lines = data.split(b"\n")
    lines.pop()  # the bytes after the last "\n": never a record
    return lines


def load_notes(path: Path, *, missing_ok: bool = False) -> list[tuple[str, str]]:
    """``(source, note text)`` of every note in a file of notes."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise AuditError("audit.bad_checkpoint", f"no checkpoint note at {path}",
                         location=Location(file=str(path))) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError("audit.bad_checkpoint", f"cannot read {path}: {exc}",
                         location=Location(file=str(path))) from exc
    return [(f"{path.name}:{line}", note) for line, note in split_notes(text)]


def verify_signed(log: str | Path, key: VerifierKey, *, log_name: str | None = None,
                  external: Iterable[tuple[str, str]] = (), max_unsigned: int = 0
                  ) -> SignedReport:
    """Check every note of the log's sidecar (and ``external`` notes kept elsewhere)
    against ``key``: signature, origin, that the log reproduces its root, that the
    checkpoints only grow (RFC 6962 consistency between consecutive ones), and that at
    most ``max_unsigned`` records follow the last signed checkpoint."""
    path = Path(log)
    lines = _read_lines(path)
    hashes = [merkle.leaf_hash(_line_leaf(raw)) for raw in lines]
    origin = log_origin(key, log_name or path.name)
    problems: list[tuple[str, str]] = []
    notes = load_notes(sidecar_path(path), missing_ok=True)
    own = len(notes)
    notes += list(external)
    if not own:
        problems.append(("signature.no_checkpoints", f"no signed checkpoint in "
                         f"{sidecar_path(path).name}: the log was not written with a key, or "
                         "its checkpoints were removed"))
    checked: list[CheckedNote] = []
    valid: list[tuple[int, str, Checkpoint]] = []  # (order, source, cp) of signed notes
    parsed = [(source, _try_parse(text)) for source, text in notes]
    roots = _roots_at(hashes, {n.checkpoint().size for _, n in parsed
                               if isinstance(n, ParsedNote) and _is_checkpoint(n)})
    current, chain = key, [key]  # the key that signs now; every key the log has had
    for order, (source, note) in enumerate(parsed):
        try:
            if isinstance(note, ValueError):
                raise note
            if note.is_rotation:
                if order >= own:  # a kept copy: the sidecar's own rotations are what counts
                    continue
                found = _rotation_problem(note, current, origin, len(hashes))
                if found:
                    problems.append(("signature.bad_rotation", f"{source}: {found}"))
                else:
                    current = note.rotation().new_key
                    chain.append(current)
                continue
            cp = note.checkpoint()
        except ValueError as exc:
            problems.append(("signature.bad_note", f"{source}: not a checkpoint note: {exc}"))
            checked.append(CheckedNote(source, None, None, False, False))
            continue
        sig_ok = note.signed_by(current) if order < own else any(
            note.signed_by(k) for k in chain)
        root_b64 = base64.b64encode(cp.root).decode()
        reproduced = roots.get(cp.size) == cp.root
        checked.append(CheckedNote(source, cp.size, root_b64, sig_ok, reproduced))
        if not sig_ok:
            names = ", ".join(sorted({n for n, _, _ in note.signatures}))
            problems.append(("signature.invalid", f"{source}: no valid signature by key "
                             f"{current.name!r} (signed by: {names}); the checkpoint was forged "
                             "or rewritten without the key"))
            continue
        found_cp = _checkpoint_problem(source, cp, origin, len(hashes), reproduced)
        if found_cp:
            problems.append(found_cp)
            if found_cp[0] == "signature.wrong_origin":
                continue
        valid.append((order, source, cp))
    _check_growth(valid, hashes, roots, problems, own)
    signed = max((cp.size for _, _, cp in valid if roots.get(cp.size) == cp.root), default=0)
    tail = len(hashes) - signed
    if own and tail > max_unsigned:
        problems.append(("signature.unsigned_tail", f"{tail} record(s) after the last signed "
                         f"checkpoint (seq {signed + 1}..{len(hashes)}) carry no signature; "
                         "close the log to sign them, or allow them with --max-unsigned"))
    return SignedReport(str(path), "failed" if problems else "signed", tuple(problems),
                        len(hashes), signed, tuple(checked))


def _try_parse(text: str) -> ParsedNote | ValueError:
    try:
        return parse_note(text)
    except ValueError as exc:
        return exc


def _checkpoint_problem(source: str, cp: Checkpoint, origin: str, records: int,
                        reproduced: bool) -> tuple[str, str] | None:
    """What is wrong with a validly signed checkpoint against this log, or None."""
    if cp.origin != origin:
        return ("signature.wrong_origin", f"{source}: checkpoint of {cp.origin!r}, but this "
                f"log is {origin!r}: another log's checkpoint (a swapped log), or pass "
                "--log-name if the file was renamed")
    if cp.size > records:
        return ("signature.truncated", f"{source}: signed tree size {cp.size} but the log has "
                f"{records} records: records {records + 1}..{cp.size} were cut off (or this "
                "is an older copy of the log)")
    if not reproduced:
        return ("signature.root_mismatch", f"{source}: the log's first {cp.size} records do "
                "not hash to the signed root: a record at or before seq "
                f"{cp.size} was changed, inserted or removed")
    return None


def _rotation_problem(note: ParsedNote, current: VerifierKey, origin: str,
                      records: int) -> str | None:
    """Why a rotation note cannot hand the log to its new key, or None."""
    rot = note.rotation()
    if not note.signed_by(current):
        return (f"key rotation not signed by the current key {current.name!r}: a forged "
                "rotation, ignored (later checkpoints must still be signed by it)")
    if not note.signed_by(rot.new_key):
        return f"key rotation not signed by the new key {rot.new_key.name!r}"
    if rot.origin != origin:
        return f"key rotation for {rot.origin!r}, but this log is {origin!r}"
    if rot.size > records:
        return f"key rotation at tree size {rot.size}, beyond the log's {records} records"
    return None


def _is_checkpoint(note: ParsedNote) -> bool:
    try:
        note.checkpoint()
    except ValueError:
        return False
    return True


def _roots_at(hashes: list[bytes], sizes: set[int]) -> dict[int, bytes]:
    """The tree head at each of ``sizes`` (those within the log), in one pass."""
    out: dict[int, bytes] = {}
    compact = merkle.CompactRange()
    wanted = sorted(s for s in sizes if s <= len(hashes))
    for size in wanted:
        while compact.size < size:
            compact.append_hash(hashes[compact.size])
        out[size] = compact.root()
    return out


def _check_growth(valid: list[tuple[int, str, Checkpoint]], hashes: list[bytes],
                  roots: dict[int, bytes], problems: list[tuple[str, str]], own: int) -> None:
    """Consecutive signed checkpoints (by size) must be consistent: the older tree a
    prefix of the newer. When the log reproduces both roots they are prefixes of one
    leaf sequence, which is what consistency means; when it reproduces only the newer
    one, an RFC 6962 consistency proof is built from the log and checked with the
    RFC 9162 algorithm against both signed roots (it fails: a rewritten history)."""
    ordered = sorted(valid, key=lambda v: (v[2].size, v[0]))
    sidecar = [v for v in valid if v[0] < own]  # the sidecar is append-only: in file order
    for (_, s1, a), (_, s2, b) in zip(sidecar, sidecar[1:]):
        if b.size < a.size:
            problems.append(("signature.not_append_only", f"{s2}: tree size {b.size} is "
                             f"smaller than {a.size} at {s1}: the sidecar was reordered"))
    for (_, s1, a), (_, s2, b) in zip(ordered, ordered[1:]):
        if a.size == b.size:
            if a.root != b.root:
                problems.append(("signature.not_append_only", f"{s1} and {s2} sign different "
                                 f"roots for the same tree size {a.size}: a fork"))
            continue
        if roots.get(b.size) != b.root:
            continue  # already reported: the log does not reproduce the newer root
        if roots.get(a.size) == a.root:
            continue  # both reproduced from one leaf sequence: consistent
        proof = merkle.consistency_proof(a.size, hashes[:b.size])
        if not merkle.verify_consistency(a.size, b.size, a.root, b.root, proof):
            problems.append(("signature.not_append_only", f"{s1} (size {a.size}) is not a "
                             f"prefix of {s2} (size {b.size}): history was rewritten between "
                             "the two signatures"))


def prove(log: str | Path, decision_id: str) -> dict[str, Any]:
    """An inclusion proof bundle for the decision ``decision_id`` against the latest
    checkpoint of the log's sidecar that the log reproduces (``audit.proof_failed`` when
    there is none, or the record is in the unsigned tail)."""
    path = Path(log)
    lines = _read_lines(path)
    index, line = next(((i, raw) for i, raw in enumerate(lines)
                        if _decision_id(raw) == decision_id), (None, None))
    if index is None or line is None:
        raise AuditError("audit.unknown_decision", f"no decision {decision_id!r} in {path}; "
                         f"`ctxbudget audit show {path}` lists the ids", path="$.decision_id",
                         location=Location(file=str(path)))
    hashes = [merkle.leaf_hash(_line_leaf(raw)) for raw in lines]
    found: list[tuple[Checkpoint, str, int]] = []
    rotations: list[tuple[int, str]] = []
    for order, (_source, text) in enumerate(load_notes(sidecar_path(path), missing_ok=True)):
        try:
            note = parse_note(text)
            if note.is_rotation:
                note.rotation()
                rotations.append((order, text))
            else:
                found.append((note.checkpoint(), text, order))
        except ValueError:
            continue
    roots = _roots_at(hashes, {cp.size for cp, _, _ in found})
    best: tuple[Checkpoint, str] | None = None
    at = -1
    for cp, text, order in found:
        if roots.get(cp.size) == cp.root and (best is None or cp.size >= best[0].size):
            best, at = (cp, text), order
    fail = f"cannot prove decision {decision_id!r} (seq {index + 1}) of {path}: "
    if best is None:
        raise AuditError("audit.proof_failed", fail + "no checkpoint in "
                         f"{sidecar_path(path).name} matches the log; sign it with a key "
                         f"(CTXBUDGET_AUDIT_KEY) or run `ctxbudget audit verify --key`",
                         location=Location(file=str(path)))
    cp, text = best
    if index >= cp.size:
        raise AuditError("audit.proof_failed", fail + f"it is after the last signed checkpoint "
                         f"(tree size {cp.size}); close the log to sign it, then retry",
                         location=Location(file=str(path)))
    return {
        "format": PROOF_FORMAT, "decision_id": decision_id, "seq": index + 1,
        "leaf_index": index, "record_hash": "sha256:" + _line_leaf(line).hex(),
        "tree_size": cp.size,
        "proof": [base64.b64encode(h).decode() for h in merkle.inclusion_proof(index, hashes[:cp.size])],
        "checkpoint": text, "line": line.decode("utf-8"),
        "rotations": [t for order, t in rotations if order < at],
    }


def _header_first_seq(header: Any, size: int, root: bytes) -> int | str:
    """The first seq of the tree the proof is in: 1, or for a later segment of a rotated
    log (engine.audit.segments) the seq of its header, proven to be leaf 0 of the same
    signed tree. A string says why the header does not check out."""
    if header is None:
        return 1
    try:
        raw = str(header["line"]).encode("utf-8")
        proof = [base64.b64decode(p, validate=True) for p in header["proof"]]
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        return f"malformed segment header: {exc}"
    entry = scan_line(raw, 1)
    if entry.status is not LineStatus.OK or entry.kind != "segment" or entry.seq is None \
            or entry.computed_hash is None:
        return "the segment header line is not a valid segment header"
    leaf = merkle.leaf_hash(merkle.leaf_bytes(entry.computed_hash))
    if not merkle.verify_inclusion(leaf, 0, size, proof, root):
        return "the segment header is not leaf 0 of the signed tree"
    return entry.seq


def _decision_id(raw: bytes) -> str | None:
    if b'"decision_id"' not in raw:
        return None
    try:
        env = json.loads(raw)
    except ValueError:
        return None
    rec = env.get("record") if isinstance(env, dict) else None
    if isinstance(rec, dict) and env.get("kind") == "decision":
        value = rec.get("decision_id")
        return value if isinstance(value, str) else None
    return None


@dataclass(frozen=True, slots=True)
class ProofResult:
    ok: bool
    message: str
    log_name: str | None = None


def check_proof(bundle: Mapping[str, Any], key: VerifierKey) -> ProofResult:
    """Check an inclusion proof bundle from :func:`prove` with the public key alone:
    the checkpoint's signature and origin, the record line's own hash, and the RFC 9162
    inclusion of that hash in the signed tree."""
    def bad(why: str) -> ProofResult:
        return ProofResult(False, f"INVALID: {why}")

    if not isinstance(bundle, Mapping) or bundle.get("format") != PROOF_FORMAT:
        return bad(f"not a proof bundle (format must be {PROOF_FORMAT!r})")
    try:
        note = parse_note(str(bundle["checkpoint"]))
        cp = note.checkpoint()
        index, size = int(bundle["leaf_index"]), int(bundle["tree_size"])
        proof = [base64.b64decode(p, validate=True) for p in bundle["proof"]]
        leaf = merkle.leaf_bytes(str(bundle["record_hash"]))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        return bad(f"malformed bundle: {exc}")
    current = key
    for text in bundle.get("rotations") or ():
        try:
            rnote = parse_note(str(text))
            problem = _rotation_problem(rnote, current, cp.origin, cp.size)
        except ValueError as exc:
            return bad(f"malformed key rotation: {exc}")
        if problem:
            return bad(problem)
        current = rnote.rotation().new_key
    if not note.signed_by(current):
        return bad(f"the checkpoint is not signed by key {current.name!r}")
    name = origin_log_name(cp.origin)
    if name is None or log_origin(key, name) != cp.origin:
        return bad(f"the checkpoint's origin {cp.origin!r} is not a log of key {key.name!r}")
    if size != cp.size:
        return bad(f"the proof is for tree size {size}, the checkpoint has {cp.size}")
    line = bundle.get("line")
    if not isinstance(line, str):
        return bad("the bundle has no record line, so nothing says what decision the hash is")
    # The record itself: its own hash, its decision id, its seq.
    entry = scan_line(line.encode("utf-8"), 1)
    if entry.status is not LineStatus.OK or entry.computed_hash != bundle["record_hash"]:
        return bad("the record line does not hash to record_hash (it was changed)")
    if _decision_id(line.encode("utf-8")) != bundle.get("decision_id"):
        return bad("the record line is not decision " + repr(bundle.get("decision_id")))
    first = _header_first_seq(bundle.get("segment_header"), size, cp.root)
    if isinstance(first, str):
        return bad(first)
    if entry.seq != first + index:
        return bad(f"the record line has seq {entry.seq}, the proof index {index}"
                   + (f" in a segment starting at seq {first}" if first != 1 else ""))
    if not merkle.verify_inclusion(merkle.leaf_hash(leaf), index, size, proof, cp.root):
        return bad(f"record {bundle['record_hash'][:19]}... is not leaf {index} of the "
                   f"signed tree of size {size}")
    via = f" (rotated from {key.name!r})" if current != key else ""
    return ProofResult(True, f"VALID: decision {bundle.get('decision_id')!r} is record "
                       f"{index + 1} of {size} in log {name!r}, signed by "
                       f"{current.name!r}{via}", name)
