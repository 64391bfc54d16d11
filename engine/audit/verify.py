"""Verify an audit log: every line re-hashed, the chain checked seq by seq, the tail
compared with a checkpoint. Pure (but :meth:`Checkpoint.load`): bytes or scanned lines
in, a :class:`VerifyReport` out.

The line format is :mod:`engine.audit.lineformat`. A :class:`Checkpoint` (last seq and hash,
kept outside the log) is the only way to notice a tail cut exactly at a line boundary;
without one such a log is a valid, shorter chain.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Mapping

import rfc8785

from ..canonical import sha256_hex

try:  # the quickest route of scan_parse (orjson is a dependency; without it the json one)
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None  # type: ignore[assignment]
from ..errors import AuditError, Location
from .lineformat import (
    _NON_BMP,
    _SURROGATE_ESCAPE,
    GENESIS_HASH,
    HASH_RE,
    MAX_DEPTH,
    EnvelopeKind,
    LineEntry,
    LineStatus,
    _reject_constant,
    _shape_problem,
    nests_within,
    parse_envelope,
    scan_line,
)

_SHOWN = 50  # problems listed by summary(); to_dict() has them all


class ProblemKind(str, Enum):
    """What is wrong with a line or with the chain. Values appear in ``to_dict()``."""

    MODIFIED = "modified"  # content does not hash to its stored hash, or is not canonical
    INSERTED = "inserted"  # a second record claims a seq the chain already has
    DELETED = "deleted"  # seqs missing and nowhere later in the file
    REORDERED = "reordered"  # seqs missing here but present later in the file
    DUPLICATED = "duplicated"  # the same record (same hash) appears again
    TRUNCATED = "truncated"  # the log ends before the checkpoint or the requested seq
    TORN_LINE = "torn_line"  # bytes after the last "\n": an unfinished write
    BAD_JSON = "bad_json"  # not UTF-8 or not JSON
    MALFORMED = "malformed"  # JSON, but not an envelope
    BROKEN_CHAIN = "broken_chain"  # right seq, but prev_hash is not the previous hash
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # record at the checkpoint seq differs
    SEGMENT = "segment"  # a segment file missing, renamed, swapped, or its header wrong


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: its kind, the seq it concerns (for an unreadable line, the seq
    expected there), the 1-based line number, and a sentence saying what is wrong."""

    kind: ProblemKind
    seq: int | None
    line: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "seq": self.seq, "line": self.line,
                "message": self.message}

    def __str__(self) -> str:
        return f"line {self.line} seq {self.seq}: {self.kind.value}: {self.message}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The last seq and hash of a log at some moment, kept outside the log."""

    seq: int
    hash: str
    records: int | None = None
    log: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<checkpoint>") -> Checkpoint:
        """Validate a checkpoint mapping (``seq`` and ``hash`` required; ``records``
        and ``log`` optional; nothing else). Raises :class:`AuditError`
        ``audit.bad_checkpoint`` naming the field."""

        def bad(path: str, why: str) -> AuditError:
            return AuditError("audit.bad_checkpoint", f"{source}: {why}", path=path)

        if not isinstance(data, Mapping):
            raise bad("$", "a checkpoint is a JSON object with seq and hash")
        unknown = sorted(set(data) - {"seq", "hash", "records", "log"})
        if unknown:
            raise bad(f"$.{unknown[0]}", f"unknown field {unknown[0]!r}; "
                      "expected seq, hash, records, log")
        seq, digest_ = data.get("seq"), data.get("hash")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise bad("$.seq", f"seq must be an integer >= 0, got {seq!r}")
        if not isinstance(digest_, str) or not HASH_RE.match(digest_):
            raise bad("$.hash", f"hash must be 'sha256:' and 64 lowercase hex digits, "
                      f"got {digest_!r}")
        if seq == 0 and digest_ != GENESIS_HASH:
            raise bad("$.hash", "a checkpoint of an empty log (seq 0) has the genesis hash")
        records = data.get("records")
        if records is not None and (not isinstance(records, int) or isinstance(records, bool)):
            raise bad("$.records", f"records must be an integer, got {records!r}")
        log = data.get("log")
        if log is not None and not isinstance(log, str):
            raise bad("$.log", f"log must be a string, got {log!r}")
        return cls(seq=seq, hash=digest_, records=records, log=log)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """Read and validate a checkpoint file (JSON, as ``export_checkpoint`` writes)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AuditError("audit.bad_checkpoint", f"cannot read checkpoint {path}: {exc}",
                             location=Location(file=str(path))) from exc
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "records": self.records, "log": self.log}


@dataclass(frozen=True, slots=True)
class PrunedSpan:
    """Records removed by ``audit prune``: seq ``from_seq..to_seq`` in ``files``, named by
    the prune record at ``by_seq``. ``signed``: that record is covered by a valid signed
    checkpoint (True/False), or None when no key was given."""

    from_seq: int
    to_seq: int
    files: tuple[str, ...]
    by_seq: int
    by_file: str
    signed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"from_seq": self.from_seq, "to_seq": self.to_seq, "files": list(self.files),
                "by_seq": self.by_seq, "by_file": self.by_file, "signed": self.signed}

    def __str__(self) -> str:
        how = {True: "signed", False: "NOT covered by a valid signed checkpoint",
               None: "signature not checked: pass --key PUB"}[self.signed]
        return (f"seq {self.from_seq}..{self.to_seq} ({', '.join(self.files)}) pruned by "
                f"record {self.by_seq} ({how})")


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of verifying a log. ``ok`` is true only when no problem was found
    in the requested range; the CLI exits 0 exactly then."""

    log: str
    ok: bool
    problems: tuple[Problem, ...]
    records_verified: int
    lines_read: int
    first_seq: int | None  # range verified
    last_seq: int | None
    requested_from_seq: int  # range requested
    requested_to_seq: int | None  # None: to the end of the log
    checkpoint: Checkpoint | None
    recoveries: tuple[int, ...] = field(default=())  # seqs of recovery records
    segments: tuple[str, ...] = field(default=())  # segment files read, oldest first
    pruned: tuple[PrunedSpan, ...] = field(default=())  # removed under retention

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": self.log, "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
            "records_verified": self.records_verified, "lines_read": self.lines_read,
            "range_requested": {"from_seq": self.requested_from_seq,
                                "to_seq": self.requested_to_seq},
            "range_verified": {"from_seq": self.first_seq, "to_seq": self.last_seq},
            "checkpoint": self.checkpoint.to_dict() if self.checkpoint else None,
            "recoveries": list(self.recoveries),
            "segments": list(self.segments),
            "pruned": [p.to_dict() for p in self.pruned],
        }

    def summary(self) -> str:
        """Human text: verdict, ranges, every problem (first one first), checkpoint."""
        to = "end" if self.requested_to_seq is None else str(self.requested_to_seq)
        verified = ("none" if self.first_seq is None
                    else f"seq {self.first_seq}..{self.last_seq}")
        head = (f"audit log {self.log}: {'OK' if self.ok else 'FAILED'}: "
                f"{self.records_verified} records verified ({verified}; requested seq "
                f"{self.requested_from_seq}..{to}; {self.lines_read} lines read)")
        lines = [head]
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s); first: {self.problems[0]}")
            lines.extend(f"  {p}" for p in self.problems[:_SHOWN])
            if len(self.problems) > _SHOWN:
                lines.append(f"  ... {len(self.problems) - _SHOWN} more (see to_dict())")
        if self.recoveries:
            lines.append("recovered from torn writes at seq "
                         + ", ".join(map(str, self.recoveries)))
        if len(self.segments) > 1 or self.pruned:
            lines.append(f"{len(self.segments)} segment(s): " + ", ".join(self.segments))
        lines.extend(str(p) for p in self.pruned)
        if self.checkpoint is None:
            lines.append("no checkpoint given: a tail cut exactly at a line boundary "
                         "cannot be detected without one")
        else:
            lines.append(f"checkpoint compared: seq {self.checkpoint.seq} "
                         f"{self.checkpoint.hash[:19]}...")
        return "\n".join(lines)


