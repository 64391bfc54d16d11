"""Shards of audit logs for a what-if run: byte ranges of segment files, each read as a
stream and verified before any of its records is used.

What goes in: log paths. What comes out: :func:`plan` gives :class:`Shard` values (a
segment file, a byte range that starts and ends on line boundaries, and the ``(seq,
hash)`` of the line just before it, read by the planner); :func:`read_shard` verifies one
shard's lines as :func:`engine.audit.verify.check_chain` verifies a log — every line
re-hashed, seq by seq, each ``prev_hash`` against the hash before it, the first one
against the planner's anchor — and only then yields its decision envelopes, expanded
(:mod:`engine.audit.compact`) and with their archived policies
(:mod:`engine.audit.policies`), one at a time.

A shard is read twice (once to verify, once to use), never held whole: a worker's memory
grows with the shard's byte size, not with the log's. The seams are closed by the caller
(:func:`seam_problem`): shard *k*'s anchor must be the link shard *k - 1* verified as its
last. What the chain does not cover — segment headers' tree roots, signatures — is
``ctxbudget audit verify``'s (with ``--key``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AuditError, Location
from ..safeopen import NotAFile, SymlinkRefused, dir_handle, open_below
from .compact import expand
from .lineformat import GENESIS_HASH, EnvelopeKind, LineStatus, parse_envelope, scan_line
from .log import AuditLog
from .policies import PolicyArchive
from .records import with_archived_policy
from .verify import check_chain, scan_parse

__all__ = ["DEFAULT_SHARD_BYTES", "Shard", "ShardCheck", "ShardStream", "iter_shards", "log_bytes", "plan", "read_shard",
           "record_policy_name", "seam_problem", "shard_bytes_for", "verify_shard"]

#: Bytes per shard when nothing else decides (a few thousand decisions of a typical log).
DEFAULT_SHARD_BYTES = 8 * 1024 * 1024
_MIN_SHARD_BYTES = 64 * 1024
#: What the planner reads at a time, forwards (counting lines) and backwards (the line before a cut).
_CHUNK = 1024 * 1024
_BACK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Shard:
    """Lines ``first_line..`` of segment file ``segment`` of log ``log``, bytes
    ``start..end`` (``end`` just after a newline). ``anchor``: the (seq, stored hash) of
    the line before (None: the log's first line, which chains to genesis);
    ``anchored``: False when that line could not be read (its shard reports it)."""

    index: int
    log: str
    segment: str
    start: int
    end: int
    first_line: int
    anchor: tuple[int, str] | None
    anchored: bool = True

    @property
    def label(self) -> str:
        return f"{Path(self.log).with_name(self.segment)} bytes {self.start}..{self.end}"


@dataclass(frozen=True, slots=True)
class ShardCheck:
    """One shard's chain as verified: its problems (as ``str(Problem)``, prefixed with
    the segment file), the link of its last line, and how many decisions it holds."""

    problems: tuple[str, ...]
    last_link: tuple[int, str] | None
    decisions: int

    @property
    def ok(self) -> bool:
        return not self.problems


def shard_bytes_for(total_bytes: int, workers: int) -> int:
    """A shard size that gives every worker about eight shards (so that a slow shard
    does not leave the others idle), between 64 KiB and :data:`DEFAULT_SHARD_BYTES`."""
    want = total_bytes // max(1, 8 * workers)
    return max(_MIN_SHARD_BYTES, min(DEFAULT_SHARD_BYTES, want))


def _open(log: Path, segment: str) -> int:
    """A read-only fd on ``segment`` next to ``log``, not following symlinks."""
    try:
        with dir_handle(log.parent) as dir_fd:
            return open_below(dir_fd, segment, os.O_RDONLY, shown=str(log.with_name(segment)))
    except (SymlinkRefused, NotAFile) as exc:
        raise AuditError("audit.not_a_file", f"{exc.name} is a symbolic link or not a regular file; "
                         "point the what-if at the real log", location=Location(file=str(log))) from None
    except FileNotFoundError as exc:
        raise AuditError("audit.not_found", f"no audit log at {log.with_name(segment)}",
                         location=Location(file=str(log))) from exc


def _line_before(fd: int, end: int) -> bytes:
    """The complete line that ends (with its newline) at byte ``end``."""
    pos, parts = end - 1, []
    while pos > 0:
        step = min(_BACK, pos)
        chunk = os.pread(fd, step, pos - step)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            parts.append(chunk[cut + 1:])
            break
        parts.append(chunk)
        pos -= step
    parts.reverse()
    return b"".join(parts)


def _link(raw: bytes) -> tuple[int, str] | None:
    env, _why = parse_envelope(raw)
    if env is None or not isinstance(env.get("hash"), str):
        return None
    return int(env["seq"]), str(env["hash"])


def _cuts(fd: int, size: int, target: int) -> tuple[list[tuple[int, int]], int]:
    """(byte offset, lines before it) of each line end where a shard stops: the first
    line end at least ``target`` bytes after the previous cut, and the end of the
    complete lines; also the bytes of a torn tail after them."""
    cuts: list[tuple[int, int]] = []
    pos, lines, last_end, goal = 0, 0, 0, target
    while pos < size:
        chunk = os.pread(fd, min(_CHUNK, size - pos), pos)
        if not chunk:
            break
        i = 0
        while True:
            # a line end >= goal is a newline at index >= goal - pos - 1 of this chunk
            nl = chunk.find(b"\n", max(i, goal - pos - 1)) if goal - pos <= len(chunk) else -1
            if nl < 0:
                n = chunk.count(b"\n", i)
                if n:
                    lines += n
                    last_end = pos + chunk.rfind(b"\n") + 1
                break
            lines += chunk.count(b"\n", i, nl + 1)
            last_end = pos + nl + 1
            cuts.append((last_end, lines))
            goal, i = last_end + target, nl + 1
        pos += len(chunk)
    if last_end > (cuts[-1][0] if cuts else 0):
        cuts.append((last_end, lines))
    return cuts, size - last_end


def log_bytes(logs: Sequence[str | os.PathLike[str]]) -> int:
    """The size of every segment of ``logs``, in bytes."""
    total = 0
    for given in logs:
        path = Path(given)
        for name in AuditLog(path, signer=None).segments():
            fd = _open(path, name)
            try:
                total += os.fstat(fd).st_size
            finally:
                os.close(fd)
    return total


def iter_shards(logs: Sequence[str | os.PathLike[str]], shard_bytes: int,
                problems: list[str]) -> Iterator[Shard]:
    """The shards of ``logs``, lazily: each log's segments, oldest first, cut at the first
    line end ``shard_bytes`` or more after the previous cut. One streaming pass per
    segment, which holds only its cuts; torn tails (an unfinished write, which ``audit
    verify`` reports too) are appended to ``problems``."""
    index = 0
    for given in logs:
        path = Path(given)
        anchor: tuple[int, str] | None = None
        anchored = True
        for number, name in enumerate(AuditLog(path, signer=None).segments()):
            fd = _open(path, name)
            try:
                cuts, torn = _cuts(fd, os.fstat(fd).st_size, shard_bytes)
                if torn:
                    problems.append(f"{path.with_name(name)}: ends in {torn} bytes of an unfinished "
                                    "write (torn_line); `ctxbudget audit verify` reports it, the next "
                                    "append moves it aside")
                if number == 0 and name != path.name and cuts:
                    # the log's first segments were pruned: the header names what it chains to
                    env, _ = parse_envelope(_line_before(fd, _first_end(fd)))
                    prev = (env or {}).get("record", {}).get("previous") or {}
                    if isinstance(prev.get("last_seq"), int) and isinstance(prev.get("last_hash"), str):
                        anchor = (prev["last_seq"], prev["last_hash"])
                    else:
                        anchored = False
                begin, first = 0, 1
                for end, lines in cuts:
                    shard = Shard(index, str(path), name, begin, end, first, anchor, anchored)
                    link = _link(_line_before(fd, end))
                    anchor, anchored = (link, True) if link is not None else (None, False)
                    begin, first, index = end, lines + 1, index + 1
                    yield shard
            finally:
                os.close(fd)


def plan(logs: Sequence[str | os.PathLike[str]], shard_bytes: int | None = None, *,
         workers: int = 1) -> tuple[list[Shard], list[str]]:
    """Every shard of ``logs`` (:func:`iter_shards`; default size :func:`shard_bytes_for`
    the logs' size and ``workers``) and the problems found while planning."""
    problems: list[str] = []
    target = shard_bytes if shard_bytes else shard_bytes_for(log_bytes(logs), workers)
    return list(iter_shards(logs, target, problems)), problems


def _first_end(fd: int) -> int:
    pos = 0
    while True:
        chunk = os.pread(fd, 65536, pos)
        if not chunk:
            return pos
        nl = chunk.find(b"\n")
        if nl >= 0:
            return pos + nl + 1
        pos += len(chunk)


def _lines(shard: Shard) -> Iterator[tuple[int, bytes]]:
    """(line number in its segment, bytes without the newline) of the shard's lines."""
    fd = _open(Path(shard.log), shard.segment)
    with os.fdopen(fd, "rb") as f:
        f.seek(shard.start)
        pos, number = shard.start, shard.first_line
        while pos < shard.end:
            raw = f.readline()
            if not raw:
                return
            pos += len(raw)
            yield number, raw[:-1] if raw.endswith(b"\n") else raw
            number += 1


def verify_shard(shard: Shard) -> ShardCheck:
    """Check the shard's chain (first pass): lines re-hashed and linked to its anchor."""
    entries = [scan_line(raw, number) for number, raw in _lines(shard)]
    start = shard.anchor
    if not shard.anchored:
        first = next((e for e in entries if e.status is LineStatus.OK), None)
        start = (first.seq - 1, first.prev_hash) if first and first.seq and first.prev_hash else None
    report = check_chain(entries, log=shard.label, start=start)
    where = str(Path(shard.log).with_name(shard.segment))
    problems = tuple(f"{where}: {p}" for p in report.problems)
    last = entries[-1] if entries else None
    link = (last.seq, last.stored_hash) if (last is not None and last.status is LineStatus.OK
                                            and last.seq is not None and last.stored_hash) else None
    decisions = sum(1 for e in entries if e.kind == EnvelopeKind.DECISION.value)
    return ShardCheck(problems, link, decisions)


class ShardStream:
    """One pass over a shard: each line read and parsed once
    (:func:`engine.audit.verify.scan_parse`), its decision envelopes yielded (expanded,
    with their archived policies) only while every line so far is intact and chains to
    the anchor, seq by seq; then :attr:`check`. At the first line that does not (a
    damaged, missing or extra line) it stops yielding, and :attr:`check` is the full
    verification of the shard (:func:`verify_shard`: the verifier's ``check_chain``
    and its problems). :attr:`complete` says whether every envelope was yielded; a
    caller that used some of a shard that turns out not to be intact discards them.
    ``only_policy``: yield only the decisions recorded under that policy name; the others
    are verified all the same and counted in :attr:`skipped` (by name), not expanded."""

    def __init__(self, shard: Shard, only_policy: str | None = None) -> None:
        self.shard = shard
        self.only_policy = only_policy
        self.skipped: dict[str, int] = {}
        self.check: ShardCheck | None = None
        self.complete = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard = self.shard
        archive = PolicyArchive(Path(shard.log), Path(shard.log).parent)
        head = shard.anchor if shard.anchored else None
        if head is None and shard.anchored:
            head = (0, GENESIS_HASH)
        decisions, last = 0, None
        only, skipped = self.only_policy, self.skipped
        for number, raw in _lines(shard):
            entry, env = scan_parse(raw, number)
            if head is None and entry.status is LineStatus.OK and entry.seq and entry.prev_hash:
                head = (entry.seq - 1, entry.prev_hash)  # the shard's chain starts where its first record says
            if (env is None or head is None or entry.seq != head[0] + 1 or entry.prev_hash != head[1]
                    or entry.stored_hash is None):
                self.check = verify_shard(shard)
                return
            head = last = (entry.seq, entry.stored_hash)
            if env["kind"] != EnvelopeKind.DECISION.value:
                continue
            decisions += 1
            if only is not None and (name := record_policy_name(env["record"])) != only:
                skipped[name] = skipped.get(name, 0) + 1  # verified, counted, never expanded
                continue
            env["record"] = expand(env["record"])
            yield with_archived_policy(env, archive)
        self.check = ShardCheck((), last, decisions)
        self.complete = True


def record_policy_name(record: Any) -> str:
    """The policy name a decision record was made under (``"?"`` when it names none)."""
    pol = record.get("policy") if isinstance(record, Mapping) else None
    return str(pol.get("name")) if isinstance(pol, Mapping) else "?"


def read_shard(shard: Shard) -> tuple[ShardCheck, Iterator[dict[str, Any]]]:
    """Verify ``shard`` (first pass), then (second pass, lazily) its decision envelopes,
    each record expanded and carrying its effective policy (from the log's archive when
    the record does not). Nothing is yielded from a shard whose chain fails. (The
    what-if reads a shard once, with :class:`ShardStream`.)"""
    check = verify_shard(shard)

    def envelopes() -> Iterator[dict[str, Any]]:
        if not check.ok:
            return
        archive = PolicyArchive(Path(shard.log), Path(shard.log).parent)
        for _number, raw in _lines(shard):
            env, _why = parse_envelope(raw)
            if env is None or env["kind"] != EnvelopeKind.DECISION.value:
                continue
            env["record"] = expand(env["record"])
            yield with_archived_policy(env, archive)

    return check, envelopes()


def seam_problem(before: Shard, check: ShardCheck, after: Shard) -> str | None:
    """Shard ``after``'s anchor must be the link its predecessor ``before`` verified as
    its last line (``check``): otherwise the log changed between planning and reading."""
    if before.log != after.log or not after.anchored or not check.ok or check.last_link == after.anchor:
        return None
    return (f"{after.label}: the line before this shard was {after.anchor} when the run was planned "
            f"but {check.last_link} when it was verified: the log changed while it was read; run "
            "`ctxbudget audit verify` and the what-if again")
