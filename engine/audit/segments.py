"""Segment files of one audit log: names, the header that chains a segment to the one
before, and what a segment looks like at its end. Pure but :func:`segment_end`, which
reads one file below a folder handle.

A log named ``decisions.jsonl`` is a sequence of segment files in one folder::

    decisions.jsonl          segment 0: seq 1.. (every log written before rotation)
    decisions.00001.jsonl    segment 1: line 1 is a "segment" header, seq continues
    decisions.00002.jsonl    segment 2 ... the highest number present is the active one

- A segment is closed (``audit.rotate`` in the policy: ``max_bytes``, ``max_records``)
  when the next append would take it past a limit; it is signed (with a key) and the
  next segment begins. A closed segment is never written again. A segment always takes
  at least one record besides its header, so a record larger than ``max_bytes`` still
  goes in, alone.
- ``seq`` and the hash chain run across segments: the header of segment *k* has seq
  ``last + 1`` of segment *k-1* and chains to its last hash. The header's record names
  segment *k-1*: file, seq range, last hash, tree size and RFC 6962 root — so the header
  (leaf 0 of segment *k*'s tree, covered by its signed checkpoints) commits to the whole
  of segment *k-1*.
- Each segment has its own Merkle tree and its own sidecar of signed checkpoints
  (``<segment>.checkpoints``, origin from the segment's file name); ``audit prove``
  proves a record against its segment's tree and ``audit verify --key`` checks every
  segment.
- Segments only go away whole, oldest first, through ``audit prune``
  (:mod:`engine.audit.retention`), which first appends a signed "prune" record naming
  each one; a segment missing without such a record is reported as tampering.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import merkle
from .lineformat import EnvelopeKind, LineEntry, LineStatus, parse_envelope, scan_line
from .signing import _line_leaf, _stored_leaf
from .verify import Checkpoint, Problem, ProblemKind, PrunedSpan, VerifyReport, check_chain
from ..errors import AuditError, Location
from ..safeopen import open_below

__all__ = ["SegmentEnd", "SegmentScan", "check_segments", "header_record", "list_segments",
           "scan_segment", "segment_end", "segment_name", "segment_number"]

#: Digits of a segment number in its file name (more once there are 100,000 segments).
DIGITS = 5


def _split_name(base: str) -> tuple[str, str]:
    stem, dot, ext = base.rpartition(".")
    return (stem, "." + ext) if dot and stem else (base, "")


def segment_name(base: str, number: int) -> str:
    """The file name of segment ``number`` of the log ``base`` (segment 0 is ``base``)."""
    if number == 0:
        return base
    stem, ext = _split_name(base)
    return f"{stem}.{number:0{DIGITS}d}{ext}"


def segment_number(base: str, name: str) -> int | None:
    """The segment number of file ``name`` of log ``base``, or None if it is not one."""
    if name == base:
        return 0
    stem, ext = _split_name(base)
    m = re.fullmatch(re.escape(stem) + r"\.(\d{%d,})" % DIGITS + re.escape(ext), name)
    if m is None or int(m.group(1)) == 0:
        return None
    return int(m.group(1)) if segment_name(base, int(m.group(1))) == name else None


def list_segments(names: list[str], base: str) -> list[tuple[int, str]]:
    """(number, file name) of the segments of ``base`` among ``names``, in order."""
    found = [(segment_number(base, n), n) for n in names]
    return sorted((k, n) for k, n in found if k is not None)


@dataclass(frozen=True, slots=True)
class SegmentEnd:
    """A segment as it ends: what the next segment's header and a prune record name."""

    file: str
    segment: int
    first_seq: int
    last_seq: int
    first_hash: str
    last_hash: str
    tree_size: int
    root: str  # base64, as in checkpoint notes
    newest: str | None  # the latest timestamp of its records (ISO 8601), None if none

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "segment": self.segment, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "first_hash": self.first_hash,
                "last_hash": self.last_hash, "tree_size": self.tree_size, "root": self.root,
                "newest_timestamp": self.newest}


def record_time(env: dict[str, Any]) -> str | None:
    """When a line was written: a decision's ``timestamp``, a recovery's
    ``detected_at``, a header's or prune record's ``at``."""
    rec = env.get("record")
    if not isinstance(rec, dict):
        return None
    for key in ("timestamp", "detected_at", "at"):
        value = rec.get(key)
        if isinstance(value, str):
            return value
    return None