def _ranges(runs: list[tuple[int, int]], limit: int = 8) -> str:
    """[(3, 5), (9, 9)] -> '3..5, 9' (at most ``limit`` runs shown)."""
    shown = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs[:limit])
    return shown + (f" and {len(runs) - limit} more ranges" if len(runs) > limit else "")


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs as (first, last) runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if runs and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs


def _complement(lo: int, hi: int, present: Iterable[int]) -> list[tuple[int, int]]:
    """Runs of lo..hi not in ``present``; cost grows with ``present``, not with hi - lo
    (a forged seq of 10**15 must not make the verifier count to it)."""
    runs, start = [], lo
    for s in sorted(present):
        if s > start:
            runs.append((start, s - 1))
        start = s + 1
    if start <= hi:
        runs.append((start, hi))
    return runs


@dataclass(frozen=True, slots=True)
class _Placed:
    hashes: frozenset[str]  # a modified record is known by its stored and its real hash
    prev_hash: str | None
    line: int
    kind: str | None


def check_chain(entries: Iterable[LineEntry], *, log: str = "<log>",
                checkpoint: Checkpoint | None = None, from_seq: int = 1,
                to_seq: int | None = None, start: tuple[int, str] | None = None
                ) -> VerifyReport:
    """Check the order of all lines: seq by seq, each ``prev_hash`` against the hash
    before it, then the last seq and hash against ``checkpoint``. Reports every
    problem in file order, keeps those whose seq is in ``from_seq..to_seq``. ``start``
    (seq, hash): what the first line chains to (default: seq 0, the genesis hash), for
    a log whose first segments were pruned.

    One damaged line is reported once: the walk re-synchronises on the next record
    instead of reporting every later record as out of place."""
    entries = list(entries)
    parsed = [e for e in entries if e.status in (LineStatus.OK, LineStatus.MODIFIED)]
    by_seq: dict[int, list[LineEntry]] = defaultdict(list)
    for e in parsed:
        if e.seq is not None:
            by_seq[e.seq].append(e)
    # A record some later record chains to is the real one when two claim one seq.
    referenced = {e.prev_hash for e in parsed}
    if checkpoint is not None:
        referenced.add(checkpoint.hash)

    found: list[Problem] = []
    placed: dict[int, _Placed] = {}
    seen: dict[str, int] = {}
    skipped: set[int] = set()
    head, head_hashes, unplaced = 0, frozenset({GENESIS_HASH}), 0
    if start is not None:
        head, head_hashes = start[0], frozenset({start[1]})

    def add(kind: ProblemKind, seq: int | None, line: int | None, msg: str) -> None:
        found.append(Problem(kind, seq, line, msg))

    def advance(seq: int, hashes: frozenset[str], e: LineEntry) -> None:
        nonlocal head, head_hashes, unplaced
        placed[seq] = _Placed(hashes, e.prev_hash, e.line, e.kind)
        head, head_hashes, unplaced = seq, hashes, 0

    for e in entries:
        if e.status not in (LineStatus.OK, LineStatus.MODIFIED):
            add(ProblemKind(e.status.value), head + 1, e.line, e.message)
            unplaced += e.records_spanned
            continue
        assert e.stored_hash is not None and e.computed_hash is not None
        if e.status is LineStatus.OK and e.stored_hash in seen:
            add(ProblemKind.DUPLICATED, e.seq, e.line,
                f"repeats the record at line {seen[e.stored_hash]} byte for byte")
            continue
        seen.setdefault(e.stored_hash, e.line)
        if e.status is LineStatus.MODIFIED:
            # Placed by position when it fits there: its own seq may be what was changed.
            fits = e.seq == head + 1 or e.prev_hash in head_hashes
            claims = f" (claims seq {e.seq})" if fits and e.seq != head + 1 else ""
            add(ProblemKind.MODIFIED, head + 1 if fits or e.seq is None else e.seq,
                e.line, e.message + claims)
            if fits:
                advance(head + 1, frozenset({e.stored_hash, e.computed_hash}), e)
            else:
                unplaced += 1
            continue
        seq = e.seq
        assert seq is not None
        if seq == head + 1:
            rivals = [r for r in by_seq[seq] if r.line > e.line
                      and r.status is LineStatus.OK and r.prev_hash in head_hashes
                      and r.stored_hash != e.stored_hash]
            fits = e.prev_hash in head_hashes
            real = next((r for r in [e, *rivals] if r.stored_hash in referenced), None)
            if rivals and (not fits or (real is not None and real is not e)):
                winner = real or rivals[0]
                add(ProblemKind.INSERTED, seq, e.line, f"a second record claims seq {seq}; "
                    f"the chain continues through line {winner.line}")
                continue
            if not fits and unplaced == 0:
                prev_line = placed[head].line if head in placed else None
                add(ProblemKind.BROKEN_CHAIN, seq, e.line, "prev_hash is not the hash of "
                    + (f"seq {head} (line {prev_line})" if head else "genesis"))
            advance(seq, frozenset({e.stored_hash}), e)
        elif seq > head + 1:
            if unplaced < seq - head - 1:  # else: unreadable lines, reported, stand for them
                later = {s for s, rs in by_seq.items()
                         if head < s < seq and any(r.line > e.line for r in rs)}
                gone = _complement(head + 1, seq - 1, later)
                if later:
                    add(ProblemKind.REORDERED, seq, e.line, f"seq {seq} comes before seq "
                        f"{_ranges(_runs(later))}, which appear later in the file")
                if gone:
                    add(ProblemKind.DELETED, gone[0][0], e.line,
                        f"seq {_ranges(gone)} missing before this line")
                skipped.update(later)
            advance(seq, frozenset({e.stored_hash}), e)
        elif seq in placed:
            add(ProblemKind.INSERTED, seq, e.line, f"a second record claims seq {seq} "
                f"(first at line {placed[seq].line})")
        else:
            if seq not in skipped:
                add(ProblemKind.REORDERED, seq, e.line, f"seq {seq} appears after seq {head}")
            skipped.discard(seq)
            placed[seq] = _Placed(frozenset({e.stored_hash}), e.prev_hash, e.line, e.kind)
            before, after = placed.get(seq - 1), placed.get(seq + 1)
            if (before and e.prev_hash not in before.hashes) or (
                    after and after.prev_hash != e.stored_hash):
                add(ProblemKind.BROKEN_CHAIN, seq, e.line,
                    "out-of-place record does not chain to its neighbours")

    last = max(placed, default=0 if start is None else start[0])
    if checkpoint is not None and checkpoint.seq > 0:
        at = placed.get(checkpoint.seq)
        if checkpoint.seq > last:
            add(ProblemKind.TRUNCATED, last + 1, len(entries) + 1,
                f"the log ends at seq {last} but the checkpoint has seq {checkpoint.seq}: "
                f"seq {_ranges([(last + 1, checkpoint.seq)])} were cut off")
        elif at is None:
            add(ProblemKind.CHECKPOINT_MISMATCH, checkpoint.seq, None,
                f"seq {checkpoint.seq}, named by the checkpoint, is not in the log")
        elif checkpoint.hash not in at.hashes:
            add(ProblemKind.CHECKPOINT_MISMATCH, checkpoint.seq, at.line,
                f"the record differs from the checkpoint ({checkpoint.hash[:19]}...): "
                "the log was rewritten at or before this seq")
    if to_seq is not None and last < to_seq:
        add(ProblemKind.TRUNCATED, last + 1, len(entries) + 1,
            f"seq {to_seq} was requested but the log ends at seq {last}")

    upper = to_seq if to_seq is not None else float("inf")
    kept = tuple(p for p in found if p.seq is None or from_seq <= p.seq <= upper)
    in_range = sorted(s for s in placed if from_seq <= s <= upper)
    verified = sum(1 for e in parsed if e.seq is not None and from_seq <= e.seq <= upper)
    return VerifyReport(
        log=log, ok=not kept, problems=kept, records_verified=verified,
        lines_read=len(entries), first_seq=in_range[0] if in_range else None,
        last_seq=in_range[-1] if in_range else None, requested_from_seq=from_seq,
        requested_to_seq=to_seq, checkpoint=checkpoint,
        recoveries=tuple(s for s in in_range if placed[s].kind == EnvelopeKind.RECOVERY.value))


