"""Replay a recorded decision: re-solve it from the recorded items and policy.

What goes in: an audit record (and optionally another Policy, for a what-if). What comes
out: a :class:`ReplayResult` saying whether the new allocation is identical and, if not,
which items changed and how many tokens moved.

The record holds no content (unless the policy stored it), so replay works from the
recorded token counts: an item counted by us is replayed with its recorded rendered
count minus the recorded template overhead (a what-if policy with another template adds
its own overhead to that). Everything else — scores, levels, parents, metadata, the
effective policy — is in the record verbatim.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..allocate import allocate
from ..candidates import make_candidate
from ..errors import EngineError, InfeasibleError
from ..policy import Policy
from ..problem import template_overhead
from ..tokens import get_tokenizer
from .lineformat import EnvelopeKind


@dataclass(frozen=True, slots=True)
class ReplayResult:
    decision_id: str
    identical: bool
    outcome: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    reason_changes: tuple[tuple[str, str, str], ...]
    tokens_before: int
    tokens_after: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"decision_id": self.decision_id, "identical": self.identical, "outcome": self.outcome,
                "added": list(self.added), "removed": list(self.removed),
                "reason_changes": [list(r) for r in self.reason_changes],
                "tokens_before": self.tokens_before, "tokens_after": self.tokens_after,
                "tokens_moved": self.tokens_after - self.tokens_before, "error": self.error}

    def summary(self) -> str:
        if self.error:
            return f"{self.decision_id}: {self.outcome}: {self.error}"
        if self.identical:
            return f"{self.decision_id}: identical ({self.tokens_after:,} tokens)"
        return (f"{self.decision_id}: different: +{len(self.added)} -{len(self.removed)} items "
                f"({', '.join(['+' + a for a in self.added] + ['-' + r for r in self.removed])}), "
                f"tokens {self.tokens_before:,} -> {self.tokens_after:,}")


def _candidates(record: Mapping[str, Any]) -> list[Any]:
    template = (record.get("budget") or {}).get("template", "{content}")
    tok = get_tokenizer(record["tokenizer"]["name"])
    tokens = {it["source_id"]: it["tokens"] for it in record.get("items", [])}
    out = []
    for k, row in enumerate(record["input"]["items"]):
        cand = make_candidate(
            k, source_id=row["source_id"], content=row.get("content", ""),
            relevance_score=row["relevance_score"], token_count=row["token_count"], level=row["level"],
            metadata=row.get("metadata") or {}, parent_id=row.get("parent_id"))
        if cand.token_count is None:
            # counted by us from the rendered text: take the recorded count back apart
            overhead = 0 if template == "{content}" else tok.count(template_overhead(template, cand))
            cand = replace(cand, token_count=max(0, tokens.get(cand.source_id, 0) - overhead))
        out.append(cand)
    return out


def replay(record: Mapping[str, Any], policy: Policy | None = None) -> ReplayResult:
    """Re-solve ``record`` under its own policy, or under ``policy`` (what-if)."""
    did = record.get("decision_id", "?")
    pol = policy or Policy.from_mapping(record["policy"]["effective"])
    before_in = [it["source_id"] for it in record.get("items", []) if it["decision"] == "included"]
    before_tokens = sum(it["tokens"] for it in record.get("items", []) if it["decision"] == "included")
    try:
        alloc = allocate(_candidates(record), pol)
    except InfeasibleError as exc:
        same = record.get("outcome") == "infeasible"
        return ReplayResult(did, same, "infeasible", (), tuple(before_in), (), before_tokens, 0,
                            None if same else exc.message)
    except EngineError as exc:
        return ReplayResult(did, False, "error", (), (), (), before_tokens, 0, str(exc))
    after_in = [d.source_id for d in alloc.included]
    after_tokens = sum(d.tokens for d in alloc.included)
    old = {it["source_id"]: it["reason"] for it in record.get("items", [])}
    changes = tuple((d.source_id, old.get(d.source_id, "?"), d.reason.code.value)
                    for d in alloc.decisions if old.get(d.source_id) != d.reason.code.value)
    added = tuple(sorted(set(after_in) - set(before_in)))
    removed = tuple(sorted(set(before_in) - set(after_in)))
    identical = (record.get("outcome") == "allocated" and not added and not removed and not changes)
    return ReplayResult(did, identical, "allocated", added, removed, changes, before_tokens, after_tokens)


def replay_log(log: Iterable[Mapping[str, Any]], policy: Policy | None = None) -> list[ReplayResult]:
    """Re-solve every decision record of ``log`` (an :class:`~engine.audit.log.AuditLog`
    or its envelopes), under its own policy or ``policy`` (a what-if); one result per
    decision, in log order. (It lives here, not on ``AuditLog``: the log writes and reads
    records and never imports the solver.)"""
    return [replay(env["record"], policy) for env in log if env.get("kind") == EnvelopeKind.DECISION.value]