def segment_end(dir_fd: int, name: str, number: int) -> SegmentEnd | None:
    """Read segment ``name`` (below ``dir_fd``, not following symlinks) to its last
    complete line; None when it holds no complete line. Leaves are the stored hashes,
    as the writer's signer uses them (verification recomputes them)."""
    fd = open_below(dir_fd, name, os.O_RDONLY, shown=name)
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    lines.pop()
    if not lines:
        return None
    leaves = [merkle.leaf_hash(_stored_leaf(raw)) for raw in lines]
    first, _ = parse_envelope(lines[0])
    last, _ = parse_envelope(lines[-1])
    if first is None or last is None:
        raise AuditError("audit.corrupt_segment", f"{name} does not start and end with a "
                         "readable record, so nothing can chain to it or name it; run "
                         "`ctxbudget audit verify` on the log and restore the segment",
                         location=Location(file=name), details={"segment": name})
    newest: str | None = None
    for raw in lines:
        env, _ = parse_envelope(raw)
        when = record_time(env) if env is not None else None
        if when is not None and (newest is None or _key(when) > _key(newest)):
            newest = when
    return SegmentEnd(name, number, int(first["seq"]), int(last["seq"]), str(first["hash"]),
                      str(last["hash"]), len(lines),
                      base64.b64encode(merkle.root_from_leaf_hashes(leaves)).decode(), newest)


def parse_time(stamp: str | None) -> datetime | None:
    """An ISO 8601 timestamp (``Z`` or an offset; naive means UTC) as an aware datetime."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp[:-1] + "+00:00" if stamp[-1] in "zZ" else stamp)
    except ValueError:
        return None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


def _key(when: str) -> datetime:
    return parse_time(when) or datetime.max.replace(tzinfo=timezone.utc)


def header_record(number: int, previous: SegmentEnd, at: str) -> dict[str, Any]:
    """The record of segment ``number``'s first line (kind ``segment``)."""
    return {"segment": number, "previous": previous.to_dict(), "at": at}


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """One segment file as the verifier read it: its lines (numbered on from the
    segments before it), its header and prune records, and the root over its lines."""

    name: str
    number: int
    entries: tuple[LineEntry, ...]
    header: dict[str, Any] | None  # the record of line 1 when it is a segment header
    prunes: tuple[tuple[int, dict[str, Any]], ...]  # (seq, record) of prune records
    stray_headers: tuple[int, ...]  # local line numbers of headers not on line 1
    root: str  # base64 RFC 6962 root over the recomputed line hashes
    last_hash: str | None  # recomputed hash of the last complete line


def scan_segment(base: str, name: str, lines: Iterable[bytes], torn: bytes,
                 offset: int) -> SegmentScan:
    """Scan segment ``name``'s complete ``lines`` (and ``torn`` bytes after them);
    line numbers start after ``offset``."""
    entries: list[LineEntry] = []
    leaves: list[bytes] = []
    header: dict[str, Any] | None = None
    prunes: list[tuple[int, dict[str, Any]]] = []
    stray: list[int] = []
    for i, raw in enumerate(lines, 1):
        e = scan_line(raw, offset + i)
        entries.append(e)
        # the leaf as signing._line_leaf makes it, from the hash just computed
        leaves.append(merkle.leaf_hash(merkle.leaf_bytes(e.computed_hash) if e.computed_hash
                                       else _line_leaf(raw)))
        if e.status is LineStatus.OK and e.kind in (EnvelopeKind.SEGMENT.value,
                                                    EnvelopeKind.PRUNE.value):
            env, _ = parse_envelope(raw)
            if env is None:
                continue
            if e.kind == EnvelopeKind.PRUNE.value:
                prunes.append((int(env["seq"]), env["record"]))
            elif i == 1:
                header = env["record"]
            else:
                stray.append(i)
    last = next((e.computed_hash for e in reversed(entries) if e.computed_hash), None)
    if torn:
        entries.append(scan_line(torn, offset + len(entries) + 1, terminated=False))
    return SegmentScan(name, segment_number(base, name) or 0, tuple(entries), header,
                       tuple(prunes), tuple(stray),
                       base64.b64encode(merkle.root_from_leaf_hashes(leaves)).decode(), last)


def _pruned_segments(scans: Sequence[SegmentScan]
                     ) -> tuple[dict[int, tuple[int, str, dict[str, Any]]], int]:
    """(segment number -> (seq of the prune record, its file, the segment's
    description), the highest segment number that earlier prune records removed)."""
    out: dict[int, tuple[int, str, dict[str, Any]]] = {}
    through = -1
    for s in scans:
        for seq, rec in s.prunes:
            before = rec.get("pruned_through")
            if isinstance(before, int) and not isinstance(before, bool):
                through = max(through, before)
            for d in rec.get("segments") or ():
                if isinstance(d, dict) and isinstance(d.get("segment"), int):
                    out.setdefault(d["segment"], (seq, s.name, d))
    return out, through