def verify_bytes(data: bytes, *, log: str = "<bytes>", checkpoint: Checkpoint | None = None,
                 from_seq: int = 1, to_seq: int | None = None) -> VerifyReport:
    """Verify a whole log held in memory (the same checks as ``AuditLog.verify``)."""
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the data ends in "\n"
    entries = [scan_line(raw, i) for i, raw in enumerate(lines, 1)]
    if tail:
        entries.append(scan_line(tail, len(lines) + 1, terminated=False))
    return check_chain(entries, log=log, checkpoint=checkpoint, from_seq=from_seq,
                       to_seq=to_seq)


# --- one parse per line (the what-if and the record checks read every line once) -----

_HEAD = b'{"hash":"sha256:'
_HEAD_END = len(_HEAD) + 64  # the closing quote of the stored hash
_SAFE_INT = 2**53 - 1
_FAST_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _es6_small(value: float) -> str | None:
    """RFC 8785 (ECMAScript) text of a float that ``repr`` writes as ``d.ddde-05`` or
    ``e-06`` (ECMAScript writes those without an exponent); None for any other float."""
    text = repr(value)
    mantissa, _, exp = text.partition("e")
    if exp not in ("-05", "-06"):
        return None
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "")
    return f"{sign}0.{'0' * (-int(exp) - 1)}{digits}"


