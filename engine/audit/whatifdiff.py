"""The aggregate of a what-if: per product and recorded revision, what a new policy would
change over the logged decisions. Pure: replay results in, mergeable counts out.

A :class:`GroupDiff` counts, for the decisions of one (product, revision): how many were
replayed, unchanged, changed, not replayable or failing their record checks; decisions
newly infeasible (or newly feasible); items gained and lost, by the reason code each has
under the new policy (an item lost to ``over_budget``, gained as ``selected``); tokens
before and after; the solver objective before and after (decisions allocated both
times); and solver outcomes as ``before->after`` status pairs. Groups merge by addition,
so a what-if sharded over any number of workers sums to the same diff; lists (changed
decision ids, examples of errors) are concatenated in shard order, which is log order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .replay import ReplayResult

__all__ = ["ChangedDecision", "GroupDiff", "Observed", "group_key"]

#: Errors kept as examples per group (every one is counted).
ERROR_EXAMPLES = 5
_UNRECORDED = "(unrecorded)"


def group_key(record: Mapping[str, Any]) -> tuple[str, str]:
    """(product, revision) of the policy a record was decided under (the policy's name
    when it names no product)."""
    pol = record.get("policy") if isinstance(record.get("policy"), Mapping) else {}
    assert isinstance(pol, Mapping)
    product = pol.get("product") or pol.get("name") or "?"
    return str(product), str(pol.get("revision") or "?")


@dataclass(slots=True)
class Observed:
    """What the new run's allocation said beyond the replay result (from replay's
    ``observe`` hook): its solver status and objective."""

    status: str | None = None
    objective: int | None = None

    def __call__(self, alloc: Any) -> None:
        self.status = str(alloc.selection.status)
        self.objective = int(alloc.selection.objective)


@dataclass(frozen=True, slots=True)
class ChangedDecision:
    """One decision the new policy changes (a row of the changed-decisions table)."""

    log: str
    seq: int | None
    decision_id: str
    product: str
    revision: str
    outcome_before: str
    outcome_after: str
    status_before: str | None
    status_after: str | None
    items_added: int
    items_removed: int
    tokens_before: int
    tokens_after: int
    objective_before: int | None
    objective_after: int | None
    fields: str  # the record paths that differ, space-separated

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _status_before(record: Mapping[str, Any]) -> str:
    if record.get("outcome") == "infeasible":
        return "infeasible"
    solver = record.get("solver")
    return str(solver.get("status")) if isinstance(solver, Mapping) else "?"


def _objective_before(record: Mapping[str, Any]) -> int | None:
    solver = record.get("solver")
    value = solver.get("objective") if isinstance(solver, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(slots=True)
class GroupDiff:
    """Counts for one (product, revision); see the module docstring."""

    decisions: int = 0
    unchanged: int = 0
    changed: int = 0
    errors: int = 0
    failed_checks: int = 0
    newly_infeasible: int = 0
    newly_feasible: int = 0
    items_gained: int = 0
    items_lost: int = 0
    gained_by_reason: Counter[str] = field(default_factory=Counter)
    lost_by_reason: Counter[str] = field(default_factory=Counter)
    tokens_before: int = 0
    tokens_after: int = 0
    more_tokens: int = 0
    fewer_tokens: int = 0
    objective_compared: int = 0
    objective_before: int = 0
    objective_after: int = 0
    objective_lower: int = 0
    objective_higher: int = 0
    solver_outcomes: Counter[str] = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)

    def add_failed(self) -> None:
        """A record that fails its checks: counted, never used as a 'before'."""
        self.decisions += 1
        self.failed_checks += 1

    def add(self, record: Mapping[str, Any], r: ReplayResult, seen: Observed,
            log: str) -> ChangedDecision | None:
        """Count one replayed decision; the row for it when the new policy changes it."""
        self.decisions += 1
        before = _status_before(record)
        if r.error is not None:
            self.errors += 1
            self.solver_outcomes[f"{before}->error"] += 1
            if len(self.error_examples) < ERROR_EXAMPLES:
                self.error_examples.append(f"{r.decision_id}: {r.error}")
            return None
        after = "infeasible" if r.outcome == "infeasible" else (seen.status or "?")
        self.solver_outcomes[f"{before}->{after}"] += 1
        was = str(record.get("outcome"))
        self.newly_infeasible += was != "infeasible" and r.outcome == "infeasible"
        self.newly_feasible += was == "infeasible" and r.outcome != "infeasible"
        now = {sid: new for sid, _old, new in r.reason_changes}
        for sid in r.added:
            self.gained_by_reason[now.get(sid, _UNRECORDED)] += 1
        for sid in r.removed:
            self.lost_by_reason[now.get(sid, "infeasible" if r.outcome == "infeasible" else _UNRECORDED)] += 1
        self.items_gained += len(r.added)
        self.items_lost += len(r.removed)
        self.tokens_before += r.tokens_before
        self.tokens_after += r.tokens_after
        self.more_tokens += r.tokens_after > r.tokens_before
        self.fewer_tokens += r.tokens_after < r.tokens_before
        obj0 = _objective_before(record)
        obj1 = seen.objective if r.outcome != "infeasible" else None
        if obj0 is not None and obj1 is not None:
            self.objective_compared += 1
            self.objective_before += obj0
            self.objective_after += obj1
            self.objective_lower += obj1 < obj0
            self.objective_higher += obj1 > obj0
        if not r.differences:
            self.unchanged += 1
            return None
        self.changed += 1
        product, revision = group_key(record)
        return ChangedDecision(log, r.seq, r.decision_id, product, revision, was, r.outcome, before, after,
                               len(r.added), len(r.removed), r.tokens_before, r.tokens_after, obj0, obj1,
                               " ".join(dict.fromkeys(d.path for d in r.differences)))

    def merge(self, other: GroupDiff) -> None:
        """Add ``other``'s counts (its examples after this group's, up to the cap)."""
        for f in fields(self):
            name = f.name
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, Counter):
                mine.update(theirs)
            elif isinstance(mine, list):
                mine.extend(theirs[:max(0, ERROR_EXAMPLES - len(mine))])
            else:
                setattr(self, name, mine + theirs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions, "unchanged": self.unchanged, "changed": self.changed,
            "errors": self.errors, "failed_checks": self.failed_checks,
            "newly_infeasible": self.newly_infeasible, "newly_feasible": self.newly_feasible,
            "items": {"gained": self.items_gained, "lost": self.items_lost,
                      "gained_by_reason": dict(sorted(self.gained_by_reason.items())),
                      "lost_by_reason": dict(sorted(self.lost_by_reason.items()))},
            "tokens": {"before": self.tokens_before, "after": self.tokens_after,
                       "delta": self.tokens_after - self.tokens_before,
                       "decisions_with_more": self.more_tokens, "decisions_with_fewer": self.fewer_tokens},
            "objective": {"decisions_compared": self.objective_compared, "before": self.objective_before,
                          "after": self.objective_after, "delta": self.objective_after - self.objective_before,
                          "decisions_lower": self.objective_lower, "decisions_higher": self.objective_higher},
            "solver_outcomes": dict(sorted(self.solver_outcomes.items())),
            "error_examples": list(self.error_examples),
        }
