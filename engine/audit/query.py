"""Which decisions sent X to the model: filter decision records across audit logs.

What goes in: a :class:`Query` (built from ``ctxbudget audit query`` flags) and one or
more :class:`~engine.audit.log.AuditLog`. What comes out: a :class:`QueryResult` with one
:class:`Match` per matching decision (log, seq, id, time, policy, revision, status and
the items that matched), the number of decisions searched, and each log's chain verdict;
:func:`table` and :func:`json_line` lay it out.

How filters combine:

* every flag given must hold (AND); a flag given several times matches any of its values
  (OR), so ``--status fallback --status infeasible`` finds both;
* the item flags (``--source-id``, ``--doc``, ``--reason``) must hold for the *same*
  item: ``--source-id kb#1 --reason over_budget`` finds the decisions that left ``kb#1``
  out for lack of budget;
* ``--source-id`` and ``--doc`` alone ask "which decisions sent it to the model": only
  included items match, unless ``any_decision`` (``--any-decision``) is set or a
  ``--reason`` names the decision (an exclusion reason matches excluded items);
* an infeasible decision sent nothing: its candidates match only with ``any_decision``,
  with decision and reason ``None``;
* ``request_ids`` and ``requested_by`` (``--request-id``, ``--requested-by``; shell
  globs) match the record's ``request_id`` and ``requested_by``: who asked, for which request;
* a document is an item's ``metadata.doc_id`` (set by ``pack`` and the index) or, failing
  that, ``metadata.doc``; ids and documents may be shell globs (``kb#*``);
* ``since``/``until`` are inclusive; a date alone for ``until`` means the end of that day;
  a time without an offset is UTC.

Trust: a matching record is checked before it is shown: its log's hash chain is verified
once (cheap: one pass of hashing), and :func:`~engine.audit.records.check_record` runs on
the matching records only (it reloads their effective policy, so running it on every
record of a large log would cost far more than the query). A match that fails, or sits
on a chain problem, carries its findings and is marked; a log whose chain is not intact
is reported, since a deleted record cannot match anything.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timezone
from typing import Any

from ..errors import UsageError
from .log import AuditLog
from .records import Finding, check_record
from .segments import parse_time as parse_stamp
from .verify import VerifyReport

#: What ``--status`` accepts: the solver statuses of allocated records, and ``infeasible``.
STATUSES = ("optimal", "feasible", "trivial", "heuristic", "fallback", "infeasible")

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_time(text: str, *, flag: str = "--since", end_of_day: bool = False) -> datetime:
    """An ISO 8601 timestamp or date as an aware UTC datetime. A date alone is midnight,
    or with ``end_of_day`` the last microsecond of that day; no offset means UTC.

    Raises:
        UsageError: ``query.bad_time`` naming the flag and the accepted forms.
    """
    raw = text.strip()
    try:
        if _DATE.match(raw):
            day = datetime.fromisoformat(raw).date()
            when = datetime.combine(day, time.max if end_of_day else time.min)
        else:
            when = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1:] in "zZ" and raw else raw)
    except ValueError:
        raise UsageError("query.bad_time",
                         f"{flag} {text!r} is not an ISO 8601 date or timestamp; write e.g. "
                         f"2026-12-01, 2026-12-01T09:30 or 2026-12-01T09:30:00+01:00 (no offset = UTC)",
                         path=f"$.{flag.lstrip('-')}", details={"flag": flag, "value": text}) from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def record_time(record: Mapping[str, Any]) -> datetime | None:
    """A record's ``timestamp`` as an aware datetime, or None when it is missing or bad."""
    return parse_stamp(record.get("timestamp"))


@dataclass(frozen=True, slots=True)
class Query:
    """The filters; an empty tuple or None means "any". See the module docstring."""

    source_ids: tuple[str, ...] = ()
    docs: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    policies: tuple[str, ...] = ()
    revisions: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    any_decision: bool = False
    request_ids: tuple[str, ...] = ()
    requested_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        bad = sorted(set(self.statuses) - set(STATUSES))
        if bad:
            raise UsageError("query.bad_status", f"unknown status {', '.join(map(repr, bad))}; "
                             f"use one of {', '.join(STATUSES)}", path="$.status")
        if self.since and self.until and self.since > self.until:
            raise UsageError("query.bad_range", f"--since {self.since.isoformat()} is after --until "
                             f"{self.until.isoformat()}: nothing can match; swap them", path="$.since")

    @property
    def item_filters(self) -> bool:
        return bool(self.source_ids or self.docs or self.reasons)