def _unusual(value: Any, limit: int) -> bool:
    """Whether parsed JSON (dicts and lists only) nests deeper than ``limit`` or holds an
    integer beyond the exact range of JSON (which RFC 8785 reads as a float)."""
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            return True
        for child in (node.values() if type(node) is dict else node):
            kind = type(child)
            if kind is dict or kind is list:
                push((child, depth + 1))
            elif kind is int and not -_SAFE_INT <= child <= _SAFE_INT:
                return True
    return False


#: orjson writes numbers and strings as RFC 8785 does but for an integral float (orjson
#: "2.0", RFC 8785 "2": a line holding one, or text like it in a string, takes the other
#: routes) and some exponents (orjson "6.5e-6", "1e+16"; RFC 8785 "0.0000065",
#: "10000000000000000": rewritten, :func:`_es6_exponents`).
_INTEGRAL_FLOAT = re.compile(rb"\.0[,\]}]")
_EXPONENT_TAIL = re.compile(rb"e[-+][0-9]+(?=[,\]}])")  # orjson always writes the sign
_NUMBER_CHARS = frozenset(b"0123456789.-")
_PAST_SURROGATES = re.compile(rb"[\xee-\xf4]")
def _es6_exponents(out: bytes) -> bytes | None:
    """orjson's bytes with each exponent float where a value stands written as RFC 8785
    (ECMAScript) writes it. Text that looks like one inside a string is rewritten too;
    that only makes the bytes differ from the line's (the line then takes the other
    routes): bytes equal to the line's parse back to the line's value. None when a float
    is one RFC 8785 writes as an integer (1e16 to 1e21): ``json.loads`` reads that
    literal as an int, orjson (past 64 bits) as a float, so the other routes decide."""
    parts: list[bytes] = []
    last = 0
    for m in _EXPONENT_TAIL.finditer(out):
        start = m.start()
        while start > 0 and out[start - 1] in _NUMBER_CHARS:
            start -= 1
        if start == m.start() or start == 0 or out[start - 1] not in b":,[":
            continue  # not a number where a value stands: inside a string
        try:
            value = float(out[start:m.end()])
            new = (_es6_small(value) or "").encode() or rfc8785.dumps(value)
        except (ValueError, rfc8785.CanonicalizationError):
            continue
        if new.lstrip(b"-").isdigit():
            return None
        parts += (out[last:start], new)
        last = m.end()
    if not parts:
        return out
    parts.append(out[last:])
    return b"".join(parts)