def _header_problems(base: str, scans: Sequence[SegmentScan],
                     pruned: Mapping[int, tuple[int, str, dict[str, Any]]]) -> list[Problem]:
    """Each segment after the first starts with a header naming the segment before it
    as it really ends (file, last hash, tree size, root)."""
    found: list[Problem] = []
    by_number = {s.number: s for s in scans}

    def bad(s: SegmentScan, why: str) -> None:
        first = s.entries[0] if s.entries else None
        found.append(Problem(ProblemKind.SEGMENT, first.seq if first else None, 1,
                             f"{s.name}: {why}"))

    for s in scans:
        for i in s.stray_headers:
            found.append(Problem(ProblemKind.SEGMENT, None, i, f"{s.name} line {i}: a segment "
                                 "header inside a segment: lines were moved between files"))
        if s.number == 0:
            if s.header is not None:
                bad(s, "the log's first file starts with a segment header: a later "
                    "segment was renamed to the log's own name")
            continue
        if s.header is None:
            bad(s, "does not start with a segment header: it is not a segment of this "
                "log, or its first line was removed")
            continue
        said = s.header.get("segment")
        if said != s.number:
            bad(s, f"its header says it is segment {said!r}: segment files were renamed "
                "or swapped; restore their names")
        prev = s.header.get("previous")
        prev = prev if isinstance(prev, dict) else {}
        want = segment_name(base, s.number - 1)
        if prev.get("file") != want:
            bad(s, f"its header names {prev.get('file')!r} as the segment before, not {want!r}")
        before = by_number.get(s.number - 1)
        if before is not None:
            actual = {"tree_size": len([e for e in before.entries
                                        if e.status is not LineStatus.TORN]),
                      "root": before.root, "last_hash": before.last_hash}
        elif s.number - 1 in pruned:
            d = pruned[s.number - 1][2]
            actual = {k: d.get(k) for k in ("tree_size", "root", "last_hash")}
        else:
            continue  # the missing segment is reported on its own
        for key, value in actual.items():
            if prev.get(key) != value:
                bad(s, f"its header gives {want}'s {key} as {prev.get(key)!r}, but "
                    f"{'that segment' if before else 'the prune record'} has {value!r}: "
                    f"{want} was changed, replaced or swapped after it was closed")
                break
    return found


def check_segments(scans: Sequence[SegmentScan], *, log: str,
                   checkpoint: Checkpoint | None = None, from_seq: int = 1,
                   to_seq: int | None = None) -> VerifyReport:
    """Verify a log of several segments as one chain: every line re-hashed, seqs and
    hashes continuous across files, each header matching the segment before it, and
    every missing segment explained by a prune record (else: tampering). Problems
    carry the segment's file name and the line number within it."""
    base = Path(log).name
    pruned, through = _pruned_segments(scans)
    present = {s.number for s in scans}
    lead = min(present)
    extra: list[Problem] = []
    for k in range(max(present)):
        if k in present or (k < lead and (k in pruned or k <= through)):
            continue
        extra.append(Problem(ProblemKind.SEGMENT, None, None,
                             f"segment file {segment_name(base, k)} is missing and no prune "
                             "record names it: it was deleted or moved outside `audit prune` "
                             "(tampering); restore it from a copy"))
    start: tuple[int, str] | None = None
    spans: list[PrunedSpan] = []
    if lead > 0 and lead - 1 in pruned:
        seq, by_file, d = pruned[lead - 1]
        if isinstance(d.get("last_seq"), int) and isinstance(d.get("last_hash"), str):
            start = (d["last_seq"], d["last_hash"])
        gone = sorted(set(k for k in pruned if k < lead) | set(range(min(through, lead - 1) + 1)))
        spans.append(PrunedSpan(1, start[0] if start else 0,
                                tuple(segment_name(base, k) for k in gone), seq, by_file))
    extra += _header_problems(base, scans, pruned)
    entries = [e for s in scans for e in s.entries]
    if checkpoint is not None and start is not None and checkpoint.seq <= start[0]:
        if checkpoint.seq == start[0] and checkpoint.hash != start[1]:
            extra.append(Problem(ProblemKind.CHECKPOINT_MISMATCH, checkpoint.seq, None,
                                 "the checkpoint's record differs from the last pruned one"))
        checkpoint = None  # older than what is left: nothing more to compare
    report = check_chain(entries, log=log, checkpoint=checkpoint, from_seq=from_seq,
                         to_seq=to_seq, start=start)
    where = {e.line: (s.name, i) for s in scans for i, e in enumerate(s.entries, 1)}

    def local(p: Problem) -> Problem:
        if p.line is None or p.line not in where:
            return p
        name, line = where[p.line]
        return Problem(p.kind, p.seq, line, f"{name}: {p.message}")

    upper = to_seq if to_seq is not None else float("inf")
    kept = tuple(local(p) for p in report.problems) + tuple(
        p for p in extra if p.seq is None or from_seq <= p.seq <= upper)
    return dataclasses.replace(report, ok=not kept, problems=kept,
                               segments=tuple(s.name for s in scans), pruned=tuple(spans))
