"""(Selection, Problem) → Allocation: one decision and one reason per candidate, the
assembled context recounted with the real tokenizer, and a report per rule.

Assembly: the chosen items are ordered (relevance, document order, or
lost-in-the-middle), rendered with the template and joined with the separator. The text
is counted again; if BPE merges across item boundaries pushed it over the budget, the
least valuable non-pinned item is dropped and the text recounted, until it fits. Every
drop is recorded (reason ``dropped_in_repair``) — never silent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InfeasibleError
from .policy import BudgetStrategy, Ordering
from .problem import Chain, LinearRule, Problem, render
from .reasons import Reason, ReasonCode
from .strategies import Selection
from .strategies.greedy import cap_reason
from .tokens import get_tokenizer


@dataclass(frozen=True, slots=True)
class ItemDecision:
    """The fate of one candidate."""

    index: int
    source_id: str
    level: str
    tokens: int
    relevance: float
    value: int
    sha256: str
    reason: Reason

    @property
    def included(self) -> bool:
        return self.reason.code.includes


@dataclass(frozen=True, slots=True)
class RuleReport:
    """A hard rule after the allocation: its total, bounds, slack and whether it bound."""

    key: str
    path: str
    label: str
    total: int
    lower: int | None
    upper: int | None
    slack: int
    binding: bool

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "path": self.path, "label": self.label, "total": self.total,
                "lower": self.lower, "upper": self.upper, "slack": self.slack,
                "binding": self.binding}


@dataclass(frozen=True, slots=True)
class Allocation:
    """The complete result of one allocation (immutable)."""

    decisions: tuple[ItemDecision, ...]
    context_order: tuple[int, ...]
    context: str
    context_tokens: int
    limit_tokens: int
    strategy_requested: BudgetStrategy
    strategy_used: BudgetStrategy
    fallback_reason: str | None
    selection: Selection
    unmet: tuple[str, ...]
    repairs: tuple[Mapping[str, Any], ...]
    rules: tuple[RuleReport, ...]
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def included(self) -> tuple[ItemDecision, ...]:
        """Included items in context order."""
        return tuple(self.decisions[i] for i in self.context_order)

    @property
    def excluded(self) -> tuple[ItemDecision, ...]:
        return tuple(d for d in self.decisions if not d.included)


def _order(problem: Problem, chosen: set[int]) -> list[int]:
    rel = [i for i in problem.order if i in chosen]
    if problem.ordering is Ordering.DOCUMENT:
        c = problem.candidates

        def key(i: int) -> tuple[str, int, int]:
            pos = c[i].metadata.get("order")
            return (c[i].doc_id or "", pos if isinstance(pos, int) else i, i)

        return sorted(rel, key=key)
    if problem.ordering is Ordering.LOST_IN_THE_MIDDLE:
        # Most relevant at both ends, least relevant in the middle (Liu et al., 2023).
        front, back = rel[0::2], rel[1::2]
        return front + back[::-1]
    return rel


def assemble(problem: Problem, order: list[int]) -> str:
    return problem.separator.join(render(problem.template, problem.candidates[i]) for i in order)


class _WhyNot:
    """Reasons for active items a solver left out: the first rule each would break.

    Built once per allocation: every cap's member->coefficient map and its total over
    ``chosen`` are computed once, so a reason costs O(rules the item is in) instead of
    O(n) per item. Reasons are frozen values: one per (rule, amount needed) is shared."""

    def __init__(self, problem: Problem, chosen: set[int]) -> None:
        self.problem = problem
        self.chosen = chosen
        self.caps: list[tuple[LinearRule, dict[int, int], int]] = []
        for rule in problem.rules:
            if rule.upper is None:
                continue
            coefs = rule.coefs if rule.coefs is not None else (1,) * len(rule.members)
            self.caps.append((rule, dict(zip(rule.members, coefs)), rule.total(chosen)))
        self.memo: dict[tuple[int, int], Reason] = {}
        self.chains_of: dict[int, list[Chain]] = {}
        for ch in problem.chains:
            for m in ch.members:
                self.chains_of.setdefault(m, []).append(ch)

    def __call__(self, i: int) -> Reason:
        problem, chosen = self.problem, self.chosen
        for k, (rule, coef_of, used) in enumerate(self.caps):
            coef = coef_of.get(i)
            if coef is not None and used + coef > rule.upper:  # type: ignore[operator]
                reason = self.memo.get((k, coef))
                if reason is None:
                    reason = self.memo[(k, coef)] = cap_reason(rule, used, coef, problem)
                return reason
        for ch in self.chains_of.get(i, ()):
            other = next((m for m in ch.members if m in chosen and m != i), None)
            if other is not None:
                oid = problem.candidates[other].source_id
                return Reason(ReasonCode.HIERARCHY, f"{oid!r} is included and is its ancestor or descendant",
                              ch.path, {"conflicts_with": oid})
        if problem.values[i] == 0:
            return _ZERO
        return _NOT_SELECTED


_ZERO = Reason(ReasonCode.ZERO_VALUE, "its objective value is 0; it adds tokens and no relevance")
_NOT_SELECTED = Reason(ReasonCode.NOT_SELECTED, "a higher-value combination was chosen under the rules")


def _report(rule: LinearRule, chosen: set[int], problem: Problem) -> RuleReport:
    total = rule.total(chosen)
    if rule.upper is not None:
        slack = rule.upper - total
        coefs = rule.coefs or [1] * len(rule.members)
        binding = slack == 0 or any(
            total + c > rule.upper for m, c in zip(rule.members, coefs) if m not in chosen)
    else:
        slack = total - (rule.lower or 0)
        binding = slack == 0
    upper = rule.upper
    if rule.key == "budget":
        # Report in real tokens, not weight units: k items carry k separators in the
        # model while the context has k - 1, and the limit is the policy's own number.
        total = max(0, total - problem.separator_tokens)
        upper = problem.limit_tokens
        slack = upper - total
    return RuleReport(rule.key, rule.path, rule.label, total, rule.lower, upper, slack, binding)


def build(problem: Problem, selection: Selection, requested: BudgetStrategy,
          fallback_reason: str | None) -> Allocation:
    """Turn a selection into the final allocation (assembly, recount, repair, reasons)."""
    chosen = set(selection.chosen)
    tok = get_tokenizer(problem.tokenizer)
    order = _order(problem, chosen)
    text = assemble(problem, order)
    count = tok.count(text)
    repairs: list[dict[str, Any]] = []
    dropped: dict[int, Reason] = {}
    # Repair what we counted ourselves. Caller-supplied counts are the caller's contract
    # (they may come from the caller's own model tokenizer, which we do not have): the
    # budget holds on them and ``context_tokens`` reports our recount beside them.
    while problem.own_counts and count > problem.limit_tokens:
        victims = [i for i in order if i not in problem.pinned]
        if not victims:
            core = [{"rule": p.label, "key": p.key, "path": p.path,
                     "location": str(p.location) if p.location else None} for p in problem.pins]
            budget = problem.budget_rule
            core.append({"rule": budget.label, "key": budget.key, "path": budget.path,
                         "location": str(budget.location) if budget.location else None})
            raise InfeasibleError(
                "allocation.infeasible",
                f"the pinned items alone assemble to {count:,} tokens, over the budget of "
                f"{problem.limit_tokens:,}; unpin one or raise the budget",
                path="$.spec.pinned", details={"core": core, "minimal": False})
        v = min(victims, key=lambda i: (problem.values[i], -problem.tokens[i], -i))
        before = count
        order.remove(v)
        chosen.discard(v)
        text = assemble(problem, order)
        count = tok.count(text)
        repairs.append({"dropped": problem.candidates[v].source_id, "tokens_before": before,
                        "tokens_after": count})
        dropped[v] = Reason(ReasonCode.REPAIR,
                            f"the assembled text counted {before:,} tokens (> {problem.limit_tokens:,}) "
                            "after BPE merges across items; this least valuable item was dropped",
                            "$.spec.budget", {"tokens_before": before, "tokens_after": count})
    decisions = []
    c = problem.candidates
    why_not = _WhyNot(problem, chosen)
    for i, cand in enumerate(c):
        reason = (problem.pre.get(i) or dropped.get(i) or
                  (selection.reasons.get(i) if (i in chosen) == _incl(selection.reasons.get(i)) else None))
        if reason is None:
            reason = (Reason(ReasonCode.SELECTED, "chosen by the strategy") if i in chosen
                      else why_not(i))
        decisions.append(ItemDecision(i, cand.source_id, cand.level, problem.tokens[i],
                                      cand.relevance_score, problem.values[i], cand.sha256, reason))
    unmet = tuple(f"{r.label} (got {r.total(chosen):,})" for r in problem.rules
                  if r.lower is not None and r.total(chosen) < r.lower)
    return Allocation(
        decisions=tuple(decisions),
        context_order=tuple(order),
        context=text,
        context_tokens=count,
        limit_tokens=problem.limit_tokens,
        strategy_requested=requested,
        strategy_used=selection.strategy,
        fallback_reason=fallback_reason,
        selection=selection,
        unmet=unmet,
        repairs=tuple(repairs),
        rules=tuple(_report(r, chosen, problem) for r in problem.rules),
    )


def _incl(reason: Reason | None) -> bool | None:
    return None if reason is None else reason.code.includes