def _orjson_scan(body: bytes) -> dict[str, Any] | None:
    """The parsed body of a line when orjson reads it and writes it back (its exponent
    floats as RFC 8785 writes them) byte for byte, and it nests at most
    :data:`~engine.audit.lineformat.MAX_DEPTH` levels and holds no integer beyond the
    exact range (``OPT_STRICT_INTEGER`` refuses to write those; one past 64 bits, which
    orjson reads as a float, is found by :func:`_es6_exponents`) and nothing else
    orjson writes otherwise than RFC 8785 (an integral float; a character past U+DFFF,
    whose keys RFC 8785 sorts in UTF-16 order); else None. The bytes are then the RFC
    8785 form of the value, and the value is what ``json.loads`` gives (integers within
    range, floats correctly rounded)."""
    if _orjson is None or _INTEGRAL_FLOAT.search(body) is not None:
        return None
    if not body.isascii() and _PAST_SURROGATES.search(body) is not None:
        return None
    try:
        value = _orjson.loads(body)
        written = _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS | _orjson.OPT_STRICT_INTEGER)
    except (TypeError, ValueError):  # orjson's errors are ValueError / TypeError
        return None
    again = _es6_exponents(written) if b"e-" in written or b"e+" in written else written
    if again is None or again != body or type(value) is not dict or not nests_within(body, MAX_DEPTH):
        return None
    return value