def decision_status(record: Mapping[str, Any]) -> str | None:
    """``infeasible`` for an infeasible record, else the solver's status."""
    if record.get("outcome") == "infeasible":
        return "infeasible"
    solver = record.get("solver")
    status = solver.get("status") if isinstance(solver, Mapping) else None
    return status if isinstance(status, str) else None


def _policy(record: Mapping[str, Any]) -> Mapping[str, Any]:
    pol = record.get("policy")
    return pol if isinstance(pol, Mapping) else {}


def item_doc(metadata: Any) -> str | None:
    """The document an item came from: ``metadata.doc_id``, else ``metadata.doc``."""
    if not isinstance(metadata, Mapping):
        return None
    for key in ("doc_id", "doc"):
        value = metadata.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    return None


def decision_items(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each candidate of a decision with what happened to it: ``source_id``, ``doc``,
    ``level``, ``tokens``, ``relevance``, ``decision``, ``reason`` (None for the
    candidates of an infeasible decision). Tolerates damaged records (skips non-objects)."""
    inp = record.get("input")
    rows = inp.get("items") if isinstance(inp, Mapping) else None
    rows = rows if isinstance(rows, list) else None  # a hand-edited record may hold any JSON value here
    # a hand-edited id may be any JSON value: only strings are looked up
    by_id = {r["source_id"]: r for r in rows or () if isinstance(r, Mapping) and isinstance(r.get("source_id"), str)}
    items = record.get("items")
    if record.get("outcome") != "infeasible" and isinstance(items, list):
        out = []
        for it in items:
            if not isinstance(it, Mapping):
                continue
            sid = it.get("source_id")
            row = by_id.get(sid, {}) if isinstance(sid, str) else {}
            # what an item does not repeat (a compact record) is read from its input row
            out.append({"source_id": it.get("source_id"), "doc": item_doc(row.get("metadata")),
                        "level": it.get("level", row.get("level")),
                        "tokens": it.get("tokens", row.get("token_count")),
                        "relevance": it.get("relevance", row.get("relevance_score")),
                        "decision": it.get("decision"), "reason": it.get("reason")})
        return out
    return [{"source_id": r.get("source_id"), "doc": item_doc(r.get("metadata")), "level": r.get("level"),
             "tokens": r.get("token_count"), "relevance": r.get("relevance_score"),
             "decision": None, "reason": None}
            for r in rows or () if isinstance(r, Mapping)]


def _glob(value: Any, patterns: Sequence[str]) -> bool:
    return isinstance(value, str) and any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _item_matches(q: Query, item: Mapping[str, Any]) -> bool:
    if q.source_ids and not _glob(item["source_id"], q.source_ids):
        return False
    if q.docs and not _glob(item["doc"], q.docs):
        return False
    if q.reasons:
        return item["reason"] in q.reasons
    return q.any_decision or item["decision"] == "included"


def request_of(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """Who asked: the record's ``request_id``, ``request_id_generated``, ``requested_by``
    and ``labels`` (absent from records written before they were recorded)."""
    return {k: record[k] for k in ("request_id", "request_id_generated", "requested_by", "labels")
            if k in record}


def match(q: Query, record: Mapping[str, Any]) -> tuple[dict[str, Any], ...] | None:
    """The items of ``record`` that match ``q`` (empty when ``q`` has no item filter), or
    None when the decision does not match."""
    if q.request_ids and not _glob(request_of(record).get("request_id"), q.request_ids):
        return None
    if q.requested_by and not _glob(request_of(record).get("requested_by"), q.requested_by):
        return None
    pol = _policy(record)
    if q.policies and pol.get("name") not in q.policies:
        return None
    if q.revisions and pol.get("revision") not in q.revisions:
        return None
    if q.statuses and decision_status(record) not in q.statuses:
        return None
    if q.since or q.until:
        when = record_time(record)
        if when is None or (q.since and when < q.since) or (q.until and when > q.until):
            return None
    if not q.item_filters:
        return ()
    hits = tuple(it for it in decision_items(record) if _item_matches(q, it))
    return hits or None


@dataclass(frozen=True, slots=True)
class Match:
    """One matching decision: where it is, what it says, and its check findings."""

    log: str
    seq: int | None
    record: Mapping[str, Any]
    items: tuple[dict[str, Any], ...]
    findings: tuple[Finding, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        pol = _policy(self.record)
        req = request_of(self.record)
        return {"log": self.log, "seq": self.seq, "decision_id": self.record.get("decision_id"),
                "timestamp": self.record.get("timestamp"), "request_id": req.get("request_id"),
                "requested_by": req.get("requested_by"), "policy": pol.get("name"),
                "revision": pol.get("revision"), "digest": pol.get("digest"),
                "status": decision_status(self.record),
                "checks": "failed" if self.findings else "ok",
                "failed_checks": [f.to_dict() for f in self.findings],
                "items": [{k: it[k] for k in ("source_id", "doc", "decision", "reason", "tokens")}
                          for it in self.items]}


@dataclass(frozen=True, slots=True)
class LogState:
    """One searched log: its chain verdict, unreadable lines and decisions searched."""

    log: str
    chain: VerifyReport
    unreadable: tuple[tuple[int, str], ...]
    decisions: int

    @property
    def intact(self) -> bool:
        return self.chain.ok and not self.unreadable


@dataclass(frozen=True, slots=True)
class QueryResult:
    matches: tuple[Match, ...]
    logs: tuple[LogState, ...] = field(default=())

    @property
    def searched(self) -> int:
        return sum(s.decisions for s in self.logs)

    @property
    def failed(self) -> int:
        return sum(1 for m in self.matches if m.findings)

    @property
    def trustworthy(self) -> bool:
        """Every log intact and every match passed its checks."""
        return not self.failed and all(s.intact for s in self.logs)

    def summary(self) -> str:
        n = len(self.logs)
        text = f"{len(self.matches)} decisions of {self.searched} matched in {n} log{'s' * (n != 1)}"
        if self.failed:
            text += f"; {self.failed} FAILED their checks (marked !)"
        broken = [s.log for s in self.logs if not s.intact]
        if broken:
            text += (f"; NOT INTACT: {', '.join(broken)} (a deleted or altered record may be missing "
                     "from these results; run `ctxbudget audit verify`)")
        return text


def _chain_findings(chain: VerifyReport, seq: int | None, did: Any) -> tuple[Finding, ...]:
    return tuple(Finding(f"chain.{p.kind.value}", seq, did if isinstance(did, str) else None, "$",
                         f"line {p.line}: {p.message}") for p in chain.problems if p.seq == seq)


def search(q: Query, logs: Iterable[AuditLog]) -> QueryResult:
    """Run ``q`` over ``logs`` in order (file order within each), verifying each log's
    chain and checking the matching records (see the module docstring)."""
    matches: list[Match] = []
    states: list[LogState] = []
    for log in logs:
        chain = log.verify()
        unreadable: list[tuple[int, str]] = []
        count = 0
        for number, env, why in log.scan():
            if env is None:
                unreadable.append((number, why or f"line {number} is unreadable"))
                continue
            if env.get("kind") != "decision":
                continue
            count += 1
            rec = env["record"]
            hits = match(q, rec)
            if hits is None:
                continue
            seq = env.get("seq") if isinstance(env.get("seq"), int) else None
            found = check_record(rec, seq) + _chain_findings(chain, seq, rec.get("decision_id"))
            matches.append(Match(str(log.path), seq, rec, hits, found))
        states.append(LogState(str(log.path), chain, tuple(unreadable), count))
    return QueryResult(tuple(matches), tuple(states))


def _items_cell(m: Match, limit: int = 4) -> str:
    cells = [f"{it['source_id']}:{it['decision'] or '-'}/{it['reason'] or '-'}" for it in m.items[:limit]]
    if len(m.items) > limit:
        cells.append(f"+{len(m.items) - limit} more")
    return " ".join(cells)


def table(result: QueryResult) -> str:
    """The matches as an aligned text table (``!`` marks a record that failed its
    checks), then the summary line."""
    head = ("", "LOG", "SEQ", "TIMESTAMP", "DECISION", "POLICY", "REVISION", "STATUS", "ITEMS")
    rows = [head] + [
        ("!" if m.findings else "", m.log, str(m.seq if m.seq is not None else "-"),
         str(m.record.get("timestamp")), str(m.record.get("decision_id")),
         str(_policy(m.record).get("name")), str(_policy(m.record).get("revision")),
         str(decision_status(m.record)), _items_cell(m))
        for m in result.matches]
    widths = [max(len(r[k]) for r in rows) for k in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows] if result.matches else []
    for m in result.matches:
        for f in m.findings:
            lines.append(f"! {m.log} seq {m.seq}: {f.code} at {f.path}: {f.message}")
    lines.append(result.summary())
    return "\n".join(lines)



def json_line(m: Match) -> str:
    """One match as one JSON Lines line (no newline)."""
    return json.dumps(m.to_dict(), ensure_ascii=False)
