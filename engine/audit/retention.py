"""Retention: remove whole closed segments older than the retention period, and say so
in the log (``ctxbudget audit prune``).

How a prune goes (under the writers' lock)::

    closed segments, oldest first ─▶ keep the run whose every record is older than the
    cutoff (stop at the first that is not; never the active segment)
    ─▶ append ONE "prune" record to the active segment naming each one (file, segment
       number, seq range, first/last hash, tree size and root at its end, the newest
       timestamp in it, its last signed checkpoint note)
    ─▶ sign a checkpoint over the log including that record (with a key)
    ─▶ unlink the segments and their sidecars, fsync the folder

- ``verify`` then anchors the chain at the last pruned record the prune record names
  and reports the span as "pruned by record N (signed)"; a segment missing without a
  prune record naming it is tampering (:func:`engine.audit.segments.check_segments`).
- A crash after the record but before the unlinks leaves segments that are named but
  still there: they still verify, and the next prune removes them without a new record.
- EU AI Act Art. 19(1) and 26(6) ask for logs kept at least six months: a period
  under :data:`~engine.semantic.MIN_RETENTION_DAYS` days is refused unless overridden.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .lineformat import EnvelopeKind, encode_record, parse_envelope
from .log import AuditLog, _read_tail
from .note import split_notes
from .segments import SegmentEnd, list_segments, parse_time, segment_end, segment_number
from .signing import sidecar_path
from ..errors import AuditError, Location, UsageError
from ..safeopen import open_below
from ..semantic import MIN_RETENTION_DAYS

__all__ = ["MIN_RETENTION_DAYS", "PruneResult", "cutoff_for", "prune"]


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What a prune removed (or, with ``dry_run``, would remove), and why it stopped."""

    cutoff: datetime
    removed: tuple[SegmentEnd, ...]
    record: dict[str, Any] | None  # the prune envelope written (None: dry run or nothing)
    finished: tuple[str, ...]  # files named by an earlier prune record, removed now
    kept_because: str | None
    dry_run: bool

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"cutoff {self.cutoff.isoformat()}: {verb} {len(self.removed)} segment(s)"]
        lines += [f"  {s.file}: seq {s.first_seq}..{s.last_seq}, {s.tree_size} lines, newest "
                  f"{s.newest}" for s in self.removed]
        if self.record is not None:
            lines.append(f"prune record seq {self.record['seq']} ({self.record['hash'][:19]}...)")
        lines += [f"  {name}: removed (named by an earlier prune record)" for name in self.finished]
        if self.kept_because:
            lines.append(f"kept: {self.kept_because}")
        return "\n".join(lines)


def cutoff_for(*, retention_days: int | None, before: datetime | None, now: datetime,
               allow_short: bool) -> datetime:
    """The cutoff: ``before`` if given, else ``now`` minus ``retention_days``. A period
    under six months is refused (``audit.retention_too_short``) unless ``allow_short``."""
    if before is None and retention_days is None:
        raise UsageError("audit.no_retention", "name the retention period: --policy P "
                         "(spec.audit.retention_days), --retention-days N, or --before DATE")
    cutoff = before if before is not None else now - timedelta(days=retention_days or 0)
    kept_days = (now - cutoff).total_seconds() / 86400
    if kept_days < MIN_RETENTION_DAYS and not allow_short:
        raise UsageError(
            "audit.retention_too_short",
            f"pruning before {cutoff.isoformat()} keeps only {kept_days:.1f} days of log: the "
            f"EU AI Act (Art. 19, Art. 26(6)) requires at least six months "
            f"({MIN_RETENTION_DAYS} days); use a period of >= {MIN_RETENTION_DAYS} days, or pass "
            "--allow-short-retention if the law that applies to this log permits less",
            path="$.spec.audit.retention_days",
            details={"kept_days": round(kept_days, 1), "minimum_days": MIN_RETENTION_DAYS})
    return cutoff


def _last_note(path: Any) -> str | None:
    try:
        text = sidecar_path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    notes = split_notes(text)
    return notes[-1][1] if notes else None


def _named_before(log: AuditLog, names: list[str]) -> set[str]:
    """Files named by prune records already in the log."""
    found: set[str] = set()
    for _number, env, _why in log.scan():
        if env is not None and env.get("kind") == EnvelopeKind.PRUNE.value:
            for d in env["record"].get("segments") or ():
                if isinstance(d, dict) and isinstance(d.get("file"), str):
                    found.add(d["file"])
    return found & set(names)


def prune(log: AuditLog, cutoff: datetime, *, retention_days: int | None = None,
          dry_run: bool = False, require_signed: bool = True) -> PruneResult:
    """Remove the oldest closed segments whose records are all older than ``cutoff``.
    With ``require_signed`` (default) the log must have a signing key, so that the
    prune record is covered by a signed checkpoint (``audit.no_key``)."""
    cutoff = cutoff.astimezone(timezone.utc)
    signer = log.active_signer()
    if signer is None and require_signed and not dry_run:
        raise AuditError("audit.no_key", f"pruning {log.path} removes records, so the prune "
                         "record must be signed: set CTXBUDGET_AUDIT_KEY to the log's signing "
                         "key (or pass --unsigned for a log that is never signed)",
                         location=Location(file=str(log.path)))
    log.checkpoint()  # audit.not_found for a log that is not there
    names = log.segments()
    earlier = _named_before(log, names[:-1])
    removed: list[SegmentEnd] = []
    kept_because: str | None = None
    with log._locked(write=True) as (fd, dir_fd, active):
        found = list_segments(os.listdir(dir_fd), log.path.name)
        lead = found[0][0] if found else 0
        for number, name in found:
            if name == active:
                kept_because = f"{name} is the active segment (never pruned)"
                break
            if name in earlier:
                continue
            end = segment_end(dir_fd, name, number)
            if end is None:
                continue
            newest = parse_time(end.newest)
            if newest is None or newest >= cutoff:
                kept_because = (f"{name} has records from {end.newest} (not before the cutoff)"
                                if newest is not None else f"{name} has no readable timestamp")
                break
            removed.append(end)
        if dry_run:
            return PruneResult(cutoff, tuple(removed), None, tuple(sorted(earlier)),
                               kept_because, True)
        written: dict[str, Any] | None = None
        if removed:
            segments = [{**s.to_dict(), "signed_checkpoint": _last_note(log.path.with_name(s.file))}
                        for s in removed]
            # Segments pruned before stay accounted for even once the record that named
            # them is pruned itself: always a prefix, segments 0..pruned_through.
            record = encode_record({"reason": "retention", "retention_days": retention_days,
                                    "cutoff": cutoff.isoformat().replace("+00:00", "Z"),
                                    "at": log.clock(), "segments": segments,
                                    "pruned_through": lead - 1 if lead > 0 else None})
            size = os.fstat(fd).st_size
            end_, last, torn = _read_tail(fd, size)
            written = log._write_lines(fd, dir_fd, active, end_, size, last, torn, record,
                                       None, EnvelopeKind.PRUNE)[-1]
            if signer is not None:  # a checkpoint over the state that includes the record
                signer.close(log.path.with_name(active), fd)
        for name in [s.file for s in removed] + sorted(earlier):
            for victim in (name, sidecar_path(log.path.with_name(name)).name):
                try:
                    os.unlink(victim, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
        os.fsync(dir_fd)
    return PruneResult(cutoff, tuple(removed), written, tuple(sorted(earlier)), kept_because,
                       False)