def _fast_scan(raw: bytes, line: int) -> tuple[LineEntry, dict[str, Any]] | None:
    """:func:`scan_line` and :func:`parse_envelope` of a canonical, well-formed line in
    one parse; None when the line needs the full route (anything unusual: then the
    caller asks :func:`scan_line`, which says what is wrong). Accepts exactly what
    ``scan_line`` accepts as OK: the stored hash is the SHA-256 of the line's own body,
    and the body is the RFC 8785 form of what it parses to (checked by encoding it again
    with the C encoder, each float written as RFC 8785 writes it)."""
    if not raw.startswith(_HEAD) or raw[_HEAD_END:_HEAD_END + 2] != b'",':
        return None
    body = b"{" + raw[_HEAD_END + 2:]
    stored = raw[9:_HEAD_END].decode("ascii", "replace")
    if "sha256:" + sha256_hex(body) != stored:
        return None
    quick = _orjson_scan(body)
    if quick is not None:
        if _shape_problem(quick, stored):
            return None
        entry = LineEntry(line, LineStatus.OK, seq=quick["seq"], prev_hash=quick["prev_hash"],
                          stored_hash=stored, computed_hash=stored, kind=quick["kind"])
        quick["hash"] = stored
        return entry, quick
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not body.isascii() and _NON_BMP.search(text):
        return None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        return None
    swaps: dict[str, str] = {}
    odd: list[str] = []

    def parse_float(literal: str) -> float:
        value = float(literal)
        if literal != repr(value) or "e" in literal or value.is_integer():
            es6 = _es6_small(value)
            if es6 != literal or value.is_integer():
                odd.append(literal)
            else:
                swaps[repr(value)] = literal
        return value

    try:
        value = json.loads(text, parse_float=parse_float, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    if odd or type(value) is not dict or _unusual(value, MAX_DEPTH):
        return None
    try:
        again = _FAST_JSON.encode(value)
    except (ValueError, UnicodeEncodeError, RecursionError):
        return None
    for was, now in swaps.items():
        again = again.replace(was, now)
    if again != text or _shape_problem(value, stored):
        return None
    entry = LineEntry(line, LineStatus.OK, seq=value["seq"], prev_hash=value["prev_hash"],
                      stored_hash=stored, computed_hash=stored, kind=value["kind"])
    value["hash"] = stored
    return entry, value


def scan_parse(raw: bytes, line: int) -> tuple[LineEntry, dict[str, Any] | None]:
    """What :func:`~engine.audit.lineformat.scan_line` says of one line (without its
    ``\\n``) and, when the line is OK, its envelope as
    :func:`~engine.audit.lineformat.parse_envelope` gives it: one parse for a canonical
    line (about 3x quicker than the two), the full checks for any other."""
    fast = _fast_scan(raw, line)
    if fast is not None:
        return fast
    entry = scan_line(raw, line)
    if entry.status is not LineStatus.OK:
        return entry, None
    env, _why = parse_envelope(raw)
    return entry, env
