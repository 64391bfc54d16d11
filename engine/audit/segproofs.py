"""Signatures and proofs over a log of several segments (:mod:`engine.audit.segments`):
each segment has its own tree and sidecar, so :func:`verify_signed_segments` checks each
one with :func:`~engine.audit.proofs.verify_signed` and :func:`prove_segmented` proves a
decision against its own segment's tree, adding the proof of that segment's header (leaf
0), which carries the segment's first seq, so that ``check-proof`` can check the record's
seq with the key alone. A log of one file is handled exactly as before.
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path
from typing import Any, Iterable

from . import merkle
from .lineformat import scan_line
from .log import AuditLog
from .note import VerifierKey, origin_log_name, parse_note
from .proofs import SignedReport, _read_lines, load_notes, prove, verify_signed
from .segments import segment_name, segment_number
from .signing import _line_leaf, sidecar_path
from .verify import VerifyReport
from ..errors import AuditError

__all__ = ["mark_pruned_signed", "prove_segmented", "verify_signed_segments"]


def _route(external: Iterable[tuple[str, str]], names: list[str]) -> dict[str, list[tuple[str, str]]]:
    """External notes go to the segment their origin names (default: the active one)."""
    out: dict[str, list[tuple[str, str]]] = {n: [] for n in names}
    for source, text in external:
        try:
            target = origin_log_name(parse_note(text).checkpoint().origin)
        except ValueError:
            target = None
        out[target if target in out else names[-1]].append((source, text))
    return out


def verify_signed_segments(log: str | Path, key: VerifierKey, *, log_name: str | None = None,
                           external: Iterable[tuple[str, str]] = (), max_unsigned: int = 0
                           ) -> tuple[SignedReport, dict[str, SignedReport]]:
    """Every segment's signed checkpoints (a closed segment must be signed to its end;
    ``max_unsigned`` applies to the active one): the combined report, and one per file."""
    base = Path(log)
    names = AuditLog(base, signer=None).segments()
    if len(names) == 1:
        one = verify_signed(base.with_name(names[0]), key, log_name=log_name,
                            external=external, max_unsigned=max_unsigned)
        return one, {names[0]: one}
    routed = _route(external, names)
    per: dict[str, SignedReport] = {}
    problems: list[tuple[str, str]] = []
    for i, name in enumerate(names):
        number = segment_number(base.name, name) or 0
        if i:  # a segment begun after a key rotation is signed by the new key
            key = _rotated_to(base.with_name(names[i - 1]), key)
        r = verify_signed(base.with_name(name), key,
                          log_name=segment_name(log_name, number) if log_name else None,
                          external=routed[name],
                          max_unsigned=max_unsigned if i == len(names) - 1 else 0)
        per[name] = r
        problems += [(code, f"{name}: {msg}") for code, msg in r.problems]
    records = sum(r.records for r in per.values())
    tail = per[names[-1]].unsigned_tail
    combined = SignedReport(str(base), "failed" if problems else "signed", tuple(problems),
                            records, records - tail,
                            tuple(c for r in per.values() for c in r.checkpoints))
    return combined, per


def _rotated_to(segment: Path, key: VerifierKey) -> VerifierKey:
    """The key that signs after ``segment``: ``key``, or the key its sidecar's rotation
    notes (each signed by the key before) hand over to."""
    for _source, text in load_notes(sidecar_path(segment), missing_ok=True):
        try:
            note = parse_note(text)
            if note.is_rotation and note.signed_by(key):
                rot = note.rotation()
                if note.signed_by(rot.new_key):
                    key = rot.new_key
        except ValueError:
            continue
    return key


def mark_pruned_signed(report: VerifyReport, per: dict[str, SignedReport],
                       log: str | Path) -> VerifyReport:
    """Set each pruned span's ``signed``: its prune record lies within a valid signed
    checkpoint of its segment."""
    if not report.pruned:
        return report
    base = Path(log)
    spans = []
    for span in report.pruned:
        r = per.get(span.by_file)
        signed = False
        if r is not None and not r.problems:
            first = _first_seq(base.with_name(span.by_file))
            signed = first is not None and span.by_seq - first < r.signed_size
        spans.append(dataclasses.replace(span, signed=signed))
    return dataclasses.replace(report, pruned=tuple(spans))


def signed_spans(log: str | Path, per: dict[str, SignedReport]
                 ) -> tuple[tuple[int, int, tuple[tuple[int, str], ...]], ...]:
    """Per segment of ``log`` checked in ``per`` (:func:`verify_signed_segments`): its
    first seq, how many of its records are signed, and its valid checkpoints
    ((tree size, source)); a segment with problems counts none as signed."""
    base = Path(log)
    out = []
    for name, r in per.items():
        first = _first_seq(base.with_name(name))
        if first is None:
            continue
        good = tuple((c.size, c.source) for c in r.checkpoints
                     if c.signature_ok and c.reproduced and c.size is not None)
        out.append((first, 0 if r.problems else r.signed_size, good))
    return tuple(out)


def _first_seq(path: Path) -> int | None:
    lines = _read_lines(path)
    return scan_line(lines[0], 1).seq if lines else None


def prove_segmented(log: str | Path, decision_id: str) -> dict[str, Any]:
    """:func:`~engine.audit.proofs.prove` in the segment that holds ``decision_id``;
    for a segment after the first, the bundle also proves its header."""
    base = Path(log)
    names = AuditLog(base, signer=None).segments()
    if len(names) == 1:
        return prove(base.with_name(names[0]), decision_id)
    for name in reversed(names):
        path = base.with_name(name)
        try:
            bundle = prove(path, decision_id)
        except AuditError as exc:
            if exc.code == "audit.unknown_decision":
                continue
            raise
        lines = _read_lines(path)
        hashes = [merkle.leaf_hash(_line_leaf(raw)) for raw in lines]
        entry = scan_line(lines[bundle["leaf_index"]], 1)
        bundle["seq"] = entry.seq
        bundle["segment"] = name
        if (segment_number(base.name, name) or 0) > 0:
            bundle["segment_header"] = {
                "line": lines[0].decode("utf-8"),
                "proof": [base64.b64encode(h).decode()
                          for h in merkle.inclusion_proof(0, hashes[:bundle["tree_size"]])]}
        return bundle
    raise AuditError("audit.unknown_decision", f"no decision {decision_id!r} in any segment of "
                     f"{base} ({', '.join(names)}); `ctxbudget audit show {base}` lists the ids",
                     path="$.decision_id")
