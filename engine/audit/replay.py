"""Replay a recorded decision: check the record, re-solve it, compare everything.

What goes in: an audit record (and optionally another Policy, for a what-if). What comes
out: a :class:`ReplayResult`: the record's own check findings
(:mod:`engine.audit.records`), and every difference between the record and the new run:
outcome, solver status, strategy, included items, reasons, per-item tokens, context
order, budgeted tokens, and — where content is stored — the recounted context tokens,
its SHA-256 and the BPE repairs.

Counts are never taken from the record when the content is there: stored content is
counted again in the policy's tokenizer (a caller's own ``token_count`` is passed on as
the caller gave it). Without content, an item counted by us is replayed with its
recorded rendered count minus the template overhead, and what needs the text — the
assembled count, its digest, a BPE repair — is taken as recorded and said so in
``notes`` (the totals are still checked for consistency by the record checks).

Under its own policy, a decision replays as it ran: an infeasible one must be infeasible
again with the same conflicting rules; a fallback re-runs the heuristic that answered
(the solver failure that caused it — a crash, a time-out — is not reproducible, and
the record says which heuristic it was).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..allocate import allocate
from ..allocation import Allocation, Decisions
from ..candbulk import bulk_candidates
from ..candidates import from_mappings, make_candidate
from ..canonical import sha256_hex
from ..counts import policy_tokenizer
from ..errors import EngineError, InfeasibleError
from ..policy import BudgetStrategy, Policy
from ..problem import template_overhead
from .lineformat import EnvelopeKind
from .records import Finding, check_record

_REPAIR = "dropped_in_repair"


@dataclass(frozen=True, slots=True)
class Difference:
    """One field that came out otherwise: its JSON path in the record, the recorded
    value and the replayed one."""

    path: str
    before: Any
    after: Any

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "before": self.before, "after": self.after}


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """``identical``: the record passed its checks and the replay reproduced it in every
    compared field. ``error``: the record could not be replayed (the other fields are
    then empty); ``findings``: what the record checks found."""

    decision_id: str
    identical: bool
    outcome: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    reason_changes: tuple[tuple[str, str, str], ...]
    tokens_before: int
    tokens_after: int
    error: str | None = None
    differences: tuple[Difference, ...] = ()
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()
    seq: int | None = None

    @property
    def failed_checks(self) -> bool:
        return bool(self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"decision_id": self.decision_id, "seq": self.seq, "identical": self.identical,
                "outcome": self.outcome, "added": list(self.added), "removed": list(self.removed),
                "reason_changes": [list(r) for r in self.reason_changes],
                "tokens_before": self.tokens_before, "tokens_after": self.tokens_after,
                "tokens_moved": self.tokens_after - self.tokens_before, "error": self.error,
                "differences": [d.to_dict() for d in self.differences],
                "findings": [f.to_dict() for f in self.findings], "notes": list(self.notes)}

    def summary(self) -> str:
        banner = (f" [FAILED CHECKS: {', '.join(sorted({f.code for f in self.findings}))}]"
                  if self.findings else "")
        if self.error:
            return f"{self.decision_id}: {self.outcome}: {self.error}{banner}"
        note = f" ({'; '.join(self.notes)})" if self.notes else ""
        if self.identical:
            return f"{self.decision_id}: identical ({self.tokens_after:,} tokens){note}"
        if not self.differences:
            return f"{self.decision_id}: replays the same, but the record fails its checks{banner}"
        items = ", ".join(['+' + a for a in self.added] + ['-' + r for r in self.removed])
        fields = ", ".join(dict.fromkeys(d.path for d in self.differences))
        return (f"{self.decision_id}: different: +{len(self.added)} -{len(self.removed)} items"
                + (f" ({items})" if items else "")
                + f", tokens {self.tokens_before:,} -> {self.tokens_after:,}; fields: {fields}"
                + banner + note)


def _stored(record: Mapping[str, Any]) -> bool:
    rows = record["input"]["items"]
    return bool(rows) and all("content" in r for r in rows)


def _candidates(record: Mapping[str, Any], policy: Policy, stored: bool) -> list[Any]:
    """The recorded inputs as candidates: stored content is recounted (the caller's own
    count, if it gave one, is passed on); otherwise our recorded rendered count is taken
    back apart into a content count."""
    template = policy.budget.template
    tok = policy_tokenizer(policy)
    if record.get("outcome") == "infeasible":
        counted = (record.get("infeasibility") or {}).get("item_tokens")
        tokens = dict(zip((r["source_id"] for r in record["input"]["items"]), counted or []))
    else:
        tokens = {it["source_id"]: it["tokens"] for it in record.get("items", [])}
    rows = record["input"]["items"]
    if template == "{content}" and not stored:  # no overhead: each count is the recorded one
        given = []
        for row in rows:
            count = row["token_count"]
            if count is None:
                if row["source_id"] not in tokens:
                    raise _Unreplayable(f"the token count of {row['source_id']!r} is not recorded and its "
                                        "content is not stored; set audit.store_content to make such "
                                        "decisions replayable")
                count = max(0, tokens[row["source_id"]])
            given.append(({"source_id": row["source_id"], "content": row.get("content", ""),
                           "relevance_score": row["relevance_score"], "token_count": count, "level": row["level"],
                           "metadata": row.get("metadata") or {}, "parent_id": row.get("parent_id")}, None))
        return list(from_mappings(given))  # in bulk (engine.candidates)
    if not stored:
        bulk = _bulk_candidates(rows, tokens, template, tok)
        if bulk is not None:
            return bulk
    out = []
    for k, row in enumerate(rows):
        cand = make_candidate(
            k, source_id=row["source_id"], content=row.get("content", ""),
            relevance_score=row["relevance_score"], token_count=row["token_count"], level=row["level"],
            metadata=row.get("metadata") or {}, parent_id=row.get("parent_id"))
        if cand.token_count is None and not stored:
            if cand.source_id not in tokens:
                raise _Unreplayable(f"the token count of {cand.source_id!r} is not recorded and its "
                                    "content is not stored; set audit.store_content to make such "
                                    "decisions replayable")
            overhead = 0 if template == "{content}" else tok.count(template_overhead(template, cand))
            cand = replace(cand, token_count=max(0, tokens[cand.source_id] - overhead))
        out.append(cand)
    return out


def _bulk_candidates(rows: list[Any], tokens: Mapping[str, int], template: str, tok: Any) -> list[Any] | None:
    """The candidates of a content-less decision under a template with an overhead, in
    bulk (:func:`engine.candbulk.bulk_candidates`): each recorded rendered count minus
    the template rendered without content (``counts.template_overhead``: the item's id
    and level), counted in one call. None — the item-by-item route decides, with its
    errors in its order — when a row is not plain (an id or level not a string, a count
    missing from the record) or the bulk check finds something to report."""
    try:
        sids = [r["source_id"] for r in rows]
        levels = [r["level"] for r in rows]
        given = [r["token_count"] for r in rows]
        if not set(map(type, sids)) | set(map(type, levels)) <= {str}:
            return None
        missing = [s for s, c in zip(sids, given) if c is None]
        if any(s not in tokens for s in missing):
            return None
        if missing:
            need = [(k, template.format(source_id=s, content="", level=lv))
                    for k, (s, lv, c) in enumerate(zip(sids, levels, given)) if c is None]
            overheads = tok.count_many([text for _k, text in need])
            for (k, _text), overhead in zip(need, overheads):
                given[k] = max(0, tokens[sids[k]] - overhead)
        cands = bulk_candidates(sids, [r.get("content", "") for r in rows], [r["relevance_score"] for r in rows],
                                given, levels, [r.get("metadata") or {} for r in rows],
                                [r.get("parent_id") for r in rows], None)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None  # a malformed row: the item-by-item route says which, as it always has
    return list(cands) if cands is not None else None


class _Unreplayable(Exception):
    pass


def _core_paths(core: Any) -> list[str]:
    return sorted(str(c.get("path")) for c in core or [] if isinstance(c, Mapping))


def _result(did: str, seq: int | None, findings: tuple[Finding, ...], outcome: str,
            diffs: list[Difference], before_in: list[str], after_in: list[str],
            changes: tuple[tuple[str, str, str], ...], tokens: tuple[int, int],
            notes: list[str]) -> ReplayResult:
    added = tuple(sorted(set(after_in) - set(before_in)))
    removed = tuple(sorted(set(before_in) - set(after_in)))
    return ReplayResult(did, not diffs and not findings, outcome, added, removed, changes,
                        tokens[0], tokens[1], None, tuple(diffs), findings, tuple(notes), seq)


def _compare(record: Mapping[str, Any], alloc: Allocation, stored: bool, own: bool,
             diffs: list[Difference], notes: list[str]) -> tuple[list[str], list[str],
                                                                  tuple[tuple[str, str, str], ...], int, int]:
    items = record["items"]
    # Without content a recorded BPE repair cannot be recounted: compare with the
    # selection before it (the repaired items back in), and say so.
    repaired = set() if stored or not own else {it["source_id"] for it in items if it["reason"] == _REPAIR}
    if repaired:
        notes.append(f"{len(repaired)} BPE repair(s) taken as recorded: content not stored, "
                     "the assembled text cannot be recounted")
    decisions = alloc.decisions
    # the new decisions as columns (no decision object is built but for its reason)
    ids = decisions.source_ids if isinstance(decisions, Decisions) else [d.source_id for d in decisions]
    toks = decisions.tokens if isinstance(decisions, Decisions) else [d.tokens for d in decisions]
    at = {sid: k for k, sid in enumerate(ids)}  # the last of a repeated id, as a dict of decisions keeps
    reason_of = decisions.reason_of if isinstance(decisions, Decisions) else (lambda k: decisions[k].reason)
    before_in = [it["source_id"] for it in items if it["decision"] == "included"]
    after_in = [ids[i] for i in alloc.context_order if ids[i] not in repaired]
    changes = tuple((sid, it["reason"], code) for it in items
                    if (k := at.get(sid := it["source_id"])) is not None and sid not in repaired
                    and it["reason"] != (code := reason_of(k).code.value))
    if set(before_in) != set(after_in):
        diffs.append(Difference("$.items[*].decision", sorted(before_in), sorted(after_in)))
    if changes:
        diffs.append(Difference("$.items[*].reason", {c[0]: c[1] for c in changes},
                                {c[0]: c[2] for c in changes}))
    moved = {sid: (it["tokens"], toks[k]) for it in items
             if (k := at.get(sid := it["source_id"])) is not None and it["tokens"] != toks[k]}
    if moved:
        diffs.append(Difference("$.items[*].tokens", {k: v[0] for k, v in moved.items()},
                                {k: v[1] for k, v in moved.items()}))
    sv, st = record["solver"], record["strategy"]
    status = alloc.selection.status
    if own and sv["status"] == "fallback" and alloc.strategy_used.value == st["used"]:
        status = "fallback"  # the heuristic that answered the recorded solver failure
    if sv["status"] != status:
        diffs.append(Difference("$.solver.status", sv["status"], status))
    if st["used"] != alloc.strategy_used.value:
        diffs.append(Difference("$.strategy.used", st["used"], alloc.strategy_used.value))
    order = after_in  # the context order, the repaired items left out
    if list(record["context"]["order"]) != order:
        diffs.append(Difference("$.context.order", list(record["context"]["order"]), order))
    sep = alloc.accounting.separator_tokens
    kept = [toks[at[s]] for s in after_in]
    budgeted = (sum(kept) + sep * (len(kept) - 1)) if kept else 0
    if record["budget"]["budgeted_tokens"] != budgeted:
        diffs.append(Difference("$.budget.budgeted_tokens", record["budget"]["budgeted_tokens"], budgeted))
    if stored:
        ctx = record["context"]
        if ctx["tokens"] != alloc.context_tokens:
            diffs.append(Difference("$.context.tokens", ctx["tokens"], alloc.context_tokens))
        if ctx["sha256"] != sha256_hex(alloc.context):
            diffs.append(Difference("$.context.sha256", ctx["sha256"], sha256_hex(alloc.context)))
        repairs = [dict(r) for r in alloc.repairs]
        if list(record.get("repairs", [])) != repairs:
            diffs.append(Difference("$.repairs", record.get("repairs", []), repairs))
    else:
        notes.append("context tokens and digest not recounted: content not stored")
    before_tokens = sum(it["tokens"] for it in items if it["decision"] == "included")
    return before_in, after_in, changes, before_tokens, sum(kept)


def replay(record: Mapping[str, Any], policy: Policy | None = None, *, seq: int | None = None,
           findings: tuple[Finding, ...] | None = None,
           observe: Callable[[Allocation], None] | None = None) -> ReplayResult:
    """Check ``record`` (unless its ``findings`` are passed in) and re-solve it under its
    own policy, or under ``policy`` (a what-if: then differences are expected and the
    record's fallback is not re-run). Never raises for a bad record: it comes back with
    ``error`` (and ``findings``). ``observe`` is called with the new allocation, when
    there is one (the what-if aggregate reads its solver status and objective)."""
    did = str(record.get("decision_id", "?")) if isinstance(record, Mapping) else "?"
    findings = check_record(record, seq) if findings is None else findings
    if any(f.code in ("record.malformed", "record.policy_invalid") for f in findings):
        return ReplayResult(did, False, "error", (), (), (), 0, 0,
                            "the record cannot be replayed: " + findings[0].message,
                            findings=findings, seq=seq)
    try:
        return _replay(record, policy, did, seq, findings, observe)
    except EngineError as exc:
        return ReplayResult(did, False, "error", (), (), (), 0, 0, f"{exc.code}: {exc.message}",
                            findings=findings, seq=seq)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        # a field the record checks do not cover is missing or mistyped: this record only
        return ReplayResult(did, False, "error", (), (), (), 0, 0,
                            f"the record cannot be replayed ({type(exc).__name__}: {exc}); it was "
                            "hand-edited or damaged", findings=findings, seq=seq)


def _replay(record: Mapping[str, Any], policy: Policy | None, did: str, seq: int | None,
            findings: tuple[Finding, ...],
            observe: Callable[[Allocation], None] | None = None) -> ReplayResult:
    own = policy is None
    diffs: list[Difference] = []
    notes: list[str] = []
    try:
        pol = policy or Policy.from_record(record["policy"]["effective"], file=record["policy"].get("file"))
        stored = _stored(record)
        if pol.duplicates is not None and not stored:
            raise _Unreplayable("the policy's duplicates rule compares the items' texts and the content "
                                "is not stored; set audit.store_content to make such decisions replayable")
        cands = _candidates(record, pol, stored)
        # the strategy the call asked for (a per-call override is not in the policy)
        strategy = BudgetStrategy(record["strategy"]["requested"]) if own else None
        if own and record.get("outcome") == "allocated" and record["solver"]["status"] == "fallback":
            strategy = BudgetStrategy(record["strategy"]["used"])
            notes.append(f"fallback re-run with {strategy.value} (the recorded solver failure: "
                         f"{record['strategy'].get('fallback_reason')})")
        alloc = allocate(cands, pol, strategy=strategy)
        if observe is not None:
            observe(alloc)
    except _Unreplayable as exc:
        return ReplayResult(did, False, "error", (), (), (), 0, 0, str(exc), findings=findings, seq=seq)
    except InfeasibleError as exc:
        before_in = [it["source_id"] for it in record.get("items", []) if it["decision"] == "included"]
        before_tokens = sum(it["tokens"] for it in record.get("items", []) if it["decision"] == "included")
        if record.get("outcome") != "infeasible":
            diffs.append(Difference("$.outcome", record.get("outcome"), "infeasible"))
        else:
            core_before = _core_paths((record.get("infeasibility") or {}).get("core"))
            core_after = _core_paths(exc.details.get("core"))
            if core_before != core_after:
                diffs.append(Difference("$.infeasibility.core", core_before, core_after))
        return _result(did, seq, findings, "infeasible", diffs, before_in, [], (),
                       (before_tokens, 0), notes)
    if record.get("outcome") != "allocated":
        diffs.append(Difference("$.outcome", record.get("outcome"), "allocated"))
        after_in = [d.source_id for d in alloc.included]
        return _result(did, seq, findings, "allocated", diffs, [], after_in, (),
                       (0, sum(d.tokens for d in alloc.included)), notes)
    before_in, after_in, changes, t0, t1 = _compare(record, alloc, stored, own, diffs, notes)
    return _result(did, seq, findings, "allocated", diffs, before_in, after_in, changes, (t0, t1), notes)


def replay_envelope(env: Mapping[str, Any], policy: Policy | None = None, *,
                    findings: tuple[Finding, ...] | None = None) -> ReplayResult:
    """:func:`replay` of one log envelope (its ``seq`` goes into the result)."""
    seq = env.get("seq") if isinstance(env.get("seq"), int) else None
    rec = env.get("record")
    if not isinstance(rec, Mapping):
        return ReplayResult("?", False, "error", (), (), (), 0, 0, "the envelope holds no record", seq=seq)
    return replay(rec, policy, seq=seq, findings=findings)


def replay_log(log: Iterable[Mapping[str, Any]], policy: Policy | None = None) -> list[ReplayResult]:
    """Re-solve every decision record of ``log`` (an :class:`~engine.audit.log.AuditLog`
    or its envelopes), under its own policy or ``policy`` (a what-if); one result per
    decision, in log order. (It lives here, not on ``AuditLog``: the log writes and reads
    records and never imports the solver.)"""
    return [replay_envelope(env, policy) for env in log if env.get("kind") == EnvelopeKind.DECISION.value]


@dataclass(frozen=True, slots=True)
class DiffSummary:
    """A replay run in numbers: decisions replayed, identical, changed, failing their
    checks, not replayable; items added and removed over all decisions; tokens moved."""

    decisions: int
    identical: int
    changed: int
    failed_checks: int
    errors: int
    items_added: int
    items_removed: int
    tokens_before: int
    tokens_after: int

    @classmethod
    def of(cls, results: Iterable[ReplayResult]) -> DiffSummary:
        rs = list(results)
        return cls(len(rs), sum(r.identical for r in rs),
                   sum(1 for r in rs if r.error is None and r.differences),
                   sum(r.failed_checks for r in rs), sum(r.error is not None for r in rs),
                   sum(len(r.added) for r in rs), sum(len(r.removed) for r in rs),
                   sum(r.tokens_before for r in rs), sum(r.tokens_after for r in rs))

    def to_dict(self) -> dict[str, int]:
        return {"decisions": self.decisions, "identical": self.identical, "changed": self.changed,
                "failed_checks": self.failed_checks, "errors": self.errors,
                "items_added": self.items_added, "items_removed": self.items_removed,
                "tokens_before": self.tokens_before, "tokens_after": self.tokens_after,
                "tokens_delta": self.tokens_after - self.tokens_before}

    def text(self) -> str:
        return (f"{self.decisions} decisions replayed: {self.identical} identical, {self.changed} changed, "
                f"{self.failed_checks} failing their checks, {self.errors} not replayable; items "
                f"+{self.items_added} -{self.items_removed}; tokens {self.tokens_before:,} -> "
                f"{self.tokens_after:,} ({self.tokens_after - self.tokens_before:+,})")
